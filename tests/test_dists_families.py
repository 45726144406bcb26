"""The distribution families of ``jaxgrad.dists`` against SciPy.

Densities (joint and elementwise), CDFs, means, variances and entropies equal
SciPy's (or a formula written out independently in NumPy) in float32 and
float64; samples pass a Kolmogorov-Smirnov test against SciPy's CDF on a fixed
key (one batched draw per family); the Concrete densities integrate to one
and agree with the frequencies of their samples; bad parameters raise.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats
from scipy.integrate import quad

import jaxgrad

D = jaxgrad.dists
F32, F64 = jnp.float32, jnp.float64


def _key(i):
    return jax.random.key(20261123 + i)


def _logistic_logit(y, logits, t):
    """The binary Concrete in SciPy terms: logit(y) is Logistic(l / t, 1 / t)."""
    z = special.logit(y)
    return stats.logistic(logits / t, 1 / t), z


# name -> (params in float64, a function of the params returning a frozen SciPy distribution)
UNIVARIATE = {
    "normal": (([0.3, -1.0, 2.0], [0.5, 1.0, 3.0]), lambda p: stats.norm(p[0], p[1])),
    "log_normal": (
        ([0.3, -1.0, 0.5], [0.5, 1.0, 0.2]),
        lambda p: stats.lognorm(p[1], scale=np.exp(p[0])),
    ),
    "logistic": (([0.3, -1.0, 2.0], [0.5, 1.0, 3.0]), lambda p: stats.logistic(p[0], p[1])),
    "laplace": (([0.3, -1.0, 2.0], [0.5, 1.0, 3.0]), lambda p: stats.laplace(p[0], p[1])),
    "uniform": (
        ([-1.0, 0.0, 2.0], [0.5, 3.0, 2.5]),
        lambda p: stats.uniform(p[0], p[1] - p[0]),
    ),
    "exponential": (([0.5, 1.0, 4.0],), lambda p: stats.expon(scale=1 / p[0])),
    "gamma": (([0.3, 2.0, 10.0], [0.5, 1.0, 3.0]), lambda p: stats.gamma(p[0], scale=1 / p[1])),
    "beta": (([0.5, 2.0, 5.0], [0.7, 3.0, 1.5]), lambda p: stats.beta(p[0], p[1])),
    # SciPy's von Mises CDF and variance are approximations from kappa = 50 up (errors 3e-6 and
    # 4e-5 there): larger concentrations are checked against quadrature below.
    "von_mises": (([0.3, -1.0, 2.0], [0.5, 3.0, 20.0]), lambda p: stats.vonmises(p[1], p[0])),
}


#: A point outside the support of every factor (families with a bounded support).
OUTSIDE = {"log_normal": -1.0, "uniform": 3.5, "exponential": -0.5, "gamma": -1e-3, "beta": 1.5}


def _params(name, dtype):
    raw = UNIVARIATE[name][0]
    arrays = tuple(jnp.asarray(p, dtype) for p in raw)
    return arrays[0] if len(arrays) == 1 else arrays


def _tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == F32 else {"rtol": 1e-10, "atol": 1e-12}


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", sorted(UNIVARIATE))
def test_univariate_densities_cdf_moments_entropy_equal_scipy(name, dtype):
    spec = D.SPECS[name]
    raw, make = UNIVARIATE[name]
    ref = make(tuple(np.asarray(p, np.float64) for p in raw))
    params = _params(name, dtype)
    # Row 0: inside the support; row 1: outside it (log_prob -inf, prob 0), or a far tail.
    x64 = np.stack(
        [
            ref.ppf([0.1, 0.5, 0.93]),
            np.full(3, OUTSIDE[name]) if name in OUTSIDE else ref.ppf([0.999] * 3),
        ]
    )
    x = jnp.asarray(x64, dtype)
    xr = np.asarray(x, np.float64)  # the points actually evaluated (rounded in float32)
    tol = _tol(dtype)
    got = _evaluate(spec, params, x)
    want = {
        "log_prob_elementwise": ref.logpdf(xr),
        "log_prob": ref.logpdf(xr).sum(),
        "prob_elementwise": ref.pdf(xr),
        "prob": np.prod(ref.pdf(xr)),
        "cdf": ref.cdf(xr),
        "entropy_elementwise": ref.entropy(),
        "entropy": ref.entropy().sum(),
        "mean": ref.mean(),
        "variance": _von_mises_var(raw[1]) if name == "von_mises" else ref.var(),
    }
    for method, value in want.items():
        assert got[method].dtype == dtype, (method, got[method].dtype)
        np.testing.assert_allclose(
            np.asarray(got[method], np.float64), value, **tol, err_msg=method
        )
    assert spec.reparameterizable is True


def _von_mises_density(kappa):
    return lambda t: np.exp(-2 * kappa * np.sin(t / 2) ** 2) / (2 * np.pi * special.i0e(kappa))


def _von_mises_var(kappas):
    """E[(x - loc)^2] by adaptive quadrature (SciPy's var: 3 s, and 4e-10 off at kappa = 20)."""
    out = []
    for k in kappas:
        lim = min(np.pi, 12 / np.sqrt(k))
        dens = _von_mises_density(k)
        out.append(quad(lambda t, d=dens: t * t * d(t), -lim, lim, epsabs=1e-16, epsrel=1e-13)[0])
    return np.array(out)


def _evaluate(spec, params, x):
    """Every density, CDF and moment of ``spec`` at once, in one compiled program."""
    return _evaluator(spec)(params, x)


WITH_X = ("log_prob", "prob", "cdf", "log_prob_elementwise", "prob_elementwise")
WITHOUT_X = ("entropy", "entropy_elementwise", "mean", "variance", "covariance")


@functools.cache
def _evaluator(spec):
    def run(params, x):
        out = {m: getattr(spec, m)(params, x) for m in WITH_X if hasattr(spec, m)}
        if not spec.name.startswith("relaxed"):  # no closed-form moments or entropy
            out |= {m: getattr(spec, m)(params) for m in WITHOUT_X if hasattr(spec, m)}
        return out

    return jax.jit(run)


def test_von_mises_cdf_variance_entropy_at_large_concentrations_equal_quadrature():
    for kappa in (50.0, 500.0, 1e3):
        density = _von_mises_density(kappa)
        q = np.array([0.3, 1.5, 4.0, -2.0]) / np.sqrt(kappa)
        cdf = [0.5 + quad(density, 0, v, epsabs=1e-15, epsrel=1e-13)[0] for v in q]
        lim = min(np.pi, 12 / np.sqrt(kappa))
        var = _von_mises_var([kappa])[0]
        ent = quad(
            lambda t, d=density: -d(t) * np.log(d(t)), -lim, lim, epsabs=1e-16, epsrel=1e-13
        )[0]
        for dtype, rtol in ((F64, 1e-10), (F32, 1e-5)):
            p = (jnp.asarray(0.7, dtype), jnp.asarray(kappa, dtype))
            # The last point is shifted by a turn: cdf(x + 2 pi) = cdf(x) + 1, as in SciPy.
            x = jnp.asarray(0.7 + q + np.array([0, 0, 0, 2 * np.pi]), dtype)
            got = _evaluate(D.von_mises, p, x)
            np.testing.assert_allclose(got["cdf"], np.array(cdf) + [0, 0, 0, 1], rtol=rtol)
            np.testing.assert_allclose(got["variance"], var, rtol=rtol)
            np.testing.assert_allclose(got["entropy"], ent, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_multivariate_normal_equals_scipy(dtype):
    loc = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]])
    tril = np.array([[[1.5, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.4, 0.2, 0.5]]] * 2)
    tril[1] *= 0.7
    tril_upper = tril + np.triu(np.ones((3, 3)), 1)  # only the lower triangle is read
    params = (jnp.asarray(loc, dtype), jnp.asarray(tril_upper, dtype))
    x = np.array([[0.0, 0.5, 1.0], [1.2, -0.3, 0.1]])
    refs = [stats.multivariate_normal(loc[b], tril[b] @ tril[b].T) for b in range(2)]
    tol = _tol(dtype)
    got = _evaluate(D.multivariate_normal, params, jnp.asarray(x, dtype))
    assert got["log_prob_elementwise"].shape == (2,) and got["log_prob"].dtype == dtype
    cov = np.stack([r.cov for r in refs])
    want = {
        "log_prob_elementwise": [r.logpdf(x[b]) for b, r in enumerate(refs)],
        "log_prob": sum(r.logpdf(x[b]) for b, r in enumerate(refs)),
        "entropy_elementwise": [r.entropy() for r in refs],
        "mean": loc,
        "covariance": cov,
        "variance": np.diagonal(cov, axis1=1, axis2=2),
    }
    for method, value in want.items():
        np.testing.assert_allclose(got[method], value, **tol, err_msg=method)
    # A scale_tril shared by the batch broadcasts against loc.
    shared = (params[0], params[1][0])
    np.testing.assert_allclose(
        _evaluate(D.multivariate_normal, shared, jnp.asarray(x, dtype))["log_prob_elementwise"],
        [stats.multivariate_normal(loc[b], tril[0] @ tril[0].T).logpdf(x[b]) for b in range(2)],
        **tol,
    )


