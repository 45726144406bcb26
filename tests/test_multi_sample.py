"""ELBO/STL, IWAE, VIMCO and DReG: unbiased for the gradient of the bound, computed exactly.

The exact bound ``L_K = E[log mean_k w_k]`` and its gradients come from
enumeration (Bernoulli latents: every K-tuple of latent values) or from
tensor-product Gauss-Hermite quadrature over the K reparameterization noises
(a 1-D Gaussian model), differentiated by autodiff. Each z-test is paired with
a biased variant that the same test rejects: IWAE-STL for DReG (the
``w~_k`` instead of ``w~_k^2`` coefficients, biased for K > 1) and a
baseline that depends on its own sample for VIMCO.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import grad_samples_of_many

import jaxgrad
from jaxgrad._src.estimators import multi_sample
from jaxgrad.diagnostics import assert_unbiased

F32 = jnp.float32
NORMAL, BERN = jaxgrad.dists.normal, jaxgrad.dists.bernoulli
NUM_KEYS = 20_000

# ------------------------------------------------------------ the two models

X_GAUSS = 1.5  # z ~ N(theta, 1), x | z ~ N(z, 1): posterior N((theta + x) / 2, 1 / sqrt 2)
Q_GAUSS = (jnp.asarray(0.2, F32), jnp.asarray(0.9, F32))
THETA_GAUSS = jnp.asarray(-0.3, F32)


def log_p_gauss(z, theta):
    return NORMAL.log_prob((theta, jnp.ones_like(theta)), z) + NORMAL.log_prob(
        (z, jnp.ones_like(z)), jnp.asarray(X_GAUSS, z.dtype)
    )


X_BERN = jnp.asarray([1.0, 0.0, 1.0], F32)  # 3 coins, a prior with logits theta, a likelihood
Q_BERN = jnp.asarray([0.4, -0.7, 1.1], F32)
THETA_BERN = jnp.asarray([-0.2, 0.5, 0.3], F32)


def log_p_bern(z, theta):
    s = jnp.sum(z * jnp.asarray([0.8, -0.6, 0.5], z.dtype))
    return BERN.log_prob(theta, z) - 2.0 * jnp.sum((X_BERN.astype(z.dtype) - z) ** 2) * (
        1.0 + 0.5 * jnp.sin(s)
    )


def _iwae_of_tuples(lw_points, logq_points, k):
    """``sum over K-tuples of prod q * logmeanexp(lw)`` for per-point log-weights and log q.

    The K-tuples are the axes of a K-dimensional grid, built by broadcasting.
    """
    c = jax.lax.stop_gradient(jnp.max(lw_points))
    total, log_prob = 0.0, 0.0
    for i in range(k):
        shape = [1] * k
        shape[i] = -1
        total = total + jnp.exp(lw_points - c).reshape(shape)
        log_prob = log_prob + logq_points.reshape(shape)
    return jnp.sum(jnp.exp(log_prob) * (jnp.log(total / k) + c))


@functools.partial(jax.jit, static_argnums=0)
def exact_bern(k, q, theta):
    """The exact ``L_K`` and its gradients in (q logits, theta), enumerating K-tuples."""

    def bound(q, theta):
        zs = BERN.support(q)
        logq = jax.vmap(lambda z: BERN.log_prob(q, z))(zs)
        lw = jax.vmap(lambda z: log_p_bern(z, theta))(zs) - logq
        return _iwae_of_tuples(lw, logq, k)

    return jax.value_and_grad(bound, argnums=(0, 1))(
        q.astype(jnp.float64), theta.astype(jnp.float64)
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def exact_gauss(k, nodes, q, theta):
    """``L_K`` and its gradients in ((loc, scale), theta) by ``nodes``-point Gauss-Hermite."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    t, logw = jnp.asarray(t), jnp.log(jnp.asarray(w / np.sqrt(2 * np.pi)))

    def bound(q, theta):
        loc, scale = q
        z = loc + scale * t
        lw = jax.vmap(lambda z: log_p_gauss(z, theta) - NORMAL.log_prob((loc, scale), z))(z)
        return _iwae_of_tuples(lw, logw, k)

    q64 = jax.tree.map(lambda x: x.astype(jnp.float64), q)
    return jax.value_and_grad(bound, argnums=(0, 1))(q64, theta.astype(jnp.float64))


