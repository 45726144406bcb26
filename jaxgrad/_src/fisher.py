r"""Fisher information and natural gradients: Fisher-vector products and a CG solve.

The Fisher information of a distribution :math:`p_\theta` is the covariance
of its score :math:`s(x) = \nabla_\theta \log p_\theta(x)`, and also the
curvature of the KL divergence at equality (Amari 1998; Martens 2020, sec. 9):

.. math::
    F(\theta) = E_{x \sim p_\theta}\big[s(x)\, s(x)^\top\big]
    = -E_{x \sim p_\theta}\big[\nabla^2_\theta \log p_\theta(x)\big]
    = \nabla^2_{\theta'}\, \mathrm{KL}(p_\theta \,\|\, p_{\theta'})\big|_{\theta' = \theta} .

(The KL and its gradient in :math:`\theta'` both vanish at
:math:`\theta' = \theta`, and the Hessian of :math:`E_{p_\theta}[\log p_\theta
- \log p_{\theta'}]` in :math:`\theta'` is :math:`-E[\nabla^2 \log p_{\theta'}]`.)

* :func:`fisher_vector_product`: :math:`F v` exactly, as a Hessian-vector
  product of the closed-form ``jaxgrad.dists.kl`` in its second argument,
  forward-over-reverse (``jax.jvp`` of ``jax.grad``): one reverse and one
  forward pass through the KL, never the :math:`P \times P` matrix
  (Pearlmutter 1994; the "Hessian-free" pipeline of Martens 2010 and
  Pascanu & Bengio 2013, and the Fisher-vector products of TRPO, Schulman et
  al. 2015, appendix C). The specs' KL is *joint* (summed over independent
  factors), so :math:`F` is the Fisher of the product distribution: block
  diagonal over the factors, one block per factor holding every parameter of
  that factor (e.g. the 2x2 ``(concentration, rate)`` block of a gamma).
  Parameters shared by several factors by broadcasting get the sum of their
  blocks.
* :func:`empirical_fisher_vector_product`: the Monte Carlo estimate
  :math:`\frac1N \sum_i s_i \langle s_i, v \rangle`, :math:`x_i \sim p_\theta`,
  for any spec with ``sample`` and ``log_prob`` (those whose KL has no closed
  form: ``von_mises``, the relaxed specs).
* :func:`natural_gradient`: :math:`(F + \lambda I)^{-1} g` by conjugate
  gradient on the pytree of parameters, with either Fisher as the operator,
  differentiable by implicit differentiation (``jax.lax.custom_linear_solve``),
  and with ``return_info=True`` its convergence (:class:`CGInfo`).

Regular families only: ``uniform``, whose support moves with its
parameters, has no Fisher information (its score does not have mean zero,
and the KL is infinite on one side) and is refused.

Examples of closed forms (per factor): ``normal`` in ``(loc, scale)``:
:math:`F = \mathrm{diag}(1/\sigma^2, 2/\sigma^2)`; ``bernoulli`` in logits:
:math:`\sigma(l)(1 - \sigma(l))`; ``categorical`` in logits:
:math:`\mathrm{diag}(\pi) - \pi \pi^\top` (singular: a constant shift of the
logits changes nothing).

References:
  Amari, *Natural Gradient Works Efficiently in Learning*, Neural Computation
  10(2), 1998. https://doi.org/10.1162/089976698300017746 ;
  Pearlmutter, *Fast Exact Multiplication by the Hessian*, Neural Computation
  6(1), 1994. https://doi.org/10.1162/neco.1994.6.1.147 ;
  Martens, *Deep learning via Hessian-free optimization*, ICML 2010.
  https://www.cs.toronto.edu/~jmartens/docs/Deep_HessianFree.pdf ;
  Pascanu & Bengio, *Revisiting Natural Gradient for Deep Networks*, ICLR
  2014. https://arxiv.org/abs/1301.3584 ;
  Martens, *New Insights and Perspectives on the Natural Gradient Method*,
  JMLR 21(146), 2020 (arXiv 2014). https://jmlr.org/papers/v21/17-678.html ;
  Schulman, Levine, Moritz, Jordan & Abbeel, *Trust Region Policy
  Optimization*, ICML 2015. https://arxiv.org/abs/1502.05477 ;
  Kunstner, Balles & Hennig, *Limitations of the Empirical Fisher
  Approximation for Natural Gradient Descent*, NeurIPS 2019.
  https://arxiv.org/abs/1905.12558
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks, sharding
from jaxgrad._src.dists.continuous import Uniform
from jaxgrad._src.dists.kl import kl as _kl

Array = jax.Array

_EMPIRICAL = (
    "jaxgrad.empirical_fisher_vector_product(key, dist, params, v, num_samples=...) "
    "(or natural_gradient(..., key=key, num_samples=...))"
)


def _dist_name(dist: Any) -> str:
    return str(getattr(dist, "name", type(dist).__name__))


def _as_params(params: Any, fn: str) -> Any:
    """``params`` with every leaf an array of a floating dtype (Python floats become arrays)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
        raise TypeError(f"{fn}: params must hold at least one array, got {params!r}.")
    out = []
    for path, leaf in leaves:
        x = jnp.asarray(leaf)
        checks.check_floating(x, fn, f"params{jax.tree_util.keystr(path)}")
        out.append(x)
    return jax.tree.unflatten(treedef, out)


