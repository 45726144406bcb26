# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Variance studies at scale
#
# A million gradient estimates per estimator, chunked so that memory stays
# bounded, sharded over several devices with the same numbers to the last bit,
# and the same study on several processes. The problem is the Bernoulli toy of
# Tucker et al. (2017): three coins $b_d \sim \mathrm{Bernoulli}(\sigma(\ell_d))$
# and the cost $f(b) = \sum_d (b_d - t)^2$, $t = 0.45$, whose exact gradient is
# $\partial_{\ell_d} \mathbb{E}[f] = p_d (1 - p_d)(1 - 2t)$. Run it as a script
# (`python notebooks/variance_at_scale.py`); `JAXGRAD_NOTEBOOK_QUICK=1` (set by the
# test suite) runs it with far fewer keys.
#
# The notebook asks XLA for 4 CPU devices before JAX starts its backends,
# keeping whatever `XLA_FLAGS` the environment already has.

# %%
import os

flag = "--xla_force_host_platform_device_count=4"
if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxgrad  # noqa: E402
from jaxgrad import diagnostics as dg  # noqa: E402

np.set_printoptions(precision=5, suppress=False)
start = time.perf_counter()
QUICK = os.environ.get("JAXGRAD_NOTEBOOK_QUICK", "") not in ("", "0")
NUM_KEYS = 20_000 if QUICK else 1_000_000
NAMES = ("reinforce", "disarm") if QUICK else ("reinforce", "rloo", "arm", "disarm")
SEED = 0
print(f"{jax.device_count()} devices: {jax.devices()}; {NUM_KEYS} keys per estimator")

# %% [markdown]
# ## The problem and the estimators
#
# Logits exactly representable in float32 (so that the command line, which
# reads them as text, builds the same parameters), the exact gradient, and the
# estimators built from the registry exactly as `jaxgrad study` builds them
# (`jaxgrad.ESTIMATORS[name].build(f, dist=..., num_samples=...)`): REINFORCE
# with one sample, RLOO with two, ARM and DisARM (Yin & Zhou 2019; Dong, Mnih &
# Tucker 2020), which each evaluate $f$ twice.

# %%
T = 0.45
LOGITS = (-2.0, -0.5, 1.0)
logits = jnp.asarray(LOGITS, jnp.float32)


def f(b):
    return jnp.sum((b - T) ** 2)


p = 1 / (1 + np.exp(-np.asarray(LOGITS, np.float64)))
exact = p * (1 - p) * (1 - 2 * T)
ESTS = {}
for name in NAMES:
    info = jaxgrad.ESTIMATORS[name]
    k = info.num_samples
    ESTS[name] = (
        info.build(f, dist=jaxgrad.dists.bernoulli, num_samples=k),
        info.cost("bernoulli", (3,), k),
    )
print("p =", p, " exact gradient =", exact)

# %% [markdown]
# ## A million estimates on one device, in chunks
#
# `jaxgrad.diagnostics.grad_stats(est, key, params, num_keys=N)` draws the
# estimates $\hat g_n = \nabla_\theta\, \mathrm{est}(k_n, \theta)$ with
# $k_n = \mathrm{fold\_in}(\text{key}, n)$ and never stores them: the keys are
# processed in chunks of `batch_size` keys (one `vmap` each), and each chunk is
# summed into $S_1 = \sum_n (\hat g_n - c)$ and $S_2 = \sum_n (\hat g_n - c)^2$
# about the first estimate $c = \hat g_0$ (Chan, Golub & LeVeque 1983), so the
# working memory is one chunk, whatever $N$ is. The default chunk width is the
# widest power of two within a memory budget (16 MiB on a CPU, an upper bound of
# one estimate's memory read off its traced program), at most $2^{14}$ and at
# most $N / 32$. From the sums,
#
# $$
# \bar g = c + \frac{S_1}{N}, \quad
# s^2 = \frac{S_2 - S_1^2 / N}{N - 1}, \quad
# \mathrm{se} = \frac{s}{\sqrt N}, \quad
# \mathrm{SNR} = \frac{|\bar g|}{s}, \quad
# \text{bias} = \bar g - g^\star \pm \mathrm{se}.
# $$
#
# The chunk sums are added by one fixed pairwise tree over the keys in order,
# so rounding grows like $\log_2 N$ additions. (The sums are in float64 when
# `jax_enable_x64` is on, in float32 otherwise, as here.)

