"""What XLA's CPU backend leaves on the table in the binary-VAE training step.

The hand-written JAX step of ``train_step.py`` (``hand_step``, DisARM, batch 50,
linear 784-200 and nonlinear 784-200-200-200 VAE, Adam), compiled by XLA:CPU,
measured five ways, each configuration in a process of its own (XLA flags are
read once, before ``import jax``):

1. profile: the compiled step against a program made of its dots alone (the
   ``dot`` instructions of the step's optimized HLO, same shapes and dimension
   numbers, on random inputs) and against a trivial program with the same
   argument and result leaves (the fixed per-call dispatch); XLA's cost
   analysis (flops, bytes) and the share of the flops in the dots;
2. dot throughput: each distinct dot of the step (the transposed forms of the
   backward pass included) as one jitted ``dot_general`` against
   ``torch.matmul`` and ``np.dot`` on the same (transposed-view) operands,
   float32, GFLOP/s per call (each library's call overhead included), and
   which library XLA hands the dots to (a ``__ynn_fusion``: YNNPACK; a bare
   ``dot``: Eigen);
3. threads: the step and the dots with XLA's defaults (2 threads here), with
   ``--xla_cpu_multi_thread_eigen=false`` and under ``taskset -c 0``, and
   eager PyTorch (``train_step._time_torch``) with ``torch.set_num_threads``
   1 and 2 (numpy's BLAS with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``);
4. backend flags: the step under each XLA:CPU flag value (a flag this jaxlib
   refuses is reported as such), and under JAX's unrolled threefry lowering
   (not an XLA flag: on CPU JAX lowers threefry as a rolled 5-iteration
   ``while`` loop; the worker registers the unrolled lowering JAX uses on
   other platforms). Exactness: the step's state and metrics after 5 steps
   against the default configuration's, bit for bit, with the largest
   absolute difference;
5. batch structure and layout: the dots of the optimized HLO (batched
   ``dot_general`` or not, operand layouts, float transposes and copies), and
   the per-image ``vmap`` of the decoder's cost over (samples x images)
   against the same cost written as one flat [100, 200] @ [200, 784] matmul
   (value and gradient; time and bits).

Timing: every configuration keeps its own worker process alive; the parent
sends one measurement at a time to one worker, round-robin over the workers
(rotated each round), so the configurations are interleaved A B C A B C ...
and never run at the same time. A round of a step is ``--steps`` calls in a
Python loop, dispatch included, as ``train_step._time_jax``; figures are the
median over ``--repeats`` rounds, ratios the median of the per-round ratios
to the default configuration. Load (``os.getloadavg``) is recorded with each
section.

    python benchmarks/xla_cpu.py [--data PATH] [--steps 50] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import results  # noqa: E402

MODELS = ("linear", "nonlinear")
ESTIMATOR = "disarm"
EXACT_STEPS = 5

# name, XLA_FLAGS, taskset to CPU 0, unrolled threefry lowering, measure the dots alone
CONFIGS = [
    ("default", "", False, False, True),
    (
        "1 thread (multi_thread_eigen=false)",
        "--xla_cpu_multi_thread_eigen=false",
        False,
        False,
        True,
    ),
    ("1 core (taskset -c 0)", "", True, False, True),
    (
        "Eigen dots (ynn_fusion_type=)",
        "--xla_cpu_experimental_ynn_fusion_type=",
        False,
        False,
        True,
    ),
    (
        "Eigen dots, 1 thread",
        "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_multi_thread_eigen=false",
        False,
        False,
        True,
    ),
    (
        "YNN dot,eltwise,reduce",
        "--xla_cpu_experimental_ynn_fusion_type=individual_dot,dot,eltwise,reduce",
        False,
        False,
        False,
    ),
    ("use_xnnpack=false", "--xla_cpu_use_xnnpack=false", False, False, False),
    (
        "XNN dot,eltwise,reduce",
        "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
        False,
        False,
        False,
    ),
    (
        "XNN dot, YNN off",
        "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_xnn_fusion_type=dot",
        False,
        False,
        False,
    ),
    (
        "XNN graph GREEDY",
        "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
        False,
        False,
        False,
    ),
    ("use_onednn=true", "--xla_cpu_use_onednn=true", False, False, False),
    (
        "onednn_custom_call=true",
        "--xla_cpu_experimental_onednn_custom_call=true",
        False,
        False,
        False,
    ),
    (
        "oneDNN dot fusion, YNN off",
        "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true"
        " --xla_cpu_experimental_onednn_fusion_type=dot",
        False,
        False,
        False,
    ),
    (
        "custom matmul tiling",
        "--xla_cpu_enable_custom_matmul_tiling=true --xla_cpu_matmul_tiling_m_dim=8"
        " --xla_cpu_matmul_tiling_n_dim=8 --xla_cpu_matmul_tiling_k_dim=8",
        False,
        False,
        False,
    ),
    ("prefer_vector_width=512", "--xla_cpu_prefer_vector_width=512", False, False, False),
    ("prefer_vector_width=128", "--xla_cpu_prefer_vector_width=128", False, False, False),
    (
        "concurrency scheduler off",
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",
        False,
        False,
        False,
    ),
    (
        "scheduler MEMORY_OPTIMIZED",
        "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
        False,
        False,
        False,
    ),
    (
        "scheduler CONCURRENCY_OPTIMIZED",
        "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
        False,
        False,
        False,
    ),
    ("use_fusion_emitters=false", "--xla_cpu_use_fusion_emitters=false", False, False, False),
    ("unrolled threefry (JAX lowering)", "", False, True, False),
]
TORCH_THREADS = (2, 1)
PROTO = "@@"  # prefix of the protocol lines on a worker's stdout


# --- the optimized HLO ------------------------------------------------------------

_DEF = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\](?:\{([\d,]*)[^}]*\})? (\S+?)\((.*)$")


def _dims(text, name):
    m = re.search(name + r"=\{([\d,]*)\}", text)
    return [int(v) for v in m.group(1).split(",") if v] if m else []


def hlo_dots(text):
    """The dots of an optimized HLO module: shapes, dimension numbers, operand layouts."""
    defs = {}
    for line in text.splitlines():
        m = _DEF.match(line)
        if m:
            shape = [int(v) for v in m.group(3).split(",") if v]
            layout = [int(v) for v in m.group(4).split(",") if v] if m.group(4) else []
            defs[m.group(1)] = (m.group(2), shape, layout, m.group(5))
    dots = []
    for line in text.splitlines():
        m = _DEF.match(line)
        if not m or m.group(5) != "dot":
            continue
        ops = re.findall(r"%([^\s,()]+)", m.group(6).split(")")[0])
        (_, ls, ll, lop), (_, rs, rl, rop) = defs[ops[0]], defs[ops[1]]
        dn = {
            "lhs_contracting": _dims(line, "lhs_contracting_dims"),
            "rhs_contracting": _dims(line, "rhs_contracting_dims"),
            "lhs_batch": _dims(line, "lhs_batch_dims"),
            "rhs_batch": _dims(line, "rhs_batch_dims"),
        }
        k = math.prod(ls[d] for d in dn["lhs_contracting"])
        out = [int(v) for v in m.group(3).split(",") if v]
        dots.append(
            {
                "lhs": ls,
                "rhs": rs,
                "out": out,
                **dn,
                "lhs_layout": ll,
                "rhs_layout": rl,
                "out_layout": [int(v) for v in (m.group(4) or "").split(",") if v],
                "lhs_from": lop,
                "rhs_from": rop,
                "flops": 2 * math.prod(out) * k,
            }
        )
    return dots


def hlo_summary(text):
    dots = hlo_dots(text)
    kinds = re.findall(r'"kind":"(__[a-z_]+)"', text)
    float2d = re.compile(r"= f32\[\d+,\d+\]\S* (transpose|copy)\(")
    return {
        "dots": len(dots),
        "batched_dots": sum(bool(d["lhs_batch"]) for d in dots),
        "library_fusions": {k: kinds.count(k) for k in sorted(set(kinds))},
        "custom_calls": sorted(set(re.findall(r'custom_call_target="([^"]+)"', text))),
        "float_2d_transposes_copies": len(float2d.findall(text)),
        "non_row_major_dot_operands": sum(
            (d["lhs_layout"] not in ([], [1, 0])) + (d["rhs_layout"] not in ([], [1, 0]))
            for d in dots
        ),
        "while_loops": len(re.findall(r" while\(", text)),
        "entry_kernels": _entry_kernels(text),
    }


def _entry_kernels(text):
    """Instructions of the ENTRY computation that run code (fusions, dots, loops, copies...)."""
    body = text.split("\nENTRY ", 1)[-1].split("\n}", 1)[0].splitlines()[1:]
    free = ("parameter", "constant", "get-tuple-element", "tuple", "bitcast")
    return sum(1 for ln in body if (m := _DEF.match(ln)) and m.group(5) not in free)


def dot_key(d):
    return (
        f"[{','.join(map(str, d['lhs']))}]x[{','.join(map(str, d['rhs']))}]"
        f" c{d['lhs_contracting']}{d['rhs_contracting']}"
    )


def dot_label(d):
    """`A @ B` with the transposes a 2-D dot's contracting dimensions imply."""
    a = f"[{d['lhs'][0]},{d['lhs'][1]}]" + ("" if d["lhs_contracting"] == [1] else ".T")
    b = f"[{d['rhs'][0]},{d['rhs'][1]}]" + ("" if d["rhs_contracting"] == [0] else ".T")
    return f"{a} @ {b}"


