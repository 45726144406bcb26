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
# # REINFORCE and its baselines on a contextual bandit
#
# A contextual bandit: a context $x \sim \mathcal N(0, I_d)$ arrives, a softmax
# policy with logits $Wx$ picks one of $K$ arms $a$, and the environment pays a
# reward $r(x, a) = r_0 + x^\top\theta_a$ with a fixed random table $\theta$
# unknown to the learner. The cost is $f = -r$ and the objective is the expected
# cost over a batch of $B$ contexts,
#
# $$
# J(W) = \frac1B \sum_{b=1}^B \mathbb{E}_{a \sim \pi_W(\cdot \mid x_b)}\,
#        f(x_b, a),
# \qquad \pi_W(a \mid x) = \mathrm{softmax}(W x)_a .
# $$
#
# The reward is a black box (we may only pull arms), so the gradient needs the
# score-function estimator, REINFORCE (Williams, 1992). This notebook measures
# how much each of `jaxgrad`'s baselines cuts its variance, checks that every
# one stays unbiased against the exact gradient (the $K$ arms are enumerated),
# shows when the baselines estimated from the other pulls of the same context
# (leave-one-out, per-coordinate optimal) win and when they lose, and trains the
# policy with the baselines that carry state. Run it as a script
# (`python notebooks/reinforce_baselines.py`) or open it with jupytext;
# `JAXGRAD_NOTEBOOK_QUICK=1` (set by the test suite) runs it at a reduced size.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxgrad

np.set_printoptions(precision=4, suppress=True)
start = time.perf_counter()

QUICK = os.environ.get("JAXGRAD_NOTEBOOK_QUICK", "") not in ("", "0")
D, K = 8, 6  # context dimension, arms
R0 = 5.0  # reward offset: costs near -5, far from 0
# contexts per estimate, estimates per method, training steps
B, VAR_KEYS, TRAIN_STEPS = (16, 2000, 60) if QUICK else (32, 20_000, 400)
FEW, MANY = 4, 32  # pulls per context: the main study, and the regime study
B_MANY = 4  # contexts per estimate in the regime study

keys = iter(jax.random.split(jax.random.key(0), 8))  # one fresh key per use below
THETA = jax.random.normal(next(keys), (D, K), jnp.float32)  # the reward table
X_EVAL = jax.random.normal(next(keys), (B, D), jnp.float32)  # the contexts of the study
W0 = 0.3 * jax.random.normal(next(keys), (K, D), jnp.float32)  # the policy studied
print(f"d={D}, K={K}, {B} contexts, {FEW} pulls per context, {VAR_KEYS} keys, quick={QUICK}")

