"""Tests for speechmusic_jax.training.metrics (host-side numpy metrics)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from speechmusic_jax.training.metrics import (
    classification_report,
    confusion_matrix,
    format_report,
    roc_auc,
    wilson_interval,
)

NAMES2 = ["speech", "music"]


def _onehot_probs(pred: list[int], num_classes: int) -> np.ndarray:
    """Probabilities whose argmax is ``pred`` (0.8 on the chosen class)."""
    p = np.full((len(pred), num_classes), 0.2 / max(num_classes - 1, 1))
    p[np.arange(len(pred)), pred] = 0.8
    return p


def _brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    total = 0.0
    for a, b in itertools.product(pos, neg):
        total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(pos) * len(neg))


# --------------------------------------------------------------------------- confusion_matrix


def test_confusion_matrix_hand_computed() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(labels, pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [1, 0, 0]])
    assert cm.dtype == np.int64
    assert cm.sum() == labels.size


def test_confusion_matrix_unused_classes_and_empty() -> None:
    cm = confusion_matrix(np.array([1, 1]), np.array([1, 3]), 4)
    assert cm.shape == (4, 4)
    assert cm[1, 1] == 1 and cm[1, 3] == 1 and cm.sum() == 2
    empty = confusion_matrix(np.array([], dtype=int), np.array([], dtype=int), 2)
    np.testing.assert_array_equal(empty, np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("labels", "pred", "k", "match"),
    [
        ([0, 1], [0], 2, "same length"),
        ([[0, 1]], [[0, 1]], 2, "1-D"),
        ([0, 2], [0, 1], 2, "labels must lie"),
        ([0, 1], [0, -1], 2, "predicted must lie"),
        ([0.0, 1.0], [0, 1], 2, "integer dtype"),
        ([0], [0], 0, "num_classes"),
    ],
)
def test_confusion_matrix_errors(labels, pred, k, match) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(np.array(labels), np.array(pred), k)


# --------------------------------------------------------------------------- wilson_interval


def test_wilson_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=5e-4)
    assert high == pytest.approx(0.9433, abs=5e-4)
    # 50/100: textbook value (0.4038, 0.5962).
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=5e-4)
    assert high == pytest.approx(0.5962, abs=5e-4)


def test_wilson_edges() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=5e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(1 - 0.2775, abs=5e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # z = 0 collapses to the point estimate.
    assert wilson_interval(3, 4, z=0.0) == pytest.approx((0.75, 0.75))
    # Types are plain python floats.
    assert all(type(v) is float for v in wilson_interval(np.int64(3), np.int64(7)))


def test_wilson_contains_estimate_and_shrinks_with_n() -> None:
    prev_width = math.inf
    for n in (10, 100, 1000, 10000):
        low, high = wilson_interval(n // 4, n)
        assert 0.0 <= low <= 0.25 <= high <= 1.0
        assert high - low < prev_width
        prev_width = high - low


@pytest.mark.parametrize(("k", "n"), [(-1, 10), (11, 10), (0, -1)])
def test_wilson_errors(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_wilson_rejects_non_integer_counts() -> None:
    with pytest.raises(TypeError):
        wilson_interval(2.5, 10)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- roc_auc


def test_roc_auc_perfect_inverted_constant() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert roc_auc(y, s) == 1.0
    assert roc_auc(y, -s) == 0.0
    assert roc_auc(y, np.full(6, 0.5)) == 0.5
    assert roc_auc(y.astype(bool), s) == 1.0


def test_roc_auc_partial_ties_hand_computed() -> None:
    # pos {0.5, 0.9}, neg {0.5, 0.1}: pairs (0.5,0.5)=0.5, (0.5,0.1)=1, (0.9,*)=1+1 -> 3.5/4.
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1])) == 0.875


def test_roc_auc_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 60))
        y = rng.integers(0, 2, size=n)
        y[0], y[1] = 0, 1  # both classes present
        # Coarse scores on odd trials to force many ties.
        s = rng.normal(size=n) + 0.7 * y
        if trial % 2:
            s = np.round(s, 0)
        assert roc_auc(y, s) == pytest.approx(_brute_force_auc(y, s), abs=1e-12)


def test_roc_auc_undefined_with_one_class() -> None:
    assert roc_auc(np.array([1, 1, 1]), np.array([0.1, 0.5, 0.9])) is None
    assert roc_auc(np.array([0]), np.array([0.3])) is None


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([], [], "empty"),
        ([0, 1], [0.5], "same length"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, np.nan], "finite"),
        ([0, 1], [[0.1, 0.2]], "1-D"),
    ],
)
def test_roc_auc_errors(labels, scores, match) -> None:
    with pytest.raises(ValueError, match=match):
        roc_auc(np.array(labels, dtype=int), np.array(scores, dtype=float))


# --------------------------------------------------------------------------- classification_report


def test_report_binary_hand_computed() -> None:
    # true:  s s s s m m m
    # pred:  s s s m m m s   -> cm [[3, 1], [1, 2]]
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    pred = [0, 0, 0, 1, 1, 1, 0]
    probs = _onehot_probs(pred, 2)
    rep = classification_report(labels, probs, NAMES2)

    assert set(rep) == {
        "accuracy",
        "accuracy_ci95",
        "n_files",
        "precision",
        "recall",
        "f1",
        "confusion",
        "roc_auc",
        "support",
    }
    assert rep["confusion"] == [[3, 1], [1, 2]]
    assert rep["n_files"] == 7
    assert rep["accuracy"] == pytest.approx(5 / 7)
    assert rep["accuracy_ci95"] == pytest.approx(list(wilson_interval(5, 7)))
    assert rep["support"] == {"speech": 4, "music": 3}
    # speech: P = 3/4, R = 3/4, F1 = 3/4; music: P = 2/3, R = 2/3, F1 = 2/3.
    assert rep["precision"]["speech"] == pytest.approx(0.75)
    assert rep["recall"]["speech"] == pytest.approx(0.75)
    assert rep["f1"]["speech"] == pytest.approx(0.75)
    assert rep["precision"]["music"] == pytest.approx(2 / 3)
    assert rep["recall"]["music"] == pytest.approx(2 / 3)
    assert rep["f1"]["music"] == pytest.approx(2 / 3)
    for key in ("precision", "recall", "f1"):
        assert rep[key]["macro"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert rep["roc_auc"] == pytest.approx(_brute_force_auc(labels, probs[:, 1]))


def test_report_asymmetric_precision_recall() -> None:
    # true: s s m m m m ; pred: s m m m m m -> cm [[1, 1], [0, 4]]
    labels = np.array([0, 0, 1, 1, 1, 1])
    probs = _onehot_probs([0, 1, 1, 1, 1, 1], 2)
    rep = classification_report(labels, probs, NAMES2)
    assert rep["confusion"] == [[1, 1], [0, 4]]
    assert rep["precision"]["speech"] == pytest.approx(1.0)
    assert rep["recall"]["speech"] == pytest.approx(0.5)
    assert rep["f1"]["speech"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert rep["precision"]["music"] == pytest.approx(0.8)
    assert rep["recall"]["music"] == pytest.approx(1.0)
    assert rep["f1"]["music"] == pytest.approx(2 * 0.8 / 1.8)


def test_report_perfect_predictions() -> None:
    labels = np.array([0, 1, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    rep = classification_report(labels, probs, NAMES2)
    assert rep["accuracy"] == 1.0
    assert rep["accuracy_ci95"][1] == 1.0
    assert rep["confusion"] == [[2, 0], [0, 3]]
    for key in ("precision", "recall", "f1"):
        assert rep[key] == {"speech": 1.0, "music": 1.0, "macro": 1.0}
    assert rep["roc_auc"] == 1.0


def test_report_all_wrong_predictions() -> None:
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]])
    rep = classification_report(labels, probs, NAMES2)
    assert rep["accuracy"] == 0.0
    assert rep["accuracy_ci95"][0] == 0.0
    assert rep["confusion"] == [[0, 2], [2, 0]]
    for key in ("precision", "recall", "f1"):
        assert rep[key] == {"speech": 0.0, "music": 0.0, "macro": 0.0}
    assert rep["roc_auc"] == 0.0


def test_report_single_class_present_zero_division_and_auc_none() -> None:
    # Only speech in the data, everything predicted speech: music is 0/0 everywhere.
    labels = np.array([0, 0, 0])
    probs = _onehot_probs([0, 0, 0], 2)
    rep = classification_report(labels, probs, NAMES2)
    # The macro means are over the classes that occur: speech alone.
    assert rep["precision"] == {"speech": 1.0, "music": 0.0, "macro": 1.0}
    assert rep["recall"] == {"speech": 1.0, "music": 0.0, "macro": 1.0}
    assert rep["f1"] == {"speech": 1.0, "music": 0.0, "macro": 1.0}
    assert rep["support"] == {"speech": 3, "music": 0}
    assert rep["roc_auc"] is None
    text = format_report(rep, NAMES2)
    assert "n/a" in text and "none of music" in text


def test_report_of_a_three_class_model_on_two_classes_averages_over_those() -> None:
    # speech, music, noise model; the data has speech and music only, one of each called noise
    names = ["speech", "music", "noise"]
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = _onehot_probs([0, 0, 2, 1, 1, 2], 3)
    rep = classification_report(labels, probs, names)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["support"] == {"speech": 3, "music": 3, "noise": 0}
    assert rep["precision"] == {"speech": 1.0, "music": 1.0, "noise": 0.0, "macro": 1.0}
    assert rep["recall"]["macro"] == pytest.approx(2 / 3)  # (2/3 + 2/3) / 2, noise left out
    assert rep["f1"]["macro"] == pytest.approx(0.8)
    assert rep["confusion"][0] == [2, 0, 1]
    assert "none of noise" in format_report(rep, names)


def test_report_argmax_ties_go_to_lowest_index() -> None:
    rep = classification_report(np.array([1, 0]), np.full((2, 2), 0.5), NAMES2)
    assert rep["confusion"] == [[1, 0], [1, 0]]
    assert rep["roc_auc"] == 0.5


def test_report_three_classes() -> None:
    names = ["speech", "music", "noise"]
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # 0 -> 0
            [0.3, 0.6, 0.1],  # 0 -> 1
            [0.1, 0.8, 0.1],  # 1 -> 1
            [0.2, 0.5, 0.3],  # 1 -> 1
            [0.1, 0.3, 0.6],  # 1 -> 2
            [0.1, 0.1, 0.8],  # 2 -> 2
            [0.5, 0.1, 0.4],  # 2 -> 0
            [0.2, 0.2, 0.6],  # 2 -> 2
        ]
    )
    rep = classification_report(labels, probs, names)
    assert rep["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert rep["accuracy"] == pytest.approx(5 / 8)
    assert rep["support"] == {"speech": 2, "music": 3, "noise": 3}
    exp_p = {"speech": 1 / 2, "music": 2 / 3, "noise": 2 / 3}
    exp_r = {"speech": 1 / 2, "music": 2 / 3, "noise": 2 / 3}
    for c in names:
        assert rep["precision"][c] == pytest.approx(exp_p[c])
        assert rep["recall"][c] == pytest.approx(exp_r[c])
        p, r = exp_p[c], exp_r[c]
        assert rep["f1"][c] == pytest.approx(2 * p * r / (p + r))
    assert rep["precision"]["macro"] == pytest.approx(np.mean(list(exp_p.values())))
    expected_auc = np.mean(
        [_brute_force_auc((labels == c).astype(int), probs[:, c]) for c in range(3)]
    )
    assert rep["roc_auc"] == pytest.approx(expected_auc)


def test_report_multiclass_auc_skips_undefined_classes() -> None:
    # Class 2 never occurs: its one-vs-rest AUC is undefined and left out of the mean.
    names = ["a", "b", "c"]
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    rep = classification_report(labels, probs, names)
    assert rep["roc_auc"] == pytest.approx(1.0)
    assert rep["support"]["c"] == 0
    assert rep["precision"]["c"] == 0.0 and rep["recall"]["c"] == 0.0 and rep["f1"]["c"] == 0.0


def test_report_is_json_serialisable_with_python_types() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=50).astype(np.int32)
    probs = rng.dirichlet([1.0, 1.0], size=50).astype(np.float32)
    rep = classification_report(labels, probs, NAMES2)
    round_trip = json.loads(json.dumps(rep, allow_nan=False))
    assert round_trip == rep
    assert type(rep["accuracy"]) is float
    assert type(rep["n_files"]) is int
    assert all(type(v) is int for row in rep["confusion"] for v in row)
    assert all(type(v) is int for v in rep["support"].values())
    assert all(type(v) is float for v in rep["f1"].values())
    assert type(rep["roc_auc"]) is float


@pytest.mark.parametrize(
    ("labels", "probs", "names", "match"),
    [
        (np.array([0, 1]), np.zeros((3, 2)), NAMES2, "number of examples"),
        (np.array([0, 1]), np.zeros(2), NAMES2, "2-D"),
        (np.array([[0, 1]]), np.zeros((2, 2)), NAMES2, "1-D"),
        (np.array([0, 1]), np.zeros((2, 3)), NAMES2, "class names"),
        (np.array([0, 2]), np.zeros((2, 2)), NAMES2, "labels must lie"),
        (np.array([0, -1]), np.zeros((2, 2)), NAMES2, "labels must lie"),
        (np.array([], dtype=int), np.zeros((0, 2)), NAMES2, "empty"),
        (np.array([0, 1]), np.array([[0.5, np.nan], [0.1, 0.9]]), NAMES2, "finite"),
        (np.array([0, 1]), np.zeros((2, 2)), ["a", "a"], "distinct"),
        (np.array([0, 1]), np.zeros((2, 2)), ["a", "macro"], "reserved"),
        (np.array([0.0, 1.0]), np.zeros((2, 2)), NAMES2, "integer dtype"),
    ],
)
def test_report_errors(labels, probs, names, match) -> None:
    with pytest.raises(ValueError, match=match):
        classification_report(labels, probs, names)


# --------------------------------------------------------------------------- format_report


def test_format_report_contents() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    probs = _onehot_probs([0, 0, 0, 1, 1, 1, 0], 2)
    rep = classification_report(labels, probs, NAMES2)
    text = format_report(rep, NAMES2, title="clip-level test")
    lines = text.splitlines()

    assert "clip-level test" in lines[0]
    assert "n = 7" in lines[0]
    assert f"{5 / 7:.4f}" in text
    low, high = rep["accuracy_ci95"]
    assert f"{low:.4f}" in text and f"{high:.4f}" in text
    # Per-class and macro rows.
    speech_row = next(line for line in lines if line.startswith("speech") and "0.7500" in line)
    assert speech_row.split()[-1] == "4"
    music_row = next(line for line in lines if line.startswith("music") and "0.6667" in line)
    assert music_row.split()[-1] == "3"
    macro_row = next(line for line in lines if line.startswith("macro"))
    assert f"{(0.75 + 2 / 3) / 2:.4f}" in macro_row and macro_row.split()[-1] == "7"
    # Confusion matrix with labelled rows and columns.
    idx = next(i for i, line in enumerate(lines) if line.startswith("confusion"))
    assert lines[idx + 1].split() == ["speech", "music"]
    assert lines[idx + 2].split() == ["speech", "3", "1"]
    assert lines[idx + 3].split() == ["music", "1", "2"]
    assert "ROC-AUC" in text and f"{rep['roc_auc']:.4f}" in text


def test_format_report_three_classes_and_long_names() -> None:
    names = ["speech", "music", "a_much_longer_class_name"]
    labels = np.array([0, 1, 2, 2])
    probs = _onehot_probs([0, 1, 2, 0], 3)
    text = format_report(classification_report(labels, probs, names), names)
    for c in names:
        assert c in text
    assert "one-vs-rest" in text
    idx = text.splitlines().index("confusion (rows = true, columns = predicted)")
    rows = text.splitlines()[idx + 2 : idx + 5]
    assert [r.split()[0] for r in rows] == names
    assert rows[2].split()[1:] == ["1", "0", "1"]


def test_format_report_rejects_mismatched_names() -> None:
    rep = classification_report(np.array([0, 1]), _onehot_probs([0, 1], 2), NAMES2)
    with pytest.raises(ValueError, match="no entry"):
        format_report(rep, ["speech", "noise"])
    with pytest.raises(ValueError, match="missing"):
        format_report({"accuracy": 1.0}, NAMES2)
