# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Pathwise vs score function on the Gaussian test functions
#
# Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
# Learning* (JMLR 2020, [arXiv:1906.10652](https://arxiv.org/abs/1906.10652),
# section 3) compare gradient estimators on three one-dimensional cost functions,
# each with a constant $k$ that controls how hard it is:
#
# $$f(x) = (x - k)^2, \qquad f(x) = e^{-k x^2}, \qquad f(x) = \cos(k x),
# \qquad x \sim \mathcal N(\mu, \sigma^2),$$
#
# and plot the variance of each estimator of
# $\nabla_{\mu,\sigma} E[f(x)]$ against $k$. Their message, reproduced here: no
# estimator wins everywhere. The pathwise (reparameterization) estimator is usually
# the best, but for the oscillating $\cos(k x)$ its variance grows like $k^2$,
# while the score-function estimator's stays bounded, so beyond some $k$ the
# score function wins.
#
# The estimators, with $x = \mu + \sigma \varepsilon$, $\varepsilon \sim \mathcal N(0, 1)$:
#
# * **pathwise** (`jaxgrad.pathwise`; Kingma & Welling 2014,
#   [arXiv:1312.6114](https://arxiv.org/abs/1312.6114); Rezende et al. 2014,
#   [arXiv:1401.4082](https://arxiv.org/abs/1401.4082)):
#   $\hat g_\mu = f'(x)$, $\hat g_\sigma = f'(x)\,\varepsilon$; needs $f'$;
# * **score function** (`jaxgrad.score_function`; Williams 1992):
#   $\hat g_\mu = f(x)\,\varepsilon/\sigma$, $\hat g_\sigma = f(x)\,(\varepsilon^2 - 1)/\sigma$,
#   the cost times $\nabla \log p$; $f$ is a black box;
# * **score function with a baseline**: two samples, each centred by the other's
#   cost (`baseline="loo"`, RLOO; Kool et al. 2019,
#   [openreview](https://openreview.net/forum?id=r1lgTGL5DE));
# * **measure-valued** (`jaxgrad.measure_valued`; Mohamed et al. 2020, section 6): the
#   derivative of the density written as a difference of two densities,
#   $\partial_\mu E f = \frac{1}{\sigma\sqrt{2\pi}} E[f(\mu + \sigma W) - f(\mu - \sigma W)]$
#   with $W$ Weibull$(\sqrt 2, 2)$, and
#   $\partial_\sigma E f = \frac1\sigma E[f(\mu + \sigma M) - f(\mu + \sigma \varepsilon)]$
#   with $M$ double-sided Maxwell; $3D + 1 = 4$ evaluations of $f$ here.
#
# All four are unbiased; they differ only in variance. Because they cost different
# numbers of evaluations of $f$, the plots show **variance times evaluations of
# $f$** per estimate (the variance of an average over a fixed budget of
# evaluations, up to the budget), as `jaxgrad.diagnostics.study` ranks them. (The
# pathwise estimator also evaluates $f'$; that is not counted.)
#
# Run it as a script (`python notebooks/pathwise_vs_score.py`) or open it with
# jupytext. `JAXGRAD_NOTEBOOK_QUICK=1` (set by the test suite) runs a reduced size.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxgrad
import jaxgrad.diagnostics as diag

np.set_printoptions(precision=4, suppress=True)
start = time.perf_counter()
QUICK = os.environ.get("JAXGRAD_NOTEBOOK_QUICK", "") not in ("", "0")
NUM_KEYS, NUM_K = (4096, 7) if QUICK else (100_000, 17)
MU, SIGMA = 1.0, 1.0  # the Gaussian N(mu, sigma^2)
KS = np.geomspace(0.1, 10.0, NUM_K).astype(np.float32)  # the constants k
print(f"{NUM_KEYS} independent estimates at each of {NUM_K} values of k in [0.1, 10]")

# %% [markdown]
# ## One compiled program per estimator
#
# The test functions, their closed-form expectations and gradients come from
# `jaxgrad.diagnostics` (`GAUSSIAN_TEST_FUNCTIONS`, `gaussian_test_function`,
# `gaussian_exact_grad`; the same ones `jaxgrad study gaussian` uses). To study
# every $(f, k)$ pair with a single program per estimator, the cost takes $k$ and
# the index $j$ of the test function as arguments, `f(x, k, j)`, and we `vmap`
# twice: over keys (independent estimates) and over the grid of $(j, k)$. The
# estimators differentiate only with respect to the distribution's parameters
# `(loc, scale)`; `k` and `j` are held fixed.

# %%
FUNCTIONS = diag.GAUSSIAN_TEST_FUNCTIONS  # ("square", "exp", "cos")
normal = jaxgrad.dists.normal


