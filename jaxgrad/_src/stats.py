"""Many independent gradient estimates and their statistics, chunked and sharded.

Estimates are drawn with ``vmap`` over keys in chunks of ``batch_size`` keys
(memory is bounded by one chunk per device) and, when several devices are
present, the chunks are spread over all of them with ``jax.shard_map``. The
``n``-th estimate always uses the key ``jax.random.fold_in(key, n)`` (for the
default threefry implementation this equals ``jax.random.split(key, N)[n]``),
so the numbers do not depend on the number of devices or processes (nor,
up to XLA's code for each ``vmap`` width, on the chunk size);
:func:`grad_stats` reduces them in one fixed order, so its statistics are
bit-identical for any device and process count too.

Public through :mod:`jaxgrad.diagnostics`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxgrad._src import checks

Array = jax.Array

_AXIS = "keys"


# ---------------------------------------------------------------------------
# Chunked, sharded evaluation of many estimates.


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _mesh(devices: Sequence[Any] | None, fn: str) -> jax.sharding.Mesh:
    devs = jax.devices() if devices is None else list(devices)
    if not devs:
        raise ValueError(f"{fn}: devices must name at least one device, got an empty list.")
    return jax.sharding.Mesh(np.array(devs), (_AXIS,))


def _check_num_keys(num_keys: Any, fn: str, minimum: int, why: str = "") -> int:
    if isinstance(num_keys, bool) or not isinstance(num_keys, int | np.integer):
        raise TypeError(
            f"{fn}: num_keys must be a Python int (the number of estimates), "
            f"got {type(num_keys).__name__}."
        )
    num_keys = int(num_keys)
    if num_keys < minimum:
        reason = f" {why}" if why else ""
        raise ValueError(f"{fn}: num_keys must be at least {minimum}, got {num_keys}.{reason}")
    if num_keys >= 2**32:
        raise ValueError(
            f"{fn}: num_keys must be below 2**32 (keys are indexed by uint32), got {num_keys}. "
            f"Run several studies with different keys and merge them."
        )
    return num_keys


def _check_batch_size(batch_size: Any, fn: str) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"{fn}: batch_size must be a positive int or None, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be at least 1, got {batch_size}.")
    return int(batch_size)


def _chunk_grads(est, key, params, args, first, width):
    """Gradients for the keys ``fold_in(key, first + i)``, ``i < width``, vmapped."""
    idx = first + jnp.arange(width, dtype=jnp.uint32)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, idx)
    grad_fn = jax.grad(est, argnums=1)
    return jax.vmap(lambda k: grad_fn(k, params, *args))(keys)


@functools.partial(jax.jit, static_argnames=("est", "num_keys", "width", "per_device", "mesh"))
def _samples_program(key, params, args, *, est, num_keys, width, per_device, mesh):
    def local(key, params, args):
        base = jax.lax.axis_index(_AXIS).astype(jnp.uint32) * np.uint32(per_device * width)
        chunks = jnp.arange(per_device, dtype=jnp.uint32)
        out = jax.lax.map(
            lambda s: _chunk_grads(est, key, params, args, base + s * np.uint32(width), width),
            chunks,
        )
        return jax.tree.map(lambda a: a.reshape((per_device * width, *a.shape[2:])), out)

    out = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(), P()), out_specs=P(_AXIS), check_vma=False
    )(key, params, args)
    return jax.tree.map(lambda a: a[:num_keys], out)


def _acc_dtype() -> jnp.dtype:
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


#: Tree levels summed by one fused kernel: groups of 2**4 elements.
_GROUP = 16


def _pairwise(xs: list) -> Any:
    """The pairwise sum of a list, adjacent pairs first, an odd last one passing through."""
    while len(xs) > 1:
        xs = [xs[i] + xs[i + 1] for i in range(0, len(xs) - 1, 2)] + xs[len(xs) - len(xs) % 2 :]
    return xs[0]


def _tree_sum(x: Array) -> Array:
    """Sums axis 0 pairwise, adjacent pairs first: one fixed order of additions.

    At every level element ``2i`` is added to element ``2i + 1`` and an odd
    last element passes through unchanged, so the result is the perfect
    binary tree over the elements in order, padded with zeros. Any aligned
    power-of-two run of elements is one subtree of it: summing such runs
    first, then their sums the same way, gives the same bits. Four levels at
    a time (groups of 16, written out as additions of slices) make one fused
    kernel, so a chunk's tree costs a few kernels, not one per level; and
    written-out additions, unlike an XLA reduce, are never contracted with a
    producer's multiplication into a fused multiply-add.
    """
    while x.shape[0] > 1:
        n = x.shape[0]
        if n % _GROUP == 0:
            g = x.reshape(n // _GROUP, _GROUP, *x.shape[1:])
            x = _pairwise([g[:, i] for i in range(_GROUP)])
        elif n < _GROUP:
            return _pairwise([x[i] for i in range(n)])
        else:  # a level of pairs, the odd last element passing through
            pairs = x[: n - n % 2].reshape(n // 2, 2, *x.shape[1:])
            summed = pairs[:, 0] + pairs[:, 1]
            x = jnp.concatenate([summed, x[n - 1 :]]) if n % 2 else summed
    return x[0]


def _num_levels(num_nodes: int) -> int:
    """Stack levels for pushing ``num_nodes`` subtrees (``bit_length``, at least 1)."""
    return max(1, int(num_nodes).bit_length())


def _push(stack: Array, node: Array, t: Array) -> Array:
    """Adds the ``t``-th subtree sum to a binary counter of partial sums (pairwise summation).

    ``stack[j]`` holds the sum of the most recent aligned run of ``2**j``
    subtrees whenever bit ``j`` of ``t`` is set. The new node is added to the
    occupied levels below the first clear bit of ``t`` (left operand first)
    and stored there: exactly the additions of the perfect binary tree.
    """
    carry = node
    for j in range(stack.shape[0]):
        full = (1 << (j + 1)) - 1
        merge = (t & np.uint32(full)) == np.uint32(full)
        carry = jnp.where(merge, stack[j] + carry, carry)
    level = jax.lax.population_count(t ^ (t + np.uint32(1))) - np.uint32(1)
    return jax.lax.dynamic_update_index_in_dim(stack, carry, level.astype(jnp.int32), 0)


def _fold(stack: np.ndarray, count: int) -> np.ndarray:
    """The total of a counter that received ``count`` subtrees: occupied levels, lowest first.

    Lowest first is how the zero-padded perfect tree adds them, so the total
    does not depend on how many (trailing, all-zero) subtrees were pushed.
    """
    total = None
    for j in range(stack.shape[0]):
        if count >> j & 1:
            total = stack[j] if total is None else stack[j] + total
    return np.zeros_like(stack[0]) if total is None else total


@functools.partial(jax.jit, static_argnames=("est", "num_keys", "width", "mesh"))
def _moments_program(key, params, args, state, first_round, rounds, *, est, num_keys, width, mesh):
    r"""``rounds`` rounds of one chunk per device, added to the sums about the first estimate.

    ``first_round`` and ``rounds`` are traced: one compiled program serves
    every host step, however many rounds each one runs.

    ``state = (shift, stack)``: the shift :math:`c` (the estimate of key 0,
    set in round 0 and then carried) and a binary counter of pairwise partial
    sums of :math:`(g - c, (g - c)^2)` over chunks, replicated on every
    device. In round ``r`` device ``d`` draws chunk ``r D + d`` (``width``
    keys, a power of two); the ``D`` chunk sums are gathered and pushed in key
    order, so every device computes the same counter. Keys past ``num_keys``
    contribute zeros; chunks past the end are skipped.
    """
    num_chunks = _ceil_div(num_keys, width)
    acc = _acc_dtype()
    d = mesh.size

    def chunk(c, key, params, args):
        first = c * np.uint32(width)
        g = _chunk_grads(est, key, params, args, first, width)
        return jnp.concatenate([x.reshape(width, -1).astype(acc) for x in jax.tree.leaves(g)], 1)

    def local(key, params, args, state, first_round, rounds):
        me = jax.lax.axis_index(_AXIS).astype(jnp.uint32)

        def one_round(r, state):
            shift, stack = state
            c = (first_round + r) * np.uint32(d) + me
            size = stack.shape[-1]

            def compute(c):
                flat = chunk(c, key, params, args)
                return flat, flat[0]

            def skip(c):
                del c
                return jnp.zeros((width, size), acc), jnp.zeros((size,), acc)

            flat, g0 = jax.lax.cond(c < np.uint32(num_chunks), compute, skip, c)
            # Round 0: every device takes the first estimate of all from device 0.
            shift = jnp.where(
                first_round + r == 0,
                jax.lax.psum(jnp.where(me == 0, g0, 0), _AXIS),
                shift,
            )
            valid = (c * np.uint32(width) + jnp.arange(width, dtype=jnp.uint32)) < np.uint32(
                num_keys
            )
            dev = jnp.where(valid[:, None], flat - shift, 0)
            node = jnp.stack([_tree_sum(dev), _tree_sum(dev * dev)])  # [2, size]
            nodes = jax.lax.all_gather(node, _AXIS)  # [D, 2, size], in key order
            t0 = (first_round + r) * np.uint32(d)

            def push(i, stack):  # a loop, not unrolled: compiles once for any D
                return _push(stack, nodes[i], t0 + i)

            stack = jax.lax.fori_loop(np.uint32(0), np.uint32(d), push, stack)
            return shift, stack

        return jax.lax.fori_loop(np.uint32(0), rounds, one_round, state)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(), P(), P(), P(), P()),
        out_specs=P(),
        check_vma=False,
    )(key, params, args, state, first_round, rounds)


#: Default working memory (bytes) of one chunk on a CPU: about the size of a
#: last-level cache, where the estimator's intermediates stay cache-resident
#: (measured on the binary-VAE study: chunks of 64 keys ran 1.3x faster than
#: chunks of 2048). Accelerators get :data:`ACCELERATOR_MEMORY_BUDGET`.
MEMORY_BUDGET = 2**24

#: Default working memory (bytes) of one chunk on a GPU or TPU, where wide
#: chunks keep the device busy.
ACCELERATOR_MEMORY_BUDGET = 2**30

#: Seconds one host step aims at: progress is reported, and Ctrl-C is noticed,
#: between steps; fewer, longer steps cost less (each reallocates the program's
#: working memory).
_STEP_SECONDS = 0.5

#: The widest default chunk, in keys.
_MAX_WIDTH = 2**14


def _check_memory_budget(memory_budget: Any, mesh: jax.sharding.Mesh, fn: str) -> int:
    if memory_budget is None:
        cpu = all(dev.platform == "cpu" for dev in mesh.devices.flat)
        return MEMORY_BUDGET if cpu else ACCELERATOR_MEMORY_BUDGET
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int | np.integer):
        raise TypeError(
            f"{fn}: memory_budget must be a positive int (bytes) or None, got {memory_budget!r}."
        )
    if memory_budget < 1:
        raise ValueError(f"{fn}: memory_budget must be positive (bytes), got {memory_budget}.")
    return int(memory_budget)


def _jaxpr_bytes(jaxpr: Any) -> int:
    """Bytes of every value a jaxpr (and the jaxprs inside it) computes: an upper
    bound of its working memory, since XLA fuses most of them away."""
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "dtype") and hasattr(aval, "shape"):
                total += math.prod(aval.shape) * aval.dtype.itemsize
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += _jaxpr_bytes(sub)
    return total


def _bytes_per_key(est: Callable[..., Array], key: Any, params: Any, args: tuple) -> int:
    """The working memory of one gradient estimate, from its traced program.

    Traced once per estimator and argument types: a repeated study traces nothing.
    """
    types = [jax.typeof(x) for x in jax.tree.leaves((key, params, args))]
    specs = tuple(jax.ShapeDtypeStruct(t.shape, t.dtype, weak_type=t.weak_type) for t in types)
    tree = jax.tree.structure((key, params, args))
    try:
        return _traced_bytes(est, tree, specs)
    except TypeError:  # an unhashable estimator: trace without caching
        return _traced_bytes.__wrapped__(est, tree, specs)


@functools.lru_cache(maxsize=256)
def _traced_bytes(est: Callable[..., Array], tree: Any, specs: tuple) -> int:
    key, params, args = jax.tree.unflatten(tree, specs)
    grad = jax.grad(est, argnums=1)
    jaxpr = jax.make_jaxpr(lambda k, p, a: grad(k, p, *a))(key, params, args)
    return max(1, _jaxpr_bytes(jaxpr.jaxpr))


def _pow2_floor(n: float) -> int:
    return 1 << max(1, int(max(n, 2)).bit_length() - 1)


#: A default chunk holds at most this fraction of the keys (the zero-padded last
#: chunk wastes less than it), whatever the device count: the default width depends
#: on the estimator, ``num_keys`` and the memory budget only, so the figures are the
#: same bits on any number of devices and processes.
_MIN_CHUNKS = 32


def _default_width(per_key: int, num_keys: int, memory_budget: int) -> int:
    """A power-of-two chunk width within the memory budget and a 32nd of the keys."""
    return min(
        _MAX_WIDTH,
        _pow2_floor(memory_budget / per_key),
        _pow2_floor(num_keys / _MIN_CHUNKS),
    )


def _replicated_to_host(x: Array) -> np.ndarray:
    """A replicated array's value (this process's first copy: with several processes
    the global array is not fully addressable, but every copy is the same)."""
    return np.asarray(x.addressable_shards[0].data)


def grad_samples(
    est: Callable[..., Array],
    key: Any,
    params: Any,
    *args: Any,
    num_keys: int,
    batch_size: int | None = None,
    devices: Sequence[Any] | None = None,
) -> Any:
    r"""Draws ``num_keys`` independent gradient estimates with respect to ``params``.

    .. math::
        \hat g_n = \nabla_\theta \, \mathrm{est}(k_n, \theta, \ldots), \qquad
        k_n = \mathrm{fold\_in}(\mathrm{key}, n) = \mathrm{split}(\mathrm{key}, N)_n .

    The keys are processed in chunks of ``batch_size``, each chunk one
    ``vmap`` (``jax.lax.map`` over chunks), so the working memory is one chunk
    per device however large ``num_keys`` is; the returned samples themselves
    take ``num_keys`` times the size of ``params``. With several devices the
    chunks are sharded over all of them (``jax.shard_map`` over a 1-D mesh).
    The numbers do not depend on the number of devices or processes: with
    the same ``batch_size`` every chunk runs the same program on any device.
    Across chunk sizes they are the same up to how XLA compiles the
    estimator at each ``vmap`` width, which it does not promise to keep
    bit-for-bit (on CPU, elementwise toy costs agree at every width; DisARM's
    estimates differ by 4e-17 between widths 256 and 1024; a width-1
    ``vmap`` compiles to scalar code, so chunks have at least 2 keys).
    For statistics of very many estimates without storing them, use
    :func:`grad_stats`.

    Args:
      est: an estimator ``est(key, params, *args) -> scalar``.
      key: a single PRNG key (typed or legacy ``uint32[2]``).
      params: the parameters the gradient is taken with respect to (a pytree).
      *args: further arguments of ``est``, held fixed.
      num_keys: the number of independent estimates.
      batch_size: keys per vectorized chunk (at least 2); ``None`` vmaps all
        the keys of a device at once.
      devices: the devices to shard over; default ``jax.devices()``.

    Returns:
      A pytree like ``params`` whose leaves have a leading axis of ``num_keys``.

    Raises:
      TypeError: if ``key`` is not a key or ``batch_size`` is not an int.
      ValueError: if ``key`` is a batch of keys, ``num_keys < 1`` (or
        ``>= 2**32``) or ``batch_size < 1``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = lambda key, p: jnp.sum(jaxgrad.normal(key, p[0], p[1]) ** 2)
      >>> g = jaxgrad.diagnostics.grad_samples(
      ...     est, jax.random.key(0), (1.0, 1.0), num_keys=8, batch_size=4)
      >>> g[0].shape
      (8,)
    """
    checks.check_key(key, "grad_samples")
    num_keys = _check_num_keys(num_keys, "grad_samples", 1)
    batch_size = _check_batch_size(batch_size, "grad_samples")
    mesh = _mesh(devices, "grad_samples")
    d = mesh.size
    width = _ceil_div(num_keys, d) if batch_size is None else min(batch_size, num_keys)
    width = max(width, 2)  # XLA compiles a width-1 vmap as scalar code: other rounding
    per_device = _ceil_div(_ceil_div(num_keys, width), d)
    return _samples_program(
        key,
        params,
        tuple(args),
        est=est,
        num_keys=num_keys,
        width=width,
        per_device=per_device,
        mesh=mesh,
    )


# ---------------------------------------------------------------------------
# Streaming statistics.


@dataclasses.dataclass(frozen=True)
class GradStats:
    r"""Statistics of ``num_keys`` i.i.d. gradient estimates, per coordinate.

    Per-coordinate fields are pytrees like ``params`` of float64 NumPy arrays.

    Attributes:
      num_keys: the number of estimates ``N``.
      mean: the sample mean :math:`\bar g`.
      variance: the unbiased sample variance (``ddof=1``) of one estimate.
      stderr: the standard error of the mean, ``sqrt(variance / N)``.
      snr: the signal-to-noise ratio ``|mean| / sqrt(variance)`` (``inf`` for
        a deterministic non-zero estimate, ``nan`` for a constant zero).
      exact: the exact gradient, if it was given.
      bias: ``mean - exact``, if ``exact`` was given.
      mse: the mean squared error ``mean((g - exact)^2)``, if ``exact`` was given.
      bias_stderr: the standard error of ``bias``: ``stderr`` against an exact
        gradient; in a :func:`study` without one, it also counts the error of
        the pooled reference that stands in for ``exact``.
      f_evals: evaluations of ``f`` per estimate, if it was given.
      time_per_estimate: measured seconds per estimate, compilation excluded.
      compile_time: seconds spent compiling (and dispatching an empty round).
      batch_size: keys per vectorized chunk.
      num_devices: the number of devices the keys were sharded over.
    """

    num_keys: int
    mean: Any
    variance: Any
    stderr: Any
    snr: Any
    exact: Any = None
    bias: Any = None
    mse: Any = None
    f_evals: int | None = None
    time_per_estimate: float = math.nan
    compile_time: float = math.nan
    batch_size: int = 0
    num_devices: int = 1
    bias_stderr: Any = None

    @staticmethod
    def _flat(tree: Any) -> np.ndarray:
        leaves = jax.tree.leaves(tree)
        if not leaves:
            return np.zeros((0,))
        return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in leaves])

    def flat(self, field: str) -> np.ndarray:
        """A per-coordinate field (``"mean"``, ``"variance"``, ...) as one flat vector."""
        value = getattr(self, field)
        return None if value is None else self._flat(value)

    @property
    def num_coordinates(self) -> int:
        """The number of scalar coordinates of the gradient."""
        return int(self.flat("mean").size)

    @property
    def total_variance(self) -> float:
        r"""The trace of the covariance, :math:`E\|g - E g\|^2` (summed variance)."""
        return float(np.sum(self.flat("variance")))

    @property
    def total_mse(self) -> float | None:
        r""":math:`E\|g - g^\star\|^2`, summed over coordinates, if ``exact`` was given."""
        return None if self.mse is None else float(np.sum(self.flat("mse")))

    @property
    def bias_norm(self) -> float | None:
        """The Euclidean norm of the bias, if ``exact`` was given."""
        return None if self.bias is None else float(np.linalg.norm(self.flat("bias")))

    @property
    def snr_norm(self) -> float:
        r""":math:`\|\bar g\| / \sqrt{\mathrm{tr\,Cov}}`; the SNR itself for one coordinate."""
        num = float(np.linalg.norm(self.flat("mean")))
        den = math.sqrt(self.total_variance)
        if den > 0:
            return num / den
        return math.inf if num > 0 else math.nan

    @property
    def efficiency(self) -> float:
        r"""Work-normalized error: (summed MSE, or variance without ``exact``) x f-evals.

        Smaller is better. For an unbiased estimator the MSE is its variance,
        so this is the classic variance x cost; a biased estimator also pays
        for its squared bias. ``nan`` when ``f_evals`` is unknown.
        """
        err = self.total_mse if self.mse is not None else self.total_variance
        return math.nan if self.f_evals is None else err * self.f_evals

    @property
    def variance_x_time(self) -> float:
        """Summed variance x measured seconds per estimate (smaller is better)."""
        return self.total_variance * self.time_per_estimate


def grad_stats(
    est: Callable[..., Array],
    key: Any,
    params: Any,
    *args: Any,
    num_keys: int,
    batch_size: int | None = None,
    exact: Any = None,
    f_evals: int | None = None,
    devices: Sequence[Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    memory_budget: int | None = None,
) -> GradStats:
    r"""Per-coordinate statistics of ``num_keys`` gradient estimates, without storing them.

    With :math:`\hat g_n` the estimates of :func:`grad_samples` (the same keys),

    .. math::
        \bar g = \frac1N \sum_n \hat g_n, \quad
        s^2 = \frac{1}{N-1} \sum_n (\hat g_n - \bar g)^2, \quad
        \mathrm{SNR} = \frac{|\bar g|}{s}, \quad
        \mathrm{MSE} = \frac1N \sum_n (\hat g_n - g^\star)^2 .

    Everything happens on the devices, in one compiled program: with
    :math:`c = \hat g_0` (the first estimate) as the shift, it sums
    :math:`\hat g_n - c` and :math:`(\hat g_n - c)^2` over all keys by *one
    fixed pairwise tree*, the perfect binary tree over the keys in order
    (padded with zeros), and the host only reads the two sums:
    :math:`\bar g = c + S_1 / N`, :math:`M_2 = S_2 - S_1^2 / N`. Each chunk
    (a power of two of keys, so an aligned subtree) is summed by the tree on
    its device; the chunks of one round, one per device, are gathered and
    pushed in key order into a binary counter of partial sums (pairwise
    summation), replicated on every device. The same additions happen for
    any ``batch_size`` and any number of devices or processes, so the
    figures are bit-identical across device and process counts (the default
    width does not depend on them) and across ``batch_size`` whenever the
    per-key estimates are (see :func:`grad_samples`), and the error of the sums grows like
    :math:`\log_2 N` roundings, not :math:`N`. Memory stays flat in
    ``num_keys``. The rounds run in host steps of about half a second each
    (``progress`` is called, and Ctrl-C noticed, between them), all by the
    same compiled program, which is compiled once and then timed: wall time
    per estimate excludes compilation. Efficiency is ``(MSE or variance) x
    f_evals``.

    Args:
      est: an estimator ``est(key, params, *args) -> scalar``.
      key: a single PRNG key (typed or legacy ``uint32[2]``).
      params: the parameters the gradient is taken with respect to (a pytree).
      *args: further arguments of ``est``, held fixed.
      num_keys: the number of independent estimates (at least 2).
      batch_size: keys per vectorized chunk, rounded up to a power of two;
        default: the widest power of two (at most 16384) whose chunk fits
        ``memory_budget`` and is at most a quarter of a device's keys. The
        memory of one estimate is read off its traced program (every
        intermediate counted, an upper bound).
      exact: the exact gradient (a pytree like ``params``), for bias and MSE.
      f_evals: evaluations of ``f`` per estimate, e.g.
        ``jaxgrad.ESTIMATORS[name].cost(variable, shape)``.
      devices: the devices to shard over; default ``jax.devices()``.
      progress: called on the host as ``progress(done, num_keys)`` as chunks finish.
      memory_budget: bytes of working memory for one chunk, which sets the
        default ``batch_size``: :data:`MEMORY_BUDGET` (16 MiB, cache-sized)
        on CPUs, :data:`ACCELERATOR_MEMORY_BUDGET` (1 GiB) on GPUs and TPUs.

    Returns:
      A :class:`GradStats`.

    Raises:
      TypeError: if ``key`` is not a key or ``batch_size`` is not an int.
      ValueError: if ``key`` is a batch of keys, ``num_keys < 2``,
        ``batch_size < 1``, or ``exact`` does not match ``params``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = lambda key, p: jnp.sum(jaxgrad.normal(key, p[0], p[1]) ** 2)
      >>> s = jaxgrad.diagnostics.grad_stats(
      ...     est, jax.random.key(0), (1.0, 1.0), num_keys=10_000, exact=(2.0, 2.0))
      >>> bool(abs(s.bias[0]) < 5 * s.stderr[0])  # d/dmu E[x^2] = 2 mu
      True

    References:
      Chan, Golub & LeVeque, *Algorithms for computing the sample variance*,
      1983 (sums about a shift, pairwise summation).
      Higham, *The accuracy of floating point summation*, SIAM J. Sci.
      Comput. 14(4), 1993 (the error bound of pairwise summation).
      https://doi.org/10.1080/00031305.1983.10483115
    """
    fn = "grad_stats"
    checks.check_key(key, fn)
    num_keys = _check_num_keys(num_keys, fn, 2, "A variance needs two estimates.")
    batch_size = _check_batch_size(batch_size, fn)
    mesh = _mesh(devices, fn)
    memory_budget = _check_memory_budget(memory_budget, mesh, fn)
    d = mesh.size
    treedef = jax.tree.structure(params)
    shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]
    size = sum(math.prod(s) for s in shapes)
    args = tuple(args)
    if batch_size is None:
        per_key = _bytes_per_key(est, key, params, args)
        width = _default_width(per_key, num_keys, memory_budget)
    else:  # a power of two: chunks are aligned subtrees of the summation tree
        width = 1 << max(1, (batch_size - 1).bit_length())
    num_chunks = _ceil_div(num_keys, width)
    total_rounds = _ceil_div(num_chunks, d)
    levels = _num_levels(total_rounds * d)

    exact_flat = None
    if exact is not None:
        try:
            ex = jax.tree.map(
                lambda p, e: np.broadcast_to(np.asarray(e), jnp.shape(p)), params, exact
            )
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{fn}: exact must be a pytree like params (structure {treedef}, leaf shapes "
                f"{shapes}); could not match it: {err}"
            ) from None
        exact_flat = GradStats._flat(ex)

    run = functools.partial(
        _moments_program,
        est=est,
        num_keys=num_keys,
        width=width,
        mesh=mesh,
    )
    acc = _acc_dtype()
    # On the devices, replicated like the program's output: one compiled program for every step.
    state = jax.device_put(
        (np.zeros((size,), acc), np.zeros((levels, 2, size), acc)),
        jax.sharding.NamedSharding(mesh, P()),
    )
    t0 = time.perf_counter()
    jax.block_until_ready(run(key, params, args, state, np.uint32(0), np.uint32(0)))  # compile
    compile_time = time.perf_counter() - t0

    # Host steps of about _STEP_SECONDS each, pipelined: the next step is queued
    # before the host waits for the current one, so the devices never idle. The
    # first two run one round each; then each runs as many as the pace says fit.
    t0 = time.perf_counter()
    queued: list[tuple[Any, int, int]] = []  # (state after it, rounds done by then, its rounds)
    dispatched, rounds, pace, last = 0, 1, None, t0
    while dispatched < total_rounds or queued:
        while dispatched < total_rounds and len(queued) < 2:
            if pace is not None:
                rounds = max(1, min(4 * rounds, int(_STEP_SECONDS / max(pace, 1e-9))))
            rounds = min(rounds, total_rounds - dispatched)
            state = run(key, params, args, state, np.uint32(dispatched), np.uint32(rounds))
            dispatched += rounds
            queued.append((state, dispatched, rounds))
        done, done_rounds, step_rounds = queued.pop(0)
        jax.block_until_ready(done)
        now = time.perf_counter()
        pace, last = (now - last) / step_rounds, now
        if progress is not None:
            progress(min(num_keys, done_rounds * d * width), num_keys)
    shift, stack = (_replicated_to_host(x) for x in state)
    elapsed = time.perf_counter() - t0

    s1, s2 = (x.astype(np.float64) for x in _fold(stack, total_rounds * d))
    n = float(num_keys)
    mean = shift.astype(np.float64) + s1 / n
    m2 = np.maximum(s2 - s1 * s1 / n, 0.0)
    variance = m2 / (n - 1)
    std = np.sqrt(variance)
    absmean = np.abs(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(
            std > 0, absmean / np.where(std > 0, std, 1.0), np.where(absmean > 0, np.inf, np.nan)
        )

    def unflat(v):
        if v is None:
            return None
        parts, i = [], 0
        for s in shapes:
            k = math.prod(s)
            parts.append(v[i : i + k].reshape(s))
            i += k
        return jax.tree.unflatten(treedef, parts)

    bias = mse = None
    if exact_flat is not None:
        bias = mean - exact_flat
        mse = m2 / n + bias * bias
    return GradStats(
        num_keys=num_keys,
        mean=unflat(mean),
        variance=unflat(variance),
        stderr=unflat(np.sqrt(variance / n)),
        snr=unflat(snr),
        exact=unflat(exact_flat),
        bias=unflat(bias),
        mse=unflat(mse),
        f_evals=None if f_evals is None else int(f_evals),
        time_per_estimate=elapsed / num_keys,
        compile_time=compile_time,
        batch_size=width,
        num_devices=d,
        bias_stderr=None if bias is None else unflat(np.sqrt(variance / n)),
    )
