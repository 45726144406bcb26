"""Costs with their own randomness: ``f_takes_key=True`` gives every evaluation its own key.

* (tests/test_registry.py) Every registry entry calls ``f`` exactly
  ``info.cost(...)`` times per estimate, and with ``f_takes_key`` passes
  pairwise distinct keys, never the key of another estimate.
* The noise of ``f`` is independent across the evaluations of one estimate
  and of the samples (zero correlation, unit variance).
* Every unbiased entry stays unbiased for ``grad E[f0]`` with
  ``f(x, key) = f0(x) + 3 normal(key)`` (z-test on the estimator's own
  standard error). Power: the same test rejects a score function whose noise
  is drawn from the sampling key (noise correlated with the sample).
* The issue's LOO observation, as a regression: with one key shared through
  ``*args`` the leave-one-out baseline cancels the noise exactly (the
  gradient equals the noiseless one), which makes a variance study
  optimistic; with ``f_takes_key`` the variance carries the noise term
  ``sigma^2 p (1 - p) / (N - 1)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import coupled_coins, exact_grads

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased, grad_samples

F32 = jnp.float32
BERN, CAT, NORMAL = jaxgrad.dists.bernoulli, jaxgrad.dists.categorical, jaxgrad.dists.normal
NOISE = 3.0
NUM_KEYS = 20_000

A = jnp.asarray([0.3, 0.7, 1.1], F32)
W = jnp.asarray([[0.3, -0.5, 1.0], [0.8, 0.1, -0.6]], F32)
C = jnp.asarray([0.7, -1.3], F32)

PROBLEMS = {  # variable -> (dist, params, f0)
    "bernoulli": (BERN, jnp.asarray([0.4, -0.6, 1.1], F32), lambda x: coupled_coins(x, A)),
    "categorical": (
        CAT,
        jnp.asarray([[0.2, -0.4, 0.9], [-1.0, 0.5, 0.0]], F32),
        lambda x: (jnp.sum(x * W) - 0.2) ** 2,
    ),
    "normal": (
        NORMAL,
        (jnp.asarray([0.4, -0.3], F32), jnp.asarray([0.9, 1.2], F32)),
        lambda x: jnp.sum(C * x * x),
    ),
}


def exact_grad(variable):
    dist, params, f0 = PROBLEMS[variable]
    if variable == "normal":  # E[c x^2] = c (mu^2 + sigma^2)
        loc, scale = params
        return (2 * C * loc, 2 * C * scale)
    return exact_grads(f0, dist, params)[0]


def noisy(f0, sigma=NOISE):
    """``f(x, key) = f0(x) + sigma * normal(key)``: a cost with its own, irreproducible noise."""
    return lambda x, key: f0(x) + sigma * jax.random.normal(key, (), F32)


CASES = [
    (name, variable)
    for name, info in sorted(jaxgrad.ESTIMATORS.items())
    for variable in sorted(info.variables)
]


def test_noise_is_independent_across_evaluations_and_of_the_samples():
    n = 4
    f = lambda x, key: jax.random.normal(key, (), F32)  # a function of its key only
    est = jaxgrad.score_function(
        f, dist=BERN, num_samples=n, return_f_values=True, f_takes_key=True
    )
    logits = jnp.zeros(2, F32)
    run = jax.jit(jax.vmap(lambda k: est(k, logits)[1]))
    aux = run(jax.random.split(jax.random.key(3), NUM_KEYS))
    fv = np.asarray(aux.f_values, np.float64)  # [NUM_KEYS, n]
    corr = np.corrcoef(fv, rowvar=False)
    bound = 5 / np.sqrt(NUM_KEYS)
    assert np.all(np.abs(corr - np.eye(n)) < bound), corr
    np.testing.assert_allclose(fv.var(axis=0), 1.0, atol=0.05)  # each evaluation N(0, 1)
    xs = np.asarray(aux.samples, np.float64).reshape(NUM_KEYS * n, 2)
    for j in range(2):  # independent of the samples it is evaluated at
        assert abs(np.corrcoef(fv.reshape(-1), xs[:, j])[0, 1]) < 5 / np.sqrt(NUM_KEYS * n)
    # Power: the same bound rejects noise shared by all the samples of an estimate.
    shared = jaxgrad.score_function(
        lambda x, k: jax.random.normal(k, (), F32), dist=BERN, num_samples=n, return_f_values=True
    )
    same = jax.jit(jax.vmap(lambda k: shared(k, logits, jax.random.fold_in(k, 7))[1]))
    fs = np.asarray(same(jax.random.split(jax.random.key(4), 2_000)).f_values, np.float64)
    assert np.abs(np.corrcoef(fs, rowvar=False) - np.eye(n)).max() > 0.99


# One variable type per unbiased entry (the keys are handled per estimator, not per type;
# each case is a compiled program): the types of the three-type entries are spread out.
UNBIASED = [
    ("reinforce", "normal"),
    ("reinforce-optimal", "bernoulli"),
    ("pathwise", "normal"),
    ("measure-valued", "normal"),
    ("exact", "categorical"),
    ("arm", "bernoulli"),  # and disarm: the same antithetic body, only the weights differ
    ("arms", "bernoulli"),
    ("ugc", "bernoulli"),
    ("rebar", "bernoulli"),
    ("relax", "categorical"),  # rebar and relax share one body: both variables covered
    ("indecater", "categorical"),
    ("unordered-set", "categorical"),
    ("categorical-disarm", "categorical"),
    ("double-cv", "bernoulli"),
    ("rodeo", "bernoulli"),
]


def test_every_unbiased_entry_is_checked_with_a_noisy_f():
    unbiased = {n for n, e in jaxgrad.ESTIMATORS.items() if e.unbiased}
    # rloo: in test_loo_with_a_shared_key_is_optimistic_and_with_f_takes_key_is_not;
    # disarm shares arm's body (arm._antithetic), keys included.
    assert {n for n, _ in UNBIASED} | {"rloo", "disarm"} == unbiased
    assert all(jaxgrad.ESTIMATORS[n].applies_to(v) for n, v in UNBIASED)


@functools.cache
def noisy_samples(name, variable):
    info = jaxgrad.ESTIMATORS[name]
    dist, params, f0 = PROBLEMS[variable]
    est = info.build(noisy(f0), dist=dist, num_samples=info.num_samples, f_takes_key=True)
    return grad_samples(est, jax.random.key(10), params, num_keys=NUM_KEYS)


@pytest.mark.parametrize(("name", "variable"), UNBIASED)
def test_unbiased_with_a_noisy_f(name, variable):
    assert_unbiased(noisy_samples(name, variable), exact_grad(variable))


def test_power_noise_from_the_sampling_key_is_biased():
    # Reusing the sampling key for f's noise makes noise and sample dependent: biased.
    dist, logits, f0 = PROBLEMS["bernoulli"]

    def reused(key, logits):
        x = dist.sample(jax.random.clone(key), jax.lax.stop_gradient(logits))
        noise = NOISE * jax.random.normal(key, (), F32)  # the same key as the sample
        return (f0(x) + noise) * jaxgrad.magic_box(dist.log_prob(logits, x))

    samples = grad_samples(reused, jax.random.key(11), logits, num_keys=NUM_KEYS)
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, exact_grad("bernoulli"))


def test_loo_with_a_shared_key_is_optimistic_and_with_f_takes_key_is_not():
    n = 4
    dist, logits, f0 = PROBLEMS["bernoulli"]
    p = jax.nn.sigmoid(logits.astype(jnp.float64))
    noise_term = np.asarray(NOISE**2 * p * (1 - p) / (n - 1))  # per coordinate

    def shared_f(x, key):  # one key for every sample of the estimate, through *args
        return f0(x) + NOISE * jax.random.normal(key, (), F32)

    clean = jaxgrad.rloo(f0, dist=dist, num_samples=n)
    shared = jaxgrad.rloo(shared_f, dist=dist, num_samples=n)
    keyed = jaxgrad.rloo(noisy(f0), dist=dist, num_samples=n, f_takes_key=True)

    @jax.jit
    def grads(keys):
        def one(k):
            k_sample, k_noise = jax.random.split(k)
            g = jax.grad(lambda l: clean(jax.random.clone(k_sample), l))(logits)
            g_shared = jax.grad(lambda l: shared(k_sample, l, k_noise))(logits)
            g_keyed = jax.grad(lambda l: keyed(jax.random.fold_in(k, 1), l))(logits)
            return g, g_shared, g_keyed

        return jax.vmap(one)(keys)

    g, g_shared, g_keyed = (
        np.asarray(x, np.float64) for x in grads(jax.random.split(jax.random.key(12), NUM_KEYS))
    )
    assert_unbiased(g_keyed, exact_grad("bernoulli"))  # rloo stays unbiased with noise
    # Shared noise cancels exactly: the same estimates as without noise (to round-off).
    np.testing.assert_allclose(g_shared, g, atol=2e-5)
    # Independent noise does not cancel: Var = Var_clean + sigma^2 p (1 - p) / (N - 1).
    var_clean, var_keyed = g.var(axis=0), g_keyed.var(axis=0)
    np.testing.assert_allclose(var_keyed, var_clean + noise_term, rtol=0.06)
    assert np.all(var_keyed > 5 * var_clean)