# --- the JAX worker -----------------------------------------------------------------


def _send(obj):
    print(PROTO + json.dumps(obj), flush=True)


def _time_dispatch(compiled, state, key, data, n):
    """``train_step.time_loop`` on a trivial program: the same state goes in every call."""
    import jax
    import jax.numpy as jnp

    jax.block_until_ready(compiled(state, jnp.asarray(0, jnp.int32), key, data))
    t0 = time.perf_counter()
    for i in range(n):
        out = compiled(state, jnp.asarray(i, jnp.int32), key, data)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def _time_calls(f, args, n):
    import jax

    jax.block_until_ready(f(*args))
    t0 = time.perf_counter()
    for _ in range(n):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def _build_states(path, state_file):
    """The hand-written step's initial states, from ``_Trainer`` as ``train_step.main``."""
    import jax
    import train_step

    from jaxgrad._src import train, vae

    data, test = train.load_data(path, None, 4)
    states = {}
    for kind in MODELS:
        model = vae.binary(kind)
        config = train.Config(
            "binary-vae",
            model,
            1,
            (0,),
            train_step.BATCH,
            train_step.LR,
            1,
            4,
            None,
            1e-4,
            0.5,
            path,
            int(data.shape[0]),
        )
        (spec,) = train.resolve_estimators("binary-vae", model, [ESTIMATOR], None)
        tr = train._Trainer(config, spec, data, test)
        state = jax.tree.map(lambda x: x[0], tr.init_state())
        hand = {k: state[k] for k in ("params", "opt", "m1", "m2")}
        states[kind] = jax.tree.map(np.asarray, hand)
    with open(state_file + ".tmp", "wb") as fh:
        pickle.dump(states, fh)
    os.replace(state_file + ".tmp", state_file)
    return data


