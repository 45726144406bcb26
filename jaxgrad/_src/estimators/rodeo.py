r"""RODEO: REINFORCE leave-one-out with discrete Stein control variates (independent Bernoullis).

A Stein operator for a distribution ``q`` maps a function ``h`` to a function
with mean zero under ``q``. For a Markov kernel ``P`` that leaves ``q``
invariant (``qP = q``),

.. math::
    (\mathcal{A} h)(x) = \mathbb{E}_{y \sim P(x, \cdot)}[h(y)] - h(x), \qquad
    \mathbb{E}_{x \sim q}[(\mathcal{A} h)(x)] = \textstyle\sum_y (qP)(y) h(y)
    - \sum_x q(x) h(x) = 0

(Shi et al. 2022, sec. 3). For ``D`` independent coins ``q(x) = prod_d q_d(x_d)``,
``q_d(1) = sigma(l_d)``, the kernel used here is the random-scan Gibbs sampler,
which picks a coordinate ``d`` uniformly and redraws ``x_d ~ q_d``; each
single-site update keeps ``q``, so the mixture does. Its operator only needs
``h`` at ``x`` and at its ``D`` one-flip neighbours ``x^{(d)}``:

.. math::
    (\mathcal{A} h)(x) = \frac1D \sum_{d=1}^D q_d(1 - x_d)\,
    \big[h(x^{(d)}) - h(x)\big], \qquad q_d(1 - x_d) = |x_d - \sigma(l_d)| .

RODEO (sec. 4 and 5 of the paper) puts two such control variates into the
REINFORCE leave-one-out (RLOO) estimator with ``K`` samples. With
``s(x) = x - sigma(l) = grad_l log q(x)`` and ``f_{-k}`` the mean of ``f``
over the samples other than ``x_k``, the user's ``h`` gives two scalars per
point, ``(h^0, h^1)(y; f_{-k}, phi)``, informed by the other samples and
costing no evaluation of ``f``:

* a scalar CV in the baseline: ``b_k`` averages ``f(x_j) + (A h^0_j)(x_j)``
  over ``j != k``, with ``h^0_j = h^0(.; f_{-j})``;
* a vector CV ``(A H_k)(x_k)`` with ``H_k(y) = h^1(y; f_{-k}) s(y)``, the
  Stein transform of a surrogate of the REINFORCE term ``f(y) s(y)``.

The free parameters ``phi`` of ``h`` are tuned like RELAX's, by minimizing the
variance of the estimate with :func:`jaxgrad.variance_loss` (double
backprop): the estimate is attached with its dependence on ``phi`` live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import baselines, samplers
from jaxgrad._src.estimators import common

Array = jax.Array

_FN = "rodeo"


def _h_output(out: Any) -> Array:
    """``h``'s output as an array: a pair ``(h0, h1)`` of scalars is stacked."""
    if isinstance(out, tuple | list):
        if len(out) != 2:
            raise ValueError(
                f"{_FN}: h must return two scalars (h0, h1), the baseline part and the "
                f"score part, got a {type(out).__name__} of length {len(out)}."
            )
        return jnp.stack([jnp.asarray(o) for o in out])
    return jnp.asarray(out)


