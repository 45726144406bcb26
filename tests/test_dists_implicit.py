"""Gradients through the distribution families: per sample, in expectation, transformed.

* Per sample, the pathwise derivative of every univariate family equals the
  implicit-function-theorem value ``dx/dtheta = -(dF/dtheta)(x) / p(x)``
  computed independently, by central differences of SciPy's CDF (of a
  quadrature CDF for von Mises) in float64; beta and dirichlet, sampled as
  ratios of gammas, equal the chain rule through the gammas' implicit
  derivatives (SciPy again).
* In expectation, ``pathwise``, ``score_function`` and ``rloo`` on every
  family pass the z-test against closed-form or quadrature gradients, all
  studies in one cached compiled program; the same test rejects the score
  function on ``uniform``, whose support moves with its parameters (documented
  bias).
* ``jit``, ``vmap`` over keys and parameters, ``grad`` and ``shard_map`` over 8
  devices agree for every new spec, in one program that also runs the extreme
  parameters (concentrations 1e-3 and 1e3, scales 1e-6 and 1e6, logits
  +-1e4): finite values and gradients, or the documented exceptions.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import size
from scipy import special, stats
from scipy.integrate import quad

import jaxgrad
from jaxgrad._src.dists import implicit
from jaxgrad._src.estimators.common import sample_n
from jaxgrad.diagnostics import assert_unbiased

D = jaxgrad.dists
F32, F64 = jnp.float32, jnp.float64
NUM_DEVICES = 8


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(20261123 + seed), n)


# ----------------------------------------------------------------- per sample: the IFT


def _vm_cdf(x, loc, kappa):
    """The von Mises CDF by adaptive quadrature (SciPy's is an approximation above kappa 50)."""
    dens = lambda t: np.exp(-2 * kappa * np.sin(t / 2) ** 2) / (2 * np.pi * special.i0e(kappa))
    return 0.5 + quad(dens, 0, x - loc, epsabs=0, epsrel=1e-13, limit=200)[0]


def _rb_cdf(y, logits, t):
    return special.expit(t * special.logit(y) - logits)


#: name -> (params, CDF(x, *params)); SciPy, or quadrature, in float64.
IFT = {
    "normal": ((0.3, 1.7), lambda x, m, s: stats.norm.cdf(x, m, s)),
    "log_normal": ((0.2, 0.6), lambda x, m, s: stats.lognorm.cdf(x, s, scale=np.exp(m))),
    "logistic": ((0.3, 0.7), lambda x, m, s: stats.logistic.cdf(x, m, s)),
    "laplace": ((0.3, 0.7), lambda x, m, s: stats.laplace.cdf(x, m, s)),
    "uniform": ((-0.5, 2.0), lambda x, a, b: stats.uniform.cdf(x, a, b - a)),
    "exponential": ((1.5,), lambda x, r: stats.expon.cdf(x, scale=1 / r)),
    "gamma": ((0.7, 1.5), lambda x, a, r: stats.gamma.cdf(x, a, scale=1 / r)),
    "gamma_large": ((40.0, 2.0), lambda x, a, r: stats.gamma.cdf(x, a, scale=1 / r)),
    "von_mises": ((0.4, 2.0), _vm_cdf),
    "von_mises_flat": ((0.4, 1e-3), _vm_cdf),
    "von_mises_peaked": ((0.4, 1e3), _vm_cdf),
    "relaxed_bernoulli": ((0.5, 0.7), _rb_cdf),
}
NUM_IFT = 6


def _spec(case):
    return D.SPECS[
        case.rsplit("_", 1)[0] if case.endswith(("_large", "_flat", "_peaked")) else case
    ]


@functools.cache
def _ift_program(dtype):
    """Per-sample values and gradients of every IFT case (and of beta and dirichlet), one jit.

    The cases of one spec run as one ``lax.map`` over keys and parameter rows, so
    that each sampler is compiled once (unbatched: see :func:`_studies`). Only von
    Mises runs in float32 (its rule is ours).
    """
    groups = {}
    for case in IFT:
        if dtype == F64 or case.startswith("von_mises"):
            groups.setdefault(_spec(case).name, []).append(case)
    keys = _keys(len(IFT) * NUM_IFT + 2 * NUM_IFT, 1)

    def run(keys):
        out = {}
        for name, cases in groups.items():
            spec = D.SPECS[name]
            rows = jnp.asarray([IFT[c][0] for c in cases], dtype)  # [cases, params]
            rows = jnp.repeat(rows, NUM_IFT, axis=0)

            def one(k, p, spec=spec):
                p = p[0] if p.shape[0] == 1 else tuple(p)
                return jax.value_and_grad(lambda p: spec.sample(k, p))(p)

            x, g = jax.lax.map(lambda kp, one=one: one(*kp), (keys[: len(rows)], rows))
            keys = keys[len(rows) :]
            g = g if isinstance(g, tuple) else (g,)
            for j, c in enumerate(cases):
                sl = slice(j * NUM_IFT, (j + 1) * NUM_IFT)
                out[c] = (x[sl], tuple(gi[sl] for gi in g))
        if dtype == F32:
            return out
        # Beta and dirichlet, with the log-gammas they are made of (the same key, the same draw).
        clone = jax.vmap(jax.random.clone)
        kb, kd = keys[:NUM_IFT], keys[NUM_IFT : 2 * NUM_IFT]
        ab = jnp.asarray([2.0, 0.6], dtype)
        beta = jax.value_and_grad(lambda k, p: D.beta.sample(k, (p[0], p[1])), 1)
        out["beta"] = jax.lax.map(lambda k: beta(k, ab), kb)
        out["beta_gammas"] = jax.lax.map(lambda k: implicit._loggamma(k, ab), clone(kb))
        alpha = jnp.asarray([0.5, 2.0, 3.0], dtype)

        def dirichlet(k):
            sample = lambda a: (lambda y: (y, y))(D.dirichlet.sample(k, a))
            jac, y = jax.jacfwd(sample, has_aux=True)(alpha)  # forward mode: the custom_jvp
            return y, jac

        out["dirichlet"] = jax.lax.map(dirichlet, kd)
        out["dirichlet_gammas"] = jax.lax.map(lambda k: implicit._loggamma(k, alpha), clone(kd))
        return out

    return jax.tree.map(np.asarray, jax.jit(run)(keys))


def _fd(fn, p, i, h):
    """Central difference of ``fn(*p)`` in ``p[i]`` with step ``h``."""
    up, dn = list(p), list(p)
    up[i] += h
    dn[i] -= h
    return (fn(*up) - fn(*dn)) / (2 * h)


def _ift(cdf, x, p, i, rel=1e-5):
    """-(dF/dp_i)(x) / p(x), both by finite differences of the CDF (float64)."""
    h = rel * max(abs(p[i]), 1e-2)
    hx = 1e-6 * max(abs(x), 1e-3)
    density = _fd(lambda x_: cdf(x_, *p), [x], 0, hx)
    return -_fd(lambda *q: cdf(x, *q), list(p), i, h) / density


#: Every case in float64; von Mises, whose rule is ours, in float32 too.
IFT_CASES = [(c, F64) for c in sorted(IFT)] + [(c, F32) for c in sorted(IFT) if "von_mises" in c]


@pytest.mark.xdist_group("dists_ift")
@pytest.mark.parametrize(("case", "dtype"), IFT_CASES)
def test_pathwise_gradient_per_sample_is_the_implicit_function_theorem_value(case, dtype):
    params, cdf = IFT[case]
    xs, grads = _ift_program(dtype)[case]
    rtol = 2e-6 if dtype == F64 else 2e-4
    for n in range(NUM_IFT):
        x = float(xs[n])
        for i in range(len(params)):
            want = _ift(cdf, x, list(params), i)
            got = float(grads[i][n])
            assert abs(got - want) <= rtol * abs(want) + 1e-9 * (1 + abs(x)), (
                case,
                n,
                i,
                got,
                want,
            )


def _gamma_dlog(log_x, a, rel=1e-6):
    """d log X / d alpha for X ~ Gamma(alpha, 1), by the IFT on SciPy's gamma CDF."""
    x = math.exp(log_x)
    h = rel * a
    dF = (stats.gamma.cdf(x, a + h) - stats.gamma.cdf(x, a - h)) / (2 * h)
    return -dF / stats.gamma.pdf(x, a) / x


@pytest.mark.xdist_group("dists_ift")
def test_beta_and_dirichlet_gradients_are_the_chain_rule_through_implicit_gamma_gradients():
    out = _ift_program(F64)
    (x, g), lg = out["beta"], out["beta_gammas"]
    ga, gb = g[:, 0], g[:, 1]
    np.testing.assert_allclose(x, special.expit(lg[:, 0] - lg[:, 1]), rtol=1e-12)
    for n in range(NUM_IFT):
        da, db = _gamma_dlog(lg[n, 0], 2.0), _gamma_dlog(lg[n, 1], 0.6)
        np.testing.assert_allclose(ga[n], x[n] * (1 - x[n]) * da, rtol=1e-5)
        np.testing.assert_allclose(gb[n], -x[n] * (1 - x[n]) * db, rtol=1e-5)
    (y, jac), lg = out["dirichlet"], out["dirichlet_gammas"]
    alpha = [0.5, 2.0, 3.0]
    np.testing.assert_allclose(y, special.softmax(lg, axis=-1), rtol=1e-12)
    for n in range(NUM_IFT):
        dlog = np.array([_gamma_dlog(lg[n, k], alpha[k]) for k in range(3)])
        want = (np.diag(y[n]) - np.outer(y[n], y[n])) * dlog[None, :]  # dy_j/dalpha_k
        np.testing.assert_allclose(jac[n], want, rtol=1e-5, atol=1e-12)


# ----------------------------------------------------------------- in expectation: z-tests

NUM_KEYS = size(20_000, 5_000)  # make test-full / make test
ESTIMATORS = ("pathwise", "score_function", "rloo")


def _vm_ratio(k):
    return special.i1e(k) / special.i0e(k)


def _relaxed_bernoulli_mean_sq(logits, t):
    """E[y^2] over u ~ U(0, 1), y = sigmoid((l + logit u) / t), by quadrature."""
    g = lambda u: special.expit((logits + special.logit(u)) / t) ** 2
    return quad(g, 0, 1, epsabs=1e-14, epsrel=1e-12, limit=200)[0]


def _concrete3_expectation(logits, t, c):
    """E[sum_k c_k y_k^2], y = softmax((l + G) / t): trapezoid over three Gumbel densities."""
    g = np.linspace(-3.5, 25.0, 72)
    w = np.exp(-g - np.exp(-g)) * (g[1] - g[0])
    G = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1)
    W = w[:, None, None] * w[None, :, None] * w[None, None, :]
    y = special.softmax((np.asarray(logits) + G) / t, axis=-1)
    return float(np.sum(W * np.sum(np.asarray(c) * y**2, -1)))


