"""Global test settings: 8 CPU devices, key-reuse checking, strict promotion, seeds.

These must run before JAX initializes its backends, so they live at import
time of the conftest, which pytest loads before any test module.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
