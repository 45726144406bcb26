"""The frontier estimators' variance against DisARM and RLOO, at equal f-evaluations.

Two problems of ``jaxgrad study``:

* ``binary-vae``: the study's linear Bernoulli VAE on binarized MNIST (32
  latent bits, 4 test images, its decoder trained for 200 steps), gradient of
  ``-E_q[log p(x, b)]`` with respect to the 128 encoder logits;
* ``categorical-toy``: ``E[(mean_d <x_d, v> - 0.45)^2]`` over 3 uniform
  categoricals of 4 classes, 12 logits.

For each budget ``B`` of f-evaluations per estimate (2 and 4) every unbiased
estimator runs at the number of samples that spends exactly ``B``: RLOO, ARMS,
double CV, RODEO, REINFORCE with the optimal baseline, categorical DisARM and
the unordered-set estimator at ``K = B``; ARM and DisARM at ``B / 2``
antithetic pairs. UGC (3 evaluations a pair), REBAR and RELAX (3 a sample) and
IndeCateR (``D x C`` = 12 a sample here) cannot spend 2 or 4; they run once,
at their smallest cost, and compare through ``variance x f-evals``.

Each row is one :func:`jaxgrad.diagnostics.study` of that estimator alone, so
RODEO's ``h``, double CV's ``alpha`` and RELAX's control variate are tuned
first, on keys of their own (200 Adam steps of ``variance_loss``). Columns:
the summed variance of one estimate over the coordinates; its ratio to
DisARM's and to RLOO's at the same budget; ``variance x f-evals`` (smaller is
better at equal work); and the time per estimate as the study measures it
(compilation excluded; on this shared 2-core CPU it varies by 2-3x between
runs, so compare it within a table only).

    python benchmarks/frontier_variance.py [--data PATH] [--vae-keys 2000]
        [--toy-keys 100000] [--seed 0] [--out results/frontier_variance.json]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402  (benchmarks/results.py: the atomic JSON writer)

from jaxgrad import diagnostics  # noqa: E402
from jaxgrad._src import problems  # noqa: E402

BUDGETS = (2, 4)

#: name -> the number of samples that spends ``B`` f-evaluations (None: own cost, once).
BINARY = {
    "rloo": lambda b: b,
    "disarm": lambda b: b // 2,
    "arm": lambda b: b // 2,
    "arms": lambda b: b,
    "double-cv": lambda b: b,
    "rodeo": lambda b: b,
    "reinforce-optimal": lambda b: b,
    "ugc": None,
    "relax": None,
    "rebar": None,
}
CATEGORICAL = {
    "rloo": lambda b: b,
    "categorical-disarm": lambda b: b,
    "unordered-set": lambda b: b,
    "double-cv": lambda b: b,
    "reinforce-optimal": lambda b: b,
    "relax": None,
    "rebar": None,
    "indecater": None,
}


def _row(problem, name, num_samples, num_keys, seed):
    s = diagnostics.study(
        [name],
        problem.f,
        problem.params,
        dist=problem.dist,
        exact=problem.exact,
        num_keys=num_keys,
        num_samples=num_samples,
        key=seed,
        variable=problem.variable,
        event_shape=problem.event_shape,
    )
    r = s.results[0]
    return {
        "estimator": name,
        "num_samples": r.num_samples,
        "f_evals": r.stats.f_evals,
        "total_variance": float(r.stats.flat("variance").sum()),
        "us_per_estimate": 1e6 * r.stats.time_per_estimate,
        "tuning": s.settings["tuning"],
    }


def measure(problem, table, num_keys, seed, done):
    """Rows per budget (``done`` collects them as they finish, for a partial write)."""
    for budget in BUDGETS:
        for name, samples in table.items():
            if samples is not None:
                done.append(
                    {"budget": budget, **_row(problem, name, samples(budget), num_keys, seed)}
                )
    for name, samples in table.items():
        if samples is None:
            done.append({"budget": None, **_row(problem, name, None, num_keys, seed)})
    return done


def format_table(rows) -> str:
    refs = {
        (r["budget"], r["estimator"]): r["total_variance"]
        for r in rows
        if r["estimator"] in ("disarm", "rloo")
    }
    cols = ["budget", "estimator", "K", "f-evals", "summed variance", "/ DisARM", "/ RLOO"]
    cols += ["var x f-evals", "us/est"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(
        rows, key=lambda r: (r["budget"] or math.inf, r["total_variance"] * r["f_evals"])
    ):
        b, v = r["budget"], r["total_variance"]

        def ratio(ref, b=b, v=v):
            x = refs.get((b, ref))
            return "-" if x is None or x == 0 else f"{v / x:.3f}"

        out.append(
            f"| {b if b is not None else 'own'} | {r['estimator']} | {r['num_samples']} | "
            f"{r['f_evals']} | {v:.4g} | {ratio('disarm')} | {ratio('rloo')} | "
            f"{v * r['f_evals']:.4g} | {r['us_per_estimate']:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="binarized MNIST .npz (default: shared)")
    parser.add_argument("--vae-keys", type=int, default=2000, help="estimates per VAE row")
    parser.add_argument("--toy-keys", type=int, default=100_000, help="estimates per toy row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON of every row (written atomically)")
    args = parser.parse_args()
    for flag, n in (("--vae-keys", args.vae_keys), ("--toy-keys", args.toy_keys)):
        if n < 2:
            parser.error(f"argument {flag}: needs at least 2 estimates, got {n}")
    if args.out is not None:
        results.check_out_file(parser, args.out)
    try:
        vae = problems.binary_vae(data=args.data)
    except problems.ProblemError as err:
        parser.error(str(err))
    toy = problems.categorical_toy()

    doc = {
        "benchmark": "frontier_variance",
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "devices": jax.device_count(),
        "seed": args.seed,
        "problems": {},
        "partial": True,
    }
    try:
        for problem, table, keys in (
            (vae, BINARY, args.vae_keys),
            (toy, CATEGORICAL, args.toy_keys),
        ):
            rows: list = []
            doc["problems"][problem.name] = {
                "description": problem.description,
                "num_keys": keys,
                "settings": problem.settings,
                "rows": rows,
            }
            measure(problem, table, keys, args.seed, rows)
            print(f"\n{problem.name}: {problem.description}; {keys:,} estimates per row\n")
            print(format_table(rows), flush=True)
        doc["partial"] = False
    except KeyboardInterrupt:
        print("\ninterrupted: writing the rows measured so far", file=sys.stderr)
        raise
    finally:
        if args.out is not None:
            results.write_json(args.out, doc)
            print(f"\nwrote {args.out}" + (" (partial)" if doc["partial"] else ""))


if __name__ == "__main__":
    main()
