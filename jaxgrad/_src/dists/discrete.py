"""Discrete specs: ``bernoulli`` (logits of any shape) and ``categorical`` (one-hot samples).

Both are products of independent factors over the elements of their logits
(``categorical``: over every axis but the last, the classes). Neither is
reparameterizable: use ``jaxgrad.score_function``, ``rloo``, ``disarm``,
``exact`` or a relaxation (``jaxgrad.dists.relaxed_bernoulli``,
``relaxed_one_hot_categorical``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks, samplers
from jaxgrad._src.dists.base import MAX_SUPPORT_SIZE, Args, Spec

Array = jax.Array


def _too_large(name: str, size: int, shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"{name}.support: logits of shape {shape} have a joint support of {size} outcomes, "
        f"more than MAX_SUPPORT_SIZE={MAX_SUPPORT_SIZE}. Exact enumeration is for small problems; "
        f"use a Monte Carlo estimator instead."
    )


def _floating(x: Any, fn: str) -> Array:
    x = jnp.asarray(x)
    checks.check_floating(x, fn, "logits")
    return x


class _Logits(Spec):
    """Shared parsing of specs whose params are one logits array (any array-like)."""

    param_names: ClassVar[tuple[str, ...]] = ("logits",)

    def _args(self, params: Any, method: str) -> Args:
        # The logits array itself, as jnp.asarray reads it (lists and tuples of numbers too).
        logits = _floating(params, f"{self.name}.{method}")
        if self.event_ndims:
            what = "the classes, last"
            checks.check_min_ndim(logits, 1, f"{self.name}.{method}", "logits", what)
        compute = samplers.compute_dtype(logits.dtype)
        nd = logits.ndim - self.event_ndims
        return Args(
            (logits.astype(compute),), logits.shape[:nd], logits.shape[nd:], logits.dtype, compute
        )

    def _value(self, x: Any, a: Args, method: str) -> Array:
        x = jnp.asarray(x)
        return x.astype(a.compute)


@dataclasses.dataclass(frozen=True)
class Bernoulli(_Logits):
    r"""Independent Bernoullis parameterized by logits of any shape.

    .. math::
        p(x \mid l) = \prod_i \sigma(l_i)^{x_i} \sigma(-l_i)^{1 - x_i},
        \qquad x_i \in \{0, 1\}, \qquad
        H = \sum_i \sigma(l_i)\,\mathrm{softplus}(-l_i) + \sigma(-l_i)\,\mathrm{softplus}(l_i).

    ``sample`` returns floats in ``{0, 1}`` in the dtype of ``logits``;
    ``log_prob`` is finite for ``x`` inside the support even at logits of
    ``+-inf`` (masked coins), and so is ``entropy`` at logits of ``+-1e4``.
    ``mean`` is ``sigmoid(logits)``, ``variance`` ``p (1 - p)``, ``cdf``
    ``P(X <= x)`` elementwise.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> b = jaxgrad.dists.bernoulli
      >>> x = b.sample(jax.random.key(0), jnp.zeros(3))
      >>> float(b.log_prob(jnp.zeros(3), x))  # 3 * log(1/2)
      -2.079...
      >>> b.support(jnp.zeros(2)).tolist()
      [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
      >>> float(b.entropy(jnp.zeros(3)))  # 3 * log 2
      2.079...
    """

    name: str = "bernoulli"
    kind: str = "bernoulli"
    reparameterizable: bool = False

    def sample(self, key: Any, logits: Any) -> Array:
        logits = _floating(logits, "bernoulli.sample")
        checks.check_key(key, "bernoulli.sample")
        dtype = samplers.compute_dtype(logits.dtype)
        u = samplers.uniform_open(key, logits.shape, dtype)
        return (u < jax.nn.sigmoid(logits.astype(dtype))).astype(logits.dtype)

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        (logits,) = p
        return jnp.where(x > 0.5, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        (l,) = p
        return jax.nn.sigmoid(l) * jax.nn.softplus(-l) + jax.nn.sigmoid(-l) * jax.nn.softplus(l)

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return jax.nn.sigmoid(p[0])

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return jax.nn.sigmoid(p[0]) * jax.nn.sigmoid(-p[0])

    def cdf(self, logits: Any, x: Any) -> Array:
        """``P(X <= x)`` elementwise: 0 below 0, ``1 - p`` on ``[0, 1)``, 1 from 1 up."""
        a = self._args(logits, "cdf")
        x = self._value(x, a, "cdf")
        q = jax.nn.sigmoid(-a.arrays[0])
        out = jnp.where(x < 0, jnp.zeros_like(q), jnp.where(x < 1, q, jnp.ones_like(q)))
        return out.astype(a.dtype)

    def support(self, logits: Any) -> Array:
        logits = _floating(logits, "bernoulli.support")
        n = math.prod(logits.shape)
        if 2**n > MAX_SUPPORT_SIZE:
            raise _too_large(self.name, 2**n, logits.shape)
        table = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float64)
        return jnp.asarray(table.reshape((2**n, *logits.shape)), dtype=logits.dtype)


@dataclasses.dataclass(frozen=True)
class Categorical(_Logits):
    r"""Independent categoricals with one-hot samples; logits ``[..., K]``.

    .. math::
        p(x \mid l) = \prod_d \prod_k \mathrm{softmax}(l_d)_k^{x_{dk}},
        \qquad x_d \in \{e_1, \dots, e_K\}, \qquad
        H = -\sum_d \sum_k \pi_{dk} \log \pi_{dk}.

    Categories with logit ``-inf`` are masked: never sampled, and excluded from
    ``support``-based sums (and from the entropy) by their zero probability.

    NaN in, NaN out: a variable whose logits contain a NaN, or are all
    ``-inf``, is sampled as a row of NaN (``jaxgrad.categorical`` gives it the
    index -1), and ``log_prob`` is NaN when the sample or the logits are.

    ``mean`` is ``softmax(logits)`` (the mean of the one-hot vector) and
    ``variance`` ``pi (1 - pi)`` per coordinate; ``entropy_elementwise`` has
    the batch shape ``logits.shape[:-1]``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> c = jaxgrad.dists.categorical
      >>> x = c.sample(jax.random.key(0), jnp.zeros((2, 3)))
      >>> x.shape, float(x.sum())
      ((2, 3), 2.0)
      >>> c.support(jnp.zeros((2, 3))).shape
      (9, 2, 3)
      >>> c.entropy_elementwise(jnp.zeros((2, 3))).tolist()  # log 3 each
      [1.098..., 1.098...]
    """

    name: str = "categorical"
    kind: str = "categorical"
    reparameterizable: bool = False
    event_ndims: ClassVar[int] = 1
    param_event_ndims: ClassVar[tuple[int, ...]] = (1,)

    def sample(self, key: Any, logits: Any) -> Array:
        logits = _floating(logits, "categorical.sample")
        checks.check_min_ndim(logits, 1, "categorical.sample", "logits", "the classes, last")
        idx = samplers.categorical(key, logits)
        onehot = jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype)
        # An invalid distribution (a NaN logit, or all -inf) has index -1: a NaN row.
        return jnp.where((idx < 0)[..., None], jnp.asarray(jnp.nan, logits.dtype), onehot)

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        lp = jax.nn.log_softmax(p[0], axis=-1)
        picked = jnp.where(x > 0.5, lp, jnp.zeros_like(lp))
        # NaN in, NaN out: a NaN sample or NaN log-probabilities are not dropped by the mask.
        nan = jnp.isnan(x) | jnp.isnan(lp)
        return jnp.sum(jnp.where(nan, jnp.asarray(jnp.nan, lp.dtype), picked), axis=-1)

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        lp = jax.nn.log_softmax(p[0], axis=-1)
        prob = jnp.exp(lp)
        terms = jnp.where(prob > 0, prob * jnp.where(prob > 0, lp, 0.0), 0.0)
        return -jnp.sum(terms, axis=-1)

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return jax.nn.softmax(p[0], axis=-1)

    def _variance(self, p: tuple[Array, ...]) -> Array:
        pi = jax.nn.softmax(p[0], axis=-1)
        return pi * (1 - pi)

    def support(self, logits: Any) -> Array:
        logits = _floating(logits, "categorical.support")
        checks.check_min_ndim(logits, 1, "categorical.support", "logits", "the classes, last")
        *batch, k = logits.shape
        n = math.prod(batch)
        size = k**n
        if size > MAX_SUPPORT_SIZE:
            raise _too_large(self.name, size, logits.shape)
        idx = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int32)
        idx = idx.reshape((size, *batch))
        return jax.nn.one_hot(jnp.asarray(idx), k, dtype=logits.dtype)


bernoulli = Bernoulli()
categorical = Categorical()
