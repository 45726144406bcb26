"""The ``jaxgrad`` command line: ``jaxgrad study PROBLEM`` runs a variance study.

For every registered estimator that applies to the problem's variable type
(or those named with ``--estimators``), the study draws ``--num-keys``
independent gradient estimates with :func:`jaxgrad.diagnostics.grad_stats`
(chunked, sharded over all devices, streaming statistics), then prints a table
sorted by efficiency, and writes ``study.csv`` (one row per estimator),
``study_coordinates.csv`` (one row per estimator and gradient coordinate),
``study.json`` (every figure, the settings and the versions) and ``study.png``
to ``--out``.

Example::

    jaxgrad study bernoulli-toy --out results/demo
    jaxgrad study gaussian --function cos --k 3 --estimators pathwise reinforce
    jaxgrad study binary-vae --data ../shared/data/binarized_mnist.npz
    jaxgrad list
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, TextIO

import jax
import numpy as np

from jaxgrad import diagnostics
from jaxgrad._src import problems
from jaxgrad._src.estimators.registry import ESTIMATORS, EstimatorInfo

#: Estimators needing more f-evaluations per estimate are left out of default studies.
MAX_COST = 2**16


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise CLIError(f"{message} (see {self.prog} --help)")


class Result(NamedTuple):
    """One estimator's row of a study."""

    name: str
    info: EstimatorInfo
    num_samples: int
    stats: diagnostics.GradStats


class Study(NamedTuple):
    """A finished study."""

    problem: problems.Problem
    results: list[Result]
    skipped: list[tuple[str, str]]
    settings: dict[str, Any]


# ---------------------------------------------------------------------------
# Argument parsing.

