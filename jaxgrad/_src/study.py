"""Studies: several estimators on one model, ranked against a reference.

:func:`study` compares several estimators on any model (registry names or your
own estimators) and returns a :class:`Study`: a ranked table, CSV/JSON files
and a plot, with bias and MSE against the exact gradient or, without one,
against the pooled unbiased estimators. ``jaxgrad study`` is this function on
the built-in problems.

Public through :mod:`jaxgrad.diagnostics`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import math
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad._src import checks
from jaxgrad._src.stats import GradStats, _check_batch_size, _check_num_keys, grad_stats
from jaxgrad._src.tuning import TUNING_STEPS, tunable, tuned

Array = jax.Array


#: The files a study writes to its folder, by key (see :func:`write_study`).
STUDY_FILES = {
    "csv": "study.csv",
    "coordinates": "study_coordinates.csv",
    "json": "study.json",
    "png": "study.png",
}
# Errors of one estimator that a study may skip (``on_error="skip"``): it does
# not apply, is not installed, or rejects the problem.
_SKIPPABLE = (ImportError, ValueError, TypeError, NotImplementedError)


class StudyOutputError(ValueError):
    """An output folder for a study that cannot be used (one line, names the path)."""


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """One estimator's row of a :class:`Study`.

    Attributes:
      name: the estimator's name (a registry key or the user's name).
      stats: its :class:`GradStats`; ``exact``, ``bias``, ``bias_stderr`` and
        ``mse`` are against the study's reference (exact or pooled).
      unbiased: whether it is unbiased (``None``: not declared).
      num_samples: samples per estimate for registry entries, else ``None``.
      temperature: the temperature it ran with, for entries that have one.
      info: the :class:`jaxgrad.EstimatorInfo` of a registry entry, else ``None``.
      note: how it was prepared (e.g. RELAX's tuned control variate), or ``""``.
    """

    name: str
    stats: GradStats
    unbiased: bool | None
    num_samples: int | None = None
    temperature: float | None = None
    info: Any = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Reference:
    """The gradient a study measures bias and MSE against.

    Attributes:
      kind: ``"exact"`` (given), ``"pooled"`` (estimated from the unbiased
        estimators of the study) or ``"none"`` (neither: no bias, no MSE).
      gradient: the flat reference gradient (float64), or ``None``.
      stderr: its flat standard error (zeros for an exact one), or ``None``.
      estimators: the estimators pooled into it (``kind == "pooled"``).
    """

    kind: str
    gradient: np.ndarray | None = None
    stderr: np.ndarray | None = None
    estimators: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line saying which reference was used."""
        if self.kind == "exact":
            return "reference: the exact gradient"
        if self.kind == "pooled":
            names = ", ".join(self.estimators)
            return (
                f"reference: no exact gradient; the inverse-variance weighted mean of the "
                f"{len(self.estimators)} unbiased estimator(s) ({names}); +-se of a bias "
                "includes the reference's own error"
            )
        return "reference: none (no exact gradient and no unbiased estimator): biases unknown"


@dataclasses.dataclass(frozen=True)
class Study:
    """The result of :func:`study`: one :class:`StudyResult` per estimator, best first.

    Attributes:
      name: the model's (problem's) name.
      description: one line describing it.
      variable: the registry variable type (``"bernoulli"``, ...), or ``None``.
      event_shape: the shape registry costs were computed for.
      coordinates: a label for each scalar coordinate of the gradient.
      results: the rows, sorted by (MSE or variance) x f-evaluations.
      skipped: ``(name, reason)`` of estimators that did not run.
      reference: the :class:`Reference` of bias and MSE.
      settings: the study's settings (keys, batch size, temperature, ...).
      problem_settings: the model's own settings, for the record.
      partial: whether the study stopped early (interrupt or error).
      interruption: what stopped it, if ``partial``.
      not_finished: the estimators it stopped in or did not reach, if ``partial``.
    """

    name: str
    description: str
    variable: str | None
    event_shape: tuple[int, ...]
    coordinates: tuple[str, ...]
    results: tuple[StudyResult, ...]
    skipped: tuple[tuple[str, str], ...]
    reference: Reference
    settings: dict[str, Any]
    problem_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    partial: bool = False
    interruption: str | None = None
    not_finished: tuple[str, ...] = ()

    def table(self) -> str:
        """The study as a text table (see :func:`format_table`)."""
        return format_table(self)

    def write(self, out: str, *, plot: bool = True, argv: Sequence[str] | None = None) -> dict:
        """Writes the CSVs, the JSON and the PNG to the folder ``out`` (:func:`write_study`)."""
        return write_study(self, out, plot=plot, argv=argv)

    def plot(self, path: str) -> None:
        """Draws the study to a PNG at ``path`` (:func:`plot_study`)."""
        plot_study(self, path)

    def to_dict(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        """Every figure of the study as JSON-ready data (the content of ``study.json``)."""
        return _study_document(self, argv)


def _variable_of(dist: Any) -> str | None:
    """The registry variable type of a built-in distribution spec, else ``None``."""
    from jaxgrad._src import dists

    for cls, name in (
        (dists.Bernoulli, "bernoulli"),
        (dists.Categorical, "categorical"),
        (dists.Normal, "normal"),
    ):
        if isinstance(dist, cls):
            return name
    return None


def _flat_like(params: Any, tree: Any, fn: str, what: str) -> np.ndarray:
    treedef = jax.tree.structure(params)
    shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]
    try:
        ex = jax.tree.map(lambda p, e: np.broadcast_to(np.asarray(e), jnp.shape(p)), params, tree)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{fn}: {what} must be a pytree like params (structure {treedef}, leaf shapes "
            f"{shapes}); could not match it: {err}"
        ) from None
    return GradStats._flat(ex)


def _unflat_like(params: Any, v: np.ndarray | None) -> Any:
    if v is None:
        return None
    parts, i = [], 0
    for leaf in jax.tree.leaves(params):
        shape = jnp.shape(leaf)
        k = math.prod(shape)
        parts.append(np.asarray(v[i : i + k]).reshape(shape))
        i += k
    return jax.tree.unflatten(jax.tree.structure(params), parts)


def _row_key(key: Any, name: str) -> Any:
    """The key of estimator ``name``: independent rows, the same whichever others run."""
    import zlib

    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _study_key(key: Any, fn: str) -> tuple[Any, Any]:
    """``(key, record)``: an int seed becomes ``jax.random.key(seed)``."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        seed = int(key)
        if not -(2**63) <= seed < 2**63:
            raise ValueError(f"{fn}: key as an int seed must fit in 64 bits, got {seed}.")
        return jax.random.key(seed), seed
    checks.check_key(key, fn)
    return key, "a PRNG key"


def _check_temperature(temperature: Any, fn: str) -> Any:
    if temperature is None:
        return None
    if isinstance(temperature, bool):
        raise TypeError(f"{fn}: temperature must be a positive number or None, got a bool.")
    try:
        value = float(np.asarray(temperature, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(
            f"{fn}: temperature must be a positive number or None, got "
            f"{type(temperature).__name__}."
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: temperature must be positive and finite, got {value}.")
    return temperature


class _Entry:
    """An estimator to study: a registry entry or a user's ``(name, est[, metadata])``."""

    def __init__(self, name, est=None, info=None, unbiased=None, f_evals=None):
        self.name, self.est, self.info = name, est, info
        self.unbiased = info.unbiased if info is not None else unbiased
        self.f_evals = f_evals


def _entries(estimators: Any, variable: str | None, fn: str) -> list[_Entry]:
    from jaxgrad._src.estimators.registry import ESTIMATORS

    if isinstance(estimators, str) or callable(estimators) or estimators is None:
        raise TypeError(
            f"{fn}: estimators must be a list of registry names and (name, est) pairs, got "
            f"{estimators!r}; e.g. ['reinforce', ('mine', my_est)]."
        )
    out = []
    for item in estimators:
        if isinstance(item, str):
            if item not in ESTIMATORS:
                raise ValueError(
                    f"{fn}: unknown estimator {item!r}; registry names: {', '.join(ESTIMATORS)}, "
                    f"or pass a (name, est) pair."
                )
            info = ESTIMATORS[item]
            if variable is not None and not info.applies_to(variable):
                fits = [n for n, e in ESTIMATORS.items() if e.applies_to(variable)]
                raise ValueError(
                    f"{fn}: estimator {item!r} does not apply to {variable} variables; "
                    f"applicable: {', '.join(fits)}."
                )
            out.append(_Entry(item, info=info))
            continue
        if (
            isinstance(item, tuple)
            and len(item) in (2, 3)
            and isinstance(item[0], str)
            and callable(item[1])
        ):
            meta = dict(item[2]) if len(item) == 3 else {}
            unknown = set(meta) - {"unbiased", "f_evals"}
            if unknown:
                raise ValueError(
                    f"{fn}: the metadata of estimator {item[0]!r} may only have the keys "
                    f"'unbiased' and 'f_evals', got {sorted(unknown)}."
                )
            f_evals = meta.get("f_evals")
            if f_evals is not None and (
                isinstance(f_evals, bool) or not isinstance(f_evals, int) or f_evals < 1
            ):
                raise ValueError(
                    f"{fn}: f_evals of estimator {item[0]!r} must be a positive int, got "
                    f"{f_evals!r}."
                )
            unbiased = meta.get("unbiased")
            unbiased = None if unbiased is None else bool(unbiased)
            out.append(_Entry(item[0], est=item[1], unbiased=unbiased, f_evals=f_evals))
            continue
        raise TypeError(
            f"{fn}: each estimator must be a registry name or a (name, est) or "
            f"(name, est, {{'unbiased': ..., 'f_evals': ...}}) tuple, got {item!r}."
        )
    if not out:
        raise ValueError(f"{fn}: estimators is empty; name at least one estimator.")
    names = [e.name for e in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError(f"{fn}: estimator {dup!r} is listed twice; give each a distinct name.")
    return out


def _against_reference(r: StudyResult, params: Any, ref: Reference, pooled: bool) -> StudyResult:
    r"""``r`` with bias, its standard error and MSE against ``ref``.

    With :math:`m` the estimator's mean, :math:`s` its standard error and
    :math:`r \pm s_r` the reference, the bias is :math:`m - r` with variance
    :math:`s^2 + s_r^2` for an estimator outside the pool and :math:`s^2 - s_r^2`
    for one inside it (it is part of :math:`r`; independent keys). The MSE
    :math:`\sigma^2 + b^2 - \mathrm{se}_b^2` is unbiased for
    :math:`E\|g - g^\star\|^2` (floored at 0).
    """
    s = r.stats
    m, se, var = s.flat("mean"), s.flat("stderr"), s.flat("variance")
    bias = m - ref.gradient
    se2 = se * se - ref.stderr**2 if pooled else se * se + ref.stderr**2
    se_b = np.sqrt(np.maximum(se2, 0.0))
    mse = np.maximum(var + bias * bias - se_b * se_b, 0.0)
    stats = dataclasses.replace(
        s,
        exact=_unflat_like(params, ref.gradient),
        bias=_unflat_like(params, bias),
        bias_stderr=_unflat_like(params, se_b),
        mse=_unflat_like(params, mse),
    )
    return dataclasses.replace(r, stats=stats)


def pooled_reference(results: Sequence[StudyResult]) -> Reference:
    r"""The inverse-variance weighted mean of the unbiased estimators of a study.

    .. math::
        r_j = \frac{\sum_e w_{ej} \bar g_{ej}}{\sum_e w_{ej}}, \quad
        w_{ej} = \frac{1}{s_{ej}^2}, \quad
        s_{r,j} = \Big(\sum_e w_{ej}\Big)^{-1/2},

    per coordinate ``j`` over the estimators ``e`` declared unbiased whose
    figures are finite; a zero-variance unbiased estimator (``exact``, or
    DisARM on one fair coin) is exact, and is used alone where there is one.
    With the rows drawn on independent keys this is the minimum-variance
    unbiased combination of their means.

    Args:
      results: the rows of a study.

    Returns:
      A :class:`Reference` of kind ``"pooled"``, or ``"none"`` if no row is
      unbiased with finite figures.
    """
    pool = [
        r
        for r in results
        if r.unbiased
        and np.all(np.isfinite(r.stats.flat("mean")))
        and np.all(np.isfinite(r.stats.flat("stderr")))
    ]
    if not pool:
        return Reference("none")
    means = np.stack([r.stats.flat("mean") for r in pool])
    ses = np.stack([r.stats.flat("stderr") for r in pool])
    zero = ses == 0
    any_zero = np.any(zero, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(zero, 0.0, 1.0 / np.where(zero, 1.0, ses * ses))
        total = np.sum(w, axis=0)
        weighted = np.sum(w * means, axis=0) / np.where(total > 0, total, 1.0)
        exact = np.sum(np.where(zero, means, 0.0), axis=0) / np.maximum(np.sum(zero, axis=0), 1)
        se = np.where(any_zero, 0.0, 1.0 / np.sqrt(np.where(total > 0, total, 1.0)))
    return Reference("pooled", np.where(any_zero, exact, weighted), se, tuple(r.name for r in pool))


def _rank_key(r: StudyResult):
    e = r.stats.efficiency
    return (math.isnan(e), e if not math.isnan(e) else 0.0, r.stats.f_evals or 0, r.name)


def study(
    estimators: Sequence[Any],
    f: Callable[..., Array],
    params: Any,
    *args: Any,
    dist: Any = None,
    exact: Any = None,
    num_keys: int = 10_000,
    num_samples: int | None = None,
    temperature: Any = None,
    key: Any = 0,
    batch_size: int | None = None,
    devices: Sequence[Any] | None = None,
    f_takes_key: bool = False,
    tune_steps: int = TUNING_STEPS,
    on_error: str = "raise",
    name: str = "model",
    description: str = "",
    variable: str | None = None,
    event_shape: Sequence[int] | None = None,
    coordinate_names: Sequence[str] | None = None,
    problem_settings: dict[str, Any] | None = None,
    progress: Any = None,
) -> Study:
    r"""A variance study of several estimators on your own model, ranked against a reference.

    For each estimator ``e``, :func:`grad_stats` draws ``num_keys`` gradient
    estimates of :math:`\nabla_\theta E_{x \sim p_\theta}[f(x, \ldots)]` on
    keys ``fold_in(key, crc32(name))``-derived (so rows are independent of
    each other and a row's numbers do not depend on which others run). Each
    row's bias :math:`\bar g - g^\star`, its standard error and MSE are
    measured against a reference :math:`g^\star`: ``exact`` if given, else the
    pooled estimate of the unbiased rows (:func:`pooled_reference`), with

    .. math::
        \mathrm{MSE} = \sigma^2 + b^2 - \mathrm{se}_b^2 \approx E\|\hat g - g^\star\|^2 ,

    and the rows are ranked by ``MSE x f-evals`` (``variance x f-evals``
    without any reference). The result prints as a table
    (:meth:`Study.table`) and writes CSV, JSON and a PNG (:meth:`Study.write`);
    ``jaxgrad study`` is this function on built-in problems.

    Registry entries are built with ``jaxgrad.ESTIMATORS[name].build``;
    ``temperature`` goes to every entry that has one. Three entries have
    parameters to adapt, and the study first tunes them for ``tune_steps`` Adam
    steps of :func:`jaxgrad.variance_loss` (16 keys a step, keys independent of
    the study's, so they stay unbiased; ``tune_steps=0`` keeps the registry's
    untuned ones):

    * ``relax``, untuned REBAR: ``c(z) = eta f(relax(z / temperature)) + <phi, z>``
      (``relax`` the sigmoid for coins, the softmax over the classes for
      categoricals) from ``eta = 1, phi = 0``;
    * ``rodeo``, untuned RLOO: the linear ``h`` of :func:`jaxgrad.rodeo`
      (``jaxgrad._src.estimators.rodeo.linear_h``) from 0;
    * ``double-cv``: one ``alpha`` per coordinate, from 1.

    If the study is interrupted (``KeyboardInterrupt``) or an estimator fails
    with ``on_error="raise"``, the exception propagates carrying the finished
    rows as ``err.partial_study`` (a :class:`Study` with ``partial=True``).

    Args:
      estimators: registry names (``"disarm"``), ``(name, est)`` pairs of your
        own estimators ``est(key, params, *args)``, or
        ``(name, est, {"unbiased": bool, "f_evals": int})``; declared unbiased
        ones join a pooled reference.
      f: the cost for one sample, ``f(x, *args) -> scalar`` (registry entries).
      params: the distribution's parameters (the gradient is w.r.t. them).
      *args: further arguments of ``f`` and the estimators, held fixed.
      dist: the distribution spec for registry entries
        (``jaxgrad.dists.bernoulli``, ...).
      exact: the exact gradient (a pytree like ``params``), if known.
      num_keys: estimates per estimator (at least 2).
      num_samples: samples per estimate for registry entries; default each
        entry's ``num_samples``.
      temperature: for registry entries with a temperature; default theirs.
      key: a PRNG key or an int seed.
      batch_size: keys per vectorized chunk (:func:`grad_stats`).
      devices: devices to shard over; default all.
      f_takes_key: ``f(x, key, *args)`` gets its own key (registry entries).
      tune_steps: Adam steps that tune RELAX, RODEO and double CV (0: untuned).
      on_error: ``"raise"``, or ``"skip"`` to list an estimator that raises
        ``ValueError``/``TypeError``/``ImportError``/``NotImplementedError``
        among the skipped ones and go on.
      name: the model's name, for the table, plot and files.
      description: one line describing the model.
      variable: the registry variable type; default from ``dist``.
      event_shape: the shape registry costs are computed for; default the
        shape of ``params`` (of ``params[0]`` for a Gaussian).
      coordinate_names: a label per gradient coordinate; default ``theta[i]``.
      problem_settings: the model's settings, recorded in the JSON.
      progress: an object with ``start(index, total, name)``,
        ``update(done, total)`` and ``finish(stats_or_None, note)``, or ``None``.

    Returns:
      A :class:`Study`.

    Raises:
      TypeError: if an estimator entry is neither a name nor a pair.
      ValueError: for an unknown or inapplicable registry name, an empty or
        duplicated list, ``num_keys < 2``, a bad ``temperature``, ``exact``
        unlike ``params``, ``on_error`` other than ``"raise"``/``"skip"``, or
        no estimator that ran.

    Example:
      >>> import jax, jax.numpy as jnp, jaxgrad
      >>> f = lambda b: jnp.sum((b - jnp.array([0.2, 0.7])) ** 2)
      >>> mine = lambda key, l: jaxgrad.disarm(f)(key, l)  # your own estimator
      >>> meta = {"unbiased": True, "f_evals": 2}  # it joins the pooled reference
      >>> s = jaxgrad.diagnostics.study(
      ...     ["reinforce", "straight-through", ("my-disarm", mine, meta)],
      ...     f, jnp.array([0.5, -1.0]), dist=jaxgrad.dists.bernoulli, num_keys=4000)
      >>> s.reference.kind, s.results[0].name  # no exact gradient: pooled reference
      ('pooled', 'my-disarm')
      >>> print(s.table().splitlines()[1][:40])
      reference: no exact gradient; the invers
    """
    fn = "study"
    t_start = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"{fn}: on_error must be 'raise' or 'skip', got {on_error!r}.")
    key, key_record = _study_key(key, fn)
    num_keys = _check_num_keys(num_keys, fn, 2, "A variance needs two estimates.")
    batch_size = _check_batch_size(batch_size, fn)
    temperature = _check_temperature(temperature, fn)
    if num_samples is not None:
        num_samples = checks.check_num_samples(num_samples, fn)
    if isinstance(tune_steps, bool) or not isinstance(tune_steps, int) or tune_steps < 0:
        raise ValueError(f"{fn}: tune_steps must be an int >= 0, got {tune_steps!r}.")
    variable = variable if variable is not None else _variable_of(dist)
    entries = _entries(estimators, variable, fn)
    if any(e.info is not None for e in entries) and not callable(f):
        raise TypeError(f"{fn}: f must be the cost f(x, *args) for registry entries, got {f!r}.")
    exact_flat = None if exact is None else _flat_like(params, exact, fn, "exact")
    if event_shape is None:
        leaf = params[0] if variable == "normal" and isinstance(params, tuple | list) else params
        event_shape = tuple(jnp.shape(leaf)) if not isinstance(leaf, tuple | list | dict) else ()
    event_shape = tuple(int(d) for d in event_shape)
    size = sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params))
    if coordinate_names is None:
        coordinate_names = [f"theta[{i}]" for i in range(size)] if size != 1 else ["theta"]
    coordinate_names = tuple(str(c) for c in coordinate_names)
    if len(coordinate_names) != size:
        raise ValueError(
            f"{fn}: coordinate_names has {len(coordinate_names)} labels for a gradient of "
            f"{size} coordinates."
        )
    args = tuple(args)
    results: list[StudyResult] = []
    skipped: list[tuple[str, str]] = []
    tuning: dict[str, Any] = {}

    def finish(partial: bool, interruption: str | None, reached: int) -> Study:
        if exact_flat is not None:
            ref = Reference("exact", exact_flat, np.zeros_like(exact_flat))
            rows = list(results)
        else:
            ref = pooled_reference(results)
            pool = set(ref.estimators)
            rows = (
                [_against_reference(r, params, ref, r.name in pool) for r in results]
                if ref.kind == "pooled"
                else list(results)
            )
        rows.sort(key=_rank_key)
        temps = {r.name: r.temperature for r in rows if r.temperature is not None}
        settings = {
            "num_keys": num_keys,
            "batch_size": batch_size,
            "num_samples": num_samples,
            "temperature": None if temperature is None else float(np.asarray(temperature)),
            "temperatures": temps,
            "seed": key_record,
            "estimators": [r.name for r in rows],
            "requested_estimators": [e.name for e in entries],
            "tuning": tuning or None,
            "f_takes_key": bool(f_takes_key),
            "partial": partial,
            "wall_time_s": time.perf_counter() - t_start,
            "started": started,
        }
        return Study(
            name=name,
            description=description,
            variable=variable,
            event_shape=event_shape,
            coordinates=coordinate_names,
            results=tuple(rows),
            skipped=tuple(skipped),
            reference=ref,
            settings=settings,
            problem_settings=dict(problem_settings or {}),
            partial=partial,
            interruption=interruption,
            not_finished=tuple(e.name for e in entries[reached:]) if partial else (),
        )

    reached = 0
    try:
        for i, entry in enumerate(entries, 1):
            reached = i - 1
            if progress is not None:
                progress.start(i, len(entries), entry.name)
            try:
                row = _run_entry(
                    entry,
                    f,
                    params,
                    args,
                    dist=dist,
                    variable=variable,
                    event_shape=event_shape,
                    num_samples=num_samples,
                    temperature=temperature,
                    f_takes_key=f_takes_key,
                    tune_steps=tune_steps,
                    key=key,
                    tuning=tuning,
                    grad_stats_kwargs=dict(
                        num_keys=num_keys,
                        batch_size=batch_size,
                        exact=exact,
                        devices=devices,
                        progress=None if progress is None else progress.update,
                    ),
                )
            except _SKIPPABLE as err:
                if on_error != "skip":
                    raise
                what = "is not available" if isinstance(err, ImportError) else "failed"
                first = str(err).splitlines()[0] if str(err) else ""
                reason = f"{what}: {type(err).__name__}: {first}"
                skipped.append((entry.name, reason))
                if progress is not None:
                    progress.finish(None, f"skipped ({reason})")
                continue
            if progress is not None:
                progress.finish(row.stats, row.note)
            results.append(row)
        reached = len(entries)
    except BaseException as err:
        first = str(err).splitlines()[0] if str(err) else ""
        where = entries[reached].name if reached < len(entries) else "the study"
        why = f"{type(err).__name__} in {where}" + (f": {first}" if first else "")
        with contextlib.suppress(AttributeError, TypeError):
            err.partial_study = finish(True, why, reached)
        raise
    if not results:
        raise ValueError(
            f"{fn}: no estimator could run: " + "; ".join(f"{n} {r}" for n, r in skipped)
        )
    return finish(False, None, reached)


