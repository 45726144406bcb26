"""KL divergences: closed forms against Monte Carlo, zero at p = q, extremes, kl_estimate, errors.

Every closed form is compared per factor with the mean of 20 000 samples of
``log p(x) - log q(x)``, ``x ~ p``, at 5 of the Monte Carlo's own standard
errors (``assert_unbiased``), and the same assertion rejects the KL scaled by
1.1 (power). One jitted program per pair computes the samples, the closed
form, its value and gradients at ``p = q``. ``kl_estimate``'s gradient is
z-tested against ``jax.grad`` of the closed form for a pathwise (normal) and a
score-function (bernoulli) ``p``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import dists as D
from jaxgrad.diagnostics import assert_unbiased, grad_samples

F64 = jnp.float64
NUM_MC = 20_000


def a64(*xs):
    """Float64 arrays: one array for one argument, else a tuple."""
    out = tuple(jnp.asarray(x, F64) for x in xs)
    return out[0] if len(out) == 1 else out


_L1 = np.array([[[1.0, 0.0], [0.6, 0.8]], [[0.7, 0.0], [-0.4, 1.3]]])
_L2 = np.array([[[1.3, 0.0], [-0.5, 1.1]], [[1.0, 0.0], [0.3, 0.9]]])


def _same(pp, qp):
    return pp, pp


#: name -> (p, p_params, q, q_params, equal(pp, qp) -> params of p and q with p == q).
CASES = {
    "normal": (
        D.normal,
        a64([0.0, 0.5, -1.0], [1.0, 0.5, 2.0]),
        D.normal,
        a64([0.3, 0.0, -0.5], [1.5, 1.0, 1.5]),
        _same,
    ),
    "log_normal": (
        D.log_normal,
        a64([0.2, -0.3, 1.0], [0.4, 1.0, 0.7]),
        D.log_normal,
        a64([0.0, 0.5, 0.6], [0.6, 1.2, 1.0]),
        _same,
    ),
    "multivariate_normal": (
        D.multivariate_normal,
        a64([[0.1, -0.2], [0.5, 0.0]], _L1),
        D.multivariate_normal,
        a64([[0.5, 0.3], [0.0, -0.4]], _L2),
        _same,
    ),
    "bernoulli": (
        D.bernoulli,
        a64([-1.0, 0.5, 2.0]),
        D.bernoulli,
        a64([0.5, -1.0, 0.0]),
        _same,
    ),
    "categorical": (
        D.categorical,
        a64([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]]),
        D.categorical,
        a64([[1.0, 0.0, 0.0], [-0.5, 0.5, 1.0]]),
        _same,
    ),
    "exponential": (
        D.exponential,
        a64([1.0, 2.0, 0.5]),
        D.exponential,
        a64([2.5, 1.0, 0.7]),
        _same,
    ),
    "gamma": (
        D.gamma,
        a64([2.0, 0.7, 5.0], [1.0, 2.0, 3.0]),
        D.gamma,
        a64([3.0, 1.0, 4.0], [1.5, 1.0, 2.0]),
        _same,
    ),
    "beta": (
        D.beta,
        a64([2.0, 0.8, 5.0], [3.0, 1.5, 1.0]),
        D.beta,
        a64([1.0, 1.0, 3.0], [2.0, 1.0, 2.0]),
        _same,
    ),
    "dirichlet": (
        D.dirichlet,
        a64([[1.0, 2.0, 3.0], [0.8, 4.0, 1.5]]),
        D.dirichlet,
        a64([[2.0, 2.0, 2.0], [1.0, 1.5, 3.0]]),
        _same,
    ),
    "uniform": (
        D.uniform,
        a64([0.0, 0.2, -3.0], [1.0, 0.5, 3.0]),
        D.uniform,
        a64([-1.0, 0.0, -3.0], [1.0, 2.0, 5.0]),
        _same,
    ),
    "laplace": (
        D.laplace,
        a64([0.0, 1.0, -0.5], [1.0, 0.5, 2.0]),
        D.laplace,
        a64([0.5, 0.0, 0.0], [1.5, 1.0, 1.0]),
        _same,
    ),
    "exponential_gamma": (
        D.exponential,
        a64([1.0, 2.0]),
        D.gamma,
        a64([2.0, 0.5], [1.0, 1.0]),
        lambda pp, qp: (pp, (jnp.ones_like(pp), pp)),  # gamma(1, rate) is exponential(rate)
    ),
    "gamma_exponential": (
        D.gamma,
        a64([4.0, 0.8], [1.0, 3.0]),
        D.exponential,
        a64([0.5, 1.0]),
        lambda pp, qp: ((jnp.ones_like(qp), qp), qp),
    ),
}


def _tile(params, n):
    """``params`` with a leading axis of ``n`` on every array: ``n`` independent joint samples."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), params)


