"""Reading audio: any format libsndfile reads, mixed to mono, resampled with soxr.

Every function here is pure with respect to its inputs (a path and numbers): no caches, no
globals. Problems are reported as :class:`AudioError`, whose message names the file and what is
wrong with it, and whose ``kind`` is a short tag that the pipeline counts in ``data_errors``.

Kinds: ``missing``, ``empty`` (0 bytes or 0 frames), ``unreadable`` (not audio, corrupt, or a
decoding error), ``unsupported_format`` (an audio container libsndfile cannot read, e.g. .m4a),
``nonfinite`` (NaN or Inf samples), ``silent`` (no sample above :data:`SILENCE_PEAK`, defined in
:mod:`speechmusic_jax.portable`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

import numpy as np
import soundfile as sf

from speechmusic_jax.errors import AudioError

# The silence threshold, mixing, resampling and fitting a clip to a window length are defined
# once, in speechmusic_jax.portable (which the exported model's loader shares).
from speechmusic_jax.portable import SILENCE_PEAK, mix, resample
from speechmusic_jax.portable import fit_length as fit_length

# Extensions that libsndfile reads. Files with other extensions in a corpus tree are not audio to
# us (a README or a cover image next to the audio is not an error; it is counted and left out).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au",
     ".snd", ".caf", ".w64", ".rf64", ".mp3", ".sd2", ".voc", ".wv", ".htk", ".sph"}
)
# Audio containers that libsndfile cannot read: a file with one of these is a user's recording in
# the wrong format, reported (kind ``unsupported_format``) rather than silently left out.
UNSUPPORTED_AUDIO_EXTENSIONS = frozenset(
    {".m4a", ".mp4", ".aac", ".wma", ".webm", ".amr", ".3gp", ".ape", ".mka", ".ac3", ".ra"}
)
# Resampling context read on each side of a crop, in output samples' worth of source samples
# (scaled by the rate ratio when downsampling): longer than soxr's HQ filter, so a resampled crop
# equals the same samples of the resampled whole file (to ~1e-6) instead of having edge ramps.
_RESAMPLE_MARGIN = 256
_BLOCK_FRAMES = 1 << 16


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What the header says about a file, before any sample is decoded."""

    path: str
    sample_rate: int
    frames: int
    channels: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_path(path: str | os.PathLike) -> bool:
    """True when the file extension is one that libsndfile may read."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


def is_unsupported_audio_path(path: str | os.PathLike) -> bool:
    """True for audio containers that libsndfile cannot read (.m4a, .aac, .wma, ...)."""
    return os.path.splitext(os.fspath(path))[1].lower() in UNSUPPORTED_AUDIO_EXTENSIONS


def unsupported_error(path: str | os.PathLike) -> AudioError:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    return AudioError(path, "unsupported_format",
                      f"{ext} audio is not supported (libsndfile reads WAV, FLAC, OGG/Vorbis/Opus, "
                      "MP3, AIFF, ...); convert it, e.g. ffmpeg -i IN OUT.flac")


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of ``path``; raise :class:`AudioError` if it is unusable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "missing", "file does not exist")
    if os.path.isdir(path):
        raise AudioError(path, "unreadable", "is a folder, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty", "file is empty (0 bytes)")
    if is_unsupported_audio_path(path):
        raise unsupported_error(path)
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile raises several types; all mean "cannot read"
        raise AudioError(path, "unreadable",
                         f"not a readable audio file ({_open_reason(e)})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, "unreadable", "header has no valid sample rate or channel count")
    if info.frames <= 0:
        raise AudioError(path, "empty", "audio has no samples (0 frames)")
    frames = int(info.frames)
    if str(info.format) == "MP3" and frames > _max_mp3_frames(path, info.samplerate):
        # An MP3's length comes from an optional header (Xing/Info) that can lie; a claim beyond
        # what the file's bytes could hold at MP3's lowest bit rate is replaced by a count.
        frames = _count_frames(path)
        if frames <= 0:
            raise AudioError(path, "empty", "audio has no samples (0 frames)")
    return AudioInfo(path, int(info.samplerate), frames, int(info.channels),
                     str(info.format), str(info.subtype))


def _max_mp3_frames(path: str, sample_rate: int) -> int:
    """The most samples an MP3 of this size can hold: MPEG-2.5 layer III at 8 kbit/s, +10%."""
    seconds = os.path.getsize(path) * 8 / 8000
    return int(seconds * sample_rate * 1.1) + 1152


def _count_frames(path: str) -> int:
    """Decode until the data ends (a short read), counting frames; bounded by the real data."""
    total = 0
    try:
        with sf.SoundFile(path) as f:
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                total += block.shape[0]
                if block.shape[0] < _BLOCK_FRAMES:
                    return total
    except Exception as e:
        raise AudioError(path, "unreadable", f"decoding failed ({_short(e)})") from None


def load(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    info: AudioInfo | None = None,
) -> np.ndarray:
    """Decode ``path`` (or a part of it) as float32 mono at ``sample_rate``.

    ``offset_s`` and ``duration_s`` select a part of the file in seconds; only that part (plus a
    few samples of resampling context) is read: libsndfile seeks, so a crop of an hour-long file
    costs what the crop costs. Channels are averaged; the rate is converted with soxr. The result
    is finite and non-empty, or an :class:`AudioError` says why not (``kind`` one of unreadable,
    empty, nonfinite, silent). Silence is only an error for a whole-file read: a crop may fall on
    a pause.
    """
    info = info or probe(path)
    sr = info.sample_rate
    start = max(0, int(round(offset_s * sr)))
    if start >= info.frames:
        raise AudioError(path, "empty",
                         f"offset {offset_s:.3f}s is past the end ({info.seconds:.3f}s)")
    stop = info.frames
    if duration_s is not None:
        stop = min(info.frames, start + int(math.ceil(duration_s * sr)) + 1)
    drop = 0
    if sr != sample_rate:
        # Start reading on a sample that is also on the output grid (a multiple of
        # sr / gcd(sr, sample_rate)) at least _RESAMPLE_MARGIN samples early: the crop is then
        # exactly the same output samples as in the resampled whole file, free of edge effects.
        g = math.gcd(sr, sample_rate)
        step, out_step = sr // g, sample_rate // g
        margin = int(math.ceil(_RESAMPLE_MARGIN * max(1.0, sr / sample_rate)))
        out_start = int(round(offset_s * sample_rate))
        k = max(0, math.floor((out_start * sr / sample_rate - margin) / step))
        start, drop = k * step, out_start - k * out_step
        if duration_s is not None:
            stop = min(info.frames, stop + margin)
    mono = _read_mono(info.path, start, stop)
    if mono.size == 0:
        raise AudioError(path, "empty", "decoded no samples")
    if not np.isfinite(mono).all():
        raise AudioError(path, "nonfinite", "audio contains NaN or Inf samples")
    if sr != sample_rate:
        n = mono.size
        mono = resample(mono, sr, sample_rate)[drop:]
        if mono.size == 0:
            raise AudioError(path, "empty", f"too short: {n} sample(s) at {sr} Hz leave none at "
                                            f"{sample_rate} Hz")
    if duration_s is not None:
        mono = mono[: int(round(duration_s * sample_rate))]
    elif float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise AudioError(path, "silent", _silent_detail(mono))
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_samples(path: str | os.PathLike, info: AudioInfo | None = None) -> None:
    """Decode the whole file block by block (native rate, bounded memory); raise
    :class:`AudioError` if any sample is NaN/Inf (``nonfinite``) or all are silent (``silent``)."""
    info = info or probe(path)
    peak = 0.0
    try:
        with sf.SoundFile(info.path) as f:
            remaining = info.frames
            while remaining > 0:  # a short read ends the data, whatever the header said
                block = f.read(min(_BLOCK_FRAMES, remaining), dtype="float32", always_2d=True)
                if not np.isfinite(block).all():
                    raise AudioError(path, "nonfinite", "audio contains NaN or Inf samples")
                if block.size:
                    peak = max(peak, float(np.max(np.abs(block))))
                if block.shape[0] < min(_BLOCK_FRAMES, remaining):
                    break
                remaining -= block.shape[0]
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, "unreadable", f"decoding failed ({_short(e)})") from None
    if peak < SILENCE_PEAK:
        raise AudioError(path, "silent", _silent_detail(np.asarray([peak], np.float32)))


def exact_zero_share(path: str | os.PathLike, info: AudioInfo | None = None) -> float:
    """The share of frames (at the file's own rate, before any resampling, which would blur
    them) whose every channel decodes to exactly 0: digital silence. Integer PCM decodes 0 to
    exactly 0.0, so this counts the stored zeros; a lossy format (MP3, Vorbis, Opus) rarely
    decodes to exact zeros. Read block by block, in bounded memory."""
    info = info or probe(path)
    zeros = total = 0
    try:
        with sf.SoundFile(info.path) as f:
            for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
                zeros += int(np.count_nonzero(np.all(block == 0, axis=1)))
                total += block.shape[0]
    except Exception as e:
        raise AudioError(path, "unreadable", f"decoding failed ({_short(e)})") from None
    if total == 0:
        raise AudioError(path, "empty", "decoded no samples")
    return zeros / total


def fingerprint(info: AudioInfo, seconds: float = 1.0) -> str:
    """A cheap content key: length, rate, channels and a hash of the first and last ``seconds``.

    Files with identical audio always share it; files that share it are then compared with
    :func:`content_hash`. Raises :class:`AudioError` when the file cannot be decoded.
    """
    n = max(1, int(seconds * info.sample_rate))
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{info.frames}:{info.sample_rate}:{info.channels}".encode())
    h.update(_read_raw(info.path, 0, min(n, info.frames)).tobytes())
    h.update(_read_raw(info.path, max(0, info.frames - n), info.frames).tobytes())
    return h.hexdigest()


def content_hash(info: AudioInfo) -> str:
    """Hash of every decoded sample (native rate, all channels): equal for identical audio even in
    different containers (a PCM WAV and its FLAC)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{info.frames}:{info.sample_rate}:{info.channels}".encode())
    try:
        with sf.SoundFile(info.path) as f:
            for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
                h.update(np.ascontiguousarray(block).tobytes())
    except Exception as e:
        raise AudioError(info.path, "unreadable", f"decoding failed ({_short(e)})") from None
    return h.hexdigest()


