"""Search spaces: what a sweep may set, how values are drawn, and AlgoPerf's JSON format.

A space is a dict of *axes*: config field (dotted, e.g. ``optimizer.learning_rate``) -> a
distribution. A search turns it into a list of *points* (dicts field -> value):

    grid      every combination of the axes' grid values (the product of the axes)
    random    ``n`` points drawn uniformly in the unit cube, seeded, mapped through each axis
    halton    ``n`` quasi-random points (see :mod:`speechmusic_jax.tuning.halton`), seeded

Distributions: :func:`choice` (discrete values), :func:`uniform` and :func:`loguniform` (ranges;
give ``grid=`` points to use them in a grid search), and :func:`zipped` (fields whose values go
together, row by row, e.g. a learning rate scaled with the batch size). Points of separate
searches combine with :func:`product` (every pair) and :func:`zip_points` (row by row).

AlgoPerf's ``tuning_search_space.json`` (``{"name": {"min", "max", "scaling"}}`` or
``{"name": {"feasible_points": [...]}}``, or a list of fixed points) is read by
:func:`read_algoperf`, which maps AlgoPerf's names onto config fields (:data:`ALGOPERF_FIELDS`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from speechmusic_jax.errors import ConfigError
from speechmusic_jax.tuning import halton

SEARCHES = ("grid", "random", "halton")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values``; a unit number u picks ``values[floor(u * len)]``."""

    values: tuple

    def at(self, u: float) -> Any:
        return self.values[min(int(math.floor(u * len(self.values))), len(self.values) - 1)]

    def grid(self) -> list:
        return list(self.values)

    def describe(self) -> str:
        return "choice(" + ", ".join(_fmt(v) for v in self.values) + ")"


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A number uniform in [low, high]; ``grid`` evenly spaced values for a grid search."""

    low: float
    high: float
    grid_points: int = 0

    def at(self, u: float) -> float:
        return float(self.low + u * (self.high - self.low))

    def grid(self) -> list:
        return [float(v) for v in np.linspace(self.low, self.high, self.grid_points)]

    def describe(self) -> str:
        return f"uniform({_fmt(self.low)}, {_fmt(self.high)})"


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A positive number whose logarithm is uniform in [log low, log high]; ``grid`` values
    evenly spaced on a log scale for a grid search."""

    low: float
    high: float
    grid_points: int = 0

    def at(self, u: float) -> float:
        return float(self.low * math.exp(u * math.log(self.high / self.low)))

    def grid(self) -> list:
        return [float(v) for v in np.geomspace(self.low, self.high, self.grid_points)]

    def describe(self) -> str:
        return f"loguniform({_fmt(self.low)}, {_fmt(self.high)})"


@dataclasses.dataclass(frozen=True)
class Zipped:
    """Several fields set together from one row of ``rows`` (a choice over rows)."""

    fields: tuple[str, ...]
    rows: tuple[tuple, ...]

    def at(self, u: float) -> dict:
        return dict(zip(self.fields, Choice(self.rows).at(u), strict=True))

    def grid(self) -> list:
        return [dict(zip(self.fields, row, strict=True)) for row in self.rows]

    def describe(self) -> str:
        return f"zipped({', '.join(self.fields)}: {len(self.rows)} rows)"


Dist = Choice | Uniform | LogUniform | Zipped


def choice(*values: Any) -> Choice:
    """``choice(1, 2, 3)`` or ``choice([1, 2, 3])``."""
    if len(values) == 1 and isinstance(values[0], list | tuple):
        values = tuple(values[0])
    if not values:
        raise ConfigError("choice: needs at least one value")
    return Choice(tuple(values))


def uniform(low: float, high: float, grid: int = 0) -> Uniform:
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ConfigError(f"uniform: need finite low <= high (got {low}, {high})")
    return Uniform(float(low), float(high), int(grid))


def loguniform(low: float, high: float, grid: int = 0) -> LogUniform:
    if not (0 < low <= high and math.isfinite(high)):
        raise ConfigError(f"loguniform: need 0 < low <= high (got {low}, {high})")
    return LogUniform(float(low), float(high), int(grid))