def _batch_structure(state):
    """The decoder's cost per image under vmap against one flat matmul (value and grad)."""
    import jax
    import jax.numpy as jnp
    import train_step

    dec, prior = state["params"]["decoder"], state["params"]["prior"]
    kb, kx = jax.random.split(jax.random.key(1))
    b = (jax.random.uniform(kb, (2, train_step.BATCH, 200)) < 0.5).astype(jnp.float32)
    x = (jax.random.uniform(kx, (train_step.BATCH, 784)) < 0.3).astype(jnp.float32)

    def per_image(dec, b, x):
        f = jax.vmap(lambda bb, xx: train_step._neg_joint(dec, prior, bb, xx))
        return jnp.sum(jax.vmap(f, (0, None))(b, x))

    def flat(dec, b, x):
        logits = train_step._mlp(dec, b.reshape(-1, 200)).reshape(2, train_step.BATCH, 784)
        nj = -(
            jnp.sum(x * logits - jax.nn.softplus(logits), -1)
            + jnp.sum(b * prior - jax.nn.softplus(prior), -1)
        )
        return jnp.sum(nj)

    out = {}
    for name, f in (("per-image vmap", per_image), ("flat matmul", flat)):
        g = jax.jit(jax.value_and_grad(f))
        c = g.lower(dec, b, x).compile()
        out[name] = {"compiled": c, "args": (dec, b, x), "hlo": hlo_summary(c.as_text())}
        out[name]["dots"] = [dot_label(d) for d in hlo_dots(c.as_text())]
        v = c(dec, b, x)
        out[name]["value"] = jax.tree.map(np.asarray, v)
    a, f = out["per-image vmap"]["value"], out["flat matmul"]["value"]
    la, lf = jax.tree.leaves(a), jax.tree.leaves(f)
    same = all(np.array_equal(p, q) for p, q in zip(la, lf, strict=True))
    diff = max(float(np.max(np.abs(p - q))) for p, q in zip(la, lf, strict=True))
    return out, same, diff


