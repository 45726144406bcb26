r"""Relaxations and straight-through rules for discrete samples.

Every function here returns a *sample* whose derivative, under ``jax.grad``
inside any loss, is a named gradient estimator: the Concrete / Gumbel-softmax
relaxation, straight-through (Bengio et al. 2013), straight-through
Gumbel-softmax, Gumbel-Rao (Paulus et al. 2021), ReinMax (Liu et al. 2023),
the gapped straight-through estimator (Fan et al. 2022) and straight-through
Gumbel-softmax with decoupled forward and backward temperatures (Shah et al.
2024).
All of them are *biased* estimators of the gradient of ``E[f(sample)]``
(relaxed samples are not discrete samples; straight-through rules replace a
zero or undefined derivative by a surrogate's); the unbiased alternatives are
the estimator transformations (``jaxgrad.score_function``, ``jaxgrad.disarm``,
...).

Numerics
--------
Noise is drawn and combined with the logits in at least float32
(``samplers.compute_dtype``); the output is cast back to the dtype of
``logits``. The Gumbel-softmax is ``exp(x - m) / sum(exp(x - m))`` with
``x = (l + G) / tau`` and ``m`` the exact row maximum of ``x`` (one ``exp`` per
element, no ``log``; the largest term is exactly 1), so temperatures from 1e-4
to 1e4 and logits up to ``+-1e4`` give finite values and gradients, and a
logit of ``-inf`` masks its category: it is never sampled, its relaxed value
is exactly 0, and its gradient (also with respect to the temperature) is 0
rather than NaN. The masking costs no pass of its own: the relaxations write
out their JVPs, in which a masked entry's ``x - m`` (or, for the binary
Concrete, ``x``) is clamped at ``+-2048``, beyond which the derivative it
multiplies is exactly 0 in float32 and float64.
Logits must be finite or ``-inf``, with at least one finite logit per
distribution (``relaxed_bernoulli`` and ``straight_through_bernoulli`` also
accept ``+inf``).

Hard samples are exact: the forward value of every straight-through rule is
*exactly* the hard sample (a one-hot vector, or 0/1), not ``hard + soft -
stop_gradient(soft)`` rounded in floating point. :func:`straight_through`
computes ``value + (surrogate - stop_gradient(surrogate))``, whose bracket is
exactly zero for a finite surrogate.

Subgradient conventions at kinks
--------------------------------
JAX differentiates each primitive by a fixed rule, and the rules at the kink of
piecewise-linear functions differ (checked for this JAX version by
``tests/test_relaxations.py::test_documented_subgradient_conventions``):

================================  ==================  ===========================
expression                        derivative at kink  why
================================  ==================  ===========================
``jax.nn.relu(x)`` at 0           0                   custom JVP, ``x > 0``
``jnp.maximum(x, 0.)`` at 0       0.5                 ties split the gradient
``jnp.minimum(x, 0.)`` at 0       0.5                 ties split the gradient
``jnp.clip(x, 0., 1.)`` at 0, 1   0.5                 built from max and min
``jnp.abs(x)`` at 0               1                   ``x >= 0`` takes the + side
``jnp.where(x > 0, x, 0.)`` at 0  0                   the branch not taken
``jax.nn.hard_tanh(x)`` at +-1    1                   ``|x| <= 1`` inclusive
``jnp.sign``, ``jnp.round``       0 everywhere        piecewise constant
================================  ==================  ===========================

jaxgrad's own rules are explicit and do not depend on these:

* :func:`round_ste` has derivative exactly 1 everywhere (identity STE).
* :func:`sign_ste` has the derivative of ``hard_tanh``: 1 on the closed
  interval ``[-1, 1]`` (so 1 at 0 and at ``+-1``) and 0 outside (the
  saturating STE of Hubara et al. 2016).
* Hard samples (``hard=True``, ``straight_through_*``, ``gumbel_rao``,
  ``reinmax``, ``gapped_straight_through``, ``decoupled_st_gumbel_softmax``)
  have the gradient of their surrogate only; the hard value itself
  contributes nothing (``argmax`` and comparisons have derivative 0).

References:
  Jang, Gu & Poole, *Categorical Reparameterization with Gumbel-Softmax*,
  ICLR 2017. https://arxiv.org/abs/1611.01144
  Maddison, Mnih & Teh, *The Concrete Distribution*, ICLR 2017.
  https://arxiv.org/abs/1611.00712
  Bengio, Leonard & Courville, *Estimating or Propagating Gradients Through
  Stochastic Neurons for Conditional Computation*, 2013.
  https://arxiv.org/abs/1308.3432
  Paulus, Maddison & Krause, *Rao-Blackwellizing the Straight-Through
  Gumbel-Softmax Gradient Estimator*, ICLR 2021. https://arxiv.org/abs/2010.04838
  Liu et al., *Bridging Discrete and Backpropagation: Straight-Through and
  Beyond*, NeurIPS 2023. https://arxiv.org/abs/2304.08612
  Fan, Chi, Rudnicky & Ramadge, *Training Discrete Deep Generative Models via
  Gapped Straight-Through Estimator*, ICML 2022. https://arxiv.org/abs/2206.07235
  Shah, Yan, Mozer & Liu, *Improving Discrete Optimisation Via Decoupled
  Straight-Through Gumbel-Softmax*, 2024. https://arxiv.org/abs/2410.13331
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxgrad._src import checks, samplers, sharding

Array = jax.Array


# --------------------------------------------------------------------------- helpers


def _logits(logits: Any, fn: str) -> Array:
    logits = jnp.asarray(logits)
    checks.check_floating(logits, fn, "logits")
    return logits


_TEMPERATURE_HINT = "Use a small positive value (e.g. 1e-3) for a nearly hard sample."

#: ``_categorical_args``'s temperature for the rules that have none.
_NO_TEMPERATURE = object()


def _temperature(
    temperature: Any,
    shape: tuple[int, ...],
    fn: str,
    axis: int | None,
    *,
    name: str = "temperature",
    hint: str = _TEMPERATURE_HINT,
) -> Array:
    """Validates ``temperature`` (positive when concrete, broadcastable) as an array.

    Returns it in its own dtype, broadcast and moved so that it lines up with
    logits whose category ``axis`` was moved last (``axis=None``: no move).
    ``name`` and ``hint`` go into the error messages (other positive,
    broadcastable arguments such as a forward temperature or a gap use it too).
    """
    checks.check_positive(temperature, fn, name, hint=hint)
    t = jnp.asarray(temperature)
    if not (jnp.issubdtype(t.dtype, jnp.floating) or jnp.issubdtype(t.dtype, jnp.integer)):
        raise TypeError(f"{fn}: {name} must be a positive real number, got dtype {t.dtype}.")
    try:
        ok = jnp.broadcast_shapes(t.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: {name} of shape {t.shape} does not broadcast to logits of shape "
            f"{tuple(shape)}; pass a scalar or an array broadcastable to logits "
            f"(keep a size-1 category axis, e.g. shape (B, 1) for logits (B, K))."
        )
    if axis is not None and t.ndim > 0 and axis != len(shape) - 1:
        t = jnp.moveaxis(jnp.broadcast_to(t, shape), axis, -1)
    return t


def _categorical_args(
    key: Any, logits: Any, temperature: Any, axis: int, fn: str
) -> tuple[Array, Array | None, int]:
    """Common validation; returns logits with the category axis last, temperature, axis."""
    checks.check_key(key, fn)
    logits = _logits(logits, fn)
    axis = checks.check_axis(axis, logits.ndim, fn)
    if temperature is _NO_TEMPERATURE:
        t = None
    else:
        t = _temperature(temperature, logits.shape, fn, axis)
    return jnp.moveaxis(logits, axis, -1), t, axis


#: Entries more than this far below the row maximum (in units of ``z / t``)
#: have ``exp`` exactly 0 in float32 and float64; see :func:`_shifted_softmax`.
_UNDERFLOW = 2048.0


def _row_constant(t: Array) -> bool:
    """Whether ``t`` (lined up with logits whose category axis is last) is constant per row."""
    return t.ndim == 0 or t.shape[-1] == 1


@jax.custom_jvp
def _shifted_softmax(z: Array, t: Array, m: Array) -> Array:
    """``softmax(z / t)`` along the last axis, given ``m = max(z / t)`` per row.

    One ``exp`` per element and one division per element, no ``log``: the
    shift ``m`` makes the largest term exactly ``exp(0) = 1``, so nothing
    overflows and the sum is at least 1. ``-inf`` entries of ``z`` give
    exactly 0. ``m`` must carry no gradient (it is a shift the value does not
    depend on).

    The JVP is written out (the softmax Jacobian applied to ``dz / t - x dt / t``,
    ``x = z / t``) so that masked entries give no ``0 * inf``: with ``t``
    constant per row, ``x`` may be replaced by ``x - m`` (the shift cancels,
    since the ``y`` sum to one), and ``x - m`` is clamped at ``-2048``, below
    which ``y`` is exactly 0 in float32 and float64, so the clamp changes
    nothing but turns ``-inf`` into a finite number. This keeps the masking
    inside the fusions that compute the gradient, without a ``where`` over
    the input (an extra full pass on CPU). Otherwise (a temperature per
    category) the masked entries of ``x`` are replaced by 0.
    """
    e = jnp.exp(z / t - m)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _shifted_softmax_jvp(primals, tangents):
    z, t, m = primals
    dz, dt, _ = tangents
    x = z / t
    e = jnp.exp(x - m)
    y = e / jnp.sum(e, axis=-1, keepdims=True)
    v = None
    if not isinstance(dz, SymbolicZero):
        v = dz / t
    if not isinstance(dt, SymbolicZero):
        if _row_constant(t):
            d = jnp.maximum(x - m, jnp.asarray(-_UNDERFLOW, x.dtype))
        else:
            d = jnp.where(jnp.isneginf(z), jnp.zeros_like(x), x)
        w = -(d * dt) / t
        v = w if v is None else v + w
    if v is None:
        return y, jnp.zeros_like(y)
    return y, y * (v - jnp.sum(y * v, axis=-1, keepdims=True))


_shifted_softmax.defjvp(_shifted_softmax_jvp, symbolic_zeros=True)


def _tempered_softmax(z: Array, t: Array) -> Array:
    """``softmax(z / t)`` along the last axis; ``-inf`` entries give value and gradient 0."""
    sg = jax.lax.stop_gradient
    t = t.astype(z.dtype)
    return _shifted_softmax(z, t, jnp.max(sg(z) / sg(t), axis=-1, keepdims=True))


@jax.custom_jvp
def _tempered_sigmoid(z: Array, t: Array) -> Array:
    """``sigmoid(z / t)``; ``+-inf`` entries of ``z`` give value 1 / 0 and gradient 0.

    The JVP is written out, ``y (1 - y) (dz / t - x dt / t)`` with ``x = z / t``
    clamped to ``[-2048, 2048]`` in the temperature term: beyond that range
    ``y (1 - y)`` is exactly 0 in float32 and float64, so the clamp changes
    nothing but keeps ``0 * inf`` (NaN) out of the gradient at ``z = +-inf``,
    inside the fusion that computes the gradient (no ``where`` pass).
    """
    return jax.nn.sigmoid(z / t)


def _tempered_sigmoid_jvp(primals, tangents):
    z, t = primals
    dz, dt = tangents
    x = z / t
    y = jax.nn.sigmoid(x)
    v = None
    if not isinstance(dz, SymbolicZero):
        v = dz / t
    if not isinstance(dt, SymbolicZero):
        # sign * min(abs) rather than a clamp: XLA's CPU library fusions take
        # abs, sign and min but not clamp, which would cost a pass of its own.
        c = jnp.sign(x) * jnp.minimum(jnp.abs(x), jnp.asarray(_UNDERFLOW, x.dtype))
        w = -(c * dt) / t
        v = w if v is None else v + w
    if v is None:
        return y, jnp.zeros_like(y)
    return y, y * (1 - y) * v


_tempered_sigmoid.defjvp(_tempered_sigmoid_jvp, symbolic_zeros=True)


def _zero_masked(logits: Array) -> Array:
    """Replaces ``-inf`` logits by 0 (their gradient is 0 under every rule here)."""
    return jnp.where(jnp.isneginf(logits), jnp.zeros_like(logits), logits)


def _st(value: Array, surrogate: Array) -> Array:
    """Value of ``value`` exactly, gradient of ``surrogate`` (no validation)."""
    surrogate = surrogate - jax.lax.stop_gradient(surrogate)  # exactly 0 when finite
    return jax.lax.stop_gradient(value) + surrogate.astype(value.dtype)


def _gumbel_max(key: Array, logits_last: Array) -> tuple[Array, Array]:
    """``(l + G, argmax)`` in the compute dtype; the same noise as ``samplers.categorical``."""
    dtype = samplers.compute_dtype(logits_last.dtype)
    z = logits_last.astype(dtype) + samplers.gumbel(key, logits_last.shape, dtype)
    return z, jnp.argmax(z, axis=-1)


# --------------------------------------------------------------------------- straight-through


def straight_through(value: ArrayLike, surrogate: ArrayLike) -> Array:
    r"""Returns ``value`` with the gradient of ``surrogate``: the generic straight-through rule.

    .. math::
        \mathrm{st}(v, s) = \bot(v) + \big(s - \bot(s)\big),
        \qquad \mathrm{st}(v, s) = v, \qquad
        \frac{\partial\, \mathrm{st}}{\partial \theta} = \frac{\partial s}{\partial \theta},

    where :math:`\bot` is ``jax.lax.stop_gradient``. The bracket is computed
    first, so it is exactly zero for a finite surrogate and the forward value is
    *exactly* ``value`` (the textbook ``v + s - stop_gradient(s)`` rounds). Any
    gradient ``value`` carries itself is dropped. Built from stop-gradients
    only, it works in forward and reverse mode, under ``vmap`` and at any
    derivative order. Biased as a gradient estimator in general (it is the
    gradient of a different function).

    Args:
      value: the forward value, floating.
      surrogate: floating, of the same shape as ``value``, finite; its
        derivative is passed through. It may have another floating dtype.

    Returns:
      An array equal to ``value``, in the dtype of ``value``, whose derivative
      is that of ``surrogate``.

    Raises:
      TypeError: if ``value`` or ``surrogate`` is not floating.
      ValueError: if their shapes differ.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda x: jaxgrad.straight_through(jnp.round(x), x ** 2)
      >>> float(f(1.3)), float(jax.grad(f)(1.3))
      (1.0, 2.6)

    References:
      Bengio, Leonard & Courville, 2013. https://arxiv.org/abs/1308.3432
    """
    fn = "straight_through"
    value = jnp.asarray(value)
    surrogate = jnp.asarray(surrogate)
    checks.check_floating(value, fn, "value")
    checks.check_floating(surrogate, fn, "surrogate")
    if value.shape != surrogate.shape:
        raise ValueError(
            f"{fn}: surrogate must have the shape of value, got surrogate {surrogate.shape} "
            f"and value {value.shape}. Broadcast it explicitly (jnp.broadcast_to) if intended."
        )
    return _st(value, surrogate)


def round_ste(x: ArrayLike) -> Array:
    r"""Rounds to the nearest integer, with the identity as its derivative.

    .. math::
        y = \mathrm{round}(x), \qquad \frac{\partial y}{\partial x} := 1 .

    ``jnp.round`` rounds half to even and has derivative 0 everywhere; this
    straight-through estimator (STE) passes the cotangent unchanged, as used for
    quantization-aware training. Biased.

    Args:
      x: a floating array.

    Returns:
      ``jnp.round(x)`` in the dtype of ``x``, with derivative exactly 1.

    Raises:
      TypeError: if ``x`` is not floating.

    Example:
      >>> import jax, jaxgrad
      >>> float(jaxgrad.round_ste(2.7)), float(jax.grad(jaxgrad.round_ste)(2.7))
      (3.0, 1.0)

    References:
      Bengio, Leonard & Courville, 2013. https://arxiv.org/abs/1308.3432
    """
    x = jnp.asarray(x)
    checks.check_floating(x, "round_ste", "x")
    return _st(jnp.round(x), x)


def sign_ste(x: ArrayLike) -> Array:
    r"""``jnp.sign(x)``, with the derivative of ``hard_tanh`` (the saturating STE).

    .. math::
        y = \mathrm{sign}(x) \in \{-1, 0, 1\}, \qquad
        \frac{\partial y}{\partial x} := \mathbb{1}[\,|x| \le 1\,] .

    The derivative is 1 on the closed interval ``[-1, 1]`` (including 0 and
    ``+-1``) and 0 outside, which cancels the gradient once a pre-activation
    saturates (Hubara et al. 2016). ``sign(0)`` is 0, as in ``jnp.sign``. Biased.

    Args:
      x: a floating array.

    Returns:
      ``jnp.sign(x)`` in the dtype of ``x``, with the derivative above.

    Raises:
      TypeError: if ``x`` is not floating.

    Example:
      >>> import jax, jaxgrad
      >>> g = jax.grad(jaxgrad.sign_ste)
      >>> float(jaxgrad.sign_ste(-0.3)), float(g(-0.3)), float(g(2.0))
      (-1.0, 1.0, 0.0)

    References:
      Hubara et al., *Binarized Neural Networks*, NeurIPS 2016.
      https://arxiv.org/abs/1602.02830
    """
    x = jnp.asarray(x)
    checks.check_floating(x, "sign_ste", "x")
    return _st(jnp.sign(x), jax.nn.hard_tanh(x))


def straight_through_categorical(key: ArrayLike, logits: ArrayLike, *, axis: int = -1) -> Array:
    r"""A one-hot categorical sample with the gradient of ``softmax(logits)``.

    .. math::
        D = \mathrm{onehot}\big(\arg\max_i (l_i + G_i)\big) \sim \mathrm{softmax}(l),
        \qquad \frac{\partial D}{\partial l} := \frac{\partial\, \mathrm{softmax}(l)}{\partial l}
        = \mathrm{diag}(\pi) - \pi \pi^\top .

    The straight-through estimator of Bengio et al. (2013): forward the exact
    hard sample, backward the Jacobian of its mean ``pi = softmax(l)``. For a
    cost linear in ``D`` the gradient is exact; otherwise it is biased (it
    evaluates the cost's gradient at the sample, not along a path). Requires a
    differentiable downstream cost. The sample equals
    ``one_hot(jaxgrad.categorical(key, logits, axis=axis))``.

    Args:
      key: a PRNG key (typed or legacy ``uint32[2]``).
      logits: unnormalized log-probabilities, floating, finite or ``-inf``
        (masked), categories along ``axis``.
      axis: the category axis (static).

    Returns:
      A one-hot array of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys or ``axis`` is out of range.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> logits, w = jnp.array([1.0, 0.0, -1.0]), jnp.array([1.0, 2.0, 3.0])
      >>> f = lambda l: w @ jaxgrad.straight_through_categorical(jax.random.key(0), l)
      >>> g_mean = jax.grad(lambda l: w @ jax.nn.softmax(l))(logits)
      >>> bool(jnp.allclose(jax.grad(f)(logits), g_mean))
      True

    References:
      Bengio, Leonard & Courville, 2013. https://arxiv.org/abs/1308.3432
    """
    fn = "straight_through_categorical"
    logits_last, _, axis = _categorical_args(key, logits, _NO_TEMPERATURE, axis, fn)
    _, idx = _gumbel_max(key, logits_last)
    dtype = samplers.compute_dtype(logits_last.dtype)
    hard = jax.nn.one_hot(idx, logits_last.shape[-1], dtype=dtype)
    soft = jax.nn.softmax(logits_last.astype(dtype), axis=-1)
    return jnp.moveaxis(_st(hard, soft).astype(logits_last.dtype), -1, axis)


def straight_through_bernoulli(key: ArrayLike, logits: ArrayLike) -> Array:
    r"""A ``{0, 1}`` Bernoulli sample with the gradient of ``sigmoid(logits)``.

    .. math::
        b = \mathbb{1}[U < \sigma(l)], \quad U \sim \mathcal{U}(0, 1), \qquad
        \frac{\partial b}{\partial l} := \sigma(l)\,(1 - \sigma(l)) .

    The straight-through estimator (Bengio et al. 2013) for independent coins,
    one per element of ``logits``: exact hard forward value, the derivative of
    the mean backward. Biased except for costs linear in ``b``. Requires a
    differentiable downstream cost. The sample equals
    ``jaxgrad.dists.bernoulli.sample(key, logits)``.

    Args:
      key: a PRNG key.
      logits: floating, any shape; ``+-inf`` gives a certain 1 / 0.

    Returns:
      A ``{0., 1.}`` array of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda l: jaxgrad.straight_through_bernoulli(jax.random.key(0), l).sum()
      >>> jax.grad(f)(jnp.zeros(2)).tolist()  # sigmoid'(0) = 1/4
      [0.25, 0.25]

    References:
      Bengio, Leonard & Courville, 2013. https://arxiv.org/abs/1308.3432
    """
    fn = "straight_through_bernoulli"
    checks.check_key(key, fn)
    logits = _logits(logits, fn)
    dtype = samplers.compute_dtype(logits.dtype)
    lc = logits.astype(dtype)
    u = samplers.uniform_open(key, logits.shape, dtype)
    soft = jax.nn.sigmoid(lc)
    hard = (u < soft).astype(dtype)
    return _st(hard, soft).astype(logits.dtype)


# --------------------------------------------------------------------------- relaxations


def gumbel_softmax(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    hard: bool = False,
    axis: int = -1,
) -> Array:
    r"""A Gumbel-softmax (Concrete) relaxed one-hot sample; ``hard=True`` for straight-through.

    .. math::
        y = \mathrm{softmax}\!\left(\frac{l + G}{\tau}\right)
          = \frac{e^{x - m}}{\sum_j e^{x_j - m}}, \quad x = \frac{l + G}{\tau},
        \quad m = \max_j x_j, \qquad G_i \sim \mathrm{Gumbel}(0, 1) \text{ i.i.d.}

    As :math:`\tau \to 0` the sample tends to the one-hot
    :math:`\mathrm{onehot}(\arg\max_i (l_i + G_i))`, which is distributed as
    ``softmax(l)`` exactly (Gumbel-max). The relaxation is differentiable in
    ``l`` (pathwise, noise held fixed) and in ``tau``. With ``hard=True`` the
    value is *exactly* that one-hot (the same noise), and the derivative is the
    derivative of the relaxed ``y``: the straight-through Gumbel-softmax
    estimator.

    As a gradient estimator for ``E[f(D)]`` over one-hot ``D`` this is *biased*
    (less so as ``tau`` decreases, with higher variance); it requires ``f`` to
    be differentiable and defined on the simplex (``hard=False``) or at one-hot
    points (``hard=True``). One sample, no extra cost evaluations.

    Computed in at least float32 with the exact row maximum ``m`` as the
    shift, so temperatures from 1e-4 to 1e4 and logits up to ``+-1e4`` give
    finite values and gradients, and ``-inf`` logits (masked categories) give
    exactly 0 with zero gradient (also with respect to ``temperature``).

    Cost: one ``exp`` per element besides the two ``log`` of the Gumbel noise,
    and no pass of its own for the masking; with ``hard=True`` one more
    reduction, the ``argmax`` of ``l + G``. Forward and backward take the time
    of the textbook ``softmax((l + G) / tau)`` written with
    ``jax.random.gumbel`` (``benchmarks/prng.py``).

    Choosing the PRNG implementation: the noise comes from ``key``, so pass a
    typed key of the implementation you want, ``jax.random.key(seed,
    impl="threefry2x32")`` (the default), ``impl="rbg"`` or
    ``impl="unsafe_rbg"`` (or set ``jax_default_prng_impl`` for legacy
    ``uint32`` keys). ``threefry2x32`` gives the same bits on every backend;
    ``rbg`` and ``unsafe_rbg`` draw with XLA's ``RngBitGenerator`` (meant for
    accelerators; the bits may differ between backends and XLA versions);
    ``rbg`` splits keys with threefry, ``unsafe_rbg`` with the bit generator
    itself (cheaper, less studied). jaxgrad runs at 0.6-1.04 of the
    hand-written formula's time under each of them. On CPU threefry is the
    fastest: forward and backward on [4096, 1024] took 63 ms (soft) and 75 ms
    (hard) with threefry, 84 and 166 ms with ``rbg``, about the same with
    ``unsafe_rbg`` (``benchmarks/README.md``).

    Annealing: ``temperature`` may be a traced array, so a schedule does not
    recompile a jitted step. Use an optax schedule, e.g.
    ``schedule = optax.exponential_decay(1.0, transition_steps=1000,
    decay_rate=0.5, end_value=0.1)`` and ``temperature=schedule(step)`` with
    ``step`` part of the training state.

    Args:
      key: a PRNG key (typed or legacy ``uint32[2]``).
      logits: unnormalized log-probabilities, floating, finite or ``-inf``,
        with at least one finite entry per distribution; categories along
        ``axis``.
      temperature: ``tau > 0``, a scalar or an array broadcastable to
        ``logits`` (keep a size-1 category axis); may be traced. Positivity is
        checked only when it is concrete.
      hard: static; return the exact one-hot sample with the relaxed gradient.
      axis: the category axis (static).

    Returns:
      An array of the shape and dtype of ``logits``: a point of the simplex
      along ``axis`` (``hard=False``) or a one-hot vector (``hard=True``).

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` is not a real
        number or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys, ``axis`` is out of range,
        ``temperature`` is concretely non-positive or does not broadcast.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> logits = jnp.array([1.0, 0.0, -jnp.inf])
      >>> y = jaxgrad.gumbel_softmax(jax.random.key(0), logits, temperature=0.5)
      >>> bool(jnp.isclose(y.sum(), 1.0)), float(y[2])
      (True, 0.0)
      >>> d = jaxgrad.gumbel_softmax(jax.random.key(0), logits, hard=True)
      >>> sorted(d.tolist())
      [0.0, 0.0, 1.0]

    References:
      Jang, Gu & Poole, ICLR 2017. https://arxiv.org/abs/1611.01144
      Maddison, Mnih & Teh, ICLR 2017. https://arxiv.org/abs/1611.00712
    """
    fn = "gumbel_softmax"
    logits_last, t, axis = _categorical_args(key, logits, temperature, axis, fn)
    z, idx = _gumbel_max(key, logits_last)
    y = _tempered_softmax(z, t)
    if hard:
        y = _st(jax.nn.one_hot(idx, z.shape[-1], dtype=z.dtype), y)
    return jnp.moveaxis(y.astype(logits_last.dtype), -1, axis)


def relaxed_bernoulli(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    hard: bool = False,
) -> Array:
    r"""A binary Concrete (relaxed Bernoulli) sample; ``hard=True`` for straight-through.

    .. math::
        y = \sigma\!\left(\frac{l + L}{\tau}\right), \qquad
        L = \log U - \log(1 - U) \sim \mathrm{Logistic}(0, 1), \qquad
        P(y \le v) = \sigma\big(\tau\, \mathrm{logit}(v) - l\big).

    One independent coin per element of ``logits``. As :math:`\tau \to 0`,
    ``y`` tends to ``b = 1[l + L > 0]``, a Bernoulli(``sigmoid(l)``) sample.
    With ``hard=True`` the value is exactly ``b`` (same noise) and the
    derivative is that of ``y``.

    Biased as a gradient estimator of ``E[f(b)]``; requires a differentiable
    ``f``; one sample. Computed in at least float32 with the stable logistic,
    so ``tau`` in [1e-4, 1e4] and logits up to ``+-1e4`` (or ``+-inf``) give
    finite values and gradients.

    Args:
      key: a PRNG key.
      logits: floating, any shape; finite or ``+-inf``.
      temperature: ``tau > 0``, a scalar or an array broadcastable to
        ``logits``; may be traced (see :func:`gumbel_softmax` for annealing).
      hard: static; return the exact ``{0, 1}`` sample with the relaxed gradient.

    Returns:
      An array in ``[0, 1]`` (``{0, 1}`` if ``hard``) of the shape and dtype of
      ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` is not a real
        number or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys or ``temperature`` is
        concretely non-positive or does not broadcast.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> y = jaxgrad.relaxed_bernoulli(jax.random.key(0), jnp.zeros(3), temperature=0.5)
      >>> bool(jnp.all((y > 0) & (y < 1)))
      True
      >>> b = jaxgrad.relaxed_bernoulli(jax.random.key(0), jnp.zeros(3), hard=True)
      >>> bool(jnp.all((b == 0) | (b == 1)))
      True

    References:
      Maddison, Mnih & Teh, ICLR 2017 (appendix: binary Concrete).
      https://arxiv.org/abs/1611.00712
    """
    fn = "relaxed_bernoulli"
    checks.check_key(key, fn)
    logits = _logits(logits, fn)
    t = _temperature(temperature, logits.shape, fn, None)
    dtype = samplers.compute_dtype(logits.dtype)
    u = samplers.uniform_open(key, logits.shape, dtype)
    z = logits.astype(dtype) + (jnp.log(u) - jnp.log1p(-u))
    y = _tempered_sigmoid(z, t.astype(dtype))
    if hard:
        # The sign of z / t is that of z (t > 0); testing x = z / t, which the
        # sigmoid reads anyway, leaves z one consumer, so XLA fuses the noise
        # into it instead of writing both logarithms to memory. (They differ
        # only if z / t underflows to 0: |z| < 1e-45 t, probability ~1e-41.)
        y = _st((z / t.astype(dtype) > 0).astype(dtype), y)
    return y.astype(logits.dtype)


# --------------------------------------------------------------------------- Gumbel-Rao


def _conditional_gumbel(u: Array, log_probs: Array, onehot: Array) -> Array:
    r"""Gumbel noise conditioned on its argmax, from uniforms ``u``.

    ``z`` has the law of ``log_probs + G`` given ``argmax(log_probs + G) = b``
    (``onehot`` marks ``b``; ``log_probs`` normalized, last axis):
    ``z_b = -log E_b`` and ``z_i = -log(E_i / pi_i + E_b)`` for ``i != b``,
    ``E = -log u`` (Tucker et al. 2017, appendix), computed in log space so
    that ``pi_i`` = 0 gives ``-inf`` and tiny ``pi_i`` stays finite.
    """
    log_e = jnp.log(-jnp.log(u))
    log_e_b = jnp.sum(jnp.where(onehot, log_e, jnp.zeros_like(log_e)), axis=-1, keepdims=True)
    others = -jnp.logaddexp(log_e - log_probs, log_e_b)
    return jnp.where(onehot, -log_e_b, others)


def _gumbel_rao_keys(key: Array) -> tuple[Array, Array]:
    """Splits the user's key into (sample key, conditional-noise key)."""
    k_sample, k_cond = jax.random.split(key)
    return k_sample, k_cond


