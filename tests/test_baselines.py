"""jaxgrad.baselines: EMA, normalizer, learned-baseline loss, loo/optimal helpers,
and the variance they remove on the Bernoulli toy (common random numbers)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import size

import jaxgrad
from jaxgrad.diagnostics import grad_samples

F32 = jnp.float32
BERN = jaxgrad.dists.bernoulli

# ------------------------------------------------------------------------------- ema


def _np_ema(batches, decay, debias):
    avg, out = 0.0, []
    for t, batch in enumerate(batches, start=1):
        avg = decay * avg + (1 - decay) * float(np.mean(batch))
        out.append(avg / (1 - decay**t) if debias else avg)
    return out


@pytest.mark.parametrize("debias", [True, False])
def test_ema_matches_recursion(debias):
    ema = jaxgrad.baselines.ema(decay=0.8, debias=debias)
    state = ema.init()
    assert isinstance(state, jaxgrad.baselines.EmaState)
    assert float(state.value) == 0.0 and int(state.count) == 0
    batches = [np.array([1.0, 3.0]), np.array([2.0]), np.array([-1.0, 0.0, 4.0])]
    update = jax.jit(ema.update)
    expected = _np_ema(batches, 0.8, debias)
    for batch, value in zip(batches, expected, strict=True):
        state = update(jnp.asarray(batch, F32), state)
        np.testing.assert_allclose(float(state.value), value, rtol=1e-6)
    assert int(state.count) == 3 and state.value.dtype == F32
    if debias:  # after one update the debiased value is exactly the first batch mean
        one = ema.update(jnp.asarray([1.0, 3.0], F32), ema.init())
        np.testing.assert_allclose(float(one.value), 2.0, rtol=1e-6)


def test_ema_stops_gradients_and_keeps_dtype():
    ema = jaxgrad.baselines.ema()
    g = jax.grad(lambda f: ema.update(f, ema.init()).value)(jnp.ones(3, F32))
    np.testing.assert_array_equal(g, 0.0)
    assert ema.init(jnp.float64).value.dtype == jnp.float64


def test_ema_errors():
    with pytest.raises(ValueError, match=r"ema: decay must be a scalar in \[0, 1\)"):
        jaxgrad.baselines.ema(decay=1.0)
    with pytest.raises(ValueError, match="decay must be a scalar"):
        jaxgrad.baselines.ema(decay=-0.1)
    with pytest.raises(TypeError, match="decay must be a number"):
        jaxgrad.baselines.ema(decay="0.9")
    with pytest.raises(TypeError, match="ema.init: dtype must be a floating dtype"):
        jaxgrad.baselines.ema().init(jnp.int32)
    with pytest.raises(ValueError, match=r"normalizer: decay must be a scalar in \[0, 1\)"):
        jaxgrad.baselines.normalizer(decay=2.0)
    with pytest.raises(TypeError, match="normalizer: decay must be a number"):
        jaxgrad.baselines.normalizer(decay=None)
    with pytest.raises(TypeError, match="normalizer.init: dtype must be a floating dtype"):
        jaxgrad.baselines.normalizer().init(jnp.int32)


# ------------------------------------------------------------------------ normalizer


def test_normalizer_matches_recursion():
    decay = 0.7
    norm = jaxgrad.baselines.normalizer(decay=decay)
    state = norm.init()
    assert float(state.scale) == 1.0
    rng = np.random.default_rng(0)
    batches = [rng.normal(0.5, 3.0, size=4) for _ in range(6)]
    m1 = _np_ema(batches, decay, True)
    m2 = _np_ema([b * b for b in batches], decay, True)
    for t, batch in enumerate(batches):
        state = norm.update(jnp.asarray(batch, F32), state)
        var = max(m2[t] - m1[t] ** 2, 0.0)
        np.testing.assert_allclose(float(state.mean), m1[t], rtol=1e-5)
        np.testing.assert_allclose(float(state.variance), var, rtol=1e-4)
        np.testing.assert_allclose(float(state.scale), max(1.0, np.sqrt(var)), rtol=1e-5)
    # A small signal is never amplified.
    small = norm.update(jnp.asarray([0.1, -0.1], F32), norm.init())
    assert float(small.scale) == 1.0


def test_normalized_gradient_is_divided_by_the_scale():
    f = lambda b: 10.0 * jnp.sum((b - 0.45) ** 2)
    logits = jnp.asarray([0.2, -0.3], F32)
    plain = jaxgrad.rloo(f, dist=BERN, num_samples=4)
    scaled = jaxgrad.rloo(f, dist=BERN, num_samples=4, normalize=jnp.asarray(4.0, F32))
    g = jax.grad(plain, argnums=1)(jax.random.key(0), logits)
    gs = jax.grad(scaled, argnums=1)(jax.random.key(0), logits)
    np.testing.assert_allclose(gs * 4.0, g, rtol=1e-6)
    # The value is untouched.
    np.testing.assert_allclose(scaled(jax.random.key(1), logits), plain(jax.random.key(1), logits))


# ------------------------------------------------------------------------------ loss


def test_loss_value_and_gradients():
    f_values = jnp.asarray([1.0, 2.0, 6.0], F32)
    pred = jnp.asarray(2.0, F32)
    np.testing.assert_allclose(jaxgrad.baselines.loss(f_values, pred), (1 + 0 + 16) / 3)
    g_pred, g_f = jax.grad(jaxgrad.baselines.loss, argnums=(1, 0))(f_values, pred)
    np.testing.assert_allclose(g_pred, 2 * (2.0 - 3.0), rtol=1e-6)  # 2 (b - mean f)
    np.testing.assert_array_equal(g_f, 0.0)  # f values are targets, gradient stopped
    per_sample = jaxgrad.baselines.loss(f_values, jnp.asarray([1.0, 2.0, 5.0], F32))
    np.testing.assert_allclose(per_sample, 1 / 3)


# ----------------------------------------------------------------------- loo, optimal


def test_loo_and_optimal_match_brute_force():
    rng = np.random.default_rng(1)
    f = rng.normal(size=5)
    g = rng.normal(size=(5, 2, 3))
    loo = jaxgrad.baselines.loo(jnp.asarray(f))
    np.testing.assert_allclose(loo, [np.mean(np.delete(f, i)) for i in range(5)], rtol=1e-12)
    opt = jaxgrad.baselines.optimal(jnp.asarray(f), {"a": jnp.asarray(g)})["a"]
    for i in range(5):
        others = [j for j in range(5) if j != i]
        num = sum(f[j] * g[j] ** 2 for j in others)
        den = sum(g[j] ** 2 for j in others)
        np.testing.assert_allclose(opt[i], num / den, rtol=1e-10)
    # Where every other score is zero the leave-one-out mean of f is used.
    zero = jnp.asarray([[1.0], [0.0], [0.0]])
    b = jaxgrad.baselines.optimal(jnp.asarray([1.0, 2.0, 4.0]), zero)
    np.testing.assert_allclose(b[:, 0], [3.0, 1.0, 1.0])


def test_loo_and_optimal_errors():
    with pytest.raises(ValueError, match=r"loo: f_values must have shape \[N\] with N >= 2"):
        jaxgrad.baselines.loo(jnp.ones(1))
    with pytest.raises(ValueError, match="loo: f_values must have shape"):
        jaxgrad.baselines.loo(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="optimal: every leaf of scores must lead with"):
        jaxgrad.baselines.optimal(jnp.ones(3), jnp.ones((2, 4)))


# ----------------------------------------------------- a jitted step updating an EMA


def test_jitted_training_step_updates_ema_from_returned_f_values():
    f = lambda b, t: jnp.sum((b - t) ** 2)
    ema = jaxgrad.baselines.ema(decay=0.5)

    @jax.jit
    def step(key, logits, state, t):
        est = jaxgrad.score_function(
            f, dist=BERN, num_samples=3, baseline=state.value, return_f_values=True
        )
        grad, aux = jax.grad(est, argnums=1, has_aux=True)(key, logits, t)
        return logits - 0.5 * grad, ema.update(aux.f_values, state), aux

    logits, state = jnp.zeros(4, F32), ema.init()
    t = jnp.asarray(0.3, F32)
    seen = []
    for key in jax.random.split(jax.random.key(2), 6):
        previous = float(state.value)
        logits, state, aux = step(key, logits, state, t)
        # The baseline of this step was the state before it.
        np.testing.assert_allclose(np.asarray(aux.baseline), previous, rtol=1e-6)
        seen.append(np.asarray(aux.f_values))
    assert step._cache_size() == 1  # the baseline is traced: one compile
    np.testing.assert_allclose(float(state.value), _np_ema(seen, 0.5, True)[-1], rtol=1e-5)
    assert int(state.count) == 6


# ------------------------------------------- variance on the Bernoulli toy (p = 1/2)
#
# f(b) = (b - t)^2, b ~ Bernoulli(p), p = sigmoid(l). The score is
# d/dl log p(b) = b - p, so one-sample REINFORCE is g = f(b) (b - p):
#   g = (1 - t)^2 (1 - p) with probability p,   g = -t^2 p with probability 1 - p,
#   E g   = p (1 - p) ((1 - t)^2 - t^2) = p (1 - p) (1 - 2 t),
#   E g^2 = p (1 - p)^2 (1 - t)^4 + (1 - p) p^2 t^4.
# At p = 1/2:  Var g = ((1 - t)^4 + t^4) / 8 - (1 - 2 t)^2 / 16, so
#   t = 0.45:  (0.09150625 + 0.04100625) / 8 - 0.01 / 16 = 1.59390625e-2,
#   t = 0.499: (0.063001502001 + 0.062001498001) / 8 - 4e-6 / 16 = 1.5625125e-2.
# The other rows are enumerated over the 2^N joint outcomes by `exact_variance`.

REINFORCE_EXACT = {0.45: 1.59390625e-2, 0.499: 1.562512500025e-2}
TOY_KEYS = size(1_000_000, 250_000)
TOY_VARIANTS = {  # name -> (baseline, num_samples); "mean" is the oracle constant E f
    "none-1": (None, 1),
    "none-2": (None, 2),
    "mean-2": ("mean", 2),
    "loo-2": ("loo", 2),
    "optimal-2": ("optimal", 2),
}


def exact_variance(baseline, n, p, t):
    """Mean and variance of the N-sample estimate, by enumerating {0,1}^N (NumPy)."""
    mean_f = p * (1 - t) ** 2 + (1 - p) * t**2
    values, probs = [], []
    for bs in itertools.product([0.0, 1.0], repeat=n):
        b = np.array(bs)
        f = (b - t) ** 2
        s = b - p
        if baseline is None:
            c = np.zeros(n)
        elif baseline == "mean":
            c = np.full(n, mean_f)
        elif baseline == "loo":
            c = (f.sum() - f) / (n - 1)
        else:  # optimal, leave-one-out: sum_{j!=i} f_j s_j^2 / sum_{j!=i} s_j^2
            c = ((f * s * s).sum() - f * s * s) / ((s * s).sum() - s * s)
        values.append(np.mean((f - c) * s))
        probs.append(np.prod(np.where(b > 0, p, 1 - p)))
    values, probs = np.array(values), np.array(probs)
    mean = np.sum(probs * values)
    return mean, np.sum(probs * (values - mean) ** 2)


def test_exact_variance_enumeration_reproduces_the_closed_form():
    for t, var in REINFORCE_EXACT.items():
        mean, v = exact_variance(None, 1, 0.5, t)
        np.testing.assert_allclose(mean, 0.25 * (1 - 2 * t), rtol=1e-12)
        np.testing.assert_allclose(v, var, rtol=1e-12)
    # RLOO with two samples at t = 0.45 (the project's reference table): 6.25e-4.
    np.testing.assert_allclose(exact_variance("loo", 2, 0.5, 0.45)[1], 6.25e-4, rtol=1e-12)


def _toy_study(key, params, t, mean_f):
    """The sum of every variant's estimate, each on a clone of the SAME key (common random
    numbers); ``t`` and the oracle baseline are traced, so both ``t`` share one compile."""
    f = lambda b, t: jnp.sum((b - t) ** 2)
    names = sorted(TOY_VARIANTS)
    keys = [jax.random.clone(key) for _ in names[1:]] + [key]
    total = 0.0
    for name, k in zip(names, keys, strict=True):
        baseline, n = TOY_VARIANTS[name]
        est = jaxgrad.score_function(
            f, dist=BERN, num_samples=n, baseline=mean_f if baseline == "mean" else baseline
        )
        total = total + est(k, params[name], t)
    return total


@functools.cache
def toy_samples(t):
    """1e6 gradient estimates of every variant at p = 1/2 (logit 0)."""
    logits = {n: jnp.zeros(1, F32) for n in TOY_VARIANTS}
    mean_f = jnp.asarray(0.5 * (1 - t) ** 2 + 0.5 * t**2, F32)
    return grad_samples(
        _toy_study,
        jax.random.key(5),
        logits,
        jnp.asarray(t, F32),
        mean_f,
        num_keys=TOY_KEYS,
        batch_size=125_000,
    )


@pytest.mark.slow
@pytest.mark.xdist_group("baselines_toy")  # one worker reads the cached study
@pytest.mark.parametrize("t", [0.45, 0.499])
def test_reinforce_variance_matches_exact_at_1e6_keys(t):
    g = np.asarray(toy_samples(t)["none-1"][:, 0], np.float64)
    var = g.var(ddof=1)
    assert abs(var / REINFORCE_EXACT[t] - 1) < 0.02, (t, var, REINFORCE_EXACT[t])


@pytest.mark.slow
@pytest.mark.xdist_group("baselines_toy")  # one worker reads the cached study
@pytest.mark.parametrize("t", [0.45, 0.499])
def test_every_baseline_reduces_variance_with_common_random_numbers(t):
    samples = {k: np.asarray(v[:, 0], np.float64) for k, v in toy_samples(t).items()}
    var = {k: v.var(ddof=1) for k, v in samples.items()}
    for name in ("mean-2", "loo-2", "optimal-2"):
        assert var[name] < 0.5 * var["none-2"], (name, var)
    for name, (baseline, n) in TOY_VARIANTS.items():  # every row against enumeration
        mean, exact = exact_variance(baseline, n, 0.5, t)
        np.testing.assert_allclose(
            samples[name].mean(), mean, atol=5 * np.sqrt(exact / TOY_KEYS) + 1e-7
        )
        np.testing.assert_allclose(var[name], exact, rtol=0.02, atol=1e-9)


def test_jitted_step_with_learned_baseline_and_normalizer():
    """NVIL's recipe: a learned baseline trained by ``loss`` and variance normalization."""
    f = lambda b: 10.0 * jnp.sum((b - 0.3) ** 2)
    norm = jaxgrad.baselines.normalizer(decay=0.9)
    logits = jnp.asarray([0.5, -0.5, 0.0], F32)

    @jax.jit
    def step(key, phi, state):
        est = jaxgrad.score_function(
            f, dist=BERN, num_samples=8, baseline=phi, normalize=state.scale, return_f_values=True
        )
        grad, aux = jax.grad(est, argnums=1, has_aux=True)(key, logits)
        g_phi = jax.grad(jaxgrad.baselines.loss, argnums=1)(aux.f_values, phi)
        return grad, phi - 0.1 * g_phi, norm.update(aux.f_values - aux.baseline, state), aux

    phi, state = jnp.asarray(0.0, F32), norm.init()
    signals = []
    for key in jax.random.split(jax.random.key(3), 40):
        scale = float(state.scale)
        grad, phi, state, aux = step(key, phi, state)
        signals.append(np.asarray(aux.f_values - aux.baseline))
        # The gradient is the unnormalized estimate divided by the scale of that step.
        s = np.asarray(aux.samples) - np.asarray(jax.nn.sigmoid(logits))
        expected = np.mean((np.asarray(aux.f_values) - np.asarray(aux.baseline))[:, None] * s, 0)
        np.testing.assert_allclose(grad, expected / scale, rtol=1e-4, atol=1e-6)
    # The learned baseline converges to E[f] (trained on f values only) ...
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    mean_f = 10.0 * np.sum(p * 0.7**2 + (1 - p) * 0.3**2)
    assert abs(float(phi) - mean_f) < 0.1 * mean_f
    # ... and the scale tracks the spread of the centered signal, never below 1.
    assert float(state.scale) > 1.0
    m1 = _np_ema(signals, 0.9, True)[-1]
    m2 = _np_ema([x * x for x in signals], 0.9, True)[-1]
    np.testing.assert_allclose(float(state.scale), np.sqrt(m2 - m1 * m1), rtol=1e-3)
