"""Every sampler and every registered estimator under every JAX transformation.

One registry drives the whole file: ``SAMPLERS`` below for the samplers and
relaxations, ``jaxgrad.ESTIMATORS`` for the estimators. Each is run under
``jit``, ``vmap`` over keys, ``vmap`` over parameters, ``grad``, ``eval_shape``,
``shard_map`` over 8 devices and ``pmap``, with typed and legacy ``uint32`` keys,
and with ``jax_debug_key_reuse`` on (conftest). The transformed results are
compared with each other (a vmapped or sharded call equals the per-key calls),
so a transformation that silently changes the numbers fails.

To keep compiles few, dtypes other than float32 are only checked under
``jit(value_and_grad)``; the structural transformations run in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import jaxgrad

NUM_DEVICES = 8


class Sampler(NamedTuple):
    fn: Callable  # fn(key, params) -> sample
    shape: tuple  # params shape
    differentiable: bool = True  # whether the sample carries a gradient


def _index_value(fn):
    """Turns an integer sampler into a float readout so it can be differentiated."""

    def g(key, logits):
        idx = fn(key, logits)
        # A one-hot product rather than a gather: under shard_map, JAX 0.10 sums
        # the gather's cotangent for a replicated operand over the mesh axis.
        return jnp.sum(jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype) * logits, -1)

    return g


SAMPLERS = {
    "gumbel": Sampler(lambda k, l: l + jaxgrad.gumbel(k, l.shape, l.dtype), (2, 3)),
    "categorical": Sampler(_index_value(jaxgrad.categorical), (2, 3)),
    "normal": Sampler(lambda k, l: jaxgrad.normal(k, l, jnp.exp(l)), (2, 3)),
    "gumbel_softmax": Sampler(lambda k, l: jaxgrad.gumbel_softmax(k, l, temperature=0.5), (2, 3)),
    "gumbel_softmax_hard": Sampler(
        lambda k, l: jaxgrad.gumbel_softmax(k, l, temperature=0.5, hard=True), (2, 3)
    ),
    "relaxed_bernoulli": Sampler(
        lambda k, l: jaxgrad.relaxed_bernoulli(k, l, temperature=0.5), (2, 3)
    ),
    "relaxed_bernoulli_hard": Sampler(
        lambda k, l: jaxgrad.relaxed_bernoulli(k, l, temperature=0.5, hard=True), (2, 3)
    ),
    "straight_through_categorical": Sampler(jaxgrad.straight_through_categorical, (2, 3)),
    "straight_through_bernoulli": Sampler(jaxgrad.straight_through_bernoulli, (2, 3)),
    "gumbel_rao": Sampler(
        lambda k, l: jaxgrad.gumbel_rao(k, l, temperature=0.5, num_samples=4), (2, 3)
    ),
    "reinmax": Sampler(lambda k, l: jaxgrad.reinmax(k, l, temperature=1.5), (2, 3)),
}

WEIGHTS = jnp.asarray(np.linspace(-1.0, 1.0, 6).reshape(2, 3), jnp.float32)


def _value_and_grad(fn, key, params):
    """The sample and the gradient of a weighted sum of it, consuming ``key`` once."""

    def loss(p):
        out = fn(key, p)
        w = WEIGHTS.reshape(-1)[: out.size].reshape(out.shape)
        return jnp.sum(out.astype(jnp.float32) * w), out

    (_, out), grad = jax.value_and_grad(loss, has_aux=True)(params)
    return out, grad


@functools.cache
def _jit_value_and_grad(name):
    """``jit(_value_and_grad)`` of one sampler, shared by the tests below.

    Both sampler tests run the float32 single call; one jitted function per sampler
    compiles it once rather than once per test.
    """
    return jax.jit(functools.partial(_value_and_grad, SAMPLERS[name].fn))


def _params(shape, dtype=jnp.float32):
    return jnp.asarray(np.linspace(-1.5, 1.0, int(np.prod(shape))).reshape(shape), dtype)


def _keys(n, legacy=False):
    base = jax.random.PRNGKey(7) if legacy else jax.random.key(7)
    return jax.random.split(base, n)


def _clone(key):
    """A copy of ``key`` that may be consumed again (deliberate reuse in comparisons)."""
    return jax.random.clone(key) if jaxgrad._src.checks.is_typed_key(key) else key


def _per_device(fn):
    """``vmap(fn)`` over a device's keys, with replicated parameters marked varying.

    Inside ``shard_map``, a gradient with respect to a replicated (device-
    invariant) value is summed over the mesh axis; per-key gradients of
    replicated parameters need the parameters cast to varying first.
    """

    def body(keys, *rest):
        rest = jax.lax.pcast(rest, ("d",), to="varying")
        return jax.vmap(fn, in_axes=(0,) + (None,) * len(rest))(keys, *rest)

    return body


def _mesh():
    return Mesh(np.array(jax.devices()[:NUM_DEVICES]), ("d",))


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol
        )


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(tree))


def test_eight_devices():
    assert jax.device_count() >= NUM_DEVICES, "conftest must force 8 CPU devices"


# ------------------------------------------------------------------ samplers


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
def test_sampler_jit_grad_dtypes(name, dtype):
    """``jit(value_and_grad)`` in each dtype; float32 also equals the eager call.

    Legacy keys are covered by ``test_sampler_vmap_shard_map_pmap`` (pmap and vmap
    with ``uint32`` keys), in float32: key handling does not depend on the dtype.
    """
    s = SAMPLERS[name]
    params = _params(s.shape, dtype)
    key = _keys(1)[0]
    out, grad = _jit_value_and_grad(name)(_clone(key), params)
    assert out.dtype == dtype
    assert out.shape[: len(s.shape) - 1] == s.shape[:-1]
    assert grad.dtype == dtype and grad.shape == s.shape
    assert _finite(out) and _finite(grad)
    if dtype == jnp.float32:  # the same numbers without jit (eager is slow)
        _assert_close((out, grad), _value_and_grad(s.fn, key, params))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_vmap_shard_map_pmap(name):
    s = SAMPLERS[name]
    params = _params(s.shape)
    value_and_grad = functools.partial(_value_and_grad, s.fn)

    # vmap over keys and parameters at once equals the per-call results.
    one = _jit_value_and_grad(name)
    many = jnp.stack([params] * (NUM_DEVICES - 1) + [params + 0.5])
    batched = jax.jit(jax.vmap(value_and_grad))(_keys(NUM_DEVICES), many)
    _assert_close(jax.tree.map(lambda x: x[0], batched), one(_keys(NUM_DEVICES)[0], params))
    _assert_close(jax.tree.map(lambda x: x[-1], batched), one(_keys(NUM_DEVICES)[-1], many[-1]))

    # shard_map: each of 8 devices handles one key (parameters unbatched).
    sharded = jax.jit(
        jax.shard_map(
            _per_device(value_and_grad),
            mesh=_mesh(),
            in_specs=(P("d"), P()),
            out_specs=P("d"),
        )
    )(_keys(NUM_DEVICES), params)
    _assert_close(jax.tree.map(lambda x: x[:-1], sharded), jax.tree.map(lambda x: x[:-1], batched))

    # pmap, the legacy path, fed legacy uint32 keys with the same key data.
    legacy = _keys(NUM_DEVICES, legacy=True)
    pmapped = jax.pmap(value_and_grad, in_axes=(0, None))(legacy, params)
    _assert_close(pmapped, sharded)

    # eval_shape traces without running.
    shapes = jax.eval_shape(value_and_grad, _keys(NUM_DEVICES)[0], params)
    assert shapes[1].shape == s.shape


# ---------------------------------------------------------------- estimators


class Problem(NamedTuple):
    dist: object
    params: object
    f: Callable  # f(x, a) -> scalar
    arg: jax.Array


def _bernoulli_problem():
    logits = jnp.asarray([0.3, -0.8, 1.2], jnp.float32)
    return Problem(
        jaxgrad.dists.bernoulli,
        logits,
        lambda x, a: jnp.sum((x - a) ** 2) + jnp.prod(x + a),
        jnp.asarray([0.45, 0.2, 0.7], jnp.float32),
    )


def _categorical_problem():
    logits = jnp.asarray([[0.3, -0.8, 1.2], [0.0, 0.5, -0.5]], jnp.float32)
    return Problem(
        jaxgrad.dists.categorical,
        logits,
        lambda x, a: jnp.sum(x * a) ** 2 + jnp.sum(x[0] * x[1] * a[0]),
        jnp.asarray([[0.1, 0.9, -0.4], [0.3, -0.2, 0.6]], jnp.float32),
    )


def _normal_problem():
    params = (jnp.asarray([0.3, -0.5], jnp.float32), jnp.asarray([0.8, 1.3], jnp.float32))
    return Problem(
        jaxgrad.dists.normal,
        params,
        lambda x, a: jnp.sum(jnp.cos(x * a)) + jnp.sum(x**2),
        jnp.asarray([1.0, 0.5], jnp.float32),
    )


PROBLEMS = {
    "bernoulli": _bernoulli_problem,
    "categorical": _categorical_problem,
    "normal": _normal_problem,
}

CASES = [
    (name, variable)
    for name, info in sorted(jaxgrad.ESTIMATORS.items())
    for variable in sorted(info.variables)
]


#: The variational objectives, with the problem's cost as the log-joint (the transformations
#: do not care what the value means). VIMCO on the two discrete variables only.
OBJECTIVE_CASES = [
    (name, variable)
    for name, info in sorted(jaxgrad.OBJECTIVES.items())
    for variable in sorted(info.variables)
    if not (name == "vimco" and variable == "normal")
]


def _build(name, variable):
    info = jaxgrad.ESTIMATORS.get(name) or jaxgrad.OBJECTIVES[name]
    problem = PROBLEMS[variable]()
    if name in jaxgrad.OBJECTIVES:
        return info.build(problem.f, dist=problem.dist), problem
    try:
        est = info.build(problem.f, dist=problem.dist, num_samples=info.num_samples)
    except (ImportError, AttributeError) as e:  # pragma: no cover - a missing module is a bug
        pytest.fail(f"registry entry {name!r} cannot be built: {e}")
    return est, problem


#: The estimators also run under pmap (one per variable type): pmap is the legacy path, and
#: its program adds a quarter to each case's compile time.
PMAP_CASES = {("reinforce", "bernoulli"), ("rloo", "categorical"), ("pathwise", "normal")}
assert PMAP_CASES <= set(CASES), PMAP_CASES - set(CASES)


@pytest.mark.parametrize(("name", "variable"), CASES + OBJECTIVE_CASES)
def test_estimator_transformations(name, variable):
    """jit, vmap over keys and params, grad, shard_map, legacy keys, eval_shape (and pmap).

    Three compiled programs per estimator: the single call with a typed key; one vmap
    over keys and parameters together, fed the legacy ``uint32`` form of the keys,
    which must give the numbers of the typed keys; and shard_map (whose body vmaps
    over typed keys with the parameters unbatched). ``PMAP_CASES`` add pmap.
    """
    est, pb = _build(name, variable)

    def grads(k, params, a):
        return jax.value_and_grad(est, argnums=(1, 2))(k, params, a)

    one = jax.jit(grads)
    value, (g_params, g_arg) = one(_keys(NUM_DEVICES)[0], pb.params, pb.arg)
    assert value.shape == () and _finite((value, g_params, g_arg))
    assert jax.tree.map(jnp.shape, g_params) == jax.tree.map(jnp.shape, pb.params)

    # vmap over (legacy) keys and parameters at once equals the per-call (typed) results.
    shifted = jax.tree.map(lambda p: p + 0.25, pb.params)
    many = jax.tree.map(lambda a, b: jnp.stack([a] * (NUM_DEVICES - 1) + [b]), pb.params, shifted)
    legacy = _keys(NUM_DEVICES, legacy=True)
    batched = jax.jit(jax.vmap(grads, in_axes=(0, 0, None)))(legacy, many, pb.arg)
    close = functools.partial(_assert_close, rtol=1e-4, atol=1e-5)
    close(jax.tree.map(lambda x: x[0], batched), (value, (g_params, g_arg)))
    close(jax.tree.map(lambda x: x[-1], batched), one(_keys(NUM_DEVICES)[-1], shifted, pb.arg))

    # shard_map over 8 devices (vmap over keys, parameters unbatched) equals the per-key calls.
    sharded = jax.jit(
        jax.shard_map(
            _per_device(grads),
            mesh=_mesh(),
            in_specs=(P("d"), P(), P()),
            out_specs=P("d"),
        )
    )(_keys(NUM_DEVICES), pb.params, pb.arg)
    close(jax.tree.map(lambda x: x[0], sharded), (value, (g_params, g_arg)))
    close(jax.tree.map(lambda x: x[:-1], sharded), jax.tree.map(lambda x: x[:-1], batched))

    if (name, variable) in PMAP_CASES:  # pmap, the legacy path, with legacy keys
        pmapped = jax.pmap(grads, in_axes=(0, None, None))(legacy, pb.params, pb.arg)
        close(pmapped, sharded)

    # eval_shape: abstract evaluation only.
    shape = jax.eval_shape(est, _keys(NUM_DEVICES)[0], pb.params, pb.arg)
    assert shape.shape == ()
