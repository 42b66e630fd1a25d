"""The numpy per-crop augmentation that training used before it moved to the device
(:mod:`speechmusic_jax.data.device_augment`), kept verbatim as the reference that the device
version is checked against in distribution (tests/test_device_augment.py). Tests only: training
has one path, the device's."""

from __future__ import annotations

import math

import numpy as np

from speechmusic_jax.data.augment import AugmentConfig

_STREAM = 0xA06
_EXTRA_STREAM = 0xA08


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
