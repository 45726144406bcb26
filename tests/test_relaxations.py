"""Relaxations and straight-through rules: exact values, exact gradients, moments.

Deterministic checks compare each rule with an independent NumPy
implementation of its formula on the same noise; statistical checks compare
moments with closed forms (binary Concrete CDF, integrated with scipy) or with
an independent NumPy Monte Carlo, at ``5`` standard errors, with a power check
showing that the same assertion rejects a wrong answer.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, special

import jaxgrad
from jaxgrad._src import relaxations, samplers

F32, F64, BF16 = jnp.float32, jnp.float64, jnp.bfloat16


def _key(seed: int = 0) -> jax.Array:
    """A fresh typed key: the same seed gives the same noise (key-reuse safe)."""
    return jax.random.key(seed)


def _np_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_jt(pi: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Softmax Jacobian (symmetric) applied to c: pi * c - pi <pi, c>."""
    return pi * c - pi * np.sum(pi * c, axis=-1, keepdims=True)


def _z_ok(mean, exact, se, what):
    z = np.abs(np.asarray(mean) - np.asarray(exact)) / np.asarray(se)
    assert np.all(z < 5), f"{what}: z-scores {z} (mean {mean}, exact {exact})"
    return z


# ----------------------------------------------------------------- documented conventions


_KINKS = [
    # (regex that must match a row of the module docstring, function, point, derivative)
    (r"``jax\.nn\.relu\(x\)`` at 0\s+0\s", jax.nn.relu, 0.0, 0.0),
    (r"``jnp\.maximum\(x, 0\.\)`` at 0\s+0\.5\s", lambda x: jnp.maximum(x, 0.0), 0.0, 0.5),
    (r"``jnp\.minimum\(x, 0\.\)`` at 0\s+0\.5\s", lambda x: jnp.minimum(x, 0.0), 0.0, 0.5),
    (r"``jnp\.clip\(x, 0\., 1\.\)`` at 0, 1\s+0\.5\s", lambda x: jnp.clip(x, 0.0, 1.0), 0.0, 0.5),
    (r"``jnp\.clip\(x, 0\., 1\.\)`` at 0, 1\s+0\.5\s", lambda x: jnp.clip(x, 0.0, 1.0), 1.0, 0.5),
    (r"``jnp\.abs\(x\)`` at 0\s+1\s", jnp.abs, 0.0, 1.0),
    (r"``jnp\.where\(x > 0, x, 0\.\)`` at 0\s+0\s", lambda x: jnp.where(x > 0, x, 0.0), 0.0, 0.0),
    (r"``jax\.nn\.hard_tanh\(x\)`` at \+-1\s+1\s", jax.nn.hard_tanh, 1.0, 1.0),
    (r"``jax\.nn\.hard_tanh\(x\)`` at \+-1\s+1\s", jax.nn.hard_tanh, -1.0, 1.0),
    (r"``jnp\.sign``, ``jnp\.round``\s+0 everywhere", jnp.sign, 0.0, 0.0),
    (r"``jnp\.sign``, ``jnp\.round``\s+0 everywhere", jnp.round, 0.4, 0.0),
    (r":func:`round_ste` has derivative exactly 1", jaxgrad.round_ste, 0.5, 1.0),
    (r":func:`round_ste` has derivative exactly 1", jaxgrad.round_ste, -3.2, 1.0),
    (r"1 on the closed\s+interval ``\[-1, 1\]`` \(so 1 at 0", jaxgrad.sign_ste, 0.0, 1.0),
    (r"1 on the closed\s+interval ``\[-1, 1\]`` \(so 1 at 0", jaxgrad.sign_ste, 1.0, 1.0),
    (r"1 on the closed\s+interval ``\[-1, 1\]`` \(so 1 at 0", jaxgrad.sign_ste, -1.0, 1.0),
    (r"and 0 outside", jaxgrad.sign_ste, 1.5, 0.0),
]


def test_documented_subgradient_conventions():
    doc = relaxations.__doc__
    for pattern, f, x, expected in _KINKS:
        assert re.search(pattern, doc), f"module docstring lost the row {pattern!r}"
        x = jnp.asarray(x, F32)
        assert float(jax.grad(f)(x)) == expected, (pattern, float(x))


def test_ste_values():
    x = jnp.asarray([-2.5, -1.5, -0.2, 0.0, 0.5, 1.5, 2.7], F32)
    np.testing.assert_array_equal(jaxgrad.round_ste(x), jnp.round(x))
    np.testing.assert_array_equal(jaxgrad.sign_ste(x), jnp.sign(x))
    for dtype in (BF16, F64):
        assert jaxgrad.round_ste(x.astype(dtype)).dtype == dtype
        assert jaxgrad.sign_ste(x.astype(dtype)).dtype == dtype
    # Identity / hard-tanh gradients, elementwise.
    np.testing.assert_array_equal(jax.grad(lambda v: jaxgrad.round_ste(v).sum())(x), np.ones(7))
    np.testing.assert_array_equal(
        jax.grad(lambda v: jaxgrad.sign_ste(v).sum())(x), [0, 0, 1, 1, 1, 0, 0]
    )


# ----------------------------------------------------------------- straight_through


