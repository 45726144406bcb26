"""``jaxgrad.exact`` (enumeration) and the higher derivatives of the score function.

``exact`` is checked against brute-force sums and ``diagnostics.exact_grad``,
and its Hessian against a closed form. Then the mean of ``jax.hessian`` of
score-function estimates over many keys is compared with the exact Hessian
(by enumeration, or in closed form for a Gaussian) at 5 standard errors: the
DiCE surrogate makes second derivatives unbiased with every baseline that
supports them; so does the pathwise estimator. Power: the same assertion
rejects the plain REINFORCE surrogate ``sg(f) log p`` (right gradient, wrong
Hessian).

First-order-only estimators (``baseline="optimal"``, ARM, DisARM, REBAR, RELAX,
measure-valued, IndeCateR, unordered-set) refuse every second derivative with
one error instead of returning zeros: for every registry entry,
``higher_order`` agrees with what ``jax.hessian`` (both orders) and the mixed
derivatives in params and ``*args`` actually do.
"""

from __future__ import annotations

import functools
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased, exact_grad

F32 = jnp.float32
BERN, CAT, NORMAL = jaxgrad.dists.bernoulli, jaxgrad.dists.categorical, jaxgrad.dists.normal
NUM_KEYS = 20_000


def f_bern(b):
    return (jnp.sum(jnp.asarray([0.5, -1.0, 2.0], F32) * b) - 0.7) ** 2 + jnp.sin(b[0] + b[2])


def f_cat(x):
    return (jnp.sum(x * jnp.asarray([[0.3, -0.5, 1.0], [0.8, 0.1, -0.6]], F32)) - 0.2) ** 2


def f_normal(x):
    return jnp.sum(x * x + jnp.cos(x))


BERN_LOGITS = jnp.asarray([0.4, -0.6, 1.1], F32)
CAT_LOGITS = jnp.asarray([[0.2, -0.4, 0.9], [-1.0, 0.5, 0.0]], F32)
NORMAL_PARAMS = (jnp.asarray([0.4], F32), jnp.asarray([0.9], F32))


def brute_force(f, logits, dist):
    """sum_x p(x) f(x) over every outcome, with NumPy probabilities."""
    logits = np.asarray(logits, np.float64)
    total = 0.0
    if dist is BERN:
        p = 1 / (1 + np.exp(-logits))
        for bs in itertools.product([0.0, 1.0], repeat=logits.size):
            b = np.array(bs).reshape(logits.shape)
            prob = np.prod(np.where(b > 0, p, 1 - p))
            total += prob * float(f(jnp.asarray(b, F32)))
        return total
    pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    d, k = logits.shape
    for idx in itertools.product(range(k), repeat=d):
        x = np.eye(k)[list(idx)]
        total += np.prod(pi[np.arange(d), list(idx)]) * float(f(jnp.asarray(x, F32)))
    return total


# ------------------------------------------------------------------------------ exact


@pytest.mark.parametrize(
    ("dist", "f", "logits"),
    [(BERN, f_bern, BERN_LOGITS), (CAT, f_cat, CAT_LOGITS)],
    ids=["bernoulli", "categorical"],
)
def test_exact_value_and_gradient(dist, f, logits):
    est = jaxgrad.exact(f, dist=dist)
    value, grad = jax.jit(jax.value_and_grad(est, argnums=1))(jax.random.key(0), logits)
    np.testing.assert_allclose(value, brute_force(f, logits, dist), rtol=1e-5)
    np.testing.assert_allclose(grad, exact_grad(f, logits, dist=dist), rtol=1e-4, atol=1e-6)


