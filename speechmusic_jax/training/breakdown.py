"""Where a model fails: clip and window accuracy broken down by a column of the data source.

A column is ``group`` (every source has one: a manifest's ``group`` column, data.group_regex's
match, MUSAN's artist, else the file itself) or any other column of a manifest (an
:class:`~speechmusic_jax.data.sources.AudioFile`'s ``meta``). For each value of a column, one
row: the number of clips, right/total per class, clip accuracy, windows and window accuracy,
computed from a :class:`~speechmusic_jax.training.clip_scoring.Predictions` (no rescoring).
Rows come worst first.

Which columns by default (:func:`default_columns`): those that sort the files into a few
sizeable sets: at least 2 and at most :data:`MAX_VALUES` distinct values, and at least two files
per value on average (so an id, a file's own group, or a measurement such as ``snr_db`` that
differs on every file is left out). A numeric column asked for by name that fails that rule is
cut into :data:`QUANTILE_BINS` quantile bins, each labelled by the range of its values.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import numpy as np

from speechmusic_jax.data.sources import AudioFile
from speechmusic_jax.training.clip_scoring import Predictions

MAX_VALUES = 30  # most distinct values of a column broken down by default (or unbinned)
QUANTILE_BINS = 4  # bins of a numeric column with too many values to list one by one
GROUP = "group"
MISSING = "(empty)"  # the value shown for an empty cell


class UnknownColumn(ValueError):
    """A column asked for that the source does not have; the message lists those it has."""


def available_columns(files: Sequence[AudioFile]) -> list[str]:
    """``group``, then every manifest column the files carry, in the manifest's order."""
    names = dict.fromkeys(name for f in files for name, _ in f.meta)
    names.pop(GROUP, None)
    return [GROUP, *names]


def column_values(files: Sequence[AudioFile], column: str) -> list[str]:
    """Each file's value in ``column`` ("" where the file has none)."""
    if column == GROUP:
        return [f.group for f in files]
    return [dict(f.meta).get(column, "") for f in files]


def is_categorical(values: Sequence[str]) -> bool:
    """Whether ``values`` sort the files into a few sizeable sets (the module's rule)."""
    distinct = len(set(values))
    return 2 <= distinct <= MAX_VALUES and 2 * distinct <= len(values)


def default_columns(files: Sequence[AudioFile]) -> list[str]:
    """The columns a breakdown shows when none are named: see the module docstring."""
    return [c for c in available_columns(files) if is_categorical(column_values(files, c))]


def other_columns(files: Sequence[AudioFile], shown: Sequence[str]) -> list[str]:
    """Columns not in ``shown`` that a breakdown could still say something by: two values or
    more, and not one value per file unless numeric (then binned); not ids, not a file's own
    group."""
    out = []
    for column in available_columns(files):
        values = column_values(files, column)
        distinct = len(set(values))
        if column not in shown and distinct >= 2 and (
                distinct < len(values) or bin_values(values) is not None):
            out.append(column)
    return out


def resolve_columns(requested: Sequence[str] | None, files: Sequence[AudioFile],
                    where: str = "this source") -> list[str]:
    """``requested`` (None: the defaults) checked against the files' columns, spelled as the
    source spells them (matched ignoring case). Raises :class:`UnknownColumn`."""
    if requested is None:
        return default_columns(files)
    available = available_columns(files)
    by_lower = {c.lower(): c for c in available}
    out, unknown = [], []
    for name in requested:
        found = name if name in available else by_lower.get(name.strip().lower())
        if found is None:
            unknown.append(name)
        elif found not in out:
            out.append(found)
    if unknown:
        raise UnknownColumn(f"no column {', '.join(map(repr, unknown))} in {where}; "
                            f"available: {', '.join(available)}")
    return out


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _format_number(x: float) -> str:
    return f"{x:.6g}"


