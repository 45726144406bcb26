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
# # Higher derivatives through samples
#
# Newton-type methods, meta-learning and the analysis of estimators need the
# curvature of an expectation, $\nabla^2_\theta\, E_{x \sim p_\theta}[f(x)]$, and not
# only its gradient. A Monte Carlo surrogate whose *gradient* is unbiased need not
# have an unbiased *Hessian*: the classic score-function surrogate
# $\bot(f(x)) \log p_\theta(x)$ ($\bot$ is stop-gradient) gets the first derivative
# right and the second one wrong. This notebook shows how jaxgrad builds surrogates
# whose derivatives are unbiased at every order (DiCE's magic box), checks estimated
# Hessians and Hessian-vector products of `jaxgrad.score_function` and
# `jaxgrad.pathwise` against closed forms with z-tests, and shows how the
# first-order-only estimators refuse a second derivative instead of returning a
# wrong one.
#
# References:
# Foerster, Farquhar, Al-Shedivat, Rocktäschel, Xing & Whiteson, *DiCE: The Infinitely
# Differentiable Monte Carlo Estimator*, ICML 2018,
# [arXiv:1802.05098](https://arxiv.org/abs/1802.05098);
# Schulman, Heess, Weber & Abbeel, *Gradient Estimation Using Stochastic Computation
# Graphs*, NeurIPS 2015, [arXiv:1506.05254](https://arxiv.org/abs/1506.05254);
# Mao, Foerster, Rocktäschel, Al-Shedivat, Farquhar & Whiteson, *A Baseline for Any
# Order Gradient Estimation in Stochastic Computation Graphs*, ICML 2019,
# [arXiv:1809.04227](https://arxiv.org/abs/1809.04227);
# Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
# Learning*, JMLR 2020, [arXiv:1906.10652](https://arxiv.org/abs/1906.10652);
# Pearlmutter, *Fast Exact Multiplication by the Hessian*, Neural Computation 1994.
#
# Run it as a script (`python notebooks/higher_derivatives.py`) or open it with
# jupytext.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad

np.set_printoptions(precision=4, suppress=True)
start = time.perf_counter()
QUICK = os.environ.get("JAXGRAD_NOTEBOOK_QUICK", "") not in ("", "0")
NUM_KEYS = 4_000 if QUICK else 200_000  # independent Hessian estimates
F32 = jnp.float32

# %% [markdown]
# ## 1. The magic box
#
# DiCE's operator is
#
# $$\boxdot(w) = \exp\big(w - \bot(w)\big), \qquad \boxdot(w) = 1, \qquad
# \frac{d}{d\theta}\boxdot(w) = \boxdot(w)\, \frac{dw}{d\theta}.$$
#
# Its value is always 1, but it differentiates like $e^{w}$, so with
# $w = \log p_\theta(x)$ and $w', w'', \dots$ its derivatives in $\theta$,
#
# $$\boxdot' = w', \qquad \boxdot'' = w'^2 + w'', \qquad
# \boxdot''' = w'^3 + 3 w' w'' + w''' \qquad (\text{at value } \boxdot = 1),$$
#
# which are exactly $p^{(k)}/p$, the $k$-th derivative of the probability divided
# by the probability (differentiate $p = e^{w}$ $k$ times). So the surrogate
# $f(x)\,\boxdot(\log p_\theta(x))$ has value $f(x)$, and for every order $k$
#
# $$E_x\big[f(x)\, \boxdot^{(k)}\big] = \sum_x p_\theta(x) f(x)
# \frac{p_\theta^{(k)}(x)}{p_\theta(x)} = \frac{d^k}{d\theta^k} E_x[f(x)]:$$
#
# its derivatives of every order are unbiased score-function estimators (Foerster
# et al. 2018). The naive surrogate $\bot(f)\, w$ has derivatives $f w^{(k)}$: right
# at $k = 1$ ($w' = p'/p$), wrong from $k = 2$ on (it lacks the $w'^2$ term).
#
# We check both statements for one coin, $x \sim \mathrm{Bernoulli}(\sigma(\theta))$,
# where $w = x\theta - \log(1 + e^\theta)$, $w' = x - \sigma$,
# $w'' = -\sigma(1 - \sigma)$, $w''' = -\sigma(1 - \sigma)(1 - 2\sigma)$, by
# differentiating `jaxgrad.magic_box` with `jax.grad` three times and summing over the
# two outcomes, against the derivatives of the closed form
# $E f = \sigma f(1) + (1 - \sigma) f(0)$.

