"""Study throughput on the Bernoulli toy: jaxgrad.diagnostics.grad_stats against a
hand-written ``jit(vmap(grad(est)))`` of the same estimator, in the same process.

Both compute the mean and variance of ``num_keys`` gradient estimates of
``E[(b - t)^2]``, ``b ~ Bernoulli(sigmoid(l))``, at ``l = 0``; both exclude
compilation and report the best of ``repeats`` timed runs. The hand-written
version materializes all the keys and all the gradients at once; the study
streams them in chunks. Ratio = study rate / hand-written rate (target >= 0.9).
A second, stronger baseline maps the hand-written vmap over chunks of 16384
keys (``jax.lax.map(..., batch_size=16384)``), the best a user would write.

    python benchmarks/throughput.py --num-keys 1000000
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
    args = parser.parse_args()
    for name in ESTIMATORS:
        print(report(measure(name, args.num_keys, args.repeats)))


if __name__ == "__main__":
    main()
