"""Training-time augmentation: pure functions of (crop, config, seed, epoch, index).

Each part is a config switch (``data.augment.*``) and is off when its probability or range is 0:

- pause shortening (``pause_prob``): every low-level run longer than ``pause_max_ms`` (10 ms
  frames more than :data:`LOW_LEVEL_DB` below the stretch's 95th-percentile frame level, the
  pause rule of ``python -m speechmusic_jax.cues``) is cut to a length drawn uniformly from
  ``pause_keep_ms``, joined with a short crossfade; the same rule for every class, so that
  pauses (common in speech, rare in music) stop marking a class. It shortens the audio, so the
  pipeline applies it to a stretch of twice the crop's length before the crop is cut
  (:func:`shorten_pauses`, :func:`pause_generator`);
- additive noise at a signal-to-noise ratio drawn uniformly from ``noise_snr_db``, its colour
  drawn per example from ``noise_colours``: each a slope s, the noise's power spectrum falling
  as 1/f**s (about 3 dB per octave per unit; 0 white, the default; 1 pink; 2 brown);
- band-limiting: a random low-pass with its cut-off drawn from ``lowpass_hz``, so that a model
  cannot tell the classes apart by bandwidth alone; and a random high-pass with its cut-off
  drawn from ``highpass_hz`` (small loudspeakers, telephone and radio channels, a
  microphone's low cut), so that neither can the presence of bass or of a voice's fundamental;
- random gain, uniform in [-gain_db, +gain_db] decibels;
- polarity flip (the sign of every sample);
- dither (``dither_db`` < 0; 0 is off): white noise of that absolute RMS level in dBFS (0 dBFS
  is an RMS of 1.0, a full-scale square wave) added to every crop, so that exact digital zeros
  (frequent in edited speech, rare in music) no longer mark a class.

The per-crop parts (all but pause shortening) are applied in that order (noise before the
low-pass: a band-limited channel carries its noise band-limited too; dither last, so that its
level is absolute). The random crop position is chosen with the epoch's plan in
:mod:`speechmusic_jax.data.pipeline`. Evaluation never augments.

The random numbers for one example come from a generator seeded by (seed, epoch, index), so an
epoch's augmented batches are reproducible and do not depend on thread scheduling.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

_STREAM = 0xA06  # keeps this generator apart from the epoch plan's
_PAUSE_STREAM = 0xA07  # pause shortening draws apart from the per-crop draws
_EXTRA_STREAM = 0xA08  # draws of later parts (colour, dither): the older draws stay as they were

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


def augment(
    x: np.ndarray, cfg: AugmentConfig, sample_rate: int, seed: int, epoch: int, index: int
) -> np.ndarray:
    """Return an augmented copy of the mono crop ``x`` (float32); ``x`` itself is unchanged.

    A pure function: the same arguments give the same output, bit for bit.
    """
    if not cfg.active:
        return x
    rng = np.random.default_rng([seed, epoch, index, _STREAM])
    # Draw every random number, used or not, so that switching one part on or off does not
    # change the draws of the others.
    u_noise, snr, u_low, cutoff, gain, u_pol = (
        rng.random(), rng.uniform(*cfg.noise_snr_db), rng.random(),
        rng.uniform(*cfg.lowpass_hz), rng.uniform(-cfg.gain_db, cfg.gain_db), rng.random())
    noise_seed = int(rng.integers(0, 2**63 - 1))
    extra = np.random.default_rng([seed, epoch, index, _EXTRA_STREAM])
    colour = cfg.noise_colours[int(extra.integers(len(cfg.noise_colours)))]
    dither_seed = int(extra.integers(0, 2**63 - 1))
    u_high, cuton = extra.random(), extra.uniform(*cfg.highpass_hz)
    y = np.array(x, dtype=np.float32, copy=True)
    if cfg.noise_prob > 0 and u_noise < cfg.noise_prob:
        y = add_noise(y, snr, noise_seed, colour, sample_rate)
    if cfg.lowpass_prob > 0 and u_low < cfg.lowpass_prob:
        y = lowpass(y, cutoff, sample_rate)
    if cfg.highpass_prob > 0 and u_high < cfg.highpass_prob:
        y = highpass(y, cuton, sample_rate)
    if cfg.gain_db > 0:
        y *= np.float32(10.0 ** (gain / 20.0))
    if cfg.polarity_prob > 0 and u_pol < cfg.polarity_prob:
        np.negative(y, out=y)
    if cfg.dither_db < 0:
        y = dither(y, cfg.dither_db, dither_seed)
    return y


def add_noise(x: np.ndarray, snr_db: float, seed: int, slope: float = 0.0,
              sample_rate: int = 16000) -> np.ndarray:
    """``x`` plus Gaussian noise at ``snr_db`` relative to the power of ``x``, its power
    spectrum falling as 1/f**``slope`` (0: white, the same samples as ever for a seed; the
    rate only places the spectrum's reference frequency, so the shape is the same at any rate).

    A silent crop has no power to measure against; it gets no noise.
    """
    power = float(np.mean(np.square(x, dtype=np.float64)))
    if power <= 0.0:
        return x
    sigma = math.sqrt(power / (10.0 ** (snr_db / 10.0)))
    noise = np.random.default_rng(seed).standard_normal(x.shape[0], dtype=np.float32)
    if slope != 0.0:
        noise = coloured(noise, slope, sample_rate)
    return (x + np.float32(sigma) * noise).astype(np.float32, copy=False)


def coloured(white: np.ndarray, slope: float, sample_rate: int) -> np.ndarray:
    """``white`` noise shaped to a power spectrum falling as 1/f**``slope`` and scaled back to
    unit mean power. The DC bin is removed; bins below 20 Hz get the 20 Hz gain (a brown
    spectrum would otherwise pile its power into the lowest bin)."""
    n = white.shape[0]
    if n < 2:
        return white
    spec = np.fft.rfft(white.astype(np.float64))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    gain = np.maximum(freqs, 20.0) ** (-slope / 2.0)
    gain[0] = 0.0
    shaped = np.fft.irfft(spec * gain, n=n)
    rms = math.sqrt(float(np.mean(shaped**2)))
    if rms <= 0.0:
        return white
    return (shaped / rms).astype(np.float32)


def dither(x: np.ndarray, level_db: float, seed: int) -> np.ndarray:
    """``x`` plus white Gaussian noise of RMS 10**(level_db / 20) (an absolute level in dBFS,
    0 dBFS being an RMS of 1.0): no sample is then exactly zero."""
    noise = np.random.default_rng(seed).standard_normal(x.shape[0], dtype=np.float32)
    return (x + np.float32(10.0 ** (level_db / 20.0)) * noise).astype(np.float32, copy=False)


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    """Low-pass ``x`` at ``cutoff_hz`` in the frequency domain. The gain falls along a raised
    cosine from 1 at 5/6 of the cut-off to 0 at the cut-off (a brick wall would ring). The
    length is preserved."""
    n = x.shape[0]
    if n < 2 or cutoff_hz >= sample_rate / 2:
        return x
    spec = np.fft.rfft(x)
    hz_per_bin = sample_rate / n
    lo_hz = cutoff_hz * (1.0 - 1.0 / 6.0)
    k_lo = int(math.ceil(lo_hz / hz_per_bin))
    k_hi = min(spec.shape[0], int(math.ceil(cutoff_hz / hz_per_bin)))
    _roll_off(spec, k_lo, k_hi, hz_per_bin, cutoff_hz, lo_hz)
    spec[k_hi:] = 0
    return np.fft.irfft(spec, n=n).astype(np.float32, copy=False)


def highpass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    """High-pass ``x`` at ``cutoff_hz`` in the frequency domain: the gain rises along a raised
    cosine from 0 at the cut-off to 1 at 6/5 of it (the mirror of :func:`lowpass`). The length
    is preserved."""
    n = x.shape[0]
    if n < 2 or cutoff_hz <= 0:
        return x
    spec = np.fft.rfft(x)
    hz_per_bin = sample_rate / n
    hi_hz = cutoff_hz * 1.2
    k_lo = min(spec.shape[0], int(math.floor(cutoff_hz / hz_per_bin)) + 1)
    k_hi = min(spec.shape[0], int(math.ceil(hi_hz / hz_per_bin)))
    _roll_off(spec, k_lo, k_hi, hz_per_bin, cutoff_hz, hi_hz)
    spec[:k_lo] = 0
    return np.fft.irfft(spec, n=n).astype(np.float32, copy=False)


def _roll_off(spec: np.ndarray, k_lo: int, k_hi: int, hz_per_bin: float, zero_hz: float,
              one_hz: float) -> None:
    """Scale the bins ``k_lo:k_hi`` of ``spec`` in place along a raised cosine that is 0 at
    ``zero_hz`` and 1 at ``one_hz`` (either side): the edge of :func:`lowpass` and
    :func:`highpass`, computed on its few bins only."""
    if k_hi > k_lo:
        ramp = (np.arange(k_lo, k_hi) * hz_per_bin - zero_hz) / (one_hz - zero_hz)
        spec[k_lo:k_hi] *= 0.5 - 0.5 * np.cos(np.pi * np.clip(ramp, 0.0, 1.0))


# --------------------------------------------------------------------------------------------
# Pauses


def frame_rms(x: np.ndarray, sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """RMS of consecutive, non-overlapping frames of ``frame_seconds``; a last partial frame is
    measured over the samples it has."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    f = max(1, int(round(frame_seconds * sample_rate)))
    n_full = x.shape[0] // f
    out = list(np.sqrt(np.mean(x[: n_full * f].reshape(n_full, f) ** 2, axis=1)))
    if x.shape[0] > n_full * f:
        out.append(math.sqrt(float(np.mean(x[n_full * f:] ** 2))))
    return np.asarray(out, dtype=np.float64)


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

