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
# # Natural gradients: the Fisher as the Hessian of the KL, solved by CG
#
# A gradient step $\theta + \eta\, g$ measures the size of a step in parameter
# space, where a change of $0.01$ in the scale of a Gaussian means very different
# things for a scale of $1$ and a scale of $0.01$. The **natural gradient**
# (Amari 1998, [doi:10.1162/089976698300017746](https://doi.org/10.1162/089976698300017746))
# measures it by how much the *distribution* moves, the KL divergence, whose
# second-order expansion is the Fisher information $F(\theta)$:
#
# $$\mathrm{KL}(p_\theta \,\|\, p_{\theta + \delta}) = \tfrac12\, \delta^\top F(\theta)\, \delta
#   + O(\lVert\delta\rVert^3), \qquad
#   F(\theta) = E_{x \sim p_\theta}\big[\nabla \log p_\theta(x)\, \nabla \log p_\theta(x)^\top\big]
#   = \nabla^2_{\theta'} \mathrm{KL}(p_\theta \,\|\, p_{\theta'})\big|_{\theta' = \theta}.$$
#
# The steepest-ascent direction of an objective $J$ under that metric is
# $F^{-1} \nabla J$. jaxgrad gives the three pieces:
#
# * `jaxgrad.fisher_vector_product(dist, params, v)`: $F v$ exactly, as a
#   Hessian-vector product of the closed-form KL (forward-over-reverse,
#   Pearlmutter 1994, [doi:10.1162/neco.1994.6.1.147](https://doi.org/10.1162/neco.1994.6.1.147)),
#   never forming $F$;
# * `jaxgrad.empirical_fisher_vector_product(key, dist, params, v, num_samples=N)`:
#   the Monte Carlo estimate $\frac1N \sum_n s_n \langle s_n, v\rangle$ from sampled
#   scores $s_n$;
# * `jaxgrad.natural_gradient(dist, params, g, damping=...)`: $(F + \lambda I)^{-1} g$
#   by conjugate gradient on Fisher-vector products, the "Hessian-free" solve of
#   Martens (2010) and of the natural policy gradient of TRPO (Schulman et al. 2015,
#   [arXiv:1502.05477](https://arxiv.org/abs/1502.05477), appendix C).
#
# This notebook checks that the three agree with each other and with the closed
# form, then trains a Gaussian policy with natural and with plain gradient ascent
# (Kakade 2001, *A Natural Policy Gradient*, NeurIPS;
# Martens 2020, [JMLR 21(146)](https://jmlr.org/papers/v21/17-678.html)). Run it as a
# script (`python notebooks/natural_gradient.py`) or open it with jupytext;
# `JAXGRAD_NOTEBOOK_QUICK=1` (set by the test suite) runs a reduced size.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax.flatten_util import ravel_pytree

import jaxgrad
import jaxgrad.diagnostics as diag

np.set_printoptions(precision=5, suppress=True)
start = time.perf_counter()
QUICK = os.environ.get("JAXGRAD_NOTEBOOK_QUICK", "") not in ("", "0")
FISHER_KEYS, STEPS, NUM_SAMPLES = (4096, 60, 32) if QUICK else (100_000, 1000, 32)
normal = jaxgrad.dists.normal
print(f"{FISHER_KEYS} sampled scores; {STEPS} optimization steps of {NUM_SAMPLES} samples each")

# %% [markdown]
# ## Three faces of the Fisher
#
# The policy is a Gaussian over $d = 2$ actions with independent coordinates,
# $a \sim \mathcal N(\mu, \mathrm{diag}(\sigma^2))$, parameters
# $\theta = (\mu, \sigma)$ as `jaxgrad.dists.normal` takes them. Its Fisher is
# diagonal with the closed form (per coordinate)
#
# $$F = \begin{pmatrix} 1/\sigma^2 & 0 \\ 0 & 2/\sigma^2 \end{pmatrix},$$
#
# since the score is $\big((a-\mu)/\sigma^2,\ ((a-\mu)^2 - \sigma^2)/\sigma^3\big)$.
# At $\theta_0$ with one small scale, for a direction $v$, we compute $F v$ four ways:
# `fisher_vector_product`; the dense Hessian of
# $\theta \mapsto \mathrm{KL}(p_{\theta_0} \| p_\theta)$ by `jax.hessian`
# (reverse-over-reverse, a different route through the same KL) times $v$; the
# closed form; and the average of `empirical_fisher_vector_product` over many keys
# (unbiased: a z-test against the closed form). We also check the expansion
# $\mathrm{KL}(p_{\theta_0} \| p_{\theta_0 + \epsilon v}) \approx \frac{\epsilon^2}{2} v^\top F v$.
#
# The second half solves the natural gradient by CG and compares it with the closed
# form $F^{-1} g = (\sigma^2 g_\mu,\ \sigma^2 g_\sigma / 2)$ and with a dense solve
# against the Hessian of the KL. Everything in this section is one compiled program.