@pytest.mark.parametrize("dtype", [F32, F64])
def test_dirichlet_equals_scipy(dtype):
    alpha = np.array([[0.5, 2.0, 3.0], [4.0, 1.0, 1.5]])
    x = np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    params = jnp.asarray(alpha, dtype)
    tol = _tol(dtype)
    refs = [stats.dirichlet(a) for a in alpha]
    xj = jnp.asarray(x, dtype)
    xr = np.asarray(xj, np.float64)
    xr = xr / xr.sum(-1, keepdims=True)  # SciPy insists on the simplex to 1e-10
    got = _evaluate(D.dirichlet, params, xj)
    want = {
        "log_prob_elementwise": [r.logpdf(xr[b]) for b, r in enumerate(refs)],
        "log_prob": sum(r.logpdf(xr[b]) for b, r in enumerate(refs)),
        "entropy_elementwise": [r.entropy() for r in refs],
        "entropy": sum(r.entropy() for r in refs),
        "mean": [r.mean() for r in refs],
        "variance": [r.var() for r in refs],
    }
    for method, value in want.items():
        assert got[method].dtype == dtype, method
        np.testing.assert_allclose(got[method], value, **tol, err_msg=method)


def _concrete_log_density(y, logits, t):
    """Maddison et al. (2017) eq. 1, the textbook product, in float64 NumPy."""
    k = y.shape[-1]
    alpha = np.exp(logits)
    num = np.prod(alpha * y ** (-t - 1), axis=-1)  # t: one per factor, shape [..., 1]
    den = np.sum(alpha * y ** (-t), axis=-1) ** k
    return np.log(math.factorial(k - 1) * t[..., 0] ** (k - 1) * num / den)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_concrete_densities_equal_independent_formulas(dtype):
    tol = _tol(dtype)
    # Binary: logit(y) is Logistic(l / t, 1 / t) (SciPy), with the Jacobian of the sigmoid.
    logits, t = np.array([0.3, -1.0, 2.0]), np.array([0.5, 1.0, 2.5])
    y = np.array([0.2, 0.6, 0.97])
    params = (jnp.asarray(logits, dtype), jnp.asarray(t, dtype))
    outside = _evaluate(D.relaxed_bernoulli, params, jnp.asarray([0.0, 1.0, -0.5], dtype))
    assert np.all(np.asarray(outside["log_prob_elementwise"]) == -np.inf)
    ref, z = _logistic_logit(y, logits, t)
    want = ref.logpdf(z) - np.log(y) - np.log1p(-y)
    rb = D.relaxed_bernoulli
    got = _evaluate(rb, params, jnp.asarray(y, dtype))
    np.testing.assert_allclose(got["log_prob_elementwise"], want, **tol)
    np.testing.assert_allclose(got["log_prob"], want.sum(), **tol)
    np.testing.assert_allclose(got["cdf"], ref.cdf(z), **tol)
    textbook = np.stack([y, 1 - y], -1), np.stack([logits, 0 * logits], -1), t[:, None]
    np.testing.assert_allclose(got["log_prob_elementwise"], _concrete_log_density(*textbook), **tol)
    # K = 3, batch 2, one temperature per factor.
    logits3 = np.array([[0.3, -1.0, 2.0], [0.0, 0.5, -0.5]])
    t3 = np.array([0.7, 1.6])
    y3 = np.array([[0.2, 0.1, 0.7], [0.3, 0.3, 0.4]])
    p3 = (jnp.asarray(logits3, dtype), jnp.asarray(t3, dtype))
    c = D.relaxed_one_hot_categorical
    np.testing.assert_allclose(
        _evaluate(c, p3, jnp.asarray(y3, dtype))["log_prob_elementwise"],
        _concrete_log_density(y3, logits3, t3[:, None]),
        **tol,
    )
    for spec, p in ((rb, params), (c, p3)):
        for method in ("mean", "variance", "entropy"):
            with pytest.raises(NotImplementedError, match=rf"{spec.name}\.{method}: .*Monte Carlo"):
                getattr(spec, method)(p)


