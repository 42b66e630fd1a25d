"""A sweep: a base config, arms to compare, a search space, a tuning budget, seeds, a target.

    Sweep(name="optimizers", base=cfg,
          arms={"sgd": {"optimizer.name": "momentum"}, "adamw": {"optimizer.name": "adamw"}},
          space={"optimizer.learning_rate": loguniform(1e-4, 1e-1)},      # every arm
          arm_space={"adamw": {"optimizer.weight_decay": loguniform(1e-5, 1e-2)}},
          search="halton", budget=8, seeds=(0, 1, 2), target=("val_accuracy", 0.9))

The trials are every workload x seed x arm x point, numbered in that order (``trials()``): each
arm gets ``budget`` points of the same search over its space (its own fixed fields, the shared
axes first, then its own), and every point runs once per seed. Seeds are a repeat axis, never
tuned: a seed fixes the split, the initial weights, the batches and the dropout keys (the
weights and dropout keys unless the base sets ``init_seed``), so the arms of one seed start from
the same weights and see the same batches (a paired design).

A sweep file ``experiments/sweeps/NAME.py`` defines ``get_sweep(arg=None) -> Sweep``; its
``:tiny`` variant is what the tests run.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax.config import import_file
from speechmusic_jax.errors import ConfigError
from speechmusic_jax.tuning import space as space_lib
from speechmusic_jax.tuning.analysis import lower_is_better

MODES = ("auto", "alone", "grouped", "grouped_map")
_NAME = re.compile(r"[\w.\-=,+]+")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training run of a sweep."""

    index: int
    workload: str
    arm: str
    seed: int
    point_index: int  # which of the arm's points (0 .. budget-1)
    point: dict  # the tuned values of this trial (field -> value)
    fixed: dict  # the workload's and arm's fixed fields

    @property
    def label(self) -> str:
        values = ", ".join(f"{k.split('.')[-1]}={space_lib.short(v)}"
                           for k, v in self.point.items())
        where = f"{self.workload}/" if self.workload else ""
        return f"{where}{self.arm} seed {self.seed}" + (f" [{values}]" if values else "")

    def record(self) -> dict:
        """What sweep.json keeps of the trial (plain JSON)."""
        return {"trial": self.index, "workload": self.workload, "arm": self.arm,
                "seed": self.seed, "point_index": self.point_index,
                "point": _jsonable(self.point), "fixed": _jsonable(self.fixed)}


