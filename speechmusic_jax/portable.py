"""Everything inference does besides the network, in NumPy alone: one waveform preprocessing,
one windowing, one way to turn window logits into a decision.

The package (the Python API, ``predict``, streaming, the training and evaluation pipeline) and
the exported model's loader (:mod:`speechmusic_jax.export`) all use these functions, so a
waveform gets the same numbers whichever way it is classified. This module imports nothing but
NumPy (and soxr, only to resample): copy it next to ``export.py`` to run an exported model
without the package.

- :func:`prepare`: any waveform (float or integer PCM, unsigned PCM with its offset, mono
  ``(frames,)``, ``(frames, channels)``, or ``(channels, frames)`` when the shape says which
  axis is which) at any rate -> float32 mono at the model's rate, or a one-line ValueError.
- :func:`window_starts`: where a recording's windows start (every ``hop`` samples from 0, the
  last one aligned to the end; one window, padded, for a recording shorter than a window);
  :func:`clip_windows` cuts them.
- :func:`decide`: class probabilities -> ``predicted, confidence, p_<class>...``, with
  ``predicted = "uncertain"`` below ``min_confidence``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# A recording whose peak stays below this (-100 dBFS) is silent, and refused. One 16-bit LSB
# (3.05e-5) is above it.
SILENCE_PEAK = 1e-5
# A 2-D waveform's channel axis is the one no longer than this, when the other one is longer.
MAX_CHANNELS = 64
RESAMPLE_QUALITY = "HQ"  # soxr's, for whole waveforms, files and streams alike
UNCERTAIN = "uncertain"  # the decision below min_confidence


# --------------------------------------------------------------------------------------------
# One preprocessing


def as_float(waveform: Any) -> np.ndarray:
    """Samples as float32 at full scale 1.0: floats as they are, signed integer PCM divided by
    its type's full scale (int16: 32768), unsigned PCM centred first (uint8: 128 is silence)."""
    x = np.asarray(waveform)
    if x.dtype.kind in "iu":
        half = 2.0 ** (np.iinfo(x.dtype).bits - 1)
        centre = half if x.dtype.kind == "u" else 0.0
        return ((x.astype(np.float64) - centre) / half).astype(np.float32)
    if x.dtype.kind != "f":
        raise ValueError(f"waveform must hold numbers (float or integer PCM), got dtype "
                         f"{x.dtype}")
    return x.astype(np.float32, copy=False)


