"""Host-side (numpy) classification metrics for clip- and window-level reporting.

Everything here runs on plain numpy arrays after the model outputs have been pulled off the
device, so it is cheap, deterministic and independent of JAX.

Conventions
-----------
* Confusion matrices have rows = true class and columns = predicted class.
* Predictions are ``argmax`` over class probabilities; ties go to the lowest class index
  (the behaviour of :func:`numpy.argmax`).
* Any ratio whose denominator is zero (precision of a class that is never predicted, recall
  of a class that never occurs, F1 with no true positives, false positives or false
  negatives) is reported as ``0.0``. The unweighted macro averages are over the classes with
  examples (``support`` > 0): a model scored on data with only some of its classes (a
  three-class model on speech and music) is averaged over those; a class that occurs but is
  never predicted still counts, with precision 0.0.
* ROC-AUC is the Mann-Whitney U statistic normalised by ``n_pos * n_neg``; tied scores
  count one half. It is ``None`` when it is undefined (only one class present).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "classification_report",
    "confusion_matrix",
    "format_report",
    "roc_auc",
    "wilson_interval",
]

# Two-sided 95% normal quantile, Phi^{-1}(0.975).
_Z95 = 1.959963984540054


def _as_int_vector(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D int64 array, raising ``ValueError`` if it is not integer-valued."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if arr.size == 0:
        # np.asarray([]) is float64; an empty vector carries no values to misinterpret.
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return arr.astype(np.int64)


def _check_range(x: np.ndarray, num_classes: int, name: str) -> None:
    if x.size and (x.min() < 0 or x.max() >= num_classes):
        bad = x[(x < 0) | (x >= num_classes)]
        raise ValueError(
            f"{name} must lie in [0, {num_classes}); found out-of-range value(s) "
            f"{np.unique(bad)[:5].tolist()}"
        )


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Count matrix ``m[i, j]`` = number of examples with true class ``i`` predicted as ``j``.

    Args:
      labels: integer true classes, shape ``(n,)``.
      predicted: integer predicted classes, shape ``(n,)``.
      num_classes: number of classes ``C``; every value must lie in ``[0, C)``.

    Returns:
      ``(C, C)`` int64 array, rows = true, columns = predicted. Empty inputs give all zeros.

    Raises:
      ValueError: on non-1-D or non-integer inputs, mismatched lengths, ``num_classes < 1``
        or values outside ``[0, num_classes)``.
    """
    num_classes = operator.index(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    y = _as_int_vector(labels, "labels")
    p = _as_int_vector(predicted, "predicted")
    if y.shape != p.shape:
        raise ValueError(
            f"labels and predicted must have the same length, got {y.shape[0]} and {p.shape[0]}"
        )
    _check_range(y, num_classes, "labels")
    _check_range(p, num_classes, "predicted")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Unlike the normal (Wald) interval it stays inside ``[0, 1]`` and behaves sensibly at
    ``0/n`` and ``n/n``. With ``n == 0`` nothing is known and ``(0.0, 1.0)`` is returned.

    Args:
      successes: number of successes, ``0 <= successes <= n``.
      n: number of trials, ``>= 0``.
      z: normal quantile; the default gives a two-sided 95% interval.

    Returns:
      ``(low, high)`` as python floats.
    """
    k = operator.index(successes)
    n = operator.index(n)
    z = float(z)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {k}")
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"z must be finite and >= 0, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return float(low), float(high)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with tied values given the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # 0-based position of each distinct value's first copy
    mean_rank = starts + (counts + 1) / 2.0
    return mean_rank[inverse.reshape(-1)]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary ROC-AUC via the Mann-Whitney U statistic, ties averaged.

    Equals the probability that a random positive scores higher than a random negative,
    with ties counting one half; so constant scores give ``0.5``.

    Args:
      labels: shape ``(n,)``, values in ``{0, 1}`` (bool accepted); 1 is the positive class.
      scores: shape ``(n,)``, finite real scores for the positive class.

    Returns:
      AUC in ``[0, 1]``, or ``None`` when only one class is present.

    Raises:
      ValueError: on empty input, shape mismatch, labels outside ``{0, 1}`` or non-finite
        scores.
    """
    y = _as_int_vector(labels, "labels")
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(
            f"labels and scores must have the same length, got {y.shape[0]} and {s.shape[0]}"
        )
    if y.size == 0:
        raise ValueError("roc_auc needs at least one example, got empty input")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"labels must be 0 or 1, found {np.unique(y).tolist()}")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_):
        raise ValueError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (found NaN or inf)")
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with ``0/0`` (any zero denominator) defined as ``0.0``."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_report(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy (with Wilson 95% CI), per-class P/R/F1, confusion matrix and ROC-AUC.

    Predictions are ``argmax(probs, axis=1)`` (ties to the lowest index). ``probs`` need not
    be normalised; any per-class scores where larger means more likely work.

    Zero-denominator convention: precision of a class that is never predicted, recall of a
    class with no true examples, and F1 when a class has no true positives, false positives
    or false negatives are all ``0.0``. In particular a class with no true examples reports
    ``0.0`` for recall and F1 (its ``support`` is 0), and the unweighted ``"macro"`` means
    leave it out: they average over the classes that occur in ``labels``.

    Args:
      labels: integer true classes, shape ``(n,)``, values in ``[0, C)``.
      probs: class probabilities (or scores), shape ``(n, C)``.
      class_names: ``C`` distinct names, in class-index order; ``"macro"`` is reserved.

    Returns:
      A JSON-serialisable dict (python floats / ints / lists / None only) with keys
      ``accuracy``, ``accuracy_ci95`` ([low, high]), ``n_files`` (= n), ``precision``,
      ``recall``, ``f1`` (each ``{name: float, ..., "macro": float}``), ``confusion``
      (rows true, columns predicted), ``roc_auc`` and ``support`` (``{name: int}``).
      ``roc_auc`` is the AUC of ``probs[:, 1]`` against ``labels == 1`` for two classes,
      the mean one-vs-rest AUC over the classes where it is defined for more, and ``None``
      when undefined.

    Raises:
      ValueError: on empty input, mismatched shapes, bad class names, labels out of range
        or non-finite probabilities.
    """
    names = [str(c) for c in class_names]
    y = _as_int_vector(labels, "labels")
    pr = np.asarray(probs)
    if pr.ndim != 2:
        raise ValueError(f"probs must be 2-D (n, num_classes), got shape {pr.shape}")
    if pr.shape[0] != y.shape[0]:
        raise ValueError(
            f"labels and probs disagree on the number of examples: {y.shape[0]} vs {pr.shape[0]}"
        )
    if y.size == 0:
        raise ValueError("classification_report needs at least one example, got empty input")
    num_classes = pr.shape[1]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for probs with {num_classes} columns")
    if num_classes < 1:
        raise ValueError("probs must have at least one class column")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {names}")
    if "macro" in names:
        raise ValueError('"macro" is reserved and cannot be a class name')
    if not (np.issubdtype(pr.dtype, np.number) or pr.dtype == np.bool_):
        raise ValueError(f"probs must be numeric, got dtype {pr.dtype}")
    pr = pr.astype(np.float64)
    if not np.all(np.isfinite(pr)):
        raise ValueError("probs must be finite (found NaN or inf)")
    _check_range(y, num_classes, "labels")

    pred = np.argmax(pr, axis=1)
    cm = confusion_matrix(y, pred, num_classes)
    tp = np.diag(cm)
    true_count = cm.sum(axis=1)  # support
    pred_count = cm.sum(axis=0)
    precision = _safe_div(tp, pred_count)
    recall = _safe_div(tp, true_count)
    # 2TP / (2TP + FP + FN) equals the harmonic mean of precision and recall whenever that is
    # defined, and gives 0.0 (not NaN) when precision or recall is itself 0/0.
    f1 = _safe_div(2 * tp, true_count + pred_count)

    n = int(y.size)
    correct = int(tp.sum())
    low, high = wilson_interval(correct, n)

    present = true_count > 0  # n >= 1, so at least one class occurs

    def per_class(values: np.ndarray) -> dict[str, float]:
        out = {name: float(v) for name, v in zip(names, values, strict=True)}
        out["macro"] = float(np.mean(values[present]))
        return out

    auc: float | None
    if num_classes == 2:
        auc = roc_auc(y == 1, pr[:, 1])
    else:
        aucs = [roc_auc(y == c, pr[:, c]) for c in range(num_classes)]
        defined = [a for a in aucs if a is not None]
        auc = float(np.mean(defined)) if defined else None

    return {
        "accuracy": correct / n,
        "accuracy_ci95": [low, high],
        "n_files": n,
        "precision": per_class(precision),
        "recall": per_class(recall),
        "f1": per_class(f1),
        "confusion": cm.tolist(),
        "roc_auc": auc,
        "support": {name: int(v) for name, v in zip(names, true_count, strict=True)},
    }


def format_report(report: dict[str, Any], class_names: Sequence[str], title: str = "test") -> str:
    """Render a :func:`classification_report` dict as a readable multi-line text table.

    Example output::

        == test (n = 10) ==
        accuracy  0.8000  (95% CI 0.4902-0.9433)

        class   precision   recall       f1  support
        speech     0.8000   0.8000   0.8000        5
        music      0.8000   0.8000   0.8000        5
        macro      0.8000   0.8000   0.8000       10

        confusion (rows = true, columns = predicted)
                speech   music
        speech       4       1
        music        1       4

        ROC-AUC   0.9600

    Args:
      report: the dict returned by :func:`classification_report`.
      class_names: the class names, in the order they were passed to the report.
      title: heading for the table (e.g. the split name and level).

    Raises:
      ValueError: if ``report`` lacks a required key or does not cover ``class_names``.
    """
    names = [str(c) for c in class_names]
    required = (
        "accuracy",
        "accuracy_ci95",
        "n_files",
        "precision",
        "recall",
        "f1",
        "confusion",
        "roc_auc",
        "support",
    )
    missing = [k for k in required if k not in report]
    if missing:
        raise ValueError(f"report is missing key(s) {missing}")
    for key in ("precision", "recall", "f1", "support"):
        absent = [c for c in names if c not in report[key]]
        if absent:
            raise ValueError(f"report[{key!r}] has no entry for class(es) {absent}")
    confusion = report["confusion"]
    if len(confusion) != len(names) or any(len(row) != len(names) for row in confusion):
        raise ValueError(
            f"report['confusion'] is not {len(names)}x{len(names)} for class_names {names}"
        )

    low, high = report["accuracy_ci95"]
    lines = [
        f"== {title} (n = {report['n_files']}) ==",
        f"accuracy  {report['accuracy']:.4f}  (95% CI {low:.4f}-{high:.4f})",
        "",
    ]

    row_w = max(len("class"), len("macro"), *(len(c) for c in names))
    header = f"{'class':<{row_w}}  {'precision':>9}  {'recall':>7}  {'f1':>7}  {'support':>7}"
    lines.append(header)
    total_support = 0
    for c in names:
        sup = int(report["support"][c])
        total_support += sup
        lines.append(
            f"{c:<{row_w}}  {report['precision'][c]:>9.4f}  {report['recall'][c]:>7.4f}  "
            f"{report['f1'][c]:>7.4f}  {sup:>7d}"
        )
    lines.append(
        f"{'macro':<{row_w}}  {report['precision']['macro']:>9.4f}  "
        f"{report['recall']['macro']:>7.4f}  {report['f1']['macro']:>7.4f}  {total_support:>7d}"
    )
    absent = [c for c in names if int(report["support"][c]) == 0]
    if absent:
        lines.append(f"(macro: over the classes with examples here; none of "
                     f"{', '.join(absent)})")
    lines.append("")

    lines.append("confusion (rows = true, columns = predicted)")
    cell_w = max([len(c) for c in names] + [len(str(int(v))) for row in confusion for v in row])
    lines.append(" " * row_w + "".join(f"  {c:>{cell_w}}" for c in names))
    for c, row in zip(names, confusion, strict=True):
        lines.append(f"{c:<{row_w}}" + "".join(f"  {int(v):>{cell_w}d}" for v in row))
    lines.append("")

    auc = report["roc_auc"]
    auc_text = "n/a (only one class present)" if auc is None else f"{auc:.4f}"
    if len(names) > 2 and auc is not None:
        auc_text += "  (macro one-vs-rest)"
    lines.append(f"ROC-AUC   {auc_text}")
    return "\n".join(lines)
