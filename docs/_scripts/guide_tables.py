"""Writes the measured tables of the guide "Which estimator should I use?".

Every table is generated: this script runs ``jaxgrad study`` on each problem of
:data:`PROBLEMS` (the real command, in this process), reads the ``study.json``
it writes, and renders one markdown table per problem. ``make docs`` runs it at
the full size; ``tests/test_docs.py`` runs it at the reduced size and checks
that every number in the tables is the study's.

Usage::

    python docs/_scripts/guide_tables.py --out docs/_generated/guide_tables.md [--size quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile

from jaxgrad import cli
from jaxgrad._src import problems as problems_lib
from jaxgrad._src import study as study_lib


@dataclasses.dataclass(frozen=True)
class Problem:
    """One table of the guide: a ``jaxgrad study`` command at two sizes."""

    slug: str
    title: str
    why: str  # what the problem shows, one sentence for the reader
    argv: tuple[str, ...]  # the study, without --num-keys and the output options
    full_keys: int
    quick_keys: int
    quick_estimators: tuple[str, ...]  # the reduced run studies these only
    needs_data: bool = False


PROBLEMS = (
    Problem(
        "bernoulli-toy",
        "Three coins, a black-box cost",
        "The toy of the ARM and DisARM papers: every Bernoulli estimator against the exact "
        "gradient of E[sum (b - 0.45)^2] at p = 0.1, 0.3, 0.6.",
        ("bernoulli-toy", "--p", "0.1,0.3,0.6"),
        200_000,
        2_000,
        ("disarm", "rloo", "straight-through"),
    ),
    Problem(
        "categorical-toy",
        "Three categoricals of four classes",
        "Every categorical estimator against the exact gradient (by enumeration of the 64 "
        "outcomes) of the same squared-distance cost on one-hot vectors.",
        ("categorical-toy",),
        100_000,
        2_000,
        ("rloo", "st-gumbel-softmax"),
    ),
    Problem(
        "gaussian-square",
        "A Gaussian, a smooth cost",
        "f(x) = (x - 1)^2 under N(0.5, 1): the pathwise gradient's home ground.",
        ("gaussian", "--function", "square", "--k", "1"),
        100_000,
        2_000,
        ("pathwise", "reinforce"),
    ),
    Problem(
        "gaussian-cos",
        "A Gaussian, a rapidly oscillating cost",
        "f(x) = cos(10 x) under N(0.5, 1): the pathwise gradient's variance grows like k^2 and "
        "the score function wins (Mohamed et al. 2020, section 3).",
        ("gaussian", "--function", "cos", "--k", "10"),
        100_000,
        2_000,
        ("pathwise", "reinforce"),
    ),
    Problem(
        "binary-vae",
        "A binary VAE's encoder gradient",
        "The ELBO of a briefly trained linear VAE with 32 Bernoulli latents on 4 MNIST images "
        "(128 coordinates); there is no exact gradient, so bias is measured against the pooled "
        "unbiased estimators.",
        ("binary-vae",),
        20_000,
        500,
        ("disarm", "rloo"),
        needs_data=True,
    ),
)

COLUMNS = (
    "rank",
    "estimator",
    "unbiased",
    "f-evals",
    "total variance",
    "variance x f-evals",
    "bias norm (se)",
    "MSE x f-evals",
)


def fmt(x: float | None) -> str:
    """A figure as the tables print it: 3 significant digits, ``-`` where it does not apply."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.3g}"


def row_cells(res: dict) -> tuple[str, ...]:
    """The cells of one study result's row, in the order of :data:`COLUMNS`."""
    bias = "-"
    if res["bias_norm"] is not None:
        bias = f"{fmt(res['bias_norm'])} ({fmt(res['bias_stderr_norm'])})"
    return (
        str(res["rank"]),
        f"`{res['estimator']}`",
        "yes" if res["unbiased"] else "no",
        str(res["f_evals"]),
        fmt(res["total_variance"]),
        fmt(res["variance_x_evals"]),
        bias,
        fmt(res["efficiency"]),
    )


