"""Recordings as streams of windows, run through a predictor in fixed-size batches.

:class:`WindowStream` reads a file block by block (libsndfile), mixes it to mono, resamples it
with a streaming soxr resampler (the same samples as resampling the whole file at once) and cuts
windows as the samples arrive, so memory stays flat whatever the length of the recording. The
windows are those of evaluation (``portable.window_starts``, asked as the samples arrive): every
``hop`` samples from 0, the last one aligned to the end; a recording shorter than a window is
padded (or looped) to one.

:func:`run_files` reads the files in a thread, a few blocks ahead, and packs the windows of
consecutive files into batches of one fixed size (the last one padded), so that many short files
share batches and the predictor is compiled for one shape. Results come back per file, in the
order given; a file that cannot be read (missing, not audio, corrupt, NaN samples, silent)
comes back with its error instead of stopping the others, unless ``on_bad_file`` raises.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from speechmusic_jax import portable
from speechmusic_jax.data import audio
from speechmusic_jax.errors import AudioError


@dataclasses.dataclass(frozen=True)
class Windowing:
    """How a recording is cut into the model's inputs."""

    sample_rate: int  # the model's rate; files at other rates are resampled
    segment: int  # samples per window
    hop: int  # samples between window starts
    short_clip: str = "pad"  # a recording shorter than a window: "pad" (zeros) or "loop"
    block_seconds: float = 20.0  # audio read per block (of the file's own rate)

    def __post_init__(self) -> None:
        if self.segment <= 0 or self.hop <= 0:
            raise ValueError(f"segment and hop must be positive, got {self.segment}, {self.hop}")


class WindowStream:
    """Iterate over ``(starts, windows)`` chunks of one file: starts (k,) in samples at
    ``windowing.sample_rate``, windows (k, segment) float32. After the iteration ends,
    ``n_samples`` is the recording's length at that rate. Raises :class:`AudioError`."""

    def __init__(self, path: str, windowing: Windowing, info: audio.AudioInfo | None = None):
        self.path = path
        self.windowing = windowing
        self.info = info
        self.n_samples: int | None = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        w = self.windowing
        info = self.info or audio.probe(self.path)
        seg, hop = w.segment, w.hop
        resampler = (None if info.sample_rate == w.sample_rate else soxr.ResampleStream(
            info.sample_rate, w.sample_rate, 1, dtype="float32",
            quality=portable.RESAMPLE_QUALITY))
        block = max(4096, int(w.block_seconds * info.sample_rate))
        buf = np.zeros(0, np.float32)
        buf_pos = 0  # sample index (output rate) of buf[0]
        next_start = 0  # the next start on the hop grid
        done = 0  # every start before this has been yielded
        total = 0
        peak = 0.0
        for mono, last in self._blocks(info, block):
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if mono.size:
                peak = max(peak, float(np.max(np.abs(mono))))
                total += mono.size
                buf = np.concatenate([buf, mono]) if buf.size else mono
            end = buf_pos + buf.size
            starts = portable.window_starts(end, seg, hop, complete=False, since=done)
            if starts:
                view = np.lib.stride_tricks.sliding_window_view(buf, seg)
                first = starts[0] - buf_pos
                x = np.ascontiguousarray(view[first : first + (len(starts) - 1) * hop + 1 : hop])
                next_start, done = starts[-1] + hop, starts[-1] + 1
                yield np.asarray(starts, np.int64), x
            keep = max(buf_pos, min(next_start, end - seg))
            buf, buf_pos = buf[keep - buf_pos :], keep
        if total == 0:
            raise AudioError(self.path, "empty", "decoded no samples")
        if peak < portable.SILENCE_PEAK:
            raise AudioError(self.path, "silent", audio._silent_detail(np.asarray([peak])))
        # The end is known: what is left is the window aligned to it, or the one padded window
        # of a recording shorter than a window.
        for start in portable.window_starts(total, seg, hop, since=done):
            yield (np.asarray([start], np.int64), portable.clip_windows(
                buf[start - buf_pos : total - buf_pos], seg, hop, w.short_clip))
        self.n_samples = total

    def _blocks(self, info: audio.AudioInfo, block: int) -> Iterator[tuple[np.ndarray, bool]]:
        """(mono float32 block, is_last) of the file at its own rate; checks for NaN/Inf."""
        try:
            f = sf.SoundFile(info.path)
        except Exception as e:
            raise AudioError(self.path, "unreadable",
                             f"not a readable audio file ({audio._open_reason(e)})") from None
        with f:
            remaining = info.frames
            while True:
                want = min(block, remaining)
                try:
                    data = f.read(want, dtype="float32", always_2d=True) if want > 0 else \
                        np.zeros((0, info.channels), np.float32)
                except Exception as e:
                    raise AudioError(self.path, "unreadable",
                                     f"decoding failed ({audio._short(e)})") from None
                remaining -= data.shape[0]
                last = data.shape[0] < want or remaining <= 0
                mono = portable.mix(data)
                if not np.isfinite(mono).all():
                    raise AudioError(self.path, "nonfinite", "audio contains NaN or Inf samples")
                yield np.ascontiguousarray(mono, dtype=np.float32), last
                if last:
                    return


