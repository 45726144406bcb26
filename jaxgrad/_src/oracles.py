"""Exact oracles for gradient estimators, and the z-test the test suite uses.

:func:`exact_grad` enumerates a small discrete support; the Gaussian test
functions of Mohamed et al. (2020, sec. 3) have closed-form expectations and
gradients; :func:`assert_unbiased` checks estimates against an exact answer on
their own standard error.

Public through :mod:`jaxgrad.diagnostics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks

Array = jax.Array

#: Names of the Gaussian test functions of Mohamed et al. (2020, sec. 3).
GAUSSIAN_TEST_FUNCTIONS = ("square", "exp", "cos")


def exact_grad(f: Callable[..., Array], params: Any, *args: Any, dist: Any) -> Any:
    r"""The exact gradient of :math:`E_{x \sim p_\theta}[f(x, \ldots)]`, by enumeration.

    .. math::
        \nabla_\theta \sum_{x \in \mathcal{X}} p_\theta(x) f(x, \ldots)
        = \sum_{x} p_\theta(x) \nabla_\theta \log p_\theta(x) f(x, \ldots),

    over the joint support ``dist.support(params)`` (``2^D`` outcomes for ``D``
    coins, ``K^D`` for ``D`` categoricals with ``K`` classes), so only for small
    problems. ``f`` is evaluated at every outcome but never differentiated.

    Args:
      f: the cost for one sample, returning a scalar.
      params: the distribution's parameters (e.g. logits).
      *args: further arguments of ``f``.
      dist: a discrete spec with ``support`` and ``log_prob``
        (``jaxgrad.dists.bernoulli``, ``jaxgrad.dists.categorical``).

    Returns:
      A pytree like ``params``.

    Raises:
      TypeError: if ``dist`` has no ``support``.
      ValueError: if the support is larger than ``jaxgrad.dists.MAX_SUPPORT_SIZE``.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> g = jaxgrad.diagnostics.exact_grad(f, jnp.zeros(1), dist=jaxgrad.dists.bernoulli)
      >>> float(g[0])  # p (1 - p) (1 - 2 t) at p = 1/2
      0.025

    References:
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020. https://jmlr.org/papers/v21/19-346.html
    """
    if not callable(getattr(dist, "support", None)):
        raise TypeError(
            f"exact_grad: dist must be a discrete spec with a support method (e.g. "
            f"jaxgrad.dists.bernoulli), got {type(dist).__name__}."
        )
    xs = dist.support(params)
    out = jax.eval_shape(lambda x: f(x, *args), jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
    checks.check_scalar_output(getattr(out, "shape", ()), "exact_grad")

    @jax.jit
    def grad(params, xs, args):
        fx = jax.lax.stop_gradient(jax.vmap(lambda x: f(x, *args))(xs))

        def expectation(p):
            w = jnp.exp(jax.vmap(lambda x: dist.log_prob(p, x))(xs))
            return jnp.sum(w * fx.astype(w.dtype))

        return jax.grad(expectation)(params)

    return grad(params, xs, args)


def _check_test_function(function: str, fn: str) -> None:
    if function not in GAUSSIAN_TEST_FUNCTIONS:
        raise ValueError(
            f"{fn}: function must be one of {', '.join(GAUSSIAN_TEST_FUNCTIONS)}, got {function!r}."
        )


def gaussian_test_function(function: str, k: float) -> Callable[[Array], Array]:
    r"""A test function of Mohamed et al. (2020, sec. 3), summed over coordinates.

    .. math::
        f(x) = \sum_i (x_i - k)^2, \qquad \sum_i e^{-k x_i^2}, \qquad
        \sum_i \cos(k x_i)

    for ``function`` = ``"square"``, ``"exp"``, ``"cos"``.

    Args:
      function: ``"square"``, ``"exp"`` or ``"cos"``.
      k: the function's constant.

    Returns:
      ``f(x) -> scalar`` for one sample ``x``.

    Raises:
      ValueError: for an unknown ``function``.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> f = jaxgrad.diagnostics.gaussian_test_function("square", 1.0)
      >>> float(f(jnp.array([0.0, 3.0])))
      5.0
    """
    _check_test_function(function, "gaussian_test_function")
    if function == "square":
        return lambda x: jnp.sum((x - k) ** 2)
    if function == "exp":
        return lambda x: jnp.sum(jnp.exp(-k * x * x))
    return lambda x: jnp.sum(jnp.cos(k * x))


def gaussian_expectation(function: str, loc: Any, scale: Any, *, k: float) -> Array:
    r"""Closed form of :math:`E_{x \sim N(\mu, \sigma^2)} f(x)` for the test functions.

    .. math::
        E (x - k)^2 = (\mu - k)^2 + \sigma^2, \quad
        E e^{-k x^2} = \frac{e^{-k \mu^2 / a}}{\sqrt{a}}, \; a = 1 + 2 k \sigma^2, \quad
        E \cos(k x) = \cos(k \mu) e^{-k^2 \sigma^2 / 2},

    summed over coordinates (``exp`` needs ``1 + 2 k sigma^2 > 0``).

    Args:
      function: ``"square"``, ``"exp"`` or ``"cos"``.
      loc: the means ``mu``.
      scale: the standard deviations ``sigma``.
      k: the function's constant: a float, or an array of per-coordinate constants.

    Returns:
      The expectation, a scalar.

    Raises:
      ValueError: for an unknown ``function``.

    Example:
      >>> import jaxgrad
      >>> float(jaxgrad.diagnostics.gaussian_expectation("square", 0.0, 1.0, k=1.0))
      2.0
    """
    _check_test_function(function, "gaussian_expectation")
    mu, s = jnp.asarray(loc), jnp.asarray(scale)
    if function == "square":
        e = (mu - k) ** 2 + s * s
    elif function == "exp":
        a = 1 + 2 * k * s * s
        e = jnp.exp(-k * mu * mu / a) / jnp.sqrt(a)
    else:
        e = jnp.cos(k * mu) * jnp.exp(-0.5 * k * k * s * s)
    return jnp.sum(e)


def gaussian_exact_grad(function: str, loc: Any, scale: Any, *, k: float) -> tuple[Array, Array]:
    r"""Closed-form gradient of :math:`E_{N(\mu, \sigma^2)} f` in :math:`(\mu, \sigma)`.

    Differentiating :func:`gaussian_expectation` (with ``a = 1 + 2 k sigma^2``
    and ``E`` the expectation of one coordinate):

    .. math::
        (x - k)^2 &: \quad \partial_\mu = 2(\mu - k), \quad \partial_\sigma = 2\sigma, \\
        e^{-k x^2} &: \quad \partial_\mu = -\frac{2 k \mu}{a} E, \quad
        \partial_\sigma = 4 k \sigma \Big(\frac{k \mu^2}{a^2} - \frac{1}{2a}\Big) E, \\
        \cos(k x) &: \quad \partial_\mu = -k \sin(k\mu) e^{-k^2\sigma^2/2}, \quad
        \partial_\sigma = -k^2 \sigma \cos(k\mu) e^{-k^2\sigma^2/2} .

    Args:
      function: ``"square"``, ``"exp"`` or ``"cos"``.
      loc: the means ``mu``.
      scale: the standard deviations ``sigma``.
      k: the function's constant: a float, or an array of per-coordinate constants
        ``k_i`` (``f = sum_i (x_i - k_i)^2`` and so on).

    Returns:
      ``(d/dloc, d/dscale)``, each of the broadcast shape of ``loc``, ``scale`` and
      ``k``.

    Raises:
      ValueError: for an unknown ``function``.

    Example:
      >>> import jaxgrad
      >>> g = jaxgrad.diagnostics.gaussian_exact_grad("cos", 0.0, 1.0, k=1.0)
      >>> float(g[0]), round(float(g[1]), 4)  # -exp(-1/2)
      (-0.0, -0.6065)

    References:
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020, sec. 3. https://jmlr.org/papers/v21/19-346.html
    """
    _check_test_function(function, "gaussian_exact_grad")
    shape = jnp.broadcast_shapes(jnp.shape(loc), jnp.shape(scale), jnp.shape(k))
    mu, s = (jnp.broadcast_to(jnp.asarray(a), shape) for a in (loc, scale))
    if function == "square":
        return 2 * (mu - k), 2 * s
    if function == "exp":
        a = 1 + 2 * k * s * s
        e = jnp.exp(-k * mu * mu / a) / jnp.sqrt(a)
        return -2 * k * mu / a * e, 4 * k * s * (k * mu * mu / (a * a) - 0.5 / a) * e
    damp = jnp.exp(-0.5 * k * k * s * s)
    return -k * jnp.sin(k * mu) * damp, -k * k * s * jnp.cos(k * mu) * damp


# ---------------------------------------------------------------------------
# The z-test.


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
