"""Tuning an estimator's adaptable parameters by the variance loss, before or while it is used.

Three registry estimators have parameters that leave them unbiased and that
lower their variance when tuned by :func:`jaxgrad.variance_loss` (Tucker et
al. 2017; Grathwohl et al. 2018): RELAX's control variate, RODEO's ``h`` and
double CV's ``alpha``. :func:`tune` (public, ``jaxgrad.tune``) runs that
descent for any such estimator. :func:`tunable` states each registry entry's
tuning problem (the estimator as a function of its parameters, where they
start, and Adam's step size), shared by ``jaxgrad study`` (:func:`tuned`:
tuned first through :func:`tune`, on keys of its own) and ``jaxgrad train``
(tuned online, step by step, with :func:`per_leaf_adam`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks, sharding

Array = jax.Array

#: Adam steps of :func:`jaxgrad.variance_loss` that tune RELAX, RODEO and double CV before a study.
TUNING_STEPS = 200
#: Independent keys whose variance losses each tuning step averages (:func:`tune`'s default).
TUNE_KEYS_PER_STEP = 16
#: Adam's learning rate for unit-free tuning parameters (RELAX's eta, double CV's alpha), and
#: :func:`tune`'s default.
TUNE_LEARNING_RATE = 0.02
#: RELAX's ``phi`` (units of f per unit of z) steps by ``0.005 std f``: on the categorical
#: toy (3 x 4) the tuned variance is 0.0072 against REBAR's 0.0083, where the unit-free rate
#: 0.02 made it worse (0.0105); on the binary VAE 2352 against 13610 (0.02: 2444).
_RELAX_PHI_RELATIVE_LEARNING_RATE = 0.005
#: RODEO's linear ``h`` has weights in units of ``sqrt(D) * std f`` (see ``tunable``).
_RODEO_RELATIVE_LEARNING_RATE = 0.1
#: Samples of ``f`` that measure its spread for RODEO's learning rate (tuning keys).
_SCALE_KEYS = 64


def tune(
    est: Callable[..., Any],
    tuning_params: Any,
    key: Any,
    params: Any,
    *args: Any,
    steps: int = TUNING_STEPS,
    keys_per_step: int = TUNE_KEYS_PER_STEP,
    optimizer: Any = None,
) -> tuple[Any, Array]:
    r"""Tunes an estimator's own parameters by gradient descent on its variance.

    For an estimator ``est(key, params, phi, *args)`` that is unbiased for
    every value of its tuning parameters ``phi`` (RELAX's control variate,
    RODEO's ``h``, double CV's ``alpha``, REBAR's ``eta`` and temperature
    closed over), each step draws ``keys_per_step`` fresh keys and takes one
    optimizer step on

    .. math::
        \bar L(\phi) = \frac{1}{K} \sum_{k=1}^{K} \sum_i \hat g_i(\phi; \epsilon_k)^2,
        \qquad
        \nabla_\phi\, \mathbb E[\bar L] = \nabla_\phi \sum_i \mathrm{Var}[\hat g_i(\phi)],

    the mean of :func:`jaxgrad.variance_loss` over the keys (the squared mean
    gradient does not depend on ``phi``, so this descends the total variance;
    Tucker et al. 2017, Grathwohl et al. 2018). The whole loop is one
    ``lax.scan``: it runs under ``jit`` and ``vmap`` (e.g. over several
    parameter points), and with ``key`` independent of the keys the tuned
    estimator is later used with, that estimator stays unbiased.

    Step sizes depend on the units of ``phi``: the default Adam step of
    ``0.02`` suits unit-free parameters (RELAX's scale ``eta``, double CV's
    ``alpha``); parameters in units of ``f`` (a linear control variate's
    weights, RODEO's ``h``) want a step proportional to the spread of ``f``.
    ``jaxgrad study`` and ``jaxgrad train`` choose them per estimator.

    Args:
      est: the estimator at tuning parameters ``phi``,
        ``est(key, params, phi, *args) -> scalar``.
      tuning_params: where the tuning starts, a pytree of floating arrays.
      key: a PRNG key for the tuning draws: step ``i`` uses
        ``fold_in(key, i)``, split into ``keys_per_step``.
      params: the distribution parameters to tune at (e.g. the logits).
      *args: the other arguments of ``est`` (those of ``f``).
      steps: the optimizer steps, a static int ``>= 1``.
      keys_per_step: the independent draws each step averages, a static int
        ``>= 1``.
      optimizer: an ``optax.GradientTransformation``; default
        ``optax.adam(0.02)``.

    Returns:
      ``(phi, losses)``: the tuned parameters (a pytree like
      ``tuning_params``) and the mean variance loss of each step, ``[steps]``
      (measured before that step's update).

    Raises:
      TypeError: if ``est`` is not callable, ``steps`` or ``keys_per_step`` is
        not an int, ``key`` is not a key, or ``optimizer`` has no ``init`` and
        ``update``.
      ValueError: if ``steps`` or ``keys_per_step`` is below 1, or ``key`` is
        a batch of keys.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
      >>> c = lambda z, eta: eta * f(jax.nn.sigmoid(2.0 * z))  # REBAR's control variate
      >>> est = jaxgrad.relax(f, c)
      >>> eta, losses = jax.jit(lambda k: jaxgrad.tune(est, 0.0, k, jnp.zeros(3), steps=100))(
      ...     jax.random.key(0))
      >>> bool(losses[-20:].mean() < losses[:20].mean())  # the variance went down
      True

    References:
      Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, *REBAR*, NeurIPS 2017.
      https://arxiv.org/abs/1703.07370 ; Grathwohl, Choi, Wu, Roeder &
      Duvenaud, *Backpropagation through the Void* (RELAX), ICLR 2018.
      https://arxiv.org/abs/1711.00123
    """
    import optax

    from jaxgrad._src.estimators.rebar import variance_loss

    fn = "tune"
    if not callable(est):
        raise TypeError(
            f"{fn}: est must be an estimator est(key, params, tuning_params, *args), "
            f"got {type(est).__name__}."
        )
    steps = checks.check_count(steps, fn, "steps")
    keys_per_step = checks.check_count(keys_per_step, fn, "keys_per_step")
    checks.check_key(key, fn)
    if optimizer is None:
        optimizer = optax.adam(TUNE_LEARNING_RATE)
    if not all(callable(getattr(optimizer, m, None)) for m in ("init", "update")):
        raise TypeError(
            f"{fn}: optimizer must be an optax.GradientTransformation (with init and update), "
            f"got {type(optimizer).__name__}; e.g. optax.adam(0.02)."
        )
    # Under shard_map, a gradient in a device-invariant value is summed over the devices: a
    # replicated start would tune one shared phi from every device's draws. Each device's phi
    # varies like its own key and parameters.
    like = [key, *jax.tree.leaves(params)]
    tuning_params = jax.tree.map(lambda t: sharding.vary_like(jnp.asarray(t), *like), tuning_params)
    loss = variance_loss(est)

    def mean_loss(phi: Any, k: Any) -> Array:
        ks = jax.random.split(k, keys_per_step)
        return jnp.mean(jax.vmap(lambda kk: loss(kk, params, phi, *args)[0])(ks))

    def step(carry: Any, i: Array) -> tuple[Any, Array]:
        phi, state = carry
        # Step i's key is fold_in(key, i), derived inside the loop: a scan over an array of
        # keys, once vmapped, trips jax_debug_key_reuse (a false "already consumed").
        k = jax.random.fold_in(key, i)
        value, grad = jax.value_and_grad(lambda t: mean_loss(t, k))(phi)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 count in
            updates, state = optimizer.update(grad, state, phi)
        phi = jax.tree.map(lambda p, u: p + u.astype(p.dtype), phi, updates)
        return (phi, state), value

    with jax.numpy_dtype_promotion("standard"):
        state = optimizer.init(tuning_params)
    (phi, _), losses = jax.lax.scan(step, (tuning_params, state), jnp.arange(steps))
    return phi, losses


def per_leaf_adam(learning_rate: Any) -> Any:
    """Adam with one learning rate per leaf: ``learning_rate`` a float, or a tree of them."""
    import optax

    if not isinstance(learning_rate, tuple | list | dict):
        return optax.chain(optax.scale_by_adam(), optax.scale(-learning_rate))
    per_leaf = optax.stateless(
        lambda updates, _: jax.tree.map(lambda u, r: -r * u, updates, learning_rate)
    )
    return optax.chain(optax.scale_by_adam(), per_leaf)


def tunable(name, f, params, args, *, dist, temperature, num_samples, f_takes_key, key):
    r"""The tuning problem of an adaptable registry entry, or ``None`` for the others.

    Returns ``(est, init, learning_rate, what)`` with ``est(key, params, theta,
    *args)`` the estimator at tuning parameters ``theta``, unbiased for every
    ``theta``, and ``init`` where the tuning starts:

    * ``relax``: ``c(z) = eta f(relax(z / lam)) + <phi, z>`` from REBAR's
      ``eta = 1, phi = 0`` (not with ``f_takes_key``: ``c`` calls ``f``);
      Adam's step is ``0.02`` for ``eta`` and ``0.005 std f`` for ``phi``.
    * ``rodeo``: :func:`jaxgrad.rodeo` with its linear ``h`` from zero (RLOO).
      The weights that cancel the score term are about ``D |df|`` (``A``
      averages ``D`` one-flip differences), and ``std f ~ sqrt(D) |df|`` for
      ``D`` coins of similar effect, so Adam's step is
      ``0.1 sqrt(D) std f``, with ``std f`` measured on tuning keys.
    * ``double-cv``: one ``alpha`` per coordinate, from the paper's ``1``.
    """
    from jaxgrad._src.dists import discrete
    from jaxgrad._src.estimators import double_cv, rebar, rodeo

    if name not in ("relax", "rodeo", "double-cv") or (name == "relax" and f_takes_key):
        return None
    dtype = jnp.result_type(params)

    def spread(est, init):  # std f on tuning keys, from the means of K samples
        keys = jax.random.split(key, _SCALE_KEYS)
        means = jax.jit(jax.vmap(lambda k: est(k, params, init, *args)))(keys)
        value = math.sqrt(num_samples) * float(np.std(np.asarray(means, np.float64)))
        return value if math.isfinite(value) and value > 0 else 1.0

    if name == "relax":
        categorical = isinstance(dist, discrete.Categorical)

        def control_variate(z, cv, *a):
            eta, phi = cv
            # phi z with masked coins (z = +-inf) would be nan: their term is constant.
            linear = jnp.sum(jnp.where(jnp.isfinite(z), phi * z, 0))
            return eta * f(rebar.relaxation(z, temperature, categorical), *a) + linear

        spec = discrete.categorical if categorical else discrete.bernoulli
        est = rebar.relax(f, control_variate, dist=spec, num_samples=num_samples)
        init = (jnp.ones((), dtype), jnp.zeros(jnp.shape(params), dtype))
        lr = (TUNE_LEARNING_RATE, _RELAX_PHI_RELATIVE_LEARNING_RATE * spread(est, init))
        what = "eta * f(relax(z / temperature)) + <phi, z>, from eta=1, phi=0"
        return est, init, lr, what
    if name == "rodeo":
        est = rodeo.rodeo(f, rodeo.linear_h, num_samples=num_samples, f_takes_key=f_takes_key)
        init = rodeo.linear_h_init(params)
        size = max(int(np.size(params)), 1)
        lr = _RODEO_RELATIVE_LEARNING_RATE * math.sqrt(size) * spread(est, init)
        what = "rodeo.linear_h: h0 = <w0, y>, h1 = <w1, y> + gamma f_-k, from 0 (RLOO)"
        return est, init, lr, what

    def with_alpha(k, logits, alpha, *a):  # double-cv
        inner = double_cv.double_cv(
            f, dist=dist, num_samples=num_samples, alpha=alpha, f_takes_key=f_takes_key
        )
        return inner(k, logits, *a)

    init = jnp.ones(jnp.shape(params), dtype)
    return with_alpha, init, TUNE_LEARNING_RATE, "alpha per coordinate, from 1"


def tuned(est, init, params, args, *, learning_rate, what, key, steps):
    """``est`` with its parameters tuned by ``steps`` Adam steps of ``variance_loss``.

    Each step averages the variance loss over ``TUNE_KEYS_PER_STEP`` keys
    drawn from ``key``, independent of the study's keys, so the tuned
    estimator stays unbiased for them. Returns ``(est(key, params, *args),
    record)``.
    """
    theta, losses = jax.jit(
        lambda k: tune(
            est, init, k, params, *args, steps=steps, optimizer=per_leaf_adam(learning_rate)
        )
    )(key)
    losses = np.asarray(losses, np.float64)
    k = max(1, steps // 10)
    record = {
        "steps": steps,
        "keys_per_step": TUNE_KEYS_PER_STEP,
        "optimizer": "adam",
        "learning_rate": jax.tree.map(float, learning_rate),
        "tuned": what,
        "variance_loss_first_steps": float(np.mean(losses[:k])),
        "variance_loss_last_steps": float(np.mean(losses[-k:])),
    }

    def tuned(key, logits, *a):
        return est(key, logits, theta, *a)

    return tuned, record