def _check_h_output(out: Any) -> None:
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2,):
        raise ValueError(
            f"{_FN}: h must return two scalars (h0, h1) (a pair, or an array of shape (2,)) "
            f"for one point y, got shape {shape}; h is called on one y of the shape of logits."
        )
    dtype = getattr(out, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{_FN}: h must return floating values, got dtype {dtype}.")


def rodeo(
    f: Callable[..., Array],
    h: Callable[..., Any],
    *,
    num_samples: int = 2,
    f_takes_key: bool = False,
) -> Callable[..., Array]:
    r"""The RODEO estimator: RLOO plus adaptable discrete Stein control variates.

    For logits ``l`` (any shape; its ``D`` elements are independent coins,
    ``p = sigma(l)``), ``K = num_samples`` samples ``x_k ~ q``, score
    ``s(x) = x - p``, the one-flip neighbours ``x^{(d)}``, the weights
    ``w_d(x) = q_d(1 - x_d) = |s_d(x)|`` and the leave-one-out means
    ``f_{-k} = (1/(K-1)) sum_{j != k} f(x_j)``, the user's
    ``h(y, f_{-k}, phi) = (h^0, h^1)`` defines

    .. math::
        (\mathcal{A} u)(x) &= \frac1D \sum_d w_d(x) \big[u(x^{(d)}) - u(x)\big]
            \quad \text{(random-scan Gibbs Stein operator)}, \\
        b_k &= \frac{1}{K-1} \sum_{j \ne k} \Big[f(x_j)
            + (\mathcal{A} h^0(\cdot, f_{-j}))(x_j)\Big], \\
        \hat g &= \frac1K \sum_k \Big[(f(x_k) - b_k)\, s(x_k)
            + (\mathcal{A} H_k)(x_k)\Big], \qquad
            H_k(y) = h^1(y, f_{-k})\, s(y),

    where, in closed form,
    ``(A H_k)(x)_i = (s_i(x) / D) [sum_d w_d(x) (h^1(x^{(d)}) - h^1(x)) - h^1(x^{(i)})]``.
    With ``h = 0`` it is RLOO exactly.

    **Unbiasedness.** ``E[f(x_k) s(x_k)] = grad E f`` (score identity). The
    baseline: ``f(x_j)`` (``j != k``) is independent of ``x_k`` and
    ``E s(x_k) = 0``; ``h^0_j`` depends on ``x_{-j}`` (through ``f_{-j}``,
    which contains ``f(x_k)``), but given ``x_{-j}`` it is a fixed function
    and ``x_j ~ q`` is independent, so ``E[(A h^0_j)(x_j) | x_{-j}] = 0``
    (``qP = q``), and ``s(x_k)`` is a function of ``x_{-j}``: the product has
    mean zero. Likewise ``H_k`` is fixed given ``x_{-k}``, so
    ``E[(A H_k)(x_k) | x_{-k}] = 0``. Hence ``E g_hat = grad_l E f`` for every
    ``h`` and ``phi`` (``h`` must be finite on ``{0, 1}^D``).

    The estimator takes the parameters of ``h`` as its first extra argument,
    ``est(key, logits, h_params, *args)``, and calls
    ``h(y, f_others, h_params, *args)`` with ``y`` a binary point of the shape
    and dtype of ``logits``, ``f_others`` the scalar ``f_{-k}`` (dtype of
    ``logits``, gradient stopped) and ``*args`` with their gradient stopped.
    The value of ``est`` is the mean of ``f(x_k, *args)``, and gradients with
    respect to ``*args`` are pathwise on those samples.
    :func:`jaxgrad.variance_loss` of ``est`` differentiates the estimate with
    respect to ``h_params`` (double backprop) to tune them. The paper's ``h`` is
    a small network fed a linearization of ``f`` around the other samples
    (which needs ``grad f``) and ``f_{-k}``, with ``h^0, h^1`` scaled by scalars
    ``alpha, beta`` initialized at 0; here ``h`` is any function, and a
    black-box ``h`` keeps the estimator black-box.

    Unbiased; ``f`` is a black box (evaluated at the ``K`` binary samples only,
    never differentiated). Cost: ``K`` evaluations of ``f`` and ``K (D + 1)``
    of ``h`` (at every sample and its ``D`` neighbours), no extra ``f``. First
    order only in ``logits``: a second derivative in ``logits`` (or mixed with
    ``*args``) raises a ``TypeError``; derivatives of the estimate with
    respect to ``h_params`` work. Masked coins (logits ``+-inf``) have zero
    weight and zero score, hence a zero gradient.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one binary sample ``x`` of the
        shape of ``logits`` (dtype of ``logits``).
      h: the control-variate function ``h(y, f_others, h_params, *args) ->
        (h0, h1)``: two floating scalars (a pair or an array of shape
        ``(2,)``), ``h0`` for the baseline, ``h1`` for the score part. It is
        never given a key, also with ``f_takes_key``.
      num_samples: ``K >= 2`` samples per estimate (static).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and each of the ``K``
        evaluations gets its own independent key (see
        ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, logits, h_params, *args) -> scalar``; ``jax.grad(est,
      argnums=1)`` is the RODEO estimate.

    Raises:
      TypeError: if ``f`` or ``h`` is not callable, ``num_samples`` is not an
        int, ``f_takes_key`` is not a bool, ``logits`` is not floating,
        ``key`` is not a key, ``est`` is called without ``h_params``, or ``f``
        or ``h`` returns non-floating values.
      ValueError: if ``num_samples < 2``, ``key`` is a batch of keys, ``f``
        does not return a scalar, or ``h`` does not return two scalars.

    Example:
      Tuning a linear ``h`` by the variance loss while training the logits:

      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> def h(y, f_others, phi):
      ...     return jnp.sum(phi[0] * y), jnp.sum(phi[1] * y) + phi[2, 0] * f_others
      >>> loss = jaxgrad.variance_loss(jaxgrad.rodeo(f, h, num_samples=2))
      >>> @jax.jit
      ... def step(key, logits, phi):
      ...     (_, (value, g)), d_phi = jax.value_and_grad(loss, argnums=2, has_aux=True)(
      ...         key, logits, phi)
      ...     return logits - 1.0 * g, phi - 0.01 * d_phi
      >>> logits, phi = jnp.zeros(3), jnp.zeros((3, 3))
      >>> for key in jax.random.split(jax.random.key(0), 200):
      ...     logits, phi = step(key, logits, phi)
      >>> bool(jnp.all(logits < -0.5))  # toward b = 0, since 0.45 < 1/2
      True

    References:
      Shi, Zhou, Hwang, Titsias & Mackey, *Gradient Estimation with Discrete
      Stein Operators*, NeurIPS 2022. https://arxiv.org/abs/2202.09497 ;
      Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
      Free!*, 2019. https://openreview.net/forum?id=r1lgTGL5DE
    """
    num_samples, fs = common.check_estimator(
        f,
        num_samples,
        _FN,
        minimum=2,
        why="The baseline and the control variates of each sample are built from the "
        "other samples (leave-one-out).",
        f_takes_key=f_takes_key,
    )
    if not callable(h):
        raise TypeError(
            f"{_FN}: h must be a callable h(y, f_others, h_params, *args) -> (h0, h1), "
            f"got {type(h).__name__}."
        )
    k = num_samples

    def est(key: Any, logits: Any, *h_params_and_args: Any) -> Array:
        of = "h(y, f_others, h_params, *args)"
        h_params, args = common.split_tuning_params(h_params_and_args, _FN, "h_params", of)
        logits = common.check_logits(key, logits, _FN)
        key, f_key = common.split_f_key(key, f_takes_key)
        dtype, shape = logits.dtype, logits.shape
        cdtype = samplers.compute_dtype(dtype)
        d = max(int(logits.size), 1)
        l = jax.lax.stop_gradient(logits).astype(cdtype).reshape(-1)
        p = jax.nn.sigmoid(l)
        u = samplers.uniform_open(key, (k, *shape), cdtype).reshape(k, -1)
        x = (u < p).astype(cdtype)  # [K, D]
        values = fs(x.reshape(k, *shape).astype(dtype), *args, key=f_key)
        fv = jax.lax.stop_gradient(values).astype(cdtype)
        f_others = baselines.leave_one_out_mean(fv)  # [K]
        # score s = x - p, and the Gibbs weights w = q_d(1 - x_d) = |s|, without 1 - p.
        s = jnp.where(x > 0.5, jax.nn.sigmoid(-l), -p)
        w = jnp.abs(s)
        eye = jnp.eye(x.shape[1], dtype=cdtype)
        nbrs = x[:, None, :] + eye * (1.0 - 2.0 * x[:, None, :])  # [K, D, D]: flip d
        points = jnp.concatenate([x[:, None, :], nbrs], axis=1)  # [K, D + 1, D]
        frozen = jax.lax.stop_gradient(tuple(args))

        def h_at(y: Array, c: Array) -> Array:
            out = _h_output(h(y.reshape(shape).astype(dtype), c.astype(dtype), h_params, *frozen))
            return out.astype(cdtype)

        y0 = jax.ShapeDtypeStruct(shape, dtype)
        c0 = jax.ShapeDtypeStruct((), dtype)
        _check_h_output(jax.eval_shape(lambda y, c: _h_output(h(y, c, h_params, *frozen)), y0, c0))
        hv = jax.vmap(lambda pts, c: jax.vmap(lambda y: h_at(y, c))(pts))(points, f_others)
        h0, h1 = hv[..., 0], hv[..., 1]  # [K, D + 1]
        a_h0 = jnp.sum(w * (h0[:, 1:] - h0[:, :1]), axis=1) / d  # (A h0_k)(x_k), [K]
        spread = jnp.sum(w * (h1[:, 1:] - h1[:, :1]), axis=1, keepdims=True)
        a_h1 = s * (spread - h1[:, 1:]) / d  # (A H_k)(x_k), [K, D]
        shifted = fv + a_h0
        baseline = baselines.leave_one_out_mean(shifted)
        g = jnp.mean((fv - baseline)[:, None] * s + a_h1, axis=0).reshape(shape)
        # g keeps its dependence on h_params (double backprop for variance_loss).
        return common.with_gradient(
            jnp.mean(values), logits, g.astype(dtype), fn=_FN, differentiable=True
        )

    return est


def linear_h(y: Array, f_others: Array, phi: Any, *args: Any) -> tuple[Array, Array]:
    r"""The registry's default ``h``: linear in the point, with a leave-one-out scale.

    .. math::
        h^0(y) = \langle w_0, y \rangle, \qquad
        h^1(y) = \langle w_1, y \rangle + \gamma f_{-k},

    with ``phi = (w_0, w_1, gamma)`` (two arrays of the shape of ``logits`` and
    a scalar). Since ``A s = -s / D``, the ``gamma`` term adds
    ``-(gamma / D) f_{-k} s(x_k)``: a learned rescaling of the RLOO baseline.
    At :func:`linear_h_init` (all zero) RODEO is RLOO. The cost's ``*args`` are
    ignored.
    """
    del args
    w0, w1, gamma = phi
    return jnp.sum(w0 * y), jnp.sum(w1 * y) + gamma * f_others


def linear_h_init(logits: Any) -> tuple[Array, Array, Array]:
    """The initial parameters of :func:`linear_h`: zeros in the dtype of ``logits``."""
    logits = jnp.asarray(logits)
    zeros = jnp.zeros(logits.shape, logits.dtype)
    return zeros, zeros, jnp.zeros((), logits.dtype)


def rodeo_untrained(
    f: Callable[..., Array], *, num_samples: int = 2, f_takes_key: bool = False
) -> Callable[..., Array]:
    """RODEO with :func:`linear_h` at :func:`linear_h_init`: ``est(key, logits, *args)``.

    The registry's entry ``"rodeo"``: the estimator as a user finds it before
    tuning ``h`` with ``variance_loss`` (equal to RLOO at these parameters,
    at the cost of ``K (D + 1)`` evaluations of the linear ``h``).
    """
    inner = rodeo(f, linear_h, num_samples=num_samples, f_takes_key=f_takes_key)

    def est(key: Any, logits: Any, *args: Any) -> Array:
        return inner(key, logits, linear_h_init(common.check_logits(key, logits, _FN)), *args)

    return est
