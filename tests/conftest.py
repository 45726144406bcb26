"""Global test settings: 8 CPU devices, key-reuse checking, strict promotion, seeds.

These must run before JAX initializes its backends, so they live at import
time of the conftest, which pytest loads before any test module.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite's programs are tiny, so compiling them dominates its time, and most of
# that is LLVM optimizing CPU code that then runs for microseconds. The suite
# therefore compiles at XLA's backend optimization level 0 (measured on 2 cores:
# tests/test_noisy_f.py 59 s -> 24 s of CPU) and with XLA CPU's classic elemental
# emitters instead of its MLIR fusion emitters (tests/test_double_cv.py with
# tests/test_samplers.py: 35 s -> 23 s of CPU; the whole suite 7 min 45 s -> 4 min 41 s
# of wall time on 2 cores). Semantics do not depend on either, but the classic emitters
# round a vectorized loop and its scalar remainder differently, so tests marked
# ``bitwise`` (bit-identical floats across differently shaped programs, a property of
# the default emitters) are deselected here and run by tests/test_bitwise.py in a
# subprocess with JAXGRAD_TEST_FUSION_EMITTERS=1. JAXGRAD_TEST_XLA_OPT_LEVEL=2 runs
# the suite as users compile, fusion emitters included (`make test-full`).
_OPT_LEVEL = os.environ.get("JAXGRAD_TEST_XLA_OPT_LEVEL", "0")
CLASSIC_EMITTERS = _OPT_LEVEL == "0" and os.environ.get("JAXGRAD_TEST_FUSION_EMITTERS") != "1"
_FAST_COMPILE = {
    "xla_backend_optimization_level": _OPT_LEVEL,
    **({"xla_cpu_use_fusion_emitters": "false"} if CLASSIC_EMITTERS else {}),
}
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_flags] + [f"--{name}={value}" for name, value in _FAST_COMPILE.items() if name not in _flags]
).strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_debug_key_reuse", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SEED = 20261123


@pytest.fixture
def key():
    """A fixed typed PRNG key; tests split it rather than reuse it."""
    return jax.random.key(SEED)


@pytest.fixture
def rng():
    """A fixed-seed NumPy generator for test data."""
    return np.random.default_rng(SEED)


def _deselect_bitwise(config, items):
    """Deselects the ``bitwise`` tests under the classic emitters (see the top of this file)."""
    if not CLASSIC_EMITTERS:
        return
    keep, bitwise = [], []
    for item in items:
        (bitwise if item.get_closest_marker("bitwise") else keep).append(item)
    if bitwise:
        config.hook.pytest_deselected(items=bitwise)
        items[:] = keep


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Makes ``--dist loadgroup`` group ``xdist_group`` tests on pytest >= 9.2.

    pytest-xdist tags a grouped test by appending ``@group`` to ``item._nodeid``,
    which pytest 9.2 no longer reads (the id lives in ``item._id``), so grouped
    tests were spread over workers and every worker recomputed the cached studies
    they share. This applies the same tag where pytest reads it; on older pytest
    xdist's own tag works and this does nothing. It first deselects the ``bitwise``
    tests under the classic emitters.
    """
    _deselect_bitwise(config, items)
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9.2: xdist's tag is read
        return
    for item in items:
        groups = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
        if groups and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(sorted(groups))}")