_PROBLEM_OPTIONS = {
    "target": dict(type=float, help="target t of the toys' cost (default 0.45)"),
    "p": dict(type=float, help="bernoulli-toy: success probability (default 0.5)"),
    "logit": dict(type=float, help="bernoulli-toy: the logit instead of --p"),
    "dim": dict(type=int, help="categorical-toy: number of categoricals (default 3)"),
    "classes": dict(type=int, help="categorical-toy: classes per categorical (default 4)"),
    "function": dict(
        choices=diagnostics.GAUSSIAN_TEST_FUNCTIONS,
        help="gaussian: test function (x-k)^2, exp(-k x^2) or cos(k x) (default square)",
    ),
    "k": dict(type=float, help="gaussian: the test function's constant (default 1)"),
    "loc": dict(type=float, help="gaussian: mean mu (default 0.5)"),
    "scale": dict(type=float, help="gaussian: standard deviation sigma (default 1)"),
    "data": dict(
        metavar="PATH",
        help=f"binary-vae: binarized MNIST .npz (e.g. {problems.DEFAULT_DATA})",
    ),
    "latent": dict(type=int, help="binary-vae: latent bits (default 32)"),
    "images": dict(type=int, help="binary-vae: images in the batch (default 4)"),
    "split": dict(help="binary-vae: data split (default train)"),
    "train_steps": dict(type=int, help="binary-vae: Adam steps of brief training (default 200)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="jaxgrad", description="Variance studies of gradient estimators (jaxgrad)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    study = sub.add_parser(
        "study",
        help="run a variance study of the registered estimators on a problem",
        description="Draw many gradient estimates from each estimator on PROBLEM; print a "
        "table sorted by efficiency and write CSV, JSON and a PNG plot.",
    )
    study.add_argument("problem", metavar="PROBLEM", help=", ".join(problems.PROBLEMS))
    study.add_argument(
        "--estimators",
        nargs="+",
        metavar="NAME",
        help="estimator names (space or comma separated); default: all that apply",
    )
    study.add_argument("--num-keys", type=int, help="estimates per estimator")
    study.add_argument("--batch-size", type=int, help="keys per vectorized chunk")
    study.add_argument("--num-samples", type=int, help="samples per estimate (default: registry)")
    study.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    study.add_argument("--out", metavar="DIR", help="output folder (default results/PROBLEM)")
    study.add_argument("--no-plot", action="store_true", help="skip the PNG")
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    group = study.add_argument_group("problem options")
    for name, kwargs in _PROBLEM_OPTIONS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    sub.add_parser("list", help="list the problems and the registered estimators")
    return parser


# ---------------------------------------------------------------------------
# Running a study.


class _Progress:
    """A one-line progress bar on stderr (redrawn on a terminal, one line per step otherwise)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool = True):
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = enabled and getattr(stream, "isatty", lambda: False)()
        self.width = 24
        self.last = 0.0

    def start(self, index: int, name: str) -> None:
        self.index, self.name, self.t0 = index, name, time.perf_counter()
        if self.tty:
            self._draw(0, 1, "compiling")

    def _draw(self, done: int, total: int, note: str = "") -> None:
        frac = done / max(total, 1)
        fill = int(round(frac * self.width))
        bar = "#" * fill + "-" * (self.width - fill)
        elapsed = time.perf_counter() - self.t0
        line = (
            f"\r[{self.index:>2}/{self.total}] {self.name:<28.28} |{bar}| {100 * frac:3.0f}% "
            f"{elapsed:6.1f}s {note:<10}"
        )
        self.stream.write(line)
        self.stream.flush()

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.tty and (now - self.last > 0.05 or done == total):
            self.last = now
            self._draw(done, total)

    def finish(self, stats: diagnostics.GradStats | None, note: str = "") -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        if stats is not None:
            note = f"{stats.num_keys} estimates, {elapsed:.1f}s (compile {stats.compile_time:.1f}s)"
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"[{self.index:>2}/{self.total}] {self.name:<28} {note}\n")
        self.stream.flush()


def _build_problem(ns: argparse.Namespace) -> problems.Problem:
    if ns.problem not in problems.PROBLEMS:
        raise CLIError(
            f"unknown problem {ns.problem!r}; choose one of {', '.join(problems.PROBLEMS)}."
        )
    builder, options, _ = problems.PROBLEMS[ns.problem]
    given = {k: getattr(ns, k) for k in _PROBLEM_OPTIONS if getattr(ns, k) is not None}
    wrong = [k for k in given if k not in options]
    if wrong:
        flags = ", ".join("--" + o.replace("_", "-") for o in options)
        raise CLIError(
            f"option --{wrong[0].replace('_', '-')} does not apply to problem {ns.problem} "
            f"(its options: {flags})."
        )
    try:
        return builder(**given)
    except problems.ProblemError as err:
        raise CLIError(str(err)) from None


def _select(ns: argparse.Namespace, problem: problems.Problem):
    """The estimators to run: (name, info, num_samples, explicit), and skipped ones."""
    variable = problem.variable
    applicable = [n for n, e in ESTIMATORS.items() if e.applies_to(variable)]
    if ns.estimators:
        names = [n for item in ns.estimators for n in item.split(",") if n]
        for n in names:
            if n not in ESTIMATORS:
                raise CLIError(
                    f"unknown estimator {n!r}; choose from {', '.join(ESTIMATORS)} "
                    f"(applicable to {problem.name}: {', '.join(applicable)})."
                )
            if not ESTIMATORS[n].applies_to(variable):
                raise CLIError(
                    f"estimator {n!r} does not apply to {variable} variables (problem "
                    f"{problem.name}); applicable: {', '.join(applicable)}."
                )
        names = list(dict.fromkeys(names))
        explicit = True
    else:
        names, explicit = applicable, False
    chosen, skipped = [], []
    for n in names:
        info = ESTIMATORS[n]
        k = info.num_samples if ns.num_samples is None else ns.num_samples
        reason = None
        if k < info.min_num_samples:
            reason = f"needs --num-samples >= {info.min_num_samples}, got {k}"
        elif (cost := info.cost(variable, problem.event_shape, k)) > MAX_COST:
            reason = f"{cost:.3g} f-evaluations per estimate is too many (more than {MAX_COST})"
        if reason is not None:
            if explicit:
                raise CLIError(f"estimator {n!r}: {reason}.")
            skipped.append((n, reason))
        else:
            chosen.append((n, info, k))
    return chosen, skipped, explicit


def _check_int(value: int | None, name: str, minimum: int) -> None:
    if value is not None and value < minimum:
        raise CLIError(f"{name} must be at least {minimum}, got {value}.")


def run_study(ns: argparse.Namespace, *, stderr: TextIO | None = None) -> Study:
    """Runs the study described by parsed arguments; raises :class:`CLIError` on user errors."""
    _check_int(ns.num_keys, "--num-keys", 2)
    _check_int(ns.batch_size, "--batch-size", 1)
    _check_int(ns.num_samples, "--num-samples", 1)
    problem = _build_problem(ns)
    chosen, skipped, explicit = _select(ns, problem)
    num_keys = ns.num_keys or problems.PROBLEMS[problem.name][2]
    key = jax.random.key(ns.seed)
    bar = _Progress(len(chosen), stderr or sys.stderr, enabled=not ns.quiet)
    results = []
    t_start = time.perf_counter()
    for i, (name, info, k) in enumerate(chosen, 1):
        bar.start(i, name)
        try:
            est = info.build(problem.f, dist=problem.dist, num_samples=k)
            stats = diagnostics.grad_stats(
                est,
                key,
                problem.params,
                num_keys=num_keys,
                batch_size=ns.batch_size,
                exact=problem.exact,
                f_evals=info.cost(problem.variable, problem.event_shape, k),
                progress=bar.update,
            )
        except (ImportError, ValueError, TypeError, NotImplementedError) as err:
            what = "is not available" if isinstance(err, ImportError) else "failed"
            reason = f"{what}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if explicit:
                raise CLIError(f"estimator {name!r} {reason}") from None
            bar.finish(None, f"skipped ({reason})")
            skipped.append((name, reason))
            continue
        bar.finish(stats)
        results.append(Result(name, info, k, stats))
    if not results:
        raise CLIError(
            f"no estimator could run on {problem.name}: "
            + "; ".join(f"{n} {r}" for n, r in skipped)
        )
    results.sort(key=_sort_key)
    settings = {
        "problem": problem.name,
        "num_keys": num_keys,
        "batch_size": ns.batch_size,
        "num_samples": ns.num_samples,
        "seed": ns.seed,
        "estimators": [r.name for r in results],
        "requested_estimators": ns.estimators,
        "wall_time_s": time.perf_counter() - t_start,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Study(problem, results, skipped, settings)


def _sort_key(r: Result):
    e = r.stats.efficiency
    return (math.isnan(e), e if not math.isnan(e) else 0.0, r.stats.f_evals or 0, r.name)


# ---------------------------------------------------------------------------
# Reporting.


def versions() -> dict[str, Any]:
    """The versions and the machine a study ran on."""
    import jaxgrad

    def dist_version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {
        "jaxgrad": jaxgrad.__version__,
        "jax": jax.__version__,
        "jaxlib": dist_version("jaxlib"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "cpu_count": os.cpu_count(),
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.{digits - 1}e}"


def _summary(r: Result, one: bool) -> dict[str, Any]:
    s = r.stats
    mean = s.flat("mean")
    bias = s.flat("bias")
    return {
        "mean": float(mean[0]) if one else float(np.linalg.norm(mean)),
        "variance": s.total_variance,
        "snr": s.snr_norm,
        "bias": (float(bias[0]) if one else s.bias_norm) if bias is not None else None,
    }


def format_table(study: Study) -> str:
    """The study as a text table, one row per estimator, most efficient first."""
    problem = study.problem
    one = study.results[0].stats.num_coordinates == 1
    err = "MSE" if problem.exact is not None else "var"
    headers = [
        "estimator",
        "unbiased",
        "mean" if one else "|mean|",
        "variance" if one else "sum var",
        "SNR",
        "bias" if one else "|bias|",
        "f-evals",
        "us/est",
        f"{err} x evals",
    ]
    rows = []
    for r in study.results:
        m = _summary(r, one)
        rows.append(
            [
                r.name,
                "yes" if r.info.unbiased else "no",
                _fmt(m["mean"]),
                _fmt(m["variance"]),
                _fmt(m["snr"], 3),
                _fmt(m["bias"], 3),
                str(r.stats.f_evals),
                _fmt(r.stats.time_per_estimate * 1e6, 3),
                _fmt(r.stats.efficiency),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    n = study.settings["num_keys"]
    out = [f"{problem.name}: {problem.description}"]
    if problem.exact is not None:
        ex = diagnostics.GradStats._flat(problem.exact)
        shown = ", ".join(_fmt(float(v)) for v in ex[:6]) + (", ..." if ex.size > 6 else "")
        out.append(f"exact gradient: [{shown}]")
    out.append(
        f"{n} estimates per estimator, {study.results[0].stats.num_devices} device(s); "
        f"sorted by {err} x f-evals (smaller is better)"
    )
    if not one:
        out.append(
            f"{study.results[0].stats.num_coordinates} coordinates: norms of mean and bias, "
            "summed variance, SNR = |mean| / sqrt(sum var)"
        )
    out += ["", line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    for name, reason in study.skipped:
        out.append(f"skipped {name}: {reason}")
    return "\n".join(out)


def _clean(x: Any) -> Any:
    """JSON-safe values: arrays to lists, non-finite floats to null."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


_FIELDS = ("mean", "variance", "stderr", "snr", "exact", "bias", "mse")


def _record(r: Result, rank: int) -> dict[str, Any]:
    s = r.stats
    return {
        "rank": rank,
        "estimator": r.name,
        "unbiased": r.info.unbiased,
        "black_box": r.info.black_box,
        "relaxation": r.info.relaxation,
        "reference": r.info.reference,
        "num_samples": r.num_samples,
        "num_keys": s.num_keys,
        "f_evals": s.f_evals,
        "mean_norm": float(np.linalg.norm(s.flat("mean"))),
        "total_variance": s.total_variance,
        "snr_norm": s.snr_norm,
        "bias_norm": s.bias_norm,
        "total_mse": s.total_mse,
        "variance_x_evals": s.total_variance * (s.f_evals or math.nan),
        "efficiency": s.efficiency,
        "time_per_estimate_s": s.time_per_estimate,
        "variance_x_time": s.variance_x_time,
        "compile_time_s": s.compile_time,
        "batch_size": s.batch_size,
        "num_devices": s.num_devices,
    }


def write_outputs(study: Study, out: str, argv: Sequence[str], plot: bool = True) -> dict:
    """Writes study.csv, study_coordinates.csv, study.json and study.png; returns the paths."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create output folder {out!r}: {err.strerror or err}.") from None
    paths = {
        k: os.path.join(out, f)
        for k, f in (
            ("csv", "study.csv"),
            ("coordinates", "study_coordinates.csv"),
            ("json", "study.json"),
            ("png", "study.png"),
        )
    }
    records = [_record(r, i) for i, r in enumerate(study.results, 1)]
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        for rec in records:
            w.writerow({k: ("" if v is None else v) for k, v in rec.items()})
    names = study.problem.coordinate_names()
    with open(paths["coordinates"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["estimator", "coordinate", *_FIELDS])
        for r in study.results:
            cols = [r.stats.flat(f) for f in _FIELDS]
            for j, name in enumerate(names):
                w.writerow([r.name, name, *("" if c is None else repr(float(c[j])) for c in cols)])
    p = study.problem
    doc = {
        "format": "jaxgrad-study/1",
        "problem": {
            "name": p.name,
            "description": p.description,
            "variable": p.variable,
            "event_shape": list(p.event_shape),
            "settings": p.settings,
            "coordinates": names,
            "exact": None if p.exact is None else diagnostics.GradStats._flat(p.exact),
        },
        "settings": {**study.settings, "argv": list(argv)},
        "versions": versions(),
        "results": [
            {**rec, "coordinates": {f: r.stats.flat(f) for f in _FIELDS}}
            for rec, r in zip(records, study.results, strict=True)
        ],
        "skipped": [{"estimator": n, "reason": why} for n, why in study.skipped],
    }
    with open(paths["json"], "w") as fh:
        json.dump(_clean(doc), fh, indent=1, allow_nan=False)
    if plot:
        try:
            plot_study(study, paths["png"])
        except ModuleNotFoundError as err:
            if err.name is None or not err.name.startswith("matplotlib"):
                raise
            paths.pop("png")
            print(
                "jaxgrad study: no plot: matplotlib is not installed "
                "(pip install 'jaxgrad[study]'); the CSV and JSON are written.",
                file=sys.stderr,
            )
    else:
        paths.pop("png")
    return paths


def _significant_bias2(r: Result) -> float:
    """The squared bias norm if it is statistically significant (> 4 standard errors), else 0."""
    s = r.stats
    if s.bias is None:
        return 0.0
    b2 = s.bias_norm**2
    se2 = float(np.sum(s.flat("stderr") ** 2))
    scale2 = float(np.sum(s.flat("exact") ** 2))
    return b2 if b2 > 16 * se2 and b2 > 1e-12 * scale2 else 0.0


def plot_study(study: Study, path: str) -> None:
    """Draws variance (with squared bias), SNR and efficiency per estimator to a PNG.

    Raises:
      ModuleNotFoundError: if matplotlib is not installed.
    """
    from matplotlib.figure import Figure  # optional dependency: jaxgrad[study]
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    results = study.results
    n = len(results)
    one = results[0].stats.num_coordinates == 1
    has_exact = study.problem.exact is not None
    unbiased_c, biased_c = "#2b6cb0", "#dd6b20"
    colors = [unbiased_c if r.info.unbiased else biased_c for r in results]
    y = np.arange(n)[::-1]  # most efficient on top

    var = np.array([r.stats.total_variance for r in results])
    bias2 = np.array([_significant_bias2(r) for r in results])
    snr = np.array([r.stats.snr_norm for r in results])
    eff = np.array([r.stats.efficiency for r in results])
    err = "MSE" if has_exact else "variance"

    fig = Figure(figsize=(13, 1.5 + 0.4 * n), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels = [
        (axes[0], var, "variance of one estimate" if one else "summed variance (trace of Cov)"),
        (axes[1], snr, "SNR = |mean| / std" if one else "SNR = |mean| / sqrt(summed variance)"),
        (axes[2], eff, f"{err} x f-evaluations: smaller is better"),
    ]
    for ax, values, title in panels:
        extra = bias2[bias2 > 0] if ax is axes[0] else np.zeros(0)
        ok = np.isfinite(values) & (values > 0)
        top = max([*values[ok], *extra], default=1.0)
        # Values below 1e-10 of the largest are round-off: shown as ~0.
        shown = ok & (values > 1e-10 * top)
        lo = min([*values[shown], *extra], default=top / 10)
        lo_lim, hi_lim = lo / 20, top * 20
        ax.set_xscale("log")
        ax.set_xlim(lo_lim, hi_lim)
        span = math.log(hi_lim / lo_lim)
        for yi, v, c, vis in zip(y, values, colors, shown, strict=True):
            if vis:
                ax.barh(yi, v - lo_lim, left=lo_lim, color=c, height=0.64)
                label = _fmt(float(v), 3)
                if math.log(v / lo_lim) / span > 0.3:  # inside the bar
                    ax.text(
                        v / 1.25,
                        yi,
                        label,
                        va="center",
                        ha="right",
                        fontsize=8,
                        color="white",
                        fontweight="bold",
                    )
                else:
                    ax.text(v * 1.25, yi, label, va="center", fontsize=8)
            elif np.isinf(v):
                ax.barh(
                    yi,
                    hi_lim - lo_lim,
                    left=lo_lim,
                    color=c,
                    height=0.64,
                    alpha=0.35,
                    hatch="//",
                    edgecolor="white",
                )
                ax.text(
                    hi_lim / 1.25, yi, "inf (deterministic)", va="center", ha="right", fontsize=8
                )
            else:
                label = "n/a" if np.isnan(v) else "0" if v == 0 else "~0 (round-off)"
                ax.text(lo_lim * 1.25, yi, label, va="center", fontsize=8, color="#333")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for yi, b2 in zip(y, bias2, strict=True):
        if b2 > 0:
            axes[0].plot([b2], [yi], marker="D", color="black", markersize=5, zorder=3)
    axes[0].set_yticks(y, [r.name for r in results])
    handles = [Patch(color=unbiased_c, label="unbiased"), Patch(color=biased_c, label="biased")]
    if has_exact:
        handles.append(
            Line2D(
                [], [], marker="D", color="black", lw=0, label="squared bias (where significant)"
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    v = versions()
    fig.suptitle(
        f"{study.problem.name}: {study.problem.description}\n"
        f"{study.settings['num_keys']} estimates per estimator, sorted by {err} x f-evals; "
        f"jaxgrad {v['jaxgrad']}, jax {v['jax']}, {v['backend']} x {len(v['devices'])}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------
# Entry points.


def _list(stdout: TextIO) -> None:
    print("problems:", file=stdout)
    for name, (builder, options, num_keys) in problems.PROBLEMS.items():
        flags = " ".join("--" + o.replace("_", "-") for o in options)
        doc = (builder.__doc__ or "").strip().splitlines()[0].replace("``", "")
        print(f"  {name:<16} {doc}", file=stdout)
        print(f"  {'':<16} options: {flags}; default --num-keys {num_keys}", file=stdout)
    print("estimators:", file=stdout)
    for name, e in ESTIMATORS.items():
        kind = ("unbiased" if e.unbiased else "biased") + (", black box" if e.black_box else "")
        print(f"  {name:<28} {', '.join(sorted(e.variables)):<32} {kind}", file=stdout)


def _use_all_cpu_cores() -> None:
    """Gives JAX one CPU device per core, so that the study shards over all of them.

    Only possible before JAX initializes its backends (a fresh process) and
    only if the user has not chosen (``JAX_NUM_CPU_DEVICES``); otherwise a no-op.
    """
    if "JAX_NUM_CPU_DEVICES" in os.environ or jax.config.jax_num_cpu_devices != -1:
        return
    try:
        jax.config.update("jax_num_cpu_devices", max(1, os.cpu_count() or 1))
    except RuntimeError:  # backends already initialized: keep what there is
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``jaxgrad COMMAND ...``; returns the exit status (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _use_all_cpu_cores()
    try:
        ns = _parser().parse_args(argv)
        if ns.command == "list":
            _list(sys.stdout)
            return 0
        study = run_study(ns)
        print(format_table(study))
        out = ns.out or os.path.join("results", study.problem.name)
        paths = write_outputs(study, out, ["jaxgrad", *argv], plot=not ns.no_plot)
    except CLIError as err:
        print(f"jaxgrad: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxgrad: interrupted", file=sys.stderr)
        return 130
    print()
    print(f"wrote {paths['csv']}, {paths['coordinates']}, {paths['json']}")
    if "png" in paths:
        print(f"plot: {paths['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
