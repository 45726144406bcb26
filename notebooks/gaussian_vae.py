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
# # A Gaussian VAE with `jaxgrad.pathwise`: analytic versus Monte Carlo KL
#
# The variational autoencoder of Kingma & Welling (2014) on binarized MNIST: a
# Gaussian code `z ~ q(z | x) = N(mu(x), diag sigma(x)^2)`, a standard normal
# prior and a Bernoulli decoder. Its gradient with respect to the encoder goes
# through the sample `z = mu + sigma * eps` (the reparameterization, or
# pathwise, gradient), which `jaxgrad.pathwise` computes from a function of
# ONE sample. The KL term of the ELBO can be computed two ways:
#
# * **analytic**: `jaxgrad.dists.kl(normal, (mu, sigma), normal, (0, 1))`, in
#   closed form, so only the reconstruction term is sampled;
# * **Monte Carlo**: `log q(z | x) - log p(z)` on the same sample `z`.
#
# Both give unbiased ELBO gradients. We train the same model with each (same
# initialization, same mini-batches, same noise) and compare the training
# curves, the held-out negative ELBO, and the variance of the encoder gradient
# at two fixed parameters (the initial and a trained one). Run it as a script
# (`python notebooks/gaussian_vae.py`, one to two minutes on two CPU cores) or
# open it with jupytext. It saves two PNG files in the working directory:
# `gaussian_vae_curves.png` (training curves) and `gaussian_vae_samples.png`
# (reconstructions and prior samples).

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxgrad
import jaxgrad.data

np.set_printoptions(precision=4, suppress=True)
start = time.perf_counter()
normal = jaxgrad.dists.normal

# %% [markdown]
# ## Data
#
# `jaxgrad.data.binarized_mnist` reads binarized MNIST from `$JAXGRAD_DATA` (the
# `.npz`, or its folder), by default `../shared/data/binarized_mnist.npz`
# beside the repository. If the file is missing it warns loudly and falls back
# (`synthetic_fallback=True`) to synthetic binary images, noisy copies of ten
# random prototypes; none of the numbers below are then MNIST numbers. We
# train on a random subset of the training split and report the held-out
# negative ELBO on images of the validation split.
#
# `JAXGRAD_NOTEBOOK_QUICK=1` (set by the test suite) runs the same notebook at a
# reduced size: fewer images, steps and keys.

# %%
QUICK = os.environ.get("JAXGRAD_NOTEBOOK_QUICK", "") not in ("", "0")
LATENT, HIDDEN, BATCH, SCALE_FLOOR = 16, 200, 100, 1e-4
# (training images, steps, evaluations during training, images per evaluation, images and
# keys for the variance study)
QUICK_SIZES, FULL_SIZES = (500, 60, 2, 200, 25, 64), (5000, 3000, 10, 1000, 100, 1000)
NUM_TRAIN, STEPS, NUM_EVALS, NUM_EVAL, VAR_BATCH, VAR_KEYS = QUICK_SIZES if QUICK else FULL_SIZES

train = jaxgrad.data.binarized_mnist("train", synthetic_fallback=True, num_synthetic=NUM_TRAIN)
valid = jaxgrad.data.binarized_mnist("valid", synthetic_fallback=True, num_synthetic=NUM_EVAL)
if train.source == "mnist":
    subset = np.random.default_rng(0).permutation(len(train.images))[:NUM_TRAIN]
    x_train = train.images[subset]
    print(f"binarized MNIST from {train.path}: using {NUM_TRAIN} of {len(train.images)} images")
else:  # jaxgrad.data has warned on stderr; say it on stdout too
    x_train = train.images
    print(f"SYNTHETIC DATA: {train.path} not found; using {NUM_TRAIN} synthetic binary images")
x_train = jnp.asarray(x_train)
x_valid = jnp.asarray(valid.images[:NUM_EVAL])
print("train", x_train.shape, x_train.dtype, "valid", x_valid.shape)
print("pixel means: train", float(x_train.mean()), "valid", float(x_valid.mean()))

