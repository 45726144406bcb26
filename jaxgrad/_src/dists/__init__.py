"""Distribution specs: what an estimator needs to know about ``p_params``.

A spec is a stateless object; its parameters are passed separately, as a
tuple of arrays (or one array), so that they can be traced, vmapped and
differentiated like any other input. Every built-in spec is a *product of
independent factors* over the elements of its parameters (broadcast
together), except along the event axis of the multivariate families
(``multivariate_normal``, ``dirichlet``, ``categorical``,
``relaxed_one_hot_categorical``: the last axis is one factor's value).

Reductions, which is which:

* ``log_prob(params, x)``, ``prob``, ``entropy(params)``: **joint**, summed
  (or multiplied) over every factor, a scalar. This is the estimators'
  contract (``log_prob`` of one joint sample).
* ``log_prob_elementwise``, ``prob_elementwise``, ``entropy_elementwise``:
  **one value per factor** (the batch shape), what ``distrax`` and TFP return
  from ``log_prob`` and ``entropy``.
* ``cdf``, ``mean``, ``variance``: always elementwise (shape of a sample).

Other methods: ``sample(key, params)`` (one joint sample), the attribute
``reparameterizable`` (whether ``jax.grad`` through ``sample`` is a pathwise
gradient), ``support(params)`` for the discrete specs (every joint outcome,
for ``jaxgrad.exact``), ``event_ndims`` and ``param_names``.

Validation: the structure of ``params`` (the expected tuple is named),
floating dtypes, broadcasting, and the positivity of concrete scales,
concentrations, rates and temperatures (and ``low < high``) are checked
before tracing, with one-line errors naming the method and the argument.
Traced parameters (under ``jit``, ``grad`` or ``vmap``) cannot be checked:
invalid values there give NaN or inf, never an error.

Any user object with ``sample`` and ``log_prob`` (and ``support`` for
``jaxgrad.exact``) is accepted wherever a spec is.

``from_distrax(make)`` and ``from_tfp(make)`` (``adapters``) turn a function
``make(params)`` building a distrax or TFP-on-JAX distribution into such a spec.
"""

from jaxgrad._src.dists.adapters import Adapter as Adapter
from jaxgrad._src.dists.adapters import from_distrax as from_distrax
from jaxgrad._src.dists.adapters import from_tfp as from_tfp
from jaxgrad._src.dists.base import MAX_SUPPORT_SIZE as MAX_SUPPORT_SIZE
from jaxgrad._src.dists.base import Distribution as Distribution
from jaxgrad._src.dists.base import Spec as Spec
from jaxgrad._src.dists.continuous import Exponential as Exponential
from jaxgrad._src.dists.continuous import Laplace as Laplace
from jaxgrad._src.dists.continuous import Logistic as Logistic
from jaxgrad._src.dists.continuous import LogNormal as LogNormal
from jaxgrad._src.dists.continuous import MultivariateNormal as MultivariateNormal
from jaxgrad._src.dists.continuous import Normal as Normal
from jaxgrad._src.dists.continuous import Uniform as Uniform
from jaxgrad._src.dists.continuous import exponential as exponential
from jaxgrad._src.dists.continuous import laplace as laplace
from jaxgrad._src.dists.continuous import log_normal as log_normal
from jaxgrad._src.dists.continuous import logistic as logistic
from jaxgrad._src.dists.continuous import multivariate_normal as multivariate_normal
from jaxgrad._src.dists.continuous import normal as normal
from jaxgrad._src.dists.continuous import uniform as uniform
from jaxgrad._src.dists.discrete import Bernoulli as Bernoulli
from jaxgrad._src.dists.discrete import Categorical as Categorical
from jaxgrad._src.dists.discrete import bernoulli as bernoulli
from jaxgrad._src.dists.discrete import categorical as categorical
from jaxgrad._src.dists.implicit import Beta as Beta
from jaxgrad._src.dists.implicit import Dirichlet as Dirichlet
from jaxgrad._src.dists.implicit import Gamma as Gamma
from jaxgrad._src.dists.implicit import VonMises as VonMises
from jaxgrad._src.dists.implicit import beta as beta
from jaxgrad._src.dists.implicit import dirichlet as dirichlet
from jaxgrad._src.dists.implicit import gamma as gamma
from jaxgrad._src.dists.implicit import von_mises as von_mises
from jaxgrad._src.dists.kl import kl as kl
from jaxgrad._src.dists.kl import kl_elementwise as kl_elementwise
from jaxgrad._src.dists.kl import kl_estimate as kl_estimate
from jaxgrad._src.dists.kl import register_kl as register_kl
from jaxgrad._src.dists.relaxed import RelaxedBernoulli as RelaxedBernoulli
from jaxgrad._src.dists.relaxed import RelaxedOneHotCategorical as RelaxedOneHotCategorical
from jaxgrad._src.dists.relaxed import relaxed_bernoulli as relaxed_bernoulli
from jaxgrad._src.dists.relaxed import relaxed_one_hot_categorical as relaxed_one_hot_categorical

#: Every built-in spec by name.
SPECS = {
    s.name: s
    for s in (
        bernoulli,
        categorical,
        normal,
        multivariate_normal,
        log_normal,
        logistic,
        laplace,
        uniform,
        exponential,
        gamma,
        beta,
        dirichlet,
        von_mises,
        relaxed_bernoulli,
        relaxed_one_hot_categorical,
    )
}