# %% [markdown]
# ## The score-function identity and why baselines are free
#
# For one context, with $p = \pi_W(\cdot \mid x)$ and the score
# $s(a) = \nabla \log p(a)$,
#
# $$
# \nabla \mathbb{E}_{a\sim p}[f(a)] = \sum_a f(a) \nabla p(a)
#   = \mathbb{E}_{a\sim p}\big[f(a)\, s(a)\big],
# $$
#
# so $f(a)\,s(a)$ with $a \sim p$ is unbiased. Since
# $\mathbb{E}[s(a)] = \sum_a \nabla p(a) = \nabla 1 = 0$, any $b$ that does not
# depend on the sampled $a$ can be subtracted for free:
# $\mathbb{E}[(f(a) - b)\, s(a)] = \nabla \mathbb{E}[f]$. The baseline may depend
# on the context $x$, on earlier steps, or on the *other* pulls of the same
# estimate, never on $a$ itself. The variance of coordinate $i$,
# $\mathbb{E}[(f - b_i)^2 s_i^2] - (\nabla_i J)^2$, is a quadratic in $b_i$,
# minimized by the per-coordinate optimal baseline (Greensmith, Bartlett &
# Baxter, 2004)
#
# $$
# b_i^\star = \frac{\mathbb{E}[f\, s_i^2]}{\mathbb{E}[s_i^2]} ;
# $$
#
# $b = \mathbb{E}[f \mid x]$, what moving averages, leave-one-out means and
# learned baselines aim at, is the same formula without the weights $s_i^2$.
# With $N$ pulls $a_1..a_N$ of one context the estimate is
# $\frac1N \sum_n (f_n - b_n)\, s(a_n) / c$, and the methods differ in $b_n$
# (and the scale $c$, 1 unless normalized), all through
# `jaxgrad.score_function(cost, dist=jaxgrad.dists.categorical, num_samples=N, ...)`:
#
# | method | argument | $b_n$ |
# |---|---|---|
# | reinforce | `baseline=None` (here an all-zero array, the same estimator) | 0 |
# | constant | `baseline=` an array | $-r_0$, a guess of the mean cost |
# | moving average | `ema` `state.value` | a running mean of past costs (Williams 1992) |
# | learned (NVIL) | $v^\top x + c$, fit by `loss` | predicts $\mathbb{E}[f \mid x]$ |
# | leave-one-out | `baseline="loo"` | $\frac{1}{N-1}\sum_{j\ne n} f_j$ (Kool et al. 2019) |
# | optimal | `baseline="optimal"` | $b^\star_i$ per logit, from the other $N-1$ pulls |
# | learned + normalize | `normalize=` `normalizer` scale | learned; $c = \max(1, \mathrm{sd})$ |
#
# (`ema`, `normalizer` and `loss` live in `jaxgrad.baselines`; the learned
# baseline and variance normalization are NVIL's, Mnih & Gregor 2014.)
#
# The estimator is written for one context (its logits $Wx$ are its
# parameters) and `vmap`ped over the contexts, which is how `jaxgrad` takes
# input-dependent baselines; the gradient in $W$ is then the outer product of
# each context's logit gradient with $x$. The rewards here are deterministic
# given the arm, to keep the notebook's compile small; a noisy reward would be
# `f(a, key, r)` with `f_takes_key=True` (one independent key per pull, so that
# leave-one-out cannot cancel noise a real environment would not replay).
#
# All seven methods are evaluated on the **same pulls** (the same key gives the
# same samples whatever the baseline), so their comparisons are paired, and one
# compiled program computes all of them: the five array baselines are one
# `vmap` over the baseline value and the scale.

# %%
ARRAY_METHODS = ("reinforce", "constant", "moving average", "learned (NVIL)", "learned + normalize")
METHODS = (*ARRAY_METHODS, "leave-one-out", "optimal")
CATEGORICAL = jaxgrad.dists.categorical


def cost(a, r):
    """-reward of one pull: a one-hot arm [K] and the mean rewards r [K] of its context."""
    return -(a @ r)


def mean_rewards(x):
    return R0 + x @ THETA  # [..., K]


def learned(phi, x):
    return x @ phi["v"] + phi["c"]  # the NVIL-style baseline b(x) of the cost


def context_grads(key, logits, r, bs, scales, n, named=True):
    """The logit gradients [7, K] of every method for one context, on the same n pulls.

    named=False: only the five array methods [5, K] (the training runs).
    """

    def with_array(b, scale):
        est = jaxgrad.score_function(
            cost, dist=CATEGORICAL, num_samples=n, baseline=b, normalize=scale,
            return_f_values=True,
        )  # fmt: skip
        return jax.grad(est, argnums=1, has_aux=True)(key, logits, r)

    g_array, aux = jax.vmap(with_array)(bs, scales)
    if not named:
        return g_array, aux.f_values[0]
    named = [
        jax.grad(
            jaxgrad.score_function(cost, dist=CATEGORICAL, num_samples=n, baseline=name),
            argnums=1,
        )(key, logits, r)
        for name in ("loo", "optimal")
    ]
    return jnp.concatenate([g_array, jnp.stack(named)]), aux.f_values[0]


