"""Argument validation with jax-style messages.

Every public function validates the *static* properties of its arguments here,
in Python, before tracing: dtypes, ranks, axes, the number of keys, structural
options such as ``num_samples``. Each message names the function, the argument,
what was received and how to fix it. Values that may be traced (``temperature``,
logits) are only checked when they are concrete; under ``jit`` their
preconditions are documented instead (never ``assert`` on a tracer).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_typed_key(key: Any) -> bool:
    """Whether ``key`` is a new-style typed PRNG key array (``jax.random.key``)."""
    dtype = getattr(key, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def check_key(key: Any, fn: str, name: str = "key") -> None:
    """Checks that ``key`` is a single PRNG key, typed or legacy ``uint32[2]``.

    Raises:
      TypeError: if ``key`` is not a key.
      ValueError: if ``key`` is a batch of keys.
    """
    if is_typed_key(key):
        if jnp.shape(key) != ():
            raise ValueError(
                f"{fn} accepts a single {name}, but was given a key array of shape "
                f"{jnp.shape(key)}. Use jax.vmap for batching."
            )
        return
    dtype = getattr(key, "dtype", None)
    if dtype is None or dtype != jnp.uint32:
        raise TypeError(
            f"{fn}: {name} must be a PRNG key from jax.random.key (or a legacy "
            f"uint32[2] key from jax.random.PRNGKey), got {_describe(key)}."
        )
    if jnp.shape(key) != (2,):
        raise ValueError(
            f"{fn} accepts a single {name}, but was given a key array of shape "
            f"{jnp.shape(key)}. Use jax.vmap for batching."
        )


def check_floating(x: Any, fn: str, name: str) -> None:
    """Raises ``TypeError`` unless ``x`` has a floating dtype."""
    dtype = jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn}: {name} must have a floating dtype, got {dtype}. "
            f"Convert it first, e.g. {name}.astype(jnp.float32)."
        )


def check_axis(axis: int, ndim: int, fn: str, name: str = "logits") -> int:
    """Returns the non-negative ``axis`` after checking it is valid for ``ndim``."""
    if not isinstance(axis, numbers.Integral):
        raise TypeError(f"{fn}: axis must be a static int, got {_describe(axis)}.")
    if ndim == 0:
        raise ValueError(
            f"{fn}: {name} must have at least one dimension (the categories), got a scalar."
        )
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{fn}: axis={axis} is out of range for {name} with {ndim} dimension(s); "
            f"pass an axis in [{-ndim}, {ndim - 1}]."
        )
    return int(axis) % ndim


def check_positive(x: Any, fn: str, name: str, *, hint: str = "", nan_ok: bool = False) -> None:
    """Checks ``x > 0`` when ``x`` is concrete; traced values are left alone.

    Concrete values of every real dtype are checked, including bfloat16 and
    float16 (which ``np.issubdtype(_, np.number)`` does not recognize) and
    Python scalars. ``hint`` is appended to the message of a non-positive value
    (say how to pick a valid one for this argument). With ``nan_ok``, NaN
    entries pass (for distribution parameters: NaN in, NaN out); otherwise NaN
    is rejected like a non-positive value.

    Raises:
      TypeError: if ``x`` is not a real number or array (e.g. ``None``, a
        string, a boolean or complex array).
      ValueError: if a concrete ``x`` has an entry ``<= 0`` (or NaN).
    """
    if isinstance(x, jax.core.Tracer):
        return
    try:
        values = np.asarray(x)
    except Exception:  # noqa: BLE001 - not a concrete array: nothing to check
        return
    real = values.dtype != object and (
        jnp.issubdtype(values.dtype, jnp.integer) or jnp.issubdtype(values.dtype, jnp.floating)
    )
    if not real or isinstance(x, bool) or values.dtype == np.bool_:
        raise TypeError(f"{fn}: {name} must be a positive number or array, got {_describe(x)}.")
    bad = values <= 0 if nan_ok else ~(values > 0)
    if np.any(bad):
        shown = (
            x
            if values.size <= 8
            else f"an array of shape {values.shape} with {int(np.sum(bad))} bad entries"
        )
        raise ValueError(
            f"{fn}: {name} must be positive, got {shown}." + (f" {hint}" if hint else "")
        )


def check_shape(shape: Any, fn: str, name: str = "shape") -> tuple[int, ...]:
    """Returns ``shape`` as a tuple of non-negative ints; an int ``n`` means ``(n,)``.

    As in NumPy and ``jax.random``, a single int is a one-dimensional shape.

    Raises:
      TypeError: if ``shape`` is not an int or a sequence of ints.
      ValueError: if a dimension is negative.
    """
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        dims: tuple[Any, ...] = (shape,)
    else:
        try:
            dims = tuple(shape)
        except TypeError:
            dims = None  # type: ignore[assignment]
        if dims is None or isinstance(shape, str) or hasattr(shape, "dtype"):
            raise TypeError(
                f"{fn}: {name} must be a tuple of static ints (or one int), got {_describe(shape)}."
            )
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(
                f"{fn}: {name} must be a tuple of static ints (or one int), got {shape!r} "
                f"with an entry {_describe(d)}."
            )
    if any(d < 0 for d in dims):
        raise ValueError(
            f"{fn}: {name}={tuple(int(d) for d in dims)} has a negative dimension; every "
            f"dimension must be >= 0."
        )
    return tuple(int(d) for d in dims)


def check_count(value: Any, fn: str, name: str, minimum: int = 1, why: str = "") -> int:
    """Checks that argument ``name`` is a static int ``>= minimum``; ``why`` explains it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be a static Python int, got {_describe(value)}.")
    if value < minimum:
        reason = f" {why}" if why else ""
        raise ValueError(f"{fn}: {name} must be at least {minimum}, got {value}.{reason}")
    return int(value)


def check_bool(value: Any, fn: str, name: str, meaning: str) -> bool:
    """Checks that argument ``name`` is a static Python bool; ``meaning`` says what True does."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{fn}: {name} must be a static Python bool ({meaning}), got {type(value).__name__}."
        )
    return value


def check_num_samples(num_samples: Any, fn: str, minimum: int = 1, why: str = "") -> int:
    """Checks that ``num_samples`` is a static int ``>= minimum``."""
    return check_count(num_samples, fn, "num_samples", minimum, why)


def check_min_ndim(x: Any, ndim: int, fn: str, name: str, what: str) -> None:
    """Raises ``ValueError`` unless ``x`` has at least ``ndim`` dimensions."""
    if jnp.ndim(x) < ndim:
        raise ValueError(
            f"{fn}: {name} must have at least {ndim} dimension(s) ({what}), "
            f"got shape {jnp.shape(x)}."
        )


def check_scalar_output(shape: Sequence[int], fn: str, what: str = "f") -> None:
    """Raises ``ValueError`` unless a user function returned a scalar."""
    if tuple(shape) != ():
        raise ValueError(
            f"{fn}: {what} must return a scalar for one sample, but returned shape "
            f"{tuple(shape)}. Reduce it (e.g. jnp.sum) or write {what} for a single sample; "
            f"the estimator batches it with jax.vmap."
        )


def _describe(x: Any) -> str:
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return f"an array of dtype {x.dtype} and shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}"
