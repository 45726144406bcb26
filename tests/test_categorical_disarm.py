"""Categorical DisARM: unbiasedness (with power), the formula on fixed noise, the coupling's law,
the reduction to DisARM for K = 2, variance against RLOO, and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    categorical_problem,
    coupled_categorical,
    coupled_coins,
    exact_grads,
    grad_samples_of_many,
    joint,
    never_differentiated,
    softplus_cosine,
    straight_through_categorical,
)
from scipy import stats

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad._src.estimators import categorical_disarm as cd
from jaxgrad.diagnostics import assert_unbiased

F32 = jnp.float32
NUM_KEYS = 20_000
CAT = jaxgrad.dists.categorical
LOGITS, A = categorical_problem()
ONE_LOGITS = jnp.asarray([[0.4, -1.0, 2.0, 0.0, 0.3]], F32)  # one variable, five classes
ONE_A = jnp.asarray([[-0.8, 0.9, 0.2, -0.4, 1.2]], F32)

# name -> (f, logits, a, estimator); the straight-through twins are the power checks.
CASES = {
    "coupled": (coupled_categorical, LOGITS, A, cd.categorical_disarm(coupled_categorical)),
    "coupled-4": (
        coupled_categorical,
        LOGITS,
        A,
        cd.categorical_disarm(coupled_categorical, num_samples=4),
    ),
    "softplus": (softplus_cosine, LOGITS, A, cd.categorical_disarm(softplus_cosine)),
    "one-variable": (softplus_cosine, ONE_LOGITS, ONE_A, cd.categorical_disarm(softplus_cosine)),
}
UNBIASED = sorted(CASES)
BIASED = ["coupled", "softplus", "one-variable"]
RLOO = jaxgrad.rloo(coupled_categorical, dist=CAT, num_samples=2)

_SAMPLES = {}


def _samples(key):
    """Gradient samples of every case, its straight-through twin and RLOO: one program."""
    if not _SAMPLES:
        ests = {name: joint(CASES[name][3]) for name in UNBIASED}
        ests.update({f"st-{name}": straight_through_categorical(CASES[name][0]) for name in BIASED})
        ests["rloo"] = joint(RLOO)
        params = {name: (CASES[name][1], CASES[name][2]) for name in UNBIASED}
        params.update({f"st-{name}": params[name] for name in BIASED})
        params["rloo"] = params["coupled"]
        _SAMPLES.update(
            grad_samples_of_many(ests, params, key, num_keys=NUM_KEYS, batch_size=2_000)
        )
    return _SAMPLES


def _exact(name):
    f, logits, a, _ = CASES[name]
    return exact_grads(f, CAT, logits, a)


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_in_logits_and_in_the_cost_argument(name, key):
    # assert_unbiased_in_both's test (5 sigma, in logits and in a), all cases in one program.
    assert_unbiased(_samples(key)[name], _exact(name))


@pytest.mark.parametrize("name", BIASED)
def test_power_the_same_test_rejects_straight_through(name, key):
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(_samples(key)[f"st-{name}"], _exact(name))


def test_variance_below_rloo_at_two_evaluations(key):
    """Measured on the 3 x 4 problem (2 evaluations each): total variance of the logits gradient."""
    s = _samples(key)
    var_cd = float(np.sum(np.var(np.asarray(s["coupled"][0], np.float64), axis=0)))
    var_rloo = float(np.sum(np.var(np.asarray(s["rloo"][0], np.float64), axis=0)))
    print(f"total variance: categorical_disarm {var_cd:.4f}, rloo {var_rloo:.4f}")
    assert var_cd < var_rloo


# ------------------------------------------------------------------ the formula on fixed noise


def _by_hand(u, logits, a, f):
    """The estimate from uniforms ``u`` ``[N, V, K-1]``, with loops and the product formula."""
    u, l = np.asarray(u, np.float64), np.asarray(logits, np.float64)
    n_pairs, (num_vars, k) = u.shape[0], l.shape
    pi = np.exp(l - l.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    grad, values, splits = np.zeros_like(l), [], []
    for n in range(n_pairs):
        z, z_anti, w = [], [], []
        for v in range(num_vars):
            order = np.argsort(l[v], kind="stable")
            p = pi[v][order]
            sig = [p[i] / p[i:].sum() for i in range(k - 1)] + [1.0]
            pos = next(i for i in range(k) if i == k - 1 or u[n, v, i] < sig[i])
            pos_a = next(i for i in range(k) if i == k - 1 or 1 - u[n, v, i] < sig[i])
            m = min(pos, pos_a)
            splits.append(m if pos != pos_a else -1)
            prod = np.prod([(1 - sig[i]) ** 2 / (1 - 2 * sig[i]) for i in range(m)])
            w.append(0.0 if pos == pos_a else (1 - sig[m]) * prod)
            z.append(order[pos])
            z_anti.append(order[pos_a])
        x = np.eye(k)[z]
        x_a = np.eye(k)[z_anti]
        f1 = float(f(jnp.asarray(x, F32), a))
        f2 = float(f(jnp.asarray(x_a, F32), a))
        values += [f1, f2]
        grad += 0.5 * np.asarray(w)[:, None] * (f1 - f2) * (x - x_a) / n_pairs
    return np.mean(values), grad, splits


_FOUR = cd.categorical_disarm(coupled_categorical, num_samples=8)


@jax.jit
def _estimate_and_noise(key, logits, a):
    k_est = jax.random.clone(key)
    u = samplers.uniform_open(key, (4, *logits.shape[:-1], logits.shape[-1] - 1), F32)
    return u, jax.value_and_grad(_FOUR, argnums=1)(k_est, logits, a)


def test_formula_on_fixed_noise(key):
    splits = []
    for k in jax.random.split(key, 3):
        u, (value, grad) = _estimate_and_noise(k, LOGITS, A)
        v_hand, g_hand, s = _by_hand(u, LOGITS, A, coupled_categorical)
        splits += s
        np.testing.assert_allclose(value, v_hand, rtol=1e-5)
        np.testing.assert_allclose(grad, g_hand, rtol=1e-4, atol=1e-6)
    assert max(splits) >= 1, "the product over shared zeros was not exercised"


def test_black_box_and_masked_class(key):
    f = never_differentiated(lambda x: coupled_categorical(x, A))
    logits = LOGITS.at[1, 2].set(-jnp.inf)
    grads = jax.jit(
        jax.vmap(jax.grad(cd.categorical_disarm(f, num_samples=4), argnums=1), in_axes=(0, None))
    )(jax.random.split(key, 64), logits)
    assert np.all(np.isfinite(grads)) and np.all(grads[:, 1, 2] == 0)
    assert np.any(grads != 0)


# ------------------------------------------------------------------------- the coupling's law

LAW_LOGITS = jnp.asarray(
    [[0.3, -0.8, 1.2, 0.1], [-jnp.inf, 0.5, -0.5, 2.0], [0.0, 0.0, 0.0, 0.0]], F32
)
NUM_PAIRS = 100_000


def _pair_law(l):
    """``P(z = a, z~ = b)`` of the antithetic stick-breaking coupling, from interval lengths.

    At a position both sticks reach with stopping probability ``s``: both stop
    on ``max(0, 2s - 1)`` of ``u``, one alone on ``min(s, 1 - s)`` each, neither
    on ``max(0, 1 - 2s)``; a stick running alone stops with probability ``s``.
    """
    l = np.asarray(l, np.float64)
    k = l.size
    order = np.argsort(l, kind="stable")
    p = np.exp(l[order] - l.max())
    p /= p.sum()
    sig = [p[i] / p[i:].sum() for i in range(k - 1)] + [1.0]
    law = np.zeros((k, k))
    alive = 1.0
    for n in range(k):
        law[n, n] = alive * (max(0.0, 2 * sig[n] - 1) if n < k - 1 else 1.0)
        for m in range(n + 1, k):
            one = alive * min(sig[n], 1 - sig[n]) * np.prod([1 - sig[j] for j in range(n + 1, m)])
            law[n, m] = law[m, n] = one * sig[m]
        alive *= max(0.0, 1 - 2 * sig[n]) if n < k - 1 else 0.0
    out = np.zeros((k, k))
    out[np.ix_(order, order)] = law  # from sorted positions to classes
    return out


@jax.jit
def _pairs(key, logits):
    u = samplers.uniform_open(key, (NUM_PAIRS, logits.shape[0], logits.shape[1] - 1), F32)
    log_sigma, log_rest, _, _, idx, idx_anti = cd._coupled_pairs(logits, u)
    return idx, idx_anti, cd._log_weights(log_sigma, log_rest)


def test_each_sample_is_categorical_and_the_pair_has_the_coupling_law(key):
    idx, idx_anti, log_w = (np.asarray(t) for t in _pairs(key, LAW_LOGITS))
    k = LAW_LOGITS.shape[-1]
    for v in range(LAW_LOGITS.shape[0]):
        pi = np.asarray(jax.nn.softmax(LAW_LOGITS[v].astype(jnp.float64)))
        live = pi > 0
        for sample in (idx[:, v], idx_anti[:, v]):
            counts = np.bincount(sample, minlength=k)
            assert np.all(counts[~live] == 0)
            assert stats.chisquare(counts[live], NUM_PAIRS * pi[live]).pvalue > 1e-3
        law = _pair_law(LAW_LOGITS[v])
        np.testing.assert_allclose(law.sum(0), pi, atol=1e-12)  # the law's own marginals
        joint_counts = np.bincount(idx[:, v] * k + idx_anti[:, v], minlength=k * k).reshape(k, k)
        possible = law > 0
        assert np.all(joint_counts[~possible] == 0)
        assert stats.chisquare(joint_counts[possible], NUM_PAIRS * law[possible]).pvalue > 1e-3
        # The importance weight is q(a) q(b) / p(a, b) for every pair of distinct live classes.
        order = np.argsort(np.asarray(LAW_LOGITS[v], np.float64), kind="stable")
        rank = np.argsort(order)
        for a_ in range(k):
            for b_ in range(k):
                if a_ != b_ and live[a_] and live[b_]:
                    assert possible[a_, b_], "ascending order left a pair impossible"
                    m = min(rank[a_], rank[b_])
                    want = pi[a_] * pi[b_] / law[a_, b_]
                    np.testing.assert_allclose(np.exp(log_w[v, m]), want, rtol=1e-5)


# ------------------------------------------------------------------------ K = 2 is DisARM

COIN_LOGITS = jnp.asarray([[0.3, -0.5], [1.0, 1.0], [-0.2, 1.4]], F32)
COIN_A = jnp.asarray([0.3, 0.7, 1.1], F32)
# The less likely class of each coin (stable ascending sort: class 0 on a tie) and the coin
# c = 1[x = that class], with logit -|l_1 - l_0| <= 0.
LESS = jnp.argsort(COIN_LOGITS, axis=-1, stable=True)[:, 0]
SIGN = jnp.where(LESS == 1, 1.0, -1.0).astype(F32)


def _cat_cost(x, a):
    return coupled_coins(x[:, 1], a)


def _relabeled_coin_cost(c, a):
    return coupled_coins(jnp.where(LESS == 1, c, 1.0 - c), a)


@jax.jit
def _both(keys):
    vg = lambda est: jax.vmap(jax.value_and_grad(est, argnums=1), in_axes=(0, None, None))
    cat = vg(cd.categorical_disarm(_cat_cost, num_samples=4))
    out = {"cat": cat(keys, COIN_LOGITS, COIN_A)}
    theta = -jnp.abs(COIN_LOGITS[:, 1] - COIN_LOGITS[:, 0])
    out["coin"] = vg(jaxgrad.disarm(_relabeled_coin_cost, num_samples=2))(
        jax.random.clone(keys), theta, COIN_A
    )
    for d in (0, 2):  # one coin: plain DisARM on l_1 - l_0, whichever class is less likely
        one = COIN_LOGITS[d : d + 1]
        out[f"cat{d}"] = cat(jax.random.clone(keys), one, COIN_A[d : d + 1])
        out[f"coin{d}"] = vg(jaxgrad.disarm(coupled_coins, num_samples=2))(
            jax.random.clone(keys), one[:, 1] - one[:, 0], COIN_A[d : d + 1]
        )
    return out


def test_two_classes_is_disarm_on_the_coin_sample_by_sample(key):
    """K = 2: DisARM on the coin "the less likely class", from the same uniforms.

    With one variable that is plain DisARM on ``l_1 - l_0`` (the estimate is symmetric in
    the pair). With several, each coin is relabeled to its less likely class first: the
    joint pair differs from DisARM's on ``l_1 - l_0`` when coins lie on both sides of 1/2.
    """
    out = _both(jax.random.split(key, 64))
    (v_cat, g_cat), (v_coin, g_coin) = out["cat"], out["coin"]
    assert np.any(g_coin != 0)
    np.testing.assert_allclose(v_cat, v_coin, rtol=1e-6)
    np.testing.assert_allclose(g_cat[..., 1], SIGN * g_coin, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g_cat[..., 0], -SIGN * g_coin, rtol=1e-5, atol=1e-7)
    for d in (0, 2):
        (v_cat, g_cat), (v_coin, g_coin) = out[f"cat{d}"], out[f"coin{d}"]
        assert np.any(g_coin != 0)
        np.testing.assert_allclose(v_cat, v_coin, rtol=1e-6)
        np.testing.assert_allclose(g_cat[..., 1], g_coin, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(g_cat[..., 0], -g_coin, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------ errors


def test_errors_for_misuse(key):
    f = coupled_categorical
    with pytest.raises(ValueError, match="num_samples must be even"):
        cd.categorical_disarm(f, num_samples=3)
    with pytest.raises(ValueError, match="at least 2"):
        cd.categorical_disarm(f, num_samples=1)
    with pytest.raises(TypeError, match="static Python int"):
        cd.categorical_disarm(f, num_samples=2.0)
    with pytest.raises(TypeError, match="callable"):
        cd.categorical_disarm("f")
    with pytest.raises(TypeError, match="f_takes_key"):
        cd.categorical_disarm(f, f_takes_key=1)
    est = cd.categorical_disarm(f)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    with pytest.raises(ValueError, match="scalar"):
        est(k1, jnp.float32(0.0), A)
    with pytest.raises(TypeError, match="logits"):
        est(k2, jnp.zeros((3, 4), jnp.int32), A)
    with pytest.raises(ValueError, match="scalar"):
        cd.categorical_disarm(lambda x, a: x * a)(k3, LOGITS, A)
    with pytest.raises(TypeError, match="first-order"):
        jax.jit(jax.hessian(lambda l: est(k4, l, A)))(LOGITS)
