"""IndeCateR: the formula on fixed noise, exactness for one variable, unbiasedness, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_unbiased_in_both,
    categorical_problem,
    coupled_categorical,
    exact_grads,
    joint,
    never_differentiated,
    straight_through_categorical,
)

import jaxgrad
from jaxgrad._src import samplers

NUM_KEYS = 20_000
f_nonlinear = coupled_categorical
LOGITS, W = categorical_problem()
_ONE = jaxgrad.indecater(f_nonlinear)
_TWO = jaxgrad.indecater(f_nonlinear, num_samples=2)
ESTIMATORS = {
    "indecater": joint(_ONE),
    "indecater-2": joint(_TWO),
}


@pytest.mark.parametrize("name", ["indecater", "indecater-2"])
def test_unbiased(name, key):
    assert_unbiased_in_both(
        ESTIMATORS[name], key, f_nonlinear, jaxgrad.dists.categorical, LOGITS, W, num_keys=NUM_KEYS
    )


def test_power_rejects_straight_through(key):
    st = straight_through_categorical(f_nonlinear)
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased_in_both(
            st, key, f_nonlinear, jaxgrad.dists.categorical, LOGITS, W, num_keys=NUM_KEYS
        )


@jax.jit
def _on_fixed_noise(key, logits, a):
    """IndeCateR with two samples and the formula written with explicit loops."""
    k_est = jax.random.clone(key)
    n, (d, k) = 2, logits.shape
    noise = samplers.gumbel(key, (n, d, k), jnp.float32)  # what est draws
    idx = jnp.argmax(logits + noise, axis=-1)  # [n, d]
    pi = jax.nn.softmax(logits, axis=-1)
    grad = jnp.zeros_like(logits)
    value = 0.0
    for s in range(n):
        for v in range(d):
            evals = jnp.stack(
                [
                    f_nonlinear(jax.nn.one_hot(idx[s].at[v].set(j), k, dtype=jnp.float32), a)
                    for j in range(k)
                ]
            )
            # sum_j grad pi_v(j) F(j), with d pi_v(j) / d l_v(i) = pi_v(j) (1[i = j] - pi_v(i))
            grad = grad.at[v].add(pi[v] * (evals - jnp.sum(pi[v] * evals)) / n)
            value = value + jnp.sum(pi[v] * evals) / (n * d)
    return (value, grad), jax.value_and_grad(_TWO, argnums=1)(k_est, logits, a)


def test_formula_on_fixed_noise(key):
    for k in jax.random.split(key, 2):
        (value, grad), (est_value, est_grad) = _on_fixed_noise(k, LOGITS, W)
        np.testing.assert_allclose(est_value, value, rtol=1e-5)
        np.testing.assert_allclose(est_grad, grad, rtol=1e-4, atol=1e-6)


def test_one_variable_is_exact(key):
    logits = jnp.asarray([[0.4, -1.0, 2.0, 0.0, 0.3]], jnp.float32)
    a = jnp.asarray(np.linspace(-1.0, 1.5, 5).reshape(1, 5), jnp.float32)
    f = lambda x, a: jnp.sin(3 * jnp.sum(x * a)) + jnp.sum(x * a) ** 3
    est = jaxgrad.indecater(f, num_samples=3)
    run = jax.jit(jax.vmap(jax.value_and_grad(est, argnums=(1, 2)), in_axes=(0, None, None)))
    values, (g_l, g_a) = run(jax.random.split(key, 4), logits, a)
    ex_l, ex_a = exact_grads(f, jaxgrad.dists.categorical, logits, a)
    for i in range(4):
        np.testing.assert_allclose(g_l[i], ex_l, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g_a[i], ex_a, rtol=1e-5, atol=1e-6)


def test_f_never_differentiated_in_x(key):
    no_derivative = never_differentiated(jnp.sum)
    est = jaxgrad.indecater(lambda x, a: no_derivative(x) * jnp.sum(a))
    g = jax.jit(jax.grad(est, argnums=(1, 2)))(key, LOGITS, W)
    assert g[0].shape == LOGITS.shape and g[1].shape == W.shape


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_dtype_and_masked_classes(dtype, key):
    logits = jnp.asarray([[1e4, -1e4, 0.0], [0.0, -jnp.inf, 1.0]], dtype)

    def f(x):  # not finite at the masked class: it must get zero weight
        return jnp.sum(x * jnp.arange(6, dtype=x.dtype).reshape(2, 3)) ** 2 + jnp.log(1 - x[1, 1])

    value, g = jax.jit(jax.value_and_grad(jaxgrad.indecater(f), argnums=1))(key, logits)
    assert g.dtype == dtype and value.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.isfinite(value))
    assert float(g[1, 1]) == 0.0


def test_errors(key):
    key, batch_key = jax.random.split(key)
    with pytest.raises(TypeError, match="indecater: f must be a callable"):
        jaxgrad.indecater(None)
    with pytest.raises(ValueError, match="indecater: num_samples must be at least 1"):
        jaxgrad.indecater(f_nonlinear, num_samples=0)
    est = jaxgrad.indecater(lambda x: jnp.sum(x))
    with pytest.raises(ValueError, match=r"indecater: logits must have shape \[\.\.\., K\]"):
        jax.eval_shape(est, key, jnp.float32(0.0))
    with pytest.raises(TypeError, match="indecater: logits must have a floating dtype"):
        jax.eval_shape(est, key, jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="indecater accepts a single key"):
        jax.eval_shape(est, jax.random.split(batch_key, 2), LOGITS)
    with pytest.raises(ValueError, match="indecater: f must return a scalar"):
        jax.eval_shape(jaxgrad.indecater(lambda x: x), key, LOGITS)
