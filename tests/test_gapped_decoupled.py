"""Gapped straight-through (GST) and decoupled straight-through Gumbel-softmax.

Deterministic checks compare each rule with a NumPy computation of its formula
on the same noise (bit-exact forward values, gradients to rounding); the
statistical checks (the law of the sample, bias and variance against the exact
gradient by enumeration) use 5 standard errors, each with a power check that
the same assertion rejects a wrong answer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import categorical_problem, coupled_categorical, exact_grads, grad_samples_of_many

import jaxgrad
from jaxgrad._src import relaxations, samplers

F32, F64, BF16 = jnp.float32, jnp.float64, jnp.bfloat16
GST, DEC = jaxgrad.gapped_straight_through, jaxgrad.decoupled_st_gumbel_softmax


def _key(seed: int = 0) -> jax.Array:
    """A fresh typed key: the same seed gives the same noise (key-reuse safe)."""
    return jax.random.key(seed)


def _np_softmax(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_jt(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Softmax Jacobian (symmetric) applied to c: y * c - y <y, c>."""
    return y * c - y * np.sum(y * c, axis=-1, keepdims=True)


def _np_gapped(logits: np.ndarray, onehot: np.ndarray, gap: float) -> np.ndarray:
    """GST's perturbed logits: the sampled class to the row max, the others at most max - gap."""
    top = np.max(logits, axis=-1, keepdims=True)
    return np.where(onehot > 0, top, np.minimum(logits, top - gap))


