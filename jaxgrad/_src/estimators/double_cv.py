r"""Double control variates: RLOO plus a global control variate from a Taylor expansion of f.

Titsias & Shi (AISTATS 2022) keep REINFORCE leave-one-out (RLOO), whose
baseline is the *local* control variate of each sample, and add a second,
*global* one: the linear term of the first-order Taylor expansion of ``f``
around the mean ``mu = E[x]``,

.. math::
    f(x) \approx f(\mu) + \nabla f(\mu)^\top (x - \mu),

whose score-function gradient is known in closed form. ``grad f(mu)`` would
cost an extra evaluation at the (relaxed) mean; the estimator reads the
expansion's slope off the gradients of ``f`` at the *other* samples instead,
which are free where ``f`` is backpropagated through anyway (a VAE decoder)
and keep the control variate independent of the sample it multiplies. The
paper's experiments are binary; the same derivation holds for one-hot
categoricals, whose score is also ``x - mu`` in the logits, with the
covariance of the one-hot vector in place of ``p (1 - p)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import baselines, checks, samplers, sharding
from jaxgrad._src.estimators import common

Array = jax.Array

_FN = "double_cv"


def _family(dist: Any) -> str:
    """``"bernoulli"`` or ``"categorical"``; raises ``TypeError`` for any other spec."""
    from jaxgrad._src import dists  # estimators sit above dists

    common.check_dist(dist, _FN)
    if isinstance(dist, dists.Bernoulli):
        return "bernoulli"
    if isinstance(dist, dists.Categorical):
        return "categorical"
    name = getattr(dist, "name", type(dist).__name__)
    raise TypeError(
        f"{_FN}: dist must be jaxgrad.dists.bernoulli or jaxgrad.dists.categorical (the "
        f"Taylor control variate needs the mean and covariance of x in closed form), got "
        f"{name}; for other distributions use jaxgrad.rloo."
    )


def _check_alpha(alpha: Any, shape: tuple[int, ...], cdtype: Any) -> Array:
    """``alpha`` as an array of ``cdtype`` broadcastable to ``shape`` (the logits)."""
    if isinstance(alpha, bool) or alpha is None or isinstance(alpha, str) or callable(alpha):
        raise TypeError(
            f"{_FN}: alpha must be a real scalar or an array broadcastable to the logits "
            f"(1.0 is the first-order Taylor coefficient, 0.0 gives RLOO), got "
            f"{checks._describe(alpha)}."
        )
    a = jnp.asarray(alpha)
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)):
        raise TypeError(
            f"{_FN}: alpha must be a real scalar or array, got dtype {a.dtype}; pass e.g. "
            f"alpha=1.0."
        )
    try:
        ok = jnp.broadcast_shapes(a.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{_FN}: alpha must be a scalar or broadcastable to logits of shape {shape}, got "
            f"shape {a.shape}."
        )
    return a.astype(cdtype)


def double_cv(
    f: Callable[..., Array],
    *,
    dist: Any,
    num_samples: int = 2,
    alpha: Any = 1.0,
    f_takes_key: bool = False,
) -> Callable[..., Array]:
    r"""The double control variate estimator (RLOO plus a Taylor control variate).

    For ``K = num_samples`` samples ``x_k ~ q_l`` (independent Bernoullis with
    ``mu = sigmoid(l)``, or one-hot categoricals with ``mu = softmax(l)``), the
    score in the logits is ``s(x) = x - mu`` and ``E[s(x) (x - mu)^T] = Sigma``,
    the covariance of ``x`` (``diag(p (1 - p))``; per categorical variable
    ``diag(pi) - pi pi^T``). With ``f_k = f(x_k)``, the gradients of ``f`` in
    ``x`` at the samples ``nabla f_k``, their leave-one-out means
    ``c_k = (1/(K-1)) sum_{j != k} nabla f_j`` and their mean ``bar c``,

    .. math::
        h_k = f_k - \alpha\, c_k^\top (x_k - \mu), \qquad
        \hat g = \frac1K \sum_{k=1}^K \Big(h_k - \frac{1}{K-1} \sum_{j \ne k} h_j\Big)
                 s(x_k) + \alpha\, \Sigma\, \bar c .

    ``h_k`` is ``f_k`` minus the linear term of the Taylor expansion of ``f``
    around ``mu`` (slope estimated at the other samples); RLOO is applied to
    ``h`` and the control variate's exact score-function gradient,
    ``E[c^T (x - mu) s(x)] = Sigma c``, is added back. For ``K = 2`` this is
    the estimator of Titsias & Shi (2022) as in the authors' toy experiment
    (where ``alpha`` has the opposite sign); for ``K > 2`` the slope ``c_k``
    is the leave-one-out mean of the other samples' gradients. ``alpha = 0``
    is RLOO exactly (same samples, same numbers).

    Unbiased for every ``alpha`` that does not depend on the samples (a
    constant, or a value tuned on earlier steps): (i) ``f_j`` and
    ``c_j^T (x_j - mu)`` for ``j != k`` have zero mean against ``s(x_k)``,
    since ``c_j`` does not involve ``x_j`` and ``E[x_j - mu | x_{-j}] = 0``
    (and ``E[s(x_k)] = 0`` for ``f_j``); (ii) given the other samples,
    ``E[c_k^T (x_k - mu) s(x_k)] = Sigma c_k``, and
    ``(1/K) sum_k Sigma c_k = Sigma bar c`` is exactly the term added back;
    what remains is ``(1/K) sum_k E[f_k s(x_k)] = grad E[f]``. An ``alpha``
    broadcastable to ``logits`` scales each coordinate's control variate on
    its own (each coordinate's identity holds for its own ``alpha``).

    The paper tunes ``alpha`` by minimizing the variance: ``alpha`` may be a
    traced array, and ``jax.grad`` of ``jaxgrad.variance_loss(est)`` with
    respect to it (estimator built inside the differentiated function) is
    the single-sample gradient of ``E[sum g_hat^2]``. The default ``1.0`` is
    the Taylor coefficient itself, untuned.

    The value of ``est`` is the mean of ``f`` over the ``K`` samples, and
    gradients with respect to ``*args`` are pathwise on them. Not a black box:
    ``f`` must be differentiable in ``x`` at the binary / one-hot samples
    (defined on the relaxed domain around them). Cost: ``num_samples``
    evaluations of ``f``, each with one backward pass for ``nabla f_k`` (the
    value and the gradient come from the same evaluation, ``jax.vjp``, so
    with ``f_takes_key`` they share that evaluation's key); ``f_evals`` in the
    registry counts ``num_samples``, not the backward passes. First-order only:
    a second derivative in ``logits`` (or mixed with ``*args``) raises a
    ``TypeError``; derivatives of the estimate in ``alpha`` work.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x`` of the shape of
        ``logits`` (``{0., 1.}`` entries, or one-hot rows ``[..., K]``),
        differentiable in ``x``.
      dist: ``jaxgrad.dists.bernoulli`` or ``jaxgrad.dists.categorical``.
      num_samples: ``K >= 2`` samples per estimate (static).
      alpha: the control variate's coefficient, a scalar or an array
        broadcastable to ``logits``; may be traced. ``1.0`` (default) is the
        first-order Taylor coefficient, ``0.0`` gives RLOO.
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and every evaluation
        gets its own independent key (see ``jaxgrad.score_function``); static,
        default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      double-CV estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``dist`` is not the Bernoulli or
        categorical spec, ``num_samples`` is not an int, ``alpha`` is not a
        real number or array, ``logits`` is not floating or ``key`` is not a
        key.
      ValueError: if ``num_samples < 2``, ``alpha`` does not broadcast to
        ``logits``, categorical ``logits`` are a scalar, ``key`` is a batch of
        keys, or ``f`` does not return a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> est = jaxgrad.double_cv(f, dist=jaxgrad.dists.bernoulli, num_samples=2)
      >>> g = jax.jit(jax.grad(est, argnums=1))(jax.random.key(0), jnp.zeros(3))
      >>> g.shape
      (3,)
      >>> def tuning_loss(alpha, key, logits):  # the paper's variance tuning of alpha
      ...     est = jaxgrad.double_cv(f, dist=jaxgrad.dists.bernoulli, alpha=alpha)
      ...     return jaxgrad.variance_loss(est)(key, logits)[0]
      >>> d_alpha = jax.jit(jax.grad(tuning_loss))(1.0, jax.random.key(1), jnp.zeros(3))
      >>> d_alpha.shape
      ()

    References:
      Titsias & Shi, *Double Control Variates for Gradient Estimation in
      Discrete Latent Variable Models*, AISTATS 2022.
      https://arxiv.org/abs/2111.05300 ;
      Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
      Free!*, 2019. https://openreview.net/forum?id=r1lgTGL5DE
    """
    family = _family(dist)
    why = "(the leave-one-out baseline of each sample is formed from the other samples)"
    num_samples, fs = common.check_estimator(f, num_samples, _FN, 2, why, f_takes_key=f_takes_key)
    if isinstance(alpha, bool) or alpha is None or isinstance(alpha, str) or callable(alpha):
        _check_alpha(alpha, (), jnp.float32)  # raises the TypeError early, at build time
    k = num_samples

    def est(key: Any, logits: Any, *args: Any) -> Array:
        logits = common.check_logits(key, logits, _FN, classes_last=family == "categorical")
        key, f_key = common.split_f_key(key, f_takes_key)
        dtype = logits.dtype
        cdtype = samplers.compute_dtype(dtype)
        shape = logits.shape
        a = _check_alpha(alpha, shape, cdtype)
        frozen = jax.lax.stop_gradient(logits)
        xs = jax.lax.stop_gradient(common.sample_n(dist, key, frozen, k))  # [K, *shape]

        # One evaluation per sample gives f_k (live in *args: pathwise) and grad_x f_k.
        values, pullback = jax.vjp(lambda x: fs(x, *args, key=f_key), xs)
        one = sharding.vary_like(jnp.ones_like(values), values)
        grads = jax.lax.stop_gradient(pullback(one)[0]).astype(cdtype)  # [K, *shape]

        l = frozen.astype(cdtype)
        if family == "bernoulli":
            mu = jax.nn.sigmoid(l)
            var = mu * jax.nn.sigmoid(-l)

            def cov(c: Array) -> Array:  # Sigma c
                return var * c

        else:
            mu = jax.nn.softmax(l, axis=-1)

            def cov(c: Array) -> Array:  # per variable (diag(pi) - pi pi^T) c
                return mu * (c - jnp.sum(mu * c, axis=-1, keepdims=True))

        x = xs.astype(cdtype)
        centered = x - mu  # the score s(x_k) = grad_l log q(x_k), and x_k - mu
        f_c = jax.lax.stop_gradient(values).astype(cdtype)
        total_grad = jnp.sum(grads, axis=0)
        c_loo = baselines.leave_one_out_mean(grads)  # c_k, [K, *shape]
        axes = tuple(range(1, 1 + len(shape)))
        t = jnp.sum(c_loo * centered, axis=axes)  # c_k^T (x_k - mu), [K]

        def loo(v: Array) -> Array:  # v_k - mean_{j != k} v_j
            return v - baselines.leave_one_out_mean(v)

        expand = (k,) + (1,) * len(shape)
        signal = loo(f_c).reshape(expand) - a * loo(t).reshape(expand)  # [K, *shape]
        grad = jnp.mean(signal * centered, axis=0) + a * cov(total_grad / k)
        value = jnp.mean(values)
        # grad keeps its dependence on alpha only (double backprop for variance tuning).
        return common.with_gradient(value, logits, grad.astype(dtype), fn=_FN, differentiable=True)

    return est