def bin_values(values: Sequence[str], bins: int = QUANTILE_BINS
               ) -> tuple[list[str], dict[str, tuple[float, float]]] | None:
    """Quantile bins of a numeric column: (each value's bin label, bin label -> (low, high)),
    or None when a non-empty value is not a finite number. A label is the range of the values
    in its bin, ``low..high``; empty cells keep their own value."""
    numbers = {v: _number(v) for v in set(values) if v != ""}
    if not numbers or any(x is None for x in numbers.values()):
        return None
    x = np.asarray([numbers[v] for v in values if v != ""], dtype=np.float64)
    inner = np.unique(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    members: dict[int, list[float]] = collections.defaultdict(list)
    for v in set(numbers.values()):
        members[int(np.searchsorted(inner, v, side="left"))].append(v)
    label_of, ranges = {}, {}
    for b in sorted(members):
        low, high = min(members[b]), max(members[b])
        label = _format_number(low) if low == high else \
            f"{_format_number(low)}..{_format_number(high)}"
        ranges[label] = (low, high)
        for v in members[b]:
            label_of[v] = label
    return [label_of[numbers[v]] if v != "" else v for v in values], ranges


def breakdown(pred: Predictions, values: Sequence[str], class_names: Sequence[str],
              ranges: dict[str, tuple[float, float]] | None = None) -> list[dict]:
    """One row per distinct value of ``values`` (one per file of ``pred``), worst clip accuracy
    first (ties: more clips first, then by value): ``value``, ``n`` (clips), ``n_per_class``
    and ``correct_per_class`` ({class: count}), ``accuracy`` (clip level), ``n_windows``,
    ``window_accuracy``; and ``range`` [low, high] where ``ranges`` gives the value's."""
    if len(values) != len(pred.files):
        raise ValueError(f"{len(values)} values for {len(pred.files)} files")
    labels = pred.labels
    clip_right = np.argmax(pred.clip_logits, axis=1) == labels
    window_right = np.argmax(pred.window_logits, axis=1) == pred.window_labels
    keys = np.asarray([v if v != "" else MISSING for v in values], dtype=object)
    rows = []
    for value in sorted(set(keys.tolist())):
        mine = keys == value
        windows = mine[pred.window_clip]
        row = {
            "value": value,
            "n": int(mine.sum()),
            "n_per_class": {c: int((mine & (labels == k)).sum())
                            for k, c in enumerate(class_names)},
            "correct_per_class": {c: int((mine & clip_right & (labels == k)).sum())
                                  for k, c in enumerate(class_names)},
            "accuracy": float(clip_right[mine].mean()),
            "n_windows": int(windows.sum()),
            "window_accuracy": float(window_right[windows].mean()) if windows.any() else None,
        }
        if ranges and value in ranges:
            row["range"] = list(ranges[value])
        rows.append(row)
    rows.sort(key=lambda r: (r["accuracy"], -r["n"], r["value"]))
    return rows


def by_columns(pred: Predictions, columns: Sequence[str], class_names: Sequence[str],
               explicit: bool = False) -> dict[str, list[dict]]:
    """The breakdown of ``pred`` by each of ``columns``: {column: rows}. With ``explicit``
    (the columns were named by the user), a numeric column with too many values to list is
    cut into quantile bins."""
    out = {}
    for column in columns:
        values = column_values(pred.files, column)
        ranges = None
        if explicit and not is_categorical(values):
            binned = bin_values(values)
            if binned is not None and len(set(values)) > QUANTILE_BINS:
                values, ranges = binned
        out[column] = breakdown(pred, values, class_names, ranges)
    return out


def format_breakdown(column: str, rows: Sequence[dict], class_names: Sequence[str]) -> str:
    """A text table of :func:`breakdown`'s rows for ``column``."""
    names = [str(c) for c in class_names]
    header = ["value", "clips", *names, "clip acc", "windows", "window acc"]
    body = []
    for r in rows:
        window = r["window_accuracy"]
        body.append([str(r["value"]), str(r["n"]),
                     *(f"{r['correct_per_class'][c]}/{r['n_per_class'][c]}" for c in names),
                     f"{r['accuracy']:.4f}", str(r["n_windows"]),
                     "n/a" if window is None else f"{window:.4f}"])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]),
                          *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    title = (f"== by {column} ({len(rows)} value{'s' if len(rows) != 1 else ''}, worst first; "
             f"per class: right/clips) ==")
    return "\n".join([title, line(header), *(line(cells) for cells in body)])
