"""Peak memory of a gradient study as the number of keys grows.

Each measurement runs in a fresh subprocess (so peak RSS is its own): the
Bernoulli toy with DisARM, statistics of ``num_keys`` estimates, either
streamed by ``jaxgrad.diagnostics.grad_stats`` (chunked) or computed by a
hand-written ``jit(vmap)`` over all the keys at once (materialized). The
streamed study's peak should stay flat; the materialized one grows linearly.

    python benchmarks/memory.py --num-keys 10000 100000 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

MODES = ("streamed", "materialized")


def child(mode: str, num_keys: int) -> None:
    import jax
    import jax.numpy as jnp

    from jaxgrad import diagnostics

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from throughput import hand_written, toy_estimator

    est = toy_estimator("disarm")
    params = jnp.zeros((1,), jnp.float32)
    key = jax.random.key(0)
    if mode == "streamed":
        s = diagnostics.grad_stats(est, key, params, num_keys=num_keys)
        mean = float(s.mean[0])
    else:
        mean = float(hand_written(est, params, num_keys)(key)[0][0])
    print(json.dumps({"mode": mode, "num_keys": num_keys, "peak_mib": peak_mib(), "mean": mean}))


def peak_mib() -> float:
    """This process's peak resident set size in MiB.

    On Linux, ``VmHWM`` of ``/proc/self/status``: unlike ``ru_maxrss`` it is
    reset by ``exec``, so a child forked from a big parent reports its own peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def measure(mode: str, num_keys: int) -> dict:
    """Runs one measurement in a subprocess; returns its JSON record."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(num_keys)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {mode} {num_keys} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000]
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    for mode in MODES:
        for n in args.num_keys:
            r = measure(mode, n)
            print(f"{mode:<13} {n:>10} keys: peak RSS {r['peak_mib']:7.1f} MiB")


if __name__ == "__main__":
    main()