def test_straight_through_value_is_exact_where_the_textbook_form_is_not(rng):
    s = jnp.asarray(rng.uniform(size=4096), F32)
    v = jnp.ones_like(s)
    naive = v + s - jax.lax.stop_gradient(s)
    # Power: the textbook form is inexact for a good fraction of inputs ...
    assert int(jnp.sum(naive != 1)) > 100
    # ... while straight_through is bit-exact, eagerly and under jit, in every dtype.
    for dtype in (F32, BF16, F64):
        out = jaxgrad.straight_through(v.astype(dtype), s)
        assert out.dtype == dtype
        np.testing.assert_array_equal(np.asarray(out, np.float64), 1.0)
    np.testing.assert_array_equal(jax.jit(jaxgrad.straight_through)(v, s), v)


def test_straight_through_gradient_and_forward_mode():
    x = jnp.asarray([0.3, -1.2, 2.0], F64)
    f = lambda x: jaxgrad.straight_through(jnp.floor(x) * 7.0, jnp.sin(x))
    np.testing.assert_allclose(jax.grad(lambda x: f(x).sum())(x), np.cos(x), rtol=1e-14)
    _, t = jax.jvp(f, (x,), (jnp.ones_like(x),))
    np.testing.assert_allclose(t, np.cos(x), rtol=1e-14)
    # Second order goes through the surrogate, too.
    g2 = jax.grad(lambda x: jax.grad(lambda y: f(y).sum())(x).sum())(x)
    np.testing.assert_allclose(g2, -np.sin(x), rtol=1e-14)


# ----------------------------------------------------------------- shared jitted calls

FNS = {
    "gumbel_softmax": lambda k, l, t, axis: jaxgrad.gumbel_softmax(k, l, temperature=t, axis=axis),
    "gumbel_softmax_hard": lambda k, l, t, axis: jaxgrad.gumbel_softmax(
        k, l, temperature=t, hard=True, axis=axis
    ),
    "relaxed_bernoulli": lambda k, l, t, axis: jaxgrad.relaxed_bernoulli(k, l, temperature=t),
    "relaxed_bernoulli_hard": lambda k, l, t, axis: jaxgrad.relaxed_bernoulli(
        k, l, temperature=t, hard=True
    ),
    "straight_through_categorical": lambda k, l, t, axis: jaxgrad.straight_through_categorical(
        k, l, axis=axis
    ),
    "straight_through_bernoulli": lambda k, l, t, axis: jaxgrad.straight_through_bernoulli(k, l),
    "gumbel_rao": lambda k, l, t, axis: jaxgrad.gumbel_rao(
        k, l, temperature=t, num_samples=7, axis=axis
    ),
    "reinmax": lambda k, l, t, axis: jaxgrad.reinmax(k, l, temperature=t, axis=axis),
}


@functools.partial(jax.jit, static_argnames=("name", "axis"))
def value_and_vjp(name, key, logits, temperature, cotangent, axis=-1):
    """The sample and its VJP (w.r.t. logits and temperature) for a cotangent.

    The gradient of any cost f(sample) is this VJP with cotangent grad f(sample).
    """
    out, vjp = jax.vjp(lambda l, t: FNS[name](key, l, t, axis), logits, temperature)
    g_logits, g_temperature = vjp(cotangent.astype(out.dtype))
    return out, g_logits, g_temperature


def _vjp(name, seed, logits, temperature, cotangent, axis=-1):
    t = jnp.asarray(temperature, samplers.compute_dtype(logits.dtype))
    return value_and_vjp(name, _key(seed), logits, t, jnp.asarray(cotangent), axis=axis)


# ----------------------------------------------------------------- hard samples


@pytest.mark.parametrize("dtype,axis", [(F32, -1), (BF16, -1), (F32, 0)])
def test_gumbel_softmax_hard_is_exact_one_hot_of_the_same_noise(dtype, axis):
    logits = jnp.asarray([[0.3, -1.0, 2.0, -jnp.inf], [1e4, -1e4, 0.0, 0.5]], dtype)
    if axis == 0:
        logits = logits.T
    ones = jnp.ones(logits.shape, dtype)
    hard, g_hard, _ = _vjp("gumbel_softmax_hard", 7, logits, 0.3, ones, axis)
    soft, g_soft, _ = _vjp("gumbel_softmax", 7, logits, 0.3, ones, axis)
    assert hard.dtype == dtype and hard.shape == logits.shape
    idx = jaxgrad.categorical(_key(7), logits, axis=axis)
    expected = jnp.moveaxis(jax.nn.one_hot(idx, 4, dtype=dtype), -1, axis)
    np.testing.assert_array_equal(np.asarray(hard, np.float64), np.asarray(expected, np.float64))
    np.testing.assert_array_equal(np.asarray(hard.sum(axis), np.float64), 1.0)
    # The soft sample is the relaxation of the same draw: its argmax is the hard sample.
    np.testing.assert_array_equal(jnp.argmax(soft.astype(F32), axis), idx)
    # Hard gradient == soft gradient for the same cotangent, masked entries exactly 0.
    np.testing.assert_array_equal(np.asarray(g_hard, np.float64), np.asarray(g_soft, np.float64))
    assert float(jnp.moveaxis(g_hard, axis, -1)[0, 3]) == 0.0


