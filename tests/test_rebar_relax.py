"""REBAR and RELAX: formulas on fixed noise, unbiasedness, variance tuning, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    assert_unbiased_in_both,
    coins_problem,
    coupled_coins,
    joint,
    never_differentiated,
)

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad.diagnostics import grad_samples

NUM_KEYS = 20_000


f_nonlinear = coupled_coins


def cv_net(z, phi, a):
    """A RELAX control variate: scaled relaxed f plus a learned linear term."""
    relaxed = jax.nn.sigmoid(z / jnp.exp(phi[1]))
    return phi[0] * f_nonlinear(relaxed, a) + jnp.sum(phi[2] * jax.nn.sigmoid(z)) + phi[3]


PHI = jnp.asarray([0.8, np.log(0.4), 0.3, 0.1], jnp.float32)


_problem = coins_problem


_REBAR = jaxgrad.rebar(f_nonlinear)
_REBAR_TUNED = jaxgrad.rebar(f_nonlinear, temperature=0.3, eta=0.6, num_samples=2)
_RELAX = jaxgrad.relax(f_nonlinear, cv_net)

ESTIMATORS = {  # (logits, a) as one pytree, so both gradients are checked
    "rebar": joint(_REBAR),
    "rebar-tuned": joint(_REBAR_TUNED),
    "relax": lambda key, pa: _RELAX(key, pa[0], PHI, pa[1]),
}


# D = 1, 3, 10 between them; one compiled program per case. The power check of
# this z-test on the same coins problem (it rejects straight-through) is
# tests/test_arm.py::test_power_rejects_straight_through.
@pytest.mark.parametrize(("name", "d"), [("rebar", 1), ("relax", 3), ("rebar-tuned", 10)])
def test_unbiased(name, d, key):
    logits, a = _problem(d)
    assert_unbiased_in_both(
        ESTIMATORS[name], key, f_nonlinear, jaxgrad.dists.bernoulli, logits, a, num_keys=NUM_KEYS
    )


# ------------------------------------------------------------ fixed noise


@jax.jit
def _rebar_on_fixed_noise(key, logits, a):
    """REBAR, RELAX with REBAR's control variate, and the formula on the same noise."""
    k_rebar, k_relax = jax.random.clone(key), jax.random.clone(key)
    temperature, eta = 0.4, 0.7
    uv = samplers.uniform_open(key, (2, 1, *logits.shape), jnp.float32)  # what est draws
    u, v = uv[0, 0], uv[1, 0]
    p = jax.nn.sigmoid(logits)
    b = (u > 1 - p).astype(jnp.float32)

    def z_of(l):
        return l + jnp.log(u) - jnp.log1p(-u)

    def z_tilde_of(l):  # the textbook construction: u~ uniform on the event, then logit
        q = jax.nn.sigmoid(l)
        u_t = jnp.where(b > 0, (1 - q) + v * q, v * (1 - q))
        return l + jnp.log(u_t) - jnp.log1p(-u_t)

    def c(z):
        return eta * f_nonlinear(jax.nn.sigmoid(z / temperature), a)

    score = b - p
    formula = (
        (f_nonlinear(b, a) - c(z_tilde_of(logits))) * score
        + jax.grad(lambda l: c(z_of(l)))(logits)
        - jax.grad(lambda l: c(z_tilde_of(l)))(logits)
    )
    rebar = jaxgrad.rebar(f_nonlinear, temperature=temperature, eta=eta)
    relax = jaxgrad.relax(
        f_nonlinear, lambda z, _, a: eta * f_nonlinear(jax.nn.sigmoid(z / 0.4), a)
    )
    rebar_out = jax.value_and_grad(rebar, argnums=(1, 2))(k_rebar, logits, a)
    relax_out = jax.value_and_grad(relax, argnums=1)(k_relax, logits, None, a)
    args_formula = jax.grad(f_nonlinear, argnums=1)(b, a)
    sign_ok = jnp.all((z_tilde_of(logits) > 0) == (b > 0))
    return (f_nonlinear(b, a), formula, args_formula, sign_ok), rebar_out, relax_out