def _gumbel_rao_draws(key: Array, logits_last: Array, num_samples: int) -> tuple[Array, Array]:
    """The forward index and the ``[num_samples, ...]`` uniforms of the backward pass.

    For tests: the backward pass of :func:`gumbel_rao` draws exactly these
    uniforms (one ``fold_in`` of the conditional key per sample).
    """
    k_sample, k_cond = _gumbel_rao_keys(key)
    _, idx = _gumbel_max(k_sample, logits_last)
    dtype = samplers.compute_dtype(logits_last.dtype)
    u = jax.vmap(
        lambda k: samplers.uniform_open(jax.random.fold_in(k_cond, k), logits_last.shape, dtype)
    )(jnp.arange(num_samples))
    return idx, u


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gumbel_rao_core(num_samples: int, key: Array, logits: Array, temperature: Array) -> Array:
    return _gumbel_rao_fwd(num_samples, key, logits, temperature)[0]


def _gumbel_rao_fwd(num_samples, key, logits, temperature):
    k_sample, k_cond = _gumbel_rao_keys(key)
    _, idx = _gumbel_max(k_sample, logits)
    out = jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype)
    # Residuals are O(size of logits): the K conditional draws happen in the backward pass.
    return out, (k_cond, logits, idx, temperature)


def _gumbel_rao_bwd(num_samples, res, cotangent):
    k_cond, logits, idx, temperature = res
    dtype = samplers.compute_dtype(logits.dtype)
    log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
    onehot = jax.nn.one_hot(idx, logits.shape[-1], dtype=jnp.bool_)
    c = cotangent.astype(dtype)
    t = temperature.astype(dtype)

    def term(k):
        u = samplers.uniform_open(jax.random.fold_in(k_cond, k), logits.shape, dtype)
        y = _tempered_softmax(_conditional_gumbel(u, log_probs, onehot), t)
        # J^T c of softmax(z / t) w.r.t. the logits (noise fixed), without the 1/t.
        return y * (c - jnp.sum(y * c, axis=-1, keepdims=True))

    # The first term starts the sum, so the carry has the type (including the
    # shard_map varying axes) of every term; the rest run one at a time.
    acc = term(0)
    if num_samples > 1:
        step = lambda acc, k: (acc + term(k), None)
        acc, _ = jax.lax.scan(step, acc, jnp.arange(1, num_samples))
    grad = acc / (num_samples * t)
    return None, grad.astype(logits.dtype), jnp.zeros_like(temperature)


