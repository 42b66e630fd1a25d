"""Augmentation on the device: keyed, pure, and the same in distribution as the numpy version it
replaced (tests/augment_reference.py): measured over many draws, never draw for draw."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from augment_reference import augment as reference
from augment_reference import coloured as reference_coloured

from speechmusic_jax.data import device_augment
from speechmusic_jax.data.augment import AugmentConfig

SR = 16000
N = 4096  # samples per test crop
DRAWS = 256


def _x(seed=0, n=N, rows=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((rows, n))).astype(np.float32)


def _device(x: np.ndarray, cfg: AugmentConfig, seed=0, epoch=1, step=0) -> np.ndarray:
    """The device augmentation of the batch ``x`` as training draws it."""
    key = device_augment.batch_key(device_augment.base_key(seed), epoch, step)
    return np.asarray(jax.jit(device_augment.augment_batch, static_argnums=(2, 3))(
        x, key, cfg, SR))


def _both(x1: np.ndarray, cfg: AugmentConfig, draws=DRAWS) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` augmentations of the one crop ``x1``: on the device and by the reference."""
    dev = _device(np.repeat(x1[None], draws, axis=0), cfg)
    ref = np.stack([reference(x1, cfg, SR, 0, 1, i) for i in range(draws)])
    return dev, ref


ALL_ON = AugmentConfig(gain_db=6.0, noise_prob=0.8, noise_snr_db=(0.0, 30.0), polarity_prob=0.5,
                       lowpass_prob=0.6, highpass_prob=0.4, noise_colours=(0.0, 1.0, 2.0),
                       dither_db=-80.0)


def test_a_fixed_key_gives_a_fixed_batch_and_other_keys_other_batches():
    x = np.repeat(_x(), 4, axis=0)
    before = x.copy()
    a = _device(x, ALL_ON)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(a, _device(x, ALL_ON))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert all(not np.array_equal(a[0], a[i]) for i in (1, 2, 3))  # each row its own draws
    for other in [dict(seed=1), dict(epoch=2), dict(step=1)]:
        b = _device(x, ALL_ON, **other)
        assert not np.any([np.array_equal(a[i], b[i]) for i in range(4)])


def test_each_row_is_augmented_alone_with_its_row_of_the_draws():
    x = _x(rows=3)
    key = device_augment.batch_key(device_augment.base_key(5), 2, 7)
    whole = _device(x, ALL_ON, seed=5, epoch=2, step=7)
    u, noise, dither = device_augment.draws(key, x.shape, ALL_ON)
    one = jax.jit(device_augment.augment_example, static_argnums=(4, 5))
    for i in range(3):
        np.testing.assert_allclose(whole[i], np.asarray(one(x[i], u[i], noise[i], dither[i],
                                                            ALL_ON, SR)), rtol=1e-5, atol=1e-6)


def test_off_is_left_out():
    assert device_augment.make_batch_augment(AugmentConfig(), SR) is None
    x = _x(rows=2)
    np.testing.assert_array_equal(_device(x, AugmentConfig(random_crop=False)), x)


def test_switching_one_part_does_not_change_the_draws_of_another():
    x = _x(rows=4)
    gain_only = _device(x, AugmentConfig(gain_db=6.0))
    np.testing.assert_allclose(_device(x, AugmentConfig(gain_db=6.0, polarity_prob=1.0)),
                               -gain_only)
    base = AugmentConfig(gain_db=6.0, noise_prob=1.0)
    with_dither = _device(x, dataclasses.replace(base, dither_db=-120.0))
    np.testing.assert_allclose(with_dither, _device(x, base), atol=1e-5)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda v: np.searchsorted(np.sort(v), grid, side="right") / v.size  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def test_gain_is_uniform_in_its_range_like_the_reference():
    x = _x()[0]
    dev, ref = _both(x, AugmentConfig(gain_db=6.0))
    gains = [np.asarray([20 * np.log10(np.abs(r).max() / np.abs(x).max()) for r in y])
             for y in (dev, ref)]
    for g in gains:
        assert g.min() >= -6.0 - 1e-3 and g.max() <= 6.0 + 1e-3
        assert abs(g.mean()) < 0.7 and abs(g.std() - 12 / np.sqrt(12)) < 0.4
    assert _ks(*gains) < 0.15


def test_polarity_flips_as_often_as_the_reference():
    x = _x()[0]
    dev, ref = _both(x, AugmentConfig(polarity_prob=0.3))
    flips = [np.mean(y[:, 0] == -x[0]) for y in (dev, ref)]
    assert all(0.2 < f < 0.4 for f in flips) and abs(flips[0] - flips[1]) < 0.1


def test_noise_snr_distribution_and_probability_match_the_reference():
    x = np.sin(np.arange(N) * 0.05).astype(np.float32)
    cfg = AugmentConfig(noise_prob=0.7, noise_snr_db=(0.0, 30.0))
    dev, ref = _both(x, cfg)
    snrs = []
    for y in (dev, ref):
        residual = np.mean((y - x).astype(np.float64) ** 2, axis=1)
        noisy = residual > 0
        assert 0.6 < noisy.mean() < 0.8
        snrs.append(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / residual[noisy]))
    for s in snrs:  # uniform in [0, 30] dB: mean 15, std 8.7
        assert s.min() > -0.5 and s.max() < 30.5
        assert abs(s.mean() - 15.0) < 1.5 and abs(s.std() - 8.66) < 1.0
    assert _ks(*snrs) < 0.2
    silent = np.zeros((2, N), np.float32)
    np.testing.assert_array_equal(_device(silent, AugmentConfig(noise_prob=1.0)), silent)