def _run_entry(
    entry: _Entry,
    f,
    params,
    args,
    *,
    dist,
    variable,
    event_shape,
    num_samples,
    temperature,
    f_takes_key,
    tune_steps,
    key,
    tuning,
    grad_stats_kwargs,
) -> StudyResult:
    info, note, temp, k = entry.info, "", None, None
    if info is None:
        est, f_evals = entry.est, entry.f_evals
    else:
        k = info.num_samples if num_samples is None else num_samples
        if k < info.min_num_samples:
            raise ValueError(f"{info.name} needs num_samples >= {info.min_num_samples}, got {k}.")
        default_temp = getattr(info, "temperature", None)
        kwargs = {"dist": dist, "num_samples": k}
        if default_temp is not None:
            temp = default_temp if temperature is None else temperature
            if temperature is not None:
                kwargs["temperature"] = temperature
        if f_takes_key:
            kwargs["f_takes_key"] = True
        tunable_entry = None
        if tune_steps > 0:
            tunable_entry = tunable(
                info.name,
                f,
                params,
                args,
                dist=dist,
                temperature=temp if temp is not None else 0.5,
                num_samples=k,
                f_takes_key=f_takes_key,
                key=_row_key(key, f"{info.name}/scale"),
            )
        if tunable_entry is not None:
            inner, init, lr, what = tunable_entry
            est, record = tuned(
                inner,
                init,
                params,
                args,
                learning_rate=lr,
                what=what,
                key=_row_key(key, f"{info.name}/tuning"),
                steps=tune_steps,
            )
            tuning[info.name] = record
            note = f"tuned: {tune_steps} variance_loss steps"
        else:
            est = info.build(f, **kwargs)
        try:
            f_evals = info.cost(variable or "", event_shape, k)
        except (KeyError, IndexError, TypeError, ValueError):
            f_evals = None
    stats = grad_stats(
        est, _row_key(key, entry.name), params, *args, f_evals=f_evals, **grad_stats_kwargs
    )
    temp_value = None if temp is None else float(np.asarray(temp))
    return StudyResult(entry.name, stats, entry.unbiased, k, temp_value, info, note)