# %% [markdown]
# ## The model
#
# Encoder: one hidden layer, `h = tanh(x W_1 + b_1)`, then
# `mu = h W_mu + b_mu` and `sigma = softplus(h W_s + b_s) + 1e-4` (the floor
# keeps `log sigma` finite). Prior `p(z) = N(0, I)` in 16 dimensions.
# Decoder: `p(x | z) = prod_d Bernoulli(x_d; sigmoid(l_d))` with logits
# `l = tanh(z V_1 + c_1) V_2 + c_2`. The ELBO of one image is
#
# $$
# \mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}\big[\log p(x \mid z)\big]
#   - \mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big) \;\le\; \log p(x),
# $$
#
# and the reparameterization writes the sample as a differentiable function of
# the encoder's output and of noise that does not depend on it,
#
# $$
# z = \mu + \sigma \odot \varepsilon, \quad \varepsilon \sim \mathcal N(0, I), \qquad
# \nabla_\phi \, \mathbb{E}_{q_\phi}[g(z)]
#   = \mathbb{E}_{\varepsilon}\Big[\big(\tfrac{\partial z}{\partial \phi}\big)^{\!\top}
#     \nabla_z g(z)\Big].
# $$
#
# For a diagonal Gaussian against the standard normal the KL has a closed form
# (Kingma & Welling 2014, appendix B), per latent dimension
#
# $$
# \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1)\big)
#   = \tfrac12\big(\mu^2 + \sigma^2 - 1 - 2 \log \sigma\big).
# $$


# %%
def dense(rng, n_in, n_out, gain=1.0):
    w = rng.standard_normal((n_in, n_out), np.float32) * np.float32(gain / np.sqrt(n_in))
    return {"w": jnp.asarray(w), "b": jnp.zeros(n_out, jnp.float32)}


def init(seed):
    """Initial weights, drawn with NumPy (each jax.random draw of a new shape is a compile)."""
    rng = np.random.default_rng(seed)
    enc = {
        "hidden": dense(rng, 784, HIDDEN),
        "loc": dense(rng, HIDDEN, LATENT),
        "scale": dense(rng, HIDDEN, LATENT),
    }
    dec = {"hidden": dense(rng, LATENT, HIDDEN), "out": dense(rng, HIDDEN, 784, gain=0.1)}
    p = np.clip(np.asarray(x_train).mean(0), 1e-3, 1 - 1e-3)
    dec["out"]["b"] = jnp.asarray(np.log(p) - np.log1p(-p))  # start at the pixel marginals
    return enc, dec


def apply(layer, x):
    return x @ layer["w"] + layer["b"]


def encode(enc, x):
    """(mu, sigma) of q(z | x), for one image [784] or a batch [B, 784]."""
    h = jnp.tanh(apply(enc["hidden"], x))
    return apply(enc["loc"], h), jax.nn.softplus(apply(enc["scale"], h)) + SCALE_FLOOR


def decode(dec, z):
    """Bernoulli logits of p(x | z)."""
    return apply(dec["out"], jnp.tanh(apply(dec["hidden"], z)))


def log_likelihood(z, dec, x):
    """log p(x | z) for one latent sample z [16] and one image x [784]."""
    logits = decode(dec, z)
    return jnp.sum(x * logits - jax.nn.softplus(logits))


# %% [markdown]
# ## The ELBO with `jaxgrad.pathwise`, two ways
#
# `f` is the sampled part of the negative ELBO for ONE sample `z` of ONE image.
# The estimator `est = jaxgrad.pathwise(f, dist=normal)` is
# `est(key, (mu, sigma), *args)`: it draws `z = mu + sigma * eps` and returns
# `f(z, *args)`, and `jax.grad` through it is the reparameterization gradient.
#
# * analytic KL: `-ELBO = E_q[-log p(x | z)] + KL(q || p)` in closed form;
# * Monte Carlo KL: `-ELBO = E_q[-log p(x | z) + log q(z | x) - log p(z)]`, all
#   on the same `z`. Here `(mu, sigma)` also enter `log q` directly, not only
#   through `z`, so they are passed to `f` a second time and the gradient is
#   the total derivative.
#
# Both variants are one function with a 0/1 weight `mc_kl` (an array, so it is
# traced, not a Python branch): the two trainings share one compiled training
# step and the two variance studies one compiled study program. Multiplying a
# term by an exact 0 removes it and its gradient exactly.


