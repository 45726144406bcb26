"""Pathwise and measure-valued estimators for Gaussians: formulas and unbiasedness.

Deterministic checks compare each estimator with its formula written out in
NumPy on the same noise. Statistical checks compare the mean of ``N``
independent estimates with closed-form gradients at 5 standard errors: the
test functions of Mohamed et al. (``x^2`` and ``cos x``), a non-separable
product (so the coordinate-wise measure-valued rule must hold the other
coordinates at the base sample), a discontinuous step, and a broadcast scale.
Power: the same assertion rejects the pathwise estimator on the step, whose
gradient is zero almost surely.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import grad_samples_of_many, joint, never_differentiated
from scipy import stats

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased, gaussian_exact_grad

F32 = jnp.float32
NORMAL = jaxgrad.dists.normal
NUM_KEYS = 20_000

LOC = jnp.asarray([0.3, -0.7, 1.1, -0.4], F32)
SCALE = jnp.asarray([0.8, 1.2, 0.5, 1.5], F32)
C = jnp.asarray([0.7, 1.3], F32)


def f_normal(x, c):
    """Coordinates 0, 1: ``c0 x^2``; coordinates 2, 3: ``c1 cos x``."""
    return c[0] * jnp.sum(x[:2] ** 2) + c[1] * jnp.sum(jnp.cos(x[2:]))


def f_product(x, c):
    """Non-separable: ``c0 x0 x1 + c1 x2^2 x3``."""
    return c[0] * x[0] * x[1] + c[1] * x[2] ** 2 * x[3]


def f_step(x, c):
    """Discontinuous: ``c0 * #{i : x_i > 0}``."""
    return c[0] * jnp.sum((x > 0).astype(x.dtype))


def exact_normal(loc, scale, c):
    """d/dmu E[x^2] = 2 mu, d/dsigma = 2 sigma; d/dmu E[cos x] = -sin(mu) exp(-sigma^2/2),
    d/dsigma E[cos x] = -sigma cos(mu) exp(-sigma^2/2) (closed forms)."""
    loc, scale, c = (np.asarray(a, np.float64) for a in (loc, scale, c))
    damp = np.exp(-0.5 * scale[2:] ** 2)
    g_loc = np.concatenate([c[0] * 2 * loc[:2], -c[1] * np.sin(loc[2:]) * damp])
    g_scale = np.concatenate([c[0] * 2 * scale[:2], -c[1] * scale[2:] * np.cos(loc[2:]) * damp])
    g_c = np.array([np.sum(loc[:2] ** 2 + scale[:2] ** 2), np.sum(np.cos(loc[2:]) * damp)])
    sq = gaussian_exact_grad("square", loc[:2], scale[:2], k=0.0)  # the library's closed forms
    cos = gaussian_exact_grad("cos", loc[2:], scale[2:], k=1.0)
    np.testing.assert_allclose(g_loc, np.concatenate([c[0] * sq[0], c[1] * cos[0]]), rtol=1e-6)
    np.testing.assert_allclose(g_scale, np.concatenate([c[0] * sq[1], c[1] * cos[1]]), rtol=1e-6)
    return (g_loc, g_scale), g_c


def exact_product(loc, scale, c):
    """E = c0 mu0 mu1 + c1 (mu2^2 + sigma2^2) mu3."""
    m, s, c = (np.asarray(a, np.float64) for a in (loc, scale, c))
    g_loc = np.array(
        [c[0] * m[1], c[0] * m[0], c[1] * 2 * m[2] * m[3], c[1] * (m[2] ** 2 + s[2] ** 2)]
    )
    g_scale = np.array([0.0, 0.0, c[1] * 2 * s[2] * m[3], 0.0])
    g_c = np.array([m[0] * m[1], (m[2] ** 2 + s[2] ** 2) * m[3]])
    return (g_loc, g_scale), g_c


