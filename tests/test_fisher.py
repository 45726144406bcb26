"""Fisher-vector products (exact and sampled) and natural gradients against closed forms.

Every program is built once (``functools.cache`` on the spec) and called on
several inputs: the file compiles about twenty small programs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
from jax.flatten_util import ravel_pytree

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased

D = jaxgrad.dists
fvp = jaxgrad.fisher_vector_product
efvp = jaxgrad.empirical_fisher_vector_product


@functools.cache
def _fvp(dist):
    return jax.jit(lambda p, v: fvp(dist, p, v))


@functools.cache
def _matrix(dist):
    """The full Fisher matrix in ``ravel_pytree`` order, column by column (F e_j, vmapped)."""

    def matrix(params):
        flat, unravel = ravel_pytree(params)
        eye = jnp.eye(flat.size, dtype=flat.dtype)
        return jax.vmap(lambda e: ravel_pytree(fvp(dist, params, unravel(e)))[0])(eye)

    return jax.jit(matrix)


@functools.cache
def _per_sample(dist):
    """``num_samples=1`` estimates for a batch of keys: i.i.d. terms ``s <s, v>``."""
    one = lambda k, p, v: efvp(k, dist, p, v, num_samples=1)  # noqa: E731
    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


@functools.cache
def _solver(dist, tol):
    """A batch of natural gradients, with the damping traced (one program for every value)."""
    one = lambda p, g, lam: jaxgrad.natural_gradient(dist, p, g, damping=lam, tol=tol)  # noqa: E731
    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def _normal_fv(params, v):
    (_, s), (vl, vs) = params, v
    return vl / s**2, 2 * vs / s**2


# ---------------------------------------------------------------- exact Fisher


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-10), (jnp.float32, 1e-6)])
def test_normal_fisher_vector_product_is_the_closed_form(rng, dtype, rtol):
    loc = jnp.asarray(rng.normal(size=(2, 3)), dtype)
    scale = jnp.asarray(rng.uniform(0.3, 3.0, size=(2, 3)), dtype)
    v = tuple(jnp.asarray(rng.normal(size=(2, 3)), dtype) for _ in range(2))
    out = _fvp(D.normal)((loc, scale), v)
    assert all(o.dtype == dtype and o.shape == (2, 3) for o in out)
    for o, e in zip(out, _normal_fv((loc, scale), v), strict=True):
        np.testing.assert_allclose(o, e, rtol=rtol)


def test_a_shared_parameter_gets_the_sum_of_its_factors_blocks(rng):
    # One scale broadcast over three factors: F_scale = sum_i 2 / s^2 = 6 / s^2.
    loc, scale = jnp.asarray(rng.normal(size=3)), jnp.asarray(0.7)
    v = (jnp.asarray(rng.normal(size=3)), jnp.asarray(1.3))
    fl, fs = _fvp(D.normal)((loc, scale), v)
    np.testing.assert_allclose(fl, v[0] / 0.49, rtol=1e-10)
    np.testing.assert_allclose(fs, 6 * 1.3 / 0.49, rtol=1e-10)


def _softmax_fisher(logits):
    pi = scipy.special.softmax(np.asarray(logits), axis=-1)
    return scipy.linalg.block_diag(*[np.diag(p) - np.outer(p, p) for p in pi])


def _gamma_fisher(params):
    a, r = (np.asarray(x) for x in params)
    f = np.zeros((2 * a.size, 2 * a.size))
    for i in range(a.size):
        j = a.size + i
        f[i, i], f[j, j] = scipy.special.polygamma(1, a[i]), a[i] / r[i] ** 2
        f[i, j] = f[j, i] = -1 / r[i]
    return f


def _mvn_fisher(params):
    # loc block Sigma^-1; scale_tril block 1/2 tr(S^-1 dS_a S^-1 dS_b), dS = dL L^T + L dL^T for
    # the lower-triangular entries (the upper one is ignored by the density: a zero row).
    loc, lt = (np.asarray(x) for x in params)
    d = loc.size
    si = np.linalg.inv(lt @ lt.T)
    f = np.zeros((d + d * d, d + d * d))
    f[:d, :d] = si
    ds = []
    for i in range(d):
        for j in range(d):
            e = np.zeros((d, d))
            if j <= i:
                e[i, j] = 1.0
            ds.append(e @ lt.T + lt @ e.T)
    for a, da in enumerate(ds):
        for b, db in enumerate(ds):
            f[d + a, d + b] = 0.5 * np.trace(si @ da @ si @ db)
    return f


_L = np.array([[1.3, 0.0], [-0.4, 0.8]])
_FAMILIES = {
    # spec: (params, the closed-form Fisher in ravel_pytree order)
    "normal": (
        D.normal,
        (np.array([0.3, -1.0]), np.array([0.5, 2.0])),
        lambda p: np.diag(np.concatenate([1 / p[1] ** 2, 2 / p[1] ** 2])),
    ),
    "bernoulli": (
        D.bernoulli,
        np.array([-30.0, -1.0, 0.0, 2.5]),
        lambda p: np.diag(scipy.special.expit(p) * scipy.special.expit(-p)),
    ),
    "categorical": (D.categorical, np.array([[0.1, -0.3, 0.5], [3.0, -2.0, 0.0]]), _softmax_fisher),
    "gamma": (D.gamma, (np.array([0.4, 3.0]), np.array([2.0, 0.5])), _gamma_fisher),
    "laplace": (
        D.laplace,
        (np.array([0.0, 1.0]), np.array([0.5, 2.0])),
        lambda p: np.diag(np.concatenate([1 / p[1] ** 2, 1 / p[1] ** 2])),
    ),
    "multivariate_normal": (D.multivariate_normal, (np.array([0.2, -0.5]), _L), _mvn_fisher),
}


@pytest.mark.parametrize("family", list(_FAMILIES))
def test_fisher_matrix_is_the_closed_form(family):
    dist, params, exact = _FAMILIES[family]
    f = _matrix(dist)(jax.tree.map(jnp.asarray, params))
    np.testing.assert_allclose(f, exact(params), rtol=1e-10, atol=1e-12)


def test_the_derivative_of_fisher_vector_product_is_the_derivative_of_F_v(rng):
    # d/ds of F v = (a / s^2, 2 b / s^2) is (-2 a / s^3, -4 b / s^3): both arguments of the KL
    # move with the params (holding the first fixed would give -10 b / s^3).
    loc, scale = jnp.asarray(rng.normal(size=2)), jnp.asarray([0.5, 2.0])
    a, b = jnp.asarray([1.0, -0.5]), jnp.asarray([0.7, 1.1])

    def total(s):
        fl, fs = fvp(D.normal, (loc, s), (a, b))
        return jnp.sum(fl + fs)

    g = jax.jit(jax.grad(total))(scale)
    np.testing.assert_allclose(g, (-2 * a - 4 * b) / scale**3, rtol=1e-10)


# ---------------------------------------------------------------- sampled Fisher


def test_sampled_fisher_vector_product_is_unbiased_normal(key):
    params = (jnp.asarray([0.3, -1.0]), jnp.asarray([0.5, 2.0]))
    v = (jnp.asarray([1.0, -0.4]), jnp.asarray([0.6, 1.5]))
    samples = _per_sample(D.normal)(jax.random.split(key, 4000), params, v)
    assert_unbiased(samples, _normal_fv(params, v))
    # Power: the same test rejects the Fisher of a normal 30% wider (41% smaller).
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, _normal_fv((params[0], 1.3 * params[1]), v))


def test_sampled_fisher_vector_product_is_unbiased_categorical(key):
    logits = jnp.asarray([[0.1, -0.3, 0.5], [1.0, -2.0, 0.0]])
    v = jnp.asarray([[1.0, 0.5, 2.0], [-1.0, 0.3, 1.2]])
    pi = jax.nn.softmax(logits, axis=-1)
    exact = pi * v - pi * jnp.sum(pi * v, axis=-1, keepdims=True)
    samples = _per_sample(D.categorical)(jax.random.split(key, 4000), logits, v)
    assert_unbiased(samples, exact)
    # Power: without its -pi pi^T term the Fisher is rejected on the same samples.
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, pi * v)


def test_sampled_fisher_vector_product_is_the_formula_on_the_same_samples(key):
    # (1/N) sum_i s_i <s_i, v>, s_i = grad log p(x_i), x_i drawn from split(key, N).
    params = (jnp.asarray([0.3, -1.0]), jnp.asarray([0.5, 2.0]))
    v = (jnp.asarray([1.0, -0.4]), jnp.asarray([0.6, 1.5]))
    out = jax.jit(lambda k: efvp(k, D.normal, params, v, num_samples=5))(jax.random.clone(key))

    @jax.jit
    def reference(keys):
        def term(k):
            x = D.normal.sample(k, params)
            s = jax.grad(D.normal.log_prob)(params, x)
            dot = sum(jnp.vdot(a, b) for a, b in zip(s, v, strict=True))
            return jax.tree.map(lambda a: a * dot, s)

        return jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(term)(keys))

    for o, r in zip(out, reference(jax.random.split(key, 5)), strict=True):
        np.testing.assert_allclose(o, r, rtol=1e-12)


def test_sampled_fisher_where_the_kl_has_no_closed_form_von_mises(key):
    # I(loc) = kappa A(kappa), I(kappa) = A'(kappa) = 1 - A / kappa - A^2, A = I1 / I0.
    kappa = np.array([0.5, 4.0])
    params = (jnp.asarray([0.0, 1.0]), jnp.asarray(kappa))
    v = (jnp.asarray([1.0, -0.5]), jnp.asarray([0.8, 2.0]))
    a = scipy.special.i1e(kappa) / scipy.special.i0e(kappa)
    exact = (kappa * a * v[0], (1 - a / kappa - a**2) * v[1])
    with pytest.raises(NotImplementedError, match="empirical_fisher_vector_product"):
        fvp(D.von_mises, params, v)
    samples = _per_sample(D.von_mises)(jax.random.split(key, 4000), params, v)
    assert_unbiased(samples, exact)
    with pytest.raises(AssertionError, match="biased"):  # power: a 20% smaller Fisher
        assert_unbiased(samples, jax.tree.map(lambda e: 0.8 * e, exact))


# ---------------------------------------------------------------- natural gradient


@pytest.mark.parametrize(
    "dtype, tol, rtol", [(jnp.float64, 1e-13, 1e-10), (jnp.float32, 1e-5, 1e-4)]
)
def test_natural_gradient_is_the_closed_form_under_jit_and_vmap(rng, dtype, tol, rtol):
    # A batch of 3 problems; (F + lambda I)^{-1} g = g / (1/s^2 + lambda), g / (2/s^2 + lambda).
    loc = jnp.asarray(rng.normal(size=(3, 2)), dtype)
    scale = jnp.asarray(rng.uniform(0.3, 3, (3, 2)), dtype)
    g = tuple(jnp.asarray(rng.normal(size=(3, 2)), dtype) for _ in range(2))
    solve = _solver(D.normal, tol)
    for lam in (0.0, 0.3):
        x = solve((loc, scale), g, lam)
        assert x[0].dtype == x[1].dtype == dtype
        np.testing.assert_allclose(x[0], g[0] / (1 / scale**2 + lam), rtol=rtol)
        np.testing.assert_allclose(x[1], g[1] / (2 / scale**2 + lam), rtol=rtol)


def test_natural_gradient_reports_how_cg_ended_under_jit_and_vmap():
    # Two normals: F + lambda I has 4 distinct eigenvalues (1/s^2, 2/s^2 per factor) and CG
    # needs 4 steps; cut at 2 it reports a truncated solve whose residual is the true one.
    params = (jnp.asarray([0.3, -1.0]), jnp.asarray([0.5, 2.0]))
    g = (jnp.asarray([1.0, 2.0]), jnp.asarray([-0.5, 0.25]))

    def one(p, maxiter):
        return jaxgrad.natural_gradient(
            D.normal, p, g, damping=0.0, tol=1e-12, maxiter=maxiter, return_info=True
        )

    x, info = jax.jit(functools.partial(one, maxiter=100))(params)
    assert int(info.iterations) == 4 and bool(info.converged)
    assert float(info.relative_residual) <= 1e-12
    x, info = jax.jit(functools.partial(one, maxiter=2))(params)
    assert int(info.iterations) == 2 and not bool(info.converged)
    fx = _normal_fv(params, x)
    true = np.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(fx, g, strict=True)))
    norm_g = np.sqrt(sum(float(jnp.sum(b**2)) for b in g))
    assert float(info.relative_residual) == pytest.approx(true / norm_g, rel=1e-9)
    assert float(info.relative_residual) > 1e-3
    # vmap: each member counts its own iterations (equal scales: 2 distinct eigenvalues).
    batch = (jnp.stack([params[0]] * 2), jnp.stack([params[1], jnp.asarray([1.0, 1.0])]))
    _, info = jax.jit(jax.vmap(functools.partial(one, maxiter=100)))(batch)
    assert info.iterations.tolist() == [4, 2] and info.converged.tolist() == [True, True]
    # NaN in, NaN out, never "converged": in the gradient, and in the parameters (operator).
    nan_g = (g[0].at[1].set(jnp.nan), g[1])
    for p, gg in [(params, nan_g), ((params[0], params[1].at[0].set(jnp.nan)), g)]:
        x, info = jaxgrad.natural_gradient(D.normal, p, gg, return_info=True)
        assert all(bool(jnp.all(jnp.isnan(a))) for a in x)
        assert np.isnan(float(info.relative_residual)) and not bool(info.converged)
    with pytest.raises(TypeError, match="natural_gradient: return_info must be a static"):
        jaxgrad.natural_gradient(D.normal, params, g, return_info=1)


def test_fisher_functions_under_shard_map_equal_vmap():
    """8 problems sharded over 8 devices: the Fisher-vector products and the natural gradient
    (with its CG account) are those of the vmapped call."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    rng = np.random.default_rng(3)
    params = (jnp.asarray(rng.normal(size=(8, 2))), jnp.asarray(rng.uniform(0.5, 2, (8, 2))))
    g = tuple(jnp.asarray(rng.normal(size=(8, 2))) for _ in range(2))
    keys = jax.random.split(jax.random.key(5), 8)

    def one(k, p, gg):
        x, info = jaxgrad.natural_gradient(D.normal, p, gg, tol=1e-12, return_info=True)
        sampled = efvp(k, D.normal, p, gg, num_samples=16)
        return x, info, jaxgrad.fisher_vector_product(D.normal, p, gg), sampled

    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    sharded = jax.jit(jax.shard_map(jax.vmap(one), mesh=mesh, in_specs=P("d"), out_specs=P("d")))(
        jax.random.clone(keys), params, g
    )
    batched = jax.jit(jax.vmap(one))(keys, params, g)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(batched), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    assert all(sharded[1].converged.tolist())