def test_quadrature_and_enumeration_are_exact():
    # Quadrature has converged: 14 and 16 nodes agree to 1e-4, against a z-test resolution
    # (standard error over |gradient|) of about 1e-2,
    # and K = 1 is the closed-form ELBO of the Gaussian model.
    for k in (2, 5):
        coarse, fine = (
            exact_gauss(k, 14, Q_GAUSS, THETA_GAUSS),
            exact_gauss(k, 16, Q_GAUSS, THETA_GAUSS),
        )
        for a, b in zip(jax.tree.leaves(coarse), jax.tree.leaves(fine), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    loc, scale = (float(x) for x in Q_GAUSS)
    th = float(THETA_GAUSS)
    elbo = (
        -0.5 * np.log(2 * np.pi)
        + np.log(scale)
        + 0.5
        - 0.5 * ((loc - th) ** 2 + scale**2)
        - 0.5 * ((X_GAUSS - loc) ** 2 + scale**2)
    )
    np.testing.assert_allclose(exact_gauss(1, 16, Q_GAUSS, THETA_GAUSS)[0], elbo, rtol=1e-10)
    # The bound increases with K toward log p(x) (Burda et al.), for both models.
    log_px = NORMAL.log_prob((THETA_GAUSS.astype(jnp.float64), jnp.sqrt(2.0)), X_GAUSS)
    bounds = [float(exact_gauss(k, 16, Q_GAUSS, THETA_GAUSS)[0]) for k in (1, 2, 5)]
    assert bounds[0] < bounds[1] < bounds[2] < float(log_px)
    bern = [float(exact_bern(k, Q_BERN, THETA_BERN)[0]) for k in (1, 2, 5)]
    assert bern[0] < bern[1] < bern[2]


# ------------------------------------------------------------ gradient samples


def _joint(est):
    return lambda key, pt: est(key, pt[0], pt[1])


def _variant(name, log_p, dist, k, *, path, coefficients):
    """A bound whose params gradient is ``sum_k c_k d log w_k``, for chosen (biased) ``c``."""
    lps = jaxgrad._src.estimators.common.batch_f(log_p, name)
    return multi_sample._vjp_estimator(
        name, lps, dist, k, path=path, coefficients=coefficients, value=multi_sample.logmeanexp
    )


def _biased_dreg(k):
    """IWAE-STL: DReG's path term with w~_k instead of w~_k^2; biased for K > 1."""
    return _variant("iwae-stl", log_p_gauss, NORMAL, k, path=True, coefficients=jax.nn.softmax)


def _biased_vimco(k):
    """VIMCO with one shared baseline, the mean of the L_{-j}: it depends on every sample."""

    def coefficients(lw):
        loo = multi_sample.leave_one_out_bounds(lw)
        return jax.nn.softmax(lw) - (multi_sample.logmeanexp(lw) - jnp.mean(loo))

    return _variant("vimco-shared", log_p_bern, BERN, k, path=False, coefficients=coefficients)


def _gauss_estimators():
    ests = {}
    for k in (2, 5):
        ests[f"dreg-{k}"] = jaxgrad.dreg(log_p_gauss, dist=NORMAL, num_samples=k)
        ests[f"iwae-{k}"] = jaxgrad.iwae_bound(log_p_gauss, dist=NORMAL, num_samples=k)
    ests["iwae-stl-5"] = _biased_dreg(5)
    ests["elbo-1"] = jaxgrad.elbo(log_p_gauss, dist=NORMAL)
    ests["stl-1"] = jaxgrad.elbo(log_p_gauss, dist=NORMAL, stl=True)
    return {n: _joint(e) for n, e in ests.items()}


def _bern_estimators():
    ests = {f"vimco-{k}": jaxgrad.vimco(log_p_bern, dist=BERN, num_samples=k) for k in (2, 5)}
    ests["vimco-shared-5"] = _biased_vimco(5)
    return {n: _joint(e) for n, e in ests.items()}


@functools.cache
def _samples(model):
    """Gradient samples of every estimator of ``model``, from one compiled program."""
    ests, params = (
        (_gauss_estimators(), (Q_GAUSS, THETA_GAUSS))
        if model == "gauss"
        else (_bern_estimators(), (Q_BERN, THETA_BERN))
    )
    return grad_samples_of_many(
        ests,
        dict.fromkeys(ests, params),
        jax.random.key(20261202),
        num_keys=NUM_KEYS,
        batch_size=NUM_KEYS,
    )


def _exact(name):
    k = int(name.rsplit("-", 1)[1])
    if name.startswith("vimco"):
        return exact_bern(k, Q_BERN, THETA_BERN)[1]
    return exact_gauss(k, 16, Q_GAUSS, THETA_GAUSS)[1]


@pytest.mark.parametrize(
    "name", ["dreg-2", "dreg-5", "iwae-2", "iwae-5", "elbo-1", "stl-1", "vimco-2", "vimco-5"]
)
def test_unbiased_for_the_bound(name):
    samples = _samples("bern" if name.startswith("vimco") else "gauss")[name]
    assert_unbiased(samples, _exact(name))


@pytest.mark.parametrize("name", ["iwae-stl-5", "vimco-shared-5"])
def test_power_rejects_the_biased_variants(name):
    samples = _samples("bern" if name.startswith("vimco") else "gauss")[name]
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, _exact(name))