def batch_grads(key, W, x, bs, scales, n, named=True):
    """grad_W of the batch estimate for every method [7, K, d], and the costs [B, n]."""
    g, f_values = jax.vmap(context_grads, in_axes=(0, 0, 0, 0, None, None, None))(
        jax.random.split(key, x.shape[0]), x @ W.T, mean_rewards(x), bs, scales, n, named
    )
    return jnp.einsum("bmk,bd->mkd", g, x) / x.shape[0], f_values


def exact_cost(W, x):
    """J(W) by enumerating the K arms (the noise has mean zero)."""
    return -jnp.mean(jnp.sum(jax.nn.softmax(x @ W.T) * mean_rewards(x), axis=-1))


def array_baselines(x, ema_state, phi, norm_state):
    """The five array methods' baselines [B, 5] and scales [5] at the contexts x."""
    b = learned(phi, x)
    zero = jnp.zeros_like(b)
    bs = jnp.stack([zero, zero - R0, zero + ema_state.value, b, b], axis=1)
    one = jnp.ones((), jnp.float32)
    return bs, jnp.stack([one, one, one, one, norm_state.scale])


# %% [markdown]
# ## Stateful baselines and training, in one compiled program
#
# The moving average, the learned baseline and the normalizer carry state from
# earlier steps, updated from the costs the estimator returns
# (`return_f_values=True`) inside the same jitted step: `ema.update` on the
# costs, Adam on `jaxgrad.baselines.loss(f_values, b(x))` for the learned
# baseline, and `normalizer.update` on the centered signal $f - b(x)$. Every
# baseline is fixed before the pulls it centers are drawn, so each step's
# estimate stays unbiased.
#
# One training step draws fresh contexts, computes all seven estimates, takes a
# plain SGD step on $W$ with its run's method, and updates the three states. The
# runs, one per method plus one with learning rate 0 that only fits the states at
# the policy $W_0$ studied below, are `vmap`ped over a `lax.scan` with the same
# keys. The variance studies at $W_0$ then run in the same program, as
# `lax.map` over chunks of keys (bounded memory): one compile for the notebook.

# %%
LR = 0.1
ema = jaxgrad.baselines.ema(decay=0.95)
norm = jaxgrad.baselines.normalizer(decay=0.95)
phi_opt = optax.adam(0.3)
phi0 = {"v": jnp.zeros((D,), jnp.float32), "c": jnp.zeros((), jnp.float32)}
RUNS = ("fit at W0", *ARRAY_METHODS)  # run 0 (learning rate 0) fits the states at W0


def baseline_loss(phi, x, f_values):
    return jnp.mean(jax.vmap(jaxgrad.baselines.loss)(f_values, learned(phi, x)))


def train(keys, method, lr):
    def step(carry, key):
        W, phi, opt_state, ema_state, norm_state = carry
        kx, ka = jax.random.split(key)
        x = jax.random.normal(kx, (B, D), jnp.float32)
        grads, f_values = batch_grads(
            ka, W, x, *array_baselines(x, ema_state, phi, norm_state), FEW, False
        )
        W = W - lr * grads[method]
        updates, opt_state = phi_opt.update(
            jax.grad(baseline_loss)(phi, x, f_values), opt_state, phi
        )
        ema_state = ema.update(f_values, ema_state)
        norm_state = norm.update(f_values - learned(phi, x)[:, None], norm_state)
        phi = optax.apply_updates(phi, updates)
        return (W, phi, opt_state, ema_state, norm_state), -exact_cost(W, X_EVAL)

    carry = (W0, phi0, phi_opt.init(phi0), ema.init(jnp.float32), norm.init(jnp.float32))
    return jax.lax.scan(step, carry, keys)


def study(key, x, states, n, chunk):
    """VAR_KEYS estimates [VAR_KEYS, 7, K, d] of grad J(W0) on the contexts x, n pulls each."""
    bs, scales = array_baselines(x, *states)
    one = lambda k: batch_grads(k, W0, x, bs, scales, n)[0]  # noqa: E731
    return jax.lax.map(one, jax.random.split(key, VAR_KEYS), batch_size=chunk)


