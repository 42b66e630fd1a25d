"""Reading audio: every format, rate and channel count; crops by seeking; bad files."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import CHANNELS, FORMATS, RATES, signal, write, write_bad

from speechmusic_jax.data import audio

SR = 16000


@pytest.mark.parametrize(("ext", "subtype"), FORMATS)
@pytest.mark.parametrize("rate", RATES)
def test_every_format_and_rate_reads_as_mono_float32_at_the_config_rate(tmp_path, ext, subtype,
                                                                        rate):
    channels = CHANNELS[(RATES.index(rate) + FORMATS.index((ext, subtype))) % len(CHANNELS)]
    x = signal("music", 0.5, rate, channels, seed=1)
    path = write(tmp_path / f"a.{ext}", x, rate, subtype)
    info = audio.probe(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    y = audio.load(path, SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.shape[0] - 0.5 * SR) <= 2 + (SR // 100 if ext == "ogg" else 0)
    assert np.isfinite(y).all() and 0.05 < np.abs(y).max() < 1.0


def test_channels_are_averaged(tmp_path):
    x = signal("music", 0.25, SR, 1, seed=2)[:, 0]
    stereo = np.stack([x, np.zeros_like(x)], axis=1)
    y = audio.load(write(tmp_path / "s.wav", stereo, SR, "FLOAT"), SR)
    np.testing.assert_allclose(y, x / 2, atol=1e-6)


def test_resampling_keeps_the_pitch(tmp_path):
    rate, f0 = 44100, 440.0
    t = np.arange(rate) / rate
    path = write(tmp_path / "tone.flac", (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32),
                 rate, "PCM_24")
    y = audio.load(path, SR)
    assert y.shape[0] == SR
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.fft.rfftfreq(y.shape[0], 1 / SR)[spectrum.argmax()] - f0) <= 1.0


def test_a_crop_equals_the_same_part_of_the_whole_clip(tmp_path):
    x = signal("speech", 3.0, SR, 1, seed=3)
    path = write(tmp_path / "c.wav", x, SR, "FLOAT")
    whole = audio.load(path, SR)
    crop = audio.load(path, SR, offset_s=1.25, duration_s=0.5)
    np.testing.assert_array_equal(crop, whole[20000:28000])


def test_a_resampled_crop_matches_the_resampled_whole(tmp_path):
    rate = 22050
    t = np.arange(3 * rate) / rate
    x = (0.4 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    path = write(tmp_path / "r.wav", x, rate, "FLOAT")
    whole = audio.load(path, SR)
    crop = audio.load(path, SR, offset_s=1.0, duration_s=0.5)
    assert crop.shape[0] == 8000
    # No edge transient: the crop's first and last samples match the whole clip's too.
    np.testing.assert_allclose(crop, whole[16000:24000], atol=1e-5)


def test_a_crop_reads_only_its_part_of_a_long_file(tmp_path, monkeypatch):
    # An hour at 8 kHz would be 57 MB; ten minutes makes the point. Only the crop region holds
    # valid samples: everything else is NaN, so reading it would fail the finiteness check.
    rate, minutes = 8000, 10
    n = rate * 60 * minutes
    x = np.full(n, np.nan, np.float32)
    start = rate * 60 * 7
    x[start - 600 : start + rate * 2 + 600] = 0.25
    path = write(tmp_path / "long.wav", x, rate, "FLOAT")
    seen: list[tuple[int, int]] = []
    real_read, real_seek = sf.SoundFile.read, sf.SoundFile.seek
    position = {"at": 0}

    def seek(self, frames, *args, **kwargs):
        position["at"] = frames
        return real_seek(self, frames, *args, **kwargs)

    def read(self, frames=-1, *args, **kwargs):
        seen.append((position["at"], frames))
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "seek", seek)
    monkeypatch.setattr(sf.SoundFile, "read", read)
    y = audio.load(path, rate, offset_s=7 * 60, duration_s=2.0)
    assert y.shape[0] == 2 * rate and np.all(y == 0.25)
    assert seen == [(start, 2 * rate + 1)]  # one read of the crop (plus one sample), seeked to
    # Resampling reads a small margin on each side, still nothing like the whole file.
    seen.clear()
    y = audio.load(path, 16000, offset_s=7 * 60, duration_s=2.0)
    assert y.shape[0] == 32000 and np.isfinite(y).all()
    assert len(seen) == 1 and seen[0][1] < 2 * rate + 1200
    with pytest.raises(audio.AudioError) as e:
        audio.load(path, rate)
    assert e.value.kind == "nonfinite"


@pytest.mark.parametrize("mode", ["pad", "loop"])
def test_fit_length_pads_or_loops_short_clips(mode):
    x = np.arange(1, 4, dtype=np.float32)
    y = audio.fit_length(x, 7, mode)
    expected = [1, 2, 3, 0, 0, 0, 0] if mode == "pad" else [1, 2, 3, 1, 2, 3, 1]
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(audio.fit_length(np.arange(10.0), 4, mode), np.arange(4.0))
    with pytest.raises(ValueError):
        audio.fit_length(x, 5, "wrap")


@pytest.mark.parametrize(("kind", "error_kind", "words"), [
    ("corrupt", "unreadable", "not a readable audio file"),
    ("zero_length", "empty", "file is empty (0 bytes)"),
    ("no_frames", "empty", "audio has no samples (0 frames)"),
    ("unsupported", "unsupported_format", ".m4a audio is not supported"),
])
def test_probe_names_the_file_and_the_problem(tmp_path, kind, error_kind, words):
    path = write_bad(tmp_path, kind)
    with pytest.raises(audio.AudioError) as e:
        audio.probe(path)
    assert e.value.kind == error_kind
    assert str(e.value).startswith(path + ": ") and words in str(e.value)


def test_probe_of_a_missing_file(tmp_path):
    with pytest.raises(audio.AudioError, match="file does not exist") as e:
        audio.probe(tmp_path / "nope.wav")
    assert e.value.kind == "missing"


@pytest.mark.parametrize(("kind", "error_kind", "words"), [
    ("silent", "silent", "audio is silent (peak level -inf dBFS"),
    ("nan", "nonfinite", "audio contains NaN or Inf samples"),
    ("inf", "nonfinite", "audio contains NaN or Inf samples"),
    ("corrupt_body", "unreadable", "decoding failed"),
])
def test_sample_problems_are_found_when_decoded(tmp_path, kind, error_kind, words):
    path = write_bad(tmp_path, kind)
    info = audio.probe(path)  # the header is fine
    for check in (lambda: audio.check_samples(path, info), lambda: audio.load(path, SR)):
        with pytest.raises(audio.AudioError) as e:
            check()
        assert e.value.kind == error_kind and words in str(e.value)
        assert str(e.value).startswith(path)


def test_a_silent_crop_of_a_good_file_is_not_an_error(tmp_path):
    x = signal("speech", 2.0, SR, 1, seed=5)
    x[:SR] = 0
    path = write(tmp_path / "pause.wav", x, SR, "PCM_16")
    assert not audio.load(path, SR, offset_s=0.0, duration_s=0.5).any()
    audio.check_samples(path)  # the file as a whole is not silent


def test_one_lsb_of_dither_is_not_silence(tmp_path):
    x = np.zeros(SR, np.int16)
    x[::100] = 1
    path = tmp_path / "dither.wav"
    sf.write(path, x, SR, subtype="PCM_16")
    audio.check_samples(str(path))


def test_identical_audio_has_the_same_content_hash_across_containers(tmp_path):
    x = (signal("music", 3.0, 22050, 2, seed=6) * 32767).astype(np.int16)  # exact in both
    a = write(tmp_path / "a.wav", x, 22050, "PCM_16")
    b = write(tmp_path / "b.flac", x, 22050, "PCM_16")
    c = str(tmp_path / "c.wav")
    shutil.copy(a, c)
    y = x.copy()
    y[33000, 0] += 1000  # differs in the middle only: same fingerprint, different content
    d = write(tmp_path / "d.wav", y, 22050, "PCM_16")
    infos = {p: audio.probe(p) for p in (a, b, c, d)}
    prints = {p: audio.fingerprint(i) for p, i in infos.items()}
    hashes = {p: audio.content_hash(i) for p, i in infos.items()}
    assert prints[a] == prints[b] == prints[c] == prints[d]
    assert hashes[a] == hashes[b] == hashes[c] != hashes[d]
    assert os.path.getsize(a) != os.path.getsize(b)


def test_a_text_file_with_an_audio_name_is_unreadable(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 20)
    with pytest.raises(audio.AudioError) as e:
        audio.probe(path)
    assert e.value.kind == "unreadable"
    assert str(e.value) == f"{path}: not a readable audio file (Format not recognised)"


# The MP3 decoder's stderr lines: captured, and one warning per file.
MPG123_LINE = (b"[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length (3313) "
               b"too large for available bit count (2680)\n")


def test_decoder_lines_on_fd_2_are_captured_and_the_rest_passed_on(tmp_path, capfd):
    with audio.decoder_messages(tmp_path / "a.mp3") as lines:
        os.write(2, MPG123_LINE + b"Note: Trying to resync...\n")  # as the C decoder writes
        os.write(2, b"another thread's line\n")
    assert lines == [MPG123_LINE.decode().strip(), "Note: Trying to resync..."]
    assert capfd.readouterr().err == "another thread's line\n"
    warning = audio.decoder_warning(tmp_path / "a.mp3", lines)
    assert "a.mp3" in warning and "reported 2 problem(s)" in warning
    assert "'error: part2_3_length (3313)" in warning and "\n" not in warning
    with audio.decoder_messages(tmp_path / "a.wav") as lines:  # not MP3: left alone
        os.write(2, MPG123_LINE)
    assert lines == [] and "part2_3_length" in capfd.readouterr().err


def test_decoder_lines_of_threads_reading_at_once_go_to_their_own_file(tmp_path, capfd):
    import concurrent.futures
    import time

    def read(i: int) -> list[str]:
        with audio.decoder_messages(tmp_path / f"{i}.mp3") as lines:
            for _ in range(3):
                os.write(2, f"Note: file {i}\n".encode())
                time.sleep(0.001)
        return lines

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(read, range(8)))
    assert results == [[f"Note: file {i}"] * 3 for i in range(8)]
    assert capfd.readouterr().err == ""


def _damaged_mp3(path) -> str:
    """Two seconds of MP3 with 40 bytes of its frames overwritten: mpg123 reports errors
    (part2_3_length, dequantization, resync) and decodes the rest."""
    import io

    buf = io.BytesIO()
    sf.write(buf, signal("music", 2.0, SR, 1, seed=0), SR, format="MP3",
             subtype="MPEG_LAYER_III")
    data = bytearray(buf.getvalue())
    rng = np.random.default_rng(0)
    for i in rng.integers(400, len(data) - 100, size=40):
        data[i] = rng.integers(0, 256)
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_a_damaged_mp3_gives_one_warning_and_no_decoder_lines(tmp_path, capfd):
    from speechmusic_jax.data.pipeline import AudioReader

    path = _damaged_mp3(tmp_path / "damaged.mp3")
    warnings: list[str] = []
    reader = AudioReader(SR, warn=warnings.append)
    clip = reader.whole(path)
    for offset in (0.0, 0.5, 1.0):
        reader.crop(path, offset, SR // 4)
    assert clip.size > SR  # decoded what it could
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path}: the MP3 decoder")
    err = capfd.readouterr().err
    assert "libmpg123" not in err and "Note:" not in err, err
