"""Tools to study gradient estimators: many independent estimates, their
statistics against exact answers, and the z-test the test suite uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxgrad._src import checks

Array = jax.Array


def grad_samples(
    est: Callable[..., Array],
    key: Any,
    params: Any,
    *args: Any,
    num_keys: int,
    batch_size: int | None = None,
) -> Any:
    r"""Draws ``num_keys`` independent gradient estimates with respect to ``params``.

    .. math::
        \hat g_n = \nabla_\theta \, \mathrm{est}(k_n, \theta, \ldots), \qquad
        k_1, \ldots, k_N = \mathrm{split}(\mathrm{key}, N).

    The keys are mapped with ``jax.lax.map(..., batch_size=batch_size)``: a
    ``vmap`` over chunks of ``batch_size`` keys, so memory is bounded by one
    chunk however large ``num_keys`` is. ``batch_size=None`` vmaps all keys at
    once. The result does not depend on ``batch_size``.

    Args:
      est: an estimator ``est(key, params, *args) -> scalar``.
      key: a single PRNG key.
      params: the parameters the gradient is taken with respect to (a pytree).
      *args: further arguments of ``est``, held fixed.
      num_keys: the number of independent estimates.
      batch_size: keys per vectorized chunk.

    Returns:
      A pytree like ``params`` whose leaves have a leading axis of ``num_keys``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.pathwise(lambda x: jnp.sum(x**2), dist=jaxgrad.dists.normal)
      >>> g = jaxgrad.diagnostics.grad_samples(
      ...     est, jax.random.key(0), (1.0, 1.0), num_keys=8, batch_size=4)
      >>> g[0].shape
      (8,)
    """
    checks.check_key(key, "grad_samples")
    num_keys = checks.check_num_samples(num_keys, "grad_samples")
    grad_fn = jax.grad(est, argnums=1)
    keys = jax.random.split(key, num_keys)
    return jax.lax.map(lambda k: grad_fn(k, params, *args), keys, batch_size=batch_size)


def assert_unbiased(samples: Any, exact: Any, *, z: float = 5.0, atol: float = 1e-6) -> Any:
    r"""Asserts that i.i.d. estimates are consistent with an exact value, per coordinate.

    For each coordinate the test statistic is

    .. math::
        z_i = \frac{|\bar g_i - g^\star_i|}{\hat\sigma_i / \sqrt{N}},

    with the estimator's own sample standard deviation ``sigma_i``; it fails
    when ``|mean - exact| > z * stderr + atol`` anywhere. ``atol`` only covers
    floating-point round-off for zero-variance coordinates. With ``z = 5`` a
    correct estimator fails with probability about ``6e-7`` per coordinate,
    while a biased one is rejected once ``N`` is large enough that its bias
    exceeds five standard errors.

    Args:
      samples: a pytree of arrays with a leading sample axis of size ``N``.
      exact: a pytree of the same structure (without the sample axis).
      z: the threshold in standard errors.
      atol: absolute slack for round-off.

    Returns:
      The pytree of z-scores, if the assertion passes.

    Raises:
      AssertionError: naming the worst coordinate, its mean, exact value,
        standard error and z-score.

    Example:
      >>> import numpy as np, jaxgrad
      >>> x = np.random.default_rng(0).normal(1.0, 1.0, size=10_000)
      >>> _ = jaxgrad.diagnostics.assert_unbiased(x, 1.0)
    """

    def one(s, e):
        s = np.asarray(s, dtype=np.float64)
        e = np.broadcast_to(np.asarray(e, dtype=np.float64), s.shape[1:])
        n = s.shape[0]
        mean = s.mean(axis=0)
        se = s.std(axis=0, ddof=1) / np.sqrt(n)
        err = np.abs(mean - e)
        zs = np.where(se > 0, err / np.where(se > 0, se, 1.0), np.where(err > atol, np.inf, 0.0))
        bad = err > z * se + atol
        if np.any(bad) or not np.all(np.isfinite(mean)):
            i = np.unravel_index(np.argmax(np.where(np.isfinite(zs), zs, np.inf)), zs.shape)
            raise AssertionError(
                f"estimates are biased at coordinate {tuple(int(j) for j in i)}: "
                f"mean {mean[i]:.6g}, exact {e[i]:.6g}, stderr {se[i]:.3g}, "
                f"z = {zs[i]:.2f} > {z} (N = {n}, {int(np.sum(bad))} of {bad.size} "
                f"coordinates fail)."
            )
        return zs

    return jax.tree.map(one, samples, exact)