def jax_worker(args):
    if args.unrolled:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        mlir.register_lowering(tf.threefry2x32_p, tf._threefry2x32_lowering_rule, platform="cpu")
    import jax
    import jax.numpy as jnp
    import train_step

    from jaxgrad._src import problems, train

    path = args.data or problems.default_data_path()
    if args.build:
        data = _build_states(path, args.state_file)
    else:
        data, _ = train.load_data(path, None, 4)
    with open(args.state_file, "rb") as fh:
        states = {k: jax.tree.map(jnp.asarray, v) for k, v in pickle.load(fh).items()}
    key = jax.random.key(0)
    i0 = jnp.asarray(0, jnp.int32)
    step = jax.jit(train_step.hand_step(ESTIMATOR))
    ready = {"threads": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "models": {}}
    compiled, dots_only, trivial, dot_fns = {}, {}, {}, {}
    for kind in MODELS:
        state = states[kind]
        t0 = time.perf_counter()
        compiled[kind] = step.lower(state, i0, key, data).compile()
        compile_s = time.perf_counter() - t0
        text = compiled[kind].as_text()
        dots = hlo_dots(text)
        cost = compiled[kind].cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        st, traj = state, []
        for i in range(EXACT_STEPS):
            st, m = compiled[kind](st, jnp.asarray(i, jnp.int32), key, data)
            traj.append(m)
        leaves = [np.asarray(v) for v in jax.tree.leaves((st, traj))]
        np.savez(os.path.join(args.tmp, f"{args.name_id}-{kind}.npz"), *leaves)
        ready["models"][kind] = {
            "compile_s": compile_s,
            "hlo": hlo_summary(text),
            "dots": dots,
            "flops": cost.get("flops"),
            "bytes_accessed": cost.get("bytes accessed"),
            "transcendentals": cost.get("transcendentals"),
            "leaves": len(jax.tree.leaves(state)),
        }
        if args.dots:
            rng = np.random.default_rng(0)
            ins = [
                (
                    jnp.asarray(rng.standard_normal(d["lhs"]), jnp.float32),
                    jnp.asarray(rng.standard_normal(d["rhs"]), jnp.float32),
                )
                for d in dots
            ]

            def only(ins, dots=dots):
                return [
                    jax.lax.dot_general(
                        a,
                        b,
                        (
                            (d["lhs_contracting"], d["rhs_contracting"]),
                            (d["lhs_batch"], d["rhs_batch"]),
                        ),
                    )
                    for (a, b), d in zip(ins, dots, strict=True)
                ]

            c = jax.jit(only).lower(ins).compile()
            dots_only[kind] = (c, ins)
            ready["models"][kind]["dots_only_hlo"] = hlo_summary(c.as_text())

            def tiny(state, i, key, data):
                small = jax.tree.map(lambda leaf: leaf.reshape(-1)[:1] + 1, state)
                f = i.astype(jnp.float32)
                return small, (f, f)

            trivial[kind] = jax.jit(tiny).lower(state, i0, key, data).compile()
            for d in dots:
                k = dot_key(d)
                if k in dot_fns:
                    continue
                dn = (
                    (d["lhs_contracting"], d["rhs_contracting"]),
                    (d["lhs_batch"], d["rhs_batch"]),
                )
                a = jnp.asarray(rng.standard_normal(d["lhs"]), jnp.float32)
                b = jnp.asarray(rng.standard_normal(d["rhs"]), jnp.float32)
                f = jax.jit(lambda a, b, dn=dn: jax.lax.dot_general(a, b, dn))
                dot_fns[k] = (f.lower(a, b).compile(), (a, b), d["flops"])
    if args.dots:
        z = jnp.zeros((2, 2), jnp.float32)
        tiny2 = jax.jit(lambda a, b: a[:1, :1] + b[:1, :1]).lower(z, z).compile()
        bs, same, diff = _batch_structure(states["linear"])
        ready["batch_structure"] = {
            n: {"hlo": v["hlo"], "dots": v["dots"]} for n, v in bs.items()
        } | {"bit_identical": same, "max_abs_diff": diff}
    _send({"ready": ready})
    for line in sys.stdin:
        cmd = json.loads(line)
        n = cmd["n"]
        if cmd["cmd"] == "step":
            kind = cmd["model"]
            _send({"s": train_step.time_loop(compiled[kind], states[kind], key, data, n)})
        elif cmd["cmd"] == "profile":
            kind = cmd["model"]
            c, ins = dots_only[kind]
            _send(
                {
                    "step": train_step.time_loop(compiled[kind], states[kind], key, data, n),
                    "dots_only": _time_calls(c, (ins,), n),
                    "dispatch": _time_dispatch(trivial[kind], states[kind], key, data, n),
                }
            )
        elif cmd["cmd"] == "dots":
            res = {k: _time_calls(c, ab, n) for k, (c, ab, _) in dot_fns.items()}
            res["dispatch (2 args)"] = _time_calls(tiny2, (z, z), n)
            _send(res)
        elif cmd["cmd"] == "batch":
            _send({k: _time_calls(v["compiled"], v["args"], n) for k, v in bs.items()})
        elif cmd["cmd"] == "quit":
            return


