r"""REBAR and RELAX: score function with a reparameterized, relaxed control variate.

For Bernoulli variables (``dist=jaxgrad.dists.bernoulli``, the default) both
estimators draw a logistic sample ``z = l + log u - log(1 - u)`` per coin and
set ``b = 1[z > 0]`` (so ``b ~ Bernoulli(sigma(l))``); for categorical ones
(``dist=jaxgrad.dists.categorical``, logits ``[..., K]``) they draw
``z = l + G`` with Gumbel noise ``G`` and set ``b = onehot(argmax_k z_k)``
(so ``b ~ Categorical(softmax(l))``, Gumbel-max). Then they draw a second
sample ``z~`` from the law of ``z`` conditioned on that ``b``. A control variate ``c``
of the continuous sample enters twice: as a baseline for the score function
(evaluated at ``z~``, which is independent of the score given ``b``) and as its
own reparameterized correction ``grad c(z) - grad c(z~)``, so the estimator stays
unbiased for any ``c``:

.. math::
    \hat g = \big[f(b) - c(\tilde z)\big] \nabla_l \log p(b \mid l)
             + \nabla_l c(z) - \nabla_l c(\tilde z) .

REBAR takes ``c(z) = eta * f(sigmoid(z / temperature))`` (categorical:
``eta * f(softmax(z / temperature))``, the Gumbel-softmax relaxation); RELAX
takes a learned ``c``. Their free parameters are tuned by minimizing the variance of ``g_hat``,
whose gradient is obtained by differentiating ``g_hat`` itself (double
backprop): :func:`variance_loss` returns the single-sample objective.

The estimate is attached to ``logits`` with ``l + (l - sg(l)) * g_hat`` where
``g_hat`` is computed at ``sg(l)`` but is *not* stopped with respect to the
tuning parameters; that is what lets ``jax.grad`` of ``sum(g_hat**2)`` reach
``eta``, ``temperature`` and the control-variate parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import checks, relaxations, samplers, sharding
from jaxgrad._src.dists import discrete
from jaxgrad._src.estimators import common

Array = jax.Array


def _logistic_pair(key: Any, num_samples: int, shape: tuple, dtype: Any) -> tuple[Array, Array]:
    """Uniform noise ``u`` (for ``z``) and ``v`` (for ``z~ | b``), ``[num_samples, *shape]``."""
    uv = samplers.uniform_open(key, (2, num_samples, *shape), dtype)
    return uv[0], uv[1]


def _conditional_logistic(l: Array, b: Array, v: Array) -> Array:
    r"""A sample of ``z ~ Logistic(l)`` conditioned on ``1[z > 0] = b``, from ``v ~ U(0, 1)``.

    With ``p = sigma(l)``, the uniform behind ``z`` is ``(1 - p) + v p`` given
    ``b = 1`` and ``v (1 - p)`` given ``b = 0``; simplifying
    ``l + log u~ - log(1 - u~)`` in each case gives the stable forms

    .. math::
        \tilde z = \log(1 + v e^{l}) - \log(1 - v) \;\; (b = 1), \qquad
        \tilde z = \log v - \log(1 + (1 - v) e^{-l}) \;\; (b = 0),

    both differentiable in ``l`` with ``b`` and ``v`` held fixed.
    """
    log_v = jnp.log(v)
    log_1mv = jnp.log1p(-v)
    z_one = jax.nn.softplus(l + log_v) - log_1mv
    z_zero = log_v - jax.nn.softplus(log_1mv - l)
    return jnp.where(b > 0.5, z_one, z_zero)


def _gumbel_pair(key: Any, num_samples: int, shape: tuple, dtype: Any) -> tuple[Array, Array]:
    """Gumbel noise ``G`` (for ``z``), uniforms ``v`` (for ``z~ | b``), ``[num_samples, *shape]``.

    ``G = -log(-log u)`` from the same pair of open uniforms as the Bernoulli
    path (``u`` in ``(tiny, 1)``, so ``G`` is finite).
    """
    u, v = _logistic_pair(key, num_samples, shape, dtype)
    return -jnp.log(-jnp.log(u)), v


def _conditional_gumbel_logits(l: Array, b: Array, v: Array) -> Array:
    r"""A sample of ``z = l + G`` conditioned on ``argmax z = b`` (one-hot ``b``), from ``v``.

    :func:`jaxgrad._src.relaxations._conditional_gumbel` draws
    ``log_softmax(l) + G`` given its argmax (the max coordinate
    ``-log E_b`` and the others truncated below it,
    ``-log(E_i / pi_i + E_b)``, ``E = -log v``); adding back
    ``logsumexp(l)`` gives the law of ``l + G`` given ``b``, differentiable
    in ``l`` with ``b`` and ``v`` held fixed.
    """
    lse = jax.nn.logsumexp(l, axis=-1, keepdims=True)
    return relaxations._conditional_gumbel(v, l - lse, b > 0.5) + lse


def _masked_logits(logits: Array, cdtype: Any) -> Array:
    """``sg(logits)`` in ``cdtype`` with ``+-inf`` replaced by ``+-1/eps`` (finite ``z``)."""
    l = jax.lax.stop_gradient(logits).astype(cdtype)
    masked_logit = jnp.asarray(1.0 / float(jnp.finfo(cdtype).eps), cdtype)
    return jnp.where(jnp.isinf(l), jnp.sign(l) * masked_logit, l)


def relaxation(z: Array, temperature: Any, categorical: bool) -> Array:
    """REBAR's relaxed sample: ``sigmoid(z / temperature)``, or the softmax over the classes."""
    scaled = z / jnp.asarray(temperature).astype(z.dtype)
    return jax.nn.softmax(scaled, axis=-1) if categorical else jax.nn.sigmoid(scaled)


