"""The score-function estimator and its baselines: formulas, unbiasedness, contract.

Deterministic checks compare each option with its formula written out on the
same samples (``f(x) - b`` times the score ``x - sigmoid(l)``); statistical
checks compare the mean of ``N`` independent estimates with the exact gradient
(enumeration for 10 Bernoullis and 3 categoricals with 4 classes, closed forms
for Gaussians) at 5 standard errors, and the same assertion rejects
straight-through (power).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import grad_samples_of_many, never_differentiated

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased, gaussian_exact_grad, grad_samples

F32 = jnp.float32
BERN, CAT, NORMAL = jaxgrad.dists.bernoulli, jaxgrad.dists.categorical, jaxgrad.dists.normal
NUM_KEYS = 20_000

# ----------------------------------------------------------------------------- problems


def f_bern(b, w):
    """A non-linear cost of 10 coins with its own parameters ``w``."""
    return (jnp.sum(w * b) - 1.0) ** 2 + b[0] * b[1] + jnp.sin(jnp.sum(b[5:]))


def f_cat(x, w):
    """A non-linear cost of 3 one-hot categoricals with 4 classes."""
    return (jnp.sum(x * w) - 0.5) ** 2 + 2.0 * x[0, 1] * x[2, 3]


def f_normal(x, c):
    """Coordinates 0, 1: ``c0 x^2``; coordinates 2, 3: ``c1 cos x`` (one closed form each)."""
    return c[0] * jnp.sum(x[:2] ** 2) + c[1] * jnp.sum(jnp.cos(x[2:]))


BERN_LOGITS = jnp.asarray(np.linspace(-1.5, 1.2, 10), F32)
BERN_W = jnp.asarray(np.linspace(0.5, -0.4, 10), F32)
CAT_LOGITS = jnp.asarray(np.linspace(-1.0, 1.0, 12).reshape(3, 4) ** 2, F32)
CAT_W = jnp.asarray(np.linspace(-0.8, 0.9, 12).reshape(3, 4), F32)
NORMAL_PARAMS = (jnp.asarray([0.3, -0.7, 1.1, -0.4], F32), jnp.asarray([0.8, 1.2, 0.5, 1.5], F32))
NORMAL_C = jnp.asarray([0.7, 1.3], F32)

PROBLEMS = {
    "bernoulli": (BERN, f_bern, BERN_LOGITS, BERN_W),
    "categorical": (CAT, f_cat, CAT_LOGITS, CAT_W),
}


def exact_grads(dist, f, params, w):
    """The exact gradient in ``(params, w)`` by enumeration (jaxgrad.exact + jax.grad)."""
    est = jaxgrad.exact(f, dist=dist)
    return jax.grad(lambda p: est(jax.random.key(0), p[0], p[1]))((params, w))


def joint(est):
    """``est`` with ``(params, w)`` as one pytree, so grad_samples differentiates both."""
    return lambda key, pw: est(key, pw[0], pw[1])


def normal_exact(params, c):
    """Exact gradients of ``E f_normal`` in ``((loc, scale), c)``, in closed form.

    d/dmu E[x^2] = 2 mu, d/dsigma E[x^2] = 2 sigma;
    d/dmu E[cos x] = -sin(mu) exp(-sigma^2/2), d/dsigma E[cos x] = -sigma cos(mu) exp(-sigma^2/2).
    """
    loc, scale = (np.asarray(p, np.float64) for p in params)
    c0, c1 = np.asarray(c, np.float64)
    damp = np.exp(-0.5 * scale[2:] ** 2)
    g_loc = np.concatenate([c0 * 2 * loc[:2], -c1 * np.sin(loc[2:]) * damp])
    g_scale = np.concatenate([c0 * 2 * scale[:2], -c1 * scale[2:] * np.cos(loc[2:]) * damp])
    g_c = np.array([np.sum(loc[:2] ** 2 + scale[:2] ** 2), np.sum(np.cos(loc[2:]) * damp)])
    # The same values from the library's closed forms (an independent transcription).
    sq = gaussian_exact_grad("square", loc[:2], scale[:2], k=0.0)
    cos = gaussian_exact_grad("cos", loc[2:], scale[2:], k=1.0)
    np.testing.assert_allclose(g_loc, np.concatenate([c0 * sq[0], c1 * cos[0]]), rtol=1e-6)
    np.testing.assert_allclose(g_scale, np.concatenate([c0 * sq[1], c1 * cos[1]]), rtol=1e-6)
    return (g_loc, g_scale), g_c


# Every baseline option: (baseline, normalize, num_samples).
OPTIONS = {
    "none": (None, None, 1),
    "constant": (jnp.asarray(0.7, F32), None, 1),
    "constant-per-sample": (jnp.asarray([0.2, 0.9, 1.5], F32), None, 3),
    "loo": ("loo", None, 4),
    "optimal": ("optimal", None, 4),
    "normalized-loo": ("loo", jnp.asarray(2.0, F32), 4),
}


def build(f, dist, option):
    baseline, normalize, n = OPTIONS[option]
    return jaxgrad.score_function(
        f, dist=dist, num_samples=n, baseline=baseline, normalize=normalize
    )


def scale_of(option):
    normalize = OPTIONS[option][1]
    return 1.0 if normalize is None else float(normalize)


# ------------------------------------------------------------------------ unbiasedness
#
# Every (problem, option) pair, and straight-through for the power check, runs in
# ONE compiled program: the estimates of independent copies of the parameters are
# summed, so the gradient with respect to copy ``k`` is estimator ``k``'s estimate
# (each on its own key). One compile instead of 25 keeps the file fast.


def _straight_through(f):
    st = getattr(jaxgrad, "straight_through_bernoulli", None)
    if st is None:  # a local ST rule: forward the sample, backward sigmoid(l)

        def st(key, logits):
            p = jax.nn.sigmoid(logits)
            b = BERN.sample(key, jax.lax.stop_gradient(logits))
            return b + p - jax.lax.stop_gradient(p)

    return lambda key, pw: f(st(key, pw[0]), pw[1])


# Every option on the 10 coins (a per-sample array baseline takes the constant's code
# path: it is checked against its formula below); both code paths (the DiCE surrogate,
# with or without a baseline, and the per-coordinate "optimal") on categoricals and
# Gaussians. Each entry costs about a second of compilation.
STUDY_OPTIONS = {
    "bernoulli": ["constant", "loo", "none", "normalized-loo", "optimal"],
    "categorical": ["loo", "optimal"],
    "normal": ["none", "optimal"],
}
STUDY_CASES = [(problem, option) for problem in STUDY_OPTIONS for option in STUDY_OPTIONS[problem]]


def _entries():
    """name -> (est(key, params), params)."""
    out = {}
    for problem, option in STUDY_CASES:
        if problem == "normal":
            est, params = build(f_normal, NORMAL, option), (NORMAL_PARAMS, NORMAL_C)
        else:
            dist, f, logits, w = PROBLEMS[problem]
            est, params = build(f, dist, option), (logits, w)
        out[f"{problem}/{option}"] = (joint(est), params)
    out["bernoulli/straight-through"] = (_straight_through(f_bern), (BERN_LOGITS, BERN_W))
    return out


@functools.cache
def study():
    """Gradient samples of every entry, ``NUM_KEYS`` each, from one program."""
    entries = _entries()
    return grad_samples_of_many(
        {n: e[0] for n, e in entries.items()},
        {n: e[1] for n, e in entries.items()},
        jax.random.key(11),
        num_keys=NUM_KEYS,
        batch_size=2_500,
    )


# Tests that read one cached study run on one xdist worker (``--dist loadgroup``), so
# that the study is compiled and run once, not once per worker.
STUDY_GROUP = pytest.mark.xdist_group("score_function_study")
FORMULA_GROUP = pytest.mark.xdist_group("score_function_formulas")


@STUDY_GROUP
@pytest.mark.parametrize(("problem", "option"), [c for c in STUDY_CASES if c[0] != "normal"])
def test_unbiased_discrete(problem, option):
    dist, f, params, w = PROBLEMS[problem]
    g_params, g_w = study()[f"{problem}/{option}"]
    s = scale_of(option)
    # The gradient in params is divided by the normalizer's scale; in w it is pathwise.
    assert_unbiased((g_params * s, g_w), exact_grads(dist, f, params, w))


@STUDY_GROUP
@pytest.mark.parametrize("option", STUDY_OPTIONS["normal"])
def test_unbiased_gaussian_closed_forms(option):
    (g_loc, g_scale), g_c = study()[f"normal/{option}"]
    s = scale_of(option)
    assert_unbiased(((g_loc * s, g_scale * s), g_c), normal_exact(NORMAL_PARAMS, NORMAL_C))


@STUDY_GROUP
def test_power_rejects_straight_through():
    samples = study()["bernoulli/straight-through"]
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, exact_grads(BERN, f_bern, BERN_LOGITS, BERN_W))


# --------------------------------------------------------------- formulas on the same noise


def _manual_samples(key, logits, n):
    """The estimator's samples: ``n`` joint draws are one draw of broadcast logits."""
    return BERN.sample(key, jnp.broadcast_to(logits, (n, *logits.shape)))


