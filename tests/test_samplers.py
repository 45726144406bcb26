"""The foundation: Gumbel noise, Gumbel-max, the pathwise normal, and the dists specs.

Distributions are checked against scipy (chi-square and Kolmogorov-Smirnov at
p > 0.01 with fixed keys, about 1e5 draws), each paired with a power check: the
same test rejects a slightly wrong distribution. Gradients are checked per
sample against closed forms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import jaxgrad
from jaxgrad import dists

F32, F64, BF16, F16 = jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16
N = 100_000


def _key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed)


def _chisquare(counts, probs):
    counts, probs = np.asarray(counts, np.float64), np.asarray(probs, np.float64)
    expected = probs / probs.sum() * counts.sum()
    return stats.chisquare(counts, expected).pvalue


# ----------------------------------------------------------------- Gumbel noise


@pytest.mark.parametrize("dtype", [F32, F64])
def test_gumbel_matches_the_gumbel_cdf(dtype):
    g = np.asarray(jaxgrad.gumbel(_key(1), (N,), dtype), np.float64)
    assert jaxgrad.gumbel(_key(1), (N,), dtype).dtype == dtype
    assert stats.kstest(g, stats.gumbel_r.cdf).pvalue > 0.01
    # Power: a shift of 0.03 is detected by the same test.
    assert stats.kstest(g, stats.gumbel_r(loc=0.03).cdf).pvalue < 0.01


@pytest.mark.parametrize("dtype", [BF16, F16])
def test_gumbel_in_half_precision_is_finite_and_right(dtype):
    g = jaxgrad.gumbel(_key(2), (N,), dtype)
    assert g.dtype == dtype and g.shape == (N,)
    g = np.asarray(g, np.float64)
    assert np.all(np.isfinite(g))
    # Mean = Euler's gamma, variance = pi^2 / 6; half precision rounds, hence the tolerance.
    assert abs(g.mean() - np.euler_gamma) < 5 * np.pi / np.sqrt(6 * N) + 5e-3
    assert abs(g.var() - np.pi**2 / 6) < 0.05


def test_gumbel_shapes_and_legacy_keys():
    a = jaxgrad.gumbel(_key(3), (2, 3))
    b = jaxgrad.gumbel(jax.random.PRNGKey(3), (2, 3))
    assert a.shape == (2, 3) and a.dtype == F32
    np.testing.assert_array_equal(a, b)
    assert jaxgrad.gumbel(_key(4)).shape == ()


# ----------------------------------------------------------------- Gumbel-max


def test_gumbel_max_frequencies_match_softmax_and_masks_are_never_drawn():
    logits = jnp.asarray([0.5, -1.0, -jnp.inf, 2.0, 0.0, -0.3], F32)
    idx = np.asarray(jaxgrad.categorical(_key(5), logits, shape=(N,)))
    assert idx.dtype == np.int32 and idx.shape == (N,)
    counts = np.bincount(idx, minlength=6)
    assert counts[2] == 0, "a masked category was drawn"
    keep = np.arange(6) != 2
    probs = special.softmax(np.asarray(logits, np.float64)[keep])
    assert _chisquare(counts[keep], probs) > 0.01
    # Power: softmax of logits scaled by 1.05 is rejected.
    wrong = special.softmax(1.05 * np.asarray(logits, np.float64)[keep])
    assert _chisquare(counts[keep], wrong) < 0.01


def test_gumbel_max_along_another_axis_in_bfloat16():
    logits = jnp.asarray([[0.0, 1.0], [1.0, 0.0], [-jnp.inf, -1.0]], BF16)  # categories on axis 0
    idx = np.asarray(jaxgrad.categorical(_key(6), logits, axis=0, shape=(N, 2)))
    assert idx.shape == (N, 2)
    for col in range(2):
        counts = np.bincount(idx[:, col], minlength=3)
        lg = np.asarray(logits[:, col], np.float64)
        keep = np.isfinite(lg)
        assert np.all(counts[~keep] == 0)
        assert _chisquare(counts[keep], special.softmax(lg[keep])) > 0.01


def test_gumbel_max_huge_logits_keep_their_meaning_in_bfloat16():
    # bfloat16 spacing at 1e4 is 64: noise must be added in float32, not in bfloat16.
    logits = jnp.asarray([1e4, 1e4 - 64.0, -1e4], BF16)
    idx = np.asarray(jaxgrad.categorical(_key(7), logits, shape=(1000,)))
    assert np.all(idx == 0)


# ----------------------------------------------------------------- pathwise normal


def test_normal_pathwise_gradient_equals_closed_form_per_sample(rng):
    loc = jnp.asarray(rng.normal(size=1000), F64)
    scale = jnp.asarray(rng.uniform(0.5, 2.0, size=1000), F64)
    x = jaxgrad.normal(_key(8), loc, scale)
    eps = jaxgrad.normal(_key(8), jnp.zeros(1000, F64), jnp.ones(1000, F64))
    np.testing.assert_allclose(x, loc + scale * eps, rtol=1e-14)
    f = lambda m, s: jaxgrad.normal(_key(8), m, s)
    _, d_loc = jax.jvp(lambda m: f(m, scale), (loc,), (jnp.ones_like(loc),))
    _, d_scale = jax.jvp(lambda s: f(loc, s), (scale,), (jnp.ones_like(scale),))
    np.testing.assert_array_equal(d_loc, 1.0)
    np.testing.assert_allclose(d_scale, eps, rtol=1e-14)
    g_loc, g_scale = jax.grad(lambda m, s: f(m, s).sum(), argnums=(0, 1))(loc, scale)
    np.testing.assert_array_equal(g_loc, 1.0)
    np.testing.assert_allclose(g_scale, eps, rtol=1e-14)


def test_normal_is_standard_normal_and_keeps_dtypes():
    eps = jaxgrad.normal(_key(9), jnp.zeros((), F32), jnp.ones((), F32), shape=(N,))
    assert eps.shape == (N,) and eps.dtype == F32
    eps = np.asarray(eps, np.float64)
    assert stats.kstest(eps, stats.norm.cdf).pvalue > 0.01
    assert stats.kstest(eps, stats.norm(scale=1.02).cdf).pvalue < 0.01  # power
    x = jaxgrad.normal(_key(10), jnp.ones(3, BF16), jnp.ones(3, BF16))
    assert x.dtype == BF16
    x = jaxgrad.normal(jax.random.PRNGKey(10), jnp.ones((2, 1), F32), jnp.ones(3, F32))
    assert x.shape == (2, 3)


# ----------------------------------------------------------------- dists specs


def test_bernoulli_spec_frequencies_and_log_prob():
    logits = jnp.asarray([-1.0, 0.0, 2.0], F32)
    x = np.asarray(dists.bernoulli.sample(_key(11), jnp.broadcast_to(logits, (N, 3))))
    assert set(np.unique(x).tolist()) <= {0.0, 1.0}
    p = special.expit(np.asarray(logits, np.float64))
    se = np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(x.mean(0) - p) < 5 * se), (x.mean(0), p)
    assert np.any(np.abs(x.mean(0) - special.expit(np.asarray(logits) + 0.05)) > 5 * se)  # power
    one = dists.bernoulli.sample(_key(12), logits)
    lp = dists.bernoulli.log_prob(logits, one)
    np.testing.assert_allclose(lp, stats.bernoulli.logpmf(np.asarray(one), p).sum(), rtol=1e-6)
    # Extreme and masked logits: finite inside the support, -inf outside.
    big = jnp.asarray([60.0, -60.0, jnp.inf, -jnp.inf], F32)
    lp_big = dists.bernoulli.log_prob(big, jnp.asarray([1.0, 0.0, 1.0, 0.0], F32))
    np.testing.assert_allclose(lp_big, -2 * np.log1p(np.exp(-60.0)), atol=1e-30)
    assert float(dists.bernoulli.log_prob(big, jnp.asarray([0.0, 0.0, 1.0, 0.0], F32))) < -59


def test_categorical_spec_frequencies_and_log_prob():
    logits = jnp.asarray([[0.3, -0.5, 1.0], [0.0, -jnp.inf, 0.7]], F32)
    x = np.asarray(dists.categorical.sample(_key(13), jnp.broadcast_to(logits, (N, 2, 3))))
    assert x.shape == (N, 2, 3)
    np.testing.assert_array_equal(x.sum(-1), 1.0)
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    probs = special.softmax(np.asarray(logits, np.float64), axis=-1)
    for row in range(2):
        counts = x[:, row].sum(0)
        keep = probs[row] > 0
        assert np.all(counts[~keep] == 0)
        assert _chisquare(counts[keep], probs[row, keep]) > 0.01
    one = np.asarray(dists.categorical.sample(_key(14), logits))
    expected = sum(stats.multinomial.logpmf(one[r], 1, probs[r]) for r in range(2))
    np.testing.assert_allclose(dists.categorical.log_prob(logits, one), expected, rtol=1e-6)


@jax.jit
def _nan_contract(key, logits):
    k1, k2 = jax.random.split(key)
    k = jaxgrad.categorical(k1, logits, shape=(200, 3))
    x = dists.categorical.sample(k2, logits)
    lp = jax.vmap(dists.categorical.log_prob)(logits, x)
    lp_nan_x = dists.categorical.log_prob(logits[2], jnp.asarray([jnp.nan, 0.0, 0.0], F32))
    g = jax.grad(dists.categorical.log_prob)(logits[0], jnp.asarray([1.0, 0.0, 0.0], F32))
    return k, x, lp, lp_nan_x, g


def test_nan_or_impossible_logits_give_index_minus_one_and_nan_samples():
    """NaN in, NaN out: an integer cannot be NaN, so a distribution with a NaN logit or with
    every logit -inf gets the out-of-range index -1 on every draw (it returned the NaN
    category, a plausible index); the valid rows of the batch are unaffected."""
    inf, nan = jnp.inf, jnp.nan
    logits = jnp.asarray([[0.0, nan, 0.0], [-inf, -inf, -inf], [0.0, 1.0, -inf]], F32)
    k, x, lp, lp_nan_x, g = (np.asarray(a) for a in _nan_contract(_key(16), logits))
    assert k.dtype == np.int32 and k.shape == (200, 3)
    np.testing.assert_array_equal(k[:, :2], -1)
    assert set(np.unique(k[:, 2]).tolist()) == {0, 1}  # both unmasked classes are drawn
    # The spec turns the sentinel into a NaN row; log_prob is NaN for NaN logits or x, and so
    # is its gradient: nothing is silently dropped.
    assert np.all(np.isnan(x[:2])) and x[2].sum() == 1.0 and x[2, 2] == 0.0
    assert np.all(np.isnan(lp[:2])) and np.isfinite(lp[2])
    assert np.isnan(lp_nan_x) and np.all(np.isnan(g))


def test_normal_spec_log_prob_and_mean(rng):
    loc = jnp.asarray(rng.normal(size=4), F64)
    scale = jnp.asarray(rng.uniform(0.5, 2, size=4), F64)
    x = dists.normal.sample(_key(15), (loc, scale))
    expected = stats.norm.logpdf(np.asarray(x), np.asarray(loc), np.asarray(scale)).sum()
    np.testing.assert_allclose(dists.normal.log_prob((loc, scale), x), expected, rtol=1e-12)
    np.testing.assert_array_equal(dists.normal.mean((loc, scale)), loc)
    assert dists.normal.reparameterizable and not dists.bernoulli.reparameterizable


@jax.jit
@jax.vmap
def _normal_log_prob_and_grads(loc, scale, x):
    """Per element: log N(x; loc, scale) and its gradient w.r.t. (loc, scale, x)."""
    return jax.value_and_grad(lambda *a: dists.normal.log_prob(a[:2], a[2]), argnums=(0, 1, 2))(
        loc, scale, x
    )


@pytest.mark.parametrize(
    ("dtype", "scales", "rtol"),
    [
        (F32, [1e-19, 1e-30, 1e-37, 1.0], 2e-6),
        (BF16, [1e-19, 1e-30, 1e-37, 1.0], 8e-3),
        (F16, [3e-3, 1e-3, 1e-4, 1.0], 1e-3),
    ],
)
def test_normal_log_prob_and_its_gradient_at_tiny_scales(dtype, scales, rtol):
    """The textbook gradient (x - mu)^2 / s^3 - 1/s was inf at s <= 1e-19 (float32) and
    <= 3e-3 (float16), where the exact (z^2 - 1) / s is finite (issue 8)."""
    scale = jnp.asarray(scales, dtype)
    loc = jnp.zeros_like(scale)
    x = (1.5 * scale.astype(F32)).astype(dtype)  # z = 1.5, up to the rounding of x
    value, (d_loc, d_scale, d_x) = _normal_log_prob_and_grads(loc, scale, x)
    for out in (value, d_loc, d_scale, d_x):
        assert out.dtype == dtype
    s, x64 = np.asarray(scale, np.float64), np.asarray(x, np.float64)
    z = x64 / s
    np.testing.assert_allclose(
        np.asarray(value, np.float64), stats.norm.logpdf(x64, 0.0, s), rtol=rtol
    )
    np.testing.assert_allclose(np.asarray(d_loc, np.float64), z / s, rtol=rtol)
    np.testing.assert_allclose(np.asarray(d_scale, np.float64), (z * z - 1) / s, rtol=rtol)
    np.testing.assert_allclose(np.asarray(d_x, np.float64), -z / s, rtol=rtol)


def test_normal_log_prob_second_derivatives_are_exact():
    """The stop-gradient form of z = (x - mu) / s differentiates exactly at every order."""
    scale = jnp.asarray([0.7, 1e-100], F64)
    loc, x = jnp.asarray([0.2, 0.0], F64), jnp.asarray([-0.4, 2e-100], F64)
    hess = jax.jit(jax.vmap(jax.hessian(lambda p, x: dists.normal.log_prob((p[0], p[1]), x))))
    h = np.asarray(hess(jnp.stack([loc, scale], 1), x))
    s, z = np.asarray(scale), (np.asarray(x) - np.asarray(loc)) / np.asarray(scale)
    expected = np.stack(
        [
            np.stack([-1 / s**2, -2 * z / s**2], -1),
            np.stack([-2 * z / s**2, (1 - 3 * z**2) / s**2], -1),
        ],
        -2,
    )
    np.testing.assert_allclose(h, expected, rtol=1e-12)


@pytest.mark.parametrize("shape", [(3,), (2, 2)])
def test_bernoulli_support_enumerates_every_outcome(shape, rng):
    logits = jnp.asarray(rng.normal(size=shape), F64)
    xs = np.asarray(dists.bernoulli.support(logits))
    n = int(np.prod(shape))
    assert xs.shape == (2**n, *shape)
    assert len({tuple(r.ravel()) for r in xs}) == 2**n and set(np.unique(xs)) == {0.0, 1.0}
    probs = np.exp([dists.bernoulli.log_prob(logits, x) for x in xs])
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
    mean = np.tensordot(probs, xs, axes=1)
    np.testing.assert_allclose(mean, dists.bernoulli.mean(logits), rtol=1e-12)


def test_categorical_support_enumerates_every_outcome(rng):
    logits = jnp.asarray(rng.normal(size=(2, 3)), F64).at[1, 0].set(-jnp.inf)
    xs = np.asarray(dists.categorical.support(logits))
    assert xs.shape == (9, 2, 3)
    np.testing.assert_array_equal(xs.sum(-1), 1.0)
    assert len({tuple(r.ravel()) for r in xs}) == 9
    probs = np.exp([dists.categorical.log_prob(logits, x) for x in xs])
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
    assert np.sum(probs == 0) == 3  # the outcomes using the masked class
    np.testing.assert_allclose(
        np.tensordot(probs, xs, axes=1), dists.categorical.mean(logits), rtol=1e-12
    )


# ----------------------------------------------------------------- PRNG implementations


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_uniform_open_is_the_shaped_draw_under_every_impl(impl):
    """The flat, padded draw gives the bits of jax.random.uniform in the shape.

    So the padding (a compile-time measure for threefry) changes no noise, under
    any implementation; under jit and vmap the draws are open-interval and
    independent, and the Gumbel noise finite and Gumbel-distributed.
    """
    from jaxgrad._src import samplers

    key = lambda: jax.random.key(5, impl=impl)  # noqa: E731  (a fresh key, the same bits)
    tiny = jnp.finfo(F32).tiny
    for shape in [(4, 8), (3, 5, 7), (2,)]:  # a multiple of 32, a padded size, a small one
        u = samplers.uniform_open(key(), shape, F32)
        assert u.shape == shape
        np.testing.assert_array_equal(u, jax.random.uniform(key(), shape, F32, minval=tiny))
    # Under vmap over keys and jit: one independent draw per key, on (0, 1).
    keys = jax.random.split(key(), 64)
    u = jax.jit(jax.vmap(lambda k: samplers.uniform_open(k, (3, 5, 7), F32)))(keys)
    assert u.shape == (64, 3, 5, 7) and np.all((u > 0) & (u < 1))
    assert len(np.unique(np.asarray(u[:, 0, 0, 0]))) == 64
    g = jaxgrad.gumbel(key(), (N,), F32)
    assert np.all(np.isfinite(g)) and stats.kstest(np.asarray(g), stats.gumbel_r.cdf).pvalue > 0.01
