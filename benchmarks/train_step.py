"""One binary-VAE training step of ``jaxgrad train`` against the same step written by hand.

For the linear (784-200) and nonlinear (784-200-200-200) Bernoulli VAE, batch
50, one seed, and RLOO (K = 2), DisARM and RELAX, three implementations of
the same step, measured in one process on the same data:

* ``jaxgrad``: the step ``jaxgrad train`` compiles (:class:`_Trainer.step`);
* ``jax``: the step written by hand in plain JAX (+ optax's Adam): the batch,
  the encoder, the estimator's surrogate, the analytic entropy, Adam, the
  EMAs of the encoder gradient and the one-sample training ELBO, nothing
  from jaxgrad;
* ``torch``: the same step in PyTorch 2.13 (CPU, eager; needs the ``bench``
  extra), timed in a process of its own. RELAX is left out of the two
  hand-written columns (its conditional Gumbel and double backprop are not
  written by hand here).

Each step is jitted on its own and called ``--steps`` times in a Python loop
(dispatch included in both JAX columns); the variants take turns for
``--repeats`` rounds, and the figures are medians (ratios: the median of the
per-round ratios). ``compile``
is the time to lower and compile one step. The *scanned* columns run the
same ``--steps`` steps inside one compiled ``lax.scan``, as ``jaxgrad train``
does (its chunks of ``--log-every`` steps): one dispatch per chunk, where the
loop pays one per step for the state's ~20 buffers. Ratios: jaxgrad /
hand-written JAX time (target <= 1.05) and PyTorch / jaxgrad time (target
>= 2), for both.

    python benchmarks/train_step.py [--data PATH] [--steps 200] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402

from jaxgrad._src import problems, train, vae  # noqa: E402

BATCH = 50
LR = 1e-3
DECAY = train.EMA_DECAY


# --- the hand-written JAX step ----------------------------------------------------


def _mlp(layers, h):
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = jax.nn.leaky_relu(h, 0.3)
    return h


def _neg_joint(dec, prior, b, x):  # -log p(x, b)
    logits = _mlp(dec, b)
    return -(
        jnp.sum(x * logits - jax.nn.softplus(logits)) + jnp.sum(b * prior - jax.nn.softplus(prior))
    )


def batch_uniform(key, shape):
    """The estimator's noise for the whole batch: one draw."""
    return jax.random.uniform(key, shape)


def per_image_uniform(key, shape):
    """The same noise drawn as ``jaxgrad train`` draws it: a key split per image (the batch is
    the second-last axis) and one padded flat draw per image (``samplers.uniform_open``)."""
    from jaxgrad._src import samplers

    *lead, batch, dim = shape
    keys = jax.random.split(key, batch)
    u = jax.vmap(lambda k: samplers.uniform_open(k, (*lead, dim), jnp.float32))(keys)
    return jnp.moveaxis(u, 0, -2)


def _surrogate(name, params, x, key, uniform=batch_uniform):
    """Batch mean of the negative ELBO whose gradient is the estimator's (by hand)."""
    enc, dec, prior = params["encoder"], params["decoder"], params["prior"]
    logits = _mlp(enc, x)  # [B, D]
    sg = jax.lax.stop_gradient
    p = jax.nn.sigmoid(logits)
    neg_h = jnp.sum(p * logits - jax.nn.softplus(logits), axis=-1)
    f = jax.vmap(lambda b, xx: _neg_joint(dec, prior, b, xx))
    if name == "rloo":
        u = uniform(key, (2, *logits.shape))
        b = (u < sg(p)).astype(jnp.float32)
        fv = jax.vmap(f, (0, None))(b, x)  # [2, B]
        adv = sg(fv - fv[::-1])  # f_k - f_other
        logq = jnp.sum(b * logits - jax.nn.softplus(logits), axis=-1)
        return jnp.mean(jnp.mean(fv, 0) + 0.5 * jnp.sum(adv * logq, 0) + neg_h)
    if name == "disarm":
        u = uniform(key, logits.shape)
        b1 = (u < sg(p)).astype(jnp.float32)
        b2 = (1 - u < sg(p)).astype(jnp.float32)
        f1, f2 = f(b1, x), f(b2, x)
        w = (
            0.5
            * sg(f1 - f2)[:, None]
            * (1 - 2 * b2)
            * (b1 != b2)
            * jax.nn.sigmoid(jnp.abs(sg(logits)))
        )
        return jnp.mean(0.5 * (f1 + f2) + jnp.sum(w * logits, -1) + neg_h)
    raise ValueError(name)