@jax.jit
def experiment(key):
    k_train, k_few, k_many = jax.random.split(key, 3)
    methods = jnp.arange(-1, len(ARRAY_METHODS))  # -1: the fit run (its gradient is unused)
    lrs = jnp.where(methods < 0, 0.0, LR).astype(jnp.float32)
    train_keys = jax.random.split(k_train, TRAIN_STEPS)
    (_, phi, _, ema_state, norm_state), curves = jax.vmap(
        lambda m, lr: train(train_keys, jnp.maximum(m, 0), lr)
    )(methods, lrs)
    fit = jax.tree.map(lambda a: a[0], (ema_state, phi, norm_state))  # the fit at W0
    few = study(k_few, X_EVAL, fit, FEW, 250)
    many = study(k_many, X_EVAL[:B_MANY], fit, MANY, 250)
    exact = jax.grad(exact_cost)(W0, X_EVAL), jax.grad(exact_cost)(W0, X_EVAL[:B_MANY])
    return fit, curves[1:], few, many, exact


t0 = time.perf_counter()
(ema_fit, phi_fit, norm_fit), curves, G_few, G_many, (exact_few, exact_many) = (
    jax.block_until_ready(experiment(next(keys)))
)
print(
    f"one program: {len(RUNS)} runs of {TRAIN_STEPS} steps and 2 x {VAR_KEYS} x 7 estimates "
    f"in {time.perf_counter() - t0:.1f} s (compile included)"
)
print(
    f"at W0: moving average {float(ema_fit.value):.3f}, learned b(x) = v.x + "
    f"{float(phi_fit['c']):.3f}, normalizer scale {float(norm_fit.scale):.3f}"
)

# %% [markdown]
# ## Variance and unbiasedness at a fixed policy
#
# `VAR_KEYS` independent estimates of $\nabla J(W_0)$ on the fixed contexts
# `X_EVAL`, every method on the same pulls. For each method: the total variance
# $\mathrm{tr\,Cov}(\hat g) = \sum_i \mathrm{Var}(\hat g_i)$ over the $K d = 48$
# coordinates, its ratio to plain REINFORCE with a standard error (delta method
# on the paired per-key squared deviations $u_n = \|\hat g_n - \bar g\|^2$:
# $\mathrm{se}(\bar u / \bar v) \approx \mathrm{sd}(u - R v) / (\sqrt{n}\, \bar v)$),
# the SNR $\|\bar g\| / \sqrt{\mathrm{tr\,Cov}}$, and the largest
# $|z| = |\bar g_i - \nabla_i J| / \mathrm{se}_i$ over the coordinates against the
# exact gradient. `jaxgrad.diagnostics.assert_unbiased` fails if any
# $|z| > 5$ (with 48 coordinates an unbiased estimator gives a max $|z|$ of
# about 2 to 3). With `normalize=c` the estimator targets $\nabla J / c$, so its
# mean is tested against $\nabla J / c$: at a fixed policy the normalization only
# rescales (its variance drops by $c^2$, its SNR is the learned baseline's).


# %%
def summarize(G, exact, scales):
    """Rows (variance, ratio to plain, se of the ratio, SNR, max |z|) per method."""
    G = np.asarray(G, np.float64).reshape(G.shape[0], G.shape[1], -1)  # [n, 7, Kd]
    n = G.shape[0]
    target = np.asarray(exact, np.float64).ravel()[None, :] / scales[:, None]  # [7, Kd]
    mean = G.mean(0)
    u = np.sum((G - mean) ** 2, axis=2) * n / (n - 1)  # [n, 7]: E u = tr Cov
    total = u.mean(0)
    ratio = total / total[0]
    se_ratio = np.std(u - ratio * u[:, :1], axis=0, ddof=1) / (np.sqrt(n) * total[0])
    snr = np.linalg.norm(mean, axis=1) / np.sqrt(total)
    for m in range(len(METHODS)):
        jaxgrad.diagnostics.assert_unbiased(G[:, m], target[m])  # z-test, |z| <= 5
    z = np.abs(mean - target) / (G.std(0, ddof=1) / np.sqrt(n))
    return total, ratio, se_ratio, snr, z.max(1)


