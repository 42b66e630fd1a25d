"""The per-epoch pipeline: plans, balance, augmentation, memory cache, first-decode checks,
evaluation windows; and end-to-end runs of fit() on fake trees with every kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from audio_fixtures import (
    make_folder_tree,
    signal,
    write,
    write_bad,
    write_class_files,
    write_junk,
    write_manifest,
)

from speechmusic_jax import config as config_lib
from speechmusic_jax import errors
from speechmusic_jax.data import audio, pipeline, sources
from speechmusic_jax.data.augment import AugmentConfig
from speechmusic_jax.data.pipeline import LoaderConfig, epoch_plan, eval_batches, train_batches
from speechmusic_jax.data.sources import AudioFile

SR = 8000
CLASSES = ("speech", "music")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scanned(root) -> tuple[list[AudioFile], list[float]]:
    listing = sources.list_files(f"folder:{root}", CLASSES)
    scanned, _ = sources.scan_headers(listing.files, "error")
    return [f for f, _ in scanned], [i.seconds for _, i in scanned]


def _cfg(**kw) -> LoaderConfig:
    base = dict(sample_rate=SR, segment=4000, hop=2000, batch_size=4, workers=2,
                prefetch_batches=2)
    base.update(kw)
    return LoaderConfig(**base)


# --------------------------------------------------------------------------------------------
# Plans and balance


def _fake_files(labels) -> list[AudioFile]:
    return [AudioFile(f"/x/{i}.wav", lab, str(i)) for i, lab in enumerate(labels)]


def test_epoch_plan_is_a_pure_function_of_seed_and_epoch():
    files = _fake_files([0, 1] * 10)
    durations = [2.0] * 20
    cfg = _cfg()
    a = epoch_plan(files, durations, cfg, seed=0, epoch=1)
    assert a == epoch_plan(files, durations, cfg, seed=0, epoch=1)
    assert a != epoch_plan(files, durations, cfg, seed=0, epoch=2)
    assert a != epoch_plan(files, durations, cfg, seed=1, epoch=1)
    assert len(a) == 5 and all(len(b) == 4 for b in a)
    assert sorted(i for b in a for i, _ in b) == list(range(20))
    offsets = [o for b in a for _, o in b]
    assert min(offsets) >= 0 and max(offsets) <= 2.0 - 0.5 and len(set(offsets)) == 20
    fixed = epoch_plan(files, durations, _cfg(augment=AugmentConfig(random_crop=False)), 0, 1)
    assert {o for b in fixed for _, o in b} == {0.0}


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 45 + [1] * 5
    files = _fake_files(labels)
    cfg = _cfg(batch_size=10, balance="sampler")
    counts = np.zeros(2)
    seen_minority = set()
    for epoch in range(1, 11):
        plan = epoch_plan(files, [1.0] * 50, cfg, seed=0, epoch=epoch)
        picked = [i for b in plan for i, _ in b]
        assert len(picked) == 50
        counts += np.bincount([labels[i] for i in picked], minlength=2)
        seen_minority |= {i for i in picked if labels[i] == 1}
    assert abs(counts[0] / counts.sum() - 0.5) < 0.05
    assert seen_minority == set(range(45, 50))


def test_class_weights_even_out_the_classes():
    w = pipeline.class_weights([0] * 30 + [1] * 10, 2)
    assert w == pytest.approx((40 / 60, 40 / 20))
    assert (30 * w[0] + 10 * w[1]) / 40 == pytest.approx(1.0)
    assert pipeline.class_weights([0, 0, 2], 3) == (0.75, 0.0, 1.5)


def test_make_loader_config_and_balance_summary():
    c = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    c.data.balance = "class_weights"
    c.data.cache = "memory"
    c.data.augment.gain_db = 3.0
    files = _fake_files([0] * 6 + [1] * 2)
    loader = pipeline.make_loader_config(c, files)
    assert loader.class_weights == pytest.approx((8 / 12, 8 / 4))
    assert loader.cache == "memory" and loader.augment.gain_db == 3.0
    assert loader.segment == int(c.data.segment_seconds * c.data.sample_rate)
    assert pipeline.balance_summary(loader, files, CLASSES) == {
        "method": "class_weights", "train_files": {"speech": 6, "music": 2},
        "class_weights": {"speech": pytest.approx(0.666667), "music": 2.0}}


# --------------------------------------------------------------------------------------------
# Training batches


def test_train_batches_from_mixed_formats_rates_and_channels(tmp_path):
    root = make_folder_tree(tmp_path, per_class=6)
    files, durations = _scanned(root)
    cfg = _cfg()
    batches = list(train_batches(files, durations, cfg, seed=0, epoch=1))
    assert len(batches) == 3
    plan = epoch_plan(files, durations, cfg, 0, 1)
    for b, p in zip(batches, plan, strict=True):
        assert b.x.shape == (4, 4000) and b.x.dtype == np.float32
        assert b.y.tolist() == [files[i].label for i, _ in p]
        assert b.weight.tolist() == [1.0] * 4
        assert np.isfinite(b.x).all() and (np.abs(b.x).max(axis=1) > 0).all()


def test_train_batches_are_reproducible_with_threads_and_leave_augmentation_to_the_device(
        tmp_path):
    root = make_folder_tree(tmp_path, per_class=6)
    files, durations = _scanned(root)
    aug = AugmentConfig(pause_prob=0.5)
    runs = [[b.x for b in train_batches(files, durations, _cfg(augment=aug, workers=w), 3, 2)]
            for w in (1, 2, 2)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    fixed = [b.x for b in train_batches(
        files, durations, _cfg(augment=AugmentConfig(random_crop=False)), 3, 2)]
    assert not np.array_equal(fixed[0], runs[0][0])
    # The per-crop parts are the device's (training/feed.py): the host's crops are the same.
    per_crop = AugmentConfig(pause_prob=0.5, gain_db=6, noise_prob=0.5, polarity_prob=0.5,
                             lowpass_prob=0.5, dither_db=-80.0)
    host = [b.x for b in train_batches(files, durations, _cfg(augment=per_crop), 3, 2)]
    for a, b in zip(runs[0], host, strict=True):
        np.testing.assert_array_equal(a, b)


def test_each_process_reads_its_rows_of_every_batch_and_together_they_make_the_batch(tmp_path):
    # Across processes every process computes the same epoch plan and reads only its rows;
    # pause shortening is keyed by the row's place in the whole batch, so the parts equal the
    # whole (the device augments the global batch: training/feed.py).
    root = make_folder_tree(tmp_path, per_class=6)
    files, durations = _scanned(root)
    cfg = _cfg(augment=AugmentConfig(pause_prob=0.5))
    whole = list(train_batches(files, durations, cfg, 3, 2))
    parts = [list(train_batches(files, durations, cfg, 3, 2, rows=slice(2 * p, 2 * p + 2)))
             for p in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 3
    for b, (first, second) in enumerate(zip(*parts, strict=True)):
        assert first.x.shape == (2, 4000)
        np.testing.assert_array_equal(np.concatenate([first.x, second.x]), whole[b].x)
        np.testing.assert_array_equal(np.concatenate([first.y, second.y]), whole[b].y)
        np.testing.assert_array_equal(np.concatenate([first.weight, second.weight]),
                                      whole[b].weight)


def test_class_weights_are_folded_into_batch_weights(tmp_path):
    write_class_files(tmp_path / "speech", "speech", 6, nested=False)
    write_class_files(tmp_path / "music", "music", 2, nested=False)
    files, durations = _scanned(tmp_path)
    weights = pipeline.class_weights([f.label for f in files], 2)
    cfg = _cfg(balance="class_weights", class_weights=weights)
    for b in train_batches(files, durations, cfg, 0, 1):
        np.testing.assert_allclose(b.weight, np.asarray(weights, np.float32)[b.y])


@pytest.mark.parametrize("mode", ["pad", "loop"])
def test_short_clips_are_padded_or_looped(tmp_path, mode):
    for kind in CLASSES:
        for i in range(2):
            write(tmp_path / kind / f"{i}.wav", signal(kind, 0.2, SR, seed=i) + 0.01, SR, "FLOAT")
    files, durations = _scanned(tmp_path)
    x = next(iter(train_batches(files, durations, _cfg(short_clip=mode), 0, 1))).x
    tail = x[:, 1600:]
    if mode == "pad":
        assert not tail.any()
    else:
        np.testing.assert_array_equal(x[:, 1600:3200], x[:, :1600])


def test_memory_cache_decodes_each_file_once(tmp_path):
    root = make_folder_tree(tmp_path / "c", per_class=4)
    files, durations = _scanned(root)
    cfg = _cfg(cache="memory")
    first = [b.x for b in train_batches(files, durations, cfg, 0, 1)]
    for f in files:  # nothing on disk any more: epoch 2 and evaluation come from memory
        os.remove(f.path)
    assert len(list(train_batches(files, durations, cfg, 0, 2))) == 2
    assert len(list(eval_batches(files, cfg, 8))) >= 1
    assert cfg.reader.cached_bytes > 0
    again = [b.x for b in train_batches(files, durations, cfg, 0, 1)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_without_cache_crops_are_read_from_disk_every_epoch(tmp_path, monkeypatch):
    root = make_folder_tree(tmp_path, per_class=4)
    files, durations = _scanned(root)
    cfg = _cfg()
    calls = []
    real = audio.load
    monkeypatch.setattr(audio, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    for epoch in (1, 2):
        calls.clear()
        list(train_batches(files, durations, cfg, 0, epoch))
        assert len(calls) == 8 and all(k["duration_s"] == 0.5 for k in calls)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_sample_problems_are_caught_at_the_first_decode(tmp_path, cache):
    write_class_files(tmp_path / "speech", "speech", 3, nested=False)
    write_class_files(tmp_path / "music", "music", 3, nested=False)
    bad = {k: write_bad(tmp_path / "music", k) for k in ("silent", "nan", "inf", "corrupt_body")}
    files, durations = _scanned(tmp_path)  # the header scan passes them all
    assert len(files) == 10
    seen: list[audio.AudioError] = []
    lock = threading.Lock()

    def on_bad(e):
        with lock:
            seen.append(e)

    cfg = _cfg(batch_size=5, cache=cache)
    batches = list(train_batches(files, durations, cfg, 0, 1, on_bad_file=on_bad))
    kinds = {os.path.basename(e.path): e.kind for e in seen}
    assert kinds == {"bad_silent.wav": "silent", "bad_nan.wav": "nonfinite",
                     "bad_inf.wav": "nonfinite", "bad_corrupt_body.flac": "unreadable"}
    assert sum((b.weight == 0).sum() for b in batches) == 4  # their crops weigh nothing
    # A crop of the silent file alone would be legitimately silent; the file as a whole is not
    # allowed to be. Later epochs do not decode a bad file again.
    seen.clear()
    list(train_batches(files, durations, cfg, 0, 2, on_bad_file=on_bad))
    assert {e.path for e in seen} == set(bad.values())
    # Without a handler the first problem is raised out of the iterator.
    fresh = _cfg(batch_size=5, cache=cache)
    with pytest.raises(audio.AudioError):
        list(train_batches(files, durations, fresh, 0, 1))


def test_a_raising_handler_stops_the_epoch_and_leaves_no_threads(tmp_path):
    root = make_folder_tree(tmp_path, per_class=4)
    write_bad(tmp_path / "MUSIC", "nan")
    files, durations = _scanned(root)
    before = threading.active_count()

    def stop(e):
        raise errors.DataError(str(e))

    with pytest.raises(errors.DataError, match="bad_nan.wav: audio contains NaN or Inf"):
        for _ in range(3):
            list(train_batches(files, durations, _cfg(batch_size=3), 0, 1, on_bad_file=stop))
    it = train_batches(files, durations, _cfg(batch_size=2, prefetch_batches=1), 0, 1)
    next(it)
    it.close()  # the consumer stops early: the producer must not hang
    assert threading.active_count() == before


# --------------------------------------------------------------------------------------------
# Evaluation windows


def test_eval_batches_cover_every_clip_and_never_augment(tmp_path):
    root = make_folder_tree(tmp_path, per_class=3, seconds=1.0)
    files, _ = _scanned(root)
    cfg = _cfg(augment=AugmentConfig(gain_db=12, polarity_prob=1.0, noise_prob=1.0))
    batches = list(eval_batches(files, cfg, 8))
    assert all(b.x.shape == (8, 4000) and b.clip.shape == (8,) for b in batches)
    clips = np.concatenate([b.clip for b in batches])
    xs = np.concatenate([b.x for b in batches])
    windows = 0
    for i, f in enumerate(files):
        whole = audio.load(f.path, SR)
        expected = pipeline.clip_windows(whole, 4000, 2000)
        np.testing.assert_array_equal(xs[clips == i], expected)
        windows += expected.shape[0]
    # 0.75, 1 and 1.25 s clips give 2, 3 and 4 windows: 18 in all, so the last batch of 8 holds
    # 2 real windows and 6 rows of padding. Padding is only there: zeros marked -1, at the end,
    # and no more than fills the last batch.
    assert windows == 18 and len(batches) == 3
    pad = len(batches) * 8 - windows
    assert pad == 6
    assert (clips[:windows] >= 0).all() and (clips[windows:] == -1).all()
    assert not xs[windows:].any()
    assert (np.abs(xs[:windows]).max(axis=1) > 0).all()  # real windows are not blank


# --------------------------------------------------------------------------------------------
# End to end: fit() on fake trees


def _tiny(tmp_path, spec: str, **data) -> config_lib.ConfigDict:
    c = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    c.data.spec = spec
    c.data.cache_dir = str(tmp_path / "cache")
    c.train.epochs = 1
    for k, v in data.items():
        node = c.data
        parts = k.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return c


def test_fit_skips_and_counts_every_kind_of_bad_input(tmp_path):
    """A manifest with a fixed split (so that every bad file is certainly decoded): header-level
    problems are dropped before training, sample-level ones when first decoded; each is counted
    by kind in summary.json, and the good files train and test with every loader option on."""
    from speechmusic_jax.training import loop

    root = tmp_path / "corpus"
    rows = []

    def add(path, label, split):
        rows.append({"path": os.path.relpath(path, root), "label": label, "split": split})

    for k, kind in enumerate(CLASSES):
        for i, p in enumerate(write_class_files(root / kind, kind, 9, seconds=1.2, nested=False,
                                                seed=k * 3)):
            add(p, kind, "train" if i < 7 else ("val" if i == 7 else "test"))
    # Sample-level problems: found when first decoded, in training, validation and test.
    add(write_bad(root / "music", "silent"), "music", "train")
    add(write_bad(root / "speech", "nan"), "speech", "train")
    add(write_bad(root / "speech", "inf"), "speech", "val")
    add(write_bad(root / "music", "corrupt_body"), "music", "test")
    # Header-level problems: dropped before any work.
    for kind in ("corrupt", "zero_length", "no_frames", "unsupported"):
        add(write_bad(root / "speech", kind), "speech", "train")
    add(root / "speech" / "gone.wav", "speech", "train")
    rows.append({"path": "music/music_000.wav", "label": "applause", "split": "train"})
    write_junk(root / "music")
    manifest = write_manifest(root / "manifest.csv", rows)
    cfg = _tiny(tmp_path, f"manifest:{manifest}", on_error="skip", balance="class_weights",
                cache="memory", short_clip="loop", augment__gain_db=6.0,
                augment__noise_prob=0.5, augment__polarity_prob=0.5, augment__lowpass_prob=0.5)
    logs: list[str] = []
    summary = loop.fit(cfg, str(tmp_path / "run"), log=logs.append)
    assert summary["status"] == "completed"
    assert summary["data_errors"] == {"unreadable": 2, "empty": 2, "unsupported_format": 1,
                                      "missing": 1, "unknown_class": 1, "silent": 1,
                                      "nonfinite": 2}
    assert summary["test"]["n_files"] == 2  # the corrupt test file is dropped, not guessed
    text = "\n".join(logs)
    assert "bad_nan.wav: audio contains NaN or Inf samples" in text
    assert "bad_silent.wav: audio is silent" in text


def test_fit_stops_on_a_sample_problem_with_a_message_naming_the_file(tmp_path):
    from speechmusic_jax.training import loop

    root = make_folder_tree(tmp_path / "corpus", per_class=8)
    nan = write_bad(tmp_path / "corpus" / "Speech", "nan")
    cfg = _tiny(tmp_path, f"folder:{root}")
    with pytest.raises(errors.DataError) as e:
        loop.fit(cfg, str(tmp_path / "run"), log=lambda m: None)
    assert str(e.value) == (f"{nan}: audio contains NaN or Inf samples\nFix or remove the file, "
                            "or pass --data_on_error=skip to leave it out.")


def test_fit_keeps_duplicates_in_one_split_and_warns(tmp_path):
    from speechmusic_jax.training import loop

    root = make_folder_tree(tmp_path / "corpus", per_class=8)
    src = os.path.join(root, "Speech", "speech_000.wav")
    for i in range(3):
        os.link(src, os.path.join(root, "Speech", f"copy{i}.wav"))
    cfg = _tiny(tmp_path, f"folder:{root}")
    logs: list[str] = []
    loop.fit(cfg, str(tmp_path / "run"), log=logs.append)
    assert any("4 files in 1 set(s) have identical audio content" in m for m in logs)
    import csv

    with open(tmp_path / "run" / "split.csv", newline="") as f:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(f)}
    names = ["speech_000.wav", "copy0.wav", "copy1.wav", "copy2.wav"]
    assert len({rows[n]["split"] for n in names}) == 1
    assert len({rows[n]["group"] for n in names}) == 1


def test_identical_audio_with_different_labels(tmp_path):
    from speechmusic_jax.training import loop

    root = make_folder_tree(tmp_path / "corpus", per_class=6)
    src = os.path.join(root, "Speech", "speech_000.wav")
    os.link(src, os.path.join(root, "MUSIC", "mislabelled.wav"))
    cfg = _tiny(tmp_path, f"folder:{root}")
    with pytest.raises(errors.DataError) as e:
        loop.fit(cfg, str(tmp_path / "run"), log=lambda m: None)
    assert str(e.value) == (
        "1 set(s) of files have identical audio but different labels: "
        f"{root}/MUSIC/mislabelled.wav (music) = {root}/Speech/speech_000.wav (speech). "
        "Fix the labels, or pass --data_on_error=skip to leave them out.")


def test_the_train_command_reports_bad_input_without_a_traceback(tmp_path):
    root = make_folder_tree(tmp_path / "corpus", per_class=4)
    empty = write_bad(tmp_path / "corpus" / "MUSIC", "zero_length")
    cmd = [sys.executable, "-m", "speechmusic_jax.train",
           f"--config={os.path.join(REPO, 'experiments', 'default.py')}:tiny",
           f"--workdir={tmp_path / 'run'}", f"--data=folder:{root}",
           f"--config.data.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert f"{empty}: file is empty (0 bytes)" in r.stderr
    assert "--data_on_error=skip" in r.stderr


def test_summary_records_the_data_errors_kinds(tmp_path):
    """data_errors reaches summary.json as {kind: count} (JSON-ready)."""
    root = make_folder_tree(tmp_path / "corpus", per_class=8)
    write_bad(tmp_path / "corpus" / "Speech", "corrupt")
    (tmp_path / "corpus" / "laughter").mkdir()
    write(tmp_path / "corpus" / "laughter" / "ha.wav", signal("speech", 0.3, SR), SR)
    from speechmusic_jax.training import loop

    cfg = _tiny(tmp_path, f"folder:{root}", on_error="skip")
    loop.fit(cfg, str(tmp_path / "run"), log=lambda m: None)
    with open(tmp_path / "run" / "summary.json") as f:
        assert json.load(f)["data_errors"] == {"unreadable": 1, "unknown_class": 1}


def test_loader_config_reader_is_shared_not_compared():
    a, b = _cfg(), _cfg()
    assert a == b and a.reader is not b.reader
    assert dataclasses.replace(a, batch_size=8).reader is a.reader


def test_fit_refuses_a_class_emptied_by_skipping_and_a_class_too_small_to_split(tmp_path):
    from speechmusic_jax.training import loop

    write_class_files(tmp_path / "a" / "speech", "speech", 8, nested=False)
    bad = [write_bad(tmp_path / "a" / "music", k) for k in ("corrupt", "zero_length")]
    cfg = _tiny(tmp_path, f"folder:{tmp_path / 'a'}", on_error="skip")
    with pytest.raises(errors.DataError) as e:
        loop.fit(cfg, str(tmp_path / "run_a"), log=lambda m: None)
    assert str(e.value) == (
        f"{tmp_path / 'a'}: no usable audio files for class(es) ['music'] after skipping 2 "
        "unusable file(s) (files per class: speech 8, music 0); every class in data.classes "
        "needs files")
    assert len(bad) == 2
    write_class_files(tmp_path / "b" / "speech", "speech", 8, nested=False)
    write_class_files(tmp_path / "b" / "music", "music", 2, nested=False)
    cfg = _tiny(tmp_path, f"folder:{tmp_path / 'b'}")
    with pytest.raises(errors.DataError, match=r"too few files for the split: class 'music' has "
                                                r"2 file\(s\) in 2 group\(s\)"):
        loop.fit(cfg, str(tmp_path / "run_b"), log=lambda m: None)


def test_pause_shortening_cuts_the_crop_from_a_longer_stretch(tmp_path):
    # tone 0.5 s, silence 1 s, tone 1.5 s: the 1 s crop at offset 0 holds the first tone, a
    # 30-80 ms gap and the start of the second tone; the crop keeps its length.
    t = np.arange(SR // 2) / SR
    a = 0.5 * np.sin(2 * np.pi * 440 * t)
    b = 0.3 * np.cos(2 * np.pi * 660 * np.arange(3 * SR // 2) / SR)
    path = write(tmp_path / "speech" / "s.wav", np.concatenate([a, np.zeros(SR), b]), SR, "FLOAT")
    files = [AudioFile(path, 0, "s")]
    cfg = _cfg(segment=SR, batch_size=1, augment=AugmentConfig(random_crop=False, pause_prob=1.0))
    x = next(iter(train_batches(files, [3.0], cfg, 0, 1))).x[0]
    assert x.shape == (SR,)
    np.testing.assert_allclose(x[: SR // 2], a, atol=1e-6)
    gap = np.flatnonzero(np.abs(x[SR // 2:]) > 1e-3)[0]
    assert 0.03 * SR <= gap <= 0.08 * SR
    np.testing.assert_allclose(x[SR // 2 + gap:], b[: SR // 2 - gap], atol=1e-6)
    # Near the clip's end the stretch moves earlier and the crop ends where the audio ends.
    y = pipeline.crop_without_pauses(cfg.reader, path, 2.0, 3.0, cfg, np.random.default_rng(0))
    np.testing.assert_allclose(y, b[-SR:], atol=1e-6)


def test_pause_shortening_is_reproducible_and_per_row(tmp_path):
    root = make_folder_tree(tmp_path, per_class=6, seconds=2.0)
    files, durations = _scanned(root)
    cfg = _cfg(augment=AugmentConfig(pause_prob=0.7, pause_keep_ms=(30.0, 50.0), gain_db=3))
    whole = [b.x for b in train_batches(files, durations, cfg, 3, 2)]
    again = [b.x for b in train_batches(files, durations, dataclasses.replace(cfg, workers=1),
                                        3, 2)]
    parts = [[b.x for b in train_batches(files, durations, cfg, 3, 2, rows=slice(r, r + 1))]
             for r in range(4)]
    for b, x in enumerate(whole):
        np.testing.assert_array_equal(x, again[b])
        np.testing.assert_array_equal(np.concatenate([p[b] for p in parts]), x)
    plain = [b.x for b in train_batches(
        files, durations, _cfg(augment=AugmentConfig(gain_db=3)), 3, 2)]
    assert any(not np.array_equal(a, b) for a, b in zip(whole, plain, strict=True))
