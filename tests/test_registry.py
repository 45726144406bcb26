"""The registry's uniform build options: ``temperature`` and ``f_takes_key``.

Every entry with a temperature takes it at build time as a float or a traced
array (an annealing schedule under ``jit`` compiles once); ``None`` is the
entry's documented default; entries without one refuse it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad

F32 = jnp.float32
LOGITS = {
    "bernoulli": jnp.asarray([0.3, -0.8, 1.2], F32),
    "categorical": jnp.asarray([[0.3, -0.8, 1.2], [0.0, 0.5, -0.5]], F32),
}
DISTS = {"bernoulli": jaxgrad.dists.bernoulli, "categorical": jaxgrad.dists.categorical}
W = {
    "bernoulli": jnp.asarray([0.7, -1.1, 0.4], F32),
    "categorical": jnp.asarray([[0.1, 0.9, -0.4], [0.3, -0.2, 0.6]], F32),
}

WITH_TEMPERATURE = sorted(n for n, e in jaxgrad.ESTIMATORS.items() if e.temperature is not None)
WITHOUT_TEMPERATURE = sorted(n for n, e in jaxgrad.ESTIMATORS.items() if e.temperature is None)


def _variable(name):
    return sorted(jaxgrad.ESTIMATORS[name].variables - {"normal"})[0]


def test_temperature_entries_are_the_relaxations_and_rebar_relax():
    expected = {
        "relaxed-bernoulli",
        "st-relaxed-bernoulli",
        "gumbel-softmax",
        "st-gumbel-softmax",
        "gumbel-rao",
        "reinmax",
        "rebar",
        "relax",
    }
    assert set(WITH_TEMPERATURE) == expected
    for name in expected:
        assert isinstance(jaxgrad.ESTIMATORS[name].temperature, float)
        assert jaxgrad.ESTIMATORS[name].temperature > 0


@pytest.mark.parametrize("name", WITH_TEMPERATURE)
def test_traced_temperature_compiles_once_and_none_is_the_default(name):
    info = jaxgrad.ESTIMATORS[name]
    variable = _variable(name)
    dist, logits, w = DISTS[variable], LOGITS[variable], W[variable]
    f = lambda x: jnp.sin(jnp.sum(x * w)) + jnp.sum(x * x * w)
    traces = []

    def grad(key, logits, temperature):
        traces.append(1)
        n = info.num_samples

        def at(t):  # the same key for every temperature: only t differs
            est = info.build(f, dist=dist, num_samples=n, temperature=t)
            return jax.grad(est, argnums=1)(jax.random.clone(key), logits)

        default = jax.grad(info.build(f, dist=dist, num_samples=n), argnums=1)(key, logits)
        return default, jax.vmap(at)(temperature)

    run = jax.jit(grad)
    key = jax.random.key(3)
    ts = jnp.asarray([info.temperature, 0.2], F32)
    default, by_t = run(jax.random.clone(key), logits, ts)
    _, by_t2 = run(jax.random.clone(key), logits, ts * 1.5)  # a new schedule value
    assert len(traces) == 1  # traced temperatures: no recompilation
    np.testing.assert_allclose(by_t[0], default, rtol=1e-5, atol=1e-6)
    # The temperature reaches the gradient rule.
    assert float(jnp.max(jnp.abs(by_t[1] - by_t[0]))) > 1e-4
    assert float(jnp.max(jnp.abs(by_t2[0] - by_t[0]))) > 1e-4


@pytest.mark.parametrize("name", WITHOUT_TEMPERATURE)
def test_entries_without_temperature_refuse_one(name):
    info = jaxgrad.ESTIMATORS[name]
    variable = sorted(info.variables)[0]
    f = lambda x: jnp.sum(x)
    dist = {"normal": jaxgrad.dists.normal, **DISTS}[variable]
    with pytest.raises(ValueError, match=rf"ESTIMATORS\['{name}'\]\.build: .* no temperature"):
        info.build(f, dist=dist, num_samples=info.num_samples, temperature=0.5)
    # None is accepted and builds the estimator.
    assert callable(info.build(f, dist=dist, num_samples=info.num_samples, temperature=None))


def test_relax_entry_temperature_shapes_its_control_variate():
    # The registry's RELAX c(z) = f(sigmoid(z / lam)): lam changes the estimate, not its value.
    info = jaxgrad.ESTIMATORS["relax"]
    logits, w = LOGITS["bernoulli"], W["bernoulli"]
    f = lambda b: jnp.sum(b * w) ** 2

    @jax.jit
    def run(key, t):
        est = info.build(f, dist=jaxgrad.dists.bernoulli, num_samples=1, temperature=t)
        return jax.value_and_grad(est, argnums=1)(key, logits)

    v1, g1 = run(jax.random.key(4), 0.5)
    v2, g2 = run(jax.random.key(4), 2.0)
    np.testing.assert_array_equal(v1, v2)
    assert float(jnp.max(jnp.abs(g1 - g2))) > 1e-4
