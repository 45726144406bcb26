"""Baselines and variance normalization for the score-function estimators.

Stateless baselines computed from the samples of one estimate (``loo``,
``optimal``), optax-style stateful ones (``ema``, ``normalizer``: an ``(init,
update)`` pair with a NamedTuple state) and the regression ``loss`` of a
learned baseline. See ``jaxgrad.score_function``.
"""

from jaxgrad._src.baselines import BaselineTransformation as BaselineTransformation
from jaxgrad._src.baselines import EmaState as EmaState
from jaxgrad._src.baselines import NormalizerState as NormalizerState
from jaxgrad._src.baselines import ema as ema
from jaxgrad._src.baselines import loo as loo
from jaxgrad._src.baselines import loss as loss
from jaxgrad._src.baselines import normalizer as normalizer
from jaxgrad._src.baselines import optimal as optimal

__all__ = [
    "BaselineTransformation",
    "EmaState",
    "NormalizerState",
    "ema",
    "loo",
    "loss",
    "normalizer",
    "optimal",
]