def f(x, k, j):
    """The j-th test function with constant k, for one sample x of shape (1,)."""
    values = jnp.stack([diag.gaussian_test_function(name, k)(x) for name in FUNCTIONS])
    return values[j]


ESTIMATORS = {  # name: (estimator, evaluations of f per estimate)
    "pathwise": (jaxgrad.pathwise(f, dist=normal), 1),
    "score function": (jaxgrad.score_function(f, dist=normal), 1),
    "score function + LOO baseline (2 samples)": (
        jaxgrad.score_function(f, dist=normal, num_samples=2, baseline="loo"),
        2,
    ),
    "measure-valued": (
        jaxgrad.measure_valued(f),
        jaxgrad.ESTIMATORS["measure-valued"].cost("normal", (1,)),
    ),
}


def study_program(est):
    """grads(key, params, ks, js) -> (d/dloc, d/dscale), each [points, NUM_KEYS, 1]."""
    grad = jax.grad(est, argnums=1)
    over_keys = jax.vmap(grad, in_axes=(0, None, None, None))
    over_points = jax.vmap(over_keys, in_axes=(None, None, 0, 0))
    return jax.jit(lambda key, *a: over_points(jax.random.split(key, NUM_KEYS), *a))


params = (np.full((1,), MU, np.float32), np.full((1,), SIGMA, np.float32))  # (loc, scale)
grid_j = np.repeat(np.arange(len(FUNCTIONS), dtype=np.int32), NUM_K)  # [points]
grid_k = np.tile(KS, len(FUNCTIONS))
# The exact (d/dmu, d/dsigma) at each (j, k), [points, 2], in one small compiled program.
exact_grads = jax.jit(lambda ks: [diag.gaussian_exact_grad(n, MU, SIGMA, k=ks) for n in FUNCTIONS])
exact = np.stack([np.asarray(g) for pair in exact_grads(KS) for g in pair])  # [function x param, k]
exact = exact.reshape(len(FUNCTIONS), 2, NUM_K).transpose(0, 2, 1).reshape(-1, 2)

key = jax.random.key(0)  # the same keys for every estimator and every (j, k)
samples, variance = {}, {}
for name, (est, evals) in ESTIMATORS.items():
    t0 = time.perf_counter()
    g_loc, g_scale = study_program(est)(key, params, grid_k, grid_j)
    s = np.stack([np.asarray(g_loc[..., 0]), np.asarray(g_scale[..., 0])], axis=-1)
    samples[name] = np.asarray(s, np.float64).transpose(1, 0, 2)  # [keys, points, 2]
    variance[name] = samples[name].var(axis=0, ddof=1)  # [points, 2]
    print(f"{name:42} {time.perf_counter() - t0:5.2f} s ({evals} evaluation(s) of f)")

# %% [markdown]
# ## All four are unbiased
#
# `jaxgrad.diagnostics.assert_unbiased` is the test suite's z-test: at every
# $(f, k)$ and for both parameters, $|\bar g - g^\star| \le 5\,\hat\sigma/\sqrt N$
# with the estimator's own standard error. It passes for every estimator at every
# point (at about $6 \times 10^{-7}$ per coordinate, a false alarm over the
# $2 \times 3 \times$ `NUM_K` coordinates of an estimator has probability below $10^{-4}$).

# %%
print(f"{'estimator':42} {'max |z|':>8} {'points':>6}")
for name, s in samples.items():
    z = diag.assert_unbiased(s, exact)
    print(f"{name:42} {float(np.max(z)):8.2f} {z.size:6d}")

# %% [markdown]
# ## Variance against $k$
#
# Each panel is one test function and one parameter; the curves are variance
# times evaluations of $f$, on log-log axes. The dashed lines in the $\cos$
# column are closed forms derived below.

# %%
var_cost = {name: variance[name] * ESTIMATORS[name][1] for name in ESTIMATORS}


def closed_form_cos_mu(k, mu=MU, sigma=SIGMA):
    """Exact variances of the pathwise and score-function estimates of d/dmu E cos(k x)."""
    e2 = np.exp(-2 * (k * sigma) ** 2)  # E cos(2 k x) = cos(2 k mu) e2
    mean2 = (k * np.sin(k * mu)) ** 2 * np.exp(-((k * sigma) ** 2))  # (exact gradient)^2
    path = k**2 * (1 - np.cos(2 * k * mu) * e2) / 2 - mean2
    score = (1 + np.cos(2 * k * mu) * (1 - 4 * (k * sigma) ** 2) * e2) / (2 * sigma**2) - mean2
    return path, score