def test_concrete_log_prob_is_finite_at_low_temperature_and_huge_logits():
    """The textbook product overflows (inf/inf) here; the log-space form does not."""
    y = jnp.asarray([1e-30, 0.5, 1 - 1e-7], F32)
    lp = _log_prob_elementwise(D.relaxed_bernoulli)
    for logits in (1e4, -1e4, 0.0):
        for t in (1e-3, 0.05):
            got = lp((jnp.full(3, logits, F32), jnp.asarray(t, F32)), y)
            assert np.all(np.isfinite(np.asarray(got))), (logits, t, got)
    y3 = jnp.asarray([1e-30, 1e-20, 1.0 - 1e-20], F32)
    lp3 = _log_prob_elementwise(D.relaxed_one_hot_categorical)(
        (jnp.asarray([1e4, -1e4, 0.0], F32), jnp.asarray(0.01, F32)), y3
    )
    assert np.isfinite(float(lp3))


# ----------------------------------------------------------------- samples (KS)

N_KS = 4000

# name -> (params of one factor, cdf of the samples), in float64
KS = {
    name: (tuple(p[1] for p in raw), make(tuple(np.float64(p[1]) for p in raw)).cdf)
    for name, (raw, make) in UNIVARIATE.items()
}
KS["gamma_small"] = ((0.3, 2.0), stats.gamma(0.3, scale=0.5).cdf)
KS["beta_small"] = ((0.4, 0.6), stats.beta(0.4, 0.6).cdf)
KS["von_mises_flat"] = ((-2.5, 0.01), stats.vonmises(0.01, -2.5).cdf)
KS["von_mises_peaked"] = ((1.0, 500.0), stats.vonmises(500.0, 1.0).cdf)
KS["relaxed_bernoulli"] = (
    (0.7, 0.4),
    lambda y: stats.logistic(0.7 / 0.4, 1 / 0.4).cdf(special.logit(y)),
)