@functools.cache
def _mc(name):
    """Monte Carlo samples, closed form, and value and gradients at ``p = q`` for one pair."""
    p, pp, q, qp, equal = CASES[name]

    @jax.jit
    def run(key, pp, qp):
        x = p.sample(key, _tile(pp, NUM_MC))
        samples = p.log_prob_elementwise(pp, x) - q.log_prob_elementwise(qp, x)
        closed = D.kl_elementwise(p, pp, q, qp)

        def kl(a, b):
            return D.kl(p, a, q, b)

        zero, grads = jax.value_and_grad(kl, argnums=(0, 1))(*equal(pp, qp))
        return {"samples": samples, "closed": closed, "kl": kl(pp, qp), "zero": zero, "g": grads}

    return run(jax.random.key(100 + list(CASES).index(name)), pp, qp)


@pytest.mark.parametrize("name", list(CASES))
def test_closed_form_equals_monte_carlo_and_is_zero_at_p_equal_q(name):
    out = _mc(name)
    closed = np.asarray(out["closed"])
    assert out["closed"].dtype == F64 and closed.shape == out["samples"].shape[1:]
    assert np.all(closed > 0) and np.all(np.isfinite(closed))
    np.testing.assert_allclose(float(out["kl"]), closed.sum(), rtol=1e-12)
    assert_unbiased(out["samples"], closed, atol=1e-9)
    with pytest.raises(AssertionError):  # power: the same test rejects a 10% error
        assert_unbiased(out["samples"], 1.1 * closed, atol=1e-9)
    assert abs(float(out["zero"])) < 1e-12
    for g in jax.tree.leaves(out["g"]):
        assert np.all(np.isfinite(g)), name
        # uniform: p = q is on the boundary of the finite region (the KL is +inf once
        # q's support shrinks), so the gradient there is the one-sided one, not 0.
        if name != "uniform":
            assert np.all(np.abs(np.asarray(g)) < 1e-9), name


def test_multivariate_normal_equals_the_numpy_formula():
    mvn = D.multivariate_normal
    (m1, l1), (m2, l2) = CASES["multivariate_normal"][1], CASES["multivariate_normal"][3]
    got = np.asarray(D.kl_elementwise(mvn, (m1, l1), mvn, (m2, l2)))
    for i in range(2):
        s1, s2 = _L1[i] @ _L1[i].T, _L2[i] @ _L2[i].T
        dm = np.asarray(m2[i] - m1[i])
        want = 0.5 * (
            np.trace(np.linalg.solve(s2, s1))
            + dm @ np.linalg.solve(s2, dm)
            - 2
            + np.log(np.linalg.det(s2) / np.linalg.det(s1))
        )
        np.testing.assert_allclose(got[i], want, rtol=1e-12)
    # Only the lower triangle is read (as in log_prob).
    upper = l1 + jnp.triu(jnp.ones_like(l1), 1)
    np.testing.assert_allclose(D.kl_elementwise(mvn, (m1, upper), mvn, (m2, l2)), got, rtol=1e-12)


@jax.jit
def _broadcasting(normal_p, normal_q, cat_p, cat_q, mvn_p, mvn_q):
    n, c, mvn = D.normal, D.categorical, D.multivariate_normal
    return [
        (D.kl_elementwise(s, a, s, b), D.kl(s, a, s, b))
        for s, a, b in ((n, normal_p, normal_q), (c, cat_p, cat_q), (mvn, mvn_p, mvn_q))
    ]