def _like_params(params: Any, v: Any, fn: str, name: str) -> Any:
    """``v`` checked to have the structure, shapes and dtypes of ``params``.

    Python scalars (weakly typed) take the dtype of their parameter; arrays
    must already have it (no silent downcast of float64 directions).
    """
    pdef, vdef = jax.tree.structure(params), jax.tree.structure(v)
    if pdef != vdef:
        raise TypeError(
            f"{fn}: {name} must have the structure of params ({_structure(params)}), got "
            f"{_structure(v)}; pass one array per parameter, in the same container."
        )
    out = []
    for (path, p), x in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(v), strict=True
    ):
        where = f"{name}{jax.tree_util.keystr(path)}"
        weak = isinstance(x, (int, float)) or getattr(x, "weak_type", False)
        x = jnp.asarray(x)
        if x.shape != p.shape:
            raise ValueError(
                f"{fn}: {where} has shape {x.shape} but params{jax.tree_util.keystr(path)} has "
                f"shape {p.shape}; {name} must have the shape of params, leaf by leaf."
            )
        if weak and jnp.issubdtype(x.dtype, jnp.number):
            x = x.astype(p.dtype)
        elif x.dtype != p.dtype:
            raise TypeError(
                f"{fn}: {where} has dtype {x.dtype} but params{jax.tree_util.keystr(path)} has "
                f"dtype {p.dtype}; cast it first, e.g. {where}.astype(jnp.{p.dtype})."
            )
        out.append(x)
    return jax.tree.unflatten(vdef, out)


def _structure(tree: Any) -> str:
    if isinstance(tree, (tuple, list)):
        return f"a {type(tree).__name__} of length {len(tree)}"
    leaves = jax.tree.leaves(tree)
    if len(leaves) == 1 and jax.tree.structure(tree).num_nodes == 1:
        return checks._describe(jnp.asarray(leaves[0]))
    return f"a {type(tree).__name__} with {len(leaves)} arrays"


def _check_dist(dist: Any, fn: str, *, sample: bool) -> None:
    needed = ("sample", "log_prob") if sample else ("log_prob",)
    missing = [m for m in needed if not callable(getattr(dist, m, None))]
    if missing:
        raise TypeError(
            f"{fn}: dist must be a distribution spec with {' and '.join(needed)} (e.g. "
            f"jaxgrad.dists.normal), got {type(dist).__name__} without {', '.join(missing)}."
        )
    if isinstance(dist, Uniform):
        raise ValueError(
            f"{fn}: uniform has no Fisher information: its support [low, high] moves with its "
            f"parameters, so its score has a nonzero mean; use a family with a fixed support "
            f"(e.g. a beta rescaled to [low, high])."
        )


def _kl_gradient(dist: Any, params: Any) -> Callable[[Any], Any]:
    r"""The KL's gradient in its second argument, at the first fixed to ``params``.

    The first argument is ``params`` itself, not a stopped copy: the Fisher
    only needs derivatives in :math:`\theta'`, and keeping :math:`\theta`
    live makes an outer derivative of :math:`F(\theta) v` in ``params`` the
    true one (it has a term through each argument of the KL).
    """
    return jax.grad(lambda theta: _kl(dist, params, dist, theta))


