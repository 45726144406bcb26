"""Distribution specs for the estimators: ``bernoulli``, ``categorical``, ``normal``."""

from jaxgrad._src.dists import MAX_SUPPORT_SIZE as MAX_SUPPORT_SIZE
from jaxgrad._src.dists import Bernoulli as Bernoulli
from jaxgrad._src.dists import Categorical as Categorical
from jaxgrad._src.dists import Distribution as Distribution
from jaxgrad._src.dists import Normal as Normal
from jaxgrad._src.dists import bernoulli as bernoulli
from jaxgrad._src.dists import categorical as categorical
from jaxgrad._src.dists import normal as normal

__all__ = [
    "MAX_SUPPORT_SIZE",
    "Bernoulli",
    "Categorical",
    "Distribution",
    "Normal",
    "bernoulli",
    "categorical",
    "normal",
]