def test_exact_hessian_and_third_derivative_match_closed_form():
    # E[b0 b1 + 2 b2 - b0 b2 b3] = p0 p1 + 2 p2 - p0 p2 p3 for independent coins.
    f = lambda b: b[0] * b[1] + 2 * b[2] - b[0] * b[2] * b[3]
    closed = lambda l: (lambda p: p[0] * p[1] + 2 * p[2] - p[0] * p[2] * p[3])(jax.nn.sigmoid(l))
    est = jaxgrad.exact(f, dist=BERN)
    logits = jnp.asarray([0.3, -0.2, 0.8, -1.1], F32)
    by_enumeration = lambda l: est(jax.random.key(1), l)

    @jax.jit
    def derivatives(logits):
        return [
            (jax.hessian(g)(logits), jax.jacfwd(jax.hessian(g))(logits))
            for g in (by_enumeration, closed)
        ]

    (h, t), (h_closed, t_closed) = derivatives(logits)
    np.testing.assert_allclose(h, h_closed, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(t, t_closed, rtol=1e-3, atol=1e-5)


def test_exact_args_masks_and_unused_key():
    w = jnp.asarray([1.0, 2.0, 3.0], F32)
    f = lambda x, w: jnp.sum(x * w) ** 2
    est = jaxgrad.exact(f, dist=CAT)
    logits = jnp.asarray([[0.0, -jnp.inf, 1.0], [0.5, 0.2, -jnp.inf]], F32)
    key = jax.random.key(2)
    value, (g_logits, g_w) = jax.value_and_grad(est, argnums=(1, 2))(key, logits, w)
    # The key is not consumed: using it again is not a reuse (debug_key_reuse is on).
    value_again = est(key, logits, w)
    jax.random.normal(key)
    np.testing.assert_array_equal(value, value_again)
    assert bool(jnp.all(jnp.isfinite(g_logits))) and bool(jnp.all(jnp.isfinite(g_w)))
    np.testing.assert_array_equal(g_logits[0, 1], 0.0)  # masked classes get no gradient
    # Only the 4 unmasked outcomes contribute: compare with their explicit sum.
    pi = np.exp(np.asarray(jax.nn.log_softmax(logits, -1), np.float64))
    wn = np.asarray(w, np.float64)
    expected = sum(pi[0, i] * pi[1, j] * (wn[i] + wn[j]) ** 2 for i in (0, 2) for j in (0, 1))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    exp_gw = sum(
        pi[0, i] * pi[1, j] * 2 * (wn[i] + wn[j]) * (np.eye(3)[i] + np.eye(3)[j])
        for i in (0, 2)
        for j in (0, 1)
    )
    np.testing.assert_allclose(g_w, exp_gw, rtol=1e-5)
    # Legacy keys are accepted too.
    np.testing.assert_allclose(est(jax.random.PRNGKey(0), logits, w), value, rtol=1e-6)


def test_exact_errors():
    f = lambda x: jnp.sum(x)
    with pytest.raises(TypeError, match="exact: dist must be .* lacks support"):
        jaxgrad.exact(f, dist=NORMAL)
    with pytest.raises(TypeError, match="exact: f must be a callable"):
        jaxgrad.exact(1, dist=BERN)
    est = jaxgrad.exact(f, dist=BERN)
    with pytest.raises(ValueError, match="more than MAX_SUPPORT_SIZE"):
        est(jax.random.key(0), jnp.zeros(17, F32))
    with pytest.raises(TypeError, match="exact: key must be a PRNG key"):
        est(None, jnp.zeros(2, F32))
    with pytest.raises(ValueError, match="exact accepts a single key"):
        est(jax.random.split(jax.random.key(1), 2), jnp.zeros(2, F32))
    with pytest.raises(ValueError, match="exact: f must return a scalar"):
        jaxgrad.exact(lambda x: x, dist=BERN)(jax.random.key(2), jnp.zeros(2, F32))


# ------------------------------------------------------- higher-order score function


OPTIONS = {  # name -> (baseline, normalize, num_samples)
    "none": (None, None, 1),
    "constant": (jnp.asarray(0.6, F32), None, 2),
    "loo": ("loo", None, 4),
    "pathwise": (None, None, 2),  # jaxgrad.pathwise (normal only)
}
PROBLEMS = {
    "bernoulli": (BERN, f_bern, BERN_LOGITS),
    "categorical": (CAT, f_cat, CAT_LOGITS),
    "normal": (NORMAL, f_normal, NORMAL_PARAMS),
}
# Every option on the coins; the DiCE paths without and with a baseline on categoricals;
# with a baseline on a Gaussian. (Each Hessian costs about a second of compilation.)
CASES = (
    [("bernoulli", o) for o in ("none", "constant", "loo")]
    + [("categorical", o) for o in ("none", "loo")]
    + [("normal", "loo"), ("normal", "pathwise")]
)


def _estimator(problem, option):
    dist, f, _ = PROBLEMS[problem]
    baseline, normalize, n = OPTIONS[option]
    if option == "pathwise":
        return jaxgrad.pathwise(f, dist=dist, num_samples=n)
    return jaxgrad.score_function(
        f, dist=dist, num_samples=n, baseline=baseline, normalize=normalize
    )


def naive_surrogate(key, logits):
    """The plain REINFORCE surrogate ``sg(f(x)) log p(x)``: right gradient, wrong Hessian.

    Its Hessian is ``f(x) grad^2 log p(x)``, missing the ``f (grad log p)(grad log p)^T``
    term that DiCE's magic box supplies.
    """
    x = BERN.sample(key, jax.lax.stop_gradient(logits))
    return jax.lax.stop_gradient(f_bern(x)) * BERN.log_prob(logits, x)


@functools.cache
def hessian_samples():
    """``NUM_KEYS`` Hessians of every case, from one compiled program (lax.map over keys)."""
    names = [f"{p}/{o}" for p, o in CASES] + ["bernoulli/naive"]
    ests = {f"{p}/{o}": _estimator(p, o) for p, o in CASES}
    ests["bernoulli/naive"] = naive_surrogate

    def one(key):
        keys = jax.random.split(key, len(names))
        return {
            n: jax.hessian(ests[n], argnums=1)(keys[i], PROBLEMS[n.split("/")[0]][2])
            for i, n in enumerate(names)
        }

    keys = jax.random.split(jax.random.key(50), NUM_KEYS)
    return jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=2_500))(keys)