def _closed_form(fn: str, dist: Any, params: Any, run: Callable[[], Any]) -> Any:
    """``run()``, with a missing closed-form KL reported as pointing to the empirical Fisher."""
    try:
        return run()
    except NotImplementedError as err:
        raise NotImplementedError(
            f"{fn}: {_dist_name(dist)} has no closed-form KL ({err}); use {_EMPIRICAL}, "
            f"an unbiased estimate from sampled scores."
        ) from err


def fisher_vector_product(dist: Any, params: Any, v: Any) -> Any:
    r"""The Fisher information of ``dist`` at ``params`` times ``v``, exactly.

    .. math::
        F v = \frac{\partial}{\partial \varepsilon}\,
        \nabla_{\theta'} \mathrm{KL}(p_\theta \,\|\, p_{\theta'})
        \Big|_{\theta' = \theta + \varepsilon v,\ \varepsilon = 0},
        \qquad F = E_{p_\theta}[s s^\top],

    a Hessian-vector product of the closed-form joint KL
    (``jaxgrad.dists.kl``) by forward-over-reverse differentiation
    (``jax.jvp`` of ``jax.grad``; Pearlmutter 1994): one reverse and one
    forward pass through the KL, about the cost of three KL evaluations, and
    no :math:`P \times P` matrix. The joint KL makes :math:`F` the Fisher of
    the product over factors (block diagonal over factors; see the module
    docstring). Deterministic and exact up to round-off.

    Works on any pytree of parameters the spec takes (a ``(loc, scale)``
    tuple, one ``logits`` array), under ``jit``, ``vmap`` and ``grad``: the
    derivative of :math:`F(\theta) v` in ``params`` is the true one, through
    both arguments of the KL.

    Args:
      dist: a spec whose pair ``(dist, dist)`` has a closed-form
        ``jaxgrad.dists.kl`` (``normal``, ``bernoulli``, ``categorical``, ...).
      params: its parameters, a pytree of floating arrays.
      v: the direction, a pytree with the structure, shapes and dtypes of
        ``params`` (Python scalars take their parameter's dtype).

    Returns:
      :math:`F v`, a pytree like ``params``.

    Raises:
      TypeError: if ``v`` does not have the structure (or the dtypes) of
        ``params``, or a parameter is not floating.
      ValueError: if a leaf of ``v`` has the wrong shape.
      NotImplementedError: if the KL of ``(dist, dist)`` has no closed form;
        :func:`empirical_fisher_vector_product` estimates ``F v`` from samples.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> params = (jnp.zeros(2), jnp.array([1.0, 2.0]))  # (loc, scale)
      >>> v = (jnp.ones(2), jnp.ones(2))
      >>> fv = jaxgrad.fisher_vector_product(jaxgrad.dists.normal, params, v)
      >>> [x.tolist() for x in fv]  # (v_loc / scale**2, 2 v_scale / scale**2)
      [[1.0, 0.25], [2.0, 0.5]]

    References:
      Pearlmutter, *Fast Exact Multiplication by the Hessian*, 1994;
      Martens 2020, sec. 9; Schulman et al. 2015 (TRPO), appendix C.
    """
    fn = "fisher_vector_product"
    _check_dist(dist, fn, sample=False)
    params = _as_params(params, fn)
    v = _like_params(params, v, fn, "v")
    return _closed_form(
        fn, dist, params, lambda: jax.jvp(_kl_gradient(dist, params), (params,), (v,))[1]
    )


