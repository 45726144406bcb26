"""Tests for jaxgrad.diagnostics: sharded chunked sampling, streaming stats, exact oracles."""

import contextlib
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import size

import jaxgrad
from jaxgrad import diagnostics as dg

BERNOULLI = jaxgrad.dists.bernoulli


def toy_f(b, t):
    return jnp.sum((b - t) ** 2)


def _build(name, f, dist, num_samples=None):
    """A registry estimator, or a skip if its module is not there."""
    info = jaxgrad.ESTIMATORS[name]
    try:
        return info.build(f, dist=dist, num_samples=num_samples or info.num_samples)
    except ImportError as err:
        pytest.skip(f"estimator {name} is not available: {err}")


def _available(name):
    try:
        _build(name, toy_f, BERNOULLI)
    except pytest.skip.Exception:
        return False
    return True


# One estimator object per name, built once, so each compiles once for all cases.
_TOY = {}


def toy_estimator(name, num_samples=None):
    k = (name, num_samples)
    if k not in _TOY:
        _TOY[k] = _build(name, toy_f, BERNOULLI, num_samples)
    return _TOY[k]


def pathwise_normal(key, params):
    """A pathwise estimator built only on the sampler: sum((x - 1)^2), x ~ N(loc, scale^2)."""
    loc, scale = params
    return jnp.sum((jaxgrad.normal(key, loc, scale) - 1.0) ** 2)


def logit(p):
    return jnp.full((1,), np.log(p) - np.log1p(-p), jnp.float32)


# Exact variances of one estimate (REFERENCES.md; reinforce with 1 sample, rloo with 2).
VARIANCES = {
    (0.5, 0.499): {"reinforce": 1.5625e-2, "rloo": 2.5e-7, "arm": 8.3333e-8, "disarm": 0.0},
    (0.1, 0.499): {
        "reinforce": 5.6611e-3,
        "rloo": 1.4760e-7,
        "arm": 1.3027e-7,
        "disarm": 1.2960e-7,
    },
    (0.5, 0.45): {"reinforce": 1.5939e-2, "rloo": 6.25e-4, "arm": 2.0833e-4, "disarm": 0.0},
}
NUM_SAMPLES = {"reinforce": 1, "rloo": 2, "arm": 1, "disarm": 1}


@pytest.mark.parametrize("name", ["reinforce", "rloo", "arm", "disarm"])
@pytest.mark.slow
def test_grad_stats_reproduces_exact_toy_variances(name, key):
    est = toy_estimator(name, NUM_SAMPLES[name])
    for (p, t), table in VARIANCES.items():
        key, sub = jax.random.split(key)
        exact = p * (1 - p) * (1 - 2 * t)
        s = dg.grad_stats(
            est,
            sub,
            logit(p),
            jnp.float32(t),
            num_keys=size(500_000, 200_000),
            exact=jnp.full((1,), exact),
        )
        want = table[name]
        got = float(s.variance[0])
        if want == 0.0:
            assert got < 1e-12, (p, t, got)
        else:
            assert abs(got / want - 1) < 0.02, (p, t, got, want)
        # unbiased: the mean is within 5 standard errors (plus float32 round-off)
        assert abs(float(s.bias[0])) <= 5 * float(s.stderr[0]) + 1e-7, (p, t, s)


def test_grad_stats_rejects_a_biased_estimator(key):
    """Power check: the same figures expose straight-through's bias at p=0.1."""
    est = toy_estimator("straight-through")
    p, t = 0.1, 0.45
    s = dg.grad_stats(
        est,
        key,
        logit(p),
        jnp.float32(t),
        num_keys=100_000,
        exact=jnp.full((1,), p * (1 - p) * (1 - 2 * t)),
    )
    assert abs(float(s.bias[0])) > 5 * float(s.stderr[0])


