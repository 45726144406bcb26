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
# # A tour of jaxgrad's samplers and their gradients
#
# Every sampler takes an explicit key first and returns a sample whose derivative,
# under `jax.grad`, is a named gradient estimator. This notebook draws from each one
# and looks at the gradient it carries. Run it as a script (`python
# notebooks/samplers_tour.py`) or open it with jupytext.

# %%
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxgrad

np.set_printoptions(precision=4, suppress=True)
key = jax.random.key(0)
keys = iter(jax.random.split(key, 64))  # one fresh key per draw below

# %% [markdown]
# ## Gumbel noise and the Gumbel-max trick
#
# `jaxgrad.gumbel` is standard Gumbel noise that is always finite (the uniform is
# drawn on the open interval). `argmax(logits + G)` is an exact sample of
# `softmax(logits)`; a `-inf` logit masks its category.

# %%
g = jaxgrad.gumbel(next(keys), (100_000,))
print("Gumbel mean", float(g.mean()), "(Euler's gamma = 0.5772)")

logits = jnp.array([1.0, 0.0, -jnp.inf, -1.0])
idx = jaxgrad.categorical(next(keys), logits, shape=(100_000,))
print("frequencies", np.bincount(np.asarray(idx), minlength=4) / 100_000)
print("softmax    ", np.asarray(jax.nn.softmax(logits)))

# %% [markdown]
# ## The pathwise normal
#
# `x = loc + scale * eps`: the derivative with respect to `loc` is 1 and with
# respect to `scale` is the noise `eps` itself.

# %%
k = next(keys)
x, d_scale = jax.value_and_grad(lambda s: jaxgrad.normal(jax.random.clone(k), 1.0, s))(2.0)
print("x =", float(x), " dx/dscale =", float(d_scale), " eps =", float((x - 1.0) / 2.0))

# %% [markdown]
# ## Gumbel-softmax (Concrete)
#
# `softmax((logits + G) / tau)`, computed in log space. Lower temperatures give
# nearly one-hot samples with larger, noisier gradients; `hard=True` gives the exact
# one-hot of the same noise with the relaxed gradient (straight-through
# Gumbel-softmax).

# %%
logits = jnp.array([1.0, 0.0, -1.0])
w = jnp.array([1.0, 2.0, 3.0])  # a linear cost f(y) = <w, y>
for tau in (10.0, 1.0, 0.1):
    k = next(keys)
    sample = lambda l, k=k, tau=tau: jaxgrad.gumbel_softmax(k, l, temperature=tau)
    y, vjp = jax.vjp(sample, logits)  # the sample and the gradient of <w, y>, one draw
    print(f"tau={tau:5}: y={np.asarray(y)}  grad={np.asarray(vjp(w)[0])}")

k = next(keys)
hard = jaxgrad.gumbel_softmax(jax.random.clone(k), logits, temperature=0.5, hard=True)
print("hard sample", np.asarray(hard), "exactly one-hot:", bool(jnp.all(hard * (1 - hard) == 0)))

# %% [markdown]
# Annealing: the temperature may be traced, so an optax schedule inside a jitted
# step does not recompile.

# %%
schedule = optax.exponential_decay(1.0, transition_steps=100, decay_rate=0.5, end_value=0.1)


@jax.jit
def step(key, logits, count):
    cost = lambda l: w @ jaxgrad.gumbel_softmax(key, l, temperature=schedule(count))
    return jax.grad(cost)(logits)


for count in (0, 100, 400):
    grad = np.asarray(step(next(keys), logits, count))
    print(f"step {count}: temperature {float(schedule(count)):.3f}, gradient {grad}")

# %% [markdown]
# ## Binary Concrete and straight-through
#
# `relaxed_bernoulli` is `sigmoid((logits + L) / tau)` with logistic noise `L`.
# The straight-through samplers forward the hard sample and backward the gradient of
# its mean (`softmax`, `sigmoid`).