@dataclasses.dataclass
class FileResult:
    """One file's windows and their logits, or the error that stopped its reading."""

    index: int  # position in the list of paths given
    path: str
    n_samples: int = 0  # at the model's rate
    starts: np.ndarray | None = None  # (windows,) samples
    logits: np.ndarray | None = None  # (windows, classes) float32
    error: AudioError | None = None

    def duration_s(self, sample_rate: int) -> float:
        return self.n_samples / sample_rate

    @property
    def clip_logits(self) -> np.ndarray:
        """The file's decision: the mean of its windows' logits (as in training's evaluation)."""
        assert self.logits is not None
        return self.logits.astype(np.float64).mean(axis=0)


def run_files(predict: Callable[[np.ndarray], Any], paths: Sequence[str], windowing: Windowing,
              batch_size: int, *, on_bad_file: Callable[[AudioError], None] | None = None,
              read_ahead: int = 8) -> Iterator[FileResult]:
    """Window logits of every file of ``paths``, as :class:`FileResult`, in order.

    ``predict`` maps (batch_size, segment) float32 to logits; every call gets a full batch. A
    file that cannot be read is passed to ``on_bad_file`` (which may raise to stop everything)
    and comes back with ``error`` set.
    """
    messages: queue.Queue = queue.Queue(maxsize=max(1, read_ahead))
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                messages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for i, path in enumerate(paths):
                stream = WindowStream(path, windowing)
                try:
                    for starts, x in stream:
                        if not put(("windows", i, starts, x)):
                            return
                except AudioError as e:
                    if not put(("end", i, 0, e)):
                        return
                    continue
                if not put(("end", i, stream.n_samples, None)):
                    return
            put(("done",))
        except BaseException as e:  # a bug, not a bad file: the consumer re-raises it
            put(("fail", e))

    reader = threading.Thread(target=produce, name="window-reader", daemon=True)
    reader.start()
    try:
        yield from _consume(predict, paths, batch_size, messages, on_bad_file)
    finally:
        stop.set()
        reader.join(timeout=5)


def _consume(predict: Callable[[np.ndarray], Any], paths: Sequence[str], batch_size: int,
             messages: queue.Queue, on_bad_file: Callable[[AudioError], None] | None
             ) -> Iterator[FileResult]:
    """Batches of ``batch_size`` windows from the reader's messages, each dispatched before the
    previous one's logits are fetched; results per file, in order, once all its windows are
    scored."""
    results = {i: FileResult(i, p) for i, p in enumerate(paths)}
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    outstanding = dict.fromkeys(results, 0)  # windows read but not yet scored, per file
    ended: set[int] = set()
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (file ids, starts, windows)
    pending_count = 0
    in_flight = None  # (device logits, file ids, starts) of the last batch dispatched
    next_out = 0

    def collect(flight) -> None:
        logits, ids, starts = flight
        logits = np.asarray(logits)[: ids.size].astype(np.float32, copy=False)
        for i in np.unique(ids):
            mask = ids == i
            outstanding[int(i)] -= int(mask.sum())
            if results[int(i)].error is None:
                parts.setdefault(int(i), []).append((starts[mask], logits[mask]))

    def dispatch(final: bool) -> None:
        nonlocal pending, pending_count, in_flight
        while pending_count >= batch_size or (final and pending_count):
            ids = np.concatenate([p[0] for p in pending])
            starts = np.concatenate([p[1] for p in pending])
            x = np.concatenate([p[2] for p in pending])
            n = min(batch_size, ids.size)
            batch = x[:n]
            if n < batch_size:
                batch = np.concatenate([batch, np.zeros((batch_size - n, x.shape[1]), x.dtype)])
            logits = predict(batch)  # dispatched; the previous batch is fetched meanwhile
            if in_flight is not None:
                collect(in_flight)
            in_flight = (logits, ids[:n], starts[:n])
            pending = [(ids[n:], starts[n:], x[n:])] if n < ids.size else []
            pending_count = ids.size - n
        if final and in_flight is not None:
            collect(in_flight)
            in_flight = None

    def finished() -> Iterator[FileResult]:
        nonlocal next_out
        while next_out in ended and outstanding[next_out] == 0:
            r = results.pop(next_out)
            got = parts.pop(next_out, [])
            if r.error is None:
                r.starts = np.concatenate([s for s, _ in got])
                r.logits = np.concatenate([lg for _, lg in got])
            yield r
            next_out += 1

    while True:
        message = messages.get()
        kind = message[0]
        if kind == "fail":
            raise message[1]
        if kind == "done":
            break
        if kind == "windows":
            _, i, starts, x = message
            pending.append((np.full(starts.size, i, np.int32), starts, x))
            pending_count += starts.size
            outstanding[i] += starts.size
            dispatch(final=False)
        else:  # end of a file
            _, i, n_samples, error = message
            results[i].n_samples = n_samples
            if error is not None:
                results[i].error = error
                parts.pop(i, None)
                if on_bad_file is not None:
                    on_bad_file(error)
            ended.add(i)
        yield from finished()
    dispatch(final=True)
    yield from finished()
