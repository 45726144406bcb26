"""UGC: DisARM in the interior, a one-bit flip near the boundary, chosen per coordinate.

DisARM's estimate of a coin whose probability is close to 0 or 1 is rarely
non-zero and then large (its variance relative to the gradient explodes), while
a *bitflip* estimate, which compares ``f`` at a sample and at the same sample
with one bit flipped, has a variance that vanishes like ``(p (1 - p))^2`` there.
UGC evaluates one DisARM pair and one flipped copy of its first sample (three
evaluations of ``f``) and uses, for each coordinate, the bitflip estimate where
the coin is near the boundary and DisARM's elsewhere. ``f`` is a black box.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import samplers
from jaxgrad._src.estimators import arm, common

Array = jax.Array


def _boundary(l: Array) -> Array:
    """The coordinates that get the bitflip estimate: ``min(p, 1 - p) < 1 / (2 D)``.

    ``D`` is the number of coins (``l.size``). Infinite (masked) logits and
    coins whose ``p (1 - p)`` underflows to zero are excluded: their gradient is
    zero either way, and flipping them would evaluate ``f`` at an impossible
    point.
    """
    m = jax.nn.sigmoid(-jnp.abs(l))  # min(p, 1 - p)
    pq = jax.nn.sigmoid(l) * jax.nn.sigmoid(-l)
    return jnp.isfinite(l) & (pq > 0) & (2.0 * l.size * m < 1.0)


def ugc(
    f: Callable[..., Array], *, num_samples: int = 1, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""The UGC estimator (unbiased gradient variance clipping) for independent Bernoullis.

    For logits ``l`` (any shape; ``D = l.size`` independent coins,
    ``p = sigma(l)``, ``q = 1 - p``, ``m = min(p, q)``) the gradient is

    .. math::
        \partial_{l_i} \mathbb{E}[f(b)] = p_i q_i\,
            \mathbb{E}_{b}\big[f(b_{-i}, 1) - f(b_{-i}, 0)\big] .

    One draw takes ``u ~ U(0, 1)^D``, the DisARM pair ``b = 1[u < p]``,
    ``b~ = 1[1 - u < p]`` (:func:`jaxgrad.disarm`), the *boundary set*
    ``S = {i : m_i < 1 / (2 D)}`` (a function of ``l`` only; infinite logits
    excluded) and, independently of ``u``, one coordinate ``j`` uniform on
    ``S``; ``b^{(j)}`` is ``b`` with bit ``j`` flipped. Then

    .. math::
        \hat g_i = \begin{cases}
          |S|\,\mathbb{1}[j = i]\; p_i q_i\,(2 b_i - 1)\,\big(f(b) - f(b^{(i)})\big)
            & i \in S \quad\text{(bitflip-1)}\\
          \tfrac12 \big(f(b) - f(\tilde b)\big)(-1)^{\tilde b_i}
            \mathbb{1}[b_i \ne \tilde b_i]\,\sigma(|l_i|) & i \notin S
            \quad\text{(DisARM)} .
        \end{cases}

    Unbiased coordinate by coordinate: ``(2 b_i - 1)(f(b) - f(b^{(i)})) =
    f(b_{-i}, 1) - f(b_{-i}, 0)`` whatever ``b_i`` is, and ``P(j = i) = 1/|S|``
    independently of ``b``; DisARM is unbiased. Per coordinate the second
    moments are ``|S| p_i^2 q_i^2 E[Delta_i^2]`` (bitflip, ``Delta_i =
    f(b_{-i}, 1) - f(b_{-i}, 0)``) against ``(1/2) p_i q_i max(p_i, q_i)
    E[(f(x, 1) - f(y, 0))^2]`` (DisARM, ``(x, y)`` the antithetic pair of the
    other coins), a ratio of ``2 |S| m_i E[Delta_i^2] / E[(f(x,1) - f(y,0))^2]
    < 1`` on ``S`` whenever coin ``i`` enters ``f`` additively: then
    ``Delta_i`` is a constant, the mean of ``f(x, 1) - f(y, 0)``, so
    ``Delta_i^2`` is at most its second moment, and UGC's variance of
    coordinate ``i`` is at most DisARM's (the means are equal). With
    interactions between a boundary coin and the others the ratio can exceed
    one (e.g. ``f = 1[b_0 != b_1]`` with ``p_1 = 1/2``, where DisARM's pair
    cancels exactly); UGC is still unbiased. Drawing ``j`` on ``S`` (weight
    ``|S|``) rather than on all ``D`` coordinates (weight ``D``) keeps the
    same rule for which coordinates use the bitflip estimate and only lowers
    its second moment, by the factor ``|S| / D``.

    ``num_samples`` independent draws are averaged. The value of ``est`` is the
    mean of ``f`` over the ``2 * num_samples`` antithetic samples (the flipped
    samples are not distributed as ``p`` and only enter the estimate), and
    gradients with respect to ``*args`` are pathwise on those samples.

    Unbiased. ``f`` is a black box (evaluated at binary points only, never
    differentiated with respect to ``x``). Cost: ``3 * num_samples``
    evaluations of ``f`` (also when ``S`` is empty: the third evaluation is
    then unused). First-order only (second derivatives in ``logits`` raise,
    see :func:`jaxgrad.arm`).

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one binary sample ``x`` of the
        shape of ``logits`` (dtype of ``logits``).
      num_samples: the number of draws (each a DisARM pair plus one flipped
        sample; static, ``>= 1``).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` with an independent
        key for every evaluation (see :func:`jaxgrad.arm`); static, default
        ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      UGC estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``num_samples`` is not an int,
        ``f_takes_key`` is not a bool, ``logits`` is not floating or ``key`` is
        not a key.
      ValueError: if ``num_samples < 1``, ``key`` is a batch of keys, or ``f``
        does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.ugc(lambda b: (b[0] - 0.499) ** 2)
      >>> grad = jax.jit(jax.grad(est, argnums=1))
      >>> logits = jnp.asarray([-2.0])  # p = 0.12: a boundary coin (D = 1)
      >>> g = [float(grad(k, logits)[0]) for k in jax.random.split(jax.random.key(0), 3)]
      >>> [round(x, 7) for x in g]  # exact for one coin: p (1 - p) (1 - 2t), zero variance
      [0.0002, 0.0002, 0.0002]

    References:
      Kunes, Yin, Land, Haviv, Pe'er & Tavare, *Gradient Estimation for Binary
      Latent Variables via Gradient Variance Clipping*, AAAI 2023.
      https://arxiv.org/abs/2208.06124 ; DisARM: Dong, Mnih & Tucker, NeurIPS
      2020, https://arxiv.org/abs/2006.10680
    """
    fn = "ugc"
    num_samples, fs = common.check_estimator(f, num_samples, fn, f_takes_key=f_takes_key)

    def est(key: Any, logits: Any, *args: Any) -> Array:
        logits = common.check_logits(key, logits, fn)
        key, f_key = common.split_f_key(key, f_takes_key)
        key, j_key = jax.random.split(key)
        cdtype = samplers.compute_dtype(logits.dtype)
        shape, d = logits.shape, logits.size
        l, u, b, b_anti = arm._antithetic_pairs(key, logits, num_samples)
        # The bitflip coordinate j, uniform on the boundary set S (one per draw).
        in_s = _boundary(l).reshape(-1)
        size_s = jnp.sum(in_s).astype(cdtype)
        j = jax.random.categorical(
            j_key, jnp.where(in_s, 0.0, -jnp.inf).astype(cdtype), shape=(num_samples,)
        )
        flip = (jax.nn.one_hot(j, d, dtype=jnp.bool_) & in_s).reshape((num_samples, *shape))
        b_flip = jnp.where(flip, 1 - b, b)
        xs = jax.lax.stop_gradient(jnp.concatenate([b, b_anti, b_flip], axis=0))
        values = fs(xs, *args, key=f_key)
        f_b, f_anti, f_flip = (
            jax.lax.stop_gradient(v).astype(cdtype).reshape((num_samples,) + (1,) * len(shape))
            for v in jnp.split(values, 3)
        )
        bc, bac = b.astype(cdtype), b_anti.astype(cdtype)
        disarm = (f_b - f_anti) * arm._disarm_weight(u, l, bc, bac)
        pq = jax.nn.sigmoid(l) * jax.nn.sigmoid(-l)
        bitflip = jnp.where(flip, size_s * pq * (2.0 * bc - 1.0) * (f_b - f_flip), 0.0)
        grad = jnp.mean(jnp.where(in_s.reshape(shape), bitflip, disarm), axis=0)
        value = jnp.mean(values[: 2 * num_samples])
        return common.with_gradient(value, logits, grad, fn=fn)

    return est