@pytest.mark.parametrize("name", ["gumbel_softmax", "relaxed_bernoulli"])
def test_hard_gradient_is_the_relaxed_gradient_at_the_hard_value(rng, name):
    """For f(y) = sum(w y^2): grad = VJP_soft(2 w y_hard) (ST), not VJP_soft(2 w y_soft)."""
    logits = jnp.asarray(rng.normal(size=(3, 4)), F64).at[0, 1].set(-jnp.inf)
    w = jnp.asarray(rng.normal(size=(3, 4)), F64)
    hard, _, _ = _vjp(name + "_hard", 3, logits, 0.7, w)
    soft, _, _ = _vjp(name, 3, logits, 0.7, w)
    _, gh_l, gh_t = _vjp(name + "_hard", 3, logits, 0.7, 2 * w * hard)
    _, ex_l, ex_t = _vjp(name, 3, logits, 0.7, 2 * w * hard)
    _, gs_l, _ = _vjp(name, 3, logits, 0.7, 2 * w * soft)
    np.testing.assert_allclose(gh_l, ex_l, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gh_t, ex_t, rtol=1e-12, atol=1e-15)
    assert not np.allclose(gh_l, gs_l)  # the test distinguishes the two
    assert np.all(np.isfinite(gh_l)) and np.isfinite(gh_t) and float(gh_l[0, 1]) == 0.0


def test_relaxed_bernoulli_hard_is_exact_and_consistent():
    logits = jnp.asarray([[-1e4, -2.0, 0.0, 0.5], [3.0, 1e4, -jnp.inf, jnp.inf]], F32)
    ones = jnp.ones(logits.shape, F32)
    soft, _, _ = _vjp("relaxed_bernoulli", 5, logits, 0.2, ones)
    hard, g, _ = _vjp("relaxed_bernoulli_hard", 5, logits, 0.2, ones)
    np.testing.assert_array_equal(hard, (soft > 0.5).astype(F32))
    assert set(np.unique(np.asarray(hard)).tolist()) <= {0.0, 1.0}
    assert hard[0, 0] == 0 and hard[1, 1] == 1  # logits -1e4 and 1e4
    np.testing.assert_array_equal(hard[1, 2:], [0, 1])  # -inf and +inf
    np.testing.assert_array_equal(soft[1, 2:], [0, 1])
    assert np.all(np.isfinite(g)) and np.all(g[1, 2:] == 0)


# ----------------------------------------------------------------- moments


def _concrete_moments(l: float, tau: float) -> tuple[float, float]:
    """Exact E[y], E[y^2] of the binary Concrete from P(y <= v) = sigma(tau logit(v) - l)."""
    surv = lambda v: 1.0 - special.expit(tau * special.logit(v) - l)
    m1 = integrate.quad(surv, 0.0, 1.0, epsabs=1e-12, epsrel=1e-10, limit=200)[0]
    m2 = integrate.quad(lambda v: 2 * v * surv(v), 0.0, 1.0, epsabs=1e-12, limit=200)[0]
    return m1, m2


N_MOMENTS = 100_000


@jax.jit
def _binary_draws(key, l, tau):
    k1, k2 = jax.random.split(key)
    y_rb = jaxgrad.relaxed_bernoulli(k1, jnp.full((N_MOMENTS,), l, F32), temperature=tau)
    logits2 = jnp.broadcast_to(jnp.stack([l, jnp.zeros_like(l)]), (N_MOMENTS, 2))
    y_gs = jaxgrad.gumbel_softmax(k2, logits2, temperature=tau)[:, 0]
    return y_rb, y_gs


@pytest.mark.parametrize("l,tau", [(0.0, 0.5), (1.3, 1.0), (-0.7, 2.5)])
def test_binary_concrete_and_two_class_gumbel_softmax_moments(l, tau):
    """K = 2 Gumbel-softmax reduces to the binary Concrete with logit l0 - l1."""
    m1, m2 = _concrete_moments(l, tau)
    y_rb, y_gs = _binary_draws(_key(11), jnp.asarray(l, F32), jnp.asarray(tau, F32))
    for name, y in (("relaxed_bernoulli", y_rb), ("gumbel_softmax K=2", y_gs)):
        y = np.asarray(y, np.float64)
        assert np.all((y >= 0) & (y <= 1))
        se1, se2 = y.std() / np.sqrt(y.size), (y**2).std() / np.sqrt(y.size)
        _z_ok(y.mean(), m1, se1, f"{name} mean")
        _z_ok((y**2).mean(), m2, se2, f"{name} second moment")
        # Power: the same test rejects the moments of a 30% different temperature.
        w1, w2 = _concrete_moments(l, tau * 1.3)
        z_wrong = max(abs(y.mean() - w1) / se1, abs((y**2).mean() - w2) / se2)
        assert z_wrong > 5, f"{name}: the moment test cannot tell tau from 1.3 tau"


def test_gumbel_softmax_three_classes_matches_numpy_monte_carlo():
    logits = np.array([0.4, -0.3, 1.1])
    tau, n_np = 0.6, 1_000_000
    g = np.random.default_rng(123).gumbel(size=(n_np, 3))
    ref = _np_softmax((logits + g) / tau)
    y = jaxgrad.gumbel_softmax(
        _key(12), jnp.broadcast_to(jnp.asarray(logits, F32), (N_MOMENTS, 3)), temperature=tau
    )
    y = np.asarray(y, np.float64)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
    for power in (1, 2):
        a, b = y**power, ref**power
        se = np.sqrt(a.var(0) / a.shape[0] + b.var(0) / b.shape[0])
        _z_ok(a.mean(0), b.mean(0), se, f"moment {power}")
    # Power: the reference at another temperature is rejected.
    wrong = _np_softmax((logits + g) / (tau * 1.3))
    se = np.sqrt(y.var(0) / y.shape[0] + wrong.var(0) / wrong.shape[0])
    assert np.max(np.abs(y.mean(0) - wrong.mean(0)) / se) > 5