# %%
def f(z, dec, x, loc, scale, mc_kl):
    """-log p(x | z), plus the Monte Carlo KL log q(z | x) - log p(z) when mc_kl is 1."""
    mc = normal.log_prob((loc, scale), z) - normal.log_prob((0.0, 1.0), z)
    return -log_likelihood(z, dec, x) + mc_kl * mc


est = jaxgrad.pathwise(f, dist=normal, num_samples=1)


def negative_elbo_estimate(key, enc, dec, x, mc_kl):
    """A one-sample estimate of -ELBO for one image; its jax.grad is the pathwise gradient."""
    loc, scale = encode(enc, x)
    analytic = jaxgrad.dists.kl(normal, (loc, scale), normal, (0.0, 1.0))
    return est(key, (loc, scale), dec, x, loc, scale, mc_kl) + (1 - mc_kl) * analytic


def batch_loss(key, enc, dec, xb, mc_kl):
    """The mean over a mini-batch, one independent key per image."""
    keys = jax.random.split(key, xb.shape[0])
    per_image = jax.vmap(negative_elbo_estimate, in_axes=(0, None, None, 0, None))
    return jnp.mean(per_image(keys, enc, dec, xb, mc_kl))


KL_VARIANTS = {"analytic KL": jnp.float32(0.0), "Monte Carlo KL": jnp.float32(1.0)}

# %% [markdown]
# ## Training and evaluation
#
# One jitted Adam step (estimator, gradient and update). The reported negative
# ELBO is an ordinary Monte Carlo average with 10 samples of `z` per image and
# the analytic KL, the same for both models, on `NUM_EVAL` training images and
# as many held-out validation images.

# %%
optimizer = optax.adam(1e-3)


@jax.jit
def step(params, opt_state, key, xb, mc_kl):
    def loss(params):
        enc, dec = params
        return batch_loss(key, enc, dec, xb, mc_kl)

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


@jax.jit
def negative_elbo(params, key, x, num_samples=10):
    """Mean over images of -ELBO: 10-sample reconstruction term plus the analytic KL."""
    enc, dec = params
    loc, scale = encode(enc, x)
    z = loc + scale * jax.random.normal(key, (num_samples, *loc.shape), loc.dtype)
    rec = jax.vmap(jax.vmap(log_likelihood, in_axes=(0, None, 0)), in_axes=(0, None, None))
    kls = jax.vmap(lambda m, s: jaxgrad.dists.kl(normal, (m, s), normal, (0.0, 1.0)))(loc, scale)
    return jnp.mean(kls - rec(z, dec, x).mean(0))