# %%
one_device = jax.devices()[:1]
key = jax.random.key(SEED)
single = {}
for name, (est, evals) in ESTS.items():
    single[name] = dg.grad_stats(
        est, key, logits, num_keys=NUM_KEYS, exact=exact, f_evals=evals, devices=one_device
    )
s = single[NAMES[-1]]
print(
    f"{NAMES[-1]}: chunks of {s.batch_size} keys, {s.num_devices} device, "
    f"compile {s.compile_time:.2f} s, {1e6 * s.time_per_estimate:.3f} us per estimate"
)
print(
    f"\n{'estimator':10} {'coord':>5} {'mean':>11} {'+- se':>9} {'exact':>9} "
    f"{'bias/se':>8} {'variance':>10} {'SNR':>7}"
)
for name, s in single.items():
    for d in range(3):
        z = s.bias[d] / s.stderr[d]
        print(
            f"{name:10} {d:5d} {s.mean[d]:11.6f} {s.stderr[d]:9.2e} {exact[d]:9.6f} "
            f"{z:8.2f} {s.variance[d]:10.3e} {s.snr[d]:7.3f}"
        )
    assert np.all(np.abs(s.bias) < 5 * s.stderr), name  # unbiased: a z-test per coordinate
print(f"\n{'estimator':10} {'f evals':>7} {'total var':>10} {'var x evals':>11}")
for name, s in single.items():
    print(f"{name:10} {s.f_evals:7d} {s.total_variance:10.3e} {s.efficiency:11.3e}")
assert single["disarm"].total_variance < single["reinforce"].total_variance / 10

# %% [markdown]
# How to read it: all estimators are unbiased (every $|\text{bias}| / \mathrm{se}$
# is a standard normal draw, asserted below 5), and they differ by orders of
# magnitude in variance. REINFORCE with one sample has no baseline at all;
# DisARM's antithetic pair cancels most of the noise; per evaluation of $f$
# (`var x evals`) DisARM is still far ahead.
#
# ## The same study on 4 devices
#
# With several devices `grad_stats` spreads the chunks over them with
# `jax.shard_map`: in each round device $d$ draws chunk $rD + d$, the $D$ chunk
# sums are gathered and pushed in key order into the same summation tree, so
# every key sits at the same place of one canonical tree. The library promises
# bit-identical figures for any device and process count, because the default
# chunk width depends on neither (only on the estimator, $N$ and the memory
# budget). We check equality to the last bit.

# %%
sharded = {}
for name, (est, evals) in ESTS.items():
    sharded[name] = dg.grad_stats(est, key, logits, num_keys=NUM_KEYS, exact=exact, f_evals=evals)
FIELDS = ("mean", "variance", "stderr", "snr", "bias", "mse")
for name in NAMES:
    a, b = single[name], sharded[name]
    assert b.num_devices == 4 and a.batch_size == b.batch_size
    for field in FIELDS:
        np.testing.assert_array_equal(a.flat(field), b.flat(field), err_msg=f"{name} {field}")
    print(
        f"{name:10} 1 device: {1e6 * a.time_per_estimate:.3f} us/estimate; 4 devices: "
        f"{1e6 * b.time_per_estimate:.3f} us/estimate; {', '.join(FIELDS)} bit-identical"
    )

# %% [markdown]
# (Here the 4 "devices" share the CPU's cores, so the time per estimate changes
# little; on several accelerators sharding divides it.)
#
# ## The same code on several processes
#
# A study that outgrows one host runs on JAX's multi-process runtime: every
# process runs the same command with `--distributed`, joins the others through
# `jax.distributed.initialize` (here: a coordinator on a free local port, two
# processes, JAX's gloo CPU collectives), and `grad_stats` shards the keys over
# every device of every process. Below two `jaxgrad study` processes with 2 CPU
# devices each (4 in all) run exactly as `tests/test_multiprocess.py` starts
# them; process 0 prints and writes `study.json`, process 1 only computes.
#
# The single-process reference is `jaxgrad.diagnostics.study`, of which the
# command is a thin face, on the same estimators: it derives each row's key
# from the seed and the estimator's name, as the command does. Passing our own
# estimator objects reuses the programs compiled above (the same estimator, key
# count and devices).