# %%
print(
    "relaxed Bernoulli",
    np.asarray(jaxgrad.relaxed_bernoulli(next(keys), jnp.zeros(4), temperature=0.3)),
)
k = next(keys)
b = jaxgrad.straight_through_bernoulli(jax.random.clone(k), jnp.zeros(4))
gb = jax.grad(lambda l: jaxgrad.straight_through_bernoulli(jax.random.clone(k), l).sum())(
    jnp.zeros(4)
)
print("ST Bernoulli sample", np.asarray(b), "gradient", np.asarray(gb), "(= sigmoid'(0))")
k = next(keys)
d = jaxgrad.straight_through_categorical(jax.random.clone(k), logits)
gd = jax.grad(lambda l: w @ jaxgrad.straight_through_categorical(jax.random.clone(k), l))(logits)
print("ST categorical sample", np.asarray(d), "gradient", np.asarray(gd))
print("gradient of the mean ", np.asarray(jax.grad(lambda l: w @ jax.nn.softmax(l))(logits)))

# %% [markdown]
# ## Bias and variance on a toy problem
#
# For `f(D) = sum((D - t)^2)` over one-hot `D ~ softmax(logits)`, the exact gradient
# is a sum over the three outcomes. We compare straight-through, straight-through
# Gumbel-softmax, Gumbel-Rao (its Rao-Blackwellization over the noise) and ReinMax,
# each averaged over 4000 keys.

# %%
t = jnp.array([0.2, 0.9, 0.1])
f = lambda x: jnp.sum((x - t) ** 2)
exact = jax.grad(lambda l: jax.nn.softmax(l) @ jax.vmap(f)(jnp.eye(3)))(logits)

estimators = {
    "straight-through": lambda k, l: jaxgrad.straight_through_categorical(k, l),
    "ST Gumbel-softmax": lambda k, l: jaxgrad.gumbel_softmax(k, l, temperature=0.5, hard=True),
    "Gumbel-Rao (K=10)": lambda k, l: jaxgrad.gumbel_rao(k, l, temperature=0.5, num_samples=10),
    "ReinMax": lambda k, l: jaxgrad.reinmax(k, l, temperature=1.0),
}
print(f"{'estimator':20} {'mean gradient':32} {'bias norm':>9} {'variance':>9}")
print(f"{'exact':20} {np.array2string(np.asarray(exact)):32}")
for name, sample in estimators.items():
    grads = jax.jit(jax.vmap(lambda k, s=sample: jax.grad(lambda l: f(s(k, l)))(logits)))(
        jax.random.split(next(keys), 4000)
    )
    mean = np.asarray(grads.mean(0))
    bias = float(np.linalg.norm(mean - np.asarray(exact)))
    print(f"{name:20} {np.array2string(mean):32} {bias:9.4f} {float(grads.var(0).sum()):9.4f}")

# %% [markdown]
# ## Deterministic straight-through estimators
#
# `straight_through(value, surrogate)` is the generic rule (the value is exact);
# `round_ste` has identity gradient and `sign_ste` the gradient of `hard_tanh`.

# %%
xs = jnp.array([-1.5, -0.4, 0.0, 0.6, 2.2])
for ste in (jaxgrad.round_ste, jaxgrad.sign_ste):
    grad = jax.vmap(jax.grad(ste))(xs)
    print(f"{ste.__name__:9}", np.asarray(ste(xs)), "gradient", np.asarray(grad))

# %% [markdown]
# JAX's own derivatives at kinks differ from primitive to primitive (documented in
# `jaxgrad/_src/relaxations.py`):

# %%
for name, fn in {
    "jax.nn.relu": jax.nn.relu,
    "jnp.maximum(x, 0)": lambda x: jnp.maximum(x, 0.0),
    "jnp.abs": jnp.abs,
}.items():
    print(f"d/dx {name} at 0 = {float(jax.grad(fn)(0.0))}")
