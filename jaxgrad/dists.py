"""Distribution specs for the estimators and for densities, entropies and moments.

Families (params are tuples of arrays broadcast together, one independent
factor per element unless the family is multivariate):

=================================  ==============================================  =========
spec                               params                                          gradient
=================================  ==============================================  =========
``bernoulli``                      ``logits``                                      none
``categorical`` (one-hot)          ``logits [..., K]``                             none
``normal``                         ``(loc, scale)``                                pathwise
``multivariate_normal``            ``(loc [..., d], scale_tril [..., d, d])``      pathwise
``log_normal``                     ``(loc, scale)``                                pathwise
``logistic``                       ``(loc, scale)``                                pathwise
``laplace``                        ``(loc, scale)``                                pathwise
``uniform``                        ``(low, high)``                                 pathwise
``exponential``                    ``rate``                                        pathwise
``gamma``                          ``(concentration, rate)``                       implicit
``beta``                           ``(concentration1, concentration0)``            implicit
``dirichlet``                      ``concentration [..., K]``                      implicit
``von_mises``                      ``(loc, concentration)``                        implicit
``relaxed_bernoulli``              ``(logits, temperature)``                       pathwise
``relaxed_one_hot_categorical``    ``(logits [..., K], temperature [...])``        pathwise
=================================  ==============================================  =========

Every spec has ``sample(key, params)``, ``log_prob(params, x)`` and ``prob``
(**joint**: summed over every factor, the estimators' contract),
``log_prob_elementwise``, ``prob_elementwise`` and ``entropy_elementwise``
(**one value per factor**, as distrax and TFP return them), ``entropy``
(joint), ``mean`` and ``variance`` (elementwise), ``cdf`` where a closed form
or an accurate quadrature exists (elementwise), ``reparameterizable``, and
``support`` for the discrete specs. ``SPECS`` maps each name to its spec.
Concrete parameters are validated (structure, dtypes, positivity, ``low <
high``); traced ones cannot be, and invalid values there give NaN or inf.

KL divergences: ``kl(p, p_params, q, q_params)`` (**joint**, a scalar) and
``kl_elementwise`` (one value per factor) in closed form for every same-family
pair that has one (normal, log_normal, multivariate_normal, bernoulli,
categorical, exponential, gamma, beta, dirichlet, uniform, laplace; and
exponential with gamma), dispatched on the pair of spec classes
(``register_kl(p_cls, q_cls)`` adds a pair); any other pair raises
``NotImplementedError``. ``kl_estimate(key, p, p_params, q, q_params, *,
num_samples)`` is the Monte Carlo estimate for any pair, with an unbiased
gradient (pathwise where ``p`` is reparameterizable, score function otherwise).

Distributions from other libraries: ``from_distrax(make)`` and
``from_tfp(make)`` wrap a function ``make(params)`` that returns a distrax or
TFP-on-JAX distribution into a spec (an ``Adapter``) that every estimator
accepts, with the same joint/elementwise reductions; ``reparameterizable`` is
declared or inferred from example params, and ``support`` enumerates their
Bernoulli and (one-hot) categorical families. Neither library is a dependency
(``pip install 'jaxgrad[interop]'``).
"""

from jaxgrad._src.dists import MAX_SUPPORT_SIZE as MAX_SUPPORT_SIZE
from jaxgrad._src.dists import SPECS as SPECS
from jaxgrad._src.dists import Adapter as Adapter
from jaxgrad._src.dists import Bernoulli as Bernoulli
from jaxgrad._src.dists import Beta as Beta
from jaxgrad._src.dists import Categorical as Categorical
from jaxgrad._src.dists import Dirichlet as Dirichlet
from jaxgrad._src.dists import Distribution as Distribution
from jaxgrad._src.dists import Exponential as Exponential
from jaxgrad._src.dists import Gamma as Gamma
from jaxgrad._src.dists import Laplace as Laplace
from jaxgrad._src.dists import Logistic as Logistic
from jaxgrad._src.dists import LogNormal as LogNormal
from jaxgrad._src.dists import MultivariateNormal as MultivariateNormal
from jaxgrad._src.dists import Normal as Normal
from jaxgrad._src.dists import RelaxedBernoulli as RelaxedBernoulli
from jaxgrad._src.dists import RelaxedOneHotCategorical as RelaxedOneHotCategorical
from jaxgrad._src.dists import Spec as Spec
from jaxgrad._src.dists import Uniform as Uniform
from jaxgrad._src.dists import VonMises as VonMises
from jaxgrad._src.dists import bernoulli as bernoulli
from jaxgrad._src.dists import beta as beta
from jaxgrad._src.dists import categorical as categorical
from jaxgrad._src.dists import dirichlet as dirichlet
from jaxgrad._src.dists import exponential as exponential
from jaxgrad._src.dists import from_distrax as from_distrax
from jaxgrad._src.dists import from_tfp as from_tfp
from jaxgrad._src.dists import gamma as gamma
from jaxgrad._src.dists import kl as kl
from jaxgrad._src.dists import kl_elementwise as kl_elementwise
from jaxgrad._src.dists import kl_estimate as kl_estimate
from jaxgrad._src.dists import laplace as laplace
from jaxgrad._src.dists import log_normal as log_normal
from jaxgrad._src.dists import logistic as logistic
from jaxgrad._src.dists import multivariate_normal as multivariate_normal
from jaxgrad._src.dists import normal as normal
from jaxgrad._src.dists import register_kl as register_kl
from jaxgrad._src.dists import relaxed_bernoulli as relaxed_bernoulli
from jaxgrad._src.dists import relaxed_one_hot_categorical as relaxed_one_hot_categorical
from jaxgrad._src.dists import uniform as uniform
from jaxgrad._src.dists import von_mises as von_mises

__all__ = [
    "MAX_SUPPORT_SIZE",
    "SPECS",
    "Adapter",
    "Bernoulli",
    "Beta",
    "Categorical",
    "Dirichlet",
    "Distribution",
    "Exponential",
    "Gamma",
    "Laplace",
    "LogNormal",
    "Logistic",
    "MultivariateNormal",
    "Normal",
    "RelaxedBernoulli",
    "RelaxedOneHotCategorical",
    "Spec",
    "Uniform",
    "VonMises",
    "bernoulli",
    "beta",
    "categorical",
    "dirichlet",
    "exponential",
    "from_distrax",
    "from_tfp",
    "gamma",
    "kl",
    "kl_elementwise",
    "kl_estimate",
    "laplace",
    "log_normal",
    "logistic",
    "multivariate_normal",
    "normal",
    "register_kl",
    "relaxed_bernoulli",
    "relaxed_one_hot_categorical",
    "uniform",
    "von_mises",
]
