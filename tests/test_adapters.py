"""distrax and TFP-on-JAX distributions as jaxgrad specs (``from_distrax``, ``from_tfp``).

Deterministic checks: densities, entropies, moments and supports equal
jaxgrad's own specs; ``jaxgrad.exact`` (through ``support``) gives jaxgrad's
gradient to round-off; typed and ``uint32`` keys give the same sample and the
key is consumed. Statistical checks: ``pathwise`` (distrax Normal and Gamma,
TFP Gamma), ``score_function`` and ``rloo`` (distrax Bernoulli, Categorical
and OneHotCategorical), built through the registry, pass the z-test against
closed-form or enumerated gradients, all from one compiled program; the same
assertion rejects straight-through and a 10% bias (power). Then the rule for
``reparameterizable``, jit/vmap, hashing and every documented error.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import exact_grads, grad_samples_of_many

import jaxgrad
from jaxgrad.diagnostics import assert_unbiased

distrax = pytest.importorskip("distrax")
tfp = pytest.importorskip("tensorflow_probability.substrates.jax")
tfd = tfp.distributions

F32, F64 = jnp.float32, jnp.float64
dists = jaxgrad.dists

# ----------------------------------------------------------------------------- adapters
# Named makes (readable reprs); each adapter is made once, so jit caches on it.


def dx_normal(p):
    return distrax.Normal(*p)


def dx_gamma(p):
    return distrax.Gamma(*p)


def dx_bernoulli(logits):
    return distrax.Bernoulli(logits=logits, dtype=logits.dtype)


def dx_categorical(logits):
    return distrax.Categorical(logits=logits)


def dx_one_hot(logits):
    return distrax.OneHotCategorical(logits=logits, dtype=logits.dtype)


def tfp_normal(p):
    return tfd.Normal(*p)


def tfp_gamma(p):
    return tfd.Gamma(*p)


def tfp_beta(p):
    return tfd.Beta(*p)


def tfp_coins(logits):  # one event of coins, as a TFP user writes a vector of bits
    return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=logits.dtype), 1)


PAIR = (jnp.ones(2, F32), jnp.ones(2, F32))
DX_NORMAL = dists.from_distrax(dx_normal, reparameterizable=True)
DX_GAMMA = dists.from_distrax(dx_gamma, example_params=PAIR)
DX_BERN = dists.from_distrax(dx_bernoulli, example_params=jnp.zeros(2, F32))
DX_CAT = dists.from_distrax(dx_categorical, example_params=jnp.zeros((2, 3), F32))
DX_ONE_HOT = dists.from_distrax(dx_one_hot)
TFP_NORMAL = dists.from_tfp(tfp_normal, example_params=PAIR)
TFP_GAMMA = dists.from_tfp(tfp_gamma, example_params=PAIR)
TFP_BETA = dists.from_tfp(tfp_beta, name="beta via tfp")
TFP_COINS = dists.from_tfp(tfp_coins, example_params=jnp.zeros(2, F32))

# ------------------------------------------------------------- densities and moments

LOC = jnp.asarray([0.3, -1.2, 2.0], F64)
SCALE = jnp.asarray([0.7, 1.5, 0.2], F64)
CONC = jnp.asarray([0.6, 2.5, 7.0], F64)
RATE = jnp.asarray([1.3, 0.4, 2.0], F64)
LOGITS = jnp.asarray([-1.7, 0.0, 2.2], F64)
CAT_LOGITS = jnp.asarray([[0.2, -1.0, 1.5], [0.0, 0.3, -0.4]], F64)
IDX = jnp.asarray([2, 0], jnp.int32)
X_POS = jnp.asarray([0.4, 3.1, 2.2], F64)
X_UNIT = jnp.asarray([0.15, 0.5, 0.9], F64)

# name: (adapter, params, x, jaxgrad spec, its params, its x, methods)
MOMENTS = ("entropy", "entropy_elementwise", "mean", "variance")
CASES = {
    "distrax-normal": (DX_NORMAL, (LOC, SCALE), X_POS, dists.normal, (LOC, SCALE), X_POS, MOMENTS),
    "distrax-gamma": (DX_GAMMA, (CONC, RATE), X_POS, dists.gamma, (CONC, RATE), X_POS, MOMENTS),
    "distrax-bernoulli": (
        DX_BERN,
        LOGITS,
        jnp.asarray([1.0, 0.0, 1.0], F64),
        dists.bernoulli,
        LOGITS,
        jnp.asarray([1.0, 0.0, 1.0], F64),
        MOMENTS,
    ),
    "distrax-categorical": (
        DX_CAT,
        CAT_LOGITS,
        IDX,
        dists.categorical,
        CAT_LOGITS,
        jax.nn.one_hot(IDX, 3, dtype=F64),
        ("entropy", "entropy_elementwise"),
    ),
    "distrax-one-hot": (
        DX_ONE_HOT,
        CAT_LOGITS,
        jax.nn.one_hot(IDX, 3, dtype=F64),
        dists.categorical,
        CAT_LOGITS,
        jax.nn.one_hot(IDX, 3, dtype=F64),
        ("entropy", "entropy_elementwise"),
    ),
    "tfp-normal": (TFP_NORMAL, (LOC, SCALE), X_POS, dists.normal, (LOC, SCALE), X_POS, MOMENTS),
    "tfp-beta": (TFP_BETA, (CONC, RATE), X_UNIT, dists.beta, (CONC, RATE), X_UNIT, MOMENTS),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_densities_and_moments_equal_jaxgrad(case):
    adapter, params, x, spec, sparams, sx, methods = CASES[case]
    close = functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-12)
    lp = adapter.log_prob(params, x)
    assert lp.shape == ()  # joint: the estimators' contract
    close(lp, spec.log_prob(sparams, sx))
    close(adapter.log_prob_elementwise(params, x), spec.log_prob_elementwise(sparams, sx))
    close(adapter.prob(params, x), spec.prob(sparams, sx))
    close(adapter.prob_elementwise(params, x), spec.prob_elementwise(sparams, sx))
    for method in methods:
        close(getattr(adapter, method)(params), getattr(spec, method)(sparams), err_msg=method)
    assert adapter.entropy(params).shape == ()


def test_cdf_delegates():
    np.testing.assert_allclose(
        DX_NORMAL.cdf((LOC, SCALE), X_POS), dists.normal.cdf((LOC, SCALE), X_POS), rtol=1e-12
    )
    np.testing.assert_allclose(
        TFP_NORMAL.cdf((LOC, SCALE), X_POS), dists.normal.cdf((LOC, SCALE), X_POS), rtol=1e-12
    )


def test_missing_method_names_the_class():
    with pytest.raises(NotImplementedError, match=r"from_distrax\(dx_one_hot\)\.mean: .*One"):
        DX_ONE_HOT.mean(CAT_LOGITS)


# ----------------------------------------------------------------------------- supports


def test_support_enumerates_like_jaxgrad():
    logits = jnp.zeros(3, F32)
    np.testing.assert_array_equal(DX_BERN.support(logits), dists.bernoulli.support(logits))
    np.testing.assert_array_equal(TFP_COINS.support(logits), dists.bernoulli.support(logits))
    cat = jnp.zeros((2, 3), F32)
    one_hot = dists.categorical.support(cat)
    np.testing.assert_array_equal(DX_ONE_HOT.support(cat), one_hot)
    idx = DX_CAT.support(cat)
    np.testing.assert_array_equal(idx, jnp.argmax(one_hot, axis=-1))
    # In the library's dtype: distrax's index Categorical samples int32.
    assert idx.dtype == DX_CAT.sample(jax.random.key(0), cat).dtype
    assert DX_BERN.support(logits).dtype == F32


def f_coins(b, a):
    """A non-separable cost of three coins with its own parameters ``a``."""
    s = jnp.sum(b * a)
    return jnp.sin(2.0 * s) + (s - 0.3) ** 2


def f_cat(x, w):
    """A non-linear cost of two one-hot categoricals with 3 classes."""
    return (jnp.sum(x * w) - 0.5) ** 2 + 2.0 * x[0, 1] * x[1, 2]


def f_cat_index(idx, w):
    return f_cat(jax.nn.one_hot(idx, 3, dtype=w.dtype), w)


COIN_LOGITS = jnp.asarray([-1.2, 0.4, 1.5], F32)
COIN_A = jnp.asarray([0.3, 1.1, -0.6], F32)
CAT_L = jnp.asarray([[0.2, -1.0, 1.5], [0.0, 0.3, -0.4]], F32)
CAT_W = jnp.asarray([[0.5, -0.8, 0.2], [0.9, -0.3, 0.4]], F32)


def test_exact_through_support_equals_jaxgrad():
    # helpers.exact_grads is jitted with the spec static: adapters must be hashable.
    want = exact_grads(f_coins, dists.bernoulli, COIN_LOGITS, COIN_A)
    for adapter in (DX_BERN, TFP_COINS):
        got = exact_grads(f_coins, adapter, COIN_LOGITS, COIN_A)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), got, want)
    want = exact_grads(f_cat, dists.categorical, CAT_L, CAT_W)
    for adapter, f in ((DX_ONE_HOT, f_cat), (DX_CAT, f_cat_index)):
        got = exact_grads(f, adapter, CAT_L, CAT_W)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), got, want)
    # The registry's exact, on the adapter, gives the same gradient.
    est = jaxgrad.ESTIMATORS["exact"].build(f_coins, dist=DX_BERN, num_samples=1)
    g = jax.grad(est, argnums=1)(jax.random.key(1), COIN_LOGITS, COIN_A)
    np.testing.assert_allclose(g, exact_grads(f_coins, dists.bernoulli, COIN_LOGITS, COIN_A)[0])


def test_support_errors():
    with pytest.raises(ValueError, match=r"from_distrax\(dx_bernoulli\)\.support: .*131072"):
        DX_BERN.support(jnp.zeros(17, F32))
    with pytest.raises(TypeError, match=r"support enumerates Bernoulli.*Normal"):
        DX_NORMAL.support(PAIR)
    with pytest.raises(TypeError, match=r"support enumerates Bernoulli.*Normal"):
        jaxgrad.exact(lambda x: jnp.sum(x), dist=TFP_NORMAL)(jax.random.key(2), PAIR)


# ------------------------------------------------------------------------------- keys


@pytest.mark.parametrize("adapter", [DX_NORMAL, TFP_NORMAL], ids=["distrax", "tfp"])
def test_typed_and_raw_keys(adapter):
    params = (jnp.zeros(3, F32), jnp.ones(3, F32))
    typed = adapter.sample(jax.random.key(5), params)
    raw = adapter.sample(jax.random.PRNGKey(5), params)
    np.testing.assert_array_equal(typed, raw)  # threefry: the same bits
    key = jax.random.key(6)
    adapter.sample(key, params)
    with pytest.raises(jax.errors.KeyReuseError):  # the key is consumed, not copied
        adapter.sample(key, params)
    with pytest.raises(TypeError, match=r"\.sample: key must be a PRNG key"):
        adapter.sample(jnp.zeros(2, F32), params)


def test_jit_and_vmap_over_keys():
    params = (jnp.asarray([0.0, 5.0], F32), jnp.asarray([1.0, 0.1], F32))
    keys = jax.random.split(jax.random.key(7), 64)

    @functools.partial(jax.jit, static_argnums=0)
    def draw(adapter, keys, params):
        xs = jax.vmap(adapter.sample, in_axes=(0, None))(keys, params)
        return xs, jax.vmap(adapter.log_prob, in_axes=(None, 0))(params, xs)

    xs, lps = draw(DX_NORMAL, keys, params)
    assert xs.shape == (64, 2) and lps.shape == (64,)
    assert len(np.unique(np.asarray(xs[:, 0]))) == 64  # independent keys
    np.testing.assert_allclose(np.mean(xs, axis=0), [0.0, 5.0], atol=0.5)
    want = jax.vmap(dists.normal.log_prob, in_axes=(None, 0))(params, xs)
    np.testing.assert_allclose(lps, want, rtol=1e-5)
    # An equal adapter (same make) hits the same cache entry.
    again = dists.from_distrax(dx_normal, reparameterizable=True)
    assert again == DX_NORMAL and hash(again) == hash(DX_NORMAL)
    before = draw._cache_size()
    draw(again, jax.random.split(jax.random.key(8), 64), params)
    assert draw._cache_size() == before


# ------------------------------------------------------------------ estimators, z-tests


def f_normal(x, c):
    """``c0 x^2`` on coordinates 0, 1 and ``c1 cos x`` on 2, 3: closed forms."""
    return c[0] * jnp.sum(x[:2] ** 2) + c[1] * jnp.sum(jnp.cos(x[2:]))


def f_square(x):
    return jnp.sum(x**2)


NORMAL_P = (jnp.asarray([0.3, -0.7, 1.1, -0.4], F32), jnp.asarray([0.8, 1.2, 0.5, 1.5], F32))
NORMAL_C = jnp.asarray([0.7, 1.3], F32)
GAMMA_P = (jnp.asarray([0.7, 3.0], F32), jnp.asarray([1.5, 0.8], F32))


def normal_exact(params, c):
    """d/dmu E x^2 = 2 mu, d/dsigma = 2 sigma; E cos x = cos(mu) exp(-sigma^2 / 2)."""
    loc, scale = (np.asarray(p, np.float64) for p in params)
    c0, c1 = np.asarray(c, np.float64)
    damp = np.exp(-0.5 * scale[2:] ** 2)
    g_loc = np.concatenate([c0 * 2 * loc[:2], -c1 * np.sin(loc[2:]) * damp])
    g_scale = np.concatenate([c0 * 2 * scale[:2], -c1 * scale[2:] * np.cos(loc[2:]) * damp])
    g_c = np.array([np.sum(loc[:2] ** 2 + scale[:2] ** 2), np.sum(np.cos(loc[2:]) * damp)])
    return (g_loc, g_scale), g_c


def gamma_exact(params):
    """E x^2 = a (a + 1) / b^2 for shape a and rate b."""
    a, b = (np.asarray(p, np.float64) for p in params)
    return ((2 * a + 1) / b**2, -2 * a * (a + 1) / b**3)


def _straight_through(key, pa):
    """A biased reference on the coins: forward the sample, backward sigmoid(l)."""
    return f_coins(jaxgrad.straight_through_bernoulli(key, pa[0]), pa[1])


def _entries():
    """name -> (est(key, params), params, exact gradient)."""

    def build(name, f, dist, n):
        est = jaxgrad.ESTIMATORS[name].build(f, dist=dist, num_samples=n)
        return lambda key, p: est(key, *p) if isinstance(p, list) else est(key, p)

    coins = [COIN_LOGITS, COIN_A]
    cats = [CAT_L, CAT_W]
    g_coins = exact_grads(f_coins, dists.bernoulli, COIN_LOGITS, COIN_A)
    g_cats = exact_grads(f_cat, dists.categorical, CAT_L, CAT_W)
    return {
        "pathwise/distrax-normal": (
            build("pathwise", f_normal, DX_NORMAL, 2),
            [NORMAL_P, NORMAL_C],
            list(normal_exact(NORMAL_P, NORMAL_C)),
        ),
        "pathwise/distrax-gamma": (
            build("pathwise", f_square, DX_GAMMA, 2),
            GAMMA_P,
            gamma_exact(GAMMA_P),
        ),
        "pathwise/tfp-gamma": (
            build("pathwise", f_square, TFP_GAMMA, 2),
            GAMMA_P,
            gamma_exact(GAMMA_P),
        ),
        "reinforce/distrax-bernoulli": (
            build("reinforce", f_coins, DX_BERN, 1),
            coins,
            list(g_coins),
        ),
        "rloo/distrax-bernoulli": (build("rloo", f_coins, DX_BERN, 4), coins, list(g_coins)),
        "rloo/distrax-one-hot": (build("rloo", f_cat, DX_ONE_HOT, 4), cats, list(g_cats)),
        "reinforce/distrax-categorical": (
            build("reinforce", f_cat_index, DX_CAT, 2),
            cats,
            list(g_cats),
        ),
        "straight-through": (_straight_through, coins, list(g_coins)),
    }


NUM_KEYS = 8_000


@functools.cache
def study():
    """Gradient samples of every entry, ``NUM_KEYS`` each, from one compiled program."""
    entries = _entries()
    samples = grad_samples_of_many(
        {n: e[0] for n, e in entries.items()},
        {n: e[1] for n, e in entries.items()},
        jax.random.key(11),
        num_keys=NUM_KEYS,
        batch_size=1000,
    )
    return {n: (samples[n], e[2]) for n, e in entries.items()}


STUDY = pytest.mark.xdist_group("adapters_study")
ESTIMATES = [
    "pathwise/distrax-normal",
    "pathwise/distrax-gamma",
    "pathwise/tfp-gamma",
    "reinforce/distrax-bernoulli",
    "rloo/distrax-bernoulli",
    "rloo/distrax-one-hot",
    "reinforce/distrax-categorical",
]


@STUDY
@pytest.mark.parametrize("name", ESTIMATES)
def test_estimators_unbiased_on_adapters(name):
    samples, exact = study()[name]
    assert_unbiased(samples, exact)
    # Power: the same assertion rejects a 10% error in the exact gradient.
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, jax.tree.map(lambda e: 1.1 * np.asarray(e), exact))


@STUDY
def test_power_rejects_straight_through():
    samples, exact = study()["straight-through"]
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(samples, exact)


# ------------------------------------------------------------- the reparameterization rule

R = jnp.ones(2, F32)
RULE = {
    "normal": (dists.from_distrax, lambda p: distrax.Normal(p, 1.0), True),
    "gamma": (dists.from_distrax, lambda p: distrax.Gamma(p, 1.0), True),
    "beta": (dists.from_distrax, lambda p: distrax.Beta(p, p), True),
    "dirichlet": (dists.from_distrax, lambda p: distrax.Dirichlet(p), True),
    "von-mises": (dists.from_distrax, lambda p: distrax.VonMises(p, 1.0), True),
    "mvn-diag": (dists.from_distrax, lambda p: distrax.MultivariateNormalDiag(p, p), True),
    "independent-normal": (
        dists.from_distrax,
        lambda p: distrax.Independent(distrax.Normal(p, 1.0), 1),
        True,
    ),
    "tanh-normal": (
        dists.from_distrax,
        lambda p: distrax.Transformed(distrax.Normal(p, 1.0), distrax.Tanh()),
        True,
    ),
    "distrax-of-tfp-normal": (
        dists.from_distrax,
        lambda p: distrax.Independent(tfd.Normal(p, 1.0), 1),
        True,
    ),
    "bernoulli-float": (dists.from_distrax, lambda p: distrax.Bernoulli(p, dtype=F32), False),
    "bernoulli-int": (dists.from_distrax, lambda p: distrax.Bernoulli(p), False),
    "one-hot-float": (
        dists.from_distrax,
        lambda p: distrax.OneHotCategorical(p, dtype=F32),
        False,
    ),
    "independent-bernoulli": (
        dists.from_distrax,
        lambda p: distrax.Independent(distrax.Bernoulli(p, dtype=F32), 1),
        False,
    ),
    "mixture": (
        dists.from_distrax,
        lambda p: distrax.MixtureSameFamily(distrax.Categorical(p), distrax.Normal(p, 1.0)),
        False,
    ),
    "tfp-normal": (dists.from_tfp, lambda p: tfd.Normal(p, 1.0), True),
    "tfp-beta": (dists.from_tfp, lambda p: tfd.Beta(p, p), True),
    "tfp-bernoulli-float": (dists.from_tfp, lambda p: tfd.Bernoulli(p, dtype=F32), False),
    "tfp-categorical": (dists.from_tfp, lambda p: tfd.Categorical(p), False),
}


@pytest.mark.parametrize("case", sorted(RULE))
def test_reparameterizable_rule(case):
    from_lib, make, want = RULE[case]
    assert from_lib(make, example_params=R).reparameterizable is want
    # A declaration wins over the rule.
    assert from_lib(make, reparameterizable=not want, example_params=R).reparameterizable is (
        not want
    )


@pytest.mark.parametrize(
    ("make", "want"),
    [(dx_normal, True), (dx_bernoulli, False), (tfp_normal, True), (tfp_coins, False)],
    ids=["distrax-normal", "distrax-bernoulli", "tfp-normal", "tfp-bernoulli"],
)
def test_rule_matches_the_samples_differentiability(make, want):
    """The rule is True exactly where jax.grad through the sample is not zero."""
    p = (jnp.asarray([0.8, 2.0], F32), jnp.asarray([1.0, 1.5], F32))
    if make in (dx_bernoulli, tfp_coins):
        p = jnp.asarray([0.3, -0.2], F32)
    g = jax.grad(lambda p: jnp.sum(make(p).sample(seed=jax.random.key(3))))(p)
    assert any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(g)) is want


# ------------------------------------------------------------------------ repr and errors


def test_repr_and_name():
    assert repr(DX_NORMAL) == "from_distrax(dx_normal, reparameterizable=True)"
    assert repr(DX_ONE_HOT) == "from_distrax(dx_one_hot)"
    assert repr(TFP_BETA) == "from_tfp(tfp_beta, name='beta via tfp')"
    assert DX_NORMAL.name == "from_distrax(dx_normal)" and TFP_BETA.name == "beta via tfp"
    assert isinstance(DX_NORMAL, dists.Adapter) and isinstance(DX_NORMAL, dists.Distribution)


def test_unknown_reparameterizable_raises_with_the_fix():
    est_args = dict(dist=DX_ONE_HOT, num_samples=1)
    with pytest.raises(ValueError, match=r"reparameterizable is unknown .* reparameterizable=True"):
        jaxgrad.pathwise(f_square, **est_args)
    with pytest.raises(ValueError, match="pathwise: dist must be reparameterizable"):
        jaxgrad.pathwise(f_square, dist=DX_BERN, num_samples=1)


def test_errors():
    with pytest.raises(TypeError, match=r"from_distrax: make must be a callable .*got int 3"):
        dists.from_distrax(3)
    with pytest.raises(TypeError, match=r"from_tfp: make must be a callable"):
        dists.from_tfp(None)
    with pytest.raises(TypeError, match=r"from_distrax: reparameterizable must be True, False"):
        dists.from_distrax(dx_normal, reparameterizable="yes")
    with pytest.raises(TypeError, match=r"from_tfp: name must be a string"):
        dists.from_tfp(tfp_normal, name=3)
    not_a_dist = dists.from_distrax(lambda p: p)
    with pytest.raises(
        TypeError, match=r"<lambda>\)\.log_prob: make\(params\) must return a distrax.*got "
    ):
        not_a_dist.log_prob(PAIR, 0.0)
    with pytest.raises(TypeError, match=r"\.sample: .*use jaxgrad\.dists\.from_tfp\(make\)"):
        dists.from_distrax(tfp_normal).sample(jax.random.key(4), PAIR)
    with pytest.raises(TypeError, match=r"use jaxgrad\.dists\.from_distrax\(make\)"):
        dists.from_tfp(dx_normal).entropy(PAIR)
    with pytest.raises(TypeError, match=r"must return a TFP-on-JAX distribution, got builtins"):
        dists.from_tfp(lambda p: "normal", example_params=PAIR)


def test_missing_library_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distrax", None)
    with pytest.raises(ImportError, match=r"from_distrax needs distrax.*pip install distrax"):
        dists.from_distrax(dx_normal)
    monkeypatch.setitem(sys.modules, "tensorflow_probability.substrates.jax", None)
    with pytest.raises(ImportError, match=r"from_tfp needs .*pip install tfp-nightly"):
        dists.from_tfp(tfp_normal)


def test_jaxgrad_imports_without_either_library():
    code = (
        "import sys\n"
        "sys.modules['distrax'] = None\n"
        "sys.modules['tensorflow_probability'] = None\n"
        "import jaxgrad\n"
        "try:\n"
        "    jaxgrad.dists.from_distrax(print)\n"
        "except ImportError as e:\n"
        "    print('ImportError', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.startswith("ImportError from_distrax needs distrax"), out