# ----------------------------------------------------------------- straight-through family


@pytest.mark.parametrize("axis", [-1, 0])
def test_straight_through_categorical_gradient_is_gradient_of_the_mean(rng, axis):
    logits = jnp.asarray(rng.normal(size=(3, 4)), F64).at[1, 2].set(-jnp.inf)
    t = jnp.asarray(rng.normal(size=(3, 4)), F64)
    if axis == 0:
        logits, t = logits.T, t.T
    # f(x) = sum(u * (x - t)^2): its gradient at the sample is the cotangent.
    u = jnp.arange(1.0, 13.0, dtype=F64).reshape(logits.shape)
    x, _, _ = _vjp("straight_through_categorical", 21, logits, 1.0, t, axis)
    idx = jaxgrad.categorical(_key(21), logits, axis=axis)
    np.testing.assert_array_equal(x, jnp.moveaxis(jax.nn.one_hot(idx, 4, dtype=F64), -1, axis))
    cot = 2 * u * (x - t)
    _, g, _ = _vjp("straight_through_categorical", 21, logits, 1.0, cot, axis)
    pi = _np_softmax(np.asarray(jnp.moveaxis(logits, axis, -1)))
    expected = np.moveaxis(_np_jt(pi, np.moveaxis(np.asarray(cot), axis, -1)), -1, axis)
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-15)
    assert float(jnp.moveaxis(g, axis, -1)[1, 2]) == 0.0
    # For a linear cost it is exactly the gradient of the cost of the mean.
    _, g_lin, _ = _vjp("straight_through_categorical", 22, logits, 1.0, t, axis)
    g_mean = jax.grad(lambda l: jnp.sum(t * jax.nn.softmax(l, axis=axis)))(logits)
    np.testing.assert_allclose(g_lin, g_mean, rtol=1e-12, atol=1e-15)


def test_straight_through_bernoulli_gradient_is_gradient_of_the_mean(rng):
    logits = jnp.asarray(rng.normal(size=(3, 4)), F64)
    t = jnp.asarray(rng.normal(size=(3, 4)), F64)
    b, _, _ = _vjp("straight_through_bernoulli", 23, logits, 1.0, t)
    np.testing.assert_array_equal(b, jaxgrad.dists.bernoulli.sample(_key(23), logits))
    _, g, _ = _vjp("straight_through_bernoulli", 23, logits, 1.0, 2 * (b - t))
    p = special.expit(np.asarray(logits))
    np.testing.assert_allclose(g, 2 * (np.asarray(b) - np.asarray(t)) * p * (1 - p), rtol=1e-12)


def _np_reinmax_grad(logits, d, tau, c):
    """ReinMax, Liu et al. 2023, Algorithm 2, literally (with the authors' centering)."""
    pi0 = _np_softmax(logits)
    pi1 = (_np_softmax(logits / tau) + d) / 2
    g = 2 * _np_jt(pi1, c) - 0.5 * _np_jt(pi0, c)
    return g - g.mean(-1, keepdims=True)


@pytest.mark.parametrize("dtype,axis,rtol", [(F64, -1, 1e-12), (F64, 0, 1e-12), (F32, -1, 2e-5)])
def test_reinmax_matches_numpy_algorithm(rng, dtype, axis, rtol):
    logits = rng.normal(size=(3, 4)) * 2
    logits[2, 3] = -np.inf
    c = rng.normal(size=(3, 4))
    for seed, tau in ((31, 1.0), (32, 2.0)):
        lg, cj = jnp.asarray(logits, dtype), jnp.asarray(c, dtype)
        if axis == 0:
            lg, cj = lg.T, cj.T
        d, g, g_t = _vjp("reinmax", seed, lg, tau, cj, axis)
        idx = jaxgrad.categorical(_key(seed), lg, axis=axis)
        np.testing.assert_array_equal(
            d, jnp.moveaxis(jax.nn.one_hot(idx, 4, dtype=dtype), -1, axis)
        )
        d_last = np.moveaxis(np.asarray(d, np.float64), axis, -1)
        expected = _np_reinmax_grad(logits, d_last, tau, c)
        g_last = np.moveaxis(np.asarray(g, np.float64), axis, -1)
        np.testing.assert_allclose(g_last, expected, rtol=rtol, atol=rtol * 10)
        assert g_last[2, 3] == 0.0 and float(g_t) == 0.0
    # Power: plain straight-through (or ReinMax with pi1 = pi0) is rejected.
    pi0 = _np_softmax(logits)
    assert not np.allclose(g_last, _np_jt(pi0, c) * 1.5, rtol=rtol, atol=rtol * 10)


def test_reinmax_forward_mode_agrees_with_reverse_mode(rng):
    lg = jnp.asarray(rng.normal(size=(3, 4)), F64)
    v, c = (jnp.asarray(rng.normal(size=(3, 4)), F64) for _ in range(2))
    f = lambda l: jaxgrad.reinmax(_key(33), l, temperature=1.5)
    jv, jtc = jax.jit(lambda lg, v, c: (jax.jvp(f, (lg,), (v,))[1], jax.vjp(f, lg)[1](c)[0]))(
        lg, v, c
    )
    np.testing.assert_allclose(jnp.sum(jv * c), jnp.sum(v * jtc), rtol=1e-12)


# ----------------------------------------------------------------- Gumbel-Rao