def test_natural_gradient_is_differentiated_by_another_solve():
    # x_i = g_i / (c_i / s^2 + lambda): derivatives in the gradient and in the parameters.
    params = (jnp.asarray([0.3, -1.0]), jnp.asarray([0.5, 2.0]))
    g = (jnp.asarray([1.0, 2.0]), jnp.asarray([-0.5, 0.25]))
    lam = 0.1

    def total(p, gg):
        x = jaxgrad.natural_gradient(D.normal, p, gg, damping=lam, tol=1e-13)
        return jnp.sum(x[0]) + jnp.sum(x[1])

    d_params, d_g = jax.jit(jax.grad(total, argnums=(0, 1)))(params, g)
    s = params[1]
    np.testing.assert_allclose(d_g[0], 1 / (1 / s**2 + lam), rtol=1e-10)
    np.testing.assert_allclose(d_g[1], 1 / (2 / s**2 + lam), rtol=1e-10)
    want = g[0] * 2 / s**3 / (1 / s**2 + lam) ** 2 + g[1] * 4 / s**3 / (2 / s**2 + lam) ** 2
    np.testing.assert_allclose(d_params[1], want, rtol=1e-9)
    np.testing.assert_allclose(d_params[0], 0.0, atol=1e-12)


def test_natural_gradient_solves_a_singular_fisher_in_its_range(rng):
    # Categorical logits: F 1 = 0. A gradient of a function of softmax(logits) lies in F's range,
    # and undamped CG from 0 converges to the solution orthogonal to the null space.
    logits = jnp.asarray(rng.normal(size=(2, 2, 3)))
    target = jnp.asarray(rng.uniform(size=(2, 2, 3)))
    g = jax.vmap(jax.grad(lambda l, t: jnp.sum(jax.nn.softmax(l) * t)))(logits, target)
    x = _solver(D.categorical, 1e-12)(logits, g, 0.0)
    f = np.stack([_softmax_fisher(l) for l in np.asarray(logits)])  # [2, 6, 6]
    fx = np.einsum("bij,bj->bi", f, np.asarray(x).reshape(2, 6)).reshape(g.shape)
    np.testing.assert_allclose(fx, g, atol=1e-11 * float(jnp.max(jnp.abs(g))))
    np.testing.assert_allclose(jnp.sum(x, axis=-1), 0.0, atol=1e-10)
    assert float(jnp.max(jnp.abs(x))) > 0.1  # not trivially zero


