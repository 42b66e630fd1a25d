"""Streaming windows: the same windows as evaluation, batches shared by files, bad files kept
apart, and memory that stays flat with the length of a recording. No model: a NumPy predictor."""

import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import signal, write, write_bad

from speechmusic_jax.data import audio, pipeline
from speechmusic_jax.errors import AudioError
from speechmusic_jax.streaming import Windowing, WindowStream, run_files

SR = 16000


def zcr_logits(x: np.ndarray) -> np.ndarray:
    """A stand-in model: (speech, music) logits from the zero-crossing rate (noise high, tones
    low)."""
    zcr = np.mean(np.abs(np.diff(np.signbit(x).astype(np.int8), axis=1)), axis=1)
    return np.stack([(zcr - 0.15) * 40, (0.15 - zcr) * 40], axis=1).astype(np.float32)


@pytest.mark.parametrize("rate,channels,seconds", [(16000, 1, 7.3), (44100, 2, 5.1),
                                                   (22050, 1, 1.3), (8000, 3, 2.0)])
@pytest.mark.parametrize("hop", [32000, 8000, 12345, 40000])
def test_stream_gives_the_windows_of_evaluation(tmp_path, rate, channels, seconds, hop):
    path = write(tmp_path / "a.flac", signal("music", seconds, rate, channels, seed=1), rate,
                 "PCM_24")
    stream = WindowStream(path, Windowing(SR, 32000, hop, block_seconds=0.7))
    chunks = list(stream)
    starts = np.concatenate([c[0] for c in chunks])
    windows = np.concatenate([c[1] for c in chunks])
    whole = audio.load(path, SR)
    assert stream.n_samples == whole.size
    assert starts.tolist() == pipeline.window_starts(whole.size, 32000, hop)
    np.testing.assert_allclose(windows, pipeline.clip_windows(whole, 32000, hop), atol=1e-6)
    assert len(chunks) > 1 or seconds <= 2  # read in blocks, not at once


@pytest.mark.parametrize("kind,error", [("corrupt", "unreadable"), ("corrupt_body", "unreadable"),
                                        ("no_frames", "empty"), ("silent", "silent"),
                                        ("nan", "nonfinite"), ("unsupported",
                                                               "unsupported_format")])
def test_stream_raises_the_kind_of_a_bad_file(tmp_path, kind, error):
    path = write_bad(tmp_path, kind)
    with pytest.raises(AudioError) as e:
        list(WindowStream(path, Windowing(SR, 16000, 16000)))
    assert e.value.kind == error


def test_run_files_batches_across_files_and_keeps_bad_files_apart(tmp_path):
    paths = []
    for i in range(7):
        kind = ("speech", "music")[i % 2]
        paths.append(write(tmp_path / f"{i}_{kind}.wav", signal(kind, 1.5 + 0.5 * i, SR, 1, i),
                           SR, "PCM_16"))
    paths.insert(3, write_bad(tmp_path, "corrupt"))
    paths.insert(5, str(tmp_path / "missing.wav"))
    calls = []

    def predict(x):
        calls.append(x.shape)
        return zcr_logits(x)

    bad = []
    results = list(run_files(predict, paths, Windowing(SR, 16000, 8000), batch_size=8,
                             on_bad_file=bad.append))
    assert [r.path for r in results] == paths and [r.index for r in results] == list(range(9))
    assert [os.path.basename(e.path) for e in bad] == ["bad_corrupt.wav", "missing.wav"]
    assert results[3].error.kind == "unreadable" and results[5].error.kind == "missing"
    good = [r for r in results if r.error is None]
    total = sum(r.starts.size for r in good)
    # Every call a full batch; windows of several files share them.
    assert set(calls) == {(8, 16000)} and len(calls) == -(-total // 8)
    for r in good:
        assert r.starts.tolist() == pipeline.window_starts(r.n_samples, 16000, 8000)
        expected = "speech" if "_speech" in r.path else "music"
        assert ("speech", "music")[int(np.argmax(r.clip_logits))] == expected


def test_run_files_stops_when_the_bad_file_policy_raises(tmp_path):
    paths = [write(tmp_path / "a.wav", signal("music", 1, SR), SR), write_bad(tmp_path, "nan"),
             write(tmp_path / "b.wav", signal("music", 1, SR), SR)]

    def refuse(e):
        raise RuntimeError(f"stop at {e.path}")

    with pytest.raises(RuntimeError, match="bad_nan"):
        list(run_files(zcr_logits, paths, Windowing(SR, 16000, 16000), 4, on_bad_file=refuse))


def write_long(path, minutes, rate=8000):
    """An alternating noise/tone recording written block by block (8 kHz, 16-bit)."""
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for k in range(int(minutes * 2)):  # 30 s blocks
            f.write(signal(("speech", "music")[k % 2], 30, rate, 1, seed=k % 4)[:, 0])
    return str(path)


def peak_traced_bytes(path) -> tuple[int, list]:
    tracemalloc.start()
    try:
        results = list(run_files(zcr_logits, [path], Windowing(SR, 16000, 16000), batch_size=64))
        return tracemalloc.get_traced_memory()[1], results
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_with_the_length_of_a_recording(tmp_path):
    """An hour at 8 kHz (resampled to 16 kHz: 230 MB as float32 if read whole) costs about what
    ten minutes cost: the peak of Python/NumPy allocations while it is classified."""
    short, _ = peak_traced_bytes(write_long(tmp_path / "ten_minutes.wav", 10))
    hour, (result,) = peak_traced_bytes(write_long(tmp_path / "hour.wav", 60))
    assert result.error is None and result.n_samples == 3600 * SR
    assert result.starts.size == 3600
    assert hour < 40 * 2**20, hour  # a sixth of the whole recording, at most
    assert hour < 1.5 * short + 4 * 2**20, (short, hour)
