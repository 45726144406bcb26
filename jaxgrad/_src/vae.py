r"""Discrete-latent VAEs on binarized MNIST: the models that ``jaxgrad train`` trains.

Two models, written from the papers' descriptions:

* **Bernoulli VAE** (DisARM, Dong, Mnih & Tucker 2020; RODEO, Shi et al. 2022):
  ``D = 200`` coins ``b``, learned prior logits ``lambda``,
  ``p(b) = prod_d Bernoulli(b_d; sigma(lambda_d))``, decoder
  ``p(x | b) = prod_j Bernoulli(x_j; sigma(dec(b)_j))`` and encoder
  ``q(b | x) = prod_d Bernoulli(b_d; sigma(enc(x)_d))``. *Linear*: ``enc`` and
  ``dec`` are affine (784-200, 200-784). *Nonlinear*: two hidden layers of 200
  with LeakyReLU(0.3) each way (784-200-200-200, 200-200-200-784).
* **Categorical VAE** (Jang, Gu & Poole 2017; ReinMax, Liu et al. 2023):
  ``L`` latents of ``C`` classes, uniform prior, encoder 784-512-256-``LC``
  and decoder ``LC``-256-512-784 with ReLU.

The negative ELBO of one image splits into a sampled term and an analytic one,

.. math::
    -\mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}[f(z)] + A(q), \qquad
    f(z) = -\log p(x | z) - \log p(z), \qquad A(q) = -H[q(\cdot | x)] ,

so a gradient estimator only has to handle ``E_q[f]``, and the entropy's
gradient is exact and the same for every estimator (for the categorical model
``f = -log p(x | z)`` and ``A = KL(q || uniform)``). The 100-sample importance
weighted bound (Burda et al. 2016) is the test metric:
``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PIXELS = 784


@dataclasses.dataclass(frozen=True)
class Model:
    """A discrete-latent VAE architecture.

    Attributes:
      name: ``"linear"``, ``"nonlinear"`` (Bernoulli) or ``"CxL"`` (categorical).
      variable: ``"bernoulli"`` or ``"categorical"`` (the registry's variable type).
      latent_shape: ``(D,)`` coins, or ``(L, C)`` categoricals.
      hidden: hidden layer widths of the encoder (the decoder mirrors them).
      activation: ``"leaky_relu"`` (slope 0.3) or ``"relu"``.
    """

    name: str
    variable: str
    latent_shape: tuple[int, ...]
    hidden: tuple[int, ...]
    activation: str

    @property
    def latent_size(self) -> int:
        return math.prod(self.latent_shape)

    def describe(self) -> str:
        widths = "-".join(str(w) for w in (PIXELS, *self.hidden, self.latent_size))
        if self.variable == "bernoulli":
            return f"{self.name} Bernoulli VAE {widths}, learned prior"
        c = self.latent_shape[1]
        return (
            f"categorical VAE, {self.latent_shape[0]} latents of {c} classes, {widths}, "
            "uniform prior"
        )


def binary(kind: str = "linear", latent: int = 200) -> Model:
    """The Bernoulli VAE of the DisARM paper: ``"linear"`` or ``"nonlinear"``."""
    if kind not in ("linear", "nonlinear"):
        raise ValueError(f"binary: kind must be 'linear' or 'nonlinear', got {kind!r}.")
    hidden = () if kind == "linear" else (latent, latent)
    return Model(kind, "bernoulli", (latent,), hidden, "leaky_relu")


def categorical(classes: int = 10, latents: int = 30) -> Model:
    """The categorical VAE of Jang et al.: ``latents`` variables of ``classes`` classes."""
    if classes < 2 or latents < 1:
        raise ValueError(
            f"categorical: needs classes >= 2 and latents >= 1, got {classes} x {latents}."
        )
    return Model(f"{classes}x{latents}", "categorical", (latents, classes), (512, 256), "relu")


def _dense_init(key: Any, sizes: tuple[int, ...], out_bias: Array | None) -> list:
    """Glorot-uniform weights and zero biases (the last bias ``out_bias`` if given)."""
    layers = []
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        limit = math.sqrt(6.0 / (n_in + n_out))
        w = jax.random.uniform(k, (n_in, n_out), jnp.float32, -limit, limit)
        last = i == len(sizes) - 2
        b = out_bias if last and out_bias is not None else jnp.zeros((n_out,), jnp.float32)
        layers.append((w, b))
    return layers


def init(model: Model, key: Any, pixel_mean: Array) -> dict[str, Any]:
    """Parameters: ``{"encoder", "decoder"[, "prior"]}``.

    The decoder's output bias starts at the logit of the training pixel means
    (clipped to ``[1e-3, 1 - 1e-3]``), as in the papers' code; the Bernoulli
    prior logits start at 0.
    """
    k_enc, k_dec = jax.random.split(key)
    mean = jnp.clip(jnp.asarray(pixel_mean, jnp.float32), 1e-3, 1 - 1e-3)
    sizes = (PIXELS, *model.hidden, model.latent_size)
    params = {
        "encoder": _dense_init(k_enc, sizes, None),
        "decoder": _dense_init(k_dec, sizes[::-1], jnp.log(mean) - jnp.log1p(-mean)),
    }
    if model.variable == "bernoulli":
        params["prior"] = jnp.zeros(model.latent_shape, jnp.float32)
    return params


def _mlp(layers: list, h: Array, activation: str) -> Array:
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = jax.nn.leaky_relu(h, 0.3) if activation == "leaky_relu" else jax.nn.relu(h)
    return h


def encode(model: Model, encoder: list, x: Array) -> Array:
    """The logits of ``q(z | x)`` for one image ``x`` (784 pixels): shape ``latent_shape``."""
    return _mlp(encoder, x, model.activation).reshape(model.latent_shape)


def log_likelihood(model: Model, decoder: list, z: Array, x: Array) -> Array:
    """``log p(x | z)``: Bernoulli pixels with logits ``dec(z)`` (``z`` may be relaxed)."""
    logits = _mlp(decoder, z.reshape(-1), model.activation)
    return jnp.sum(x * logits - jax.nn.softplus(logits))


def cost(model: Model):
    """The sampled term ``f(z, x, decoder[, prior])`` of the negative ELBO of one image."""
    if model.variable == "bernoulli":

        def f(b: Array, x: Array, decoder: list, prior: Array) -> Array:
            log_prior = jnp.sum(b * prior - jax.nn.softplus(prior))
            return -(log_likelihood(model, decoder, b, x) + log_prior)

        return f

    def f_cat(z: Array, x: Array, decoder: list) -> Array:
        return -log_likelihood(model, decoder, z, x)

    return f_cat


def analytic_term(model: Model, logits: Array) -> Array:
    """``A(q)``: minus the entropy of the coins, or ``KL(q || uniform)`` of the categoricals."""
    if model.variable == "bernoulli":
        # -H = sum p l - softplus(l), written with sigmoid and softplus (finite for any l).
        return jnp.sum(jax.nn.sigmoid(logits) * logits - jax.nn.softplus(logits))
    log_q = jax.nn.log_softmax(logits, axis=-1)
    classes = logits.shape[-1]
    return jnp.sum(jnp.exp(log_q) * log_q) + logits.shape[0] * math.log(classes)


def cost_args(model: Model, params: dict[str, Any], x: Array) -> tuple:
    """The arguments after ``z`` of :func:`cost` for image ``x``."""
    if model.variable == "bernoulli":
        return (x, params["decoder"], params["prior"])
    return (x, params["decoder"])


def sample(model: Model, key: Any, logits: Array, num: int) -> Array:
    """``num`` exact samples of ``q``: coins, or one-hot categoricals; ``[num, *latent_shape]``."""
    if model.variable == "bernoulli":
        u = jax.random.uniform(key, (num, *logits.shape), logits.dtype)
        return (u < jax.nn.sigmoid(logits)).astype(jnp.float32)
    idx = jax.random.categorical(key, logits, axis=-1, shape=(num, *logits.shape[:-1]))
    return jax.nn.one_hot(idx, logits.shape[-1], dtype=jnp.float32)


def log_q(model: Model, logits: Array, z: Array) -> Array:
    """``log q(z | x)`` of an exact sample ``z``."""
    if model.variable == "bernoulli":
        return jnp.sum(z * logits - jax.nn.softplus(logits))
    return jnp.sum(z * jax.nn.log_softmax(logits, axis=-1))


def log_prior_uniform(model: Model) -> float:
    """``log p(z)`` of the categorical model's uniform prior (a constant)."""
    return -model.latent_shape[0] * math.log(model.latent_shape[1])


def iwae_bound(model: Model, params: dict[str, Any], key: Any, x: Array, num: int) -> Array:
    r"""``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` for one image, ``K = num`` samples of ``q``."""
    logits = encode(model, params["encoder"], x)
    z = sample(model, key, logits, num)
    f = cost(model)
    args = cost_args(model, params, x)
    log_joint = -jax.vmap(lambda zk: f(zk, *args))(z)
    if model.variable == "categorical":
        log_joint = log_joint + log_prior_uniform(model)
    log_w = log_joint - jax.vmap(lambda zk: log_q(model, logits, zk))(z)
    return jax.nn.logsumexp(log_w) - math.log(num)


def elbo_samples(model: Model, params: dict[str, Any], key: Any, x: Array) -> Array:
    """One-sample estimates of the ELBO of a batch ``x`` ``[B, 784]``: ``-(f(z_i) + A(q_i))``.

    Each ``z_i ~ q(z | x_i)`` is exact, and the noise of the whole batch is one
    draw from ``key`` (not a key per image: the same law, a smaller program).
    """
    logits = jax.vmap(lambda xx: encode(model, params["encoder"], xx))(x)
    z = sample(model, key, logits, 1)[0]
    f = cost(model)
    values = jax.vmap(lambda zz, xx: f(zz, *cost_args(model, params, xx)))(z, x)
    return -(values + jax.vmap(lambda l: analytic_term(model, l))(logits))
