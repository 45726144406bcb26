"""Gumbel-softmax under each PRNG implementation: jaxgrad against the textbook formula.

For each implementation (``threefry2x32``, ``rbg``, ``unsafe_rbg``, as typed
keys ``jax.random.key(seed, impl=...)``) and each sampler (soft and hard
``gumbel_softmax``, soft and hard ``relaxed_bernoulli``), this times the
forward and backward pass of ``sum(w * sample)`` with respect to the logits
and the temperature, on ``[4096, 1024]`` float32 logits, against the same
sampler written by hand from ``jax.random.gumbel`` / ``jax.random.logistic``
on the same key:

* Gumbel-softmax: ``y = softmax((l + G) / tau)``; hard:
  ``onehot(argmax(y)) + y - stop_gradient(y)`` (as ``F.gumbel_softmax``);
* binary Concrete: ``y = sigmoid((l + L) / tau)``; hard:
  ``(l + L > 0) + y - stop_gradient(y)``.

The hand-written versions are not safe (a ``-inf`` logit gives a NaN
temperature gradient, and the hard value is rounded); jaxgrad's must be, at
the speed of the hand-written ones. ``previous`` is jaxgrad's code before
the rewrite, kept here for the before/after comparison: the Gumbel-softmax
as ``exp(log_softmax(where(masked, z, z / tau)))`` with the argmax over
``z = l + G``, the binary Concrete with the same ``where``, both on noise
drawn flat (padded to a multiple of 32) and reshaped.

Timing: every program is compiled first, then ``rounds`` interleaved rounds
call each program once in turn; reported are medians per program, the ratio
of medians and the median of per-round ratios (steadier on a loaded machine).
Besides time, the compiled programs are compared by XLA's cost analysis
(bytes accessed, transcendentals per element) and by the number of kernels of
the compiled program that read or write a full-size array ("passes").

    python benchmarks/prng.py [--rounds 15] [--impls threefry2x32 rbg unsafe_rbg]
"""

from __future__ import annotations

import argparse
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import results

import jaxgrad

IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
SHAPE = (4096, 1024)
TEMPERATURE = 0.5
TARGET = 1.05  # jaxgrad / hand-written, every implementation


# --------------------------------------------------------------------------- samplers


def _hand_gumbel_softmax(key, logits, t, hard):
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    y = jax.nn.softmax((logits + g) / t, axis=-1)
    if hard:
        d = jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)
        y = d + y - jax.lax.stop_gradient(y)
    return y