@functools.cache
def _ks_samples():
    """Every KS case's samples, and the multivariate ones, from one compiled program.

    The cases of one spec are one draw (their parameters concatenated), so each
    sampler is compiled once.
    """
    groups = {}
    for case in sorted(KS):
        groups.setdefault(_spec_of(case).name, []).append(case)

    def draw(keys):
        out = {}
        for i, (name, cases) in enumerate(sorted(groups.items())):
            cols = zip(*(KS[c][0] for c in cases), strict=True)
            params = tuple(jnp.repeat(jnp.asarray(col, F32), N_KS) for col in cols)
            x = D.SPECS[name].sample(keys[i], params[0] if len(params) == 1 else params)
            out |= {c: x[j * N_KS : (j + 1) * N_KS] for j, c in enumerate(cases)}
        loc, tril = (jnp.asarray(a, F32) for a in MVN_KS)
        out["multivariate_normal"] = D.multivariate_normal.sample(
            keys[-3], (jnp.broadcast_to(loc, (N_KS, 3)), tril)
        )
        out["dirichlet"] = D.dirichlet.sample(keys[-2], jnp.full((N_KS, 3), DIRICHLET_KS, F32))
        # Concrete: K = 2 (one logit difference) and K = 3 at each temperature of CONCRETE3_T.
        logits = jnp.asarray(
            [[0.9, 0.2, -jnp.inf]] * N_KS + [CONCRETE3] * (len(CONCRETE3_T) * N_KS), F32
        )
        t = jnp.repeat(jnp.asarray((0.6, *CONCRETE3_T), F32), N_KS)
        c = D.relaxed_one_hot_categorical.sample(keys[-1], (logits, t))
        out["relaxed_one_hot_categorical"] = c[:N_KS, :2]
        for j, t in enumerate(CONCRETE3_T):
            out[f"concrete3_{t}"] = c[(j + 1) * N_KS : (j + 2) * N_KS]
        return out

    keys = jax.random.split(_key(100), len(groups) + 3)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), jax.jit(draw)(keys))