# %%
theta0 = (np.array([0.5, -1.0], np.float32), np.array([1.0, 0.05], np.float32))
v = (np.array([1.0, -2.0], np.float32), np.array([0.5, 1.5], np.float32))
g = (np.array([0.3, 4.0], np.float32), np.array([-1.0, 20.0], np.float32))  # some gradient
EPS = np.array([1e-2, 1e-3, 1e-4], np.float32)  # step lengths for the KL expansion


def kl_hessian(dist, params):
    """The dense Hessian of theta -> KL(p_params || p_theta) at params, in ravel order."""
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda t: jaxgrad.dists.kl(dist, params, dist, unravel(t)))(flat)


@jax.jit
def fisher_checks(key, theta0, v, g):
    out = {"fvp": jaxgrad.fisher_vector_product(normal, theta0, v)}
    out["hessian"] = kl_hessian(normal, theta0)
    out["hvp"] = out["hessian"] @ ravel_pytree(v)[0]
    one = lambda k: jaxgrad.empirical_fisher_vector_product(k, normal, theta0, v, num_samples=1)
    out["sampled"] = jax.vmap(one)(jax.random.split(key, FISHER_KEYS))
    shifted = lambda eps: jax.tree.map(lambda t, d: t + eps * d, theta0, v)
    out["kl_eps"] = jax.vmap(lambda e: jaxgrad.dists.kl(normal, theta0, normal, shifted(e)))(EPS)
    out["ng"], out["cg"] = jaxgrad.natural_gradient(
        normal, theta0, g, damping=0.0, tol=1e-6, return_info=True
    )
    return out


t0 = time.perf_counter()
checks = jax.device_get(fisher_checks(jax.random.key(0), theta0, v, g))
print(f"one compiled program for the checks: {time.perf_counter() - t0:.2f} s")

(mu0, s0), (v_mu, v_s) = theta0, v
closed = np.concatenate([v_mu / s0**2, 2 * v_s / s0**2])  # F v, closed form
fvp = np.concatenate(checks["fvp"])
sampled = np.concatenate(checks["sampled"], axis=1)  # [keys, 4]
print("F v, fisher_vector_product ", fvp)
print("H v, jax.hessian of the KL ", np.asarray(checks["hvp"]))
print("F v, closed form           ", closed)
print("F v, mean of sampled scores", sampled.mean(0), "+-", sampled.std(0) / np.sqrt(FISHER_KEYS))
vfv = float(np.concatenate(v) @ closed)
ratio = checks["kl_eps"] / (EPS**2 / 2 * vfv)
for eps, kl_eps, r in zip(EPS, checks["kl_eps"], ratio, strict=True):
    print(
        f"eps = {eps:g}: KL(p0 || p0 + eps v) = {kl_eps:.6g}, eps^2/2 v'Fv = "
        f"{eps**2 / 2 * vfv:.6g}, ratio {r:.4f}"
    )

# %% [markdown]
# All four agree: the sampled version within its standard error, the others to
# float32 round-off. The Fisher of the small-scale coordinate is $1/0.05^2 = 400$
# (and 800 for $\sigma_2$): the same step in $\mu_2$ moves the distribution 400
# times as much, in KL, as in $\mu_1$. Along $\epsilon v$ the KL is
# $\frac{\epsilon^2}{2} v^\top F v$ up to a relative error of order
# $\epsilon\, v_{\sigma_2} / \sigma_2$ (third-order terms), so the ratio goes to 1
# as $\epsilon \to 0$. The checks, then the CG solves:

# %%
np.testing.assert_allclose(fvp, closed, rtol=1e-5)
np.testing.assert_allclose(np.asarray(checks["hvp"]), closed, rtol=1e-4)
z = diag.assert_unbiased(sampled, closed)
print("z-scores of the sampled Fisher-vector product:", z)
# The quadratic expansion: its relative error shrinks like eps (third-order terms).
assert abs(ratio[-1] - 1) < 0.01 and abs(ratio[-1] - 1) < abs(ratio[-2] - 1) < abs(ratio[0] - 1)

