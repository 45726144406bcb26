"""Shared machinery of the estimator transformations.

Every estimator is ``jaxgrad.NAME(f, *, options) -> est`` with
``est(key, params, *args) -> estimate``: the value is a Monte Carlo average of
``f(x, *args)`` over ``x ~ p_params``, and ``jax.grad(est, argnums=1)`` is the
estimator. ``f`` is written for one sample and returns a floating scalar
(an integer or boolean ``f`` is refused with a ``TypeError``); helpers here
batch it, validate it, and attach the gradient estimates.

Contracts every estimator keeps:

* **Masked parameters.** An infinite logit (``-inf``: an impossible class or
  coin value; ``+inf``: a certain one) is deterministic: the value stays
  finite and its gradient is zero.
* **NaN in, NaN out.** A NaN parameter gives a NaN value or a NaN gradient
  (estimators attached by :func:`with_gradient` make both NaN), never a
  silently finite value with a zero gradient; so does a categorical variable
  whose logits are all ``-inf`` (it has no distribution).
* **Costs with their own noise.** ``f_takes_key=True`` calls
  ``f(x, key, *args)`` with one independent key per evaluation
  (:func:`batch_f`).
* **Curvature.** First-order estimators refuse second derivatives with an
  error instead of returning zeros (:func:`with_gradient`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxgrad._src import checks, sharding

Array = jax.Array


def magic_box(x: Array) -> Array:
    r"""The DiCE operator: value 1, derivative of every order as ``exp(x)``.

    .. math::
        \boxdot(x) = \exp(x - \bot(x)), \qquad \boxdot(x) = 1, \qquad
        \nabla \boxdot(x) = \boxdot(x) \nabla x .

    Multiplying a cost by ``magic_box(log p(x))`` gives a surrogate whose value
    is the cost and whose derivatives of every order are unbiased
    score-function estimators of the derivatives of ``E[f]`` (``bot`` is
    stop-gradient).

    Args:
      x: a (sum of) log-probabilities of sampled values.

    Returns:
      An array of ones of the shape and dtype of ``x`` that carries the
      gradient of ``exp(x)``.

    Example:
      >>> import jax, jaxgrad
      >>> float(jaxgrad.magic_box(3.0)), float(jax.grad(jaxgrad.magic_box)(3.0))
      (1.0, 1.0)

    References:
      Foerster et al., *DiCE: The Infinitely Differentiable Monte Carlo
      Estimator*, ICML 2018. https://arxiv.org/abs/1802.05098
    """
    return jnp.exp(x - jax.lax.stop_gradient(x))


def check_f(f: Any, fn: str) -> None:
    """Raises ``TypeError`` unless ``f`` is callable."""
    if not callable(f):
        raise TypeError(
            f"{fn}: f must be a callable f(x, *args) -> scalar, got {type(f).__name__}."
        )


def check_dist(dist: Any, fn: str, *, need_support: bool = False) -> None:
    """Raises ``TypeError`` unless ``dist`` has ``sample`` and ``log_prob``.

    A class instead of an instance (``jaxgrad.dists.Bernoulli`` for
    ``jaxgrad.dists.bernoulli``) has those methods too, unbound; it is refused
    with a message naming the instance to use.
    """
    if isinstance(dist, type):
        from jaxgrad._src import dists  # estimators sit above dists

        builtin = {dists.Bernoulli: "bernoulli", dists.Categorical: "categorical"}
        builtin[dists.Normal] = "normal"
        name = dist.__name__
        use = f"jaxgrad.dists.{builtin[dist]}" if dist in builtin else f"an instance, {name}()"
        raise TypeError(
            f"{fn}: dist must be a distribution instance, got the class {dist.__name__}; "
            f"pass dist={use}."
        )
    needed = ("sample", "log_prob", "support") if need_support else ("sample", "log_prob")
    missing = [m for m in needed if not callable(getattr(dist, m, None))]
    if missing:
        raise TypeError(
            f"{fn}: dist must be a jaxgrad.dists spec or an object with "
            f"{', '.join(needed)}; {type(dist).__name__} lacks {', '.join(missing)}."
        )


def check_reparameterizable(dist: Any, fn: str, alternatives: str) -> None:
    """Raises ``ValueError`` unless ``dist.reparameterizable``; ``alternatives`` say what to use."""
    if getattr(dist, "reparameterizable", False) is not True:
        raise ValueError(
            f"{fn}: dist must be reparameterizable (its sample differentiable in params, "
            f"e.g. jaxgrad.dists.normal), but {getattr(dist, 'name', type(dist).__name__)!r} "
            f"is not (dist.reparameterizable is not True). {alternatives}; a custom spec with "
            f"a differentiable sample sets reparameterizable = True."
        )


def check_estimator(
    f: Any,
    num_samples: Any,
    fn: str,
    minimum: int = 1,
    why: str = "",
    *,
    f_takes_key: Any = False,
) -> tuple[int, Callable[..., Array]]:
    """The prologue of an estimator transformation ``NAME(f, *, num_samples, f_takes_key)``.

    Checks that ``f`` is callable and ``num_samples`` a static int ``>= minimum``
    (``why`` explains the minimum), and returns
    ``(num_samples, batch_f(f, fn, f_takes_key=f_takes_key))``.
    """
    check_f(f, fn)
    num_samples = checks.check_num_samples(num_samples, fn, minimum, why)
    return num_samples, batch_f(f, fn, f_takes_key=f_takes_key)


def split_tuning_params(rest: tuple, fn: str, name: str, of: str) -> tuple[Any, tuple]:
    """``(tuning_params, args)`` from the arguments after ``logits`` of a tunable estimator.

    Tunable estimators are ``est(key, logits, name, *args)``, where ``name``
    holds the parameters of the user's function ``of`` (RELAX's control
    variate, RODEO's ``h``); a call without them raises a ``TypeError`` saying so.
    """
    if not rest:
        user_fn = of.split("(")[0]
        raise TypeError(
            f"{fn}: the estimator is est(key, logits, {name}, *args) and was called "
            f"without {name}, the parameters of {of}; "
            f"pass them, e.g. est(key, logits, phi) (None if {user_fn} ignores them)."
        )
    return rest[0], rest[1:]


def check_f_takes_key(f_takes_key: Any, fn: str) -> bool:
    """Returns ``f_takes_key`` after checking it is a static Python bool."""
    meaning = "True to call f(x, key, *args) with its own key per evaluation"
    return checks.check_bool(f_takes_key, fn, "f_takes_key", meaning)


def split_f_key(key: Any, f_takes_key: bool) -> tuple[Any, Any]:
    """``(sample_key, f_key)``: ``(key, None)`` when ``f`` takes no key, else a split of ``key``.

    With ``f_takes_key`` off the estimator's key is used exactly as before the
    option existed (bit-identical samples); with it on, the samples come from
    one half and every evaluation of ``f`` gets a key split from the other.
    """
    if not f_takes_key:
        return key, None
    sample_key, f_key = jax.random.split(key)
    return sample_key, f_key


def check_logits(key: Any, logits: Any, fn: str, *, classes_last: bool = False) -> Array:
    """Validates the ``key`` and ``logits`` of an estimator call; returns the logits as an array.

    Raises the errors of ``checks.check_key`` and ``TypeError`` unless ``logits``
    is floating; with ``classes_last`` (categorical logits ``[..., K]``), also
    ``ValueError`` if ``logits`` is a scalar.
    """
    checks.check_key(key, fn)
    logits = jnp.asarray(logits)
    checks.check_floating(logits, fn, "logits")
    if classes_last and logits.ndim < 1:
        raise ValueError(
            f"{fn}: logits must have shape [..., K] with the K classes last (e.g. [D, K] "
            f"for D variables), got a scalar."
        )
    return logits


def batch_f(f: Callable[..., Array], fn: str, *, f_takes_key: Any = False) -> Callable[..., Array]:
    r"""Returns ``fs(xs, *args, key=None)`` mapping the one-sample ``f`` over ``xs``' leading axis.

    The output of ``f`` is checked (statically, with ``jax.eval_shape``) to be a
    scalar, so that a batched ``f`` is caught with a message rather than a
    silent broadcast.

    With ``f_takes_key``, ``f`` is ``f(x, key, *args)`` and ``fs`` needs
    ``key``: it is split into one key per row of ``xs``, so that every
    evaluation of ``f`` draws its own, independent noise,

    .. math::
        \mathrm{fs}(x_{1:M}, \ldots, k)_m = f(x_m, k_m, \ldots), \qquad
        (k_1, \ldots, k_M) = \mathrm{split}(k, M).

    No two evaluations share a key, also not the two halves of an antithetic
    pair or a sample and the samples that form its baseline: noise that
    cannot be replayed cannot cancel, so a variance study measures what an
    environment with irreproducible noise (an RL reward, a simulator, dropout)
    gives. To reuse noise deliberately (common random numbers), pass a key
    through ``*args`` instead, with ``f_takes_key=False``.
    """
    f_takes_key = check_f_takes_key(f_takes_key, fn)

    def fs(xs: Any, *args: Any, key: Any = None) -> Array:
        x0 = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
        if not f_takes_key:
            check_f_output(jax.eval_shape(lambda x: f(x, *args), x0), fn)
            return jax.vmap(lambda x: f(x, *args))(xs)
        if key is None:  # pragma: no cover - an estimator bug, not a user error
            raise TypeError(f"{fn}: internal error: f takes a key but none was passed.")
        n = jax.tree.leaves(xs)[0].shape[0]
        keys = jax.random.split(key, n)
        k0 = jax.ShapeDtypeStruct(keys.shape[1:], keys.dtype)
        check_f_output(jax.eval_shape(lambda x, k: f(x, k, *args), x0, k0), fn)
        return jax.vmap(lambda x, k: f(x, k, *args))(xs, keys)

    return fs


def check_f_output(out: Any, fn: str, what: str = "f") -> None:
    """Checks the abstract output of one evaluation of ``f``: a floating scalar.

    Raises:
      ValueError: if it is not a scalar (a batched ``f``).
      TypeError: if its dtype is not floating (an integer or boolean cost
        would silently give zero or truncated gradients).
    """
    checks.check_scalar_output(getattr(out, "shape", None) or (), fn, what)
    dtype = getattr(out, "dtype", None)
    if dtype is None:
        try:
            dtype = jnp.result_type(out)
        except TypeError:
            dtype = type(out).__name__
    if isinstance(dtype, str) or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn}: {what} must return a floating scalar, got dtype {dtype}; an integer or "
            f"boolean cost has no gradient. Return a float, e.g. jnp.float32(...) or "
            f"x.astype(jnp.float32)."
        )


#: The estimators whose second derivatives are correct, named in the error for the others.
HIGHER_ORDER_ALTERNATIVES = (
    'jaxgrad.score_function with baseline=None or "loo", jaxgrad.rloo, or jaxgrad.pathwise '
    "(reparameterizable dists); jaxgrad.exact for small discrete supports"
)


def _is_zero(t: Any) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


@functools.cache
def _refuse(fn: str) -> Callable[..., Any]:
    """The identity on a list of arrays whose derivative raises (for estimator ``fn``).

    Called inside the derivative rule of :func:`_attach`, it sees a tangent only
    when an *outer* derivative reaches its inputs: a second derivative.
    """

    @jax.custom_jvp
    def refuse(xs: list) -> list:
        return xs

    def rule(primals, tangents):
        (xs,), (ts,) = primals, tangents
        if any(not _is_zero(t) for t in ts):
            raise TypeError(
                f"{fn} is a first-order estimator: its gradient estimate is attached by a "
                f"custom rule, so a second derivative through it (jax.hessian, "
                f"jacfwd(jacrev), jacrev(jacrev), or a mixed derivative in params and *args) "
                f"would be silently wrong and is refused. First derivatives (jax.grad, "
                f"jacrev, jacfwd, jvp) work; for second derivatives use "
                f"{HIGHER_ORDER_ALTERNATIVES}."
            )
        return xs, [jnp.zeros_like(x) for x in xs]

    refuse.defjvp(rule, symbolic_zeros=True)
    return refuse


@functools.cache
def _attach(fn: str) -> Callable[..., Array]:
    r"""``attach(value, ps, gs) = value`` whose tangent is ``dvalue + sum_i <dp_i, g_i>``.

    ``gs`` are the gradient estimates of the parameter leaves ``ps`` (masked:
    zero at infinite parameters). The first-order rule never differentiates
    ``gs``: they enter the tangent as they are, constants unless the caller
    kept their dependence on tuning parameters (double backprop). Inside
    the rule ``ps`` always, and ``value`` whenever ``ps`` are differentiated,
    pass through :func:`_refuse`, so that an outer derivative of a derivative
    raises: ``d/dp`` of the ``p`` tangent (the Hessian), ``d/dargs`` of it
    (``value`` depends on ``*args`` and on what ``f`` closes over, and so does
    the estimate), ``d/dp`` of the ``args`` tangent (``p``). A second
    derivative in ``*args`` alone only differentiates ``value``'s own
    (pathwise) tangent, and works.
    """
    refuse = _refuse(fn)

    @jax.custom_jvp
    def attach(value: Array, ps: list, gs: list) -> Array:
        return value

    def rule(primals, tangents):
        value, ps, gs = primals
        d_value, d_ps, _ = tangents  # gs are constants at first order
        live = [not _is_zero(t) for t in d_ps]
        watched = refuse(list(ps) + ([value] if any(live) else []))
        ps = watched[: len(ps)]
        out = jnp.zeros_like(value) if _is_zero(d_value) else d_value
        for p, t, g, on in zip(ps, d_ps, gs, live, strict=True):
            if on:
                g = g.astype(p.dtype)
                g = jnp.where(jnp.isinf(p), jnp.zeros_like(g), g)
                out = out + jnp.sum(t * g).astype(value.dtype)
        return value, sharding.vary_like(out, value)

    attach.defjvp(rule, symbolic_zeros=True)
    return attach


def with_gradient(
    value: Array,
    params: Any,
    grad: Any,
    *,
    fn: str,
    differentiable: bool = False,
) -> Array:
    r"""Returns ``value`` whose gradient with respect to ``params`` is ``grad``.

    .. math::
        s(\theta) = v, \qquad \nabla_\theta s = \hat g + \nabla_\theta v ,

    ``value`` should not depend on ``params`` except through paths whose
    gradient is wanted as well (e.g. ``f``'s own arguments, pathwise); ``grad``
    is a pytree like ``params``, an estimate computed by the caller (a
    constant for the first derivative). The rule is a ``jax.custom_jvp`` (so
    ``jax.grad``, ``jacrev``, ``jacfwd``, ``jvp``, ``vmap``, ``jit`` and
    ``shard_map`` work), and estimators built on it are **first-order only**:
    any second derivative through it, in ``params`` (``jax.hessian``, either
    order) or mixed with ``*args``, raises a ``TypeError`` naming the
    estimator ``fn`` and the higher-order alternatives, instead of returning
    the zeros that stop-gradient algebra would. A second derivative in
    ``*args`` alone works (it only differentiates ``value``).

    Parameters: infinite entries (masked logits) get a zero gradient and do
    not turn the value into NaN. NaN in, NaN out: a NaN entry of ``params``
    makes the value and the whole gradient NaN (never a silent finite value
    and zero gradient).

    With ``differentiable=True`` the gradient of ``grad`` itself is kept, so
    that a loss built from the estimate (e.g. ``variance_loss``) can be
    differentiated with respect to whatever ``grad`` depends on (REBAR's
    temperature, RELAX's control variate): double backprop. ``params`` still
    refuse a second derivative.
    """
    ps = [jnp.asarray(p) for p in jax.tree.leaves(params)]
    gs = jax.tree.leaves(grad)
    if not differentiable:
        gs = [jax.lax.stop_gradient(g) for g in gs]
    # NaN in, NaN out: a NaN parameter poisons the value and (through it) the gradient.
    nan = sum(jnp.sum(jnp.isnan(jax.lax.stop_gradient(p))) for p in ps)
    value = jnp.where(nan > 0, jnp.asarray(jnp.nan, value.dtype), value)
    gs = [jnp.where(nan > 0, jnp.asarray(jnp.nan, g.dtype), g) for g in gs]
    return _attach(fn)(value, ps, gs)


def nan_without_law(value: Array, logits: Array) -> Array:
    """``value``, or NaN where a categorical variable (logits ``[..., K]``) has every class masked.

    NaN in, NaN out for categorical estimators: all-``-inf`` logits have no
    distribution, so no estimate of its expectation is finite.
    """
    l = jax.lax.stop_gradient(logits)
    impossible = jnp.any(jnp.all(jnp.isneginf(l), axis=-1))
    return jnp.where(impossible, jnp.asarray(jnp.nan, value.dtype), value)


def sample_n(dist: Any, key: Any, params: Any, num_samples: int) -> Any:
    """``num_samples`` independent joint samples of ``dist``, stacked on a new leading axis.

    The built-in specs (``jaxgrad.dists.bernoulli``, ``categorical``, ``normal``)
    are products over every element of their parameters, so ``N`` joint samples
    are one draw with the parameters broadcast to ``[N, ...]``: one key, one
    flat block of noise. Splitting the key and vmapping ``dist.sample`` instead
    compiles several times slower on CPU (small threefry draws under ``vmap``).
    Any other spec is sampled with ``jax.random.split`` and ``vmap``. Gradients
    flow to ``params`` as ``dist.sample`` lets them (pathwise for ``normal``).
    """
    from jaxgrad._src import dists  # estimators sit above dists

    if isinstance(dist, dists.Bernoulli | dists.Categorical):
        logits = jnp.asarray(params)
        return dist.sample(key, jnp.broadcast_to(logits, (num_samples, *logits.shape)))
    if isinstance(dist, dists.Normal) and isinstance(params, tuple | list) and len(params) == 2:
        loc, scale = (jnp.asarray(p) for p in params)
        shape = (num_samples, *jnp.broadcast_shapes(loc.shape, scale.shape))
        return dist.sample(key, (jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape)))
    keys = jax.random.split(key, num_samples)
    return jax.vmap(dist.sample, in_axes=(0, None))(keys, params)
