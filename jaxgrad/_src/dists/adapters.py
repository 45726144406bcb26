r"""Adapters: distrax and TFP-on-JAX distributions as jaxgrad specs.

``from_distrax(make)`` and ``from_tfp(make)`` wrap a function ``make(params)``
that builds a distribution of one of those libraries into a stateless spec,
:class:`Adapter`, which every estimator accepts: ``params`` stay a separate
(traceable, vmappable, differentiable) argument and the distribution is
rebuilt from them at each call, as a distrax or TFP user writes it anyway.

With :math:`D_\theta` = ``make(params)`` and :math:`d_i` the library's density
of factor :math:`i` (one value per element of its batch shape), the adapter's
reductions follow jaxgrad's contract (see ``jaxgrad.dists``):

.. math::
    \log p(x \mid \theta) = \sum_i \log d_i(x_i \mid \theta), \qquad
    H(\theta) = \sum_i H(d_i),

``log_prob`` and ``entropy`` are these joint sums (scalars, what the estimators
need); ``log_prob_elementwise`` and ``entropy_elementwise`` are the library's
own per-factor values. Neither library is a dependency of jaxgrad: each is
imported when an adapter is made (``pip install 'jaxgrad[interop]'``).
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks
from jaxgrad._src.dists.base import MAX_SUPPORT_SIZE

Array = jax.Array

_LIBRARIES = {
    # library: (module, what make must return, how to install it)
    "distrax": ("distrax", "distrax.Distribution", "pip install distrax"),
    "tfp": (
        "tensorflow_probability.substrates.jax",
        "tensorflow_probability.substrates.jax.distributions.Distribution",
        "pip install tfp-nightly",
    ),
}

# distrax families whose samples carry no pathwise gradient: discrete values, or a
# discrete choice inside (mixtures, quantization). Categorical covers its subclasses
# OneHotCategorical, Softmax, Greedy and EpsilonGreedy.
_DISTRAX_NOT_REPARAMETERIZED = (
    "Bernoulli",
    "Categorical",
    "Multinomial",
    "Quantized",
    "MixtureSameFamily",
    "MixtureOfTwo",
    "CategoricalUniform",
)


def _import(library: str, fn: str) -> Any:
    """The library's module (TFP: its JAX substrate), or an ImportError naming the install."""
    module, _, install = _LIBRARIES[library]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{fn} needs {module}, which is not installed ({e}); {install} "
            f"(or pip install 'jaxgrad[interop]')."
        ) from None
    except Exception as e:  # noqa: BLE001 - a substrate that fails on this JAX version
        raise ImportError(
            f"{fn}: {module} failed to import on jax {jax.__version__} "
            f"({type(e).__name__}: {e}); {install} with a version matching this JAX."
        ) from None


def _base_class(library: str, fn: str) -> type:
    mod = _import(library, fn)
    return mod.Distribution if library == "distrax" else mod.distributions.Distribution


def _qualname(make: Any) -> str:
    return getattr(make, "__qualname__", None) or type(make).__name__


def _full_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _tfp_reparameterizable(d: Any) -> bool:
    tfd = _import("tfp", "from_tfp").distributions
    return d.reparameterization_type == tfd.FULLY_REPARAMETERIZED


def _distrax_reparameterizable(d: Any) -> bool:
    """The rule for a distrax distribution (see :func:`from_distrax`)."""
    distrax = _import("distrax", "from_distrax")
    if hasattr(d, "reparameterization_type"):  # a TFP distribution inside distrax
        return _tfp_reparameterizable(d)
    deny = tuple(c for c in (getattr(distrax, n, None) for n in _DISTRAX_NOT_REPARAMETERIZED) if c)
    if isinstance(d, deny):
        return False
    if not all(jnp.issubdtype(t, jnp.floating) for t in jax.tree.leaves(d.dtype)):
        return False
    inner = getattr(d, "distribution", None)  # Independent, Transformed, Clipped, MVNs
    if isinstance(inner, distrax.Distribution):
        return _distrax_reparameterizable(inner)
    return True


