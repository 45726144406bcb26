"""REBAR and RELAX for categorical variables (``dist=jaxgrad.dists.categorical``).

* Unbiasedness (5-sigma z-test in the logits and in the cost's argument) on
  the 3 x 4 problem with ``coupled_categorical`` and ``softplus_cosine``, for
  REBAR and for RELAX with a non-trivial control variate; the same z-test on
  the same samples rejects straight-through (power check).
* The conditional Gumbels: ``z~`` has the law of ``z = l + G`` given
  ``argmax z = b`` (moments and a two-sample KS statistic against rejection
  samples), and ``argmax z~ = b``.
* The estimator equation on fixed noise, against a hand-written computation.
* ``variance_loss`` reaches ``eta``, ``temperature`` and every leaf of the
  control-variate parameters (double backprop; finite differences in float64).
* Registry entries on categoricals; errors for misuse.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    categorical_problem,
    coupled_categorical,
    exact_grads,
    grad_samples_of_many,
    joint,
    softplus_cosine,
    straight_through_categorical,
)

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad._src.estimators import rebar as rebar_module
from jaxgrad.diagnostics import assert_unbiased

CAT = jaxgrad.dists.categorical
NUM_KEYS = 20_000
LOGITS, A = categorical_problem()


def _cv(f):
    """A RELAX control variate: scaled relaxed ``f`` plus a learned linear term in softmax(z)."""

    def cv(z, phi, a):
        relaxed = jax.nn.softmax(z / jnp.exp(phi[1]), axis=-1)
        return phi[0] * f(relaxed, a) + jnp.sum(phi[2] * jax.nn.softmax(z, axis=-1)) + phi[3]

    return cv


PHI = (
    jnp.asarray(0.8, jnp.float32),
    jnp.asarray(np.log(0.4), jnp.float32),
    jnp.asarray(np.linspace(-0.5, 0.6, 12).reshape(3, 4), jnp.float32),
    jnp.asarray(0.1, jnp.float32),
)


def _estimators(f):
    rebar = jaxgrad.rebar(f, dist=CAT)
    relax = jaxgrad.relax(f, _cv(f), dist=CAT)
    return {
        "rebar": joint(rebar),
        "relax": lambda key, pa: relax(key, pa[0], PHI, pa[1]),
        "straight-through": straight_through_categorical(f),
    }


# ------------------------------------------------------------ unbiasedness + power


COSTS = {"coupled_categorical": coupled_categorical, "softplus_cosine": softplus_cosine}


def test_unbiased_and_straight_through_rejected(key):
    """One compiled program: REBAR, RELAX and straight-through for both costs."""
    ests = {f"{c}/{n}": e for c, f in COSTS.items() for n, e in _estimators(f).items()}
    params = {name: (LOGITS, A) for name in ests}
    samples = grad_samples_of_many(ests, params, key, num_keys=NUM_KEYS, batch_size=2_000)
    for c, f in COSTS.items():
        exact = exact_grads(f, CAT, LOGITS, A)  # (d/dlogits, d/da)
        assert_unbiased(samples[f"{c}/rebar"], exact)
        assert_unbiased(samples[f"{c}/relax"], exact)
        with pytest.raises(AssertionError, match="biased"):  # power: the same test rejects ST
            assert_unbiased(samples[f"{c}/straight-through"], exact)


# ------------------------------------------------------------ conditional Gumbels


def _ks(x, y):
    """The two-sample Kolmogorov-Smirnov statistic of 1-D samples."""
    grid = np.sort(np.concatenate([x, y]))
    fx = np.searchsorted(np.sort(x), grid, side="right") / x.size
    fy = np.searchsorted(np.sort(y), grid, side="right") / y.size
    return float(np.max(np.abs(fx - fy)))


@jax.jit
def _conditional_draws(key, l):
    k_z, k_v = jax.random.split(key)
    n = 60_000
    z = l + samplers.gumbel(k_z, (n, *l.shape), l.dtype)
    b = jax.nn.one_hot(jnp.argmax(z, axis=-1), l.shape[-1], dtype=l.dtype)
    # z~ for every class k, with fresh uniforms: [K, n, K]
    v = samplers.uniform_open(k_v, (l.shape[-1], n, *l.shape), l.dtype)
    onehots = jnp.eye(l.shape[-1], dtype=l.dtype)
    z_tilde = jax.vmap(
        lambda bk, vk: rebar_module._conditional_gumbel_logits(
            l, jnp.broadcast_to(bk, vk.shape), vk
        )
    )(onehots, v)
    return z, b, z_tilde


def test_conditional_gumbel_has_the_law_of_z_given_b(key):
    l = jnp.asarray([0.3, -0.8, 1.2, 0.1], jnp.float64)  # unnormalized: z = l + G, not log pi + G
    z, b, z_tilde = (np.asarray(x) for x in _conditional_draws(key, l))
    num_classes = l.shape[-1]
    for k in range(num_classes):
        rejected = z[b[:, k] > 0.5]  # rejection samples of z | argmax z = k
        cond = z_tilde[k]
        assert np.all(np.argmax(cond, axis=-1) == k)  # z~ lies in the cell of b
        n, m = rejected.shape[0], cond.shape[0]
        for i in range(num_classes):
            x, y = rejected[:, i], cond[:, i]
            se = np.sqrt(x.var() / n + y.var() / m)
            assert abs(x.mean() - y.mean()) < 5 * se, (k, i, x.mean(), y.mean(), se)
            # Second moment: compare the variances through the squared deviations.
            sx, sy = (x - x.mean()) ** 2, (y - y.mean()) ** 2
            se2 = np.sqrt(sx.var() / n + sy.var() / m)
            assert abs(sx.mean() - sy.mean()) < 5 * se2, (k, i, sx.mean(), sy.mean())
            # KS at level ~1e-6: c(alpha) = sqrt(-log(alpha / 2) / 2) = 2.7.
            assert _ks(x, y) < 2.7 * np.sqrt((n + m) / (n * m)), (k, i)
    # The max coordinate of z given b = k is Gumbel(logsumexp(l)) whatever k is.
    lse = float(jax.nn.logsumexp(l))
    np.testing.assert_allclose(z_tilde[:, :, :].max(-1).mean(-1), lse + np.euler_gamma, atol=0.02)


# ------------------------------------------------------------ fixed noise


F = coupled_categorical
TEMPERATURE, ETA = 0.4, 0.7


@jax.jit
def _on_fixed_noise(key, logits, a):
    """REBAR, RELAX with REBAR's control variate, and the formula on the same noise."""
    k_rebar, k_relax = jax.random.clone(key), jax.random.clone(key)
    uv = samplers.uniform_open(key, (2, 1, *logits.shape), jnp.float32)  # what est draws
    u, v = uv[0, 0], uv[1, 0]
    gumbel = -jnp.log(-jnp.log(u))
    b = jax.nn.one_hot(jnp.argmax(logits + gumbel, axis=-1), logits.shape[-1], dtype=jnp.float32)

    def z_of(l):
        return l + gumbel

    def z_tilde_of(l):  # Tucker et al. 2017, appendix, written out with pi = softmax(l)
        pi = jax.nn.softmax(l, axis=-1)
        log_z = jax.nn.logsumexp(l, axis=-1, keepdims=True)
        e_b = jnp.sum(b * -jnp.log(v), axis=-1, keepdims=True)
        top = -jnp.log(-jnp.log(v))
        others = -jnp.log(-jnp.log(v) / pi + e_b)
        return jnp.where(b > 0, top, others) + log_z

    def c(z):
        return ETA * F(jax.nn.softmax(z / TEMPERATURE, axis=-1), a)

    score = b - jax.nn.softmax(logits, axis=-1)
    formula = (
        (F(b, a) - c(z_tilde_of(logits))) * score
        + jax.grad(lambda l: c(z_of(l)))(logits)
        - jax.grad(lambda l: c(z_tilde_of(l)))(logits)
    )
    rebar = jaxgrad.rebar(F, dist=CAT, temperature=TEMPERATURE, eta=ETA)
    relax = jaxgrad.relax(
        F,
        lambda z, _, a: ETA * F(jax.nn.softmax(z / TEMPERATURE, axis=-1), a),
        dist=CAT,
    )
    rebar_out = jax.value_and_grad(rebar, argnums=(1, 2))(k_rebar, logits, a)
    relax_out = jax.value_and_grad(relax, argnums=1)(k_relax, logits, None, a)
    args_formula = jax.grad(F, argnums=1)(b, a)
    in_cell = jnp.all(jnp.argmax(z_tilde_of(logits), -1) == jnp.argmax(b, -1))
    return (F(b, a), formula, args_formula, in_cell), rebar_out, relax_out


