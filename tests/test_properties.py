"""Property tests (hypothesis) of the reader, resampler, cropper, windowing and epoch plan, and of
the reader on hostile files: random lengths, rates, channel counts, formats and subtypes, and WAV
files with truncated or corrupted headers. Any failure other than ``audio.AudioError`` (naming
the file) is a bug.
"""

from __future__ import annotations

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


def wav_samples(blob: bytes, frames: int, channels: int, bits: int) -> np.ndarray:
    """The first ``frames`` frames of a :func:`wav_bytes` file as the reader must give them:
    float32 in [-1, 1), channels averaged."""
    dtype = {8: np.uint8, 16: "<i2", 32: "<i4"}[bits]
    ints = np.frombuffer(blob[44: 44 + frames * channels * bits // 8], dtype).astype(np.float64)
    x = ((ints - 128) / 128 if bits == 8 else ints / 2.0 ** (bits - 1)).astype(np.float32)
    return x.reshape(frames, channels).mean(axis=1, dtype=np.float32)


def assert_refused(call, path, kind: str) -> audio.AudioError:
    """``call()`` raises AudioError of ``kind`` naming ``path``; returns it."""
    with pytest.raises(audio.AudioError) as err:
        call()
    e = err.value
    assert (e.kind, e.path) == (kind, str(path)), (e.kind, str(e))
    assert str(e).startswith(f"{path}: ")
    return e


def assert_reads(path, rate: int, mono: np.ndarray) -> None:
    """Every way the pipeline reads ``path`` accepts it and gives ``mono`` (the decoded samples at
    the file's own ``rate``), or that audio resampled to 16 kHz."""
    info = audio.probe(path)
    audio.check_samples(path, info)
    assert isinstance(audio.fingerprint(info), str)
    x = audio.load(path, rate, info=info)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, mono, rtol=0, atol=1e-7)
    start = mono.size // 3
    crop = audio.load(path, rate, offset_s=start / rate, duration_s=0.01, info=info)
    np.testing.assert_allclose(crop, mono[start:start + round(0.01 * rate)], rtol=0, atol=1e-7)
    n = mono.size * 16000 / rate
    if round(n) == 0:  # resampled, nothing is left
        assert_refused(lambda: audio.load(path, 16000, info=info), path, "empty")
    else:
        y = audio.load(path, 16000, info=info)
        assert y.dtype == np.float32 and np.isfinite(y).all() and abs(y.size - n) <= 1


@st.composite
def truncated_wavs(draw) -> tuple[bytes, int, int, int, int]:
    """(blob, frames, channels, rate, bits): a canonical WAV cut short anywhere."""
    frames, channels = draw(st.integers(1, 300)), draw(st.integers(1, 3))
    rate, bits = draw(st.sampled_from([8000, 16000, 44100])), draw(st.sampled_from([8, 16, 32]))
    blob = wav_bytes(frames, channels, rate, bits)
    return blob[: draw(st.integers(0, len(blob) - 1))], frames, channels, rate, bits


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=truncated_wavs())
def test_a_truncated_wav_gives_the_whole_frames_it_holds(folder, case):
    """Cut before its data chunk's header, a WAV is refused by the header scan (empty at 0
    bytes, unreadable up to the data chunk's size field, empty after it); cut inside its data,
    it gives exactly the whole frames that are left (empty if none)."""
    blob, frames, channels, rate, bits = case
    path = os.path.join(folder, f"truncated {uuid.uuid4().hex[:8]}.wav")
    with open(path, "wb") as f:
        f.write(blob)
    try:
        held = max(0, (len(blob) - 44) // (channels * bits // 8))
        if len(blob) == 0:
            e = assert_refused(lambda: audio.probe(path), path, "empty")
            assert e.detail == "file is empty (0 bytes)"
        elif len(blob) <= 40:  # no complete data chunk header
            e = assert_refused(lambda: audio.probe(path), path, "unreadable")
            assert e.detail.startswith("not a readable audio file (")
        elif held == 0:
            e = assert_refused(lambda: audio.probe(path), path, "empty")
            assert e.detail == "audio has no samples (0 frames)"
        else:
            info = audio.probe(path)
            assert (info.sample_rate, info.frames, info.channels) == (rate, held, channels)
            mono = wav_samples(blob, held, channels, bits)
            if np.max(np.abs(mono)) < audio.SILENCE_PEAK:  # 8-bit samples that are all 128
                assert_refused(lambda: audio.check_samples(path, info), path, "silent")
                assert_refused(lambda: audio.load(path, rate, info=info), path, "silent")
            else:
                assert_reads(path, rate, mono)
    finally:
        os.remove(path)


# Header fields (offset, struct format) a corruption may overwrite with any value.
HEADER_FIELDS = [(4, "<I"), (16, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"),
                 (32, "<H"), (34, "<H"), (40, "<I")]


@st.composite
def hostile_wavs(draw) -> bytes:
    data = bytearray(wav_bytes(draw(st.integers(1, 300)), draw(st.integers(1, 3)),
                               draw(st.sampled_from([8000, 16000, 44100])),
                               draw(st.sampled_from([8, 16, 32]))))
    how = draw(st.sampled_from(["field", "bytes", "both"]))
    if how == "both":
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


def libsndfile_verdict(path: str) -> tuple[str, str] | tuple[int, np.ndarray]:
    """What the reader must make of ``path``, from libsndfile's own reading of it: (kind,
    "header") for a file the header scan must refuse, (kind, "samples") for one it passes and the
    first decode must refuse, or (sample rate, mono samples) for one every read must accept."""
    if os.path.getsize(path) == 0:
        return "empty", "header"
    try:
        info = sf.info(path)
    except Exception:
        return "unreadable", "header"
    if info.samplerate <= 0 or info.channels <= 0:
        return "unreadable", "header"
    if info.frames <= 0:
        return "empty", "header"
    try:
        data, _ = sf.read(path, dtype="float32", always_2d=True)
    except Exception:
        return "unreadable", "samples"
    if not np.isfinite(data).all():
        return "nonfinite", "samples"
    if data.shape[0] == 0:
        return "empty", "samples"
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if np.max(np.abs(mono)) < audio.SILENCE_PEAK:
        return "silent", "samples"
    return int(info.samplerate), mono


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(blob=hostile_wavs())
def test_corrupted_wavs_are_read_as_libsndfile_reads_them_or_refused(folder, blob):
    """A WAV with header fields or bytes overwritten: the header scan refuses what libsndfile
    cannot open (or opens with no frames), the first decode what it cannot decode or decodes to
    NaN, Inf or silence, each as an AudioError of that kind naming the file; anything else is read
    as libsndfile decodes it (mixed to mono), whole or cropped, and resampled to the length its
    rate implies. Never another exception."""
    path = os.path.join(folder, f"hostile {uuid.uuid4().hex[:8]}.wav")
    with open(path, "wb") as f:
        f.write(blob)
    try:
        verdict = libsndfile_verdict(path)
        if isinstance(verdict[0], str) and verdict[1] == "header":
            kind = verdict[0]
            assert_refused(lambda: audio.probe(path), path, kind)
            assert_refused(lambda: audio.load(path, 16000), path, kind)
        elif isinstance(verdict[0], str):
            kind = verdict[0]
            info = audio.probe(path)
            assert_refused(lambda: audio.check_samples(path, info), path, kind)
            assert_refused(lambda: audio.load(path, info.sample_rate, info=info), path, kind)
        else:
            rate, mono = verdict
            assert audio.probe(path).sample_rate == rate
            assert_reads(path, rate, mono)
    finally:
        os.remove(path)


HEADER_REFUSED = [  # (name, bytes, kind, start of the message after the path)
    ("empty", b"", "empty", "file is empty (0 bytes)"),
    ("riff only", b"RIFF", "unreadable", "not a readable audio file ("),
    ("header only", wav_bytes(10)[:44], "empty", "audio has no samples (0 frames)"),
    ("no data chunk", wav_bytes(10)[:36], "unreadable", "not a readable audio file ("),
    ("zero channels", wav_bytes(10)[:22] + b"\x00\x00" + wav_bytes(10)[24:], "unreadable",
     "not a readable audio file ("),
    ("zero rate", wav_bytes(10)[:24] + b"\x00\x00\x00\x00" + wav_bytes(10)[28:], "unreadable",
     "not a readable audio file ("),
    ("text", b"this is not audio at all, just some text\n" * 4, "unreadable",
     "not a readable audio file ("),
]


@pytest.mark.parametrize("name,blob,kind,detail", HEADER_REFUSED,
                         ids=[c[0] for c in HEADER_REFUSED])
def test_named_hostile_files_are_refused_by_the_header_scan(tmp_path, name, blob, kind, detail):
    path = tmp_path / f"{name}.wav"
    path.write_bytes(blob)
    for call in (lambda: audio.probe(path), lambda: audio.load(path, 16000),
                 lambda: audio.check_samples(path)):
        assert assert_refused(call, path, kind).detail.startswith(detail)


def test_a_wav_whose_data_size_overstates_its_data_gives_the_frames_it_holds(tmp_path):
    blob = wav_bytes(10)
    path = tmp_path / "huge data size.wav"
    path.write_bytes(blob[:40] + b"\xff\xff\xff\x7f" + blob[44:])  # claims 2 GiB of data
    info = audio.probe(path)
    assert (info.sample_rate, info.frames, info.channels) == (16000, 10, 1)
    assert_reads(path, 16000, wav_samples(blob, 10, 1, 16))


def test_nan_floats_pass_the_header_scan_and_are_refused_when_decoded(tmp_path):
    path = tmp_path / "NaN floats.wav"
    sf.write(path, np.full(100, np.nan), 16000, subtype="FLOAT")
    info = audio.probe(path)
    assert (info.frames, info.subtype) == (100, "FLOAT")
    for call in (lambda: audio.check_samples(path, info), lambda: audio.load(path, 16000),
                 lambda: audio.load(path, 16000, offset_s=0.001, duration_s=0.002)):
        e = assert_refused(call, path, "nonfinite")
        assert e.detail == "audio contains NaN or Inf samples"


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
    assert sf.info(path).frames > 16000 * 60  # libsndfile believes the header
    # What the data really holds: 4000 samples, plus the decoder's padding (the damaged tag no
    # longer tells the decoder to trim it). Decoded until a short read: the data ends.
    decoded = 0
    with sf.SoundFile(path) as f:
        while (n := f.read(1024, dtype="float32").shape[0]) > 0:
            decoded += n
            assert decoded < 16000 * 10
    assert 4000 <= decoded <= 4000 + 1152  # at most one MPEG frame more
    info = audio.probe(path)  # accepted, with the length of the real data
    assert (info.sample_rate, info.channels, info.frames) == (16000, 1, decoded)
    audio.check_samples(path, info)  # ends quickly: reads only the real data
    x = audio.load(path, 16000)
    assert x.dtype == np.float32 and x.shape == (decoded,) and np.isfinite(x).all()


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
    assert err.value.kind == "silent"
    assert str(err.value) == f"{path}: audio is silent (peak level -inf dBFS, below -100 dBFS)"
    assert not audio.load(path, 16000, offset_s=0.2, duration_s=0.5).any()