def _np_conditional_gumbel(u, log_probs, b):
    """z | argmax = b (Tucker et al. 2017), in float64: u [K, ..., C], b [...].

    Log space, so that pi_i = exp(-2e4) (0 in float64) still gives a finite z_i.
    """
    log_e = np.log(-np.log(u))  # E = -log u ~ Exponential(1)
    index = np.broadcast_to(b[..., None], log_e.shape[:-1] + (1,))
    log_e_b = np.take_along_axis(log_e, index, axis=-1)
    z = -np.logaddexp(log_e - log_probs, log_e_b)  # -log(E_i / pi_i + E_b)
    onehot = np.arange(u.shape[-1]) == b[..., None]
    return np.where(onehot, -log_e_b, z)


def test_gumbel_rao_gradient_matches_numpy_on_the_same_draws(rng):
    logits = rng.normal(size=(3, 4))
    logits[1, 0] = -np.inf
    logits[2] = [1e4, -1e4, 3.0, -np.inf]
    c = rng.normal(size=(3, 4))
    k, tau = 7, 0.5  # num_samples=7 in FNS
    lg = jnp.asarray(logits, F64)
    out, g, g_t = _vjp("gumbel_rao", 41, lg, tau, c)
    idx, u = relaxations._gumbel_rao_draws(_key(41), lg, k)
    np.testing.assert_array_equal(out, jax.nn.one_hot(idx, 4, dtype=F64))
    log_probs = np.asarray(jax.nn.log_softmax(lg))
    z = _np_conditional_gumbel(np.asarray(u), log_probs, np.asarray(idx))
    assert np.all(np.argmax(z, -1) == np.asarray(idx)), "conditional noise must keep the argmax"
    y = _np_softmax(z / tau)
    expected = np.mean(_np_jt(y, c), axis=0) / tau
    np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-13)
    assert np.all(np.isfinite(g)) and float(g[1, 0]) == 0.0 and float(g[2, 3]) == 0.0
    assert float(g_t) == 0.0  # documented: no gradient for the temperature
    # Power: one conditional draw fewer changes the answer.
    assert not np.allclose(g, np.mean(_np_jt(y[:-1], c), axis=0) / tau, rtol=1e-6)
    # The library's formula equals the reference.
    zj = relaxations._conditional_gumbel(
        u, jnp.asarray(log_probs), jax.nn.one_hot(idx, 4, dtype=jnp.bool_)
    )
    np.testing.assert_allclose(zj, z, rtol=1e-12)


def test_conditional_gumbel_has_the_conditional_law():
    """E[z | argmax = b] from the formula equals rejection sampling of log pi + G."""
    log_probs = np.log(_np_softmax(np.array([0.5, 0.0, -1.0])))
    b, n = 1, 40_000
    u = jaxgrad._src.samplers.uniform_open(_key(42), (n, 3), F64)
    onehot = jnp.asarray(np.arange(3) == b)
    z = np.asarray(relaxations._conditional_gumbel(u, jnp.asarray(log_probs), onehot))
    assert np.all(np.argmax(z, -1) == b)
    g = log_probs + np.random.default_rng(5).gumbel(size=(600_000, 3))
    ref = g[np.argmax(g, -1) == b]
    se = np.sqrt(z.var(0) / n + ref.var(0) / len(ref))
    _z_ok(z.mean(0), ref.mean(0), se, "conditional Gumbel mean")
    # Power: unconditioned noise is rejected by the same test.
    assert np.max(np.abs(g.mean(0) - ref.mean(0)) / se) > 5


def _cost(x, target):
    """A cost quadratic in the one-hot sample."""
    return jnp.sum((x - target) ** 2 * jnp.arange(1.0, 4.0, dtype=F32))


def _gradient_samples(keys, logits, target):
    f = lambda x: _cost(x, target)

    def one(key):
        k1, k2, k3 = jax.random.split(key, 3)
        g_st = jax.grad(lambda l: f(jaxgrad.gumbel_softmax(k1, l, temperature=0.5, hard=True)))
        g_gr = jax.grad(lambda l: f(jaxgrad.gumbel_rao(k2, l, temperature=0.5, num_samples=8)))
        # Common random numbers (the same hard sample as g_st): a deliberate key reuse.
        g_sc = jax.grad(lambda l: f(jaxgrad.straight_through_categorical(jax.random.clone(k1), l)))
        g_rm = jax.grad(lambda l: f(jaxgrad.reinmax(k3, l, temperature=1.0)))
        return g_st(logits), g_gr(logits), g_sc(logits), g_rm(logits)

    return jax.vmap(one)(keys)


@functools.cache
def _gradients():
    """Gradient samples of four estimators on 4000 keys (computed once per session)."""
    logits = jnp.asarray([1.0, 0.0, -1.0], F32)
    target = jnp.asarray([0.2, 0.9, 0.1], F32)
    out = jax.jit(_gradient_samples)(jax.random.split(_key(43), 4000), logits, target)
    outcomes = jnp.eye(3, dtype=F32)
    exact = jax.grad(lambda l: jax.nn.softmax(l) @ jax.vmap(lambda x: _cost(x, target))(outcomes))
    names = ("st_gumbel_softmax", "gumbel_rao", "straight_through", "reinmax")
    result = {n: np.asarray(a, np.float64) for n, a in zip(names, out, strict=True)}
    result["exact"] = np.asarray(exact(logits), np.float64)
    return result