def _spec_of(case):
    return D.SPECS[case.split("_small")[0].split("_flat")[0].split("_peaked")[0]]


MVN_KS = (
    np.array([0.3, -1.0, 2.0]),
    np.array([[1.5, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.4, 0.2, 0.5]]),
)
DIRICHLET_KS = np.array([0.5, 2.0, 3.0])
CONCRETE3, CONCRETE3_T = np.array([0.5, -0.3, 0.2]), (1.0, 2.0)


@pytest.mark.xdist_group("dists_ks")
@pytest.mark.parametrize("case", sorted(KS))
def test_samples_match_scipy_ks(case):
    x = _ks_samples()[case]
    assert x.shape == (N_KS,) and np.all(np.isfinite(x))
    assert stats.kstest(x, KS[case][1]).pvalue > 0.01


@pytest.mark.xdist_group("dists_ks")
def test_multivariate_samples_match_scipy_ks():
    # Multivariate normal: each coordinate and a projection are normal with the right moments.
    loc, tril = MVN_KS
    cov = tril @ tril.T
    x = _ks_samples()["multivariate_normal"]
    w = np.array([1.0, -2.0, 0.5])
    for v, m, s in [(x[:, i], loc[i], np.sqrt(cov[i, i])) for i in range(3)] + [
        (x @ w, w @ loc, np.sqrt(w @ cov @ w))
    ]:
        assert stats.kstest(v, stats.norm(m, s).cdf).pvalue > 0.01
    # Dirichlet: the marginals are Beta(alpha_k, alpha_0 - alpha_k); rows sum to one.
    alpha = DIRICHLET_KS
    y = _ks_samples()["dirichlet"]
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    for k in range(3):
        assert stats.kstest(y[:, k], stats.beta(alpha[k], alpha.sum() - alpha[k]).cdf).pvalue > 0.01
    # Concrete with K = 2: the first coordinate is the binary Concrete of logit l0 - l1.
    v = _ks_samples()["relaxed_one_hot_categorical"][:, 0]
    ref = stats.logistic(0.7 / 0.6, 1 / 0.6)
    assert stats.kstest(v, lambda y: ref.cdf(special.logit(y))).pvalue > 0.01


def test_samples_equal_the_samplers_on_the_same_key():
    """relaxed_bernoulli / relaxed_one_hot_categorical sample what the samplers return."""
    logits = jnp.asarray([[0.3, -1.0, 2.0], [0.0, 0.5, -0.5]], F32)
    np.testing.assert_array_equal(
        D.relaxed_bernoulli.sample(_key(4), (logits, 0.5)),
        jaxgrad.relaxed_bernoulli(_key(4), logits, temperature=0.5),
    )
    t = jnp.asarray([0.5, 2.0], F32)
    np.testing.assert_array_equal(
        D.relaxed_one_hot_categorical.sample(_key(5), (logits, t)),
        jaxgrad.gumbel_softmax(_key(5), logits, temperature=t[:, None]),
    )


