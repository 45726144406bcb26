r"""The measure-valued (weak derivative) estimator for diagonal Gaussians.

The derivative of a Gaussian density in one parameter is a signed measure,
split into a positive and a negative part that are both probability measures
times a constant ``c``: :math:`\partial_\theta N(x; \mu, \sigma)
= c\,(p^+(x) - p^-(x))`. Then
:math:`\partial_\theta E[f] = c\,(E_{p^+} f - E_{p^-} f)`, estimated with one
sample of each part. For :math:`x = \mu + \sigma z`:

* mean: :math:`\partial_\mu \varphi = \frac{z}{\sigma} \varphi`; its positive part
  (``z > 0``) has mass :math:`\frac{1}{\sigma\sqrt{2\pi}}` and normalized law
  :math:`z \sim` Rayleigh, i.e. Weibull with scale :math:`\sqrt2` and shape 2;
  the negative part is its mirror image. So
  :math:`\partial_\mu E f = \frac{1}{\sigma\sqrt{2\pi}} E[f(\mu + \sigma W) - f(\mu - \sigma W)]`.
* scale: :math:`\partial_\sigma \varphi = \frac1\sigma (z^2 - 1) \varphi`; here
  :math:`z^2 \varphi` is the double-sided Maxwell density and :math:`\varphi` the
  Gaussian itself, so
  :math:`\partial_\sigma E f = \frac1\sigma E[f(\mu + \sigma M) - f(\mu + \sigma N)]`.

(Mohamed et al. 2020, sec. 6.1 and table 1.) For a ``D``-dimensional product
the rule applies coordinate by coordinate, the other coordinates drawn from
the Gaussian itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import checks, samplers
from jaxgrad._src.estimators import common

Array = jax.Array


def _loc_scale(params: Any, fn: str) -> tuple[Array, Array]:
    if not isinstance(params, tuple | list) or len(params) != 2:
        raise TypeError(
            f"{fn}: params must be a pair (loc, scale) of a diagonal Gaussian, got "
            f"{type(params).__name__}."
        )
    loc, scale = (jnp.asarray(p) for p in params)
    checks.check_floating(loc, fn, "loc")
    checks.check_floating(scale, fn, "scale")
    try:
        jnp.broadcast_shapes(loc.shape, scale.shape)
    except ValueError:
        raise ValueError(
            f"{fn}: loc of shape {loc.shape} and scale of shape {scale.shape} do not broadcast."
        ) from None
    return loc, scale


def _unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sums ``g`` (of a broadcast shape) back to ``shape``: the adjoint of broadcasting."""
    lead = g.ndim - len(shape)
    g = jnp.sum(g, axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def measure_valued(
    f: Callable[..., Array], *, num_samples: int = 1, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""The measure-valued gradient estimator for a diagonal Gaussian ``(loc, scale)``.

    For each coordinate :math:`i`, with :math:`x \sim N(\mu, \sigma^2)` and
    :math:`x^{(i \to v)}` the vector ``x`` with coordinate ``i`` replaced by ``v``:

    .. math::
        \hat g_{\mu_i} &= \frac{1}{\sigma_i \sqrt{2\pi}} \Big(
            f\big(x^{(i \to \mu_i + \sigma_i W_i)}\big)
          - f\big(x^{(i \to \mu_i - \sigma_i W_i)}\big) \Big),
          \qquad W_i \sim \mathrm{Weibull}(\sqrt2, 2), \\
        \hat g_{\sigma_i} &= \frac{1}{\sigma_i} \Big(
            f\big(x^{(i \to \mu_i + \sigma_i M_i)}\big) - f(x) \Big),
          \qquad M_i \sim \text{double-sided Maxwell},

    averaged over ``num_samples`` independent draws. ``x = mu + sigma N``
    itself gives the value of ``est`` (the Monte Carlo mean of ``f``) and the
    negative part of the scale derivative. The noises are coupled (common
    random numbers, which keep every coordinate unbiased and lower the
    variance for smooth ``f``): with :math:`N, Y, Z` standard normal,
    :math:`W = \sqrt{Y^2 + Z^2}` and :math:`M = \mathrm{sign}(N)\sqrt{N^2 + W^2}`.

    Unbiased. ``f`` is a black box: it is evaluated only, never
    differentiated (it may be discontinuous). The distribution must be a
    diagonal Gaussian with params ``(loc, scale)``, ``scale > 0`` (broadcast
    shapes allowed; the gradient of a broadcast parameter is summed).
    First-order only: the estimate is attached by a custom rule, and a second
    derivative in ``params`` (or mixed with ``*args``) raises a ``TypeError``
    instead of returning zeros; ``jaxgrad.pathwise`` gives curvature.
    Cost: ``num_samples * (3 D + 1)`` evaluations of ``f`` for ``D``
    coordinates (two per ``loc`` coordinate, one per ``scale`` coordinate, one
    shared), batched in a single ``vmap`` over inputs of ``D`` elements each
    (memory ``O(num_samples D^2)``).

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x`` of the
        broadcast shape of ``loc`` and ``scale``.
      num_samples: independent draws per estimate (static, ``>= 1``).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every
        evaluation gets its own independent key, so the positive and negative
        parts share no noise of ``f`` (see ``jaxgrad.score_function``);
        static, default ``False``.

    Returns:
      ``est(key, params, *args) -> scalar`` with ``params = (loc, scale)``;
      ``jax.grad(est, argnums=1)`` is the pair of estimates. Gradients with
      respect to ``*args`` are pathwise on the base samples ``x``.

    Raises:
      TypeError: if ``f`` is not callable, ``num_samples`` is not an int,
        ``params`` is not a pair of floating arrays, or ``key`` is not a key.
      ValueError: if ``num_samples < 1``, ``loc`` and ``scale`` do not
        broadcast, ``key`` is a batch of keys, or ``f`` does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.measure_valued(lambda x: jnp.sum(x**2), num_samples=10_000)
      >>> g_loc, g_scale = jax.grad(est, argnums=1)(jax.random.key(0), (1.0, 1.0))
      >>> round(float(g_loc), 1), round(float(g_scale), 1)  # exact: 2 mu, 2 sigma
      (2.0, 2.0)

    References:
      Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in
      Machine Learning*, JMLR 2020, sec. 6. https://jmlr.org/papers/v21/19-346.html ;
      Pflug, *Optimization of Stochastic Models*, Kluwer 1996;
      Heidergott & Vázquez-Abad, *Measure-valued differentiation for Markov
      chains*, J. Optim. Theory Appl. 2008.
    """
    fn = "measure_valued"
    num_samples, fs = common.check_estimator(f, num_samples, fn, f_takes_key=f_takes_key)

    def est(key: Any, params: Any, *args: Any) -> Array:
        checks.check_key(key, fn)
        key, f_key = common.split_f_key(key, f_takes_key)
        loc, scale = _loc_scale(params, fn)
        shape = jnp.broadcast_shapes(loc.shape, scale.shape)
        x_dtype = loc.dtype if loc.dtype.itemsize >= scale.dtype.itemsize else scale.dtype
        dtype = samplers.compute_dtype(x_dtype)
        d = math.prod(shape)
        s = num_samples
        mu = jnp.broadcast_to(jax.lax.stop_gradient(loc).astype(dtype), shape).reshape(d)
        sigma = jnp.broadcast_to(jax.lax.stop_gradient(scale).astype(dtype), shape).reshape(d)

        noise = jax.random.normal(key, (3 * s * d,), dtype).reshape(3, s, d)
        n, y, z = noise[0], noise[1], noise[2]
        w = jnp.sqrt(y * y + z * z)  # Rayleigh = Weibull(scale sqrt 2, shape 2)
        m = jnp.where(n >= 0, 1, -1).astype(dtype) * jnp.sqrt(n * n + w * w)  # ds-Maxwell

        base = mu + sigma * n  # [s, d]
        eye = jnp.eye(d, dtype=bool)

        def replaced(v: Array) -> Array:
            # [s, i, j] = v[s, i] if i == j else base[s, j]
            return jnp.where(eye[None], v[:, :, None], base[:, None, :])

        xs = jnp.concatenate(
            [
                base[:, None, :],
                replaced(mu + sigma * w),
                replaced(mu - sigma * w),
                replaced(mu + sigma * m),
            ],
            axis=1,
        )  # [s, 1 + 3d, d]
        xs = jax.lax.stop_gradient(xs.reshape((s * (1 + 3 * d), *shape)).astype(x_dtype))
        values = fs(xs, *args, key=f_key).reshape(s, 1 + 3 * d)
        out = values[:, 0]
        v = jax.lax.stop_gradient(values).astype(dtype)
        f_base = v[:, 0]
        f_up, f_down, f_maxwell = v[:, 1:].reshape(s, 3, d).transpose(1, 0, 2)
        g_loc = jnp.mean(f_up - f_down, axis=0) / (sigma * math.sqrt(2 * math.pi))
        g_scale = jnp.mean(f_maxwell - f_base[:, None], axis=0) / sigma
        grads = [
            _unbroadcast(g_loc.reshape(shape), loc.shape),
            _unbroadcast(g_scale.reshape(shape), scale.shape),
        ]
        grad = jax.tree.unflatten(jax.tree.structure(params), grads)
        value = jnp.mean(out)
        return common.with_gradient(value, params, grad, fn=fn)

    return est
