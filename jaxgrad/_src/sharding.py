"""Helpers for code that runs inside ``jax.shard_map``.

Under ``shard_map`` (with its default ``check_vma=True``) every value carries
the set of mesh axes it *varies* over. Values that jaxgrad creates internally
(the initial carry of a ``scan``, a cotangent of ones for ``jax.vjp``, the
inputs of a ``custom_vjp``) start out device-invariant, while the values
derived from a per-device key vary; the types must match. ``vary_like`` makes
them match, and is the identity outside ``shard_map``.
"""

from __future__ import annotations

import jax

Array = jax.Array


def varying_axes(x: Array) -> frozenset:
    """The ``shard_map`` mesh axes ``x`` varies over (empty outside shard_map)."""
    aval = jax.typeof(x)
    if hasattr(aval, "vma"):  # jax < 0.10
        return frozenset(aval.vma)
    mat = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(mat, "varying", ()))


def vary_like(x: Array, *like: Array) -> Array:
    """Marks ``x`` as varying over every ``shard_map`` axis any of ``like`` varies over."""
    target = frozenset().union(*(varying_axes(y) for y in like))
    missing = target - varying_axes(x)
    if not missing:
        return x
    return jax.lax.pcast(x, tuple(sorted(missing)), to="varying")
