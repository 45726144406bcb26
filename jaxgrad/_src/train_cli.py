"""``jaxgrad train PROBLEM``: the command line of :mod:`jaxgrad._src.train`.

Same conventions as ``jaxgrad study``: every argument and ``--out`` are
checked before anything is computed (one line, exit 2); a progress bar on
stderr; a table on stdout; ``train.csv``, ``train_curves.csv``, ``train.json``
(settings, versions, curves) and ``train.png`` written atomically to
``--out``. Checkpoints live in ``--out/checkpoints``: Ctrl-C (exit 130)
writes the finished estimators, marked partial, and the same command resumes
where it stopped; ``--fresh`` discards the checkpoints first.

Example::

    jaxgrad train binary-vae --data ../shared/data/binarized_mnist.npz --steps 2000
    jaxgrad train categorical-vae --shape 8x4 --estimators reinmax,st-gumbel-softmax
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Sequence
from typing import Any

from jaxgrad._src import train, vae

PROBLEMS = ("binary-vae", "categorical-vae")
#: Defaults that fit the 2-core development machine (see benchmarks/RESULTS.md).
DEFAULT_STEPS = 2000
DEFAULT_SEEDS = 3


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a binary or categorical VAE on MNIST with each estimator",
        description="Train PROBLEM's VAE with each estimator, several seeds at once (vmap), "
        "and report the training ELBO, the final 100-sample test bound, the encoder-gradient "
        "variance (EMA 0.999) and the time per step. Checkpointed: Ctrl-C keeps finished "
        "work and the same command resumes.",
    )
    p.add_argument("problem", metavar="PROBLEM", help=", ".join(PROBLEMS))
    p.add_argument("--data", metavar="PATH", help="binarized MNIST .npz (default: shared)")
    p.add_argument(
        "--estimators", nargs="+", metavar="NAME", help="estimator names; default: the problem's"
    )
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds 0..S-1, trained at once")
    p.add_argument(
        "--model",
        choices=("linear", "nonlinear"),
        default="linear",
        help="binary-vae: 784-200 or 784-200-200-200 (LeakyReLU 0.3)",
    )
    p.add_argument(
        "--shape",
        default="10x30",
        metavar="CxL",
        help="categorical-vae: C classes x L latents (default 10x30)",
    )
    p.add_argument(
        "--batch-size", type=int, help="images per step (default 50 binary, 100 categorical)"
    )
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam (default 1e-3)")
    p.add_argument("--log-every", type=int, default=100, help="steps per logged point")
    p.add_argument("--train-images", type=int, help="use the first N training images")
    p.add_argument(
        "--test-images",
        type=int,
        default=1000,
        help="test images for the IWAE-100 bound (default 1000 of 10000)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        help="initial temperature of the relaxed estimators (default: 1, annealed, for "
        "categorical-vae; the registry's for binary-vae)",
    )
    p.add_argument(
        "--anneal-rate",
        type=float,
        default=1e-4,
        help="categorical: t = max(min, t0 exp(-r step)) (default 1e-4)",
    )
    p.add_argument("--min-temperature", type=float, default=0.5, help="default 0.5")
    p.add_argument("--out", metavar="DIR", help="output folder (default results/train-PROBLEM)")
    p.add_argument("--fresh", action="store_true", help="discard the checkpoints in --out")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _split(names: Sequence[str] | None) -> list[str] | None:
    if names is None:
        return None
    return [n for item in names for n in item.split(",") if n]


def build(ns: argparse.Namespace):
    """``(config, specs, out)`` from the arguments; raises TrainError on a bad one."""
    from jaxgrad._src import problems

    if ns.problem not in PROBLEMS:
        raise train.TrainError(f"unknown problem {ns.problem!r}; choose {', '.join(PROBLEMS)}.")
    for name, value, low in (
        ("--steps", ns.steps, 1),
        ("--seeds", ns.seeds, 1),
        ("--log-every", ns.log_every, 1),
        ("--test-images", ns.test_images, 1),
    ):
        if value < low:
            raise train.TrainError(f"{name} must be at least {low}, got {value}.")
    if ns.batch_size is not None and ns.batch_size < 1:
        raise train.TrainError(f"--batch-size must be at least 1, got {ns.batch_size}.")
    for name, value in (("--learning-rate", ns.learning_rate), ("--anneal-rate", ns.anneal_rate)):
        if not (value >= 0 and value < float("inf")) or (name == "--learning-rate" and value == 0):
            raise train.TrainError(f"{name} must be a positive finite number, got {value}.")
    for name, value in (
        ("--temperature", ns.temperature),
        ("--min-temperature", ns.min_temperature),
    ):
        if value is not None and not (0 < value < float("inf")):
            raise train.TrainError(f"{name} must be positive and finite, got {value}.")
    if ns.problem == "binary-vae":
        model = vae.binary(ns.model)
        batch = 50
    else:
        m = re.fullmatch(r"(\d+)x(\d+)", ns.shape or "")
        if m is None or int(m.group(1)) < 2 or int(m.group(2)) < 1:
            raise train.TrainError(
                f"--shape must be CxL with C >= 2 classes and L >= 1 latents, got {ns.shape!r}."
            )
        model = vae.categorical(int(m.group(1)), int(m.group(2)))
        batch = 100
    data = ns.data or problems.default_data_path()
    if not os.path.exists(data):
        raise train.TrainError(
            f"--data: {data!r} does not exist; pass --data PATH to the binarized MNIST .npz "
            f"or set {problems.DATA_ENV}."
        )
    specs = train.resolve_estimators(ns.problem, model, _split(ns.estimators), ns.temperature)
    config = train.Config(
        problem=ns.problem,
        model=model,
        steps=ns.steps,
        seeds=tuple(range(ns.seeds)),
        batch_size=ns.batch_size or batch,
        learning_rate=float(ns.learning_rate),
        log_every=min(ns.log_every, ns.steps),
        test_images=ns.test_images,
        temperature=ns.temperature,
        anneal_rate=float(ns.anneal_rate),
        min_temperature=float(ns.min_temperature),
        data=os.path.abspath(data),
        train_images=ns.train_images or 50_000,
    )
    return config, specs, ns.out or os.path.join("results", f"train-{ns.problem}")


class _TrainProgress:
    """Adapts the study's progress bar to training steps."""

    def __init__(self, bar: Any):
        self.bar = bar

    def start(self, index: int, total: int, name: str) -> None:
        self.bar.start(index, total, name)

    def update(self, done: int, total: int) -> None:
        self.bar.update(done, total)

    def finish(self, r: train.EstimatorRun | None) -> None:
        if r is None:
            self.bar.finish(None, "stopped")
            return
        note = (
            f"{int(r.steps[-1])} steps, {1e3 * r.seconds_per_step:.1f} ms/step "
            f"(compile {r.compile_seconds:.1f}s)"
        )
        self.bar.finish(None, note)


