"""Property tests (hypothesis) of the reader, resampler, cropper, windowing and epoch plan, and of
the reader on hostile files: random lengths, rates, channel counts, formats and subtypes, and WAV
files with truncated or corrupted headers. Any failure other than ``audio.AudioError`` (naming
the file) is a bug.
"""

from __future__ import annotations

import math
import os
import struct
import uuid

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from speechmusic_jax.data import audio
from speechmusic_jax.data.pipeline import LoaderConfig, clip_windows, epoch_plan, window_starts
from speechmusic_jax.data.sources import AudioFile

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# Subtypes libsndfile writes in each container (and reads back).
SUBTYPES = {
    "WAV": ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"],
    "FLAC": ["PCM_S8", "PCM_16", "PCM_24"],
}
RATES = st.one_of(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
                  st.integers(1000, 96000))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Generated files live under a path with a space and non-ASCII letters."""
    path = tmp_path_factory.mktemp("props") / "ünï cödé 音"
    path.mkdir()
    return path


@st.composite
def audio_files(draw):
    fmt = draw(st.sampled_from(sorted(SUBTYPES)))
    subtype = draw(st.sampled_from(SUBTYPES[fmt]))
    rate = draw(RATES)
    channels = draw(st.integers(1, 6))
    frames = draw(st.integers(1, 3000))
    kind = draw(st.sampled_from(["noise", "sine", "silence"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return fmt, subtype, rate, channels, frames, kind, seed


def write_file(folder, spec) -> tuple[str, np.ndarray]:
    """Write the file ``spec`` describes; return its path and the samples as read back."""
    fmt, subtype, rate, channels, frames, kind, seed = spec
    rng = np.random.default_rng(seed)
    if kind == "noise":
        data = rng.uniform(-0.9, 0.9, (frames, channels))
    elif kind == "sine":
        t = np.arange(frames)[:, None] / rate
        data = 0.5 * np.sin(2 * np.pi * rng.uniform(20, rate / 8) * t + np.arange(channels))
    else:
        data = np.zeros((frames, channels))
    path = os.path.join(folder, f"clip {uuid.uuid4().hex[:8]} é.{fmt.lower()}")
    try:
        sf.write(path, data, rate, format=fmt, subtype=subtype)
    except sf.LibsndfileError:  # a rate the FLAC encoder refuses (e.g. 65536 Hz)
        if os.path.exists(path):
            os.remove(path)
        assume(False)
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    return path, back


@SETTINGS
@given(spec=audio_files(), target=RATES)
def test_load_whole_file(folder, spec, target):
    _, _, rate, channels, frames, _, _ = spec
    path, back = write_file(folder, spec)
    info = audio.probe(path)
    assert (info.sample_rate, info.channels, info.frames) == (rate, channels, frames)
    mono = back.mean(axis=1, dtype=np.float32)
    try:
        x = audio.load(path, target)
    except audio.AudioError as e:
        assert path in str(e)
        if e.kind == "empty":  # resampling leaves no sample
            assert round(frames * target / rate) == 0
        else:
            assert e.kind == "silent" and np.max(np.abs(mono)) < audio.SILENCE_PEAK, e
        return
    assert np.max(np.abs(mono)) >= audio.SILENCE_PEAK
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert np.isfinite(x).all() and x.size >= 1
    if target == rate:
        np.testing.assert_allclose(x, mono, rtol=0, atol=1e-6)
    else:
        assert abs(x.size - frames * target / rate) <= 1
    os.remove(path)


@SETTINGS
@given(spec=audio_files(), target=RATES, where=st.floats(0.0, 1.0), length=st.floats(0.0, 1.5))
def test_a_crop_is_the_same_part_of_the_whole_file(folder, spec, target, where, length):
    """load(offset, duration) gives the samples of load() at that offset (resampled alike), and
    exactly duration * rate of them unless the file ends first."""
    fmt, subtype, rate, channels, frames, kind, seed = spec
    assume(kind != "silence")
    path, _ = write_file(folder, spec)
    try:
        whole = audio.load(path, target)
    except audio.AudioError as e:  # too short to resample, or a sine ~0 on its few samples
        assume(e.kind not in ("empty", "silent"))
        raise
    offset = where * (frames - 1) / rate  # on a sample of the file
    duration = max(length * frames / rate, 1.0 / target)
    start = int(round(offset * target))
    try:
        crop = audio.load(path, target, offset_s=offset, duration_s=duration)
    except audio.AudioError as e:  # the offset falls after the last resampled sample
        assert e.kind == "empty" and start >= whole.size, e
        return
    want = int(round(duration * target))
    assert crop.dtype == np.float32 and np.isfinite(crop).all()
    assert crop.size <= want
    expected = whole[start:start + want]
    if target == rate:
        assert crop.size == min(want, frames - start)
        np.testing.assert_array_equal(crop, expected)
    else:
        assert abs(crop.size - min(want, expected.size)) <= 1
        n = min(crop.size, expected.size)
        np.testing.assert_allclose(crop[:n], expected[:n], rtol=0, atol=1e-5)
    os.remove(path)


def test_a_crop_resamples_like_the_whole_file(tmp_path):
    """Regression: crops were resampled with too short a margin and differed by up to 2e-2."""
    path = tmp_path / "noise.wav"
    rng = np.random.default_rng(1)
    sf.write(path, rng.uniform(-0.9, 0.9, 44100), 44100, subtype="FLOAT")
    whole = audio.load(path, 16000)
    for offset in np.linspace(0.1, 0.8, 8):
        crop = audio.load(path, 16000, offset_s=offset, duration_s=0.05)
        start = int(round(offset * 16000))
        np.testing.assert_allclose(crop, whole[start:start + crop.size], rtol=0, atol=1e-5)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(rate=RATES, target=RATES, freq_frac=st.floats(0.01, 0.3),
       seconds=st.floats(0.05, 0.5))
def test_resampling_keeps_a_tone(tmp_path_factory, rate, target, freq_frac, seconds):
    """A sine well below both Nyquist frequencies keeps its frequency and level."""
    freq = freq_frac * min(rate, target) / 2
    assume(freq * seconds >= 3)  # at least three periods
    folder = tmp_path_factory.getbasetemp()
    n = int(seconds * rate)
    t = np.arange(n) / rate
    path = os.path.join(folder, f"tone-{uuid.uuid4().hex[:8]}.wav")
    sf.write(path, 0.5 * np.sin(2 * np.pi * freq * t), rate, subtype="FLOAT")
    x = audio.load(path, target)
    os.remove(path)
    edge = int(0.1 * x.size)  # the resampler's edges ramp
    core = x[edge: x.size - edge]
    tt = (np.arange(x.size) / target)[edge: x.size - edge]
    ref = 0.5 * np.sin(2 * np.pi * freq * tt)
    assert np.sqrt(np.mean((core - ref) ** 2)) < 0.02


@settings(max_examples=200, deadline=None, derandomize=True)
@given(x=st.lists(st.floats(-1, 1, width=32), max_size=300), length=st.integers(1, 500),
       mode=st.sampled_from(["pad", "loop"]))
def test_fit_length(x, length, mode):
    x = np.asarray(x, np.float32)
    y = audio.fit_length(x, length, mode)
    n = x.size
    assert y.shape == (length,) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:min(n, length)], x[:length])
    if n < length:
        if mode == "pad" or n == 0:
            assert not y[n:].any()
        else:
            np.testing.assert_array_equal(y, np.resize(x, length))  # x repeated


@pytest.mark.parametrize("length", [0, -3])
def test_fit_length_refuses_a_non_positive_length(length):
    with pytest.raises(ValueError, match="length"):
        audio.fit_length(np.zeros(5, np.float32), length)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(n=st.integers(1, 5000), segment=st.integers(1, 800), hop_frac=st.floats(0.01, 1.0))
def test_windows_cover_the_whole_clip_in_bounds(n, segment, hop_frac):
    hop = max(1, int(segment * hop_frac))  # hop <= segment: no sample is skipped
    starts = window_starts(n, segment, hop)
    assert starts[0] == 0
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    assert all(0 <= s <= max(0, n - segment) for s in starts)
    if n > segment:
        assert starts[-1] + segment == n
        assert all(b - a <= hop for a, b in zip(starts, starts[1:], strict=False))
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + segment] = True
        assert covered.all()
    else:
        assert starts == [0]
    x = np.arange(n, dtype=np.float32) + 1
    for mode in ("pad", "loop"):
        w = clip_windows(x, segment, hop, mode)
        assert w.shape == (len(starts), segment) and w.dtype == np.float32
        if n >= segment:
            for row, s in zip(w, starts, strict=True):
                np.testing.assert_array_equal(row, x[s:s + segment])
        else:
            np.testing.assert_array_equal(w[0], audio.fit_length(x, segment, mode))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(n_files=st.integers(1, 40), batch=st.integers(1, 12), seed=st.integers(0, 2**31 - 1),
       epoch=st.integers(1, 500), durations=st.lists(st.floats(0.0, 10.0), min_size=40,
                                                     max_size=40),
       random_crop=st.booleans())
def test_epoch_plan(n_files, batch, seed, epoch, durations, random_crop):
    from speechmusic_jax.data.augment import AugmentConfig

    files = [AudioFile(f"/f{i}.wav", i % 2, str(i)) for i in range(n_files)]
    durations = durations[:n_files]
    cfg = LoaderConfig(sample_rate=16000, segment=16000, hop=16000, batch_size=batch,
                       augment=AugmentConfig(random_crop=random_crop))
    plan = epoch_plan(files, durations, cfg, seed, epoch)
    assert plan == epoch_plan(files, durations, cfg, seed, epoch)  # a pure function
    assert len(plan) == n_files // batch
    items = [item for b in plan for item in b]
    assert all(len(b) == batch for b in plan)
    assert len({i for i, _ in items}) == len(items)  # no file twice in an epoch
    for i, offset in items:
        assert 0 <= i < n_files
        assert 0.0 <= offset <= max(0.0, durations[i] - 1.0) + 1e-9
        if not random_crop:
            assert offset == 0.0


# --------------------------------------------------------------------------------------------
# Hostile WAV files: truncated, corrupted headers, random bytes


def wav_bytes(frames: int = 200, channels: int = 1, rate: int = 16000, bits: int = 16) -> bytes:
    """A canonical 44-byte-header PCM WAV file."""
    rng = np.random.default_rng(frames)
    dtype = {8: np.uint8, 16: np.int16, 32: np.int32}[bits]
    lo, hi = (0, 255) if bits == 8 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    data = rng.integers(lo, hi, (frames, channels), endpoint=True).astype(dtype).tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data)


# Header fields (offset, struct format) a corruption may overwrite with any value.
HEADER_FIELDS = [(4, "<I"), (16, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"),
                 (32, "<H"), (34, "<H"), (40, "<I")]


@st.composite
def hostile_wavs(draw) -> bytes:
    data = bytearray(wav_bytes(draw(st.integers(1, 300)), draw(st.integers(1, 3)),
                               draw(st.sampled_from([8000, 16000, 44100])),
                               draw(st.sampled_from([8, 16, 32]))))
    how = draw(st.sampled_from(["truncate", "field", "bytes", "both"]))
    if how in ("truncate", "both"):
        data = data[: draw(st.integers(0, len(data) - 1))]
    if how in ("field", "both") and len(data) >= 44:
        offset, fmt = draw(st.sampled_from(HEADER_FIELDS))
        bits = 8 * struct.calcsize(fmt)
        value = draw(st.one_of(st.integers(0, 2**bits - 1), st.sampled_from([0, 1, 2**bits - 1])))
        data[offset: offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    if how == "bytes":
        for _ in range(draw(st.integers(1, 8))):
            if data:
                i = draw(st.integers(0, min(len(data), 60) - 1))
                data[i] = draw(st.integers(0, 255))
    return bytes(data)


def read_everything(path: str) -> None:
    """Every way the pipeline reads a file; each either works or raises AudioError."""
    info = audio.probe(path)
    assert info.frames > 0 and info.sample_rate > 0 and info.channels > 0
    audio.check_samples(path, info)
    audio.fingerprint(info)
    x = audio.load(path, 16000, info=info)
    assert x.dtype == np.float32 and np.isfinite(x).all() and x.size > 0
    crop = audio.load(path, 16000, offset_s=info.seconds / 3, duration_s=0.01, info=info)
    assert np.isfinite(crop).all()


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(blob=hostile_wavs())
def test_truncated_and_corrupted_wavs_raise_audio_error_naming_the_file(folder, blob):
    path = os.path.join(folder, f"hostile {uuid.uuid4().hex[:8]}.wav")
    with open(path, "wb") as f:
        f.write(blob)
    try:
        read_everything(path)
    except audio.AudioError as e:
        assert e.path == path and str(e).startswith(path)
        assert e.kind in ("missing", "empty", "unreadable", "nonfinite", "silent")
    finally:
        os.remove(path)


@pytest.mark.parametrize("name,blob", [
    ("empty", b""),
    ("riff only", b"RIFF"),
    ("header only", wav_bytes(10)[:44]),
    ("no data chunk", wav_bytes(10)[:36]),
    ("zero channels", wav_bytes(10)[:22] + b"\x00\x00" + wav_bytes(10)[24:]),
    ("zero rate", wav_bytes(10)[:24] + b"\x00\x00\x00\x00" + wav_bytes(10)[28:]),
    ("huge data size", wav_bytes(10)[:40] + b"\xff\xff\xff\x7f" + wav_bytes(10)[44:]),
    ("text", b"this is not audio at all, just some text\n" * 4),
    ("NaN floats", None),
])
def test_named_hostile_files(tmp_path, name, blob):
    path = tmp_path / f"{name}.wav"
    if blob is None:
        sf.write(path, np.full(100, np.nan), 16000, subtype="FLOAT")
    else:
        path.write_bytes(blob)
    try:
        read_everything(str(path))
    except audio.AudioError as e:
        assert str(e).startswith(str(path))
        if name == "NaN floats":
            assert e.kind == "nonfinite"
        if name == "empty":
            assert e.kind == "empty"


def test_a_file_too_short_to_resample_is_empty(tmp_path):
    """Regression: resampling that left no samples raised ValueError from np.max."""
    path = tmp_path / "one sample.wav"
    sf.write(path, np.array([0.5]), 44100)
    with pytest.raises(audio.AudioError) as err:
        audio.load(path, 16000)
    assert err.value.kind == "empty"


@pytest.mark.parametrize("claimed", [2**16, 2**32 - 1])
def test_an_mp3_whose_header_claims_hours_is_not_trusted(tmp_path, claimed):
    import io

    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).uniform(-0.5, 0.5, 4000), 16000, format="MP3",
             subtype="MPEG_LAYER_III")
    blob = bytearray(buf.getvalue())
    tag = blob.find(b"Xing")
    assert tag >= 0 and blob[tag + 7] & 1  # the frame-count field is present
    blob[tag + 8:tag + 12] = struct.pack(">I", claimed)
    path = tmp_path / "bogus length.mp3"
    path.write_bytes(blob)
    try:
        info = audio.probe(path)
    except audio.AudioError:
        return  # refusing the file is fine
    assert info.seconds < 2.0, info  # it holds 0.25 s of audio
    audio.check_samples(path, info)  # ends quickly: reads only the real data
    assert audio.load(path, 16000).shape[0] <= 16000 * 2


def test_reader_refuses_folders_and_missing_files(tmp_path):
    with pytest.raises(audio.AudioError, match="does not exist") as err:
        audio.load(tmp_path / "nope.wav", 16000)
    assert err.value.kind == "missing"
    with pytest.raises(audio.AudioError, match="folder"):
        audio.load(tmp_path, 16000)


def test_silence_is_refused_for_a_whole_file_but_not_for_a_crop(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000), 16000, subtype="PCM_16")
    with pytest.raises(audio.AudioError) as err:
        audio.load(path, 16000)
    assert err.value.kind == "silent" and math.isfinite(len(str(err.value)))
    assert not audio.load(path, 16000, offset_s=0.2, duration_s=0.5).any()
