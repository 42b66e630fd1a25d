"""Training-time augmentation: pure functions of (crop, config, seed, epoch, index).

Each part is a config switch (``data.augment.*``) and is off when its probability or range is 0:

- additive white noise at a signal-to-noise ratio drawn uniformly from ``noise_snr_db``;
- band-limiting: a random low-pass with its cut-off drawn from ``lowpass_hz``, so that a model
  cannot tell the classes apart by bandwidth alone;
- random gain, uniform in [-gain_db, +gain_db] decibels;
- polarity flip (the sign of every sample).

They are applied in that order (noise before the low-pass: a band-limited channel carries its
noise band-limited too). The random crop position is chosen with the epoch's plan in
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


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    random_crop: bool = True
    gain_db: float = 0.0
    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    polarity_prob: float = 0.0
    lowpass_prob: float = 0.0
    lowpass_hz: tuple[float, float] = (2000.0, 7000.0)

    @property
    def active(self) -> bool:
        """True when any per-example transform is on (the crop position is not one)."""
        return bool(self.gain_db > 0 or self.noise_prob > 0 or self.polarity_prob > 0
                    or self.lowpass_prob > 0)

    @classmethod
    def from_config(cls, a) -> AugmentConfig:
        """From the ``data.augment`` ConfigDict (or anything with the same attributes)."""
        return cls(bool(a.random_crop), float(a.gain_db), float(a.noise_prob),
                   _pair(a.noise_snr_db), float(a.polarity_prob), float(a.lowpass_prob),
                   _pair(a.lowpass_hz))


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
    y = np.array(x, dtype=np.float32, copy=True)
    if cfg.noise_prob > 0 and u_noise < cfg.noise_prob:
        y = add_noise(y, snr, noise_seed)
    if cfg.lowpass_prob > 0 and u_low < cfg.lowpass_prob:
        y = lowpass(y, cutoff, sample_rate)
    if cfg.gain_db > 0:
        y *= np.float32(10.0 ** (gain / 20.0))
    if cfg.polarity_prob > 0 and u_pol < cfg.polarity_prob:
        np.negative(y, out=y)
    return y


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``x`` plus white Gaussian noise at ``snr_db`` relative to the power of ``x``.

    A silent crop has no power to measure against; it gets no noise.
    """
    power = float(np.mean(np.square(x, dtype=np.float64)))
    if power <= 0.0:
        return x
    sigma = math.sqrt(power / (10.0 ** (snr_db / 10.0)))
    noise = np.random.default_rng(seed).standard_normal(x.shape[0], dtype=np.float32)
    return (x + np.float32(sigma) * noise).astype(np.float32, copy=False)


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
    if k_hi > k_lo:  # the roll-off, computed on its few bins only
        ramp = (cutoff_hz - np.arange(k_lo, k_hi) * hz_per_bin) / (cutoff_hz - lo_hz)
        spec[k_lo:k_hi] *= 0.5 - 0.5 * np.cos(np.pi * np.clip(ramp, 0.0, 1.0))
    spec[k_hi:] = 0
    return np.fft.irfft(spec, n=n).astype(np.float32, copy=False)