def test_elementwise_broadcasts_batch_shapes_and_sums_to_kl():
    l1 = CASES["multivariate_normal"][1][1]
    out = _broadcasting(
        a64([0.0, 1.0, 2.0], 1.0),
        a64([[0.0], [1.0]], [[1.0], [2.0]]),
        a64([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]),
        a64([0.0, 1.0, 2.0]),
        (jnp.zeros((3, 1, 2), F64), l1),
        CASES["multivariate_normal"][3],
    )
    for (e, total), shape in zip(out, [(2, 3), (2,), (3, 2)], strict=True):
        assert e.shape == shape
        np.testing.assert_allclose(total, jnp.sum(e), rtol=1e-12)
    # Broadcast factors are the KLs of the broadcast params: KL(N(m, 1) || N(1, 2)) in row 1.
    m = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(out[0][0][1], np.log(2) + (1 + (m - 1) ** 2) / 8 - 0.5)
    np.testing.assert_allclose(out[1][0][1], 0.0, atol=1e-12)  # equal logits


@jax.jit
def _all_kl(params):
    """``kl_elementwise`` of every case, one program."""
    return {
        name: D.kl_elementwise(CASES[name][0], pp, CASES[name][2], qp)
        for name, (pp, qp) in params.items()
    }


def test_float32_runs_finite_and_matches_float64():
    params = {name: (c[1], c[3]) for name, c in CASES.items()}
    f32 = _all_kl(jax.tree.map(lambda a: a.astype(jnp.float32), params))
    for name in CASES:
        f64 = _mc(name)["closed"]
        assert f32[name].dtype == jnp.float32 and np.all(np.isfinite(f32[name])), name
        np.testing.assert_allclose(f32[name], f64, rtol=2e-5, err_msg=name)
    # Mixed dtypes: computed and returned in the wider one (explicit, strict promotion).
    mixed = D.kl(D.normal, (jnp.float32(0.0), jnp.float32(1.0)), D.normal, a64(0.0, 2.0))
    assert mixed.dtype == F64


EXTREMES = [
    (D.normal, ((0.0, 1e-6), (1.0, 1e6)), ((0.0, 1e6), (1.0, 1e-6))),
    (D.log_normal, ((0.0, 1e-6), (1.0, 1e6)), ((0.0, 1e6), (1.0, 1e-6))),
    (D.laplace, ((0.0, 1e-6), (1.0, 1e6)), ((0.0, 1e6), (1.0, 1e-6))),
    (D.exponential, (1e-6, 1e6), (1e6, 1e-6)),
    (D.gamma, ((1e-3, 1.0), (1e3, 1.0)), ((1e3, 1e-6), (1e-3, 1e6))),
    (D.beta, ((1e-3, 1e3), (1e3, 1e-3)), ((1e3, 1.0), (1e-3, 1e-3))),
    (D.dirichlet, ([1e-3, 1e3, 1.0], [1e3, 1e-3, 1e-3]), ([1e3, 1e3, 1e3], [1e-3, 1e-3, 1e-3])),
    (D.bernoulli, ([1e4, -1e4, 1e4], [-1e4, 1e4, 1e4]), ([0.0, 0.0, 1e4], [1e4, -1e4, 0.0])),
    (D.categorical, ([1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]), ([1e4, 1e4, -1e4], [0.0, 0.0, 0.0])),
    (D.uniform, ((0.0, 1e-6), (-1e6, 1e6)), ((-1e-6, 1e-6), (-1e6, 1e6))),
    (
        D.multivariate_normal,
        (([0.0, 0.0], [[1e-6, 0.0], [0.0, 1e6]]), ([1.0, 0.0], [[1e6, 0.0], [1.0, 1e-6]])),
        (([0.0, 0.0], [[1e6, 0.0], [0.0, 1e6]]), ([0.0, 1.0], [[1e-6, 0.0], [0.0, 1e-6]])),
    ),
]


def _is_list(x):
    return isinstance(x, list)


@jax.jit
def _extremes(stacked):
    """Value and gradients of ``kl`` at every extreme pair, one program."""
    out = []
    for (spec, *_), (pp, qp) in zip(EXTREMES, stacked, strict=True):
        vg = jax.value_and_grad(lambda a, b, s=spec: D.kl(s, a, s, b), argnums=(0, 1))
        out.append(jax.vmap(vg)(pp, qp))
    return out