# ----------------------------------------------------------------- Concrete: mass and frequencies


def _binary_concrete_mass(logits, t):
    """The integral of the binary density over (0, 1), in the variable z = logit(y)."""
    z = np.linspace(-60.0, 60.0, 24001) / t + logits / t
    y = special.expit(z)
    lp = _log_prob_elementwise(D.relaxed_bernoulli)((logits, t), jnp.asarray(y, F64))
    dens = np.exp(np.asarray(lp)) * y * (1 - y)  # dy = y (1 - y) dz; 0 where y rounds to 0 or 1
    return np.trapezoid(dens, z)


@functools.cache
def _log_prob_elementwise(spec):
    return jax.jit(spec.log_prob_elementwise)


def _simplex_grid(n=160):
    """Gauss-Legendre nodes on the 2-simplex: y1 = u, y2 = (1 - u) v, weight (1 - u)."""
    g, w = np.polynomial.legendre.leggauss(n)
    g, w = (g + 1) / 2, w / 2
    u, v = np.meshgrid(g, g, indexing="ij")
    y = np.stack([u, (1 - u) * v, (1 - u) * (1 - v)], -1).reshape(-1, 3)
    return y, (np.outer(w, w) * (1 - u)).reshape(-1)


@pytest.mark.xdist_group("dists_ks")
def test_concrete_log_prob_integrates_to_one_and_matches_sample_frequencies():
    # (Below temperature 0.5, float64 rounds y to 0 or 1 on a measurable part of the mass.)
    for logits, t in [(0.0, 1.0), (1.5, 0.5), (-2.0, 2.0), (0.3, 0.7)]:
        np.testing.assert_allclose(_binary_concrete_mass(logits, t), 1.0, atol=1e-7)
    y, w = _simplex_grid()
    yj = jnp.asarray(y, F64)
    logits = jnp.asarray(CONCRETE3, F64)
    for t in CONCRETE3_T:
        c = D.relaxed_one_hot_categorical
        lp = _log_prob_elementwise(c)((logits, jnp.asarray(t, F64)), yj)
        dens = np.exp(np.asarray(lp))
        np.testing.assert_allclose(np.sum(dens * w), 1.0, atol=1e-4)
        # The frequencies of events of the samples equal the integrals of the density over them.
        s = _ks_samples()[f"concrete3_{t}"]
        for event in (
            lambda v: v[:, 0] < 0.25,
            lambda v: v[:, 1] > 0.4,
            lambda v: v[:, 2] > v[:, 0],
        ):
            p = float(np.sum(dens * w * event(y)))
            freq = float(np.mean(event(s)))
            assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / N_KS), (t, freq, p)
        # Power: the density of another temperature is rejected by the same comparison.
        if t == 1.0:
            other = np.exp(
                np.asarray(_log_prob_elementwise(c)((logits, jnp.asarray(1.5, F64)), yj))
            )
            p = float(np.sum(other * w * (y[:, 0] < 0.25)))
            freq = float(np.mean(s[:, 0] < 0.25))
            assert abs(freq - p) > 5 * math.sqrt(p * (1 - p) / N_KS), (freq, p)


def test_traced_parameters_are_documented_not_checked():
    """Under jit a non-positive concentration cannot be checked: log_prob is then not finite
    (NaN or inf), as the specs document; the same concrete value raises."""
    lp = jax.jit(D.gamma.log_prob)((jnp.asarray(-1.0, F32), jnp.asarray(1.0, F32)), 0.5)
    assert not np.isfinite(float(lp))
    with pytest.raises(ValueError, match=r"gamma\.log_prob: concentration must be positive"):
        D.gamma.log_prob((-1.0, 1.0), 0.5)