def zipped(**columns: Sequence) -> Zipped:
    """Fields whose values go together: ``zipped(**{"train.batch_size": [32, 64],
    "optimizer.learning_rate": [1e-3, 2e-3]})`` is a choice of (32, 1e-3) or (64, 2e-3)."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError(f"zipped: every field needs the same, non-zero number of values "
                          f"(got { {k: len(v) for k, v in columns.items()} })")
    return Zipped(tuple(columns), tuple(zip(*columns.values(), strict=True)))


def sample(axes: Mapping[str, Dist], search: str, n: int, seed: int = 0) -> list[dict]:
    """Points of the space ``axes``: the grid, or ``n`` random or Halton points (seeded).

    Unit numbers are drawn per axis in the order of ``axes``, so two spaces that start with the
    same axes get the same values on them (common random numbers: every arm of a sweep sees the
    same learning-rate quantiles). A space with no axes has one point, ``{}``.
    """
    if search not in SEARCHES:
        raise ConfigError(f"search: unknown {search!r}; known: {list(SEARCHES)}")
    if not axes:
        return [{}]
    names = list(axes)
    if search == "grid":
        for name in names:
            if isinstance(axes[name], Uniform | LogUniform) and axes[name].grid_points < 1:
                raise ConfigError(f"{name}: a range in a grid search needs grid=N points "
                                  f"({axes[name].describe()})")
        return [_merge(names, combo) for combo in itertools.product(
            *[axes[name].grid() for name in names])]
    if n < 1:
        raise ConfigError(f"budget: a {search} search needs at least one point (got {n})")
    units = (halton.sequence(n, len(names), seed) if search == "halton" else
             np.random.default_rng([seed, 0x5EA2C4]).random((n, len(names))))
    return [_merge(names, [axes[name].at(u) for name, u in zip(names, row, strict=True)])
            for row in units]


def _merge(names: Sequence[str], values: Sequence[Any]) -> dict:
    point: dict = {}
    for name, value in zip(names, values, strict=True):
        if isinstance(value, dict):  # a zipped axis sets several fields
            point.update(value)
        else:
            point[name] = value
    return point


def product(*point_lists: Sequence[Mapping]) -> list[dict]:
    """Every combination of one point from each list, merged (fields must not overlap)."""
    out = []
    for combo in itertools.product(*point_lists):
        merged: dict = {}
        for point in combo:
            overlap = set(merged) & set(point)
            if overlap:
                raise ConfigError(f"product: the same field in two searches: {sorted(overlap)}")
            merged.update(point)
        out.append(merged)
    return out


def zip_points(*point_lists: Sequence[Mapping]) -> list[dict]:
    """The i-th points of every list merged, for each i (the lists must have equal length)."""
    if len({len(p) for p in point_lists}) > 1:
        raise ConfigError(f"zip: the searches have different lengths "
                          f"{[len(p) for p in point_lists]}")
    out = []
    for row in zip(*point_lists, strict=True):
        merged: dict = {}
        for point in row:
            merged.update(point)
        out.append(merged)
    return out


def describe(axes: Mapping[str, Dist]) -> str:
    return ", ".join(f"{name} ~ {dist.describe()}" for name, dist in axes.items()) or "(none)"


# ---- fields: setting values on a config --------------------------------------------------------

# Fields a space may name that are not config fields but set one: name -> (meaning, setter).
DERIVED: dict[str, tuple[str, Callable[[Any, Any], None]]] = {
    "optimizer.warmup_fraction": (
        "warm-up as a fraction of the run (sets optimizer.warmup_epochs = value * train.epochs; "
        "AlgoPerf's warmup_factor)",
        lambda cfg, v: _set(cfg, "optimizer.warmup_epochs", float(v) * cfg.train.epochs)),
}
# Never tuned: the seed is the repeat axis of a sweep, and the name is the sweep's.
NOT_TUNABLE = {"seed": "seeds are a repeat axis (Sweep.seeds), never tuned",
               "name": "the sweep names its trials"}


def check_fields(cfg: Any, fields: Sequence[str], where: str) -> None:
    """Raise ConfigError naming any field of ``fields`` that ``cfg`` does not have."""
    for field in fields:
        if field in NOT_TUNABLE:
            raise ConfigError(f"{where}: {field!r} cannot be swept: {NOT_TUNABLE[field]}")
        if field in DERIVED:
            continue
        try:
            _get(cfg, field)
        except (KeyError, AttributeError):
            raise ConfigError(f"{where}: {field!r} is not a config field (see "
                              "speechmusic_jax/config.py)") from None


def apply(cfg: Any, values: Mapping[str, Any]) -> Any:
    """``cfg`` (a copy) with ``values`` set: plain fields first, then derived ones (which may
    read the others)."""
    cfg = copy.deepcopy(cfg)
    for field, value in values.items():
        if field not in DERIVED:
            _set(cfg, field, value)
    for field, value in values.items():
        if field in DERIVED:
            DERIVED[field][1](cfg, value)
    return cfg


def _get(cfg: Any, field: str) -> Any:
    node = cfg
    for part in field.split("."):
        node = node[part]
    return node


def _set(cfg: Any, field: str, value: Any) -> None:
    *parents, leaf = field.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    current = node[leaf]
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        node[leaf] = value
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{field}: cannot set {value!r} ({e})") from None


# ---- AlgoPerf's tuning_search_space.json -------------------------------------------------------

# AlgoPerf hyperparameter name -> our config field.
ALGOPERF_FIELDS = {
    "learning_rate": "optimizer.learning_rate",
    "weight_decay": "optimizer.weight_decay",
    "dropout_rate": "model.dropout",
    "label_smoothing": "train.label_smoothing",
    "warmup_factor": "optimizer.warmup_fraction",
    "grad_clip": "train.grad_clip_norm",
    "batch_size": "train.batch_size",
}
# AlgoPerf names for settings our optimizers hold fixed: accepted when every value given equals
# ours (Adam's b1 0.9, b2 0.999; optax's eps 1e-8), refused otherwise.
ALGOPERF_FIXED = {"beta1": 0.9, "one_minus_beta1": 0.1, "beta2": 0.999, "epsilon": 1e-8}


def read_algoperf(source: str | os.PathLike | Mapping | Sequence, *,
                  ignore: Sequence[str] = ()) -> dict[str, Dist] | list[dict]:
    """AlgoPerf's ``tuning_search_space.json`` (a path, or the parsed JSON) as our axes, or, for
    its list form (fixed points), as a list of points.

    Names are mapped with :data:`ALGOPERF_FIELDS`; a dotted name is taken as a config field
    as it is. ``ignore`` drops names on purpose. A name we cannot set raises ConfigError.
    """
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, encoding="utf-8") as f:
                spec = json.load(f)
        except OSError as e:
            raise ConfigError(f"search space {os.fspath(source)}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"search space {os.fspath(source)}: not JSON ({e})") from None
    else:
        spec = source
    if isinstance(spec, Mapping):
        axes: dict[str, Dist] = {}
        for name, entry in spec.items():
            field = _algoperf_field(name, entry, ignore)
            if field is not None:
                axes[field] = _algoperf_dist(name, entry)
        return axes
    if isinstance(spec, Sequence) and spec and all(isinstance(p, Mapping) for p in spec):
        points = []
        for point in spec:
            mapped = {}
            for name, value in point.items():
                field = _algoperf_field(name, {"feasible_points": [value]}, ignore)
                if field is not None:
                    mapped[field] = value
            points.append(mapped)
        return points
    raise ConfigError("search space: expected a JSON object of hyperparameters or a non-empty "
                      "list of points (AlgoPerf's tuning_search_space.json)")


def _algoperf_field(name: str, entry: Any, ignore: Sequence[str]) -> str | None:
    if name in ignore:
        return None
    if "." in name:
        return name
    if name in ALGOPERF_FIELDS:
        return ALGOPERF_FIELDS[name]
    if name in ALGOPERF_FIXED:
        values = entry.get("feasible_points") if isinstance(entry, Mapping) else None
        if values is not None and all(math.isclose(float(v), ALGOPERF_FIXED[name])
                                      for v in values):
            return None  # what our optimizers use anyway
        raise ConfigError(
            f"search space: {name!r} cannot be set here: the optimizers' betas and epsilon are "
            f"fixed (Adam b1 0.9, b2 0.999, eps 1e-8); pass ignore=[{name!r}] to drop it")
    raise ConfigError(f"search space: unknown hyperparameter {name!r}; known: "
                      f"{sorted(ALGOPERF_FIELDS)} or a dotted config field")


def _algoperf_dist(name: str, entry: Any) -> Dist:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"search space: {name}: expected an object, got {entry!r}")
    if "feasible_points" in entry:
        return choice(list(entry["feasible_points"]))
    try:
        low, high, scaling = float(entry["min"]), float(entry["max"]), entry.get("scaling",
                                                                                   "linear")
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"search space: {name}: needs feasible_points, or min and max "
                          f"(got {dict(entry)})") from None
    if scaling == "log":
        return loguniform(low, high)
    if scaling == "linear":
        return uniform(low, high)
    raise ConfigError(f"search space: {name}: scaling must be 'log' or 'linear' "
                      f"(got {scaling!r})")


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def short(v: Any) -> str:
    """A field's value in a trial's or arm's name: floats to 3 significant digits, tuples
    joined with 'x' (``32x64x64``)."""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list | tuple):
        return "x".join(str(x) for x in v)
    return str(v)