def _check_dist(dist: Any, fn: str) -> bool:
    """Returns whether ``dist`` is the categorical spec; refuses anything but the two specs."""
    common.check_dist(dist, fn)
    if isinstance(dist, discrete.Categorical):
        return True
    if isinstance(dist, discrete.Bernoulli):
        return False
    name = getattr(dist, "name", type(dist).__name__)
    raise ValueError(
        f"{fn}: dist must be jaxgrad.dists.bernoulli or jaxgrad.dists.categorical (logits "
        f"[..., K], one-hot samples), got {name!r}; for other families use "
        f"jaxgrad.score_function or jaxgrad.rloo."
    )


def _relaxed_estimator(
    fn: str,
    f: Callable[..., Array],
    control_variate: Callable[..., Array],
    num_samples: int,
    f_takes_key: bool = False,
    eta: Any = None,
    categorical: bool = False,
) -> Callable[..., Array]:
    """The shared body of REBAR and RELAX, for Bernoulli and categorical variables.

    Returns ``est(key, logits, cv_state, *args)``. The control variate is called
    as ``control_variate(z, cv_key, cv_state, frozen_args, dtype)`` with the
    continuous sample ``z`` (compute dtype, shape of ``logits``), a key of its
    own for this one evaluation (``None`` unless ``f_takes_key``), the tuning
    state (live, so the variance loss reaches it), the extra arguments with
    their gradient stopped, and the dtype of ``logits``; it returns a scalar in
    ``z.dtype``. With ``f_takes_key`` the ``3 * num_samples`` evaluations
    (``f(b)``, ``c(z)``, ``c(z~)`` per sample) get independent keys.

    Only the sampling differs between the variables; the estimator equation
    is one code path. Bernoulli: ``z = l + Logistic``, ``b = 1[z > 0]``,
    ``z~`` by :func:`_conditional_logistic`, score ``b - sigmoid(l)``.
    Categorical (classes last): ``z = l + G`` (Gumbel), ``b = onehot(argmax
    z)``, ``z~`` by :func:`_conditional_gumbel_logits`, score
    ``b - softmax(l)``.

    ``eta`` (``None`` for 1) scales the scalar control variate per coordinate,
    ``g_i = [f(b) - eta_i c(z~)] d_i log p(b) + eta_i (d_i c(z) - d_i c(z~))``:
    each coordinate's identity holds for its own ``eta_i``, so every ``eta``
    broadcastable to ``logits`` keeps the estimate unbiased.

    Masked entries (logits ``+-inf``) are deterministic: their gradient is zero
    (``with_gradient``) and the control variate sees them at the finite logit
    ``+-1/eps``, the same in ``z`` and ``z~``, so ``z`` is never infinite (no
    ``0 * inf``), ``sigmoid(z / lam)`` (``softmax(z / lam)``) is their value
    at any practical temperature, and the other coordinates stay unbiased. A
    categorical variable whose logits are all ``-inf`` has no law: the value
    is NaN.
    """
    fs = common.batch_f(f, fn, f_takes_key=f_takes_key)

    def est(key: Any, logits: Any, cv_state: Any, *args: Any) -> Array:
        logits = common.check_logits(key, logits, fn, classes_last=categorical)
        key, f_key = common.split_f_key(key, f_takes_key)
        cv_keys = None
        if f_takes_key:
            f_key, cv_key = jax.random.split(f_key)
            cv_keys = jax.random.split(cv_key, (num_samples, 2))
        dtype = logits.dtype
        cdtype = samplers.compute_dtype(dtype)
        l = _masked_logits(logits, cdtype)
        if eta is None:
            scale = jnp.ones((), cdtype)
        else:
            scale = jnp.asarray(eta)
            try:
                shape = jnp.broadcast_shapes(scale.shape, logits.shape)
            except ValueError:
                shape = None
            if shape != logits.shape:
                raise ValueError(
                    f"{fn}: eta must be a scalar or broadcastable to logits of shape "
                    f"{logits.shape}, got shape {scale.shape}."
                )
            scale = scale.astype(cdtype)
        if categorical:
            noise, v = _gumbel_pair(key, num_samples, logits.shape, cdtype)
            idx = jnp.argmax(l + noise, axis=-1)
            b = jax.nn.one_hot(idx, logits.shape[-1], dtype=cdtype)
            z_tilde_of, mean = _conditional_gumbel_logits, jax.nn.softmax(l, axis=-1)
        else:
            u, v = _logistic_pair(key, num_samples, logits.shape, cdtype)
            noise = jnp.log(u) - jnp.log1p(-u)  # standard logistic
            b = (l + noise > 0).astype(cdtype)
            z_tilde_of, mean = _conditional_logistic, jax.nn.sigmoid(l)
        f_b = fs(b.astype(dtype), *args, key=f_key)  # the value: pathwise in *args
        frozen = jax.lax.stop_gradient(args)

        def c(z: Array, cv_key: Any) -> Array:
            return control_variate(z, cv_key, cv_state, frozen, dtype)

        def one(noise_n: Array, v_n: Array, b_n: Array, f_bn: Array, keys_n: Any) -> Array:
            k_z, k_zt = (None, None) if keys_n is None else (keys_n[0], keys_n[1])
            c_z, vjp_z = jax.vjp(lambda l0: c(l0 + noise_n, k_z), l)
            c_zt, vjp_zt = jax.vjp(lambda l0: c(z_tilde_of(l0, b_n, v_n), k_zt), l)
            one_ = sharding.vary_like(jnp.ones((), c_z.dtype), c_z, c_zt)
            score = b_n - mean  # grad_l log p(b | l)
            coef = jax.lax.stop_gradient(f_bn).astype(cdtype) - scale * c_zt
            return coef * score + scale * vjp_z(one_)[0] - scale * vjp_zt(one_)[0]

        g = jnp.mean(jax.vmap(one)(noise, v, b, f_b, cv_keys), axis=0)
        value = jnp.mean(f_b)
        if categorical:
            value = common.nan_without_law(value, logits)
        # g keeps its dependence on the tuning parameters (double backprop).
        return common.with_gradient(value, logits, g.astype(dtype), fn=fn, differentiable=True)

    return est


