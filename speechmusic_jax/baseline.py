"""A global-statistics baseline: clip-level loudness/ZCR/spectral statistics + logistic regression.

    python -m speechmusic_jax.baseline --split=PATH/split.csv [--sample_rate=16000]

Reads a split CSV (columns path, label, split in {train, val, test}, group), summarises every clip
by a handful of global statistics over 25 ms frames (RMS, zero-crossing rate, spectral centroid
and roll-off, each as mean and standard deviation, plus the fraction of near-silent frames),
standardises them with training statistics and fits an L2-regularised (multinomial) logistic
regression on train, choosing the regularisation strength on val when there is one. It prints
the test accuracy, the per-class accuracy, and the accuracy of a regression on each single
feature. A network that only matches this baseline has learnt nothing beyond these statistics.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import soundfile as sf

FEATURE_NAMES: tuple[str, ...] = (
    "rms_mean",
    "rms_std",
    "zcr_mean",
    "zcr_std",
    "centroid_mean",
    "centroid_std",
    "rolloff_mean",
    "rolloff_std",
    "silence_frac",
)
FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
SILENCE_DB = -30.0  # a frame is silent when its RMS is this far below the clip's 95th percentile
ROLLOFF = 0.85
L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_L2 = 1e-2


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate`` (channels averaged, resampled with soxr if needed)."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if sr != sample_rate:
        import soxr

        x = soxr.resample(x, sr, sample_rate)
    return np.asarray(x, dtype=np.float32)


def frame_statistics(x: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """Per-frame RMS, zero-crossing rate, spectral centroid and roll-off (Hz) of 25 ms frames."""
    win = max(2, int(round(FRAME_SECONDS * sample_rate)))
    hop = max(1, int(round(HOP_SECONDS * sample_rate)))
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    signs = np.signbit(frames)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    n_fft = 1 << int(np.ceil(np.log2(win)))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mag = np.sqrt(power)
    total = mag.sum(axis=1)
    centroid = np.where(total > 0, mag @ freqs / np.maximum(total, 1e-30), 0.0)
    cum = np.cumsum(power, axis=1)
    idx = np.argmax(cum >= ROLLOFF * cum[:, -1:], axis=1)
    rolloff = np.where(cum[:, -1] > 0, freqs[idx], 0.0)
    return {"rms": rms, "zcr": zcr, "centroid": centroid, "rolloff": rolloff}


def silence_fraction(rms: np.ndarray) -> float:
    """Fraction of frames more than 30 dB below the clip's 95th-percentile frame RMS."""
    ref = float(np.percentile(rms, 95))
    return float(np.mean(rms <= ref * 10.0 ** (SILENCE_DB / 20.0)))


