"""How well does each simple cue alone tell the classes apart?

    python -m speechmusic_jax.cues [--data=SPEC] [--data_on_error=error|skip]
        [--sample_rate=16000] [--json=OUT.json]

Real corpora carry shortcuts: speech has pauses and exact digital silence, is quieter and
narrower-band; music is continuous and wide-band. A classifier can score well on such cues
without learning speech or music. This command measures, for every file of a labelled source
(``--data``, default the built-in corpus), six cues after mixing to mono and resampling to
``--sample_rate``:

- ``pause_share``: the share of 10 ms frames more than 35 dB below the clip's 95th-percentile
  frame RMS (the rule pause shortening, ``data.augment.pause_prob``, uses);
- ``level_dbfs``: the clip's RMS in dBFS (0 dBFS is an RMS of 1.0, a full-scale square wave; a
  full-scale sine is -3.01 dBFS);
- ``bandwidth_hz``: the highest frequency whose long-term power lies within 50 dB of the
  long-term spectrum's maximum (DC excluded). The long-term spectrum is the mean power of
  Hann-windowed 1024-sample frames, hop 512 (15.6 Hz bins at 16 kHz);
- ``exact_zeros``: the share of samples that are exactly 0, counted on the decoded samples at
  the file's own rate before resampling (resampling turns digital silence into tiny non-zero
  values); a sample of a multichannel file counts when every channel is 0;
- ``crest_db``: peak over RMS, in dB (3.01 dB for a sine);
- ``flatness``: the spectral flatness of the long-term spectrum, its geometric over arithmetic
  mean (DC excluded, bins floored at 120 dB below the maximum): 1 for white noise, near 0 for
  a few tones.

For each cue alone it prints the accuracy of the best single threshold (either direction),
chosen on the same clips it is scored on, so optimistic, and a cross-validated accuracy: the
threshold chosen on 4 of 5 folds and scored on the held-out fold, pooled over the folds; folds
hold whole groups (a speaker, a track; each file its own group when the source says nothing),
stratified by class. The majority-class rate is the floor both figures start from. ``--json``
writes the table and every clip's values (atomically).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from speechmusic_jax.data.augment import frame_rms, low_frames

CUES: tuple[str, ...] = ("pause_share", "level_dbfs", "bandwidth_hz", "exact_zeros", "crest_db",
                         "flatness")
N_FFT = 1024
BANDWIDTH_DB = 50.0
FLATNESS_FLOOR_DB = 120.0
FOLDS = 5
FOLD_SEED = 0
_FORMATS = {"pause_share": "{:.3f}", "level_dbfs": "{:.1f} dBFS", "bandwidth_hz": "{:,.0f} Hz",
            "exact_zeros": "{:.4f}", "crest_db": "{:.1f} dB", "flatness": "{:.4f}"}

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# The cues of one clip (pure)


def pause_share(x: np.ndarray, sample_rate: int) -> float:
    """The share of 10 ms frames more than 35 dB below the 95th-percentile frame RMS."""
    low = low_frames(frame_rms(x, sample_rate))
    return float(np.mean(low)) if low.size else 0.0


def level_dbfs(x: np.ndarray) -> float:
    """RMS level in dBFS (-inf for all zeros)."""
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def crest_db(x: np.ndarray) -> float:
    """Peak over RMS in dB (0 for all zeros)."""
    x = np.asarray(x, dtype=np.float64)
    rms = math.sqrt(float(np.mean(x**2)))
    return 20.0 * math.log10(float(np.max(np.abs(x))) / rms) if rms > 0 else 0.0


def long_term_spectrum(x: np.ndarray, sample_rate: int,
                       n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, mean power) over Hann-windowed frames of ``n_fft`` samples, hop
    ``n_fft // 2``; a clip shorter than a frame is zero-padded to one."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 2]
    total = np.zeros(n_fft // 2 + 1)
    for s in range(0, frames.shape[0], 256):  # bounded memory for long clips
        total += np.sum(np.abs(np.fft.rfft(frames[s : s + 256] * window, axis=1)) ** 2, axis=0)
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate), total / frames.shape[0]


def bandwidth_hz(freqs: np.ndarray, power: np.ndarray, within_db: float = BANDWIDTH_DB) -> float:
    """The highest frequency whose power is within ``within_db`` of the maximum (DC excluded;
    0 for a spectrum with no power above DC)."""
    p = np.asarray(power[1:], dtype=np.float64)
    if p.size == 0 or float(p.max()) <= 0:
        return 0.0
    above = np.flatnonzero(p >= p.max() * 10.0 ** (-within_db / 10.0))
    return float(freqs[1:][above[-1]])


def spectral_flatness(power: np.ndarray, floor_db: float = FLATNESS_FLOOR_DB) -> float:
    """Geometric over arithmetic mean of ``power`` (DC excluded, bins floored at ``floor_db``
    below the maximum so that an empty band gives a small number rather than 0)."""
    p = np.asarray(power[1:], dtype=np.float64)
    if p.size == 0 or float(p.max()) <= 0:
        return 0.0
    p = np.maximum(p, p.max() * 10.0 ** (-floor_db / 10.0))
    return float(np.exp(np.mean(np.log(p))) / np.mean(p))


def clip_cues(x: np.ndarray, sample_rate: int, exact_zeros: float) -> dict[str, float]:
    """Every cue of the mono clip ``x`` at ``sample_rate``; ``exact_zeros`` is measured on the
    file's own samples (:func:`speechmusic_jax.data.audio.exact_zero_share`)."""
    freqs, power = long_term_spectrum(x, sample_rate)
    return {"pause_share": pause_share(x, sample_rate), "level_dbfs": level_dbfs(x),
            "bandwidth_hz": bandwidth_hz(freqs, power), "exact_zeros": float(exact_zeros),
            "crest_db": crest_db(x), "flatness": spectral_flatness(power)}