def _reference_samples(est, key, params, *args, num_keys, batch_size=50):
    """The original definition: lax.map over split keys."""
    keys = jax.random.split(key, num_keys)
    return jax.lax.map(
        lambda k: jax.grad(est, argnums=1)(k, params, *args), keys, batch_size=batch_size
    )


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.bitwise
def test_grad_samples_identical_for_any_chunking_and_devices(key):
    assert jax.device_count() == 8  # the conftest forces 8 CPU devices
    params = (jnp.array([0.5, -1.0], jnp.float32), jnp.array([1.0, 2.0], jnp.float32))
    n = 1001  # not a multiple of the chunk size nor of the number of devices
    ref = _reference_samples(pathwise_normal, jax.random.clone(key), params, num_keys=n)
    one = jax.devices()[:1]
    # unchunked on 8 devices, chunked on 8 devices, chunked on 1 device
    for batch_size, devices in [(None, None), (7, None), (7, one)]:
        g = dg.grad_samples(
            pathwise_normal, key, params, num_keys=n, batch_size=batch_size, devices=devices
        )
        assert g[0].shape == (n, 2)
        _equal(g, ref)


def test_grad_samples_legacy_key_and_registry_estimator():
    name = next(n for n in ("reinforce", "disarm", "arm") if _available(n))
    est = toy_estimator(name, NUM_SAMPLES[name])
    key = jax.random.PRNGKey(7)
    args = (logit(0.3), jnp.float32(0.45))
    a = dg.grad_samples(est, key, *args, num_keys=333, batch_size=16)
    _equal(a, _reference_samples(est, key, *args, num_keys=333, batch_size=16))


@pytest.mark.bitwise
def test_grad_stats_sharded_equals_single_device_and_matches_samples(key):
    params = (jnp.array([0.5, -1.0], jnp.float32), jnp.array([1.0, 2.0], jnp.float32))
    n = 20_011
    exact = (2 * (params[0] - 1.0), 2 * params[1])
    many = dg.grad_stats(pathwise_normal, key, params, num_keys=n, batch_size=500, exact=exact)
    single = dg.grad_stats(
        pathwise_normal,
        key,
        params,
        num_keys=n,
        batch_size=500,
        exact=exact,
        devices=jax.devices()[:1],
    )
    assert many.num_devices == 8 and single.num_devices == 1
    for field in ("mean", "variance", "stderr", "snr", "bias", "mse"):
        _equal(getattr(many, field), getattr(single, field))
    unchunked = dg.grad_stats(
        pathwise_normal,
        key,
        params,
        num_keys=n,
        batch_size=n,
        exact=exact,
        devices=jax.devices()[:1],
    )
    samples = np.asarray(
        jnp.concatenate(dg.grad_samples(pathwise_normal, key, params, num_keys=n), axis=1),
        np.float64,
    )
    for s in (many, unchunked):
        np.testing.assert_allclose(s.flat("mean"), samples.mean(0), rtol=1e-12)
        np.testing.assert_allclose(s.flat("variance"), samples.var(0, ddof=1), rtol=1e-10)
        mse = np.mean((samples - dg.GradStats._flat(exact)) ** 2, axis=0)
        np.testing.assert_allclose(s.flat("mse"), mse, rtol=1e-10)
    assert isinstance(many.mean, tuple) and many.mean[0].shape == (2,)
    _ = dg.assert_unbiased(samples, dg.GradStats._flat(exact))