# Only one thread at a time may point the process's stderr (fd 2) elsewhere: this lock
# serialises the reads of MP3 files (whose decoder writes to fd 2), not the others.
_STDERR_REDIRECT = threading.RLock()  # re-entrant: a nested capture is harmless
# What mpg123 (libsndfile's MP3 decoder) writes: "[src/libmpg123/layer3.c:...] error: ...",
# "Note: Illegal Audio-MPEG-Header ...", "Note: Trying to resync...", "Warning: ...".
_DECODER_LINE = re.compile(r"^(\[[^\]]*\.c:[^\]]*\]|Note: |Warning: |Error: )")


@contextlib.contextmanager
def decoder_messages(path: str | os.PathLike) -> Iterator[list[str]]:
    """Capture what libsndfile's MP3 decoder writes to stderr while the block reads ``path``.

    The decoder (mpg123) reports damaged frames by writing lines to file descriptor 2 and
    carries on; they would reach the terminal raw. For an .mp3 file, fd 2 points at a temporary
    file for the block's duration (under a process-wide lock: reads run in threads) and the list
    yielded holds the decoder's lines once the block ends; anything else written to fd 2 in that
    time (another thread's output) is passed on to stderr. Other formats read as they are, in
    parallel, and their list stays empty. The caller turns the lines into one warning per file
    (:func:`decoder_warning`)."""
    lines: list[str] = []
    if os.path.splitext(os.fspath(path))[1].lower() != ".mp3":
        yield lines
        return
    with _STDERR_REDIRECT, tempfile.TemporaryFile() as captured:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            yield lines
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            other = []
            for line in text.splitlines(keepends=True):
                (lines if _DECODER_LINE.match(line) else other).append(line)
            lines[:] = [ln.strip() for ln in lines]
            if other:
                os.write(2, "".join(other).encode())


