"""ARM and DisARM: antithetic two-evaluation estimators for independent Bernoullis.

Both draw one uniform vector ``u`` per pair and evaluate ``f`` at the two
antithetic binary samples ``1[u < p]`` and ``1[1 - u < p]``; they differ only
in how the difference of the two costs is weighted. Neither differentiates
``f``: it is evaluated at binary points only (black box).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import samplers
from jaxgrad._src.estimators import common

Array = jax.Array


def _antithetic_pairs(key: Any, logits: Array, num_samples: int) -> tuple[Array, ...]:
    """``(l, u, b, b~)``: ``num_samples`` antithetic pairs for the coins ``logits``.

    ``l`` is the stop-gradient logits and ``u ~ U(0, 1)`` the noise, both in the
    compute dtype and of shape ``[num_samples, *logits.shape]`` (``l`` without
    the leading axis); ``b = 1[u < sigma(l)]`` and ``b~ = 1[1 - u < sigma(l)]``
    are in the dtype of ``logits``.
    """
    cdtype = samplers.compute_dtype(logits.dtype)
    l = jax.lax.stop_gradient(logits).astype(cdtype)
    u = samplers.uniform_open(key, (num_samples, *logits.shape), cdtype)
    p = jax.nn.sigmoid(l)
    b = (u < p).astype(logits.dtype)  # the sample
    b_anti = (1.0 - u < p).astype(logits.dtype)  # its antithetic partner
    return l, u, b, b_anti


def _antithetic(
    fn: str, f: Callable[..., Array], num_samples: int, weight: Callable, f_takes_key: bool
) -> Callable:
    """The shared body: ``num_samples`` antithetic pairs, weighted by ``weight``."""
    num_samples, fs = common.check_estimator(f, num_samples, fn, f_takes_key=f_takes_key)

    def est(key: Any, logits: Any, *args: Any) -> Array:
        logits = common.check_logits(key, logits, fn)
        key, f_key = common.split_f_key(key, f_takes_key)
        cdtype = samplers.compute_dtype(logits.dtype)
        shape = logits.shape
        l, u, b, b_anti = _antithetic_pairs(key, logits, num_samples)
        xs = jax.lax.stop_gradient(jnp.concatenate([b, b_anti], axis=0))
        values = fs(xs, *args, key=f_key)
        f_b = jax.lax.stop_gradient(values[:num_samples]).astype(cdtype)
        f_anti = jax.lax.stop_gradient(values[num_samples:]).astype(cdtype)
        diff = (f_b - f_anti).reshape((num_samples,) + (1,) * len(shape))
        grad = jnp.mean(diff * weight(u, l, b.astype(cdtype), b_anti.astype(cdtype)), axis=0)
        return common.with_gradient(jnp.mean(values), logits, grad, fn=fn)

    return est


def _arm_weight(u: Array, l: Array, b: Array, b_anti: Array) -> Array:
    # f(b) - f(b~) = -(f(1[u > sigma(-l)]) - f(1[u < sigma(l)])), since
    # 1[u > sigma(-l)] = 1[1 - u < sigma(l)] = b~.
    del l, b, b_anti
    return -(u - 0.5)


def _disarm_weight(u: Array, l: Array, b: Array, b_anti: Array) -> Array:
    del u
    sign = 1.0 - 2.0 * b_anti  # (-1)^{b~}
    return 0.5 * sign * jnp.abs(b - b_anti) * jax.nn.sigmoid(jnp.abs(l))


def arm(
    f: Callable[..., Array], *, num_samples: int = 1, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""The ARM estimator (augment-REINFORCE-merge) for independent Bernoullis.

    For logits ``l`` (any shape; every element an independent coin with
    ``p = sigma(l)``) and ``u ~ U(0, 1)`` of the same shape,

    .. math::
        \hat g = \big(f(\mathbb{1}[u > \sigma(-l)]) - f(\mathbb{1}[u < \sigma(l)])\big)
                 \,(u - \tfrac12), \qquad
        \mathbb{E}[\hat g] = \nabla_l \, \mathbb{E}_{b \sim p}[f(b)] .

    The two samples are antithetic (``1[u < p]`` and ``1[1 - u < p]``), each
    marginally distributed as ``b ~ Bernoulli(p)``; ``num_samples`` independent
    pairs are averaged. The value of ``est`` is the mean of ``f`` over all
    ``2 * num_samples`` samples, and gradients with respect to ``*args`` are
    pathwise on those samples.

    Unbiased. ``f`` is a black box: it is only evaluated at binary points and
    never differentiated with respect to ``x``. Cost: ``2 * num_samples``
    evaluations of ``f``. First-order only: the estimate is attached by a
    custom rule, and a second derivative in ``logits`` (``jax.hessian`` in
    either order, or mixed with ``*args``) raises a ``TypeError`` instead of
    returning zeros; for curvature use ``jaxgrad.score_function`` or
    ``jaxgrad.rloo``.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x`` of the shape of
        ``logits`` with entries in ``{0., 1.}`` (dtype of ``logits``).
      num_samples: the number of antithetic pairs (static, ``>= 1``).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every
        evaluation gets its own independent key, the two halves of a pair
        included, so the pair's difference does not cancel ``f``'s noise
        (see ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      ARM estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``num_samples`` is not an int,
        ``logits`` is not floating or ``key`` is not a key.
      ValueError: if ``num_samples < 1``, ``key`` is a batch of keys, or ``f``
        does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> est = jaxgrad.arm(f)
      >>> g = jax.jit(jax.grad(est, argnums=1))(jax.random.key(0), jnp.zeros(3))
      >>> g.shape
      (3,)

    References:
      Yin & Zhou, *ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
      Networks*, ICLR 2019. https://arxiv.org/abs/1807.11143
    """
    return _antithetic("arm", f, num_samples, _arm_weight, f_takes_key)