# --- reporting: table, CSV/JSON, plot ----------------------------------------


def _fmt(x: float | None, digits: int = 4) -> str:
    """A number for the table: ``-`` means not available, ``nan`` is a NaN result."""
    if x is None:
        return "-"
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.{digits - 1}e}"


def _summary(r: StudyResult, one: bool) -> dict[str, Any]:
    s = r.stats
    mean, bias, se_b = s.flat("mean"), s.flat("bias"), s.flat("bias_stderr")
    if bias is None:
        b = sb = None
    elif one:
        b, sb = float(bias[0]), float(se_b[0]) if se_b is not None else None
    else:
        b = s.bias_norm
        sb = float(np.sqrt(np.sum(se_b * se_b))) if se_b is not None else None
    return {
        "mean": float(mean[0]) if one else float(np.linalg.norm(mean)),
        "variance": s.total_variance,
        "snr": s.snr_norm,
        "bias": b,
        "bias_se": sb,
    }


def _err_name(study: Study) -> str:
    return "var" if study.reference.kind == "none" else "MSE"


def _temperature_line(study: Study) -> str | None:
    groups: dict[float, list[str]] = {}
    for r in study.results:
        if r.temperature is not None:
            groups.setdefault(r.temperature, []).append(r.name)
    if not groups:
        return None
    given = study.settings.get("temperature")
    parts = [f"{t:g} ({', '.join(names)})" for t, names in groups.items()]
    origin = "given" if given is not None else "registry defaults"
    return f"temperature ({origin}): " + "; ".join(parts)


