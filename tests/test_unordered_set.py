"""The unordered set estimator: set probabilities, exact expectation, sampler, errors.

The strongest check is deterministic: Gumbel-top-k draws the ordered sequence
``(s_1, ..., s_k)`` with the Plackett-Luce probability
``prod_i p(s_i) / (1 - p(s_1) - ... - p(s_{i-1}))``, so the expectation of the
estimator is a finite sum over ordered sequences; it must equal the exact
gradient to round-off.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_unbiased_in_both, exact_grads, joint, straight_through_categorical
from scipy import stats

import jaxgrad
from jaxgrad._src.estimators import unordered_set as us

NUM_KEYS = 20_000


def f_nonlinear(x, a):
    s = jnp.sum(x * a)
    return jnp.sin(2.0 * s) + s**2 + jnp.sum(x[..., 0]) * a.reshape(-1)[0]


def _outcomes(log_pi):
    """Every joint outcome (tuple of classes) and its probability, in float64 NumPy."""
    log_pi = np.asarray(log_pi, np.float64)
    d, k = log_pi.shape
    outcomes = list(itertools.product(range(k), repeat=d))
    probs = np.array([np.exp(sum(log_pi[v, o[v]] for v in range(d))) for o in outcomes])
    return outcomes, probs


def _set_probs(probs, k):
    """Plackett-Luce probability of every unordered k-set (frozenset of outcome ids)."""
    out = {}
    for seq in itertools.permutations(range(len(probs)), k):
        pr = _sequence_prob(probs, seq)
        out[frozenset(seq)] = out.get(frozenset(seq), 0.0) + pr
    return out


def _sequence_prob(probs, seq):
    """``prod_i p(s_i) / (mass not yet drawn)``, the mass summed (not subtracted) for accuracy."""
    pr, taken = 1.0, np.zeros(len(probs), bool)
    for s in seq:
        pr *= probs[s] / probs[~taken].sum()
        taken[s] = True
    return pr


# ------------------------------------------------------ set probabilities


@jax.jit
def _all_sets(idx, log_p, log_pi):
    return jax.vmap(lambda i, lp: us.set_log_probs(lp, us._log_complement(i, log_pi)))(idx, log_p)


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])
def test_set_probabilities_match_plackett_luce(scale, rng):
    num_classes, k = 6, 3
    log_pi = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(1, num_classes)) * scale))
    outcomes, probs = _outcomes(log_pi)
    exact = _set_probs(probs, k)
    sets = sorted(exact, key=sorted)
    idx = jnp.asarray([[[outcomes[s][0]] for s in sorted(S)] for S in sets])  # [n, k, 1]
    log_p = jnp.log(jnp.asarray([[probs[s] for s in sorted(S)] for S in sets]))

    log_p0, log_p1, _ = _all_sets(idx, log_p, log_pi)
    np.testing.assert_allclose(np.exp(log_p0), [exact[S] for S in sets], rtol=1e-9)
    assert abs(float(jnp.sum(jnp.exp(log_p0))) - 1.0) < 1e-9
    # Leave-one-out: the probability of S \ {s} under the distribution without s.
    for n, S in enumerate(sets[:5]):
        for i, s in enumerate(sorted(S)):
            others = [j for j in range(num_classes) if j != s]
            loo = _set_probs(probs[others] / probs[others].sum(), k - 1)
            key = frozenset(others.index(j) for j in S if j != s)
            np.testing.assert_allclose(np.exp(log_p1[n, i]), loo[key], rtol=1e-9)


@jax.jit
def _set_log_probs(idx, log_pi):
    log_p = jnp.sum(jnp.take_along_axis(log_pi, idx.T, axis=1), axis=0)
    return us.set_log_probs(log_p, us._log_complement(idx, log_pi))


def test_set_probabilities_extreme_and_float32():
    # A set that holds almost all the mass next to a tiny member, and hopeless sets.
    log_pi = jax.nn.log_softmax(jnp.asarray([[0.0, -40.0, -45.0, -80.0, -200.0]], jnp.float32))
    for members in ([0, 1], [0, 3], [3, 4], [1, 4]):
        out = _set_log_probs(jnp.asarray(members, jnp.int32)[:, None], log_pi)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in out), (members, out)
    # Class 0 is (almost surely) first, so {0, 1} is the top-2 set iff the Gumbel of class 1
    # beats those of classes 2-4: p(S) = p_1 / (p_1 + rest) up to O(p_1 rest / p_0^2).
    lp0, _, _ = _set_log_probs(jnp.asarray([[0], [1]], jnp.int32), log_pi)
    rest = np.logaddexp.reduce(np.asarray(log_pi[0, 2:], np.float64))
    expected = float(log_pi[0, 1]) - np.logaddexp(float(log_pi[0, 1]), rest)
    np.testing.assert_allclose(float(lp0), expected, atol=1e-6)  # log p(S), float32


# ------------------------------------------------- exact expectation


@pytest.mark.parametrize(("shape", "k"), [((4,), 2), ((2, 3), 3)])
def test_expectation_over_all_ordered_samples_is_exact(shape, k, rng):
    logits = jnp.asarray(rng.normal(size=shape))
    a = jnp.asarray(rng.normal(size=shape))
    d = math.prod(shape[:-1])
    log_pi = jax.nn.log_softmax(logits.reshape(d, shape[-1]), axis=-1)
    outcomes, probs = _outcomes(log_pi)
    seqs = list(itertools.permutations(range(len(outcomes)), k))
    weights = [_sequence_prob(probs, seq) for seq in seqs]
    idx = jnp.asarray([[outcomes[s] for s in seq] for seq in seqs])  # [n, k, d]

    @jax.jit
    def estimates(idx):
        def one(i):
            x = jax.nn.one_hot(i, shape[-1], dtype=logits.dtype).reshape((k, *shape))
            values = jax.vmap(lambda x: f_nonlinear(x, a))(x)
            log_p = jnp.sum(jnp.take_along_axis(log_pi, i.T, axis=1), axis=0)
            w, g = us.set_estimate(log_pi, i, log_p, values)
            return jnp.sum(w * values), g.reshape(shape)

        return jax.vmap(one)(idx)

    values, grads = estimates(idx)
    weights = np.asarray(weights)
    ex_l, _ = exact_grads(f_nonlinear, jaxgrad.dists.categorical, logits, a)
    xs = jaxgrad.dists.categorical.support(logits)
    ex_value = np.sum(probs * np.asarray(jax.vmap(lambda x: f_nonlinear(x, a))(xs)))
    np.testing.assert_allclose(np.tensordot(weights, values, 1), ex_value, rtol=1e-10)
    np.testing.assert_allclose(np.tensordot(weights, grads, 1), ex_l, rtol=1e-9, atol=1e-12)


def test_whole_support_is_exact(key):
    logits = jnp.asarray([[0.3, -1.0], [2.0, 0.5]], jnp.float32)
    a = jnp.asarray([[1.0, -0.5], [0.25, 2.0]], jnp.float32)
    est = jaxgrad.unordered_set(f_nonlinear, num_samples=4)
    run = jax.jit(jax.vmap(jax.value_and_grad(est, argnums=(1, 2)), in_axes=(0, None, None)))
    values, (g_l, g_a) = run(jax.random.split(key, 3), logits, a)
    ex_l, ex_a = exact_grads(f_nonlinear, jaxgrad.dists.categorical, logits, a)
    for i in range(3):
        np.testing.assert_allclose(g_l[i], ex_l, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g_a[i], ex_a, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- sampler


def test_beam_search_draws_gumbel_top_k_sets(key, rng):
    """Set frequencies from stochastic beam search against the Plackett-Luce set law."""
    log_pi = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 3)), jnp.float32))
    k, n = 2, 20_000
    idx, _ = jax.jit(jax.vmap(lambda kk: us._beam_sample(kk, log_pi, k)))(jax.random.split(key, n))
    outcomes, probs = _outcomes(log_pi)
    exact = _set_probs(probs, k)
    ids = {o: i for i, o in enumerate(outcomes)}
    counts = {}
    for row in np.asarray(idx):
        s = frozenset(ids[tuple(int(c) for c in r)] for r in row)
        assert len(s) == k  # distinct
        counts[s] = counts.get(s, 0) + 1
    sets = sorted(exact, key=sorted)
    observed = np.array([counts.get(s, 0) for s in sets])
    expected = np.array([exact[s] for s in sets])
    expected = n * expected / expected.sum()  # float32 probabilities: renormalize
    assert stats.chisquare(observed, expected).pvalue > 0.01


# -------------------------------------------------------- Monte Carlo


LOGITS = jnp.asarray([[0.3, -0.8, 1.2, 0.1], [0.0, 0.5, -0.5, 0.2], [1.0, -1.0, 0.0, 0.4]])
LOGITS = LOGITS.astype(jnp.float32)
W = jnp.asarray(np.linspace(-1.0, 1.0, 12).reshape(3, 4), jnp.float32)
_EST = jaxgrad.unordered_set(f_nonlinear, num_samples=3)


def test_unbiased(key):
    assert_unbiased_in_both(
        joint(_EST), key, f_nonlinear, jaxgrad.dists.categorical, LOGITS, W, num_keys=NUM_KEYS
    )


def test_power_rejects_straight_through(key):
    st = straight_through_categorical(f_nonlinear)
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased_in_both(
            st, key, f_nonlinear, jaxgrad.dists.categorical, LOGITS, W, num_keys=NUM_KEYS
        )


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_dtype_and_masked_classes(dtype, key):
    logits = jnp.asarray([[1e4, -1e4, 0.0], [0.0, -jnp.inf, 1.0]], dtype)

    def f(x):
        return jnp.sum(x * jnp.arange(6, dtype=x.dtype).reshape(2, 3)) ** 2

    value, g = jax.jit(jax.value_and_grad(jaxgrad.unordered_set(f, num_samples=3), argnums=1))(
        key, logits
    )
    assert g.dtype == dtype and value.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.isfinite(value))
    assert float(g[1, 1]) == 0.0


def test_errors(key):
    key, batch_key = jax.random.split(key)
    with pytest.raises(TypeError, match="unordered_set: f must be a callable"):
        jaxgrad.unordered_set(1, num_samples=2)
    with pytest.raises(ValueError, match="unordered_set: num_samples must be at least 2"):
        jaxgrad.unordered_set(f_nonlinear, num_samples=1)
    with pytest.raises(TypeError, match="unordered_set: num_samples must be a static Python int"):
        jaxgrad.unordered_set(f_nonlinear, num_samples=None)
    est = jaxgrad.unordered_set(lambda x: jnp.sum(x), num_samples=5)
    with pytest.raises(ValueError, match="unordered_set: num_samples=5 exceeds the 4 joint"):
        jax.eval_shape(est, key, jnp.zeros((2, 2), jnp.float32))
    with pytest.raises(ValueError, match="unordered_set: num_samples=5 exceeds the 4 joint"):
        jax.eval_shape(est, key, jnp.zeros(4, jnp.float32))
    with pytest.raises(ValueError, match=r"unordered_set: logits must have shape \[\.\.\., K\]"):
        jax.eval_shape(est, key, jnp.float32(1.0))
    with pytest.raises(TypeError, match="unordered_set: logits must have a floating dtype"):
        jax.eval_shape(est, key, jnp.zeros(6, jnp.int32))
    with pytest.raises(ValueError, match="unordered_set accepts a single key"):
        jax.eval_shape(est, jax.random.split(batch_key, 2), LOGITS)
    with pytest.raises(ValueError, match="unordered_set: f must return a scalar"):
        jax.eval_shape(jaxgrad.unordered_set(lambda x: x, num_samples=2), key, LOGITS)
