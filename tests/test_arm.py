"""ARM and DisARM: formulas on fixed noise, unbiasedness, exact variances, errors.

Exact variances on the Bernoulli toy ``f(b) = (b - t)^2`` (one coin, gradient
with respect to its logit ``l``, ``p = sigma(l)``, ``q = 1 - p``,
``m = min(p, q)``, ``Delta = f(1) - f(0) = 1 - 2t``; true gradient
``p q Delta``):

* ARM: ``g = (f(1[u > q]) - f(1[u < p])) (u - 1/2)``. The two samples differ
  exactly on ``u in [0, m) U (1 - m, 1]`` (for ``p > 1/2`` the overlap
  ``(q, p)`` gives equal samples), where ``g = Delta |u - 1/2|``; elsewhere
  ``g = 0``. Hence ``E[g^2] = Delta^2 * 2 int_{1/2 - m}^{1/2} w^2 dw
  = Delta^2 (2/3) (1/8 - (1/2 - m)^3)`` and ``Var = E[g^2] - (p q Delta)^2``.
  p = 0.5: ``Delta^2 (1/12 - 1/16) = Delta^2 / 48``; Delta = 0.002 gives
  8.3333e-8. p = 0.1: ``Delta^2 (0.0406667 - 0.0081) = 1.3027e-7``.
* DisARM: on the same event ``b != b~`` (probability ``2m``),
  ``g = (1/2) Delta sigma(|l|) = (1/2) Delta max(p, q)`` whichever sample is
  the 1, else 0, so ``Var = Delta^2 (m (1 - m)^2 / 2 - m^2 (1 - m)^2)
  = Delta^2 m (1 - m)^2 (1/2 - m)``: exactly 0 at p = 0.5, and
  ``0.0324 Delta^2 = 1.296e-7`` at p = 0.1.
* RLOO with two samples: ``g = (1/2)((f_1 - f_2) s_1 + (f_2 - f_1) s_2)``,
  ``s = b - p``; it is ``Delta / 2`` when the two samples differ (probability
  ``2 p q``) and 0 otherwise: ``Var = 2 p q Delta^2 / 4 - (p q Delta)^2``,
  2.5e-7 at p = 0.5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_unbiased_in_both,
    coins_problem,
    coupled_coins,
    joint,
    never_differentiated,
    size,
    straight_through_bernoulli,
)

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad.diagnostics import grad_samples

NUM_KEYS = 20_000


f_nonlinear = coupled_coins


ESTIMATORS = {
    "arm": joint(jaxgrad.arm(f_nonlinear)),
    "disarm": joint(jaxgrad.disarm(f_nonlinear)),
    "disarm-2pairs": joint(jaxgrad.disarm(f_nonlinear, num_samples=2)),
}


_problem = coins_problem


# D = 1, 3, 10 between them; one compiled program per case.
@pytest.mark.parametrize(
    ("name", "d"), [("arm", 1), ("arm", 10), ("disarm-2pairs", 3), ("disarm", 10)]
)
def test_unbiased(name, d, key):
    logits, a = _problem(d)
    assert_unbiased_in_both(
        ESTIMATORS[name], key, f_nonlinear, jaxgrad.dists.bernoulli, logits, a, num_keys=NUM_KEYS
    )


def test_power_rejects_straight_through(key):
    """The z-test above rejects straight-through on the same problem (shared with REBAR/RELAX)."""
    logits, a = _problem(3)
    st = straight_through_bernoulli(f_nonlinear)
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased_in_both(
            st, key, f_nonlinear, jaxgrad.dists.bernoulli, logits, a, num_keys=NUM_KEYS
        )


# ------------------------------------------------------------ fixed noise


@jax.jit
def _on_fixed_noise(key, logits, a):
    """ARM and DisARM estimates, and the formulas evaluated on the same uniforms."""
    k_arm, k_disarm = jax.random.clone(key), jax.random.clone(key)
    u = samplers.uniform_open(key, (1, *logits.shape), jnp.float32)[0]  # what est draws
    p = jax.nn.sigmoid(logits)
    b, b_anti = (u < p).astype(jnp.float32), (1 - u < p).astype(jnp.float32)
    f_b, f_anti = f_nonlinear(b, a), f_nonlinear(b_anti, a)
    up = (u > jax.nn.sigmoid(-logits)).astype(jnp.float32)
    down = (u < p).astype(jnp.float32)
    arm_formula = (f_nonlinear(up, a) - f_nonlinear(down, a)) * (u - 0.5)
    sign = jnp.where(b_anti > 0, -1.0, 1.0)
    differ = (b != b_anti).astype(jnp.float32)
    disarm_formula = 0.5 * (f_b - f_anti) * sign * differ * jax.nn.sigmoid(jnp.abs(logits))
    args_formula = jax.grad(lambda a: (f_nonlinear(b, a) + f_nonlinear(b_anti, a)) / 2)(a)
    arm_out = jax.value_and_grad(jaxgrad.arm(f_nonlinear), argnums=1)(k_arm, logits, a)
    disarm_out = jax.value_and_grad(jaxgrad.disarm(f_nonlinear), argnums=(1, 2))(
        k_disarm, logits, a
    )
    formulas = ((f_b + f_anti) / 2, arm_formula, disarm_formula, args_formula)
    return formulas, arm_out, disarm_out


def test_formulas_on_fixed_noise(key):
    logits, a = _problem(5)
    for k in jax.random.split(key, 3):
        (value, arm_formula, disarm_formula, args_formula), arm_out, disarm_out = _on_fixed_noise(
            k, logits, a
        )
        np.testing.assert_allclose(arm_out[0], value, rtol=1e-6)
        np.testing.assert_allclose(arm_out[1], arm_formula, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(disarm_out[0], value, rtol=1e-6)
        np.testing.assert_allclose(disarm_out[1][0], disarm_formula, rtol=1e-5, atol=1e-7)
        # Gradients w.r.t. args are pathwise on the same two samples.
        np.testing.assert_allclose(disarm_out[1][1], args_formula, rtol=1e-5)


_no_derivative = never_differentiated(jnp.sum)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_f_never_differentiated_in_x(name, key):
    f = lambda x, a: _no_derivative(x) * jnp.sum(a)
    est = getattr(jaxgrad, name)(f)
    logits, a = _problem(3)
    g_l, g_a = jax.jit(jax.grad(est, argnums=(1, 2)))(key, logits, a)
    assert g_l.shape == (3,) and g_a.shape == (3,)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_dtype_and_extreme_logits(dtype, key):
    logits = jnp.asarray([1e4, -1e4, 0.3, jnp.inf, -jnp.inf], dtype)
    f = lambda x: jnp.sum((x - 0.3) ** 2) + jnp.prod(x + 0.5)

    @jax.jit
    def both(key, logits):
        k1, k2 = jax.random.split(key)
        return [
            jax.value_and_grad(e(f), argnums=1)(k, logits)
            for e, k in ((jaxgrad.arm, k1), (jaxgrad.disarm, k2))
        ]

    for value, g in both(key, logits):
        assert g.dtype == dtype and value.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.isfinite(value))
        assert float(g[3]) == 0.0 and float(g[4]) == 0.0  # masked coins


# ------------------------------------------------------ exact variances


def _toy(t):
    return lambda b: (b[0] - t) ** 2


def _rloo2(f):
    rloo = getattr(jaxgrad, "rloo", None)
    if rloo is not None:
        return rloo(f, dist=jaxgrad.dists.bernoulli, num_samples=2)

    def est(key, logits):  # the textbook form, for when jaxgrad.rloo is absent
        p = jax.nn.sigmoid(logits)
        b = (jax.random.uniform(key, (2, *logits.shape), logits.dtype) < p).astype(logits.dtype)
        values = jax.vmap(f)(b)
        logp = jnp.sum(b * jax.nn.log_sigmoid(logits) + (1 - b) * jax.nn.log_sigmoid(-logits), 1)
        centered = jax.lax.stop_gradient(values - values[::-1])
        return jnp.mean(values) + jnp.mean(centered * (logp - jax.lax.stop_gradient(logp)))

    return est


TOY = _toy(0.499)
TOY_ESTIMATORS = {"arm": jaxgrad.arm(TOY), "disarm": jaxgrad.disarm(TOY), "rloo2": _rloo2(TOY)}


@pytest.mark.parametrize(
    ("name", "p", "exact"),
    [
        ("arm", 0.5, 8.3333e-8),
        ("disarm", 0.5, 0.0),
        ("rloo2", 0.5, 2.5e-7),
        ("arm", 0.1, 1.3027e-7),
        ("disarm", 0.1, 1.2960e-7),
    ],
)
@pytest.mark.slow
def test_exact_variance_bernoulli_toy(name, p, exact, key):
    logits = jnp.asarray([np.log(p / (1 - p))], jnp.float32)
    g = grad_samples(TOY_ESTIMATORS[name], key, logits, num_keys=size(1_000_000, 250_000))
    g = np.asarray(g, np.float64)[:, 0]
    var = g.var()
    np.testing.assert_allclose(g.mean(), p * (1 - p) * 0.002, rtol=0.02 if exact else 1e-4)
    if exact == 0.0:
        assert var < 1e-14, var
    else:
        assert abs(var - exact) < 0.02 * exact, (var, exact)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_errors(name, key):
    key, batch_key = jax.random.split(key)
    build = getattr(jaxgrad, name)
    with pytest.raises(TypeError, match=f"{name}: f must be a callable"):
        build(3.0)
    with pytest.raises(ValueError, match=f"{name}: num_samples must be at least 1"):
        build(TOY, num_samples=0)
    with pytest.raises(TypeError, match=f"{name}: num_samples must be a static Python int"):
        build(TOY, num_samples=1.5)
    est = build(TOY)
    with pytest.raises(TypeError, match=f"{name}: logits must have a floating dtype"):
        jax.eval_shape(est, key, jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match=f"{name} accepts a single key"):
        jax.eval_shape(est, jax.random.split(batch_key, 2), jnp.zeros(2, jnp.float32))
    with pytest.raises(ValueError, match=f"{name}: f must return a scalar"):
        jax.eval_shape(build(lambda x: x), key, jnp.zeros(2, jnp.float32))