def _check_scalar_cv(out: Any, fn: str, what: str) -> None:
    common.check_f_output(out, fn, what)


def rebar(
    f: Callable[..., Array],
    *,
    dist: Any = discrete.bernoulli,
    temperature: Any = 0.5,
    eta: Any = 1.0,
    num_samples: int = 1,
    f_takes_key: bool = False,
) -> Callable[..., Array]:
    r"""The REBAR estimator for independent Bernoullis or categoricals.

    Bernoulli (``dist=jaxgrad.dists.bernoulli``, the default): with
    ``z = l + log u - log(1 - u)`` (logistic), ``b = 1[z > 0]``, ``z~`` the
    logistic sample conditioned on ``b`` (fresh noise), ``lam`` the
    temperature and ``s_lam(z) = sigmoid(z / lam)``,

    .. math::
        \hat g = \big[f(b) - \eta f(s_\lambda(\tilde z))\big] \nabla_l \log p(b)
                 + \eta \nabla_l f(s_\lambda(z)) - \eta \nabla_l f(s_\lambda(\tilde z)),

    where the last two gradients are pathwise: ``z`` depends on ``l`` through
    the reparameterization, ``z~`` through the conditional construction with
    ``b`` held fixed. The relaxed control variate ``eta f(s_lam(.))`` is
    subtracted and added back in expectation, so the estimate is unbiased for
    every ``eta`` and ``temperature``.

    Categorical (``dist=jaxgrad.dists.categorical``, logits ``[..., K]`` with
    the classes last, one-hot samples; Tucker et al. 2017, appendix): ``z =
    l + G`` with ``G_k = -log(-log u_k)``, ``b = onehot(argmax z)``, the
    same equation with ``s_lam(z) = softmax(z / lam)`` over the classes and
    ``d log p(b) = b - softmax(l)``, and ``z~ ~ z | b`` by conditional
    Gumbels (``E = -log v``, ``pi = softmax(l)``): the max coordinate
    ``z~_b = -log E_b + logsumexp(l)`` and the others truncated below it,
    ``z~_i = -log(E_i / pi_i + E_b) + logsumexp(l)``.

    ``temperature`` and ``eta`` may be traced arrays. Build the estimator inside
    the function you differentiate, and ``jax.grad`` of
    :func:`variance_loss` with respect to them is the single-sample gradient of
    the estimator's variance (the REBAR tuning rule), e.g. with
    ``temperature = jnp.exp(log_temperature)``.

    The value of ``est`` is the mean of ``f(b, *args)`` over the
    ``num_samples`` binary samples, and gradients with respect to ``*args`` are
    pathwise on those samples (the relaxed evaluations only shape the gradient
    with respect to ``logits``).

    Unbiased. Requires ``f`` to be differentiable and defined on relaxed
    inputs in ``(0, 1)``. Cost: ``3 * num_samples`` evaluations of ``f`` (one
    binary, two relaxed) and two backward passes through ``f``. First-order
    only in ``logits``: a second derivative in ``logits`` (or mixed with
    ``*args``) raises a ``TypeError``; derivatives of the estimate with
    respect to ``temperature`` and ``eta`` (:func:`variance_loss`) work.

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one sample ``x`` of the shape of
        ``logits``, binary (one-hot) or relaxed.
      dist: ``jaxgrad.dists.bernoulli`` (default) or
        ``jaxgrad.dists.categorical`` (static).
      temperature: ``lam > 0``, scalar or broadcastable to ``logits`` (for
        categoricals, e.g. ``[..., 1]`` per variable); may be traced.
      eta: the control-variate scale: a scalar, or an array broadcastable to
        ``logits`` that scales it per coin, ``g_i = [f(b) - eta_i c(z~)]
        d_i log p(b) + eta_i (d_i c(z) - d_i c(z~))`` with the scalar
        ``c = f(s_lam(.))`` (unbiased for every ``eta``); may be traced.
      num_samples: independent samples averaged per estimate (static).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and each of the three
        evaluations per sample (``f(b)`` and the two relaxed ones) gets its
        own independent key, so the control variate cannot cancel ``f``'s
        noise (see ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``; ``jax.grad(est, argnums=1)`` is the
      REBAR estimate.

    Raises:
      TypeError: if ``f`` is not callable, ``dist`` is a class or not a
        spec, ``num_samples`` is not an int, ``logits`` is not floating or
        ``key`` is not a key.
      ValueError: if ``dist`` is neither Bernoulli nor categorical, a
        concrete ``temperature`` is not positive, ``eta`` does not broadcast
        to ``logits``, ``num_samples < 1``, ``key`` is a batch of keys,
        categorical ``logits`` are a scalar, or ``f`` does not return a
        scalar.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> def tuning_loss(log_temp, eta, key, logits):
      ...     est = jaxgrad.rebar(f, temperature=jnp.exp(log_temp), eta=eta)
      ...     return jaxgrad.variance_loss(est)(key, logits)[0]
      >>> d_log_temp, d_eta = jax.jit(jax.grad(tuning_loss, argnums=(0, 1)))(
      ...     jnp.log(0.5), 1.0, jax.random.key(0), jnp.zeros(3))
      >>> d_eta.shape
      ()

      Three categoricals of four classes (one-hot samples):

      >>> w = jnp.arange(12.0).reshape(3, 4) / 12
      >>> est = jaxgrad.rebar(lambda x: jnp.sum(x * w) ** 2, dist=jaxgrad.dists.categorical)
      >>> g = jax.jit(jax.grad(est, argnums=1))(jax.random.key(0), jnp.zeros((3, 4)))
      >>> g.shape, bool(jnp.allclose(g.sum(-1), 0.0, atol=1e-6))
      ((3, 4), True)

    References:
      Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, *REBAR: Low-variance,
      unbiased gradient estimates for discrete latent variable models*,
      NeurIPS 2017. https://arxiv.org/abs/1703.07370 (categorical
      variables: appendix, conditional Gumbel sampling)
    """
    fn = "rebar"
    common.check_f(f, fn)
    categorical = _check_dist(dist, fn)
    f_takes_key = common.check_f_takes_key(f_takes_key, fn)
    num_samples = checks.check_num_samples(num_samples, fn)
    checks.check_positive(temperature, fn, "temperature")

    def control_variate(z: Array, cv_key: Any, state: Any, args: tuple, dtype: Any) -> Array:
        del state
        keys = () if cv_key is None else (cv_key,)
        out = f(relaxation(z, temperature, categorical).astype(dtype), *keys, *args)
        _check_scalar_cv(out, fn, "f")
        return jnp.asarray(out).astype(z.dtype)

    inner = _relaxed_estimator(
        fn, f, control_variate, num_samples, f_takes_key, eta=eta, categorical=categorical
    )

    def est(key: Any, logits: Any, *args: Any) -> Array:
        return inner(key, logits, None, *args)

    return est