def _fd_grad(fn, params, rel=1e-5):
    """The gradient of a scalar closed form ``fn(params)`` by central differences (float64)."""
    flat = [np.asarray(p, np.float64) for p in params]
    out = []
    for i, p in enumerate(flat):
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            h = rel * max(abs(p[idx]), 1e-1)
            up = [q.copy() for q in flat]
            dn = [q.copy() for q in flat]
            up[i][idx] += h
            dn[i][idx] -= h
            g[idx] = (fn(*up) - fn(*dn)) / (2 * h)
        out.append(g)
    return tuple(out)


W_DIR = np.array([1.0, 2.0, 3.0])
W_MVN = np.array([1.0, -1.0])
C_CONCRETE = np.array([1.0, 2.0, 3.0])

#: name -> (spec, params, f(x) for one sample, the exact gradient of E[f] in the params)
STUDIES = {
    "normal": (D.normal, (0.3, 0.8), lambda x: x**2 + x, lambda m, s: (2 * m + 1, 2 * s)),
    "log_normal": (
        D.log_normal,
        (0.2, 0.5),
        lambda x: x,
        lambda m, s: (np.exp(m + s * s / 2), s * np.exp(m + s * s / 2)),
    ),
    "logistic": (
        D.logistic,
        (0.3, 0.7),
        lambda x: x**2,
        lambda m, s: (2 * m, 2 * s * np.pi**2 / 3),
    ),
    "laplace": (D.laplace, (0.3, 0.7), lambda x: x**2, lambda m, b: (2 * m, 4 * b)),
    "uniform": (
        D.uniform,
        (-0.5, 1.0),
        lambda x: x**2,
        lambda a, b: ((2 * a + b) / 3, (a + 2 * b) / 3),
    ),
    "exponential": (D.exponential, (1.5,), lambda x: x**2, lambda r: (-4 / r**3,)),
    "gamma": (
        D.gamma,
        (2.0, 1.5),
        lambda x: x**2,
        lambda a, r: ((2 * a + 1) / r**2, -2 * a * (a + 1) / r**3),
    ),
    "beta": (
        D.beta,
        (2.0, 3.0),
        lambda x: x**2,
        lambda a, b: _fd_grad(lambda a, b: a * (a + 1) / ((a + b) * (a + b + 1)), (a, b)),
    ),
    "dirichlet": (
        D.dirichlet,
        ([1.0, 2.0, 3.0],),
        lambda x: jnp.sum(jnp.asarray(W_DIR, x.dtype) * x**2),
        lambda a: _fd_grad(lambda a: np.sum(W_DIR * a * (a + 1)) / (a.sum() * (a.sum() + 1)), (a,)),
    ),
    "multivariate_normal": (
        D.multivariate_normal,
        ([0.3, -0.5], [[1.0, 0.0], [0.4, 0.7]]),
        lambda x: jnp.sum(x**2) + jnp.sum(jnp.asarray(W_MVN, x.dtype) * x),
        lambda m, L: (2 * m + W_MVN, 2 * np.tril(L)),
    ),
    "von_mises": (
        D.von_mises,
        (0.4, 2.0),
        lambda x: jnp.cos(x) + 0.5 * jnp.sin(x),  # 2 pi-periodic: the score function applies
        lambda m, k: (
            _vm_ratio(k) * (-np.sin(m) + 0.5 * np.cos(m)),
            (1 - _vm_ratio(k) / k - _vm_ratio(k) ** 2) * (np.cos(m) + 0.5 * np.sin(m)),
        ),
    ),
    "relaxed_bernoulli": (
        D.relaxed_bernoulli,
        (0.5, 0.7),
        lambda y: y**2,
        lambda l, t: _fd_grad(_relaxed_bernoulli_mean_sq, (l, t), rel=1e-4),
    ),
    "relaxed_one_hot_categorical": (
        D.relaxed_one_hot_categorical,
        ([0.5, -0.3, 0.2], 0.8),
        lambda y: jnp.sum(jnp.asarray(C_CONCRETE, y.dtype) * y**2),
        lambda l, t: _fd_grad(
            lambda l, t: _concrete3_expectation(l, t, C_CONCRETE), (l, t), rel=1e-4
        ),
    ),
}
#: Studies that must be rejected: the score function misses the boundary terms of uniform.
BIASED = {("uniform", "score_function"), ("uniform", "rloo")}


