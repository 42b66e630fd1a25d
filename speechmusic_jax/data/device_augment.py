"""Training augmentation on the device: pure JAX functions of (batch, key), vmapped over the batch.

The per-crop parts of ``data.augment`` (:class:`~speechmusic_jax.data.augment.AugmentConfig`)
run here, in a compiled function that the loop calls on each batch right before the train step
(:func:`make_batch_augment`; ``builder.compile_augment``), so the host only reads, decodes,
resamples and crops. Each part keeps its meaning and parameters:

- additive noise (probability ``noise_prob``) at an SNR drawn uniformly from ``noise_snr_db``
  relative to the crop's power (a silent crop gets none), its colour drawn per example from
  ``noise_colours``: a slope s, the noise's power spectrum falling as 1/f**s (0 white; the DC
  bin removed and the bins below 20 Hz given the 20 Hz gain; scaled back to unit power);
- a low-pass (``lowpass_prob``) at a cut-off drawn from ``lowpass_hz``: the gain falls along a
  raised cosine from 1 at 5/6 of the cut-off to 0 at the cut-off; a high-pass
  (``highpass_prob``) at a cut-off drawn from ``highpass_hz``: 0 up to the cut-off, rising along
  a raised cosine to 1 at 6/5 of it. Both in the frequency domain (length preserved), after the
  noise (a band-limited channel carries its noise band-limited too);
- gain uniform in [-gain_db, +gain_db] dB; polarity flip (``polarity_prob``);
- dither (``dither_db`` < 0): white noise of that absolute RMS level in dBFS, last.

Every random number is drawn whether its part is on or not (one vector of uniform numbers per
example, and the noise and the dither from keys of their own), so that switching one part on or
off leaves the draws of the others as they were. A part that is off
(probability or range 0) is left out of the program.

Keys: :func:`batch_key` folds (seed, epoch, step) into a key, from which the batch's random
numbers are drawn (:func:`draws`; row ``i`` uses row ``i`` of them): a fixed key gives a fixed
batch, a resumed run replays its epochs'
draws, and the rows a process supplies of a batch spread over several processes are augmented as
in the whole batch (the function runs on the global batch). The exact random numbers differ from
those of the numpy version this replaced (training draws from ``jax.random`` now); the
distributions are the same, which ``tests/test_device_augment.py`` checks against that version
(kept in ``tests/augment_reference.py``).

Pause shortening changes the crop's length (it works on a stretch twice as long, before the crop
is cut) and stays on the host (:mod:`speechmusic_jax.data.augment`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from speechmusic_jax.data.augment import AugmentConfig

_STREAM = 0xA06  # the augmentation's keys, apart from dropout's (seeded by init_seed)
_DRAWS = 9  # uniform numbers per example (see augment_example)


def base_key(seed: int) -> jax.Array:
    """The run's augmentation key, from the data seed (``seed``: the data's, not init_seed)."""
    return jax.random.fold_in(jax.random.key(seed), _STREAM)


def batch_key(base: jax.Array, epoch: jax.Array | int, step: jax.Array | int) -> jax.Array:
    """The key of the ``step``-th batch (from 0) of ``epoch`` (from 1)."""
    return jax.random.fold_in(jax.random.fold_in(base, epoch), step)


def augment_batch(x: jax.Array, key: jax.Array, cfg: AugmentConfig,
                  sample_rate: int) -> jax.Array:
    """(batch, samples) float32 augmented with ``key``: row ``i`` gets row ``i`` of the batch's
    draws (:func:`draws`)."""
    if not cfg.active:
        return x
    u, noise, dither = draws(key, x.shape, cfg)
    return jax.vmap(lambda *a: augment_example(*a, cfg, sample_rate))(x, u, noise, dither)


def draws(key: jax.Array, shape: tuple[int, int],
          cfg: AugmentConfig) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """The random numbers of a batch of ``shape`` (batch, samples): per example :data:`_DRAWS`
    uniform numbers in [0, 1), and standard normal noise for the parts that need it (None for
    a part that is off), each from a key of its own. Drawn flat and reshaped: on a CPU, XLA
    compiled a flat draw in a fifth of the time of a (batch, 9) one (measured here, jax 0.10)."""
    batch, n = shape
    k_u, k_noise, k_dither = jax.random.split(key, 3)
    u = jax.random.uniform(k_u, (batch * _DRAWS,)).reshape(batch, _DRAWS)
    noise = (jax.random.normal(k_noise, (batch * n,)).reshape(batch, n)
             if cfg.noise_prob > 0 else None)
    dither = (jax.random.normal(k_dither, (batch * n,)).reshape(batch, n)
              if cfg.dither_db < 0 else None)
    return u, noise, dither


def make_batch_augment(cfg: AugmentConfig, sample_rate: int) -> Callable | None:
    """(x, base key data, epoch, step) -> augmented x, for jit; None when no per-crop part is
    on. The base key comes as its raw data (``jax.random.key_data(base_key(seed))``: plain
    integers, which a host can place on the devices of several processes)."""
    if not cfg.active:
        return None

    def run(x: jax.Array, base: jax.Array, epoch: jax.Array, step: jax.Array) -> jax.Array:
        key = batch_key(jax.random.wrap_key_data(base), epoch, step)
        return augment_batch(x, key, cfg, sample_rate)

    return run


def augment_example(x: jax.Array, u: jax.Array, noise: jax.Array | None,
                    dither: jax.Array | None, cfg: AugmentConfig,
                    sample_rate: int) -> jax.Array:
    """One mono crop (samples,) augmented by ``cfg`` with its draws: ``u`` (:data:`_DRAWS`
    uniform numbers), ``noise`` and ``dither`` (standard normal, one per sample; None where the
    part is off)."""
    u_noise, u_low, u_high, u_pol = u[0], u[1], u[2], u[3]
    snr_db = _between(u[4], cfg.noise_snr_db)
    cutoff = _between(u[5], cfg.lowpass_hz)
    cuton = _between(u[6], cfg.highpass_hz)
    gain_db = _between(u[7], (-cfg.gain_db, cfg.gain_db))
    colour = jnp.minimum((u[8] * len(cfg.noise_colours)).astype(jnp.int32),
                         len(cfg.noise_colours) - 1)

    y = x.astype(jnp.float32)
    n = y.shape[0]
    coloured_too = any(c != 0 for c in cfg.noise_colours)
    if noise is not None:
        power = jnp.mean(jnp.square(y))
        sigma = jnp.where((u_noise < cfg.noise_prob) & (power > 0),
                          jnp.sqrt(power / (10.0 ** (snr_db / 10.0))), 0.0)
    response = None
    if cfg.lowpass_prob > 0:
        response = jnp.where(u_low < cfg.lowpass_prob, lowpass_gain(n, cutoff, sample_rate), 1.0)
    if cfg.highpass_prob > 0:
        high = jnp.where(u_high < cfg.highpass_prob, highpass_gain(n, cuton, sample_rate), 1.0)
        response = high if response is None else response * high
    if response is None and not coloured_too:  # nothing spectral: white noise, in time
        if noise is not None:
            y = y + sigma * noise
    else:  # one pass through the frequency domain: the noise's colour, then the filters
        spectrum = jnp.fft.rfft(y)
        if noise is not None:
            white = jnp.fft.rfft(noise)
            if coloured_too:
                slope = jnp.asarray(cfg.noise_colours, jnp.float32)[colour]
                white = jnp.where(slope == 0, white, colour_spectrum(white, slope, n,
                                                                     sample_rate))
            spectrum = spectrum + sigma * white
        if response is not None:
            spectrum = spectrum * response
        y = jnp.fft.irfft(spectrum, n=n).astype(jnp.float32)
    if cfg.gain_db > 0:
        y = y * (10.0 ** (gain_db / 20.0))
    if cfg.polarity_prob > 0:
        y = jnp.where(u_pol < cfg.polarity_prob, -y, y)
    if dither is not None:
        y = y + (10.0 ** (cfg.dither_db / 20.0)) * dither
    return y.astype(jnp.float32)


def _between(u: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    """``u`` (uniform in [0, 1)) mapped to uniform in [low, high)."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


