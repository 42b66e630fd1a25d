"""evaluate's breakdown: accuracy per value of a column, from hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest

from speechmusic_jax.data.sources import AudioFile
from speechmusic_jax.training import breakdown
from speechmusic_jax.training.clip_scoring import Predictions

NAMES = ("speech", "music")
RIGHT = {0: [2.0, 0.0], 1: [0.0, 2.0]}  # logits whose argmax is the class


def _predictions(files, clip_right, window_right):
    """Predictions of ``files``: clip i right or wrong; window_right[i] lists its windows."""
    def logits(label, right):
        return RIGHT[label if right else 1 - label]

    clips = [logits(f.label, r) for f, r in zip(files, clip_right, strict=True)]
    windows, owner = [], []
    for i, (f, rights) in enumerate(zip(files, window_right, strict=True)):
        windows += [logits(f.label, r) for r in rights]
        owner += [i] * len(rights)
    owner = np.asarray(owner, dtype=np.int32)
    return Predictions(list(files), np.asarray(clips), np.asarray(windows),
                       np.asarray([files[i].label for i in owner], dtype=np.int32), owner)


def _file(i, label, group, **meta):
    return AudioFile(f"/d/{i}.wav", label, group, meta=tuple(meta.items()))


FILES = [_file(0, 0, "g1", pkg="A"), _file(1, 1, "g1", pkg="A"), _file(2, 0, "g2", pkg="B"),
         _file(3, 1, "g2", pkg="B"), _file(4, 1, "g3", pkg="")]
PRED = _predictions(FILES, [True, False, True, True, False],
                    [[True, True], [True, False], [True], [True, True, False], [False]])


def test_breakdown_counts_clips_and_windows_per_value_worst_first():
    rows = breakdown.breakdown(PRED, breakdown.column_values(FILES, "pkg"), NAMES)
    assert rows == [
        {"value": "(empty)", "n": 1, "n_per_class": {"speech": 0, "music": 1},
         "correct_per_class": {"speech": 0, "music": 0}, "accuracy": 0.0,
         "n_windows": 1, "window_accuracy": 0.0},
        {"value": "A", "n": 2, "n_per_class": {"speech": 1, "music": 1},
         "correct_per_class": {"speech": 1, "music": 0}, "accuracy": 0.5,
         "n_windows": 4, "window_accuracy": 0.75},
        {"value": "B", "n": 2, "n_per_class": {"speech": 1, "music": 1},
         "correct_per_class": {"speech": 1, "music": 1}, "accuracy": 1.0,
         "n_windows": 4, "window_accuracy": 0.75},
    ]
    by_group = breakdown.by_columns(PRED, ["group"], NAMES)["group"]
    assert [(r["value"], r["n"], r["accuracy"], r["n_windows"]) for r in by_group] == [
        ("g3", 1, 0.0, 1), ("g1", 2, 0.5, 4), ("g2", 2, 1.0, 4)]


def test_format_breakdown():
    rows = breakdown.breakdown(PRED, breakdown.column_values(FILES, "pkg"), NAMES)
    assert breakdown.format_breakdown("pkg", rows, NAMES).splitlines() == [
        "== by pkg (3 values, worst first; per class: right/clips) ==",
        "value    clips  speech  music  clip acc  windows  window acc",
        "(empty)      1     0/0    0/1    0.0000        1      0.0000",
        "A            2     1/1    0/1    0.5000        4      0.7500",
        "B            2     1/1    1/1    1.0000        4      0.7500",
    ]


# Eight files: two packages, four groups of two, and columns no default breakdown shows.
EIGHT = [_file(i, i % 2, f"g{i // 2}", pkg="AB"[i // 4], snr_db=str(i), id=f"x{i}",
               corpus="same") for i in range(8)]


def test_default_columns_are_those_with_a_few_sizeable_values():
    assert breakdown.available_columns(EIGHT) == ["group", "pkg", "snr_db", "id", "corpus"]
    assert breakdown.default_columns(EIGHT) == ["group", "pkg"]
    assert breakdown.other_columns(EIGHT, ["group", "pkg"]) == ["snr_db"]
    # A folder source: each file its own group, nothing to break down by.
    alone = [AudioFile(f"/d/{i}.wav", i % 2, f"{i}.wav") for i in range(8)]
    assert breakdown.default_columns(alone) == []
    assert breakdown.other_columns(alone, []) == []


def test_columns_asked_for_are_checked():
    assert breakdown.resolve_columns(None, EIGHT) == ["group", "pkg"]
    assert breakdown.resolve_columns(["SNR_dB", "pkg", "pkg"], EIGHT) == ["snr_db", "pkg"]
    assert breakdown.resolve_columns([], EIGHT) == []
    with pytest.raises(breakdown.UnknownColumn,
                       match=r"no column 'speaker' in m.csv; available: group, pkg, snr_db, id, "
                             r"corpus"):
        breakdown.resolve_columns(["speaker", "pkg"], EIGHT, where="m.csv")


def test_a_numeric_column_with_many_values_is_cut_into_quantile_bins():
    values = [str(v) for v in (0, 1, 2, 3, 4, 5, 6, 7.5)] + [""]
    labels, ranges = breakdown.bin_values(values)
    assert labels == ["0..1", "0..1", "2..3", "2..3", "4..5", "4..5", "6..7.5", "6..7.5", ""]
    assert ranges == {"0..1": (0.0, 1.0), "2..3": (2.0, 3.0), "4..5": (4.0, 5.0),
                      "6..7.5": (6.0, 7.5)}
    assert breakdown.bin_values(["1", "two", "3"]) is None

    pred = _predictions(EIGHT, [i != 7 for i in range(8)], [[True]] * 7 + [[False, True]])
    rows = breakdown.by_columns(pred, ["snr_db"], NAMES, explicit=True)["snr_db"]
    assert [(r["value"], r["n"], r["accuracy"], r["n_windows"], round(r["window_accuracy"], 6),
             r["range"]) for r in rows] == [
        ("6..7", 2, 0.5, 3, 0.666667, [6.0, 7.0]), ("0..1", 2, 1.0, 2, 1.0, [0.0, 1.0]),
        ("2..3", 2, 1.0, 2, 1.0, [2.0, 3.0]), ("4..5", 2, 1.0, 2, 1.0, [4.0, 5.0])]
    # Not binned when shown by default, nor a column that is not numeric.
    assert len(breakdown.by_columns(pred, ["snr_db"], NAMES)["snr_db"]) == 8
    assert len(breakdown.by_columns(pred, ["id"], NAMES, explicit=True)["id"]) == 8


def test_values_must_match_the_files():
    with pytest.raises(ValueError, match="4 values for 5 files"):
        breakdown.breakdown(PRED, ["a"] * 4, NAMES)