def _study_params(name):
    params = tuple(jnp.asarray(p, F32) for p in STUDIES[name][1])
    return params[0] if len(params) == 1 else params


def _build(estimator, name):
    spec, _, f, _ = STUDIES[name]
    if estimator == "pathwise":
        return jaxgrad.pathwise(f, dist=spec)
    if estimator == "score_function":
        return jaxgrad.score_function(f, dist=spec, num_samples=1)
    return jaxgrad.rloo(f, dist=spec, num_samples=2)


@functools.cache
def _studies():
    """Every (family, estimator) study: NUM_KEYS gradient estimates each, one compiled program."""

    def one_key(key):
        # lax.map over keys, not vmap: the samplers under a vmap over keys (batched threefry)
        # compile about twice as slowly, and the runtime here is small either way.
        out = {}
        keys = jax.random.split(key, len(STUDIES) * len(ESTIMATORS))
        for i, (name, estimator) in enumerate(itertools.product(STUDIES, ESTIMATORS)):
            grad = jax.grad(_build(estimator, name), argnums=1)
            out[name, estimator] = grad(keys[i], _study_params(name))
        return out

    out = jax.jit(lambda keys: jax.lax.map(one_key, keys))(_keys(NUM_KEYS, 2))
    return jax.tree.map(np.asarray, out)


