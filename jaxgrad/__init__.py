"""jaxgrad: gradients through random operations, for JAX.

Samplers that carry their gradient rule, estimator transformations in the
style of ``jax.grad``, and tools to study their variance. See README.md.

Public API, by layer (data flows one way, top to bottom):

* samplers (``_src/samplers.py``): ``gumbel``, ``categorical``, ``normal``;
* relaxations and straight-through rules (``_src/relaxations.py``):
  ``gumbel_softmax``, ``relaxed_bernoulli``, ``straight_through_categorical``,
  ``straight_through_bernoulli``, ``gumbel_rao``, ``reinmax``,
  ``gapped_straight_through``, ``decoupled_st_gumbel_softmax``,
  ``straight_through``, ``round_ste``, ``sign_ste``;
* distribution specs: the ``dists`` module;
* estimator transformations (``_src/estimators/``): ``score_function``,
  ``rloo``, ``pathwise``, ``measure_valued``, ``exact``, ``arm``, ``disarm``,
  ``categorical_disarm``, ``arms``, ``ugc``,
  ``rebar``, ``relax``, ``variance_loss``, ``tune``, ``indecater``, ``unordered_set``,
  ``double_cv``, ``rodeo``,
  ``magic_box``, ``ScoreFunctionAux`` (the aux of ``return_f_values=True``);
  the ``baselines`` module; the registry ``ESTIMATORS``;
* variational objectives (``_src/estimators/multi_sample.py``): ``elbo`` (with
  STL), ``iwae_bound``, ``vimco``, ``dreg``, registered in ``OBJECTIVES``;
* Fisher information (``_src/fisher.py``): ``fisher_vector_product``,
  ``empirical_fisher_vector_product``, ``natural_gradient`` (and its ``CGInfo``);
* studies: the ``diagnostics`` module and the ``jaxgrad study`` command;
* the shared binarized MNIST: the ``data`` module.
"""

from jaxgrad import baselines as baselines
from jaxgrad import data as data
from jaxgrad import diagnostics as diagnostics
from jaxgrad import dists as dists
from jaxgrad._src.estimators.arm import arm as arm
from jaxgrad._src.estimators.arm import disarm as disarm
from jaxgrad._src.estimators.arms import arms as arms
from jaxgrad._src.estimators.categorical_disarm import categorical_disarm as categorical_disarm
from jaxgrad._src.estimators.common import magic_box as magic_box
from jaxgrad._src.estimators.double_cv import double_cv as double_cv
from jaxgrad._src.estimators.exact import exact as exact
from jaxgrad._src.estimators.indecater import indecater as indecater
from jaxgrad._src.estimators.measure_valued import measure_valued as measure_valued
from jaxgrad._src.estimators.multi_sample import dreg as dreg
from jaxgrad._src.estimators.multi_sample import elbo as elbo
from jaxgrad._src.estimators.multi_sample import iwae_bound as iwae_bound
from jaxgrad._src.estimators.multi_sample import vimco as vimco
from jaxgrad._src.estimators.pathwise import pathwise as pathwise
from jaxgrad._src.estimators.rebar import rebar as rebar
from jaxgrad._src.estimators.rebar import relax as relax
from jaxgrad._src.estimators.rebar import variance_loss as variance_loss
from jaxgrad._src.estimators.registry import ESTIMATORS as ESTIMATORS
from jaxgrad._src.estimators.registry import OBJECTIVES as OBJECTIVES
from jaxgrad._src.estimators.registry import EstimatorInfo as EstimatorInfo
from jaxgrad._src.estimators.registry import ObjectiveInfo as ObjectiveInfo
from jaxgrad._src.estimators.rodeo import rodeo as rodeo
from jaxgrad._src.estimators.score_function import ScoreFunctionAux as ScoreFunctionAux
from jaxgrad._src.estimators.score_function import rloo as rloo
from jaxgrad._src.estimators.score_function import score_function as score_function
from jaxgrad._src.estimators.ugc import ugc as ugc
from jaxgrad._src.estimators.unordered_set import unordered_set as unordered_set
from jaxgrad._src.fisher import CGInfo as CGInfo
from jaxgrad._src.fisher import empirical_fisher_vector_product as empirical_fisher_vector_product
from jaxgrad._src.fisher import fisher_vector_product as fisher_vector_product
from jaxgrad._src.fisher import natural_gradient as natural_gradient
from jaxgrad._src.relaxations import decoupled_st_gumbel_softmax as decoupled_st_gumbel_softmax
from jaxgrad._src.relaxations import gapped_straight_through as gapped_straight_through
from jaxgrad._src.relaxations import gumbel_rao as gumbel_rao
from jaxgrad._src.relaxations import gumbel_softmax as gumbel_softmax
from jaxgrad._src.relaxations import reinmax as reinmax
from jaxgrad._src.relaxations import relaxed_bernoulli as relaxed_bernoulli
from jaxgrad._src.relaxations import round_ste as round_ste
from jaxgrad._src.relaxations import sign_ste as sign_ste
from jaxgrad._src.relaxations import straight_through as straight_through
from jaxgrad._src.relaxations import straight_through_bernoulli as straight_through_bernoulli
from jaxgrad._src.relaxations import straight_through_categorical as straight_through_categorical
from jaxgrad._src.samplers import categorical as categorical
from jaxgrad._src.samplers import gumbel as gumbel
from jaxgrad._src.samplers import normal as normal
from jaxgrad._src.tuning import tune as tune

__version__ = "0.1.0"

__all__ = [
    "CGInfo",
    "ESTIMATORS",
    "EstimatorInfo",
    "OBJECTIVES",
    "ObjectiveInfo",
    "ScoreFunctionAux",
    "arm",
    "arms",
    "baselines",
    "categorical",
    "categorical_disarm",
    "data",
    "decoupled_st_gumbel_softmax",
    "diagnostics",
    "disarm",
    "dists",
    "double_cv",
    "dreg",
    "elbo",
    "empirical_fisher_vector_product",
    "exact",
    "fisher_vector_product",
    "gapped_straight_through",
    "gumbel",
    "gumbel_rao",
    "gumbel_softmax",
    "indecater",
    "iwae_bound",
    "magic_box",
    "measure_valued",
    "natural_gradient",
    "normal",
    "pathwise",
    "rebar",
    "reinmax",
    "relax",
    "relaxed_bernoulli",
    "rloo",
    "rodeo",
    "round_ste",
    "score_function",
    "sign_ste",
    "straight_through",
    "straight_through_bernoulli",
    "straight_through_categorical",
    "tune",
    "ugc",
    "unordered_set",
    "variance_loss",
    "vimco",
]