# %%
def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


out_dir = tempfile.mkdtemp(prefix="jaxgrad-variance-at-scale-")
port = free_port()
command = ["study", "bernoulli-toy", f"--logit={','.join(str(v) for v in LOGITS)}"]
command += [f"--target={T}", "--num-keys", str(NUM_KEYS), "--seed", str(SEED)]
command += ["--estimators", *NAMES, "--no-plot", "--no-cache", "--quiet"]
env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
env["XLA_FLAGS"] = env["XLA_FLAGS"].replace(flag, "").strip()  # JAX_NUM_CPU_DEVICES decides
t0, cpu0 = time.perf_counter(), os.times()
procs = [
    subprocess.Popen(
        [sys.executable, "-m", "jaxgrad", *command, "--out", os.path.join(out_dir, f"p{i}")]
        + ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2"]
        + ["--process-id", str(i)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for i in range(2)
]
outputs = [proc.communicate() for proc in procs]
cpu1 = os.times()
for proc, (_, err) in zip(procs, outputs, strict=True):
    assert proc.returncode == 0, err[-3000:]
child_cpu = (cpu1.children_user - cpu0.children_user) + (
    cpu1.children_system - cpu0.children_system
)
print(
    f"two processes: {time.perf_counter() - t0:.1f} s wall, {child_cpu:.1f} s CPU "
    "(mostly starting Python and JAX, and compiling)"
)
print("\n".join(l for l in outputs[0][0].splitlines() if not l.startswith("[Gloo]")))
assert not os.path.exists(os.path.join(out_dir, "p1"))  # process 1 wrote nothing

with open(os.path.join(out_dir, "p0", "study.json")) as fh:
    distributed = {r["estimator"]: r for r in json.load(fh)["results"]}
reference = dg.study(
    [(name, est, {"unbiased": True, "f_evals": evals}) for name, (est, evals) in ESTS.items()],
    f, logits, exact=exact, num_keys=NUM_KEYS, key=SEED, name="bernoulli-toy",
)  # fmt: skip
for r in reference.results:
    d = distributed[r.name]
    assert d["num_devices"] == 4 and r.stats.num_devices == 4
    for field in ("mean", "variance", "stderr", "snr"):  # JSON floats round-trip exactly
        np.testing.assert_array_equal(np.asarray(d["coordinates"][field]), r.stats.flat(field))
    assert d["total_variance"] == r.stats.total_variance
    print(
        f"{r.name:10} two processes = one process, bit for bit: total variance "
        f"{d['total_variance']:.6e}"
    )

shutil.rmtree(out_dir)  # the study's files were only needed for the comparison

# %% [markdown]
# The same figures, to the last bit, from one device, four devices in one
# process, and two processes of two devices. (The exact gradient the command
# uses is computed in its own float64 arithmetic, so only the figures that do
# not involve it are compared bit for bit.)
#
# ## References
#
# * Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, *REBAR*, NeurIPS 2017
#   (the Bernoulli toy). https://arxiv.org/abs/1703.07370
# * Yin & Zhou, *ARM*, ICLR 2019. https://arxiv.org/abs/1807.11143
# * Dong, Mnih & Tucker, *DisARM*, NeurIPS 2020. https://arxiv.org/abs/2006.10680
# * Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a Baseline for
#   Free!*, 2019 (RLOO). https://openreview.net/forum?id=r1lgTGL5DE
# * Chan, Golub & LeVeque, *Algorithms for computing the sample variance*, 1983;
#   Higham, *The accuracy of floating point summation*, SIAM J. Sci. Comput. 1993.
# * Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
#   Learning*, JMLR 2020. https://jmlr.org/papers/v21/19-346.html

# %%
print(f"\ntotal run time {time.perf_counter() - start:.1f} s")
