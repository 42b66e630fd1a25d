"""Front ends: what turns the waveform into the first conv's input, computed in JAX.

``model.frontend`` chooses one:
- ``raw`` (the default): the waveform itself; the strided stem conv learns its own filterbank.
- ``sincnet`` (Ravanelli & Bengio 2018): the stem conv's kernels are band-pass filters built
  each call from two learnable numbers per filter, the low cut-off and the bandwidth in Hz
  (a Hamming-windowed difference of two sincs, ``sinc_kernels``); stride and pool as ``raw``.
- ``logmel``: framed (Hann window), FFT, pooled into mel bands, then compressed (log, or PCEN).
  Nothing is trained but PCEN's parameters.
- ``leaf`` (Zeghidour et al. 2021): complex Gabor filters with a learnable centre frequency and
  bandwidth each (``gabor_kernels``), squared modulus, a learnable Gaussian low-pass per channel
  that pools to frames (``gaussian_windows``), then PCEN with learnable per-channel parameters.

``logmel`` and ``leaf`` give frames (``stft_hop`` samples apart, each hearing ``stft_win``
samples; ``frame_count``) with ``n_mels`` channels: the stem conv runs over frames with stride 1.
Every learnable front end starts as a mel filterbank: centre frequencies and bandwidths come
from ``mel_bands`` (the HTK mel scale of ``hz_to_mel``/``mel_to_hz``, as ``mel_filterbank``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FRONTENDS = ("raw", "sincnet", "logmel", "leaf")
FRAME_FRONTENDS = ("logmel", "leaf")  # frames of stft_hop samples; the stem runs over frames
COMPRESSIONS = ("log", "pcen")
DEFAULT_COMPRESSION = {"logmel": "log", "leaf": "pcen"}
PCEN_INIT = dict(alpha=0.96, delta=2.0, root=2.0, smooth=0.04)  # LEAF's initial values
PCEN_FLOOR = 1e-6
LOG_FLOOR = 1e-6


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_bands(n: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, centre, upper) edges in Hz of ``n`` triangular bands equally spaced on the mel
    scale from 0 Hz to Nyquist: the bands of ``mel_filterbank``."""
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n + 2))
    return edges[:-2], edges[1:-1], edges[2:]


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, equally spaced on the HTK mel scale."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = mel_bands(n_mels, sample_rate)
    up = (freqs[:, None] - lower[None]) / np.maximum(center - lower, 1e-9)[None]
    down = (upper[None] - freqs[:, None]) / np.maximum(upper - center, 1e-9)[None]
    fb = np.clip(np.minimum(up, down), 0.0, None)
    fb.flags.writeable = False
    return fb.astype(np.float32)


def frame_count(n_samples: int, win: int, hop: int) -> int:
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def mel_power(waveform: jax.Array, *, sample_rate: int, win: int, hop: int,
              n_mels: int) -> jax.Array:
    """(batch, samples) -> (batch, frames, n_mels) mel energies (float32)."""
    n_fft = 1 << (win - 1).bit_length()
    frames = frame_count(waveform.shape[1], win, hop)
    idx = hop * np.arange(frames)[:, None] + np.arange(win)[None]
    x = waveform.astype(jnp.float32)[:, idx] * jnp.asarray(np.hanning(win)[None, None], jnp.float32)
    power = jnp.square(jnp.abs(jnp.fft.rfft(x, n=n_fft, axis=-1)))
    return power @ jnp.asarray(mel_filterbank(n_fft, n_mels, sample_rate))


def log_mel(waveform: jax.Array, *, sample_rate: int, win: int, hop: int, n_mels: int) -> jax.Array:
    """(batch, samples) -> (batch, frames, n_mels) log-mel energies (float32)."""
    return jnp.log(mel_power(waveform, sample_rate=sample_rate, win=win, hop=hop, n_mels=n_mels)
                   + LOG_FLOOR)


# -- SincNet --------------------------------------------------------------------------------

