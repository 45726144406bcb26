"""IndeCateR: exact enumeration of each categorical, sampling of the others."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import samplers
from jaxgrad._src.estimators import common

Array = jax.Array


def indecater(
    f: Callable[..., Array], *, num_samples: int = 1, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""The IndeCateR estimator for independent categoricals.

    For ``D`` independent categoricals ``X_d ~ pi_d = softmax(l_d)`` with ``K``
    classes, the gradient decomposes exactly over variables,

    .. math::
        \nabla_l \mathbb{E}[f(X)] = \sum_{d=1}^{D} \mathbb{E}_{X_{-d}}\Big[
            \sum_{k=1}^{K} \nabla_l \pi_d(k)\, f(X_{-d}, X_d = k) \Big],

    and IndeCateR estimates each outer expectation with ``N = num_samples``
    joint samples ``x^(n) ~ p`` while the inner sum over ``k`` is enumerated:

    .. math::
        \hat g_{d,j} = \frac1N \sum_{n=1}^{N} \pi_d(j)\Big(F^{(n)}_{d}(j)
            - \sum_{k} \pi_d(k) F^{(n)}_{d}(k)\Big), \qquad
        F^{(n)}_{d}(k) = f(x^{(n)}_{-d}, X_d = k).

    As in the paper, the same ``N`` samples serve every ``d`` (``x_{-d}`` is
    read off the shared joint sample rather than drawn afresh per variable);
    each term of the sum over ``d`` stays unbiased. The ``D * K * N``
    evaluations are batched with ``vmap``. The value of ``est`` is the matching
    Rao-Blackwellized estimate of ``E[f]``,
    ``(1 / (N D)) sum_{n, d, k} pi_d(k) F_d^(n)(k)`` (an average of ``f`` over
    the evaluated points with probabilities as weights, unbiased), and
    gradients with respect to ``*args`` are pathwise on it. For ``D = 1``
    the estimate is exact.

    Unbiased. ``f`` is a black box (evaluated at one-hot points only, never
    differentiated with respect to ``x``). Cost: ``D * K * num_samples``
    evaluations of ``f``. Categories with logit ``-inf`` get zero weight; a
    variable whose logits are all ``-inf`` (or a NaN logit) makes the value
    NaN.
    First-order only: a second derivative in ``logits`` raises a ``TypeError``
    (see ``jaxgrad.arm``).

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one one-hot sample ``x`` of the
        shape of ``logits`` (``[..., K]``, classes last; every leading element
        is an independent variable, as in ``jaxgrad.dists.categorical``).
      num_samples: joint samples for the outer expectation (static, ``>= 1``).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every
        evaluation gets its own independent key (see
        ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      IndeCateR estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``num_samples`` is not an int,
        ``logits`` is not floating or ``key`` is not a key.
      ValueError: if ``logits`` is a scalar (it needs a class axis),
        ``num_samples < 1``, ``key`` is a batch of keys, or ``f`` does not
        return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> w = jnp.arange(12.0).reshape(3, 4) / 12
      >>> f = lambda x: jnp.sum(x * w) ** 2
      >>> est = jaxgrad.indecater(f, num_samples=2)
      >>> g = jax.jit(jax.grad(est, argnums=1))(jax.random.key(0), jnp.zeros((3, 4)))
      >>> g.shape, bool(jnp.allclose(g.sum(-1), 0.0, atol=1e-6))
      ((3, 4), True)

    References:
      De Smet, Sansone & Zuidberg Dos Martires, *Differentiable Sampling of
      Categorical Distributions Using the CatLog-Derivative Trick*, NeurIPS 2023.
      https://arxiv.org/abs/2311.12569
    """
    fn = "indecater"
    num_samples, fs = common.check_estimator(f, num_samples, fn, f_takes_key=f_takes_key)

    def est(key: Any, logits: Any, *args: Any) -> Array:
        logits = common.check_logits(key, logits, fn, classes_last=True)
        key, f_key = common.split_f_key(key, f_takes_key)
        dtype = logits.dtype
        cdtype = samplers.compute_dtype(dtype)
        shape = logits.shape
        num_classes = shape[-1]
        num_vars = math.prod(shape[:-1])
        l = jax.lax.stop_gradient(logits).astype(cdtype).reshape(num_vars, num_classes)

        # N joint samples by Gumbel-max, as class indices [N, D].
        noise = samplers.gumbel(key, (num_samples, num_vars, num_classes), cdtype)
        idx = jnp.argmax(l + noise, axis=-1).astype(jnp.int32)

        # Evaluation points: sample n with variable d set to class k -> [N, D, K, D].
        d_range = jnp.arange(num_vars, dtype=jnp.int32)
        k_range = jnp.arange(num_classes, dtype=jnp.int32)
        points = jnp.where(
            d_range[None, None, None, :] == d_range[None, :, None, None],
            k_range[None, None, :, None],
            idx[:, None, None, :],
        )
        xs = jax.nn.one_hot(points, num_classes, dtype=dtype)
        xs = xs.reshape((num_samples * num_vars * num_classes, *shape))
        values = fs(jax.lax.stop_gradient(xs), *args, key=f_key)
        values = values.reshape(num_samples, num_vars, num_classes)

        pi = jax.nn.softmax(l, axis=-1)  # [D, K]
        live = pi > 0  # masked classes contribute nothing, even if f is not finite there
        weighted = jnp.where(live, pi.astype(values.dtype) * values, 0)
        value = common.nan_without_law(jnp.sum(weighted) / (num_samples * num_vars), l)

        f_c = jnp.where(live, jax.lax.stop_gradient(values).astype(cdtype), 0.0)
        mean_f = jnp.sum(pi * f_c, axis=-1, keepdims=True)  # [N, D, 1]
        grad = jnp.mean(jnp.where(live, pi * (f_c - mean_f), 0.0), axis=0)
        return common.with_gradient(value, logits, grad.reshape(shape), fn=fn)

    return est
