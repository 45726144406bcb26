"""Baselines and variance normalization for score-function estimators.

A baseline ``b`` is subtracted from the cost in the score-function estimator
``(f(x) - b) grad log p(x)``; as long as ``b`` does not depend on the sample
``x`` the estimator stays unbiased, and a ``b`` close to ``f`` cuts its
variance. This module holds the pieces:

* stateless, per-batch baselines computed from the other samples of the same
  estimate: :func:`loo` (leave-one-out mean) and :func:`optimal` (the
  per-coordinate variance-minimizing baseline, leave-one-out);
* stateful baselines in the style of optax, a pair of pure functions
  ``init``/``update`` with a NamedTuple state: :func:`ema` (a moving average of
  ``f``) and :func:`normalizer` (the running scale of NVIL's variance
  normalization);
* :func:`loss`, the regression loss that trains a learned, input-dependent
  baseline.

The stateful ones are read from their state (``state.value``,
``state.scale``) and passed to ``jaxgrad.score_function`` as
``baseline=state.value`` / ``normalize=state.scale``; the estimator returns the
``f`` values it saw (``return_f_values=True``) so the state is updated in the
same jitted step.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

Array = jax.Array


class BaselineTransformation(NamedTuple):
    """A stateful baseline as a pair of pure functions, like ``optax.GradientTransformation``.

    Attributes:
      init: ``init(dtype=jnp.float32) -> state``.
      update: ``update(values, state) -> state``, with ``values`` the ``f``
        values (or centered learning signals) of the current step, any shape.
    """

    init: Callable[..., Any]
    update: Callable[[Any, Any], Any]


class EmaState(NamedTuple):
    """State of :func:`ema`.

    Attributes:
      value: the current baseline (debiased if ``debias=True``); pass it as
        ``baseline=state.value``. Zero before the first update.
      average: the raw exponential moving average.
      count: the number of updates so far (int32).
    """

    value: Array
    average: Array
    count: Array


class NormalizerState(NamedTuple):
    """State of :func:`normalizer`.

    Attributes:
      scale: ``max(1, sqrt(variance))``; pass it as ``normalize=state.scale``.
        One before the first update.
      mean: the running mean of the learning signal (debiased if ``debias``).
      variance: the running variance of the learning signal.
      moments: the raw moving averages of the signal and of its square, ``[2]``.
      count: the number of updates so far (int32).
    """

    scale: Array
    mean: Array
    variance: Array
    moments: Array
    count: Array


def _check_decay(decay: Any, fn: str) -> None:
    if isinstance(decay, jax.core.Tracer):
        return
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real | np.ndarray | jax.Array):
        raise TypeError(f"{fn}: decay must be a number in [0, 1), got {type(decay).__name__}.")
    value = np.asarray(decay)
    if value.shape != () or not (0.0 <= float(value) < 1.0):
        raise ValueError(
            f"{fn}: decay must be a scalar in [0, 1), got {decay}. Typical values are 0.9 to 0.999."
        )


def _check_dtype(dtype: DTypeLike, fn: str) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {dtype}.")
    return dtype


def _batch_mean(values: Any, dtype: jnp.dtype) -> Array:
    return jnp.mean(jax.lax.stop_gradient(jnp.asarray(values)).astype(dtype))


def _ema_step(average: Array, sample: Array, count: Array, decay: Any, debias: bool):
    """One step of an exponential moving average and its debiased read-out."""
    d = jnp.asarray(decay).astype(average.dtype)
    average = d * average + (1 - d) * sample
    count = count + 1
    if debias:
        return average, average / (1 - d ** count.astype(average.dtype)), count
    return average, average, count


def ema(decay: float = 0.99, debias: bool = True) -> BaselineTransformation:
    r"""A moving-average baseline: an exponential moving average of the ``f`` values.

    .. math::
        a_t = \beta a_{t-1} + (1 - \beta) \bar f_t, \qquad a_0 = 0, \qquad
        b_t = \frac{a_t}{1 - \beta^t} \;\; (\text{debias}), \quad b_t = a_t \;\; (\text{else}),

    with :math:`\bar f_t` the mean of the values passed to ``update`` at step
    ``t``. Debiasing (as in Adam) removes the pull of ``a_0 = 0``, so after the
    first update the baseline is exactly the first batch mean. The baseline of
    step ``t`` only depends on earlier steps' samples, so the score-function
    estimator it is used in stays unbiased.

    Args:
      decay: the decay rate ``beta`` in ``[0, 1)``.
      debias: whether to divide by ``1 - beta^t``.

    Returns:
      A :class:`BaselineTransformation` ``(init, update)``:
      ``init(dtype=jnp.float32) -> EmaState`` and
      ``update(f_values, state) -> EmaState`` (gradients of ``f_values`` are
      stopped). Read the baseline as ``state.value``.

    Raises:
      TypeError: if ``decay`` is not a number, or ``init`` gets a non-floating dtype.
      ValueError: if ``decay`` is not in ``[0, 1)``.

    Example:
      A full training step: the estimator returns its ``f`` values, which
      update the baseline inside the same jitted function.

      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> baseline = jaxgrad.baselines.ema(decay=0.9)
      >>> @jax.jit
      ... def step(key, logits, state):
      ...     est = jaxgrad.score_function(
      ...         f, dist=jaxgrad.dists.bernoulli, num_samples=4,
      ...         baseline=state.value, return_f_values=True)
      ...     grad, aux = jax.grad(est, argnums=1, has_aux=True)(key, logits)
      ...     return logits - 0.1 * grad, baseline.update(aux.f_values, state)
      >>> logits, state = jnp.zeros(3), baseline.init()
      >>> for key in jax.random.split(jax.random.key(0), 5):
      ...     logits, state = step(key, logits, state)
      >>> int(state.count), state.value.shape
      (5, ())

    References:
      Williams, *Simple statistical gradient-following algorithms for
      connectionist reinforcement learning*, Machine Learning 1992.
      https://doi.org/10.1007/BF00992696 ;
      Kingma & Ba, *Adam*, ICLR 2015 (bias correction).
      https://arxiv.org/abs/1412.6980
    """
    _check_decay(decay, "ema")
    debias = bool(debias)

    def init(dtype: DTypeLike = jnp.float32) -> EmaState:
        dtype = _check_dtype(dtype, "ema.init")
        zero = jnp.zeros((), dtype)
        return EmaState(value=zero, average=zero, count=jnp.zeros((), jnp.int32))

    def update(f_values: Any, state: EmaState) -> EmaState:
        sample = _batch_mean(f_values, state.average.dtype)
        average, value, count = _ema_step(state.average, sample, state.count, decay, debias)
        return EmaState(value=value, average=average, count=count)

    return BaselineTransformation(init, update)


def normalizer(decay: float = 0.99, debias: bool = True) -> BaselineTransformation:
    r"""Variance normalization (NVIL): a running scale of the learning signal.

    For the centered learning signal :math:`s = f - b` of each step, running
    moments and the scale are

    .. math::
        m_t = \mathrm{EMA}_\beta(\bar s_t), \quad q_t = \mathrm{EMA}_\beta(\overline{s^2}_t),
        \quad v_t = \max(q_t - m_t^2, 0), \quad
        \mathrm{scale}_t = \max(1, \sqrt{v_t}),

    (debiased as in :func:`ema`). Dividing the learning signal by
    ``scale`` keeps the gradient's magnitude roughly constant as the cost's
    scale changes during training, while never amplifying a small signal.
    The estimator then estimates ``grad E[f] / scale``; the scale is set from
    earlier steps only, so that is unbiased given the scale.

    Args:
      decay: the decay rate ``beta`` in ``[0, 1)``.
      debias: whether to debias the moving averages.

    Returns:
      A :class:`BaselineTransformation` ``(init, update)``:
      ``init(dtype=jnp.float32) -> NormalizerState`` and
      ``update(signal, state) -> NormalizerState``, with ``signal`` the
      centered learning signal ``f_values - baseline`` of the step (any shape;
      gradients stopped). Read the scale as ``state.scale``.

    Raises:
      TypeError: if ``decay`` is not a number, or ``init`` gets a non-floating dtype.
      ValueError: if ``decay`` is not in ``[0, 1)``.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> norm = jaxgrad.baselines.normalizer(decay=0.9)
      >>> state = norm.update(jnp.array([-3.0, 3.0]), norm.init())
      >>> float(state.variance), float(state.scale)
      (9.0, 3.0)

    References:
      Mnih & Gregor, *Neural Variational Inference and Learning in Belief
      Networks*, ICML 2014, sec. 3.3. https://arxiv.org/abs/1402.0030
    """
    _check_decay(decay, "normalizer")
    debias = bool(debias)

    def init(dtype: DTypeLike = jnp.float32) -> NormalizerState:
        dtype = _check_dtype(dtype, "normalizer.init")
        zero = jnp.zeros((), dtype)
        return NormalizerState(
            scale=jnp.ones((), dtype),
            mean=zero,
            variance=zero,
            moments=jnp.zeros((2,), dtype),
            count=jnp.zeros((), jnp.int32),
        )

    def update(signal: Any, state: NormalizerState) -> NormalizerState:
        dtype = state.moments.dtype
        s = jax.lax.stop_gradient(jnp.asarray(signal)).astype(dtype)
        sample = jnp.stack([jnp.mean(s), jnp.mean(s * s)])
        moments, debiased, count = _ema_step(state.moments, sample, state.count, decay, debias)
        mean, second = debiased[0], debiased[1]
        variance = jnp.maximum(second - mean * mean, 0)
        scale = jnp.maximum(jnp.sqrt(variance), 1)
        return NormalizerState(
            scale=scale, mean=mean, variance=variance, moments=moments, count=count
        )

    return BaselineTransformation(init, update)


def loss(f_values: Any, prediction: Any) -> Array:
    r"""The squared-error loss that trains a learned (input-dependent) baseline.

    .. math::
        L(\phi) = \frac1N \sum_{n=1}^N \big(\bot(f_n) - b_\phi\big)^2 ,

    where ``bot`` is stop-gradient: only the prediction is trained, towards
    :math:`E[f \mid \text{input}]`, the best input-dependent constant baseline
    in mean squared error (NVIL's signal-centering network).

    Args:
      f_values: the ``f`` values of the samples, e.g. ``aux.f_values`` from
        ``jaxgrad.score_function(..., return_f_values=True)``.
      prediction: the baseline's prediction, a scalar or an array that
        broadcasts with ``f_values``.

    Returns:
      The mean squared error, a scalar in the dtype of ``prediction``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f_values = jnp.array([1.0, 3.0])
      >>> float(jaxgrad.baselines.loss(f_values, 1.0))
      2.0
      >>> float(jax.grad(jaxgrad.baselines.loss, argnums=1)(f_values, 1.0))  # 2 (b - mean f)
      -2.0

    References:
      Mnih & Gregor, *Neural Variational Inference and Learning in Belief
      Networks*, ICML 2014. https://arxiv.org/abs/1402.0030
    """
    prediction = jnp.asarray(prediction)
    if not jnp.issubdtype(prediction.dtype, jnp.floating):
        prediction = prediction.astype(jnp.float32)
    target = jax.lax.stop_gradient(jnp.asarray(f_values)).astype(prediction.dtype)
    diff = target - prediction
    return jnp.mean(diff * diff)


def loo(f_values: Array) -> Array:
    r"""Leave-one-out baselines: for each sample, the mean of the others.

    .. math::
        b_n = \frac{1}{N - 1} \sum_{j \ne n} f_j ,

    independent of sample ``n``, so ``(f_n - b_n) grad log p(x_n)`` is
    unbiased (RLOO).

    Args:
      f_values: ``[N]`` values, ``N >= 2``.

    Returns:
      ``[N]`` baselines (gradients stopped), in the dtype of ``f_values``.

    Raises:
      ValueError: if ``f_values`` is not 1-D with at least two entries.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> jaxgrad.baselines.loo(jnp.array([1.0, 2.0, 6.0])).tolist()
      [4.0, 3.5, 1.5]

    References:
      Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
      Free!*, ICLR workshop 2019. https://openreview.net/forum?id=r1lgTGL5DE
    """
    f = jax.lax.stop_gradient(jnp.asarray(f_values))
    if f.ndim != 1 or f.shape[0] < 2:
        raise ValueError(
            f"loo: f_values must have shape [N] with N >= 2 (one value per sample), "
            f"got shape {f.shape}."
        )
    return leave_one_out_mean(f)


def leave_one_out_mean(v: Array) -> Array:
    r"""``b_n = (sum_j v_j - v_n) / (N - 1)`` along the leading axis, gradients kept.

    The arithmetic of :func:`loo` for any trailing shape, for estimators that
    need the leave-one-out mean of something differentiable (a tuned control
    variate) or of vectors; ``N >= 2`` is the caller's to check.
    """
    return (jnp.sum(v, axis=0) - v) / (v.shape[0] - 1)


def optimal(f_values: Array, scores: Any) -> Any:
    r"""Per-coordinate variance-minimizing baselines, estimated leave-one-out.

    For the score function ``g = grad log p(x)``, the baseline that minimizes
    the variance of coordinate ``i`` of ``(f(x) - b_i) g(x)`` is
    :math:`b^\star_i = E[f g_i^2] / E[g_i^2]`. For sample ``n`` it is estimated
    from the other samples only, so the estimator stays unbiased:

    .. math::
        b_{n,i} = \frac{\sum_{j \ne n} f_j\, g_{j,i}^2}{\sum_{j \ne n} g_{j,i}^2}
        \quad\text{(the leave-one-out mean of } f \text{ where the denominator is 0).}

    Args:
      f_values: ``[N]`` values, ``N >= 2``.
      scores: a pytree whose leaves are ``[N, ...]`` per-sample scores
        (e.g. ``jax.vmap(jax.grad(log_prob))`` over the samples).

    Returns:
      A pytree like ``scores`` of per-sample, per-coordinate baselines
      (gradients stopped).

    Raises:
      ValueError: if ``f_values`` is not 1-D with at least two entries, or a
        leaf of ``scores`` does not lead with ``N``.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> f = jnp.array([1.0, 2.0, 4.0])
      >>> g = jnp.array([[1.0], [1.0], [2.0]])
      >>> jaxgrad.baselines.optimal(f, g)[:, 0].tolist()  # e.g. (2*1 + 4*4) / (1 + 4)
      [3.6, 3.4, 1.5]

    References:
      Goodfellow, Bengio & Courville, *Deep Learning*, MIT Press 2016,
      sec. 20.9.1. https://www.deeplearningbook.org/contents/generative_models.html ;
      Greensmith, Bartlett & Baxter, *Variance Reduction Techniques for Gradient
      Estimates in Reinforcement Learning*, JMLR 2004.
      https://jmlr.org/papers/v5/greensmith04a.html
    """
    f = jax.lax.stop_gradient(jnp.asarray(f_values))
    fallback = loo(f)  # also validates f
    n = f.shape[0]
    others = 1 - jnp.eye(n, dtype=f.dtype)  # exact leave-one-out sums, no cancellation

    def one(g: Array) -> Array:
        g = jax.lax.stop_gradient(jnp.asarray(g))
        if g.ndim < 1 or g.shape[0] != n:
            raise ValueError(
                f"optimal: every leaf of scores must lead with the number of samples {n}, "
                f"got shape {g.shape}."
            )
        flat = g.reshape(n, -1)
        g2 = (flat * flat).astype(f.dtype)
        num = others @ (f[:, None] * g2)
        den = others @ g2
        safe = jnp.where(den > 0, den, 1)
        b = jnp.where(den > 0, num / safe, fallback[:, None])
        return b.reshape(g.shape).astype(g.dtype)

    return jax.tree.map(one, scores)