def test_natural_gradient_with_the_sampled_fisher_solves_its_own_system(key):
    # The same key gives the same samples: (F_hat + lambda I) x = g to the CG tolerance.
    params = (jnp.asarray([0.3, -1.0]), jnp.asarray([0.5, 2.0]))
    g = (jnp.asarray([1.0, 2.0]), jnp.asarray([-0.5, 0.25]))
    lam = 0.1

    @jax.jit
    def residual(k1, k2):
        x = jaxgrad.natural_gradient(
            D.normal, params, g, damping=lam, tol=1e-12, key=k1, num_samples=64
        )
        fx = efvp(k2, D.normal, params, x, num_samples=64)
        return x, jax.tree.map(lambda a, b, c: a + lam * b - c, fx, x, g)

    x, r = residual(jax.random.clone(key), key)
    assert max(float(jnp.max(jnp.abs(a))) for a in r) < 1e-9
    exact = (g[0] / (1 / params[1] ** 2 + lam), g[1] / (2 / params[1] ** 2 + lam))
    # ... and it is the sampled operator's solution, not silently the exact one.
    assert (
        max(float(jnp.max(jnp.abs(a - e) / jnp.abs(e))) for a, e in zip(x, exact, strict=True))
        > 1e-2
    )


# ---------------------------------------------------------------- errors


