"""Every documented ``Raises:`` of the samplers and relaxations, with its message.

Each static mistake raises TypeError or ValueError before tracing, and the
message names the function and the argument, so that the user can fix it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import dists
from jaxgrad._src.estimators import score_function as score_function_module

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


# ----------------------------------------------------------------- every message names its argument

BF16 = jnp.bfloat16


def _key():
    """A fresh key per use (jax_debug_key_reuse is on)."""
    return jax.random.key(0)


def _f(x):
    return jnp.sum(x)


class _ElementwiseLogProb:
    """A user spec that forgot to sum its log-probabilities over the factors."""

    def sample(self, key, logits):
        return dists.bernoulli.sample(key, logits)

    def log_prob(self, logits, x):
        return jnp.where(x > 0.5, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))


def _sf_grad(**options):
    est = jaxgrad.score_function(_f, **options)
    return lambda params: jax.grad(est, argnums=1)(_key(), params)


def _cases():
    """(id, thunk, exception, function, argument): every error case of this module, and more."""
    cases = []
    int_logits = jnp.zeros((2, 3), jnp.int32)
    keys = jax.random.split(_key(), 2)
    legacy_keys = jax.random.split(jax.random.PRNGKey(0), 2)
    for name, fun in WITH_LOGITS.items():
        cases += [
            (
                f"{name}-int-logits",
                lambda fun=fun: fun(_key(), int_logits),
                TypeError,
                name,
                "logits",
            ),
            (f"{name}-key-batch", lambda fun=fun: fun(keys, LOGITS), ValueError, name, "key"),
            (
                f"{name}-legacy-batch",
                lambda fun=fun: fun(legacy_keys, LOGITS),
                ValueError,
                name,
                "key",
            ),
            (
                f"{name}-float-key",
                lambda fun=fun: fun(jnp.zeros(2, F32), LOGITS),
                TypeError,
                name,
                "key",
            ),
            (f"{name}-int-key", lambda fun=fun: fun(0, LOGITS), TypeError, name, "key"),
        ]
    for name in WITH_TEMPERATURE:
        fun = WITH_LOGITS[name]
        for tid, t, exc in [
            ("zero", 0.0, ValueError),
            ("negative", -1.0, ValueError),
            ("negative-entry", jnp.asarray([1.0, -0.5, 1.0], F32), ValueError),
            ("negative-bf16", jnp.asarray(-0.5, BF16), ValueError),
            ("nan", float("nan"), ValueError),
            ("string", "hot", TypeError),
            ("none", None, TypeError),
            ("shape", jnp.ones(2, F32), ValueError),
        ]:
            cases.append(
                (
                    f"{name}-temperature-{tid}",
                    lambda fun=fun, t=t: fun(_key(), LOGITS, temperature=t),
                    exc,
                    name,
                    "temperature",
                )
            )
    for name in WITH_AXIS:
        fun = WITH_LOGITS[name]
        cases += [
            (
                f"{name}-axis-2",
                lambda fun=fun: fun(_key(), LOGITS, axis=2),
                ValueError,
                name,
                "axis",
            ),
            (
                f"{name}-axis--3",
                lambda fun=fun: fun(_key(), LOGITS, axis=-3),
                ValueError,
                name,
                "axis",
            ),
            (
                f"{name}-axis-float",
                lambda fun=fun: fun(_key(), LOGITS, axis=1.0),
                TypeError,
                name,
                "axis",
            ),
            (
                f"{name}-scalar-logits",
                lambda fun=fun: fun(_key(), jnp.zeros((), F32)),
                ValueError,
                name,
                "logits",
            ),
        ]
    for n, exc in [
        (0, ValueError),
        (-3, ValueError),
        (2.0, TypeError),
        (True, TypeError),
        (jnp.asarray(3), TypeError),
    ]:
        cases.append(
            (
                f"gumbel_rao-num_samples-{n!r}",
                lambda n=n: jaxgrad.gumbel_rao(_key(), LOGITS, num_samples=n),
                exc,
                "gumbel_rao",
                "num_samples",
            )
        )
    normal = jaxgrad.normal
    cases += [
        # samplers
        (
            "gumbel-int-dtype",
            lambda: jaxgrad.gumbel(_key(), (3,), jnp.int32),
            TypeError,
            "gumbel",
            "dtype",
        ),
        (
            "gumbel-bool-dtype",
            lambda: jaxgrad.gumbel(_key(), (3,), jnp.bool_),
            TypeError,
            "gumbel",
            "dtype",
        ),
        (
            "gumbel-key-batch",
            lambda: jaxgrad.gumbel(jax.random.split(_key(), 3), (3,)),
            ValueError,
            "gumbel",
            "key",
        ),
        (
            "gumbel-int-key",
            lambda: jaxgrad.gumbel(jnp.zeros(2, jnp.int32), (3,)),
            TypeError,
            "gumbel",
            "key",
        ),
        (
            "gumbel-negative-shape",
            lambda: jaxgrad.gumbel(_key(), (-1,)),
            ValueError,
            "gumbel",
            "shape",
        ),
        (
            "gumbel-negative-int-shape",
            lambda: jaxgrad.gumbel(_key(), -2),
            ValueError,
            "gumbel",
            "shape",
        ),
        (
            "gumbel-float-shape",
            lambda: jaxgrad.gumbel(_key(), (2.0,)),
            TypeError,
            "gumbel",
            "shape",
        ),
        ("gumbel-string-shape", lambda: jaxgrad.gumbel(_key(), "3"), TypeError, "gumbel", "shape"),
        ("gumbel-none-shape", lambda: jaxgrad.gumbel(_key(), None), TypeError, "gumbel", "shape"),
        (
            "categorical-shape-5-3",
            lambda: jaxgrad.categorical(_key(), LOGITS, shape=(5, 3)),
            ValueError,
            "categorical",
            "shape",
        ),
        (
            "categorical-shape-()",
            lambda: jaxgrad.categorical(_key(), LOGITS, shape=()),
            ValueError,
            "categorical",
            "shape",
        ),
        (
            "categorical-shape-int",
            lambda: jaxgrad.categorical(_key(), LOGITS, shape=3),
            ValueError,
            "categorical",
            "shape",
        ),
        (
            "categorical-negative-shape",
            lambda: jaxgrad.categorical(_key(), LOGITS, shape=(-1, 2)),
            ValueError,
            "categorical",
            "shape",
        ),
        (
            "normal-int-loc",
            lambda: normal(_key(), jnp.zeros(3, jnp.int32), jnp.ones(3, F32)),
            TypeError,
            "normal",
            "loc",
        ),
        (
            "normal-int-scale",
            lambda: normal(_key(), jnp.zeros(3, F32), 1),
            TypeError,
            "normal",
            "scale",
        ),
        (
            "normal-shape-4",
            lambda: normal(_key(), jnp.zeros(3, F32), jnp.ones(3, F32), shape=(4,)),
            ValueError,
            "normal",
            "shape",
        ),
        (
            "normal-shape-()",
            lambda: normal(_key(), jnp.zeros(3, F32), jnp.ones(3, F32), shape=()),
            ValueError,
            "normal",
            "shape",
        ),
        (
            "normal-float-shape",
            lambda: normal(_key(), 0.0, 1.0, shape=(2.5,)),
            TypeError,
            "normal",
            "shape",
        ),
        (
            "normal-key-batch",
            lambda: normal(jax.random.split(_key(), 2), 0.0, 1.0),
            ValueError,
            "normal",
            "key",
        ),
        ("normal-negative-scale", lambda: normal(_key(), 0.0, -1.0), ValueError, "normal", "scale"),
        (
            "normal-zero-scale-entry",
            lambda: normal(_key(), jnp.zeros(2, F32), jnp.asarray([1.0, 0.0], F32)),
            ValueError,
            "normal",
            "scale",
        ),
        (
            "normal-negative-bf16-scale",
            lambda: normal(_key(), jnp.zeros((), BF16), jnp.asarray(-1.0, BF16)),
            ValueError,
            "normal",
            "scale",
        ),
        (
            "normal-loc-scale-broadcast",
            lambda: normal(_key(), jnp.zeros(3, F32), jnp.ones(2, F32)),
            ValueError,
            "normal",
            "scale",
        ),
        # straight-through helpers
        (
            "straight_through-int-value",
            lambda: jaxgrad.straight_through(jnp.zeros(3, jnp.int32), jnp.zeros(3, F32)),
            TypeError,
            "straight_through",
            "value",
        ),
        (
            "straight_through-int-surrogate",
            lambda: jaxgrad.straight_through(jnp.zeros(3, F32), jnp.zeros(3, jnp.int32)),
            TypeError,
            "straight_through",
            "surrogate",
        ),
        (
            "straight_through-shape",
            lambda: jaxgrad.straight_through(jnp.zeros(3, F32), jnp.zeros((2, 3), F32)),
            ValueError,
            "straight_through",
            "surrogate",
        ),
        ("round_ste-int", lambda: jaxgrad.round_ste(jnp.arange(3)), TypeError, "round_ste", "x"),
        ("sign_ste-int", lambda: jaxgrad.sign_ste(jnp.arange(3)), TypeError, "sign_ste", "x"),
        # dists specs
        (
            "bernoulli.sample-int",
            lambda: dists.bernoulli.sample(_key(), jnp.zeros(3, jnp.int32)),
            TypeError,
            "bernoulli.sample",
            "logits",
        ),
        (
            "categorical.sample-int",
            lambda: dists.categorical.sample(_key(), int_logits),
            TypeError,
            "categorical.sample",
            "logits",
        ),
        (
            "categorical.sample-scalar",
            lambda: dists.categorical.sample(_key(), jnp.zeros((), F32)),
            ValueError,
            "categorical.sample",
            "logits",
        ),
        (
            "categorical.log_prob-scalar",
            lambda: dists.categorical.log_prob(jnp.zeros((), F32), jnp.ones((), F32)),
            ValueError,
            "categorical.log_prob",
            "logits",
        ),
        (
            "categorical-scalar-in-score_function",
            lambda: _sf_grad(dist=dists.categorical)(jnp.zeros((), F32)),
            ValueError,
            "categorical.log_prob",
            "logits",
        ),
        (
            "bernoulli.support-large",
            lambda: dists.bernoulli.support(jnp.zeros(17, F32)),
            ValueError,
            "bernoulli.support",
            "logits",
        ),
        (
            "categorical.support-large",
            lambda: dists.categorical.support(jnp.zeros((9, 4), F32)),
            ValueError,
            "categorical.support",
            "logits",
        ),
        (
            "normal.sample-array",
            lambda: dists.normal.sample(_key(), jnp.zeros(3, F32)),
            TypeError,
            "normal.sample",
            "params",
        ),
        (
            "normal.sample-3-tuple",
            lambda: dists.normal.sample(_key(), (0.0, 1.0, 2.0)),
            TypeError,
            "normal.sample",
            "params",
        ),
        (
            "normal.log_prob-3-tuple",
            lambda: dists.normal.log_prob((0.0, 1.0, 2.0), 0.0),
            TypeError,
            "normal.log_prob",
            "params",
        ),
        (
            "normal.log_prob-int-loc",
            lambda: dists.normal.log_prob(
                (jnp.zeros(3, jnp.int32), jnp.ones(3, F32)), jnp.zeros(3, F32)
            ),
            TypeError,
            "normal.log_prob",
            "loc",
        ),
        # the distribution families (issue 9): structure, positivity, shapes
        (
            "gamma.sample-array",
            lambda: dists.gamma.sample(_key(), 1.0),
            TypeError,
            "gamma.sample",
            "params",
        ),
        (
            "beta.log_prob-3-tuple",
            lambda: dists.beta.log_prob((1.0, 2.0, 3.0), 0.5),
            TypeError,
            "beta.log_prob",
            "params",
        ),
        (
            "exponential.sample-tuple",
            lambda: dists.exponential.sample(_key(), (1.0, 2.0)),
            TypeError,
            "exponential.sample",
            "params",
        ),
        (
            "beta.sample-int",
            lambda: dists.beta.sample(_key(), (jnp.ones(2, jnp.int32), jnp.ones(2, F32))),
            TypeError,
            "beta.sample",
            "concentration1",
        ),
        (
            "gamma.sample-negative-concentration",
            lambda: dists.gamma.sample(_key(), (-1.0, 1.0)),
            ValueError,
            "gamma.sample",
            "concentration",
        ),
        (
            "gamma.log_prob-zero-rate",
            lambda: dists.gamma.log_prob((2.0, jnp.asarray([1.0, 0.0], F32)), 1.0),
            ValueError,
            "gamma.log_prob",
            "rate",
        ),
        (
            "von_mises.sample-zero-concentration",
            lambda: dists.von_mises.sample(_key(), (0.0, 0.0)),
            ValueError,
            "von_mises.sample",
            "concentration",
        ),
        (
            "dirichlet.sample-zero-concentration",
            lambda: dists.dirichlet.sample(_key(), jnp.asarray([1.0, 0.0], F32)),
            ValueError,
            "dirichlet.sample",
            "concentration",
        ),
        (
            "dirichlet.log_prob-scalar",
            lambda: dists.dirichlet.log_prob(jnp.asarray(1.0, F32), 1.0),
            ValueError,
            "dirichlet.log_prob",
            "concentration",
        ),
        (
            "laplace.sample-negative-scale",
            lambda: dists.laplace.sample(_key(), (0.0, -1.0)),
            ValueError,
            "laplace.sample",
            "scale",
        ),
        (
            "log_normal.entropy-zero-bf16-scale",
            lambda: dists.log_normal.entropy((0.0, jnp.asarray(0.0, BF16))),
            ValueError,
            "log_normal.entropy",
            "scale",
        ),
        (
            "logistic.sample-broadcast",
            lambda: dists.logistic.sample(_key(), (jnp.zeros(3, F32), jnp.ones(2, F32))),
            ValueError,
            "logistic.sample",
            "scale",
        ),
        (
            "uniform.sample-low-not-below-high",
            lambda: dists.uniform.sample(_key(), (jnp.asarray([0.0, 2.0], F32), 1.0)),
            ValueError,
            "uniform.sample",
            "high",
        ),
        (
            "multivariate_normal.sample-shapes",
            lambda: dists.multivariate_normal.sample(_key(), (jnp.zeros(2, F32), jnp.eye(3))),
            ValueError,
            "multivariate_normal.sample",
            "scale_tril",
        ),
        (
            "multivariate_normal.log_prob-diagonal",
            lambda: dists.multivariate_normal.log_prob(
                (jnp.zeros(2, F32), jnp.asarray([[1.0, 0.0], [0.5, 0.0]], F32)), jnp.zeros(2, F32)
            ),
            ValueError,
            "multivariate_normal.log_prob",
            "scale_tril",
        ),
        (
            "relaxed_bernoulli.sample-zero-temperature",
            lambda: dists.relaxed_bernoulli.sample(_key(), (jnp.zeros(3, F32), 0.0)),
            ValueError,
            "relaxed_bernoulli.sample",
            "temperature",
        ),
        (
            "relaxed_one_hot_categorical.log_prob-negative-temperature",
            lambda: dists.relaxed_one_hot_categorical.log_prob(
                (jnp.zeros(3, F32), -1.0), jnp.full(3, 1 / 3, F32)
            ),
            ValueError,
            "relaxed_one_hot_categorical.log_prob",
            "temperature",
        ),
        # estimator options
        (
            "score_function-normalize-negative",
            lambda: jaxgrad.score_function(_f, dist=dists.bernoulli, normalize=-1.0),
            ValueError,
            "score_function",
            "normalize",
        ),
        (
            "score_function-normalize-negative-bf16",
            lambda: jaxgrad.score_function(
                _f, dist=dists.bernoulli, normalize=jnp.asarray(-1.0, BF16)
            ),
            ValueError,
            "score_function",
            "normalize",
        ),
        (
            "rloo-normalize-zero",
            lambda: jaxgrad.rloo(_f, dist=dists.bernoulli, num_samples=2, normalize=0.0),
            ValueError,
            "rloo",
            "normalize",
        ),
        (
            "score_function-dist-class",
            lambda: jaxgrad.score_function(_f, dist=dists.Bernoulli),
            TypeError,
            "score_function",
            "dist",
        ),
        (
            "rloo-dist-class",
            lambda: jaxgrad.rloo(_f, dist=dists.Categorical, num_samples=2),
            TypeError,
            "rloo",
            "dist",
        ),
        (
            "pathwise-dist-class",
            lambda: jaxgrad.pathwise(_f, dist=dists.Normal),
            TypeError,
            "pathwise",
            "dist",
        ),
        (
            "exact-dist-class",
            lambda: jaxgrad.exact(_f, dist=dists.Bernoulli),
            TypeError,
            "exact",
            "dist",
        ),
        (
            "rloo-num_samples-0",
            lambda: jaxgrad.rloo(_f, dist=dists.bernoulli, num_samples=0),
            ValueError,
            "rloo",
            "num_samples",
        ),
        (
            "rloo-num_samples-1",
            lambda: jaxgrad.rloo(_f, dist=dists.bernoulli, num_samples=1),
            ValueError,
            "rloo",
            "num_samples",
        ),
        (
            "score_function-loo-num_samples-0",
            lambda: jaxgrad.score_function(_f, dist=dists.bernoulli, baseline="loo", num_samples=0),
            ValueError,
            "score_function",
            "num_samples",
        ),
        (
            "score_function-num_samples-0",
            lambda: jaxgrad.score_function(_f, dist=dists.bernoulli, num_samples=0),
            ValueError,
            "score_function",
            "num_samples",
        ),
        (
            "score_function-optimal-elementwise-log_prob",
            lambda: _sf_grad(dist=_ElementwiseLogProb(), num_samples=3, baseline="optimal")(
                jnp.zeros(3, F32)
            ),
            ValueError,
            "score_function",
            "dist",
        ),
        (
            "score_function-elementwise-log_prob",
            lambda: _sf_grad(dist=_ElementwiseLogProb(), num_samples=3)(jnp.zeros(3, F32)),
            ValueError,
            "score_function",
            "dist",
        ),
    ]
    return cases


CASES = _cases()

#: What some messages must say besides the names (the misleading texts of issue 8).
SAYS = {
    "rloo-num_samples-0": r"needs num_samples >= 2",  # said "at least 1"
    "score_function-loo-num_samples-0": r"needs num_samples >= 2",
    "normal.sample-3-tuple": r"got a tuple of length 3",  # said "got tuple"
    "normal-loc-scale-broadcast": r"loc of shape \(3,\) and scale of shape \(2,\)",
    "gamma.sample-array": r"must be a pair \(concentration, rate\)",
    "exponential.sample-tuple": r"pass params=rate",
    "gamma.sample-negative-concentration": r"softplus",
    "uniform.sample-low-not-below-high": r"low < high",
    "multivariate_normal.log_prob-diagonal": r"cholesky",
    "gumbel-negative-shape": r"shape=\(-1,\) has a negative dimension",
    "score_function-dist-class": r"got the class Bernoulli; pass dist=jaxgrad\.dists\.bernoulli",
    "rloo-dist-class": r"pass dist=jaxgrad\.dists\.categorical",
    "pathwise-dist-class": r"pass dist=jaxgrad\.dists\.normal",
    "score_function-optimal-elementwise-log_prob": r"got shape \(3,\)\. Sum over the factors",
    "score_function-normalize-negative": r"jaxgrad\.baselines\.normalizer",
}


@pytest.mark.parametrize(("case", "thunk", "exc", "fn", "arg"), CASES, ids=[c[0] for c in CASES])
def test_every_error_message_names_its_function_and_argument(case, thunk, exc, fn, arg):
    """Each misuse raises one clear line that starts with the function and names the argument."""
    with pytest.raises(exc) as info:
        thunk()
    message = str(info.value)
    assert "\n" not in message, message
    assert re.match(re.escape(fn) + r"[: ]", message), message
    assert re.search(SAYS.get(case, ""), message), message
    assert re.search(r"(?<![\w.])" + re.escape(arg) + r"\b", message), message


# ----------------------------------------------------------------- what is accepted


@pytest.mark.parametrize("dtype", [BF16, jnp.float16, F32, jnp.float64, "python"])
def test_concrete_hyperparameters_of_every_real_dtype_are_accepted(dtype):
    """bfloat16/float16 temperatures and scales were rejected as 'not a number' (issue 8)."""
    value = 0.5 if dtype == "python" else jnp.asarray(0.5, dtype)
    y = jaxgrad.gumbel_softmax(_key(), LOGITS, temperature=value)
    assert y.shape == LOGITS.shape and bool(jnp.all(jnp.isfinite(y)))
    b = jaxgrad.relaxed_bernoulli(_key(), LOGITS, temperature=value)
    assert bool(jnp.all((b > 0) & (b < 1)))
    jaxgrad.score_function(_f, dist=dists.bernoulli, normalize=value)
    jaxgrad.rloo(_f, dist=dists.bernoulli, num_samples=2, normalize=value)
    # The check still checks in that dtype: the same value negated is refused.
    negative = -0.5 if dtype == "python" else jnp.asarray(-0.5, dtype)
    with pytest.raises(ValueError, match=r"gumbel_softmax: temperature must be positive"):
        jaxgrad.gumbel_softmax(_key(), LOGITS, temperature=negative)
    with pytest.raises(ValueError, match=r"score_function: normalize must be positive"):
        jaxgrad.score_function(_f, dist=dists.bernoulli, normalize=negative)


def test_hints_are_about_their_argument():
    """normalize's message was copied from the temperature check ("a nearly hard sample")."""
    with pytest.raises(ValueError, match=r"normalize must be positive") as info:
        jaxgrad.score_function(_f, dist=dists.bernoulli, normalize=-1.0)
    assert "hard sample" not in str(info.value)
    assert "jaxgrad.baselines.normalizer" in str(info.value)
    with pytest.raises(ValueError, match=r"temperature must be positive.*nearly hard sample"):
        jaxgrad.gumbel_softmax(_key(), LOGITS, temperature=-1.0)