@pytest.mark.xdist_group("relaxation_gradients")  # one worker, one cached study
def test_gumbel_rao_has_the_mean_of_st_gumbel_softmax_and_less_variance():
    g = _gradients()
    g_st, g_gr, g_sc = g["st_gumbel_softmax"], g["gumbel_rao"], g["straight_through"]
    n = g_st.shape[0]
    se = np.sqrt(g_st.var(0) / n + g_gr.var(0) / n)
    _z_ok(g_gr.mean(0), g_st.mean(0), se, "Gumbel-Rao vs ST-Gumbel-softmax mean")
    assert np.all(g_gr.var(0) < g_st.var(0)), (g_gr.var(0), g_st.var(0))
    # Power: plain straight-through has another mean, and the same test sees it.
    se_sc = np.sqrt(g_st.var(0) / n + g_sc.var(0) / n)
    assert np.max(np.abs(g_sc.mean(0) - g_st.mean(0)) / se_sc) > 5


@pytest.mark.xdist_group("relaxation_gradients")  # one worker, one cached study
def test_reinmax_is_unbiased_for_quadratic_costs_at_temperature_one():
    """ReinMax is second-order accurate: for a cost quadratic in D and tau = 1 its
    expectation is the exact gradient (an identity one checks by enumeration)."""
    g = _gradients()
    g_rm, exact = g["reinmax"], g["exact"]
    n = g_rm.shape[0]
    _z_ok(g_rm.mean(0), exact, g_rm.std(0) / np.sqrt(n), "ReinMax mean vs exact gradient")
    # Power: straight-through (first order) is biased here, and the same test rejects it.
    g_sc = g["straight_through"]
    assert np.max(np.abs(g_sc.mean(0) - exact) / (g_sc.std(0) / np.sqrt(n))) > 5


def test_gumbel_rao_differentiation_modes_are_as_documented():
    """Reverse mode and second derivatives with a reverse-mode inner derivative work (the
    docstring said jax.hessian did not); forward mode through the sample raises."""
    w = jnp.asarray([0.3, -1.2, 2.0], F64)
    logits = jnp.asarray([0.2, -0.4, 0.1], F64)

    def h(l, tau=0.7):
        d = jaxgrad.gumbel_rao(_key(44), l, temperature=tau, num_samples=3)
        return jnp.sum(jnp.sin(d * w + l))  # nonlinear in the sample and in l

    grad = jax.jit(jax.grad(h))
    hessians = jax.jit(
        lambda l: (
            jax.hessian(h)(l),
            jax.jacrev(jax.jacrev(h))(l),
            jax.vmap(lambda v: jax.jvp(jax.grad(h), (l,), (v,))[1], out_axes=1)(jnp.eye(3)),
            jax.grad(lambda tau: jnp.vdot(w, jax.grad(h)(l, tau)))(0.7),
            jax.grad(h, argnums=1)(l, 0.7),
        )
    )
    hess, rev_rev, fwd_of_grad, d_tau_of_grad, d_tau = hessians(logits)
    # They agree, and are the derivative of the gradient estimate (same key): central
    # differences of the gradient, in float64 (the sample does not change).
    eps = 1e-6
    fd = np.stack(
        [
            (grad(logits + eps * e, 0.7) - grad(logits - eps * e, 0.7)) / (2 * eps)
            for e in np.eye(3)
        ],
        1,
    )
    for other in (rev_rev, fwd_of_grad):
        np.testing.assert_allclose(other, hess, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hess, fd, rtol=1e-5, atol=1e-8)
    assert not np.allclose(hess, hess.T, atol=1e-3)  # not the Hessian of any function
    # The temperature gets no gradient, but the gradient estimate depends on it.
    assert float(d_tau) == 0.0
    g_tau = lambda tau: jnp.vdot(w, grad(logits, tau))
    np.testing.assert_allclose(
        d_tau_of_grad, (g_tau(0.7 + eps) - g_tau(0.7 - eps)) / (2 * eps), rtol=1e-5
    )
    # Forward mode through the sample is refused (at trace time, so traced under jit).
    ones = jnp.ones(3, F64)
    for forward in (
        lambda l: jax.jvp(h, (l,), (ones,)),
        jax.jacfwd(h),
        lambda l: jax.linearize(h, l)[1](ones),  # linearize itself returns; its map raises
        jax.jacrev(jax.jacfwd(h)),
    ):
        with pytest.raises(TypeError, match="forward-mode autodiff"):
            jax.jit(forward)(logits)


# ----------------------------------------------------------------- temperature under jit


def test_temperature_annealing_does_not_retrace():
    traces = []

    @jax.jit
    def step(key, logits, temperature):
        traces.append(None)
        ks = jax.random.split(key, 4)

        def loss(l):
            return (
                jnp.sum(jaxgrad.gumbel_softmax(ks[0], l, temperature=temperature) ** 2)
                + jnp.sum(jaxgrad.relaxed_bernoulli(ks[1], l, temperature=temperature) ** 2)
                + jnp.sum(jaxgrad.gumbel_rao(ks[2], l, temperature=temperature) * l)
                + jnp.sum(jaxgrad.reinmax(ks[3], l, temperature=temperature) * l)
            )

        return jax.grad(loss)(logits)

    logits = jnp.asarray([0.5, -0.5, 0.1], F32)
    grads = [step(_key(s), logits, jnp.asarray(t, F32)) for s, t in enumerate((2.0, 1.0, 0.3))]
    assert len(traces) == 1
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert not np.allclose(grads[0], grads[2])

    # An optax schedule inside a jitted loop: the temperature is traced, one trace.
    schedule = optax.exponential_decay(1.0, transition_steps=10, decay_rate=0.5, end_value=0.1)
    traces.clear()

    @jax.jit
    def train(key, logits):
        traces.append(None)

        def body(i, carry):
            l, k = carry
            k, sub = jax.random.split(k)
            g = jax.grad(lambda l: jnp.sum(jaxgrad.gumbel_softmax(sub, l, temperature=schedule(i))))
            return l - 0.1 * g(l), k

        return jax.lax.fori_loop(0, 30, body, (logits, key))[0]

    assert np.all(np.isfinite(train(_key(50), logits)))
    assert len(traces) == 1