def _sampled_fisher(key: Any, dist: Any, params: Any, num_samples: int) -> Callable[[Any], Any]:
    r"""The map :math:`v \mapsto J^\top J v / N`, :math:`J_{ij} = \partial_{\theta_j} \log p(x_i)`.

    The samples are drawn once (under ``stop_gradient``) and the log-density
    is linearized once, so every application costs one forward and one
    transposed pass over the ``N`` log-densities, with the same samples
    (a fixed positive semi-definite operator, as conjugate gradient needs).
    """
    keys = jax.random.split(key, num_samples)
    xs = jax.lax.stop_gradient(jax.vmap(lambda k: dist.sample(k, params))(keys))

    def log_probs(theta: Any) -> Array:
        return jax.vmap(lambda x: dist.log_prob(theta, x))(xs)

    _, jvp = jax.linearize(log_probs, params)
    transpose = jax.linear_transpose(jvp, params)

    def matvec(v: Any) -> Any:
        jv = jvp(v)
        (out,) = transpose(jv / jnp.asarray(num_samples, jv.dtype))
        return out

    return matvec


def empirical_fisher_vector_product(
    key: Any, dist: Any, params: Any, v: Any, *, num_samples: int
) -> Any:
    r"""An unbiased Monte Carlo estimate of :math:`F v` from sampled scores.

    .. math::
        \widehat{F v} = \frac1N \sum_{i=1}^N s_i \langle s_i, v \rangle,
        \qquad s_i = \nabla_\theta \log p_\theta(x_i),
        \quad x_i \sim p_\theta \text{ i.i.d.},

    unbiased because :math:`E[s s^\top] = F`. Needs only ``sample`` and
    ``log_prob``, so it works for every spec, including those whose KL has no
    closed form (``von_mises``, ``relaxed_bernoulli``,
    ``relaxed_one_hot_categorical``) and user objects. The samples are held
    fixed (``stop_gradient``); the ``N`` log-densities are linearized once,
    so the cost is ``N`` samples plus one forward and one reverse pass over
    ``N`` log-densities (:math:`J^\top (J v) / N`, no :math:`N \times P`
    matrix of scores is stored). :math:`\widehat F` has rank at most ``N``.

    This is the Fisher estimated with samples *from the model*. It is not the
    "empirical Fisher" of the optimization literature, which puts observed
    data in place of the samples and is a biased approximation (Martens 2020,
    sec. 11; Kunstner et al. 2019).

    Args:
      key: a PRNG key, used once (split into ``num_samples`` keys).
      dist: a spec with ``sample`` and ``log_prob``.
      params: its parameters, a pytree of floating arrays.
      v: the direction, a pytree with the structure, shapes and dtypes of
        ``params``.
      num_samples: ``N``, a static int ``>= 1``.

    Returns:
      The estimate of :math:`F v`, a pytree like ``params``.

    Raises:
      TypeError: if ``dist`` lacks ``sample`` or ``log_prob``, ``key`` is not
        a key, ``num_samples`` is not an int, or ``v`` does not have the
        structure or dtypes of ``params``.
      ValueError: if ``key`` is a batch of keys, ``num_samples < 1``, or a leaf
        of ``v`` has the wrong shape.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> params = (jnp.zeros(()), jnp.ones(()))  # a standard normal: F = diag(1, 2)
      >>> fv = jaxgrad.empirical_fisher_vector_product(
      ...     jax.random.key(0), jaxgrad.dists.normal, params, (1.0, 0.0), num_samples=20_000)
      >>> [round(float(x), 1) for x in fv]  # F (1, 0) = (1, 0) up to Monte Carlo error
      [1.0, 0.0]

    References:
      Amari 1998; Martens 2020, secs. 9 and 11; Kunstner et al. 2019.
    """
    fn = "empirical_fisher_vector_product"
    _check_dist(dist, fn, sample=True)
    checks.check_key(key, fn)
    num_samples = checks.check_num_samples(num_samples, fn)
    params = _as_params(params, fn)
    v = _like_params(params, v, fn, "v")
    return _sampled_fisher(key, dist, params, num_samples)(v)


def _check_damping(damping: Any, fn: str) -> None:
    if isinstance(damping, jax.core.Tracer):
        if jnp.ndim(damping) != 0:
            raise ValueError(f"{fn}: damping must be a scalar, got shape {jnp.shape(damping)}.")
        return
    try:
        d = np.asarray(damping)
    except Exception:  # noqa: BLE001 - reported below
        d = np.asarray(None)
    real = d.dtype != object and (
        jnp.issubdtype(d.dtype, jnp.integer) or jnp.issubdtype(d.dtype, jnp.floating)
    )
    if not real or isinstance(damping, bool) or d.dtype == np.bool_:
        raise TypeError(f"{fn}: damping must be a real number, got {checks._describe(damping)}.")
    if d.ndim != 0:
        raise ValueError(
            f"{fn}: damping must be a scalar (the lambda of F + lambda I), got shape {d.shape}."
        )
    if not float(d) >= 0:
        raise ValueError(
            f"{fn}: damping must be >= 0, got {float(d)}; it is the lambda of "
            f"(F + lambda I) x = grad: pass a small positive value such as 1e-4, or 0 to solve "
            f"F x = grad."
        )


