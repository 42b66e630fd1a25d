"""The ``tfds:NAME`` source. The export to WAV files is tested everywhere; the adapter itself
needs TensorFlow Datasets and TensorFlow (the ``[tfds]`` extra) and is tested with
``tfds.testing.mock_data`` (no download). In the main environment, without the extra, that test
is skipped with its reason; ``.ci/tfds.sh`` runs it in an environment with the extra installed,
where ``SPEECHMUSIC_REQUIRE_TFDS=1`` turns a skip into a failure."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from speechmusic_jax import errors
from speechmusic_jax.data import audio, sources, tfds_source

CLASSES = ("speech", "music")


def _have_tfds() -> bool:
    return (importlib.util.find_spec("tensorflow_datasets") is not None
            and importlib.util.find_spec("tensorflow") is not None)


def test_write_examples_makes_a_manifest_the_manifest_source_reads(tmp_path):
    rng = np.random.default_rng(0)
    examples = [("train", {"audio": rng.integers(-3000, 3000, 2205), "label": i % 2,
                           "audio/filename": f"clip {i}.wav".encode()}) for i in range(6)]
    examples.append(("train", {"audio": rng.standard_normal((1000, 2)).astype(np.float32) * 0.1,
                               "label": 0}))
    examples.append(("train", {"audio": np.zeros(0, np.int64), "label": 1}))  # nothing to write
    n = tfds_source.write_examples(examples, ["music", "speech"], 22050, str(tmp_path))
    assert n == 7
    listing = sources.list_files(f"manifest:{tmp_path / 'manifest.csv'}", CLASSES)
    assert sorted(f.label for f in listing.files) == [0, 0, 0, 1, 1, 1, 1]  # 3 speech, 4 music
    for f in listing.files:
        info = audio.probe(f.path)
        assert info.sample_rate == 22050
    groups = {f.group for f in listing.files}
    assert "speech/clip_1" in groups and "music/clip_0" in groups


def test_a_missing_extra_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tfds(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ImportError("No module named 'tensorflow_datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tfds)
    with pytest.raises(errors.DataError, match=r"needs TensorFlow Datasets: pip install "
                                                r"'speechmusic_jax\[tfds\]'"):
        sources.list_files("tfds:gtzan_music_speech", CLASSES, cache_root=str(tmp_path))


def test_tfds_adapter_with_mock_data(tmp_path):
    if not _have_tfds():
        if os.environ.get("SPEECHMUSIC_REQUIRE_TFDS"):
            pytest.fail("SPEECHMUSIC_REQUIRE_TFDS is set but tensorflow-datasets / TensorFlow "
                        "cannot be imported")
        pytest.skip("needs the [tfds] extra (tensorflow-datasets and TensorFlow), not installed "
                    "here; .ci/tfds.sh runs this test in its own environment")
    import tensorflow_datasets as tfds

    cache = tmp_path / "cache"
    with tfds.testing.mock_data(num_examples=8, data_dir=str(tmp_path / "tfds")):
        listing = sources.list_files("tfds:gtzan_music_speech", CLASSES, cache_root=str(cache))
    assert len(listing.files) == 8
    assert {f.label for f in listing.files} <= {0, 1}
    for f in listing.files:
        assert f.path.startswith(str(cache)) and audio.probe(f.path).sample_rate == 22050
    # The export is kept: a second listing needs no TFDS at all.
    again = sources.list_files("tfds:gtzan_music_speech", CLASSES, cache_root=str(cache))
    assert [f.path for f in again.files] == [f.path for f in listing.files]
    assert os.path.exists(os.path.join(tfds_source.export_dir("gtzan_music_speech", str(cache)),
                                       "COMPLETE"))
