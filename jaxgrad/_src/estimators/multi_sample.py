r"""Variational objectives and their gradient estimators: ELBO (with STL), IWAE, VIMCO, DReG.

Every function here takes the log-joint of a model, ``log_p(z, *args) = log
p(x, z)`` for one latent sample ``z`` (the data ``x`` and the model's
parameters ride in ``*args``), and a variational family ``dist`` with
parameters ``params`` (the encoder's output), and returns
``est(key, params, *args)`` in the protocol of every jaxgrad estimator. With
``z_1..z_K ~ q = dist(params)`` and log-weights

.. math::
    \log w_k = \log p(x, z_k) - \log q(z_k), \qquad
    \tilde w_k = \frac{w_k}{\sum_j w_j},

the value of ``est`` is the ELBO estimate :math:`\frac1K \sum_k \log w_k`
(:func:`elbo`) or the importance-weighted bound
:math:`\hat L_K = \log \frac1K \sum_k w_k` (the others), whose expectation
:math:`L_K = E[\hat L_K]` increases with ``K`` to :math:`\log p(x)` (Burda et
al. 2016). ``jax.grad`` of ``est`` in ``*args`` is always the pathwise
gradient of that value at the drawn samples (for the model's parameters
:math:`\nabla_\theta \hat L_K = \sum_k \tilde w_k \nabla_\theta \log
p(x, z_k)`); in ``params`` it is the estimator that names the function.

All evaluations of ``log_p`` share one batched call (``K`` evaluations per
estimate); the estimators that are not plain automatic differentiation
compute their gradient from one vector-Jacobian product of that call and
attach it with ``common.with_gradient``, so they are first-order only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import baselines, checks
from jaxgrad._src.estimators import common

Array = jax.Array


def logmeanexp(x: Array) -> Array:
    """``log(mean(exp(x)))`` over the leading axis, stably (``-inf`` entries allowed)."""
    return jax.nn.logsumexp(x, axis=0) - jnp.log(jnp.asarray(x.shape[0], x.dtype))


def leave_one_out_bounds(log_w: Array) -> Array:
    r"""VIMCO's baselines: the bound with ``w_k`` replaced by the others' geometric mean.

    .. math::
        \hat L_{-k} = \log \frac1K \Big( \sum_{j \ne k} w_j + \hat w_{-k} \Big),
        \qquad \log \hat w_{-k} = \frac1{K - 1} \sum_{j \ne k} \log w_j ,

    for ``log_w`` of shape ``[K]`` (``K >= 2``), computed as ``K`` log-sum-exps
    of ``log_w`` with its ``k``-th entry replaced: ``O(K^2)`` work, exact in
    log space.
    """
    k = log_w.shape[0]
    others = baselines.leave_one_out_mean(log_w)
    rows = jnp.where(jnp.eye(k, dtype=bool), others[:, None], log_w[None, :])
    return jax.nn.logsumexp(rows, axis=1) - jnp.log(jnp.asarray(k, log_w.dtype))


def _prologue(log_p: Any, dist: Any, num_samples: Any, fn: str, minimum: int, why: str = ""):
    """Checks the arguments; returns ``(K, lps)`` with ``lps`` the batched ``log_p``."""
    common.check_f(log_p, fn)
    common.check_dist(dist, fn)
    num_samples = checks.check_num_samples(num_samples, fn, minimum, why)
    return num_samples, common.batch_f(log_p, fn)


def _log_weights(lps: Callable, dist: Any, zs: Any, q_params: Any, args: tuple) -> Array:
    """``[K]`` log-weights ``log p(x, z_k) - log q(z_k)``, in the wider of the two dtypes."""
    log_p = lps(zs, *args)
    log_q = jax.vmap(lambda z: dist.log_prob(q_params, z))(zs)
    dtype = jnp.promote_types(log_p.dtype, log_q.dtype)
    return log_p.astype(dtype) - log_q.astype(dtype)


def _pathwise_estimator(
    fn: str, lps: Callable, dist: Any, num_samples: int, value: Callable[[Array], Array]
) -> Callable[..., Array]:
    """``est`` whose value is ``value(log_w)`` at reparameterized samples: plain autodiff."""

    def est(key: Any, params: Any, *args: Any) -> Array:
        checks.check_key(key, fn)
        zs = common.sample_n(dist, key, params, num_samples)
        return value(_log_weights(lps, dist, zs, params, args))

    return est


def _vjp_estimator(
    fn: str,
    lps: Callable,
    dist: Any,
    num_samples: int,
    *,
    path: bool,
    coefficients: Callable[[Array], Array],
    value: Callable[[Array], Array],
) -> Callable[..., Array]:
    r"""``est`` whose ``params`` gradient is ``sum_k c_k d(log w_k)/d params`` for chosen ``c``.

    With ``path`` (reparameterized ``q``), ``log w_k`` is differentiated through
    the sample ``z_k(params)`` with the parameters of ``log q`` stopped; without
    it, at fixed samples through ``log q``'s parameters only (a score
    function). The coefficients ``c = coefficients(log_w)`` are constants; the
    value ``value(log_w)`` keeps its pathwise gradient in ``*args``.
    """

    def est(key: Any, params: Any, *args: Any) -> Array:
        checks.check_key(key, fn)
        at = jax.tree.map(jax.lax.stop_gradient, params)

        def log_w_of(phi: Any) -> Array:
            zs = common.sample_n(dist, key, phi, num_samples)
            if not path:
                zs = jax.tree.map(jax.lax.stop_gradient, zs)
            q_params = jax.tree.map(jax.lax.stop_gradient, phi) if path else phi
            return _log_weights(lps, dist, zs, q_params, args)

        log_w, pullback = jax.vjp(log_w_of, at)
        c = jax.lax.stop_gradient(coefficients(jax.lax.stop_gradient(log_w)))
        (grad,) = pullback(c.astype(log_w.dtype))
        return common.with_gradient(value(log_w), params, grad, fn=fn)

    return est


_REPARAMETERIZED = "For discrete latents use jaxgrad.vimco"


def iwae_bound(
    log_p: Callable[..., Array], *, dist: Any, num_samples: int = 1
) -> Callable[..., Array]:
    r"""The importance-weighted bound, differentiated along the sample path.

    .. math::
        \hat L_K = \log \frac1K \sum_{k=1}^K
                   \frac{p(x, z_k)}{q(z_k)}, \qquad
        z_k = g_\phi(\varepsilon_k),

    (module docstring). ``jax.grad`` in ``params`` is the plain
    reparameterized IWAE gradient :math:`\sum_k \tilde w_k \nabla_\phi \log
    w_k(g_\phi(\varepsilon_k))`, unbiased for :math:`\nabla L_K`; its
    signal-to-noise ratio for the encoder falls like :math:`K^{-1/2}`
    (Rainforth et al. 2018), which :func:`dreg` repairs. With ``K = 1`` it is
    the reparameterized ELBO. Plain automatic differentiation: derivatives of
    every order are those of the Monte Carlo bound, unbiased for those of
    :math:`L_K`.

    Args:
      log_p: the log-joint ``log_p(z, *args) -> scalar`` for one latent sample
        ``z`` (the shape of one sample of ``dist``).
      dist: a reparameterizable spec, e.g. ``jaxgrad.dists.normal``.
      num_samples: ``K``, importance samples per estimate (static, ``>= 1``).

    Returns:
      ``est(key, params, *args) -> scalar``, the bound :math:`\hat L_K`.

    Raises:
      TypeError: if ``log_p`` is not callable, ``dist`` lacks ``sample`` or
        ``log_prob``, or ``num_samples`` is not an int.
      ValueError: if ``dist`` is not reparameterizable, ``num_samples < 1``, or
        ``log_p`` does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> normal = jaxgrad.dists.normal
      >>> one = lambda z: jnp.ones_like(z)  # unit scales in the dtype of z
      >>> log_p = lambda z, x: normal.log_prob((0 * z, one(z)), z) + normal.log_prob((z, one(z)), x)
      >>> est = jaxgrad.iwae_bound(log_p, dist=normal, num_samples=1000)
      >>> bound = est(jax.random.key(0), (0.75, 0.7071), 1.5)  # q is the exact posterior
      >>> round(float(bound), 3), round(float(normal.log_prob((0.0, 2.0 ** 0.5), 1.5)), 3)
      (-1.828, -1.828)

    References:
      Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR
      2016. https://arxiv.org/abs/1509.00519
    """
    fn = "iwae_bound"
    k, lps = _prologue(log_p, dist, num_samples, fn, 1)
    common.check_reparameterizable(dist, fn, _REPARAMETERIZED)
    return _pathwise_estimator(fn, lps, dist, k, logmeanexp)


def elbo(
    log_p: Callable[..., Array], *, dist: Any, num_samples: int = 1, stl: bool = False
) -> Callable[..., Array]:
    r"""The reparameterized ELBO, optionally "sticking the landing" (STL).

    .. math::
        \widehat{\mathrm{ELBO}} = \frac1K \sum_{k=1}^K \log p(x, z_k)
        - \log q_\phi(z_k), \qquad z_k = g_\phi(\varepsilon_k) .

    ``jax.grad`` in ``params`` differentiates both the sample path and
    ``log q_phi``'s explicit dependence on ``phi``. That second part is the score
    :math:`-\nabla_\phi \log q_\phi(z)`, whose mean is zero, so ``stl=True``
    drops it (Roeder, Wu & Duvenaud 2017):

    .. math::
        \hat g_{\mathrm{STL}} = \frac1K \sum_k
        \frac{\partial z_k}{\partial \phi}^{\!\top}
        \nabla_z \big[\log p(x, z) - \log q_{\bot(\phi)}(z)\big]_{z = z_k},

    still unbiased, and exactly zero when ``q`` is the exact posterior (the
    path term vanishes where ``log p(x, z) - log q(z)`` is constant): its
    variance goes to zero as ``q`` approaches the posterior. With
    ``stl=False`` it is plain automatic differentiation (every order); with
    ``stl=True`` it is first-order only and a second derivative in
    ``params`` raises. Gradients in ``*args`` are pathwise in both cases.

    Args:
      log_p: the log-joint ``log_p(z, *args) -> scalar`` for one sample ``z``.
      dist: a reparameterizable spec, e.g. ``jaxgrad.dists.normal``.
      num_samples: ``K``, samples per estimate (static, ``>= 1``).
      stl: drop the score term (static Python bool).

    Returns:
      ``est(key, params, *args) -> scalar``, the ELBO estimate.

    Raises:
      TypeError: as :func:`iwae_bound`, or if ``stl`` is not a bool.
      ValueError: as :func:`iwae_bound`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> normal = jaxgrad.dists.normal
      >>> one = lambda z: jnp.ones_like(z)  # unit scales in the dtype of z
      >>> log_p = lambda z, x: normal.log_prob((0 * z, one(z)), z) + normal.log_prob((z, one(z)), x)
      >>> posterior = (jnp.float32(0.75), jnp.float32(0.5) ** 0.5)
      >>> est = jaxgrad.elbo(log_p, dist=normal, stl=True)
      >>> g = jax.grad(est, argnums=1)(jax.random.key(0), posterior, jnp.float32(1.5))
      >>> [round(float(x), 4) + 0.0 for x in g]  # at the posterior, zero for every sample
      [0.0, 0.0]

    References:
      Roeder, Wu & Duvenaud, *Sticking the Landing: Simple, Lower-Variance
      Gradient Estimators for Variational Inference*, NeurIPS 2017.
      https://arxiv.org/abs/1703.09194
    """
    fn = "elbo"
    k, lps = _prologue(log_p, dist, num_samples, fn, 1)
    common.check_reparameterizable(dist, fn, _REPARAMETERIZED)
    checks.check_bool(stl, fn, "stl", "True drops the score term")
    mean = lambda log_w: jnp.mean(log_w)
    if not stl:
        return _pathwise_estimator(fn, lps, dist, k, mean)
    uniform = lambda log_w: jnp.full_like(log_w, 1.0 / k)
    return _vjp_estimator(fn, lps, dist, k, path=True, coefficients=uniform, value=mean)


def _squared_normalized_weights(log_w: Array) -> Array:
    return jnp.square(jax.nn.softmax(log_w))


def dreg(log_p: Callable[..., Array], *, dist: Any, num_samples: int) -> Callable[..., Array]:
    r"""The doubly reparameterized gradient (DReG) of the importance-weighted bound.

    The reparameterized IWAE gradient has a score term :math:`-\sum_k \tilde
    w_k \nabla_\phi \log q_\phi(z_k)` at fixed ``z``. Reparameterizing it a
    second time (Tucker, Lawson, Gu & Maddison 2019, eq. 5) replaces it
    exactly, in expectation, by a path term, and the encoder gradient becomes

    .. math::
        \hat g_{\mathrm{DReG}} = \sum_{k=1}^K \tilde w_k^{\,2}\,
        \frac{\partial z_k}{\partial \phi}^{\!\top}
        \nabla_z \big[\log p(x, z) - \log q_{\bot(\phi)}(z)\big]_{z = z_k},

    unbiased for :math:`\nabla_\phi L_K`, with a signal-to-noise ratio that
    grows with ``K`` instead of falling; like STL (:func:`elbo`) it is zero
    at the exact posterior. With ``K = 1`` it is STL. The value is the bound
    :math:`\hat L_K` and its gradient in ``*args`` (the model) is the plain
    IWAE gradient :math:`\sum_k \tilde w_k \nabla \log p(x, z_k)`, which
    DReG leaves unchanged. (Tucker et al. also give a doubly reparameterized
    model gradient for reweighted wake-sleep; this is the IWAE one.)

    First-order only: the estimate is attached by a custom rule, and a
    second derivative in ``params`` raises. Cost: ``K`` evaluations of
    ``log_p`` and one vector-Jacobian product.

    Args:
      log_p: the log-joint ``log_p(z, *args) -> scalar`` for one sample ``z``.
      dist: a reparameterizable spec, e.g. ``jaxgrad.dists.normal``.
      num_samples: ``K`` (static, ``>= 1``).

    Returns:
      ``est(key, params, *args) -> scalar``, the bound :math:`\hat L_K`.

    Raises:
      TypeError, ValueError: as :func:`iwae_bound`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> normal = jaxgrad.dists.normal
      >>> one = lambda z: jnp.ones_like(z)  # unit scales in the dtype of z
      >>> log_p = lambda z, x: normal.log_prob((0 * z, one(z)), z) + normal.log_prob((z, one(z)), x)
      >>> q = (jnp.float32(0.2), jnp.float32(1.0))
      >>> est = jaxgrad.dreg(log_p, dist=normal, num_samples=16)
      >>> bound, g = jax.value_and_grad(est, argnums=1)(jax.random.key(0), q, jnp.float32(1.5))
      >>> bool(g[0] > 0), bool(g[1] < 0)  # toward the posterior N(0.75, 0.71)
      (True, True)

    References:
      Tucker, Lawson, Gu & Maddison, *Doubly Reparameterized Gradient
      Estimators for Monte Carlo Objectives*, ICLR 2019.
      https://arxiv.org/abs/1810.04152
    """
    fn = "dreg"
    k, lps = _prologue(log_p, dist, num_samples, fn, 1)
    common.check_reparameterizable(dist, fn, _REPARAMETERIZED)
    return _vjp_estimator(
        fn, lps, dist, k, path=True, coefficients=_squared_normalized_weights, value=logmeanexp
    )


def _vimco_coefficients(log_w: Array) -> Array:
    # d(log w_k)/d phi = -grad log q(z_k) at fixed z, so c_k = w~_k - (L - L_{-k}) gives
    # sum_k (L - L_{-k} - w~_k) grad log q(z_k).
    return jax.nn.softmax(log_w) - (logmeanexp(log_w) - leave_one_out_bounds(log_w))


def vimco(log_p: Callable[..., Array], *, dist: Any, num_samples: int) -> Callable[..., Array]:
    r"""VIMCO: the score-function gradient of the bound with leave-one-out baselines.

    For any ``q`` with a ``log_prob`` (discrete latents in particular), the
    gradient of :math:`L_K` is :math:`E[\sum_k (\hat L_K - \tilde w_k) \nabla
    \log q(z_k)]` at fixed samples. Every sample's learning signal
    :math:`\hat L_K` is centered by a baseline that does not depend on
    :math:`z_k`: the bound with :math:`w_k` replaced by the geometric mean
    of the others (:func:`leave_one_out_bounds`, Mnih & Rezende 2016, eq. 9),

    .. math::
        \hat g = \sum_{k=1}^K \big(\hat L_K - \hat L_{-k}\big)
                 \nabla_\phi \log q_\phi(z_k)
                 - \sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k),

    unbiased because :math:`\hat L_{-k}` depends only on the other samples.
    The value is :math:`\hat L_K` and its gradient in ``*args`` (the model) is
    :math:`\sum_k \tilde w_k \nabla \log p(x, z_k)`. ``log_p`` is a black box in
    ``z`` (evaluated at samples only, never differentiated in ``z``).

    First-order only (a second derivative in ``params`` raises). Cost: ``K``
    evaluations of ``log_p``.

    Args:
      log_p: the log-joint ``log_p(z, *args) -> scalar`` for one sample ``z``.
      dist: any spec with ``sample`` and ``log_prob``, e.g.
        ``jaxgrad.dists.bernoulli`` or ``jaxgrad.dists.categorical``.
      num_samples: ``K`` (static, ``>= 2``: the baselines need another sample).

    Returns:
      ``est(key, params, *args) -> scalar``, the bound :math:`\hat L_K`.

    Raises:
      TypeError: as :func:`iwae_bound`.
      ValueError: if ``num_samples < 2`` or ``log_p`` does not return a
        scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> bern = jaxgrad.dists.bernoulli
      >>> log_p = lambda z, x: bern.log_prob(jnp.zeros(3), z) - jnp.sum((x - z) ** 2)
      >>> est = jaxgrad.vimco(log_p, dist=bern, num_samples=4)
      >>> x = jnp.asarray([1.0, 0.0, 1.0])
      >>> g = jax.grad(est, argnums=1)(jax.random.key(0), jnp.zeros(3), x)
      >>> g.shape
      (3,)

    References:
      Mnih & Rezende, *Variational Inference for Monte Carlo Objectives*,
      ICML 2016. https://arxiv.org/abs/1602.06725
    """
    fn = "vimco"
    why = " (each sample's baseline is built from the others)"
    k, lps = _prologue(log_p, dist, num_samples, fn, 2, why)
    return _vjp_estimator(
        fn, lps, dist, k, path=False, coefficients=_vimco_coefficients, value=logmeanexp
    )