def print_table(rows, title):
    total, ratio, se_ratio, snr, max_z = rows
    print(title)
    print(f"{'method':20} {'total var':>10} {'vs plain':>9} {'+- se':>7} {'SNR':>7} {'max |z|':>8}")
    for m, name in enumerate(METHODS):
        print(
            f"{name:20} {total[m]:10.4g} {ratio[m]:9.3f} {se_ratio[m]:7.3f} {snr[m]:7.3f} "
            f"{max_z[m]:8.2f}"
        )


scales = np.ones(len(METHODS))
scales[METHODS.index("learned + normalize")] = float(norm_fit.scale)
few = summarize(G_few, exact_few, scales)
print(f"|grad J(W0)|^2 = {float(jnp.sum(exact_few**2)):.4g}; every method passed the z-test\n")
print_table(few, f"{FEW} pulls per context, {B} contexts, {VAR_KEYS} estimates:")

# %% [markdown]
# Every baseline cuts the variance (asserted below). The offset $r_0 = 5$ makes
# plain REINFORCE's signal $f\,s(a)$ large, and any $b \approx \mathbb{E}[f]$
# removes most of it; the learned $b(x)$ removes more because it follows the
# context. Variance normalization divides the estimate by $c^2$ in variance
# and leaves its SNR exactly the learned baseline's: it changes the step size,
# not the information in the gradient.
#
# **Why leave-one-out and the optimal baseline lose here.** Both are estimated
# from the *other* $N - 1 = 3$ pulls of the same context. The leave-one-out mean
# $\bar f_{-n}$ is unbiased for $\mathbb{E}[f \mid x]$ but has variance
# $\mathrm{Var}(f \mid x) / (N-1)$, which is added to every sample's signal:
# roughly, $\mathrm{Var}_{\text{LOO}} \approx (1 + \tfrac{1}{N-1})$ times the
# variance with the ideal baseline $\mathbb{E}[f \mid x]$, a third more at
# $N = 4$ (Kool et al. 2019 make the same point; their estimator is worth it
# when one draws several samples anyway). The per-coordinate optimal baseline
# is worse still at small $N$: $b^\star_i$ weights the pulls by $s_i^2$, which
# for a softmax is large only when arm $i$ itself was pulled, so from 3 other
# pulls it is usually the mean of the other arms and sometimes a single pull.
# The constant, moving-average and learned baselines are instead estimated from
# many earlier pulls, so they carry almost no estimation noise.
#
# **More pulls per context.** With $N = 32$ pulls of each context both
# estimated baselines become accurate. The leave-one-out penalty
# $1/(N-1)$ shrinks to 3%, so leave-one-out catches up with the shared
# baselines; it does not pass them by much here, because $\mathbb{E}[f \mid x]$
# varies little from context to context compared with the spread of the arms'
# rewards within one. The per-coordinate optimal baseline wins clearly: $b^\star_i$
# is per logit, close to the cost of arm $i$ itself, and that spread within a
# context is exactly what no baseline shared by the coordinates can remove.

# %%
many = summarize(G_many, exact_many, scales)
print_table(many, f"{MANY} pulls per context, {B_MANY} contexts, {VAR_KEYS} estimates:")

ratio_few, ratio_many = few[1], many[1]
i = {name: METHODS.index(name) for name in METHODS}
for rows in (few, many):  # every baseline reduces the variance, by many standard errors
    assert np.all(rows[1][1:] + 5 * rows[2][1:] < 1.0), rows[1]
assert np.isclose(few[3][i["learned + normalize"]], few[3][i["learned (NVIL)"]], rtol=1e-4)
for m in ("leave-one-out", "optimal"):  # at 4 pulls: worse than the shared baselines
    for other in ("constant", "moving average", "learned (NVIL)"):
        assert ratio_few[i[m]] > ratio_few[i[other]] + 5 * few[2][i[m]], (m, other)
