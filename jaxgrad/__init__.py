"""jaxgrad: gradients through random operations, for JAX.

Samplers that carry their gradient rule, estimator transformations in the
style of ``jax.grad``, and tools to study their variance. See README.md.
"""

from jaxgrad import diagnostics as diagnostics
from jaxgrad import dists as dists

# --- estimator machinery (jaxgrad/_src/estimators/common.py) ---
from jaxgrad._src.estimators.common import magic_box as magic_box

# --- samplers (jaxgrad/_src/samplers.py) ---
from jaxgrad._src.samplers import categorical as categorical
from jaxgrad._src.samplers import gumbel as gumbel
from jaxgrad._src.samplers import normal as normal

__version__ = "0.1.0"

__all__ = [
    "categorical",
    "diagnostics",
    "dists",
    "gumbel",
    "magic_box",
    "normal",
]