def _masked_logits() -> jax.Array:
    # Dyadic values, so max - gap is exact and the gap holds exactly.
    return jnp.asarray(
        [
            [0.5, -0.25, -jnp.inf, 1.0, 0.75],
            [-1.5, 2.0, 1.75, -jnp.inf, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [3.0, -jnp.inf, -jnp.inf, 2.5, -8.0],
        ],
        F32,
    )


# ----------------------------------------------------------------- forward values


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("axis", [-1, 0])
def test_forward_is_the_exact_one_hot_of_the_categorical_sample(dtype, axis):
    logits = _masked_logits().astype(dtype)
    if axis == 0:
        logits = logits.T
    expected = jax.nn.one_hot(jaxgrad.categorical(_key(1), logits, axis=axis), 5, dtype=dtype)
    expected = jnp.moveaxis(expected, -1, axis)
    gst = GST(_key(1), logits, temperature=0.7, gap=0.5, axis=axis)
    assert gst.dtype == dtype and gst.shape == logits.shape
    np.testing.assert_array_equal(np.asarray(gst, np.float64), np.asarray(expected, np.float64))
    dec = DEC(_key(1), logits, temperature=0.3, axis=axis)  # forward temperature 1
    np.testing.assert_array_equal(np.asarray(dec, np.float64), np.asarray(expected, np.float64))
    # A forward temperature samples softmax(logits / tau_f): the categorical of those logits.
    tempered = jnp.moveaxis(
        jax.nn.one_hot(jaxgrad.categorical(_key(1), logits / 0.4, axis=axis), 5, dtype=dtype),
        -1,
        axis,
    )
    dec = DEC(_key(1), logits, temperature=2.0, forward_temperature=0.4, axis=axis)
    np.testing.assert_array_equal(np.asarray(dec, np.float64), np.asarray(tempered, np.float64))


def test_gst_perturbed_logits_are_consistent_with_the_strict_gap():
    logits = _masked_logits()
    onehot = jax.nn.one_hot(jnp.asarray([0, 2, 1, 3]), 5, dtype=jnp.bool_)  # not all argmaxes
    for gap in (1.0, 0.25, 4.0):
        m = np.asarray(relaxations._gapped_logits(logits, onehot, jnp.float32(gap)))
        np.testing.assert_array_equal(m, _np_gapped(np.asarray(logits), np.asarray(onehot), gap))
        sampled = np.asarray(onehot)
        m_b = m[sampled]
        others = np.where(sampled, -np.inf, m).max(-1)
        assert np.all(np.argmax(m, -1) == np.argmax(sampled, -1))  # consistent
        assert np.all(m_b - others >= gap)  # strict gap (exact: dyadic logits)
        assert np.all(np.isneginf(m[np.isneginf(np.asarray(logits))]))  # masked stay masked
        # Logits already more than gap below the maximum are not moved.
        far = ~sampled & (np.asarray(logits) <= m_b[:, None] - gap)
        np.testing.assert_array_equal(m[far], np.asarray(logits)[far])


# ----------------------------------------------------------------- gradients on fixed noise


@pytest.mark.parametrize("axis", [-1, 0])
def test_gst_gradient_is_the_softmax_jacobian_at_the_gapped_logits(rng, axis):
    logits = _masked_logits()
    w = jnp.asarray(rng.normal(size=logits.shape), F32)
    tau, gap = 0.6, 0.75
    if axis == 0:
        logits, w = logits.T, w.T

    def f(lg, t):
        return jnp.sum(w * GST(_key(2), lg, temperature=t, gap=gap, axis=axis))

    g_l, g_t = jax.grad(f, argnums=(0, 1))(logits, jnp.float32(tau))
    d = np.moveaxis(np.asarray(GST(_key(2), logits, gap=gap, axis=axis)), axis, -1)
    lg, c = (np.moveaxis(np.asarray(x, np.float64), axis, -1) for x in (logits, w))
    m = _np_gapped(lg, d, gap)
    y = _np_softmax(m / tau)
    expected_l = _np_jt(y, c) / tau
    finite_m = np.where(np.isneginf(m), 0.0, m)  # y = 0 there
    expected_t = np.sum(_np_jt(y, -finite_m / tau**2) * c)
    np.testing.assert_allclose(np.moveaxis(np.asarray(g_l), axis, -1), expected_l, atol=2e-6)
    np.testing.assert_allclose(float(g_t), expected_t, rtol=1e-5, atol=1e-6)
    assert np.all(np.moveaxis(np.asarray(g_l), axis, -1)[np.isneginf(lg)] == 0)


def test_decoupled_gradient_is_the_backward_softmax_jacobian_on_the_same_noise(rng):
    logits = _masked_logits()
    w = jnp.asarray(rng.normal(size=logits.shape), F32)
    noise = np.asarray(samplers.gumbel(_key(3), logits.shape, F32), np.float64)
    lg = np.asarray(logits, np.float64)
    for tau_f, tau_b in ((1.0, 0.5), (0.3, 2.0), (2.5, 0.7)):

        def f(lgt, tb, tau_f=tau_f):
            return jnp.sum(w * DEC(_key(3), lgt, temperature=tb, forward_temperature=tau_f))

        g_l, g_t = jax.grad(f, argnums=(0, 1))(logits, jnp.float32(tau_b))
        y = _np_softmax(lg / tau_b + noise)
        np.testing.assert_allclose(np.asarray(g_l), _np_jt(y, np.asarray(w)) / tau_b, atol=2e-6)
        # d/dtau_b of softmax(l / tau_b + G) = J(y) (-l / tau_b^2); masked entries give 0.
        dl = -np.where(np.isneginf(lg), 0.0, lg) / tau_b**2
        expected_t = np.sum(_np_jt(y, dl) * np.asarray(w, np.float64))
        np.testing.assert_allclose(float(g_t), expected_t, rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(g_l)[np.isneginf(lg)] == 0)


def test_decoupled_temperatures_act_only_where_they_should(rng):
    """tau_b changes nothing forward; tau_f changes nothing backward (for a linear cost the
    cotangent does not depend on the sample): both bit for bit."""
    logits = jnp.asarray(rng.normal(size=(64, 5)), F32).at[3, 1].set(-jnp.inf)
    w = jnp.asarray(rng.normal(size=(64, 5)), F32)

    @jax.jit
    def values_and_grads(logits):
        def one(tau_f, tau_b):
            sample = lambda lg: DEC(_key(4), lg, temperature=tau_b, forward_temperature=tau_f)
            return sample(logits), jax.grad(lambda lg: jnp.sum(w * sample(lg)))(logits)

        return one(1.0, 0.5), one(1.0, 3.0), one(0.25, 0.5)

    (v11, g11), (v12, g12), (v21, g21) = values_and_grads(logits)
    np.testing.assert_array_equal(v11, v12)  # the backward temperature leaves the sample
    np.testing.assert_array_equal(g11, g21)  # the forward temperature leaves the gradient
    # Each does act: power for both assertions.
    assert not np.array_equal(v11, v21)
    assert not np.allclose(g11, g12)


def test_decoupled_with_equal_temperatures_is_st_gumbel_softmax(rng):
    logits = jnp.asarray(rng.normal(size=(16, 6)), F32).at[0, 2].set(-jnp.inf)
    w = jnp.asarray(rng.normal(size=(16, 6)), F32)

    def both(sampler):
        return sampler(logits), jax.grad(lambda lg: jnp.sum(w * sampler(lg)))(logits)

    # Two separate programs (no compiler can merge the two computations), each compiled
    # once, with the temperatures traced.
    dec = jax.jit(lambda t: both(lambda lg: DEC(_key(5), lg, temperature=t, forward_temperature=t)))
    stgs = jax.jit(
        lambda t: both(
            lambda lg: jaxgrad.gumbel_softmax(_key(5), lg / t, temperature=1.0, hard=True)
        )
    )
    # tau_f = tau_b = 1: the same function as gumbel_softmax(hard=True), value and gradient.
    (v_d, g_d), (v_s, g_s) = dec(F32(1.0)), stgs(F32(1.0))
    v_ref = jaxgrad.gumbel_softmax(_key(5), logits, temperature=1.0, hard=True)
    np.testing.assert_array_equal(v_s, v_ref)
    np.testing.assert_array_equal(v_d, v_s)
    np.testing.assert_array_equal(g_d, g_s)
    # tau_f = tau_b = tau: ST-GS of logits / tau at temperature 1 (the paper's softmax(l/tau + G)).
    (v_d, g_d), (v_s, g_s) = dec(F32(0.4)), stgs(F32(0.4))
    np.testing.assert_array_equal(v_d, v_s)
    np.testing.assert_allclose(g_d, g_s, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- robustness and tracing


@pytest.mark.parametrize("dtype", [F32, BF16, F64])
def test_extreme_logits_and_temperatures_give_finite_gradients_and_compile_once(dtype):
    traces = []

    @jax.jit
    def grads(keys, logits, tau, tau_f, gap):
        traces.append(None)

        def loss(lg, t):
            w = jnp.arange(1.0, 6.0, dtype=dtype)
            gst = GST(keys[0], lg, temperature=t, gap=gap)
            dec = DEC(keys[1], lg, temperature=t, forward_temperature=tau_f)
            return jnp.sum(jnp.sin(gst * w)) + jnp.sum(dec**2 * w)

        (g_l, g_t), value = jax.grad(loss, argnums=(0, 1))(logits, tau), GST(keys[2], logits)
        return g_l, g_t, value

    base = np.asarray([[1e4, -1e4, 0.0, -np.inf, 3.0], [-1e4, -1e4, -np.inf, -1e4, 2e3]])
    masked = np.isneginf(base)
    cases = ((1e-4, 1e-4, 1e-4), (1e4, 1e4, 1e4), (1e-4, 1e4, 1.0), (1.0, 1.0, 1e3))
    cdt = samplers.compute_dtype(dtype)
    for seed, (t, tf, gap) in enumerate(cases):
        # float64 runs on legacy uint32 keys, the others on typed keys.
        keys = jax.random.split(jax.random.PRNGKey(seed) if dtype == F64 else _key(seed), 3)
        args = (jnp.asarray(base, dtype), *(jnp.asarray(x, cdt) for x in (t, tf, gap)))
        g_l, g_t, value = grads(keys, *args)
        assert g_l.dtype == dtype and value.dtype == dtype
        assert np.all(np.isfinite(np.asarray(g_l, np.float64))) and np.isfinite(float(g_t))
        assert np.all(np.asarray(g_l, np.float64)[masked] == 0), (t, tf, gap, g_l)
        assert np.all(np.asarray(value, np.float64)[masked] == 0)
        assert np.all(np.asarray(value, np.float64).sum(-1) == 1)
    assert len(traces) == 1  # traced temperatures and gap: one compilation


# ----------------------------------------------------------------- errors


def test_errors_name_the_argument():
    k, logits = _key(8), jnp.zeros((2, 3), F32)
    with pytest.raises(ValueError, match="gapped_straight_through: gap must be positive"):
        GST(k, logits, gap=0.0)
    with pytest.raises(ValueError, match="gapped_straight_through: gap must be positive"):
        GST(k, logits, gap=-1.0)
    with pytest.raises(ValueError, match="gapped_straight_through: temperature must be positive"):
        GST(k, logits, temperature=0.0)
    with pytest.raises(ValueError, match="gap of shape \\(3, 3\\) does not broadcast"):
        GST(k, logits, gap=jnp.ones((3, 3)))
    with pytest.raises(TypeError, match="gap must be a positive number"):
        GST(k, logits, gap="1")
    with pytest.raises(
        ValueError, match="decoupled_st_gumbel_softmax: forward_temperature must be positive"
    ):
        DEC(k, logits, forward_temperature=-0.5)
    with pytest.raises(
        ValueError, match="decoupled_st_gumbel_softmax: temperature must be positive"
    ):
        DEC(k, logits, temperature=jnp.asarray([1.0, 0.0, 1.0]))
    with pytest.raises(
        ValueError, match="forward_temperature of shape \\(2,\\) does not broadcast"
    ):
        DEC(k, logits, forward_temperature=jnp.ones(2))
    with pytest.raises(TypeError, match="logits"):
        DEC(k, jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="axis"):
        GST(k, logits, axis=2)


# ----------------------------------------------------------------- statistics


def test_the_samples_have_the_categorical_law():
    n = 20_000
    logits = jnp.asarray([0.3, -0.8, -jnp.inf, 1.2, 0.1], F32)

    @jax.jit
    def counts(key):
        keys = jax.random.split(key, (3, n))
        draw = lambda s, ks: jnp.sum(jax.vmap(s)(ks), axis=0)
        return (
            draw(lambda k: GST(k, logits, temperature=0.5), keys[0]),
            draw(lambda k: DEC(k, logits, temperature=0.5), keys[1]),
            draw(lambda k: DEC(k, logits, temperature=0.5, forward_temperature=0.5), keys[2]),
        )

    gst, dec, dec_half = (np.asarray(c, np.float64) for c in counts(_key(9)))

    def max_z(c, p):
        p = np.asarray(p, np.float64)
        ok = p > 0
        assert np.all(c[~ok] == 0)  # masked classes are never sampled
        return np.max(np.abs(c[ok] / n - p[ok]) / np.sqrt(p[ok] * (1 - p[ok]) / n))

    pi, pi_half = jax.nn.softmax(logits), jax.nn.softmax(logits / 0.5)
    assert max_z(gst, pi) < 5 and max_z(dec, pi) < 5
    assert max_z(dec_half, pi_half) < 5  # the forward temperature tempers the law
    assert max_z(dec_half, pi) > 5  # power: the same test tells the two laws apart


def test_bias_and_variance_against_the_exact_gradient():
    """On categorical_problem with coupled_categorical, at temperature 0.5: every rule is
    biased (the z-test rejects it), GST has less variance than ST-GS at the same
    temperature, and the decoupled backward temperature sets the variance (higher tau_b,
    smoother surrogate, less variance). Numbers (N = 20000) in the module's report."""
    logits, a = categorical_problem()
    exact = np.asarray(exact_grads(coupled_categorical, jaxgrad.dists.categorical, logits, a)[0])

    def est(sampler):
        return lambda key, lg: coupled_categorical(sampler(key, lg), a)

    ests = {
        "gst": est(lambda k, lg: GST(k, lg, temperature=0.5)),
        "stgs": est(lambda k, lg: jaxgrad.gumbel_softmax(k, lg, temperature=0.5, hard=True)),
        "dec_half": est(lambda k, lg: DEC(k, lg, temperature=0.5)),
        "dec_two": est(lambda k, lg: DEC(k, lg, temperature=2.0)),
    }
    n = 20_000
    g = grad_samples_of_many(
        ests, {name: logits for name in ests}, _key(10), num_keys=n, batch_size=2_000
    )
    g = {name: np.asarray(v, np.float64) for name, v in g.items()}
    for name, s in g.items():
        z = np.abs(s.mean(0) - exact) / (s.std(0) / np.sqrt(n))
        assert np.max(z) > 5, name  # biased, and the test has the power to see it
    var = {name: s.var(0).sum() for name, s in g.items()}
    assert var["gst"] < 0.75 * var["stgs"], var
    assert var["dec_two"] < 0.25 * var["dec_half"], var