gap = {rows_name: r[1][i["leave-one-out"]] / r[1][i["constant"]] for rows_name, r in
       (("few", few), ("many", many))}  # fmt: skip
print(f"\nleave-one-out / constant: {gap['few']:.3f} at {FEW} pulls, {gap['many']:.3f} at {MANY}")
assert gap["few"] > 1.2 and gap["many"] < 1.1  # the leave-one-out penalty fades with N
for other in ("constant", "moving average", "learned (NVIL)", "leave-one-out"):
    # at 32 pulls the optimal baseline is the best of all
    assert ratio_many[i["optimal"]] + 5 * many[2][i["optimal"]] < ratio_many[i[other]], other

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
pos = np.arange(len(METHODS))
for k, (rows, label) in enumerate(((few, f"{FEW} pulls"), (many, f"{MANY} pulls"))):
    ax.bar(pos + (k - 0.5) * 0.38, rows[1], 0.38, yerr=2 * rows[2], label=label)
ax.set_xticks(pos, [m.replace(" + ", "\n+ ") for m in METHODS], fontsize=7)
ax.set_ylabel("variance / plain REINFORCE")
ax.set_yscale("log")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
# %% [markdown]
# ## Training
#
# The expected reward $-J(W)$ on `X_EVAL` (exact, by enumeration) after each SGD
# step of the runs above (the same keys and fresh contexts for every run, 4 pulls
# per context, learning rate 0.1); the best arm per context earns
# $\max_a r(x, a)$, the ceiling. The runs use the five array baselines (the
# states learned online; leave-one-out and the optimal baseline would add their
# own code to the compiled step and are left to the variance study). With the
# same learning rate, variance normalization divides every step by
# $c \approx 3$, so it learns more slowly here: NVIL pairs it with a larger
# learning rate, and its purpose is a step size that does not depend on the
# scale of the reward.

# %%
curves = np.asarray(curves)  # [5 runs, steps]
ceiling = float(jnp.mean(jnp.max(mean_rewards(X_EVAL), axis=-1)))
start_reward = float(-exact_cost(W0, X_EVAL))
print(f"expected reward at W0 {start_reward:.3f}, best arms {ceiling:.3f}")
for name, c in zip(ARRAY_METHODS, curves, strict=True):
    picks = c[[0, len(c) // 3, 2 * len(c) // 3, -1]]
    print(f"{name:20} reward after steps 1, 1/3, 2/3, last:", picks, f" mean {c.mean():.3f}")
assert np.all(curves[:, -1] > start_reward + 0.5)  # every run learns

fig, ax = plt.subplots(figsize=(6, 3.2))
for name, c in zip(ARRAY_METHODS, curves, strict=True):
    ax.plot(np.arange(1, len(c) + 1), c, label=name)
ax.axhline(ceiling, color="k", ls=":", lw=1, label="best arm per context")
ax.set_xlabel("SGD step")
ax.set_ylabel("expected reward on X_EVAL")
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## References
#
# * Williams, *Simple statistical gradient-following algorithms for
#   connectionist reinforcement learning*, Machine Learning 1992
#   (REINFORCE, reinforcement baselines). https://doi.org/10.1007/BF00992696
# * Greensmith, Bartlett & Baxter, *Variance Reduction Techniques for Gradient
#   Estimates in Reinforcement Learning*, JMLR 2004 (the optimal baseline).
#   https://jmlr.org/papers/v5/greensmith04a.html
# * Mnih & Gregor, *Neural Variational Inference and Learning in Belief
#   Networks*, ICML 2014 (learned input-dependent baselines, variance
#   normalization). https://arxiv.org/abs/1402.0030
# * Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
#   Free!*, ICLR workshop 2019 (leave-one-out). https://openreview.net/forum?id=r1lgTGL5DE
# * Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
#   Learning*, JMLR 2020, sec. 4 and 7. https://jmlr.org/papers/v21/19-346.html

# %%
print(f"\ntotal run time {time.perf_counter() - start:.1f} s")