# ----------------------------------------------------------------- the fused formulas


def _log_space_gumbel_softmax(key, logits, t, hard, axis=-1):
    """The textbook-safe formula jaxgrad used before: exp(log_softmax(masked z / t))."""
    l = jnp.moveaxis(logits, axis, -1)
    t = jnp.moveaxis(jnp.broadcast_to(t, logits.shape), axis, -1) if jnp.ndim(t) else t
    z = l + jaxgrad.gumbel(key, l.shape, l.dtype)
    inf = jnp.isinf(z)
    x = jnp.where(inf, z, jnp.where(inf, jnp.zeros_like(z), z) / t)
    y = jnp.exp(jax.nn.log_softmax(x, axis=-1))
    if hard:
        d = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)
        y = jax.lax.stop_gradient(d) + (y - jax.lax.stop_gradient(y))
    return jnp.moveaxis(y, -1, axis)


def _log_space_relaxed_bernoulli(key, logits, t, hard):
    u = samplers.uniform_open(key, logits.shape, logits.dtype)
    z = logits + (jnp.log(u) - jnp.log1p(-u))
    inf = jnp.isinf(z)
    y = jax.nn.sigmoid(jnp.where(inf, z, jnp.where(inf, jnp.zeros_like(z), z) / t))
    if hard:
        y = jax.lax.stop_gradient((z > 0).astype(y.dtype)) + (y - jax.lax.stop_gradient(y))
    return y


FNS["log_space_gumbel_softmax"] = lambda k, l, t, axis: _log_space_gumbel_softmax(
    k, l, t, False, axis
)
FNS["log_space_gumbel_softmax_hard"] = lambda k, l, t, axis: _log_space_gumbel_softmax(
    k, l, t, True, axis
)
FNS["log_space_relaxed_bernoulli"] = lambda k, l, t, axis: _log_space_relaxed_bernoulli(
    k, l, t, False
)
FNS["log_space_relaxed_bernoulli_hard"] = lambda k, l, t, axis: _log_space_relaxed_bernoulli(
    k, l, t, True
)

# Masks (+-inf), a huge logit and a tie; temperatures per tensor, per row, per category.
_FUSED_LOGITS = [[0.3, -np.inf, 2.0, -1.0, 0.5], [1e4, -1e4, 0.0, -np.inf, 1e4], [-2.0] * 5]
_TEMPERATURES = {
    "scalar": 0.7,
    "per row": [[0.4], [1.3], [0.9]],
    "per category": [0.5, 2.0, 0.8, 1.1, 0.3],
}


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("temperature", list(_TEMPERATURES))
def test_fused_gumbel_softmax_equals_the_log_space_formula_on_the_same_noise(
    rng, hard, temperature
):
    """Value and both gradients agree in float64 (the fused path has no where and no log)."""
    logits = jnp.asarray(_FUSED_LOGITS, F64)
    t = jnp.asarray(_TEMPERATURES[temperature], F64)
    c = jnp.asarray(rng.normal(size=logits.shape), F64)
    name = "gumbel_softmax_hard" if hard else "gumbel_softmax"
    got = value_and_vjp(name, _key(11), logits, t, c)
    want = value_and_vjp("log_space_" + name, _key(11), logits, t, c)
    # The temperature gradient sums x_i = z_i / t of size 1e4 to ~1e-3: the
    # log-space reference cancels (the fused path uses x - max), hence its atol.
    whats = {"value": 1e-15, "logits gradient": 1e-15, "temperature gradient": 1e-12}
    for g, w, (what, atol) in zip(got, want, whats.items(), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=atol, err_msg=f"{temperature}: {what}")
    value, g_logits, g_t = got
    mask = np.isneginf(np.asarray(_FUSED_LOGITS))
    assert np.all(np.asarray(value)[mask] == 0) and np.all(np.asarray(g_logits)[mask] == 0)
    assert np.all(np.isfinite(g_t)) and np.any(np.asarray(g_t) != 0)
    if hard:  # exactly the one-hot of the Gumbel-max sample
        idx = jaxgrad.categorical(_key(11), logits)
        np.testing.assert_array_equal(value, jax.nn.one_hot(idx, 5, dtype=F64))


@pytest.mark.parametrize("hard", [False, True])
def test_fused_relaxed_bernoulli_equals_the_log_space_formula_on_the_same_noise(rng, hard):
    logits = jnp.asarray([[0.3, -np.inf, 2.0], [np.inf, -1e4, 1e4]], F64)
    c = jnp.asarray(rng.normal(size=logits.shape), F64)
    name = "relaxed_bernoulli_hard" if hard else "relaxed_bernoulli"
    got = _vjp(name, 12, logits, 0.6, c)
    want = _vjp("log_space_" + name, 12, logits, 0.6, c)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)
    assert np.all(np.asarray(got[1])[np.isinf(np.asarray(logits))] == 0)
    assert np.isfinite(float(got[2])) and float(got[2]) != 0


