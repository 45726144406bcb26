"""What every distribution spec shares: the protocol, parameter parsing, reductions.

A family subclasses :class:`Spec`, names its parameters in ``param_names``
and writes its math *elementwise*, in the compute dtype, in the private
methods ``_sample``, ``_log_prob``, ``_cdf``, ``_mean``, ``_variance`` and
``_entropy``. The public methods here validate the parameters (structure,
floating dtypes, positivity of concrete values, broadcasting), cast to the
compute dtype (``samplers.compute_dtype``: bfloat16 and float16 compute in
float32), reduce where the contract says so, and cast back to the
parameters' dtype.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks, samplers

Array = jax.Array

#: The largest joint support ``support`` will enumerate.
MAX_SUPPORT_SIZE = 2**16


@runtime_checkable
class Distribution(Protocol):
    """The interface estimators rely on."""

    def sample(self, key: Any, params: Any) -> Any: ...

    def log_prob(self, params: Any, x: Any) -> Array: ...


#: How to make each positive parameter positive, appended to its error message.
_HINTS = {
    "scale": "parameterize it as scale = jax.nn.softplus(raw) or jnp.exp(log_scale).",
    "rate": "parameterize it as rate = jax.nn.softplus(raw) or jnp.exp(log_rate).",
    "concentration": (
        "parameterize it as concentration = jax.nn.softplus(raw) or jnp.exp(log_concentration)."
    ),
    "concentration1": "parameterize it as jax.nn.softplus(raw) or jnp.exp(raw).",
    "concentration0": "parameterize it as jax.nn.softplus(raw) or jnp.exp(raw).",
    "temperature": "use a small positive value (e.g. 0.1) for a nearly discrete relaxation.",
}


def describe_structure(params: Any) -> str:
    """``'a tuple of length 3'`` or ``'an array of dtype float32 and shape (3,)'``."""
    if isinstance(params, (tuple, list)):
        return f"a {type(params).__name__} of length {len(params)}"
    return checks._describe(params)


def structure_error(fn: str, names: tuple[str, ...], params: Any) -> TypeError:
    """The error for params of the wrong structure, naming the expected tuple."""
    got = describe_structure(params)
    if len(names) == 1:
        return TypeError(
            f"{fn}: params must be the {names[0]} array itself, got {got}; pass "
            f"params={names[0]}, not a tuple."
        )
    what = "a pair" if len(names) == 2 else f"a tuple of {len(names)}"
    return TypeError(f"{fn}: params must be {what} ({', '.join(names)}), got {got}.")


def as_floating(x: Any, fn: str, name: str) -> Array:
    """``x`` as an array with a floating dtype, or a TypeError naming ``name``."""
    try:
        x = jnp.asarray(x)
    except TypeError:
        raise TypeError(
            f"{fn}: {name} must be a floating array, got {checks._describe(x)}."
        ) from None
    checks.check_floating(x, fn, name)
    return x


@dataclasses.dataclass(frozen=True)
class Args:
    """Validated parameters: arrays in the compute dtype, with their shapes and dtypes."""

    arrays: tuple[Array, ...]  # in the compute dtype, not broadcast
    batch_shape: tuple[int, ...]  # the shape of one factor per entry
    event_shape: tuple[int, ...]  # the shape of one factor's value
    dtype: Any  # the parameters' dtype: outputs are cast to it
    compute: Any  # the dtype the math is done in


@dataclasses.dataclass(frozen=True)
class Spec:
    """A stateless distribution spec: a product of independent factors.

    Subclasses set ``param_names``, ``positive`` (the parameters whose
    concrete values must be > 0), ``event_ndims`` (0 for scalar factors, 1 for
    vector-valued ones such as ``dirichlet``) and implement the elementwise
    math. Every output keeps the parameters' dtype.
    """

    name: str = "spec"
    reparameterizable: bool = True

    param_names: ClassVar[tuple[str, ...]] = ()
    positive: ClassVar[tuple[str, ...]] = ()
    event_ndims: ClassVar[int] = 0
    #: The minimal rank of each parameter (its event dimensions); 0 for scalars.
    param_event_ndims: ClassVar[tuple[int, ...]] = ()

    # ------------------------------------------------------------ parsing

    def _args(self, params: Any, method: str) -> Args:
        fn = f"{self.name}.{method}"
        names = self.param_names
        if len(names) == 1:
            if isinstance(params, (tuple, list)):
                raise structure_error(fn, names, params)
            raw = (params,)
        else:
            if not isinstance(params, (tuple, list)) or len(params) != len(names):
                raise structure_error(fn, names, params)
            raw = tuple(params)
        arrays = tuple(as_floating(p, fn, n) for p, n in zip(raw, names, strict=True))
        for a, n in zip(arrays, names, strict=True):
            if n in self.positive:
                checks.check_positive(a, fn, n, hint=_HINTS.get(n, ""), nan_ok=True)
        event_nd = self.param_event_ndims or (0,) * len(names)
        for a, n, k in zip(arrays, names, event_nd, strict=True):
            if k:
                checks.check_min_ndim(a, k, fn, n, self._event_what(n))
        self._check_params(arrays, fn)
        batch_shapes = [a.shape[: a.ndim - k] for a, k in zip(arrays, event_nd, strict=True)]
        try:
            batch = jnp.broadcast_shapes(*batch_shapes)
        except ValueError:
            shapes = " and ".join(
                f"{n} of shape {a.shape}" for a, n in zip(arrays, names, strict=True)
            )
            raise ValueError(
                f"{fn}: {shapes} do not broadcast together (batch shapes "
                f"{' and '.join(str(s) for s in batch_shapes)}); give them equal batch shapes, "
                f"or size-1 dimensions where one is shared."
            ) from None
        dtype = jnp.result_type(*arrays)
        compute = samplers.compute_dtype(dtype)
        cast = tuple(a.astype(compute) for a in arrays)
        return Args(cast, tuple(batch), self._event_shape(arrays), dtype, compute)

    def _event_what(self, name: str) -> str:
        return "the event dimension, last"

    def _event_shape(self, arrays: tuple[Array, ...]) -> tuple[int, ...]:
        return ()

    def _check_params(self, arrays: tuple[Array, ...], fn: str) -> None:
        """Family-specific static checks (e.g. ``low < high``); none by default."""

    def _value(self, x: Any, a: Args, method: str) -> Array:
        fn = f"{self.name}.{method}"
        try:
            x = jnp.asarray(x)
        except TypeError:
            raise TypeError(f"{fn}: x must be an array, got {checks._describe(x)}.") from None
        if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
            raise TypeError(f"{fn}: x must be a real (floating) array, got dtype {x.dtype}.")
        return x.astype(a.compute)

    def _full(self, a: Args) -> tuple[Array, ...]:
        """The parameters broadcast to the batch shape (event dimensions kept)."""
        event_nd = self.param_event_ndims or (0,) * len(a.arrays)
        return tuple(
            jnp.broadcast_to(p, a.batch_shape + p.shape[p.ndim - k :])
            for p, k in zip(a.arrays, event_nd, strict=True)
        )

    # ------------------------------------------------------------ the contract

    def sample(self, key: Any, params: Any) -> Array:
        """One joint sample, of shape ``batch_shape + event_shape``, in the params' dtype."""
        checks.check_key(key, f"{self.name}.sample")
        a = self._args(params, "sample")
        x = self._sample(key, self._full(a), a.batch_shape + a.event_shape, a.compute)
        return x.astype(a.dtype)

    def log_prob(self, params: Any, x: Any) -> Array:
        """The joint log-density of one sample: the sum over every factor (a scalar)."""
        a = self._args(params, "log_prob")
        lp = self._log_prob(a.arrays, self._value(x, a, "log_prob"))
        return jnp.sum(lp).astype(a.dtype)

    def log_prob_elementwise(self, params: Any, x: Any) -> Array:
        """The log-density of each factor (batch shape), as distrax and TFP return it."""
        a = self._args(params, "log_prob_elementwise")
        return self._log_prob(a.arrays, self._value(x, a, "log_prob_elementwise")).astype(a.dtype)

    def prob(self, params: Any, x: Any) -> Array:
        """The joint density ``exp(log_prob)``: the product over every factor."""
        a = self._args(params, "prob")
        lp = self._log_prob(a.arrays, self._value(x, a, "prob"))
        return jnp.exp(jnp.sum(lp)).astype(a.dtype)

    def prob_elementwise(self, params: Any, x: Any) -> Array:
        """The density of each factor (batch shape)."""
        a = self._args(params, "prob_elementwise")
        return jnp.exp(self._log_prob(a.arrays, self._value(x, a, "prob_elementwise"))).astype(
            a.dtype
        )

    def entropy(self, params: Any) -> Array:
        """The joint (differential) entropy: the sum over every factor (a scalar)."""
        a = self._args(params, "entropy")
        return jnp.sum(jnp.broadcast_to(self._entropy(a.arrays), a.batch_shape)).astype(a.dtype)

    def entropy_elementwise(self, params: Any) -> Array:
        """The entropy of each factor (batch shape)."""
        a = self._args(params, "entropy_elementwise")
        return jnp.broadcast_to(self._entropy(a.arrays), a.batch_shape).astype(a.dtype)

    def mean(self, params: Any) -> Array:
        """The mean, with the shape of a sample."""
        a = self._args(params, "mean")
        m = self._mean(a.arrays)
        return jnp.broadcast_to(m, a.batch_shape + a.event_shape).astype(a.dtype)

    def variance(self, params: Any) -> Array:
        """The variance of each coordinate, with the shape of a sample."""
        a = self._args(params, "variance")
        v = self._variance(a.arrays)
        return jnp.broadcast_to(v, a.batch_shape + a.event_shape).astype(a.dtype)

    # ------------------------------------------------------------ the math

    def _sample(self, key: Any, p: tuple[Array, ...], shape: tuple[int, ...], dtype: Any) -> Array:
        raise NotImplementedError

    def _log_prob(self, p: tuple[Array, ...], x: Array) -> Array:
        raise NotImplementedError

    def _entropy(self, p: tuple[Array, ...]) -> Array:
        raise NotImplementedError(f"{self.name}.entropy: no closed form.")

    def _mean(self, p: tuple[Array, ...]) -> Array:
        raise NotImplementedError(f"{self.name}.mean: no closed form.")

    def _variance(self, p: tuple[Array, ...]) -> Array:
        raise NotImplementedError(f"{self.name}.variance: no closed form.")


class WithCdf:
    """Mixin: an elementwise ``cdf`` for families with a closed form ``_cdf``."""

    def cdf(self, params: Any, x: Any) -> Array:
        """``P(X <= x)`` of each factor, elementwise (never reduced)."""
        a = self._args(params, "cdf")  # type: ignore[attr-defined]
        return self._cdf(a.arrays, self._value(x, a, "cdf")).astype(a.dtype)  # type: ignore[attr-defined]


def uniform(key: Any, shape: tuple[int, ...], dtype: Any) -> Array:
    """Uniform noise on the open interval ``(0, 1)``, one flat draw (``samplers.uniform_open``)."""
    return samplers.uniform_open(key, shape, dtype)


def size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on ``[0, 1]`` (float64 NumPy, built once)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0