def test_grad_stats_summaries_progress_and_timing(key):
    params = (jnp.array([0.5], jnp.float32), jnp.array([1.0], jnp.float32))
    calls = []
    s = dg.grad_stats(
        pathwise_normal,
        key,
        params,
        num_keys=5000,
        batch_size=128,
        exact=(jnp.array([-1.0]), jnp.array([2.0])),
        f_evals=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (5000, 5000)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert s.time_per_estimate > 0 and s.compile_time > 0 and s.batch_size == 128
    assert s.num_coordinates == 2
    assert s.total_variance == pytest.approx(float(s.variance[0][0] + s.variance[1][0]))
    assert s.efficiency == pytest.approx(s.total_mse * 1)
    assert s.variance_x_time == pytest.approx(s.total_variance * s.time_per_estimate)
    assert s.snr_norm == pytest.approx(np.linalg.norm(s.flat("mean")) / np.sqrt(s.total_variance))
    # Pathwise: d/dloc = 2 (x - 1), d/dscale = 2 (x - 1) eps with x - 1 = loc - 1 + scale eps,
    # so the variances are 4 scale^2 = 4 and 4 (loc - 1)^2 + 8 scale^2 = 9.
    np.testing.assert_allclose(s.flat("variance"), [4.0, 9.0], rtol=0.1)


def test_grad_stats_deterministic_estimate_has_infinite_snr(key):
    est = lambda k, p: jnp.sum(p**2)  # noqa: E731 - no randomness at all
    s = dg.grad_stats(est, key, jnp.array([1.0, 0.0], jnp.float32), num_keys=10)
    assert s.flat("variance").tolist() == [0.0, 0.0]
    assert np.isinf(s.flat("snr")[0]) and np.isnan(s.flat("snr")[1])
    assert s.bias is None and s.mse is None and s.total_mse is None and s.bias_norm is None
    assert np.isnan(s.efficiency)  # f_evals unknown


def test_argument_errors(key):
    p = jnp.zeros(1, jnp.float32)
    est = toy_estimator("straight-through")
    t = jnp.float32(0.45)
    with pytest.raises(TypeError, match="grad_samples: key"):
        dg.grad_samples(est, 0, p, t, num_keys=4)
    key, k1, k2 = jax.random.split(key, 3)
    with pytest.raises(ValueError, match="grad_samples accepts a single key"):
        dg.grad_samples(est, jax.random.split(k1, 2), p, t, num_keys=4)
    with pytest.raises(ValueError, match="grad_samples: num_keys must be at least 1, got 0"):
        dg.grad_samples(est, key, p, t, num_keys=0)
    with pytest.raises(ValueError, match="num_keys must be below 2"):
        dg.grad_samples(est, key, p, t, num_keys=2**32)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        dg.grad_samples(est, key, p, t, num_keys=4, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be a positive int"):
        dg.grad_stats(est, key, p, t, num_keys=4, batch_size=2.0)
    with pytest.raises(ValueError, match="devices must name at least one device"):
        dg.grad_samples(est, key, p, t, num_keys=4, devices=[])
    with pytest.raises(TypeError, match="grad_stats: key"):
        dg.grad_stats(est, "key", p, t, num_keys=4)
    with pytest.raises(ValueError, match="grad_stats accepts a single key"):
        dg.grad_stats(est, jax.random.split(k2, 3), p, t, num_keys=4)
    with pytest.raises(ValueError, match="grad_stats: num_keys must be at least 2.*two estimates"):
        dg.grad_stats(est, key, p, t, num_keys=1)
    with pytest.raises(TypeError, match="grad_stats: num_keys must be a Python int"):
        dg.grad_stats(est, key, p, t, num_keys=10.0)
    with pytest.raises(ValueError, match="exact must be a pytree like params"):
        dg.grad_stats(est, key, p, t, num_keys=4, exact=jnp.zeros(3))


# --- exact oracles -----------------------------------------------------------


def test_exact_grad_bernoulli_toy_closed_form():
    for p, t in [(0.5, 0.45), (0.1, 0.499), (0.83, 0.2)]:
        logit64 = jnp.full((1,), np.log(p) - np.log1p(-p), jnp.float64)
        g = dg.exact_grad(toy_f, logit64, t, dist=BERNOULLI)
        assert float(g[0]) == pytest.approx(p * (1 - p) * (1 - 2 * t), rel=1e-9)


def test_exact_grad_categorical_matches_hand_sum(rng):
    logits = jnp.asarray(rng.normal(size=(2, 3)), jnp.float64)
    w = jnp.asarray(rng.normal(size=(2, 3)), jnp.float64)
    f = lambda x: jnp.sum(x * w) ** 2  # noqa: E731 - couples the two variables

    def expectation(l):
        pi = jax.nn.softmax(l, axis=-1)
        return sum(
            pi[0, i] * pi[1, j] * (w[0, i] + w[1, j]) ** 2 for i in range(3) for j in range(3)
        )

    np.testing.assert_allclose(
        dg.exact_grad(f, logits, dist=jaxgrad.dists.categorical),
        jax.jit(jax.grad(expectation))(logits),
        rtol=1e-10,
    )


def test_exact_grad_errors():
    with pytest.raises(TypeError, match="exact_grad: dist must be a discrete spec"):
        dg.exact_grad(toy_f, (0.0, 1.0), 0.5, dist=jaxgrad.dists.normal)
    with pytest.raises(ValueError, match="MAX_SUPPORT_SIZE"):
        dg.exact_grad(toy_f, jnp.zeros(17, jnp.float32), 0.5, dist=BERNOULLI)


@pytest.mark.parametrize("function", dg.GAUSSIAN_TEST_FUNCTIONS)
def test_gaussian_closed_forms_against_quadrature(function):
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E over N(0,1)
    weights = weights / np.sqrt(2 * np.pi)
    eps = jnp.asarray(nodes, jnp.float64)
    nodes = np.asarray(nodes)
    for k in (0.5, 1.0, 3.0):
        f = dg.gaussian_test_function(function, k)
        for mu, sigma in [(0.5, 1.0), (-1.3, 0.4), (2.0, 0.7)]:
            x = mu + sigma * eps
            # pathwise: d/dmu E f = E f'(x), d/dsigma E f = E f'(x) eps
            df = np.asarray(jax.vmap(jax.grad(lambda v, f=f: f(v[None])))(x))
            quad = (np.sum(weights * df), np.sum(weights * df * nodes))
            value = np.sum(weights * np.asarray(jax.vmap(lambda v, f=f: f(v[None]))(x)))
            got = dg.gaussian_exact_grad(function, jnp.float64(mu), jnp.float64(sigma), k=k)
            np.testing.assert_allclose([float(got[0]), float(got[1])], quad, atol=1e-9)
            e = dg.gaussian_expectation(function, jnp.float64(mu), jnp.float64(sigma), k=k)
            assert float(e) == pytest.approx(value, abs=1e-9)


def test_gaussian_closed_forms_sum_over_coordinates_and_errors():
    loc = jnp.array([0.5, -1.0], jnp.float64)
    scale = jnp.array([1.0, 0.3], jnp.float64)
    for function in dg.GAUSSIAN_TEST_FUNCTIONS:
        auto = jax.jit(
            jax.grad(
                lambda m, s, fn=function: dg.gaussian_expectation(fn, m, s, k=2.0), argnums=(0, 1)
            )
        )(loc, scale)
        np.testing.assert_allclose(
            dg.gaussian_exact_grad(function, loc, scale, k=2.0), auto, rtol=1e-12
        )
        # Per-coordinate constants k_i broadcast with loc and scale (one mu, sigma for both).
        ks = jnp.array([0.5, 2.0], jnp.float64)
        per = jax.grad(
            lambda m, s, fn=function, ks=ks: dg.gaussian_expectation(fn, m, s, k=ks), (0, 1)
        )
        got = dg.gaussian_exact_grad(function, loc[0], scale[0], k=ks)
        assert got[0].shape == got[1].shape == (2,)
        np.testing.assert_allclose(got, per(loc[:1].repeat(2), scale[:1].repeat(2)), rtol=1e-12)
    for fn in (dg.gaussian_test_function, dg.gaussian_exact_grad, dg.gaussian_expectation):
        args = ("sin", 1.0) if fn is dg.gaussian_test_function else ("sin", 0.0, 1.0)
        kwargs = {} if fn is dg.gaussian_test_function else {"k": 1.0}
        with pytest.raises(ValueError, match="function must be one of square, exp, cos"):
            fn(*args, **kwargs)


def test_gaussian_closed_form_against_pathwise_estimates(key):
    """Monte Carlo agreement with z = 5, and the same test rejects a wrong formula."""
    params = (jnp.array([0.5], jnp.float32), jnp.array([1.0], jnp.float32))
    f = dg.gaussian_test_function("cos", 2.0)
    est = lambda k, p: f(jaxgrad.normal(k, p[0], p[1]))  # noqa: E731
    samples = dg.grad_samples(est, key, params, num_keys=100_000)
    exact = dg.gaussian_exact_grad("cos", *params, k=2.0)
    dg.assert_unbiased(samples, exact)
    wrong = (exact[0], exact[1] * 1.1)  # 10% off in d/dsigma
    with pytest.raises(AssertionError, match="biased"):
        dg.assert_unbiased(samples, wrong)


def test_pathwise_registry_estimator_agrees_with_closed_form(key):
    """The registry's pathwise estimator (if present) on the Gaussian problem."""
    if importlib.util.find_spec("jaxgrad._src.estimators.pathwise") is None:
        pytest.skip("jaxgrad._src.estimators.pathwise is not available yet")
    params = (jnp.array([0.5], jnp.float32), jnp.array([1.0], jnp.float32))
    f = dg.gaussian_test_function("exp", 1.0)
    est = _build("pathwise", f, jaxgrad.dists.normal, 1)
    exact = dg.gaussian_exact_grad("exp", *params, k=1.0)
    s = dg.grad_stats(est, key, params, num_keys=100_000, exact=exact)
    assert np.all(np.abs(s.flat("bias")) < 5 * s.flat("stderr") + 1e-6)


# --- studies of your own model ----------------------------------------------

_W = jnp.array([1.0, 0.5, -0.8], jnp.float32)
STUDY_LOGITS = jnp.array([-2.0, 0.5, 1.5], jnp.float32)


def coupled_f(b):
    """A non-separable cost of three coins: no estimator is exact on it."""
    return (jnp.sum(b * _W) - 0.7) ** 2


# Built once, so both studies below reuse the compiled programs.
_STUDY_ESTIMATORS = {
    name: _build(name, coupled_f, BERNOULLI) for name in ("reinforce", "rloo", "disarm")
}
_STUDY_ESTIMATORS["straight-through"] = _build("straight-through", coupled_f, BERNOULLI)


def _broken(key, logits):
    """A declared-unbiased estimator whose gradient is NaN."""
    del key
    return jnp.sum(logits) * jnp.float32(jnp.nan)


def _pairs():
    meta = {
        "reinforce": (True, 1),
        "rloo": (True, 2),
        "disarm": (True, 2),
        "straight-through": (False, 1),
    }
    pairs = [(n, _STUDY_ESTIMATORS[n], {"unbiased": u, "f_evals": c}) for n, (u, c) in meta.items()]
    return [*pairs, ("broken", _broken, {"unbiased": True, "f_evals": 1})]


STUDY_GROUP = pytest.mark.xdist_group("diagnostics_study")  # compiled programs on one worker


def _pooled_study():
    return dg.study(_pairs(), coupled_f, STUDY_LOGITS, num_keys=20_000, key=3, batch_size=4096)


def _hand_made_study():
    """A Study built without computing anything: two rows, one of them NaN."""

    def stats(mean, var):
        mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        se = np.sqrt(var / 100)
        return dg.GradStats(100, mean, var, se, np.abs(mean) / np.sqrt(var), f_evals=1)

    rows = (
        dg.StudyResult("a", stats([0.1, 0.2, 0.3], [1.0, 1.0, 1.0]), True),
        dg.StudyResult("b", stats([np.nan] * 3, [np.nan] * 3), True),
    )
    ref = dg.pooled_reference(rows)
    return dg.Study(
        name="hand-made",
        description="",
        variable="bernoulli",
        event_shape=(3,),
        coordinates=("x", "y", "z"),
        results=rows,
        skipped=(),
        reference=ref,
        settings={"num_keys": 100},
    )


@STUDY_GROUP
def test_study_without_exact_gradient_pools_the_unbiased_estimators():
    s = _pooled_study()
    exact = np.asarray(dg.exact_grad(coupled_f, STUDY_LOGITS, dist=BERNOULLI), np.float64)
    ref = s.reference
    assert ref.kind == "pooled" and ref.estimators == ("reinforce", "rloo", "disarm")
    # The pooled reference is consistent with the exact gradient (z-test on its own error).
    assert np.all(np.abs(ref.gradient - exact) <= 5 * ref.stderr), (ref.gradient, exact)
    by = {r.name: r for r in s.results}
    ses = [by[n].stats.flat("stderr") for n in ref.estimators]
    np.testing.assert_allclose(ref.stderr, 1 / np.sqrt(sum(1 / se**2 for se in ses)), rtol=1e-12)
    for name in ref.estimators:  # pooled rows: the bias's variance is se^2 - se_ref^2
        st = by[name].stats
        np.testing.assert_allclose(
            st.flat("bias_stderr") ** 2, st.flat("stderr") ** 2 - ref.stderr**2, rtol=1e-9
        )
        assert np.all(np.abs(st.flat("bias")) <= 5 * st.flat("bias_stderr"))
    st = by["straight-through"].stats  # outside the pool: se^2 + se_ref^2
    np.testing.assert_allclose(
        st.flat("bias_stderr") ** 2, st.flat("stderr") ** 2 + ref.stderr**2, rtol=1e-9
    )
    # Power: the same test finds straight-through's bias, which the ranking pays for.
    assert np.any(np.abs(st.flat("bias")) > 5 * st.flat("bias_stderr"))
    assert st.total_mse > st.total_variance + 0.5 * st.bias_norm**2
    effs = [r.stats.efficiency for r in s.results]
    assert [e for e in effs if not np.isnan(e)] == sorted(e for e in effs if not np.isnan(e))
    assert s.results[-1].name == "broken"  # NaN: ranked last, and not in the reference
    # The table says which reference; NaN shows as nan, not as "-" (not available).
    table = s.table()
    lines = table.splitlines()
    assert lines[1].startswith("reference: no exact gradient; the inverse-variance weighted mean")
    assert "reference gradient: [" in table and "+-se" in table
    row = next(line for line in lines if line.startswith("broken "))
    assert row.split()[1:6] == ["yes", "nan", "nan", "nan", "nan"]
    rloo = next(line for line in lines if line.startswith("rloo "))
    assert "nan" not in rloo and " - " not in rloo


@STUDY_GROUP
def test_study_with_exact_gradient_and_user_estimators_reuses_one_implementation():
    exact = dg.exact_grad(coupled_f, STUDY_LOGITS, dist=BERNOULLI)
    s = dg.study(
        _pairs()[:4],
        coupled_f,
        STUDY_LOGITS,
        exact=exact,
        num_keys=20_000,
        key=3,
        batch_size=4096,
        name="coins",
        description="three coupled coins",
    )
    assert s.reference.kind == "exact" and s.table().splitlines()[1] == (
        "reference: the exact gradient"
    )
    for r in s.results:
        np.testing.assert_array_equal(
            r.stats.flat("bias"), r.stats.flat("mean") - np.asarray(exact, np.float64)
        )
        np.testing.assert_array_equal(r.stats.flat("bias_stderr"), r.stats.flat("stderr"))
    st = next(r for r in s.results if r.name == "straight-through").stats
    assert np.any(np.abs(st.flat("bias")) > 5 * st.flat("stderr"))


def test_write_study_is_atomic_and_never_mixes_studies(tmp_path, monkeypatch):
    pooled_study = _hand_made_study()
    out = tmp_path / "o"
    paths = pooled_study.write(str(out), plot=False)
    assert "replaced" not in paths and set(paths) == {"csv", "coordinates", "json"}
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    (out / "study.png").write_bytes(b"an earlier study's plot")

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError, match="No space left"):
        pooled_study.write(str(out), plot=False)
    after = {n: (out / n).read_bytes() for n in os.listdir(out)}
    assert after == {**before, "study.png": b"an earlier study's plot"}  # untouched, no temp files
    monkeypatch.undo()
    paths = pooled_study.write(str(out), plot=False)
    assert paths["replaced"] == "yes" and sorted(os.listdir(out)) == sorted(before)
    doc = json.loads((out / "study.json").read_text())
    assert doc["reference"]["kind"] == "pooled" and doc["partial"] is False
    assert doc["results"][-1]["coordinates"]["mean"] == [None, None, None]  # NaN -> null


def test_study_argument_errors():
    f, p = coupled_f, STUDY_LOGITS
    est = _STUDY_ESTIMATORS["disarm"]
    cases = [
        (TypeError, "study: estimators must be a list", dict(estimators="disarm")),
        (ValueError, "study: unknown estimator 'nope'", dict(estimators=["nope"])),
        (ValueError, "does not apply to bernoulli variables", dict(estimators=["pathwise"])),
        (ValueError, "study: estimators is empty", dict(estimators=[])),
        (ValueError, "'disarm' is listed twice", dict(estimators=["disarm", ("disarm", est)])),
        (TypeError, "each estimator must be a registry name", dict(estimators=[("a", 1)])),
        (ValueError, "may only have the keys", dict(estimators=[("a", est, {"cost": 2})])),
        (ValueError, "f_evals of estimator 'a'", dict(estimators=[("a", est, {"f_evals": 0})])),
        (ValueError, "study: temperature must be positive", dict(temperature=-1.0)),
        (ValueError, "study: on_error must be", dict(on_error="ignore")),
        (ValueError, "study: num_keys must be at least 2", dict(num_keys=1)),
        (ValueError, "study: exact must be a pytree like params", dict(exact=jnp.zeros(4))),
        (ValueError, "coordinate_names has 1 labels", dict(coordinate_names=["a"])),
        (ValueError, "study: key as an int seed must fit", dict(key=2**63)),
    ]
    for err, message, kwargs in cases:
        kwargs = {"estimators": ["disarm"], "dist": BERNOULLI, **kwargs}
        with pytest.raises(err, match=message):
            dg.study(kwargs.pop("estimators"), f, p, **kwargs)


# --- one compiled program --------------------------------------------------


def test_grad_stats_is_one_program_for_every_host_step_and_nothing_new_on_a_rerun(key):
    """A study compiles one program, whatever the number of host steps; a rerun compiles
    and traces nothing (counted from JAX's monitoring events)."""
    from jaxgrad._src.compile_cache import CompileCounter

    est = jaxgrad.disarm(lambda b: jnp.sum((b - 0.45) ** 2))  # a fresh function: not yet compiled
    p = jnp.array([0.1, -0.3, 0.6])
    steps = []
    with CompileCounter() as first:
        s1 = dg.grad_stats(est, key, p, num_keys=2000, progress=lambda done, n: steps.append(done))
    assert len(steps) >= 3 and steps[-1] == 2000  # several host steps ...
    assert first.programs == 1, first  # ... of one compiled program
    assert first.traces == 2, first  # the program, and the estimate sizing the chunks
    with CompileCounter() as second:
        s2 = dg.grad_stats(est, key, p, num_keys=2000)
    assert (second.programs, second.traces) == (0, 0), second
    np.testing.assert_array_equal(s1.variance, s2.variance)


# --- statistics independent of the chunking --------------------------------


def _float32_reinforce():
    return toy_estimator("reinforce", 1)


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_grad_stats_bit_identical_for_any_batch_size_and_device_count(x64, key):
    """The same figures, to the last bit, for every chunking and device count (float32 est)."""
    est = _float32_reinforce()
    params, t = logit(0.3), jnp.float32(0.45)
    exact = jnp.full((1,), 0.3 * 0.7 * 0.1)
    one = jax.devices()[:1]
    n = 5003  # a multiple of neither the chunk nor the device count
    context = contextlib.nullcontext() if x64 else jax.enable_x64(False)
    with context:
        chunkings = [(16, None), (1000, one)]  # 16 keys a chunk on 8 devices; 1024 on 1
        if not x64:  # the CLI's mode: more chunkings
            chunkings += [(100, None), (None, one), (7, None)]
        runs = [
            dg.grad_stats(est, key, params, t, num_keys=n, batch_size=b, exact=exact, devices=d)
            for b, d in chunkings
        ]
    assert runs[0].num_devices == 8 and runs[1].num_devices == 1
    # Widths are powers of two (chunks are aligned subtrees of the summation tree).
    assert {r.batch_size for r in runs} == ({16, 1024} if x64 else {8, 16, 128, 1024})
    for r in runs[1:]:
        for field in ("mean", "variance", "stderr", "snr", "bias", "mse"):
            np.testing.assert_array_equal(r.flat(field), runs[0].flat(field), err_msg=field)
    # And accurate: against float64 statistics of the same estimates.
    g = np.asarray(dg.grad_samples(est, key, params, t, num_keys=n), np.float64)
    rtol = 1e-12 if x64 else 1e-6  # float32 pairwise sums on the device: log2(N) roundings
    np.testing.assert_allclose(runs[0].flat("mean"), g.mean(0), rtol=rtol)
    np.testing.assert_allclose(runs[0].flat("variance"), g.var(0, ddof=1), rtol=1000 * rtol)