def render(problem: Problem, doc: dict, command: str) -> str:
    """One problem's section: title, what it shows, the command, the table."""
    ref = doc["reference"]["description"]
    keys = doc["settings"]["num_keys"]
    lines = [
        f"### {problem.title}",
        "",
        problem.why,
        "",
        f"Problem: {doc['problem']['description']}. {ref[0].upper() + ref[1:]}; "
        f"{keys:,} estimates per estimator.",
        "",
        f"`{command}`",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in doc["results"]]
    notes = [f"`{r['estimator']}`: {r['note']}" for r in doc["results"] if r.get("note")]
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def registry_table() -> str:
    """Every entry of ``jaxgrad.ESTIMATORS`` with its declared metadata, as a markdown table."""
    import jaxgrad

    lines = [
        "| estimator | variables | unbiased | black-box f | higher derivatives | paper |",
        "|---|---|---|---|---|---|",
    ]
    yes = lambda b: "yes" if b else "no"
    for name, info in jaxgrad.ESTIMATORS.items():
        variables = ", ".join(sorted(info.variables))
        lines.append(
            f"| `{name}` | {variables} | {yes(info.unbiased)} | {yes(info.black_box)} "
            f"| {yes(info.higher_order)} | {info.reference} |"
        )
    return "\n".join(lines) + "\n"


def study_argv(problem: Problem, size: str, out: str) -> list[str]:
    """The ``jaxgrad study`` arguments of ``problem`` at ``size``, writing into ``out``."""
    argv = ["study", *problem.argv]
    if size == "quick":
        argv += ["--num-keys", str(problem.quick_keys)]
        argv += ["--estimators", ",".join(problem.quick_estimators)]
        if problem.slug == "binary-vae":
            argv += ["--latent", "8", "--images", "2", "--train-steps", "20"]
    else:
        argv += ["--num-keys", str(problem.full_keys)]
    return [*argv, "--out", out, "--no-plot", "--quiet", "--no-cache"]


def generate(size: str, out_file: str, work: str) -> dict[str, dict]:
    """Runs every study at ``size`` in ``work`` and writes the tables to ``out_file``.

    Returns each problem's ``study.json`` by slug (the problems skipped for want of
    the data set are absent, and the page says so).
    """
    docs, sections = {}, []
    header = (
        f"<!-- Generated by docs/_scripts/guide_tables.py --size {size}; do not edit. -->\n\n"
        "Ranked by MSE x f-evaluations (smaller is better): the error of an estimate "
        "that costs as much as one f-evaluation. The bias column is the norm of the "
        "mean's distance to the reference with its standard error; a biased estimator's "
        "MSE counts its bias.\n"
    )
    if size == "quick":
        header += (
            "\n**These tables come from the reduced run of the test suite (few keys, "
            "few estimators); `make docs` regenerates them at full size.**\n"
        )
    for problem in PROBLEMS:
        if problem.needs_data and not os.path.exists(problems_lib.default_data_path()):
            sections.append(
                f"### {problem.title}\n\n(Not generated: the binarized MNIST data set "
                f"was not found at `{problems_lib.default_data_path()}`.)\n"
            )
            continue
        out = os.path.join(work, problem.slug)
        argv = study_argv(problem, size, out)
        rc = cli.main(argv)
        if rc != 0:
            raise SystemExit(f"guide_tables: `jaxgrad {' '.join(argv)}` exited {rc}")
        with open(os.path.join(out, study_lib.STUDY_FILES["json"])) as fh:
            doc = json.load(fh)
        docs[problem.slug] = doc
        shown = [a for a in argv[: argv.index("--out")]]
        sections.append(render(problem, doc, "jaxgrad " + " ".join(shown)))
    text = "\n".join(
        [
            header,
            "## Every estimator at a glance",
            "",
            "From `jaxgrad.ESTIMATORS` (`jaxgrad list` prints the same).",
            "",
            registry_table(),
            "## Measured variance and cost, problem by problem",
            "",
            *sections,
        ]
    )
    folder = os.path.dirname(os.path.abspath(out_file))
    os.makedirs(folder, exist_ok=True)
    tmp = study_lib.temporary_file(folder, ".guide_tables.", ".md")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, out_file)  # atomic: a reader never sees half a page
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the markdown file to write")
    parser.add_argument("--size", choices=("full", "quick"), default="full")
    parser.add_argument("--work", help="folder for the studies' files (default: a temporary one)")
    ns = parser.parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(ns.out))
    if os.path.exists(ns.out) and not os.path.isfile(ns.out):
        parser.error(f"--out {ns.out} exists and is not a file")
    if os.path.isdir(out_dir) and not os.access(out_dir, os.W_OK):
        parser.error(f"--out: cannot write to {out_dir}")
    if ns.work:
        generate(ns.size, ns.out, ns.work)
    else:
        with tempfile.TemporaryDirectory() as work:
            generate(ns.size, ns.out, work)
    print(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