@dataclasses.dataclass(frozen=True)
class Adapter:
    r"""A distrax or TFP-on-JAX distribution family as a jaxgrad spec.

    Made by :func:`from_distrax` or :func:`from_tfp`; see there for the
    contract. Frozen and hashable (``make`` hashes by identity), so it can be
    a static argument of ``jax.jit``; make it once and reuse it, since a new
    ``make`` (a new lambda) is a new spec and compiles again.

    Attributes:
      make: ``make(params)`` returning the library's distribution.
      library: ``"distrax"`` or ``"tfp"``.
      name: the name used in error messages and the repr.
      declared: the declared or inferred ``reparameterizable`` (``None``:
        unknown, and reading ``reparameterizable`` raises).
    """

    make: Callable[[Any], Any]
    library: str
    name: str
    declared: bool | None = None

    def __repr__(self) -> str:
        args = [_qualname(self.make)]
        if self.name != f"from_{self.library}({_qualname(self.make)})":
            args.append(f"name={self.name!r}")
        if self.declared is not None:
            args.append(f"reparameterizable={self.declared}")
        return f"from_{self.library}({', '.join(args)})"

    # ------------------------------------------------------------ the distribution

    def distribution(self, params: Any, method: str = "distribution") -> Any:
        """``make(params)``, checked to be a distribution of the adapter's library."""
        fn = f"{self.name}.{method}"
        d = self.make(params)
        base = _base_class(self.library, fn)
        if isinstance(d, base):
            return d
        got = _full_name(d)
        if self.library == "distrax":
            want, example = "a distrax.Distribution", "lambda p: distrax.Normal(*p)"
            if got.startswith("tensorflow_probability.substrates.jax."):
                fix = "for a TFP distribution use jaxgrad.dists.from_tfp(make)"
            else:
                fix = f"make must build and return the distribution, e.g. make={example}"
        else:
            want, example = "a TFP-on-JAX distribution", "lambda p: tfd.Normal(*p)"
            if got.startswith("distrax."):
                fix = "for a distrax distribution use jaxgrad.dists.from_distrax(make)"
            elif got.startswith("tensorflow_probability."):
                fix = (
                    "build it from tensorflow_probability.substrates.jax.distributions (the "
                    "JAX substrate), not TFP's TensorFlow backend"
                )
            else:
                fix = (
                    f"make must build and return the distribution, e.g. make={example} with "
                    f"tfd = tensorflow_probability.substrates.jax.distributions"
                )
        raise TypeError(f"{fn}: make(params) must return {want}, got {got}; {fix}.")

    def _call(self, params: Any, method: str, *args: Any) -> Array:
        d = self.distribution(params, method)
        try:
            return getattr(d, method)(*args)
        except NotImplementedError as e:
            raise NotImplementedError(
                f"{self.name}.{method}: {_full_name(d)} does not implement {method} ({e})."
            ) from None

    # ------------------------------------------------------------ reparameterization

    @property
    def reparameterizable(self) -> bool:
        """Whether ``jax.grad`` through ``sample`` is a pathwise gradient (declared or inferred).

        Raises:
          ValueError: if it was neither declared nor inferred when the adapter
            was made (it depends on the distribution ``make`` returns).
        """
        if self.declared is None:
            example = "distrax.Normal" if self.library == "distrax" else "tfd.Normal"
            raise ValueError(
                f"{self.name}.reparameterizable is unknown until make(params) is called; pass "
                f"from_{self.library}(make, reparameterizable=True) for a differentiable "
                f"sampler (e.g. {example}) or False, or example_params=... to infer it."
            )
        return self.declared

    def reparameterizable_for(self, params: Any) -> bool:
        """The rule of :func:`from_distrax` / :func:`from_tfp` applied to ``make(params)``."""
        d = self.distribution(params, "reparameterizable_for")
        if self.library == "tfp":
            return _tfp_reparameterizable(d)
        return _distrax_reparameterizable(d)

    # ------------------------------------------------------------ the contract

    def sample(self, key: Any, params: Any) -> Array:
        """One joint sample, ``make(params).sample(seed=key)`` (typed or ``uint32`` key)."""
        checks.check_key(key, f"{self.name}.sample")
        return self.distribution(params, "sample").sample(seed=key)

    def log_prob(self, params: Any, x: Any) -> Array:
        """The joint log-density of one sample: the library's ``log_prob`` summed (a scalar)."""
        return jnp.sum(self._call(params, "log_prob", x))

    def log_prob_elementwise(self, params: Any, x: Any) -> Array:
        """The library's ``log_prob``: one value per factor (its batch shape)."""
        return self._call(params, "log_prob", x)

    def prob(self, params: Any, x: Any) -> Array:
        """The joint density ``exp(log_prob)``: the product over every factor."""
        return jnp.exp(self.log_prob(params, x))

    def prob_elementwise(self, params: Any, x: Any) -> Array:
        """The library's ``prob``: one value per factor."""
        return self._call(params, "prob", x)

    def entropy(self, params: Any) -> Array:
        """The joint entropy: the library's ``entropy`` summed over the factors (a scalar)."""
        return jnp.sum(self._call(params, "entropy"))

    def entropy_elementwise(self, params: Any) -> Array:
        """The library's ``entropy``: one value per factor."""
        return self._call(params, "entropy")

    def mean(self, params: Any) -> Array:
        """The library's ``mean`` (the shape of a sample)."""
        return self._call(params, "mean")

    def variance(self, params: Any) -> Array:
        """The library's ``variance`` (the shape of a sample)."""
        return self._call(params, "variance")

    def cdf(self, params: Any, x: Any) -> Array:
        """The library's ``cdf``, elementwise (never reduced)."""
        return self._call(params, "cdf", x)

    def support(self, params: Any) -> Array:
        r"""Every joint outcome of a Bernoulli, Categorical or OneHotCategorical, stacked.

        The outcomes are enumerated in lexicographic order with the last
        coordinate fastest, as ``jaxgrad.dists.bernoulli.support`` and
        ``categorical.support`` do, in the library's dtype: ``{0, 1}`` per
        element for Bernoulli, ``{0, ..., K-1}`` per element for an
        index-valued Categorical, one-hot rows for OneHotCategorical (also
        inside ``Independent``). Only shapes are read, so ``params`` may be
        traced.

        Returns:
          An array of shape ``[K^n, *sample_shape]`` for ``n`` variables of
          ``K`` values each.

        Raises:
          TypeError: if ``make(params)`` is not one of those families.
          ValueError: if ``K^n > MAX_SUPPORT_SIZE``.
        """
        fn = f"{self.name}.support"
        d = self.distribution(params, "support")
        kind, k = self._discrete(d, fn)
        shape = tuple(int(s) for s in d.batch_shape) + tuple(int(s) for s in d.event_shape)
        sites = shape[:-1] if kind == "one_hot" else shape
        n = math.prod(sites)
        size = k**n
        if size > MAX_SUPPORT_SIZE:
            raise ValueError(
                f"{fn}: {type(d).__name__} samples of shape {shape} have a joint support of "
                f"{size} outcomes, more than MAX_SUPPORT_SIZE={MAX_SUPPORT_SIZE}. Exact "
                f"enumeration is for small problems; use a Monte Carlo estimator instead."
            )
        idx = np.array(list(itertools.product(range(k), repeat=n)), dtype=np.int64)
        idx = idx.reshape((size, *sites))
        table = np.eye(k, dtype=np.int64)[idx] if kind == "one_hot" else idx
        return jnp.asarray(table, dtype=d.dtype)

    def _discrete(self, d: Any, fn: str) -> tuple[str, int]:
        """``("one_hot" | "index", K)`` of the (possibly Independent-wrapped) family."""
        mod = _import(self.library, fn)
        lib = mod if self.library == "distrax" else mod.distributions
        tfd = _import("tfp", fn).distributions if self.library == "distrax" else lib
        inner = d
        while isinstance(inner, (lib.Independent, tfd.Independent)):
            inner = inner.distribution
        one_hot = (lib.OneHotCategorical, tfd.OneHotCategorical)
        if isinstance(inner, one_hot):
            return "one_hot", int(inner.event_shape[-1])
        if isinstance(inner, (lib.Categorical, tfd.Categorical)):
            table = inner.logits if inner.logits is not None else inner.probs
            return "index", int(jnp.shape(table)[-1])
        if isinstance(inner, (lib.Bernoulli, tfd.Bernoulli)):
            return "index", 2
        raise TypeError(
            f"{fn}: support enumerates Bernoulli, Categorical and OneHotCategorical "
            f"distributions (also inside Independent), got {_full_name(inner)}; use a Monte "
            f"Carlo estimator (jaxgrad.score_function, rloo, pathwise) instead of jaxgrad.exact."
        )


