"""Many independent gradient estimates and their statistics, chunked and sharded.

Estimates are drawn with ``vmap`` over keys in chunks of ``batch_size`` keys
(memory is bounded by one chunk per device) and, when several devices are
present, the chunks are spread over all of them with ``jax.shard_map``. The
``n``-th estimate always uses the key ``jax.random.fold_in(key, n)`` (for the
default threefry implementation this equals ``jax.random.split(key, N)[n]``),
so the numbers do not depend on the chunk size or on the number of devices;
:func:`grad_stats` reduces them in a fixed order, so its statistics are
bit-identical for any chunk size and device count too.

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


#: Keys per reduction block. Statistics are reduced over blocks of this many
#: consecutive keys, aligned at multiples of it, with one fixed summation tree,
#: and the blocks are merged on the host in key order: the same operations on
#: the same numbers for any chunk size and device count (chunks hold whole blocks).
_BLOCK = 64


def _tree_sum(x: Array) -> Array:
    """Sums axis 1 (of power-of-two length) by halving: one fixed order of additions."""
    while x.shape[1] > 1:
        h = x.shape[1] // 2
        x = x[:, :h] + x[:, h:]
    return x[:, 0]


@functools.partial(jax.jit, static_argnames=("est", "num_keys", "width", "per_device", "mesh"))
def _moments_program(key, params, args, start, *, est, num_keys, width, per_device, mesh):
    """Per-block ``(shift, sum(g - shift), sum((g - shift)^2))`` of ``per_device`` chunks a device.

    A block is ``_BLOCK`` consecutive keys; its shift is its first estimate
    (so a constant estimator has exactly zero spread); keys past ``num_keys``
    contribute zeros.
    """
    num_chunks = _ceil_div(num_keys, width)
    acc = _acc_dtype()
    size = sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params))
    blocks = width // _BLOCK

    def one_chunk(c, key, params, args):
        def compute(c):
            first = c * np.uint32(width)
            g = _chunk_grads(est, key, params, args, first, width)
            flat = jnp.concatenate(
                [x.reshape(width, -1).astype(acc) for x in jax.tree.leaves(g)], axis=1
            )
            valid = (first + jnp.arange(width, dtype=jnp.uint32)) < np.uint32(num_keys)
            flat = flat.reshape(blocks, _BLOCK, size)
            shift = flat[:, 0]
            dev = jnp.where(valid.reshape(blocks, _BLOCK, 1), flat - shift[:, None], 0)
            return shift, _tree_sum(dev), _tree_sum(dev * dev)

        def skip(c):
            del c
            zeros = jnp.zeros((blocks, size), acc)
            return zeros, zeros, zeros

        return jax.lax.cond(c < np.uint32(num_chunks), compute, skip, c)

    def local(key, params, args, start):
        first = start + jax.lax.axis_index(_AXIS).astype(jnp.uint32) * np.uint32(per_device)
        chunks = first + jnp.arange(per_device, dtype=jnp.uint32)
        return jax.lax.map(lambda c: one_chunk(c, key, params, args), chunks)

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(), P(), P()), out_specs=P(_AXIS), check_vma=False
    )(key, params, args, start)


def _to_host(x: Any) -> np.ndarray:
    if jax.process_count() > 1:  # a pod slice: every process gathers every chunk
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


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
    The numbers do not depend on ``batch_size`` or on the number of devices:
    with the same ``batch_size`` every chunk runs the same program on any
    device; across chunk sizes this relies on XLA vectorizing the estimator
    the same way for every width (it does on CPU for elementwise code; a
    width-1 ``vmap`` compiles to scalar code, so chunks have at least 2 keys).
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


def _default_width(params: Any, num_keys: int) -> int:
    size = max(1, sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params)))
    return int(min(num_keys, max(64, min(2**14, 2**19 // size))))


class _Moments:
    r"""Sums about a fixed shift, accumulated block by block in key order, in float64.

    With :math:`c` the first estimate of all, each block's
    :math:`(s, A = \sum (g - s), Q = \sum (g - s)^2)` over its :math:`n_b`
    keys becomes :math:`S_1 = A + n_b \delta` and
    :math:`S_2 = Q + 2 \delta A + n_b \delta^2` about :math:`c`
    (:math:`\delta = s - c`), and these are added in key order (a sequential
    fold, ``np.cumsum``), so the result does not depend on how the blocks
    arrived; then :math:`\bar g = c + S_1 / N` and
    :math:`M_2 = S_2 - S_1^2 / N`.
    """

    def __init__(self, size: int):
        self.n = 0
        self.c = None
        self.s1 = np.zeros(size)
        self.s2 = np.zeros(size)

    def add(self, counts: np.ndarray, shift: np.ndarray, a: np.ndarray, q: np.ndarray) -> None:
        k = int(np.count_nonzero(counts))  # the blocks with keys form a prefix
        if k == 0:
            return
        nb = counts[:k, None].astype(np.float64)
        if self.c is None:
            self.c = shift[0].copy()
        s1 = np.empty((k + 1, a.shape[1]))
        s2 = np.empty((k + 1, a.shape[1]))
        s1[0], s2[0] = self.s1, self.s2
        delta = shift[:k] - self.c
        np.multiply(nb, delta, out=s1[1:])
        s1[1:] += a[:k]
        np.multiply(nb * delta + 2 * a[:k], delta, out=s2[1:])
        s2[1:] += q[:k]
        # A sequential fold in key order, however the blocks were grouped.
        self.s1 = np.cumsum(s1, axis=0)[-1]
        self.s2 = np.cumsum(s2, axis=0)[-1]
        self.n += int(np.sum(counts[:k]))

    def result(self) -> tuple[float, np.ndarray, np.ndarray]:
        """``(n, mean, M2)``."""
        n = self.n
        mean = self.c + self.s1 / n
        m2 = np.maximum(self.s2 - self.s1 * self.s1 / n, 0.0)
        return float(n), mean, m2


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
) -> GradStats:
    r"""Per-coordinate statistics of ``num_keys`` gradient estimates, without storing them.

    With :math:`\hat g_n` the estimates of :func:`grad_samples` (the same keys),

    .. math::
        \bar g = \frac1N \sum_n \hat g_n, \quad
        s^2 = \frac{1}{N-1} \sum_n (\hat g_n - \bar g)^2, \quad
        \mathrm{SNR} = \frac{|\bar g|}{s}, \quad
        \mathrm{MSE} = \frac1N \sum_n (\hat g_n - g^\star)^2 .

    Each chunk of ``batch_size`` keys is reduced on its device, in blocks of
    64 consecutive keys aligned at multiples of 64, to a shift (the block's
    first estimate), the sum of deviations from it and the sum of their
    squares, each summed by one fixed pairwise tree; the host adds the blocks
    in key order in float64 about the very first estimate. Memory stays flat
    in ``num_keys`` (1e7 keys take the memory of 1e4), and the figures are
    bit-identical for any ``batch_size`` and any number of devices: every
    block is the same operations on the same numbers however the keys are
    chunked (given that the per-key estimates are, see :func:`grad_samples`).
    The estimator is compiled once, then timed: wall time per estimate
    excludes compilation. Efficiency is ``(MSE or variance) x f_evals``.

    Args:
      est: an estimator ``est(key, params, *args) -> scalar``.
      key: a single PRNG key (typed or legacy ``uint32[2]``).
      params: the parameters the gradient is taken with respect to (a pytree).
      *args: further arguments of ``est``, held fixed.
      num_keys: the number of independent estimates (at least 2).
      batch_size: keys per vectorized chunk, rounded up to a multiple of 64;
        default chooses from the size of ``params`` (at most 16384).
      exact: the exact gradient (a pytree like ``params``), for bias and MSE.
      f_evals: evaluations of ``f`` per estimate, e.g.
        ``jaxgrad.ESTIMATORS[name].cost(variable, shape)``.
      devices: the devices to shard over; default ``jax.devices()``.
      progress: called on the host as ``progress(done, num_keys)`` as chunks finish.

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
      https://doi.org/10.1080/00031305.1983.10483115
    """
    fn = "grad_stats"
    checks.check_key(key, fn)
    num_keys = _check_num_keys(num_keys, fn, 2, "A variance needs two estimates.")
    batch_size = _check_batch_size(batch_size, fn)
    mesh = _mesh(devices, fn)
    d = mesh.size
    width = _default_width(params, num_keys) if batch_size is None else batch_size
    width = _ceil_div(min(width, num_keys), _BLOCK) * _BLOCK  # whole reduction blocks
    num_chunks = _ceil_div(num_keys, width)
    treedef = jax.tree.structure(params)
    shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]
    size = sum(math.prod(s) for s in shapes)
    # About 20 host round trips (for progress), each device taking `per_device`
    # chunks per round, with at most about 2**22 block figures per round.
    cap = max(1, 2**22 // (d * (width // _BLOCK) * max(size, 1)))
    per_device = max(1, min(_ceil_div(num_chunks, 20 * d), cap))
    per_round = per_device * d

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
        per_device=per_device,
        mesh=mesh,
    )
    args = tuple(args)
    t0 = time.perf_counter()
    # Compile, and run a round whose chunks all lie past the end (skipped).
    jax.block_until_ready(run(key, params, args, np.uint32(num_chunks)))
    compile_time = time.perf_counter() - t0

    moments = _Moments(size)
    t0 = time.perf_counter()
    starts = range(0, num_chunks, per_round)
    pending = run(key, params, args, np.uint32(starts[0]))
    blocks_per_round = per_round * (width // _BLOCK)
    for i, start in enumerate(starts):
        out = pending
        if i + 1 < len(starts):  # dispatch the next round before reading this one
            pending = run(key, params, args, np.uint32(starts[i + 1]))
        shift, a, q = (_to_host(x).astype(np.float64).reshape(-1, size) for x in out)
        first = start * width + _BLOCK * np.arange(blocks_per_round)
        counts = np.clip(num_keys - first, 0, _BLOCK)
        moments.add(counts, shift, a, q)
        if progress is not None:
            progress(moments.n, num_keys)
    elapsed = time.perf_counter() - t0

    n, mean, m2 = moments.result()
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
