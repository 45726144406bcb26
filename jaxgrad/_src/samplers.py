"""Primitive samplers: Gumbel noise, Gumbel-max categorical, pathwise normal.

These are the bottom layer of jaxgrad: everything else (relaxations,
distribution specs, estimators) draws its randomness through them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from jaxgrad._src import checks

Array = jax.Array


def compute_dtype(dtype: DTypeLike) -> jnp.dtype:
    """The dtype noise is drawn and combined in: at least float32.

    bfloat16 and float16 have too few mantissa bits for ``logits + noise`` at
    large logits (the spacing of bfloat16 at 1e4 is 64), so arithmetic happens
    in float32 and only the result is cast back. (Decided by width, not by
    ``jnp.promote_types``, which refuses bfloat16 + float32 under strict dtype
    promotion.)
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize >= 4:
        return dtype
    return jnp.dtype(jnp.float32)


#: Flat draws of 8 or more numbers are made in blocks of this many (see :func:`uniform_open`).
NOISE_BLOCK = 32


def uniform_open(key: ArrayLike, shape: Sequence[int], dtype: DTypeLike) -> Array:
    """Uniform noise on the open interval ``(0, 1)``, drawn flat and reshaped.

    The lower end is the smallest normal number of ``dtype`` so that ``log(u)``
    is finite; ``jax.random.uniform`` already excludes 1.

    Threefry draws of a middling flat size (e.g. 10 numbers) compile about
    twice as slowly on CPU under ``vmap`` as a draw of 32, so sizes from 8 up
    are rounded up to a multiple of :data:`NOISE_BLOCK` and the surplus
    discarded. Smaller draws (the one-coin toys of variance studies) stay
    exact: padding a single number to 32 made a million-key study several
    times slower.

    Under ``rbg`` and ``unsafe_rbg`` keys the flat draw costs nothing either:
    the bits are those of a draw in ``shape`` (row-major), and XLA compiles
    both to the same program (``benchmarks/README.md``, PRNG section).
    """
    dtype = jnp.dtype(dtype)
    size = 1
    for s in shape:
        size *= s
    padded = size if size < 8 else -(-size // NOISE_BLOCK) * NOISE_BLOCK
    u = jax.random.uniform(key, (padded,), dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
    return u[:size].reshape(shape)


def gumbel(
    key: ArrayLike, shape: Sequence[int] | int = (), dtype: DTypeLike = jnp.float32
) -> Array:
    r"""Standard Gumbel noise that is always finite.

    .. math::
        G = -\log(-\log U), \qquad U \sim \mathcal{U}(0, 1),
        \qquad P(G \le g) = \exp(-e^{-g}).

    ``U`` is drawn on the open interval ``(tiny, 1)`` in at least float32, so
    that neither logarithm sees 0 (the naive ``-log(-log(0))`` is the classic
    source of ``inf`` in Gumbel-softmax code), and the result is cast to
    ``dtype``. In float32 the noise lies in about ``[-4.5, 16.7]``.

    Args:
      key: a PRNG key (typed, from ``jax.random.key``, or legacy ``uint32[2]``).
      shape: the output shape, a tuple of non-negative ints; an int ``n``
        means ``(n,)``, as in NumPy and ``jax.random``.
      dtype: a floating dtype (float16, bfloat16, float32, float64).

    Returns:
      An array of ``shape`` and ``dtype`` with i.i.d. standard Gumbel entries.
      It carries no gradient.

    Raises:
      TypeError: if ``dtype`` is not floating, ``shape`` is not an int or a
        tuple of ints, or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys or ``shape`` has a negative
        dimension.

    Example:
      >>> import jax, jaxgrad
      >>> g = jaxgrad.gumbel(jax.random.key(0), (3,))
      >>> g.shape, g.dtype
      ((3,), dtype('float32'))

    References:
      Gumbel, *Statistical theory of extreme values*, 1954.
    """
    checks.check_key(key, "gumbel")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"gumbel: dtype must be a floating dtype, got {jnp.dtype(dtype)}.")
    shape = checks.check_shape(shape, "gumbel")
    u = uniform_open(key, shape, compute_dtype(dtype))
    return (-jnp.log(-jnp.log(u))).astype(dtype)


def categorical(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    axis: int = -1,
    shape: Sequence[int] | int | None = None,
) -> Array:
    r"""Samples category indices by the Gumbel-max trick.

    .. math::
        k = \arg\max_i \; (l_i + G_i), \qquad P(k = i) = \mathrm{softmax}(l)_i.

    Masked categories (``logits = -inf``) are never drawn, as long as at least
    one category of each distribution is finite. The addition happens in at
    least float32, so bfloat16 logits of magnitude 1e4 keep their meaning.

    NaN in, NaN out: an integer cannot be NaN, so a distribution whose logits
    contain a NaN, or are all ``-inf`` (probabilities ``0/0``), gets the
    out-of-range index **-1** on every draw (checked inside ``jit`` too); the
    other distributions of the batch are unaffected. ``jax.nn.one_hot(-1, K)``
    is a zero vector, and ``jaxgrad.dists.categorical`` turns it into a NaN
    sample. Test for it with ``k < 0``; beware that ``x[k]`` with ``k = -1``
    silently picks the last element (use ``jnp.take(x, k, mode="fill")``).

    Args:
      key: a PRNG key.
      logits: unnormalized log-probabilities, floating, finite or ``-inf``,
        with the categories along ``axis``.
      axis: the category axis (static).
      shape: the shape of the result; the batch shape of ``logits``
        (``logits.shape`` without ``axis``) must broadcast to it, e.g.
        ``(n, *batch_shape)`` for ``n`` draws. An int ``n`` means ``(n,)``.
        Defaults to the batch shape.

    Returns:
      An ``int32`` array of ``shape``, with entries in ``[0, K)``, or -1 for an
      invalid distribution (see above). Sampling carries no gradient; use a
      relaxation or an estimator for one.

    Raises:
      TypeError: if ``logits`` is not floating or ``shape`` is not an int or a
        tuple of ints.
      ValueError: if ``axis`` is out of range, ``shape`` has a negative
        dimension or does not fit the batch shape, or ``key`` is a batch.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> k = jaxgrad.categorical(jax.random.key(0), jnp.array([0.0, -jnp.inf, 0.0]))
      >>> bool(k != 1)
      True
      >>> jaxgrad.categorical(jax.random.key(0), jnp.array([[0.0, jnp.nan], [0.0, 1.0]]),
      ...                     shape=(2, 2))[:, 0].tolist()  # the first row has a NaN
      [-1, -1]

    References:
      Gumbel 1954; Maddison, Tarlow & Minka, *A\* Sampling*, NeurIPS 2014.
    """
    fn = "categorical"
    checks.check_key(key, fn)
    logits = jnp.asarray(logits)
    checks.check_floating(logits, fn, "logits")
    axis = checks.check_axis(axis, logits.ndim, fn)
    logits = jnp.moveaxis(logits, axis, -1)
    batch_shape = logits.shape[:-1]
    shape = batch_shape if shape is None else checks.check_shape(shape, fn)
    try:
        out_shape = jnp.broadcast_shapes(shape, batch_shape)
    except ValueError:
        out_shape = None
    if out_shape != shape:
        raise ValueError(
            f"{fn}: shape={shape} does not broadcast with the batch shape of logits "
            f"{batch_shape} (logits.shape without axis {axis}) to an output of that shape; "
            f"pass a shape that ends with the batch shape, e.g. (n, *{batch_shape})."
        )
    dtype = compute_dtype(logits.dtype)
    noise = gumbel(key, shape + logits.shape[-1:], dtype)
    idx = jnp.argmax(logits.astype(dtype) + noise, axis=-1).astype(jnp.int32)
    # NaN in, NaN out: a distribution with a NaN logit, or with every logit -inf
    # (probabilities 0/0), has no valid index; it gets the sentinel -1.
    invalid = jnp.any(jnp.isnan(logits), axis=-1) | jnp.all(jnp.isneginf(logits), axis=-1)
    return jnp.where(invalid, jnp.int32(-1), idx)


_SCALE_HINT = (
    "The standard deviation must be > 0 (a degenerate scale of 0 has no density); "
    "parameterize it as scale = jax.nn.softplus(raw) or jnp.exp(log_scale)."
)


def normal(
    key: ArrayLike,
    loc: ArrayLike,
    scale: ArrayLike,
    *,
    shape: Sequence[int] | int | None = None,
) -> Array:
    r"""A reparameterized Gaussian sample, differentiable in ``loc`` and ``scale``.

    .. math::
        x = \mu + \sigma \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, 1),
        \qquad \frac{\partial x}{\partial \mu} = 1, \quad
        \frac{\partial x}{\partial \sigma} = \varepsilon .

    The gradient is the pathwise (reparameterization) estimator: unbiased, and
    it requires the downstream cost to be differentiable.

    Args:
      key: a PRNG key.
      loc: the mean, floating.
      scale: the standard deviation, floating, positive. A concrete ``scale``
        is checked (``<= 0`` raises; NaN passes: NaN in, NaN out). A traced
        one (under ``jit``, ``grad`` or ``vmap``) cannot be: there a negative
        scale silently gives ``loc + scale * eps`` (the law of
        ``N(loc, scale**2)``, with ``dx/dscale = eps``) and
        ``jaxgrad.dists.normal.log_prob`` is NaN.
      shape: the output shape; ``loc`` and ``scale`` must broadcast to it
        (e.g. ``(n, *loc.shape)`` for ``n`` draws). An int ``n`` means
        ``(n,)``. Defaults to their broadcast shape.

    Returns:
      An array of ``shape`` in the dtype of ``loc``/``scale``.

    Raises:
      TypeError: if ``loc`` or ``scale`` is not floating, or ``shape`` is not
        an int or a tuple of ints.
      ValueError: if a concrete ``scale`` has an entry ``<= 0``, ``loc`` and
        ``scale`` do not broadcast together, ``shape`` has a negative dimension
        or does not broadcast, or ``key`` is a batch.

    Example:
      >>> import jax, jaxgrad
      >>> x = jaxgrad.normal(jax.random.key(0), 1.0, 2.0)
      >>> eps = jax.grad(lambda s: jaxgrad.normal(jax.random.key(0), 1.0, s))(2.0)
      >>> bool(abs(x - (1.0 + 2.0 * eps)) < 1e-5)  # dx/dscale is the noise itself
      True

    References:
      Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014;
      Rezende, Mohamed & Wierstra, ICML 2014.
    """
    fn = "normal"
    checks.check_key(key, fn)
    loc = jnp.asarray(loc)
    scale = jnp.asarray(scale)
    checks.check_floating(loc, fn, "loc")
    checks.check_floating(scale, fn, "scale")
    checks.check_positive(scale, fn, "scale", hint=_SCALE_HINT, nan_ok=True)
    dtype = jnp.result_type(loc, scale)
    try:
        param_shape = jnp.broadcast_shapes(loc.shape, scale.shape)
    except ValueError:
        raise ValueError(
            f"{fn}: loc of shape {loc.shape} and scale of shape {scale.shape} do not "
            f"broadcast together; give them equal shapes, or a scalar for one of them."
        ) from None
    shape = param_shape if shape is None else checks.check_shape(shape, fn)
    try:
        out_shape = jnp.broadcast_shapes(shape, param_shape)
    except ValueError:
        out_shape = None
    if out_shape != shape:
        raise ValueError(
            f"{fn}: shape={shape} does not broadcast with loc/scale of shape {param_shape} "
            f"to an output of that shape; pass a shape that ends with the parameters' "
            f"shape, e.g. shape=(n, *loc.shape)."
        )
    size = 1
    for s in shape:
        size *= s
    eps = jax.random.normal(key, (size,), compute_dtype(dtype)).reshape(shape)
    return loc + scale * eps.astype(dtype)