_gumbel_rao_core.defvjp(_gumbel_rao_fwd, _gumbel_rao_bwd)


def gumbel_rao(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    num_samples: int = 10,
    axis: int = -1,
) -> Array:
    r"""A one-hot sample whose gradient is the Gumbel-Rao (Rao-Blackwellized ST-GS) estimator.

    .. math::
        D = \mathrm{onehot}(b), \quad b = \arg\max_i (l_i + G_i), \qquad
        \frac{\partial D}{\partial l}^{\!\top} c :=
        \frac{1}{K} \sum_{k=1}^{K}
        \frac{\partial\, \mathrm{softmax}(z^{(k)} / \tau)}{\partial l}^{\!\top} c
        = \frac{1}{K\tau} \sum_k \big(y^{(k)} \odot c - y^{(k)} \langle y^{(k)}, c\rangle\big),

    with :math:`y^{(k)} = \mathrm{softmax}(z^{(k)}/\tau)` and :math:`z^{(k)}`
    ``K = num_samples`` independent draws of ``l + G`` *conditioned on*
    :math:`\arg\max = b` (Tucker et al. 2017): with ``E = -log V``, ``V``
    uniform, :math:`z_b = -\log E_b` and
    :math:`z_i = -\log(E_i / \pi_i + E_b)` for :math:`i \ne b`,
    :math:`\pi = \mathrm{softmax}(l)`.

    The gradient has the same expectation as the straight-through
    Gumbel-softmax (``gumbel_softmax(..., hard=True)``) and lower variance
    (Rao-Blackwellization over the noise given the sample); it is *biased* for
    ``E[f(D)]`` like it. Requires a differentiable ``f``; one ``f`` evaluation
    (and one backward pass) per sample, plus ``O(K)`` cheap softmaxes in the
    backward pass.

    Implemented with ``jax.custom_vjp``: the forward pass stores only the key
    and the logits; the ``K`` conditional draws are made in the backward pass
    from the saved key, one at a time (``lax.scan``), so memory does not grow
    with ``K``. What works, exactly:

    * reverse mode: ``jax.grad``, ``jax.vjp``, ``jax.jacrev``, under ``jit``
      and ``vmap``;
    * no forward mode *through the sample*: ``jax.jvp``, ``jax.jacfwd`` and
      so ``jax.jacrev(jax.jacfwd(...))`` of a function of the sample raise
      ``TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp
      function`` (``jax.linearize`` returns, and its linear map raises);
    * second derivatives whose inner derivative is reverse mode:
      ``jax.hessian`` (``jacfwd`` of ``jacrev``), ``jax.jacrev(jax.jacrev(...))``
      and ``jax.jvp`` of ``jax.grad`` work and agree. They differentiate the
      Gumbel-Rao gradient *estimate* with respect to the logits (the same key
      and conditional noise), so they are not symmetric in general and are not
      an estimator of the Hessian of ``E[f(D)]``;
    * the gradient with respect to ``temperature`` is 0 (the forward value does
      not depend on it), but the gradient estimate does depend on it, and its
      derivative with respect to ``temperature`` (e.g. of a variance loss) is
      available by the same double backprop.

    The sample is the one-hot of ``jaxgrad.categorical(jax.random.split(key)[0],
    logits, axis=axis)``.

    Args:
      key: a PRNG key.
      logits: unnormalized log-probabilities, floating, finite or ``-inf``,
        categories along ``axis``.
      temperature: ``tau > 0`` of the relaxation in the backward pass, scalar
        or broadcastable to ``logits``; may be traced.
      num_samples: ``K >= 1``, conditional draws per gradient (static).
      axis: the category axis (static).

    Returns:
      A one-hot array of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``num_samples`` is not an int,
        ``temperature`` is not a real number or ``key`` is not a key.
      ValueError: if ``num_samples < 1``, ``key`` is a batch of keys, ``axis``
        is out of range, or ``temperature`` is concretely non-positive or does
        not broadcast.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda l: jnp.sum(jaxgrad.gumbel_rao(jax.random.key(0), l) * jnp.arange(3.0))
      >>> g = jax.grad(f)(jnp.zeros(3))
      >>> g.shape, bool(abs(g.sum()) < 1e-6)  # softmax gradients sum to zero
      ((3,), True)

    References:
      Paulus, Maddison & Krause, *Rao-Blackwellizing the Straight-Through
      Gumbel-Softmax Gradient Estimator*, ICLR 2021.
      https://arxiv.org/abs/2010.04838
      Tucker et al., *REBAR*, NeurIPS 2017 (conditional Gumbel noise).
      https://arxiv.org/abs/1703.07370
    """
    fn = "gumbel_rao"
    num_samples = checks.check_num_samples(num_samples, fn, 1)
    logits_last, t, axis = _categorical_args(key, logits, temperature, axis, fn)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(samplers.compute_dtype(logits_last.dtype))
    # Inside shard_map the backward pass returns a cotangent that varies with
    # the key; custom_vjp needs the primal inputs to have that type too.
    logits_last, t = (sharding.vary_like(x, key) for x in (logits_last, t))
    out = _gumbel_rao_core(num_samples, key, logits_last, t)
    return jnp.moveaxis(out, -1, axis)