def run(ns: argparse.Namespace, record: Sequence[str], bar: Any, stdout, stderr) -> int:
    """Runs ``jaxgrad train``; returns the exit status (0, 1, 2 or 130)."""
    from jaxgrad._src.study import StudyOutputError, check_output_dir

    try:
        config, specs, out = build(ns)
        check_output_dir(out, "--out")
        ckpt = os.path.join(out, "checkpoints")
        if ns.fresh and os.path.isdir(ckpt):
            shutil.rmtree(ckpt)
        data, test = train.load_data(config.data, ns.train_images, config.test_images)
        config = train.Config(**{**config.__dict__, "train_images": int(data.shape[0])})
    except (train.TrainError, StudyOutputError) as err:
        print(f"jaxgrad: error: {err}", file=stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxgrad: interrupted before training started; nothing written", file=stderr)
        return 130
    plot = not ns.no_plot
    try:
        result = train.train(
            config, specs, data, test, checkpoint_dir=ckpt, progress=_TrainProgress(bar)
        )
    except train.TrainError as err:
        print(f"jaxgrad: error: {err}", file=stderr)
        return 2
    except KeyboardInterrupt as err:
        part = getattr(err, "partial_run", None)
        if part is None or not part.results:
            print(f"jaxgrad: interrupted; checkpoints in {ckpt}; nothing else written", file=stderr)
            return 130
        print(train.format_table(part), file=stdout)
        paths = train.write_run(part, out, plot=plot, argv=record)
        print(
            f"jaxgrad: interrupted: wrote the partial run to {paths['json']}; the same "
            "command resumes from the checkpoints",
            file=stderr,
        )
        return 130
    print(train.format_table(result), file=stdout)
    paths = train.write_run(result, out, plot=plot, argv=record)
    print(
        f"\nwrote {', '.join(paths[k] for k in ('csv', 'curves', 'json') if k in paths)}",
        file=stdout,
    )
    if "png" in paths:
        print(f"plot: {paths['png']}", file=stdout)
    return 0