ng = np.concatenate(checks["ng"])
ng_closed = np.concatenate([s0**2 * g[0], s0**2 * g[1] / 2])
print("natural gradient, CG         ", ng)
print("natural gradient, closed form", ng_closed)
np.testing.assert_allclose(ng, ng_closed, rtol=1e-4)
# CG's own account (return_info=True). F has 4 distinct eigenvalues (1/s^2 and 2/s^2 for
# each of the two scales), so in exact arithmetic CG is exact after 4 Fisher-vector
# products; in float32, with eigenvalues from about 1 to 800, round-off costs a few more.
cg = checks["cg"]
print(f"CG: {int(cg.iterations)} iterations, relative residual {float(cg.relative_residual):.1e}")
assert bool(cg.converged) and 4 <= int(cg.iterations) < 100

ng_dense = np.linalg.solve(np.asarray(checks["hessian"], np.float64), np.concatenate(g))
print("natural gradient, dense solve", ng_dense)
np.testing.assert_allclose(ng, ng_dense, rtol=1e-4)

# %% [markdown]
# ## Training a Gaussian policy
#
# The policy $p_\theta = \mathcal N(\mu, \mathrm{diag}(\sigma^2))$ maximizes an
# expected reward with an entropy bonus (maximum-entropy reinforcement learning, as
# in Williams & Peng 1991 and Haarnoja et al. 2017,
# [arXiv:1702.08165](https://arxiv.org/abs/1702.08165)), with the reward the log-density of a
# target $q = \mathcal N(0, \mathrm{diag}(s^2))$:
#
# $$J(\theta) = E_{a \sim p_\theta}[\log q(a)] + H(p_\theta) = -\mathrm{KL}(p_\theta \,\|\, q),$$
#
# so the optimum is $p_\theta = q$ and the suboptimality is the KL, which we track
# in closed form (`jaxgrad.dists.kl`). The gradient of the reward term is estimated
# by `jaxgrad.pathwise` with 32 samples a step; the entropy's gradient is exact.
#
# The conditioning comes from the scales: with one target scale $s_1 = 1$ and one
# small $s_2$, the curvature of $J$ is about $1/s_i^2$ in coordinate $i$, so a plain
# gradient step must be smaller than about $s_2^2$ to be stable, and coordinate 1
# then moves at a rate $\eta / s_1^2 \approx (s_2 / s_1)^2$ per step. The natural
# gradient multiplies by $F^{-1} = \mathrm{diag}(\sigma^2, \sigma^2/2)$, which near
# the optimum is about the inverse curvature in every coordinate: it is affine
# invariant, and in each coordinate's own units ($\mu_i / s_i$, $\sigma_i / s_i$)
# its trajectory does not depend on $s_i$ at all.
#
# Every run starts three target standard deviations off and twice too wide,
# $\mu_i = -3 s_i$, $\sigma_i = 2 s_i$ (a KL of 5.3 per coordinate), and takes the
# same number of steps. For each method and each $s_2 \in \{1, 0.3, 0.1, 0.03, 0.01\}$
# we try 16 learning rates from $10^{-5}$ to 1 and keep the one that first reaches
# $\mathrm{KL} < 0.1$ among those that do not diverge (otherwise the one with the
# lowest final KL). All $2 \times 5 \times 16$ runs are one `vmap` of one
# `lax.scan`: one compiled program.

# %%
S2 = np.array([1.0, 0.3, 0.1, 0.03, 0.01], np.float32)  # the small target scale of each problem
LRS = np.geomspace(1e-5, 1.0, 16).astype(np.float32)
THRESHOLD = 0.1
log_q = lambda a, q: normal.log_prob(q, a)  # the reward: log-density of the target
reward = jaxgrad.pathwise(log_q, dist=normal, num_samples=NUM_SAMPLES)


def objective(key, theta, q):
    return reward(key, theta, q) + normal.entropy(theta)


