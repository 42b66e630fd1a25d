"""Augmentation's config and its host part (pause shortening); the per-crop parts run on the
device (tests/test_device_augment.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from speechmusic_jax import config as config_lib
from speechmusic_jax.data.augment import (
    AugmentConfig,
    frame_rms,
    low_runs,
    pause_generator,
    shorten_pauses,
)

SR = 16000


def _x(seed=0, n=SR) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(n)).astype(np.float32)


def test_active_means_a_per_crop_part_is_on():
    assert not AugmentConfig().active
    assert not AugmentConfig(pause_prob=1.0, random_crop=False).active  # the host's parts
    assert AugmentConfig(dither_db=-80.0).active and AugmentConfig(gain_db=1.0).active


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


def _frame_rms_per_frame(x: np.ndarray, f: int) -> np.ndarray:
    """The frame RMS as the pause rule defines it, one frame at a time in float64."""
    x = x.astype(np.float64)
    return np.asarray([np.sqrt(np.mean(x[i:i + f] ** 2)) for i in range(0, x.shape[0], f)])


@pytest.mark.parametrize("n", [0, 5, 160, 16000, 16037])
def test_frame_rms_is_each_frames_rms_and_a_last_partial_frame(n):
    x = _x(n=n) * np.repeat(np.linspace(0, 1, 200), 100)[:n].astype(np.float32)
    got = frame_rms(x, SR)
    assert got.dtype == np.float64 and got.shape == (-(-n // 160),)
    np.testing.assert_allclose(got, _frame_rms_per_frame(x, 160), rtol=1e-12, atol=0)


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