_P = (jnp.zeros(2, jnp.float32), jnp.ones(2, jnp.float32))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: fvp(D.normal, _P, (_P[0],)),
            TypeError,
            "fisher_vector_product: v must have the structure",
        ),
        (
            lambda: fvp(D.normal, _P, (_P[0], jnp.ones(3, jnp.float32))),
            ValueError,
            r"v\[1\] has shape \(3,\) but params\[1\] has shape \(2,\)",
        ),
        (
            lambda: fvp(D.normal, _P, (_P[0], jnp.ones(2, jnp.float64))),
            TypeError,
            r"v\[1\] has dtype float64 but .*astype",
        ),
        (
            lambda: fvp(D.normal, (jnp.zeros(2, jnp.int32), 1.0), (0.0, 0.0)),
            TypeError,
            r"params\[0\] must have a floating dtype",
        ),
        (
            lambda: fvp(D.von_mises, _P, _P),
            NotImplementedError,
            "fisher_vector_product: von_mises has no closed-form KL.*empirical_fisher",
        ),
        (
            lambda: fvp(D.uniform, _P, _P),
            ValueError,
            "fisher_vector_product: uniform has no Fisher information",
        ),
        (
            lambda: efvp(jax.random.key(0), D.uniform, _P, _P, num_samples=2),
            ValueError,
            "empirical_fisher_vector_product: uniform has no Fisher information",
        ),
        (
            lambda: fvp(object(), _P, _P),
            TypeError,
            "dist must be a distribution spec with log_prob",
        ),
        (
            lambda: efvp(jax.random.key(0), D.normal, _P, _P, num_samples=0),
            ValueError,
            "num_samples must be at least 1",
        ),
        (
            lambda: efvp(jax.random.key(0), _Logp(), _P, _P, num_samples=2),
            TypeError,
            "with sample and log_prob",
        ),
        (
            lambda: efvp(jnp.zeros(3), D.normal, _P, _P, num_samples=2),
            TypeError,
            "key must be a PRNG key",
        ),
        (
            lambda: efvp(jax.random.key(0), D.normal, _P, [_P[0], _P[1]], num_samples=2),
            TypeError,
            "v must have the structure",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P[:1]),
            TypeError,
            "natural_gradient: grad must have the structure",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, damping=-1.0),
            ValueError,
            "natural_gradient: damping must be >= 0, got -1.0",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, damping=float("nan")),
            ValueError,
            "damping must be >= 0, got nan",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, damping=jnp.ones(2)),
            ValueError,
            "damping must be a scalar",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, damping="big"),
            TypeError,
            "damping must be a real number",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, maxiter=0),
            ValueError,
            "maxiter must be at least 1, got 0",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, maxiter=2.5),
            TypeError,
            "maxiter must be a static Python int",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, tol=-1e-3),
            ValueError,
            "tol must be a number >= 0",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, key=jax.random.key(0)),
            ValueError,
            "key was given without num_samples",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.normal, _P, _P, num_samples=8),
            ValueError,
            "num_samples was given without key",
        ),
        (
            lambda: jaxgrad.natural_gradient(D.von_mises, _P, _P),
            NotImplementedError,
            "natural_gradient: von_mises has no closed-form KL.*key=key",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)


class _Logp:
    def log_prob(self, params, x):
        return jnp.zeros(())
