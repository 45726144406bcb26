"""Where a ``jaxgrad train`` step's extra program comes from: each cause removed in turn.

The binary-VAE step of ``jaxgrad train`` (batch 50, linear or nonlinear,
RLOO with K = 2 and DisARM) against the same step written by hand
(``train_step.hand_step``), with each difference between the two removed
or added on its own:

* ``hand``: the step by hand, the estimator's noise one draw for the batch;
* ``hand, a key per image``: the same, with the noise drawn the way the
  trainer draws it: ``jax.random.split`` into one key per image and one
  padded flat draw per image (``samplers.uniform_open``), because jaxgrad's
  estimators are written for one image and vmapped with a key each;
* ``jaxgrad``: the trainer's step (:meth:`_Trainer.step`);
* ``jaxgrad, stop-gradient attach`` (DisARM): ``common.with_gradient``
  replaced by the plain ``value + sum(sg(g) * (p - sg(p)))``, i.e. without
  its contracts (NaN in, NaN out; zero gradient at infinite logits; a
  refused second derivative);
* ``jaxgrad, no magic box`` (RLOO): ``common.magic_box(x)`` replaced by
  ``1 + x - sg(x)``, the same first derivative without DiCE's ``exp``
  (and without its higher derivatives).

The two ablations of jaxgrad change what the library guarantees, so they
are measurements only, never options. For each variant: the optimized HLO
size (instructions and fusions: deterministic), the seconds to trace and to
lower + compile (median of ``--repeats`` fresh compiles after a warm-up
compile), and the time per step (median over interleaved rounds of
``--steps`` steps). The ``eval_shape`` checks of the estimators only cost
tracing time, which the trace column shows.

    python benchmarks/step_anatomy.py [--steps 200] [--repeats 3] [--models linear,nonlinear]
                                      [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
import train_step  # noqa: E402

from jaxgrad._src import problems  # noqa: E402
from jaxgrad._src.estimators import common  # noqa: E402


def _plain_with_gradient(value, params, grad, *, fn, differentiable=False):
    del fn
    sg = jax.lax.stop_gradient
    gs = jax.tree.leaves(grad)
    gs = gs if differentiable else [sg(g) for g in gs]
    extra = sum(jnp.sum(g * (p - sg(p))) for p, g in zip(jax.tree.leaves(params), gs, strict=True))
    return value + extra.astype(value.dtype)


def _plain_box(x):
    return 1.0 + x - jax.lax.stop_gradient(x)


@contextlib.contextmanager
def _patched(name, replacement):
    """``common.<name>`` replaced while tracing (the estimators look it up at call time)."""
    saved = getattr(common, name)
    setattr(common, name, replacement)
    try:
        yield
    finally:
        setattr(common, name, saved)


def _variants(kind, name, data, test, path):
    """``[(label, step, state, patch)]`` for one model and estimator."""
    tr, state = train_step.jaxgrad_trainer(kind, name, data, test, path)
    hand_state = {k: state[k] for k in ("params", "opt", "m1", "m2")}
    out = [
        ("hand", train_step.hand_step(name), hand_state, contextlib.nullcontext),
        (
            "hand, a key per image",
            train_step.hand_step(name, train_step.per_image_uniform),
            hand_state,
            contextlib.nullcontext,
        ),
        ("jaxgrad", tr.step, state, contextlib.nullcontext),
    ]
    if name == "disarm":
        patch = lambda: _patched("with_gradient", _plain_with_gradient)  # noqa: E731
        out.append(("jaxgrad, stop-gradient attach", tr.step, state, patch))
    else:
        patch = lambda: _patched("magic_box", _plain_box)  # noqa: E731
        out.append(("jaxgrad, no magic box", tr.step, state, patch))
    return out


def _build(step, state, key, data, patch):
    """``(compiled, trace s, lower + compile s)`` of a fresh jit of ``step``."""
    i0 = jnp.asarray(0, jnp.int32)
    jax.clear_caches()  # a fresh trace and compile, and the patch seen by the trace
    with patch():
        t0 = time.perf_counter()
        traced = jax.jit(step).trace(state, i0, key, data)
        t1 = time.perf_counter()
        compiled = traced.lower().compile()
        t2 = time.perf_counter()
    return compiled, t1 - t0, t2 - t1


def _hlo_size(compiled):
    text = compiled.as_text()
    ops = len(re.findall(r"^\s*(?:ROOT )?\S+ = ", text, re.M))
    fusions = len(re.findall(r"^\s*(?:ROOT )?\S+ = \S+ fusion\(", text, re.M))
    return ops, fusions


def measure(kind, name, data, test, path, steps, repeats):
    """One row per variant of ``(kind, name)``."""
    key = jax.random.key(0)
    variants = _variants(kind, name, data, test, path)
    builds = {v[0]: [] for v in variants}
    times = {v[0]: [] for v in variants}
    compiled = {}
    for r in range(repeats + 1):  # round 0 warms LLVM and the tracing caches up
        for label, step, state, patch in variants:
            c, trace_s, compile_s = _build(step, state, key, data, patch)
            compiled[label] = c
            if r:
                builds[label].append((trace_s, compile_s))
                times[label].append(train_step.time_loop(c, state, key, data, steps))
    rows = []
    for label, *_ in variants:
        ops, fusions = _hlo_size(compiled[label])
        rows.append(
            {
                "model": kind,
                "estimator": name,
                "variant": label,
                "hlo_ops": ops,
                "fusions": fusions,
                "trace_s": statistics.median(b[0] for b in builds[label]),
                "compile_s": statistics.median(b[1] for b in builds[label]),
                "ms_per_step": 1e3 * statistics.median(times[label]),
            }
        )
    hand = rows[0]
    for row in rows:
        row["ms_over_hand"] = row["ms_per_step"] / hand["ms_per_step"]
        row["compile_over_hand"] = row["compile_s"] / hand["compile_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="binarized MNIST .npz (default: shared)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (after one warm-up)")
    parser.add_argument("--models", default="linear,nonlinear", help="linear and/or nonlinear")
    parser.add_argument("--out", default=None, help="JSON of the figures (atomic)")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("argument --steps/--repeats: must be at least 1")
    models = args.models.split(",")
    if not models or any(m not in ("linear", "nonlinear") for m in models):
        parser.error(f"argument --models: linear and/or nonlinear, got {args.models!r}")
    if args.out is not None:
        results.check_out_file(parser, args.out)
    path = args.data or problems.default_data_path()
    data, test = train_step.load_data_or_exit(parser, path)
    doc = train_step.new_doc("step_anatomy")
    rows = doc["rows"]
    try:
        for kind in models:
            for name in ("rloo", "disarm"):
                for row in measure(kind, name, data, test, path, args.steps, args.repeats):
                    rows.append(row)
                    print(row, flush=True)
        doc["partial"] = False
    finally:
        if args.out is not None:
            results.write_json(args.out, doc)

    cols = ["model", "estimator", "variant", "HLO ops", "fusions", "trace s", "compile s"]
    cols += ["compile / hand", "ms / step", "step / hand"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = [r["model"], r["estimator"], r["variant"], str(r["hlo_ops"]), str(r["fusions"])]
        cells += [f"{r['trace_s']:.3f}", f"{r['compile_s']:.2f}", f"{r['compile_over_hand']:.2f}"]
        cells += [f"{r['ms_per_step']:.2f}", f"{r['ms_over_hand']:.3f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
