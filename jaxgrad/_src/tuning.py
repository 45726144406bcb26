"""Tuning an estimator's adaptable parameters by the variance loss, before or while it is used.

Three registry estimators have parameters that leave them unbiased and that
lower their variance when tuned by :func:`jaxgrad.variance_loss` (Tucker et
al. 2017; Grathwohl et al. 2018): RELAX's control variate, RODEO's ``h`` and
double CV's ``alpha``. :func:`tunable` states each one's tuning problem (the
estimator as a function of its parameters, where they start, and Adam's step
size), shared by ``jaxgrad study`` (:func:`tuned`: tuned first, on keys of
its own) and ``jaxgrad train`` (tuned online, step by step).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

#: Adam steps of :func:`jaxgrad.variance_loss` that tune RELAX, RODEO and double CV before a study.
TUNING_STEPS = 200
_TUNING_KEYS_PER_STEP = 16
#: Adam's learning rate for the unit-free tuning parameters (RELAX's eta, double CV's alpha).
_TUNING_LEARNING_RATE = 0.02
#: RELAX's ``phi`` (units of f per unit of z) steps by ``0.005 std f``: on the categorical
#: toy (3 x 4) the tuned variance is 0.0072 against REBAR's 0.0083, where the unit-free rate
#: 0.02 made it worse (0.0105); on the binary VAE 2352 against 13610 (0.02: 2444).
_RELAX_PHI_RELATIVE_LEARNING_RATE = 0.005
#: RODEO's linear ``h`` has weights in units of ``sqrt(D) * std f`` (see ``tunable``).
_RODEO_RELATIVE_LEARNING_RATE = 0.1
#: Samples of ``f`` that measure its spread for RODEO's learning rate (tuning keys).
_SCALE_KEYS = 64


def rates_like(lr, tree):
    """One learning rate per leaf of ``tree``: ``lr`` itself if it is a tree, else repeated."""
    return lr if isinstance(lr, tuple | list | dict) else jax.tree.map(lambda _: lr, tree)


def adam_scan(loss, init, keys, lr):
    """Adam on ``loss(params, key)`` over ``keys`` (inside jit); returns (params, losses).

    ``lr`` is one learning rate, or a tree of them like ``init``.
    """
    b1, b2, eps = 0.9, 0.999, 1e-8

    def step(carry, key):
        p, m, v, t = carry
        value, g = jax.value_and_grad(loss)(p, key)
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1**t, 1 - b2**t
        p = jax.tree.map(
            lambda p, m, v, lr: p - (lr * (m / c1) / (jnp.sqrt(v / c2) + eps)).astype(p.dtype),
            p,
            m,
            v,
            rates,
        )
        return (p, m, v, t), value

    rates = rates_like(lr, init)
    zeros = jax.tree.map(jnp.zeros_like, init)
    one = jnp.ones((), jax.tree.leaves(init)[0].dtype)
    (p, _, _, _), losses = jax.lax.scan(step, (init, zeros, zeros, 0 * one), keys)
    return p, losses


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
        lr = (_TUNING_LEARNING_RATE, _RELAX_PHI_RELATIVE_LEARNING_RATE * spread(est, init))
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
    return with_alpha, init, _TUNING_LEARNING_RATE, "alpha per coordinate, from 1"


def tuned(est, init, params, args, *, learning_rate, what, key, steps):
    """``est`` with its parameters tuned by ``steps`` Adam steps of ``variance_loss``.

    Each step averages the variance loss over ``_TUNING_KEYS_PER_STEP`` keys
    drawn from ``key``, independent of the study's keys, so the tuned
    estimator stays unbiased for them. Returns ``(est(key, params, *args),
    record)``.
    """
    from jaxgrad._src.estimators.rebar import variance_loss

    loss = variance_loss(est)

    def batch_loss(theta, k):
        ks = jax.random.split(k, _TUNING_KEYS_PER_STEP)
        return jnp.mean(jax.vmap(lambda kk: loss(kk, params, theta, *args)[0])(ks))

    @jax.jit
    def train(key):
        return adam_scan(batch_loss, init, jax.random.split(key, steps), learning_rate)

    theta, losses = train(key)
    losses = np.asarray(losses, np.float64)
    k = max(1, steps // 10)
    record = {
        "steps": steps,
        "keys_per_step": _TUNING_KEYS_PER_STEP,
        "optimizer": "adam",
        "learning_rate": jax.tree.map(float, learning_rate),
        "tuned": what,
        "variance_loss_first_steps": float(np.mean(losses[:k])),
        "variance_loss_last_steps": float(np.mean(losses[-k:])),
    }

    def tuned(key, logits, *a):
        return est(key, logits, theta, *a)

    return tuned, record