def train(key, s, lr, natural):
    """One run; s: target scales [2], natural: bool. Returns KL [STEPS + 1], thetas."""
    q = (jnp.zeros(2, jnp.float32), s)
    theta = (-3.0 * s, 2.0 * s)

    def step(theta, key):
        grad = jax.grad(objective, argnums=1)(key, theta, q)
        nat = jaxgrad.natural_gradient(normal, theta, grad, damping=1e-6)
        direction = jax.tree.map(lambda a, b: jnp.where(natural, a, b), nat, grad)
        theta = jax.tree.map(lambda t, d: t + lr * d, theta, direction)
        return theta, (jaxgrad.dists.kl(normal, theta, normal, q), theta)

    _, (kls, thetas) = jax.lax.scan(step, theta, jax.random.split(key, STEPS))
    kl0 = jaxgrad.dists.kl(normal, (-3.0 * s, 2.0 * s), normal, q)
    return jnp.concatenate([kl0[None], kls]), thetas


over_lrs = jax.vmap(train, in_axes=(None, None, 0, None))
over_problems = jax.vmap(over_lrs, in_axes=(None, 0, None, None))
all_runs = jax.jit(jax.vmap(over_problems, in_axes=(None, None, None, 0)))

t0 = time.perf_counter()
scales = np.stack([np.ones_like(S2), S2], axis=1)  # [problems, 2]
kls, (mus, sigmas) = jax.device_get(
    all_runs(jax.random.key(1), scales, LRS, np.array([False, True]))
)  # kls: [method, problem, lr, STEPS + 1]; mus, sigmas: [method, problem, lr, STEPS, 2]
print(
    f"{kls.shape[0] * kls.shape[1] * kls.shape[2]} runs of {STEPS} steps: "
    f"{time.perf_counter() - t0:.2f} s"
)

METHODS = ("gradient ascent", "natural gradient")


def steps_to(curve):
    """The first step at which the KL is below THRESHOLD (None if never)."""
    hit = np.flatnonzero(np.nan_to_num(curve, nan=np.inf) < THRESHOLD)
    return int(hit[0]) if hit.size else None


best = {}  # (method, problem) -> index of the chosen learning rate
for m in range(2):
    for p in range(len(S2)):
        final = np.nan_to_num(kls[m, p, :, -1], nan=np.inf)
        # Only runs that stay finite to the end (a learning rate at the edge of stability
        # can reach the threshold and diverge later).
        reach = [steps_to(kls[m, p, i]) if np.isfinite(final[i]) else None for i in range(len(LRS))]
        if any(r is not None for r in reach):
            best[m, p] = min((r, i) for i, r in enumerate(reach) if r is not None)[1]
        else:
            best[m, p] = int(np.argmin(final))

print(
    f"{'s_2':>5} {'method':17} {'best lr':>8} {'steps to KL < 0.1':>18} {'final KL':>9}"
    f" {'diverged lrs':>12}"
)
for p, s2 in enumerate(S2):
    for m, name in enumerate(METHODS):
        i = best[m, p]
        reach = steps_to(kls[m, p, i])
        diverged = int(np.sum(~np.isfinite(kls[m, p, :, -1])))
        print(
            f"{s2:5g} {name:17} {LRS[i]:8.2g} {str(reach or f'> {STEPS}'):>18}"
            f" {kls[m, p, i, -1]:9.3g} {diverged:12d}"
        )

# %% [markdown]
# The learning curves at each method's best learning rate (for $s_2 = 1, 0.1, 0.01$;
# the step axis is logarithmic beyond 10), and the trajectories of the two
# coordinates for $s_2 = 0.01$ in their own units ($\mu_i / s_i$, $\sigma_i / s_i$;
# the optimum is $(0, 1)$):

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for p in (0, 2, 4):  # s_2 = 1, 0.1, 0.01
    s2 = S2[p]
    for m, style in enumerate(("--", "-")):
        ax1.semilogy(
            kls[m, p, best[m, p]], style, color=f"C{p}", label=f"{METHODS[m]}, $s_2$ = {s2:g}"
        )
ax1.axhline(THRESHOLD, color="gray", lw=0.6)
ax1.set_xscale("symlog", linthresh=10)
ax1.set_xlabel("step")
ax1.set_ylabel("KL(p || q) = J* - J")
ax1.legend(fontsize=7)
p = len(S2) - 1  # s_2 = 0.01
for m, style in enumerate(("--", "-")):
    i = best[m, p]
    for c in range(2):
        unit = scales[p, c]
        x = np.r_[-3.0, mus[m, p, i, :, c] / unit]  # from the start (-3, 2)
        y = np.r_[2.0, sigmas[m, p, i, :, c] / unit]
        color = f"C{2 * m + c + 3}"
        label = f"{METHODS[m]}, coordinate {c + 1} (s = {unit:g})"
        ax2.plot(x, y, style, lw=0.8, color=color, label=label)
        ax2.plot(x[-1], y[-1], "o", ms=6, color=color, zorder=3)  # where it ends
