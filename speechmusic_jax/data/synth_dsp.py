"""Signal helpers shared by the synthetic corpus's speech, music and channel generators.

Plain numpy on float64 signals; every function is pure (random numbers come from the caller's
``np.random.Generator``).
"""

from __future__ import annotations

import numpy as np


def n_fft_for(sample_rate: int) -> int:
    """About 32 ms, a power of two."""
    return max(64, 1 << int(np.ceil(np.log2(0.032 * sample_rate))))


def hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def stft(x: np.ndarray, n_fft: int) -> np.ndarray:
    """Hann-windowed STFT with hop n_fft/4; frame t is centred on sample t*hop - n_fft/2."""
    hop = n_fft // 4
    pad_end = n_fft + (-(len(x) + n_fft) % hop)
    xp = np.pad(x, (n_fft, pad_end))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop]
    return np.fft.rfft(frames * hann(n_fft), axis=1)


def istft(spec: np.ndarray, n_fft: int, length: int) -> np.ndarray:
    """The inverse of :func:`stft` (weighted overlap-add), cut to ``length`` samples."""
    hop = n_fft // 4
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * hann(n_fft)
    t = frames.shape[0]
    parts = frames.reshape(t, 4, hop)
    out = np.zeros((t + 3, hop))
    for k in range(4):
        out[k : k + t] += parts[:, k]
    # A periodic Hann window squared sums to 1.5 at 75 % overlap.
    return out.reshape(-1)[n_fft : n_fft + length] / 1.5


def frame_centres(n: int, n_fft: int) -> np.ndarray:
    """The centre (in samples) of each frame :func:`stft` makes of ``n`` samples."""
    hop = n_fft // 4
    t = (n + n_fft + (-(n + n_fft) % hop)) // hop + 1
    return np.arange(t) * hop - n_fft / 2


def interp(t: np.ndarray, points: list[tuple[float, float]], default: float = 0.0) -> np.ndarray:
    """Piecewise-linear curve through (time, value) breakpoints, evaluated at ``t``."""
    if not points:
        return np.full(len(t), default)
    pts = np.asarray(points, dtype=np.float64)
    order = np.argsort(pts[:, 0], kind="stable")
    return np.interp(t, pts[order, 0], pts[order, 1])


def add_at(buf: np.ndarray, start: int, sig: np.ndarray) -> None:
    """``buf[start:start+len(sig)] += sig``, clipped to the buffer at both ends."""
    if start >= len(buf) or start + len(sig) <= 0:
        return
    s0 = max(0, -start)
    end = min(len(buf), start + len(sig))
    buf[max(start, 0) : end] += sig[s0 : s0 + end - max(start, 0)]


def coloured_noise(rng: np.random.Generator, n: int, sample_rate: int, slope: float) -> np.ndarray:
    """Noise with power ~ f^-slope (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec *= np.maximum(f, 20.0) ** (-slope / 2)
    spec[0] = 0.0
    y = np.fft.irfft(spec, n=n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def db_gain(v: float) -> float:
    """The amplitude factor of ``v`` decibels."""
    return 10.0 ** (v / 20.0)


def resonator_gain(freqs: np.ndarray, centres: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Magnitude response of a cascade of second-order resonances (unit gain at 0 Hz).

    ``centres`` is (..., K) and ``bandwidths`` (K,); the result is (..., len(freqs))."""
    f2 = freqs[None, :, None] ** 2 if centres.ndim == 2 else freqs[:, None] ** 2
    ff = centres[:, None, :] ** 2 if centres.ndim == 2 else centres[None, :] ** 2
    bw = bandwidths[None, None, :] if centres.ndim == 2 else bandwidths[None, :]
    return np.prod(ff / np.sqrt((ff - f2) ** 2 + f2 * bw**2), axis=-1)


def fft_filter(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Filter ``x`` by a zero-phase magnitude ``response`` over ``np.fft.rfftfreq(len(x))``."""
    return np.fft.irfft(np.fft.rfft(x) * response, n=len(x))
