"""jaxgrad: gradients through random operations, for JAX.

Samplers that carry their gradient rule, estimator transformations in the
style of ``jax.grad``, and tools to study their variance. See README.md.
"""

from jaxgrad import diagnostics as diagnostics
from jaxgrad import dists as dists

# --- estimator machinery (jaxgrad/_src/estimators/common.py) ---
from jaxgrad._src.estimators.common import magic_box as magic_box

# --- diagnostics (jaxgrad/diagnostics.py; the registry the studies iterate over) ---
from jaxgrad._src.estimators.registry import ESTIMATORS as ESTIMATORS
from jaxgrad._src.estimators.registry import EstimatorInfo as EstimatorInfo

# --- relaxations (jaxgrad/_src/relaxations.py) ---
from jaxgrad._src.relaxations import gumbel_rao as gumbel_rao
from jaxgrad._src.relaxations import gumbel_softmax as gumbel_softmax
from jaxgrad._src.relaxations import reinmax as reinmax
from jaxgrad._src.relaxations import relaxed_bernoulli as relaxed_bernoulli
from jaxgrad._src.relaxations import round_ste as round_ste
from jaxgrad._src.relaxations import sign_ste as sign_ste
from jaxgrad._src.relaxations import straight_through as straight_through
from jaxgrad._src.relaxations import straight_through_bernoulli as straight_through_bernoulli
from jaxgrad._src.relaxations import straight_through_categorical as straight_through_categorical

# --- samplers (jaxgrad/_src/samplers.py) ---
from jaxgrad._src.samplers import categorical as categorical
from jaxgrad._src.samplers import gumbel as gumbel
from jaxgrad._src.samplers import normal as normal

__version__ = "0.1.0"

__all__ = [
    "ESTIMATORS",
    "EstimatorInfo",
    "categorical",
    "diagnostics",
    "dists",
    "gumbel",
    "gumbel_rao",
    "gumbel_softmax",
    "magic_box",
    "normal",
    "reinmax",
    "relaxed_bernoulli",
    "round_ste",
    "sign_ste",
    "straight_through",
    "straight_through_bernoulli",
    "straight_through_categorical",
]