FORMULA_KEYS = lambda: jax.random.split(jax.random.key(3), len(OPTIONS))  # noqa: E731


@functools.cache
def formulas():
    """For every option, on one key each: value, d/dlogits, d/dw, and d/dw via a closure."""

    @jax.jit
    def run(keys, keys_again, w):
        out = {}
        for i, option in enumerate(sorted(OPTIONS)):
            est = build(f_bern, BERN, option)
            value, (g_logits, g_w) = jax.value_and_grad(est, argnums=(1, 2))(
                keys[i], BERN_LOGITS, w
            )

            def through_closure(w, option=option, key=keys_again[i]):
                return build(lambda b: f_bern(b, w), BERN, option)(key, BERN_LOGITS)

            out[option] = value, g_logits, g_w, jax.grad(through_closure)(w)
        return out

    return run(FORMULA_KEYS(), FORMULA_KEYS(), BERN_W)


@FORMULA_GROUP
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_value_and_gradient_formula(option):
    baseline, normalize, n = OPTIONS[option]
    value, grad, _, _ = formulas()[option]
    key = FORMULA_KEYS()[sorted(OPTIONS).index(option)]
    xs = np.asarray(_manual_samples(key, BERN_LOGITS, n), np.float64)
    f = np.asarray(jax.vmap(f_bern, in_axes=(0, None))(jnp.asarray(xs, F32), BERN_W), np.float64)
    score = xs - 1.0 / (1.0 + np.exp(-np.asarray(BERN_LOGITS, np.float64)))  # [n, D]
    if baseline is None:
        b = np.zeros((n, 1))
    elif isinstance(baseline, str) and baseline == "loo":
        b = np.array([(f.sum() - f[i]) / (n - 1) for i in range(n)])[:, None]
    elif isinstance(baseline, str):  # optimal, leave-one-out, per coordinate
        b = np.stack(
            [
                sum(f[j] * score[j] ** 2 for j in range(n) if j != i)
                / sum(score[j] ** 2 for j in range(n) if j != i)
                for i in range(n)
            ]
        )
    else:
        b = np.broadcast_to(np.asarray(baseline, np.float64), (n,))[:, None]
    expected = np.mean((f[:, None] - b) * score, axis=0) / scale_of(option)
    np.testing.assert_allclose(float(value), f.mean(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=2e-4, atol=1e-5)


@FORMULA_GROUP
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_args_and_closures_are_pathwise_on_the_same_samples(option):
    _, _, g_w, g_closure = formulas()[option]
    key = FORMULA_KEYS()[sorted(OPTIONS).index(option)]
    xs = _manual_samples(key, BERN_LOGITS, OPTIONS[option][2])
    pathwise = jax.grad(lambda w: jnp.mean(jax.vmap(f_bern, in_axes=(0, None))(xs, w)))(BERN_W)
    np.testing.assert_allclose(g_w, pathwise, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_closure, pathwise, rtol=1e-5, atol=1e-6)


def test_never_differentiates_f():
    f = never_differentiated(
        lambda x: jnp.sum(jnp.cos(x)), "the score-function estimator differentiated f"
    )

    @jax.jit
    def everything(key):
        options = ["none", "optimal"]  # the DiCE path (every baseline) and "optimal"
        keys = jax.random.split(key, 2 * len(options) + 1)
        grads = [
            jax.grad(build(f, dist, option), argnums=1)(keys[2 * i + j], params)
            for i, option in enumerate(options)
            for j, (dist, params) in enumerate(((BERN, BERN_LOGITS), (NORMAL, NORMAL_PARAMS)))
        ]
        hessian = jax.hessian(build(f, BERN, "loo"), argnums=1)(keys[-1], BERN_LOGITS)
        return grads, hessian

    grads, hessian = everything(jax.random.key(4))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
    assert hessian.shape == (10, 10)


def test_mixed_second_derivative_is_the_pathwise_score_product():
    # d/dw d/dl est = mean_n grad_w f(x_n, w) (x_n - p)^T on the same samples.
    n = 4
    est = build(f_bern, BERN, "loo")
    mixed = jax.jit(jax.jacobian(jax.grad(est, argnums=1), argnums=2))(
        jax.random.key(7), BERN_LOGITS, BERN_W
    )
    xs = _manual_samples(jax.random.key(7), BERN_LOGITS, n)
    gw = jax.vmap(jax.grad(f_bern, argnums=1), in_axes=(0, None))(xs, BERN_W)  # [n, D]
    score = xs - jax.nn.sigmoid(BERN_LOGITS)
    # The loo baseline's own w-gradient is stopped, so only f's term remains.
    expected = jnp.einsum("nd,ne->de", score, gw) / n
    np.testing.assert_allclose(mixed, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- aux and dtypes


def test_return_f_values():
    options = ["none", "constant", "loo", "optimal"]

    @jax.jit
    def run(keys, keys_again):
        out = {}
        for i, option in enumerate(options):
            baseline, _, n = OPTIONS[option]
            est = jaxgrad.score_function(
                f_bern, dist=BERN, num_samples=n, baseline=baseline, return_f_values=True
            )
            (value, aux), grad = jax.value_and_grad(est, argnums=1, has_aux=True)(
                keys[i], BERN_LOGITS, BERN_W
            )
            plain = jax.grad(build(f_bern, BERN, option), argnums=1)(
                keys_again[i], BERN_LOGITS, BERN_W
            )
            out[option] = value, aux, grad, plain
        return out

    keys = lambda: jax.random.split(jax.random.key(8), len(options))  # noqa: E731
    out = run(keys(), keys())
    for option in options:
        n = OPTIONS[option][2]
        value, aux, grad, plain = out[option]
        np.testing.assert_allclose(grad, plain, rtol=1e-6)
        assert isinstance(aux, jaxgrad._src.estimators.score_function.ScoreFunctionAux)
        assert aux.f_values.shape == (n,) and aux.samples.shape == (n, 10)
        np.testing.assert_allclose(aux.f_values.mean(), value, rtol=1e-6)
        np.testing.assert_allclose(
            aux.f_values, jax.vmap(f_bern, in_axes=(0, None))(aux.samples, BERN_W), rtol=1e-6
        )
        assert aux.baseline.shape == ((n, 10) if option == "optimal" else (n,))


def test_extreme_masked_and_bfloat16_logits():
    logits = jnp.asarray([1e4, -1e4, -jnp.inf, jnp.inf, 0.3], F32)
    cat_logits = jnp.asarray([[0.0, -jnp.inf, 1e4], [0.5, -jnp.inf, -0.5]], F32)
    bf16_logits = jnp.asarray([0.3, -0.2, 1.0], jnp.bfloat16)
    f = lambda b: jnp.sum((b - 0.3) ** 2)
    fc = lambda x: jnp.sum(x * jnp.arange(3.0, dtype=F32)) ** 2

    options = ["loo", "optimal"]  # the DiCE path (every other option) and "optimal"

    @jax.jit
    def everything(key):
        keys = jax.random.split(key, 3 * len(options))
        out = {}
        for i, option in enumerate(options):
            out["bernoulli", option] = jax.grad(build(f, BERN, option), argnums=1)(
                keys[3 * i], logits
            )
            out["categorical", option] = jax.grad(build(fc, CAT, option), argnums=1)(
                keys[3 * i + 1], cat_logits
            )
            out["bf16", option] = jax.value_and_grad(build(f, BERN, option), argnums=1)(
                keys[3 * i + 2], bf16_logits
            )
        return out

    out = everything(jax.random.key(9))
    for option in options:
        g = out["bernoulli", option]
        assert bool(jnp.all(jnp.isfinite(g))), option
        np.testing.assert_array_equal(g[2:4], 0.0)  # masked / certain coins: no gradient
        assert bool(jnp.all(jnp.isfinite(out["categorical", option]))), option
        value, g = out["bf16", option]
        assert value.dtype == jnp.bfloat16 and g.dtype == jnp.bfloat16, option
        assert bool(jnp.all(jnp.isfinite(g.astype(F32)))), option


def test_transformations_jit_vmap_legacy_keys():
    est = build(f_bern, BERN, "loo")
    grad = jax.jit(jax.grad(est, argnums=1))
    keys = lambda: jax.random.split(jax.random.key(14), 3)
    batched = jax.vmap(grad, in_axes=(0, None, None))(keys(), BERN_LOGITS, BERN_W)
    np.testing.assert_allclose(batched[1], grad(keys()[1], BERN_LOGITS, BERN_W), rtol=1e-5)
    legacy = grad(jax.random.PRNGKey(0), BERN_LOGITS, BERN_W)
    assert legacy.shape == (10,)
    # A traced baseline (closure over a jit argument) does not recompile per value.
    step = jax.jit(
        lambda k, b: jax.grad(jaxgrad.score_function(f_bern, dist=BERN, baseline=b), argnums=1)(
            k, BERN_LOGITS, BERN_W
        )
    )
    step(jax.random.key(15), jnp.asarray(0.1, F32))
    step(jax.random.key(16), jnp.asarray(0.2, F32))
    assert step._cache_size() == 1


def test_rloo_is_score_function_with_loo():
    a = jax.grad(jaxgrad.rloo(f_bern, dist=BERN, num_samples=4), argnums=1)(
        jax.random.key(17), BERN_LOGITS, BERN_W
    )
    b = jax.grad(build(f_bern, BERN, "loo"), argnums=1)(jax.random.key(17), BERN_LOGITS, BERN_W)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ errors


def test_errors():
    f = lambda b: jnp.sum(b)
    with pytest.raises(ValueError, match=r"score_function: baseline='loo' .* num_samples >= 2"):
        jaxgrad.score_function(f, dist=BERN, baseline="loo")
    with pytest.raises(ValueError, match=r"baseline='optimal' .* num_samples >= 2"):
        jaxgrad.score_function(f, dist=BERN, baseline="optimal", num_samples=1)
    with pytest.raises(ValueError, match=r"rloo: .* num_samples >= 2"):
        jaxgrad.rloo(f, dist=BERN, num_samples=1)
    with pytest.raises(ValueError, match="baseline must be None, an array, or one of"):
        jaxgrad.score_function(f, dist=BERN, baseline="ema")
    with pytest.raises(TypeError, match="baseline must be None, an array"):
        jaxgrad.score_function(f, dist=BERN, baseline=lambda x: x)
    with pytest.raises(ValueError, match=r"shape \(num_samples,\)"):
        jaxgrad.score_function(f, dist=BERN, num_samples=2, baseline=jnp.zeros(3, F32))
    with pytest.raises(TypeError, match="normalize must be None or the current scale"):
        jaxgrad.score_function(f, dist=BERN, normalize="std")
    with pytest.raises(ValueError, match="normalize must be a scalar"):
        jaxgrad.score_function(f, dist=BERN, normalize=jnp.ones(2, F32))
    with pytest.raises(ValueError, match="normalize must be positive"):
        jaxgrad.score_function(f, dist=BERN, normalize=0.0)
    with pytest.raises(TypeError, match="f must be a callable"):
        jaxgrad.score_function(3.0, dist=BERN)
    with pytest.raises(TypeError, match="dist must be .*lacks sample, log_prob"):
        jaxgrad.score_function(f, dist=object())
    with pytest.raises(TypeError, match="num_samples must be a static Python int"):
        jaxgrad.score_function(f, dist=BERN, num_samples=2.0)
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        jaxgrad.score_function(f, dist=BERN, num_samples=0)

    est = jaxgrad.score_function(lambda b: b, dist=BERN)
    with pytest.raises(ValueError, match="f must return a scalar"):
        est(jax.random.key(0), jnp.zeros(3, F32))
    est = jaxgrad.score_function(f, dist=BERN)
    with pytest.raises(ValueError, match="accepts a single key"):
        est(jax.random.split(jax.random.key(1), 2), jnp.zeros(3, F32))
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        est(0, jnp.zeros(3, F32))

    class ElementwiseLogProb:  # a user spec that forgot to sum over factors
        def sample(self, key, logits):
            return BERN.sample(key, logits)

        def log_prob(self, logits, x):
            return jnp.where(x > 0.5, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))

    est = jaxgrad.score_function(f, dist=ElementwiseLogProb())
    with pytest.raises(ValueError, match="log_prob must return the joint log-probability"):
        est(jax.random.key(2), jnp.zeros(3, F32))


def test_custom_distribution_object():
    """Any object with sample and log_prob works: an exponential with log-rate params."""

    class Exponential:
        def sample(self, key, log_rate):
            return jax.random.exponential(key, jnp.shape(log_rate), F32) * jnp.exp(-log_rate)

        def log_prob(self, log_rate, x):
            return jnp.sum(log_rate - jnp.exp(log_rate) * x)

    log_rate = jnp.asarray([0.2, -0.5], F32)
    est = jaxgrad.rloo(lambda x: jnp.sum(x * x), dist=Exponential(), num_samples=4)
    samples = grad_samples(est, jax.random.key(18), log_rate, num_keys=NUM_KEYS, batch_size=2_500)
    # E[x^2] = 2 / lam^2 = 2 exp(-2 theta), so d/dtheta = -4 exp(-2 theta).
    assert_unbiased(samples, -4 * np.exp(-2 * np.asarray(log_rate, np.float64)))