def _previous_uniform(key, shape):
    """jaxgrad's earlier ``uniform_open``: a flat draw (padded to 32) and a reshape."""
    size = int(np.prod(shape))
    padded = -(-size // 32) * 32
    u = jax.random.uniform(key, (padded,), jnp.float32, minval=jnp.finfo(jnp.float32).tiny)
    return u[:size].reshape(shape)


def _previous_masked(z, t):
    """jaxgrad's earlier ``z / t`` with infinite entries kept (two ``where``)."""
    inf = jnp.isinf(z)
    return jnp.where(inf, z, jnp.where(inf, jnp.zeros_like(z), z) / t)


def _previous_gumbel_softmax(key, logits, t, hard):
    """jaxgrad's Gumbel-softmax before the fused rewrite (log space, argmax over z)."""
    z = logits - jnp.log(-jnp.log(_previous_uniform(key, logits.shape)))
    idx = jnp.argmax(z, axis=-1)
    y = jnp.exp(jax.nn.log_softmax(_previous_masked(z, t), axis=-1))
    if hard:
        d = jax.nn.one_hot(idx, z.shape[-1], dtype=z.dtype)
        y = jax.lax.stop_gradient(d) + (y - jax.lax.stop_gradient(y))
    return y


def _jaxgrad_gumbel_softmax(key, logits, t, hard):
    return jaxgrad.gumbel_softmax(key, logits, temperature=t, hard=hard)


def _hand_relaxed_bernoulli(key, logits, t, hard):
    z = logits + jax.random.logistic(key, logits.shape, logits.dtype)
    y = jax.nn.sigmoid(z / t)
    if hard:
        y = (z > 0).astype(y.dtype) + y - jax.lax.stop_gradient(y)
    return y


def _previous_relaxed_bernoulli(key, logits, t, hard):
    """jaxgrad's binary Concrete before the rewrite (flat draw, where-masked z / t)."""
    u = _previous_uniform(key, logits.shape)
    z = logits + (jnp.log(u) - jnp.log1p(-u))
    y = jax.nn.sigmoid(_previous_masked(z, t))
    if hard:
        b = (z > 0).astype(y.dtype)
        y = jax.lax.stop_gradient(b) + (y - jax.lax.stop_gradient(y))
    return y


def _jaxgrad_relaxed_bernoulli(key, logits, t, hard):
    return jaxgrad.relaxed_bernoulli(key, logits, temperature=t, hard=hard)


#: sampler -> {variant: fn(key, logits, t, hard)}; "hand" is the reference.
SAMPLERS = {
    "gumbel_softmax": {
        "hand": _hand_gumbel_softmax,
        "jaxgrad": _jaxgrad_gumbel_softmax,
        "previous": _previous_gumbel_softmax,
    },
    "relaxed_bernoulli": {
        "hand": _hand_relaxed_bernoulli,
        "jaxgrad": _jaxgrad_relaxed_bernoulli,
        "previous": _previous_relaxed_bernoulli,
    },
}


def step(fn, hard: bool):
    """``jit(value_and_grad)`` of ``sum(w * sample)`` in the logits and the temperature."""

    def loss(logits, t, key, w):
        return jnp.sum(w * fn(key, logits, t, hard))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


# --------------------------------------------------------------------------- compiled programs

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%(\S+)\s*=\s*(\(.*?\)|\S+)\s+([\w-]+)\((.*?)\)")
_ARRAY = re.compile(r"[a-z]+\d*\[([\d,]*)\]")
_TRIVIAL = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def _elements(shape: str) -> int:
    """The largest array of an HLO shape string (tuples: the largest component)."""
    sizes = [int(np.prod([int(d) for d in dims.split(",") if d])) for dims in _ARRAY.findall(shape)]
    return max(sizes, default=0)


def full_size_passes(hlo_text: str, size: int) -> int:
    """Kernels of the entry computation that read or write an array of ``size`` elements."""
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    shapes: dict[str, int] = {}
    passes = 0
    for line in entry.splitlines()[1:]:
        match = _INSTR.match(line)
        if match is None:
            continue
        name, shape, op, operands = match.groups()
        shapes[name] = _elements(shape)
        if op in _TRIVIAL:
            continue
        touched = [shapes[name]] + [shapes.get(o, 0) for o in re.findall(r"%([\w.-]+)", operands)]
        passes += max(touched) >= size
    return passes


def cost(compiled, size: int) -> dict:
    """Bytes accessed (MiB), transcendentals and flops per element, full-size passes."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax
        analysis = analysis[0]
    return {
        "mib": analysis.get("bytes accessed", 0.0) / 2**20,
        "transcendentals": analysis.get("transcendentals", 0.0) / size,
        "flops": analysis.get("flops", 0.0) / size,
        "passes": full_size_passes(compiled.as_text(), size),
    }


# --------------------------------------------------------------------------- measurement


def measure(impl: str, rounds: int = 15, shape=SHAPE, samplers=tuple(SAMPLERS)) -> list[dict]:
    """One row per (sampler, hard, variant) under ``impl``, timed in interleaved rounds."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=shape), jnp.float32)
    t = jnp.float32(TEMPERATURE)
    key = jax.random.key(0, impl=impl)
    size = int(np.prod(shape))
    programs, rows = {}, {}
    for sampler in samplers:
        for hard in (False, True):
            for variant, fn in SAMPLERS[sampler].items():
                f = step(fn, hard)
                t0 = time.perf_counter()
                compiled = f.lower(logits, t, key, w).compile()
                compile_s = time.perf_counter() - t0
                jax.block_until_ready(compiled(logits, t, key, w))  # warm up
                k = (sampler, hard, variant)
                programs[k] = compiled
                rows[k] = {
                    "impl": impl,
                    "sampler": sampler,
                    "hard": hard,
                    "variant": variant,
                    "shape": list(shape),
                    "compile_s": compile_s,
                    **cost(compiled, size),
                    "times": [],
                }
    for _ in range(rounds):
        for k, compiled in programs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(logits, t, key, w))
            rows[k]["times"].append(time.perf_counter() - t0)
    for (sampler, hard, _), row in rows.items():
        hand = np.asarray(rows[(sampler, hard, "hand")]["times"])
        mine = np.asarray(row["times"])
        row["median_ms"] = float(np.median(mine) * 1e3)
        row["ratio"] = float(np.median(mine) / np.median(hand))
        row["paired_ratio"] = float(np.median(mine / hand))
    return list(rows.values())


def report(row: dict) -> str:
    mode = "hard" if row["hard"] else "soft"
    return (
        f"{row['impl']:<12} {row['sampler']:<17} {mode} {row['variant']:<8} "
        f"{row['median_ms']:7.1f} ms  ratio {row['ratio']:.3f} (paired {row['paired_ratio']:.3f})  "
        f"{row['mib']:5.0f} MiB  {row['transcendentals']:.2f} transc/elt  "
        f"{row['passes']:2d} passes  compile {row['compile_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--shape", type=int, nargs=2, default=list(SHAPE))
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.out:
        results.check_out_file(parser, args.out)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, load {os.getloadavg()}")
    rows = []
    try:
        for impl in args.impls:
            for row in measure(impl, args.rounds, tuple(args.shape)):
                rows.append(row)
                print(report(row))
    except KeyboardInterrupt:
        if args.out:  # keep the implementations that finished
            results.write_json(args.out, {"partial": True, "rows": rows})
        raise SystemExit(f"interrupted: {len(rows)} rows kept in {args.out or 'no file'}") from None
    print(f"load after: {os.getloadavg()}")
    if args.out:
        results.write_json(args.out, {"partial": False, "rows": rows})


if __name__ == "__main__":
    main()
