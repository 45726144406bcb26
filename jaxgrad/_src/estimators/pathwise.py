"""The pathwise (reparameterization) estimator as a function transformation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import checks
from jaxgrad._src.estimators import common

Array = jax.Array


def pathwise(
    f: Callable[..., Array], *, dist: Any, num_samples: int = 1, f_takes_key: bool = False
) -> Callable[..., Array]:
    r"""The pathwise (reparameterization) estimator: differentiate through the sample.

    For a reparameterizable distribution, :math:`x = g_\theta(\varepsilon)` with
    noise :math:`\varepsilon` that does not depend on :math:`\theta` (for
    ``jaxgrad.dists.normal``, :math:`x = \mu + \sigma \varepsilon`), so

    .. math::
        \mathrm{est} = \frac1N \sum_n f(g_\theta(\varepsilon_n)), \qquad
        \nabla_\theta\, \mathrm{est} = \frac1N \sum_n
        \frac{\partial g_\theta(\varepsilon_n)}{\partial \theta}^{\!\top}
        \nabla_x f(x_n) .

    Unbiased, with unbiased higher derivatives (plain automatic
    differentiation of the sample path). Requires ``f`` to be differentiable
    in ``x`` (almost everywhere, and with no jumps) and ``dist`` to be
    reparameterizable (``dist.reparameterizable`` true, with ``dist.sample``
    differentiable in ``params``). Cost: ``num_samples`` evaluations of ``f``
    and of its gradient.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x``.
      dist: a reparameterizable spec, e.g. ``jaxgrad.dists.normal`` (params
        ``(loc, scale)``).
      num_samples: samples per estimate (static, ``>= 1``).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every
        evaluation gets its own independent key (see
        ``jaxgrad.score_function``); ``f`` is differentiated in ``x`` at fixed
        key. Static, default ``False``.

    Returns:
      ``est(key, params, *args) -> scalar`` in the dtype of ``f``'s output.

    Raises:
      TypeError: if ``f`` is not callable, ``dist`` lacks ``sample`` or
        ``log_prob``, ``num_samples`` is not an int, or ``key`` is not a key.
      ValueError: if ``dist`` is not reparameterizable, ``num_samples < 1``,
        ``key`` is a batch of keys, or ``f`` does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.pathwise(lambda x: jnp.sum(x**2), dist=jaxgrad.dists.normal)
      >>> g_loc, g_scale = jax.grad(est, argnums=1)(jax.random.key(0), (1.0, 2.0))
      >>> eps = jax.random.normal(jax.random.key(0), (1,))[0]  # the same noise
      >>> bool(jnp.allclose(g_loc, 2 * (1.0 + 2.0 * eps)))  # d/dmu (mu + sigma eps)^2
      True

    References:
      Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014.
      https://arxiv.org/abs/1312.6114 ;
      Rezende, Mohamed & Wierstra, *Stochastic Backpropagation and Approximate
      Inference in Deep Generative Models*, ICML 2014.
      https://arxiv.org/abs/1401.4082 ;
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020, sec. 5. https://jmlr.org/papers/v21/19-346.html
    """
    fn = "pathwise"
    common.check_f(f, fn)
    common.check_dist(dist, fn)
    common.check_reparameterizable(
        dist,
        fn,
        "For discrete variables use jaxgrad.score_function, jaxgrad.rloo or jaxgrad.disarm, or a "
        "relaxation",
    )
    num_samples = checks.check_num_samples(num_samples, fn)
    fs = common.batch_f(f, fn, f_takes_key=f_takes_key)

    def est(key: Any, params: Any, *args: Any) -> Array:
        checks.check_key(key, fn)
        key, f_key = common.split_f_key(key, f_takes_key)
        xs = common.sample_n(dist, key, params, num_samples)
        return jnp.mean(fs(xs, *args, key=f_key))

    return est