def _check_tol(tol: Any, fn: str) -> None:
    if isinstance(tol, jax.core.Tracer):
        return
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(
            f"{fn}: tol must be a number >= 0 (the relative residual at which CG stops), "
            f"got {tol!r}."
        )


class CGInfo(NamedTuple):
    r"""How the conjugate-gradient solve of :func:`natural_gradient` ended.

    Attributes:
      iterations: the CG iterations run (each one Fisher-vector product), an
        int32 scalar; ``maxiter`` when the loop was cut off.
      relative_residual: :math:`\|r_k\| / \|g\|` of CG's recurrence residual
        :math:`r_k` at the end (0 for ``g = 0``). In exact arithmetic it is the
        true residual :math:`(F + \lambda I) x - g`; in floating point the two
        differ by round-off, of order the dtype's epsilon times the condition
        number. NaN (and ``x`` NaN) when ``g`` or the Fisher holds a NaN.
      converged: ``relative_residual <= tol``, a bool scalar. ``False`` means
        ``maxiter`` was reached first: the returned ``x`` is the last iterate
        of a truncated solve.
    """

    iterations: Any
    relative_residual: Any
    converged: Any


def _tree_vdot(a: Any, b: Any, dtype: Any) -> Array:
    return sum(jnp.vdot(x, y).astype(dtype) for x, y in zip(a, b, strict=True))


def _cg(matvec: Callable, b: Any, tol: Any, maxiter: int) -> tuple[Any, tuple[Array, Array]]:
    r"""Conjugate gradient for a symmetric positive definite operator on a pytree, from 0.

    Hestenes & Stiefel's recurrences, with :math:`x_0 = 0`, :math:`r_0 = p_0 = b`:

    .. math::
        \alpha_k = \frac{r_k^\top r_k}{p_k^\top A p_k}, \quad
        x_{k+1} = x_k + \alpha_k p_k, \quad r_{k+1} = r_k - \alpha_k A p_k, \quad
        p_{k+1} = r_{k+1} + \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k}\, p_k ,

    until :math:`\|r_k\| \le \mathrm{tol}\, \|b\|` or ``maxiter`` iterations.
    Returns ``(x, (iterations, ||r|| / ||b||))``; the scalars are accumulated
    in the widest dtype of the leaves. A non-finite ``b`` gives a NaN ``x`` and
    residual; a NaN operator makes them NaN after one iteration.
    """
    leaves, tree = jax.tree.flatten(b)
    dtype = max((x.dtype for x in leaves), key=lambda d: d.itemsize)
    bb = _tree_vdot(leaves, leaves, dtype)
    target = jnp.asarray(tol, dtype) ** 2 * bb

    def cond(state):
        _, _, _, rr, k = state
        return (rr > target) & (k < maxiter)

    def body(state):
        x, r, p, rr, k = state
        ap = jax.tree.leaves(matvec(jax.tree.unflatten(tree, p)))
        alpha = rr / _tree_vdot(p, ap, dtype)
        x = [xi + alpha.astype(xi.dtype) * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - alpha.astype(ri.dtype) * ai for ri, ai in zip(r, ap, strict=True)]
        rr_new = _tree_vdot(r, r, dtype)
        beta = rr_new / rr
        p = [ri + beta.astype(pi.dtype) * pi for ri, pi in zip(r, p, strict=True)]
        return x, r, p, rr_new, k + 1

    zeros = [jnp.zeros_like(x) for x in leaves]
    count = sharding.vary_like(jnp.zeros((), jnp.int32), *leaves)  # under shard_map, like b
    init = (zeros, list(leaves), list(leaves), bb, count)
    x, _, _, rr, k = jax.lax.while_loop(cond, body, init)
    relative = jnp.sqrt(rr / jnp.where(bb > 0, bb, 1)).astype(dtype)  # b = 0: rr = 0, so 0
    # NaN in, NaN out: a non-finite b stops the loop at once (NaN > target is false) and
    # leaves rr = bb, so the residual is NaN already; x would be 0, as if solved.
    bad = ~jnp.isfinite(bb)
    x = [jnp.where(bad, jnp.asarray(jnp.nan, xi.dtype), xi) for xi in x]
    return jax.tree.unflatten(tree, x), (k, relative)