@dataclasses.dataclass
class Sweep:
    name: str
    base: Any  # a ConfigDict: every trial starts from it
    arms: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=lambda: {"base": {}})
    space: Mapping[str, space_lib.Dist] = dataclasses.field(default_factory=dict)
    arm_space: Mapping[str, Mapping[str, space_lib.Dist]] = dataclasses.field(
        default_factory=dict)
    search: str = "halton"
    budget: int = 1  # points per arm (a grid search: the grid's size)
    seeds: Sequence[int] = (0,)
    # (validation metric, value) for time-to-target; a base config that sets its own
    # (train.target_metric, train.target_value, e.g. by --set) overrides it. Trials stop at it
    # with train.stop_at_target, and spend at most train.max_seconds of training (their time
    # to target is then infinity), as the base config says.
    target: tuple[str, float] | None = None
    # Workloads (e.g. presets x data sources), each a set of fixed fields; none: the base alone.
    workloads: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    points: Sequence[Mapping[str, Any]] | None = None  # explicit points for every arm
    search_seed: int = 0
    mode: str = "auto"  # alone (fit per trial), grouped (vmapped), grouped_map (lax.map), auto
    select: str = "val_accuracy"  # the validation metric that picks an arm's best trial
    description: str = ""
    # The arm every other is compared with; None: the arm with the best mean validation score.
    # Analysis only: changing it never refuses a sweep folder.
    reference: str | None = None
    note: str = ""  # what the sweep is for (default: the base config's note, e.g. a smoke test)
    left_out: Sequence[str] = ()  # one line per arm left out because it cannot run the workload

    @property
    def notice(self) -> str:
        """The sweep's note, else its base config's (``:tiny`` bases say they are smoke tests)."""
        return self.note or str(self.base.get("note", "") or "")

    def arm_axes(self, arm: str) -> dict[str, space_lib.Dist]:
        """The arm's search space: the shared axes, then its own."""
        return {**self.space, **self.arm_space.get(arm, {})}

    def arm_points(self, arm: str) -> list[dict]:
        if self.points is not None:
            return [dict(p) for p in self.points]
        return space_lib.sample(self.arm_axes(arm), self.search, self.budget, self.search_seed)

    def swept_fields(self) -> list[str]:
        """Every field a trial may set, in a stable order: workload and arm fields, then tuned."""
        fields: list[str] = []
        for group in (*self.workloads.values(), *self.arms.values()):
            fields += [f for f in group if f not in fields]
        for arm in self.arms:
            for point in self.arm_points(arm):
                fields += [f for f in point if f not in fields]
        return fields

    def _sync_target(self) -> None:
        """The base config's own target, where it sets one, is the sweep's."""
        own = config_lib.target(self.base)
        if own is not None:
            self.target = own

    def validate(self) -> None:
        """Raise ConfigError for a sweep that is malformed or unfair (unequal budgets)."""
        where = f"sweep {self.name!r}"
        self._sync_target()
        if self.base.train.stop_at_target and self.target is None:
            raise ConfigError(f"{where}: train.stop_at_target needs a target: the sweep's "
                              "target=(metric, value), or train.target_value")
        if not _NAME.fullmatch(self.name or ""):
            raise ConfigError(f"{where}: name: use letters, digits, '.', '-', '_'")
        if not self.arms:
            raise ConfigError(f"{where}: needs at least one arm")
        for kind, names in (("arm", self.arms), ("workload", self.workloads)):
            for name in names:
                if not _NAME.fullmatch(name):
                    raise ConfigError(f"{where}: {kind} name {name!r}: use letters, digits and "
                                      "'.-_=,+'")
        if self.reference is not None and self.reference not in self.arms:
            raise ConfigError(f"{where}: reference: no arm {self.reference!r} (arms: "
                              f"{list(self.arms)})")
        unknown = set(self.arm_space) - set(self.arms)
        if unknown:
            raise ConfigError(f"{where}: arm_space names arms that do not exist: "
                              f"{sorted(unknown)}")
        if self.search not in space_lib.SEARCHES:
            raise ConfigError(f"{where}: search: unknown {self.search!r}; known: "
                              f"{list(space_lib.SEARCHES)}")
        if self.mode not in MODES:
            raise ConfigError(f"{where}: mode: unknown {self.mode!r}; known: {list(MODES)}")
        seeds = list(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(
                isinstance(s, int) and s >= 0 for s in seeds):
            raise ConfigError(f"{where}: seeds: need distinct non-negative integers "
                              f"(got {seeds})")
        if self.select not in config_lib.MONITORS:
            raise ConfigError(f"{where}: select: must be one of {list(config_lib.MONITORS)}")
        if self.target is not None:
            metric, value = self.target
            if metric not in config_lib.MONITORS or not isinstance(value, int | float):
                raise ConfigError(f"{where}: target: (metric, value) with metric one of "
                                  f"{list(config_lib.MONITORS)} (got {self.target!r})")
        sizes = {}
        for arm, fixed in self.arms.items():
            space_lib.check_fields(self.base, list(fixed), f"{where}, arm {arm!r}")
            axes = self.arm_axes(arm)
            overlap = set(axes) & set(fixed)
            if overlap:
                raise ConfigError(f"{where}, arm {arm!r}: {sorted(overlap)} both fixed and "
                                  "tuned")
            points = self.arm_points(arm)
            for point in points:
                space_lib.check_fields(self.base, list(point), f"{where}, arm {arm!r}")
            sizes[arm] = len(points)
        for name, fixed in self.workloads.items():
            space_lib.check_fields(self.base, list(fixed), f"{where}, workload {name!r}")
        if len(set(sizes.values())) > 1:
            raise ConfigError(f"{where}: the arms have different tuning budgets {sizes}; a fair "
                              "comparison gives every arm the same number of trials")
        if self.search != "grid" and self.points is None and self.budget < 1:
            raise ConfigError(f"{where}: budget must be at least 1")

    def trials(self) -> list[Trial]:
        """Every trial, numbered: workload, then seed, then arm, then point."""
        self.validate()
        out = []
        points = {arm: self.arm_points(arm) for arm in self.arms}
        for workload in (self.workloads or {"": {}}):
            for seed in self.seeds:
                for arm in self.arms:
                    fixed = {**(self.workloads or {}).get(workload, {}), **self.arms[arm]}
                    for i, point in enumerate(points[arm]):
                        out.append(Trial(len(out), workload, arm, int(seed), i, dict(point),
                                         dict(fixed)))
        return out

    def trial_config(self, trial: Trial) -> Any:
        """The trial's config: the base, its fixed fields, its point, its seed; validated."""
        cfg = space_lib.apply(self.base, {**trial.fixed, **trial.point})
        cfg.seed = trial.seed
        self._sync_target()
        if cfg.train.stop_at_target and self.target is not None:  # the trial stops at it
            cfg.train.target_metric, cfg.train.target_value = self.target[0], float(
                self.target[1])
        cfg.name = f"{self.name}_t{trial.index:03d}"
        try:
            config_lib.validate(cfg)
        except ConfigError as e:
            raise ConfigError(f"sweep {self.name!r}, trial {trial.index} ({trial.label}): "
                              f"{e}") from None
        return cfg

    def describe(self) -> str:
        lines = [f"note: {self.name}: {self.notice}"] if self.notice else []
        lines += [f"sweep {self.name}: {len(self.arms)} arm(s) x {len(list(self.seeds))} seed(s)"
                 + (f" x {len(self.workloads)} workloads" if self.workloads else "")
                 + f"; {self.search} search, budget {len(self.arm_points(next(iter(self.arms))))}"
                 f" per arm; seeds {list(self.seeds)}"]
        self._sync_target()
        if self.target:
            metric, value = self.target
            lines.append(f"target: {metric} {'<=' if lower_is_better(metric) else '>='} "
                         f"{value:g}")
        lines += [line for line in [clock_text(self.base)] if line]
        if self.reference is not None:
            lines.append(f"reference arm: {self.reference} (named)")
        for arm, fixed in self.arms.items():
            own = ", ".join(f"{k}={space_lib.short(v)}" for k, v in fixed.items())
            lines.append(f"  arm {arm}: {own or '(base)'}; tunes "
                         + (space_lib.describe(self.arm_axes(arm)) if self.points is None
                            else f"{len(self.points)} given points"))
        lines += list(self.left_out)
        return "\n".join(lines)

    def record(self) -> dict:
        """The sweep as plain JSON (sweep.json): enough to refuse a different sweep later."""
        return {"name": self.name, "search": self.search, "budget": self.budget,
                "seeds": list(self.seeds), "target": list(self.target) if self.target else None,
                "select": self.select, "search_seed": self.search_seed,
                "base": config_lib.to_dict(self.base),
                "trials": [t.record() for t in self.trials()]}


def clock_text(base: Any) -> str:
    """One line on how a sweep's trials are clocked (AlgoPerf's rules), or "" when by epoch,
    without stopping at the target and without a budget."""
    train = base.train
    parts = []
    if train.eval_every_steps:
        every = ("step" if train.eval_every_steps == 1
                 else f"{train.eval_every_steps} steps")
        parts.append(f"validation after every {every} and at each epoch's end")
    if train.stop_at_target:
        parts.append("each trial stops at the target")
    if train.max_seconds:
        parts.append(f"a budget of {train.max_seconds:g} s of training per trial (over it: "
                     "time to target infinity)")
    return ("clock: " + "; ".join(parts)) if parts else ""


def arm_grid(axes: Mapping[str, Sequence[Any]], *, zip_axes: bool = False
             ) -> dict[str, dict[str, Any]]:
    """Arms from fixed values: every combination of ``axes`` (field -> values), or with
    ``zip_axes`` the i-th values together; each named ``field=value,...`` (last name part)."""
    fields = list(axes)
    rows = (list(zip(*axes.values(), strict=True)) if zip_axes
            else list(itertools.product(*axes.values())))
    arms = {}
    for row in rows:
        name = ",".join(f"{f.split('.')[-1]}={space_lib.short(v)}" for f, v in zip(fields, row,
                                                                            strict=True))
        arms[name] = dict(zip(fields, row, strict=True))
    return arms


def load_sweep(path: str, arg: str | None = None) -> Sweep:
    """Import ``experiments/sweeps/NAME.py`` and return its ``get_sweep(arg)``."""
    if not os.path.isfile(path):
        raise ConfigError(f"--sweep: no sweep file {path}")
    try:
        module = import_file(path, "sweep")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--sweep: {path} failed to import: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"--sweep: {path} has no get_sweep(arg=None)")
    try:
        sweep = module.get_sweep(arg) if arg is not None else module.get_sweep()
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--sweep: {path}: {e}") from None
    if not isinstance(sweep, Sweep):
        raise ConfigError(f"--sweep: {path}: get_sweep returned {type(sweep).__name__}, "
                          "not a Sweep")
    return sweep


def parse_sweep_arg(value: str) -> tuple[str, str | None]:
    """``path.py[:ARG]`` -> (path, arg)."""
    path, sep, arg = value.partition(":")
    return path, (arg if sep else None)




def _jsonable(d: Mapping) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