def test_extreme_params_give_finite_values_and_gradients():
    dtype = jnp.float32  # the narrower dtype is where scales and logits over- and underflow

    def stack(*trees):
        leaves = [jax.tree.map(lambda a: np.asarray(a, dtype), t, is_leaf=_is_list) for t in trees]
        return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *leaves)

    stacked = [
        (stack(*(p for p, _ in pairs)), stack(*(q for _, q in pairs))) for _, *pairs in EXTREMES
    ]
    for (spec, *_), (val, grads) in zip(EXTREMES, _extremes(stacked), strict=True):
        ok = val.dtype == dtype and np.all(np.isfinite(val)) and np.all(val >= 0)
        assert ok, (spec.name, val)
        for g in jax.tree.leaves(grads):
            assert np.all(np.isfinite(g)), (spec.name, dtype, g)


@jax.jit
def _infinite_cases(p_logits, q_logits):
    c, b, u = D.categorical, D.bernoulli, D.uniform
    row0, grads = jax.value_and_grad(lambda a, q: D.kl_elementwise(c, a, c, q)[0], argnums=(0, 1))(
        p_logits, q_logits
    )
    inf = jnp.inf
    return {
        "uniform": D.kl_elementwise(
            u, a64([0.0, 0.0, 0.5], [1.0, 2.0, 1.0]), u, a64([0.0, 0.0, 0.0], [1.0, 1.0, 2.0])
        ),
        "categorical": D.kl_elementwise(c, p_logits, c, q_logits),
        "row0": row0,
        "grads": grads,
        "bernoulli": D.kl_elementwise(b, a64([inf, -inf, 0.0, inf]), b, a64([0.0, 0.0, inf, inf])),
    }


def test_infinite_exactly_where_p_has_mass_that_q_lacks():
    inf = np.inf
    p_logits = a64([[0.0, -inf, 1.0], [0.0, 1.0, 1.0]])
    q_logits = a64([[1.0, -inf, 0.0], [1.0, -inf, 0.0]])
    out = _infinite_cases(p_logits, q_logits)
    np.testing.assert_allclose(out["uniform"], [0.0, inf, np.log(4.0)])  # not nested: inf
    pi, rho = jax.nn.softmax(p_logits[0]), jax.nn.softmax(q_logits[0])
    want = float(pi[0] * np.log(pi[0] / rho[0]) + pi[2] * np.log(pi[2] / rho[2]))
    # Row 0: the masked class has p = q = 0 (0 log 0 = 0); row 1: p > 0 = q, inf.
    np.testing.assert_allclose(out["categorical"], [want, inf], rtol=1e-12)
    assert float(out["row0"]) == pytest.approx(want, rel=1e-12)
    g_p, g_q = out["grads"]
    assert np.all(np.isfinite(g_p)) and np.all(np.isfinite(g_q))
    assert not np.any(np.asarray(g_p[1])) and not np.any(np.asarray(g_q[1]))  # inf row: zeros
    np.testing.assert_allclose(out["bernoulli"], [np.log(2.0), np.log(2.0), inf, 0.0])


# ----------------------------------------------------------------------------- kl_estimate

EST_CASES = {
    "normal": (D.normal, a64([0.2, -0.5], [1.0, 0.7]), a64([0.0, 0.3], [1.5, 1.0])),
    "bernoulli": (D.bernoulli, a64([0.3, -1.0, 1.5]), a64([1.0, 0.0, -0.5])),
}


@pytest.mark.parametrize("name", list(EST_CASES))
def test_kl_estimate_gradient_is_unbiased(name):
    spec, pp, qp = EST_CASES[name]

    def est(key, pq):
        return D.kl_estimate(key, spec, pq[0], spec, pq[1], num_samples=4)

    samples = grad_samples(est, jax.random.key(7), (pp, qp), num_keys=4_000, batch_size=4_000)
    exact = jax.grad(lambda pq: D.kl(spec, pq[0], spec, pq[1]))((pp, qp))
    assert_unbiased(samples, exact)
    with pytest.raises(AssertionError):  # power: the same test rejects a 20% error
        assert_unbiased(samples, jax.tree.map(lambda g: 1.2 * g, exact))