def natural_gradient(
    dist: Any,
    params: Any,
    grad: Any,
    *,
    damping: Any = 1e-4,
    maxiter: int = 100,
    tol: Any = 1e-5,
    key: Any = None,
    num_samples: int | None = None,
    return_info: bool = False,
) -> Any:
    r"""The natural gradient :math:`(F + \lambda I)^{-1} g`, by conjugate gradient.

    .. math::
        x = (F(\theta) + \lambda I)^{-1} g, \qquad
        \text{stopping when } \|(F + \lambda I) x - g\| \le \mathrm{tol}\, \|g\| ,

    the steepest-ascent direction of a loss with gradient :math:`g` when
    distance is measured by the KL between the distributions rather than in
    parameter space (Amari 1998): :math:`\theta - \eta x` is invariant to
    smooth reparameterizations to first order. Solved by conjugate gradient
    (Hestenes & Stiefel 1952) on the pytree of parameters, never forming
    :math:`F` ("Hessian-free", Martens 2010; Pascanu & Bengio 2013; the step
    direction of TRPO, Schulman et al. 2015, appendix C). Each CG iteration
    costs one Fisher-vector product:

    * by default the exact one (:func:`fisher_vector_product`), with the KL's
      gradient linearized once (``jax.linearize``), so an iteration is one
      forward pass of the linearized gradient;
    * with ``key`` and ``num_samples``, the sampled Fisher of
      :func:`empirical_fisher_vector_product`, with the same ``num_samples``
      samples in every iteration (a fixed operator, as CG requires); it has
      rank at most ``num_samples``, so keep ``damping > 0``.

    Works under ``jit`` and ``vmap`` (a batch iterates until its slowest
    member has converged) and may be differentiated: the solve is a
    ``jax.lax.custom_linear_solve``, so its derivative is another solve of the
    same symmetric system, not a derivative through the iterations.

    Defaults, and why:

    * ``damping=1e-4``: keeps :math:`F + \lambda I` positive definite where
      :math:`F` is singular or nearly so (categorical logits, where
      :math:`F \mathbf 1 = 0`; saturated logits; the sampled Fisher), while
      moving the solution by about :math:`\lambda / \mu` relative in a
      direction of curvature :math:`\mu`: 1e-4 relative for unit-scale
      parameters (a standard normal's Fisher is ``diag(1, 2)``). The damping
      is absolute, so scale it with your parameters' curvature: larger values
      (1e-2 and up) make the step more conservative, as trust-region methods
      do (Martens 2020, sec. 10). ``0`` solves :math:`F x = g` exactly, which
      CG can do for singular :math:`F` when :math:`g` lies in its range
      (gradients of a function of ``softmax(logits)`` do).
    * ``maxiter=100``: CG is exact after at most :math:`P` iterations for
      :math:`P` parameters in exact arithmetic (in fewer when :math:`F` has
      few distinct eigenvalues: the per-factor blocks of a product
      distribution repeat), and the loop stops as soon as ``tol`` is met, so
      the bound only caps the cost (100 Fisher-vector products) of a
      truncated solve for large :math:`P` or an ill-conditioned :math:`F`.
    * ``tol=1e-5``: ``jax.scipy.sparse.linalg.cg``'s default, a relative
      residual reachable in float32 (machine epsilon 1.2e-7, leaving room for
      the round-off of the Fisher-vector product); pass a smaller one in
      float64.

    When ``maxiter`` is reached before ``tol``, the last iterate is returned
    as is; ``return_info=True`` says whether that happened.

    Args:
      dist: a spec; with the exact Fisher (default) the pair ``(dist, dist)``
        needs a closed-form ``jaxgrad.dists.kl``; with ``key`` it needs
        ``sample`` and ``log_prob``.
      params: its parameters, a pytree of floating arrays.
      grad: :math:`g`, a pytree with the structure, shapes and dtypes of
        ``params`` (e.g. ``jax.grad`` of a loss in ``params``).
      damping: :math:`\lambda \ge 0`, a scalar (may be traced).
      maxiter: the most CG iterations, a static int ``>= 1``.
      tol: the relative residual at which CG stops, ``>= 0``.
      key: with ``num_samples``, use the sampled Fisher from ``num_samples``
        draws of this key instead of the exact one.
      num_samples: the number of samples of the sampled Fisher.
      return_info: also return a :class:`CGInfo` (iterations, relative
        residual, converged); a static Python bool.

    Returns:
      :math:`x`, a pytree like ``params``; with ``return_info``, ``(x, info)``.

    Raises:
      TypeError: if ``grad`` does not have the structure or dtypes of
        ``params``, ``damping`` is not a real number, ``maxiter`` is not an
        int, ``dist`` lacks the methods the chosen Fisher needs, or
        ``return_info`` is not a bool.
      ValueError: if ``damping < 0`` (or not a scalar), ``maxiter < 1``,
        ``tol < 0``, a leaf of ``grad`` has the wrong shape, or only one of
        ``key`` and ``num_samples`` is given.
      NotImplementedError: if the exact Fisher is asked for and the KL of
        ``(dist, dist)`` has no closed form.

    Example:
      >>> import jax.numpy as jnp, jaxgrad
      >>> params = (jnp.zeros(()), jnp.full((), 2.0))  # F = diag(1/4, 2/4)
      >>> x = jaxgrad.natural_gradient(jaxgrad.dists.normal, params, (1.0, 1.0), damping=0.0)
      >>> [round(float(a), 4) for a in x]  # F^{-1} (1, 1) = (4, 2)
      [4.0, 2.0]
      >>> x, info = jaxgrad.natural_gradient(
      ...     jaxgrad.dists.normal, params, (1.0, 1.0), return_info=True)
      >>> int(info.iterations), bool(info.converged)  # two distinct eigenvalues: 2 steps
      (2, True)

    References:
      Amari 1998; Hestenes & Stiefel, *Methods of Conjugate Gradients for
      Solving Linear Systems*, J. Res. NBS 49(6), 1952; Martens 2010;
      Pascanu & Bengio 2013; Martens 2020, secs. 9-10; Schulman et al. 2015.
    """
    fn = "natural_gradient"
    params = _as_params(params, fn)
    grad = _like_params(params, grad, fn, "grad")
    _check_damping(damping, fn)
    maxiter = checks.check_count(maxiter, fn, "maxiter")
    _check_tol(tol, fn)
    checks.check_bool(return_info, fn, "return_info", "True also returns a CGInfo")
    if (key is None) != (num_samples is None):
        given, missing = ("key", "num_samples") if num_samples is None else ("num_samples", "key")
        raise ValueError(
            f"{fn}: {given} was given without {missing}; pass both for the sampled Fisher, or "
            f"neither for the exact one."
        )
    if key is None:
        _check_dist(dist, fn, sample=False)
        fvp = _closed_form(
            fn, dist, params, lambda: jax.linearize(_kl_gradient(dist, params), params)[1]
        )
    else:
        _check_dist(dist, fn, sample=True)
        checks.check_key(key, fn)
        n = checks.check_num_samples(num_samples, fn)
        fvp = _sampled_fisher(key, dist, params, n)

    def matvec(x: Any) -> Any:
        return jax.tree.map(lambda fx, xi: fx + jnp.asarray(damping, xi.dtype) * xi, fvp(x), x)

    def solve(mv: Callable, b: Any) -> tuple[Any, tuple[Array, Array]]:
        return _cg(mv, b, tol, int(maxiter))

    solution, (iterations, relative) = jax.lax.custom_linear_solve(
        matvec, grad, solve, symmetric=True, has_aux=True
    )
    if not return_info:
        return solution
    tol_ = jnp.asarray(tol, relative.dtype)
    return solution, CGInfo(iterations, relative, relative <= tol_)