def relax(
    f: Callable[..., Array],
    control_variate: Callable[..., Array],
    *,
    dist: Any = discrete.bernoulli,
    num_samples: int = 1,
    f_takes_key: bool = False,
) -> Callable[..., Array]:
    r"""The RELAX estimator for Bernoullis or categoricals, with a learned control variate.

    With ``z = l + log u - log(1 - u)``, ``b = 1[z > 0]`` and ``z~`` the
    logistic sample conditioned on ``b`` (Bernoulli), or ``z = l + G``
    (Gumbel), ``b = onehot(argmax z)`` and ``z~`` the conditional Gumbel
    sample given ``b`` (``dist=jaxgrad.dists.categorical``; see
    :func:`rebar`),

    .. math::
        \hat g = \big[f(b) - c_\phi(\tilde z)\big] \nabla_l \log p(b)
                 + \nabla_l c_\phi(z) - \nabla_l c_\phi(\tilde z),

    unbiased for every ``c_phi``; ``phi`` is trained to minimize the variance
    of ``g_hat``, whose gradient ``E[2 g_hat d g_hat / d phi]`` is
    ``jax.grad`` of :func:`variance_loss` (double backprop). REBAR is the
    special case ``c(z) = eta f(sigmoid(z / temperature))``; the RELAX paper's
    strongest variant adds a small network to it.

    The estimator takes the control-variate parameters as its first extra
    argument: ``est(key, logits, cv_params, *args)``, and calls
    ``control_variate(z, cv_params, *args)`` where ``z`` is the continuous
    (pre-threshold or pre-argmax, logit-space) sample of the shape and dtype
    of ``logits``.
    The value of ``est`` is the mean of ``f(b, *args)`` (it does not depend on
    ``cv_params``); gradients with respect to ``*args`` are pathwise on the
    binary samples. A temperature, if wanted, is part of ``cv_params``.

    Unbiased. ``f`` may be a black box (it is evaluated at binary points only);
    ``control_variate`` must be differentiable in ``z`` and ``cv_params``
    (twice, for the variance loss). Cost: ``num_samples`` evaluations of
    ``f``, ``2 * num_samples`` of the control variate and two backward passes
    through it. First-order only in ``logits`` (a second derivative in
    ``logits`` raises a ``TypeError``; derivatives of the estimate with
    respect to ``cv_params`` work).

    Args:
      f: the cost ``f(x, *args) -> scalar`` for one binary (one-hot) sample
        ``x``.
      control_variate: ``c(z, cv_params, *args) -> scalar`` (with
        ``f_takes_key``, ``c(z, key, cv_params, *args)``).
      dist: ``jaxgrad.dists.bernoulli`` (default) or
        ``jaxgrad.dists.categorical`` (logits ``[..., K]``; static).
      num_samples: independent samples averaged per estimate (static).
      f_takes_key: if true, ``f`` is ``f(x, key, *args)`` and the control
        variate ``c(z, key, cv_params, *args)``: each of the three
        evaluations per sample (``f(b)``, ``c(z)``, ``c(z~)``) gets its own
        independent key. The control variate receives one because the usual
        ones are built from ``f`` (REBAR's ``f(sigmoid(z / lam))``, the
        registry's RELAX) and ``f`` then needs a key; a deterministic ``c``
        ignores it. Independent keys keep ``c`` from cancelling ``f``'s noise
        (see ``jaxgrad.score_function``) and keep the estimator unbiased.
        Static, default ``False``.

    Returns:
      ``est(key, logits, cv_params, *args) -> scalar``.

    Raises:
      TypeError: if ``f`` or ``control_variate`` is not callable, ``dist``
        is a class or not a spec, ``num_samples`` is not an int, ``logits``
        is not floating, ``key`` is not a key, ``est`` is called without
        ``cv_params``, or ``f`` returns a non-floating value.
      ValueError: if ``dist`` is neither Bernoulli nor categorical,
        ``num_samples < 1``, ``key`` is a batch of keys, categorical
        ``logits`` are a scalar, or ``f`` or ``control_variate`` does not
        return a scalar.

    Example:
      A full RELAX training step (logits by the estimate, control variate by
      the variance loss) as one jitted function:

      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> def cv(z, phi):  # REBAR's relaxed f plus a learned offset
      ...     return phi[0] * f(jax.nn.sigmoid(z / jnp.exp(phi[1]))) + phi[2]
      >>> loss = jaxgrad.variance_loss(jaxgrad.relax(f, cv))
      >>> @jax.jit
      ... def step(key, logits, phi):
      ...     (_, (value, g)), d_phi = jax.value_and_grad(loss, argnums=2, has_aux=True)(
      ...         key, logits, phi)
      ...     return logits - 1.0 * g, phi - 0.01 * d_phi, value
      >>> logits, phi = jnp.zeros(3), jnp.array([1.0, jnp.log(0.5), 0.0])
      >>> for key in jax.random.split(jax.random.key(0), 200):
      ...     logits, phi, value = step(key, logits, phi)
      >>> bool(jnp.all(logits < -0.5))  # toward b = 0, since t < 1/2
      True

    References:
      Grathwohl, Choi, Wu, Roeder & Duvenaud, *Backpropagation through the
      Void: Optimizing control variates for black-box gradient estimation*,
      ICLR 2018. https://arxiv.org/abs/1711.00123
    """
    fn = "relax"
    common.check_f(f, fn)
    if not callable(control_variate):
        raise TypeError(
            f"{fn}: control_variate must be a callable c(z, cv_params, *args) -> scalar, "
            f"got {type(control_variate).__name__}."
        )
    categorical = _check_dist(dist, fn)
    num_samples = checks.check_num_samples(num_samples, fn)
    f_takes_key = common.check_f_takes_key(f_takes_key, fn)

    def c(z: Array, cv_key: Any, cv_params: Any, args: tuple, dtype: Any) -> Array:
        keys = () if cv_key is None else (cv_key,)
        out = control_variate(z.astype(dtype), *keys, cv_params, *args)
        _check_scalar_cv(out, fn, "control_variate")
        return jnp.asarray(out).astype(z.dtype)

    inner = _relaxed_estimator(fn, f, c, num_samples, f_takes_key, categorical=categorical)

    def est(key: Any, logits: Any, *cv_params_and_args: Any) -> Array:
        of = "control_variate(z, cv_params, *args)"
        cv_params, args = common.split_tuning_params(cv_params_and_args, fn, "cv_params", of)
        return inner(key, logits, cv_params, *args)

    return est