@pytest.mark.parametrize("name", list(EST_CASES))
def test_kl_estimate_under_jit_and_vmap_over_keys(name):
    spec, pp, qp = EST_CASES[name]

    def est(key):
        return D.kl_estimate(key, spec, pp, spec, qp, num_samples=8)

    batched = jax.jit(jax.vmap(est))(jax.random.split(jax.random.key(3), 3))
    one = jax.jit(est)
    singles = [one(k) for k in jax.random.split(jax.random.key(3), 3)]
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched, singles, rtol=1e-10)
    assert len(set(np.asarray(batched).tolist())) == 3  # independent keys


def test_kl_estimate_with_one_sample_of_a_discrete_p_falls_back_to_the_score_function():
    b, (_, pp, qp) = D.bernoulli, EST_CASES["bernoulli"]
    val, g = jax.jit(
        jax.value_and_grad(lambda a: D.kl_estimate(jax.random.key(5), b, a, b, qp, num_samples=1))
    )(pp)
    assert np.isfinite(val) and g.shape == pp.shape and np.all(np.isfinite(g))


# ----------------------------------------------------------------------------- registry, errors


def test_register_kl_covers_user_classes_and_subclasses():
    class Point:
        pass

    class SubPoint(Point):
        pass

    @D.register_kl(Point, Point)
    def _kl(p, p_params, q, q_params):
        return jnp.where(p_params == q_params, 0.0, jnp.inf)

    assert float(D.kl(SubPoint(), jnp.array(1.0), Point(), jnp.array(1.0))) == 0.0
    assert D.kl_elementwise(Point(), jnp.zeros(3), Point(), jnp.ones(3)).shape == (3,)
    with pytest.raises(TypeError, match="register_kl: p_cls must be a class"):
        D.register_kl(D.normal, D.Normal)


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_bad_input_errors():
    n, lap = D.normal, D.laplace
    with pytest.raises(NotImplementedError, match=r"KL\(normal \|\| laplace\)") as e:
        D.kl(n, (0.0, 1.0), lap, (0.0, 1.0))
    assert "kl_estimate" in _one_line(e)
    with pytest.raises(NotImplementedError, match="relaxed_bernoulli"):
        D.kl_elementwise(D.relaxed_bernoulli, (0.0, 1.0), D.relaxed_bernoulli, (0.0, 1.0))

    class Custom:
        def sample(self, key, params):
            return jax.random.normal(key)

        def log_prob(self, params, x):
            return -0.5 * x**2

    with pytest.raises(NotImplementedError, match="not both jaxgrad specs") as e:
        D.kl(Custom(), None, n, (0.0, 1.0))
    assert "kl_estimate" in _one_line(e)
    with pytest.raises(TypeError, match=r"normal\.kl.*\(loc, scale\)") as e:
        D.kl(n, (0.0, 1.0, 2.0), n, (0.0, 1.0))
    _one_line(e)
    with pytest.raises(ValueError, match=r"normal\.kl\(q_params\): scale must be positive") as e:
        D.kl(n, (0.0, 1.0), n, (0.0, -1.0))
    _one_line(e)
    with pytest.raises(ValueError, match="concentration must be positive"):
        D.kl(D.gamma, (1.0, 1.0), D.gamma, (0.0, 1.0))
    with pytest.raises(ValueError, match="different event shapes"):
        D.kl(D.categorical, jnp.zeros(3), D.categorical, jnp.zeros(4))
    with pytest.raises(ValueError, match="do not broadcast"):
        D.kl(n, (jnp.zeros(2), 1.0), n, (jnp.zeros(3), 1.0))
    with pytest.raises(ValueError, match="kl_estimate: num_samples must be at least 1") as e:
        D.kl_estimate(jax.random.key(0), n, (0.0, 1.0), n, (0.0, 1.0), num_samples=0)
    _one_line(e)
    with pytest.raises(TypeError, match="kl_estimate: num_samples must be a static Python int"):
        D.kl_estimate(jax.random.key(1), n, (0.0, 1.0), n, (0.0, 1.0), num_samples=2.5)
    with pytest.raises(TypeError, match="kl_estimate: q must be a distribution instance"):
        D.kl_estimate(jax.random.key(2), n, (0.0, 1.0), D.Normal, (0.0, 1.0), num_samples=2)


def test_public_names():
    for name in ("kl", "kl_elementwise", "kl_estimate", "register_kl"):
        assert name in D.__all__ and getattr(jaxgrad.dists, name) is getattr(D, name)