def exact_step(loc, scale, c):
    """E = c0 sum Phi(mu / sigma)."""
    m, s, c = (np.asarray(a, np.float64) for a in (loc, scale, c))
    pdf = stats.norm.pdf(m / s)
    g_c = np.array([np.sum(stats.norm.cdf(m / s)), 0.0])
    return (c[0] * pdf / s, -c[0] * m * pdf / s**2), g_c


FUNCTIONS = {
    "normal": (f_normal, exact_normal),
    "product": (f_product, exact_product),
    "step": (f_step, exact_step),
}


# ------------------------------------------------------------------------ unbiasedness
#
# All entries run in ONE compiled program: the estimates for independent copies of
# the parameters are summed, so the gradient for copy k is estimator k's estimate.

STUDY = {  # name -> (estimator, function, broadcast scale)
    "pathwise/normal": ("pathwise-1", "normal", False),
    "pathwise/product": ("pathwise-3", "product", False),
    "pathwise/step": ("pathwise-1", "step", False),  # biased: the power check
    "measure_valued/normal": ("mv-1", "normal", False),
    "measure_valued/product": ("mv-2", "product", False),
    "measure_valued/step": ("mv-1", "step", False),
    "measure_valued/broadcast-scale": ("mv-1", "normal", True),
}


def build(name, f):
    kind, n = name.split("-")
    if kind == "pathwise":
        return jaxgrad.pathwise(f, dist=NORMAL, num_samples=int(n))
    return jaxgrad.measure_valued(f, num_samples=int(n))


def _params(broadcast):
    return ((LOC, jnp.asarray(0.9, F32) if broadcast else SCALE), C)


@functools.cache
def study():
    ests = {n: joint(build(STUDY[n][0], FUNCTIONS[STUDY[n][1]][0])) for n in STUDY}
    params = {n: _params(STUDY[n][2]) for n in STUDY}
    return grad_samples_of_many(
        ests, params, jax.random.key(31), num_keys=NUM_KEYS, batch_size=2_500
    )


def _exact(name):
    _, fname, broadcast = STUDY[name]
    (g_loc, g_scale), g_c = FUNCTIONS[fname][1](LOC, np.full(4, 0.9) if broadcast else SCALE, C)
    if broadcast:  # a shared scale gets the sum of the per-coordinate derivatives
        g_scale = np.sum(g_scale)
    return (g_loc, g_scale), g_c


# Both read the cached study: one xdist worker runs them (``--dist loadgroup``).
@pytest.mark.xdist_group("continuous_study")
@pytest.mark.parametrize("name", sorted(n for n in STUDY if n != "pathwise/step"))
def test_unbiased_closed_forms(name):
    assert_unbiased(study()[name], _exact(name))


@pytest.mark.xdist_group("continuous_study")
def test_power_rejects_pathwise_on_a_step():
    samples = study()["pathwise/step"]
    np.testing.assert_array_equal(samples[0][0], 0.0)  # zero almost surely
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, _exact("pathwise/step"))


# --------------------------------------------------------------- formulas on the same noise


def _np_measure_valued(f, loc, scale, noise):
    """The coordinate-wise weak-derivative rule, written out with loops (NumPy, float64)."""
    n, y, z = noise
    s, d = n.shape
    w = np.sqrt(y * y + z * z)
    m = np.where(n >= 0, 1.0, -1.0) * np.sqrt(n * n + w * w)
    base = loc + scale * n
    g_loc, g_scale = np.zeros(d), np.zeros(d)
    for k in range(s):
        for i in range(d):
            up, down, maxwell = base[k].copy(), base[k].copy(), base[k].copy()
            up[i] = loc[i] + scale[i] * w[k, i]
            down[i] = loc[i] - scale[i] * w[k, i]
            maxwell[i] = loc[i] + scale[i] * m[k, i]
            g_loc[i] += (f(up) - f(down)) / (scale[i] * math.sqrt(2 * math.pi)) / s
            g_scale[i] += (f(maxwell) - f(base[k])) / scale[i] / s
    value = np.mean([f(b) for b in base])
    return value, g_loc, g_scale


