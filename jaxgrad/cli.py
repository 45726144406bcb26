"""The ``jaxgrad`` command line: ``jaxgrad study PROBLEM`` runs a variance study.

(``jaxgrad train PROBLEM`` trains VAEs with each estimator: see
:mod:`jaxgrad._src.train_cli`.)

A thin face over :func:`jaxgrad.diagnostics.study`: for every registered
estimator that applies to the problem's variable type (or those named with
``--estimators``), the study draws ``--num-keys`` independent gradient
estimates (chunked, sharded over all devices, streaming statistics), prints a
table ranked by MSE x f-evaluations against the exact gradient, or against the
pooled unbiased estimators where there is none, and writes ``study.csv``,
``study_coordinates.csv``, ``study.json`` and ``study.png`` to ``--out``.

It never loses work: ``--out`` is checked before anything runs; the files are
written atomically and replace an earlier study in the folder all together;
on Ctrl-C or an error the estimators that finished are written, marked
partial, and the command exits non-zero with one line. Compiled programs go to
JAX's persistent compilation cache (``--cache-dir``, by default
``$JAXGRAD_CACHE_DIR`` or ``~/.cache/jaxgrad/xla``; ``--no-cache``), so a rerun
loads them instead of compiling.

Example::

    jaxgrad study bernoulli-toy --out results/demo
    jaxgrad study gaussian --function cos --k 3 --estimators pathwise reinforce
    jaxgrad study binary-vae --data ../shared/data/binarized_mnist.npz
    jaxgrad list
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

import jax

from jaxgrad import diagnostics
from jaxgrad._src import compile_cache, problems, train_cli
from jaxgrad._src.estimators.registry import ESTIMATORS, OBJECTIVES
from jaxgrad._src.study import _SKIPPABLE

#: Estimators needing more f-evaluations per estimate are left out of default studies.
MAX_COST = 2**16


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise CLIError(f"{message} (see {self.prog} --help)")


#: The study's result type (see :class:`jaxgrad.diagnostics.Study`).
Study = diagnostics.Study


# ---------------------------------------------------------------------------
# Argument parsing.


def _finite_float(text: str) -> float:
    """An argparse type: a finite float (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _finite_floats(text: str) -> tuple[float, ...]:
    """An argparse type: one or more finite floats, comma separated (one per coin)."""
    parts = [t.strip() for t in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}")
    return tuple(_finite_float(t) for t in parts)


_NUMBERS = re.compile(r"-(?:\d|\.\d|inf|nan)[^,]*(?:,[^,]+)*", re.IGNORECASE)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--opt -2,0.5`` as ``--opt=-2,0.5``: argparse reads a negative list as an option.

    (It accepts ``--k -2`` but not ``--logit -2,0.5``; a value is glued to the option
    before it only where the value starts with ``-`` and a digit, ``.``, ``inf`` or ``nan``.)
    """
    out: list[str] = []
    for tok in argv:
        prev = out[-1] if out else ""
        if prev.startswith("--") and "=" not in prev and _NUMBERS.fullmatch(tok):
            out[-1] = f"{prev}={tok}"
        else:
            out.append(tok)
    return out


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


_PROBLEM_OPTIONS = {
    "target": dict(type=_finite_float, help="target t of the toys' cost (default 0.45)"),
    "p": dict(
        type=_finite_floats,
        help="bernoulli-toy: success probabilities, one per coin, e.g. 0.1,0.3,0.6 "
        "(default 0.5: one coin)",
    ),
    "logit": dict(type=_finite_floats, help="bernoulli-toy: the logits instead of --p"),
    "dim": dict(type=int, help="categorical-toy: number of categoricals (default 3)"),
    "classes": dict(type=int, help="categorical-toy: classes per categorical (default 4)"),
    "function": dict(
        choices=diagnostics.GAUSSIAN_TEST_FUNCTIONS,
        help="gaussian: test function (x-k)^2, exp(-k x^2) or cos(k x) (default square)",
    ),
    "k": dict(type=_finite_float, help="gaussian: the test function's constant (default 1)"),
    "loc": dict(type=_finite_float, help="gaussian: mean mu (default 0.5)"),
    "scale": dict(type=_finite_float, help="gaussian: standard deviation sigma (default 1)"),
    "data": dict(
        metavar="PATH",
        help=f"binary-vae: binarized MNIST .npz (default ${problems.DATA_ENV}, else "
        f"{problems.DEFAULT_DATA} beside the repository)",
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
        "table ranked by MSE x f-evaluations (against the exact gradient, or the pooled "
        "unbiased estimators where there is none) and write CSV, JSON and a PNG plot. "
        "A rerun into the same --out replaces the earlier study's files all together; "
        "Ctrl-C writes the estimators that finished, marked partial.",
    )
    study.add_argument("problem", metavar="PROBLEM", help=", ".join(problems.PROBLEMS))
    study.add_argument(
        "--estimators",
        nargs="+",
        metavar="NAME",
        help="estimator names (space or comma separated); default: all that apply",
    )
    study.add_argument("--num-keys", type=int, help="estimates per estimator")
    study.add_argument(
        "--batch-size",
        type=int,
        help="keys per vectorized chunk, rounded up to a power of two (a memory knob: the "
        "summation order is the same for any value; default: from a memory budget)",
    )
    study.add_argument("--num-samples", type=int, help="samples per estimate (default: registry)")
    study.add_argument(
        "--temperature",
        type=_positive_float,
        help="temperature of every estimator that has one (relaxations, straight-through "
        "relaxations, Gumbel-Rao, ReinMax, REBAR/RELAX); default: each one's own",
    )
    study.add_argument(
        "--tune-steps",
        type=int,
        default=diagnostics.TUNING_STEPS,
        help="variance_loss steps that tune RELAX's control variate, RODEO's h and double "
        f"CV's alpha before the study (default {diagnostics.TUNING_STEPS}; 0: untuned, "
        "which makes RELAX REBAR and RODEO RLOO)",
    )
    study.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    study.add_argument("--out", metavar="DIR", help="output folder (default results/PROBLEM)")
    study.add_argument(
        "--no-plot", action="store_true", help="skip the PNG (an earlier study.png is removed)"
    )
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="JAX's persistent compilation cache: a rerun loads the compiled programs from "
        f"here (default ${compile_cache.ENV}, else ~/.cache/jaxgrad/xla)",
    )
    study.add_argument(
        "--no-cache", action="store_true", help="compile everything afresh, store nothing"
    )
    dist = study.add_argument_group(
        "several processes",
        "Start the same command in every process: the keys are sharded over every device "
        "of every process (jax.distributed.initialize), the figures are those of one "
        "process with the same keys, and process 0 prints and writes them.",
    )
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="join JAX's multi-process runtime (on a TPU pod slice, SLURM or Open MPI the "
        "addresses are found automatically)",
    )
    dist.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address (with --distributed)"
    )
    dist.add_argument("--num-processes", type=int, help="processes in all (with --distributed)")
    dist.add_argument("--process-id", type=int, help="this process's index, from 0")
    group = study.add_argument_group("problem options")
    for name, kwargs in _PROBLEM_OPTIONS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    train_cli.add_parser(sub)
    sub.add_parser("list", help="list the problems and the registered estimators")
    return parser


# ---------------------------------------------------------------------------
# Running a study.


class _Progress:
    """A one-line progress bar on stderr (redrawn on a terminal, one line per step otherwise)."""

    def __init__(self, stream: TextIO, enabled: bool = True):
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and getattr(stream, "isatty", lambda: False)()
        self.width = 24
        self.last = 0.0

    def start(self, index: int, total: int, name: str) -> None:
        self.index, self.total, self.name, self.t0 = index, total, name, time.perf_counter()
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
            extra = f"; {note}" if note else ""
            note = (
                f"{stats.num_keys} estimates, {elapsed:.1f}s "
                f"(compile {stats.compile_time:.1f}s){extra}"
            )
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"[{self.index:>2}/{self.total}] {self.name:<28} {note}\n")
        self.stream.flush()


def _build_problem(ns: argparse.Namespace) -> problems.Problem:
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
        names = [n.strip() for item in ns.estimators for n in item.split(",") if n.strip()]
        if not names:
            raise CLIError(
                f"--estimators names no estimator (got {' '.join(ns.estimators)!r}); give "
                f"names such as {', '.join(applicable[:3])}, or omit it for all that apply."
            )
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


def _check_args(ns: argparse.Namespace) -> None:
    """Range checks of the numeric arguments (types and finiteness are argparse's)."""
    _check_int(ns.num_keys, "--num-keys", 2)
    if ns.num_keys is not None and ns.num_keys >= 2**32:
        raise CLIError(f"--num-keys must be below 2**32, got {ns.num_keys}.")
    _check_int(ns.batch_size, "--batch-size", 1)
    _check_int(ns.num_samples, "--num-samples", 1)
    _check_int(ns.tune_steps, "--tune-steps", 0)
    if not -(2**63) <= ns.seed < 2**63:
        raise CLIError(f"--seed must fit in 64 bits (|seed| < 2**63), got {ns.seed}.")
    if ns.problem not in problems.PROBLEMS:
        raise CLIError(
            f"unknown problem {ns.problem!r}; choose one of {', '.join(problems.PROBLEMS)}."
        )


def _check_distributed(ns: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("--coordinator", ns.coordinator),
            ("--num-processes", ns.num_processes),
            ("--process-id", ns.process_id),
        )
        if value is not None
    ]
    if given and not ns.distributed:
        raise CLIError(f"{given[0]} needs --distributed.")
    _check_int(ns.num_processes, "--num-processes", 1)
    _check_int(ns.process_id, "--process-id", 0)
    if ns.num_processes is not None and ns.process_id is not None:
        if ns.process_id >= ns.num_processes:
            raise CLIError(
                f"--process-id must be below --num-processes ({ns.num_processes}), "
                f"got {ns.process_id}."
            )
    if ns.coordinator is not None and not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", ns.coordinator):
        raise CLIError(f"--coordinator must be HOST:PORT, got {ns.coordinator!r}.")


def _join_processes(ns: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` with the given addresses (or JAX's auto-detection).

    CPU processes talk through JAX's gloo collectives; accelerators through
    their own. Must run before JAX starts its backends.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=ns.coordinator,
            num_processes=ns.num_processes,
            process_id=ns.process_id,
        )
    except (RuntimeError, ValueError) as err:
        raise CLIError(f"--distributed: could not join the processes: {_first_line(err)}") from None


def _check_temperature(ns: argparse.Namespace, chosen, variable: str) -> None:
    if ns.temperature is None:
        return
    with_temp = [n for n, info, _ in chosen if getattr(info, "temperature", None) is not None]
    if not with_temp:
        fits = [
            n for n, e in ESTIMATORS.items() if e.applies_to(variable) and e.temperature is not None
        ]
        hint = (
            f"those for {variable} variables: {', '.join(fits)}"
            if fits
            else (f"no estimator for {variable} variables has one")
        )
        raise CLIError(f"--temperature applies to none of the estimators of this study ({hint}).")


def run_study(
    ns: argparse.Namespace,
    problem: problems.Problem,
    chosen: list,
    skipped: list,
    explicit: bool,
    *,
    stderr: TextIO | None = None,
) -> diagnostics.Study:
    """Runs the study of parsed arguments with :func:`jaxgrad.diagnostics.study`.

    Exceptions propagate; one raised mid-study carries the finished estimators
    as ``err.partial_study`` (with the selection's skipped ones added).
    """
    num_keys = ns.num_keys or problems.PROBLEMS[problem.name][2]
    bar = _Progress(stderr or sys.stderr, enabled=not ns.quiet)
    extra = {"requested_estimators": ns.estimators, "num_samples": ns.num_samples}

    def complete(s: diagnostics.Study) -> diagnostics.Study:
        return dataclasses.replace(
            s,
            skipped=(*skipped, *s.skipped),
            settings={**s.settings, **extra, "problem": problem.name},
        )

    try:
        result = diagnostics.study(
            [n for n, _, _ in chosen],
            problem.f,
            problem.params,
            dist=problem.dist,
            exact=problem.exact,
            num_keys=num_keys,
            num_samples=ns.num_samples,
            temperature=ns.temperature,
            key=ns.seed,
            batch_size=ns.batch_size,
            tune_steps=ns.tune_steps,
            on_error="raise" if explicit else "skip",
            name=problem.name,
            description=problem.description,
            variable=problem.variable,
            event_shape=problem.event_shape,
            coordinate_names=problem.coordinate_names(),
            problem_settings=problem.settings,
            progress=bar,
        )
    except BaseException as err:
        partial = getattr(err, "partial_study", None)
        if partial is not None:
            err.partial_study = complete(partial)
        raise
    return complete(result)


# Kept for scripts that used the CLI's reporting functions: one implementation.
format_table = diagnostics.format_table
plot_study = diagnostics.plot_study
versions = diagnostics.versions


def write_outputs(study: diagnostics.Study, out: str, argv: Sequence[str], plot: bool = True):
    """Writes the study's files to ``out`` (see :func:`jaxgrad.diagnostics.write_study`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing-matplotlib note is printed by main
        return diagnostics.write_study(study, out, plot=plot, argv=argv)


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
    print("variational objectives (gradients of a bound on log p(x)):", file=stdout)
    for name, o in OBJECTIVES.items():
        kind = ("unbiased" if o.unbiased else "biased") + f" for the {o.bound.upper()} bound"
        kind += ", reparameterized q" if o.reparameterized else ", any q"
        print(f"  {name:<28} {', '.join(sorted(o.variables)):<32} {kind}", file=stdout)
    devices = jax.devices()
    print(
        f"devices: {len(devices)} x {devices[0].platform} (a study shards over all of them)",
        file=stdout,
    )


_FORCE_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def _cpu_device_count(environ: dict[str, str] | Any, cpu_count: int | None) -> int | None:
    """The number of CPU devices to ask JAX for, or ``None`` to leave JAX's choice alone.

    ``JAX_NUM_CPU_DEVICES`` (read by JAX itself) wins; then
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the older spelling,
    honoured as ``N``); otherwise one device per core.
    """
    if environ.get("JAX_NUM_CPU_DEVICES"):
        return None
    forced = _FORCE_COUNT.findall(environ.get("XLA_FLAGS", ""))
    if forced:
        return max(1, int(forced[-1]))
    return max(1, cpu_count or 1)


def _use_all_cpu_cores() -> None:
    """Gives JAX one CPU device per core (or what the environment asks for).

    Only possible before JAX initializes its backends (a fresh process) and
    only if the program has not chosen already; otherwise a no-op.
    """
    n = _cpu_device_count(os.environ, os.cpu_count())
    if n is None or jax.config.jax_num_cpu_devices != -1:
        return
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # backends already initialized: keep what there is
        pass


def _use_cache(ns: argparse.Namespace) -> None:
    """Turns on the persistent compilation cache unless ``--no-cache``.

    An unusable ``--cache-dir`` is a user error; an unusable default folder
    only turns the cache off, with a warning.
    """
    if ns.no_cache:
        if ns.cache_dir is not None:
            raise CLIError("--cache-dir and --no-cache contradict each other; pass one.")
        return
    path = ns.cache_dir or compile_cache.default_dir()
    problem = compile_cache.check_dir(path)
    if problem is None:
        compile_cache.enable(path)
    elif ns.cache_dir is not None:
        raise CLIError(f"--cache-dir {path!r} is not a writable folder ({problem}).")
    else:
        print(
            f"jaxgrad: warning: no compilation cache: cannot write to {path!r} ({problem}); "
            f"set --cache-dir or ${compile_cache.ENV}, or pass --no-cache",
            file=sys.stderr,
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _write(study: diagnostics.Study, out: str, argv: Sequence[str], plot: bool) -> dict:
    """Writes the study to ``out``; if that fails, to a fresh temporary folder instead.

    Returns the paths, with ``"fallback"`` naming the reason when the study
    went elsewhere (so a failing disk never loses the computed figures).
    """
    try:
        return write_outputs(study, out, argv, plot=plot)
    except OSError as err:  # includes StudyOutputError's cousins raised by the OS
        import tempfile

        elsewhere = tempfile.mkdtemp(prefix=f"jaxgrad-{study.name}-")
        paths = write_outputs(study, elsewhere, argv, plot=plot)
        paths["fallback"] = f"could not write to {out!r} ({err.strerror or err})"
        return paths


def _report_paths(paths: dict, plot: bool, stdout: TextIO) -> None:
    print(file=stdout)
    if "replaced" in paths:
        print(f"replaced the earlier study in {os.path.dirname(paths['json'])}", file=stdout)
    print(f"wrote {paths['csv']}, {paths['coordinates']}, {paths['json']}", file=stdout)
    if "png" in paths:
        print(f"plot: {paths['png']}", file=stdout)
    elif plot:
        print(
            "jaxgrad study: no plot: matplotlib is not installed "
            "(pip install 'jaxgrad[study]'); the CSV and JSON are written.",
            file=sys.stderr,
        )


def _stopped(err: BaseException, out: str, argv: Sequence[str], plot: bool) -> tuple[int, str]:
    """Writes the finished part of an interrupted study; returns (exit status, one line)."""
    partial = getattr(err, "partial_study", None)
    if isinstance(err, KeyboardInterrupt):
        status, what = 130, "interrupted"
    elif isinstance(err, _SKIPPABLE):
        status, what = 2, f"error: {partial.interruption if partial else _first_line(err)}"
    else:
        status, what = 1, f"error: {partial.interruption if partial else _first_line(err)}"
    if partial is None or not partial.results:
        return status, f"jaxgrad: {what}; no estimator had finished, nothing written"
    print(partial.table())
    paths = _write(partial, out, argv, plot)
    where = os.path.dirname(paths["json"])
    done = len(partial.results)
    note = f" ({paths['fallback']})" if "fallback" in paths else ""
    return status, (
        f"jaxgrad: {what}; wrote the {done} finished estimator(s) to {where}{note}, marked partial"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``jaxgrad COMMAND ...``; returns the exit status.

    0: done; 1: an estimator failed unexpectedly (finished ones written, partial);
    2: a user error (one line on stderr, before any work where possible);
    130: interrupted (finished estimators written, partial).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _use_all_cpu_cores()
    record = ["jaxgrad", *argv]
    try:
        ns = _parser().parse_args(_join_negative_values(argv))
        if ns.command == "list":
            _list(sys.stdout)
            return 0
        if ns.command == "train":
            bar = _Progress(sys.stderr, enabled=not ns.quiet)
            return train_cli.run(ns, record, bar, sys.stdout, sys.stderr)
        _check_args(ns)
        _check_distributed(ns)
        out = ns.out or os.path.join("results", ns.problem)
        if ns.distributed:
            _join_processes(ns)
        lead = jax.process_index() == 0  # prints and writes; the others only compute
        if not lead:
            ns.quiet = True
        try:
            if lead:
                diagnostics.check_output_dir(out, "--out")
        except diagnostics.StudyOutputError as err:
            raise CLIError(str(err)) from None
        _use_cache(ns)
        problem = _build_problem(ns)
        chosen, skipped, explicit = _select(ns, problem)
        _check_temperature(ns, chosen, problem.variable)
    except CLIError as err:
        print(f"jaxgrad: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxgrad: interrupted before the study started; nothing written", file=sys.stderr)
        return 130
    plot = not ns.no_plot
    try:
        with compile_cache.CompileCounter() as counter:
            study = run_study(ns, problem, chosen, skipped, explicit)
    except (Exception, KeyboardInterrupt) as err:
        if not lead:
            print(f"jaxgrad: process {jax.process_index()}: {_first_line(err)}", file=sys.stderr)
            return 130 if isinstance(err, KeyboardInterrupt) else 1
        status, line = _stopped(err, out, record, plot)
        print(line, file=sys.stderr)
        return status
    if not lead:
        return 0
    print(study.table())
    if not ns.quiet:
        print(f"compilation: {counter.summary()}", file=sys.stderr)
    paths = _write(study, out, record, plot)
    _report_paths(paths, plot, sys.stdout)
    if "fallback" in paths:
        print(
            f"jaxgrad: error: {paths['fallback']}; wrote the study to "
            f"{os.path.dirname(paths['json'])} instead",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