def _octave_slope(y: np.ndarray) -> float:
    """dB per octave of the mean power in octave bands from 100 Hz to 3.2 kHz."""
    power = np.mean(np.abs(np.fft.rfft(np.atleast_2d(y).astype(np.float64), axis=-1)) ** 2,
                    axis=0)
    freqs = np.fft.rfftfreq(np.atleast_2d(y).shape[-1], 1 / SR)
    bands = [power[(freqs >= f) & (freqs < 2 * f)].mean() for f in 100 * 2.0 ** np.arange(6)]
    return float(np.polyfit(np.arange(6), 10 * np.log10(bands), 1)[0])


@pytest.mark.parametrize("slope", [0.0, 1.0, 2.0])
def test_noise_colour_has_the_spectral_slope_of_the_reference(slope):
    white = np.random.default_rng(0).standard_normal((16, N)).astype(np.float32)
    dev = np.fft.irfft(np.asarray(jax.vmap(lambda w: device_augment.colour_spectrum(
        jax.numpy.fft.rfft(w), slope, N, SR))(white)), n=N)
    ref = np.stack([reference_coloured(w, slope, SR) for w in white])
    for y in (dev, ref):
        assert abs(float(np.mean(y.astype(np.float64) ** 2)) - 1.0) < 0.02
        assert abs(_octave_slope(y) + 3.01 * slope) < 0.5
    assert abs(_octave_slope(dev) - _octave_slope(ref)) < 0.3
    # Through the augmentation: the noise a crop gets has the colour's slope.
    x = np.sin(np.arange(N) * 0.05).astype(np.float32)
    cfg = AugmentConfig(noise_prob=1.0, noise_snr_db=(0.0, 0.0), noise_colours=(slope,))
    noise = _device(np.repeat(x[None], 16, axis=0), cfg) - x
    assert abs(_octave_slope(noise) + 3.01 * slope) < 0.6


def test_noise_colours_are_drawn_per_example_as_often_as_in_the_reference():
    x = np.sin(np.arange(N) * 0.05).astype(np.float32)
    cfg = AugmentConfig(noise_prob=1.0, noise_snr_db=(0.0, 0.0), noise_colours=(0.0, 2.0))
    shares = []
    for y in _both(x, cfg, draws=128):
        power = np.abs(np.fft.rfft(y - x, axis=1)) ** 2
        low = power[:, : N // 32].sum(1) / power.sum(1)  # below 500 Hz: 1/16 if white
        assert low.min() < 0.15 and low.max() > 0.8
        shares.append(np.mean(low > 0.5))  # brown
    assert all(0.35 < s < 0.65 for s in shares) and abs(shares[0] - shares[1]) < 0.15


def _response(y: np.ndarray, x: np.ndarray, hz: list[float]) -> np.ndarray:
    """Mean power gain over the draws at each frequency in ``hz``."""
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    gain = (np.abs(np.fft.rfft(y, axis=-1)) ** 2).mean(0) / np.abs(np.fft.rfft(x)) ** 2
    return np.asarray([gain[np.argmin(np.abs(freqs - f))] for f in hz])


@pytest.mark.parametrize(("field", "hz", "cfg"), [
    ("lowpass", [1000.0, 2200.0, 3000.0, 3600.0, 5000.0],
     AugmentConfig(lowpass_prob=0.6, lowpass_hz=(2500.0, 4500.0))),
    ("highpass", [50.0, 150.0, 250.0, 380.0, 2000.0],
     AugmentConfig(highpass_prob=0.4, highpass_hz=(100.0, 300.0))),
])
def test_filter_response_over_draws_matches_the_reference(field, hz, cfg):
    x = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    dev, ref = _both(x, cfg)
    r_dev, r_ref = _response(dev, x, hz), _response(ref, x, hz)
    np.testing.assert_allclose(r_dev, r_ref, atol=0.1)
    assert r_dev.max() <= 1.0 + 1e-4
    # A fixed cut-off: the same response as the reference's, bin for bin.
    fixed = dataclasses.replace(cfg, **{f"{field}_prob": 1.0,
                                        f"{field}_hz": (3000.0, 3000.0) if field == "lowpass"
                                        else (200.0, 200.0)})
    dev, ref = _both(x, fixed, draws=2)
    np.testing.assert_allclose(np.abs(np.fft.rfft(dev[0])), np.abs(np.fft.rfft(ref[0])),
                               atol=2e-3 * np.abs(np.fft.rfft(x)).max())


def test_dither_removes_exact_zeros_at_its_level():
    x = np.zeros((2, SR), np.float32)
    x[:, : SR // 2] = 0.25
    y = _device(x, AugmentConfig(dither_db=-80.0))
    assert not np.any(y == 0)
    rms_db = 20 * np.log10(np.sqrt(np.mean((y - x).astype(np.float64) ** 2)))
    assert abs(rms_db + 80.0) < 0.2


def test_all_parts_together_keep_the_reference_level():
    x = _x()[0]
    dev, ref = _both(x, ALL_ON)
    levels = [10 * np.log10(np.mean(y.astype(np.float64) ** 2, axis=1)) for y in (dev, ref)]
    assert abs(levels[0].mean() - levels[1].mean()) < 1.0
    assert abs(levels[0].std() - levels[1].std()) < 1.0
    assert _ks(*levels) < 0.2