@functools.cache
def _exact(name):
    _, params, _, exact = STUDIES[name]
    g = exact(*(np.asarray(p, np.float64) for p in params))
    return g[0] if len(g) == 1 else tuple(g)


@pytest.mark.slow
@pytest.mark.xdist_group("dists_study")
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_estimators_on_every_family_pass_the_z_test(name, estimator):
    samples = _studies()[name, estimator]
    if (name, estimator) in BIASED:
        # Power: the same z-test rejects the score function where its support moves.
        with pytest.raises(AssertionError):
            assert_unbiased(samples, _exact(name))
    else:
        assert_unbiased(samples, _exact(name))


# ----------------------------------------------------------------- transformations, extremes

#: name -> three extreme parameter rows (float32): concentrations 1e-3 and 1e3, scales 1e-6 and
#: 1e6, logits +-1e4, temperature 1e-3.
EXTREMES = {
    "normal": [(0.0, 1e-6), (0.0, 1e6), (1e4, 1.0)],
    "log_normal": [(0.0, 1e-6), (30.0, 1.0), (-30.0, 1e-6)],  # e^(1e6 eps) is beyond any float
    "logistic": [(0.0, 1e-6), (0.0, 1e6), (-1e4, 1.0)],
    "laplace": [(0.0, 1e-6), (0.0, 1e6), (-1e4, 1.0)],
    "uniform": [(0.0, 1e-6), (-1e6, 1e6), (1e4, 1e4 + 1)],
    "exponential": [(1e-6,), (1e6,), (1e-3,)],
    "gamma": [(1e-3, 1.0), (1e3, 1.0), (2.0, 1e6)],
    "beta": [(1e-3, 1e-3), (1e3, 1e3), (1e-3, 1e3)],
    "von_mises": [(0.4, 1e-3), (0.4, 1e3), (-3.0, 1e6)],
    "relaxed_bernoulli": [(1e4, 0.5), (-1e4, 0.5), (0.5, 1e-3)],
    "multivariate_normal": [
        ([0.0, 0.0], [[1e-6, 0.0], [0.0, 1e-6]]),
        ([0.0, 0.0], [[1e6, 0.0], [1.0, 1e6]]),
        ([1e4, -1e4], [[1.0, 0.0], [0.0, 1.0]]),
    ],
    "dirichlet": [([1e-3, 1e-3, 1e-3],), ([1e3, 1e3, 1e3],), ([1e-3, 1.0, 1e3],)],
    "relaxed_one_hot_categorical": [
        ([1e4, -1e4, 0.0], 0.5),
        ([0.5, -0.3, 0.2], 1e-3),
        ([-1e4, -1e4, 1e4], 1e-3),
    ],
}
#: (spec, extreme row) -> why log_prob of the sample is infinite there (documented in the spec).
INFINITE_LOG_PROB = {
    ("gamma", 0): "the sample underflows to 0, where the density is infinite",
    ("beta", 0): "the sample rounds to 0 or 1, where the density is infinite",
    ("beta", 2): "the sample rounds to 0, where the density is infinite",
    ("dirichlet", 0): "coordinates underflow to 0, where the density is infinite",
    ("dirichlet", 2): "a coordinate underflows to 0, where the density is infinite",
    ("relaxed_bernoulli", 0): "the sample rounds to 1 (a vertex): log_prob is -inf there",
    ("relaxed_bernoulli", 1): "the sample rounds to 0 (a vertex): log_prob is -inf there",
    ("relaxed_bernoulli", 2): "at temperature 1e-3 the sample rounds to 0 or 1",
    ("relaxed_one_hot_categorical", 0): "the sample rounds to a vertex: log_prob is -inf",
    ("relaxed_one_hot_categorical", 1): "the sample rounds to a vertex: log_prob is -inf",
    ("relaxed_one_hot_categorical", 2): "the sample rounds to a vertex: log_prob is -inf",
}
#: The 8 rows of the transformed program: the study's parameters 4 times, then the extremes.
STUDY_ROWS = 4