def disarm(
    f: Callable[..., Array], *, num_samples: int = 1, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""The DisARM estimator: ARM with its antithetic noise integrated out.

    With ``u ~ U(0, 1)``, ``b = 1[u < p]`` and ``b~ = 1[1 - u < p]``,

    .. math::
        \hat g_i = \tfrac12 \big(f(b) - f(\tilde b)\big)\,(-1)^{\tilde b_i}\,
                   \mathbb{1}[b_i \ne \tilde b_i]\,\sigma(|l_i|) .

    It is ARM conditioned on the pair ``(b, b~)`` (Rao-Blackwellized over the
    uniform noise that produced it), so its variance never exceeds ARM's; it is
    zero for a single coin at ``p = 1/2``. ``num_samples`` independent pairs are
    averaged; the value is the mean of ``f`` over all ``2 * num_samples``
    samples, and gradients with respect to ``*args`` are pathwise on them.

    Unbiased. ``f`` is a black box (evaluated at binary points only, never
    differentiated with respect to ``x``). Cost: ``2 * num_samples`` evaluations
    of ``f``. First-order only (second derivatives in ``logits`` raise, see
    :func:`arm`).

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one binary sample ``x`` of the
        shape of ``logits``.
      num_samples: the number of antithetic pairs (static, ``>= 1``).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` with an independent
        key per evaluation (see :func:`arm`); static, default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      DisARM estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``num_samples`` is not an int,
        ``logits`` is not floating or ``key`` is not a key.
      ValueError: if ``num_samples < 1``, ``key`` is a batch of keys, or ``f``
        does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.disarm(lambda b: (b[0] - 0.499) ** 2)
      >>> grad = jax.jit(jax.grad(est, argnums=1))
      >>> g = [float(grad(k, jnp.zeros(1))[0]) for k in jax.random.split(jax.random.key(0), 3)]
      >>> [round(x, 6) for x in g]  # zero variance at p = 1/2: always p(1-p)(1-2t)
      [0.0005, 0.0005, 0.0005]

    References:
      Dong, Mnih & Tucker, *DisARM: An Antithetic Gradient Estimator for Binary
      Latent Variables*, NeurIPS 2020. https://arxiv.org/abs/2006.10680 ;
      Yin, Ho, Zhang, Qian & Zhou, *Probabilistic Best Subset Selection via
      Gradient-Based Optimization* (U2G), 2020. https://arxiv.org/abs/2006.06448
    """
    return _antithetic("disarm", f, num_samples, _disarm_weight, f_takes_key)
