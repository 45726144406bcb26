"""Double control variates: unbiasedness (with power), the formula on fixed noise,
variance below RLOO on the same samples, tuning of ``alpha``, errors.

One compiled program draws every z-test sample (``grad_samples_of_many``); the
cases in ``VERSUS_RLOO`` estimate RLOO and double CV on the *same* key
(``jax.random.clone``, so both see the same samples), and the straight-through
references of the power checks ride along. The z-test is the one of ``assert_unbiased_in_both``
(``assert_unbiased`` against ``exact_grads`` in the logits and in the cost's
argument ``a``), applied to the shared samples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    categorical_problem,
    coins_problem,
    coupled_categorical,
    coupled_coins,
    exact_grads,
    grad_samples_of_many,
    joint,
    softplus_cosine,
    straight_through_bernoulli,
    straight_through_categorical,
)

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased

NUM_KEYS = 20_000
F32 = jnp.float32
BERN, CAT = jaxgrad.dists.bernoulli, jaxgrad.dists.categorical

# name -> (dist, f, (logits, a), num_samples, alpha)
CASES = {
    "coins1": (BERN, coupled_coins, coins_problem(1), 2, 1.0),
    "coins3": (BERN, coupled_coins, coins_problem(3), 3, 1.0),
    "coins10": (BERN, coupled_coins, coins_problem(10), 2, 1.0),
    # A per-coordinate alpha: each coordinate's control variate on its own scale.
    "softplus3": (BERN, softplus_cosine, coins_problem(3), 2, jnp.asarray([0.3, 0.6, 1.2], F32)),
    "cat": (CAT, coupled_categorical, categorical_problem(), 2, 1.0),
    "cat-softplus": (CAT, softplus_cosine, categorical_problem(), 3, 0.7),
}
# The power checks: straight-through on the problems of these cases.
POWER = ("coins1", "coins3", "coins10", "softplus3", "cat", "cat-softplus")


# The cases whose variance is compared with RLOO's (measured on the same samples).
VERSUS_RLOO = {"coins3": 0.5, "coins10": 0.2, "cat": 0.6}


def _paired(dist, f, num_samples, alpha):
    """``est(key, ((l, a), (l, a)))``: RLOO and double CV on the same samples."""
    rloo = jaxgrad.rloo(f, dist=dist, num_samples=num_samples)
    dcv = jaxgrad.double_cv(f, dist=dist, num_samples=num_samples, alpha=alpha)

    def est(key, ps):
        (l1, a1), (l2, a2) = ps
        return rloo(jax.random.clone(key), l1, a1) + dcv(jax.random.clone(key), l2, a2)

    return est


@functools.cache
def _samples():
    """Per case ``(rloo, double_cv)`` samples (``rloo`` is ``None`` outside ``VERSUS_RLOO``)."""
    ests, params = {}, {}
    for name, (dist, f, (logits, a), n, alpha) in CASES.items():
        if name in VERSUS_RLOO:
            ests[name] = _paired(dist, f, n, alpha)
            params[name] = ((logits, a), (logits, a))
        else:
            ests[name] = joint(jaxgrad.double_cv(f, dist=dist, num_samples=n, alpha=alpha))
            params[name] = (logits, a)
    for name in POWER:
        dist, f, (logits, a), _, _ = CASES[name]
        st = straight_through_bernoulli if dist is BERN else straight_through_categorical
        ests[f"st/{name}"] = st(f)
        params[f"st/{name}"] = (logits, a)
    # Chunks of 250 keys: the same keys (and samples, up to rounding) as wider chunks, but
    # measured about 1.5 s faster than chunks of 2_000 on CPU (7.3 s against 8.8 s of CPU).
    out = grad_samples_of_many(
        ests, params, jax.random.key(2022), num_keys=NUM_KEYS, batch_size=250
    )
    out = jax.tree.map(lambda x: np.asarray(x, np.float64), out)
    return {n: out[n] if n in VERSUS_RLOO or "/" in n else (None, out[n]) for n in out}


def _exact(name):
    dist, f, (logits, a), _, _ = CASES[name]
    return exact_grads(f, dist, logits, a)


@pytest.mark.parametrize("name", sorted(CASES))
def test_unbiased_in_logits_and_args(name):
    _, dcv = _samples()[name]
    assert_unbiased(dcv, _exact(name))


@pytest.mark.parametrize("name", POWER)
def test_power_rejects_straight_through(name):
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(_samples()[f"st/{name}"], _exact(name))


def _total_variance(g):
    return float(sum(np.sum(np.var(x, axis=0, ddof=1)) for x in jax.tree.leaves(g)))


# Measured on the shared samples (total variance of the logits gradient, 20k keys):
# coins D=3 (K=3) 0.278 -> 0.0387, D=10 243 -> 15.9, categorical 3x4 1.053 -> 0.309.
@pytest.mark.parametrize("name", sorted(VERSUS_RLOO))
def test_lower_variance_than_rloo_on_the_same_samples(name):
    """On smooth costs the Taylor control variate removes most of RLOO's variance.

    Both estimators see the same samples, so the comparison is paired; the
    bound is a fixed fraction of RLOO's variance, which a control variate that
    did nothing (alpha = 0 is RLOO) or made things worse would fail.
    """
    (rloo_l, _), (dcv_l, _) = _samples()[name]
    v_rloo, v_dcv = _total_variance(rloo_l), _total_variance(dcv_l)
    print(f"{name}: total variance RLOO {v_rloo:.6g}, double CV {v_dcv:.6g}")
    assert v_dcv < VERSUS_RLOO[name] * v_rloo, (v_dcv, v_rloo)


# ------------------------------------------------------------ fixed noise


def _hand_written(dist, logits, xs, evals, alpha):
    """The estimator with explicit loops over samples (NumPy, float64).

    ``evals`` are ``f``, ``grad_x f`` and ``grad_a f`` at each sample.
    """
    xs = np.asarray(xs, np.float64)
    k = xs.shape[0]
    l = np.asarray(logits, np.float64)
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), l.shape)
    if dist is BERN:
        mu = 1 / (1 + np.exp(-l))
        cov = np.diag((mu * (1 - mu)).ravel())
    else:
        mu = np.exp(l - l.max(-1, keepdims=True))
        mu = mu / mu.sum(-1, keepdims=True)
        blocks = [np.diag(p) - np.outer(p, p) for p in mu]
        n = mu.size
        cov = np.zeros((n, n))
        for i, b in enumerate(blocks):
            m = b.shape[0]
            cov[i * m : (i + 1) * m, i * m : (i + 1) * m] = b
    fx, gx, ga = (np.asarray(v, np.float64) for v in evals)
    grad = np.zeros(l.shape)
    for kk in range(k):
        c_k = sum(gx[j] for j in range(k) if j != kk) / (k - 1)
        h_k = fx[kk] - alpha * np.sum(c_k * (xs[kk] - mu))
        base = 0.0
        for j in range(k):
            if j != kk:
                c_j = sum(gx[m] for m in range(k) if m != j) / (k - 1)
                base = base + (fx[j] - alpha * np.sum(c_j * (xs[j] - mu))) / (k - 1)
        grad = grad + (h_k - base) * (xs[kk] - mu) / k
    c_bar = sum(gx) / k
    grad = grad + alpha * (cov @ c_bar.ravel()).reshape(l.shape)
    return np.mean(fx), grad, sum(ga) / k


FIXED = {
    "bernoulli": (BERN, coupled_coins, coins_problem(4), 3, jnp.asarray([1.0, 0.5, -0.3, 2.0])),
    "categorical": (CAT, coupled_categorical, categorical_problem(), 3, 0.8),
}


@jax.jit
def _on_fixed_noise(key):
    out = {}
    for name, (dist, f, (logits, a), n, alpha) in FIXED.items():
        k_dcv, k_rloo, k_zero, k_x = (jax.random.clone(key) for _ in range(4))
        xs = dist.sample(k_x, jnp.broadcast_to(logits, (n, *logits.shape)))  # what est draws
        per_sample = [(f(x, a), jax.grad(f)(x, a), jax.grad(f, argnums=1)(x, a)) for x in xs]
        evals = [jnp.stack(v) for v in zip(*per_sample, strict=True)]
        dcv = jaxgrad.double_cv(f, dist=dist, num_samples=n, alpha=alpha)
        zero = jaxgrad.double_cv(f, dist=dist, num_samples=n, alpha=0.0)
        rloo = jaxgrad.rloo(f, dist=dist, num_samples=n)
        out[name] = (
            (xs, evals),
            jax.value_and_grad(dcv, argnums=(1, 2))(k_dcv, logits, a),
            jax.grad(zero, argnums=1)(k_zero, logits, a),
            jax.grad(rloo, argnums=1)(k_rloo, logits, a),
        )
    # bfloat16 logits at the extremes and masked: finite, bfloat16, zero where masked.
    masked = jnp.asarray([1e4, -1e4, 0.3, jnp.inf, -jnp.inf], jnp.bfloat16)
    cost = lambda x: jnp.sum((x - 0.3) ** 2) + jnp.prod(x + 0.5)
    est = jaxgrad.double_cv(cost, dist=BERN)
    out["bfloat16"] = jax.value_and_grad(est, argnums=1)(jax.random.clone(key), masked)
    return out


def test_formula_on_fixed_noise_and_alpha_zero_is_rloo(key):
    for i, k in enumerate(jax.random.split(key, 2)):
        out = _on_fixed_noise(k)
        value, g = out.pop("bfloat16")
        assert g.dtype == jnp.bfloat16 and value.dtype == jnp.bfloat16
        assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.isfinite(value))
        assert float(g[3]) == 0.0 and float(g[4]) == 0.0, i
        for name, (dist, _, (logits, _), _, alpha) in FIXED.items():
            (xs, evals), (value, (g_l, g_a)), g_zero, g_rloo = out[name]
            v_ref, g_ref, ga_ref = _hand_written(dist, logits, xs, evals, alpha)
            np.testing.assert_allclose(value, v_ref, rtol=1e-5)
            np.testing.assert_allclose(g_l, g_ref, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(g_a, ga_ref, rtol=1e-4, atol=1e-5)  # pathwise in a
            np.testing.assert_allclose(g_zero, g_rloo, rtol=1e-5, atol=1e-6)


def test_variance_loss_reaches_alpha(key):
    """The paper tunes alpha on the variance: the double-backprop derivative is exact.

    For one key the estimate is affine in alpha, so ``sum g^2`` is a quadratic
    and its central difference equals the derivative.
    """
    logits, a = coins_problem(3)

    def loss(alpha, k):
        est = jaxgrad.double_cv(coupled_coins, dist=BERN, alpha=alpha)
        return jaxgrad.variance_loss(est)(k, logits, a)[0]

    @jax.jit
    def both(k):
        ks = [jax.random.clone(k) for _ in range(3)]
        d = jax.grad(loss)(jnp.float32(0.6), ks[0])
        h = 0.25
        fd = (loss(jnp.float32(0.6 + h), ks[1]) - loss(jnp.float32(0.6 - h), ks[2])) / (2 * h)
        return d, fd

    d, fd = both(key)
    assert abs(float(d)) > 1e-3
    np.testing.assert_allclose(d, fd, rtol=2e-3, atol=1e-5)


# ------------------------------------------------------------------ errors

_f = lambda x: jnp.sum(x**2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(f=3, dist=BERN), TypeError, "f must be a callable"),
        (dict(f=_f, dist=jaxgrad.dists.normal), TypeError, "dist must be jaxgrad.dists.bernoulli"),
        (dict(f=_f, dist=jaxgrad.dists.Bernoulli), TypeError, "pass dist=jaxgrad.dists.bernoulli"),
        (dict(f=_f, dist=BERN, num_samples=1), ValueError, "num_samples must be at least 2"),
        (dict(f=_f, dist=BERN, num_samples=2.0), TypeError, "num_samples must be a static"),
        (dict(f=_f, dist=BERN, alpha="taylor"), TypeError, "alpha must be a real scalar"),
        (dict(f=_f, dist=BERN, alpha=None), TypeError, "alpha must be a real scalar"),
        (dict(f=_f, dist=BERN, f_takes_key=1), TypeError, "f_takes_key must be a static"),
    ],
)
def test_build_errors(kwargs, error, match):
    f = kwargs.pop("f")
    with pytest.raises(error, match=match):
        jaxgrad.double_cv(f, **kwargs)


def test_call_errors(key):
    """Raised while tracing (``eval_shape``: nothing is compiled)."""
    ks = jax.random.split(key, 6)
    z3 = jnp.zeros(3, F32)
    trace = lambda est, k, logits: jax.eval_shape(est, k, logits)
    est = jaxgrad.double_cv(_f, dist=BERN, alpha=jnp.ones(4))
    with pytest.raises(ValueError, match="alpha must be a scalar or broadcastable"):
        trace(est, ks[0], z3)
    with pytest.raises(TypeError, match="logits"):
        trace(jaxgrad.double_cv(_f, dist=BERN), ks[1], jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="classes last"):
        trace(jaxgrad.double_cv(_f, dist=CAT), ks[2], jnp.float32(0.0))
    with pytest.raises(ValueError, match="must return a scalar"):
        trace(jaxgrad.double_cv(lambda x: x, dist=BERN), ks[3], z3)
    with pytest.raises(ValueError, match="single key"):
        trace(jaxgrad.double_cv(_f, dist=BERN), jax.random.split(ks[4], 2), z3)
    with pytest.raises(TypeError, match="alpha must be a real scalar or array"):
        trace(jaxgrad.double_cv(_f, dist=BERN, alpha=jnp.ones(3, jnp.bool_)), ks[5], z3)
