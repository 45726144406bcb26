r"""Location-scale and other explicitly reparameterized continuous families.

Every sample here is an explicit differentiable function of the parameters and
of parameter-free noise, :math:`x = g(\varepsilon; \omega)`, so ``jax.grad``
through ``sample`` is the pathwise (reparameterization) gradient:

==========================  ===========================================================
``normal``                  :math:`x = \mu + \sigma \varepsilon`, :math:`\varepsilon \sim N(0, 1)`
``multivariate_normal``     :math:`x = \mu + L \varepsilon`, :math:`\varepsilon \sim N(0, I_d)`
``log_normal``              :math:`x = \exp(\mu + \sigma \varepsilon)`
``logistic``                :math:`x = \mu + s (\log u - \log(1 - u))`, :math:`u \sim U(0, 1)`
``laplace``                 inverse CDF: :math:`x = \mu + b \log 2u` (:math:`u < 1/2`), else
                            :math:`\mu - b \log 2(1 - u)`
``uniform``                 :math:`x = a + (b - a) u`
``exponential``             :math:`x = -\log(u) / \lambda`
==========================  ===========================================================
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from jaxgrad._src import checks, samplers
from jaxgrad._src.dists.base import Spec, WithCdf, structure_error
from jaxgrad._src.dists.base import uniform as _noise

Array = jax.Array

_LOG_2PI = math.log(2 * math.pi)
_sg = jax.lax.stop_gradient


def _where_safe(ok: Array, x: Array, safe: float) -> Array:
    """``x`` where ``ok``, else ``safe``: the double-where that keeps NaN out of gradients."""
    return jnp.where(ok, x, jnp.asarray(safe, x.dtype))


def _neg_inf(x: Array) -> Array:
    return jnp.asarray(-jnp.inf, x.dtype)


def _standardize(x: Array, loc: Array, scale: Array) -> tuple[Array, Array]:
    r"""``z = (x - loc) / scale`` and ``log(scale)``, with no derivative that squares ``scale``.

    The factor ``exp(-(log s - sg(log s)))`` is 1 and differentiates (at every
    order) like ``sg(s) / s``, so ``dz/ds = -z / s`` instead of
    ``-(x - loc) / s**2``, which is inf once ``s**2`` underflows (``s <= 1e-19``
    in float32).
    """
    log_scale = jnp.log(scale)
    z = (x - loc) / _sg(scale) * jnp.exp(_sg(log_scale) - log_scale)
    return z, log_scale


@dataclasses.dataclass(frozen=True)
class _LocScale(Spec):
    param_names: ClassVar[tuple[str, ...]] = ("loc", "scale")
    positive: ClassVar[tuple[str, ...]] = ("scale",)


@dataclasses.dataclass(frozen=True)
class Normal(WithCdf, _LocScale):
    r"""A diagonal Gaussian with params ``(loc, scale)``, reparameterizable.

    .. math::
        x = \mu + \sigma \varepsilon, \qquad
        \log p(x) = \sum_i -\tfrac12 \left(\tfrac{x_i - \mu_i}{\sigma_i}\right)^2
        - \log \sigma_i - \tfrac12 \log 2\pi, \qquad
        H = \sum_i \tfrac12 \log(2 \pi e \sigma_i^2).

    ``sample`` is differentiable in ``(loc, scale)`` (pathwise); estimators of
    the score-function family stop that gradient themselves. ``cdf`` is
    :math:`\Phi((x - \mu)/\sigma)`, ``mean`` ``loc``, ``variance`` ``scale**2``.

    ``log_prob`` is computed in at least float32 (``samplers.compute_dtype``)
    and returned in the dtype of the parameters, in a form whose derivatives
    never square ``scale``:
    :math:`\partial_\sigma \log p = (z^2 - 1) / \sigma` stays finite at
    tiny scales (1e-30 in float32, 1e-4 in float16) where the textbook
    :math:`(x-\mu)^2 / \sigma^3` under- and overflows.

    A concrete ``scale <= 0`` raises; a traced one cannot be checked (the
    sample is then ``loc + scale * eps`` and ``log_prob`` NaN).

    Example:
      >>> import jax, jaxgrad
      >>> n = jaxgrad.dists.normal
      >>> float(n.log_prob((0.0, 1.0), 0.0))  # -log(2 pi) / 2
      -0.918...
      >>> float(n.entropy((0.0, 1.0)))  # log(2 pi e) / 2
      1.418...
    """

    name: str = "normal"
    kind: str = "normal"
    reparameterizable: bool = True

    def sample(self, key: Any, params: Any) -> Array:
        if not isinstance(params, (tuple, list)) or len(params) != 2:
            raise structure_error("normal.sample", self.param_names, params)
        loc, scale = (jnp.asarray(p) for p in params)
        checks.check_floating(loc, "normal.sample", "loc")
        checks.check_floating(scale, "normal.sample", "scale")
        return samplers.normal(key, loc, scale)

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        loc, scale = p
        z, log_scale = _standardize(x, loc, scale)
        return -0.5 * z * z - log_scale - 0.5 * _LOG_2PI

    def _cdf(self, p: tuple[Array, ...], x: Array) -> Array:
        z, _ = _standardize(x, *p)
        return ndtr(z)

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        return 0.5 + 0.5 * _LOG_2PI + jnp.log(p[1])

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return p[0]

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return jnp.square(p[1])


@dataclasses.dataclass(frozen=True)
class LogNormal(WithCdf, _LocScale):
    r"""A log-normal: ``exp`` of a Gaussian with params ``(loc, scale)``, reparameterizable.

    .. math::
        x = e^{\mu + \sigma \varepsilon}, \qquad
        \log p(x) = -\tfrac12 \left(\tfrac{\log x - \mu}{\sigma}\right)^2 - \log \sigma
        - \tfrac12 \log 2\pi - \log x \quad (x > 0),

    mean :math:`e^{\mu + \sigma^2/2}`, variance :math:`(e^{\sigma^2} - 1) e^{2\mu + \sigma^2}`,
    entropy :math:`\mu + \tfrac12 \log(2\pi e \sigma^2)`, cdf
    :math:`\Phi((\log x - \mu)/\sigma)`. ``log_prob`` is ``-inf`` at ``x <= 0``.

    Example:
      >>> import jaxgrad
      >>> round(float(jaxgrad.dists.log_normal.mean((0.0, 1.0))), 4)  # exp(1/2)
      1.6487
    """

    name: str = "log_normal"
    reparameterizable: bool = True

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        loc, scale = p
        eps = jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)
        return jnp.exp(loc + scale * eps)

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        ok = x > 0
        log_x = jnp.log(_where_safe(ok, x, 1.0))
        z, log_scale = _standardize(log_x, *p)
        lp = -0.5 * z * z - log_scale - 0.5 * _LOG_2PI - log_x
        return jnp.where(ok, lp, _neg_inf(lp))

    def _cdf(self, p: tuple[Array, ...], x: Array) -> Array:
        ok = x > 0
        z, _ = _standardize(jnp.log(_where_safe(ok, x, 1.0)), *p)
        c = ndtr(z)
        return jnp.where(ok, c, jnp.zeros_like(c))

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        return p[0] + 0.5 + 0.5 * _LOG_2PI + jnp.log(p[1])

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return jnp.exp(p[0] + 0.5 * jnp.square(p[1]))

    def _variance(self, p: tuple[Array, ...]) -> Array:
        s2 = jnp.square(p[1])
        return jnp.expm1(s2) * jnp.exp(2 * p[0] + s2)


@dataclasses.dataclass(frozen=True)
class Logistic(WithCdf, _LocScale):
    r"""The logistic distribution with params ``(loc, scale)``, reparameterizable.

    .. math::
        x = \mu + s \log\frac{u}{1 - u}, \qquad
        \log p(x) = -z - \log s - 2 \log(1 + e^{-z}), \quad z = \tfrac{x - \mu}{s},

    cdf :math:`\sigma(z)`, mean :math:`\mu`, variance :math:`s^2 \pi^2 / 3`,
    entropy :math:`\log s + 2`. The density is evaluated in the symmetric form
    :math:`-|z| - 2\,\mathrm{softplus}(-|z|)`, finite for any finite ``x``.

    A logistic with params ``(logits / temperature, 1 / temperature)`` is the
    *pre-sigmoid* binary Concrete variable: its ``log_prob`` is the log-space
    density of ``relaxed_bernoulli``, finite at any temperature (Maddison et
    al. 2017, appendix C).

    Example:
      >>> import jaxgrad
      >>> float(jaxgrad.dists.logistic.cdf((0.0, 1.0), 0.0))
      0.5
    """

    name: str = "logistic"
    reparameterizable: bool = True

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        u = _noise(key, shape, dtype)
        return p[0] + p[1] * (jnp.log(u) - jnp.log1p(-u))

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        z, log_scale = _standardize(x, *p)
        a = jnp.abs(z)
        return -a - 2 * jax.nn.softplus(-a) - log_scale

    def _cdf(self, p: tuple[Array, ...], x: Array) -> Array:
        z, _ = _standardize(x, *p)
        return jax.nn.sigmoid(z)

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        return jnp.log(p[1]) + 2

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return p[0]

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return jnp.square(p[1]) * (math.pi**2 / 3)


@dataclasses.dataclass(frozen=True)
class Laplace(WithCdf, _LocScale):
    r"""The Laplace (double exponential) distribution, params ``(loc, scale)``, reparameterizable.

    .. math::
        \log p(x) = -\frac{|x - \mu|}{b} - \log 2b, \qquad
        F(x) = \tfrac12 e^{z} \ (z < 0), \quad 1 - \tfrac12 e^{-z} \ (z \ge 0),

    mean :math:`\mu`, variance :math:`2 b^2`, entropy :math:`1 + \log 2b`.
    Sampled by the inverse CDF from ``u`` on the open interval ``(0, 1)``: both
    branches stay finite (no ``log(0)``).

    Example:
      >>> import jaxgrad
      >>> float(jaxgrad.dists.laplace.variance((0.0, 2.0)))
      8.0
    """

    name: str = "laplace"
    reparameterizable: bool = True

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        u = _noise(key, shape, dtype)
        log2 = math.log(2.0)
        e = jnp.where(u < 0.5, jnp.log(u) + log2, -(jnp.log1p(-u) + log2))
        return p[0] + p[1] * e

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        z, log_scale = _standardize(x, *p)
        return -jnp.abs(z) - log_scale - math.log(2.0)

    def _cdf(self, p: tuple[Array, ...], x: Array) -> Array:
        z, _ = _standardize(x, *p)
        half = 0.5 * jnp.exp(-jnp.abs(z))
        return jnp.where(z < 0, half, 1 - half)

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        return 1 + math.log(2.0) + jnp.log(p[1])

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return p[0]

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return 2 * jnp.square(p[1])


@dataclasses.dataclass(frozen=True)
class Uniform(WithCdf, Spec):
    r"""The uniform distribution on ``[low, high]``, reparameterizable.

    .. math::
        x = a + (b - a) u, \qquad \log p(x) = -\log(b - a) \ (a \le x \le b), \qquad
        H = \log(b - a),

    mean :math:`(a + b)/2`, variance :math:`(b - a)^2 / 12`. ``log_prob`` is
    ``-inf`` outside ``[low, high]``.

    The support depends on the parameters, so the score function
    (``jaxgrad.score_function``, ``rloo``) is **biased** for ``(low, high)``:
    it misses the boundary terms :math:`\pm f(b) / (b - a)`. Use
    ``jaxgrad.pathwise``. A concrete ``low >= high`` raises; traced values are
    not checked.

    Example:
      >>> import jaxgrad
      >>> float(jaxgrad.dists.uniform.cdf((0.0, 4.0), 1.0))
      0.25
    """

    name: str = "uniform"
    reparameterizable: bool = True
    param_names: ClassVar[tuple[str, ...]] = ("low", "high")

    def _check_params(self, arrays: tuple[Array, ...], fn: str) -> None:
        low, high = arrays
        if isinstance(low, jax.core.Tracer) or isinstance(high, jax.core.Tracer):
            return
        try:
            lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
            bad = np.broadcast_arrays(lo >= hi)[0]
        except (ValueError, TypeError):
            return  # shapes are reported by the broadcasting check
        if np.any(bad):
            raise ValueError(
                f"{fn}: high must be greater than low, got low={_show(lo)} and "
                f"high={_show(hi)}; pass params=(low, high) with low < high elementwise."
            )

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        low, high = p
        return low + (high - low) * _noise(key, shape, dtype)

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        low, high = p
        lp = -jnp.log(high - low) + jnp.zeros_like(x)
        return jnp.where((x >= low) & (x <= high), lp, _neg_inf(lp))

    def _cdf(self, p: tuple[Array, ...], x: Array) -> Array:
        low, high = p
        return jnp.clip((x - low) / (high - low), 0.0, 1.0)

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        return jnp.log(p[1] - p[0])

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return 0.5 * (p[0] + p[1])

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return jnp.square(p[1] - p[0]) / 12


def _show(x: np.ndarray) -> Any:
    return x.tolist() if x.size <= 8 else f"an array of shape {x.shape}"


@dataclasses.dataclass(frozen=True)
class Exponential(WithCdf, Spec):
    r"""The exponential distribution with params ``rate`` (an array), reparameterizable.

    .. math::
        x = -\frac{\log u}{\lambda}, \qquad \log p(x) = \log \lambda - \lambda x \ (x \ge 0),
        \qquad F(x) = 1 - e^{-\lambda x},

    mean :math:`1/\lambda`, variance :math:`1/\lambda^2`, entropy
    :math:`1 - \log \lambda`. The pathwise derivative is explicit:
    :math:`\partial x / \partial \lambda = -x / \lambda`.

    Example:
      >>> import jaxgrad
      >>> float(jaxgrad.dists.exponential.mean(2.0))
      0.5
    """

    name: str = "exponential"
    reparameterizable: bool = True
    param_names: ClassVar[tuple[str, ...]] = ("rate",)
    positive: ClassVar[tuple[str, ...]] = ("rate",)

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        return -jnp.log(_noise(key, shape, dtype)) / p[0]

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        (rate,) = p
        lp = jnp.log(rate) - rate * x
        return jnp.where(x >= 0, lp, _neg_inf(lp))

    def _cdf(self, p: tuple[Array, ...], x: Array) -> Array:
        c = -jnp.expm1(-p[0] * jnp.maximum(x, 0.0))
        return jnp.where(x >= 0, c, jnp.zeros_like(c))

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        return 1 - jnp.log(p[0])

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return 1 / p[0]

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return 1 / jnp.square(p[0])


@dataclasses.dataclass(frozen=True)
class MultivariateNormal(Spec):
    r"""A batch of d-variate Gaussians with params ``(loc [..., d], scale_tril [..., d, d])``.

    .. math::
        x = \mu + L \varepsilon, \qquad \Sigma = L L^\top, \qquad
        \log p(x) = -\tfrac12 \lVert L^{-1}(x - \mu) \rVert^2 - \sum_i \log L_{ii}
        - \tfrac d2 \log 2\pi, \qquad
        H = \tfrac d2 (1 + \log 2\pi) + \sum_i \log L_{ii}.

    One d-variate factor per batch element (the batch shape is the broadcast
    of ``loc.shape[:-1]`` and ``scale_tril.shape[:-2]``); ``log_prob_elementwise``
    and ``entropy_elementwise`` have that batch shape. Only the lower triangle
    of ``scale_tril`` is read; its diagonal must be positive (checked when
    concrete). ``mean`` is ``loc``, ``variance`` the diagonal of
    :math:`\Sigma`, ``covariance`` :math:`\Sigma` itself. Reparameterizable,
    with the explicit pathwise derivative :math:`\partial x / \partial L = \varepsilon^\top`.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> mvn = jaxgrad.dists.multivariate_normal
      >>> params = (jnp.zeros(2), jnp.array([[2.0, 0.0], [1.0, 1.0]]))
      >>> mvn.covariance(params).tolist()
      [[4.0, 2.0], [2.0, 2.0]]
    """

    name: str = "multivariate_normal"
    reparameterizable: bool = True
    param_names: ClassVar[tuple[str, ...]] = ("loc", "scale_tril")
    event_ndims: ClassVar[int] = 1
    param_event_ndims: ClassVar[tuple[int, ...]] = (1, 2)

    def _event_what(self, name: str) -> str:
        return "[..., d]" if name == "loc" else "[..., d, d]"

    def _event_shape(self, arrays: tuple[Array, ...]) -> tuple[int, ...]:
        return arrays[0].shape[-1:]

    def _check_params(self, arrays: tuple[Array, ...], fn: str) -> None:
        loc, tril = arrays
        d = loc.shape[-1]
        if tril.shape[-2:] != (d, d):
            raise ValueError(
                f"{fn}: scale_tril must have shape [..., d, d] with d = loc.shape[-1] = {d}, "
                f"got shape {tril.shape}."
            )
        if not isinstance(tril, jax.core.Tracer):
            diag = np.diagonal(np.asarray(tril, np.float64), axis1=-2, axis2=-1)
            if np.any(diag <= 0):
                raise ValueError(
                    f"{fn}: scale_tril must have a positive diagonal, got "
                    f"{_show(diag)}; use a Cholesky factor, e.g. "
                    f"jnp.linalg.cholesky(cov), or put jax.nn.softplus on the diagonal."
                )

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        loc, tril = p
        eps = jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)
        return loc + jnp.einsum("...ij,...j->...i", jnp.tril(tril), eps)

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        loc, tril = p
        tril = jnp.tril(tril)
        diff = x - loc
        batch = jnp.broadcast_shapes(diff.shape[:-1], tril.shape[:-2])
        d = tril.shape[-1]
        tril_b = jnp.broadcast_to(tril, batch + (d, d))
        diff_b = jnp.broadcast_to(diff, batch + (d,))
        z = jax.scipy.linalg.solve_triangular(tril_b, diff_b[..., None], lower=True)[..., 0]
        log_det = jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * jnp.sum(z * z, axis=-1) - log_det - 0.5 * d * _LOG_2PI

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        tril = p[1]
        d = tril.shape[-1]
        log_det = jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), axis=-1)
        return 0.5 * d * (1 + _LOG_2PI) + log_det

    def _mean(self, p: tuple[Array, ...]) -> Array:
        return p[0]

    def _variance(self, p: tuple[Array, ...]) -> Array:
        return jnp.sum(jnp.square(jnp.tril(p[1])), axis=-1)

    def covariance(self, params: Any) -> Array:
        """The covariance :math:`L L^\\top`, shape ``batch_shape + (d, d)``."""
        a = self._args(params, "covariance")
        tril = jnp.tril(a.arrays[1])
        cov = tril @ jnp.swapaxes(tril, -1, -2)
        d = tril.shape[-1]
        return jnp.broadcast_to(cov, a.batch_shape + (d, d)).astype(a.dtype)


normal = Normal()
multivariate_normal = MultivariateNormal()
log_normal = LogNormal()
logistic = Logistic()
laplace = Laplace()
uniform = Uniform()
exponential = Exponential()