# %%
bern = jaxgrad.dists.bernoulli
f_coin = {0.0: 1.5, 1.0: 0.5}  # f(0), f(1)


def nth(g, n):
    """The n-th derivative of a scalar function of a scalar."""
    for _ in range(n):
        g = jax.grad(g)
    return g


@jax.jit
def dice_terms(theta):
    xs = jnp.array([0.0, 1.0], F32)
    box = lambda t, x: jaxgrad.magic_box(bern.log_prob(t, x))
    naive = lambda t, x: bern.log_prob(t, x)  # times the stopped f(x)
    closed = lambda t: jax.nn.sigmoid(t) * f_coin[1.0] + (1 - jax.nn.sigmoid(t)) * f_coin[0.0]
    fx = jnp.array([f_coin[0.0], f_coin[1.0]], F32)
    px = jnp.exp(jax.vmap(bern.log_prob, in_axes=(None, 0))(theta, xs))
    out = {"value": jax.vmap(box, in_axes=(None, 0))(theta, xs)}
    for n in (1, 2, 3):
        out[f"box{n}"] = jax.vmap(nth(box, n), in_axes=(None, 0))(theta, xs)
        out[f"dice{n}"] = jnp.sum(px * fx * out[f"box{n}"])
        out[f"naive{n}"] = jnp.sum(px * fx * jax.vmap(nth(naive, n), in_axes=(None, 0))(theta, xs))
        out[f"exact{n}"] = nth(closed, n)(theta)
    return out


theta = 0.4
terms = {k: np.asarray(v, np.float64) for k, v in dice_terms(jnp.asarray(theta, F32)).items()}
s = 1 / (1 + np.exp(-theta))
xs = np.array([0.0, 1.0])
w1, w2, w3 = xs - s, -s * (1 - s), -s * (1 - s) * (1 - 2 * s)
by_hand = {1: w1, 2: w1**2 + w2, 3: w1**3 + 3 * w1 * w2 + w3}
print("magic_box value at x = 0, 1:", terms["value"])
assert np.all(terms["value"] == 1.0)
for n in (1, 2, 3):
    print(f"order {n}: box^({n}) at x = 0, 1: {terms[f'box{n}']}  by hand: {by_hand[n]}")
    np.testing.assert_allclose(terms[f"box{n}"], by_hand[n], rtol=1e-5, atol=1e-6)