def _rows(name):
    """The 8 parameter rows of one spec, stacked on a leading axis (a tuple, or one array)."""
    rows = [STUDIES[name][1]] * STUDY_ROWS + EXTREMES[name] + EXTREMES[name][:1]
    cols = tuple(jnp.asarray(np.array(c, np.float64), F32) for c in zip(*rows, strict=True))
    return cols[0] if len(cols) == 1 else cols


PATHWISE = [i for i, (_, e) in enumerate(itertools.product(STUDIES, ESTIMATORS)) if e == "pathwise"]


def _spec_body(key, params):
    """For every spec: the pathwise estimate of its study (value and gradient), on the key the
    study gives it, and log_prob of that sample with its gradient in the params."""
    out = {}
    keys = jax.random.split(key, len(STUDIES) * len(ESTIMATORS))
    for i, name in zip(PATHWISE, STUDIES, strict=True):
        spec, _, f, _ = STUDIES[name]

        def loss(p, k=keys[i], spec=spec, f=f):
            x = sample_n(spec, k, p, 1)[0]  # the draw of pathwise(num_samples=1)
            return f(x), x

        (value, x), g = jax.value_and_grad(loss, has_aux=True)(params[name])
        x = jax.lax.stop_gradient(x)
        lp, g_lp = jax.value_and_grad(lambda p, x=x, spec=spec: spec.log_prob(p, x))(params[name])
        out[name] = (value, g, x, lp, g_lp)
    return out