# --- the PyTorch / numpy worker -----------------------------------------------------


def torch_worker(args):
    import torch
    import train_step

    from jaxgrad._src import problems

    torch.set_num_threads(args.torch_threads)
    path = args.data or problems.default_data_path()
    x = problems.load_binarized_mnist(path, "train").astype(np.uint8)
    _send({"ready": {"threads": torch.get_num_threads()}})
    mats = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        n = cmd["n"]
        if cmd["cmd"] == "step":
            _send({"s": train_step._time_torch(ESTIMATOR, cmd["model"], x, n, 1)})
        elif cmd["cmd"] == "dots":
            rng = np.random.default_rng(0)
            res = {}
            for k, d in cmd["dots"].items():
                if k not in mats:
                    a = rng.standard_normal(d["lhs"]).astype(np.float32)
                    b = rng.standard_normal(d["rhs"]).astype(np.float32)
                    a = a if d["lhs_contracting"] == [1] else a.T  # views, as autograd's
                    b = b if d["rhs_contracting"] == [0] else b.T
                    mats[k] = (a, b, torch.from_numpy(a), torch.from_numpy(b))
                a, b, ta, tb = mats[k]
                for lib, f, u, v in (("torch", torch.matmul, ta, tb), ("numpy", np.dot, a, b)):
                    f(u, v)
                    t0 = time.perf_counter()
                    for _ in range(n):
                        f(u, v)
                    res[f"{lib} {k}"] = (time.perf_counter() - t0) / n
            _send(res)
        elif cmd["cmd"] == "quit":
            return


# --- the parent ---------------------------------------------------------------------


class Worker:
    def __init__(self, name, cmd, env, log):
        self.name, self.log = name, log
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, text=True
        )
        self.ready = None
        self.error = None

    def read(self):
        for line in self.proc.stdout:
            if line.startswith(PROTO):
                return json.loads(line[len(PROTO) :])
        self.proc.wait()
        self.log.flush()
        with open(self.log.name) as fh:
            tail = [ln.strip() for ln in fh if ln.strip()]
        self.error = (tail[-1] if tail else f"exit {self.proc.returncode}")[:300]
        return None

    def ask(self, **cmd):
        if self.error:
            return None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self.read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit", "n": 0}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _load():
    return round(os.getloadavg()[0], 2)


def _med(v):
    return statistics.median(v) if v else math.nan


