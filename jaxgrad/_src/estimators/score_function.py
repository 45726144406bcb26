r"""The score-function (REINFORCE) estimator, with baselines, as a DiCE surrogate.

With samples :math:`x_n \sim p_\theta` (gradient stopped), log-probabilities
:math:`\ell_n = \log p_\theta(x_n)`, costs :math:`f_n = f(x_n, \ldots)`,
baselines :math:`b_n` independent of :math:`x_n` and a scale :math:`s`
(variance normalization, default 1), the estimate is the surrogate

.. math::
    S(\theta) = \frac1N \sum_n \Big[ f_n + \big(\boxdot(\ell_n) - 1\big)
                \frac{f_n - \bot(b_n)}{\bot(s)} \Big],

where :math:`\boxdot` is DiCE's magic box. Its value is the Monte Carlo mean
of :math:`f_n` (the box is 1); its gradient in :math:`\theta` is
:math:`\frac1N \sum_n (f_n - b_n) \nabla \log p(x_n) / s`; its derivatives of
every order in :math:`\theta` are unbiased estimators of those of
:math:`E[f] / s`, because the box differentiates like :math:`p_\theta(x_n)`
(for ``s = 1`` and ``b = 0`` this is exactly DiCE; the baseline term has
mean zero at every order because :math:`b_n` does not depend on :math:`x_n`).
Gradients with respect to ``f``'s own arguments are pathwise on the same
samples, and mixed derivatives (``theta`` and arguments) are unbiased too.

``f`` is never differentiated with respect to ``x``: the samples enter it as
constants.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxgrad._src import baselines, checks, samplers
from jaxgrad._src.estimators import common

Array = jax.Array

#: The named baselines ``score_function`` accepts.
BASELINES = ("loo", "optimal")


class ScoreFunctionAux(NamedTuple):
    """What ``est`` returns next to the estimate when ``return_f_values=True``.

    Every field has its gradient stopped.

    Attributes:
      f_values: ``[num_samples]`` costs ``f(x_n, *args)``; feed them to
        ``jaxgrad.baselines.ema(...).update`` or ``jaxgrad.baselines.loss``.
      samples: ``[num_samples, ...]`` the samples ``x_n``.
      baseline: the baseline each sample was centered with: ``[num_samples]``
        for ``None`` (zeros), an array, or ``"loo"``; for ``"optimal"`` a pytree
        like ``params`` with a leading ``num_samples`` axis (per coordinate).
        ``f_values - baseline`` is the centered learning signal that
        ``jaxgrad.baselines.normalizer`` tracks.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> est = jaxgrad.score_function(jnp.sum, dist=jaxgrad.dists.bernoulli, num_samples=3,
      ...                              baseline="loo", return_f_values=True)
      >>> g, aux = jax.grad(est, argnums=1, has_aux=True)(jax.random.key(0), jnp.zeros(2))
      >>> isinstance(aux, jaxgrad.ScoreFunctionAux), aux._fields
      (True, ('f_values', 'samples', 'baseline'))
      >>> aux.f_values.shape, aux.samples.shape, aux.baseline.shape
      ((3,), (3, 2), (3,))
    """

    f_values: Array
    samples: Any
    baseline: Any


def _wider(a: jnp.dtype, b: jnp.dtype) -> jnp.dtype:
    """The wider of two compute dtypes (explicit: strict promotion refuses mixing)."""
    a, b = samplers.compute_dtype(a), samplers.compute_dtype(b)
    return a if a.itemsize >= b.itemsize else b


def _float_dtype(x: Array) -> jnp.dtype:
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def _check_num_samples(num_samples: Any, baseline: Any, fn: str) -> int:
    """``num_samples`` as an int: at least 1, at least 2 for ``"loo"``/``"optimal"`` (and rloo)."""
    named = isinstance(baseline, str) and baseline in BASELINES
    if named and isinstance(num_samples, numbers.Integral) and not isinstance(num_samples, bool):
        if num_samples < 2:
            who = (
                "the baseline of each sample is the mean of the other samples"
                if fn == "rloo"
                else f"baseline={baseline!r} estimates the baseline of each sample from the "
                f"other samples"
            )
            raise ValueError(
                f"{fn}: {who}, so it needs num_samples >= 2, got num_samples={num_samples}."
            )
    return checks.check_num_samples(num_samples, fn)


def _check_log_prob(dist: Any, params: Any, xs: Any, fn: str) -> None:
    """Raises ``ValueError`` unless ``dist.log_prob`` of one sample is a scalar (static check)."""
    x0 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
    out = jax.eval_shape(lambda x: dist.log_prob(params, x), x0)
    shape = tuple(getattr(out, "shape", ()))
    if shape != ():
        raise ValueError(
            f"{fn}: dist.log_prob must return the joint log-probability of one sample "
            f"(a scalar), got shape {shape}. Sum over the factors, e.g. return "
            f"jnp.sum(log_probs)."
        )


def _check_baseline(baseline: Any, num_samples: int, fn: str) -> tuple[str, Any]:
    """Returns ``(mode, array)`` with mode in ``none, array, loo, optimal``."""
    if baseline is None:
        return "none", None
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"{fn}: baseline must be None, an array, or one of {BASELINES}, got "
                f"{baseline!r}. For a moving average use jaxgrad.baselines.ema and pass "
                f"baseline=state.value."
            )
        return baseline, None
    if callable(baseline) or not _arraylike(baseline):
        raise TypeError(
            f"{fn}: baseline must be None, an array (a constant, a moving average such as "
            f"jaxgrad.baselines.ema state.value, or a learned prediction), or one of "
            f"{BASELINES}; got {type(baseline).__name__}."
        )
    shape = jnp.shape(baseline)
    if shape not in ((), (num_samples,)):
        raise ValueError(
            f"{fn}: an array baseline must be a scalar or have shape (num_samples,) = "
            f"({num_samples},), got shape {shape}. A baseline must not depend on the samples; "
            f"vmap the estimator over inputs for input-dependent baselines."
        )
    return "array", baseline


def _arraylike(x: Any) -> bool:
    try:
        jnp.asarray(x)
    except (TypeError, ValueError):
        return False
    return True


def _check_normalize(normalize: Any, fn: str) -> Any:
    if normalize is None:
        return None
    if isinstance(normalize, str | bool) or callable(normalize) or not _arraylike(normalize):
        raise TypeError(
            f"{fn}: normalize must be None or the current scale, a positive scalar array "
            f"(e.g. jaxgrad.baselines.normalizer state.scale), got {type(normalize).__name__}."
        )
    if jnp.shape(normalize) != ():
        raise ValueError(
            f"{fn}: normalize must be a scalar scale, got shape {jnp.shape(normalize)}."
        )
    checks.check_positive(
        normalize,
        fn,
        "normalize",
        hint="Pass the current scale of jaxgrad.baselines.normalizer (state.scale, at "
        "least 1), or normalize=None for no variance normalization.",
    )
    return normalize


def _score_function(
    f: Callable[..., Array],
    dist: Any,
    num_samples: int,
    baseline: Any,
    normalize: Any,
    return_f_values: bool,
    fn: str,
    f_takes_key: bool = False,
) -> Callable[..., Any]:
    common.check_f(f, fn)
    common.check_dist(dist, fn)
    num_samples = _check_num_samples(num_samples, baseline, fn)
    mode, const = _check_baseline(baseline, num_samples, fn)
    scale = _check_normalize(normalize, fn)
    return_f_values = bool(return_f_values)
    fs = common.batch_f(f, fn, f_takes_key=f_takes_key)

    def log_prob(params: Any, x: Any) -> Array:
        return dist.log_prob(params, x)

    def est(key: Any, params: Any, *args: Any) -> Any:
        checks.check_key(key, fn)
        key, f_key = common.split_f_key(key, f_takes_key)
        frozen = jax.lax.stop_gradient(params)
        xs = jax.lax.stop_gradient(common.sample_n(dist, key, frozen, num_samples))
        _check_log_prob(dist, frozen, xs, fn)
        values = fs(xs, *args, key=f_key)
        out_dtype = _float_dtype(values)
        f_sg = jax.lax.stop_gradient(values)

        if mode == "optimal":
            scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(frozen, xs)
            dtype = _wider(out_dtype, jax.tree.leaves(scores)[0].dtype)
            fc = f_sg.astype(dtype)
            b = baselines.optimal(fc, scores)
            s = 1 if scale is None else jax.lax.stop_gradient(jnp.asarray(scale)).astype(dtype)

            def coordinate_grad(g: Array, bi: Array) -> Array:
                g = g.astype(dtype)
                signal = fc.reshape((-1,) + (1,) * (g.ndim - 1)) - bi.astype(dtype)
                return jnp.mean(signal * g, axis=0) / s

            grad = jax.tree.map(coordinate_grad, scores, b)
            value = common.with_gradient(
                jnp.mean(values.astype(out_dtype)), params, grad, fn=f'{fn}(baseline="optimal")'
            )
            aux_baseline = b
        else:
            lp = jax.vmap(log_prob, in_axes=(None, 0))(params, xs)
            dtype = _wider(out_dtype, lp.dtype)
            fc = values.astype(dtype)
            if mode == "none":
                b = jnp.zeros((num_samples,), dtype)
            elif mode == "array":
                b = jnp.broadcast_to(jnp.asarray(const).astype(dtype), (num_samples,))
            else:  # "loo"
                b = baselines.loo(f_sg.astype(dtype))
            b = jax.lax.stop_gradient(b)
            signal = fc - b
            if scale is not None:
                signal = signal / jax.lax.stop_gradient(jnp.asarray(scale)).astype(dtype)
            box = common.magic_box(lp.astype(dtype))
            value = jnp.mean(fc + (box - 1) * signal).astype(out_dtype)
            aux_baseline = b

        if not return_f_values:
            return value
        aux = ScoreFunctionAux(
            f_values=f_sg, samples=xs, baseline=jax.lax.stop_gradient(aux_baseline)
        )
        return value, aux

    return est


def score_function(
    f: Callable[..., Array],
    *,
    dist: Any,
    num_samples: int = 1,
    baseline: Any = None,
    normalize: Any = None,
    return_f_values: bool = False,
    f_takes_key: bool = False,
) -> Callable[..., Any]:
    r"""The score-function (REINFORCE) estimator as a function transformation.

    For :math:`x_n \sim p_\theta`, ``n = 1..N``, and baselines :math:`b_n`,

    .. math::
        \mathrm{est} = \frac1N \sum_n f(x_n, \ldots), \qquad
        \nabla_\theta\, \mathrm{est} = \frac1N \sum_n \frac{f(x_n) - b_n}{s}\,
        \nabla_\theta \log p_\theta(x_n),

    built as a DiCE surrogate (see the module docstring), so ``jax.hessian``
    and higher derivatives of ``est`` are unbiased too (except with
    ``baseline="optimal"``). Baselines:

    * ``None``: :math:`b_n = 0`.
    * an array, scalar or ``[N]``: a constant, a moving average
      (``jaxgrad.baselines.ema`` ``state.value``) or a learned input-dependent
      prediction (train it with ``jaxgrad.baselines.loss``); its gradient is
      stopped.
    * ``"loo"``: :math:`b_n = \frac{1}{N-1} \sum_{j \ne n} f(x_j)` (RLOO).
    * ``"optimal"``: per coordinate :math:`i`,
      :math:`b_{n,i} = \sum_{j \ne n} f_j g_{j,i}^2 / \sum_{j \ne n} g_{j,i}^2`
      with :math:`g_j = \nabla_\theta \log p_\theta(x_j)`, the leave-one-out
      estimate of :math:`E[f g_i^2] / E[g_i^2]`. The gradient is attached by
      a custom rule, so this option is **first-order only**: a second
      derivative in ``params`` (or mixed with ``*args``) raises a
      ``TypeError`` instead of returning zeros; use ``"loo"`` for curvature.

    ``normalize`` divides the centered learning signal by a scale :math:`s`
    (variance normalization, NVIL): pass the current
    ``jaxgrad.baselines.normalizer`` ``state.scale`` = ``max(1, std)``.

    Unbiased (with ``normalize``: unbiased for ``grad E[f] / s``). ``f`` is a
    black box: it is only evaluated at samples, never differentiated with
    respect to ``x`` (it may be non-differentiable or even discontinuous).
    Any ``dist`` with ``sample`` and a differentiable ``log_prob`` works.
    Cost: ``num_samples`` evaluations of ``f`` (batched with ``vmap``), plus
    ``num_samples`` gradients of ``log_prob`` for ``"optimal"``.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x``.
      dist: a distribution spec (``jaxgrad.dists.bernoulli``, ``categorical``,
        ``normal``, or any object with ``sample(key, params)`` and
        ``log_prob(params, x)``).
      num_samples: samples per estimate (static; ``>= 2`` for ``"loo"`` and
        ``"optimal"``).
      baseline: ``None``, an array, ``"loo"`` or ``"optimal"``.
      normalize: ``None`` or a positive scalar scale (may be traced).
      return_f_values: if true, ``est`` returns ``(estimate, aux)`` with
        ``aux`` a :class:`jaxgrad.ScoreFunctionAux` (fields ``f_values``,
        ``samples``, ``baseline``),
        so that baseline state can be updated in the same jitted step; use
        ``jax.grad(est, argnums=1, has_aux=True)``.
      f_takes_key: if true, ``f`` is a cost with its own randomness (an RL
        reward, a noisy simulator, dropout), called as ``f(x, key, *args)``;
        ``est`` splits its ``key`` once into a sampling key and a key for
        ``f``, which is split again into one independent key per evaluation.
        No two evaluations share noise, so a baseline (``"loo"``,
        ``"optimal"``) cannot cancel it: with one key shared through
        ``*args``, the other samples' costs carry the same noise and LOO
        subtracts it exactly, which makes a variance study optimistic for an
        environment whose noise cannot be replayed. The estimator stays
        unbiased for ``grad E_x E_key[f]``. Static; default ``False`` (then
        the samples for a given ``key`` are exactly those of ``f(x, *args)``).

    Returns:
      ``est(key, params, *args)`` returning the estimate, a scalar in the dtype
      of ``f``'s output (or ``(estimate, aux)``).

    Raises:
      TypeError: if ``f`` is not callable, ``dist`` lacks ``sample`` or
        ``log_prob``, ``num_samples`` is not an int, ``baseline`` or
        ``normalize`` has the wrong type, or ``key`` is not a key.
      ValueError: if ``num_samples < 1`` (``< 2`` for ``"loo"``/``"optimal"``),
        ``baseline`` is an unknown string or an array of the wrong shape,
        ``normalize`` is not a positive scalar, ``key`` is a batch of keys,
        ``f`` does not return a scalar, or ``dist.log_prob`` does not.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> est = jaxgrad.score_function(f, dist=jaxgrad.dists.bernoulli, num_samples=4,
      ...                              baseline="loo")
      >>> g = jax.grad(est, argnums=1)(jax.random.key(0), jnp.zeros(3))
      >>> g.shape
      (3,)
      >>> h = jax.hessian(est, argnums=1)(jax.random.key(1), jnp.zeros(3))  # DiCE
      >>> h.shape
      (3, 3)

    References:
      Williams, *Simple statistical gradient-following algorithms for
      connectionist reinforcement learning*, Machine Learning 1992.
      https://doi.org/10.1007/BF00992696 ;
      Foerster et al., *DiCE: The Infinitely Differentiable Monte Carlo
      Estimator*, ICML 2018. https://arxiv.org/abs/1802.05098 ;
      Mao et al., *A Baseline for Any Order Gradient Estimation in Stochastic
      Computation Graphs*, ICML 2019. https://arxiv.org/abs/1809.04227 ;
      Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
      Free!*, 2019. https://openreview.net/forum?id=r1lgTGL5DE ;
      Mnih & Gregor, *Neural Variational Inference and Learning in Belief
      Networks*, ICML 2014. https://arxiv.org/abs/1402.0030 ;
      Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
      JMLR 2020, sec. 4. https://jmlr.org/papers/v21/19-346.html
    """
    return _score_function(
        f, dist, num_samples, baseline, normalize, return_f_values, "score_function", f_takes_key
    )


def rloo(
    f: Callable[..., Array],
    *,
    dist: Any,
    num_samples: int,
    normalize: Any = None,
    return_f_values: bool = False,
    f_takes_key: bool = False,
) -> Callable[..., Any]:
    r"""REINFORCE leave-one-out: the score function with the mean of the other samples.

    .. math::
        \nabla_\theta\, \mathrm{est} = \frac1K \sum_{k=1}^K \Big(f(x_k) - \frac{1}{K-1}
        \sum_{j \ne k} f(x_j)\Big) \nabla_\theta \log p_\theta(x_k) ,

    the same as ``score_function(f, dist=dist, num_samples=K, baseline="loo")``.
    Unbiased, with unbiased higher derivatives (DiCE); ``f`` is a black box;
    any ``dist`` with ``sample`` and ``log_prob``. Cost: ``num_samples``
    evaluations of ``f``.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x``.
      dist: a distribution spec.
      num_samples: ``K >= 2`` samples per estimate (static).
      normalize: ``None`` or a positive scalar scale (see :func:`score_function`).
      return_f_values: return ``(estimate, aux)`` (see :func:`score_function`).
      f_takes_key: call ``f(x, key, *args)`` with an independent key per
        evaluation (see :func:`score_function`); the leave-one-out baseline
        then cannot cancel ``f``'s noise.

    Returns:
      ``est(key, params, *args) -> scalar`` (or ``(estimate, aux)``).

    Raises:
      TypeError: as :func:`score_function`.
      ValueError: if ``num_samples < 2``, and as :func:`score_function`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> est = jaxgrad.rloo(f, dist=jaxgrad.dists.bernoulli, num_samples=2)
      >>> g = jax.grad(est, argnums=1)(jax.random.key(0), jnp.zeros(1))
      >>> round(float(g[0]), 4) in (0.0, 0.05)  # two equal samples give 0; unequal, 0.05
      True

    References:
      Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
      Free!*, ICLR workshop 2019. https://openreview.net/forum?id=r1lgTGL5DE
    """
    return _score_function(
        f, dist, num_samples, "loo", normalize, return_f_values, "rloo", f_takes_key
    )