@functools.cache
def _transformed():
    """jit(shard_map(vmap(value_and_grad))) over 8 devices: one key and one row per device."""
    assert jax.device_count() >= NUM_DEVICES, "conftest must force 8 CPU devices"
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    params = {n: _rows(n) for n in STUDIES}
    mesh = Mesh(np.array(jax.devices()[:NUM_DEVICES]), ("d",))
    body = jax.shard_map(
        jax.vmap(_spec_body), mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P("d")
    )
    keys = _keys(NUM_KEYS, 2)[:NUM_DEVICES]  # the study's first keys (a fresh copy)
    return jax.tree.map(np.asarray, jax.jit(body)(keys, params))


@pytest.mark.xdist_group("dists_study")
def test_every_spec_under_jit_vmap_grad_shard_map_equals_the_unbatched_study():
    """shard_map over 8 devices of vmap over keys and parameter rows, of value_and_grad, under
    jit: the rows with the study's parameters equal the study's pathwise gradients on the same
    keys, computed by the unbatched program (lax.map) of the z-tests."""
    out = _transformed()
    study = _studies()
    for name in STUDIES:
        _, g, _, _, _ = out[name]
        for got, want in zip(
            jax.tree.leaves(g), jax.tree.leaves(study[name, "pathwise"]), strict=True
        ):
            np.testing.assert_allclose(
                got[:STUDY_ROWS], want[:STUDY_ROWS], rtol=2e-5, atol=1e-6, err_msg=name
            )


@pytest.mark.xdist_group("dists_study")
def test_extreme_parameters_give_finite_samples_and_gradients_or_documented_infinities():
    out = _transformed()
    for name, extremes in EXTREMES.items():
        value, g, x, lp, g_lp = out[name]
        for r in range(STUDY_ROWS, NUM_DEVICES):
            row = (r - STUDY_ROWS) % len(extremes)
            what = f"{name} at {extremes[row]}"
            assert np.all(np.isfinite(x[r])) and np.isfinite(value[r]), (what, x[r])
            for leaf in jax.tree.leaves(g):
                assert np.all(np.isfinite(leaf[r])), (what, "pathwise gradient", leaf[r])
            if (name, row) in INFINITE_LOG_PROB:
                assert not np.isfinite(lp[r]) and not np.isnan(lp[r]), (what, lp[r])
                continue
            assert np.isfinite(lp[r]), (what, lp[r])
            for leaf in jax.tree.leaves(g_lp):
                assert np.all(np.isfinite(leaf[r])), (what, "log_prob gradient", leaf[r])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, F32, F64])
def test_outputs_keep_the_parameters_dtype(dtype):
    """Abstract evaluation only (no compile): bfloat16 in, bfloat16 out, computed in float32."""
    for name in STUDIES:
        spec = D.SPECS[name]
        params = jax.tree.map(lambda a: a[0].astype(dtype), _rows(name))
        key = jax.random.key(0)
        x = jax.eval_shape(spec.sample, key, params)
        assert x.dtype == dtype, name
        assert jax.eval_shape(spec.log_prob, params, x).dtype == dtype, name
        assert jax.eval_shape(spec.log_prob_elementwise, params, x).dtype == dtype, name
        if name.startswith("relaxed"):
            continue
        for method in ("entropy", "mean", "variance"):
            assert jax.eval_shape(getattr(spec, method), params).dtype == dtype, (name, method)
