"""Global test settings: 8 CPU devices, key-reuse checking, strict promotion, seeds.

These must run before JAX initializes its backends, so they live at import
time of the conftest, which pytest loads before any test module.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite's programs are tiny, so compiling them dominates its time, and most of
# that is LLVM optimizing CPU code that then runs for microseconds. The suite
# therefore compiles at XLA's backend optimization level 0 (measured on 2 cores:
# tests/test_noisy_f.py 59 s -> 24 s of CPU). Semantics do not depend on the level;
# JAXGRAD_TEST_XLA_OPT_LEVEL=2 (or any level) runs the suite as users compile.
_OPT_LEVEL = os.environ.get("JAXGRAD_TEST_XLA_OPT_LEVEL", "0")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level={_OPT_LEVEL}"
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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Makes ``--dist loadgroup`` group ``xdist_group`` tests on pytest >= 9.2.

    pytest-xdist tags a grouped test by appending ``@group`` to ``item._nodeid``,
    which pytest 9.2 no longer reads (the id lives in ``item._id``), so grouped
    tests were spread over workers and every worker recomputed the cached studies
    they share. This applies the same tag where pytest reads it; on older pytest
    xdist's own tag works and this does nothing.
    """
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