def test_formulas_on_fixed_noise(key):
    logits, a = _problem(5)
    for k in jax.random.split(key, 3):
        (value, formula, args_formula, sign_ok), rebar_out, relax_out = _rebar_on_fixed_noise(
            k, logits, a
        )
        assert bool(sign_ok)  # z~ lies on the side of 0 given by b
        np.testing.assert_allclose(rebar_out[0], value, rtol=1e-6)
        np.testing.assert_allclose(rebar_out[1][0], formula, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(rebar_out[1][1], args_formula, rtol=1e-5)  # pathwise in a
        # RELAX with REBAR's control variate is REBAR.
        np.testing.assert_allclose(relax_out[0], value, rtol=1e-6)
        np.testing.assert_allclose(relax_out[1], rebar_out[1][0], rtol=1e-5, atol=1e-6)


def test_variance_loss_double_backprop_matches_finite_differences(key):
    """d/dphi of sum(g^2) through the estimate, against central differences in float64."""
    logits, a = (x.astype(jnp.float64) for x in _problem(3))
    phi = PHI.astype(jnp.float64)
    loss = jaxgrad.variance_loss(_RELAX)

    @jax.jit
    def run(key, phi):
        k_grad, k_value = jax.random.clone(key), jax.random.clone(key)
        grad = jax.grad(lambda p: loss(k_grad, logits, p, a)[0])(phi)
        eps = 1e-6
        steps = eps * jnp.eye(phi.size, dtype=phi.dtype)
        # One key, unbatched under vmap: every perturbed phi sees the same noise.
        losses = jax.vmap(lambda p: loss(key, logits, p, a)[0])(
            jnp.concatenate([phi + steps, phi - steps])
        )
        fd = (losses[: phi.size] - losses[phi.size :]) / (2 * eps)
        value, (_, g) = loss(k_value, logits, phi, a)
        return grad, fd, value, jnp.sum(g**2)

    for k in jax.random.split(key, 2):
        grad, fd, value, sum_sq = run(k, phi)
        assert bool(jnp.any(jnp.abs(grad) > 1e-3))
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(value, sum_sq, rtol=1e-12)


def test_relax_never_differentiates_f_in_x(key):
    no_derivative = never_differentiated(jnp.sum)
    f = lambda x, a: no_derivative(x) * jnp.sum(a)
    est = jaxgrad.relax(f, lambda z, phi, a: phi * jnp.sum(jax.nn.sigmoid(z) * a))
    logits, a = _problem(3)
    g = jax.jit(jax.grad(est, argnums=(1, 2, 3)))(key, logits, jnp.float32(0.5), a)
    assert g[0].shape == (3,) and g[2].shape == (3,)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_dtype_and_extreme_logits(dtype, key):
    logits = jnp.asarray([1e4, -1e4, 0.3, jnp.inf, -jnp.inf], dtype)
    f = lambda x: jnp.sum((x - 0.3) ** 2) + jnp.prod(x + 0.5)

    @jax.jit
    def both(key, logits):
        k1, k2 = jax.random.split(key)
        relax = jaxgrad.relax(f, lambda z, phi: phi * f(jax.nn.sigmoid(z)))
        return [
            jax.value_and_grad(jaxgrad.rebar(f), argnums=1)(k1, logits),
            jax.value_and_grad(relax, argnums=1)(k2, logits, jnp.asarray(0.5, dtype)),
        ]

    for value, g in both(key, logits):
        assert g.dtype == dtype and value.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.isfinite(value))
        assert float(g[3]) == 0.0 and float(g[4]) == 0.0  # masked coins


# ------------------------------------------------------ variance tuning

TOY_T = 0.45
TOY_LOGITS = jnp.asarray([0.5, -1.0, 1.5], jnp.float32)


def toy(b):
    return jnp.sum((b - TOY_T) ** 2)


def rebar_tuned(key, logits, tune):
    """REBAR with (log temperature, eta) as an argument: one compiled program for all values."""
    return jaxgrad.rebar(toy, temperature=jnp.exp(tune[0]), eta=tune[1])(key, logits)