def sinc_init(n: int, sample_rate: int, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial (low cut-off, bandwidth) in Hz of ``n`` band-passes: each mel band's pass band
    between its triangle's half-maximum points, at least ``sample_rate / win`` wide (the
    window's resolution)."""
    lower, centre, upper = mel_bands(n, sample_rate)
    low = (lower + centre) / 2
    band = np.maximum((upper - lower) / 2, sample_rate / win)
    return low.astype(np.float32), band.astype(np.float32)


def sinc_kernels(low_hz: jax.Array, band_hz: jax.Array, *, sample_rate: int,
                 win: int) -> jax.Array:
    """(win, n) band-pass kernels from cut-offs ``low = |low_hz|`` and ``high = low +
    |band_hz|`` (at most Nyquist): ``2 high sinc(2 high t) - 2 low sinc(2 low t)`` (frequencies
    in cycles per sample, ``t`` the tap's offset from the kernel's centre) times a Hamming
    window, divided by ``2 (high - low)`` so that the pass band's gain is about 1."""
    low = jnp.abs(low_hz)[None] / sample_rate
    high = jnp.minimum(low + jnp.abs(band_hz)[None] / sample_rate, 0.5)
    t = jnp.asarray(np.arange(win) - (win - 1) / 2, jnp.float32)[:, None]
    kernel = 2 * high * jnp.sinc(2 * high * t) - 2 * low * jnp.sinc(2 * low * t)
    window = jnp.asarray(np.hamming(win), jnp.float32)[:, None]
    return kernel * window / jnp.maximum(2 * (high - low), 1e-6)


class SincConv(nnx.Module):
    """The SincNet stem: ``filters`` learnable band-passes of ``win`` taps, strided, no bias."""

    def __init__(self, filters: int, *, win: int, stride: int, sample_rate: int, dtype):
        low, band = sinc_init(filters, sample_rate, win)
        self.low_hz = nnx.Param(jnp.asarray(low))
        self.band_hz = nnx.Param(jnp.asarray(band))
        self.win, self.stride, self.sample_rate, self.dtype = win, stride, sample_rate, dtype

    def kernels(self) -> jax.Array:
        return sinc_kernels(self.low_hz[...], self.band_hz[...], sample_rate=self.sample_rate,
                            win=self.win)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(batch, samples, 1) -> (batch, steps, filters)."""
        kernel = self.kernels()[:, None, :].astype(self.dtype)
        return jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (self.stride,),
                                            "VALID", dimension_numbers=("NWC", "WIO", "NWC"))


# -- PCEN -----------------------------------------------------------------------------------

def pcen(energy: jax.Array, *, alpha: jax.Array, delta: jax.Array, root: jax.Array,
         smooth: jax.Array, floor: float = PCEN_FLOOR, smooth_min: float = 0.0) -> jax.Array:
    """Per-channel energy normalisation of (batch, frames, channels) energies, LEAF's form:
    ``M[t] = (1 - s) M[t-1] + s E[t]`` with ``M[0] = E[0]``, then
    ``(E / (floor + M)^alpha + delta)^(1/r) - delta^(1/r)``, with ``alpha`` at most 1, ``r`` at
    least 1, ``s`` in [smooth_min, 1] and ``delta`` at least ``floor`` (a learnt delta that went
    negative would take a root of a negative number), per channel. At ``s = 0`` the smoother
    never moves from the first frame, so every frame is divided by the first one's energy:
    ``smooth_min`` (``model.pcen_smooth_min``) keeps a learnt ``s`` from getting there."""
    alpha = jnp.minimum(alpha, 1.0)[None, None]
    delta = jnp.maximum(delta, floor)[None, None]
    root = jnp.maximum(root, 1.0)[None, None]
    smooth = jnp.clip(smooth, smooth_min, 1.0)[None]

    def step(m, e):
        m = (1 - smooth) * m + smooth * e
        return m, m

    _, m = jax.lax.scan(step, energy[:, 0], jnp.swapaxes(energy, 0, 1))
    m = jnp.swapaxes(m, 0, 1)
    inv = 1.0 / root
    return (energy / (floor + m) ** alpha + delta) ** inv - delta ** inv


class PCEN(nnx.Module):
    """PCEN with learnable per-channel alpha, delta, root and smoothing coefficient (used at
    ``smooth_min`` or above)."""

    def __init__(self, channels: int, smooth_min: float = 0.0):
        for name, value in PCEN_INIT.items():
            setattr(self, name, nnx.Param(jnp.full((channels,), value, jnp.float32)))
        self.smooth_min = smooth_min

    def __call__(self, energy: jax.Array) -> jax.Array:
        return pcen(energy, alpha=self.alpha[...], delta=self.delta[...], root=self.root[...],
                    smooth=self.smooth[...], smooth_min=self.smooth_min)


# -- LEAF -----------------------------------------------------------------------------------

GABOR_FWHM = 2 * np.sqrt(2 * np.log(2))  # a Gaussian's full width at half maximum, in sigmas
POOL_SIGMA_INIT = 0.4  # LEAF's: the low-pass's sigma in half-windows
LEAF_CHUNK = 8  # examples filtered at once (Leaf.energies)


def gabor_sigma_range(win: int) -> tuple[float, float]:
    """LEAF's bounds on a Gabor filter's time sigma (samples): at least a few samples, at most
    what the kernel's half-width holds."""
    return 4 * np.sqrt(2 * np.log(2)) / np.pi, win * np.sqrt(2 * np.log(2)) / np.pi


def gabor_init(n: int, sample_rate: int, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial (centre in radians per sample, time sigma in samples) of ``n`` Gabor filters:
    the mel bands' centres, and the sigma whose Gaussian frequency response has the mel
    triangle's full width at half maximum (``(upper - lower) / 2``), within
    ``gabor_sigma_range``."""
    lower, centre, upper = mel_bands(n, sample_rate)
    fwhm = 2 * np.pi * (upper - lower) / 2 / sample_rate
    sigma = np.clip(GABOR_FWHM / fwhm, *gabor_sigma_range(win))
    return (2 * np.pi * centre / sample_rate).astype(np.float32), sigma.astype(np.float32)


def gabor_kernels(centre: jax.Array, sigma: jax.Array, *, win: int) -> jax.Array:
    """(win, n) complex kernels ``exp(i centre t) exp(-t^2 / (2 sigma^2)) / (sqrt(2 pi)
    sigma)``, ``t`` the tap's offset from the centre; centre clipped to [0, pi] and sigma to
    ``gabor_sigma_range``."""
    centre = jnp.clip(centre, 0.0, np.pi)[None]
    sigma = jnp.clip(sigma, *gabor_sigma_range(win))[None]
    t = jnp.asarray(np.arange(win) - (win - 1) / 2, jnp.float32)[:, None]
    envelope = jnp.exp(-0.5 * jnp.square(t / sigma)) / (np.sqrt(2 * np.pi) * sigma)
    return envelope * jnp.exp(1j * centre * t)


def gaussian_windows(sigma: jax.Array, *, win: int) -> jax.Array:
    """(win, n) low-pass windows ``exp(-((t / (sigma (win - 1) / 2))^2) / 2)``, sigma clipped
    to [2 / win, 0.5] as in LEAF."""
    sigma = jnp.clip(sigma, 2.0 / win, 0.5)[None]
    t = jnp.asarray(np.arange(win) - (win - 1) / 2, jnp.float32)[:, None]
    return jnp.exp(-0.5 * jnp.square(t / (sigma * (win - 1) / 2)))


def gabor_power(waveform: jax.Array, kernels: jax.Array) -> jax.Array:
    """(batch, samples) correlated with each of (win, n) complex kernels, centred ("SAME", zero
    padding), squared modulus: (batch, n, samples), channel-major. Computed with FFTs (one
    inverse transform per example and channel) instead of a direct conv of win taps at every
    sample; channel-major because the transforms run along time, so no complex array (slow to
    write on XLA CPU) is ever transposed."""
    n, win = waveform.shape[1], kernels.shape[0]
    length = 1 << (n + win - 2).bit_length()
    x = jnp.fft.fft(waveform.astype(jnp.float32), n=length, axis=-1)  # (batch, length)
    h = jnp.fft.fft(kernels[::-1].T, n=length, axis=-1)  # (n, length): the flipped kernels
    start = win - 1 - win // 2
    y = jnp.fft.ifft(x[:, None] * h[None], axis=-1)[..., start:start + n]
    return jnp.square(y.real) + jnp.square(y.imag)


def window_pool(energy: jax.Array, windows: jax.Array, hop: int) -> jax.Array:
    """(batch, n, samples) energies, each channel weighted by its own (win, n) window over
    ``win`` samples every ``hop`` samples: (batch, frame_count(samples, win, hop), n), frame
    ``f`` being ``sum_k windows[k] energy[hop f + k]``.

    The same sums as a strided depthwise conv, computed as one batched matmul: the samples cut
    into blocks of ``hop``, each block weighted by each ``hop``-long piece of the (zero-padded)
    window, and a frame the sum of ``ceil(win / hop)`` consecutive blocks' pieces. XLA CPU's
    depthwise conv of a long window took seconds per example in the backward pass."""
    batch, n, samples = energy.shape
    win = windows.shape[0]
    frames = frame_count(samples, win, hop)
    pieces = -(-win // hop)
    blocks = frames + pieces - 1
    w = jnp.pad(windows.T, ((0, 0), (0, pieces * hop - win))).reshape(n, pieces, hop)
    need = blocks * hop  # at most samples + hop - 1: the last window's zero padding
    x = jnp.pad(energy[..., :need], ((0, 0), (0, 0), (0, max(0, need - samples))))
    x = x.reshape(batch, n, blocks, hop).astype(w.dtype)
    # (n, batch, blocks, pieces): each block against each piece of its channel's window
    parts = jax.lax.dot_general(x, w, (((3,), (2,)), ((1,), (0,))))
    out = sum(parts[:, :, k:k + frames, k] for k in range(pieces))
    return out.transpose(1, 2, 0)


def pooled_gabor_energies(waveform: jax.Array, kernels: jax.Array, windows: jax.Array,
                          hop: int) -> jax.Array:
    """``window_pool(gabor_power(waveform, kernels), windows, hop)``: (batch, samples) ->
    (batch, frames, n), computed ``LEAF_CHUNK`` examples at a time (``jax.lax.map``), each
    chunk recomputed in the backward pass (``jax.checkpoint``) instead of keeping its filtered
    signals: those are (batch, n, samples) complex, 0.5 GB for 32 two-second crops, and
    streaming them through memory cost more than a second inverse FFT."""

    @jax.checkpoint
    def chunk_energies(x: jax.Array) -> jax.Array:
        return window_pool(gabor_power(x, kernels), windows, hop)

    batch, samples = waveform.shape
    size = max(1, min(batch, LEAF_CHUNK))
    x = jnp.pad(waveform, ((0, -batch % size), (0, 0))).reshape(-1, size, samples)
    e = jax.lax.map(chunk_energies, x)
    return e.reshape(-1, *e.shape[2:])[:batch]


class Leaf(nnx.Module):
    """The LEAF front end: Gabor filters -> squared modulus -> Gaussian low-pass pooling ->
    compression (PCEN, learnable; or log)."""

    PARTS = ("compress",)

    def __init__(self, n: int, *, sample_rate: int, win: int, hop: int, compression: str,
                 smooth_min: float = 0.0):
        centre, sigma = gabor_init(n, sample_rate, win)
        self.centre = nnx.Param(jnp.asarray(centre))
        self.sigma = nnx.Param(jnp.asarray(sigma))
        self.pool_sigma = nnx.Param(jnp.full((n,), POOL_SIGMA_INIT, jnp.float32))
        self.compress = PCEN(n, smooth_min) if compression == "pcen" else None
        self.win, self.hop = win, hop

    def energies(self, waveform: jax.Array) -> jax.Array:
        """(batch, samples) -> (batch, frames, n) pooled Gabor energies (before compression)."""
        return pooled_gabor_energies(
            waveform, gabor_kernels(self.centre[...], self.sigma[...], win=self.win),
            gaussian_windows(self.pool_sigma[...], win=self.win), self.hop)

    def __call__(self, waveform: jax.Array) -> jax.Array:
        e = self.energies(waveform)
        return self.compress(e) if self.compress is not None else jnp.log(e + LOG_FLOOR)


class MelFrontend(nnx.Module):
    """Log-mel with PCEN instead of the log: the PCEN parameters are its only ones."""

    PARTS = ("compress",)

    def __init__(self, n_mels: int, *, sample_rate: int, win: int, hop: int,
                 smooth_min: float = 0.0):
        self.compress = PCEN(n_mels, smooth_min)
        self.sample_rate, self.win, self.hop, self.n_mels = sample_rate, win, hop, n_mels

    def __call__(self, waveform: jax.Array) -> jax.Array:
        return self.compress(mel_power(waveform, sample_rate=self.sample_rate, win=self.win,
                                       hop=self.hop, n_mels=self.n_mels))