def _adapter(
    library: str,
    make: Any,
    name: Any,
    reparameterizable: Any,
    example_params: Any,
) -> Adapter:
    fn = f"from_{library}"
    if not callable(make):
        example = "distrax.Normal(*p)" if library == "distrax" else "tfd.Normal(*p)"
        raise TypeError(
            f"{fn}: make must be a callable make(params) -> distribution, got "
            f"{checks._describe(make)}; pass e.g. make=lambda p: {example}."
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{fn}: name must be a string or None, got {checks._describe(name)}.")
    if reparameterizable is not None and not isinstance(reparameterizable, bool):
        raise TypeError(
            f"{fn}: reparameterizable must be True, False or None (infer it), got "
            f"{checks._describe(reparameterizable)}."
        )
    _import(library, fn)
    out = Adapter(make, library, name or f"{fn}({_qualname(make)})", reparameterizable)
    if reparameterizable is None and example_params is not None:
        out = dataclasses.replace(out, declared=out.reparameterizable_for(example_params))
    return out


def from_distrax(
    make: Callable[[Any], Any],
    *,
    name: str | None = None,
    reparameterizable: bool | None = None,
    example_params: Any = None,
) -> Adapter:
    r"""A jaxgrad spec from a function that builds a ``distrax`` distribution.

    ``make(params)`` returns a ``distrax.Distribution``; the spec calls it on
    every use and delegates:

    * ``sample(key, params)``: ``make(params).sample(seed=key)``, with a typed
      (``jax.random.key``) or ``uint32`` (``jax.random.PRNGKey``) key, used once;
    * ``log_prob(params, x)`` and ``entropy(params)``: **joint**, the sum over
      the factors :math:`\sum_i \log d_i(x_i)` (a scalar, the estimators'
      contract); ``log_prob_elementwise``, ``prob_elementwise`` and
      ``entropy_elementwise`` are distrax's own per-factor values; ``prob`` is
      the joint ``exp(log_prob)``;
    * ``mean``, ``variance``, ``cdf``: distrax's, where the class implements
      them (otherwise ``NotImplementedError`` naming the class);
    * ``support(params)`` for ``Bernoulli``, ``Categorical`` (index-valued) and
      ``OneHotCategorical``, also inside ``Independent``: every joint outcome,
      for ``jaxgrad.exact`` (see :meth:`Adapter.support`).

    **Reparameterization.** distrax has no ``reparameterization_type``, and
    ``reparameterizable`` must be known when an estimator is built, before any
    ``params`` exist. So it is declared, ``reparameterizable=True`` or
    ``False``, or inferred from ``make(example_params)`` by this rule: a
    distribution is reparameterizable unless (1) it is a ``Bernoulli``,
    ``Categorical`` (and its subclasses ``OneHotCategorical``, ``Softmax``,
    ``Greedy``, ``EpsilonGreedy``), ``Multinomial``, ``Quantized``,
    ``MixtureSameFamily``, ``MixtureOfTwo`` or ``CategoricalUniform`` (discrete
    values, or a discrete choice inside), or (2) its samples are not floating,
    or (3) it wraps one that is not (``Independent``, ``Transformed``,
    ``Clipped``, the ``MultivariateNormal*`` classes recurse into their base);
    a TFP distribution inside distrax follows TFP's ``reparameterization_type``.
    What the rule admits sample through differentiable JAX code:
    :math:`x = \mu + \sigma\varepsilon` (Normal, Laplace, Logistic, Gumbel,
    Uniform, the MVNs) or the implicit gradient
    :math:`\nabla_\alpha x = -\partial_\alpha F(x \mid \alpha) / p(x \mid \alpha)`
    (Gamma, Beta, Dirichlet through ``jax.random``, VonMises in distrax). A
    declared value always wins over the rule. Left undeclared and uninferred,
    reading ``reparameterizable`` (``jaxgrad.pathwise`` does) raises a
    ``ValueError`` saying how to declare it.

    Tested here with distrax 0.1.9 on jax 0.10.2: ``Normal``, ``Gamma``,
    ``Bernoulli``, ``Categorical`` and ``OneHotCategorical`` against jaxgrad's
    own specs (densities, entropies, means; ``pathwise``, ``score_function``,
    ``rloo`` and ``exact`` gradients), under ``jit`` and ``vmap``.

    Args:
      make: ``make(params) -> distrax.Distribution``, e.g.
        ``lambda p: distrax.Normal(*p)``.
      name: the spec's name in errors and reprs; default
        ``"from_distrax(<make's name>)"``.
      reparameterizable: declares whether samples carry a pathwise gradient;
        ``None`` infers it from ``example_params`` (if given).
      example_params: parameters to infer ``reparameterizable`` from (only
        their types and shapes matter for the built-in rule; not stored).

    Returns:
      An :class:`Adapter`, accepted by every estimator that applies to the
      distribution (``pathwise`` if reparameterizable; ``score_function``,
      ``rloo``; ``exact`` for the enumerable families).

    Raises:
      TypeError: if ``make`` is not callable, ``name`` not a string or
        ``reparameterizable`` not a bool; later, from any method, if
        ``make(params)`` is not a distrax distribution.
      ImportError: if distrax is not installed.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> import distrax  # pip install distrax
      >>> normal = jaxgrad.dists.from_distrax(lambda p: distrax.Normal(*p), reparameterizable=True)
      >>> params = (jnp.zeros(3), jnp.ones(3))
      >>> float(normal.log_prob(params, jnp.zeros(3)))  # joint: 3 * -log(2 pi) / 2
      -2.756...
      >>> normal.log_prob_elementwise(params, jnp.zeros(3)).shape  # distrax's own
      (3,)
      >>> est = jaxgrad.pathwise(lambda x: jnp.sum(x**2), dist=normal, num_samples=8)
      >>> g_loc, g_scale = jax.grad(est, argnums=1)(jax.random.key(0), params)
      >>> g_loc.shape
      (3,)
      >>> coins = jaxgrad.dists.from_distrax(
      ...     lambda l: distrax.Bernoulli(logits=l, dtype=l.dtype),
      ...     example_params=jnp.zeros(2))
      >>> coins.reparameterizable
      False
      >>> coins.support(jnp.zeros(2)).tolist()
      [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
      >>> est = jaxgrad.exact(lambda b: jnp.sum((b - 0.45) ** 2), dist=coins)
      >>> [round(float(v), 6) for v in jax.grad(est, argnums=1)(jax.random.key(1), jnp.zeros(2))]
      [0.025, 0.025]

    References:
      Babuschkin et al., *The DeepMind JAX Ecosystem* (distrax), 2020.
      https://github.com/google-deepmind/distrax ;
      Figurnov, Mohamed & Mnih, *Implicit Reparameterization Gradients*,
      NeurIPS 2018. https://arxiv.org/abs/1805.08498
    """
    return _adapter("distrax", make, name, reparameterizable, example_params)


def from_tfp(
    make: Callable[[Any], Any],
    *,
    name: str | None = None,
    reparameterizable: bool | None = None,
    example_params: Any = None,
) -> Adapter:
    r"""A jaxgrad spec from a function that builds a TFP-on-JAX distribution.

    ``make(params)`` returns a distribution of TFP's JAX substrate,
    ``tensorflow_probability.substrates.jax.distributions`` (``tfd`` below);
    the spec delegates exactly as :func:`from_distrax` does: ``sample`` is
    ``make(params).sample(seed=key)`` (typed or ``uint32`` key), ``log_prob``
    and ``entropy`` are **joint** sums over the factors
    (:math:`\sum_i \log d_i(x_i)`), the ``*_elementwise`` methods TFP's own
    values, ``mean``, ``variance`` and ``cdf`` TFP's, and ``support`` enumerates
    ``tfd.Bernoulli``, ``tfd.Categorical`` and ``tfd.OneHotCategorical`` (also
    inside ``tfd.Independent``).

    **Reparameterization.** ``reparameterizable`` is TFP's
    ``reparameterization_type == tfd.FULLY_REPARAMETERIZED`` of
    ``make(example_params)``, or declared with ``reparameterizable=`` (which
    wins). It is an attribute of a TFP *instance*, so without either it is
    unknown and reading it (``jaxgrad.pathwise`` does) raises a
    ``ValueError`` saying how to declare it. TFP's Gamma, Beta and Dirichlet
    are FULLY_REPARAMETERIZED through implicit gradients,
    :math:`\nabla_\alpha x = -\partial_\alpha F(x \mid \alpha) / p(x \mid \alpha)`.

    **TFP on this JAX.** TFP's JAX substrate (tfp-nightly 0.26.0.dev20261027)
    imports and works on jax 0.10.2. Tested here: ``tfd.Normal`` and
    ``tfd.Beta`` densities, entropies and means against jaxgrad's specs,
    ``cdf``, sampling with typed and ``uint32`` keys (with
    ``jax_debug_key_reuse``), ``pathwise`` through ``tfd.Gamma`` (implicit
    gradients) against the closed form under ``jit`` and ``vmap``, and
    ``support`` and ``exact`` for ``tfd.Bernoulli`` inside ``tfd.Independent``.
    TFP's JAX backend emits ``DeprecationWarning`` on this version. If the
    substrate fails to import on some other JAX version, making an adapter
    raises an ``ImportError`` naming the cause.

    Args:
      make: ``make(params) -> tfd.Distribution``, e.g.
        ``lambda p: tfd.Normal(*p)``.
      name: the spec's name; default ``"from_tfp(<make's name>)"``.
      reparameterizable: declares whether samples carry a pathwise gradient;
        ``None`` infers it from ``example_params`` (if given).
      example_params: parameters to infer ``reparameterizable`` from (not
        stored).

    Returns:
      An :class:`Adapter`.

    Raises:
      TypeError: if ``make`` is not callable, ``name`` not a string or
        ``reparameterizable`` not a bool; later, from any method, if
        ``make(params)`` is not a TFP-on-JAX distribution.
      ImportError: if TFP's JAX substrate is not installed or does not import.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> from tensorflow_probability.substrates import jax as tfp  # pip install tfp-nightly
      >>> tfd = tfp.distributions
      >>> beta = jaxgrad.dists.from_tfp(
      ...     lambda p: tfd.Beta(*p), example_params=(jnp.ones(2), jnp.ones(2)))
      >>> beta.reparameterizable  # TFP's FULLY_REPARAMETERIZED
      True
      >>> float(beta.entropy((jnp.ones(2), jnp.ones(2))))  # uniform on [0, 1]^2
      0.0
      >>> beta.mean((jnp.asarray([2.0]), jnp.asarray([6.0]))).tolist()  # a / (a + b)
      [0.25]

    References:
      Dillon et al., *TensorFlow Distributions*, 2017.
      https://arxiv.org/abs/1711.10604 ;
      Figurnov, Mohamed & Mnih, *Implicit Reparameterization Gradients*,
      NeurIPS 2018. https://arxiv.org/abs/1805.08498
    """
    return _adapter("tfp", make, name, reparameterizable, example_params)
