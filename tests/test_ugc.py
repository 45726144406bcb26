"""UGC: unbiasedness, the formula on fixed noise, per-coordinate variance against DisARM, errors.

Exact variances integrate over the noise: a DisARM pair ``(b_k, b~_k)`` takes
the values ``(1, 0)`` and ``(0, 1)`` with probability ``m_k = min(p_k, 1 - p_k)``
each and ``(0, 0)`` (``p_k <= 1/2``) or ``(1, 1)`` (``p_k > 1/2``) otherwise,
independently over coins, and UGC's bitflip coordinate ``j`` is uniform on the
boundary set ``S`` independently of the pair; enumerating ``3^D`` pair states
(and ``2^D`` samples ``b`` for the bitflip terms) gives every moment exactly.

The one-coin toy ``f(b) = (b - t)^2`` (``Delta = f(1) - f(0) = 1 - 2t``): for
``D = 1`` the boundary set is every coin with ``min(p, q) < 1/2`` and the bitflip
estimate ``p q (2b - 1)(f(b) - f(1 - b)) = p q Delta`` is the exact gradient:
variance 0, against DisARM's ``Delta^2 m (1 - m)^2 (1/2 - m)`` (1.296e-7 at
``p = 0.1`` and ``t = 0.499``; tests/test_arm.py). At ``p = 1/2`` UGC is DisARM,
whose variance is 0 there too.

The guarantee ``Var UGC_i <= Var DisARM_i`` holds for every coin that enters ``f``
additively (see the docstring of ``jaxgrad.ugc``); with interactions between a
boundary coin and another coin it can fail, and
``test_variance_can_exceed_disarm_with_interactions`` pins such a case (both with
the exact variances and with the Monte Carlo check, which must detect it).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    coins_problem,
    coupled_coins,
    exact_grads,
    grad_samples_of_many,
    joint,
    never_differentiated,
    softplus_cosine,
    straight_through_bernoulli,
)

import jaxgrad
from jaxgrad._src import samplers
from jaxgrad.diagnostics import assert_unbiased, grad_samples

NUM_KEYS = 20_000


def _problem(d):
    """``coins_problem(d)`` with the logits tripled, so that some coins are near the boundary.

    D = 3: logits (-3.6, 0.45, 4.5), ``S = {0, 2}``; D = 10: ``S = {0, 8, 9}``.
    """
    logits, a = coins_problem(d)
    return 3.0 * logits, a


def _boundary(logits):
    l = np.asarray(logits, np.float64)
    m = 1.0 / (1.0 + np.exp(np.abs(l)))
    return 2.0 * l.size * m < 1.0


def test_problems_mix_boundary_and_interior_coins():
    assert _boundary(_problem(1)[0]).tolist() == [True]
    assert _boundary(_problem(3)[0]).tolist() == [True, False, True]
    assert np.flatnonzero(_boundary(_problem(10)[0])).tolist() == [0, 8, 9]


# ----------------------------------------------------------- unbiasedness


# name: (estimator, cost, D); D = 1, 3, 10 between them, and the non-quadratic cost.
CASES = {
    "coupled-1": (jaxgrad.ugc(coupled_coins), coupled_coins, 1),
    "coupled-3-2draws": (jaxgrad.ugc(coupled_coins, num_samples=2), coupled_coins, 3),
    "coupled-10": (jaxgrad.ugc(coupled_coins), coupled_coins, 10),
    "softplus_cosine-3": (jaxgrad.ugc(softplus_cosine), softplus_cosine, 3),
    # f with its own noise: every one of the three evaluations of a draw gets its own key.
    "noisy-3": (jaxgrad.ugc(lambda x, k, a: _noisy(x, k, a), f_takes_key=True), coupled_coins, 3),
}


def _noisy(x, key, a):
    return coupled_coins(x, a) + 0.5 * jax.random.normal(key, (), jnp.float32)


@pytest.fixture(scope="module")
def z_test_samples():
    """Gradient samples of every case and of straight-through, from one compiled program."""
    ests = {n: joint(e) for n, (e, _, _) in CASES.items()}
    ests["straight-through"] = straight_through_bernoulli(coupled_coins)
    params = {n: _problem(d) for n, (_, _, d) in CASES.items()}
    params["straight-through"] = _problem(3)
    samples = grad_samples_of_many(
        ests, params, jax.random.key(3), num_keys=NUM_KEYS, batch_size=NUM_KEYS // 8
    )
    return samples, params


@pytest.mark.parametrize("name", sorted(CASES))
def test_unbiased(name, z_test_samples):
    samples, params = z_test_samples
    _, f, _ = CASES[name]
    assert_unbiased(samples[name], exact_grads(f, jaxgrad.dists.bernoulli, *params[name]))


def test_power_rejects_straight_through(z_test_samples):
    """The same z-test, on the same problem and sample size, rejects straight-through."""
    samples, params = z_test_samples
    exact = exact_grads(coupled_coins, jaxgrad.dists.bernoulli, *params["straight-through"])
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples["straight-through"], exact)


# ------------------------------------------------------------ fixed noise


@jax.jit
def _on_fixed_noise(key, logits, a, in_s):
    """UGC's value and gradients, DisARM's on the same uniforms, and the noise UGC draws."""
    k_ugc = jax.random.clone(key)
    k_u, k_j = jax.random.split(key)  # what ugc does with its key
    k_disarm = jax.random.clone(k_u)
    u = samplers.uniform_open(k_u, (1, *logits.shape), jnp.float32)[0]
    weights = jnp.where(in_s, 0.0, -jnp.inf).astype(jnp.float32)
    j = jax.random.categorical(k_j, weights, shape=(1,))[0]
    ugc_out = jax.value_and_grad(jaxgrad.ugc(coupled_coins), argnums=(1, 2))(k_ugc, logits, a)
    disarm_g = jax.grad(jaxgrad.disarm(coupled_coins), argnums=1)(k_disarm, logits, a)
    return u, j, ugc_out, disarm_g


def _coupled_coins_np(x, a):
    """``helpers.coupled_coins`` and its gradient in ``a``, in NumPy (float64)."""
    s = np.sum(x * a)
    prod = np.prod(1.0 + 0.5 * x * a)
    value = np.sin(2 * s) + (s - 0.3) ** 2 + prod
    grad_a = x * (2 * np.cos(2 * s) + 2 * (s - 0.3)) + prod * 0.5 * x / (1.0 + 0.5 * x * a)
    return value, grad_a


def _ugc_by_hand(u, j, logits, a):
    """The UGC formula written out coordinate by coordinate (float64)."""
    l, a = np.asarray(logits, np.float64), np.asarray(a, np.float64)
    f = lambda x: _coupled_coins_np(x, a)[0]
    p = 1.0 / (1.0 + np.exp(-l))
    s = np.flatnonzero(_boundary(l))
    b = (u < p).astype(np.float64)
    bt = (1.0 - u < p).astype(np.float64)
    f_b, f_bt = f(b), f(bt)
    g = np.zeros_like(l)
    for i in range(l.size):
        if i in s:
            if i == j:
                flipped = b.copy()
                flipped[i] = 1.0 - b[i]
                g[i] = len(s) * p[i] * (1 - p[i]) * (2 * b[i] - 1) * (f_b - f(flipped))
        elif b[i] != bt[i]:
            g[i] = 0.5 * (f_b - f_bt) * (-1.0) ** bt[i] * max(p[i], 1 - p[i])
    value = 0.5 * (f_b + f_bt)
    g_a = 0.5 * (_coupled_coins_np(b, a)[1] + _coupled_coins_np(bt, a)[1])
    return value, g, g_a, s


@pytest.mark.bitwise
def test_formula_on_fixed_noise(key):
    logits, a = _problem(5)  # logits (-3.6, -1.575, 0.45, 2.475, 4.5): S = {0, 3, 4}
    seen = set()
    for k in jax.random.split(key, 8):
        u, j, (value, (g_l, g_a)), disarm_g = _on_fixed_noise(k, logits, a, _boundary(logits))
        u, j = np.asarray(u, np.float64), int(j)
        value_ref, g_ref, g_a_ref, s = _ugc_by_hand(u, j, logits, a)
        assert s.tolist() == [0, 3, 4] and j in s
        seen.add(j)
        np.testing.assert_allclose(value, value_ref, rtol=1e-6)
        np.testing.assert_allclose(g_l, g_ref, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(g_a, g_a_ref, rtol=1e-5, atol=1e-7)
        # Off the boundary UGC is DisARM on the same uniforms, bit for bit.
        interior = np.setdiff1d(np.arange(5), s)
        np.testing.assert_array_equal(np.asarray(g_l)[interior], np.asarray(disarm_g)[interior])
    assert seen == {0, 3, 4}  # every boundary coin was drawn


# --------------------------------------------------- variance against DisARM


def _exact_moments(f, logits):
    """Exact means and per-coordinate variances of DisARM and UGC (float64, by enumeration)."""
    l = np.asarray(logits, np.float64)
    d = l.size
    p = 1.0 / (1.0 + np.exp(-l))
    m, big = np.minimum(p, 1 - p), np.maximum(p, 1 - p)
    s = _boundary(l)
    states = [
        [(1, 0, m[k]), (0, 1, m[k]), ((1, 1) if p[k] > 0.5 else (0, 0)) + (1 - 2 * m[k],)]
        for k in range(d)
    ]
    mean_d, second_d = np.zeros(d), np.zeros(d)
    for combo in itertools.product(*states):
        prob = np.prod([c[2] for c in combo])
        b, bt = np.array([c[0] for c in combo]), np.array([c[1] for c in combo])
        g = 0.5 * (f(b) - f(bt)) * (1 - 2 * bt) * (b != bt) * big
        mean_d += prob * g
        second_d += prob * g**2
    mean_delta, second_delta = np.zeros(d), np.zeros(d)  # Delta_i = f(b_-i, 1) - f(b_-i, 0)
    for bits in itertools.product([0, 1], repeat=d):
        b = np.array(bits)
        prob = np.prod(np.where(b == 1, p, 1 - p))
        for i in range(d):
            one, zero = b.copy(), b.copy()
            one[i], zero[i] = 1, 0
            delta = f(one) - f(zero)
            mean_delta[i] += prob * delta
            second_delta[i] += prob * delta**2
    exact = p * (1 - p) * mean_delta
    var_d = second_d - mean_d**2
    var_bitflip = s.sum() * (p * (1 - p)) ** 2 * second_delta - exact**2
    np.testing.assert_allclose(mean_d, exact, rtol=1e-9, atol=1e-15)  # DisARM is unbiased
    return exact, var_d, np.where(s, var_bitflip, var_d), s


def _toy(t):
    t = np.asarray(t, np.float64)
    return lambda b: float(np.sum((b - t) ** 2))


def _boundary_additive(w, interior, c):
    """``w . b + sin(c . b_interior) + prod(1 + b_interior)``: boundary coins enter additively."""
    mask = np.zeros(len(w))
    mask[interior] = 1.0

    def f(b):
        bi = b * mask
        return float(np.dot(w, b) + np.sin(np.dot(c, bi)) + np.prod(1 + bi))

    return f


def _random_problems(rng):
    """Random costs whose boundary coins enter additively, with random logits (D = 3, 4, 5)."""
    problems = []
    for d in (3, 4, 5):
        logits = rng.normal(0.0, 3.0, d)
        logits[0] = 4.0 + rng.uniform(0, 2)  # at least one boundary coin ...
        logits[1] = rng.uniform(-0.5, 0.5)  # ... and one interior coin
        interior = np.flatnonzero(~_boundary(logits))
        f = _boundary_additive(rng.normal(0, 1, d), interior, rng.normal(0, 2, d))
        problems.append((f, logits))
    return problems


@pytest.mark.parametrize("p", [0.02, 0.1, 0.3, 0.5, 0.7, 0.97])
def test_exact_variance_one_coin_toy(p):
    logits = np.asarray([np.log(p / (1 - p))])
    exact, var_d, var_u, s = _exact_moments(_toy([0.499]), logits)
    m = min(p, 1 - p)
    np.testing.assert_allclose(var_d, 0.002**2 * m * (1 - m) ** 2 * (0.5 - m), atol=1e-20)
    assert s[0] == (p != 0.5)
    np.testing.assert_allclose(var_u, 0.0, atol=1e-20)  # bitflip is exact for one coin
    assert np.all(var_u <= var_d + 1e-20)


def test_exact_variance_never_above_disarm_when_boundary_coins_are_additive(rng):
    problems = [(_toy([0.499, 0.2, 0.9, 0.4]), np.asarray([-4.0, 0.3, 2.5, 5.0]))]
    problems += _random_problems(rng)
    for f, logits in problems:
        _, var_d, var_u, s = _exact_moments(f, logits)
        assert s.any() and not s.all()
        assert np.all(var_u <= var_d * (1 + 1e-9) + 1e-15), (logits, var_u, var_d)
        assert np.all(var_u[s] < var_d[s])  # strictly lower on the boundary here
        np.testing.assert_array_equal(var_u[~s], var_d[~s])


# The Monte Carlo check of the library's estimators: UGC with key k and DisARM with
# split(k)[0] share their uniforms (ugc splits its key into the pair's and j's).
# With equal means, Var UGC_i - Var DisARM_i = E[g_U,i^2 - g_D,i^2], estimated by the
# paired mean of the squares' difference with its standard error.

TOY_T = jnp.asarray([0.499, 0.2, 0.9, 0.4], jnp.float32)
TOY_LOGITS = jnp.asarray([-4.0, 0.3, 2.5, 5.0], jnp.float32)  # S = {0, 2, 3}


def _toy_jnp(b):
    return jnp.sum((b - TOY_T) ** 2)


def _xor(b):
    """Coin 0 (boundary) interacts with coin 1 (interior, p = 1/2): ``1[b_0 != b_1]``."""
    return jnp.abs(b[0] - b[1])


XOR_LOGITS = jnp.asarray([-4.0, 0.0, 1.0], jnp.float32)  # S = {0}


def _paired(f):
    ugc, disarm = jaxgrad.ugc(f), jaxgrad.disarm(f)

    def est(k, ls):
        return ugc(jax.random.clone(k), ls["ugc"]) + disarm(jax.random.split(k)[0], ls["disarm"])

    return est


@pytest.fixture(scope="module")
def paired_samples():
    """UGC and DisARM gradients on shared noise, for the toy and the XOR cost (one program)."""
    toy, xor = _paired(_toy_jnp), _paired(_xor)

    def est(k, ls):
        k1, k2 = jax.random.split(k)
        return toy(k1, ls["toy"]) + xor(k2, ls["xor"])

    params = {
        "toy": {"ugc": TOY_LOGITS, "disarm": TOY_LOGITS},
        "xor": {"ugc": XOR_LOGITS, "disarm": XOR_LOGITS},
    }
    g = grad_samples(est, jax.random.key(7), params, num_keys=NUM_KEYS)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), g)


def _variance_gap(g_u, g_d):
    """``(mean of g_U^2 - g_D^2, its standard error)`` per coordinate."""
    diff = g_u**2 - g_d**2
    return diff.mean(0), diff.std(0, ddof=1) / np.sqrt(diff.shape[0])


def _check_variance(g, exact_var):
    """The sample variance agrees with the exact one within 5 of its standard errors."""
    centered = (g - g.mean(0)) ** 2
    se = centered.std(0, ddof=1) / np.sqrt(g.shape[0])
    assert np.all(np.abs(g.var(0, ddof=1) - exact_var) <= 5 * se + 1e-12), (
        g.var(0, ddof=1),
        exact_var,
        se,
    )


def test_monte_carlo_variance_never_above_disarm_on_the_toy(paired_samples):
    g_u, g_d = paired_samples["toy"]["ugc"], paired_samples["toy"]["disarm"]
    exact, var_d, var_u, s = _exact_moments(_toy(np.asarray(TOY_T)), np.asarray(TOY_LOGITS))
    _check_variance(g_u, var_u)  # the library's UGC has the variances computed above
    _check_variance(g_d, var_d)
    gap, se = _variance_gap(g_u, g_d)
    assert np.all(gap <= 5 * se + 1e-12), (gap, se)  # UGC is not worse anywhere
    assert np.all(gap[s] < -5 * se[s])  # and clearly better on the boundary coins
    np.testing.assert_array_equal(g_u[:, ~s], g_d[:, ~s])  # and DisARM elsewhere


def test_variance_can_exceed_disarm_with_interactions(paired_samples):
    """Not a guarantee for every f: a boundary coin interacting with a fair coin."""
    f = lambda b: float(abs(b[0] - b[1]))
    _, var_d, var_u, s = _exact_moments(f, np.asarray(XOR_LOGITS))
    assert s.tolist() == [True, False, False]
    assert var_d[0] == 0.0 and var_u[0] > 1e-4  # DisARM's pair cancels the interaction exactly
    g_u, g_d = paired_samples["xor"]["ugc"], paired_samples["xor"]["disarm"]
    _check_variance(g_u, var_u)
    gap, se = _variance_gap(g_u, g_d)
    assert gap[0] > 5 * se[0]  # the Monte Carlo check above detects it


# ------------------------------------------------------------ contracts


def test_masked_and_extreme_logits_never_flip_a_certain_coin(key):
    # NaN unless the certain coins keep their values: a flip of a masked coin would show.
    def f(x):
        ok = (x[0] == 1) & (x[1] == 0)
        return jnp.where(ok, jnp.sum((x - 0.3) ** 2), jnp.nan).astype(x.dtype)

    logits = jnp.asarray([jnp.inf, -jnp.inf, 1e4, -30.0, 0.3], jnp.bfloat16)

    @jax.jit
    def run(key, logits):
        return jax.vmap(lambda k: jax.value_and_grad(jaxgrad.ugc(f), argnums=1)(k, logits))(
            jax.random.split(key, 64)
        )

    value, g = run(key, logits)
    assert g.dtype == jnp.bfloat16 and value.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(jnp.isfinite(value)))
    assert bool(jnp.all(g[:, :3] == 0))


def test_f_never_differentiated_in_x(key):
    no_derivative = never_differentiated(jnp.sum)
    est = jaxgrad.ugc(lambda x, a: no_derivative(x) * jnp.sum(a))
    logits, a = _problem(3)
    g_l, g_a = jax.jit(jax.grad(est, argnums=(1, 2)))(key, logits, a)
    assert g_l.shape == (3,) and g_a.shape == (3,)


def test_registry_entry():
    info = jaxgrad.ESTIMATORS["ugc"]
    assert info.unbiased and info.black_box and not info.higher_order
    assert info.applies_to("bernoulli") and not info.applies_to("categorical")
    assert info.cost("bernoulli", (10,), 4) == 12


def test_errors(key):
    key, batch_key = jax.random.split(key)
    with pytest.raises(TypeError, match="ugc: f must be a callable"):
        jaxgrad.ugc(3.0)
    with pytest.raises(ValueError, match="ugc: num_samples must be at least 1"):
        jaxgrad.ugc(_toy_jnp, num_samples=0)
    with pytest.raises(TypeError, match="ugc: num_samples must be a static Python int"):
        jaxgrad.ugc(_toy_jnp, num_samples=1.5)
    with pytest.raises(TypeError, match="ugc: f_takes_key must be a static Python bool"):
        jaxgrad.ugc(_toy_jnp, f_takes_key=1)
    est = jaxgrad.ugc(_toy_jnp)
    with pytest.raises(TypeError, match="ugc: logits must have a floating dtype"):
        jax.eval_shape(est, key, jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="ugc accepts a single key"):
        jax.eval_shape(est, jax.random.split(batch_key, 2), jnp.zeros(4, jnp.float32))
    with pytest.raises(ValueError, match="ugc: f must return a scalar"):
        jax.eval_shape(jaxgrad.ugc(lambda x: x), key, jnp.zeros(2, jnp.float32))
    with pytest.raises(TypeError, match="ugc: f must return a floating scalar"):
        jax.eval_shape(jaxgrad.ugc(lambda x: jnp.sum(x > 0)), key, jnp.zeros(2, jnp.float32))