def hand_step(name, uniform=batch_uniform):
    """The step by hand; ``uniform(key, shape)`` draws the estimator's noise."""
    import optax

    opt = optax.adam(LR)

    def step(state, i, seed_key, data):
        k_batch, k_est, k_elbo = jax.random.split(jax.random.fold_in(seed_key, i + 1), 3)
        idx = jax.random.randint(k_batch, (BATCH,), 0, data.shape[0])
        x = data[idx].astype(jnp.float32)
        params = state["params"]
        grads = jax.grad(lambda pa: _surrogate(name, pa, x, k_est, uniform))(params)
        logits = _mlp(params["encoder"], x)
        u = jax.random.uniform(k_elbo, logits.shape)
        b = (u < jax.nn.sigmoid(logits)).astype(jnp.float32)
        neg_h = jnp.sum(jax.nn.sigmoid(logits) * logits - jax.nn.softplus(logits), axis=-1)
        nj = jax.vmap(lambda bb, xx: _neg_joint(params["decoder"], params["prior"], bb, xx))(b, x)
        elbo = -jnp.mean(nj + neg_h)
        updates, opt_state = opt.update(grads, state["opt"], params)
        g = grads["encoder"]
        m1 = jax.tree.map(lambda m, gg: DECAY * m + (1 - DECAY) * gg, state["m1"], g)
        m2 = jax.tree.map(lambda m, gg: DECAY * m + (1 - DECAY) * gg * gg, state["m2"], g)
        c = 1.0 - DECAY ** (i + 1).astype(jnp.float32)
        n = sum(x.size for x in jax.tree.leaves(g))
        var = (
            sum(
                jnp.sum(b2 / c - (b1 / c) ** 2)
                for b1, b2 in zip(jax.tree.leaves(m1), jax.tree.leaves(m2), strict=True)
            )
            / n
        )
        new = {"params": optax.apply_updates(params, updates), "opt": opt_state, "m1": m1, "m2": m2}
        return new, (elbo, var)

    return step


def jaxgrad_trainer(kind, name, data, test, path):
    """``(trainer, state of seed 0)``: the step ``jaxgrad train binary-vae`` compiles."""
    model = vae.binary(kind)
    config = train.Config(
        "binary-vae", model, 1, (0,), BATCH, LR, 1, 4, None, 1e-4, 0.5, path, int(data.shape[0])
    )
    (spec,) = train.resolve_estimators("binary-vae", model, [name], None)
    tr = train._Trainer(config, spec, data, test)
    return tr, jax.tree.map(lambda x: x[0], tr.init_state())


def load_data_or_exit(parser, path):
    """``(train, test)`` images, or the parser's one-line error."""
    try:
        return train.load_data(path, None, 4)
    except train.TrainError as err:
        parser.error(str(err))


def new_doc(benchmark):
    """The JSON document of a training-step benchmark, ``partial`` until it finishes."""
    return {
        "benchmark": benchmark,
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "load": os.getloadavg()[0],
        "batch": BATCH,
        "rows": [],
        "partial": True,
    }


# --- timing -----------------------------------------------------------------------


def _loop_timer(step, state, key, data, steps):
    """``(compile s, round)``: ``round()`` is :func:`time_loop` of the compiled step."""
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(state, jnp.asarray(0, jnp.int32), key, data).compile()
    compile_s = time.perf_counter() - t0
    return compile_s, lambda: time_loop(compiled, state, key, data, steps)


