"""Studies on JAX's multi-process runtime: two local CPU processes give the bits of one.

The test starts two ``jaxgrad study --distributed`` processes itself, each with
two CPU devices, joined by ``jax.distributed.initialize`` on a free local port
(JAX's gloo CPU collectives). Their 4-device study must equal, to the last
bit, the same study run in this single process on its 8 devices: the default
chunk width depends on neither the device nor the process count, and every
chunk sum goes to the same place of one summation tree. Only process 0 writes.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import cli
from jaxgrad import diagnostics as dg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = ["study", "bernoulli-toy", "--p", "0.2,0.7", "--num-keys", "5003"]
STUDY += ["--estimators", "disarm", "reinforce", "--no-plot", "--no-cache", "--quiet"]
FIGURES = ("mean_norm", "total_variance", "snr_norm", "bias_norm", "total_mse", "coordinates")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _figures(path):
    with open(path) as fh:
        results = json.load(fh)["results"]
    return {r["estimator"]: ({k: r[k] for k in FIGURES}, r["num_devices"]) for r in results}


@pytest.mark.xdist_group("multiprocess")
def test_two_processes_give_the_bits_of_one(tmp_path, capsys):
    port = _free_port()
    # Like this process (tests/conftest.py): x64, and the same XLA flags from the environment.
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2", JAX_ENABLE_X64="1")
    outs = [tmp_path / f"process{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jaxgrad", *STUDY, "--out", str(out), "--distributed"]
            + ["--coordinator", f"localhost:{port}", "--num-processes", "2"]
            + ["--process-id", str(i)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    results = [proc.communicate() for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    printed = [
        [line for line in out.splitlines() if not line.startswith("[Gloo]")]  # gloo's own
        for out, _ in results
    ]
    assert any("disarm" in line for line in printed[0]) and printed[1] == []  # 0 prints ...
    assert not outs[1].exists()  # ... and writes; process 1 only computes
    distributed = _figures(outs[0] / "study.json")

    assert cli.main([*STUDY, "--out", str(tmp_path / "single")]) == 0
    capsys.readouterr()
    single = _figures(tmp_path / "single" / "study.json")
    assert {name: n for name, (_, n) in distributed.items()} == {"disarm": 4, "reinforce": 4}
    assert {name: n for name, (_, n) in single.items()} == {"disarm": 8, "reinforce": 8}
    # JSON floats round-trip exactly: equal numbers are equal bits.
    assert {k: f for k, (f, _) in distributed.items()} == {k: f for k, (f, _) in single.items()}


def test_the_default_chunk_width_does_not_depend_on_the_device_count(key):
    """Power for the test above: widths 256 and 1024 give DisARM estimates that differ in
    the last bit on CPU, so a device-dependent default width would show there."""
    est = jaxgrad.disarm(lambda b: jnp.sum((b - 0.45) ** 2))
    p = jnp.array([0.1, -0.3, 0.6])
    one = dg.grad_stats(est, key, p, num_keys=5003, devices=jax.devices()[:1])
    all8 = dg.grad_stats(est, key, p, num_keys=5003)
    assert one.batch_size == all8.batch_size
    np.testing.assert_array_equal(one.variance, all8.variance)
    widths = [
        dg.grad_samples(est, key, p, num_keys=5003, batch_size=b) for b in (one.batch_size, 1024)
    ]
    assert not np.array_equal(widths[0], widths[1]), "XLA now gives the same bits at every width"
