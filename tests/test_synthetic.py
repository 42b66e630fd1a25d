"""The built-in procedural corpus: determinism, caching, atomic generation, clip sanity."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import pathlib

import numpy as np
import pytest
import soundfile as sf

from speechmusic_jax.data import synthetic

TINY = synthetic.SyntheticSpec(clips_per_class=3, seconds=1.0, sample_rate=16000, seed=0)


def _hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _manifest(d: pathlib.Path) -> list[dict[str, str]]:
    with open(d / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_same_seed_gives_identical_bytes(tmp_path):
    a = synthetic.ensure_corpus(TINY, tmp_path / "a")
    b = synthetic.ensure_corpus(TINY, tmp_path / "b")
    ha, hb = _hashes(a), _hashes(b)
    assert len(ha) == 2 * 3 + 2  # wavs, manifest.csv, COMPLETE
    assert ha == hb


def test_different_seed_differs(tmp_path):
    a = synthetic.ensure_corpus(TINY, tmp_path)
    b = synthetic.ensure_corpus(dataclasses.replace(TINY, seed=1), tmp_path)
    assert a != b
    ha, hb = _hashes(a), _hashes(b)
    for name in ha:
        if name.endswith(".wav"):
            assert ha[name] != hb[name], name


def test_manifest_rows_and_files(tmp_path):
    d = synthetic.ensure_corpus(TINY, tmp_path)
    rows = _manifest(d)
    assert list(rows[0]) == ["path", "label", "group"]
    assert [r["label"] for r in rows] == ["speech"] * 3 + ["music"] * 3
    assert len({r["group"] for r in rows}) == 6
    for r in rows:
        p = pathlib.Path(r["path"])
        assert not p.is_absolute() and p.parts[0] == r["label"]
        info = sf.info(str(d / p))
        assert info.samplerate == 16000 and info.channels == 1 and info.frames == 16000
        assert info.subtype == "PCM_16"
    assert (d / "COMPLETE").is_file()
    assert d.name.startswith(f"synthetic-v{synthetic.GENERATOR_VERSION}-")


def test_clip_independent_of_clips_per_class(tmp_path):
    small = synthetic.ensure_corpus(dataclasses.replace(TINY, clips_per_class=2), tmp_path)
    big = synthetic.ensure_corpus(dataclasses.replace(TINY, clips_per_class=4), tmp_path)
    assert small != big
    for name in ("speech/speech_0001.wav", "music/music_0001.wav"):
        assert (small / name).read_bytes() == (big / name).read_bytes()


def test_corpus_dir_depends_on_every_field_and_version(tmp_path, monkeypatch):
    base = synthetic.corpus_dir(TINY, tmp_path)
    assert base == synthetic.corpus_dir(dataclasses.replace(TINY), tmp_path)
    assert base.parent == tmp_path
    changes = {"clips_per_class": 4, "seconds": 1.5, "sample_rate": 8000, "seed": 7,
               "noise": True, "transmission": True}
    assert set(changes) == {f.name for f in dataclasses.fields(synthetic.SyntheticSpec)}
    dirs = {synthetic.corpus_dir(dataclasses.replace(TINY, **{k: v}), tmp_path)
            for k, v in changes.items()}
    assert base not in dirs and len(dirs) == len(changes)
    # int and float spellings of the same duration name the same corpus
    assert synthetic.corpus_dir(dataclasses.replace(TINY, seconds=1), tmp_path) == base
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    assert synthetic.corpus_dir(TINY, tmp_path) != base


def test_incomplete_dirs_are_not_used(tmp_path):
    final = synthetic.corpus_dir(TINY, tmp_path)
    # A crashed generator's temp dir, and a final dir without the completion marker.
    stale_tmp = tmp_path / f".{final.name}.tmp-crashed"
    (stale_tmp / "speech").mkdir(parents=True)
    (stale_tmp / "speech" / "speech_0000.wav").write_bytes(b"junk")
    (stale_tmp / "manifest.csv").write_text("path,label,group\n")
    final.mkdir()
    (final / "junk.txt").write_text("half-copied")
    d = synthetic.ensure_corpus(TINY, tmp_path)
    assert d == final
    assert not (d / "junk.txt").exists()
    assert (d / "COMPLETE").is_file() and len(_manifest(d)) == 6
    ref = synthetic.ensure_corpus(TINY, tmp_path / "ref")
    assert _hashes(d) == _hashes(ref)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and "stale" in p.name]
    assert leftovers == []


def test_complete_corpus_is_reused(tmp_path, monkeypatch):
    d = synthetic.ensure_corpus(TINY, tmp_path)
    before = _hashes(d)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete corpus")

    monkeypatch.setattr(synthetic, "_generate_into", fail)
    assert synthetic.ensure_corpus(TINY, tmp_path) == d
    assert _hashes(d) == before


def test_losing_the_rename_race_uses_the_winner(tmp_path, monkeypatch):
    real = synthetic._generate_into
    raced = []
    logs: list[str] = []

    def racing(spec, out, say):
        real(spec, out, say)
        if not raced:  # another process finishes first, while this one is still generating
            raced.append(True)
            synthetic.ensure_corpus(spec, tmp_path)
            (synthetic.corpus_dir(spec, tmp_path) / "winner").write_text("x")

    monkeypatch.setattr(synthetic, "_generate_into", racing)
    d = synthetic.ensure_corpus(TINY, tmp_path, log=logs.append)
    assert (d / "winner").is_file()  # the winner's corpus was kept, not replaced
    assert len(_manifest(d)) == 6
    assert any("another process" in m for m in logs)
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no temp dirs left


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("kind", ["speech", "music"])
def test_clips_are_finite_bounded_and_sized(kind, sample_rate):
    make = synthetic.speech_clip if kind == "speech" else synthetic.music_clip
    for i in range(4):
        x = make(synthetic.clip_rng(3, kind, i), 1.25, sample_rate)
        assert x.dtype == np.float32 and x.shape == (int(1.25 * sample_rate),)
        assert np.all(np.isfinite(x))
        assert np.max(np.abs(x)) <= 1.0
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-4  # not silent


def test_clip_functions_are_deterministic():
    for kind, make in (("speech", synthetic.speech_clip), ("music", synthetic.music_clip)):
        a = make(synthetic.clip_rng(0, kind, 5), 0.5, 16000)
        b = make(synthetic.clip_rng(0, kind, 5), 0.5, 16000)
        c = make(synthetic.clip_rng(0, kind, 6), 0.5, 16000)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_spec_validation():
    for bad in ({"clips_per_class": 0}, {"seconds": 0.0}, {"sample_rate": 500}, {"seed": -1}):
        with pytest.raises(ValueError):
            synthetic.SyntheticSpec(**bad)


def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch):
    """Large corpora are made by a process pool; the files do not depend on it."""
    spec = dataclasses.replace(TINY, clips_per_class=4, seconds=0.5)
    monkeypatch.setattr(synthetic, "_PARALLEL_FROM", 1)
    pooled = synthetic.ensure_corpus(spec, tmp_path / "pool")
    monkeypatch.setattr(synthetic, "_PARALLEL_FROM", 10**9)
    alone = synthetic.ensure_corpus(spec, tmp_path / "alone")
    assert _hashes(pooled) == _hashes(alone)


def test_config_field_transmission_reaches_the_corpus(tmp_path):
    """data.synthetic.transmission picks the corpus with the transmission stage (its own
    folder); off, the corpus of the same size without it."""
    import json

    from speechmusic_jax.config import base_config
    from speechmusic_jax.data.prepare import list_source

    c = base_config()
    c.data.cache_dir = str(tmp_path)
    c.data.synthetic.clips_per_class = 3
    c.data.synthetic.seconds = 1.0
    roots = {}
    for on in (False, True):
        c.data.synthetic.transmission = on
        listing = list_source(c.data, "synthetic", "error", lambda s: None, splitting=False)
        root = pathlib.Path(listing.files[0].path).parent.parent
        info = json.loads((root / "COMPLETE").read_text())
        assert info.get("transmission", False) is on and len(listing.files) == 6
        roots[on] = root
    assert roots[False] != roots[True]
