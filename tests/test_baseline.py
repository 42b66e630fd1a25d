"""The global-statistics baseline: features, logistic regression, end-to-end on a tiny corpus."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speechmusic_jax import baseline
from speechmusic_jax.data import synthetic


def _write_split(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "group"])
        w.writerows(rows)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    spec = synthetic.SyntheticSpec(clips_per_class=8, seconds=1.0, sample_rate=16000, seed=0)
    d = synthetic.ensure_corpus(spec, root / "cache")
    with open(d / "manifest.csv", newline="", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    rows = []
    for label in ("speech", "music"):
        mine = [r for r in manifest if r["label"] == label]
        for i, r in enumerate(mine):
            split = "train" if i < 4 else ("val" if i < 6 else "test")
            rows.append([str(d / r["path"]), label, split, r["group"]])
    split_csv = root / "split.csv"
    _write_split(split_csv, rows)
    return split_csv


def test_evaluate_baseline_returns_a_sane_dict(tiny_split):
    res = baseline.evaluate_baseline(tiny_split)
    assert 0.0 <= res["accuracy"] <= 1.0
    assert res["n_test"] == 4 and res["n_train"] == 8 and res["n_val"] == 4
    assert res["features"] == list(baseline.FEATURE_NAMES)
    assert set(res["per_class"]) == {"speech", "music"}
    assert set(res["single_feature"]) == set(baseline.FEATURE_NAMES)
    assert all(0.0 <= v <= 1.0 for v in res["single_feature"].values())
    assert res["l2"] in baseline.L2_GRID
    assert "test accuracy" in baseline.format_report(res)


def test_cli_prints_the_report(tiny_split):
    out = subprocess.run(
        [sys.executable, "-m", "speechmusic_jax.baseline", f"--split={tiny_split}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "test accuracy" in out and "zcr_std" in out


def test_relative_paths_are_resolved_against_the_csv(tiny_split, tmp_path):
    with open(tiny_split, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rel = [[os.path.relpath(r["path"], tmp_path), r["label"], r["split"], r["group"]] for r in rows]
    _write_split(tmp_path / "split.csv", rel)
    assert baseline.evaluate_baseline(tmp_path / "split.csv")["n_test"] == 4


def test_logistic_regression_separates_a_toy_set():
    rng = np.random.default_rng(0)
    x0 = rng.normal([-2.0, 1.0], 0.5, (50, 2))
    x1 = rng.normal([2.0, -1.0], 0.5, (50, 2))
    x = np.vstack([x0, x1])
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    model = baseline.fit_logistic(x, y, 2, l2=1e-3)
    assert np.mean(model.predict(x) == y) == 1.0
    p = model.predict_proba(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_multinomial_logistic_regression():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 4.0], [4.0, -2.0], [-4.0, -2.0]])
    x = np.vstack([rng.normal(c, 0.6, (40, 2)) for c in centres])
    y = np.repeat(np.arange(3), 40)
    model = baseline.fit_logistic(x, y, 3, l2=1e-3)
    assert model.weights.shape == (3, 3)
    assert np.mean(model.predict(x) == y) == 1.0


def test_stronger_l2_shrinks_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)
    weak = baseline.fit_logistic(x, y, 2, l2=1e-4).weights[:-1]
    strong = baseline.fit_logistic(x, y, 2, l2=1.0).weights[:-1]
    assert np.linalg.norm(strong) < np.linalg.norm(weak)


def test_clip_features_of_known_signals():
    sr = 16000
    t = np.arange(sr) / sr
    sine = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    f = dict(zip(baseline.FEATURE_NAMES, baseline.clip_features(sine, sr), strict=True))
    assert f["rms_mean"] == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert f["rms_std"] < 0.01
    assert f["zcr_mean"] == pytest.approx(2 * 1000 / sr, rel=0.05)
    assert f["centroid_mean"] == pytest.approx(1000.0, rel=0.1)
    assert f["silence_frac"] == 0.0
    gated = sine * (t < 0.5)
    g = dict(zip(baseline.FEATURE_NAMES, baseline.clip_features(gated, sr), strict=True))
    assert g["silence_frac"] == pytest.approx(0.5, abs=0.05)
    silent = baseline.clip_features(np.zeros(sr), sr)
    assert np.all(np.isfinite(silent)) and silent[-1] == 1.0


def test_load_audio_mixes_down_and_resamples(tmp_path):
    sr = 8000
    t = np.arange(sr) / sr
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 440 * t)], 1)
    path = tmp_path / "a.wav"
    sf.write(path, stereo, sr, subtype="PCM_16")
    x = baseline.load_audio(str(path), 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) <= 2
    assert np.sqrt(np.mean(x**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