def test_measure_valued_formula_on_the_same_noise():
    s, d = 3, 4
    est = jaxgrad.measure_valued(lambda x, c: f_product(x, c) + jnp.sin(x[0] * x[3]), num_samples=s)
    value, (g_loc, g_scale) = jax.jit(jax.value_and_grad(est, argnums=1))(
        jax.random.key(40), (LOC, SCALE), C
    )
    noise = np.asarray(
        jax.random.normal(jax.random.key(40), (3 * s * d,), F32), np.float64
    ).reshape(3, s, d)
    c = np.asarray(C, np.float64)
    f_np = lambda x: c[0] * x[0] * x[1] + c[1] * x[2] ** 2 * x[3] + np.sin(x[0] * x[3])
    v, gl, gs = _np_measure_valued(
        f_np, np.asarray(LOC, np.float64), np.asarray(SCALE, np.float64), noise
    )
    np.testing.assert_allclose(value, v, rtol=1e-5)
    np.testing.assert_allclose(g_loc, gl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_scale, gs, rtol=1e-4, atol=1e-5)


def test_pathwise_formula_and_args_on_the_same_noise():
    n = 3
    est = jaxgrad.pathwise(f_normal, dist=NORMAL, num_samples=n)
    value, (g_params, g_c) = jax.jit(jax.value_and_grad(est, argnums=(1, 2)))(
        jax.random.key(41), (LOC, SCALE), C
    )
    eps = jax.random.normal(jax.random.key(41), (n * 4,), F32).reshape(n, 4)
    x = LOC + SCALE * eps
    np.testing.assert_allclose(value, jnp.mean(jax.vmap(f_normal, (0, None))(x, C)), rtol=1e-6)
    dfdx = jax.vmap(jax.grad(f_normal), (0, None))(x, C)
    np.testing.assert_allclose(g_params[0], dfdx.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_params[1], (dfdx * eps).mean(0), rtol=1e-5, atol=1e-6)
    g_c_expected = jax.grad(lambda c: jnp.mean(jax.vmap(f_normal, (0, None))(x, c)))(C)
    np.testing.assert_allclose(g_c, g_c_expected, rtol=1e-5)


def test_measure_valued_args_and_closures_are_pathwise_on_the_base_samples():
    s, d = 2, 4

    def through_closure(c, key):
        return jaxgrad.measure_valued(lambda x: f_normal(x, c), num_samples=s)(key, (LOC, SCALE))

    est = jaxgrad.measure_valued(f_normal, num_samples=s)
    run = jax.jit(
        lambda k1, k2: (
            jax.grad(est, argnums=2)(k1, (LOC, SCALE), C),
            jax.grad(through_closure)(C, k2),
        )
    )
    g_c, g_closure = run(jax.random.key(42), jax.random.key(42))
    n = jax.random.normal(jax.random.key(42), (3 * s * d,), F32).reshape(3, s, d)[0]
    base = LOC + SCALE * n
    expected = jax.grad(lambda c: jnp.mean(jax.vmap(f_normal, (0, None))(base, c)))(C)
    np.testing.assert_allclose(g_c, expected, rtol=1e-5)
    np.testing.assert_allclose(g_closure, expected, rtol=1e-5)


def test_measure_valued_never_differentiates_f_and_keeps_dtype():
    f = never_differentiated(lambda x: jnp.sum(jnp.cos(x)), "measure_valued differentiated f")

    loc = jnp.asarray([[0.1, 0.2], [0.3, 0.4]], jnp.bfloat16)  # any shape; bfloat16 in, out
    scale = jnp.asarray(0.5, jnp.bfloat16)
    value, (g_loc, g_scale) = jax.jit(jax.value_and_grad(jaxgrad.measure_valued(f), argnums=1))(
        jax.random.key(43), (loc, scale)
    )
    assert value.dtype == jnp.bfloat16
    assert g_loc.dtype == jnp.bfloat16 and g_loc.shape == (2, 2)
    assert g_scale.dtype == jnp.bfloat16 and g_scale.shape == ()
    assert bool(jnp.all(jnp.isfinite(g_loc.astype(F32)))) and bool(jnp.isfinite(g_scale))


