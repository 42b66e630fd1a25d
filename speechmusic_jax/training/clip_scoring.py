"""Scoring whole clips: window logits, clip logits (mean of a clip's windows), reports.

``predict_files`` runs a predictor (x -> logits) over evaluation windows of every file;
``report`` turns the result into the clip-level report (the headline) with the window-level one
beside it. The loss of each level is the plain cross-entropy (no label smoothing): per clip for
``loss`` (of the mean window logits), per window for ``window.loss``; the window loss measures
what a training crop's loss measures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from speechmusic_jax.data import audio
from speechmusic_jax.data.pipeline import LoaderConfig, eval_batches
from speechmusic_jax.data.sources import AudioFile
from speechmusic_jax.portable import softmax
from speechmusic_jax.training import metrics


@dataclasses.dataclass(frozen=True)
class Predictions:
    files: list[AudioFile]  # the clips that decoded (bad ones dropped under on_error=skip)
    clip_logits: np.ndarray  # (clips, classes): mean of the clip's window logits
    window_logits: np.ndarray  # (windows, classes)
    window_labels: np.ndarray  # (windows,)
    window_clip: np.ndarray  # (windows,) index into ``files`` of each window's clip, in order

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([f.label for f in self.files], dtype=np.int32)


def predict_files(
    predict: Callable[[Any], jax.Array],
    files: Sequence[AudioFile],
    cfg: LoaderConfig,
    batch_size: int,
    put: Callable[[np.ndarray], Any] = jax.device_put,
    on_bad_file: Callable[[audio.AudioError], None] | None = None,
) -> Predictions:
    """Run ``predict`` (x -> logits) over windows of every file; average per clip."""
    logits, clip = predict_windows(predict, files, cfg, batch_size, put, on_bad_file)
    return assemble(files, logits, clip)


def predict_windows(
    predict: Callable[[Any], jax.Array],
    files: Sequence[AudioFile],
    cfg: LoaderConfig,
    batch_size: int,
    put: Callable[[np.ndarray], Any] = jax.device_put,
    on_bad_file: Callable[[audio.AudioError], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(window logits, index into ``files`` of each window's clip; -1 for padding windows).
    No window at all (every file unreadable, skipped): logits of shape (0, 0)."""
    window_logits: list[np.ndarray] = []
    window_clip: list[np.ndarray] = []
    pending = None
    for batch in eval_batches(files, cfg, batch_size, on_bad_file=on_bad_file):
        logits = predict(put(batch.x))  # dispatched; fetch the previous batch meanwhile
        if pending is not None:
            window_logits.append(np.asarray(pending[0]))
            window_clip.append(pending[1])
        pending = (logits, batch.clip)
    if pending is not None:
        window_logits.append(np.asarray(pending[0]))
        window_clip.append(pending[1])
    if not window_logits:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int32)
    return np.concatenate(window_logits), np.concatenate(window_clip).astype(np.int32)


def assemble(files: Sequence[AudioFile], window_logits: np.ndarray,
             window_clip: np.ndarray) -> Predictions:
    """Predictions from window logits and their clips (indices into ``files``, -1: padding)."""
    logits = np.asarray(window_logits).astype(np.float64)
    clip = np.asarray(window_clip)
    keep = clip >= 0
    logits, clip = logits[keep], clip[keep]
    if not len(clip):
        raise ValueError("no clip could be evaluated")
    present = np.unique(clip)
    sums = np.zeros((len(files), logits.shape[1]))
    np.add.at(sums, clip, logits)
    counts = np.bincount(clip, minlength=len(files))
    clip_logits = sums[present] / counts[present, None]
    kept = [files[i] for i in present]
    labels = np.asarray([files[i].label for i in clip], dtype=np.int32)
    position = np.searchsorted(present, clip)
    return Predictions(kept, clip_logits, logits, labels, position.astype(np.int32))


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def report(pred: Predictions, class_names: Sequence[str]) -> dict:
    """Clip-level report (the headline) with the window-level one under ``window``."""
    clip = metrics.classification_report(pred.labels, softmax(pred.clip_logits), class_names)
    clip["loss"] = mean_cross_entropy(pred.clip_logits, pred.labels)
    window = metrics.classification_report(pred.window_labels, softmax(pred.window_logits),
                                           class_names)
    window["n_windows"] = window.pop("n_files")
    window["loss"] = mean_cross_entropy(pred.window_logits, pred.window_labels)
    clip["window"] = window
    return clip
