r"""Kullback-Leibler divergences between distribution specs: closed forms and Monte Carlo.

.. math::
    \mathrm{KL}(p \,\|\, q) = E_{x \sim p}\big[\log p(x) - \log q(x)\big] \;\ge 0 .

Every built-in spec is a product of independent factors, so the KL of the
joint is the sum of the KLs of the factors. ``kl`` returns that **joint**
value (a scalar, like ``log_prob`` and ``entropy``); ``kl_elementwise``
returns **one value per factor** (the broadcast batch shape of ``p_params``
and ``q_params``), what ``distrax`` and TFP return from ``kl_divergence``.

Closed forms are dispatched on the pair of spec classes through a small
registry (:func:`register_kl`, public so that users can add pairs). Built in,
per factor:

* ``normal`` and ``log_normal`` (the KL is invariant under ``exp``), with
  :math:`r = \sigma_p / \sigma_q`:
  :math:`\tfrac12 (r^2 - 1 - 2 \log r) + \tfrac12 ((\mu_p - \mu_q) / \sigma_q)^2`;
* ``multivariate_normal``, with :math:`M = L_q^{-1} L_p` and
  :math:`z = L_q^{-1}(\mu_p - \mu_q)` (triangular solves, no inverse):
  :math:`\tfrac12 (\lVert M \rVert_F^2 - d - 2 \sum_i \log M_{ii} + \lVert z \rVert^2)`;
* ``bernoulli`` and ``categorical``, probabilities :math:`\pi` and :math:`\rho`:
  :math:`\sum_k \pi_k (\log \pi_k - \log \rho_k)` with :math:`0 \log 0 = 0`;
* ``exponential``, with :math:`r = \lambda_q / \lambda_p`: :math:`r - 1 - \log r`;
* ``gamma`` (and ``exponential`` against ``gamma`` either way, as
  :math:`\alpha = 1`), rates :math:`\beta`:
  :math:`(\alpha_p - \alpha_q) \psi(\alpha_p) - \log\Gamma(\alpha_p)
  + \log\Gamma(\alpha_q) + \alpha_q \log(\beta_p / \beta_q)
  + \alpha_p (\beta_q - \beta_p) / \beta_p`;
* ``dirichlet`` (and ``beta``, the case :math:`K = 2`), concentrations
  :math:`\alpha \| \beta`: :math:`\log B(\beta) - \log B(\alpha)
  + \sum_k (\alpha_k - \beta_k)(\psi(\alpha_k) - \psi(\alpha_0))`;
* ``uniform``: :math:`\log\frac{h_q - l_q}{h_p - l_p}` if
  :math:`[l_p, h_p] \subseteq [l_q, h_q]`, else :math:`+\infty`;
* ``laplace``, with :math:`\delta = |\mu_p - \mu_q|`:
  :math:`\log(b_q / b_p) + \delta / b_q + (b_p / b_q) e^{-\delta / b_p} - 1`.

The forms are written so that they are exactly zero, with finite gradients
(and Hessians: the Fisher information is the Hessian of the KL) at
:math:`p = q`: ratios of scales enter through :math:`t = \log\sigma_p -
\log\sigma_q` as :math:`\mathrm{expm1}(2t) - 2t`, never as ``log(0/0)``; the
Laplace term in :math:`\delta` uses a form whose autodiff second derivative
is correct at :math:`\delta = 0` (where :math:`|\cdot|` has a kink); the
discrete forms use ``log_sigmoid``/``log_softmax`` and mask zero-probability
terms, so logits of :math:`\pm 10^4` (and :math:`\pm\infty`) stay finite, and
the KL is :math:`+\infty` exactly where :math:`p > 0 = q`. (``uniform`` at
:math:`p = q` sits on the edge of the region where its KL is finite: the
gradient there is the finite one-sided one, not zero.)

Any other pair (different families, relaxed specs, user objects with
``sample`` and ``log_prob``) raises ``NotImplementedError`` naming both; for
those, :func:`kl_estimate` is the Monte Carlo estimate with an unbiased
gradient (pathwise where ``p`` is reparameterizable, score function
otherwise).

Dtypes: the math is done in the compute dtype (at least float32) and the
result cast to the parameters' dtype (the wider of ``p``'s and ``q``'s when
they differ; casting is explicit, so strict dtype promotion is respected).

References:
  Kullback & Leibler, *On Information and Sufficiency*, Ann. Math. Statist.
  22(1), 1951. https://doi.org/10.1214/aoms/1177729694 ;
  Penny, *KL-Divergences of Normal, Gamma, Dirichlet and Wishart Densities*,
  technical report, UCL 2001 (normal, gamma, Dirichlet).
  https://www.fil.ion.ucl.ac.uk/~wpenny/publications/densities.ps ;
  Gil, Alajaji & Linder, *Rényi divergence measures for commonly used
  univariate continuous distributions*, Information Sciences 249, 2013
  (table of KL divergences: Laplace, uniform, beta).
  https://doi.org/10.1016/j.ins.2013.06.018 ;
  Mohamed et al., *Monte Carlo Gradient Estimation in Machine Learning*,
  JMLR 2020, secs. 4-5 (the score-function and pathwise estimators).
  https://jmlr.org/papers/v21/19-346.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy import special

from jaxgrad._src import checks
from jaxgrad._src.dists.base import Args, Spec
from jaxgrad._src.dists.continuous import (
    Exponential,
    Laplace,
    LogNormal,
    MultivariateNormal,
    Normal,
    Uniform,
)
from jaxgrad._src.dists.discrete import Bernoulli, Categorical
from jaxgrad._src.dists.implicit import Beta, Dirichlet, Gamma

Array = jax.Array

#: ``(type(p), type(q)) -> fn(p, p_params, q, q_params)`` returning one KL per factor.
_REGISTRY: dict[tuple[type, type], Callable[..., Array]] = {}


def register_kl(p_cls: type, q_cls: type) -> Callable[[Callable[..., Array]], Callable[..., Array]]:
    r"""Registers a closed-form KL for the pair of classes ``(p_cls, q_cls)``; a decorator.

    The decorated function is called as ``fn(p, p_params, q, q_params)`` and
    returns :math:`\mathrm{KL}(p \| q)` of **each factor**, an array (what
    :func:`kl_elementwise` returns); :func:`kl` sums it. Lookup walks both
    classes' method resolution orders, so a pair registered for base classes
    covers their subclasses; the most derived ``p`` class wins. Registering
    a pair again replaces the previous function. ``p_cls`` and ``q_cls`` may
    be any classes, not only jaxgrad specs (e.g. a user's own distribution
    objects).

    Args:
      p_cls: the class of ``p`` (e.g. ``jaxgrad.dists.Normal``).
      q_cls: the class of ``q``.

    Returns:
      A decorator that registers its function and returns it unchanged.

    Raises:
      TypeError: if ``p_cls`` or ``q_cls`` is not a class, or the decorated
        object is not callable.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> class Point:  # a point mass, as a user-defined "distribution"
      ...     pass
      >>> @jaxgrad.dists.register_kl(Point, Point)
      ... def _kl_point(p, p_params, q, q_params):
      ...     return jnp.where(p_params == q_params, 0.0, jnp.inf)
      >>> float(jaxgrad.dists.kl(Point(), jnp.array(1.0), Point(), jnp.array(2.0)))
      inf
    """
    for name, cls in (("p_cls", p_cls), ("q_cls", q_cls)):
        if not isinstance(cls, type):
            raise TypeError(
                f"register_kl: {name} must be a class (e.g. jaxgrad.dists.Normal), got "
                f"{checks._describe(cls)}; pass type(spec) for an instance."
            )

    def decorator(fn: Callable[..., Array]) -> Callable[..., Array]:
        if not callable(fn):
            raise TypeError(
                f"register_kl: the registered object must be a function "
                f"fn(p, p_params, q, q_params), got {checks._describe(fn)}."
            )
        _REGISTRY[(p_cls, q_cls)] = fn
        return fn

    return decorator


def _name(d: Any) -> str:
    name = getattr(d, "name", None)
    return name if isinstance(name, str) else type(d).__name__


def _lookup(p: Any, q: Any, fn: str) -> Callable[..., Array]:
    for pc in type(p).__mro__:
        for qc in type(q).__mro__:
            rule = _REGISTRY.get((pc, qc))
            if rule is not None:
                return rule
    pn, qn = _name(p), _name(q)
    what = "" if isinstance(p, Spec) and isinstance(q, Spec) else " (not both jaxgrad specs)"
    raise NotImplementedError(
        f"{fn}: no closed form for KL({pn} || {qn}){what}; use jaxgrad.dists.kl_estimate(key, "
        f"p, p_params, q, q_params, num_samples=...) for a Monte Carlo estimate, or register one "
        f"with @jaxgrad.dists.register_kl({type(p).__name__}, {type(q).__name__})."
    )


def kl_elementwise(p: Any, p_params: Any, q: Any, q_params: Any) -> Array:
    r"""The KL divergence :math:`\mathrm{KL}(p \| q)` of each factor, in closed form.

    .. math::
        \mathrm{KL}(p_i \,\|\, q_i) = E_{x_i \sim p_i}[\log p_i(x_i) - \log q_i(x_i)],

    one value per independent factor: the broadcast of the two batch shapes
    (for ``multivariate_normal``, ``categorical`` and ``dirichlet`` the last
    axis, or two, of the parameters is one factor's event). This is what
    ``distrax`` and TFP return; :func:`kl` is its sum. See the module
    docstring for the formulas of every registered pair.

    Args:
      p: a spec, e.g. ``jaxgrad.dists.normal``.
      p_params: its params, as for ``p.log_prob``.
      q: a spec of a family with a closed form against ``p`` (see
        :func:`register_kl`).
      q_params: its params.

    Returns:
      An array of the broadcast batch shape, in the parameters' dtype; ``+inf``
      where the KL is infinite (``uniform`` supports not nested, a
      ``categorical`` or ``bernoulli`` outcome with ``p > 0 = q``).

    Raises:
      NotImplementedError: if no closed form is registered for the pair (use
        :func:`kl_estimate`).
      TypeError, ValueError: for params of the wrong structure, dtype or shape,
        or non-positive concrete scales, rates and concentrations (raised by
        the specs' own validation, naming e.g. ``normal.kl``), batch shapes
        that do not broadcast, or event shapes that differ.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> n = jaxgrad.dists.normal
      >>> q_params = (0.0, jnp.array([1.0, 2.0]))
      >>> kls = jaxgrad.dists.kl_elementwise(n, (jnp.zeros(2), 1.0), n, q_params)
      >>> kls.tolist()  # [0, log 2 + 1/8 - 1/2]
      [0.0, 0.318...]
    """
    return _lookup(p, q, "kl_elementwise")(p, p_params, q, q_params)


def kl(p: Any, p_params: Any, q: Any, q_params: Any) -> Array:
    r"""The joint KL divergence :math:`\mathrm{KL}(p \| q)`: the sum over every factor.

    .. math::
        \mathrm{KL}(p \,\|\, q) = E_{x \sim p}[\log p(x) - \log q(x)]
        = \sum_i \mathrm{KL}(p_i \,\|\, q_i)

    for the products of independent factors that the specs are. A scalar,
    like ``log_prob`` and ``entropy`` (the estimators' contract); the value of
    each factor is :func:`kl_elementwise`. Closed forms only (see the module
    docstring); differentiable in both params, with finite gradients at
    :math:`p = q` (where the KL and its gradient are 0).

    Args:
      p: a spec, e.g. ``jaxgrad.dists.normal``.
      p_params: its params, as for ``p.log_prob``.
      q: a spec of a family with a closed form against ``p``.
      q_params: its params.

    Returns:
      A scalar in the parameters' dtype (``+inf`` if any factor's KL is).

    Raises:
      NotImplementedError: if no closed form is registered for the pair (use
        :func:`kl_estimate`).
      TypeError, ValueError: as :func:`kl_elementwise`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> n = jaxgrad.dists.normal
      >>> round(float(jaxgrad.dists.kl(n, (0.0, 1.0), n, (1.0, 2.0))), 6)  # log 2 + 2/8 - 1/2
      0.443147
      >>> g = jax.grad(lambda m: jaxgrad.dists.kl(n, (0.0, 1.0), n, (m, 1.0)))(0.0)
      >>> float(g)  # zero at p == q
      0.0
      >>> b = jaxgrad.dists.bernoulli
      >>> float(jaxgrad.dists.kl(b, jnp.zeros(3), b, jnp.zeros(3)))
      0.0
    """
    out = _lookup(p, q, "kl")(p, p_params, q, q_params)
    return jnp.sum(out)


# ---------------------------------------------------------------- parsing


def _wider(a: Any, b: Any) -> Any:
    """The wider of two dtypes, explicitly (strict promotion refuses mixing); float32 on ties."""
    a, b = jnp.dtype(a), jnp.dtype(b)
    if a == b:
        return a
    if a.itemsize != b.itemsize:
        return a if a.itemsize > b.itemsize else b
    return jnp.dtype(jnp.float32)


def _parse(
    p: Spec, p_params: Any, q: Spec, q_params: Any, method: str
) -> tuple[tuple[Array, ...], tuple[Array, ...], tuple[int, ...], Any]:
    """Validated params of both, in one compute dtype, with the joint batch shape and dtype."""
    pa: Args = p._args(p_params, f"{method}(p_params)")
    qa: Args = q._args(q_params, f"{method}(q_params)")
    if pa.event_shape != qa.event_shape:
        raise ValueError(
            f"{method}: p and q have different event shapes, {pa.event_shape} ({p.name}) and "
            f"{qa.event_shape} ({q.name}); give both the same number of categories or "
            f"dimensions (the last axis of their params)."
        )
    try:
        batch = jnp.broadcast_shapes(pa.batch_shape, qa.batch_shape)
    except ValueError:
        raise ValueError(
            f"{method}: the batch shapes of p_params {pa.batch_shape} and q_params "
            f"{qa.batch_shape} do not broadcast together; give them equal shapes, or size-1 "
            f"dimensions where one is shared."
        ) from None
    dtype = _wider(pa.dtype, qa.dtype)
    compute = _wider(pa.compute, qa.compute)
    pp = tuple(x.astype(compute) for x in pa.arrays)
    qp = tuple(x.astype(compute) for x in qa.arrays)
    return pp, qp, tuple(batch), dtype


def _closed_form(
    p_cls: type, q_cls: type
) -> Callable[[Callable[..., Array]], Callable[..., Array]]:
    """Registers ``math(pp, qp) -> per-factor KL`` (compute dtype) with parsing and casting."""

    def decorator(math: Callable[..., Array]) -> Callable[..., Array]:
        def rule(p: Any, p_params: Any, q: Any, q_params: Any) -> Array:
            pp, qp, batch, dtype = _parse(p, p_params, q, q_params, "kl")
            return jnp.broadcast_to(math(pp, qp), batch).astype(dtype)

        rule.__name__ = rule.__qualname__ = math.__name__
        rule.__doc__ = math.__doc__
        register_kl(p_cls, q_cls)(rule)
        return math

    return decorator


# ---------------------------------------------------------------- helpers


def _ratio_term(t: Array) -> Array:
    r""":math:`e^t - 1 - t \ge 0` (``r - 1 - log r`` at ``r = e^t``), accurate near ``t = 0``."""
    return jnp.expm1(t) - t


def _weighted(w: Array, d: Array) -> Array:
    """``w * d`` with ``0 * anything = 0`` where ``w == 0``, and ``d`` itself where it is inf.

    Double ``where``: no ``0 * inf`` reaches the gradients either, so an
    infinite factor (``p > 0 = q``) gives a zero gradient, not NaN, and leaves
    the gradients of the other factors alone.
    """
    pos = w > 0
    fin = pos & jnp.isfinite(d)
    safe = jnp.where(fin, d, jnp.zeros_like(d))
    other = jnp.where(pos, jax.lax.stop_gradient(d), jnp.zeros_like(d))
    return jnp.where(fin, w * safe, other)


def _abs_excess(v: Array) -> Array:
    r""":math:`h(v) = |v| + e^{-|v|} - 1`, with autodiff derivatives correct at ``v = 0``.

    :math:`h` is twice continuously differentiable (:math:`h''(0) = 1`), but
    autodiff of ``|v|`` at 0 gives ``sign(0) = 0`` for every order. Below
    :math:`|v| = 1` it is therefore written as
    :math:`(|v| - \sinh|v|) + (\cosh v - 1)`: the first bracket is
    :math:`O(|v|^3)`, the second smooth (:math:`2\sinh^2(v/2)`, no
    cancellation). Above 1 the direct form, which never overflows.
    """
    a = jnp.abs(v)
    small = a < 1
    vs = jnp.where(small, v, jnp.zeros_like(v))
    as_ = jnp.abs(vs)
    smooth = (as_ - jnp.sinh(as_)) + 2 * jnp.square(jnp.sinh(vs / 2))
    ab = jnp.where(small, jnp.ones_like(a), a)
    return jnp.where(small, smooth, ab + jnp.expm1(-ab))


# ---------------------------------------------------------------- closed forms


@_closed_form(Normal, Normal)
def _kl_normal(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (m1, s1), (m2, s2) = pp, qp
    t = jnp.log(s1) - jnp.log(s2)
    return 0.5 * _ratio_term(2 * t) + 0.5 * jnp.square((m1 - m2) / s2)


@_closed_form(LogNormal, LogNormal)
def _kl_log_normal(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    # KL is invariant under the bijection exp: the normal KL of the logs.
    return _kl_normal(pp, qp)


@_closed_form(MultivariateNormal, MultivariateNormal)
def _kl_multivariate_normal(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (m1, l1), (m2, l2) = pp, qp
    l1, l2 = jnp.tril(l1), jnp.tril(l2)
    d = l1.shape[-1]
    batch = jnp.broadcast_shapes(m1.shape[:-1], m2.shape[:-1], l1.shape[:-2], l2.shape[:-2])
    l1b = jnp.broadcast_to(l1, batch + (d, d))
    l2b = jnp.broadcast_to(l2, batch + (d, d))
    diff = jnp.broadcast_to(m1 - m2, batch + (d,))
    solve = jax.scipy.linalg.solve_triangular
    m = solve(l2b, l1b, lower=True)  # L2^-1 L1, lower triangular
    z = solve(l2b, diff[..., None], lower=True)[..., 0]
    # diag(M) = diag(L1) / diag(L2): its log from the diagonals, so that M_ii^2 - 1 - 2 log M_ii
    # is expm1(2t) - 2t, exactly 0 at p == q.
    t = jnp.log(jnp.diagonal(l1b, axis1=-2, axis2=-1)) - jnp.log(
        jnp.diagonal(l2b, axis1=-2, axis2=-1)
    )
    off = jnp.tril(m, -1)
    return 0.5 * (
        jnp.sum(_ratio_term(2 * t), axis=-1)
        + jnp.sum(jnp.square(off), axis=(-2, -1))
        + jnp.sum(jnp.square(z), axis=-1)
    )


@_closed_form(Bernoulli, Bernoulli)
def _kl_bernoulli(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (a,), (b,) = pp, qp
    log_sig = jax.nn.log_sigmoid
    one = _weighted(jax.nn.sigmoid(a), log_sig(a) - log_sig(b))
    zero = _weighted(jax.nn.sigmoid(-a), log_sig(-a) - log_sig(-b))
    return one + zero


@_closed_form(Categorical, Categorical)
def _kl_categorical(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (a,), (b,) = pp, qp
    lp = jax.nn.log_softmax(a, axis=-1)
    lq = jax.nn.log_softmax(b, axis=-1)
    return jnp.sum(_weighted(jnp.exp(lp), lp - lq), axis=-1)


@_closed_form(Exponential, Exponential)
def _kl_exponential(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (r1,), (r2,) = pp, qp
    return _ratio_term(jnp.log(r2) - jnp.log(r1))


def _gamma_math(a1: Array, r1: Array, a2: Array, r2: Array) -> Array:
    # alpha_q log(beta_p / beta_q) + alpha_p (beta_q - beta_p) / beta_p with t = log(beta_q/beta_p)
    # is alpha_p (e^t - 1 - t) + (alpha_p - alpha_q) t: exactly 0 at p == q.
    t = jnp.log(r2) - jnp.log(r1)
    da = a1 - a2
    return (
        da * special.digamma(a1)
        - special.gammaln(a1)
        + special.gammaln(a2)
        + a1 * _ratio_term(t)
        + da * t
    )


@_closed_form(Gamma, Gamma)
def _kl_gamma(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (a1, r1), (a2, r2) = pp, qp
    return _gamma_math(a1, r1, a2, r2)


@_closed_form(Exponential, Gamma)
def _kl_exponential_gamma(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (r1,), (a2, r2) = pp, qp
    return _gamma_math(jnp.ones_like(r1), r1, a2, r2)


@_closed_form(Gamma, Exponential)
def _kl_gamma_exponential(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (a1, r1), (r2,) = pp, qp
    return _gamma_math(a1, r1, jnp.ones_like(r2), r2)


def _dirichlet_math(alpha: Array, beta: Array) -> Array:
    """Per factor over the last axis (beta: the two concentrations stacked)."""
    a0 = jnp.sum(alpha, -1)
    b0 = jnp.sum(beta, -1)
    log_b_ratio = (
        jnp.sum(special.gammaln(beta) - special.gammaln(alpha), -1)
        + special.gammaln(a0)
        - special.gammaln(b0)
    )
    dg = special.digamma(alpha) - special.digamma(a0)[..., None]
    return log_b_ratio + jnp.sum((alpha - beta) * dg, -1)


@_closed_form(Beta, Beta)
def _kl_beta(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (a1, b1), (a2, b2) = pp, qp
    shape = jnp.broadcast_shapes(a1.shape, b1.shape, a2.shape, b2.shape)
    alpha = jnp.stack([jnp.broadcast_to(a1, shape), jnp.broadcast_to(b1, shape)], -1)
    beta = jnp.stack([jnp.broadcast_to(a2, shape), jnp.broadcast_to(b2, shape)], -1)
    return _dirichlet_math(alpha, beta)


@_closed_form(Dirichlet, Dirichlet)
def _kl_dirichlet(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (alpha,), (beta,) = pp, qp
    shape = jnp.broadcast_shapes(alpha.shape, beta.shape)
    return _dirichlet_math(jnp.broadcast_to(alpha, shape), jnp.broadcast_to(beta, shape))


@_closed_form(Uniform, Uniform)
def _kl_uniform(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    (lp, hp), (lq, hq) = pp, qp
    nested = (lq <= lp) & (hp <= hq)
    val = jnp.log(hq - lq) - jnp.log(hp - lp)
    return jnp.where(nested, val, jnp.asarray(jnp.inf, val.dtype))


@_closed_form(Laplace, Laplace)
def _kl_laplace(pp: tuple[Array, ...], qp: tuple[Array, ...]) -> Array:
    # With t = log(b_p / b_q) and v = (mu_p - mu_q) / b_p:
    # KL = e^t (|v| + e^{-|v|} - 1) + (e^t - 1 - t).
    (m1, b1), (m2, b2) = pp, qp
    t = jnp.log(b1) - jnp.log(b2)
    return jnp.exp(t) * _abs_excess((m1 - m2) / b1) + _ratio_term(t)


# ---------------------------------------------------------------- Monte Carlo


def kl_estimate(
    key: Any, p: Any, p_params: Any, q: Any, q_params: Any, *, num_samples: int
) -> Array:
    r"""A Monte Carlo estimate of :math:`\mathrm{KL}(p \| q)` with an unbiased gradient.

    .. math::
        \widehat{\mathrm{KL}} = \frac1N \sum_{n=1}^N \log p_\theta(x_n) - \log q_\phi(x_n),
        \qquad x_n \sim p_\theta \ \text{(joint samples)},

    an unbiased estimate of the joint KL, for any pair of distributions with
    ``sample`` and ``log_prob`` (no closed form needed). Its gradients are
    unbiased too: in :math:`\phi` always (:math:`-\frac1N\sum_n \nabla_\phi
    \log q_\phi(x_n)`); in :math:`\theta` by ``jaxgrad.pathwise`` when
    ``p.reparameterizable`` (differentiating through :math:`x_n =
    g_\theta(\varepsilon_n)` and through :math:`\log p_\theta`), otherwise by
    the score function, ``jaxgrad.rloo`` (leave-one-out baseline) for
    ``num_samples >= 2`` and ``jaxgrad.score_function`` without a baseline
    for 1, plus the (mean-zero) direct term
    :math:`\frac1N \sum_n \nabla_\theta \log p_\theta(x_n)`. Cost:
    ``num_samples`` samples and evaluations of both ``log_prob``.

    Use :func:`kl` where a closed form exists: it is exact and cheaper.

    Args:
      key: a PRNG key (used once).
      p: the distribution samples are drawn from (a spec or any object with
        ``sample`` and ``log_prob``).
      p_params: its params.
      q: the second distribution (``log_prob`` is used).
      q_params: its params.
      num_samples: joint samples per estimate (static, ``>= 1``).

    Returns:
      A scalar: the estimate, in the dtype of the log-probabilities (the wider
      of the two when they differ).

    Raises:
      TypeError: if ``num_samples`` is not an int, ``p`` or ``q`` lacks
        ``sample``/``log_prob``, or ``key`` is not a key.
      ValueError: if ``num_samples < 1``, and as ``p.sample`` and the two
        ``log_prob`` for bad params.

    Example:
      >>> import jax, jaxgrad
      >>> n = jaxgrad.dists.normal
      >>> est = jaxgrad.dists.kl_estimate(jax.random.key(0), n, (0.0, 1.0), n, (1.0, 2.0),
      ...                                 num_samples=20_000)
      >>> abs(float(est) - float(jaxgrad.dists.kl(n, (0.0, 1.0), n, (1.0, 2.0)))) < 0.02
      True
    """
    # Estimators sit above dists: import them here, not at module level.
    from jaxgrad._src.estimators import common
    from jaxgrad._src.estimators.pathwise import pathwise
    from jaxgrad._src.estimators.score_function import rloo, score_function

    fn = "kl_estimate"
    num_samples = checks.check_num_samples(num_samples, fn)
    common.check_dist(p, f"{fn} (p)")
    if not callable(getattr(q, "log_prob", None)) or isinstance(q, type):
        raise TypeError(
            f"{fn}: q must be a distribution instance with log_prob(params, x), got "
            f"{checks._describe(q) if not isinstance(q, type) else 'the class ' + q.__name__}."
        )

    def f(x: Any, pp: Any, qp: Any) -> Array:
        lp = jnp.asarray(p.log_prob(pp, x))
        lq = jnp.asarray(q.log_prob(qp, x))
        dtype = _wider(lp.dtype, lq.dtype)
        return lp.astype(dtype) - lq.astype(dtype)

    if getattr(p, "reparameterizable", False) is True:
        est = pathwise(f, dist=p, num_samples=num_samples)
    elif num_samples >= 2:
        est = rloo(f, dist=p, num_samples=num_samples)
    else:
        est = score_function(f, dist=p, num_samples=1)
    # p_params is both the sampling distribution's params and an argument of f: the
    # gradient flows through both uses.
    return est(key, p_params, p_params, q_params)
