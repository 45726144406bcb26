"""Tools to study gradient estimators: many independent estimates, their
statistics against exact answers, exact oracles, and the z-test the test suite
uses.

Estimates are drawn with ``vmap`` over keys in chunks of ``batch_size`` keys
(memory is bounded by one chunk per device) and, when several devices are
present, the chunks are spread over all of them with ``jax.shard_map``. The
``n``-th estimate always uses the key ``jax.random.fold_in(key, n)`` (for the
default threefry implementation this equals ``jax.random.split(key, N)[n]``),
so the numbers do not depend on the chunk size or on the number of devices.
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

#: Names of the Gaussian test functions of Mohamed et al. (2020, sec. 3).
GAUSSIAN_TEST_FUNCTIONS = ("square", "exp", "cos")


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
    num_keys = checks.check_num_samples(num_keys, fn, minimum, why)
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


@functools.partial(jax.jit, static_argnames=("est", "num_keys", "width", "per_device", "mesh"))
def _moments_program(key, params, args, start, *, est, num_keys, width, per_device, mesh):
    """Per-chunk (count, mean, centred sum of squares) for ``per_device`` chunks per device."""
    num_chunks = _ceil_div(num_keys, width)
    acc = _acc_dtype()
    size = sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params))

    def one_chunk(c, key, params, args):
        def compute(c):
            first = c * np.uint32(width)
            g = _chunk_grads(est, key, params, args, first, width)
            flat = jnp.concatenate(
                [x.reshape(width, -1).astype(acc) for x in jax.tree.leaves(g)], axis=1
            )
            valid = (first + jnp.arange(width, dtype=jnp.uint32)) < np.uint32(num_keys)
            n = jnp.sum(valid).astype(acc)
            # Two passes, shifted by the first estimate: exact for constant estimates.
            shift = flat[0]
            mean = shift + jnp.sum(jnp.where(valid[:, None], flat - shift, 0), axis=0) / n
            dev = jnp.where(valid[:, None], flat - mean, 0)
            return n, mean, jnp.sum(dev * dev, axis=0)

        def skip(c):
            del c
            return jnp.zeros((), acc), jnp.zeros((size,), acc), jnp.zeros((size,), acc)

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


def _merge(state, n, mean, m2):
    """Chan et al.'s pairwise update of (count, mean, M2), in float64."""
    n0, mean0, m20 = state
    if n == 0:
        return state
    if n0 == 0:
        return n, mean, m2
    tot = n0 + n
    delta = mean - mean0
    return tot, mean0 + delta * (n / tot), m20 + m2 + delta * delta * (n0 * n / tot)


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

    Each chunk of ``batch_size`` keys is reduced on its device to a count, a
    mean and a centred sum of squares; the host merges the chunks in order
    with Chan et al.'s update in float64, so memory stays flat in ``num_keys``
    (1e7 keys take the memory of 1e4) and the figures are identical for any
    number of devices. The estimator is compiled once, then timed: wall time per
    estimate excludes compilation. Efficiency is ``(MSE or variance) x f_evals``.

    Args:
      est: an estimator ``est(key, params, *args) -> scalar``.
      key: a single PRNG key (typed or legacy ``uint32[2]``).
      params: the parameters the gradient is taken with respect to (a pytree).
      *args: further arguments of ``est``, held fixed.
      num_keys: the number of independent estimates (at least 2).
      batch_size: keys per vectorized chunk; default chooses from the size of
        ``params`` (at most 16384).
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
      1983. https://doi.org/10.1080/00031305.1983.10483115
    """
    fn = "grad_stats"
    checks.check_key(key, fn)
    num_keys = _check_num_keys(num_keys, fn, 2, "A variance needs two estimates.")
    batch_size = _check_batch_size(batch_size, fn)
    mesh = _mesh(devices, fn)
    d = mesh.size
    width = _default_width(params, num_keys) if batch_size is None else batch_size
    width = max(min(width, num_keys), 2)
    num_chunks = _ceil_div(num_keys, width)
    # About 20 host round trips (for progress and bounded output), each
    # device taking `per_device` chunks per round.
    per_device = max(1, _ceil_div(num_chunks, 20 * d))
    per_round = per_device * d
    treedef = jax.tree.structure(params)
    shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]
    size = sum(math.prod(s) for s in shapes)

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

    state = (0.0, np.zeros(size), np.zeros(size))
    t0 = time.perf_counter()
    starts = range(0, num_chunks, per_round)
    pending = run(key, params, args, np.uint32(starts[0]))
    for i, _ in enumerate(starts):
        out = pending
        if i + 1 < len(starts):  # dispatch the next round before reading this one
            pending = run(key, params, args, np.uint32(starts[i + 1]))
        n, mean, m2 = (_to_host(x).astype(np.float64) for x in out)
        for j in range(n.shape[0]):
            state = _merge(state, float(n[j]), mean[j], m2[j])
        if progress is not None:
            progress(int(state[0]), num_keys)
    elapsed = time.perf_counter() - t0

    n, mean, m2 = state
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
    )


# ---------------------------------------------------------------------------
# Exact oracles.


def exact_grad(f: Callable[..., Array], params: Any, *args: Any, dist: Any) -> Any:
    r"""The exact gradient of :math:`E_{x \sim p_\theta}[f(x, \ldots)]`, by enumeration.

    .. math::
        \nabla_\theta \sum_{x \in \mathcal{X}} p_\theta(x) f(x, \ldots)
        = \sum_{x} p_\theta(x) \nabla_\theta \log p_\theta(x) f(x, \ldots),

    over the joint support ``dist.support(params)`` (``2^D`` outcomes for ``D``
    coins, ``K^D`` for ``D`` categoricals with ``K`` classes), so only for small
    problems. ``f`` is evaluated at every outcome but never differentiated.

    Args:
      f: the cost for one sample, returning a scalar.
      params: the distribution's parameters (e.g. logits).
      *args: further arguments of ``f``.
      dist: a discrete spec with ``support`` and ``log_prob``
        (``jaxgrad.dists.bernoulli``, ``jaxgrad.dists.categorical``).

    Returns:
      A pytree like ``params``.

    Raises:
      TypeError: if ``dist`` has no ``support``.
      ValueError: if the support is larger than ``jaxgrad.dists.MAX_SUPPORT_SIZE``.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> g = jaxgrad.diagnostics.exact_grad(f, jnp.zeros(1), dist=jaxgrad.dists.bernoulli)
      >>> float(g[0])  # p (1 - p) (1 - 2 t) at p = 1/2
      0.025

    References:
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020. https://jmlr.org/papers/v21/19-346.html
    """
    if not callable(getattr(dist, "support", None)):
        raise TypeError(
            f"exact_grad: dist must be a discrete spec with a support method (e.g. "
            f"jaxgrad.dists.bernoulli), got {type(dist).__name__}."
        )
    xs = dist.support(params)
    out = jax.eval_shape(lambda x: f(x, *args), jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
    checks.check_scalar_output(getattr(out, "shape", ()), "exact_grad")

    @jax.jit
    def grad(params, xs, args):
        fx = jax.lax.stop_gradient(jax.vmap(lambda x: f(x, *args))(xs))

        def expectation(p):
            w = jnp.exp(jax.vmap(lambda x: dist.log_prob(p, x))(xs))
            return jnp.sum(w * fx.astype(w.dtype))

        return jax.grad(expectation)(params)

    return grad(params, xs, args)


def _check_test_function(function: str, fn: str) -> None:
    if function not in GAUSSIAN_TEST_FUNCTIONS:
        raise ValueError(
            f"{fn}: function must be one of {', '.join(GAUSSIAN_TEST_FUNCTIONS)}, got {function!r}."
        )


def gaussian_test_function(function: str, k: float) -> Callable[[Array], Array]:
    r"""A test function of Mohamed et al. (2020, sec. 3), summed over coordinates.

    .. math::
        f(x) = \sum_i (x_i - k)^2, \qquad \sum_i e^{-k x_i^2}, \qquad
        \sum_i \cos(k x_i)

    for ``function`` = ``"square"``, ``"exp"``, ``"cos"``.

    Args:
      function: ``"square"``, ``"exp"`` or ``"cos"``.
      k: the function's constant.

    Returns:
      ``f(x) -> scalar`` for one sample ``x``.

    Raises:
      ValueError: for an unknown ``function``.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> f = jaxgrad.diagnostics.gaussian_test_function("square", 1.0)
      >>> float(f(jnp.array([0.0, 3.0])))
      5.0
    """
    _check_test_function(function, "gaussian_test_function")
    if function == "square":
        return lambda x: jnp.sum((x - k) ** 2)
    if function == "exp":
        return lambda x: jnp.sum(jnp.exp(-k * x * x))
    return lambda x: jnp.sum(jnp.cos(k * x))


def gaussian_expectation(function: str, loc: Any, scale: Any, *, k: float) -> Array:
    r"""Closed form of :math:`E_{x \sim N(\mu, \sigma^2)} f(x)` for the test functions.

    .. math::
        E (x - k)^2 = (\mu - k)^2 + \sigma^2, \quad
        E e^{-k x^2} = \frac{e^{-k \mu^2 / a}}{\sqrt{a}}, \; a = 1 + 2 k \sigma^2, \quad
        E \cos(k x) = \cos(k \mu) e^{-k^2 \sigma^2 / 2},

    summed over coordinates (``exp`` needs ``1 + 2 k sigma^2 > 0``).

    Args:
      function: ``"square"``, ``"exp"`` or ``"cos"``.
      loc: the means ``mu``.
      scale: the standard deviations ``sigma``.
      k: the function's constant.

    Returns:
      The expectation, a scalar.

    Raises:
      ValueError: for an unknown ``function``.

    Example:
      >>> import jaxgrad
      >>> float(jaxgrad.diagnostics.gaussian_expectation("square", 0.0, 1.0, k=1.0))
      2.0
    """
    _check_test_function(function, "gaussian_expectation")
    mu, s = jnp.asarray(loc), jnp.asarray(scale)
    if function == "square":
        e = (mu - k) ** 2 + s * s
    elif function == "exp":
        a = 1 + 2 * k * s * s
        e = jnp.exp(-k * mu * mu / a) / jnp.sqrt(a)
    else:
        e = jnp.cos(k * mu) * jnp.exp(-0.5 * k * k * s * s)
    return jnp.sum(e)


def gaussian_exact_grad(function: str, loc: Any, scale: Any, *, k: float) -> tuple[Array, Array]:
    r"""Closed-form gradient of :math:`E_{N(\mu, \sigma^2)} f` in :math:`(\mu, \sigma)`.

    Differentiating :func:`gaussian_expectation` (with ``a = 1 + 2 k sigma^2``
    and ``E`` the expectation of one coordinate):

    .. math::
        (x - k)^2 &: \quad \partial_\mu = 2(\mu - k), \quad \partial_\sigma = 2\sigma, \\
        e^{-k x^2} &: \quad \partial_\mu = -\frac{2 k \mu}{a} E, \quad
        \partial_\sigma = 4 k \sigma \Big(\frac{k \mu^2}{a^2} - \frac{1}{2a}\Big) E, \\
        \cos(k x) &: \quad \partial_\mu = -k \sin(k\mu) e^{-k^2\sigma^2/2}, \quad
        \partial_\sigma = -k^2 \sigma \cos(k\mu) e^{-k^2\sigma^2/2} .

    Args:
      function: ``"square"``, ``"exp"`` or ``"cos"``.
      loc: the means ``mu``.
      scale: the standard deviations ``sigma``.
      k: the function's constant.

    Returns:
      ``(d/dloc, d/dscale)``, each of the broadcast shape of ``loc`` and ``scale``.

    Raises:
      ValueError: for an unknown ``function``.

    Example:
      >>> import jaxgrad
      >>> g = jaxgrad.diagnostics.gaussian_exact_grad("cos", 0.0, 1.0, k=1.0)
      >>> float(g[0]), round(float(g[1]), 4)  # -exp(-1/2)
      (-0.0, -0.6065)

    References:
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020, sec. 3. https://jmlr.org/papers/v21/19-346.html
    """
    _check_test_function(function, "gaussian_exact_grad")
    mu, s = jnp.broadcast_arrays(jnp.asarray(loc), jnp.asarray(scale))
    if function == "square":
        return 2 * (mu - k), 2 * s
    if function == "exp":
        a = 1 + 2 * k * s * s
        e = jnp.exp(-k * mu * mu / a) / jnp.sqrt(a)
        return -2 * k * mu / a * e, 4 * k * s * (k * mu * mu / (a * a) - 0.5 / a) * e
    damp = jnp.exp(-0.5 * k * k * s * s)
    return -k * jnp.sin(k * mu) * damp, -k * k * s * jnp.cos(k * mu) * damp


# ---------------------------------------------------------------------------
# The z-test.


def assert_unbiased(samples: Any, exact: Any, *, z: float = 5.0, atol: float = 1e-6) -> Any:
    r"""Asserts that i.i.d. estimates are consistent with an exact value, per coordinate.

    For each coordinate the test statistic is

    .. math::
        z_i = \frac{|\bar g_i - g^\star_i|}{\hat\sigma_i / \sqrt{N}},

    with the estimator's own sample standard deviation ``sigma_i``; it fails
    when ``|mean - exact| > z * stderr + atol`` anywhere. ``atol`` only covers
    floating-point round-off for zero-variance coordinates. With ``z = 5`` a
    correct estimator fails with probability about ``6e-7`` per coordinate,
    while a biased one is rejected once ``N`` is large enough that its bias
    exceeds five standard errors.

    Args:
      samples: a pytree of arrays with a leading sample axis of size ``N``.
      exact: a pytree of the same structure (without the sample axis).
      z: the threshold in standard errors.
      atol: absolute slack for round-off.

    Returns:
      The pytree of z-scores, if the assertion passes.

    Raises:
      AssertionError: naming the worst coordinate, its mean, exact value,
        standard error and z-score.

    Example:
      >>> import numpy as np, jaxgrad
      >>> x = np.random.default_rng(0).normal(1.0, 1.0, size=10_000)
      >>> _ = jaxgrad.diagnostics.assert_unbiased(x, 1.0)
    """

    def one(s, e):
        s = np.asarray(s, dtype=np.float64)
        e = np.broadcast_to(np.asarray(e, dtype=np.float64), s.shape[1:])
        n = s.shape[0]
        mean = s.mean(axis=0)
        se = s.std(axis=0, ddof=1) / np.sqrt(n)
        err = np.abs(mean - e)
        zs = np.where(se > 0, err / np.where(se > 0, se, 1.0), np.where(err > atol, np.inf, 0.0))
        bad = err > z * se + atol
        if np.any(bad) or not np.all(np.isfinite(mean)):
            i = np.unravel_index(np.argmax(np.where(np.isfinite(zs), zs, np.inf)), zs.shape)
            raise AssertionError(
                f"estimates are biased at coordinate {tuple(int(j) for j in i)}: "
                f"mean {mean[i]:.6g}, exact {e[i]:.6g}, stderr {se[i]:.3g}, "
                f"z = {zs[i]:.2f} > {z} (N = {n}, {int(np.sum(bad))} of {bad.size} "
                f"coordinates fail)."
            )
        return zs

    return jax.tree.map(one, samples, exact)
