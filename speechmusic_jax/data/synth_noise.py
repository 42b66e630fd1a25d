"""Noise-like clips for the built-in corpus's third class, ``noise``: neither speech nor music.

A clip is one of:
- coloured noise: stationary noise of power ~ f^-slope, white (0) to brown (2) and between;
- environmental textures (no voices): rain (dense small drops over hiss), wind (low noise whose
  level and colour gust slowly), a machine or fan (band-limited noise with a steady rotation
  tone), traffic (swelling low noise with passing swooshes);
- mains hum at 50 or 60 Hz with its harmonics, over a little hiss;
- near-silence: only a faint noise floor, sometimes a rare click.
It then goes through the recording chain of the other classes (:func:`synth_channel.record`:
room, background, band limits, codec, compression, level), so bandwidth, reverberation and
level (but near-silence's) do not tell it from them. Near-silence is brought down 20-40 dB
after the chain: being quiet is what it is. Against speech and music, noise differs by nature in
spectral flatness and crest factor (``cues``, CV accuracy about 0.6 on 60 clips per class;
docs/data.md, "Shortcut cues"); the other cues stay near chance.
"""

from __future__ import annotations

import numpy as np

from speechmusic_jax.data.synth_channel import hum, record
from speechmusic_jax.data.synth_dsp import coloured_noise, db_gain, fft_filter, interp, rms

KINDS = ("coloured", "rain", "wind", "machine", "traffic", "hum", "near_silence")


def noise_clip(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """A noise-like clip: float32 mono, ``round(seconds * sample_rate)`` samples in [-1, 1]."""
    sr = int(sample_rate)
    n = int(round(seconds * sr))
    kind = KINDS[int(rng.integers(len(KINDS)))]
    x = texture(rng, kind, n, sr)
    x = record(rng, x, sr)
    if kind == "near_silence":
        x = x * db_gain(-rng.uniform(20.0, 40.0))
    return x.astype(np.float32)


def texture(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Unit-RMS noise of ``kind`` (one of ``KINDS``), before the recording chain."""
    ts = np.arange(n) / sr
    f = np.fft.rfftfreq(n, 1.0 / sr)
    if kind == "coloured":
        x = coloured_noise(rng, n, sr, rng.choice([0.0, 1.0, 2.0, rng.uniform(0.0, 2.0)]))
    elif kind == "rain":  # many short decaying drops of random size over high hiss
        x = 0.3 * coloured_noise(rng, n, sr, rng.uniform(0.0, 0.7))
        count = int(rng.uniform(50, 400) * n / sr) + 1
        drop = np.exp(-np.arange(int(0.004 * sr)) / (0.0008 * sr))
        hits = np.zeros(n)
        hits[rng.integers(0, n, count)] = rng.lognormal(0.0, 0.7, count)
        x = x + np.convolve(hits * rng.choice([-1.0, 1.0], n), drop)[:n]
    elif kind == "wind":  # low-passed noise gusting in level and brightness
        step = rng.uniform(0.3, 1.2)
        gust = interp(ts, [(t, rng.uniform(0.1, 1.0)) for t in np.arange(0.0, ts[-1] + 1.5, step)])
        low = fft_filter(coloured_noise(rng, n, sr, 1.5), 1.0 / (1.0 + (f / 400.0) ** 2))
        x = (low / rms(low) + 0.3 * gust * coloured_noise(rng, n, sr, 0.5)) * gust
    elif kind == "machine":  # band-limited noise and a steady rotation tone with harmonics
        centre = np.exp(rng.uniform(np.log(200.0), np.log(min(3000.0, 0.3 * sr))))
        shaped = fft_filter(rng.standard_normal(n), np.exp(-0.5 * (np.log((f + 1) / centre)
                                                                     / 0.5) ** 2))
        rot = rng.uniform(20.0, 120.0)
        tone = sum(np.sin(2 * np.pi * rot * h * ts + rng.uniform(0, 6.3)) / h
                   for h in range(1, 5) if rot * h < 0.45 * sr)
        x = shaped / rms(shaped) + rng.uniform(0.1, 0.5) * tone / rms(tone)
    elif kind == "traffic":  # brown rumble that swells, and passing swooshes
        x = coloured_noise(rng, n, sr, 2.0)
        for _ in range(rng.integers(1, 4)):
            t0, width = rng.uniform(0.0, ts[-1]), rng.uniform(0.5, 2.0)
            x = x + 2 * np.exp(-0.5 * ((ts - t0) / (width / 3)) ** 2) * coloured_noise(
                rng, n, sr, rng.uniform(0.5, 1.5))
    elif kind == "hum":
        x = hum(rng, n, sr) + rng.uniform(0.05, 0.5) * rng.standard_normal(n)
    elif kind == "near_silence":  # a faint floor, sometimes a click
        x = coloured_noise(rng, n, sr, rng.uniform(0.0, 2.0))
        for at in rng.integers(0, n, rng.integers(0, 3)):
            x[at] += rng.uniform(5.0, 30.0) * rng.choice([-1.0, 1.0])
    else:
        raise ValueError(f"unknown noise kind {kind!r}; known: {KINDS}")
    return x / rms(x)
