"""Every documented ``Raises:`` of the samplers and relaxations, with its message.

Each static mistake raises TypeError or ValueError before tracing, and the
message names the function and the argument, so that the user can fix it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import jaxgrad
from jaxgrad import dists

F32 = jnp.float32
LOGITS = jnp.zeros((2, 3), F32)

# name -> call(key, logits, **options)
WITH_LOGITS = {
    "gumbel_softmax": jaxgrad.gumbel_softmax,
    "relaxed_bernoulli": jaxgrad.relaxed_bernoulli,
    "straight_through_categorical": jaxgrad.straight_through_categorical,
    "straight_through_bernoulli": jaxgrad.straight_through_bernoulli,
    "gumbel_rao": jaxgrad.gumbel_rao,
    "reinmax": jaxgrad.reinmax,
    "categorical": jaxgrad.categorical,
}
WITH_AXIS = ["gumbel_softmax", "straight_through_categorical", "gumbel_rao", "reinmax"]
WITH_AXIS += ["categorical"]
WITH_TEMPERATURE = ["gumbel_softmax", "relaxed_bernoulli", "gumbel_rao", "reinmax"]


def _m(fn: str, rest: str) -> str:
    return re.escape(fn) + rest


@pytest.mark.parametrize("name", list(WITH_LOGITS))
def test_integer_logits(name):
    with pytest.raises(
        TypeError, match=_m(name, r": logits must have a floating dtype, got int32")
    ):
        WITH_LOGITS[name](jax.random.key(0), jnp.zeros((2, 3), jnp.int32))


@pytest.mark.parametrize("name", list(WITH_LOGITS))
def test_a_batch_of_keys(name):
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=_m(name, r" accepts a single key.*shape \(2,\)")):
        WITH_LOGITS[name](keys, LOGITS)
    legacy = jax.random.split(jax.random.PRNGKey(0), 2)  # uint32[2, 2]
    with pytest.raises(ValueError, match=_m(name, r" accepts a single key.*jax\.vmap")):
        WITH_LOGITS[name](legacy, LOGITS)


@pytest.mark.parametrize("name", list(WITH_LOGITS))
def test_not_a_key(name):
    with pytest.raises(TypeError, match=_m(name, r": key must be a PRNG key")):
        WITH_LOGITS[name](jnp.zeros(2, F32), LOGITS)
    with pytest.raises(TypeError, match=_m(name, r": key must be a PRNG key")):
        WITH_LOGITS[name](0, LOGITS)


@pytest.mark.parametrize("name", WITH_TEMPERATURE)
@pytest.mark.parametrize("temperature", [0.0, -1.0, jnp.asarray([1.0, -0.5, 1.0], F32)])
def test_non_positive_static_temperature(name, temperature):
    with pytest.raises(ValueError, match=_m(name, r": temperature must be positive")):
        WITH_LOGITS[name](jax.random.key(0), LOGITS, temperature=temperature)


@pytest.mark.parametrize("name", WITH_TEMPERATURE)
def test_temperature_of_wrong_type_or_shape(name):
    with pytest.raises(TypeError, match=_m(name, r": temperature must be a positive")):
        WITH_LOGITS[name](jax.random.key(0), LOGITS, temperature="hot")
    with pytest.raises(ValueError, match=_m(name, r": temperature of shape \(2,\) does not")):
        WITH_LOGITS[name](jax.random.key(0), LOGITS, temperature=jnp.ones(2, F32))


def test_traced_temperature_is_not_checked():
    """Documented: under jit, positivity of a traced temperature cannot be checked."""
    f = jax.jit(lambda t: jaxgrad.gumbel_softmax(jax.random.key(0), LOGITS, temperature=t))
    assert f(jnp.asarray(-1.0, F32)).shape == LOGITS.shape


@pytest.mark.parametrize("name", WITH_AXIS)
def test_axis_out_of_range_or_not_an_int(name):
    with pytest.raises(ValueError, match=_m(name, r": axis=2 is out of range .* \[-2, 1\]")):
        WITH_LOGITS[name](jax.random.key(0), LOGITS, axis=2)
    with pytest.raises(ValueError, match=_m(name, r": axis=-3 is out of range")):
        WITH_LOGITS[name](jax.random.key(0), LOGITS, axis=-3)
    with pytest.raises(TypeError, match=_m(name, r": axis must be a static int")):
        WITH_LOGITS[name](jax.random.key(0), LOGITS, axis=1.0)
    with pytest.raises(ValueError, match=_m(name, r": logits must have at least one dimension")):
        WITH_LOGITS[name](jax.random.key(0), jnp.zeros((), F32))


@pytest.mark.parametrize("num_samples", [0, -3])
def test_gumbel_rao_num_samples_below_one(num_samples):
    with pytest.raises(ValueError, match=r"gumbel_rao: num_samples must be at least 1"):
        jaxgrad.gumbel_rao(jax.random.key(0), LOGITS, num_samples=num_samples)


@pytest.mark.parametrize("num_samples", [2.0, True, jnp.asarray(3)])
def test_gumbel_rao_num_samples_not_an_int(num_samples):
    with pytest.raises(TypeError, match=r"gumbel_rao: num_samples must be a static Python int"):
        jaxgrad.gumbel_rao(jax.random.key(0), LOGITS, num_samples=num_samples)


# ----------------------------------------------------------------- samplers


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_])
def test_gumbel_wrong_dtype(dtype):
    with pytest.raises(TypeError, match=r"gumbel: dtype must be a floating dtype"):
        jaxgrad.gumbel(jax.random.key(0), (3,), dtype)


def test_gumbel_keys():
    with pytest.raises(ValueError, match=r"gumbel accepts a single key"):
        jaxgrad.gumbel(jax.random.split(jax.random.key(0), 3), (3,))
    with pytest.raises(TypeError, match=r"gumbel: key must be a PRNG key"):
        jaxgrad.gumbel(jnp.zeros(2, jnp.int32), (3,))


def test_categorical_shape_that_does_not_broadcast():
    with pytest.raises(ValueError, match=r"categorical: shape=\(5, 3\) does not broadcast"):
        jaxgrad.categorical(jax.random.key(0), LOGITS, shape=(5, 3))
    with pytest.raises(ValueError, match=r"categorical: shape=\(\) does not broadcast"):
        jaxgrad.categorical(jax.random.key(0), jnp.zeros((2, 3), F32), shape=())


def test_normal_errors():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match=r"normal: loc must have a floating dtype"):
        jaxgrad.normal(key, jnp.zeros(3, jnp.int32), jnp.ones(3, F32))
    with pytest.raises(TypeError, match=r"normal: scale must have a floating dtype"):
        jaxgrad.normal(key, jnp.zeros(3, F32), 1)
    with pytest.raises(ValueError, match=r"normal: shape=\(4,\) does not broadcast"):
        jaxgrad.normal(key, jnp.zeros(3, F32), jnp.ones(3, F32), shape=(4,))
    with pytest.raises(ValueError, match=r"normal: shape=\(\) does not broadcast"):
        jaxgrad.normal(key, jnp.zeros(3, F32), jnp.ones(3, F32), shape=())
    with pytest.raises(ValueError, match=r"normal accepts a single key"):
        jaxgrad.normal(jax.random.split(key, 2), 0.0, 1.0)


# ----------------------------------------------------------------- straight-through helpers


def test_straight_through_errors():
    x = jnp.zeros(3, F32)
    with pytest.raises(TypeError, match=r"straight_through: value must have a floating dtype"):
        jaxgrad.straight_through(jnp.zeros(3, jnp.int32), x)
    with pytest.raises(TypeError, match=r"straight_through: surrogate must have a floating"):
        jaxgrad.straight_through(x, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"straight_through: surrogate must have the shape"):
        jaxgrad.straight_through(x, jnp.zeros((2, 3), F32))
    with pytest.raises(TypeError, match=r"round_ste: x must have a floating dtype"):
        jaxgrad.round_ste(jnp.arange(3))
    with pytest.raises(TypeError, match=r"sign_ste: x must have a floating dtype"):
        jaxgrad.sign_ste(jnp.arange(3))


# ----------------------------------------------------------------- dists specs


def test_dists_errors():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match=r"bernoulli\.sample: logits must have a floating"):
        dists.bernoulli.sample(key, jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match=r"categorical\.sample: logits must have a floating"):
        dists.categorical.sample(key, jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"categorical\.sample: logits must have at least 1"):
        dists.categorical.sample(key, jnp.zeros((), F32))
    with pytest.raises(ValueError, match=r"bernoulli\.support: .* MAX_SUPPORT_SIZE"):
        dists.bernoulli.support(jnp.zeros(17, F32))
    with pytest.raises(ValueError, match=r"categorical\.support: .* MAX_SUPPORT_SIZE"):
        dists.categorical.support(jnp.zeros((9, 4), F32))
    with pytest.raises(TypeError, match=r"normal\.sample: params must be a pair \(loc, scale\)"):
        dists.normal.sample(key, jnp.zeros(3, F32))
    with pytest.raises(TypeError, match=r"normal\.log_prob: loc must have a floating"):
        dists.normal.log_prob((jnp.zeros(3, jnp.int32), jnp.ones(3, F32)), jnp.zeros(3, F32))