def mix(frames: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 -> (frames,) float32, the channels averaged (as files are)."""
    if frames.shape[1] == 1:
        return frames[:, 0]
    return frames.mean(axis=1, dtype=np.float32)


def channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 2-D waveform of ``shape`` is (frames, channels) (True) or (channels, frames)
    (False); a ValueError when the shape does not say."""
    a, b = shape
    if b == 1 or (b <= MAX_CHANNELS < a):
        return True
    if a == 1 or (a <= MAX_CHANNELS < b):
        return False
    if a == b or max(a, b) <= MAX_CHANNELS:
        raise ValueError(f"waveform of shape {shape} is ambiguous: is it (frames, channels) or "
                         f"(channels, frames)? Pass mono samples as (frames,), or at most "
                         f"{MAX_CHANNELS} channels with more frames than that")
    raise ValueError(f"waveform of shape {shape} has more than {MAX_CHANNELS} channels either "
                     f"way; pass mono samples as (frames,), or (frames, channels)")


def to_mono(waveform: Any) -> np.ndarray:
    """``waveform`` as float32 mono at its own rate (see :func:`prepare`)."""
    x = as_float(waveform)
    if x.ndim not in (1, 2):
        raise ValueError(f"waveform must be (frames,), (frames, channels) or (channels, "
                         f"frames), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("waveform is empty")
    if x.ndim == 2:
        x = mix(x if channels_last(x.shape) else x.T)
    if not np.isfinite(x).all():
        raise ValueError("waveform contains NaN or Inf samples")
    return x


def resample(x: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 ``x`` from ``rate`` to ``target_rate`` (soxr, HQ); ``x`` when they agree."""
    if rate == target_rate:
        return x
    import soxr

    return np.asarray(soxr.resample(x, rate, target_rate, quality=RESAMPLE_QUALITY),
                      dtype=np.float32)


def prepare(waveform: Any, sample_rate: Any, target_rate: int) -> np.ndarray:
    """Any waveform -> contiguous float32 mono at ``target_rate``.

    ``waveform``: an array of samples at ``sample_rate``: floats at full scale 1.0, or integer
    PCM (int8/16/32/64, or unsigned with its offset: uint8's 128 is silence); mono (frames,),
    or channels as (frames, channels) or (channels, frames) (the axis of at most
    :data:`MAX_CHANNELS` when the other is longer; a size-1 axis is mono), averaged. Another
    rate is resampled with soxr. Raises a one-line ValueError for an ambiguous shape, an empty,
    non-finite or silent waveform, or a rate that is not a positive whole number of Hz.
    """
    rate = _rate(sample_rate)
    x = resample(to_mono(waveform), rate, target_rate)
    if x.size == 0:
        raise ValueError(f"waveform too short to resample: no sample left at {target_rate} Hz")
    if float(np.max(np.abs(x))) < SILENCE_PEAK:
        raise ValueError("waveform is silent (peak below -100 dBFS)")
    return np.ascontiguousarray(x)


def _rate(sample_rate: Any) -> int:
    try:
        rate = int(sample_rate)
        whole = rate == sample_rate
    except (TypeError, ValueError):
        whole = False
    if not whole or isinstance(sample_rate, bool) or rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got "
                         f"{sample_rate!r}")
    return rate


# --------------------------------------------------------------------------------------------
# One windowing


def window_starts(n_samples: int, segment: int, hop: int, *, complete: bool = True,
                  since: int = 0) -> list[int]:
    """Start samples of the windows of a recording of ``n_samples``: every ``hop`` samples from
    0 while a window fits, then (``complete``) one aligned to the end if the last one falls
    short of it; a recording no longer than a window has one window, at 0 (padded by
    :func:`clip_windows`).

    ``complete=False`` gives only the windows on the hop grid that fit in ``n_samples`` (a
    stream whose end is not known yet); ``since`` leaves out the starts before it.
    """
    if segment <= 0 or hop <= 0:
        raise ValueError(f"segment and hop must be positive, got {segment}, {hop}")
    last = n_samples - segment  # the last start whose window fits
    first = max(0, -(-since // hop) * hop)
    starts = list(range(first, last + 1, hop))
    tail = max(0, last)
    if complete and tail >= since and (not starts or starts[-1] != tail):
        starts.append(tail)
    return starts


def fit_length(x: np.ndarray, length: int, mode: str = "pad") -> np.ndarray:
    """``x`` cut or extended to ``length`` samples; ``mode`` is ``pad`` (zeros) or ``loop``."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if mode not in ("pad", "loop"):
        raise ValueError(f"mode must be 'pad' or 'loop', got {mode!r}")
    n = x.shape[0]
    if n >= length:
        return x[:length]
    if mode == "loop" and n > 0:
        reps = -(-length // n)
        return np.tile(x, reps)[:length]
    out = np.zeros(length, dtype=x.dtype)
    out[:n] = x
    return out


def clip_windows(x: np.ndarray, segment: int, hop: int, short_clip: str = "pad") -> np.ndarray:
    """(windows, segment) float32: the windows of :func:`window_starts` of the mono clip ``x``;
    a clip shorter than a window is padded (``short_clip="pad"``) or looped (``"loop"``)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] < segment:
        return fit_length(x, segment, short_clip)[None]
    return np.stack([x[s : s + segment] for s in window_starts(x.shape[0], segment, hop)])


# --------------------------------------------------------------------------------------------
# One decision


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, classes) logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_min_confidence(value: Any, name: str = "min_confidence") -> float | None:
    """``value`` (None: never uncertain) as a float in [0, 1], or a ValueError naming ``name``."""
    if value is None:
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = float("nan")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return p


def decide(probs: np.ndarray | None, classes: Sequence[str], min_confidence: float | None = None,
           label: int | None = None) -> dict:
    """``predicted, confidence, p_<class>...`` of class probabilities ``probs`` (all None
    without): ``predicted`` the class of ``label`` (default: the most probable one) and
    ``confidence`` its probability, or ``predicted = "uncertain"`` when that probability is below
    ``min_confidence``."""
    if probs is None:
        return {"predicted": None, "confidence": None, **{f"p_{c}": None for c in classes}}
    k = int(np.argmax(probs)) if label is None else int(label)
    confidence = float(probs[k])
    uncertain = min_confidence is not None and confidence < min_confidence
    return {"predicted": UNCERTAIN if uncertain else classes[k],
            "confidence": round(confidence, 6),
            **{f"p_{c}": round(float(v), 6) for c, v in zip(classes, probs, strict=True)}}


def predict_waveform(logits: Callable[[np.ndarray], np.ndarray], waveform: Any, sample_rate: Any,
                     *, model_rate: int, segment: int, hop: int, short_clip: str,
                     classes: Sequence[str], min_confidence: float | None = None) -> dict:
    """One decision for a whole waveform: ``duration_s, short, predicted, confidence,
    p_<class>...``. ``logits`` maps (n, segment) float32 windows to (n, classes) logits; the
    decision is the softmax of the mean of the windows' logits. ``short``: the waveform is
    shorter than one window (padded: the answer rests on less audio than the model takes)."""
    min_confidence = check_min_confidence(min_confidence)
    x = prepare(waveform, sample_rate, model_rate)
    out = np.asarray(logits(clip_windows(x, segment, hop, short_clip)))
    probs = softmax(out.astype(np.float64).mean(axis=0, keepdims=True))[0]
    return {"duration_s": round(x.size / model_rate, 3), "short": bool(x.size < segment),
            **decide(probs, classes, min_confidence)}