def time_loop(compiled, state, key, data, steps):
    """Seconds per step of ``steps`` calls of a compiled step from Python, after a warm call."""
    st = state
    jax.block_until_ready(compiled(st, jnp.asarray(0, jnp.int32), key, data))
    t0 = time.perf_counter()
    for i in range(steps):
        st, m = compiled(st, jnp.asarray(i, jnp.int32), key, data)
    jax.block_until_ready((st, m))
    return (time.perf_counter() - t0) / steps


def _scan_timer(step, state, key, data, steps):
    """``(compile s, round)`` for ``steps`` steps in one compiled ``lax.scan``, as ``jaxgrad
    train`` runs them (one dispatch per chunk, not per step)."""

    def chunk(st, key, data):
        return jax.lax.scan(lambda s, i: step(s, i, key, data), st, jnp.arange(steps))

    t0 = time.perf_counter()
    compiled = jax.jit(chunk).lower(state, key, data).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(state, key, data))

    def one_round():
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, key, data))
        return (time.perf_counter() - t0) / steps

    return compile_s, one_round


def _interleaved(timers, repeats):
    """``{name: [seconds per step of each round]}``, the timers taking turns round by round."""
    times = {name: [] for name in timers}
    for _ in range(repeats):
        for name, one_round in timers.items():
            times[name].append(one_round())
    return times


