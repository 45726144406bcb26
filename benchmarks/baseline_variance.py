"""Variance of the score-function estimator with every baseline, measured against exact.

The toy is ``E[(b - t)^2]``, ``b ~ Bernoulli(sigmoid(l))``, one coin; the
gradient is taken with respect to ``l`` (true value ``p (1 - p) (1 - 2t)``).
Each row is ``jaxgrad.score_function`` with ``num_samples`` samples and a
baseline:

* ``none``: plain REINFORCE;
* ``mean``: the constant ``E[f]``, the value a moving average
  (``jaxgrad.baselines.ema``) converges to;
* ``loo``: leave-one-out (RLOO);
* ``optimal``: the per-coordinate ``E[f g^2] / E[g^2]``, leave-one-out.

The variance of one estimate is measured over ``--num-keys`` independent keys
with ``jaxgrad.diagnostics.grad_stats``; all rows see the same keys (common
random numbers), in one compiled program. The exact variance is computed by
enumerating the ``2^N`` joint outcomes of the ``N`` samples in NumPy (float64),
an implementation independent of the library's. Closed forms for two rows
(``q = 1 - p``, ``D = 1 - 2t``):

* REINFORCE, one sample: ``g = f(b) (b - p)``,
  ``Var = p q^2 (1 - t)^4 + q p^2 t^4 - (p q D)^2``;
* RLOO, two samples: ``g = D / 2`` when the samples differ (probability
  ``2 p q``), else 0: ``Var = p q D^2 / 2 - (p q D)^2``.

    python benchmarks/baseline_variance.py [--num-keys 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import diagnostics

CASES = [(0.5, 0.45), (0.5, 0.499), (0.1, 0.45), (0.1, 0.499)]  # (p, t)
ROWS = [  # (num_samples, baseline)
    (1, "none"),
    (1, "mean"),
    (2, "none"),
    (2, "mean"),
    (2, "loo"),
    (2, "optimal"),
    (4, "none"),
    (4, "mean"),
    (4, "loo"),
    (4, "optimal"),
]


def exact_moments(n: int, baseline: str, p: float, t: float) -> tuple[float, float]:
    """Mean and variance of one estimate, by enumeration of ``{0, 1}^n`` (float64)."""
    mean_f = p * (1 - t) ** 2 + (1 - p) * t**2
    values, probs = [], []
    for bs in itertools.product([0.0, 1.0], repeat=n):
        b = np.array(bs)
        f, s = (b - t) ** 2, b - p
        if baseline == "none":
            c = np.zeros(n)
        elif baseline == "mean":
            c = np.full(n, mean_f)
        elif baseline == "loo":
            c = (f.sum() - f) / (n - 1)
        else:  # optimal, leave-one-out
            c = ((f * s * s).sum() - f * s * s) / ((s * s).sum() - s * s)
        values.append(np.mean((f - c) * s))
        probs.append(np.prod(np.where(b > 0, p, 1 - p)))
    values, probs = np.array(values), np.array(probs)
    mean = float(np.sum(probs * values))
    return mean, float(np.sum(probs * (values - mean) ** 2))


def closed_form(n: int, baseline: str, p: float, t: float) -> float | None:
    """The two closed forms of the module docstring (None for other rows)."""
    q, d = 1 - p, 1 - 2 * t
    if (n, baseline) == (1, "none"):
        return p * q**2 * (1 - t) ** 4 + q * p**2 * t**4 - (p * q * d) ** 2
    if (n, baseline) == (2, "loo"):
        return p * q * d * d / 2 - (p * q * d) ** 2
    return None


def _name(n: int, baseline: str) -> str:
    return f"{n}/{baseline}"


def study(key, params, t, mean_f):
    """Sum of every row's estimate, each on a clone of the same key (common random numbers)."""
    f = lambda b, t: jnp.sum((b - t) ** 2)
    names = [_name(*r) for r in ROWS]
    keys = [jax.random.clone(key) for _ in names[1:]] + [key]
    total = 0.0
    for (n, baseline), name, k in zip(ROWS, names, keys, strict=True):
        b = {"none": None, "mean": mean_f}.get(baseline, baseline)
        est = jaxgrad.score_function(f, dist=jaxgrad.dists.bernoulli, num_samples=n, baseline=b)
        total = total + est(k, params[name], t)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"Score-function variance on E[(b - t)^2], gradient w.r.t. the logit; "
        f"{args.num_keys:,} keys per row, common random numbers across rows; "
        f"jax {jax.__version__}, {jax.devices()[0].platform}."
    )
    header = (
        f"{'p':>4} {'t':>6} {'samples':>7} {'baseline':>8} {'mean':>11} {'exact mean':>11} "
        f"{'variance':>11} {'exact var':>11} {'closed form':>11} {'rel. err':>8}"
    )
    print(header)
    print("-" * len(header))
    for p, t in CASES:
        logit = float(np.log(p / (1 - p)))
        params = {_name(*r): jnp.full((1,), logit, jnp.float32) for r in ROWS}
        mean_f = jnp.asarray(p * (1 - t) ** 2 + (1 - p) * t**2, jnp.float32)
        t0 = time.perf_counter()
        stats = diagnostics.grad_stats(
            study,
            jax.random.key(args.seed),
            params,
            jnp.asarray(t, jnp.float32),
            mean_f,
            num_keys=args.num_keys,
        )
        elapsed = time.perf_counter() - t0
        for n, baseline in ROWS:
            name = _name(n, baseline)
            mean, var = float(stats.mean[name][0]), float(stats.variance[name][0])
            ex_mean, ex_var = exact_moments(n, baseline, p, t)
            closed = closed_form(n, baseline, p, t)
            if closed is not None:
                assert abs(closed - ex_var) <= 1e-12 + 1e-9 * abs(ex_var), (closed, ex_var)
            rel = abs(var / ex_var - 1) if ex_var > 1e-12 else float("nan")
            closed_s = f"{closed:11.4e}" if closed is not None else f"{'':>11}"
            rel_s = f"{rel:8.2%}" if rel == rel else f"{'(0)':>8}"
            print(
                f"{p:4.1f} {t:6.3f} {n:7d} {baseline:>8} {mean:11.4e} {ex_mean:11.4e} "
                f"{var:11.4e} {ex_var:11.4e} {closed_s} {rel_s}"
            )
        print(f"{'':>4} ({elapsed:.1f} s for {len(ROWS)} rows, compilation included)")


if __name__ == "__main__":
    main()
