"""Reference helpers shared by the estimator tests: exact gradients and biased baselines.

Imported as ``from helpers import ...``: pytest puts ``tests/`` (a rootdir
without ``__init__.py``) on ``sys.path`` when it loads ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad.diagnostics import assert_unbiased, grad_samples

#: ``JAXGRAD_FULL_TESTS=1`` (``make test-full``) runs the ``slow`` statistical checks
#: at their full size; ``make test`` runs them at the reduced size, with the same
#: assertions (their tolerances hold at both sizes).
FULL = os.environ.get("JAXGRAD_FULL_TESTS", "") not in ("", "0")


def size(full: int, reduced: int) -> int:
    """The sample size of a ``slow`` check: ``full`` under ``JAXGRAD_FULL_TESTS=1``."""
    return full if FULL else reduced


@functools.partial(jax.jit, static_argnums=(0, 1))
def exact_grads(f, dist, params, *args):
    """Gradient of ``sum_x p(x) f(x, *args)`` over the support, w.r.t. params and args.

    Unlike ``jaxgrad.diagnostics.exact_grad`` (params only), this also returns
    the gradients with respect to ``*args``: a tuple ``(g_params, *g_args)``.
    """
    xs = dist.support(params)

    def expectation(p, *a):
        logp = jax.vmap(lambda x: dist.log_prob(p, x))(xs)
        return jnp.sum(jnp.exp(logp) * jax.vmap(lambda x: f(x, *a))(xs))

    return jax.grad(expectation, argnums=tuple(range(1 + len(args))))(params, *args)


def joint(est):
    """``est(key, params, a)`` as ``est(key, (params, a))``, so grad_samples differentiates both."""
    return lambda key, pa: est(key, pa[0], pa[1])


def grad_samples_of_many(ests, params, key, *, num_keys, batch_size):
    """Gradient samples of several estimators from one compiled program.

    ``ests`` and ``params`` are dicts with the same names; every estimator gets
    its own key from each of the ``num_keys`` keys, and the result is a dict of
    per-estimator samples, as ``grad_samples`` gives for one.
    """
    names = sorted(ests)

    def est(k, ps):
        keys = jax.random.split(k, len(names))
        return sum(ests[n](keys[i], ps[n]) for i, n in enumerate(names))

    ps = {n: params[n] for n in names}
    return grad_samples(est, key, ps, num_keys=num_keys, batch_size=batch_size)


def straight_through_bernoulli(f):
    """A biased reference ``est(key, (logits, a))``: forward the sample, backward its mean."""
    return lambda key, pa: f(jaxgrad.straight_through_bernoulli(key, pa[0]), pa[1])


def straight_through_categorical(f):
    """A biased reference ``est(key, (logits, a))`` for one-hot samples of logits ``[..., K]``."""

    def est(key, pa):
        pi = jax.nn.softmax(pa[0], axis=-1)
        noise = samplers.gumbel(key, pa[0].shape, jnp.float32)
        idx = jnp.argmax(jax.lax.stop_gradient(pa[0]) + noise, axis=-1)
        x = jax.nn.one_hot(idx, pi.shape[-1], dtype=pi.dtype)
        return f(x + pi - jax.lax.stop_gradient(pi), pa[1])

    return est


def never_differentiated(fun, message="f was differentiated with respect to x"):
    """``fun(x)`` whose derivative raises ``AssertionError(message)``: checks black-box use of f."""
    wrapped = jax.custom_jvp(lambda x: fun(x))

    @wrapped.defjvp
    def _jvp(primals, tangents):
        raise AssertionError(message)

    return wrapped


def assert_unbiased_in_both(est, key, f, dist, params, a, *, num_keys):
    """The z-test of ``est(key, (params, a))`` against the exact gradients in params and a."""
    samples = grad_samples(est, key, (params, a), num_keys=num_keys)
    assert_unbiased(samples, exact_grads(f, dist, params, a))


def coupled_coins(x, a):
    """A cost of D coins, smooth on [0, 1]^D (relaxations evaluate it there), not separable."""
    s = jnp.sum(x * a)
    return jnp.sin(2.0 * s) + (s - 0.3) ** 2 + jnp.prod(1.0 + 0.5 * x * a)


def coins_problem(d):
    """Logits and the cost's argument ``a`` for ``d`` coins (float32)."""
    logits = jnp.asarray(np.linspace(-1.2, 1.5, d) if d > 1 else [0.7], jnp.float32)
    a = jnp.asarray(np.linspace(0.3, 1.1, d), jnp.float32)
    return logits, a


def softplus_cosine(x, a):
    """A cost that is neither quadratic nor polynomial: a softplus times a cosine of ``x . a``.

    Works for any event shape (coins ``[D]`` or one-hots ``[D, K]``) and is smooth on
    the relaxed domain, so estimators that differentiate ``f`` apply as well.
    """
    s = jnp.sum(x * a)
    return jnp.logaddexp(0.0, 3.0 * s - 1.0) * jnp.cos(s) + jnp.exp(0.5 * jnp.sum(x * x * a))


def coupled_categorical(x, a):
    """A cost of one-hots ``[D, K]``: a product term and a non-linearity of the sum."""
    s = jnp.sum(x * a)
    return jnp.sin(2.0 * s) + s**2 + jnp.sum(x[0] * x[-1] * a[0])


def categorical_problem():
    """Logits ``[3, 4]`` (three variables of four classes) and the cost's argument ``a``."""
    logits = jnp.asarray(
        [[0.3, -0.8, 1.2, 0.1], [0.0, 0.5, -0.5, 0.2], [1.0, -1.0, 0.0, 0.4]], jnp.float32
    )
    a = jnp.asarray(np.linspace(-1.0, 1.0, 12).reshape(3, 4), jnp.float32)
    return logits, a