def _median_ratio(a, b):
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def _time_torch(name, kind, data_np, steps, repeats):
    try:
        import torch
    except ModuleNotFoundError:
        return None
    torch.manual_seed(0)
    sizes = [784, 200] if kind == "linear" else [784, 200, 200, 200]

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.LeakyReLU(0.3))
        return torch.nn.Sequential(*layers)

    enc, dec = mlp(sizes), mlp(sizes[::-1])
    prior = torch.nn.Parameter(torch.zeros(200))
    params = [*enc.parameters(), *dec.parameters(), prior]
    opt = torch.optim.Adam(params, lr=LR)
    data = torch.from_numpy(data_np)
    m1 = [torch.zeros_like(p) for p in enc.parameters()]
    m2 = [torch.zeros_like(p) for p in enc.parameters()]
    sp = torch.nn.functional.softplus

    def neg_joint(b, x):
        lg = dec(b)
        return -((x * lg - sp(lg)).sum(-1) + (b * prior - sp(prior)).sum(-1))

    def step(i):
        idx = torch.randint(0, data.shape[0], (BATCH,))
        x = data[idx].float()
        logits = enc(x)
        p = torch.sigmoid(logits)
        neg_h = (p * logits - sp(logits)).sum(-1)
        if name == "rloo":
            b = (torch.rand(2, *logits.shape) < p.detach()).float()
            fv = neg_joint(b, x)
            adv = (fv - fv.flip(0)).detach()
            logq = (b * logits - sp(logits)).sum(-1)
            loss = (fv.mean(0) + 0.5 * (adv * logq).sum(0) + neg_h).mean()
        else:
            u = torch.rand_like(logits)
            b1 = (u < p.detach()).float()
            b2 = (1 - u < p.detach()).float()
            f1, f2 = neg_joint(b1, x), neg_joint(b2, x)
            w = (
                0.5
                * (f1 - f2).detach()[:, None]
                * (1 - 2 * b2)
                * (b1 != b2)
                * torch.sigmoid(logits.detach().abs())
            )
            loss = (0.5 * (f1 + f2) + (w * logits).sum(-1) + neg_h).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            bb = (torch.rand_like(logits) < p).float()
            elbo = -(neg_joint(bb, x) + neg_h).mean()
            c = 1 - DECAY ** (i + 1)
            tot, n = 0.0, 0
            for a, s, prm in zip(m1, m2, enc.parameters(), strict=True):
                a.mul_(DECAY).add_(prm.grad, alpha=1 - DECAY)
                s.mul_(DECAY).addcmul_(prm.grad, prm.grad, value=1 - DECAY)
                tot += float((s / c - (a / c) ** 2).sum())
                n += a.numel()
        opt.step()
        return float(elbo), tot / n

    step(0)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def _torch_in_subprocess(name, kind, path, steps, repeats):
    """PyTorch's time per step, measured in a fresh process (in this one, sharing the cores
    with JAX's thread pool, it measured up to 10x slower)."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--torch", name, kind, "--data", path]
    cmd += ["--steps", str(steps), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    t = float(out[-1]) if out else math.nan
    return None if math.isnan(t) else t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="binarized MNIST .npz (default: shared)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON of the figures (atomic)")
    parser.add_argument("--torch", nargs=2, metavar=("ESTIMATOR", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("argument --steps/--repeats: must be at least 1")
    if args.out is not None:
        results.check_out_file(parser, args.out)
    path = args.data or problems.default_data_path()
    if args.torch is not None:  # the PyTorch timing, alone in its own process
        x = problems.load_binarized_mnist(path, "train").astype(np.uint8)
        t = _time_torch(*args.torch, x, args.steps, args.repeats)
        print("nan" if t is None else repr(t))
        return
    data, test = load_data_or_exit(parser, path)
    doc = new_doc("train_step")
    rows = doc["rows"]
    try:
        for kind in ("linear", "nonlinear"):
            for name in ("rloo", "disarm", "relax"):
                tr, state = jaxgrad_trainer(kind, name, data, test, path)
                timers = {}
                key = jax.random.key(0)
                ours = (tr.step, state, key, data)
                ours_c, timers["jaxgrad"] = _loop_timer(*ours, args.steps)
                timers["jaxgrad_scan"] = _scan_timer(*ours, args.steps)[1]
                if name != "relax":
                    hand_state = {k: state[k] for k in ("params", "opt", "m1", "m2")}
                    hand = (hand_step(name), hand_state, key, data)
                    hand_c, timers["jax"] = _loop_timer(*hand, args.steps)
                    timers["jax_scan"] = _scan_timer(*hand, args.steps)[1]
                times = _interleaved(timers, args.repeats)
                med = {k: statistics.median(v) for k, v in times.items()}
                row = {
                    "model": kind,
                    "estimator": name,
                    "jaxgrad_ms": 1e3 * med["jaxgrad"],
                    "jaxgrad_compile_s": ours_c,
                    "jaxgrad_scan_ms": 1e3 * med["jaxgrad_scan"],
                }
                if name != "relax":
                    row.update(jax_ms=1e3 * med["jax"], jax_compile_s=hand_c)
                    row.update(ratio_jax=_median_ratio(times["jaxgrad"], times["jax"]))
                    row.update(jax_scan_ms=1e3 * med["jax_scan"])
                    scan = _median_ratio(times["jaxgrad_scan"], times["jax_scan"])
                    row.update(ratio_jax_scan=scan)
                    t = _torch_in_subprocess(
                        name, kind, path, max(args.steps // 4, 10), args.repeats
                    )
                    if t is not None:
                        row.update(torch_ms=1e3 * t, torch_over_jaxgrad=t / med["jaxgrad"])
                        row.update(torch_over_jaxgrad_scan=t / med["jaxgrad_scan"])
                rows.append(row)
                print(row, flush=True)
        doc["partial"] = False
    finally:
        if args.out is not None:
            results.write_json(args.out, doc)

    def g(r, k, fmt):
        return format(r[k], fmt) if k in r else "-"

    cols = ["model", "estimator", "jaxgrad ms", "jax ms", "jaxgrad / jax", "torch ms"]
    cols += ["torch / jaxgrad", "compile s (jaxgrad, jax)", "scanned: jaxgrad ms", "jax ms"]
    cols += ["jaxgrad / jax", "torch / jaxgrad"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = [r["model"], r["estimator"], f"{r['jaxgrad_ms']:.2f}", g(r, "jax_ms", ".2f")]
        cells += [g(r, "ratio_jax", ".3f"), g(r, "torch_ms", ".2f")]
        cells += [g(r, "torch_over_jaxgrad", ".2f")]
        cells += [f"{r['jaxgrad_compile_s']:.2f}, {g(r, 'jax_compile_s', '.2f')}"]
        cells += [f"{r['jaxgrad_scan_ms']:.2f}", g(r, "jax_scan_ms", ".2f")]
        cells += [g(r, "ratio_jax_scan", ".3f"), g(r, "torch_over_jaxgrad_scan", ".2f")]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