def _total_variance(est, key, logits, *args, num_keys=10_000):
    g = grad_samples(est, key, logits, *args, num_keys=num_keys)
    return float(np.asarray(g, np.float64).var(axis=0).sum())


def test_tune_lowers_rebar_variance(key):
    """jaxgrad.tune on REBAR's (log temperature, eta), closed over in the estimator."""
    train_key, eval_key = jax.random.split(key)
    tune0 = jnp.asarray([np.log(0.5), 0.2], jnp.float32)
    tune = functools.partial(jaxgrad.tune, steps=300, keys_per_step=8, optimizer=optax.adam(0.03))
    tune1, losses = jax.jit(lambda k: tune(rebar_tuned, tune0, k, TOY_LOGITS))(train_key)
    assert losses.shape == (300,) and float(losses[-50:].mean()) < float(losses[:50].mean())
    # Common random numbers: the same keys before and after.
    before = _total_variance(rebar_tuned, jax.random.clone(eval_key), TOY_LOGITS, tune0)
    after = _total_variance(rebar_tuned, eval_key, TOY_LOGITS, tune1)
    assert after < 0.6 * before, (before, after, tune1)


def test_tune_under_vmap_equals_one_point_at_a_time_and_checks_its_arguments(key):
    # Two parameter points tuned at once (vmap over logits and keys) = each tuned alone.
    est = jaxgrad.relax(toy, lambda z, eta: eta * toy(jax.nn.sigmoid(2.0 * z)))
    points = jnp.stack([TOY_LOGITS, TOY_LOGITS + 1.0])
    k0, k1 = jax.random.split(key)
    run = lambda k, l: jaxgrad.tune(est, jnp.float32(0.0), k, l, steps=20)  # noqa: E731
    both = jnp.stack([jax.random.clone(k0), jax.random.clone(k1)])
    eta, losses = jax.jit(jax.vmap(run))(both, points)
    alone = [jax.jit(run)(k, l) for k, l in zip((k0, k1), points, strict=True)]
    np.testing.assert_allclose(eta, [a[0] for a in alone], rtol=1e-5)
    np.testing.assert_allclose(losses, [a[1] for a in alone], rtol=1e-5)
    assert float(eta[0]) > 0.1  # it moved, towards REBAR's eta of about 1
    cases = [
        (dict(steps=0), ValueError, "tune: steps must be at least 1, got 0"),
        (dict(keys_per_step=2.0), TypeError, "tune: keys_per_step must be a static Python int"),
        (dict(optimizer=0.02), TypeError, "tune: optimizer must be an optax.GradientTransform"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            jaxgrad.tune(est, 0.0, jax.random.key(0), TOY_LOGITS, **kwargs)
    with pytest.raises(TypeError, match="tune: est must be an estimator"):
        jaxgrad.tune(None, 0.0, jax.random.key(0), TOY_LOGITS)


def test_tune_under_shard_map_tunes_each_device_s_own_point(key):
    """8 parameter points sharded over 8 devices equal the vmapped tuning. (A replicated start
    would have its gradient summed over the devices and tune one shared eta: a regression.)"""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    est = jaxgrad.relax(toy, lambda z, eta: eta * toy(jax.nn.sigmoid(2.0 * z)))
    run = lambda k, l: jaxgrad.tune(est, jnp.float32(0.0), k, l, steps=10)  # noqa: E731
    points = jnp.asarray(np.linspace(-1.0, 1.0, 24).reshape(8, 3), jnp.float32)
    keys = jax.random.split(key, 8)
    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    sharded = jax.jit(jax.shard_map(jax.vmap(run), mesh=mesh, in_specs=P("d"), out_specs=P("d")))
    eta, losses = sharded(jax.random.clone(keys), points)
    want_eta, want_losses = jax.jit(jax.vmap(run))(keys, points)
    np.testing.assert_allclose(eta, want_eta, rtol=1e-5)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    assert len(set(np.asarray(eta).tolist())) == 8
    # A derivative through the tuning would be a second derivative of a first-order estimator.
    with pytest.raises(TypeError, match="relax is a first-order estimator"):
        jax.grad(lambda l: run(jax.random.key(1), l)[0])(points[0])


def toy_cv(z, phi):
    relaxed = jax.nn.sigmoid(z / jnp.exp(phi[1]))
    return phi[0] * toy(relaxed) + jnp.sum(phi[2:5] * jax.nn.sigmoid(z)) + phi[5]


TOY_RELAX = jaxgrad.relax(toy, toy_cv)


def test_relax_full_training_step_is_one_jitted_function(key):
    """Update the logits with the estimate and phi by the variance loss, in one program."""
    logit_opt, cv_opt = optax.sgd(0.5), optax.adam(0.03)
    loss = jaxgrad.variance_loss(TOY_RELAX)

    @jax.jit
    def train(logits, phi, key):
        def step(carry, k):
            logits, phi, s_l, s_phi = carry
            (_, (value, g)), d_phi = jax.value_and_grad(loss, argnums=2, has_aux=True)(
                k, logits, phi
            )
            up_l, s_l = logit_opt.update(g, s_l)
            up_phi, s_phi = cv_opt.update(d_phi, s_phi)
            carry = (
                optax.apply_updates(logits, up_l),
                optax.apply_updates(phi, up_phi),
                s_l,
                s_phi,
            )
            return carry, value

        init = (logits, phi, logit_opt.init(logits), cv_opt.init(phi))
        (logits, phi, _, _), values = jax.lax.scan(step, init, jax.random.split(key, 400))
        return logits, phi, values

    train_key, eval_key = jax.random.split(key)
    phi0 = jnp.asarray([0.0, np.log(0.5), 0.0, 0.0, 0.0, 0.0], jnp.float32)  # c = 0: REINFORCE
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
        logits1, phi1, values = train(TOY_LOGITS, phi0, train_key)
    # The logits moved toward the optimum b = 0 (t < 1/2): E f decreased.
    assert float(jnp.mean(values[-50:])) < float(jnp.mean(values[:50]))
    assert bool(jnp.all(logits1 < TOY_LOGITS))
    # At the final logits, the trained control variate has a much smaller variance.
    before = _total_variance(TOY_RELAX, jax.random.clone(eval_key), logits1, phi0)
    after = _total_variance(TOY_RELAX, eval_key, logits1, phi1)
    assert after < 0.5 * before, (before, after, phi1)


# ------------------------------------------------------------------ errors


def test_errors(key):
    key, batch_key = jax.random.split(key)
    logits = jnp.zeros(2, jnp.float32)
    for name, build in [
        ("rebar", jaxgrad.rebar),
        ("relax", lambda f, **kw: jaxgrad.relax(f, toy_cv, **kw)),
    ]:
        with pytest.raises(TypeError, match=f"{name}: f must be a callable"):
            build(3.0)
        with pytest.raises(ValueError, match=f"{name}: num_samples must be at least 1"):
            build(toy, num_samples=0)
    with pytest.raises(ValueError, match="rebar: temperature must be positive"):
        jaxgrad.rebar(toy, temperature=0.0)
    with pytest.raises(TypeError, match="relax: control_variate must be a callable"):
        jaxgrad.relax(toy, None)
    with pytest.raises(TypeError, match="variance_loss: est must be an estimator"):
        jaxgrad.variance_loss("rebar")

    rebar, relax = jaxgrad.rebar(toy), jaxgrad.relax(toy, toy_cv)
    phi = jnp.zeros(6, jnp.float32)
    with pytest.raises(TypeError, match="rebar: logits must have a floating dtype"):
        jax.eval_shape(rebar, key, jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="relax accepts a single key"):
        jax.eval_shape(relax, jax.random.split(batch_key, 2), logits, phi)
    with pytest.raises(ValueError, match="rebar: f must return a scalar"):
        jax.eval_shape(jaxgrad.rebar(lambda x: x), key, logits)
    with pytest.raises(ValueError, match="relax: control_variate must return a scalar"):
        jax.eval_shape(jaxgrad.relax(toy, lambda z, phi: z * phi), key, logits, 1.0)