def format_table(study: Study) -> str:
    """The study as a text table, one row per estimator, best first.

    The header says which reference bias and MSE are measured against, the
    footer the temperatures, tuning and skipped estimators; a partial study
    says so on its first line. ``-`` marks a figure that is not available,
    ``nan`` a NaN result.
    """
    if not study.results:
        return f"{study.name}: no estimator finished" + (
            f" (PARTIAL: {study.interruption})" if study.partial else ""
        )
    one = study.results[0].stats.num_coordinates == 1
    err = _err_name(study)
    headers = [
        "estimator",
        "unbiased",
        "mean" if one else "|mean|",
        "variance" if one else "sum var",
        "SNR",
        "bias" if one else "|bias|",
        "+-se",
        "f-evals",
        "us/est",
        f"{err} x evals",
    ]
    rows = []
    for r in study.results:
        m = _summary(r, one)
        rows.append(
            [
                r.name,
                {True: "yes", False: "no", None: "?"}[r.unbiased],
                _fmt(m["mean"]),
                _fmt(m["variance"]),
                _fmt(m["snr"], 3),
                _fmt(m["bias"], 3),
                _fmt(m["bias_se"], 2),
                "-" if r.stats.f_evals is None else str(r.stats.f_evals),
                _fmt(r.stats.time_per_estimate * 1e6, 3),
                _fmt(r.stats.efficiency),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = []
    if study.partial:
        out.append(
            f"PARTIAL STUDY: stopped by {study.interruption}; {len(study.results)} "
            f"estimator(s) finished"
            + (f", not finished: {', '.join(study.not_finished)}" if study.not_finished else "")
        )
    out.append(f"{study.name}: {study.description}" if study.description else study.name)
    out.append(study.reference.describe())
    ref = study.reference
    if ref.gradient is not None:
        shown = ", ".join(_fmt(float(v)) for v in ref.gradient[:6])
        more = ", ..." if ref.gradient.size > 6 else ""
        label = "exact gradient" if ref.kind == "exact" else "reference gradient"
        out.append(f"{label}: [{shown}{more}]")
    n = study.settings["num_keys"]
    by = f"{err} x f-evals" + ("" if ref.kind == "none" else " against the reference")
    out.append(
        f"{n} estimates per estimator, {study.results[0].stats.num_devices} device(s); "
        f"sorted by {by} (smaller is better)"
    )
    if not one:
        out.append(
            f"{study.results[0].stats.num_coordinates} coordinates: norms of mean and bias, "
            "summed variance, SNR = |mean| / sqrt(sum var), +-se = sqrt(sum se^2) of the bias"
        )
    out += ["", line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    temps = _temperature_line(study)
    if temps:
        out.append(temps)
    for r in study.results:
        if r.note:
            out.append(f"{r.name}: {r.note}")
    for name, reason in study.skipped:
        out.append(f"skipped {name}: {reason}")
    return "\n".join(out)


def _clean(x: Any) -> Any:
    """JSON-safe values: arrays to lists, non-finite floats to null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


_FIELDS = ("mean", "variance", "stderr", "snr", "exact", "bias", "bias_stderr", "mse")


def _record(study: Study, r: StudyResult, rank: int) -> dict[str, Any]:
    s = r.stats
    se_b = s.flat("bias_stderr")
    info = r.info
    return {
        "rank": rank,
        "estimator": r.name,
        "unbiased": r.unbiased,
        "black_box": None if info is None else info.black_box,
        "relaxation": None if info is None else info.relaxation,
        "reference": None if info is None else info.reference,
        "num_samples": r.num_samples,
        "temperature": r.temperature,
        "num_keys": s.num_keys,
        "f_evals": s.f_evals,
        "mean_norm": float(np.linalg.norm(s.flat("mean"))),
        "total_variance": s.total_variance,
        "snr_norm": s.snr_norm,
        "bias_norm": s.bias_norm,
        "bias_stderr_norm": None if se_b is None else float(np.sqrt(np.sum(se_b * se_b))),
        "total_mse": s.total_mse,
        "variance_x_evals": s.total_variance * (s.f_evals or math.nan),
        "efficiency": s.efficiency,
        "bias_against": study.reference.kind,
        "time_per_estimate_s": s.time_per_estimate,
        "variance_x_time": s.variance_x_time,
        "compile_time_s": s.compile_time,
        "batch_size": s.batch_size,
        "num_devices": s.num_devices,
        "note": r.note,
    }


def versions() -> dict[str, Any]:
    """The versions and the machine a study ran on."""
    import importlib.metadata
    import os
    import platform

    import jaxgrad

    def dist_version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    devices = jax.devices()
    return {
        "jaxgrad": jaxgrad.__version__,
        "jax": jax.__version__,
        "jaxlib": dist_version("jaxlib"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "cpu_count": os.cpu_count(),
    }


def _study_document(study: Study, argv: Sequence[str] | None) -> dict[str, Any]:
    records = [_record(study, r, i) for i, r in enumerate(study.results, 1)]
    ref = study.reference
    return _clean(
        {
            "format": "jaxgrad-study/2",
            "partial": study.partial,
            "interruption": study.interruption,
            "not_finished": list(study.not_finished),
            "problem": {
                "name": study.name,
                "description": study.description,
                "variable": study.variable,
                "event_shape": list(study.event_shape),
                "settings": study.problem_settings,
                "coordinates": list(study.coordinates),
                "exact": ref.gradient if ref.kind == "exact" else None,
            },
            "reference": {
                "kind": ref.kind,
                "description": ref.describe(),
                "estimators": list(ref.estimators),
                "gradient": ref.gradient,
                "stderr": ref.stderr,
            },
            "settings": {**study.settings, "argv": None if argv is None else list(argv)},
            "versions": versions(),
            "results": [
                {**rec, "coordinates": {f: r.stats.flat(f) for f in _FIELDS}}
                for rec, r in zip(records, study.results, strict=True)
            ],
            "skipped": [{"estimator": n, "reason": why} for n, why in study.skipped],
        }
    )


def check_output_dir(out: Any, fn: str = "write_study") -> str:
    """Checks that ``out`` is, or can become, a writable folder; returns it as a string.

    Done before a study runs (``jaxgrad study`` calls it first), so that a bad
    path is refused at once rather than after the work: an existing file or
    device (``/dev/null``), a folder that cannot be written, or a path whose
    nearest existing parent cannot be written. Nothing is left behind.

    Raises:
      TypeError: if ``out`` is not a path.
      StudyOutputError: naming the path and the reason.
    """
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"{fn}: out must be a folder path, got {type(out).__name__}.")
    path = os.fspath(out)
    if not path:
        raise StudyOutputError(f"{fn}: the output folder is an empty path.")
    if os.path.lexists(path):
        if not os.path.isdir(path):
            kind = "a device" if stat.S_ISCHR(os.stat(path).st_mode) else "a file"
            raise StudyOutputError(
                f"{fn}: output folder {path!r} exists and is {kind}, not a folder; "
                "give a folder (it is created if missing)."
            )
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".jaxgrad-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise StudyOutputError(
                f"{fn}: cannot write to output folder {path!r}: {err.strerror or err}."
            ) from None
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise StudyOutputError(
            f"{fn}: cannot create output folder {path!r}: {parent!r} is not a folder."
        )
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".jaxgrad-probe-"))
    except OSError as err:
        raise StudyOutputError(
            f"{fn}: cannot create output folder {path!r}: {parent!r} is not writable "
            f"({err.strerror or err})."
        ) from None
    return path


def _write_csv(path: str, rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def write_study(
    study: Study, out: str, *, plot: bool = True, argv: Sequence[str] | None = None
) -> dict[str, str]:
    """Writes ``study.csv``, ``study_coordinates.csv``, ``study.json`` and ``study.png``.

    ``study.csv`` has one row per estimator, ``study_coordinates.csv`` one per
    estimator and coordinate, ``study.json`` every figure with the settings,
    the reference and the versions. Every file is written to a temporary file
    in ``out`` and renamed into place only when all of them are written, the
    JSON last; the files of an earlier study in ``out`` that this one does not
    write (``study.png`` with ``plot=False``, or without matplotlib) are then
    removed, so the folder never mixes two studies and a crash never leaves a
    half-written file. A partial study is marked ``"partial": true``.

    Args:
      study: a :class:`Study`.
      out: the folder (created if missing).
      plot: whether to draw the PNG (needs matplotlib: ``jaxgrad[study]``).
      argv: the command line, for the record.

    Returns:
      ``{"csv": path, "coordinates": path, "json": path[, "png": path]}``, and
      ``"replaced": "yes"`` when an earlier study's files were replaced.

    Raises:
      StudyOutputError: if ``out`` cannot be used (:func:`check_output_dir`).
      OSError: if writing fails midway (nothing of this study is then in place).
    """
    out = check_output_dir(out, "write_study")
    doc = _study_document(study, argv)
    records = doc["results"]

    def write_csv(path):
        columns = [k for k in records[0] if k != "coordinates"] if records else ["estimator"]
        rows = [["" if rec[c] is None else rec[c] for c in columns] for rec in records]
        _write_csv(path, [columns, *rows])

    def write_coordinates(path):
        coord_rows = [["estimator", "coordinate", *_FIELDS]]
        for r in study.results:
            cols = [r.stats.flat(f) for f in _FIELDS]
            for j, label in enumerate(study.coordinates):
                coord_rows.append(
                    [r.name, label, *("" if c is None else repr(float(c[j])) for c in cols)]
                )
        _write_csv(path, coord_rows)

    writers = {"csv": write_csv, "coordinates": write_coordinates}
    if plot and study.results:
        writers["png"] = plot_or_skip(lambda path: plot_study(study, path), "write_study")
    writers["json"] = lambda path: _write_json(path, doc)
    return write_files_atomically(out, STUDY_FILES, writers)


def _write_json(path: str, doc: Any) -> None:
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1, allow_nan=False)


def plot_or_skip(draw: Callable[[str], None], fn: str) -> Callable[[str], bool | None]:
    """A file writer that draws with matplotlib, or warns and skips the file without it."""

    def write(path: str) -> bool | None:
        try:
            draw(path)
        except ModuleNotFoundError as err:
            if err.name is None or not err.name.startswith("matplotlib"):
                raise
            warnings.warn(
                f"{fn}: no plot: matplotlib is not installed (pip install 'jaxgrad[study]'); "
                "the CSV and JSON are written.",
                stacklevel=3,
            )
            return False
        return None

    return write


def temporary_file(folder: str, prefix: str, suffix: str) -> str:
    """A new empty file in ``folder``, readable as the umask allows (as ``open`` would make it).

    ``tempfile.mkstemp`` creates its file private (mode 0600); a result renamed
    into place from it would then be unreadable to the user's group, unlike a
    file written directly, so the mode is set from the umask here.
    """
    fd, path = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    os.close(fd)
    return path


def write_files_atomically(
    out: str, names: dict[str, str], writers: dict[str, Callable[[str], bool | None]]
) -> dict[str, str]:
    """Writes a set of files into ``out`` all together, or none of them.

    Each ``writers[k](path)`` writes a temporary file in ``out`` (returning
    ``False`` skips its file); only when every writer has finished are the
    files renamed into place as ``names[k]``, in the order of ``writers`` (put
    the JSON last). Files of ``names`` that this call does not write (left by
    an earlier run) are then removed, so the folder never mixes two runs, and
    a crash never leaves a half-written file. Returns ``{k: path}`` of the
    written files, with ``"replaced": "yes"`` when earlier files were replaced.
    """
    os.makedirs(out, exist_ok=True)
    final = {k: os.path.join(out, name) for k, name in names.items()}
    replaced = any(os.path.lexists(p) for p in final.values())
    temps: dict[str, str] = {}
    try:
        for k, write in writers.items():
            temps[k] = path = temporary_file(out, f".{names[k]}.", ".tmp")
            if write(path) is False:
                os.unlink(temps.pop(k))
        for k, path in temps.items():
            os.replace(path, final[k])
        written = set(temps)
        temps.clear()
        for k, path in final.items():
            if k not in written and os.path.lexists(path):
                os.unlink(path)  # an earlier run's file that this one did not write
    finally:
        for path in temps.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
    paths = {k: final[k] for k in names if k in written}
    if replaced:
        paths["replaced"] = "yes"
    return paths


def _significant_bias2(r: StudyResult) -> float:
    """The squared bias norm if it is statistically significant (> 4 standard errors), else 0."""
    s = r.stats
    if s.bias is None:
        return 0.0
    b2 = s.bias_norm**2
    se = s.flat("bias_stderr")
    se2 = float(np.sum((se if se is not None else s.flat("stderr")) ** 2))
    scale2 = float(np.sum(s.flat("exact") ** 2))
    return b2 if b2 > 16 * se2 and b2 > 1e-12 * scale2 else 0.0


def plot_study(study: Study, path: str) -> None:
    """Draws variance (with squared bias), SNR and MSE x f-evals per estimator to a PNG.

    The title says which reference bias and MSE are measured against, and
    whether the study is partial.

    Raises:
      ModuleNotFoundError: if matplotlib is not installed.
    """
    from matplotlib.figure import Figure  # optional dependency: jaxgrad[study]
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    results = study.results
    n = len(results)
    one = results[0].stats.num_coordinates == 1
    has_ref = study.reference.kind != "none"
    unbiased_c, biased_c, unknown_c = "#2b6cb0", "#dd6b20", "#718096"
    colors = [
        unbiased_c if r.unbiased else unknown_c if r.unbiased is None else biased_c for r in results
    ]
    y = np.arange(n)[::-1]  # the best on top

    var = np.array([r.stats.total_variance for r in results])
    bias2 = np.array([_significant_bias2(r) for r in results])
    snr = np.array([r.stats.snr_norm for r in results])
    eff = np.array([r.stats.efficiency for r in results])
    err = "MSE" if has_ref else "variance"

    fig = Figure(figsize=(13, 1.9 + 0.4 * n), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels = [
        (axes[0], var, "variance of one estimate" if one else "summed variance (trace of Cov)"),
        (axes[1], snr, "SNR = |mean| / std" if one else "SNR = |mean| / sqrt(summed variance)"),
        (axes[2], eff, f"{err} x f-evaluations: smaller is better"),
    ]
    for ax, values, title in panels:
        extra = bias2[bias2 > 0] if ax is axes[0] else np.zeros(0)
        ok = np.isfinite(values) & (values > 0)
        top = max([*values[ok], *extra], default=1.0)
        # Values below 1e-10 of the largest are round-off: shown as ~0.
        shown = ok & (values > 1e-10 * top)
        lo = min([*values[shown], *extra], default=top / 10)
        lo_lim, hi_lim = lo / 20, top * 20
        ax.set_xscale("log")
        ax.set_xlim(lo_lim, hi_lim)
        span = math.log(hi_lim / lo_lim)
        for yi, v, c, vis, r in zip(y, values, colors, shown, results, strict=True):
            if vis:
                ax.barh(yi, v - lo_lim, left=lo_lim, color=c, height=0.64)
                label = _fmt(float(v), 3)
                if math.log(v / lo_lim) / span > 0.3:  # inside the bar
                    ax.text(
                        v / 1.25,
                        yi,
                        label,
                        va="center",
                        ha="right",
                        fontsize=8,
                        color="white",
                        fontweight="bold",
                    )
                else:
                    ax.text(v * 1.25, yi, label, va="center", fontsize=8)
            elif np.isinf(v):
                ax.barh(
                    yi,
                    hi_lim - lo_lim,
                    left=lo_lim,
                    color=c,
                    height=0.64,
                    alpha=0.35,
                    hatch="//",
                    edgecolor="white",
                )
                ax.text(
                    hi_lim / 1.25, yi, "inf (deterministic)", va="center", ha="right", fontsize=8
                )
            else:
                label = "nan" if np.isnan(v) else "0" if v == 0 else "~0 (round-off)"
                if np.isnan(v) and ax is axes[2] and r.stats.f_evals is None:
                    label = "n/a (f-evals unknown)"
                ax.text(lo_lim * 1.25, yi, label, va="center", fontsize=8, color="#333")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for yi, b2 in zip(y, bias2, strict=True):
        if b2 > 0:
            axes[0].plot([b2], [yi], marker="D", color="black", markersize=5, zorder=3)
    axes[0].set_yticks(y, [r.name for r in results])
    handles = [Patch(color=unbiased_c, label="unbiased"), Patch(color=biased_c, label="biased")]
    if any(r.unbiased is None for r in results):
        handles.append(Patch(color=unknown_c, label="not declared"))
    if has_ref:
        handles.append(
            Line2D(
                [],
                [],
                marker="D",
                color="black",
                lw=0,
                label="squared bias vs the reference (where significant)",
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    v = versions()
    head = "PARTIAL STUDY (" + str(study.interruption) + ")\n" if study.partial else ""
    fig.suptitle(
        f"{head}{study.name}: {study.description}\n"
        f"{study.reference.describe()}\n"
        f"{study.settings['num_keys']} estimates per estimator, sorted by {err} x f-evals; "
        f"jaxgrad {v['jaxgrad']}, jax {v['jax']}, {v['backend']} x {len(v['devices'])}",
        fontsize=9,
    )
    fig.savefig(path, dpi=110, format="png")
