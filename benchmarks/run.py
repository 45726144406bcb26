"""Runs every benchmark and prints the ratios (``make bench``).

1. Study throughput on the Bernoulli toy (REINFORCE, DisARM; 1e6 keys):
   ``grad_stats`` against a hand-written ``jit(vmap)`` in the same process
   (target ratio >= 0.9).
2. The same study against a Storchastic-style PyTorch loop, one estimate per
   iteration with autograd (target >= 50x); skipped with a message without
   PyTorch (``pip install -e '.[bench]'``).
3. Peak RSS for 1e4 ... 1e7 keys, streamed and materialized, in subprocesses.
4. Gumbel-softmax and the binary Concrete under each PRNG implementation
   (threefry2x32, rbg, unsafe_rbg), forward and backward on [4096, 1024],
   against the textbook formula on the same key (target ratio <= 1.05).
5. ``jaxgrad study`` twice against an empty compilation cache (wall time,
   compile time per estimator, programs loaded) and as 2 ``--distributed``
   processes against 1 (wall time, same bits), from ``scale.py``.

Writes every figure to ``--out`` (default ``results/bench.json``).

    python benchmarks/run.py [--num-keys 1000000] [--torch-iterations 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import memory  # noqa: E402
import prng  # noqa: E402
import results as results_io  # noqa: E402
import scale  # noqa: E402
import throughput  # noqa: E402
import torch_reference  # noqa: E402

from jaxgrad import cli  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="Runs the jaxgrad benchmarks.")
    parser.add_argument("--num-keys", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-iterations", type=int, default=20_000)
    parser.add_argument(
        "--memory-keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000]
    )
    parser.add_argument("--prng-rounds", type=int, default=15)
    parser.add_argument("--scale-keys", type=int, default=100_000, help="keys of section 5")
    parser.add_argument("--out", default=os.path.join("results", "bench.json"))
    args = parser.parse_args()
    results_io.check_out_file(parser, args.out)

    results: dict = {"versions": cli.versions(), "throughput": [], "torch": [], "memory": []}
    try:
        _sections(args, results)
    except KeyboardInterrupt:  # keep the sections that finished
        results["partial"] = True
        results_io.write_json(args.out, results)
        raise SystemExit(f"interrupted: finished sections kept in {args.out}") from None
    results["partial"] = False
    results_io.write_json(args.out, results)
    print(f"wrote {args.out}")


def _sections(args: argparse.Namespace, results: dict) -> None:
    """Runs the five measurements and the summary, appending to ``results``."""
    print("== 1. study throughput vs hand-written jit(vmap), same process ==")
    for name in throughput.ESTIMATORS:
        row = throughput.measure(name, args.num_keys, args.repeats)
        results["throughput"].append(row)
        print(throughput.report(row))

    print("\n== 2. against a Storchastic-style PyTorch loop (one estimate per iteration) ==")
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        print("skipped: PyTorch is not installed (pip install -e '.[bench]')")
    else:
        for row in results["throughput"]:
            t = torch_reference.measure(row["estimator"], args.torch_iterations)
            t["jaxgrad_per_s"] = row["study_per_s"]
            t["ratio"] = row["study_per_s"] / t["per_s"]
            results["torch"].append(t)
            print(
                f"{t['estimator']:<10} torch {t['torch']} ({t['threads']} threads): "
                f"{t['per_s']:.0f} estimates/s; jaxgrad {row['study_per_s'] / 1e6:.2f} M/s; "
                f"ratio {t['ratio']:.0f}x"
            )

    print("\n== 3. peak RSS (fresh subprocess each), DisARM on the Bernoulli toy ==")
    for mode in memory.MODES:
        for n in args.memory_keys:
            r = memory.measure(mode, n)
            results["memory"].append(r)
            print(f"{mode:<13} {n:>10} keys: peak RSS {r['peak_mib']:7.1f} MiB")

    print("\n== 4. PRNG implementations: jaxgrad vs the textbook formula, same key ==")
    print(f"load {os.getloadavg()}")
    results["prng"] = []
    for impl in prng.IMPLS:
        for row in prng.measure(impl, args.prng_rounds):
            results["prng"].append(row)
            print(prng.report(row))
    print(f"load {os.getloadavg()}")

    print("\n== 5. re-runs (persistent compilation cache) and 2 processes vs 1 ==")
    with tempfile.TemporaryDirectory() as tmp:
        study = ["bernoulli-toy", "--num-keys", str(args.scale_keys), "--no-plot", "--quiet"]
        results["cache"] = scale.measure_cache(study, tmp)
        print(scale.report_cache(results["cache"]))
        results["processes"] = scale.measure_processes(study, tmp, 1)
        print(scale.report_processes(results["processes"]))

    print("\n== summary ==")
    for row in results["throughput"]:
        print(
            f"throughput ratio, {row['estimator']}: {row['ratio']:.2f} "
            f"(vs chunked hand-written: {row['ratio_chunked']:.2f}; target >= 0.9)"
        )
    for t in results["torch"]:
        print(f"vs PyTorch loop, {t['estimator']}: {t['ratio']:.0f}x (target >= 50x)")
    streamed = [r["peak_mib"] for r in results["memory"] if r["mode"] == "streamed"]
    if streamed:
        print(
            f"streamed peak RSS from {args.memory_keys[0]:.0e} to {args.memory_keys[-1]:.0e} "
            f"keys: {min(streamed):.0f} .. {max(streamed):.0f} MiB"
        )
    c, p = results["cache"], results["processes"]
    print(f"second run / first run with the compilation cache: {c['ratio']:.2f}")
    print(f"2 processes / 1 process: {p['ratio']:.2f}, bit-identical: {p['bit_identical']}")
    for row in results["prng"]:
        if row["variant"] == "jaxgrad":
            mode = "hard" if row["hard"] else "soft"
            print(
                f"{row['sampler']} {mode} under {row['impl']}: {row['paired_ratio']:.2f} of "
                f"hand-written (ratio of medians {row['ratio']:.2f}; target <= {prng.TARGET})"
            )


if __name__ == "__main__":
    main()
