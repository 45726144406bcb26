"""The Bernoulli-toy gradient study as a Storchastic-style PyTorch loop.

Storchastic (van Krieken et al., NeurIPS 2021) gathers gradient statistics one
estimate per iteration: sample, evaluate the cost, build the estimator's
surrogate, ``backward()``, record the gradient. Storchastic itself is not
installable here (it is not on the package index this project uses), so this
module writes the same loop by hand in PyTorch, without Storchastic's own
bookkeeping (plates, method objects), which would only slow it down: the ratio
it gives is a lower bound on the speed-up over Storchastic.

    python benchmarks/torch_reference.py --iterations 20000
"""

from __future__ import annotations

import argparse
import time

TARGET = 0.45


def _torch():
    try:
        import torch
    except ModuleNotFoundError as err:
        raise SystemExit(
            "benchmarks/torch_reference.py needs PyTorch: pip install -e '.[bench]'"
        ) from err
    return torch


def f(b, torch):
    return torch.sum((b - TARGET) ** 2)


def reinforce_step(logits, torch):
    """One REINFORCE estimate: surrogate f(b).detach() * log p(b), then backward."""
    dist = torch.distributions.Bernoulli(logits=logits)
    b = dist.sample()
    surrogate = f(b, torch).detach() * dist.log_prob(b).sum()
    surrogate.backward()


def disarm_step(logits, torch):
    """One DisARM estimate (Dong et al. 2020) as a surrogate whose gradient it is."""
    u = torch.rand_like(logits)
    p = torch.sigmoid(logits)
    b = (u < p).to(logits.dtype)
    b_anti = (1 - u < p).to(logits.dtype)
    with torch.no_grad():
        sign = 1 - 2 * b_anti  # (-1)^{b~}
        g = (
            0.5
            * (f(b, torch) - f(b_anti, torch))
            * sign
            * (b != b_anti)
            * torch.sigmoid(logits.abs())
        )
    (g * logits).sum().backward()


STEPS = {"reinforce": reinforce_step, "disarm": disarm_step}


def measure(name: str, iterations: int = 20_000, seed: int = 0) -> dict:
    """Estimates per second of the loop, and the mean and variance it finds."""
    torch = _torch()
    torch.manual_seed(seed)
    step = STEPS[name]
    logits = torch.zeros(1, requires_grad=True)
    grads = torch.empty(iterations)
    for _ in range(min(100, iterations)):  # warm up
        step(logits, torch)
        logits.grad = None
    t0 = time.perf_counter()
    for i in range(iterations):
        step(logits, torch)
        grads[i] = logits.grad[0]
        logits.grad = None
    elapsed = time.perf_counter() - t0
    return {
        "estimator": name,
        "iterations": iterations,
        "per_s": iterations / elapsed,
        "mean": float(grads.mean()),
        "variance": float(grads.var()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()
    for name in STEPS:
        r = measure(name, args.iterations)
        print(
            f"{name:<10} torch {r['torch']}: {r['per_s']:.0f} estimates/s "
            f"(mean {r['mean']:.4g}, variance {r['variance']:.4g})"
        )


if __name__ == "__main__":
    main()
