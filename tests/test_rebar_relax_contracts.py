"""REBAR with a per-coordinate ``eta``; RELAX with masked coins and without ``cv_params``.

* ``rebar(f, eta=array)`` keeps the control variate scalar and scales it per
  coordinate, ``g_i = [f(b) - eta_i c(z~)] d_i log p(b) + eta_i (d_i c(z) -
  d_i c(z~))``: unbiased (z-test against enumeration), and the variance loss
  reaches every ``eta_i`` through its own coordinate only (the Jacobian of
  the estimate in ``eta`` is diagonal).
* Masked coins (logits ``+-inf``): RELAX's control variate never sees an
  infinite ``z``; value and gradient are finite, zero at the masked coins,
  and the other coordinates stay unbiased.
* Calling a RELAX estimator without ``cv_params`` names ``cv_params``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import coins_problem, coupled_coins, exact_grads

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased, grad_samples

BERN = jaxgrad.dists.bernoulli
NUM_KEYS = 20_000
ETA = jnp.asarray([1.0, 0.5, 2.0], jnp.float32)


def test_rebar_with_array_eta_is_unbiased():
    logits, a = coins_problem(3)
    est = jaxgrad.rebar(coupled_coins, eta=ETA)
    samples = grad_samples(est, jax.random.key(20), logits, a, num_keys=NUM_KEYS)
    assert_unbiased(samples, exact_grads(coupled_coins, BERN, logits, a)[0])


def test_rebar_array_eta_applies_per_coordinate_and_reaches_the_variance_loss():
    logits, a = coins_problem(3)

    def estimate(eta, key):
        return jax.grad(jaxgrad.rebar(coupled_coins, eta=eta), argnums=1)(key, logits, a)

    def loss(eta, key):
        return jaxgrad.variance_loss(jaxgrad.rebar(coupled_coins, eta=eta))(key, logits, a)[0]

    @jax.jit
    def run(key):
        k = [jax.random.clone(key) for _ in range(3)]
        return (
            jax.jacrev(estimate)(ETA, k[0]),
            jax.grad(loss)(ETA, k[1]),
            estimate(jnp.full((3,), 0.5, jnp.float32), k[2]),
            estimate(jnp.asarray(0.5, jnp.float32), key),
        )

    jac, d_eta, g_array, g_scalar = run(jax.random.key(21))
    assert d_eta.shape == (3,) and bool(jnp.all(d_eta != 0))  # every eta_i is tuned
    np.testing.assert_array_equal(np.asarray(jac) * (1 - np.eye(3)), 0.0)  # g_i: eta_i only
    assert bool(jnp.all(jnp.diag(jac) != 0))
    np.testing.assert_allclose(g_array, g_scalar, rtol=1e-6)  # a constant array is the scalar


def test_rebar_eta_of_the_wrong_shape_is_refused():
    logits, a = coins_problem(3)
    est = jaxgrad.rebar(coupled_coins, eta=jnp.ones(2, jnp.float32))
    with pytest.raises(ValueError, match=r"rebar: eta must be a scalar or broadcastable"):
        est(jax.random.key(0), logits, a)


def test_relax_masked_coins_and_a_user_control_variate():
    seen = []

    def cv(z, phi):  # records whether z was ever infinite; phi * z is NaN for z = inf
        jax.debug.callback(lambda zz: seen.append(bool(np.all(np.isfinite(zz)))), z)
        return jnp.sum(phi * z) + jnp.sum(jnp.sin(z))

    f = lambda b: jnp.sum((b - 0.45) ** 2 * jnp.asarray([1.0, 2.0, 3.0], jnp.float32))
    logits = jnp.asarray([jnp.inf, 0.3, -jnp.inf], jnp.float32)
    phi = jnp.asarray([0.2, -0.1, 0.4], jnp.float32)
    user = jaxgrad.relax(f, cv)
    registry = jaxgrad.ESTIMATORS["relax"].build(f, dist=BERN, num_samples=1)

    @jax.jit
    def run(key):
        k1, k2 = jax.random.split(key)
        return (
            jax.value_and_grad(user, argnums=1)(k1, logits, phi),
            jax.value_and_grad(registry, argnums=1)(k2, logits),
        )

    for value, grad in run(jax.random.key(22)):
        assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))
        np.testing.assert_array_equal(grad[jnp.asarray([0, 2])], 0.0)
    jax.effects_barrier()
    assert seen and all(seen)  # the control variate never saw an infinite z

    # The live coin stays unbiased: E over b of f with coins 0 and 2 fixed at 1 and 0.
    samples = grad_samples(
        lambda k, l: registry(k, l), jax.random.key(23), logits, num_keys=NUM_KEYS
    )
    exact = exact_grads(lambda b, _: f(b), BERN, logits, jnp.zeros(()))[0]
    assert_unbiased(samples, exact)


def test_relax_without_cv_params_names_cv_params():
    est = jaxgrad.relax(lambda b: jnp.sum(b), lambda z, phi: phi * jnp.sum(z))
    message = r"relax: .*called without cv_params.*est\(key, logits, phi\)"
    with pytest.raises(TypeError, match=message):
        est(jax.random.key(0), jnp.zeros(3, jnp.float32))