init_params = init(0)
batch_order = np.random.default_rng(1).integers(0, NUM_TRAIN // BATCH, STEPS)
train_key, eval_key = jax.random.split(jax.random.key(1))
step_keys = jax.random.split(train_key, STEPS)
eval_keys = jax.random.split(eval_key, 2)
EVAL_AT = [round(i * STEPS / NUM_EVALS) for i in range(NUM_EVALS + 1)]
x_train_eval = x_train[:NUM_EVAL]

trained, curves = {}, {}
for name, mc_kl in KL_VARIANTS.items():
    params, opt_state = init_params, optimizer.init(init_params)
    values, evals = [], []
    t0 = time.perf_counter()
    for i in range(STEPS + 1):
        if i in EVAL_AT:  # the same evaluation keys at every checkpoint and for both models
            evals.append(
                [
                    float(negative_elbo(params, k, xs))
                    for k, xs in zip(eval_keys, (x_train_eval, x_valid), strict=True)
                ]
            )
        if i == STEPS:
            break
        xb = x_train[batch_order[i] * BATCH : (batch_order[i] + 1) * BATCH]
        params, opt_state, value = step(params, opt_state, step_keys[i], xb, mc_kl)
        values.append(value)
    trained[name] = params
    curves[name] = (np.asarray(jax.device_get(values)), np.asarray(evals))
    train_nelbo, valid_nelbo = evals[-1]
    print(
        f"{name:15} {time.perf_counter() - t0:5.1f} s; -ELBO after {STEPS} steps: "
        f"train {train_nelbo:.2f}, held-out {valid_nelbo:.2f}"
    )

# %% [markdown]
# ## Training curves
#
# Left: the mini-batch estimate of the negative ELBO that each run optimizes
# (smoothed over `STEPS / 40` steps), right: the evaluated negative ELBO on
# training and held-out images. What to see: the two runs lie on top of each
# other. Both gradients are unbiased, so in expectation they take the same
# steps, and once the encoder is trained their variances differ by under 10%
# (next section), less than the mini-batch noise of the data itself. The final
# numbers differ by well under a nat, in either direction from run to run (in
# our full run the Monte Carlo KL came out slightly lower); one run cannot rank
# them. The held-out negative ELBO sits several nats above the training one:
# a model of this size overfits a few thousand images.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
width = max(1, STEPS // 40)
for (name, (values, evals)), color in zip(curves.items(), ("C0", "C1"), strict=True):
    smooth = np.convolve(values, np.ones(width) / width, mode="valid")
    ax1.plot(np.arange(len(smooth)) + width - 1, smooth, color=color, label=name)
    ax2.plot(EVAL_AT, evals[:, 0], color=color, label=f"{name}, train")
    ax2.plot(EVAL_AT, evals[:, 1], color=color, ls="--", label=f"{name}, held-out")
ax1.set(xlabel="step", ylabel="mini-batch -ELBO (nats)", title="training objective")
ax2.set(xlabel="step", ylabel="-ELBO (nats)", title="evaluated -ELBO")
for ax in (ax1, ax2):
    ax.set_ylim(top=float(np.percentile(curves["analytic KL"][0], 99)))
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig("gaussian_vae_curves.png", dpi=100)
plt.show()  # inline in the docs site; a no-op under the suite's Agg backend
print("saved gaussian_vae_curves.png")

# %% [markdown]
# ## Gradient variance: analytic versus Monte Carlo KL
#
# At two fixed parameters, the initial one and the model trained with the
# analytic KL, we draw `VAR_KEYS` independent estimates of the mini-batch
# gradient with respect to the encoder parameters (a batch of `VAR_BATCH` = 100
# training images, 25 in the quick run, one `eps` per image) with
# `jaxgrad.diagnostics.grad_stats`, and sum the per-coordinate variances over
# each layer. The same keys, hence the same `eps`, serve both variants (common
# random numbers).
#
# Why the analytic KL lowers the variance: it replaces a sampled term by its
# expectation. With `q = N(mu, sigma^2)` and `p = N(0, 1)`, on
# `z = mu + sigma eps`, up to a constant
# `log q(z) - log p(z) = -eps^2/2 - log sigma + (mu + sigma eps)^2 / 2`, so per
# latent dimension the Monte Carlo KL's pathwise gradient is
#
# $$
# \frac{\partial}{\partial \mu} = \mu + \sigma \varepsilon, \qquad
# \frac{\partial}{\partial \sigma} = -\frac1\sigma + (\mu + \sigma\varepsilon)\,\varepsilon ,
# $$
#
# whose expectations, `mu` and `sigma - 1/sigma`, are the gradient of the
# analytic KL: the Monte Carlo form adds zero-mean noise, of variance `sigma^2`
# for `mu` and `mu^2 + 2 sigma^2` for `sigma`. The variance of the whole
# gradient is `Var(rec) + Var(KL noise) + 2 Cov(rec, KL noise)`: the gain is
# largest where the posterior is wide (large `sigma`, as at initialization
# and in latent dimensions the decoder ignores), and the reconstruction
# term's own noise, and its covariance with the KL noise, decide how much of
# it is visible in the total. (Roeder et al. 2017 show that the Monte Carlo
# form minus its score term, `log q` differentiated only through `z`, has
# vanishing variance where `q` is the exact posterior; that is a third
# estimator, not studied here.)
#
# What to see: every layer's variance is larger with the Monte Carlo KL. At
# initialization the decoder barely depends on `z` (its output weights start
# small), so the reconstruction term's gradient is tiny and the KL noise is
# nearly all of the variance: the Monte Carlo KL's is larger by a factor of
# about 90. After training, the reconstruction noise dominates and the factor is
# about 1.1 (1.3 after the quick run's 60 steps). The squared norm of the mean
# gradient is the same for both, as it must be for two unbiased estimators of
# one gradient: a check on the code, equal up to Monte Carlo error.

# %%
x_var = x_train[:VAR_BATCH]
POINTS = {"initial": init_params, "trained": trained["analytic KL"]}
LAYERS = {"hidden": "hidden layer (W_1, b_1)", "loc": "mu head", "scale": "sigma head"}
table = {}
for point, (enc, dec) in POINTS.items():
    for name, mc_kl in KL_VARIANTS.items():
        s = jaxgrad.diagnostics.grad_stats(
            batch_loss, jax.random.key(2), enc, dec, x_var, mc_kl, num_keys=VAR_KEYS
        )
        row = {k: float(sum(np.sum(v) for v in jax.tree.leaves(s.variance[k]))) for k in LAYERS}
        row["total"], row["mean"] = s.total_variance, float(np.sum(s.flat("mean") ** 2))
        table[point, name] = row
    sigma = float(jax.jit(encode)(enc, x_var)[1].mean())  # jit: one program, not one per op
    print(f"{point} parameters: mean posterior scale sigma {sigma:.3f}")

print(f"\nsummed variance of the encoder gradient, batch of {VAR_BATCH} images, {VAR_KEYS} keys")
header = "".join(f"{f'{p}: analytic':>18} {'MC':>9} {'MC/an.':>7}" for p in POINTS)
print(f"{'':24}{header}")
for key, label in [*LAYERS.items(), ("total", "total"), ("mean", "|mean gradient|^2")]:
    cells = []
    for point in POINTS:
        a, m = table[point, "analytic KL"][key], table[point, "Monte Carlo KL"][key]
        cells.append(f"{a:18.4g} {m:9.4g} {m / a:7.2f}")
    print(f"{label:24}{''.join(cells)}")

# %% [markdown]
# ## Reconstructions and samples
#
# Top row: held-out images. Then the reconstructed means `sigmoid(l)` at
# `z = mu(x)` of each model, and the decoded means of samples `z ~ N(0, I)`
# from the prior (the same `z` for both models). Reconstructions should keep
# each digit's identity and shape, blurred; prior samples look like plausible,
# blurry digits, with some ambiguous strokes, as expected of a 16-dimensional
# Gaussian code after a short run on a few thousand images.

# %%
NUM_SHOW = 10


@jax.jit
def pictures(models, key, x):
    """Per model: the reconstructed means at z = mu(x), and the decoded means of prior samples."""
    z_prior = jax.random.normal(key, (x.shape[0], LATENT), jnp.float32)  # shared by the models
    recons, priors = [], []
    for enc, dec in models:
        recons.append(jax.nn.sigmoid(decode(dec, encode(enc, x)[0])))
        priors.append(jax.nn.sigmoid(decode(dec, z_prior)))
    return recons, priors


recons, priors = pictures(tuple(trained.values()), jax.random.key(4), x_valid[:NUM_SHOW])
rows_img = [("held-out images", np.asarray(x_valid[:NUM_SHOW]))]
rows_img += [(f"reconstructions, {n}", np.asarray(r)) for n, r in zip(trained, recons, strict=True)]
rows_img += [(f"prior samples, {n}", np.asarray(p)) for n, p in zip(trained, priors, strict=True)]
fig, axes = plt.subplots(len(rows_img), NUM_SHOW, figsize=(NUM_SHOW, 1.15 * len(rows_img)))
for r, (label, images) in enumerate(rows_img):
    for c in range(NUM_SHOW):
        ax = axes[r, c]
        ax.imshow(images[c].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[r, 0].set_title(label, fontsize=9, loc="left")
fig.tight_layout()
fig.savefig("gaussian_vae_samples.png", dpi=80)
plt.show()
print("saved gaussian_vae_samples.png")

# %% [markdown]
# ## References
#
# * Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014 (eq. 7: the
#   estimator with the Monte Carlo KL, eq. 10: with the analytic KL;
#   appendix B: the Gaussian KL). https://arxiv.org/abs/1312.6114
# * Rezende, Mohamed & Wierstra, *Stochastic Backpropagation and Approximate
#   Inference in Deep Generative Models*, ICML 2014. https://arxiv.org/abs/1401.4082
# * Roeder, Wu & Duvenaud, *Sticking the Landing: Simple, Lower-Variance Gradient
#   Estimators for Variational Inference*, NeurIPS 2017 (when the sampled form
#   can have the lower variance). https://arxiv.org/abs/1703.09194
# * Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*, JMLR
#   2020, sec. 5. https://jmlr.org/papers/v21/19-346.html

# %%
print(f"\ntotal run time {time.perf_counter() - start:.1f} s")