# --------------------------------------------------------------------------- ReinMax


def reinmax(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    axis: int = -1,
) -> Array:
    r"""A one-hot sample whose gradient is the ReinMax second-order estimator.

    .. math::
        D = \mathrm{onehot}(b),\ b \sim \mathrm{softmax}(l), \quad
        \pi_0 = \mathrm{softmax}(l), \quad
        \pi_1 = \tfrac12\big(\mathrm{softmax}(l / \tau) + D\big),

    .. math::
        \frac{\partial D}{\partial l}^{\!\top} c :=
        2\, J(\pi_1)^\top c - \tfrac12\, J(\pi_0)^\top c, \qquad
        J(\pi)^\top c = \pi \odot c - \pi \langle \pi, c \rangle .

    This is Algorithm 2 of Liu et al. (2023): ``pi1`` enters through
    ``softmax(stop_gradient(log pi1 - l) + l)``, whose Jacobian in ``l`` is
    :math:`J(\pi_1) = \mathrm{diag}(\pi_1) - \pi_1\pi_1^\top` (no ``1/tau``
    factor), and the surrogate is ``2 pi1 - pi0 / 2``. Both ``pi``'s are held
    constant (stop-gradient), so ``temperature`` gets no gradient. The authors'
    implementation also subtracts the mean over classes from the result; since
    each :math:`J(\pi)^\top c` already sums to zero over classes, that is an
    exact no-op and is omitted here (this keeps the gradient of masked ``-inf``
    logits exactly 0).

    ReinMax approximates the gradient of ``E[f(D)]`` to second order (Heun's
    method) where straight-through is first order; it is still *biased*. It
    requires a differentiable ``f``; one sample, one ``f`` evaluation. The
    paper recommends ``temperature >= 1`` (not enforced: it may be traced).
    Built from stop-gradients, so forward mode and ``vmap`` work. The sample
    equals ``one_hot(jaxgrad.categorical(key, logits, axis=axis))``.

    Args:
      key: a PRNG key.
      logits: unnormalized log-probabilities, floating, finite or ``-inf``,
        categories along ``axis``.
      temperature: ``tau > 0`` in ``pi1``, scalar or broadcastable to
        ``logits``; may be traced.
      axis: the category axis (static).

    Returns:
      A one-hot array of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` is not a real
        number or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys, ``axis`` is out of range, or
        ``temperature`` is concretely non-positive or does not broadcast.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> d = jaxgrad.reinmax(jax.random.key(0), jnp.array([0.5, 0.0, -0.5]))
      >>> float(d.sum()), float(d.max())
      (1.0, 1.0)

    References:
      Liu, Dong, Liu, Yu & Gao, *Bridging Discrete and Backpropagation:
      Straight-Through and Beyond*, NeurIPS 2023, Algorithm 2.
      https://arxiv.org/abs/2304.08612
    """
    fn = "reinmax"
    logits_last, t, axis = _categorical_args(key, logits, temperature, axis, fn)
    dtype = samplers.compute_dtype(logits_last.dtype)
    _, idx = _gumbel_max(key, logits_last)
    hard = jax.nn.one_hot(idx, logits_last.shape[-1], dtype=dtype)
    sg = jax.lax.stop_gradient
    lc = logits_last.astype(dtype)
    pi0 = sg(jax.nn.softmax(lc, axis=-1))
    pi1 = sg((_tempered_softmax(lc, t) + hard) / 2)
    d = _zero_masked(lc)
    d = d - sg(d)  # value 0, derivative identity

    def jvp_softmax(pi: Array) -> Array:  # J(pi) d, with J(pi) symmetric
        return pi * d - pi * jnp.sum(pi * d, axis=-1, keepdims=True)

    surrogate = 2 * jvp_softmax(pi1) - 0.5 * jvp_softmax(pi0)
    return jnp.moveaxis(_st(hard, surrogate).astype(logits_last.dtype), -1, axis)


