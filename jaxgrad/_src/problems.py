"""Study problems for ``jaxgrad study``: a variable type, parameters, a cost, an exact answer.

Each problem is the expectation :math:`E_{x \\sim p_\\theta}[f(x)]` of a cost
``f`` under one of the distribution specs, at fixed parameters ``theta``; a
variance study draws many gradient estimates with respect to ``theta`` from
every registered estimator that handles the problem's variable type and
compares them with the exact gradient where one is known.

* ``bernoulli-toy``: ``f(b) = sum_d (b_d - t)^2`` for one coin or several
  (Tucker et al. 2017); the exact gradient w.r.t. the logits is
  ``p_d (1 - p_d) (1 - 2 t)``.
* ``categorical-toy``: ``D`` independent categoricals with ``K`` classes,
  ``f(x) = (mean_d <x_d, v> - t)^2`` with ``v = (0, 1/(K-1), ..., 1)``; for
  ``D = 1, K = 2`` it is the Bernoulli toy. Exact by enumeration.
* ``gaussian``: the test functions of Mohamed et al. (2020, sec. 3),
  ``(x - k)^2``, ``exp(-k x^2)``, ``cos(k x)``, under ``N(mu, sigma^2)``;
  exact closed forms.
* ``binary-vae``: a linear Bernoulli VAE on binarized MNIST; the gradient of
  the ELBO's sampled term ``E_q[log p(x, b)]`` w.r.t. the encoder logits of a
  few images (the entropy term has an analytic gradient, the same for every
  estimator). No exact gradient.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import dists, oracles


class ProblemError(ValueError):
    """A problem could not be built from the given options (a user error)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """A gradient estimation problem.

    Attributes:
      name: the problem's name.
      description: one line for the table and the plot.
      variable: the registry variable type (``"bernoulli"``, ``"categorical"``,
        ``"normal"``).
      dist: the distribution spec.
      params: the parameters the gradient is taken with respect to.
      f: the cost for one sample ``f(x) -> scalar``.
      event_shape: the shape the registry's cost is computed for.
      exact: the exact gradient (a pytree like ``params``) or ``None``.
      param_names: a name for each leaf of ``params`` (coordinate labels).
      settings: the problem options used, for the record.
    """

    name: str
    description: str
    variable: str
    dist: Any
    params: Any
    f: Callable[..., jax.Array]
    event_shape: tuple[int, ...]
    exact: Any
    param_names: tuple[str, ...]
    settings: dict[str, Any]

    def coordinate_names(self) -> list[str]:
        """A label for each scalar coordinate of the flattened gradient."""
        names = []
        for name, leaf in zip(self.param_names, jax.tree.leaves(self.params), strict=True):
            shape = jnp.shape(leaf)
            for idx in np.ndindex(*shape) if shape else [()]:
                names.append(f"{name}[{','.join(map(str, idx))}]" if shape else name)
        return names


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _sigmoid(logit: float) -> float:
    """``1 / (1 + exp(-l))`` without overflow for any finite ``l``."""
    if logit >= 0:
        return 1 / (1 + math.exp(-logit))
    e = math.exp(logit)
    return e / (1 + e)


#: A coin closer than this to 0 or 1 never flips in float32 sampling (uniforms have 24 bits).
_MIN_P = 2.0**-24


def _coins(p: Any, logit: Any, name: str) -> tuple[list[float], list[float]]:
    """The coins' ``(p, logit)`` lists from ``--p`` or ``--logit`` (a number or a list)."""
    if p is not None and logit is not None:
        raise ProblemError(f"{name}: give --p or --logit, not both.")

    def as_list(x):
        return [float(v) for v in x] if isinstance(x, list | tuple) else [float(x)]

    if logit is not None:
        logits = as_list(logit)
        for v in logits:
            if not math.isfinite(v):
                raise ProblemError(f"{name}: --logit must be finite, got {v}.")
        probs = [_sigmoid(v) for v in logits]
        flag, values = "--logit", logits
    else:
        probs = as_list(0.5 if p is None else p)
        for v in probs:
            if not 0 < v < 1:
                raise ProblemError(f"{name}: --p must lie strictly between 0 and 1, got {v}.")
        logits = [_logit(v) for v in probs]
        flag, values = "--p", probs
    if not probs:
        raise ProblemError(f"{name}: {flag} needs at least one coin.")
    for v, q in zip(values, probs, strict=True):
        if min(q, 1 - q) < _MIN_P:
            raise ProblemError(
                f"{name}: {flag} {v:g} gives p = {q:.3g}, within 2^-24 of {round(q)}: in "
                f"float32 the coin never flips and the study is degenerate; use |logit| <= 16 "
                f"(p between 1e-7 and 1 - 1e-7)."
            )
    return probs, logits


