"""Augmentation: pure, keyed by (seed, epoch, index), each part a switch, off in evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from speechmusic_jax import config as config_lib
from speechmusic_jax.data.augment import AugmentConfig, add_noise, augment, lowpass

SR = 16000
ALL_ON = AugmentConfig(gain_db=6.0, noise_prob=1.0, noise_snr_db=(10.0, 20.0), polarity_prob=0.5,
                       lowpass_prob=1.0, lowpass_hz=(2000.0, 4000.0))


def _x(seed=0, n=SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(n)).astype(np.float32)


def test_pure_and_keyed_by_seed_epoch_index():
    x = _x()
    before = x.copy()
    a = augment(x, ALL_ON, SR, seed=0, epoch=1, index=5)
    np.testing.assert_array_equal(x, before)  # the input is not modified
    np.testing.assert_array_equal(a, augment(x, ALL_ON, SR, seed=0, epoch=1, index=5))
    for other in [dict(seed=1, epoch=1, index=5), dict(seed=0, epoch=2, index=5),
                  dict(seed=0, epoch=1, index=6)]:
        assert not np.array_equal(a, augment(x, ALL_ON, SR, **other))
    assert a.dtype == np.float32 and a.shape == x.shape


def test_off_by_default_returns_the_crop_unchanged():
    x = _x()
    assert augment(x, AugmentConfig(), SR, 0, 1, 0) is x
    assert not AugmentConfig().active and ALL_ON.active


def test_gain_stays_in_range():
    cfg = AugmentConfig(gain_db=6.0)
    x = _x()
    ratios = [np.abs(augment(x, cfg, SR, 0, 1, i)).max() / np.abs(x).max() for i in range(50)]
    db = 20 * np.log10(ratios)
    assert db.min() >= -6.0 - 1e-4 and db.max() <= 6.0 + 1e-4 and db.max() - db.min() > 6


def test_polarity_flip():
    x = _x()
    np.testing.assert_array_equal(augment(x, AugmentConfig(polarity_prob=1.0), SR, 0, 1, 0), -x)
    flips = [augment(x, AugmentConfig(polarity_prob=0.5), SR, 0, 1, i)[0] == -x[0]
             for i in range(200)]
    assert 70 < sum(flips) < 130


def test_noise_at_the_requested_snr():
    x = np.sin(np.arange(SR) * 0.05).astype(np.float32)
    y = augment(x, AugmentConfig(noise_prob=1.0, noise_snr_db=(20.0, 20.0)), SR, 0, 1, 0)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert abs(snr - 20.0) < 0.5
    silent = np.zeros(100, np.float32)
    np.testing.assert_array_equal(add_noise(silent, 10.0, 0), silent)  # nothing to measure


def test_lowpass_removes_the_band_above_the_cutoff():
    x = _x(n=SR)
    y = lowpass(x, 3000.0, SR)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    assert spec_y[freqs > 3000].max() < 1e-3 * spec_x[freqs > 3000].max()
    np.testing.assert_allclose(spec_y[freqs < 2400], spec_x[freqs < 2400], rtol=1e-3)
    y = augment(x, AugmentConfig(lowpass_prob=1.0, lowpass_hz=(1000.0, 2000.0)), SR, 0, 1, 3)
    assert np.abs(np.fft.rfft(y))[freqs > 2000].max() < 1e-3 * spec_x.max()


def test_switching_one_part_does_not_change_the_draws_of_another():
    x = _x()
    gain_only = augment(x, AugmentConfig(gain_db=6.0), SR, 0, 1, 4)
    gain_and_flip = augment(x, AugmentConfig(gain_db=6.0, polarity_prob=1.0), SR, 0, 1, 4)
    np.testing.assert_array_equal(gain_and_flip, -gain_only)


def test_from_config_reads_data_augment():
    c = config_lib.base_config()
    c.data.augment.gain_db = 3.0
    c.data.augment.lowpass_hz = (1000.0, 5000.0)
    a = AugmentConfig.from_config(c.data.augment)
    assert a == dataclasses.replace(AugmentConfig(), gain_db=3.0, lowpass_hz=(1000.0, 5000.0))


@pytest.mark.parametrize(("field", "value", "words"), [
    ("noise_prob", 1.5, "must be a probability"),
    ("gain_db", -1.0, "must be >= 0"),
    ("lowpass_hz", (5000.0, 9000.0), "Nyquist"),
    ("noise_snr_db", (30.0, 10.0), "low <= high"),
])
def test_config_validation(field, value, words):
    c = config_lib.base_config()
    c.data.augment[field] = value
    with pytest.raises(config_lib.ConfigError, match=words):
        config_lib.validate(c)