ax2.plot([-3.0], [2.0], "s", ms=9, mfc="none", mec="k")
ax2.plot([0], [1], "k*", ms=12)
ax2.set_xlabel("mu / s  (start: square, optimum: star, end: dots)")
ax2.set_ylabel("sigma / s")
ax2.legend(fontsize=7)
plt.show()

# %% [markdown]
# What the numbers say:
#
# * For $s_2 = 1$ the problem is well conditioned and both methods reach the
#   threshold within a few steps of each other.
# * As $s_2$ shrinks, the plain gradient's stable learning rate shrinks like $s_2^2$
#   (the larger learning rates diverge: the scale goes negative), and with it the
#   progress of the wide coordinate: the steps it needs grow like $1/s_2^2$ (at the
#   full size, 1000 steps: 4, 41 and 417 steps for $s_2 = 1, 0.3, 0.1$), and at
#   $s_2 = 0.01$ the wide coordinate barely moves from its start within the budget:
#   the KL stays near that coordinate's initial 5.3.
# * The natural gradient takes the same number of steps for every $s_2$, with the
#   same learning rate: its learning curves for the three problems lie on top of
#   each other (only the last one drawn is visible: the same keys give the same noise
#   in each coordinate's units), and in the right panel its two coordinates follow
#   the same path up to their different sampling noise, while plain gradient ascent
#   moves coordinate 2 only and leaves coordinate 1 near its start. It stops at a noise floor set
#   by the 32-sample gradient estimate (lower it with more samples or a decaying step).
#
# The Fisher is the curvature of $J$ only near the optimum. Started much wider than
# the target ($\sigma \gg s$), where the curvature of $J$ in $\sigma$,
# $1/s^2 + 1/\sigma^2$, is about $\sigma^2/(2s^2)$ times the Fisher's $2/\sigma^2$, a
# fixed natural step overshoots (the scale goes negative unless
# $\eta \lesssim 2s^2/\sigma^2$); this is
# why trust-region methods such as TRPO cap the KL of each step instead of fixing
# its length. The runs here start at $\sigma = 2s$, where $\eta < 2/3$ is stable.
#
# Each natural-gradient step costs a CG solve, here a few Fisher-vector products of
# a closed-form KL and no extra samples. For this diagonal policy a per-coordinate
# adaptive optimizer (Adam) would also remove much of the scale problem; the Fisher
# does it from the geometry of the distribution, without statistics of past
# gradients, and also where the Fisher is not diagonal (a full-covariance policy,
# `jaxgrad.dists.multivariate_normal`, takes the same calls).

# %%
ng_steps = [steps_to(kls[1, p, best[1, p]]) for p in range(len(S2))]
gd_steps = [steps_to(kls[0, p, best[0, p]]) for p in range(len(S2))]
print("steps to KL < 0.1: natural gradient", ng_steps, "gradient ascent", gd_steps)
# Natural gradient: fast on every problem, with the same number of steps.
assert all(s is not None and s <= 20 for s in ng_steps), ng_steps
assert len(set(ng_steps)) == 1, ng_steps
# ... because its runs are the same in each coordinate's units (affine invariance).
i = best[1, 0]
np.testing.assert_allclose(
    kls[1, :, i], np.broadcast_to(kls[1, 0, i], kls[1, :, i].shape), rtol=1e-2
)
# Well conditioned (s_2 = 1): plain gradient ascent is competitive; at s_2 = 0.3 it already
# needs many times more steps, and the count never decreases as s_2 shrinks.
assert gd_steps[0] is not None and gd_steps[0] <= 3 * ng_steps[0], gd_steps
assert gd_steps[1] is not None and gd_steps[1] > 5 * ng_steps[1], gd_steps
reached = [np.inf if s is None else s for s in gd_steps]
assert all(a <= b for a, b in zip(reached[:-1], reached[1:], strict=True)), gd_steps
# Ill conditioned (s_2 = 0.01): plain gradient ascent does not get there within the budget,
# and its final KL is far above the natural gradient's.
assert gd_steps[-1] is None, gd_steps
last = len(S2) - 1
assert kls[0, last, best[0, last], -1] > 10 * kls[1, last, best[1, last], -1]
print("all claims hold")
print(f"\ntotal run time {time.perf_counter() - start:.1f} s")