def bernoulli_toy(*, target: float | None = None, p: Any = None, logit: Any = None) -> Problem:
    """The toy ``E[sum_d (b_d - t)^2]``, ``b_d ~ Bernoulli(p_d)`` (Tucker et al. 2017)."""
    t = 0.45 if target is None else float(target)
    if not math.isfinite(t):
        raise ProblemError(f"bernoulli-toy: --target must be finite, got {t}.")
    probs, logits = _coins(p, logit, "bernoulli-toy")
    d = len(probs)
    params = jnp.asarray(logits, jnp.float32)

    def f(b):
        return jnp.sum((b - t) ** 2)

    exact = jnp.asarray([q * (1 - q) * (1 - 2 * t) for q in probs], jnp.float32)
    shown = ", ".join(f"{q:.4g}" for q in probs)
    coins = f"b ~ Bernoulli({shown})" if d == 1 else f"{d} coins, p = ({shown})"
    return Problem(
        name="bernoulli-toy",
        description=f"E[sum (b - {t:g})^2], {coins}; gradient w.r.t. the logit"
        + ("s" if d > 1 else ""),
        variable="bernoulli",
        dist=dists.bernoulli,
        params=params,
        f=f,
        event_shape=(d,),
        exact=exact,
        param_names=("logit",),
        settings={
            "target": t,
            "p": probs[0] if d == 1 else probs,
            "logit": logits[0] if d == 1 else logits,
        },
    )


def categorical_toy(
    *, target: float | None = None, dim: int | None = None, classes: int | None = None
) -> Problem:
    """``E[(mean_d <x_d, v> - t)^2]`` over ``D`` categoricals with ``K`` classes, uniform."""
    t = 0.45 if target is None else float(target)
    if not math.isfinite(t):
        raise ProblemError(f"categorical-toy: --target must be finite, got {t}.")
    d = 3 if dim is None else int(dim)
    k = 4 if classes is None else int(classes)
    if d < 1 or k < 2:
        raise ProblemError(
            f"categorical-toy: needs --dim >= 1 and --classes >= 2, got {d} and {k}."
        )
    if k**d > dists.MAX_SUPPORT_SIZE:
        raise ProblemError(
            f"categorical-toy: {k}^{d} outcomes is too many to enumerate for the exact "
            f"gradient (at most {dists.MAX_SUPPORT_SIZE}); use fewer --dim or --classes."
        )
    params = jnp.zeros((d, k), jnp.float32)
    v = jnp.linspace(0.0, 1.0, k, dtype=jnp.float32)

    def f(x):
        return (jnp.mean(x @ v) - t) ** 2

    exact = oracles.exact_grad(f, params, dist=dists.categorical)
    return Problem(
        name="categorical-toy",
        description=f"E[(mean_d <x_d, v> - {t:g})^2], {d} uniform categoricals of {k} classes",
        variable="categorical",
        dist=dists.categorical,
        params=params,
        f=f,
        event_shape=(d, k),
        exact=exact,
        param_names=("logits",),
        settings={"target": t, "dim": d, "classes": k},
    )


def gaussian(
    *,
    function: str | None = None,
    k: float | None = None,
    loc: float | None = None,
    scale: float | None = None,
) -> Problem:
    """``E_{x ~ N(mu, sigma^2)} f(x)`` for a test function of Mohamed et al. (2020, sec. 3)."""
    function = "square" if function is None else function
    if function not in oracles.GAUSSIAN_TEST_FUNCTIONS:
        raise ProblemError(
            f"gaussian: --function must be one of "
            f"{', '.join(oracles.GAUSSIAN_TEST_FUNCTIONS)}, got {function!r}."
        )
    k = 1.0 if k is None else float(k)
    mu = 0.5 if loc is None else float(loc)
    sigma = 1.0 if scale is None else float(scale)
    for flag, v in (("--k", k), ("--loc", mu), ("--scale", sigma)):
        if not math.isfinite(v):
            raise ProblemError(f"gaussian: {flag} must be finite, got {v}.")
    if not sigma > 0:
        raise ProblemError(f"gaussian: --scale must be positive, got {sigma}.")
    if function == "exp" and not 1 + 2 * k * sigma**2 > 0:
        raise ProblemError(f"gaussian: exp(-k x^2) needs 1 + 2 k sigma^2 > 0, got k={k}.")
    params = (jnp.full((1,), mu, jnp.float32), jnp.full((1,), sigma, jnp.float32))
    exact = oracles.gaussian_exact_grad(function, *params, k=k)
    formula = {"square": f"(x - {k:g})^2", "exp": f"exp(-{k:g} x^2)", "cos": f"cos({k:g} x)"}
    return Problem(
        name="gaussian",
        description=f"E[{formula[function]}], x ~ N({mu:g}, {sigma:g}^2); "
        "gradient w.r.t. (mu, sigma)",
        variable="normal",
        dist=dists.normal,
        params=params,
        f=oracles.gaussian_test_function(function, k),
        event_shape=(1,),
        exact=exact,
        param_names=("loc", "scale"),
        settings={"function": function, "k": k, "loc": mu, "scale": sigma},
    )


