"""The cue-analysis tool: each cue on signals whose value is known, the threshold search on
hand-made values, and one run of the command on a small fake corpus."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from audio_fixtures import make_folder_tree, write
from augment_reference import lowpass

from speechmusic_jax import cues
from speechmusic_jax.data import audio

SR = 16000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sine(amplitude=0.5, hz=1000.0, seconds=1.0):
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)).astype(
        np.float32)


def test_level_and_crest_of_a_sine():
    x = _sine(0.5)
    assert cues.level_dbfs(x) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=1e-4)
    assert cues.crest_db(x) == pytest.approx(10 * math.log10(2), abs=1e-4)
    assert cues.level_dbfs(np.full(100, 0.25, np.float32)) == pytest.approx(-12.0412, abs=1e-4)
    assert cues.level_dbfs(np.zeros(10)) == -math.inf and cues.crest_db(np.zeros(10)) == 0.0


def test_pause_share_of_a_clip_with_40_percent_silence():
    x = _sine()
    x[int(0.3 * SR): int(0.7 * SR)] = 0.0  # 40 of the 100 10-ms frames
    assert cues.pause_share(x, SR) == pytest.approx(0.4)
    x[int(0.3 * SR): int(0.7 * SR)] = 1e-4  # -74 dB: still a pause; -30 dB would not be
    assert cues.pause_share(x, SR) == pytest.approx(0.4)
    x[int(0.3 * SR): int(0.7 * SR)] = 0.02
    assert cues.pause_share(x, SR) == 0.0
    assert cues.pause_share(_sine(), SR) == 0.0


def test_exact_zeros_are_counted_on_the_stored_samples(tmp_path):
    x = 0.3 + _sine(0.1)  # never 0 but where it is set to 0
    x[: SR // 4] = 0.0
    path = write(tmp_path / "a.wav", x, SR, "PCM_16")
    assert audio.exact_zero_share(path) == 0.25
    stereo = np.stack([x, np.where(np.arange(SR) < SR // 8, 0.0, 0.1)], axis=1)
    path = write(tmp_path / "b.wav", stereo.astype(np.float32), SR, "PCM_16")
    assert audio.exact_zero_share(path) == 0.125  # where both channels are 0


def test_bandwidth_of_low_passed_noise_and_flatness():
    noise = np.random.default_rng(0).standard_normal(4 * SR).astype(np.float32)
    freqs, power = cues.long_term_spectrum(noise, SR)
    assert cues.bandwidth_hz(freqs, power) > 7800
    assert cues.spectral_flatness(power) > 0.9
    freqs, power = cues.long_term_spectrum(lowpass(noise, 3000.0, SR), SR)
    assert 2850 <= cues.bandwidth_hz(freqs, power) <= 3050
    freqs, power = cues.long_term_spectrum(_sine(), SR)
    assert cues.spectral_flatness(power) < 0.01
    assert 1000 <= cues.bandwidth_hz(freqs, power) <= 1100  # Hann leakage: a few bins
    assert cues.bandwidth_hz(freqs, np.zeros_like(power)) == 0.0


def test_best_threshold_on_hand_made_values():
    rule = cues.best_threshold([1, 2, 3, 4, 5, 6], [0, 0, 1, 0, 1, 1])
    assert (rule.value, rule.above, rule.accuracy) == (2.5, 1, 5 / 6)  # ties: lowest threshold
    rule = cues.best_threshold([1, 2, 3, 4, 5, 6], [1, 1, 0, 1, 0, 0])
    assert (rule.value, rule.above, rule.accuracy) == (2.5, 0, 5 / 6)
    assert rule.predict(np.array([0.0, 10.0])).tolist() == [1, 0]
    rule = cues.best_threshold([1, 1, 2, 2], [0, 1, 0, 1])  # equal values, equal predictions
    assert (rule.value, rule.accuracy) == (-math.inf, 0.5)
    assert cues.best_threshold([5, 1, 3], [1, 0, 1]).accuracy == 1.0
    assert cues.best_threshold([1, 2, 3], [1, 1, 0]).accuracy == 1.0
    with pytest.raises(ValueError, match="labels 0 and 1"):
        cues.best_threshold([1, 2], [0, 2])


def test_cross_validated_accuracy_is_below_the_optimistic_figure():
    values, labels = [1, 2, 3, 4], [0, 0, 1, 1]
    assert cues.best_threshold(values, labels).accuracy == 1.0
    # Held out {1, 3}: threshold 3 from {2, 4} gets 3 wrong; held out {2, 4}: both right.
    assert cues.cross_validated_accuracy(values, labels, [0, 1, 0, 1]) == 0.75
    assert cues.cross_validated_accuracy(values, labels, [0, 0, 0, 0]) is None


def test_the_command_on_a_small_folder_source(tmp_path):
    root = make_folder_tree(tmp_path / "corpus", per_class=6)
    out = tmp_path / "cues.json"
    command = [sys.executable, "-m", "speechmusic_jax.cues", f"--data=folder:{root}",
               f"--json={out}"]
    r = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| cue | speech median | music median | best-threshold accuracy |" in r.stdout
    assert "majority-class rate: 0.500 (6 speech, 6 music clips)" in r.stdout
    report = json.loads(out.read_text())
    assert [row["cue"] for row in report["cues"]] == list(cues.CUES)
    assert report["n_files"] == len(report["clips"]) == 12 and report["folds"] == 5
    by_cue = {row["cue"]: row for row in report["cues"]}
    # The fixtures' "speech" is gated noise: pauses of exact zeros, wide band.
    assert by_cue["pause_share"]["speech_median"] > 0.2 > by_cue["pause_share"]["music_median"]
    assert by_cue["exact_zeros"]["best_threshold_accuracy"] == 1.0
    assert all(0 <= row["cv_accuracy"] <= 1 for row in report["cues"])
    # Run again: our own report is replaced; a file of the user's is never.
    mine = tmp_path / "mine.json"
    mine.write_text('{"a": 1}\n')
    r = subprocess.run(command[:-1] + [f"--json={mine}"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "not a file this program wrote" in r.stderr
    assert mine.read_text() == '{"a": 1}\n'
