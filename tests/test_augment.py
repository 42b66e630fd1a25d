"""Augmentation: pure, keyed by (seed, epoch, index), each part a switch, off in evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from speechmusic_jax import config as config_lib
from speechmusic_jax.data.augment import (
    AugmentConfig,
    add_noise,
    augment,
    coloured,
    highpass,
    low_runs,
    lowpass,
    pause_generator,
    shorten_pauses,
)

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


def test_highpass_removes_the_band_below_the_cutoff():
    x = _x(n=SR)
    y = highpass(x, 300.0, SR)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    assert spec_y[freqs <= 300].max() < 1e-3 * spec_x[freqs <= 300].max()
    np.testing.assert_allclose(spec_y[freqs > 360], spec_x[freqs > 360], rtol=1e-3)
    y = augment(x, AugmentConfig(highpass_prob=1.0, highpass_hz=(500.0, 800.0)), SR, 0, 1, 3)
    assert np.abs(np.fft.rfft(y))[freqs < 500].max() < 1e-3 * spec_x.max()
    # Its draws are its own: switching it on leaves the other parts' draws as they were.
    base = AugmentConfig(gain_db=6.0, noise_prob=1.0, lowpass_prob=1.0)
    plain = augment(x, base, SR, 0, 1, 5)
    both = augment(x, dataclasses.replace(base, highpass_prob=1.0, highpass_hz=(200.0, 200.0)),
                   SR, 0, 1, 5)
    np.testing.assert_allclose(both, highpass(plain, 200.0, SR), atol=1e-5)


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
    ("highpass_hz", (400.0, 100.0), "low <= high"),
    ("highpass_hz", (100.0, 7000.0), "Nyquist"),
    ("highpass_prob", -0.1, "must be a probability"),
    ("noise_snr_db", (30.0, 10.0), "low <= high"),
])
def test_config_validation(field, value, words):
    c = config_lib.base_config()
    c.data.augment[field] = value
    with pytest.raises(config_lib.ConfigError, match=words):
        config_lib.validate(c)


# --------------------------------------------------------------------------------------------
# Cue-breaking parts: noise colour, dither, pause shortening


def test_defaults_keep_the_white_noise_of_before():
    # The default colour (white) adds the same noise, sample for sample, as before colours.
    x = _x()
    rng = np.random.default_rng([0, 1, 2, 0xA06])
    _, snr, _, _, _, _ = (rng.random(), rng.uniform(10.0, 40.0), rng.random(),
                          rng.uniform(2000.0, 7000.0), rng.uniform(-0.0, 0.0), rng.random())
    noise = np.random.default_rng(int(rng.integers(0, 2**63 - 1))).standard_normal(
        SR, dtype=np.float32)
    sigma = np.sqrt(np.mean(np.square(x, dtype=np.float64)) / 10.0 ** (snr / 10.0))
    want = (x + np.float32(sigma) * noise).astype(np.float32)
    np.testing.assert_array_equal(augment(x, AugmentConfig(noise_prob=1.0), SR, 0, 1, 2), want)
    assert AugmentConfig().noise_colours == (0.0,)


@pytest.mark.parametrize("slope", [0.0, 1.0, 2.0])
def test_noise_colour_has_its_spectral_slope(slope):
    white = np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32)
    y = coloured(white, slope, SR) if slope else white
    assert abs(float(np.mean(y.astype(np.float64) ** 2)) - 1.0) < 0.05
    power = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(y.shape[0], 1 / SR)
    # Mean power per octave band from 100 Hz to 6.4 kHz: falls 10*slope*log10(2) dB per octave.
    bands = [power[(freqs >= f) & (freqs < 2 * f)].mean() for f in 100 * 2.0 ** np.arange(6)]
    fit = np.polyfit(np.arange(6), 10 * np.log10(bands), 1)[0]
    assert abs(fit + 3.01 * slope) < 0.5


def test_noise_colours_are_drawn_per_example():
    x = np.sin(np.arange(SR) * 0.05).astype(np.float32)
    cfg = AugmentConfig(noise_prob=1.0, noise_snr_db=(0.0, 0.0), noise_colours=(0.0, 2.0))
    lows = []
    for i in range(20):
        noise = augment(x, cfg, SR, 0, 1, i) - x
        power = np.abs(np.fft.rfft(noise)) ** 2
        lows.append(power[:500].sum() / power.sum())  # share below 500 Hz: 1/16 if white
    assert min(lows) < 0.15 and max(lows) > 0.8  # both colours occur


def test_dither_removes_exact_zeros_at_its_level():
    x = np.zeros(SR, np.float32)
    x[: SR // 2] = 0.25
    y = augment(x, AugmentConfig(dither_db=-80.0), SR, 0, 1, 0)
    assert not np.any(y == 0)
    rms_db = 20 * np.log10(np.sqrt(np.mean((y - x).astype(np.float64) ** 2)))
    assert abs(rms_db + 80.0) < 0.2
    assert not AugmentConfig(dither_db=0.0).active and AugmentConfig(dither_db=-80.0).active
    np.testing.assert_array_equal(y, augment(x, AugmentConfig(dither_db=-80.0), SR, 0, 1, 0))


def _tones_with_a_gap(gap_s=0.5):
    t = np.arange(SR // 2) / SR
    a = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    b = (0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    return a, b, np.concatenate([a, np.zeros(int(gap_s * SR), np.float32), b])


def test_shorten_pauses_leaves_a_short_gap_and_both_tones():
    a, b, x = _tones_with_a_gap()
    for i in range(5):
        y = shorten_pauses(x, SR, 80.0, (30.0, 80.0), np.random.default_rng(i))
        gap = y.shape[0] - a.shape[0] - b.shape[0]
        assert 0.030 * SR <= gap <= 0.080 * SR
        np.testing.assert_array_equal(y[: a.shape[0]], a)
        np.testing.assert_array_equal(y[a.shape[0] + gap:], b)
        assert not np.any(y[a.shape[0]: a.shape[0] + gap])


def test_shorten_pauses_keeps_short_pauses_and_continuous_audio():
    a, b, x = _tones_with_a_gap(gap_s=0.06)  # 60 ms: under pause_max_ms
    np.testing.assert_array_equal(shorten_pauses(x, SR, 80.0, (30.0, 80.0),
                                                 np.random.default_rng(0)), x)
    noise = _x()
    np.testing.assert_array_equal(shorten_pauses(noise, SR, 80.0, (30.0, 80.0),
                                                 np.random.default_rng(0)), noise)
    assert low_runs(np.zeros(100, np.float32), SR) == []  # all silent: nothing to compare with


def test_pause_generator_is_keyed_and_follows_the_probability():
    assert pause_generator(AugmentConfig(), 0, 1, 0) is None
    cfg = AugmentConfig(pause_prob=0.5)
    chosen = [pause_generator(cfg, 0, 1, i) is not None for i in range(200)]
    assert 70 < sum(chosen) < 130
    assert chosen == [pause_generator(cfg, 0, 1, i) is not None for i in range(200)]
    g1, g2 = pause_generator(AugmentConfig(pause_prob=1.0), 3, 2, 7), pause_generator(
        AugmentConfig(pause_prob=1.0), 3, 2, 7)
    assert g1.random() == g2.random()


@pytest.mark.parametrize(("field", "value", "words"), [
    ("noise_colours", (0.0, 5.0), "slopes in"),
    ("noise_colours", (), "slopes in"),
    ("pause_prob", -0.1, "must be a probability"),
    ("pause_keep_ms", (30.0, 120.0), "high <= data.augment.pause_max_ms"),
    ("pause_max_ms", 5.0, "at least 10"),
    ("dither_db", 6.0, r"0 \(off\)"),
    ("dither_db", -10.0, r"\[-160, -20\]"),
])
def test_config_validation_of_the_cue_breaking_parts(field, value, words):
    c = config_lib.base_config()
    c.data.augment[field] = value
    with pytest.raises(config_lib.ConfigError, match=f"data.augment.{field}: .*{words}"):
        config_lib.validate(c)