# --------------------------------------------------------------------------- GST

_GAP_HINT = "Use a positive gap (the authors' default is 1.0)."


def _gapped_logits(z: Array, onehot: Array, gap: Array) -> Array:
    r"""GST's deterministically perturbed logits ``m``, with derivative the identity in ``z``.

    ``z``: logits (category axis last, finite or ``-inf``); ``onehot``: boolean,
    marks the sampled class ``b``; ``gap``: ``kappa > 0`` lined up with ``z``.
    The values are exactly

    .. math::
        m_b = \max_j z_j, \qquad m_i = \min\big(z_i,\ \max_j z_j - \kappa\big)\ (i \ne b),

    and the derivative is that of ``z`` itself (the moves are held constant):
    ``m = values + (d - stop_gradient(d))`` with ``d`` the logits whose
    ``-inf`` entries are replaced by 0, so a masked entry stays ``-inf`` with
    derivative 0 and no ``inf - inf`` is formed.
    """
    sg = jax.lax.stop_gradient
    zs = sg(z)
    top = jnp.max(zs, axis=-1, keepdims=True)
    values = jnp.where(onehot, top, jnp.minimum(zs, top - gap))
    d = _zero_masked(z)
    return values + (d - sg(d))  # the bracket is exactly 0


def gapped_straight_through(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    gap: ArrayLike = 1.0,
    axis: int = -1,
) -> Array:
    r"""A one-hot sample whose gradient is the Gapped Straight-Through (GST) estimator.

    .. math::
        D = \mathrm{onehot}(b),\ b \sim \mathrm{softmax}(l), \qquad
        \frac{\partial D}{\partial l}^{\!\top} c :=
        \frac{\partial\, \mathrm{softmax}(m / \tau)}{\partial l}^{\!\top} c
        = \frac{1}{\tau}\big(y \odot c - y \langle y, c\rangle\big),
        \quad y = \mathrm{softmax}(m / \tau),

    with the *deterministic* perturbed logits (Fan et al. 2022, Sec. 4)

    .. math::
        m = l + \bot(\delta), \qquad
        m_b = \max_j l_j, \qquad
        m_i = \min\big(l_i,\ \max_j l_j - \kappa\big) \quad (i \ne b),

    where :math:`\bot` is the stop-gradient, so :math:`\partial m / \partial l`
    is the identity: the sampled logit is moved up to the row maximum and every
    other logit within :math:`\kappa` (``gap``) of the maximum is moved down to
    :math:`\max_j l_j - \kappa`. The moves give :math:`m` the two properties the
    paper identifies in the Gumbel perturbation :math:`l + G` of
    straight-through Gumbel-softmax (given :math:`D`): *consistency*,
    :math:`\arg\max_i m_i = b`, and the *strict gap*,
    :math:`m_b - \max_{i \ne b} m_i \ge \kappa`. Unlike ST-GS the surrogate is
    a function of :math:`(l, D)` alone, so the gradient has no noise beyond
    that of :math:`D` (and unlike Gumbel-Rao, no resampling).

    *Biased* as a gradient estimator of ``E[f(D)]``, as every straight-through
    rule; requires a differentiable ``f``; one sample, one ``f`` evaluation,
    a few elementwise passes. The gradient with respect to ``temperature`` is
    that of the surrogate (the forward value does not depend on it); ``gap``
    gets none. Built from stop-gradients, so forward mode, ``vmap`` and higher
    derivatives (of the surrogate) work. The sample equals
    ``one_hot(jaxgrad.categorical(key, logits, axis=axis))``. A ``-inf`` logit is
    never sampled, its ``m`` is ``-inf`` and its gradient is 0. The gap holds
    up to the rounding of :math:`\max_j l_j - \kappa` (exactly for a ``kappa``
    not far below the logits' ulp).

    The authors' code also offers a gap that adapts to the sampled class's
    probability; only the constant gap (their experiments' ``gap=1.0``) is
    implemented here.

    Args:
      key: a PRNG key.
      logits: unnormalized log-probabilities, floating, finite or ``-inf``,
        categories along ``axis``.
      temperature: ``tau > 0`` of the surrogate softmax, scalar or
        broadcastable to ``logits``; may be traced.
      gap: ``kappa > 0``, scalar or broadcastable to ``logits`` (an entry
        ``kappa_i`` bounds class ``i``); may be traced.
      axis: the category axis (static).

    Returns:
      A one-hot array of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` or ``gap`` is
        not a real number or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys, ``axis`` is out of range, or
        ``temperature`` or ``gap`` is concretely non-positive or does not
        broadcast.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> logits, w = jnp.array([0.5, 0.0, -jnp.inf]), jnp.array([1.0, 2.0, 3.0])
      >>> f = lambda l: w @ jaxgrad.gapped_straight_through(jax.random.key(0), l)
      >>> d = jaxgrad.gapped_straight_through(jax.random.key(0), logits)
      >>> float(d.sum()), float(d[2])
      (1.0, 0.0)
      >>> g = jax.grad(f)(logits)
      >>> bool(abs(g.sum()) < 1e-6), float(g[2])  # softmax gradients sum to 0; masked: 0
      (True, 0.0)

    References:
      Fan, Chi, Rudnicky & Ramadge, *Training Discrete Deep Generative Models
      via Gapped Straight-Through Estimator*, ICML 2022.
      https://arxiv.org/abs/2206.07235
    """
    fn = "gapped_straight_through"
    shape = jnp.shape(logits)
    logits_last, t, axis = _categorical_args(key, logits, temperature, axis, fn)
    kappa = _temperature(gap, shape, fn, axis, name="gap", hint=_GAP_HINT)
    dtype = samplers.compute_dtype(logits_last.dtype)
    _, idx = _gumbel_max(key, logits_last)
    onehot = jax.nn.one_hot(idx, logits_last.shape[-1], dtype=jnp.bool_)
    m = _gapped_logits(logits_last.astype(dtype), onehot, kappa.astype(dtype))
    y = _st(onehot.astype(dtype), _tempered_softmax(m, t))
    return jnp.moveaxis(y.astype(logits_last.dtype), -1, axis)