def clip_features(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """The global statistics of one clip, in the order of :data:`FEATURE_NAMES`."""
    s = frame_statistics(x, sample_rate)
    out = []
    for key in ("rms", "zcr", "centroid", "rolloff"):
        out += [float(np.mean(s[key])), float(np.std(s[key]))]
    out.append(silence_fraction(s["rms"]))
    return np.asarray(out, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LogisticModel:
    weights: np.ndarray  # (n_features + 1, n_classes); the last row is the bias

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x @ self.weights[:-1] + self.weights[-1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = DEFAULT_L2, max_iter: int = 100
) -> LogisticModel:
    """Multinomial logistic regression, L2 on the weights (not the bias), by damped Newton steps.

    Class 0 is the reference (its logit is fixed at zero), which makes the objective strictly
    convex; for two classes this is ordinary binary logistic regression.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, d = x.shape
    k1 = max(1, n_classes - 1)
    xb = np.hstack([x, np.ones((n, 1))])
    onehot = np.zeros((n, k1 + 1))
    onehot[np.arange(n), y] = 1.0
    reg = np.full(d + 1, float(l2))
    reg[-1] = 1e-8
    w = np.zeros((d + 1, k1))

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.hstack([np.zeros((n, 1)), xb @ w])
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        loss = float(np.mean(lse - (z * onehot).sum(axis=1)) + 0.5 * np.sum(reg[:, None] * w**2))
        return loss, _softmax(z)[:, 1:]

    loss, p = objective(w)
    for _ in range(max_iter):
        grad = xb.T @ (p - onehot[:, 1:]) / n + reg[:, None] * w
        if np.max(np.abs(grad)) < 1e-9:
            break
        s = p[:, :, None] * np.eye(k1)[None] - p[:, :, None] * p[:, None, :]  # (n, k1, k1)
        hess = np.einsum("ia,ib,ikl->akbl", xb, xb, s).reshape((d + 1) * k1, (d + 1) * k1) / n
        hess += np.diag(np.repeat(reg, k1))
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(hess)), grad.reshape(-1)).reshape(w.shape)
        t = 1.0
        while True:
            new_loss, new_p = objective(w - t * step)
            if new_loss <= loss - 1e-4 * t * float(np.sum(grad * step)) or t < 1e-8:
                break
            t *= 0.5
        w = w - t * step
        improved = loss - new_loss
        loss, p = new_loss, new_p
        if improved < 1e-12:
            break
    full = np.hstack([np.zeros((d + 1, 1)), w]) if n_classes > 1 else w
    return LogisticModel(full)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu = train.mean(axis=0)
    sd = train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(a - mu) / sd for a in (train, *others)]


def _log_loss(model: LogisticModel, x: np.ndarray, y: np.ndarray) -> float:
    p = model.predict_proba(x)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def fit_select(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    grid: Sequence[float] = L2_GRID,
) -> tuple[LogisticModel, float]:
    """Fit on train; pick the L2 strength with the best val accuracy (then val log-loss)."""
    if len(y_val) == 0:
        return fit_logistic(x_train, y_train, n_classes, DEFAULT_L2), DEFAULT_L2
    best = None
    for l2 in grid:
        m = fit_logistic(x_train, y_train, n_classes, l2)
        key = (float(np.mean(m.predict(x_val) == y_val)), -_log_loss(m, x_val, y_val))
        if best is None or key > best[0]:
            best = (key, m, l2)
    assert best is not None
    return best[1], best[2]


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def read_split(split_csv: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a split CSV; relative paths are taken relative to the CSV's folder."""
    base = os.path.dirname(os.path.abspath(split_csv))
    with open(split_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for col in ("path", "label", "split"):
        if rows and col not in rows[0]:
            raise ValueError(f"{split_csv}: missing column {col!r}")
    for r in rows:
        r["path"] = os.path.join(base, r["path"])  # unchanged when already absolute
        if r["split"] not in ("train", "val", "test"):
            raise ValueError(f"{split_csv}: unknown split {r['split']!r} for {r['path']}")
    return rows


def evaluate_baseline(
    split_csv: str | os.PathLike,
    sample_rate: int = 16000,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Fit the baseline on a split and score it on the test rows.

    Returns ``accuracy`` and ``n_test`` (the test set), ``features`` (names), ``per_class``
    (accuracy per label), ``single_feature`` (test accuracy of a regression on each feature
    alone), ``l2`` (the chosen strength), ``labels`` and the train/val sizes.
    """
    rows = read_split(split_csv)
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    if not by_split["train"] or not by_split["test"]:
        raise ValueError(f"{split_csv}: the baseline needs train and test rows")
    labels = sorted({r["label"] for r in by_split["train"]})
    index = {lab: i for i, lab in enumerate(labels)}
    if log:
        log(f"baseline: computing features of {len(rows)} files at {sample_rate} Hz")
    feats = {}
    ys = {}
    for s, rs in by_split.items():
        feats[s] = np.array(
            [clip_features(load_audio(r["path"], sample_rate), sample_rate) for r in rs]
        ).reshape(len(rs), len(FEATURE_NAMES))
        ys[s] = np.array([index.get(r["label"], -1) for r in rs], dtype=np.int64)
    n_classes = len(labels)

    def fit_score(cols: list[int]) -> tuple[float, np.ndarray, float]:
        xtr, xva, xte = _standardise(*(feats[s][:, cols] for s in ("train", "val", "test")))
        model, l2 = fit_select(xtr, ys["train"], xva, ys["val"], n_classes)
        pred = model.predict(xte) if n_classes > 1 else np.zeros(len(xte), dtype=np.int64)
        return float(np.mean(pred == ys["test"])), pred, l2

    acc, pred, l2 = fit_score(list(range(len(FEATURE_NAMES))))
    per_class = {}
    for lab in sorted({r["label"] for r in by_split["test"]}):
        mask = np.array([r["label"] == lab for r in by_split["test"]])
        per_class[lab] = float(np.mean(pred[mask] == ys["test"][mask]))
    single = {name: fit_score([j])[0] for j, name in enumerate(FEATURE_NAMES)}
    return {
        "accuracy": acc,
        "n_test": len(by_split["test"]),
        "n_train": len(by_split["train"]),
        "n_val": len(by_split["val"]),
        "features": list(FEATURE_NAMES),
        "labels": labels,
        "per_class": per_class,
        "single_feature": single,
        "l2": l2,
    }


def format_report(result: dict) -> str:
    lines = [
        f"global-statistics baseline: test accuracy {result['accuracy']:.3f} "
        f"on {result['n_test']} clips (train {result['n_train']}, val {result['n_val']}, "
        f"L2 {result['l2']:g})",
        "per class: "
        + ", ".join(f"{lab} {acc:.3f}" for lab, acc in sorted(result["per_class"].items())),
        "single-feature test accuracy (most informative first):",
    ]
    for name, acc in sorted(result["single_feature"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<14s} {acc:.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        "split": flags.DEFINE_string("split", None,
                                     "split.csv with columns path,label,split,group (required)."),
        "sample_rate": flags.DEFINE_integer("sample_rate", 16000,
                                            "Rate the audio is resampled to before features."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import cli
    from speechmusic_jax.errors import DataError

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    if not flags["split"]:
        raise cli.UsageError("--split=PATH/split.csv is required")
    try:
        result = evaluate_baseline(flags["split"], sample_rate=flags["sample_rate"], log=cli.log)
    except ValueError as e:  # a malformed split CSV
        raise DataError(str(e)) from None
    cli.log(format_report(result))
    return 0


if __name__ == "__main__":
    from speechmusic_jax import cli

    cli.run_main(define_flags, main)
