"""Measured against exact variance of every discrete estimator on the Bernoulli toy.

The toy is ``E[(b - t)^2]``, ``b ~ Bernoulli(sigmoid(l))``, one coin; the
gradient is taken with respect to ``l`` and its true value is
``p (1 - p) (1 - 2t)``. For each estimator the variance of one estimate is
measured over ``--num-keys`` independent keys (``jaxgrad.diagnostics.grad_stats``)
and compared with the exact variance:

* REINFORCE (one sample): ``Var = p q^2 f(1)^2 + q p^2 f(0)^2 - (p q D)^2``
  with ``q = 1 - p``, ``D = f(1) - f(0) = 1 - 2t``.
* RLOO (two samples): ``D / 2`` when the samples differ (probability
  ``2 p q``), else 0: ``Var = p q D^2 / 2 - (p q D)^2``.
* ARM: ``D |u - 1/2|`` on ``u in [0, m) U (1 - m, 1]``, ``m = min(p, q)``,
  else 0: ``E g^2 = D^2 (2/3) (1/8 - (1/2 - m)^3)``.
* DisARM: ``D max(p, q) / 2`` on the same event: ``Var = D^2 m (1 - m)^2 (1/2 - m)``.
* REBAR (temperature 1/2, eta 1): no closed form; ``E[g]`` and ``E[g^2]`` are
  integrals over the two uniforms ``(u, v)``, computed here by Gauss-Legendre
  quadrature in float64 (split at the jump ``u = 1 - p``) with an independent
  NumPy implementation of the estimator.
* RELAX with REBAR's control variate: the same estimator, hence REBAR's value.
* IndeCateR and the unordered set estimator (``k = 2``) on the same coin
  written as a 2-class categorical with logits ``[l, 0]``: both enumerate the
  two outcomes, so their variance is exactly 0.

    python benchmarks/discrete_variance.py [--num-keys 1000000]
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import diagnostics

CASES = [(0.5, 0.499), (0.1, 0.499), (0.5, 0.45)]  # (p, t)
TEMPERATURE, ETA = 0.5, 1.0


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x):
    return np.logaddexp(0.0, x)


def rebar_exact_moments(p: float, t: float, nodes: int = 400) -> tuple[float, float]:
    """``E[g]`` and ``E[g^2]`` of REBAR on the toy, by tensor Gauss-Legendre quadrature."""
    l = math.log(p / (1 - p))
    f = lambda b: (b - t) ** 2
    df = lambda s: 2.0 * (s - t)
    lam = TEMPERATURE
    x, w = np.polynomial.legendre.leggauss(nodes)

    def segment(lo, hi):
        return lo + (hi - lo) * (x + 1) / 2, w * (hi - lo) / 2

    v, wv = segment(0.0, 1.0)
    m1 = m2 = 0.0
    for lo, hi, b in ((0.0, 1 - p, 0.0), (1 - p, 1.0, 1.0)):
        u, wu = segment(lo, hi)
        uu, vv = np.meshgrid(u, v, indexing="ij")
        z = l + np.log(uu) - np.log1p(-uu)
        if b:
            zt = _softplus(l + np.log(vv)) - np.log1p(-vv)
            dzt = _sigmoid(l + np.log(vv))
        else:
            zt = np.log(vv) - _softplus(np.log1p(-vv) - l)
            dzt = _sigmoid(np.log1p(-vv) - l)
        s, st = _sigmoid(z / lam), _sigmoid(zt / lam)
        g = (
            (f(b) - ETA * f(st)) * (b - p)
            + ETA * df(s) * s * (1 - s) / lam
            - ETA * df(st) * st * (1 - st) / lam * dzt
        )
        weights = np.outer(wu, wv)
        m1 += np.sum(weights * g)
        m2 += np.sum(weights * g * g)
    return m1, m2


def exact_variances(p: float, t: float) -> dict[str, float]:
    q, m = 1 - p, min(p, 1 - p)
    f1, f0 = (1 - t) ** 2, t**2
    d = f1 - f0
    mean = p * q * d
    rebar_m1, rebar_m2 = rebar_exact_moments(p, t)
    assert abs(rebar_m1 - mean) < 1e-9 * max(1.0, abs(mean)) + 1e-12, (rebar_m1, mean)
    rebar = rebar_m2 - rebar_m1**2
    return {
        "reinforce": p * q**2 * f1**2 + q * p**2 * f0**2 - mean**2,
        "rloo": p * q * d**2 / 2 - mean**2,
        "arm": d**2 * (2 / 3) * (1 / 8 - (0.5 - m) ** 3) - mean**2,
        "disarm": d**2 * m * (1 - m) ** 2 * (0.5 - m),
        "rebar": rebar,
        "relax": rebar,
        "indecater": 0.0,
        "unordered_set": 0.0,
    }


def estimators(t: float) -> dict[str, tuple[object, str, int]]:
    """name -> (est(key, logits), parameterization, f-evals per estimate)."""
    toy = lambda b: (b[0] - t) ** 2
    toy_cat = lambda x: (x[0] - t) ** 2  # one-hot of [b = 1, b = 0]
    out = {}
    if hasattr(jaxgrad, "score_function"):
        out["reinforce"] = (jaxgrad.score_function(toy, dist=jaxgrad.dists.bernoulli), "bern", 1)
    if hasattr(jaxgrad, "rloo"):
        out["rloo"] = (jaxgrad.rloo(toy, dist=jaxgrad.dists.bernoulli, num_samples=2), "bern", 2)
    out["arm"] = (jaxgrad.arm(toy), "bern", 2)
    out["disarm"] = (jaxgrad.disarm(toy), "bern", 2)
    out["rebar"] = (jaxgrad.rebar(toy, temperature=TEMPERATURE, eta=ETA), "bern", 3)
    cv = lambda z, eta: eta * toy(jax.nn.sigmoid(z / TEMPERATURE))
    relax = jaxgrad.relax(toy, cv)
    out["relax"] = (lambda key, l: relax(key, l, jnp.float32(ETA)), "bern", 3)  # 1 f + 2 c
    out["indecater"] = (jaxgrad.indecater(toy_cat), "cat", 2)
    out["unordered_set"] = (jaxgrad.unordered_set(toy_cat, num_samples=2), "cat", 2)
    return out


def as_bernoulli(est, kind):
    """An estimator of the coin's logit: the categorical ones see logits ``[l, 0]``."""
    if kind == "bern":
        return est
    return lambda key, l: est(key, jnp.concatenate([l, jnp.zeros_like(l)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-keys", type=int, default=1_000_000)
    args = parser.parse_args()
    print(
        f"Bernoulli toy E[(b - t)^2], gradient w.r.t. the logit; {args.num_keys:.0e} keys; "
        f"REBAR/RELAX at temperature {TEMPERATURE}, eta {ETA}; device {jax.devices()[0].platform}"
    )
    header = (
        f"{'estimator':<14}{'p':>5}{'t':>7}{'f-evals':>8}{'exact var':>13}"
        f"{'measured var':>14}{'ratio':>8}{'mean/true':>11}{'us/est':>8}"
    )
    print(header)
    print("-" * len(header))
    key = jax.random.key(0)
    for i, (p, t) in enumerate(CASES):
        exact = exact_variances(p, t)
        logits = jnp.asarray([math.log(p / (1 - p))], jnp.float32)
        true = p * (1 - p) * (1 - 2 * t)
        # The categorical estimators' gradient has two coordinates; the coin's logit is the first.
        for j, (name, (est, kind, f_evals)) in enumerate(estimators(t).items()):
            s = diagnostics.grad_stats(
                as_bernoulli(est, kind),
                jax.random.fold_in(key, 100 * i + j),
                logits,
                num_keys=args.num_keys,
                f_evals=f_evals,
            )
            var, mean = float(np.asarray(s.variance)[0]), float(np.asarray(s.mean)[0])
            ex = exact[name]
            ratio = f"{var / ex:8.4f}" if ex > 0 else f"{'-':>8}"
            print(
                f"{name:<14}{p:>5}{t:>7}{f_evals:>8}{ex:>13.4e}{var:>14.4e}{ratio}"
                f"{mean / true:>11.4f}{1e6 * s.time_per_estimate:>8.3f}"
            )
        print()


if __name__ == "__main__":
    main()