def test_normal_scale_checks_concrete_values_only():
    """A concrete scale <= 0 raises (see the table); NaN passes (NaN in, NaN out); traced is
    not checked, as documented: the sample is loc + scale * eps."""
    x = jaxgrad.normal(_key(), jnp.zeros(2, F32), jnp.asarray([1.0, jnp.nan], F32))
    assert bool(jnp.isfinite(x[0])) and bool(jnp.isnan(x[1]))
    eps = jaxgrad.normal(_key(), 0.0, 1.0)
    traced = jax.jit(lambda s: jaxgrad.normal(_key(), 0.0, s))(-2.0)
    np.testing.assert_allclose(traced, -2.0 * eps, rtol=1e-6)
    with pytest.raises(ValueError, match=r"normal: scale must be positive"):
        dists.normal.sample(_key(), (0.0, -1.0))


@pytest.mark.parametrize(("fun", "shape"), [("gumbel", 3), ("gumbel", (0,)), ("normal", 3)])
def test_an_int_shape_is_a_one_dimensional_shape(fun, shape):
    """As in NumPy and jax.random, shape=n means (n,) (it raised "'int' object is not
    iterable"); the draws equal those of the tuple form."""
    if fun == "gumbel":
        a, b = jaxgrad.gumbel(_key(), shape), jaxgrad.gumbel(_key(), checks_shape(shape))
    else:
        a = jaxgrad.normal(_key(), 0.0, 1.0, shape=shape)
        b = jaxgrad.normal(_key(), 0.0, 1.0, shape=checks_shape(shape))
    assert a.shape == checks_shape(shape)
    np.testing.assert_array_equal(a, b)
    k = jaxgrad.categorical(_key(), jnp.zeros(3, F32), shape=2)
    np.testing.assert_array_equal(k, jaxgrad.categorical(_key(), jnp.zeros(3, F32), shape=(2,)))


def checks_shape(shape):
    return (shape,) if isinstance(shape, int) else tuple(shape)


def test_score_function_aux_is_exported_and_documented_with_its_fields():
    assert jaxgrad.ScoreFunctionAux is score_function_module.ScoreFunctionAux
    assert "ScoreFunctionAux" in jaxgrad.__all__
    fields = jaxgrad.ScoreFunctionAux._fields
    assert fields == ("f_values", "samples", "baseline")
    doc = jaxgrad.ScoreFunctionAux.__doc__
    attributes = doc[doc.index("Attributes:") : doc.index("Example:")]
    assert tuple(re.findall(r"^ {6}(\w+):", attributes, re.M)) == fields
    # Every docstring that lists the fields names these fields (it said "baselines").
    for fun in (jaxgrad.score_function, jaxgrad.rloo, jaxgrad.ScoreFunctionAux):
        assert "baselines)" not in fun.__doc__ and "``baselines``" not in fun.__doc__
    assert "``baseline``" in jaxgrad.score_function.__doc__
