"""The built-in corpus's optional third class, noise (data/synth_noise.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest

from speechmusic_jax.data import synth_noise, synthetic

TINY = synthetic.SyntheticSpec(clips_per_class=3, seconds=1.0, sample_rate=16000, seed=5)


@pytest.mark.parametrize("kind", synth_noise.KINDS)
def test_every_noise_texture_is_finite_unit_rms_and_seeded(kind):
    a = synth_noise.texture(np.random.default_rng(1), kind, 8000, 16000)
    b = synth_noise.texture(np.random.default_rng(1), kind, 8000, 16000)
    c = synth_noise.texture(np.random.default_rng(2), kind, 8000, 16000)
    assert a.shape == (8000,) and np.isfinite(a).all()
    assert np.sqrt(np.mean(a**2)) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_clips_are_deterministic_per_seed_bounded_and_of_every_kind():
    clips = [synth_noise.noise_clip(synthetic.clip_rng(0, "noise", i), 0.5, 16000)
             for i in range(3)]
    again = synth_noise.noise_clip(synthetic.clip_rng(0, "noise", 1), 0.5, 16000)
    np.testing.assert_array_equal(clips[1], again)
    assert not np.array_equal(clips[0], clips[1])
    other_seed = synth_noise.noise_clip(synthetic.clip_rng(1, "noise", 1), 0.5, 16000)
    assert not np.array_equal(clips[1], other_seed)
    for x in clips:
        assert x.dtype == np.float32 and x.shape == (8000,)
        assert np.isfinite(x).all() and np.abs(x).max() <= 1.0
    kinds = {synth_noise.KINDS[int(synthetic.clip_rng(0, "noise", i).integers(
        len(synth_noise.KINDS)))] for i in range(60)}
    assert kinds == set(synth_noise.KINDS)  # the first draw of a clip picks its kind


def test_the_two_class_corpus_keeps_its_folder_and_bytes(tmp_path):
    """A two-class corpus is named and written as before the noise class existed (the
    hash of a key without ``noise``: no float in it, the same on every CPU), and the
    three-class corpus is a folder of its own whose speech and music files are the same."""
    two = synthetic.ensure_corpus(TINY, tmp_path)
    # the folder name of this spec before the noise class existed (generator version 3)
    assert two.name == "synthetic-v3-151bc75c7f49"
    info = json.loads((two / "COMPLETE").read_text())
    assert "noise" not in info and not (two / "noise").exists()
    three = synthetic.ensure_corpus(dataclasses.replace(TINY, noise=True), tmp_path)
    assert three != two and json.loads((three / "COMPLETE").read_text())["noise"] is True

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for label in ("speech", "music"):
        for name in sorted(os.listdir(two / label)):
            assert digest(two / label / name) == digest(three / label / name)
    assert sorted(os.listdir(three / "noise")) == [f"noise_{i:04d}.wav" for i in range(3)]
    rows = (three / "manifest.csv").read_text().splitlines()
    assert sum(r.split(",")[1] == "noise" for r in rows[1:]) == 3


def test_a_three_class_run_trains_and_reports_three_classes(tmp_path):
    from speechmusic_jax.config import load_experiment
    from speechmusic_jax.training import loop

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_experiment(os.path.join(repo, "experiments", "default.py"), "tiny")
    cfg.data.classes = ("speech", "music", "noise")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.synthetic.clips_per_class = 12
    cfg.train.epochs = 2
    workdir = str(tmp_path / "run")
    summary = loop.fit(cfg, workdir, log=lambda _: None)
    test = summary["test"]
    confusion = np.asarray(test["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() > 0
    assert set(test["recall"]) >= {"speech", "music", "noise"}
    # the timeline of a file has a probability per class and may say noise
    from speechmusic_jax.classifier import Classifier

    clf = Classifier.load(workdir)
    assert clf.classes == ("speech", "music", "noise")
    clip = sorted((tmp_path / "cache").glob("synthetic-*/noise/noise_0000.wav"))[0]
    rows = clf.segments(str(clip))
    assert rows and {"p_speech", "p_music", "p_noise"} <= set(rows[0])
    assert all(r["predicted"] in clf.classes for r in rows)
    assert sum(r[f"p_{c}"] for c in clf.classes for r in rows[:1]) == pytest.approx(1.0, abs=1e-4)


def test_transmission_has_its_own_folder_and_keeps_the_recordings(tmp_path):
    """A corpus with transmission is a folder of its own; the corpus without it keeps its name
    (the one it had before the field existed); a clip that transmit leaves as it is has the
    same bytes in both, and the others differ."""
    plain = synthetic.ensure_corpus(TINY, tmp_path)
    assert plain.name == "synthetic-v3-151bc75c7f49"
    sent = synthetic.ensure_corpus(dataclasses.replace(TINY, transmission=True), tmp_path)
    assert sent != plain and json.loads((sent / "COMPLETE").read_text())["transmission"] is True
    same = []
    for label in ("speech", "music"):
        for i in range(TINY.clips_per_class):
            name = f"{label}/{label}_{i:04d}.wav"
            kept = synthetic.clip_rng(TINY.seed, label, i, stream=1).random() < 0.5
            same.append((plain / name).read_bytes() == (sent / name).read_bytes())
            assert same[-1] == kept, name
    assert not all(same)