#: The standard location of the data set, relative to the repository root.
DEFAULT_DATA = os.path.join("..", "shared", "data", "binarized_mnist.npz")
#: The environment variable that overrides it: an ``.npz`` file, or a folder holding
#: ``binarized_mnist.npz``.
DATA_ENV = "JAXGRAD_DATA"


def default_data_path() -> str:
    """Where the binarized MNIST ``.npz`` is looked for when no path is given.

    ``$JAXGRAD_DATA`` if it is set (a file, or a folder holding
    ``binarized_mnist.npz``); otherwise :data:`DEFAULT_DATA` resolved against
    the repository root (the folder above the ``jaxgrad`` package), so the
    answer does not depend on the working directory. The file may not exist;
    :func:`load_binarized_mnist` says so.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return os.path.join(env, "binarized_mnist.npz") if os.path.isdir(env) else env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.normpath(os.path.join(repo, DEFAULT_DATA))

_DATA_FORMAT = (
    "expected an .npz with uint8 arrays 'train', 'valid', 'test' of shape (N, 98): "
    "784 pixels per row packed with numpy.packbits"
)


def load_binarized_mnist(path: str, split: str = "train") -> np.ndarray:
    """Loads one split of binarized MNIST stored as packed bits; returns float32 ``(N, 784)``.

    Raises:
      ProblemError: if the file is missing or not in the expected format.
    """
    if not os.path.exists(path):
        raise ProblemError(f"binary-vae: data file {path!r} does not exist ({_DATA_FORMAT}).")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(getattr(data, "files", []))
            if not files:
                raise ProblemError(f"binary-vae: {path!r} is not an .npz archive ({_DATA_FORMAT}).")
            if split not in files:
                raise ProblemError(
                    f"binary-vae: {path!r} has no array {split!r} (found "
                    f"{', '.join(files) or 'none'}; {_DATA_FORMAT})."
                )
            packed = data[split]
    except ProblemError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        text = " ".join(str(err).split())
        if "pickle" in text:  # never pass on numpy's advice to load pickles unsafely
            why = "it is not an .npz of plain arrays: it holds pickled Python objects"
        else:
            why = f"the file or its array {split!r} is corrupt or truncated ({type(err).__name__}"
            why += f": {text[:160]})" if text else ")"
        raise ProblemError(
            f"binary-vae: cannot read {path!r} as .npz: {why}; {_DATA_FORMAT}."
        ) from None
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != 98:
        raise ProblemError(
            f"binary-vae: array {split!r} in {path!r} has dtype {packed.dtype} and shape "
            f"{packed.shape}; {_DATA_FORMAT}."
        )
    return np.unpackbits(packed, axis=1)[:, :784].astype(np.float32)


def _train_linear_vae(x: np.ndarray, latent: int, steps: int, seed: int = 0):
    """A linear Bernoulli VAE, trained briefly with its mean-field relaxation and Adam.

    The relaxation feeds the encoder's probabilities to the decoder in place of
    sampled bits; it is only a cheap way to reach a decoder that uses its
    latents, so that the study's point is a realistic one. Returns
    ``(encoder, decoder)`` weight pairs.
    """
    pixels = x.shape[1]
    k1, k2 = jax.random.split(jax.random.key(seed))
    mean = np.clip(x.mean(axis=0), 1e-3, 1 - 1e-3)
    params = {
        "we": jax.random.normal(k1, (pixels, latent), jnp.float32) * 0.01,
        "be": jnp.zeros((latent,), jnp.float32),
        "wd": jax.random.normal(k2, (latent, pixels), jnp.float32) * 0.01,
        "bd": jnp.asarray(np.log(mean) - np.log1p(-mean), jnp.float32),
    }
    data = jnp.asarray(x)

    def loss(p):
        logits = data @ p["we"] + p["be"]
        q = jax.nn.sigmoid(logits)
        dec = q @ p["wd"] + p["bd"]
        rec = jnp.sum(data * jax.nn.log_sigmoid(dec) + (1 - data) * jax.nn.log_sigmoid(-dec))
        kl = jnp.sum(q * jax.nn.log_sigmoid(logits) + (1 - q) * jax.nn.log_sigmoid(-logits))
        kl = kl + q.size * math.log(2.0)
        return (kl - rec) / data.shape[0]

    lr, b1, b2, eps = 3e-3, 0.9, 0.999, 1e-8

    def step(carry, i):
        p, m, v = carry
        g = jax.grad(loss)(p)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        t = (i + 1).astype(jnp.float32)
        c1, c2 = 1 - b1**t, 1 - b2**t
        p = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), p, m, v)
        return (p, m, v), None

    if steps == 0:
        return (params["we"], params["be"]), (params["wd"], params["bd"])
    zeros = jax.tree.map(jnp.zeros_like, params)
    (params, _, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))(
        (params, zeros, zeros)
    )
    return (params["we"], params["be"]), (params["wd"], params["bd"])


def binary_vae(
    *,
    data: str | None = None,
    latent: int | None = None,
    images: int | None = None,
    split: str | None = None,
    train_steps: int | None = None,
) -> Problem:
    """The ELBO's sampled term of a linear Bernoulli VAE on binarized MNIST.

    ``data`` defaults to :func:`default_data_path` (``$JAXGRAD_DATA``, else the
    shared data set beside the repository).
    """
    if data is None:
        data = default_data_path()
        if not os.path.exists(data):
            raise ProblemError(
                f"binary-vae needs the data set: none at the default {data!r}; pass --data PATH "
                f"or set {DATA_ENV} ({_DATA_FORMAT})."
            )
    latent = 32 if latent is None else int(latent)
    images = 4 if images is None else int(images)
    split = "train" if split is None else split
    steps = 200 if train_steps is None else int(train_steps)
    if latent < 1 or images < 1 or steps < 0:
        raise ProblemError(
            "binary-vae: --latent and --images must be at least 1 and --train-steps at least 0."
        )
    x = load_binarized_mnist(data, split)
    num_train = min(len(x), 1000)
    if len(x) < images:
        raise ProblemError(
            f"binary-vae: split {split!r} of {data!r} has {len(x)} images, fewer than "
            f"--images {images}."
        )
    (we, be), (wd, bd) = _train_linear_vae(x[:num_train], latent, steps)
    batch = jnp.asarray(x[len(x) - images :])  # images not used for training
    logits = batch @ we + be
    log_prior = float(logits.size * math.log(2.0))

    def f(b):
        dec = b @ wd + bd
        log_lik = jnp.sum(batch * dec - jax.nn.softplus(dec))  # Bernoulli(sigmoid(dec))
        return log_prior - log_lik  # -log p(x, b) under a uniform prior on b

    return Problem(
        name="binary-vae",
        description=f"-E_q[log p(x, b)], linear VAE, {latent} latent bits, {images} "
        f"MNIST images; gradient w.r.t. the encoder logits",
        variable="bernoulli",
        dist=dists.bernoulli,
        params=logits,
        f=f,
        event_shape=tuple(logits.shape),
        exact=None,
        param_names=("logits",),
        settings={
            "data": os.path.abspath(data),
            "split": split,
            "latent": latent,
            "images": images,
            "train_steps": steps,
            "train_images": num_train,
        },
    )


#: name -> (builder, the keyword options it takes, default number of keys).
PROBLEMS: dict[str, tuple[Callable[..., Problem], tuple[str, ...], int]] = {
    "bernoulli-toy": (bernoulli_toy, ("target", "p", "logit"), 1_000_000),
    "categorical-toy": (categorical_toy, ("target", "dim", "classes"), 200_000),
    "gaussian": (gaussian, ("function", "k", "loc", "scale"), 1_000_000),
    "binary-vae": (binary_vae, ("data", "latent", "images", "split", "train_steps"), 5_000),
}
