"""The Python API of a trained run: classify waveforms, audio files and long recordings.

    from speechmusic_jax.classifier import Classifier

    clf = Classifier.load("runs/default")  # or "pretrained": the model shipped in the package
    clf.predict(waveform, sample_rate)      # {"duration_s", "short", "predicted", ...}
    clf.predict_files(["a.wav", "music/"])  # one row per file, as `predict` writes them
    clf.segments("talk_show.flac")          # the timeline: merged, smoothed segments

Rows are plain dicts with the columns of the ``predict`` command's output (``predicted`` is the
model's decision, or ``uncertain`` below a ``min_confidence`` given, ``p_<class>`` its
probabilities, ``confidence`` the probability of the decision, ``short`` whether the recording
is shorter than one window and was padded), so they go straight into ``csv.DictWriter`` or
``json.dumps``. Files are read in blocks (memory stays flat with their length) and the windows of
many files share batches, exactly as in the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speechmusic_jax import portable, trained_run
from speechmusic_jax import segments as segments_lib


class Classifier:
    """A trained run ready to classify: ``Classifier.load(workdir)``."""

    def __init__(self, run: trained_run.LoadedRun, batch_size: int | None = None):
        self.run = run
        self.batch_size = batch_size or run.cfg.train.eval_batch_size

    @classmethod
    def load(cls, workdir: str, weights: str = "tested", batch_size: int | None = None,
             models_dir: str | None = None) -> Classifier:
        """The weights of the run in ``workdir`` that it was tested with (``tested``), or its
        ``best`` or ``last`` checkpoint. ``Classifier.load("pretrained")``: the model shipped in
        the package (``models_dir``: a folder written by ``ship`` to use instead)."""
        return cls(trained_run.load_run(workdir, weights, models_dir), batch_size)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.run.classes

    @property
    def sample_rate(self) -> int:
        """The model's rate; waveforms and files at other rates are resampled to it."""
        return self.run.loader.sample_rate

    @property
    def window_seconds(self) -> float:
        return self.run.loader.segment / self.sample_rate

    # ---------------------------------------------------------------------------- waveforms

    def predict(self, waveform: Any, sample_rate: int, *,
                min_confidence: float | None = None) -> dict:
        """One decision for a whole waveform: ``duration_s, short, predicted, confidence,
        p_<class>...`` (the mean of its windows' logits, as for a file).

        ``waveform``: an array of samples at ``sample_rate``: mono (frames,), or several channels
        as (frames, channels) or (channels, frames) (the axis of at most 64 when the other is
        longer; a shape that does not say, such as (2, 2), is refused), which are averaged.
        Floats are taken as they are (full scale 1.0); integer PCM is scaled from its type's
        full scale (unsigned PCM centred: uint8's 128 is silence). ``short``: the waveform is
        shorter than one window (padded, as files are). Below ``min_confidence`` the decision is
        ``uncertain``. Raises ValueError for an ambiguous shape or an empty, non-finite or
        silent waveform. The exported model's ``predict`` gives the same numbers (one
        :func:`portable.predict_waveform`).
        """
        loader = self.run.loader
        return portable.predict_waveform(
            self.window_logits, waveform, sample_rate, model_rate=loader.sample_rate,
            segment=loader.segment, hop=loader.hop, short_clip=loader.short_clip,
            classes=self.classes, min_confidence=min_confidence)

    def prepare(self, waveform: Any, sample_rate: int) -> np.ndarray:
        """``waveform`` as float32 mono at the model's rate (see :meth:`predict`)."""
        return portable.prepare(waveform, sample_rate, self.sample_rate)

    def window_logits(self, windows: np.ndarray) -> np.ndarray:
        """(n, segment) float32 windows -> (n, classes) logits, in batches of one size."""
        out = []
        b = self.batch_size
        for i in range(0, windows.shape[0], b):
            chunk = windows[i : i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, chunk.shape[1]), np.float32)])
            out.append(np.asarray(self.run.predict(chunk))[:n])
        return np.concatenate(out)

    # ---------------------------------------------------------------------------- files

    def predict_files(self, paths: Sequence[str], *, on_error: str = "skip",
                      min_confidence: float | None = None) -> list[dict]:
        """One row per audio file under ``paths`` (files, or folders searched recursively):
        ``path, duration_s, short, predicted, confidence, p_<class>..., error`` (``short``:
        shorter than one window, padded; ``uncertain`` below ``min_confidence``). A file that
        cannot be read gets a row with its ``error`` (``on_error="error"``: raise DataError
        instead)."""
        return trained_run.predict_paths(self.run, paths, on_error=on_error, log=_quiet,
                                         batch_size=self.batch_size,
                                         min_confidence=min_confidence).rows

    def windows(self, path: str, *, hop_seconds: float | None = None,
                min_confidence: float | None = None) -> list[dict]:
        """One row per window of ``path``: ``path, start_s, end_s, short, predicted,
        confidence, p_<class>..., error`` (hop: the run's evaluation hop unless given;
        ``uncertain`` below ``min_confidence``)."""
        return trained_run.predict_paths(self.run, [path], rows="windows",
                                         hop_seconds=hop_seconds, on_error="error", log=_quiet,
                                         batch_size=self.batch_size,
                                         min_confidence=min_confidence).rows

    def segments(self, path: str, *, smoothing: str | segments_lib.Smoothing | None = None,
                 hop_seconds: float | None = None,
                 min_confidence: float | None = None) -> list[dict]:
        """The timeline of ``path``: merged, smoothed segments ``path, start_s, end_s, short,
        predicted, confidence, p_<class>..., error``, read in blocks (any length); a segment
        whose confidence is below ``min_confidence`` is ``uncertain`` (uncertain neighbours
        merged).

        ``smoothing``: ``"hmm"`` (the default), ``"median"``, ``"none"``, or a
        :class:`segments.Smoothing` with its parameters; ``hop_seconds`` defaults to a quarter
        window. Raises DataError when the file cannot be read."""
        if smoothing is None:
            smoothing = segments_lib.DEFAULT
        elif isinstance(smoothing, str):
            smoothing = segments_lib.Smoothing(smoothing)
        return trained_run.predict_paths(self.run, [path], rows="segments",
                                         hop_seconds=hop_seconds, smoothing=smoothing,
                                         on_error="error", log=_quiet,
                                         batch_size=self.batch_size,
                                         min_confidence=min_confidence).rows


def _quiet(_: str) -> None:
    pass
