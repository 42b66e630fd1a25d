"""Optional front end: a log-mel spectrogram computed in JAX, feeding the same conv stack.

The raw-waveform model (the default) learns its own filterbank in the strided stem. With
``model.frontend=logmel`` the waveform is framed (Hann window), transformed with an FFT, pooled
into mel bands and log-compressed; mel bands become the stem's input channels and the stem runs
over frames (stride 1). Nothing here is trained: the mel matrix is a constant of the trace.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, equally spaced on the HTK mel scale."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None]) / np.maximum(center - lower, 1e-9)[None]
    down = (upper[None] - freqs[:, None]) / np.maximum(upper - center, 1e-9)[None]
    fb = np.clip(np.minimum(up, down), 0.0, None)
    fb.flags.writeable = False
    return fb.astype(np.float32)


def frame_count(n_samples: int, win: int, hop: int) -> int:
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def log_mel(waveform: jax.Array, *, sample_rate: int, win: int, hop: int, n_mels: int) -> jax.Array:
    """(batch, samples) -> (batch, frames, n_mels) log-mel energies (float32)."""
    n_fft = 1 << (win - 1).bit_length()
    frames = frame_count(waveform.shape[1], win, hop)
    idx = hop * np.arange(frames)[:, None] + np.arange(win)[None]
    x = waveform.astype(jnp.float32)[:, idx] * jnp.asarray(np.hanning(win)[None, None], jnp.float32)
    power = jnp.square(jnp.abs(jnp.fft.rfft(x, n=n_fft, axis=-1)))
    mel = power @ jnp.asarray(mel_filterbank(n_fft, n_mels, sample_rate))
    return jnp.log(mel + 1e-6)
