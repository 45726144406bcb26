"""RODEO: unbiasedness (untrained and non-trivial h), formula on fixed noise, tuning, errors.

The z-tests of every case (and their straight-through power checks) share one
compiled program (``grad_samples_of_many``). The non-trivial ``h`` leans on the
leave-one-out mean ``f_others`` (nonlinearly) and on the cost's argument ``a``,
so a control variate that leaked its own sample's cost, or did not have mean
zero under the Gibbs kernel, would show as bias in params.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    coins_problem,
    coupled_coins,
    exact_grads,
    grad_samples_of_many,
    never_differentiated,
    softplus_cosine,
    straight_through_bernoulli,
)

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad._src.estimators import rodeo as rodeo_module
from jaxgrad.diagnostics import assert_unbiased

F32 = jnp.float32
BERN = jaxgrad.dists.bernoulli
NUM_KEYS = 20_000


def h_nontrivial(y, f_others, scale, a):
    """A fixed non-linear h: both parts depend on the point, on f_others and on ``a``."""
    s = jnp.sum(y * a)
    h0 = scale * (jnp.sin(3.0 * s) * f_others + f_others**2)
    h1 = scale * (2.0 * f_others - 3.0 * s + jnp.cos(s) * y.size)
    return h0, h1


# name -> (cost, D, num_samples)
CASES = {
    "coins-1": (coupled_coins, 1, 2),
    "coins-3": (coupled_coins, 3, 3),
    "coins-10": (coupled_coins, 10, 2),
    "softplus-cosine-3": (softplus_cosine, 3, 4),
}


def _estimators():
    ests, params = {}, {}
    for name, (cost, d, k) in CASES.items():
        pa = coins_problem(d)
        untrained = rodeo_module.rodeo_untrained(cost, num_samples=k)
        tuned = jaxgrad.rodeo(cost, h_nontrivial, num_samples=k)
        ests[f"{name}/untrained"] = lambda key, pa, e=untrained: e(key, pa[0], pa[1])
        ests[f"{name}/h"] = lambda key, pa, e=tuned: e(key, pa[0], F32(1.0), pa[1])
        ests[f"{name}/straight-through"] = straight_through_bernoulli(cost)
        for kind in ("untrained", "h", "straight-through"):
            params[f"{name}/{kind}"] = pa
    return ests, params


def _samples(key):
    """The gradient samples of every case, computed once per key (one compiled program)."""
    return _samples_of(tuple(np.asarray(jax.random.key_data(key)).tolist()))


@functools.cache
def _samples_of(key_data):
    ests, params = _estimators()
    key = jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32))
    return grad_samples_of_many(ests, params, key, num_keys=NUM_KEYS, batch_size=2_000)


@pytest.mark.parametrize("kind", ["untrained", "h"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unbiased_with_power_check(case, kind, key):
    cost, d, _ = CASES[case]
    logits, a = coins_problem(d)
    exact = exact_grads(cost, BERN, logits, a)
    samples = _samples(key)
    assert_unbiased(samples[f"{case}/{kind}"], exact)
    # Power: the same z-test, on the same problem and number of keys, rejects straight-through.
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples[f"{case}/straight-through"], exact)


# ------------------------------------------------------------ fixed noise


def _by_hand(key, logits, a, k, h, scale):
    """RODEO written out with explicit loops over samples and neighbours."""
    d = logits.size
    p = jax.nn.sigmoid(logits)
    u = samplers.uniform_open(key, (k, d), F32)  # what est draws
    xs = [(u[i] < p).astype(F32) for i in range(k)]
    fv = [coupled_coins(x, a) for x in xs]
    f_others = [(sum(fv) - fv[i]) / (k - 1) for i in range(k)]

    def stein(fun, x):  # (A fun)(x) for the random-scan Gibbs kernel, scalar or vector fun
        total = 0.0
        for j in range(d):
            y = x.at[j].set(1.0 - x[j])
            q_flip = jnp.where(x[j] == 0, p[j], 1.0 - p[j])  # q_j(1 - x_j)
            total = total + q_flip * (fun(y) - fun(x))
        return total / d

    def h0(i):
        return lambda y: h(y, f_others[i], scale, a)[0]

    def big_h(i):
        return lambda y: h(y, f_others[i], scale, a)[1] * (y - p)

    shifted = [fv[j] + stein(h0(j), xs[j]) for j in range(k)]
    g = 0.0
    for i in range(k):
        b = sum(shifted[j] for j in range(k) if j != i) / (k - 1)
        g = g + (fv[i] - b) * (xs[i] - p) + stein(big_h(i), xs[i])
    g_a = jax.grad(lambda a: sum(coupled_coins(x, a) for x in xs) / k)(a)
    return sum(fv) / k, g / k, g_a


def _zero_h(y, f_others, scale, a):
    return jnp.zeros((2,), F32)


@jax.jit
def _on_fixed_noise(key, logits, a, scale):
    """RODEO (K = 3, non-trivial h; K = 2, h = 0), the hand computation and RLOO, same noise."""
    k_hand, k_zero, k_rloo = (jax.random.clone(key) for _ in range(3))
    est = jaxgrad.rodeo(coupled_coins, h_nontrivial, num_samples=3)
    zero = jaxgrad.rodeo(coupled_coins, _zero_h, num_samples=2)
    rloo = jaxgrad.rloo(coupled_coins, dist=BERN, num_samples=2)
    out = jax.value_and_grad(est, argnums=(1, 3))(key, logits, scale, a)
    hand = _by_hand(k_hand, logits, a, 3, h_nontrivial, scale)
    g_zero = jax.grad(zero, argnums=1)(k_zero, logits, scale, a)
    g_rloo = jax.grad(rloo, argnums=1)(k_rloo, logits, a)
    return out, hand, g_zero, g_rloo


def test_formula_on_fixed_noise(key):
    logits, a = coins_problem(4)
    for sub in jax.random.split(key, 2):
        (value, (g, g_a)), hand, g_zero, g_rloo = _on_fixed_noise(sub, logits, a, F32(0.7))
        np.testing.assert_allclose(value, hand[0], rtol=1e-6)
        np.testing.assert_allclose(g, hand[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g_a, hand[2], rtol=1e-5, atol=1e-6)  # pathwise in a
        np.testing.assert_allclose(g_zero, g_rloo, rtol=1e-5, atol=1e-7)  # h = 0 is RLOO


_no_derivative = never_differentiated(jnp.sum)


def test_black_box_and_masked_coins(key):
    f = lambda x: _no_derivative(x * jnp.arange(1.0, 6.0, dtype=F32)) ** 2
    logits = jnp.asarray([0.3, jnp.inf, -jnp.inf, -0.5, 20.0], F32)
    est = rodeo_module.rodeo_untrained(f, num_samples=3)
    g = jax.jit(jax.grad(est, argnums=1))(key, logits)
    assert g.dtype == F32 and bool(jnp.all(jnp.isfinite(g)))
    assert float(g[1]) == 0.0 and float(g[2]) == 0.0


# ------------------------------------------------------------ tuning by variance_loss


def test_adam_on_variance_loss_beats_rloo(key):
    """Adam on variance_loss lowers the variance (held-out keys) below RLOO's at the same K."""
    logits, a = coins_problem(3)
    f = lambda x: coupled_coins(x, a)
    k = 2
    est = jaxgrad.rodeo(f, rodeo_module.linear_h, num_samples=k)
    loss = jaxgrad.variance_loss(est)
    lr, steps = 0.05, 150

    @jax.jit
    def train(key, phi):
        def step(carry, sub):
            phi, m, v, t = carry
            d_phi, _ = jax.grad(loss, argnums=2, has_aux=True)(sub, logits, phi)
            t = t + 1.0
            m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, d_phi)
            v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, d_phi)
            phi = jax.tree.map(
                lambda p, m, v: p - lr * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8),
                phi,
                m,
                v,
            )
            return (phi, m, v, t), None

        zeros = jax.tree.map(jnp.zeros_like, phi)
        carry = (phi, zeros, zeros, jnp.zeros((), F32))
        return jax.lax.scan(step, carry, jax.random.split(key, steps))[0][0]

    train_key, test_key = jax.random.split(key)
    phi = train(train_key, rodeo_module.linear_h_init(logits))
    rloo = jaxgrad.rloo(f, dist=BERN, num_samples=k)
    ests = {"rloo": lambda key, l: rloo(key, l), "rodeo": lambda key, l: est(key, l, phi)}
    samples = grad_samples_of_many(
        ests, {"rloo": logits, "rodeo": logits}, test_key, num_keys=4_000, batch_size=2_000
    )
    var = {n: float(np.asarray(s, np.float64).var(axis=0).sum()) for n, s in samples.items()}
    assert var["rodeo"] < 0.5 * var["rloo"], var


