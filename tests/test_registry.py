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
        "gapped-straight-through",
        "decoupled-st-gumbel-softmax",
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


# ------------------------------------------------- every entry: cost, keys, NaN, masks

PROBLEMS = {  # variable -> (dist, params, NaN params, masked params or None, masked positions)
    "bernoulli": (
        jaxgrad.dists.bernoulli,
        jnp.asarray([0.4, -0.6, 1.1], F32),
        jnp.asarray([0.4, jnp.nan, 1.1], F32),
        jnp.asarray([jnp.inf, -0.6, -jnp.inf], F32),
    ),
    "categorical": (
        jaxgrad.dists.categorical,
        jnp.asarray([[0.2, -0.4, 0.9], [-1.0, 0.5, 0.0]], F32),
        jnp.asarray([[0.2, -0.4, 0.9], [-1.0, jnp.nan, 0.0]], F32),
        jnp.asarray([[0.2, -jnp.inf, 0.9], [-jnp.inf, 0.5, 0.0]], F32),
    ),
    "normal": (
        jaxgrad.dists.normal,
        (jnp.asarray([0.4, -0.3], F32), jnp.asarray([0.9, 1.2], F32)),
        (jnp.asarray([0.4, jnp.nan], F32), jnp.asarray([0.9, 1.2], F32)),
        None,
    ),
}
CV = jnp.asarray([0.7, -1.3, 0.5], F32)


def smooth_cost(x):
    """Smooth on the relaxed domain; weights only the leading entries (one-hot rows, coins)."""
    flat = jnp.ravel(x)
    return jnp.sin(jnp.sum(flat[:3] * CV[: flat[:3].size])) + jnp.sum(flat * flat) * 0.3


CASES = [
    (name, variable)
    for name, info in sorted(jaxgrad.ESTIMATORS.items())
    for variable in sorted(info.variables)
]


def _has_nan(tree):
    return any(bool(jnp.any(jnp.isnan(x))) for x in jax.tree.leaves(tree))


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(("name", "variable"), CASES)
def test_entry_contract_cost_keys_nan_and_masks(name, variable):
    """One compiled program per entry, run on finite, NaN and masked parameters.

    * ``info.cost`` is the number of evaluations of ``f`` (counted by a callback
      in ``f``, once per row under ``vmap``), with and without ``f_takes_key``;
    * with ``f_takes_key`` the keys are pairwise distinct and differ between
      estimates;
    * NaN in, NaN out: a NaN parameter gives a NaN value or gradient;
    * masked logits (``+-inf``) give a finite value and a zero gradient there.
    """
    info = jaxgrad.ESTIMATORS[name]
    dist, params, nan_params, masked = PROBLEMS[variable]
    calls, keys = [], []

    def f_counted(x):
        jax.debug.callback(lambda _: calls.append(1), x)  # batched: once per row under vmap
        return smooth_cost(x)

    def f_keyed(x, key):
        jax.debug.callback(lambda k: keys.append(np.asarray(k)), jax.random.key_data(key))
        return smooth_cost(x) + 0.1 * jax.random.normal(key, (), F32)

    n = info.num_samples
    plain = info.build(f_counted, dist=dist, num_samples=n)
    keyed = info.build(f_keyed, dist=dist, num_samples=n, f_takes_key=True)

    @jax.jit
    def run(key, params):
        k1, k2 = jax.random.split(key)
        return (
            jax.value_and_grad(plain, argnums=1)(k1, params),
            jax.value_and_grad(keyed, argnums=1)(k2, params),
        )

    out = run(jax.random.key(1), params)
    jax.effects_barrier()
    shape = jnp.shape(params[0] if variable == "normal" else params)
    expected = info.cost(variable, shape)
    assert len(calls) == expected, f"{name}: cost says {expected}, f was called {len(calls)} times"
    assert len(keys) == expected, (len(keys), expected)
    first = {k.tobytes() for k in keys}
    assert len(first) == expected  # pairwise distinct keys within one estimate
    assert _finite(out)
    keys.clear()
    run(jax.random.key(2), params)
    jax.effects_barrier()
    assert not first & {k.tobytes() for k in keys}  # none shared with another estimate

    for value, grad in run(jax.random.key(3), nan_params):  # NaN in, NaN out
        assert bool(jnp.isnan(value)) or _has_nan(grad), f"{name}: a NaN parameter vanished"

    if masked is not None:
        for value, grad in run(jax.random.key(4), masked):
            assert _finite((value, grad)), f"{name}: masked logits gave {value}, {grad}"
            np.testing.assert_array_equal(jnp.where(jnp.isinf(masked), grad, 0.0), 0.0)
    jax.effects_barrier()


@pytest.mark.parametrize(("name", "variable"), CASES)
def test_integer_valued_f_is_refused(name, variable):
    info = jaxgrad.ESTIMATORS[name]
    dist, params, _, _ = PROBLEMS[variable]
    f = lambda x: jnp.sum(x > 0.5).astype(jnp.int32)  # a count: no gradient to give
    est = info.build(f, dist=dist, num_samples=info.num_samples)
    with pytest.raises(TypeError, match=r"must return a floating scalar, got dtype int32.*float32"):
        jax.eval_shape(est, jax.random.key(0), params)
    # A boolean cost and the keyed form are refused the same way (traced only).
    g = lambda x, key: jnp.sum(x) > 0.5
    est = info.build(g, dist=dist, num_samples=info.num_samples, f_takes_key=True)
    with pytest.raises(TypeError, match="got dtype bool"):
        jax.eval_shape(est, jax.random.key(0), params)