def _compare(tmp, ref_id, cid, kind):
    a = np.load(os.path.join(tmp, f"{ref_id}-{kind}.npz"))
    b = np.load(os.path.join(tmp, f"{cid}-{kind}.npz"))
    same = all(np.array_equal(a[k], b[k]) for k in a.files)
    diff = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a.files)
    return same, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="binarized MNIST .npz (default: shared)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps (calls) per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--out", default=None, help="JSON of the figures (atomic)")
    for flag in ("--worker", "--build", "--dots", "--unrolled"):
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in ("--state-file", "--tmp", "--name-id"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    parser.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("argument --steps/--repeats: must be at least 1")
    if args.worker:
        return torch_worker(args) if args.torch_threads else jax_worker(args)
    if args.out is not None:
        results.check_out_file(parser, args.out)

    import jax  # the versions only; no computation in this process

    doc = {
        "benchmark": "xla_cpu",
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "cpus": os.cpu_count(),
        "estimator": ESTIMATOR,
        "steps": args.steps,
        "repeats": args.repeats,
        "load": {"start": _load()},
        "partial": True,
    }
    tmp = tempfile.mkdtemp(prefix="xla-cpu-")
    state_file = os.path.join(tmp, "states.pkl")
    workers = {}
    base = [sys.executable, os.path.abspath(__file__), "--worker", "--tmp", tmp]
    base += ["--state-file", state_file] + (["--data", args.data] if args.data else [])
    t_start = time.perf_counter()

    def start(cid, name, flags, pin, unrolled, dots, build=False):
        env = dict(os.environ, XLA_FLAGS=flags)
        cmd = ["taskset", "-c", "0"] if pin else []
        cmd += base + ["--name-id", str(cid)] + ["--build"] * build
        cmd += ["--dots"] * dots + ["--unrolled"] * unrolled
        log = open(os.path.join(tmp, f"{cid}.log"), "w")  # noqa: SIM115
        workers[cid] = Worker(name, cmd, env, log)

    try:
        # start: the default configuration builds the states; then all the others at once
        start(0, *CONFIGS[0], build=True)
        workers[0].ready = (workers[0].read() or {}).get("ready")
        if workers[0].ready is None:
            raise SystemExit(f"the default configuration failed: {workers[0].error}")
        pending = [(cid, cfg) for cid, cfg in enumerate(CONFIGS[1:], 1)]
        pending += [(f"torch{t}", t) for t in TORCH_THREADS]
        for j in range(0, len(pending), 2):  # two at a time: one per core
            for cid, cfg in pending[j : j + 2]:
                if isinstance(cid, int):
                    start(cid, *cfg)
                    continue
                env = dict(os.environ, OMP_NUM_THREADS=str(cfg), OPENBLAS_NUM_THREADS=str(cfg))
                cmd = base + ["--torch-threads", str(cfg)]
                log = open(os.path.join(tmp, f"{cid}.log"), "w")  # noqa: SIM115
                workers[cid] = Worker(f"torch, {cfg} thread(s)", cmd, env, log)
            for cid, _ in pending[j : j + 2]:
                workers[cid].ready = (workers[cid].read() or {}).get("ready")
        doc["startup_s"] = time.perf_counter() - t_start
        doc["load"]["after_startup"] = _load()

        # configurations: accepted or not, the HLO, exactness against the default
        configs = []
        doc["configs"] = configs
        ref = workers[0].ready["models"]
        for cid, (name, flags, pin, unrolled, _) in enumerate(CONFIGS):
            w = workers[cid]
            row = {"name": name, "xla_flags": flags, "taskset": pin, "unrolled_threefry": unrolled}
            if w.ready is None:
                row["accepted"] = "Unknown flag" not in (w.error or "")
                row["ran"] = False
                row["error"] = w.error
            else:
                row["accepted"] = row["ran"] = True
                row["models"] = {}
                for kind in MODELS:
                    m = w.ready["models"][kind]
                    same, diff = _compare(tmp, 0, cid, kind)
                    row["models"][kind] = {
                        "compile_s": m["compile_s"],
                        "hlo": m["hlo"],
                        "bit_identical": same,
                        "max_abs_diff": diff,
                    }
            configs.append(row)
        doc["default_hlo"] = {
            kind: {k: ref[kind][k] for k in ("hlo", "dots", "flops", "bytes_accessed", "leaves")}
            | {"dots_only_hlo": ref[kind]["dots_only_hlo"]}
            for kind in MODELS
        }
        doc["batch_structure"] = workers[0].ready["batch_structure"]

        # 1 + 3 + 4: step time per configuration, interleaved rounds
        live = [c for c in workers if workers[c].ready is not None]
        times = {c: {k: [] for k in MODELS} for c in live}
        for r in range(args.repeats):
            order = live[r % len(live) :] + live[: r % len(live)]
            for c in order:
                for kind in MODELS:
                    out = workers[c].ask(cmd="step", model=kind, n=args.steps)
                    if out is not None:
                        times[c][kind].append(out["s"])
        doc["load"]["after_steps"] = _load()
        step_rows = []
        doc["step"] = step_rows
        for c in live:
            row = {"config": workers[c].name}
            for kind in MODELS:
                t = times[c][kind]
                ref_t = times[0][kind]
                row[kind] = {
                    "ms": 1e3 * _med(t),
                    "ms_rounds": [1e3 * v for v in t],
                    "over_default": _med([a / b for a, b in zip(t, ref_t, strict=False)]),
                }
                if c != 0 and not str(c).startswith("torch"):
                    row[kind] |= {
                        k: configs[c]["models"][kind][k] for k in ("bit_identical", "max_abs_diff")
                    }
            step_rows.append(row)

        # 1: profile (step, dots alone, dispatch), default and 1-core configurations
        prof = {}
        doc["profile"] = prof
        pcs = [c for c in live if not str(c).startswith("torch") and CONFIGS[c][4]]
        for c in pcs:
            prof[workers[c].name] = {
                k: {"step": [], "dots_only": [], "dispatch": []} for k in MODELS
            }
        for _ in range(args.repeats):
            for c in pcs:
                for kind in MODELS:
                    out = workers[c].ask(cmd="profile", model=kind, n=args.steps)
                    if out is not None:
                        for k, v in out.items():
                            prof[workers[c].name][kind][k].append(v)
        doc["load"]["after_profile"] = _load()

        # 2: the dots, XLA against torch and numpy, interleaved
        uniq = {}
        for kind in MODELS:
            for d in ref[kind]["dots"]:
                uniq.setdefault(dot_key(d), d)
        dot_times = {c: {} for c in pcs + [f"torch{t}" for t in TORCH_THREADS]}
        n_dots = max(args.steps // 2, 5)
        for _ in range(args.repeats):
            for c in dot_times:
                if c not in live:
                    continue
                kw = {"dots": uniq} if str(c).startswith("torch") else {}
                out = workers[c].ask(cmd="dots", n=n_dots, **kw)
                for k, v in (out or {}).items():
                    dot_times[c].setdefault(k, []).append(v)
        doc["load"]["after_dots"] = _load()
        dot_rows = []
        doc["dots"] = dot_rows
        for k, d in uniq.items():
            row = {"dot": dot_label(d), "key": k, "mflop": d["flops"] / 1e6}
            row["count"] = {
                kind: sum(dot_key(e) == k for e in ref[kind]["dots"]) for kind in MODELS
            }
            for c, tt in dot_times.items():
                if str(c).startswith("torch"):
                    for lib in ("torch", "numpy"):
                        v = _med(tt.get(f"{lib} {k}", []))
                        row[f"{lib}, {c[5:]}t"] = {"us": 1e6 * v, "gflops": d["flops"] / v / 1e9}
                else:
                    v = _med(tt.get(k, []))
                    row[f"xla {workers[c].name}"] = {"us": 1e6 * v, "gflops": d["flops"] / v / 1e9}
            dot_rows.append(row)
        doc["dispatch_2_args_us"] = {
            workers[c].name: 1e6 * _med(dot_times[c].get("dispatch (2 args)", [])) for c in pcs
        }

        # 5: batch structure, per-image vmap against one flat matmul
        bt = {}
        for _ in range(args.repeats):
            out = workers[0].ask(cmd="batch", n=args.steps)
            for k, v in (out or {}).items():
                bt.setdefault(k, []).append(v)
        doc["batch_structure"]["us"] = {k: 1e6 * _med(v) for k, v in bt.items()}
        doc["load"]["end"] = _load()
        doc["wall_s"] = time.perf_counter() - t_start
        doc["partial"] = False
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)  # the workers' states, logs and outputs
        if args.out is not None:
            results.write_json(args.out, doc)
    report(doc)


def report(doc):
    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    print(
        f"\njax {doc['jax']}, {doc['cpus']} CPUs, DisARM, batch 50, {doc['steps']} steps x "
        f"{doc['repeats']} rounds; load {doc['load']}; {doc['wall_s']:.0f} s"
    )
    print("\n## Step time per configuration (median ms; ratio: median of per-round ratios)\n")
    cols = ["configuration", "linear ms", "/ default", "nonlinear ms", "/ default"]
    cols += ["bit-identical (lin, nonlin)", "max abs diff", "dot library (lin)"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    cfg = {c["name"]: c for c in doc["configs"]}
    for r in doc["step"]:
        lin, non = r["linear"], r["nonlinear"]
        c = cfg.get(r["config"])
        if c is None or r["config"] == "default":
            bits, diff = ("reference", "-") if c else ("-", "-")
        else:
            bits = f"{lin['bit_identical']}, {non['bit_identical']}"
            diff = f"{max(lin['max_abs_diff'], non['max_abs_diff']):.2g}"
        lib = "-"
        if c is not None:
            h = c["models"]["linear"]["hlo"]
            lib = ", ".join(f"{k} x{v}" for k, v in h["library_fusions"].items()) or "Eigen"
            lib += f" ({h['dots']} dots)"
        cells = [r["config"], f(lin["ms"], ".2f"), f(lin["over_default"], ".3f")]
        cells += [f(non["ms"], ".2f"), f(non["over_default"], ".3f"), bits, diff, lib]
        print("| " + " | ".join(cells) + " |")
    for c in doc["configs"]:
        if not c["ran"]:
            why = "flag refused" if "Unknown flag" in c["error"] else "fails to compile the step"
            print(f"| {c['name']} | {why}: {c['error']} |")

    print("\n## Profile of the step (median us per call)\n")
    cols = ["configuration", "model", "step", "dots alone", "dispatch (trivial, same leaves)"]
    cols += ["dots / step", "rest / step", "step flops (M)", "dot flops share", "step MB accessed"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for name, p in doc["profile"].items():
        for kind in MODELS:
            h = doc["default_hlo"][kind]
            s, d, z = (1e6 * _med(p[kind][k]) for k in ("step", "dots_only", "dispatch"))
            dfl = sum(x["flops"] for x in h["dots"])
            cells = [name, kind, f(s, ".0f"), f(d, ".0f"), f(z, ".0f"), f(d / s, ".2f")]
            cells += [f((s - d) / s, ".2f"), f(h["flops"] / 1e6, ".1f")]
            cells += [f(dfl / h["flops"], ".2f"), f(h["bytes_accessed"] / 1e6, ".1f")]
            print("| " + " | ".join(cells) + " |")

    print("\n## Dots of the step, GFLOP/s per call (median; each library's call overhead in)\n")
    libs = [k for k in doc["dots"][0] if k.startswith(("xla", "torch", "numpy"))]
    cols = ["dot", "MFLOP", "count (lin, nonlin)"] + libs
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in doc["dots"]:
        cells = [
            r["dot"],
            f"{r['mflop']:.2f}",
            f"{r['count']['linear']}, {r['count']['nonlinear']}",
        ]
        cells += [f"{f(r[k]['gflops'], '.1f')} ({f(r[k]['us'], '.0f')} us)" for k in libs]
        print("| " + " | ".join(cells) + " |")
    print(f"\ndispatch of a 2-argument jit (us): {doc['dispatch_2_args_us']}")

    print("\n## Batch structure and layout (default configuration)\n")
    for kind in MODELS:
        h = doc["default_hlo"][kind]
        print(f"- {kind}: {h['hlo']}; dots: {[dot_label(d) for d in h['dots']]}")
    b = doc["batch_structure"]
    for k in ("per-image vmap", "flat matmul"):
        print(
            f"- decoder cost + grad, {k}: {b['us'][k]:.0f} us; dots {b[k]['dots']}; {b[k]['hlo']}"
        )
    print(
        f"- per-image vmap vs flat: bit-identical {b['bit_identical']},"
        f" max abs diff {b['max_abs_diff']:.2g}"
    )


if __name__ == "__main__":
    main()