def test_fused_relaxations_work_in_forward_mode_and_at_second_order():
    """The written-out JVPs: jacfwd == jacrev, finite at masks, and Hessians exist."""
    logits = jnp.asarray([[0.3, -np.inf, 2.0, -1.0], [1.0, 0.5, -np.inf, -np.inf]], F64)

    def f(l, t):  # per-category, per-row temperatures
        return jnp.concatenate(
            [
                jaxgrad.gumbel_softmax(_key(13), l, temperature=jnp.tile(t, 2)).ravel(),
                jaxgrad.gumbel_softmax(_key(14), l, temperature=t[:, None], hard=True).ravel(),
                jaxgrad.relaxed_bernoulli(_key(15), l, temperature=t[:, None]).ravel(),
            ]
        )

    t = jnp.asarray([0.6, 1.7], F64)
    fwd = jax.jit(jax.jacfwd(f, argnums=(0, 1)))(logits, t)
    rev = jax.jit(jax.jacrev(f, argnums=(0, 1)))(logits, t)
    for a, b in zip(fwd, rev, strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # Masked logits get no derivative from any output; unmasked ones do.
    d_logits = np.abs(np.asarray(fwd[0])).sum(axis=0)
    assert np.all(d_logits[np.isneginf(np.asarray(logits))] == 0)
    assert np.all(d_logits[0, [0, 2]] > 0)
    # Second order: the Hessian of a smooth cost, symmetric and finite.
    w = jnp.arange(logits.size * 3, dtype=F64)
    h = jax.jit(jax.hessian(lambda l: jnp.sum(w * f(l, t) ** 2)))(logits)
    h = np.asarray(h).reshape(logits.size, logits.size)
    assert np.all(np.isfinite(h)) and np.any(h != 0)
    np.testing.assert_allclose(h, h.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_rbg_keys_give_exact_hard_samples_and_safe_gradients(impl):
    """The same guarantees under the other PRNG implementations (one program per impl)."""
    logits = jnp.asarray(_FUSED_LOGITS, F32)
    key = lambda: jax.random.key(21, impl=impl)  # noqa: E731  (a fresh key, the same noise)

    @jax.jit
    def run(keys, logits, t):
        def loss(l, t):
            y = jaxgrad.gumbel_softmax(keys[0], l, temperature=t, hard=True)
            s = jaxgrad.gumbel_softmax(keys[1], l, temperature=t)
            b = jaxgrad.relaxed_bernoulli(keys[2], l, temperature=t, hard=True)
            h = jaxgrad.gumbel_softmax(keys[3], l.astype(jnp.float16), temperature=t, hard=True)
            return jnp.sum(y * jnp.arange(5, dtype=F32)) + jnp.sum(s**2) + jnp.sum(b), (y, s, b, h)

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(logits, t)

    (g_l, g_t), (y, s, b, h) = run([key() for _ in range(4)], logits, jnp.float32(0.2))
    idx = jaxgrad.categorical(key(), logits)
    np.testing.assert_array_equal(y, jax.nn.one_hot(idx, 5, dtype=F32))
    np.testing.assert_array_equal(jnp.argmax(s, -1), idx)  # the relaxation of the same draw
    np.testing.assert_array_equal(np.asarray(h, np.float64), np.asarray(y, np.float64))
    assert h.dtype == jnp.float16
    u = samplers.uniform_open(key(), logits.shape, F32)
    np.testing.assert_array_equal(b, (logits + jnp.log(u) - jnp.log1p(-u) > 0).astype(F32))
    mask = np.isneginf(np.asarray(_FUSED_LOGITS))
    assert np.all(np.asarray(g_l)[mask] == 0) and np.all(np.isfinite(g_l)) and np.isfinite(g_t)


def _transcendentals(fn, hard, key, shape=(64, 256)):
    """XLA's count of transcendental operations per element, forward and backward."""

    def loss(l, t, w):
        return jnp.sum(w * fn(key, l, t, hard))

    x = jnp.zeros(shape, F32)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    analysis = step.lower(x, jnp.float32(0.5), x).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    if not analysis or "transcendentals" not in analysis:
        pytest.skip("this backend has no cost analysis")
    return analysis["transcendentals"] / x.size


def test_gumbel_softmax_computes_no_more_transcendentals_than_the_textbook_formula():
    """Two logs (the noise) and one exp per element, as softmax((l + G) / tau) by hand."""
    key = jax.random.key(0, impl="rbg")

    def textbook(key, l, t, hard):
        y = jax.nn.softmax((l + jax.random.gumbel(key, l.shape, l.dtype)) / t, axis=-1)
        if hard:
            d = jax.nn.one_hot(jnp.argmax(y, -1), y.shape[-1], dtype=y.dtype)
            y = d + y - jax.lax.stop_gradient(y)
        return y

    ours = lambda key, l, t, hard: jaxgrad.gumbel_softmax(key, l, temperature=t, hard=hard)
    for hard in (False, True):
        assert _transcendentals(ours, hard, key) <= _transcendentals(textbook, hard, key) == 3
    # Power: the log-space formula (a second exp and a log per row) fails the same check.
    assert _transcendentals(lambda k, l, t, h: _log_space_gumbel_softmax(k, l, t, h), True, key) > 3
