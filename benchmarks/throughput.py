"""Study throughput on the Bernoulli toy: jaxgrad.diagnostics.grad_stats against a
hand-written ``jit(vmap(grad(est)))`` of the same estimator, in the same process.

Both compute the mean and variance of ``num_keys`` gradient estimates of
``E[(b - t)^2]``, ``b ~ Bernoulli(sigmoid(l))``, at ``l = 0``; both exclude
compilation and report the best of ``repeats`` timed runs. The hand-written
version materializes all the keys and all the gradients at once; the study
streams them in chunks. Ratio = study rate / hand-written rate (target >= 0.9).
A second, stronger baseline maps the hand-written vmap over chunks of 16384
keys (``jax.lax.map(..., batch_size=16384)``), the best a user would write.

The same comparison on the binary-VAE study (``--vae``): the CLI's problem
(``jaxgrad study binary-vae``: the encoder logits of 4 images, 32 latent
bits, 128 coordinates) with 1e4 keys, and the gradient with respect to the
encoder's weights (784 x 200 = 156,800 coordinates) with 1e3 keys, where the
hand-written loop materializes every gradient. Chunks of the width
``grad_stats`` chose, both sides.

    python benchmarks/throughput.py --num-keys 1000000
    python benchmarks/throughput.py --vae
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import jaxgrad
from jaxgrad import diagnostics

TARGET = 0.45
ESTIMATORS = ("reinforce", "disarm")


def toy_estimator(name: str):
    """The registry's estimator ``name`` for the Bernoulli toy, with its default samples."""
    info = jaxgrad.ESTIMATORS[name]
    f = lambda b: jnp.sum((b - TARGET) ** 2)  # noqa: E731
    return info.build(f, dist=jaxgrad.dists.bernoulli, num_samples=1)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def hand_written(est, params, num_keys: int, batch_size: int | None = None):
    """The baseline: a jitted vmap over all keys (or lax.map over chunks), mean and variance."""
    grad = jax.grad(est, argnums=1)

    @jax.jit
    def run(key):
        keys = jax.random.split(key, num_keys)
        if batch_size is None:
            g = jax.vmap(grad, in_axes=(0, None))(keys, params)
        else:
            g = jax.lax.map(lambda k: grad(k, params), keys, batch_size=batch_size)
        return jnp.mean(g, axis=0), jnp.var(g, axis=0, ddof=1)

    return run


def measure(name: str, num_keys: int = 1_000_000, repeats: int = 3, devices=None) -> dict:
    """Estimates per second of the study and of the hand-written loop, and their ratio."""
    est = toy_estimator(name)
    params = jnp.zeros((1,), jnp.float32)
    key = jax.random.key(0)
    base = hand_written(est, params, num_keys)
    jax.block_until_ready(base(key))  # compile
    t_base = _best(lambda: jax.block_until_ready(base(key)), repeats)
    chunked = hand_written(est, params, num_keys, batch_size=16384)
    jax.block_until_ready(chunked(key))
    t_chunked = _best(lambda: jax.block_until_ready(chunked(key)), repeats)

    stats = []

    def study():
        stats.append(diagnostics.grad_stats(est, key, params, num_keys=num_keys, devices=devices))

    study()  # compile
    stats.clear()
    _best(study, repeats)
    t_study = min(s.time_per_estimate for s in stats) * num_keys
    mean, var = (float(x[0]) for x in base(key))
    s = stats[0]
    return {
        "estimator": name,
        "num_keys": num_keys,
        "devices": s.num_devices,
        "study_per_s": num_keys / t_study,
        "hand_written_per_s": num_keys / t_base,
        "ratio": t_base / t_study,
        "hand_written_chunked_per_s": num_keys / t_chunked,
        "ratio_chunked": t_chunked / t_study,
        "study_variance": float(s.variance[0]),
        "hand_written_variance": var,
        "study_mean": float(s.mean[0]),
        "hand_written_mean": mean,
    }


def _vae_problem(coordinates: str):
    """``(est, params, name)`` for the binary-VAE study: RLOO with 2 samples (the registry's)."""
    from jaxgrad._src import problems

    if coordinates == "logits":
        prob = problems.binary_vae(train_steps=0)
        est = jaxgrad.ESTIMATORS["rloo"].build(prob.f, dist=prob.dist, num_samples=2)
        return est, prob.params, "binary-vae logits (128 coords)"
    latent, images = 200, 4
    prob = problems.binary_vae(latent=latent, images=images, train_steps=0)
    x = jnp.asarray(problems.load_binarized_mnist(problems.default_data_path())[:images])
    base = jaxgrad.ESTIMATORS["rloo"].build(prob.f, dist=prob.dist, num_samples=2)
    w = 0.01 * jax.random.normal(jax.random.key(1), (784, latent), jnp.float32)
    est = lambda key, w: base(key, x @ w)  # noqa: E731 - the gradient w.r.t. the weights
    return est, w, f"binary-vae encoder weights ({w.size} coords)"


def measure_vae(coordinates: str, num_keys: int, repeats: int = 3) -> dict:
    """The study against ``jit(lax.map(vmap(grad)))`` with the study's chunk width."""
    est, params, name = _vae_problem(coordinates)
    key = jax.random.key(0)
    stats = []

    def study():
        stats.append(diagnostics.grad_stats(est, key, params, num_keys=num_keys))

    study()  # compile
    width, compile_s = stats[0].batch_size, stats[0].compile_time
    chunked = hand_written(est, params, num_keys, batch_size=width)
    jax.block_until_ready(chunked(key))  # compile
    stats.clear()
    hand = []
    for _ in range(repeats):  # interleaved, so that both see the same load
        study()
        hand.append(_best(lambda: jax.block_until_ready(chunked(key)), 1))
    t_study = min(s.time_per_estimate for s in stats) * num_keys
    t_chunked = min(hand)
    return {
        "problem": name,
        "num_keys": num_keys,
        "width": width,
        "study_per_s": num_keys / t_study,
        "hand_written_chunked_per_s": num_keys / t_chunked,
        "ratio_chunked": t_chunked / t_study,
        "compile_s": compile_s,
    }


def report_vae(row: dict) -> str:
    return (
        f"{row['problem']}, {row['num_keys']:.0e} keys, chunks of {row['width']}: study "
        f"{row['study_per_s']:9.0f}/s, hand-written jit(lax.map(vmap)) "
        f"{row['hand_written_chunked_per_s']:9.0f}/s, ratio {row['ratio_chunked']:.2f}"
    )


def report(row: dict) -> str:
    return (
        f"{row['estimator']:<10} {row['num_keys']:.0e} keys, {row['devices']} device(s): "
        f"study {row['study_per_s'] / 1e6:7.2f} M/s, hand-written jit(vmap) "
        f"{row['hand_written_per_s'] / 1e6:7.2f} M/s, ratio {row['ratio']:.2f}; "
        f"hand-written jit(lax.map(vmap)) {row['hand_written_chunked_per_s'] / 1e6:7.2f} M/s, "
        f"ratio {row['ratio_chunked']:.2f} "
        f"(variance {row['study_variance']:.4g} vs {row['hand_written_variance']:.4g})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-keys", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vae", action="store_true", help="the binary-VAE study instead")
    args = parser.parse_args()
    if args.vae:
        for coordinates, num_keys in (("logits", 10_000), ("weights", 1_000)):
            print(report_vae(measure_vae(coordinates, num_keys, args.repeats)))
        return
    for name in ESTIMATORS:
        print(report(measure(name, args.num_keys, args.repeats)))


if __name__ == "__main__":
    main()