fig, axes = plt.subplots(2, 3, figsize=(11, 6.4), sharex=True, layout="constrained")
titles = {"square": "$(x - k)^2$", "exp": "$e^{-k x^2}$", "cos": "$\\cos(k x)$"}
for j, fname in enumerate(FUNCTIONS):
    rows = slice(j * NUM_K, (j + 1) * NUM_K)
    for p, pname in enumerate(("\\mu", "\\sigma")):
        ax = axes[p, j]
        for name in ESTIMATORS:
            ax.loglog(KS, var_cost[name][rows, p], marker=".", label=name)
        if fname == "cos" and p == 0:
            kk = np.geomspace(0.1, 10.0, 200)
            path, score = closed_form_cos_mu(kk)
            ax.loglog(kk, path, "k--", lw=0.8, label="closed forms")
            ax.loglog(kk, score, "k--", lw=0.8)
        ax.set_title(f"{titles[fname]}, $\\partial / \\partial {pname}$", fontsize=10)
        ax.set_xlabel("k" if p == 1 else "")
axes[0, 0].set_ylabel("variance x evaluations")
axes[1, 0].set_ylabel("variance x evaluations")
fig.legend(*axes[0, 2].get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize=8)
fig.suptitle(f"x ~ N({MU:g}, {SIGMA:g}^2), {NUM_KEYS} estimates per point", fontsize=10)
plt.show()

# %% [markdown]
# What the panels show (the table below prints the numbers):
#
# * $(x - k)^2$: the pathwise estimates $2(x - k)$ and $2(x - k)\varepsilon$ have
#   variance $4\sigma^2$ and a variance growing like $k^2$; the score function
#   multiplies the cost, which grows like $k^2$, by the score, so its variance
#   grows like $k^4$. The leave-one-out baseline turns the signal into
#   $f(x_1) - f(x_2) = (x_1 - x_2)(x_1 + x_2 - 2k)$, of order $k$: its variance
#   grows like $k^2$ only, still far above pathwise. The measure-valued estimate of
#   $\partial_\mu$ is $4(\mu - k) W / \sqrt{2\pi}$: lower than pathwise near
#   $k = \mu$ (it vanishes there: the dip at $k = 1$), much higher for large $k$.
# * $e^{-k x^2}$: pathwise is best for small $k$, but as the bump narrows its
#   derivative $-2kx\,e^{-kx^2}$ becomes a tall spike of width $k^{-1/2}$ around
#   0: with $p(0) = \mathcal N(0; \mu, \sigma^2)$, $E[f'(x)^2] \approx p(0)\sqrt{\pi k/2}$
#   grows, while the score function's $E[f(x)^2\varepsilon^2]/\sigma^2 \approx
#   p(0)\,(\mu/\sigma)^2 \sqrt{\pi/(2k)}/\sigma^2$ shrinks. The score function
#   wins at large $k$ here too.
# * $\cos(k x)$: the pathwise estimate $-k \sin(k x)$ has amplitude $k$; the
#   score-function estimate $\cos(k x)\,\varepsilon/\sigma$ never exceeds
#   $|\varepsilon|/\sigma$. The curves cross (next section). The measure-valued
#   estimate of $\partial_\mu$, with its two samples coupled through one $W$, is
#   $-2\sin(k\mu)\sin(k\sigma W)/(\sigma\sqrt{2\pi})$: it vanishes where
#   $\sin(k\mu) = 0$, at $k = \pi/\mu$ (a dip in the full-size curve, whose grid has a point near
#   $\pi$).

# %%
print(f"variance x evaluations at k = {KS[0]:g} and k = {KS[-1]:g}")
print(
    f"{'estimator':42} {'f':>6} {'d/dmu small k':>14} {'large k':>10} {'d/dsigma small k':>17}"
    f" {'large k':>10}"
)
for j, fname in enumerate(FUNCTIONS):
    lo, hi = j * NUM_K, (j + 1) * NUM_K - 1
    for name in ESTIMATORS:
        v = var_cost[name]
        print(
            f"{name:42} {fname:>6} {v[lo, 0]:14.4g} {v[hi, 0]:10.4g} {v[lo, 1]:17.4g}"
            f" {v[hi, 1]:10.4g}"
        )

