"""No NaN or inf from any relaxation at extreme logits, masks and temperatures.

Every relaxation is evaluated, with its gradient with respect to the logits and
to the temperature, at logits ``+-1e4`` and ``-inf`` (masked) and temperatures
``1e-4`` and ``1e4``, in float32, bfloat16 and float64. The temperature is a
traced argument, so each dtype compiles once; float64 runs on legacy ``uint32``
keys. A long run of 1e7 Gumbel-softmax draws at temperature 0.15 (where naive
``-log(-log(u))`` code produces inf and NaN) checks the noise at the far tails.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import size

import jaxgrad
from jaxgrad._src import samplers

F32, F64, BF16 = jnp.float32, jnp.float64, jnp.bfloat16

# Rows: a dominant logit next to a hugely negative one and a mask; all-equal huge
# negative logits; a tie at a huge positive logit with two masks.
LOGITS = [
    [1e4, -1e4, 0.0, -np.inf],
    [-1e4, -1e4, -1e4, -np.inf],
    [1e4, 1e4, -np.inf, -np.inf],
]
MASK = np.isneginf(np.asarray(LOGITS))
CATEGORICAL = {"gumbel_softmax", "gumbel_softmax_hard", "straight_through_categorical"}
CATEGORICAL |= {"gumbel_rao", "reinmax", "gapped_straight_through", "decoupled_st_gumbel_softmax"}

FNS = {
    "gumbel_softmax": lambda k, l, t: jaxgrad.gumbel_softmax(k, l, temperature=t),
    "gumbel_softmax_hard": lambda k, l, t: jaxgrad.gumbel_softmax(k, l, temperature=t, hard=True),
    "relaxed_bernoulli": lambda k, l, t: jaxgrad.relaxed_bernoulli(k, l, temperature=t),
    "relaxed_bernoulli_hard": lambda k, l, t: jaxgrad.relaxed_bernoulli(
        k, l, temperature=t, hard=True
    ),
    "straight_through_categorical": lambda k, l, t: jaxgrad.straight_through_categorical(k, l),
    "straight_through_bernoulli": lambda k, l, t: jaxgrad.straight_through_bernoulli(k, l),
    "gumbel_rao": lambda k, l, t: jaxgrad.gumbel_rao(k, l, temperature=t, num_samples=4),
    "reinmax": lambda k, l, t: jaxgrad.reinmax(k, l, temperature=t),
    "gapped_straight_through": lambda k, l, t: jaxgrad.gapped_straight_through(k, l, temperature=t),
    "decoupled_st_gumbel_softmax": lambda k, l, t: jaxgrad.decoupled_st_gumbel_softmax(
        k, l, temperature=t, forward_temperature=0.5
    ),
}


def _everything(key, logits, temperature, cotangent):
    out = {}
    for k, (name, fn) in zip(jax.random.split(key, len(FNS)), FNS.items(), strict=True):
        value, vjp = jax.vjp(lambda l, t, k=k, fn=fn: fn(k, l, t), logits, temperature)
        out[name] = (value, *vjp(cotangent))
    return out


_everything_jit = jax.jit(_everything)  # the temperature is traced: one compile per dtype
TEMPERATURES = (1e-4, 1e4, 0.15)


@pytest.mark.parametrize("dtype", [F32, BF16, F64])
def test_extreme_logits_and_temperatures_give_finite_values_and_gradients(dtype):
    logits = jnp.asarray(LOGITS, dtype)
    cot = jnp.asarray(np.arange(12).reshape(3, 4) - 5.5, dtype)
    for seed, tau in enumerate(TEMPERATURES):
        # float64 runs on legacy uint32 keys, the others on typed keys.
        key = jax.random.PRNGKey(seed) if dtype == F64 else jax.random.key(seed)
        t = jnp.asarray(tau, samplers.compute_dtype(dtype))
        for name, (value, g_logits, g_temperature) in _everything_jit(key, logits, t, cot).items():
            what = f"{name} at temperature {tau} in {jnp.dtype(dtype).name}"
            assert value.dtype == dtype and g_logits.dtype == dtype, what
            value, g_l = np.asarray(value, np.float64), np.asarray(g_logits, np.float64)
            assert np.all(np.isfinite(value)), f"{what}: value {value}"
            assert np.all(np.isfinite(g_l)), f"{what}: gradient {g_l}"
            assert np.isfinite(float(g_temperature)), f"{what}: temperature gradient"
            assert np.all((value >= 0) & (value <= 1)), what
            # Masked entries: value 0 and gradient 0.
            assert np.all(value[MASK] == 0), f"{what}: masked value {value}"
            assert np.all(g_l[MASK] == 0), f"{what}: masked gradient {g_l}"
            if name in CATEGORICAL:
                tol = 1e-2 if dtype == BF16 else 1e-5
                np.testing.assert_allclose(value.sum(-1), 1.0, atol=tol, err_msg=what)
                # The category at +1e4 next to -1e4 always wins (relaxed: unless hot).
                if name != "gumbel_softmax" or tau < 1:
                    assert value[0, 0] > 0.99, f"{what}: {value}"


NUM_DRAWS, CHUNK = size(10_000_000, 2_000_000), 1_000_000


@jax.jit
def _long_run(key, logits):
    """1e7 Gumbel-softmax draws at tau = 0.15 in chunks; only reductions are kept."""
    w = jnp.arange(logits.shape[-1], dtype=logits.dtype)

    def chunk(k):
        def loss(l):
            y = jaxgrad.gumbel_softmax(
                k, jnp.broadcast_to(l, (CHUNK, l.shape[-1])), temperature=0.15
            )
            return jnp.sum(y * w), y

        (_, y), g = jax.value_and_grad(loss, has_aux=True)(logits)
        return (
            jnp.sum(~jnp.isfinite(y)),
            jnp.max(jnp.abs(jnp.sum(y, -1) - 1)),
            jnp.min(y),
            jnp.max(y),
            jnp.all(jnp.isfinite(g)),
            jnp.sum(y, 0),
        )

    return jax.lax.map(chunk, jax.random.split(key, NUM_DRAWS // CHUNK))


@pytest.mark.slow
def test_ten_million_gumbel_softmax_draws_at_low_temperature():
    logits = jnp.asarray([2.0, 0.0, -1.0, -3.0], F32)
    bad, dev, lo, hi, grad_ok, totals = _long_run(jax.random.key(2024), logits)
    assert int(bad.sum()) == 0
    assert float(dev.max()) < 1e-5
    assert float(lo.min()) >= 0 and float(hi.max()) <= 1
    assert bool(np.all(grad_ok))
    # At tau = 0.15 the relaxed samples are nearly one-hot: their mean is close to softmax.
    mean = np.asarray(totals.sum(0), np.float64) / NUM_DRAWS
    np.testing.assert_allclose(mean, jax.nn.softmax(logits), atol=0.02)


@pytest.mark.parametrize("dtype", [F32, BF16, jnp.float16, F64])
def test_gumbel_noise_is_finite_at_the_ends_of_the_uniform(dtype):
    """The smallest and largest uniforms map to finite noise in every dtype."""
    cdt = samplers.compute_dtype(dtype)
    u = jnp.asarray([jnp.finfo(cdt).tiny, 1 - jnp.finfo(cdt).epsneg], cdt)
    g = (-jnp.log(-jnp.log(u))).astype(dtype)
    assert np.all(np.isfinite(np.asarray(g, np.float64))), g
    draws = jaxgrad.gumbel(jax.random.key(3), (100_000,), dtype)
    assert draws.dtype == dtype
    assert np.all(np.isfinite(np.asarray(draws, np.float64)))
