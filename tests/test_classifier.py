"""The Python API (Classifier) and its example, on a tiny trained run."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import signal, write, write_bad
from tiny_run import REPO, tiny_run

from speechmusic_jax.classifier import Classifier
from speechmusic_jax.errors import DataError


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    return Classifier.load(tiny_run(tmp_path_factory))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A 22.05 kHz stereo 16-bit WAV and a 16 kHz mono FLAC, 3.3 s each."""
    folder = tmp_path_factory.mktemp("recordings")
    return [write(folder / "stereo.wav", signal("speech", 3.3, 22050, 2, seed=5), 22050,
                  "PCM_16"),
            write(folder / "mono.flac", signal("music", 3.3, 16000, 1, seed=6), 16000,
                  "PCM_16")]


def test_predict_a_waveform_as_its_file(clf, recordings):
    rows = clf.predict_files(recordings)
    for path, row in zip(recordings, rows, strict=True):
        wave, rate = sf.read(path, dtype="float32")
        got = clf.predict(wave, rate)
        assert list(got) == ["duration_s", "short", "predicted", "confidence", "p_speech",
                             "p_music"]
        assert got["short"] is False
        assert got["predicted"] == row["predicted"]
        assert got["duration_s"] == row["duration_s"] == 3.3
        assert got["p_music"] == pytest.approx(row["p_music"], abs=2e-6)
        # The same samples as (channels, frames), and as 16-bit integers.
        assert clf.predict(np.ascontiguousarray(np.atleast_2d(wave.T)), rate)["p_music"] == \
            pytest.approx(got["p_music"], abs=2e-6)
        ints, _ = sf.read(path, dtype="int16")
        assert clf.predict(ints, rate)["p_music"] == pytest.approx(got["p_music"], abs=2e-6)


def test_predict_refuses_what_it_cannot_classify(clf):
    for bad, needle in ((np.zeros(0, np.float32), "empty"),
                        (np.full(16000, np.nan, np.float32), "NaN"),
                        (np.zeros(16000, np.float32), "silent"),
                        (np.ones((2, 2, 100), np.float32), "frames"),
                        (np.asarray(["a", "b"]), "numbers")):
        with pytest.raises(ValueError, match=needle):
            clf.predict(bad, 16000)


def test_predict_files_rows_and_errors(clf, recordings, tmp_path):
    bad = write_bad(tmp_path, "corrupt")
    rows = clf.predict_files([recordings[0], bad, recordings[1]])
    assert [r["path"] for r in rows] == [recordings[0], bad, recordings[1]]
    assert list(rows[0]) == ["path", "duration_s", "short", "predicted", "confidence",
                             "p_speech", "p_music", "error"]
    assert (rows[0]["short"], rows[1]["short"]) == (False, None)
    assert rows[1]["error"].startswith("unreadable:") and rows[1]["predicted"] is None
    assert rows[0]["error"] is None and rows[0]["p_speech"] + rows[0]["p_music"] == \
        pytest.approx(1, abs=1e-5)
    with pytest.raises(DataError, match="bad_corrupt.wav"):
        clf.predict_files([bad], on_error="error")


def test_segments_and_windows_of_a_file(clf, recordings, tmp_path):
    segments = clf.segments(recordings[0])
    assert segments[0]["start_s"] == 0.0 and segments[-1]["end_s"] == 3.3
    assert all(a["end_s"] == b["start_s"] and a["predicted"] != b["predicted"]
               for a, b in zip(segments, segments[1:], strict=False))
    assert clf.segments(recordings[0], smoothing="none", hop_seconds=0.5)[-1]["end_s"] == 3.3
    windows = clf.windows(recordings[0])  # 1 s windows every 1 s, the last one end-aligned
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0, 1), (1, 2), (2, 3), (2.3, 3.3)]
    with pytest.raises(DataError, match="no_such.wav"):
        clf.segments(str(tmp_path / "no_such.wav"))


def test_the_example_runs(clf, recordings, tmp_path):
    bad = write_bad(tmp_path, "corrupt")
    r = subprocess.run([sys.executable, os.path.join(REPO, "examples", "classify.py"),
                        f"--workdir={clf.run.workdir}", *recordings, bad],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "classes speech, music; 1 s windows at 16000 Hz"
    assert lines[1].startswith(f"{recordings[0]}: ") and "confidence" in lines[1]
    assert lines[3].startswith(f"{bad}: not classified (unreadable:")
    assert lines[4].startswith("in memory: ") and lines[5] == "timeline:"
    timeline = [ln.split() for ln in lines[6:]]
    assert timeline[0][:2] == ["0.00", "-"] and timeline[-1][2] == "3.30"
    assert all(t[4] in ("speech", "music") for t in timeline)


def test_a_short_or_unsure_answer_says_so(clf):
    """Issue 29 part 5: a waveform shorter than a window is padded and flagged ``short``;
    below ``min_confidence`` the decision is ``uncertain``; a bad threshold is refused."""
    noise = 0.3 * np.random.default_rng(0).standard_normal(800)  # 0.05 s at 16 kHz
    got = clf.predict(noise, 16000)
    assert got["short"] is True and got["duration_s"] == 0.05
    assert got["predicted"] in clf.classes
    above = clf.predict(noise, 16000, min_confidence=got["confidence"] + 1e-6)
    assert above["predicted"] == "uncertain" and above["p_music"] == got["p_music"]
    assert clf.predict(noise, 16000, min_confidence=0.0)["predicted"] == got["predicted"]
    for bad in (-0.5, 1.01, float("nan"), "high"):
        with pytest.raises(ValueError, match="min_confidence must be a probability"):
            clf.predict(noise, 16000, min_confidence=bad)