# --------------------------------------------------------------------------------------------
# One-threshold classifiers (pure)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """Predict ``above`` (a label, 0 or 1) for values > ``value``, the other label otherwise.
    ``value`` -inf means every clip gets ``above``."""

    value: float
    above: int
    accuracy: float  # on the values it was chosen on

    def predict(self, values: np.ndarray) -> np.ndarray:
        high = np.asarray(values, dtype=np.float64) > self.value
        return np.where(high, self.above, 1 - self.above)


def best_threshold(values: Sequence[float], labels: Sequence[int]) -> Threshold:
    """The single threshold, in either direction, with the highest accuracy on (values, labels);
    labels are 0 or 1. Candidates are -inf and the midpoints between consecutive distinct values
    (equal values always get the same prediction). Ties go to the lowest threshold, then to
    ``above`` = 1."""
    v = np.asarray(values, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if v.shape != y.shape or v.size == 0:
        raise ValueError("best_threshold needs as many labels as values, and at least one")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("best_threshold takes labels 0 and 1")
    n, n1 = v.size, int(y.sum())
    n0 = n - n1
    uniq, inverse = np.unique(v, return_inverse=True)
    # Counts of each label at or below each distinct value.
    c0 = np.cumsum(np.bincount(inverse, weights=(y == 0), minlength=uniq.size))
    c1 = np.cumsum(np.bincount(inverse, weights=(y == 1), minlength=uniq.size))
    cuts = np.concatenate([[-np.inf], (uniq[:-1] + uniq[1:]) / 2.0])
    below0 = np.concatenate([[0.0], c0[:-1]])  # label-0 clips at or below each cut
    below1 = np.concatenate([[0.0], c1[:-1]])
    acc_above1 = (below0 + (n1 - below1)) / n  # label 1 above the cut
    acc_above0 = (below1 + (n0 - below0)) / n
    scores = np.stack([acc_above1, acc_above0], axis=1)  # (cuts, direction)
    best = np.flatnonzero(scores.reshape(-1) == scores.max())[0]
    k, d = divmod(int(best), 2)
    return Threshold(float(cuts[k]), 1 - d, float(scores[k, d]))


def cross_validated_accuracy(values: Sequence[float], labels: Sequence[int],
                             folds: Sequence[int]) -> float | None:
    """Accuracy of thresholds chosen on all folds but one and scored on that one, pooled over
    every clip; None with fewer than two non-empty folds."""
    v = np.asarray(values, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    fold = np.asarray(folds)
    present = np.unique(fold)
    if present.size < 2:
        return None
    correct = 0
    for f in present:
        held = fold == f
        rule = best_threshold(v[~held], y[~held])
        correct += int(np.sum(rule.predict(v[held]) == y[held]))
    return correct / v.size


def cue_rows(clips: Sequence[dict[str, Any]], labels: Sequence[int], folds: Sequence[int],
             classes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per cue: the median of each class, the best threshold and its accuracy (on the
    same clips), and the cross-validated accuracy."""
    y = np.asarray(labels, dtype=np.int64)
    rows = []
    for cue in CUES:
        v = np.asarray([c[cue] for c in clips], dtype=np.float64)
        rule = best_threshold(v, y)
        rows.append({
            "cue": cue,
            **{f"{classes[k]}_median": float(np.median(v[y == k])) if np.any(y == k) else None
               for k in (0, 1)},
            "threshold": rule.value if math.isfinite(rule.value) else None,
            "above": classes[rule.above],
            "best_threshold_accuracy": rule.accuracy,
            "cv_accuracy": cross_validated_accuracy(v, y, folds),
        })
    return rows


