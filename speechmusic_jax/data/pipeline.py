"""Per-epoch training batches and whole-clip evaluation windows.

Training: every epoch, the training files are shuffled with a generator seeded by
(seed, epoch), each gets a random crop position from the same generator, and the crops are read
from disk afresh by a pool of threads, a few batches ahead of the consumer. The batches of an
epoch are thus a pure function of (files, seed, epoch): resuming at epoch e replays them exactly.

Evaluation: every clip is covered by windows of ``segment`` samples (hop ``hop``; the last window
is aligned to the clip's end), and the clip's logits are the mean of its windows' logits.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from speechmusic_jax.data import audio
from speechmusic_jax.data.sources import AudioFile


@dataclasses.dataclass(frozen=True)
class Batch:
    x: np.ndarray  # (batch, samples) float32
    y: np.ndarray  # (batch,) int32
    weight: np.ndarray  # (batch,) float32; 0 marks padding


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    sample_rate: int
    segment: int  # samples per training crop and per evaluation window
    hop: int  # samples between evaluation windows
    batch_size: int
    short_clip: str = "pad"
    workers: int = 2
    prefetch_batches: int = 4


class BadFile(Exception):
    """Raised through the iterator when a file fails to decode and on_error is 'error'."""


def epoch_plan(
    files: Sequence[AudioFile], durations: Sequence[float], cfg: LoaderConfig, seed: int, epoch: int
) -> list[list[tuple[int, float]]]:
    """Which files, and at which crop offsets (seconds), make up each batch of an epoch.

    A pure function of its inputs. The last partial batch is dropped so that every training step
    has the same shape (and compiles once); each epoch reshuffles, so no file is always dropped.
    """
    rng = np.random.default_rng([seed, epoch, 0xDA7A])
    order = rng.permutation(len(files))
    seg_s = cfg.segment / cfg.sample_rate
    spare = np.maximum(np.asarray(durations, dtype=np.float64)[order] - seg_s, 0.0)
    offsets = rng.random(len(order)) * spare
    n = len(order) // cfg.batch_size
    return [
        [(int(order[i]), float(offsets[i])) for i in range(b * cfg.batch_size,
                                                          (b + 1) * cfg.batch_size)]
        for b in range(n)
    ]


def train_batches(
    files: Sequence[AudioFile],
    durations: Sequence[float],
    cfg: LoaderConfig,
    seed: int,
    epoch: int,
    *,
    on_bad_file: Callable[[audio.AudioError], None] | None = None,
) -> Iterator[Batch]:
    """Yield the training batches of ``epoch``, reading crops in background threads.

    A file that fails to decode is passed to ``on_bad_file`` (which may raise to stop training);
    if it returns, the crop is replaced by silence with weight 0, so shapes stay fixed.
    """
    plan = epoch_plan(files, durations, cfg, seed, epoch)

    def read(item: tuple[int, float]) -> tuple[np.ndarray, float]:
        i, offset = item
        f = files[i]
        try:
            x = audio.load(f.path, cfg.sample_rate, offset_s=offset,
                           duration_s=cfg.segment / cfg.sample_rate)
        except audio.AudioError as e:
            if on_bad_file is None:
                raise
            on_bad_file(e)
            return np.zeros(cfg.segment, np.float32), 0.0
        return audio.fit_length(x, cfg.segment, cfg.short_clip), 1.0

    def make(batch_plan: list[tuple[int, float]], pool) -> Batch:
        results = list(pool.map(read, batch_plan))
        return Batch(
            x=np.stack([r[0] for r in results]),
            y=np.asarray([files[i].label for i, _ in batch_plan], dtype=np.int32),
            weight=np.asarray([r[1] for r in results], dtype=np.float32),
        )

    yield from _prefetch(plan, make, cfg.workers, cfg.prefetch_batches)


def _prefetch(items: list, make: Callable, workers: int, depth: int) -> Iterator:
    """Run ``make(item, pool)`` for each item in a background thread, ``depth`` results ahead."""
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            try:
                for item in items:
                    if stop.is_set():
                        return
                    out.put(("ok", make(item, pool)))
            except BaseException as e:  # handed to the consumer, raised there
                out.put(("err", e))
                return
        out.put(("ok", done))

    thread = threading.Thread(target=produce, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            kind, value = out.get()
            if kind == "err":
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def window_starts(n_samples: int, segment: int, hop: int) -> list[int]:
    """Start offsets of windows covering ``n_samples``; the last window ends at the clip's end."""
    if n_samples <= segment:
        return [0]
    starts = list(range(0, n_samples - segment + 1, hop))
    if starts[-1] + segment < n_samples:
        starts.append(n_samples - segment)
    return starts


def clip_windows(x: np.ndarray, segment: int, hop: int, short_clip: str = "pad") -> np.ndarray:
    """(windows, segment) float32 covering the whole clip ``x``."""
    if x.shape[0] < segment:
        return audio.fit_length(x, segment, short_clip)[None]
    return np.stack([x[s : s + segment] for s in window_starts(x.shape[0], segment, hop)])


@dataclasses.dataclass(frozen=True)
class EvalBatch:
    x: np.ndarray  # (batch, segment)
    clip: np.ndarray  # (batch,) index of the clip each window belongs to; -1 marks padding


def eval_batches(
    files: Sequence[AudioFile],
    cfg: LoaderConfig,
    batch_size: int,
    *,
    on_bad_file: Callable[[audio.AudioError], None] | None = None,
) -> Iterator[EvalBatch]:
    """Windows of every clip, in fixed-size batches (the last one padded), read in threads.

    A clip that fails to decode is passed to ``on_bad_file`` and contributes no windows.
    """
    def read(i: int) -> tuple[int, np.ndarray | None]:
        try:
            x = audio.load(files[i].path, cfg.sample_rate)
        except audio.AudioError as e:
            if on_bad_file is None:
                raise
            on_bad_file(e)
            return i, None
        return i, clip_windows(x, cfg.segment, cfg.hop, cfg.short_clip)

    chunk = max(1, cfg.workers * 2)
    groups = [list(range(s, min(s + chunk, len(files)))) for s in range(0, len(files), chunk)]

    def make(idx: list[int], pool) -> list[tuple[int, np.ndarray | None]]:
        return list(pool.map(read, idx))

    pending_x: list[np.ndarray] = []
    pending_c: list[np.ndarray] = []
    count = 0
    for decoded in _prefetch(groups, make, cfg.workers, cfg.prefetch_batches):
        for i, w in decoded:
            if w is None:
                continue
            pending_x.append(w)
            pending_c.append(np.full(w.shape[0], i, dtype=np.int32))
            count += w.shape[0]
            while count >= batch_size:
                xs, cs = np.concatenate(pending_x), np.concatenate(pending_c)
                yield EvalBatch(xs[:batch_size], cs[:batch_size])
                pending_x, pending_c = [xs[batch_size:]], [cs[batch_size:]]
                count -= batch_size
    if count:
        xs, cs = np.concatenate(pending_x), np.concatenate(pending_c)
        pad = batch_size - count
        yield EvalBatch(
            np.concatenate([xs, np.zeros((pad, cfg.segment), np.float32)]),
            np.concatenate([cs, np.full(pad, -1, np.int32)]),
        )
