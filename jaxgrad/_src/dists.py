"""Distribution specs: what an estimator needs to know about ``p_params``.

A spec is a stateless object with

* ``sample(key, params) -> x``: one joint sample;
* ``log_prob(params, x) -> scalar``: the joint log-density of that sample;
* ``support(params) -> xs`` (discrete specs): every joint outcome, stacked on a
  new leading axis, for exact gradients by enumeration.

Every built-in spec is a *product of independent factors* over all the
elements of ``params``: ``bernoulli`` with logits ``[..., D]`` is ``prod(shape)``
independent coins; ``categorical`` with logits ``[..., D, K]`` is ``D``
independent categoricals with ``K`` classes, sampled one-hot; ``normal`` with
``(loc, scale)`` is a diagonal Gaussian. ``log_prob`` sums over the factors, so
it is a single vectorized expression, not a loop over variables.

Any user object with ``sample`` and ``log_prob`` (and ``support`` for
``jaxgrad.exact``) is accepted wherever a spec is.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks, samplers

Array = jax.Array

#: The largest joint support ``support`` will enumerate.
MAX_SUPPORT_SIZE = 2**16


@runtime_checkable
class Distribution(Protocol):
    """The interface estimators rely on."""

    def sample(self, key: Any, params: Any) -> Any: ...

    def log_prob(self, params: Any, x: Any) -> Array: ...


def _too_large(name: str, size: int, shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"{name}.support: logits of shape {shape} have a joint support of {size} outcomes, "
        f"more than MAX_SUPPORT_SIZE={MAX_SUPPORT_SIZE}. Exact enumeration is for small problems; "
        f"use a Monte Carlo estimator instead."
    )


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    r"""Independent Bernoullis parameterized by logits of any shape.

    .. math::
        p(x \mid l) = \prod_i \sigma(l_i)^{x_i} \sigma(-l_i)^{1 - x_i},
        \qquad x_i \in \{0, 1\}.

    ``sample`` returns floats in ``{0, 1}`` in the dtype of ``logits``;
    ``log_prob`` is finite for ``x`` inside the support even at logits of
    ``+-inf`` (masked coins).

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> b = jaxgrad.dists.bernoulli
      >>> x = b.sample(jax.random.key(0), jnp.zeros(3))
      >>> float(b.log_prob(jnp.zeros(3), x))  # 3 * log(1/2)
      -2.079...
      >>> b.support(jnp.zeros(2)).tolist()
      [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
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

    def log_prob(self, logits: Any, x: Any) -> Array:
        logits = _floating(logits, "bernoulli.log_prob")
        lp = jnp.where(x > 0.5, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
        return jnp.sum(lp)

    def mean(self, logits: Any) -> Array:
        return jax.nn.sigmoid(logits)

    def support(self, logits: Any) -> Array:
        logits = _floating(logits, "bernoulli.support")
        n = math.prod(logits.shape)
        if 2**n > MAX_SUPPORT_SIZE:
            raise _too_large(self.name, 2**n, logits.shape)
        table = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float64)
        return jnp.asarray(table.reshape((2**n, *logits.shape)), dtype=logits.dtype)


@dataclasses.dataclass(frozen=True)
class Categorical:
    r"""Independent categoricals with one-hot samples; logits ``[..., K]``.

    .. math::
        p(x \mid l) = \prod_d \prod_k \mathrm{softmax}(l_d)_k^{x_{dk}},
        \qquad x_d \in \{e_1, \dots, e_K\}.

    Categories with logit ``-inf`` are masked: never sampled, and excluded from
    ``support``-based sums by their zero probability.

    NaN in, NaN out: a variable whose logits contain a NaN, or are all
    ``-inf``, is sampled as a row of NaN (``jaxgrad.categorical`` gives it the
    index -1), and ``log_prob`` is NaN when the sample or the logits are.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> c = jaxgrad.dists.categorical
      >>> x = c.sample(jax.random.key(0), jnp.zeros((2, 3)))
      >>> x.shape, float(x.sum())
      ((2, 3), 2.0)
      >>> c.support(jnp.zeros((2, 3))).shape
      (9, 2, 3)
    """

    name: str = "categorical"
    kind: str = "categorical"
    reparameterizable: bool = False

    def sample(self, key: Any, logits: Any) -> Array:
        logits = _floating(logits, "categorical.sample")
        checks.check_min_ndim(logits, 1, "categorical.sample", "logits", "the classes, last")
        idx = samplers.categorical(key, logits)
        onehot = jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype)
        # An invalid distribution (a NaN logit, or all -inf) has index -1: a NaN row.
        return jnp.where((idx < 0)[..., None], jnp.asarray(jnp.nan, logits.dtype), onehot)

    def log_prob(self, logits: Any, x: Any) -> Array:
        logits = _floating(logits, "categorical.log_prob")
        checks.check_min_ndim(logits, 1, "categorical.log_prob", "logits", "the classes, last")
        lp = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.where(x > 0.5, lp, jnp.zeros_like(lp))
        # NaN in, NaN out: a NaN sample or NaN log-probabilities are not dropped by the mask.
        nan = jnp.isnan(x) | jnp.isnan(lp)
        return jnp.sum(jnp.where(nan, jnp.asarray(jnp.nan, lp.dtype), picked))

    def mean(self, logits: Any) -> Array:
        return jax.nn.softmax(logits, axis=-1)

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