def variance_loss(est: Callable[..., Array]) -> Callable[..., tuple[Array, tuple[Any, Any]]]:
    r"""The single-sample variance objective of an estimator, for tuning it by gradient descent.

    .. math::
        L(\phi) = \sum_i \hat g_i(\phi)^2, \qquad
        \mathbb{E}[L] = \sum_i \mathrm{Var}[\hat g_i] + \|\nabla_\theta \mathbb{E} f\|^2,

    where ``g_hat = jax.grad(est, argnums=1)`` is the gradient estimate. For an
    unbiased estimator the last term does not depend on the tuning parameters
    ``phi``, so ``grad_phi L = 2 sum_i g_hat_i d g_hat_i / d phi`` is an
    unbiased estimate of the gradient of the total variance (Tucker et al.
    2017; Grathwohl et al. 2018). ``jax.grad`` of ``L`` differentiates through
    the gradient estimate (double backprop); it reaches every tuning parameter
    the estimate depends on: ``cv_params`` of :func:`relax` (an argument),
    ``temperature``/``eta`` of :func:`rebar` (closed over, with the estimator
    built inside the differentiated function). Other estimators attach their
    estimate with a stop-gradient, so their tuning gradient is zero.

    The estimate and the value are returned as auxiliary outputs so that one
    call (one use of ``key``) yields both the update of the model parameters
    and the variance gradient.

    Args:
      est: an estimator ``est(key, params, *args) -> scalar``.

    Returns:
      ``loss(key, params, *args) -> (L, (value, grad))`` with ``grad`` the
      gradient estimate with respect to ``params`` (a pytree like it). Use it
      with ``jax.value_and_grad(loss, argnums=..., has_aux=True)``.

    Raises:
      TypeError: if ``est`` is not callable.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> est = jaxgrad.relax(f, lambda z, phi: phi * f(jax.nn.sigmoid(2.0 * z)))
      >>> step = jax.jit(jax.value_and_grad(jaxgrad.variance_loss(est), argnums=2, has_aux=True))
      >>> (l, (value, g)), d_phi = step(jax.random.key(0), jnp.zeros(3), 1.0)
      >>> bool(jnp.allclose(l, jnp.sum(g**2))), d_phi.shape
      (True, ())
    """
    if not callable(est):
        raise TypeError(
            f"variance_loss: est must be an estimator est(key, params, *args), "
            f"got {type(est).__name__}."
        )

    def loss(key: Any, params: Any, *args: Any) -> tuple[Array, tuple[Any, Any]]:
        value, grad = jax.value_and_grad(est, argnums=1)(key, params, *args)
        leaves = jax.tree.leaves(grad)
        total = sum(jnp.sum(jnp.square(x.astype(samplers.compute_dtype(x.dtype)))) for x in leaves)
        return total, (value, grad)

    return loss
