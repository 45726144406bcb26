"""Categorical DisARM: the importance-weighted coupled estimator of Dong, Mnih & Tucker (2021).

Two categorical samples per pair, coupled antithetically through a
stick-breaking construction; the gradient is the symmetric two-sample
score-function estimator importance-weighted from the independent pair to the
coupled one. ``f`` is a black box: it is evaluated at one-hot points only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import samplers
from jaxgrad._src.estimators import common

Array = jax.Array


def _stick_breaking(logits: Array) -> tuple[Array, Array, Array]:
    """``(order, log_sigma, log_rest)`` of the ascending stick-breaking construction.

    ``logits`` is ``[V, K]`` (stop-gradient, compute dtype). ``order[v]`` sorts
    the classes of variable ``v`` by ascending logit; for the sorted logits
    ``s`` and ``i = 0..K-2``, ``log_sigma[v, i] = log sigma_i`` with
    ``sigma_i = pi_(i) / sum_{j >= i} pi_(j)`` (the probability that the stick
    stops at position ``i`` given it reached it) and ``log_rest = log(1 - sigma_i)``.
    """
    order = jnp.argsort(logits, axis=-1, stable=True)
    s = jnp.take_along_axis(logits, order, axis=-1)
    tail = jax.lax.cumlogsumexp(s, axis=s.ndim - 1, reverse=True)  # log sum_{j >= i} exp(s_j)
    log_sigma = s[..., :-1] - tail[..., :-1]
    log_rest = tail[..., 1:] - tail[..., :-1]
    return order, log_sigma, log_rest


def _coupled_pairs(l: Array, u: Array) -> tuple[Array, ...]:
    """The antithetic stick-breaking pairs of logits ``l`` ``[V, K]`` from uniforms ``u``.

    ``u`` is ``[N, ...]`` with ``V * (K - 1)`` entries per pair, read as ``[N, V, K - 1]``.
    Returns ``(log_sigma, log_rest, pos, pos_anti, idx, idx_anti)``: the
    stick-breaking terms of :func:`_stick_breaking`, the sorted positions
    ``[N, V]`` where ``z`` (first ``i`` with ``u_i < sigma_i``) and ``z~``
    (first ``i`` with ``1 - u_i < sigma_i``) stop (the last position always
    stops), and the classes ``[N, V]`` they are.
    """
    num_vars, num_classes = l.shape
    order, log_sigma, log_rest = _stick_breaking(l)
    u = u.reshape(u.shape[0], num_vars, num_classes - 1)
    sigma = jnp.exp(log_sigma)
    stop = jnp.ones((u.shape[0], num_vars, num_classes), bool)
    pos = jnp.argmax(stop.at[..., :-1].set(u < sigma), axis=-1)
    pos_anti = jnp.argmax(stop.at[..., :-1].set(1.0 - u < sigma), axis=-1)
    idx = jnp.take_along_axis(order[None], pos[..., None], axis=-1)[..., 0]
    idx_anti = jnp.take_along_axis(order[None], pos_anti[..., None], axis=-1)[..., 0]
    return log_sigma, log_rest, pos, pos_anti, idx, idx_anti


def _log_weights(log_sigma: Array, log_rest: Array) -> Array:
    r"""``log w(m)``, ``m = 0..K-2``: the importance weight of a pair whose sticks split at ``m``.

    .. math::
        w(m) = \frac{q(z) q(\tilde z)}{p(z, \tilde z)}
             = (1 - \sigma_m) \prod_{i < m} \frac{(1 - \sigma_i)^2}{1 - 2\sigma_i},
        \qquad m = \min(z, \tilde z) \text{ (sorted positions)}, z \ne \tilde z .

    The factor of position ``i`` is only used for ``i < m <= K - 2``, where
    ``sigma_i <= 1 / (K - i) <= 1/3`` (ascending order), so ``1 - 2 sigma_i > 0``.
    """
    k1 = log_sigma.shape[-1]  # K - 1
    sigma = jnp.exp(log_sigma)
    used = jnp.arange(k1) < k1 - 1  # position K - 2 never lies strictly below a split
    both_zero = jnp.where(used, 2.0 * log_rest - jnp.log1p(-2.0 * jnp.where(used, sigma, 0.0)), 0)
    before = jnp.cumsum(both_zero, axis=-1) - both_zero  # sum over i < m
    return before + log_rest


def categorical_disarm(
    f: Callable[..., Array], *, num_samples: int = 2, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""Categorical DisARM: the importance-weighted stick-breaking coupled estimator.

    For ``V`` independent categoricals ``X_v ~ q_v = softmax(l_v)`` with ``K``
    classes, the score-function gradient written with two *independent* samples
    ``z, z~ ~ q`` is

    .. math::
        \nabla_{l_v} \mathbb{E}[f] = \mathbb{E}_{q \otimes q}\Big[\tfrac12
            \big(f(z) - f(\tilde z)\big)\big(e_{z_v} - e_{\tilde z_v}\big)\Big],

    (``e_k`` one-hot; ``e_{z_v} - pi_v`` is ``grad log q_v(z_v)``, and the
    cross terms vanish because ``E[e_{z~_v} - pi_v] = 0``). The estimator draws
    the pair from an antithetic *coupling* ``p_v(z_v, z~_v)`` with marginals
    ``q_v`` instead, and corrects variable ``v`` by the importance weight
    ``w_v = q_v(z_v) q_v(z~_v) / p_v(z_v, z~_v)``:

    .. math::
        \hat g_v = \tfrac12\, w_v\, \big(f(z) - f(\tilde z)\big)
                   \big(e_{z_v} - e_{\tilde z_v}\big) .

    The coupling is stick-breaking with antithetic uniforms: the classes of
    each variable are sorted by ascending logit, ``sigma_i = pi_(i) /
    sum_{j >= i} pi_(j)`` for positions ``i = 0..K-2`` (``sigma_{K-1} = 1``),
    ``u ~ U(0, 1)^{K-1}``, and ``z`` (``z~``) is the first position ``i`` with
    ``u_i < sigma_i`` (``1 - u_i < sigma_i``). Each is exactly
    ``Categorical(pi)``. For ``m = min(z, z~) < max(z, z~)`` (sorted
    positions), both sticks passed ``i < m`` (probability ``1 - 2 sigma_i``
    each), one stopped at ``m`` and the other ran on alone, so

    .. math::
        w_v = (1 - \sigma_m) \prod_{i < m} \frac{(1 - \sigma_i)^2}{1 - 2\sigma_i} .

    Unbiasedness (derived here, the paper's importance-sampling argument):
    ``E_p[w_v h(z_v, z~_v, ...)] = E_{q_v \otimes q_v}[h]`` whenever
    ``p_v > 0`` wherever ``q_v(z_v) q_v(z~_v) h != 0``. Ascending order makes
    ``sigma_i <= 1 / (K - i) <= 1/3`` for every ``i <= K - 3``, so every pair
    ``z_v != z~_v`` of possible classes has ``p_v > 0`` (pairs ``z_v = z~_v``
    have ``h = 0``); any other order can have ``sigma_i > 1/2``, make such
    pairs impossible and bias the estimator. The other variables stay coupled
    (not independent): ``(z_v, z~_v)`` is independent of them, so the cross
    terms still vanish and the display above holds for every ``v``. The value
    of ``est`` is the mean of ``f`` over all ``num_samples`` samples (each
    marginally ``q``), unbiased; gradients with respect to ``*args`` are
    pathwise on those samples.

    For ``K = 2`` the coupling is DisARM's antithetic pair and
    ``w = sigma(|l_1 - l_0|)``, so the estimate is exactly ``jaxgrad.disarm`` on
    the coin ``l_1 - l_0`` (``+g`` on class 1, ``-g`` on class 0), sample by
    sample from the same uniforms.

    Of the paper's categorical estimators this is the importance-weighted one
    (``DisARM-IW``); the stick-breaking and tree reparameterizations into
    binary variables (``DisARM-SB``/``-Tree``) are not implemented here.

    Unbiased. ``f`` is a black box (evaluated at one-hot points only, never
    differentiated with respect to ``x``). Cost: ``num_samples`` evaluations of
    ``f`` (``num_samples / 2`` pairs). Classes with logit ``-inf`` are never
    sampled and get zero gradient; a variable whose logits are all ``-inf`` (or
    a NaN logit) makes the value NaN. First-order only: a second derivative in
    ``logits`` raises a ``TypeError`` (see ``jaxgrad.arm``).

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one one-hot sample ``x`` of the
        shape of ``logits`` (``[..., K]``, classes last; every leading element
        is an independent variable, as in ``jaxgrad.dists.categorical``).
      num_samples: evaluations of ``f``, an even number (static, ``>= 2``):
        ``num_samples / 2`` independent coupled pairs are averaged.
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every
        evaluation gets its own independent key, the two halves of a pair
        included (see ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      categorical DisARM estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``num_samples`` is not an int,
        ``logits`` is not floating or ``key`` is not a key.
      ValueError: if ``logits`` is a scalar (it needs a class axis),
        ``num_samples`` is odd or ``< 2``, ``key`` is a batch of keys, or ``f``
        does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> w = jnp.arange(12.0).reshape(3, 4) / 12
      >>> f = lambda x: jnp.sum(x * w) ** 2
      >>> est = jaxgrad.categorical_disarm(f, num_samples=4)
      >>> g = jax.jit(jax.grad(est, argnums=1))(jax.random.key(0), jnp.zeros((3, 4)))
      >>> g.shape, bool(jnp.allclose(g.sum(-1), 0.0, atol=1e-6))
      ((3, 4), True)

    References:
      Dong, Mnih & Tucker, *Coupled Gradient Estimators for Discrete Latent
      Variables*, NeurIPS 2021. https://arxiv.org/abs/2106.08056
    """
    fn = "categorical_disarm"
    why = "It counts evaluations of f, two per coupled pair."
    num_samples, fs = common.check_estimator(f, num_samples, fn, 2, why, f_takes_key=f_takes_key)
    if num_samples % 2:
        raise ValueError(
            f"{fn}: num_samples must be even (two evaluations of f per coupled pair), got "
            f"{num_samples}; pass num_samples={num_samples + 1} or {num_samples - 1}."
        )
    num_pairs = num_samples // 2

    def est(key: Any, logits: Any, *args: Any) -> Array:
        logits = common.check_logits(key, logits, fn, classes_last=True)
        key, f_key = common.split_f_key(key, f_takes_key)
        dtype = logits.dtype
        cdtype = samplers.compute_dtype(dtype)
        shape = logits.shape
        num_classes = shape[-1]
        l = jax.lax.stop_gradient(logits).astype(cdtype).reshape(-1, num_classes)  # [V, K]

        u = samplers.uniform_open(key, (num_pairs, *shape[:-1], num_classes - 1), cdtype)
        log_sigma, log_rest, pos, pos_anti, idx, idx_anti = _coupled_pairs(l, u)

        x = jax.nn.one_hot(idx, num_classes, dtype=dtype).reshape(num_pairs, *shape)
        x_anti = jax.nn.one_hot(idx_anti, num_classes, dtype=dtype).reshape(num_pairs, *shape)
        values = fs(jax.lax.stop_gradient(jnp.concatenate([x, x_anti], axis=0)), *args, key=f_key)
        value = common.nan_without_law(jnp.mean(values), l)

        # Importance weight at the split m = min(z, z~); unused (zero gradient) when z = z~.
        if num_classes > 1:
            log_w = _log_weights(log_sigma, log_rest)  # [V, K - 1]
            split = jnp.minimum(jnp.minimum(pos, pos_anti), num_classes - 2)  # [N, V]
            log_w = jnp.take_along_axis(log_w[None], split[..., None], axis=-1)[..., 0]
            w = jnp.where(pos == pos_anti, 0.0, jnp.exp(log_w))  # [N, V]
        else:  # one class: both samples are it, and the gradient is zero
            w = jnp.zeros(pos.shape, cdtype)

        f_c = jax.lax.stop_gradient(values).astype(cdtype)
        diff = f_c[:num_pairs] - f_c[num_pairs:]  # [N]
        score = (x - x_anti).astype(cdtype).reshape(num_pairs, -1, num_classes)
        grad = jnp.mean(0.5 * (diff[:, None] * w)[..., None] * score, axis=0)
        return common.with_gradient(value, logits, grad.reshape(shape), fn=fn)

    return est
