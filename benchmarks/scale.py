"""Re-runs and processes: the compilation cache's first and second run, and 2 processes vs 1.

Two measurements of ``jaxgrad study``, each a fresh interpreter as a user runs it:

1. **cache**: the same study twice against an empty cache folder: the first
   run compiles and stores every program, the second loads them. Reports the
   wall time of each, and the CLI's own ``compilation:`` line (programs built,
   loaded, seconds of compiling saved).
2. **processes**: the same study as one process with ``2 D`` CPU devices and
   as two ``--distributed`` processes with ``D`` each (JAX's gloo
   collectives, localhost): wall times and whether the figures are equal to
   the last bit (JSON floats round-trip exactly).

Example::

    python benchmarks/scale.py --out results/bench/scale.json
    python benchmarks/scale.py --num-keys 1000 --skip processes
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from results import check_out_file, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ("mean_norm", "total_variance", "snr_norm", "bias_norm", "total_mse", "coordinates")


def _study(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jaxgrad", "study", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    errs = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"jaxgrad study failed ({proc.returncode}): {err.strip()[-500:]}")
        errs.append(err)
    return errs


def _figures(folder: str) -> dict:
    with open(os.path.join(folder, "study.json")) as fh:
        return {r["estimator"]: {k: r[k] for k in FIGURES} for r in json.load(fh)["results"]}


def measure_cache(study: list[str], tmp: str) -> dict:
    env = dict(os.environ)
    cache = os.path.join(tmp, "cache")
    runs = []
    for i in range(2):
        t = time.perf_counter()
        argv = [x for x in study if x != "--quiet"]  # keep the CLI's compilation line
        (err,) = _finish([_study([*argv, "--cache-dir", cache, "--out", f"{tmp}/c{i}"], env)])
        line = next((x for x in err.splitlines() if x.startswith("compilation: ")), "")
        with open(os.path.join(tmp, f"c{i}", "study.json")) as fh:
            compile_s = {r["estimator"]: r["compile_time_s"] for r in json.load(fh)["results"]}
        wall = time.perf_counter() - t
        runs.append({"wall_s": wall, "compilation": line, "compile_s": compile_s})
    return {"first": runs[0], "second": runs[1], "ratio": runs[1]["wall_s"] / runs[0]["wall_s"]}


def measure_processes(study: list[str], tmp: str, devices: int) -> dict:
    flags = [*study, "--no-cache"]
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(2 * devices))
    t = time.perf_counter()
    _finish([_study([*flags, "--out", f"{tmp}/one"], env)])
    one = time.perf_counter() - t
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices))
    dist = ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    t = time.perf_counter()
    _finish(
        [
            _study([*flags, *dist, "--process-id", str(i), "--out", f"{tmp}/two"], env)
            for i in range(2)
        ]
    )
    two = time.perf_counter() - t
    return {
        "one_process_s": one,
        "two_processes_s": two,
        "ratio": two / one,
        "devices": 2 * devices,
        "bit_identical": _figures(f"{tmp}/one") == _figures(f"{tmp}/two"),
    }


def report_cache(c: dict) -> str:
    """The cache measurement as lines: both runs, the CLI's lines, compile time per estimator."""
    lines = [
        f"cache: first {c['first']['wall_s']:.1f} s, second {c['second']['wall_s']:.1f} s "
        f"(ratio {c['ratio']:.2f})",
        f"  {c['first']['compilation']}",
        f"  {c['second']['compilation']}",
        "  compile time per estimator (first -> second run):",
    ]
    for name, first in c["first"]["compile_s"].items():
        lines.append(f"    {name:24s} {first:6.2f} s -> {c['second']['compile_s'][name]:6.2f} s")
    return "\n".join(lines)


def report_processes(p: dict) -> str:
    per = p["devices"] // 2
    return (
        f"processes: 1 x {p['devices']} devices {p['one_process_s']:.1f} s, 2 x {per} "
        f"{p['two_processes_s']:.1f} s (ratio {p['ratio']:.2f}), "
        f"bit-identical: {p['bit_identical']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="bernoulli-toy")
    parser.add_argument("--num-keys", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=1, help="CPU devices per process")
    parser.add_argument("--skip", choices=("cache", "processes"), action="append", default=[])
    parser.add_argument("--out", default="results/bench/scale.json")
    args = parser.parse_args()
    if args.num_keys < 2 or args.devices < 1:
        parser.error("--num-keys must be at least 2 and --devices at least 1")
    check_out_file(parser, args.out)
    study = [args.problem, "--num-keys", str(args.num_keys), "--no-plot", "--quiet"]
    out = {"partial": True, "problem": args.problem, "num_keys": args.num_keys}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "cache" not in args.skip:
                out["cache"] = measure_cache(study, tmp)
                print(report_cache(out["cache"]))
            if "processes" not in args.skip:
                out["processes"] = measure_processes(study, tmp, args.devices)
                print(report_processes(out["processes"]))
        out["partial"] = False
    finally:  # an interrupted run keeps what it measured
        write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