@functools.cache
def exact_hessian(problem):
    dist, f, params = PROBLEMS[problem]
    if problem == "normal":  # E[x^2 + cos x] = mu^2 + sigma^2 + cos(mu) exp(-sigma^2 / 2)
        closed = lambda p: jnp.sum(
            p[0] ** 2 + p[1] ** 2 + jnp.cos(p[0]) * jnp.exp(-(p[1] ** 2) / 2)
        )
        return jax.jit(jax.hessian(closed))(jax.tree.map(lambda a: a.astype(jnp.float64), params))
    est = jaxgrad.exact(f, dist=dist)
    return jax.jit(jax.hessian(lambda p: est(jax.random.key(0), p)))(params)


HESSIAN_GROUP = pytest.mark.xdist_group("hessian_samples")  # one worker, one cached study


@HESSIAN_GROUP
@pytest.mark.parametrize(("problem", "option"), CASES)
def test_hessian_of_score_function_and_pathwise_is_unbiased(problem, option):
    samples = hessian_samples()[f"{problem}/{option}"]
    normalize = OPTIONS[option][1]
    s = 1.0 if normalize is None else float(normalize)
    assert_unbiased(jax.tree.map(lambda h: h * s, samples), exact_hessian(problem))


@HESSIAN_GROUP
def test_power_rejects_the_naive_reinforce_surrogate():
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(hessian_samples()["bernoulli/naive"], exact_hessian("bernoulli"))


# ------------------------------------------------ first-order only: refused, not zero


def _f_arg(variable):
    """A cost ``f(x, a)`` smooth in both (relaxations evaluate it between the vertices)."""
    a = {"bernoulli": BERN_LOGITS, "categorical": CAT_LOGITS, "normal": NORMAL_PARAMS[0]}[variable]
    return lambda x, a: jnp.sum(jnp.sin(x * a)) + jnp.sum(x * x) * jnp.sum(a), a * 0.5 + 0.1


DERIVATIVES = {  # name -> a second derivative of est(key, params, a)
    "jacfwd(jacrev)": lambda est: jax.jacfwd(jax.jacrev(est, argnums=1), argnums=1),
    "jacrev(jacrev)": lambda est: jax.jacrev(jax.jacrev(est, argnums=1), argnums=1),
    "d_args(d_params)": lambda est: jax.jacrev(jax.grad(est, argnums=1), argnums=2),
    # Reverse over reverse: gumbel_rao's custom_vjp forward pass has no forward mode.
    "d_params(d_args)": lambda est: jax.jacrev(jax.grad(est, argnums=2), argnums=1),
}
REGISTRY_CASES = [
    (name, variable)
    for name, info in sorted(jaxgrad.ESTIMATORS.items())
    for variable in sorted(info.variables)
]


@pytest.mark.parametrize(("name", "variable"), REGISTRY_CASES)
def test_higher_order_metadata_matches_what_second_derivatives_do(name, variable):
    info = jaxgrad.ESTIMATORS[name]
    dist, _, params = PROBLEMS[variable]
    f, a = _f_arg(variable)
    est = info.build(f, dist=dist, num_samples=info.num_samples)
    key = jax.random.key(5)
    # Traced only (eval_shape): the refusal happens while tracing, nothing is compiled.
    for label, derivative in DERIVATIVES.items():
        second = derivative(est)
        if info.higher_order:
            jax.eval_shape(second, key, params, a)
        else:
            with pytest.raises(TypeError, match="is a first-order estimator") as e:
                jax.eval_shape(second, key, params, a)
            assert "jaxgrad.rloo" in str(e.value) and "pathwise" in str(e.value), label
            assert 'baseline=None or "loo"' in str(e.value), label
    # First derivatives and second derivatives in *args alone always work.
    jax.eval_shape(jax.hessian(est, argnums=2), key, params, a)
    jax.eval_shape(jax.jacrev(est, argnums=(1, 2)), key, params, a)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("arm", "arm"),
        ("reinforce-optimal", 'score_function(baseline="optimal")'),
        ("measure-valued", "measure_valued"),
    ],
)
def test_refusal_names_the_estimator_and_forward_mode_first_order_works(name, fn):
    info = jaxgrad.ESTIMATORS[name]
    variable = sorted(info.variables)[0]
    dist, _, params = PROBLEMS[variable]
    f, a = _f_arg(variable)
    est = info.build(f, dist=dist, num_samples=info.num_samples)
    with pytest.raises(TypeError, match=rf"^{re.escape(fn)} is a first-order estimator"):
        jax.eval_shape(jax.hessian(est, argnums=1), jax.random.key(6), params, a)

    # Forward mode (jvp, jacfwd) of the first derivative equals reverse mode, under jit.
    @jax.jit
    def both(key, params, a):
        rev = jax.grad(est, argnums=1)(jax.random.clone(key), params, a)
        fwd = jax.jacfwd(est, argnums=1)(key, params, a)
        return rev, fwd

    rev, fwd = both(jax.random.key(7), params, a)
    for r, w in zip(jax.tree.leaves(rev), jax.tree.leaves(fwd), strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)
    assert any(bool(jnp.any(r != 0)) for r in jax.tree.leaves(rev))