def decoder_warning(path: str | os.PathLike, lines: list[str]) -> str:
    """The one warning for a file whose decoder reported problems (:func:`decoder_messages`)."""
    errors = [ln for ln in lines if "error" in ln.lower()]
    example = re.sub(r"^\[[^\]]*\]\s*", "", (errors or lines)[0])
    return (f"warning: {os.fspath(path)}: the MP3 decoder reported {len(lines)} problem(s) "
            f"({len(errors)} error(s), e.g. {example!r}) and decoded what it could: the file "
            "is used, but may hold glitches or gaps")


def _read_raw(path: str, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) as float32 (frames, channels), seeking to ``start``."""
    try:
        with sf.SoundFile(path) as f:
            if start:
                f.seek(start)
            return f.read(max(0, stop - start), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(path, "unreadable", f"decoding failed ({_short(e)})") from None


def _read_mono(path: str, start: int, stop: int) -> np.ndarray:
    return mix(_read_raw(path, start, stop))


def _silent_detail(x: np.ndarray) -> str:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.0f}"
    return f"audio is silent (peak level {level} dBFS, below -100 dBFS)"


def _open_reason(e: BaseException) -> str:
    """libsndfile's reason for refusing a file, without the path it repeats. Its message for
    bytes that no decoder recognises ("File does not exist or is not a regular file", from the
    MP3 probe) is wrong for a file that exists, so that one is named for what it is."""
    text = _short(e)
    text = re.sub(r"^Error opening '.*?': ", "", text)
    if "does not exist or is not a regular file" in text:
        return "format not recognised or header damaged"
    return text.rstrip(".") or type(e).__name__


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
