"""ARMS: unbiasedness, the copula's law, DisARM at n = 2, the correlation weight, errors."""

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
    joint,
    softplus_cosine,
    straight_through_bernoulli,
)

import jaxgrad
from jaxgrad._src.estimators import arms as arms_module
from jaxgrad.diagnostics import assert_unbiased

BERN = jaxgrad.dists.bernoulli
NUM_KEYS = 20_000
CASES = {  # name -> (cost, D, n)
    "coupled-d1-n3": (coupled_coins, 1, 3),
    "coupled-d3-n4": (coupled_coins, 3, 4),
    "coupled-d10-n3": (coupled_coins, 10, 3),
    "softplus-d3-n5": (softplus_cosine, 3, 5),
}


@functools.cache
def _samples():
    """Every case, straight-through on the D = 3 case, and RLOO(4) there: one program."""
    ests, params = {}, {}
    for name, (f, d, n) in CASES.items():
        ests[name], params[name] = joint(jaxgrad.arms(f, num_samples=n)), coins_problem(d)
    ests["st-d3"], params["st-d3"] = straight_through_bernoulli(coupled_coins), coins_problem(3)
    rloo = jaxgrad.rloo(coupled_coins, dist=BERN, num_samples=4)
    ests["rloo-d3-n4"], params["rloo-d3-n4"] = joint(rloo), coins_problem(3)
    # Chunks of 1_000 keys: the same keys (and samples) as one vmap over all of them, but
    # the 20_000-wide vmap ran about 2x slower on CPU (7.7 s against 2.7 s for this study).
    return grad_samples_of_many(
        ests, params, jax.random.key(4), num_keys=NUM_KEYS, batch_size=1_000
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_unbiased(name):
    f, d, _ = CASES[name]
    logits, a = coins_problem(d)
    assert_unbiased(_samples()[name], exact_grads(f, BERN, logits, a))


def test_power_rejects_straight_through():
    logits, a = coins_problem(3)
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(_samples()["st-d3"], exact_grads(coupled_coins, BERN, logits, a))


def test_lower_variance_than_rloo_with_the_same_evaluations():
    arms4 = np.var(np.asarray(_samples()["coupled-d3-n4"][0]), axis=0)
    rloo4 = np.var(np.asarray(_samples()["rloo-d3-n4"][0]), axis=0)
    # Measured (total over the 3 coins): ARMS 0.149, RLOO 0.185, a ratio of 0.81; per
    # coordinate ARMS is not always lower (coin 0: 0.060 against 0.057). At 20k keys the
    # total's relative standard error is about 2%, so 0.9 is several of them away.
    assert arms4.sum() < 0.9 * rloo4.sum(), (arms4, rloo4)


@pytest.mark.bitwise
def test_two_samples_are_disarm_on_the_same_noise(key):
    logits, a = coins_problem(5)

    @jax.jit
    def both(key):
        out_arms = jax.value_and_grad(jaxgrad.arms(coupled_coins, num_samples=2), (1, 2))(
            key, logits, a
        )
        out_disarm = jax.value_and_grad(jaxgrad.disarm(coupled_coins), (1, 2))(
            jax.random.clone(key), logits, a
        )
        return out_arms, out_disarm

    for k in jax.random.split(key, 4):
        got, want = both(k)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_copula_law_and_correlation(key):
    """Every sample is Bernoulli(p); a pair is (1, 0) with the probability the weight uses."""
    n, num = 4, 200_000
    logits = jnp.asarray([-2.0, -0.3, 0.4, 1.5, 3.0], jnp.float32)
    a, weight = arms_module.threshold_and_weight(logits, n)
    b = np.asarray(arms_module.dirichlet_copula(key, n, (num, 5), jnp.float32) < a)
    p = np.asarray(jax.nn.sigmoid(logits), np.float64)
    d = np.asarray(arms_module.dirichlet_copula(jax.random.key(1), n, (3,), jnp.float64))
    np.testing.assert_allclose(d.sum(axis=0), 1.0, rtol=1e-12)
    for i in range(n):
        freq = b[i].mean(axis=0)
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / num)), (i, freq, p)
    one_zero = (b[0] & ~b[1]).mean(axis=0)
    expected = p * (1 - p) / np.asarray(weight, np.float64)  # p q (1 - rho) = P(1, 0)
    assert np.all(np.abs(one_zero - expected) < 5 * np.sqrt(expected / num)), (one_zero, expected)
    # Antithetic: the samples are negatively correlated (fewer equal pairs than independence).
    assert np.all(expected > p * (1 - p))


@pytest.mark.parametrize("n", [3, 4, 10])
def test_weight_against_float64_and_at_extremes(n):
    l64 = np.linspace(-6.0, 6.0, 25)
    p, q = 1 / (1 + np.exp(-l64)), 1 / (1 + np.exp(l64))
    a = 1 - q ** (1.0 / (n - 1))
    ref = p * q / (q - np.clip(1 - 2 * a, 0, None) ** (n - 1))
    _, w = arms_module.threshold_and_weight(jnp.asarray(l64, jnp.float32), n)
    np.testing.assert_allclose(w, ref, rtol=2e-5)
    extreme = jnp.asarray([-jnp.inf, -1e4, -80.0, -30.0, 30.0, 80.0, 1e4, jnp.inf], jnp.float32)
    _, w = arms_module.threshold_and_weight(extreme, n)
    assert bool(jnp.all(jnp.isfinite(w) & (w >= 0) & (w <= 1.0 + 1e-6))), w


def test_black_box_and_errors(key):
    from helpers import never_differentiated

    f = never_differentiated(lambda b: jnp.sum(b * jnp.arange(3.0, dtype=b.dtype)))
    g = jax.grad(jaxgrad.arms(f, num_samples=3), argnums=1)(key, jnp.zeros(3, jnp.float32))
    assert g.shape == (3,)
    with pytest.raises(ValueError, match=r"arms: num_samples must be at least 2.*n >= 2"):
        jaxgrad.arms(coupled_coins, num_samples=1)
    with pytest.raises(TypeError, match="arms: num_samples must be a static Python int"):
        jaxgrad.arms(coupled_coins, num_samples=3.0)
    with pytest.raises(TypeError, match="arms is a first-order estimator"):
        jax.hessian(jaxgrad.arms(jnp.sum, num_samples=3), argnums=1)(
            jax.random.clone(key), jnp.zeros(2, jnp.float32)
        )
