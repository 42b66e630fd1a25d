"""Runs and cross-validations grouped by what they train: each score's mean and spread over seeds.

Two records belong to one configuration when their configs differ only in ``seed`` and
``init_seed`` (and fields that do not change what is trained, ``config.RUNTIME_FIELDS``); a
cross-validation's corpus and folds (``data.spec``, ``data.folds``, ``data.fold``) are what it
measures, not what it trains, so it joins the configuration of the runs it matches otherwise.
A configuration is named by the fields where it differs from a reference config (the report's
first run). Used by ``report`` for its "By configuration" table and figure, e.g. a front-end
study: three seeds of each front end, scored on real recordings and by grouped CV.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import textwrap
from collections.abc import Sequence
from typing import Any

from speechmusic_jax import config as config_lib

IGNORED = frozenset({"seed", "init_seed"})
CROSSVAL_FIELDS = ("data.spec", "data.folds", "data.fold")


@dataclasses.dataclass(frozen=True)
class Record:
    """One run or one cross-validation: where it is, its config.json, and its scores."""
    folder: str
    config: dict
    scores: dict[str, float]  # measure (a column of the table) -> score
    crossval: bool = False


@dataclasses.dataclass
class Group:
    fields: tuple[tuple[str, Any], ...]  # (field, value) where it differs from the reference
    records: list[Record]

    def label(self, reference: str) -> str:
        if not self.fields:
            return f"as `{reference}`"
        return ", ".join(f"`{field}={_show(value)}`" for field, value in self.fields)

    def short(self) -> str:
        return "/".join(_show(value) for _, value in self.fields) or "reference"

    def seeds(self) -> list[int]:
        return sorted({int(r.config.get("seed", 0)) for r in self.records})

    def values(self, measure: str) -> list[float]:
        return [r.scores[measure] for r in self.records if measure in r.scores]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _get(config: dict, field: str) -> Any:
    node: Any = config
    for part in field.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _set(config: dict, field: str, value: Any) -> None:
    node, leaf = config_lib.field_parent(config, field)
    node[leaf] = value


def differences(reference: dict, config: dict, *, crossval: bool = False
                ) -> tuple[tuple[str, Any], ...]:
    """(field, value) of every field where ``config`` trains something other than
    ``reference``, seeds aside (for a cross-validation, its corpus and folds aside too)."""
    config = config_lib.with_added_fields(config)  # a field added since: the value it ran with
    if crossval:
        for field in CROSSVAL_FIELDS:
            _set(config, field, _get(reference, field))
    return tuple((field, _get(config, field))
                 for field in config_lib.training_diff(reference, config)
                 if field not in IGNORED)


def group(records: Sequence[Record], reference: dict) -> list[Group]:
    """The records by configuration, in order of first appearance."""
    groups: dict[str, Group] = {}
    for record in records:
        fields = differences(reference, record.config, crossval=record.crossval)
        key = json.dumps(fields, sort_keys=True, default=str)
        groups.setdefault(key, Group(fields, [])).records.append(record)
    return list(groups.values())


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(values: Sequence[float]) -> str:
    """``mean ± std (n)``, or ``-`` for none."""
    if not values:
        return "-"
    mean, std = mean_std(values)
    spread = "" if std is None else f" ± {std:.3f}"
    return f"{mean:.3f}{spread} ({len(values)})"


def table(groups: Sequence[Group], measures: Sequence[tuple[str, str]], reference: str
          ) -> list[str]:
    """One row per configuration: its seeds, then each measure's mean ± std (n) over them.
    ``measures``: (key in Record.scores, column header)."""
    header = ["configuration", "seeds", *[title for _, title in measures]]
    rows = [[g.label(reference), ", ".join(map(str, g.seeds())),
             *[cell(g.values(key)) for key, _ in measures]] for g in groups]
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def figure_png(groups: Sequence[Group], measures: Sequence[tuple[str, str]]) -> bytes:
    """One panel per measure: each configuration's seeds as dots and their mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(key, title) for key, title in measures if any(g.values(key) for g in groups)]
    fig, axes = plt.subplots(1, len(shown), figsize=(1.6 + (0.9 + 0.5 * len(groups)) * len(shown),
                                                     4.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], shown, strict=True):
        for x, g in enumerate(groups):
            values = g.values(key)
            if not values:
                continue
            ax.scatter([x] * len(values), values, s=18, color="tab:blue", zorder=3)
            ax.hlines(mean_std(values)[0], x - 0.3, x + 0.3, color="black", lw=2, zorder=2)
        ax.set_xticks(range(len(groups)), [g.short() for g in groups], rotation=30,
                      ha="right", fontsize=8)
        ax.set_title(textwrap.fill(title.replace('`', ''), 26), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (dots: seeds; bar: mean)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": SOFTWARE})
    plt.close(fig)
    return buf.getvalue()


SOFTWARE = "speechmusic_jax.report"


def is_our_png(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a figure :func:`figure_png` drew (its PNG text names this program)."""
    with open(path, "rb") as f:
        data = f.read(4096)
    return data.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00" + SOFTWARE.encode() in data
