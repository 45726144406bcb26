"""The registry of every estimator and relaxation, with declared metadata.

``jaxgrad.ESTIMATORS`` maps a name to an :class:`EstimatorInfo`. Each entry
knows how to build the estimator for a cost ``f`` and a distribution spec with
one uniform call, ``info.build(f, dist=..., num_samples=...)``, which returns
``est(key, params, *args)`` with the contract of every jaxgrad estimator. Tests,
variance studies and benchmarks iterate over the registry instead of keeping
their own lists, so a new estimator is studied and tested by registering it.

Relaxations and straight-through samplers (``gumbel_softmax``, ``reinmax``,
...) are registered too, wrapped as estimators: ``est(key, logits, *args)``
averages ``f(sample, *args)`` over ``num_samples`` relaxed samples, so that
``jax.grad`` of it is the (biased) relaxed or straight-through gradient.

Build options shared by every entry: ``temperature`` (entries that have one,
see :attr:`EstimatorInfo.temperature`; a float or a traced array, so an
annealing schedule under ``jit`` does not recompile) and ``f_takes_key`` (the
cost is ``f(x, key, *args)`` with one independent key per evaluation).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import checks
from jaxgrad._src.estimators import common

Array = jax.Array
Builder = Callable[..., Callable[..., Array]]

BERNOULLI = "bernoulli"
CATEGORICAL = "categorical"
NORMAL = "normal"


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
    """What a study, a benchmark or a test needs to know about an estimator.

    Attributes:
      name: the registry key.
      builder: ``builder(f, *, dist, num_samples, f_takes_key[, temperature])
        -> est``, the factory behind :meth:`build` (``temperature`` is passed
        only to entries that have one). Call :meth:`build` instead.
      variables: the variable types it applies to (``"bernoulli"``,
        ``"categorical"``, ``"normal"``).
      unbiased: whether ``E[grad est] = grad E[f]`` exactly.
      black_box: whether it works with a non-differentiable ``f`` (evaluated
        only at samples in the support).
      higher_order: whether second and higher derivatives of ``est`` work.
        True: they are the derivatives of the same surrogate whose gradient
        is the estimator, so they are unbiased where ``unbiased`` is (the
        DiCE score function with ``baseline=None``/``"loo"``, ``rloo``,
        ``pathwise``, ``exact``) and as biased as the first derivative for
        the relaxations and straight-through rules (the relaxed or
        straight-through surrogate's Hessian). False: first-order only;
        every second derivative involving ``params`` (``jax.hessian`` in
        either order, or mixed with ``*args``) raises a ``TypeError``
        naming the estimator; derivatives in ``*args`` alone still work.
      f_evals: ``f_evals(num_samples, event_shape, variable) -> int``,
        evaluations of ``f`` per estimate for parameters of ``event_shape``.
      num_samples: the default number of samples in studies.
      min_num_samples: the smallest valid ``num_samples``.
      relaxation: whether it is a relaxation / straight-through sampler
        wrapped as an estimator rather than an estimator transformation.
      reference: the paper.
      temperature: the default temperature of entries that have one (the
        relaxations, their straight-through versions, ReinMax, Gumbel-Rao,
        and REBAR/RELAX's relaxed control variate ``f(sigmoid(z / lam))``, or
        ``f(softmax(z / lam))`` for categoricals);
        ``None`` for entries without a temperature, whose :meth:`build`
        refuses one.
    """

    name: str
    builder: Builder
    variables: frozenset[str]
    unbiased: bool
    black_box: bool
    higher_order: bool
    f_evals: Callable[[int, tuple[int, ...], str], int]
    num_samples: int = 1
    min_num_samples: int = 1
    relaxation: bool = False
    reference: str = ""
    temperature: float | None = None

    def build(
        self,
        f: Callable[..., Array],
        *,
        dist: Any,
        num_samples: int,
        temperature: Any = None,
        f_takes_key: bool = False,
    ) -> Callable[..., Array]:
        """Builds the estimator ``est(key, params, *args)`` for the cost ``f``.

        Args:
          f: the cost ``f(x, *args) -> scalar`` for one sample (with
            ``f_takes_key``, ``f(x, key, *args)``).
          dist: the distribution spec (``jaxgrad.dists.bernoulli``, ...);
            entries specialized to one family ignore it.
          num_samples: samples per estimate (static; see ``min_num_samples``).
          temperature: for entries with a temperature (``self.temperature``
            is not ``None``), a positive float or a (possibly traced) array;
            ``None`` means ``self.temperature``. It is never branched on in
            Python, so an annealed temperature under ``jit`` compiles once.
          f_takes_key: if true, ``f`` is called as ``f(x, key, *args)`` with
            an independent key for every evaluation (see
            ``jaxgrad.score_function``).

        Returns:
          ``est(key, params, *args) -> scalar``.

        Raises:
          ValueError: if ``temperature`` is given to an entry without one.
        """
        kwargs: dict[str, Any] = {}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature if temperature is None else temperature
        elif temperature is not None:
            with_temperature = [e.name for e in _ENTRIES if e.temperature is not None]
            raise ValueError(
                f"ESTIMATORS[{self.name!r}].build: {self.name} has no temperature, got "
                f"temperature={checks._describe(temperature)}; pass temperature=None "
                f"(entries with one: {', '.join(with_temperature)})."
            )
        return self.builder(
            f, dist=dist, num_samples=num_samples, f_takes_key=bool(f_takes_key), **kwargs
        )

    def applies_to(self, variable: str) -> bool:
        """Whether this estimator handles variables of type ``variable``."""
        return variable in self.variables

    def cost(
        self, variable: str, event_shape: Sequence[int], num_samples: int | None = None
    ) -> int:
        """Evaluations of ``f`` per estimate for ``variable`` params of ``event_shape``."""
        n = self.num_samples if num_samples is None else num_samples
        return int(self.f_evals(n, tuple(event_shape), variable))


def sampler_estimator(
    f: Callable[..., Array],
    sampler: Callable[[Any, Array], Array],
    *,
    num_samples: int = 1,
    name: str = "sampler_estimator",
    f_takes_key: bool = False,
) -> Callable[..., Array]:
    r"""Wraps a sampler that carries its gradient rule as an estimator.

    .. math::
        \mathrm{est}(k, l, \ldots) = \frac1N \sum_{n=1}^N f(y_n, \ldots),
        \qquad y_n = \mathrm{sampler}(k_n, l),

    so ``jax.grad`` of it is whatever rule the sampler carries (relaxed,
    straight-through, Gumbel-Rao, ReinMax), averaged over ``N`` samples.

    Args:
      f: the cost for one sample, returning a scalar.
      sampler: ``sampler(key, logits) -> sample``.
      num_samples: samples averaged per estimate (static).
      name: the name used in error messages.
      f_takes_key: if true, ``f`` is ``f(y, key, *args)`` and every
        evaluation gets its own independent key (see
        ``jaxgrad.score_function``); static, default ``False``.

    Returns:
      ``est(key, logits, *args) -> scalar``.
    """
    common.check_f(f, name)
    num_samples = checks.check_num_samples(num_samples, name)
    fs = common.batch_f(f, name, f_takes_key=f_takes_key)

    def est(key: Any, logits: Any, *args: Any) -> Array:
        checks.check_key(key, name)
        key, f_key = common.split_f_key(key, f_takes_key)
        keys = jax.random.split(key, num_samples)
        ys = jax.vmap(sampler, in_axes=(0, None))(keys, logits)
        return jnp.mean(fs(ys, *args, key=f_key))

    return est


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _vars(shape: tuple[int, ...]) -> int:
    """Number of categorical variables in a ``[..., K]`` event."""
    return math.prod(shape[:-1])


def _support(variable: str, shape: tuple[int, ...]) -> int:
    if variable == BERNOULLI:
        return 2 ** _size(shape)
    return shape[-1] ** _vars(shape)


# Builders import lazily so the registry can be read without pulling in every
# estimator module (and so the modules stay independent of one another).


def _lazy(
    module: str,
    name: str,
    *,
    takes_dist: bool = False,
    takes_num_samples: bool = True,
    **options: Any,
) -> Builder:
    """``builder(f, *, dist, num_samples, ...)`` calling ``jaxgrad._src.estimators.module.name``.

    ``takes_dist`` and ``takes_num_samples`` say which of the uniform arguments
    the transformation accepts; ``options`` and any further keyword (a
    ``temperature``) are passed on as they are.
    """

    def build(f, *, dist: Any, num_samples: int, f_takes_key: bool = False, **extra: Any):
        transform = getattr(importlib.import_module(f"jaxgrad._src.estimators.{module}"), name)
        kwargs = dict(options, **extra)
        if takes_dist:
            kwargs["dist"] = dist
        if takes_num_samples:
            kwargs["num_samples"] = num_samples
        if f_takes_key:
            kwargs["f_takes_key"] = True
        return transform(f, **kwargs)

    return build


_score_function = _lazy("score_function", "score_function", takes_dist=True)
_rloo = _lazy("score_function", "rloo", takes_dist=True)
_optimal = _lazy("score_function", "score_function", takes_dist=True, baseline="optimal")
_pathwise = _lazy("pathwise", "pathwise", takes_dist=True)
_measure_valued = _lazy("measure_valued", "measure_valued")
_exact = _lazy("exact", "exact", takes_dist=True, takes_num_samples=False)
_arm = _lazy("arm", "arm")
_disarm = _lazy("arm", "disarm")
_arms = _lazy("arms", "arms")
_ugc = _lazy("ugc", "ugc")
_rebar = _lazy("rebar", "rebar", takes_dist=True)
_double_cv = _lazy("double_cv", "double_cv", takes_dist=True)
_rodeo = _lazy("rodeo", "rodeo_untrained")


def _relax(f, *, dist, num_samples, f_takes_key=False, temperature=0.5):
    """RELAX with the paper's control-variate family at its initial value.

    ``c_phi(z) = f(sigmoid(z / temperature)) + <phi, z>`` (Bernoulli; for
    ``dist=categorical``, ``f(softmax(z / temperature)) + <phi, z>`` with the
    softmax over the classes) with ``phi = 0``: the relaxed cost plus a linear
    residual, untrained (a study measures the estimator as a user would find
    it before tuning ``phi`` with ``variance_loss``).
    """
    from jaxgrad._src.dists import discrete
    from jaxgrad._src.estimators.rebar import relax, relaxation

    categorical = isinstance(dist, discrete.Categorical)

    def control_variate(z, *rest):
        # rest = (key, phi, *args) with f_takes_key (the key goes to f), else (phi, *args).
        keys, (phi, *args) = (rest[:1], rest[1:]) if f_takes_key else ((), rest)
        return f(relaxation(z, temperature, categorical), *keys, *args) + jnp.sum(phi * z)

    est = relax(f, control_variate, dist=dist, num_samples=num_samples, f_takes_key=f_takes_key)

    def with_initial_phi(key, logits, *args):
        phi = jnp.zeros(jnp.shape(logits), jnp.result_type(logits))
        return est(key, logits, phi, *args)

    return with_initial_phi


_indecater = _lazy("indecater", "indecater")
_categorical_disarm = _lazy("categorical_disarm", "categorical_disarm")
_unordered_set = _lazy("unordered_set", "unordered_set")


def _relaxation(sampler_name: str, **options: Any) -> Builder:
    """``builder`` wrapping ``relaxations.sampler_name(key, logits, **options, **extra)``.

    ``extra`` is the build-time ``temperature`` of entries that have one (an
    array is captured as a constant or a tracer, never branched on).
    """

    def build(f, *, dist, num_samples, f_takes_key=False, **extra):
        del dist
        from jaxgrad._src import relaxations

        sampler = getattr(relaxations, sampler_name)
        kwargs = dict(options, **extra)
        return sampler_estimator(
            f,
            lambda key, logits: sampler(key, logits, **kwargs),
            num_samples=num_samples,
            name=sampler_name,
            f_takes_key=f_takes_key,
        )

    return build


_DISCRETE = frozenset({BERNOULLI, CATEGORICAL})
_ALL = frozenset({BERNOULLI, CATEGORICAL, NORMAL})

_ENTRIES = (
    EstimatorInfo(
        "reinforce",
        _score_function,
        _ALL,
        unbiased=True,
        black_box=True,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        reference="Williams 1992, https://doi.org/10.1007/BF00992696",
    ),
    EstimatorInfo(
        "rloo",
        _rloo,
        _ALL,
        unbiased=True,
        black_box=True,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        num_samples=2,
        min_num_samples=2,
        reference="Kool, van Hoof & Welling 2019, https://openreview.net/forum?id=r1lgTGL5DE",
    ),
    EstimatorInfo(
        "reinforce-optimal",
        _optimal,
        _ALL,
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: n,
        # With 2 samples the leave-one-out estimate of b* is the other f: RLOO.
        num_samples=4,
        min_num_samples=2,
        reference="Goodfellow, Bengio & Courville, Deep Learning, sec. 20.9",
    ),
    EstimatorInfo(
        "pathwise",
        _pathwise,
        frozenset({NORMAL}),
        unbiased=True,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        reference="Kingma & Welling 2014, https://arxiv.org/abs/1312.6114",
    ),
    EstimatorInfo(
        "measure-valued",
        _measure_valued,
        frozenset({NORMAL}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        # Per draw: the base sample, two per loc coordinate, one per scale coordinate.
        f_evals=lambda n, s, v: (3 * _size(s) + 1) * n,
        reference="Mohamed et al. 2020, sec. 6, https://jmlr.org/papers/v21/19-346.html",
    ),
    EstimatorInfo(
        "exact",
        _exact,
        _DISCRETE,
        unbiased=True,
        black_box=True,
        higher_order=True,
        f_evals=lambda n, s, v: _support(v, s),
        reference="enumeration of the support",
    ),
    EstimatorInfo(
        "arm",
        _arm,
        frozenset({BERNOULLI}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: 2 * n,
        reference="Yin & Zhou 2019, https://arxiv.org/abs/1807.11143",
    ),
    EstimatorInfo(
        "disarm",
        _disarm,
        frozenset({BERNOULLI}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: 2 * n,
        reference="Dong, Mnih & Tucker 2020, https://arxiv.org/abs/2006.10680",
    ),
    EstimatorInfo(
        "arms",
        _arms,
        frozenset({BERNOULLI}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: n,
        # n = 2 is DisARM; 4 mutually antithetic samples show what the copula adds.
        num_samples=4,
        min_num_samples=2,
        reference="Dimitriev & Zhou 2021, https://arxiv.org/abs/2105.14141",
    ),
    EstimatorInfo(
        "ugc",
        _ugc,
        frozenset({BERNOULLI}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: 3 * n,  # a DisARM pair and one flipped copy per draw
        reference="Kunes et al. 2023 (AAAI), https://arxiv.org/abs/2208.06124",
    ),
    EstimatorInfo(
        "rebar",
        _rebar,
        _DISCRETE,
        unbiased=True,
        black_box=False,
        higher_order=False,
        f_evals=lambda n, s, v: 3 * n,
        reference="Tucker et al. 2017, https://arxiv.org/abs/1703.07370",
        temperature=0.5,
    ),
    EstimatorInfo(
        "relax",
        _relax,
        _DISCRETE,
        unbiased=True,
        black_box=False,
        higher_order=False,
        f_evals=lambda n, s, v: 3 * n,
        reference="Grathwohl et al. 2018, https://arxiv.org/abs/1711.00123",
        temperature=0.5,
    ),
    EstimatorInfo(
        "indecater",
        _indecater,
        frozenset({CATEGORICAL}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: _vars(s) * s[-1] * n,
        reference="De Smet, Sansone & Zuidberg Dos Martires 2023, https://arxiv.org/abs/2311.12569",
    ),
    EstimatorInfo(
        "unordered-set",
        _unordered_set,
        frozenset({CATEGORICAL}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: n,
        num_samples=2,
        min_num_samples=2,
        reference="Kool, van Hoof & Welling 2020, https://arxiv.org/abs/2002.06043",
    ),
    EstimatorInfo(
        "double-cv",
        _double_cv,
        _DISCRETE,
        unbiased=True,
        black_box=False,  # differentiates f in x at the samples
        higher_order=False,
        # One evaluation of f per sample; its gradient in x (a backward pass) is not counted.
        f_evals=lambda n, s, v: n,
        num_samples=2,
        min_num_samples=2,
        reference="Titsias & Shi 2022, https://arxiv.org/abs/2111.05300",
    ),
    EstimatorInfo(
        "gapped-straight-through",
        _relaxation("gapped_straight_through"),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Fan, Chi, Rudnicky & Ramadge 2022, https://arxiv.org/abs/2206.07235",
        temperature=1.0,
    ),
    EstimatorInfo(
        "decoupled-st-gumbel-softmax",
        _relaxation("decoupled_st_gumbel_softmax", forward_temperature=1.0),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Shah, Yan, Mozer & Liu 2024, https://arxiv.org/abs/2410.13331",
        # The exact categorical forward (1.0) with ST-GS's default backward temperature.
        temperature=0.5,
    ),
    EstimatorInfo(
        "rodeo",
        _rodeo,  # rodeo.linear_h at zero parameters (RLOO until tuned by variance_loss)
        frozenset({BERNOULLI}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        # K evaluations of f; the default h (no f inside) is evaluated K (D + 1) times.
        f_evals=lambda n, s, v: n,
        num_samples=2,
        min_num_samples=2,
        reference="Shi et al. 2022, https://arxiv.org/abs/2202.09497",
    ),
    EstimatorInfo(
        "categorical-disarm",
        _categorical_disarm,
        frozenset({CATEGORICAL}),
        unbiased=True,
        black_box=True,
        higher_order=False,
        f_evals=lambda n, s, v: n,
        num_samples=2,
        min_num_samples=2,
        reference="Dong, Mnih & Tucker 2021, https://arxiv.org/abs/2106.08056",
    ),
    EstimatorInfo(
        "straight-through",
        _relaxation("straight_through_bernoulli"),
        frozenset({BERNOULLI}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Bengio, Leonard & Courville 2013, https://arxiv.org/abs/1308.3432",
    ),
    EstimatorInfo(
        "straight-through-categorical",
        _relaxation("straight_through_categorical"),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Bengio, Leonard & Courville 2013, https://arxiv.org/abs/1308.3432",
    ),
    EstimatorInfo(
        "relaxed-bernoulli",
        _relaxation("relaxed_bernoulli"),
        frozenset({BERNOULLI}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Maddison, Mnih & Teh 2017, https://arxiv.org/abs/1611.00712",
        temperature=0.5,
    ),
    EstimatorInfo(
        "st-relaxed-bernoulli",
        _relaxation("relaxed_bernoulli", hard=True),
        frozenset({BERNOULLI}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Jang, Gu & Poole 2017, https://arxiv.org/abs/1611.01144",
        temperature=0.5,
    ),
    EstimatorInfo(
        "gumbel-softmax",
        _relaxation("gumbel_softmax"),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Jang, Gu & Poole 2017, https://arxiv.org/abs/1611.01144",
        temperature=0.5,
    ),
    EstimatorInfo(
        "st-gumbel-softmax",
        _relaxation("gumbel_softmax", hard=True),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Jang, Gu & Poole 2017, https://arxiv.org/abs/1611.01144",
        temperature=0.5,
    ),
    EstimatorInfo(
        "gumbel-rao",
        _relaxation("gumbel_rao", num_samples=10),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Paulus, Maddison & Krause 2021, https://arxiv.org/abs/2010.04838",
        temperature=0.5,
    ),
    EstimatorInfo(
        "reinmax",
        _relaxation("reinmax"),
        frozenset({CATEGORICAL}),
        unbiased=False,
        black_box=False,
        higher_order=True,
        f_evals=lambda n, s, v: n,
        relaxation=True,
        reference="Liu et al. 2023, https://arxiv.org/abs/2304.08612",
        temperature=1.0,
    ),
)

#: name -> :class:`EstimatorInfo`, for every estimator and relaxation.
ESTIMATORS: Mapping[str, EstimatorInfo] = {e.name: e for e in _ENTRIES}


def applicable(variable: str) -> list[str]:
    """The names of the registered estimators that apply to ``variable``."""
    return [name for name, e in ESTIMATORS.items() if e.applies_to(variable)]


# ------------------------------------------------------------------ variational objectives


@dataclasses.dataclass(frozen=True)
class ObjectiveInfo:
    """Metadata of a variational objective and its gradient estimator (``jaxgrad.OBJECTIVES``).

    These estimate the gradient of a bound on ``log p(x)``, not of ``E[f]``, so
    they live beside :data:`ESTIMATORS` rather than in it. Each builds, from a
    log-joint ``log_p(z, *args)``, ``est(key, params, *args)`` whose value is a
    Monte Carlo estimate of the bound and whose gradient in ``params`` is the
    estimator (``jaxgrad._src.estimators.multi_sample``).

    Attributes:
      name: the registry key.
      builder: ``builder(log_p, *, dist, num_samples) -> est``; call :meth:`build`.
      bound: ``"elbo"`` or ``"iwae"``, the objective whose gradient it estimates.
      variables: the latent types it applies to.
      unbiased: whether ``E[grad est]`` is the gradient of the bound.
      reparameterized: whether it needs a reparameterizable ``q``.
      higher_order: whether second derivatives work (else they raise).
      num_samples: the default ``K``; ``min_num_samples`` the smallest.
      reference: the paper.
    """

    name: str
    builder: Builder
    bound: str
    variables: frozenset[str]
    unbiased: bool
    reparameterized: bool
    higher_order: bool
    num_samples: int = 1
    min_num_samples: int = 1
    reference: str = ""

    def build(
        self, log_p: Callable[..., Array], *, dist: Any, num_samples: int | None = None
    ) -> Callable[..., Array]:
        """``est(key, params, *args)`` for ``log_p(z, *args) = log p(x, z)``."""
        k = self.num_samples if num_samples is None else num_samples
        return self.builder(log_p, dist=dist, num_samples=k)

    def cost(self, num_samples: int | None = None) -> int:
        """Evaluations of ``log_p`` per estimate: ``K``."""
        return self.num_samples if num_samples is None else int(num_samples)


def _objective(name: str, **options: Any) -> Builder:
    def build(log_p, *, dist, num_samples):
        from jaxgrad._src.estimators import multi_sample

        return getattr(multi_sample, name)(log_p, dist=dist, num_samples=num_samples, **options)

    return build


_OBJECTIVE_ENTRIES = (
    ObjectiveInfo(
        "elbo",
        _objective("elbo"),
        "elbo",
        frozenset({NORMAL}),
        unbiased=True,
        reparameterized=True,
        higher_order=True,
        reference="Kingma & Welling 2014, https://arxiv.org/abs/1312.6114",
    ),
    ObjectiveInfo(
        "elbo-stl",
        _objective("elbo", stl=True),
        "elbo",
        frozenset({NORMAL}),
        unbiased=True,
        reparameterized=True,
        higher_order=False,
        reference="Roeder, Wu & Duvenaud 2017, https://arxiv.org/abs/1703.09194",
    ),
    ObjectiveInfo(
        "iwae",
        _objective("iwae_bound"),
        "iwae",
        frozenset({NORMAL}),
        unbiased=True,
        reparameterized=True,
        higher_order=True,
        num_samples=5,
        reference="Burda, Grosse & Salakhutdinov 2016, https://arxiv.org/abs/1509.00519",
    ),
    ObjectiveInfo(
        "dreg",
        _objective("dreg"),
        "iwae",
        frozenset({NORMAL}),
        unbiased=True,
        reparameterized=True,
        higher_order=False,
        num_samples=5,
        reference="Tucker, Lawson, Gu & Maddison 2019, https://arxiv.org/abs/1810.04152",
    ),
    ObjectiveInfo(
        "vimco",
        _objective("vimco"),
        "iwae",
        _ALL,
        unbiased=True,
        reparameterized=False,
        higher_order=False,
        num_samples=5,
        min_num_samples=2,
        reference="Mnih & Rezende 2016, https://arxiv.org/abs/1602.06725",
    ),
)

#: name -> :class:`ObjectiveInfo`, for every variational objective.
OBJECTIVES: Mapping[str, ObjectiveInfo] = {o.name: o for o in _OBJECTIVE_ENTRIES}
