"""Reading audio: any format libsndfile reads, mixed to mono, resampled with soxr.

Every function here is pure with respect to its inputs (a path and numbers): no caches, no
globals. Problems are reported as :class:`AudioError`, whose message names the file and what is
wrong with it, and whose ``kind`` is a short tag that the pipeline counts in ``data_errors``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import soundfile as sf
import soxr

# Extensions that libsndfile reads. Files with other extensions in a corpus tree are ignored
# (a README or a cover image next to the audio is not an error).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au",
     ".snd", ".caf", ".w64", ".rf64", ".mp3", ".sd2", ".voc", ".wv", ".htk", ".sph"}
)


class AudioError(Exception):
    """A problem with one audio file: ``kind`` tags it, the message names the file."""

    def __init__(self, path: str | os.PathLike, kind: str, detail: str):
        self.path = os.fspath(path)
        self.kind = kind
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


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


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of ``path``; raise :class:`AudioError` if it is unusable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "missing", "file does not exist")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty", "file is empty (0 bytes)")
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile raises several types; all mean "cannot read"
        raise AudioError(path, "unreadable", f"not a readable audio file ({_short(e)})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, "unreadable", "header has no valid sample rate or channel count")
    if info.frames <= 0:
        raise AudioError(path, "empty", "audio has no samples (0 frames)")
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels),
                     str(info.format), str(info.subtype))


def load(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    info: AudioInfo | None = None,
) -> np.ndarray:
    """Decode ``path`` (or a part of it) as float32 mono at ``sample_rate``.

    ``offset_s`` and ``duration_s`` select a part of the file in seconds; only that part is read
    (libsndfile seeks), so a crop of an hour-long file costs what the crop costs. Channels are
    averaged; the rate is converted with soxr. The result is finite and non-empty, or an
    :class:`AudioError` says why not (``kind`` one of unreadable, empty, nonfinite, silent).
    """
    info = info or probe(path)
    start = max(0, int(round(offset_s * info.sample_rate)))
    if start >= info.frames:
        raise AudioError(path, "empty", f"offset {offset_s:.3f}s is past the end ({info.seconds:.3f}s)")
    stop = info.frames
    if duration_s is not None:
        # Read a couple of extra source samples so that resampling yields the full length.
        stop = min(info.frames, start + int(math.ceil(duration_s * info.sample_rate)) + 2)
    try:
        data, _ = sf.read(info.path, start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(path, "unreadable", f"decoding failed ({_short(e)})") from None
    if data.size == 0:
        raise AudioError(path, "empty", "decoded no samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(path, "nonfinite", "audio contains NaN or Inf samples")
    if info.sample_rate != sample_rate:
        mono = soxr.resample(mono, info.sample_rate, sample_rate, quality="HQ").astype(np.float32)
    if duration_s is not None:
        mono = mono[: int(round(duration_s * sample_rate))]
    if duration_s is None and not np.any(mono):
        raise AudioError(path, "silent", "audio is all zeros (silent)")
    return np.ascontiguousarray(mono, dtype=np.float32)


def fit_length(x: np.ndarray, length: int, mode: str = "pad") -> np.ndarray:
    """Return ``x`` cut or extended to ``length`` samples; ``mode`` is ``pad`` (zeros) or ``loop``."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    n = x.shape[0]
    if n >= length:
        return x[:length]
    if mode == "loop" and n > 0:
        reps = -(-length // n)
        return np.tile(x, reps)[:length]
    if mode not in ("pad", "loop"):
        raise ValueError(f"mode must be 'pad' or 'loop', got {mode!r}")
    out = np.zeros(length, dtype=x.dtype)
    out[:n] = x
    return out


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