# %% [markdown]
# ## Where the score function wins: $\cos(k x)$ at large $k$
#
# For the mean, with $E\cos(a x) = \cos(a\mu)\, e^{-a^2\sigma^2/2}$ and
# $E[\varepsilon^2 \cos(a\sigma\varepsilon)] = (1 - a^2\sigma^2)\, e^{-a^2\sigma^2/2}$,
# both variances have closed forms ($g^\star = -k \sin(k\mu)\, e^{-k^2\sigma^2/2}$ is
# the exact gradient):
#
# $$\mathrm{Var}_{\text{pathwise}} = E[k^2 \sin^2(kx)] - g^{\star 2}
#   = \frac{k^2}{2}\big(1 - \cos(2k\mu)\, e^{-2k^2\sigma^2}\big) - g^{\star 2}
#   \;\longrightarrow\; \frac{k^2}{2},$$
#
# $$\mathrm{Var}_{\text{score}} = \frac{E[\varepsilon^2 \cos^2(kx)]}{\sigma^2} - g^{\star 2}
#   = \frac{1 + \cos(2k\mu)\,(1 - 4k^2\sigma^2)\, e^{-2k^2\sigma^2}}{2\sigma^2} - g^{\star 2}
#   \;\longrightarrow\; \frac{1}{2\sigma^2}.$$
#
# The pathwise variance grows like $k^2$ without bound, the score function's tends to
# $1/(2\sigma^2)$: for $k \gtrsim 1/\sigma$ (once the cosine oscillates within the
# width of the Gaussian) the score function is the better estimator, at the same
# cost of one evaluation. The baseline does not help here ($E\cos(kx) \to 0$, so
# there is no mean to remove), and the measure-valued estimator, a difference of
# two cosines divided by $\sigma\sqrt{2\pi}$, is bounded too: its variance never
# exceeds $2/(\pi\sigma^2)$ per estimate. Below, the measured variances against the closed
# forms, and the crossover.

# %%
cos_rows = slice(2 * NUM_K, 3 * NUM_K)
v_path = variance["pathwise"][cos_rows, 0]
v_score = variance["score function"][cos_rows, 0]
cf_path, cf_score = closed_form_cos_mu(KS.astype(np.float64))
print(f"{'k':>7} {'pathwise':>10} {'(exact)':>10} {'score':>8} {'(exact)':>8} {'ratio':>7}")
for i, k in enumerate(KS):
    print(
        f"{k:7.3f} {v_path[i]:10.4g} {cf_path[i]:10.4g} {v_score[i]:8.4f} {cf_score[i]:8.4f}"
        f" {v_path[i] / v_score[i]:7.3g}"
    )

kk = np.geomspace(0.1, 10.0, 100_001)
path, score = closed_form_cos_mu(kk)
k_cross = kk[np.argmax(path > score)]  # the first k where pathwise is worse
measured_cross = KS[np.argmax(v_path > v_score)]
print(
    f"closed-form crossover k = {k_cross:.3f}; first grid k where pathwise is worse: "
    f"{measured_cross:.3f}"
)
print(
    f"at k = {KS[-1]:g}: pathwise variance / k^2 = {v_path[-1] / KS[-1] ** 2:.4f} (limit 0.5), "
    f"score variance = {v_score[-1]:.4f} (limit {1 / (2 * SIGMA**2):.4f})"
)

# %% [markdown]
# The claims, checked (they hold at the quick size with a wide margin; the relative
# standard error of a variance from $N$ estimates is about $\sqrt{(\kappa - 1)/N}$,
# a few percent here):

# %%
# Measured variances agree with the closed forms (relative error well under 15%).
np.testing.assert_allclose(v_path, cf_path, rtol=0.15)
np.testing.assert_allclose(v_score, cf_score, rtol=0.15)
# Pathwise wins at small k, the score function at large k: the crossover, at every grid k
# that is not within a factor 1.5 of the closed-form crossover.
clear = np.abs(np.log(KS / k_cross)) > np.log(1.5)
assert np.all((v_path > v_score)[clear] == (KS > k_cross)[clear])
assert v_path[0] < 0.01 * v_score[0] and v_path[-1] > 20 * v_score[-1], (v_path, v_score)
assert 0.5 < k_cross < 2.0
# The pathwise variance grows like k^2; the score function's and measure-valued's stay bounded.
assert abs(v_path[-1] / KS[-1] ** 2 - 0.5) < 0.05
assert np.all(v_score < 1.0 / SIGMA**2)
assert np.all(variance["measure-valued"][cos_rows, 0] < 2 / (np.pi * SIGMA**2))
# (x - k)^2: pathwise beats the score function, with and without baseline, at every k.
square = slice(0, NUM_K)
for name in ("score function", "score function + LOO baseline (2 samples)"):
    assert np.all(var_cost["pathwise"][square] < var_cost[name][square]), name
# exp(-k x^2): pathwise wins at the smallest k, the score function at the largest.
v_exp = {name: variance[name][NUM_K : 2 * NUM_K, 0] for name in ("pathwise", "score function")}
assert v_exp["pathwise"][0] < 0.1 * v_exp["score function"][0]
assert v_exp["pathwise"][-1] > 4 * v_exp["score function"][-1]
print("all claims hold")
print(f"\ntotal run time {time.perf_counter() - start:.1f} s")