def test_pathwise_second_derivative():
    # E sum x^2 = sum mu^2 + sigma^2: every sample's Hessian in loc is exactly 2 I.
    est = jaxgrad.pathwise(lambda x: jnp.sum(x * x), dist=NORMAL)
    h = jax.jit(jax.hessian(lambda loc, k: est(k, (loc, SCALE))))(LOC, jax.random.key(44))
    np.testing.assert_allclose(h, 2 * np.eye(4), atol=1e-6)


# ------------------------------------------------------------------------------ errors


def test_errors():
    f = lambda x: jnp.sum(x)
    with pytest.raises(ValueError, match="pathwise: dist must be reparameterizable"):
        jaxgrad.pathwise(f, dist=jaxgrad.dists.bernoulli)

    class Custom:  # a spec that does not declare itself reparameterizable
        def sample(self, key, params):
            return NORMAL.sample(key, params)

        def log_prob(self, params, x):
            return NORMAL.log_prob(params, x)

    with pytest.raises(ValueError, match="sets reparameterizable = True"):
        jaxgrad.pathwise(f, dist=Custom())
    with pytest.raises(TypeError, match="pathwise: dist must be"):
        jaxgrad.pathwise(f, dist=None)
    with pytest.raises(TypeError, match="pathwise: f must be a callable"):
        jaxgrad.pathwise(None, dist=NORMAL)
    with pytest.raises(ValueError, match="pathwise: num_samples must be at least 1"):
        jaxgrad.pathwise(f, dist=NORMAL, num_samples=0)
    with pytest.raises(TypeError, match="pathwise: num_samples must be a static Python int"):
        jaxgrad.pathwise(f, dist=NORMAL, num_samples=1.0)
    with pytest.raises(TypeError, match="pathwise: key must be a PRNG key"):
        jaxgrad.pathwise(f, dist=NORMAL)(1, (LOC, SCALE))
    with pytest.raises(ValueError, match="pathwise: f must return a scalar"):
        jaxgrad.pathwise(lambda x: x, dist=NORMAL)(jax.random.key(0), (LOC, SCALE))
    with pytest.raises(ValueError, match="pathwise accepts a single key"):
        jaxgrad.pathwise(f, dist=NORMAL)(jax.random.split(jax.random.key(0), 2), (LOC, SCALE))

    est = jaxgrad.measure_valued(f)
    with pytest.raises(TypeError, match="measure_valued: f must be a callable"):
        jaxgrad.measure_valued("f")
    with pytest.raises(TypeError, match="measure_valued: num_samples must be a static"):
        jaxgrad.measure_valued(f, num_samples=jnp.asarray(2))
    with pytest.raises(ValueError, match="measure_valued: num_samples must be at least 1"):
        jaxgrad.measure_valued(f, num_samples=0)
    with pytest.raises(TypeError, match="measure_valued: key must be a PRNG key"):
        est(np.zeros(2, np.float32), (LOC, SCALE))
    with pytest.raises(TypeError, match=r"params must be a pair \(loc, scale\)"):
        est(jax.random.key(1), LOC)
    with pytest.raises(TypeError, match="loc must have a floating dtype"):
        est(jax.random.key(2), (jnp.zeros(2, jnp.int32), SCALE))
    with pytest.raises(ValueError, match="do not broadcast"):
        est(jax.random.key(3), (jnp.zeros(3, F32), SCALE))
    with pytest.raises(ValueError, match="measure_valued: f must return a scalar"):
        jaxgrad.measure_valued(lambda x: x)(jax.random.key(4), (LOC, SCALE))
    with pytest.raises(ValueError, match="measure_valued accepts a single key"):
        est(jax.random.split(jax.random.key(5), 2), (LOC, SCALE))