print(f"\n{'order':>5} {'d^k E f (closed form)':>22} {'E[f box^(k)]':>13} {'E[f w^(k)] naive':>17}")
for n in (1, 2, 3):
    print(f"{n:5} {terms[f'exact{n}']:22.5f} {terms[f'dice{n}']:13.5f} {terms[f'naive{n}']:17.5f}")
    np.testing.assert_allclose(terms[f"dice{n}"], terms[f"exact{n}"], rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(terms["naive1"], terms["exact1"], rtol=1e-5)
assert abs(terms["naive2"] - terms["exact2"]) > 0.1  # the naive surrogate's curvature is wrong

# %% [markdown]
# By enumeration, without sampling: the magic box's expected derivatives equal the
# exact ones at orders 1, 2 and 3, and the naive surrogate's agree at order 1 only.
#
# ## 2. How jaxgrad uses it, and what refuses
#
# `jaxgrad.score_function(f, dist=..., num_samples=N, baseline=b)` returns
#
# $$\mathrm{est}(\theta) = \frac1N \sum_n \Big[f(x_n) + \big(\boxdot(\log p_\theta(x_n)) - 1\big)
# \big(f(x_n) - b_n\big)\Big], \qquad x_n \sim p_{\bot(\theta)},$$
#
# whose value is the sample mean of $f$ (the bracket is $0 \cdot (f - b)$) and whose
# derivatives of every order are those of the DiCE surrogate, minus
# $b_n \boxdot^{(k)}$. With a baseline that does not depend on $x_n$ (`None`, a
# constant, or `"loo"`, the mean of the *other* samples, with its gradient stopped)
# that term has expectation $b_n E[\boxdot^{(k)}] = b_n \frac{d^k}{d\theta^k} 1 = 0$,
# so every order stays unbiased (Mao et al. 2019 discuss baselines for higher
# orders). `jaxgrad.rloo` is the `"loo"` case, and `jaxgrad.exact` differentiates
# exact probabilities. `jaxgrad.pathwise` writes $x = g_\theta(\varepsilon)$ (for a
# Gaussian $x = \mu + \sigma\varepsilon$) and differentiates $f(g_\theta(\varepsilon))$
# as it is, which is unbiased at every order when $f$ is smooth enough.
#
# The other estimators (ARM, DisARM, REBAR, RELAX, `baseline="optimal"`,
# measure-valued, IndeCateR, ...) attach a gradient *estimate* by a custom rule; its
# own derivative is not an estimator of anything, so they raise on any second
# derivative instead of silently returning zeros. The registry records which is
# which (`higher_order`; for the relaxations and straight-through rules it means that
# their surrogates can be differentiated again, not that they are unbiased):

# %%
for flag in (True, False):
    names = [n for n, info in jaxgrad.ESTIMATORS.items() if info.higher_order is flag]
    print(f"higher_order={flag}: {', '.join(names)}\n")

f_bits = lambda b: jnp.sum((b - 0.45) ** 2)
disarm = jaxgrad.disarm(f_bits)
logits = jnp.array([0.3, -0.2], F32)
print(
    "first derivative works:",
    jax.eval_shape(jax.grad(disarm, argnums=1), jax.random.key(0), logits),
)
try:  # traced only (eval_shape): the refusal happens while tracing, nothing is compiled
    jax.eval_shape(jax.hessian(disarm, argnums=1), jax.random.key(0), logits)
    raise AssertionError("disarm returned a Hessian")
except TypeError as err:
    message = str(err)
print("\njax.hessian(disarm) raised TypeError:\n", message)
assert message.startswith("disarm is a first-order estimator") and "jaxgrad.rloo" in message

# %% [markdown]
# ## 3. Hessians of a Gaussian expectation, estimated two ways
#
# For $x \sim \mathcal N(\mu, \mathrm{diag}(\sigma^2))$ in two dimensions and the
# polynomial
#
# $$f(x) = x_1^3 + x_1 x_2 + \tfrac12 x_2^4, \qquad
# E[f] = \mu_1^3 + 3\mu_1\sigma_1^2 + \mu_1\mu_2
# + \tfrac12\big(\mu_2^4 + 6\mu_2^2\sigma_2^2 + 3\sigma_2^4\big),$$
#
# the exact Hessian with respect to $\theta = (\mu_1, \mu_2, \sigma_1, \sigma_2)$ is
# `jax.hessian` of the closed form. We estimate it with
#
# * `jaxgrad.score_function` with 8 samples and the leave-one-out baseline: $f$ is a
#   black box, only evaluated;
# * `jaxgrad.pathwise` with 1 sample: $f$ is differentiated twice, along
#   $x = \mu + \sigma\varepsilon$;
# * the naive surrogate $\frac1N\sum_n \bot(f(x_n)) \log p_\theta(x_n)$ (8 samples),
#   as a power check: the same z-test must reject it.
#
# Each estimate is `jax.hessian` of one call of the estimator with its own key;
# `NUM_KEYS` of them are drawn by one jitted `vmap`. The same program also computes
# Hessian-vector products $Hv$ (section 4).

# %%
normal = jaxgrad.dists.normal
THETA = jnp.array([0.5, -0.3, 0.8, 0.6], F32)  # (mu_1, mu_2, sigma_1, sigma_2)
V = jnp.array([1.0, -2.0, 0.5, 1.0], F32)  # the direction of the Hessian-vector products


def f(x):
    return x[0] ** 3 + x[0] * x[1] + 0.5 * x[1] ** 4


def expectation(theta):  # E[f(x)] in closed form
    (m1, m2), (s1, s2) = theta[:2], theta[2:]
    return m1**3 + 3 * m1 * s1**2 + m1 * m2 + 0.5 * (m2**4 + 6 * m2**2 * s2**2 + 3 * s2**4)


def as_params(theta):  # the flat vector -> normal's (loc, scale)
    return theta[:2], theta[2:]


sf = jaxgrad.score_function(f, dist=normal, num_samples=8, baseline="loo")
pw = jaxgrad.pathwise(f, dist=normal)


def naive(key, theta):
    params = as_params(theta)
    xs = jax.vmap(lambda k: normal.sample(k, jax.lax.stop_gradient(params)))(
        jax.random.split(key, 8)
    )
    log_p = jax.vmap(lambda x: normal.log_prob(params, x))(xs)
    return jnp.mean(jax.lax.stop_gradient(jax.vmap(f)(xs)) * log_p)


ESTIMATORS = {
    "score_function (8, loo)": lambda key, theta: sf(key, as_params(theta)),
    "pathwise (1)": lambda key, theta: pw(key, as_params(theta)),
    "naive surrogate (8)": naive,
}


def hvp(est, key, theta, v):
    """Forward-over-reverse: the JVP of the gradient, H v without forming H."""
    return jax.jvp(lambda t: jax.grad(est, argnums=1)(key, t), (theta,), (v,))[1]


@jax.jit
def curvature_study(key):
    def one(k):
        out = {}
        for name, est in ESTIMATORS.items():
            out[name] = jax.hessian(est, argnums=1)(jax.random.clone(k), THETA)
            out[name + " hvp"] = hvp(est, jax.random.clone(k), THETA, V)
        return out

    exact = jax.hessian(expectation)(THETA)
    return jax.vmap(one)(jax.random.split(key, NUM_KEYS)), exact


samples, exact_hessian = curvature_study(jax.random.key(0))
samples = {k: np.asarray(v, np.float64) for k, v in samples.items()}
exact_hessian = np.asarray(exact_hessian, np.float64)
print("exact Hessian of E[f] in (mu_1, mu_2, sigma_1, sigma_2):\n", exact_hessian)


# %%
def z_scores(g, exact, atol=1e-6):
    """|mean - exact| / stderr per entry, as jaxgrad.diagnostics.assert_unbiased computes it."""
    err = np.abs(g.mean(0) - exact)
    se = g.std(0, ddof=1) / np.sqrt(g.shape[0])
    return np.where(se > 0, err / np.where(se > 0, se, 1.0), np.where(err > atol, np.inf, 0.0))


print(f"{'estimator':26} {'max |z|':>8} {'tr Var':>9}   worst entry: mean vs exact")
for name in ESTIMATORS:
    h = samples[name]
    z = z_scores(h, exact_hessian)
    i = np.unravel_index(np.argmax(z), z.shape)
    worst = f"H[{i[0]}, {i[1]}] {h.mean(0)[i]:7.3f} vs {exact_hessian[i]:6.3f}"
    print(f"{name:26} {z.max():8.2f} {h.var(0, ddof=1).sum():9.1f}   {worst}")
for name in ("score_function (8, loo)", "pathwise (1)"):
    jaxgrad.diagnostics.assert_unbiased(samples[name], exact_hessian)
    # Every estimate is a Hessian of a smooth surrogate: symmetric.
    np.testing.assert_allclose(
        samples[name], np.swapaxes(samples[name], 1, 2), rtol=1e-4, atol=1e-3
    )
try:
    jaxgrad.diagnostics.assert_unbiased(samples["naive surrogate (8)"], exact_hessian)
    raise RuntimeError("the z-test did not reject the naive surrogate")
except AssertionError as err:
    print("\nthe naive surrogate is rejected:", err)

# %% [markdown]
# Both jaxgrad estimators pass the z-test on all 16 entries (every $|z| < 5$; "tr
# Var" is the summed variance of one Hessian estimate), and the same test rejects
# the naive surrogate, whose Hessian estimates $E[f\, \nabla^2 \log p]$ and misses
# $E[f\, \nabla \log p\, \nabla \log p^\top]$: its cross terms in $(\mu_1, \mu_2)$ are
# exactly zero, since $\nabla^2 \log p$ of a diagonal Gaussian has none. Some
# pathwise entries are constants ($\partial^2 f / \partial x_1 \partial x_2 = 1$), with
# zero variance.
# The pathwise Hessian, which uses the derivatives of $f$, has far less variance
# from one sample than the score function has from eight: the usual trade of a
# black-box estimator.
#
# ## 4. Hessian-vector products
#
# A Newton-CG step or a curvature probe needs $Hv$, not $H$, and forward-over-reverse
# differentiation gives it at the cost of a few gradients (Pearlmutter 1994):
#
# $$Hv = \frac{\partial}{\partial \epsilon} \nabla_\theta\, \mathrm{est}(\theta + \epsilon v)
# \Big|_{\epsilon = 0} = \texttt{jax.jvp(jax.grad(est), (theta,), (v,))}.$$
#
# Through `score_function` and `pathwise` this is the HVP of the same unbiased
# surrogate, so its mean is the exact $H v$; per key it equals the estimated Hessian
# times $v$ (the same key, the same samples).

# %%
exact_hvp = exact_hessian @ np.asarray(V, np.float64)
print("exact H v:", exact_hvp)
for name in ("score_function (8, loo)", "pathwise (1)"):
    g = samples[name + " hvp"]
    z = jaxgrad.diagnostics.assert_unbiased(g, exact_hvp)
    se = g.std(0, ddof=1) / np.sqrt(NUM_KEYS)
    print(f"{name:24} mean {g.mean(0)} +- {se}  |z| max {z.max():.2f}")
    per_key = samples[name] @ np.asarray(V, np.float64)
    np.testing.assert_allclose(g, per_key, rtol=1e-3, atol=1e-3 * np.abs(per_key).max())
naive_hvp = samples["naive surrogate (8) hvp"]
naive_z = z_scores(naive_hvp, exact_hvp)
print(f"naive surrogate          mean {naive_hvp.mean(0)}  |z| max {naive_z.max():.1f}")
assert naive_z.max() > 5

# %% [markdown]
# The HVPs of both estimators are unbiased for $Hv$ and equal their own Hessian
# estimate times $v$ key by key; the naive surrogate's HVP is biased like its
# Hessian.
#
# Two practical notes. Forward-over-reverse (`jax.jvp` of `jax.grad`, and
# `jax.hessian`, which is `jacfwd(jacrev)`) works through every estimator built from
# stop-gradient algebra. `jaxgrad.gumbel_rao` is a `custom_vjp`: forward mode
# *through its sample* raises, while second derivatives whose inner derivative is
# reverse mode (`jax.hessian`, `jax.jvp` of `jax.grad`) work, but what they
# differentiate is its own biased gradient estimate at fixed noise, not an estimate
# of the Hessian of $E[f(D)]$ (the same holds for every relaxation flagged
# `higher_order` above). And
# `jaxgrad.fisher_vector_product(dist, params, v)` is the same forward-over-reverse
# product for the Hessian of a KL divergence (the Fisher information), the
# curvature natural-gradient methods use.

# %%
print(f"total run time {time.perf_counter() - start:.1f} s")