def test_formula_on_fixed_noise(key):
    for k in jax.random.split(key, 3):
        (value, formula, args_formula, in_cell), rebar_out, relax_out = _on_fixed_noise(
            k, LOGITS, A
        )
        assert bool(in_cell)  # argmax z~ = b
        np.testing.assert_allclose(rebar_out[0], value, rtol=1e-6)
        np.testing.assert_allclose(rebar_out[1][0], formula, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(rebar_out[1][1], args_formula, rtol=1e-5)  # pathwise in a
        np.testing.assert_allclose(rebar_out[1][0].sum(-1), 0.0, atol=1e-5)  # rows sum to 0
        # RELAX with REBAR's control variate is REBAR.
        np.testing.assert_allclose(relax_out[0], value, rtol=1e-6)
        np.testing.assert_allclose(relax_out[1], rebar_out[1][0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ variance loss


def test_variance_loss_reaches_every_tuning_parameter():
    """Double backprop against central differences in float64, for REBAR and RELAX."""
    logits, a = LOGITS.astype(jnp.float64), A.astype(jnp.float64)
    phi = jax.tree.map(lambda x: x.astype(jnp.float64), PHI)
    cv = _cv(F)

    def rebar_loss(tuning, key):
        log_temp, eta = tuning
        est = jaxgrad.rebar(F, dist=CAT, temperature=jnp.exp(log_temp), eta=eta)
        return jaxgrad.variance_loss(est)(key, logits, a)[0]

    def relax_loss(phi, key):
        est = jaxgrad.relax(F, cv, dist=CAT)
        return jaxgrad.variance_loss(est)(key, logits, phi, a)[0]

    tuning = (jnp.asarray(np.log(0.5)), jnp.asarray(0.9))

    @jax.jit
    def run(key):
        keys = [jax.random.clone(key) for _ in range(2)]
        return jax.grad(rebar_loss)(tuning, keys[0]), jax.grad(relax_loss)(phi, keys[1])

    d_rebar, d_relax = run(jax.random.key(31))
    losses = jax.jit(lambda t, p, k: (rebar_loss(t, k), relax_loss(p, jax.random.clone(k))))
    h = 1e-5

    def central(which, leaf, index):
        """Central difference of loss ``which`` (0: REBAR, 1: RELAX) in one coordinate."""
        params = (tuning, phi)
        leaves, tree = jax.tree.flatten(params[which])

        def at(sign):
            moved = list(leaves)
            moved[leaf] = leaves[leaf].at[index].add(sign * h)
            args = list(params)
            args[which] = jax.tree.unflatten(tree, moved)
            return float(losses(*args, jax.random.key(31))[which])

        return (at(1) - at(-1)) / (2 * h)

    for leaf, d in enumerate(jax.tree.leaves(d_rebar)):  # log temperature, eta
        assert float(d) != 0.0
        np.testing.assert_allclose(d, central(0, leaf, ()), rtol=1e-4)
    for leaf, d in enumerate(jax.tree.leaves(d_relax)):  # every leaf of phi
        d = np.asarray(d)
        assert np.all(d != 0.0), leaf
        index = (0, 1) if d.ndim == 2 else ()
        np.testing.assert_allclose(d[index], central(1, leaf, index), rtol=1e-4)


# ------------------------------------------------------------ registry, masks


def test_registry_entries_on_categoricals():
    """Both entries apply to both variables; temperature shapes the estimate, not the value."""
    f = lambda x: jnp.sin(jnp.sum(x * A)) + jnp.sum(x * x * A)
    masked = LOGITS.at[0, 1].set(-jnp.inf).at[2, 0].set(-jnp.inf)

    @jax.jit
    def run(key, t):
        outs = []
        for name in ("rebar", "relax"):
            info = jaxgrad.ESTIMATORS[name]
            assert info.applies_to("categorical") and info.applies_to("bernoulli")
            est = info.build(f, dist=CAT, num_samples=1, temperature=t)
            k1, k2 = jax.random.split(jax.random.fold_in(key, len(outs)))
            grad = jax.value_and_grad(est, argnums=1)
            outs.append((grad(k1, LOGITS), *grad(k2, masked)))
        return outs

    low, high = run(jax.random.key(5), 0.5), run(jax.random.key(5), 2.0)
    for (_, g1), m1, gm1 in low:
        assert g1.shape == LOGITS.shape and bool(jnp.isfinite(m1))
        np.testing.assert_allclose(g1.sum(-1), 0.0, atol=1e-5)
        assert bool(jnp.all(jnp.isfinite(gm1))) and float(gm1[0, 1]) == float(gm1[2, 0]) == 0.0
    for ((v1, g1), _, _), ((v2, g2), _, _) in zip(low, high, strict=True):
        np.testing.assert_array_equal(v1, v2)
        assert float(jnp.max(jnp.abs(g1 - g2))) > 1e-4


def test_all_masked_variable_gives_nan_value():
    est = jaxgrad.rebar(F, dist=CAT)
    logits = LOGITS.at[1].set(-jnp.inf)
    assert bool(jnp.isnan(jax.jit(est)(jax.random.key(0), logits, A)))


# ------------------------------------------------------------ errors


def test_misuse_is_refused():
    key = jax.random.key(0)
    f = lambda x: jnp.sum(x)
    shape_msg = r"logits must have shape \[\.\.\., K\] with the K classes last"
    with pytest.raises(ValueError, match=rf"rebar: {shape_msg}"):
        jaxgrad.rebar(f, dist=CAT)(key, jnp.float32(0.3))
    with pytest.raises(ValueError, match=rf"relax: {shape_msg}"):
        jaxgrad.relax(f, lambda z, phi: jnp.sum(z), dist=CAT)(key, jnp.float32(0.3), None)
    msg = r"rebar: dist must be jaxgrad.dists.bernoulli or jaxgrad.dists.categorical"
    with pytest.raises(ValueError, match=msg + r".*got 'normal'"):
        jaxgrad.rebar(f, dist=jaxgrad.dists.normal)
    with pytest.raises(ValueError, match=msg.replace("rebar", "relax")):
        jaxgrad.relax(f, lambda z, phi: jnp.sum(z), dist=jaxgrad.dists.normal)
    with pytest.raises(
        TypeError, match=r"rebar: dist must be a distribution instance.*categorical"
    ):
        jaxgrad.rebar(f, dist=jaxgrad.dists.Categorical)
    with pytest.raises(TypeError, match=r"relax: dist must be a jaxgrad.dists spec"):
        jaxgrad.relax(f, lambda z, phi: jnp.sum(z), dist="categorical")
    est = jaxgrad.rebar(f, dist=CAT, eta=jnp.ones(3, jnp.float32))  # [3] vs logits [3, 4]
    with pytest.raises(ValueError, match=r"rebar: eta must be a scalar or broadcastable"):
        est(key, LOGITS)