def test_dreg_has_lower_variance_than_iwae_at_k16():
    """Tucker et al.'s claim on a 1-D Gaussian model: the encoder gradient's variance ratio."""
    ests = {
        f"{n}-16": _joint(fn(log_p_gauss, dist=NORMAL, num_samples=16))
        for n, fn in (("dreg", jaxgrad.dreg), ("iwae", jaxgrad.iwae_bound))
    }
    g = grad_samples_of_many(
        ests,
        dict.fromkeys(ests, (Q_GAUSS, THETA_GAUSS)),
        jax.random.key(16),
        num_keys=4000,
        batch_size=4000,
    )
    var = {n: np.asarray([np.var(x) for x in jax.tree.leaves(g[n][0])]) for n in g}
    ratio = var["dreg-16"] / var["iwae-16"]  # (loc, scale); measured about 0.05 and 0.03
    assert np.all(ratio < 0.25), ratio


# ------------------------------------------------------------ exact relations


def test_dreg_at_k1_is_stl_and_stl_vanishes_at_the_posterior(key):
    post = (jnp.asarray((0.0 + X_GAUSS) / 2, F32), jnp.asarray(0.5**0.5, F32))
    theta = jnp.asarray(0.0, F32)
    dreg1 = jaxgrad.dreg(log_p_gauss, dist=NORMAL, num_samples=1)
    stl = jaxgrad.elbo(log_p_gauss, dist=NORMAL, stl=True)
    plain = jaxgrad.elbo(log_p_gauss, dist=NORMAL)

    @jax.jit
    def run(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        a = jax.grad(dreg1, argnums=(1, 2))(k1, Q_GAUSS, theta)
        b = jax.grad(stl, argnums=(1, 2))(jax.random.clone(k1), Q_GAUSS, theta)
        at_post = jax.grad(stl, argnums=1)(k2, post, theta)
        plain_post = jax.grad(plain, argnums=1)(jax.random.clone(k2), post, theta)
        values = (dreg1(k3, Q_GAUSS, theta), stl(jax.random.clone(k3), Q_GAUSS, theta))
        # DReG changes the encoder gradient only: the value and the model gradient are IWAE's.
        model = [
            jax.value_and_grad(fn(log_p_gauss, dist=NORMAL, num_samples=3), argnums=2)(
                jax.random.clone(k4), Q_GAUSS, theta
            )
            for fn in (jaxgrad.dreg, jaxgrad.iwae_bound)
        ]
        return a, b, at_post, plain_post, values, model

    a, b, at_post, plain_post, (v_dreg, v_stl), (dreg3, iwae3) = run(key)
    np.testing.assert_allclose(dreg3, iwae3, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(v_dreg, v_stl)
    np.testing.assert_allclose(jnp.stack(at_post), 0.0, atol=1e-5)
    assert float(jnp.max(jnp.abs(jnp.stack(plain_post)))) > 1e-2  # the score term's noise


def test_vimco_baselines_by_hand():
    lw = jnp.asarray([-1.0, 0.5, -2.0, 0.1], jnp.float64)
    loo = multi_sample.leave_one_out_bounds(lw)
    for k in range(4):
        others = np.delete(np.asarray(lw), k)
        geo = np.exp(np.mean(others))
        np.testing.assert_allclose(loo[k], np.log((np.exp(others).sum() + geo) / 4), rtol=1e-12)
    # With K = 2 the baseline of each sample is the bound with both weights set to the other.
    loo2 = multi_sample.leave_one_out_bounds(lw[:2])
    np.testing.assert_allclose(loo2, lw[:2][::-1], rtol=1e-12)


def test_vimco_formula_on_fixed_samples(key):
    k = 4
    est = jaxgrad.vimco(log_p_bern, dist=BERN, num_samples=k)
    value, (g_q, g_theta) = jax.value_and_grad(est, argnums=(1, 2))(key, Q_BERN, THETA_BERN)
    zs = jaxgrad._src.estimators.common.sample_n(BERN, jax.random.clone(key), Q_BERN, k)
    lw = jax.vmap(lambda z: log_p_bern(z, THETA_BERN) - BERN.log_prob(Q_BERN, z))(zs)
    bound = multi_sample.logmeanexp(lw)
    signal = bound - multi_sample.leave_one_out_bounds(lw) - jax.nn.softmax(lw)
    scores = jax.vmap(jax.grad(BERN.log_prob), in_axes=(None, 0))(Q_BERN, zs)
    np.testing.assert_allclose(value, bound, rtol=1e-6)
    np.testing.assert_allclose(g_q, signal @ scores, rtol=1e-5, atol=1e-6)
    model = jax.vmap(jax.grad(log_p_bern, argnums=1), in_axes=(0, None))(zs, THETA_BERN)
    np.testing.assert_allclose(g_theta, jax.nn.softmax(lw) @ model, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ curvature, errors


def test_second_derivatives_refused_or_exact(key):
    gauss = lambda e: lambda p: e(jax.random.clone(key), (p, Q_GAUSS[1]), THETA_GAUSS)
    for name, est in (
        ("dreg", jaxgrad.dreg(log_p_gauss, dist=NORMAL, num_samples=3)),
        ("elbo", jaxgrad.elbo(log_p_gauss, dist=NORMAL, stl=True)),
    ):
        with pytest.raises(TypeError, match=f"{name} is a first-order estimator"):
            jax.jit(jax.hessian(gauss(est)))(jnp.float32(0.2))
    vimco = jaxgrad.vimco(log_p_bern, dist=BERN, num_samples=3)
    with pytest.raises(TypeError, match="vimco is a first-order estimator"):
        jax.jit(jax.hessian(vimco, argnums=1))(jax.random.clone(key), Q_BERN, THETA_BERN)
    # iwae_bound is plain autodiff: its Hessian is that of the Monte Carlo bound, symmetric.
    iwae = jaxgrad.iwae_bound(log_p_gauss, dist=NORMAL, num_samples=3)
    h = jax.jit(jax.hessian(lambda q: iwae(key, (q[0], q[1]), THETA_GAUSS)))(
        jnp.asarray([0.2, 0.9], F32)
    )
    assert bool(jnp.all(jnp.isfinite(h)))
    np.testing.assert_allclose(h, h.T, rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: jaxgrad.vimco(log_p_bern, dist=BERN, num_samples=1),
            ValueError,
            r"vimco: num_samples must be at least 2.*built from the others",
        ),
        (
            lambda: jaxgrad.dreg(log_p_bern, dist=BERN, num_samples=2),
            ValueError,
            r"dreg: dist must be reparameterizable.*jaxgrad.vimco",
        ),
        (
            lambda: jaxgrad.iwae_bound(log_p_bern, dist=BERN),
            ValueError,
            r"iwae_bound: dist must be reparameterizable",
        ),
        (
            lambda: jaxgrad.elbo(log_p_gauss, dist=NORMAL, stl=1),
            TypeError,
            r"elbo: stl must be a static Python bool",
        ),
        (
            lambda: jaxgrad.dreg("log_p", dist=NORMAL, num_samples=2),
            TypeError,
            r"dreg: f must be a callable",
        ),
        (
            lambda: jaxgrad.dreg(log_p_gauss, dist=NORMAL, num_samples=2.0),
            TypeError,
            r"dreg: num_samples must be a static Python int",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_batched_log_p_is_refused(key):
    est = jaxgrad.dreg(lambda z, t: jnp.stack([z, t]), dist=NORMAL, num_samples=2)
    with pytest.raises(ValueError, match="dreg: f must return a scalar"):
        est(key, Q_GAUSS, THETA_GAUSS)