# --------------------------------------------------------------------------- decoupled ST-GS


def decoupled_st_gumbel_softmax(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    forward_temperature: ArrayLike = 1.0,
    axis: int = -1,
) -> Array:
    r"""Straight-through Gumbel-softmax with separate forward and backward temperatures.

    .. math::
        D = \mathrm{onehot}\Big(\arg\max_i \big(l_i / \tau_f + G_i\big)\Big)
          \sim \mathrm{softmax}(l / \tau_f), \qquad
        \frac{\partial D}{\partial l} :=
        \frac{\partial\, \mathrm{softmax}(l / \tau_b + G)}{\partial l}
        = \frac{\mathrm{diag}(y) - y y^\top}{\tau_b},

    with :math:`y = \mathrm{softmax}(l/\tau_b + G)` and the *same* Gumbel noise
    :math:`G` in both passes. This is the Decoupled ST-GS of Shah et al.
    (2024, Algorithm 1), which writes the Gumbel-softmax as
    :math:`\mathrm{softmax}(l/\tau + G)`: the forward temperature
    :math:`\tau_f` (``forward_temperature``) sets the law of the hard sample,
    :math:`\mathrm{softmax}(l/\tau_f)` (its stochasticity, "exploration"), and
    the backward temperature :math:`\tau_b` (``temperature``) only the
    surrogate whose Jacobian is passed back. With :math:`\tau_f = 1` the
    sample is an exact sample of ``softmax(l)`` and only the backward
    temperature remains; with :math:`\tau_f \ne 1` the forward law itself is
    tempered, so ``E[f(D)]`` is the expectation under ``softmax(l / tau_f)``.

    Relation to :func:`gumbel_softmax` (``hard=True``), which uses
    :math:`\mathrm{softmax}((l + G)/\tau)`, the noise scaled by :math:`1/\tau`:
    at :math:`\tau_f = \tau_b = 1` the two are the same function, bit for bit
    (value and gradient); at :math:`\tau_f = \tau_b = \tau` this is
    ``gumbel_softmax(key, logits / tau, temperature=1, hard=True)`` (the
    paper's single-temperature baseline), bit for bit in value. A forward
    temperature in the :math:`(l + G)/\tau` form would not change the hard
    sample at all (the argmax is invariant to the scale), which is why the
    decoupling lives in its own function.

    *Biased* as a gradient estimator of ``E[f(D)]`` (every straight-through
    rule is); requires a differentiable ``f``; one sample, one ``f``
    evaluation. The backward surrogate is computed as the shifted softmax of
    ``(l + tau_b G) / tau_b`` (the same numbers, written so that a ``-inf``
    logit gives value and gradient 0, also with respect to ``temperature``);
    ``forward_temperature`` gets no gradient (it enters only the argmax). Both
    temperatures may be traced: an annealing schedule under ``jit`` compiles
    once. Built from stop-gradients, so forward mode, ``vmap`` and higher
    derivatives (of the surrogate) work. The sample equals
    ``one_hot(jaxgrad.categorical(key, logits / forward_temperature, axis=axis))``.

    Args:
      key: a PRNG key (typed or legacy ``uint32[2]``).
      logits: unnormalized log-probabilities, floating, finite or ``-inf``,
        categories along ``axis``.
      temperature: the backward temperature ``tau_b > 0``, scalar or
        broadcastable to ``logits``; may be traced.
      forward_temperature: ``tau_f > 0`` of the sampled law
        ``softmax(logits / tau_f)``, scalar or broadcastable to ``logits``;
        may be traced. The default 1 samples ``softmax(logits)``.
      axis: the category axis (static).

    Returns:
      A one-hot array of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, a temperature is not a real
        number or ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys, ``axis`` is out of range, or a
        temperature is concretely non-positive or does not broadcast.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> k, logits = jax.random.key(0), jnp.array([0.5, 0.0, -0.5])
      >>> d = jaxgrad.decoupled_st_gumbel_softmax(k, logits, temperature=2.0)
      >>> float(d.sum()), float(d.max())
      (1.0, 1.0)
      >>> k2 = jax.random.key(1)
      >>> st = jaxgrad.gumbel_softmax(k2, logits, hard=True)  # tau_f = tau_b = 1
      >>> same = jaxgrad.decoupled_st_gumbel_softmax(jax.random.clone(k2), logits)
      >>> bool(jnp.array_equal(same, st))
      True

    References:
      Shah, Yan, Mozer & Liu, *Improving Discrete Optimisation Via Decoupled
      Straight-Through Gumbel-Softmax*, 2024, Algorithm 1.
      https://arxiv.org/abs/2410.13331
    """
    fn = "decoupled_st_gumbel_softmax"
    shape = jnp.shape(logits)
    logits_last, t_b, axis = _categorical_args(key, logits, temperature, axis, fn)
    t_f = _temperature(forward_temperature, shape, fn, axis, name="forward_temperature")
    dtype = samplers.compute_dtype(logits_last.dtype)
    lc = logits_last.astype(dtype)
    noise = samplers.gumbel(key, lc.shape, dtype)
    idx = jnp.argmax(jax.lax.stop_gradient(lc / t_f.astype(dtype)) + noise, axis=-1)
    y = _tempered_softmax(lc + t_b.astype(dtype) * noise, t_b)
    y = _st(jax.nn.one_hot(idx, lc.shape[-1], dtype=dtype), y)
    return jnp.moveaxis(y.astype(logits_last.dtype), -1, axis)