@dataclasses.dataclass(frozen=True)
class Normal:
    r"""A diagonal Gaussian with params ``(loc, scale)``, reparameterizable.

    .. math::
        x = \mu + \sigma \varepsilon, \qquad
        \log p(x) = \sum_i -\tfrac12 \left(\tfrac{x_i - \mu_i}{\sigma_i}\right)^2
        - \log \sigma_i - \tfrac12 \log 2\pi .

    ``sample`` is differentiable in ``(loc, scale)`` (pathwise); estimators of
    the score-function family stop that gradient themselves.

    ``log_prob`` is computed in at least float32 (``samplers.compute_dtype``)
    and returned in the dtype of the parameters, in a form whose derivatives
    never square ``scale``:
    :math:`\partial_\sigma \log p = (z^2 - 1) / \sigma` stays finite at
    tiny scales (1e-30 in float32, 1e-4 in float16) where the textbook
    :math:`(x-\mu)^2 / \sigma^3` under- and overflows.

    Example:
      >>> import jax, jaxgrad
      >>> n = jaxgrad.dists.normal
      >>> float(n.log_prob((0.0, 1.0), 0.0))  # -log(2 pi) / 2
      -0.918...
    """

    name: str = "normal"
    kind: str = "normal"
    reparameterizable: bool = True

    def sample(self, key: Any, params: Any) -> Array:
        loc, scale = _loc_scale(params, "normal.sample")
        return samplers.normal(key, loc, scale)

    def log_prob(self, params: Any, x: Any) -> Array:
        loc, scale = _loc_scale(params, "normal.log_prob")
        out_dtype = jnp.result_type(loc, scale)
        dtype = samplers.compute_dtype(out_dtype)
        loc, scale, x = (jnp.asarray(a).astype(dtype) for a in (loc, scale, x))
        sg = jax.lax.stop_gradient
        log_scale = jnp.log(scale)
        # z = (x - loc) / scale, written so that no derivative squares the scale:
        # the factor exp(-(log s - sg(log s))) is 1 and differentiates (at every
        # order) like sg(s) / s, so dz/ds = -z / s instead of -(x - loc) / s**2,
        # which is inf once s**2 underflows (s <= 1e-19 in float32).
        z = (x - loc) / sg(scale) * jnp.exp(sg(log_scale) - log_scale)
        lp = -0.5 * z * z - log_scale - 0.5 * math.log(2 * math.pi)
        return jnp.sum(lp).astype(out_dtype)

    def mean(self, params: Any) -> Array:
        loc, scale = _loc_scale(params, "normal.mean")
        return jnp.broadcast_to(loc, jnp.broadcast_shapes(jnp.shape(loc), jnp.shape(scale)))


def _floating(x: Any, fn: str) -> Array:
    x = jnp.asarray(x)
    checks.check_floating(x, fn, "logits")
    return x


def _loc_scale(params: Any, fn: str) -> tuple[Array, Array]:
    if not isinstance(params, (tuple, list)) or len(params) != 2:
        got = (
            f"a {type(params).__name__} of length {len(params)}"
            if isinstance(params, (tuple, list))
            else checks._describe(params)
        )
        raise TypeError(f"{fn}: params must be a pair (loc, scale), got {got}.")
    loc, scale = (jnp.asarray(p) for p in params)
    checks.check_floating(loc, fn, "loc")
    checks.check_floating(scale, fn, "scale")
    return loc, scale


bernoulli = Bernoulli()
categorical = Categorical()
normal = Normal()
