r"""Concrete (Gumbel-softmax) distributions with densities: what a relaxed ELBO's KL needs.

Both specs take params ``(logits, temperature)`` and sample exactly what the
samplers ``jaxgrad.relaxed_bernoulli`` and ``jaxgrad.gumbel_softmax`` return
on the same key; the sample is differentiable in both parameters (pathwise).

The density of a Concrete sample :math:`y` on the simplex with ``K`` classes
(Maddison, Mnih & Teh 2017, eq. 1), with respect to Lebesgue measure on its
first ``K - 1`` coordinates, is

.. math::
    p(y) = (K - 1)!\, \tau^{K-1} \prod_{k=1}^K
           \frac{\alpha_k\, y_k^{-\tau - 1}}{\sum_{i=1}^K \alpha_i\, y_i^{-\tau}},
    \qquad \alpha_k = e^{l_k} .

Derivation: :math:`y = \mathrm{softmax}((l + G)/\tau)` with Gumbel :math:`G`.
Write :math:`x_k = \log y_k` (the *ExpConcrete* variable) and
:math:`z_k = (l_k + G_k)/\tau`; :math:`x = z - \log\sum_i e^{z_i}` keeps only
the differences :math:`z_k - z_K`, whose density follows from integrating the
common shift out of the product of Gumbel densities
:math:`\tau e^{l_k - \tau z_k} \exp(-e^{l_k - \tau z_k})` (a Gamma integral,
which gives the :math:`(K-1)!` and the K-th power). In log space,

.. math::
    \log p(y) = \log\Gamma(K) + (K - 1)\log\tau
      + \sum_k \big(l_k - (\tau + 1) x_k\big)
      - K \operatorname{logsumexp}_k (l_k - \tau x_k), \qquad x_k = \log y_k .

This is what ``log_prob`` evaluates: no power of :math:`y` or :math:`\alpha`
is ever formed, so it is finite for every ``y`` in the open simplex at any
temperature and at logits of magnitude 1e4 (in float32 the textbook product
overflows once :math:`|l| > 88` or :math:`y_k^{-\tau-1} > 3 \cdot 10^{38}`).
For ``K = 2`` and :math:`y = (v, 1 - v)` it is the binary Concrete density of
``relaxed_bernoulli``,

.. math::
    \log p(v) = \log\tau + l - (\tau + 1)(\log v + \log(1 - v))
      - 2 \log\big(e^{l - \tau \log v} + e^{-\tau \log(1 - v)}\big),
    \qquad P(Y \le v) = \sigma(\tau\,\mathrm{logit}(v) - l).

Low temperatures: a sample may round to a vertex of the simplex (``y_k`` = 0
or 1 exactly) in floating point, where ``log_prob`` is ``-inf``. For a
density that is finite on every sample, work with the pre-sigmoid variable of
the binary case, ``jaxgrad.dists.logistic`` with params
``(logits / temperature, 1 / temperature)`` (apply ``jax.nn.sigmoid`` to its
sample), as Maddison et al. recommend for the relaxed ELBO (appendix C).

Neither spec has a closed-form mean, variance or entropy (those raise
``NotImplementedError``); estimate them by Monte Carlo.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from jaxgrad._src import relaxations
from jaxgrad._src.dists.base import Spec

Array = jax.Array


def _no_closed_form(name: str, what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{name}.{what}: the Concrete distribution has no closed-form {what}; estimate it by "
        f"Monte Carlo over {name}.sample (and -log_prob for the entropy)."
    )


@dataclasses.dataclass(frozen=True)
class _Concrete(Spec):
    """What the Concrete specs share: no closed-form entropy, mean or variance."""

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        raise _no_closed_form(self.name, "entropy")

    def _mean(self, p: tuple[Array, ...]) -> Array:
        raise _no_closed_form(self.name, "mean")

    def _variance(self, p: tuple[Array, ...]) -> Array:
        raise _no_closed_form(self.name, "variance")


@dataclasses.dataclass(frozen=True)
class RelaxedBernoulli(_Concrete):
    r"""The binary Concrete distribution with params ``(logits, temperature)``.

    Samples :math:`y = \sigma((l + L)/\tau) \in (0, 1)`, :math:`L` logistic,
    exactly ``jaxgrad.relaxed_bernoulli(key, logits, temperature=temperature)``;
    one independent factor per element of the broadcast of ``logits`` and
    ``temperature``. ``log_prob`` is the log-space binary Concrete density
    (module docstring), ``-inf`` outside the open interval ``(0, 1)``;
    ``cdf`` is :math:`\sigma(\tau\,\mathrm{logit}(v) - l)`. Reparameterizable:
    the sample is differentiable in the logits and the temperature. A concrete
    ``temperature <= 0`` raises; a traced one is not checked.

    Example:
      >>> import jaxgrad
      >>> rb = jaxgrad.dists.relaxed_bernoulli
      >>> round(float(rb.prob((0.0, 1.0), 0.5)), 4)  # uniform at logits 0, temperature 1
      1.0
    """

    name: str = "relaxed_bernoulli"
    reparameterizable: bool = True
    param_names: ClassVar[tuple[str, ...]] = ("logits", "temperature")
    positive: ClassVar[tuple[str, ...]] = ("temperature",)

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        logits, t = p
        return relaxations.relaxed_bernoulli(key, logits, temperature=t)

    def _log_prob(self, p: tuple[Array, ...], y: Array) -> Array:
        logits, t = p
        ok = (y > 0) & (y < 1)
        ys = jnp.where(ok, y, jnp.full_like(y, 0.5))
        lv, l1v = jnp.log(ys), jnp.log1p(-ys)
        lp = (
            jnp.log(t)
            + logits
            - (t + 1) * (lv + l1v)
            - 2 * jnp.logaddexp(logits - t * lv, -t * l1v)
        )
        return jnp.where(ok, lp, jnp.asarray(-jnp.inf, lp.dtype))

    def cdf(self, params: Any, y: Any) -> Array:
        """``P(Y <= y)`` elementwise, :math:`\\sigma(\\tau \\mathrm{logit}(y) - l)`."""
        a = self._args(params, "cdf")
        logits, t = a.arrays
        y = self._value(y, a, "cdf")
        ys = jnp.clip(y, 0.0, 1.0)
        z = jnp.log(ys) - jnp.log1p(-ys)  # +-inf at the ends: sigmoid gives 0 and 1
        return jax.nn.sigmoid(t * z - logits).astype(a.dtype)


@dataclasses.dataclass(frozen=True)
class RelaxedOneHotCategorical(_Concrete):
    r"""The Concrete distribution on the simplex, params ``(logits [..., K], temperature [...])``.

    Samples :math:`y = \mathrm{softmax}((l + G)/\tau)`, exactly
    ``jaxgrad.gumbel_softmax(key, logits, temperature=temperature[..., None])``.
    ``temperature`` has the *batch* shape (one per categorical factor; it
    broadcasts against ``logits.shape[:-1]``), since the density assumes one
    temperature per factor. ``log_prob`` is Maddison et al.'s eq. 1 in log space
    (module docstring), with respect to Lebesgue measure on the first ``K - 1``
    coordinates, ``-inf`` where some ``y_k <= 0``; the logits must be finite.
    Reparameterizable in the logits and the temperature.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> c = jaxgrad.dists.relaxed_one_hot_categorical
      >>> y = c.sample(jax.random.key(0), (jnp.zeros(3), 0.5))
      >>> bool(jnp.isclose(y.sum(), 1.0)), bool(jnp.isfinite(c.log_prob((jnp.zeros(3), 0.5), y)))
      (True, True)
    """

    name: str = "relaxed_one_hot_categorical"
    reparameterizable: bool = True
    param_names: ClassVar[tuple[str, ...]] = ("logits", "temperature")
    positive: ClassVar[tuple[str, ...]] = ("temperature",)
    event_ndims: ClassVar[int] = 1
    param_event_ndims: ClassVar[tuple[int, ...]] = (1, 0)

    def _event_what(self, name: str) -> str:
        return "the classes, last"

    def _event_shape(self, arrays: tuple[Array, ...]) -> tuple[int, ...]:
        return arrays[0].shape[-1:]

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        logits, t = p
        return relaxations.gumbel_softmax(key, logits, temperature=t[..., None])

    def _log_prob(self, p: tuple[Array, ...], y: Array) -> Array:
        logits, t = p
        k = logits.shape[-1]
        ok = jnp.all(y > 0, axis=-1)
        x = jnp.log(jnp.where(y > 0, y, jnp.ones_like(y)))
        t1 = t[..., None]
        lp = (
            gammaln(jnp.asarray(k, logits.dtype))
            + (k - 1) * jnp.log(t)
            + jnp.sum(logits - (t1 + 1) * x, axis=-1)
            - k * jax.nn.logsumexp(logits - t1 * x, axis=-1)
        )
        return jnp.where(ok, lp, jnp.asarray(-jnp.inf, lp.dtype))


relaxed_bernoulli = RelaxedBernoulli()
relaxed_one_hot_categorical = RelaxedOneHotCategorical()
