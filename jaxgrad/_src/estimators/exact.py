"""Exact expectations by enumeration of a small discrete support."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import checks, samplers
from jaxgrad._src.estimators import common

Array = jax.Array


def exact(f: Callable[..., Array], *, dist: Any, f_takes_key: bool = False) -> Callable[..., Array]:
    r"""The exact expectation, by summing over the whole support, as an estimator.

    .. math::
        \mathrm{est}(\theta) = \sum_{x \in \mathcal{X}} p_\theta(x)\, f(x, \ldots),
        \qquad p_\theta(x) = \exp \log p_\theta(x),

    with :math:`\mathcal{X}` = ``dist.support(params)`` (``2^D`` outcomes for
    ``D`` coins, ``K^D`` for ``D`` categoricals with ``K`` classes). The
    probabilities are differentiable, so ``jax.grad``, ``jax.hessian`` and
    every higher derivative of ``est`` are exact; gradients with respect to
    ``*args`` are exact too. ``f`` is evaluated at every outcome (one
    ``vmap``) but never differentiated with respect to ``x``.

    The key is accepted, validated and unused (no randomness), so that
    ``exact`` has the signature of every other estimator and can stand in for
    one in studies and tests; it is not consumed. With ``f_takes_key`` it is
    the source of ``f``'s own noise instead: each outcome's evaluation gets an
    independent key split from it, and ``est`` is then an unbiased (no longer
    exact) estimate of ``sum_x p(x) E_key[f(x, key)]``.

    Exact (zero variance). ``f`` is a black box. Requires a discrete ``dist``
    with ``support`` (``jaxgrad.dists.bernoulli``, ``categorical``, or a custom
    spec) whose support is small: the built-in specs refuse more than
    ``jaxgrad.dists.MAX_SUPPORT_SIZE`` outcomes. Cost: one evaluation of ``f``
    per outcome.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one outcome ``x``.
      dist: a discrete spec with ``sample``, ``log_prob`` and ``support``.
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every
        evaluation gets its own independent key (see
        ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, params, *args) -> scalar``, the exact expectation in the dtype
      of ``f``'s output.

    Raises:
      TypeError: if ``f`` is not callable, ``dist`` lacks ``sample``,
        ``log_prob`` or ``support``, or ``key`` is not a key.
      ValueError: if the support is too large (raised by ``dist.support``),
        ``key`` is a batch of keys, or ``f`` does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.exact(lambda b: jnp.sum((b - 0.45) ** 2), dist=jaxgrad.dists.bernoulli)
      >>> g = jax.grad(est, argnums=1)(jax.random.key(0), jnp.zeros(2))
      >>> [round(float(x), 6) for x in g]  # p (1 - p) (1 - 2 t)
      [0.025, 0.025]

    References:
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020. https://jmlr.org/papers/v21/19-346.html
    """
    fn = "exact"
    common.check_f(f, fn)
    common.check_dist(dist, fn, need_support=True)
    fs = common.batch_f(f, fn, f_takes_key=f_takes_key)

    def est(key: Any, params: Any, *args: Any) -> Array:
        checks.check_key(key, fn)
        # Deterministic: the key is accepted for a uniform signature and used only for f's noise.
        f_key = key if f_takes_key else None
        xs = jax.lax.stop_gradient(dist.support(jax.lax.stop_gradient(params)))
        values = fs(xs, *args, key=f_key)
        out_dtype = values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32
        lp = jax.vmap(lambda x: dist.log_prob(params, x))(xs)
        if jnp.ndim(lp) != 1:
            raise ValueError(
                f"{fn}: dist.log_prob must return the joint log-probability of one outcome "
                f"(a scalar), got shape {jnp.shape(lp)[1:]}. Sum over the factors."
            )
        a, b = samplers.compute_dtype(out_dtype), samplers.compute_dtype(lp.dtype)
        dtype = a if a.itemsize >= b.itemsize else b
        weights = jnp.exp(lp.astype(dtype))
        return jnp.sum(weights * values.astype(dtype)).astype(out_dtype)

    return est
