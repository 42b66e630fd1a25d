"""Training augmentation: its configuration, and the part that runs on the host.

Each part is a config switch (``data.augment.*``) and is off when its probability or range is 0.
The per-crop parts (additive noise at an SNR, coloured 1/f**s; a random low-pass and high-pass;
gain; polarity; dither) run on the device, in a compiled function right before the train step
(:mod:`speechmusic_jax.data.device_augment`, which describes each); :class:`AugmentConfig`
holds them all.

Pause shortening stays here, on the host: it changes the audio's length. With probability
``pause_prob`` every low-level run longer than ``pause_max_ms`` (10 ms frames more than
:data:`LOW_LEVEL_DB` below the stretch's 95th-percentile frame level, the pause rule of
``python -m speechmusic_jax.cues``) is cut to a length drawn uniformly from ``pause_keep_ms``,
joined with a short crossfade; the same rule for every class, so that pauses (common in speech,
rare in music) stop marking a class. The pipeline applies it to a stretch of twice the crop's
length before the crop is cut (:func:`shorten_pauses`, :func:`pause_generator`). Its random
numbers come from a generator seeded by (seed, epoch, index), so an epoch's crops are
reproducible and do not depend on thread scheduling. The random crop position is chosen with the
epoch's plan in :mod:`speechmusic_jax.data.pipeline`. Evaluation never augments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

_PAUSE_STREAM = 0xA07  # pause shortening draws apart from the per-crop draws

LOW_LEVEL_DB = 35.0  # a frame is "low" this far below the 95th-percentile frame level
FRAME_SECONDS = 0.010  # the frames of the pause rule
PAUSE_READ_FACTOR = 2  # pause shortening reads this many crops' worth of audio
CROSSFADE_SECONDS = 0.005


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    random_crop: bool = True
    gain_db: float = 0.0
    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    polarity_prob: float = 0.0
    lowpass_prob: float = 0.0
    lowpass_hz: tuple[float, float] = (2000.0, 7000.0)
    noise_colours: tuple[float, ...] = (0.0,)
    pause_prob: float = 0.0
    pause_max_ms: float = 80.0
    pause_keep_ms: tuple[float, float] = (30.0, 80.0)
    dither_db: float = 0.0
    highpass_prob: float = 0.0
    highpass_hz: tuple[float, float] = (100.0, 400.0)

    @property
    def active(self) -> bool:
        """True when any per-crop transform is on (the crop position and pause shortening,
        which the pipeline applies before the crop is cut, are not ones)."""
        return bool(self.gain_db > 0 or self.noise_prob > 0 or self.polarity_prob > 0
                    or self.lowpass_prob > 0 or self.highpass_prob > 0 or self.dither_db < 0)

    @classmethod
    def from_config(cls, a) -> AugmentConfig:
        """From the ``data.augment`` ConfigDict (or anything with the same attributes)."""
        return cls(bool(a.random_crop), float(a.gain_db), float(a.noise_prob),
                   _pair(a.noise_snr_db), float(a.polarity_prob), float(a.lowpass_prob),
                   _pair(a.lowpass_hz), tuple(float(c) for c in a.noise_colours),
                   float(a.pause_prob), float(a.pause_max_ms), _pair(a.pause_keep_ms),
                   float(a.dither_db), float(a.highpass_prob), _pair(a.highpass_hz))


def _pair(v: Sequence[float]) -> tuple[float, float]:
    lo, hi = v
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# Pauses


def frame_rms(x: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """RMS of consecutive, non-overlapping frames of ``frame_seconds``; a last partial frame is
    measured over the samples it has."""
    square = np.square(np.asarray(x, dtype=np.float64).reshape(-1))
    f = max(1, int(round(frame_seconds * sample_rate)))
    n_full = square.shape[0] // f
    mean = np.mean(square[: n_full * f].reshape(n_full, f), axis=1)
    if square.shape[0] > n_full * f:
        mean = np.append(mean, np.mean(square[n_full * f:]))
    return np.sqrt(mean)


def low_frames(rms: np.ndarray, below_db: float = LOW_LEVEL_DB) -> np.ndarray:
    """Which frames lie more than ``below_db`` below the 95th percentile of the frame RMS
    values (all False when that percentile is 0: nothing to compare with)."""
    if rms.size == 0:
        return np.zeros(0, dtype=bool)
    ref = float(np.percentile(rms, 95))
    if ref <= 0.0:
        return np.zeros(rms.shape, dtype=bool)
    return rms < ref * 10.0 ** (-below_db / 20.0)


def low_runs(x: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """[start, stop) sample ranges of the runs of consecutive low frames of ``x``."""
    low = low_frames(frame_rms(x, sample_rate))
    f = max(1, int(round(FRAME_SECONDS * sample_rate)))
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a) * f, min(int(b) * f, x.shape[0])) for a, b in zip(starts, stops, strict=True)]


def pause_generator(cfg: AugmentConfig, seed: int, epoch: int,
                    index: int) -> np.random.Generator | None:
    """The generator for shortening the pauses of example ``index``, or None when this example
    keeps its pauses (probability 1 - pause_prob). Keyed by (seed, epoch, index) like
    :func:`augment`, apart from its draws."""
    if cfg.pause_prob <= 0:
        return None
    rng = np.random.default_rng([seed, epoch, index, _PAUSE_STREAM])
    return rng if rng.random() < cfg.pause_prob else None


def shorten_pauses(x: np.ndarray, sample_rate: int, max_ms: float,
                   keep_ms: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``x`` with every low-level run (:func:`low_runs`) longer than ``max_ms`` cut to a length
    drawn uniformly from ``keep_ms`` (one draw per such run, in order).

    The middle of the run is removed; the two sides are joined by a crossfade of up to
    :data:`CROSSFADE_SECONDS` inside the run, so the audio around a pause is kept sample for
    sample. Returns float32, never longer than ``x``.
    """
    x = np.asarray(x, dtype=np.float32)
    limit = max_ms / 1000.0 * sample_rate
    pieces: list[np.ndarray] = []
    cursor = 0  # x[:cursor] is in pieces (the last piece may be waiting for its crossfade)
    for a, b in low_runs(x, sample_rate):
        if b - a <= limit:
            continue
        keep = int(round(rng.uniform(*keep_ms) / 1000.0 * sample_rate))
        keep = max(1, min(keep, b - a))
        c = min(int(round(CROSSFADE_SECONDS * sample_rate)), keep)
        p = a + (keep - c) // 2  # the fade starts here; x[p + removed:] follows
        q = p + (b - a - keep)
        if c > 0:
            t = (np.arange(c, dtype=np.float32) + 0.5) / np.float32(c)
            fade_in = np.sin(0.5 * np.pi * t) ** 2
            joined = x[p:p + c] * (1 - fade_in) + x[q:q + c] * fade_in
        else:
            joined = x[p:p]
        pieces += [x[cursor:p], joined.astype(np.float32)]
        cursor = q + c
    if not pieces:
        return x.copy()
    pieces.append(x[cursor:])
    return np.concatenate(pieces)