def colour_spectrum(white: jax.Array, slope: jax.Array | float, n: int,
                    sample_rate: int) -> jax.Array:
    """The spectrum (``rfft``) of ``n`` samples of white noise shaped to a power spectrum
    falling as 1/f**``slope``, scaled to unit mean power in time (Parseval): the DC bin
    removed, bins below 20 Hz given the 20 Hz gain (a brown spectrum would otherwise pile its
    power into the lowest bin)."""
    freqs = jnp.fft.rfftfreq(n, 1.0 / sample_rate)
    gain = (jnp.maximum(freqs, 20.0) ** (-slope / 2.0)).at[0].set(0.0)
    shaped = white * gain
    # Each bin but DC (and Nyquist, for an even n) stands for two of the full spectrum's.
    twice = jnp.full(freqs.shape, 2.0).at[0].set(1.0)
    if n % 2 == 0:
        twice = twice.at[-1].set(1.0)
    rms = jnp.sqrt(jnp.sum(twice * jnp.square(jnp.abs(shaped)))) / n
    return jnp.where(rms > 0, shaped / jnp.maximum(rms, 1e-30), white)


def _raised_cosine(freqs: jax.Array, zero_hz: jax.Array, one_hz: jax.Array) -> jax.Array:
    """0 at ``zero_hz``, 1 at ``one_hz`` (either side), a raised cosine between."""
    ramp = jnp.clip((freqs - zero_hz) / (one_hz - zero_hz), 0.0, 1.0)
    return 0.5 - 0.5 * jnp.cos(jnp.pi * ramp)


def lowpass_gain(n: int, cutoff_hz: jax.Array, sample_rate: int) -> jax.Array:
    """The low-pass's gain on the ``n // 2 + 1`` bins of an ``n``-sample crop's spectrum."""
    freqs = jnp.fft.rfftfreq(n, 1.0 / sample_rate)
    return _raised_cosine(freqs, cutoff_hz, cutoff_hz * (1.0 - 1.0 / 6.0))


def highpass_gain(n: int, cutoff_hz: jax.Array, sample_rate: int) -> jax.Array:
    """The high-pass's gain on the bins of an ``n``-sample crop's spectrum."""
    freqs = jnp.fft.rfftfreq(n, 1.0 / sample_rate)
    return _raised_cosine(freqs, cutoff_hz, cutoff_hz * 1.2)