def format_table(rows: Sequence[dict[str, Any]], classes: Sequence[str], majority: float,
                 counts: Sequence[int], folds: int) -> str:
    """The markdown table of :func:`cue_rows`, with the majority-class rate under it."""

    def value(cue: str, x: float | None) -> str:
        return "n/a" if x is None else _FORMATS[cue].format(x)

    a, b = classes[0], classes[1]
    lines = [f"| cue | {a} median | {b} median | best-threshold accuracy | "
             f"CV accuracy ({folds} folds) |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        cv = "n/a" if r["cv_accuracy"] is None else f"{r['cv_accuracy']:.3f}"
        lines.append(f"| {r['cue']} | {value(r['cue'], r[f'{a}_median'])} | "
                     f"{value(r['cue'], r[f'{b}_median'])} | "
                     f"{r['best_threshold_accuracy']:.3f} | {cv} |")
    lines.append("")
    lines.append(f"majority-class rate: {majority:.3f} ({counts[0]} {a}, {counts[1]} {b} clips). "
                 "Best-threshold accuracy picks the threshold on the clips it scores "
                 "(optimistic); CV picks it on the other folds (grouped, stratified).")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# A whole source


def analyse(data_cfg: Any, spec: str, *, on_error: str = "error", sample_rate: int = 16000,
            workers: int = 4, log: Log = print) -> dict[str, Any]:
    """The cues of every file of ``spec`` (listed under the data config ``data_cfg``: classes,
    grouping, corpus cache) and the table. Returns a JSON-ready dict: ``source``,
    ``sample_rate``, ``classes``, ``n_files``, ``majority_rate``, ``folds``, ``data_errors``,
    ``cues`` (the rows of :func:`cue_rows`), ``table`` (markdown) and ``clips`` (path, label,
    group and every cue)."""
    from speechmusic_jax.data import audio, prepare
    from speechmusic_jax.data import split as split_lib

    classes = tuple(data_cfg.classes)
    if len(classes) != 2:
        raise ValueError(f"cues compares two classes; data.classes is {classes}")
    scanned = prepare.scan_source(data_cfg, spec, on_error, log, merge_duplicates=False)
    bad = prepare.BadFiles(on_error, log, scanned.errors)
    log(f"cues: measuring {len(scanned.files)} files of {spec} at {sample_rate} Hz")

    def measure(f) -> dict[str, float] | None:
        try:
            with audio.decoder_messages(f.path) as messages:
                info = audio.probe(f.path)
                x = audio.load(f.path, sample_rate, info=info)
            with audio.decoder_messages(f.path):  # the same decoding again: the same lines
                zeros = audio.exact_zero_share(f.path, info)
        except audio.AudioError as e:
            bad(e)  # raises under on_error=error
            return None
        if messages:
            log(audio.decoder_warning(f.path, messages))
        return clip_cues(x, sample_rate, zeros)

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        measured = list(pool.map(measure, scanned.files))
    kept = [(f, m) for f, m in zip(scanned.files, measured, strict=True) if m is not None]
    counts = collections.Counter(f.label for f, _ in kept)
    if any(counts[k] == 0 for k in (0, 1)):
        from speechmusic_jax.errors import DataError

        raise DataError(f"{spec}: cues needs clips of both classes; usable clips: "
                        f"{counts[0]} {classes[0]}, {counts[1]} {classes[1]}")
    files = [f for f, _ in kept]
    clips = [m for _, m in kept]
    labels = [f.label for f in files]
    k = min(FOLDS, len({f.group for f in files}))
    folds = split_lib.assign_folds(files, k, FOLD_SEED) if k >= 2 else [0] * len(files)
    rows = cue_rows(clips, labels, folds, classes)
    majority = max(counts.values()) / len(files)
    return {
        "source": spec, "sample_rate": sample_rate, "classes": list(classes),
        "n_files": len(files), "majority_rate": majority, "folds": k,
        "data_errors": dict(bad.counts), "cues": rows,
        "table": format_table(rows, classes, majority, [counts[0], counts[1]], k),
        "clips": [{"path": f.path, "label": classes[f.label], "group": f.group, **m}
                  for f, m in kept],
    }


def _json_ready(obj: Any) -> Any:
    """NaN and infinities (a silent clip's level) as None: strict JSON has neither."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    return obj


def _is_cues_report(path: str) -> bool:
    from speechmusic_jax.io_utils import read_json

    report = read_json(path)
    return isinstance(report, dict) and {"cues", "clips", "majority_rate"} <= set(report)


# --------------------------------------------------------------------------------------------
# Command line


def define_flags() -> dict[str, Any]:
    from absl import flags

    from speechmusic_jax import cli

    return {
        **cli.data_flags(on_error_default="error"),
        "sample_rate": flags.DEFINE_integer("sample_rate", 16000,
                                            "Rate the audio is resampled to before measuring."),
        "json": flags.DEFINE_string("json", None, "Also write the table and every clip's cues "
                                    "to this JSON file (replacing only a file of this command)."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import cli
    from speechmusic_jax.config import base_config
    from speechmusic_jax.errors import ConfigError
    from speechmusic_jax.io_utils import atomic_write_json, check_output

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    if flags["sample_rate"] < 1000:
        raise ConfigError(f"--sample_rate: must be at least 1000 Hz (got {flags['sample_rate']})")
    cfg = base_config()
    spec = flags["data"] or cfg.data.spec
    from speechmusic_jax.data.sources import parse_spec

    try:
        parse_spec(spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if flags["json"]:
        check_output(flags["json"], overwrite=True, ours=_is_cues_report, flag="--json")
    report = analyse(cfg.data, spec, on_error=flags["data_on_error"],
                     sample_rate=flags["sample_rate"], log=cli.log)
    cli.log(report["table"])
    if flags["json"]:
        atomic_write_json(os.path.abspath(flags["json"]), _json_ready(report))
        cli.log(f"written to {flags['json']}")
    return 0


if __name__ == "__main__":
    from speechmusic_jax import cli

    cli.run_main(define_flags, main)