# ------------------------------------------------------------ misuse


def _f(x):
    return jnp.sum(x)


def test_errors(key):
    logits = jnp.zeros(3, F32)
    keys = iter(jax.random.split(key, 8))
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        jaxgrad.rodeo(_f, rodeo_module.linear_h, num_samples=1)
    with pytest.raises(TypeError, match="num_samples must be a static Python int"):
        jaxgrad.rodeo(_f, rodeo_module.linear_h, num_samples=2.0)
    with pytest.raises(TypeError, match="rodeo: h must be a callable"):
        jaxgrad.rodeo(_f, None)
    with pytest.raises(TypeError, match="rodeo: f must be a callable"):
        jaxgrad.rodeo(None, rodeo_module.linear_h)
    with pytest.raises(TypeError, match="f_takes_key must be a static Python bool"):
        jaxgrad.rodeo(_f, rodeo_module.linear_h, f_takes_key=1)
    est = jaxgrad.rodeo(_f, rodeo_module.linear_h)
    with pytest.raises(TypeError, match="called without h_params"):
        est(next(keys), logits)
    with pytest.raises(TypeError, match="logits"):
        est(next(keys), jnp.zeros(3, jnp.int32), None)
    bad_shape = jaxgrad.rodeo(_f, lambda y, c, phi: y)
    with pytest.raises(ValueError, match=r"h must return two scalars \(h0, h1\)"):
        jax.eval_shape(jax.grad(bad_shape, argnums=1), next(keys), logits, None)
    triple = jaxgrad.rodeo(_f, lambda y, c, phi: (c, c, c))
    with pytest.raises(ValueError, match="length 3"):
        jax.eval_shape(jax.grad(triple, argnums=1), next(keys), logits, None)
    integer = jaxgrad.rodeo(_f, lambda y, c, phi: jnp.zeros(2, jnp.int32))
    with pytest.raises(TypeError, match="h must return floating values"):
        jax.eval_shape(jax.grad(integer, argnums=1), next(keys), logits, None)
    with pytest.raises(TypeError, match="first-order estimator"):
        jax.eval_shape(jax.hessian(rodeo_module.rodeo_untrained(_f), argnums=1), next(keys), logits)
