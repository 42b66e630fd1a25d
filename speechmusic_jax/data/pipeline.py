"""Per-epoch training batches and whole-clip evaluation windows.

Training: every epoch, the training files are shuffled (or, with ``balance="sampler"``, drawn
class-balanced) with a generator seeded by (seed, epoch); each gets a crop position from the same
generator, and the crops are read from disk afresh by a pool of threads, a few batches ahead of
the consumer (with ``cache="memory"`` the decoded clips are kept and crops are cut from memory;
with ``cache="device"`` the whole training corpus lives on the device and the crops of this plan
are cut there: :mod:`speechmusic_jax.data.device_cache`). The host does no per-example work
beyond decoding, resampling and cropping: the per-crop augmentation runs on the device, right
before the train step (:mod:`speechmusic_jax.data.device_augment`). Pause shortening, which
changes the length, stays here: keyed by (seed, epoch, index), where the index is the example's
place in the epoch (so a process reading some rows of a global batch gets them exactly as in the
whole batch), it is applied to a longer stretch read around the crop before the crop is cut
(:func:`crop_without_pauses`). The batches of an epoch are thus a pure function of (files,
seed, epoch): resuming at epoch e replays them.

Checks: the header of every file was read before training (:func:`sources.scan_headers`);
problems only visible in the samples (NaN or Inf, all silent) are caught the first time a file is
decoded. For a training file that is its first crop: the whole file is then decoded once, block
by block at its own rate, to check it; later crops read only their part (libsndfile seeks).

Evaluation: every clip is covered by windows of ``segment`` samples (hop ``hop``; the last window
is aligned to the clip's end: :func:`portable.window_starts`, which every inference path shares),
and the clip's logits are the mean of its windows' logits. No augmentation.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from speechmusic_jax.data import audio
from speechmusic_jax.data.augment import (
    PAUSE_READ_FACTOR,
    AugmentConfig,
    pause_generator,
    shorten_pauses,
)
from speechmusic_jax.data.sources import AudioFile
from speechmusic_jax.portable import clip_windows
from speechmusic_jax.portable import window_starts as window_starts

BALANCES = ("none", "class_weights", "sampler")
CACHES = ("none", "memory", "device")


@dataclasses.dataclass(frozen=True)
class Batch:
    x: np.ndarray  # (batch, samples) float32
    y: np.ndarray  # (batch,) int32
    weight: np.ndarray  # (batch,) float32; 0 marks padding or a bad file; class weights folded in


class AudioReader:
    """Decodes crops and whole clips for one run, thread-safe.

    Remembers each file's header, which files have had their samples checked, and which failed
    (a failed file raises the same :class:`audio.AudioError` again without being re-read). With
    ``cache="memory"`` it keeps every decoded clip (float32 mono at ``sample_rate``) and cuts
    crops from memory (``cache="device"`` keeps nothing here: the training corpus is on the
    device, :mod:`speechmusic_jax.data.device_cache`). What a decoder reports about a damaged
    file that it still decodes (:func:`audio.decoder_messages`) becomes one line to ``warn``
    per file (default: stderr).
    """

    def __init__(self, sample_rate: int, cache: str = "none",
                 warn: Callable[[str], None] | None = None):
        if cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
        self.sample_rate = sample_rate
        self.cache = cache
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._infos: dict[str, audio.AudioInfo] = {}
        self._checked: set[str] = set()
        self._bad: dict[str, audio.AudioError] = {}
        self._clips: dict[str, np.ndarray] = {}

    @property
    def cached_bytes(self) -> int:
        with self._lock:
            return sum(x.nbytes for x in self._clips.values())

    def info(self, path: str) -> audio.AudioInfo:
        info = self._infos.get(path)
        if info is None:
            info = self._guard(path, lambda: audio.probe(path))
            with self._lock:
                self._infos[path] = info
        return info

    def whole(self, path: str) -> np.ndarray:
        """The whole clip, checked (finite, not silent)."""
        clip = self._clips.get(path)
        if clip is not None:
            return clip
        self._raise_if_bad(path)
        info = self.info(path)
        clip = self._guard(path, lambda: audio.load(path, self.sample_rate, info=info))
        with self._lock:
            self._checked.add(path)
            if self.cache == "memory":
                clip.setflags(write=False)
                self._clips[path] = clip
        return clip

    def crop(self, path: str, offset_s: float, length: int) -> np.ndarray:
        """Up to ``length`` samples from ``offset_s`` seconds (shorter at the clip's end)."""
        if self.cache == "memory":
            clip = self.whole(path)
            start = min(int(round(offset_s * self.sample_rate)), max(0, clip.shape[0] - 1))
            return clip[start : start + length]
        self._raise_if_bad(path)
        info = self.info(path)
        if path not in self._checked:
            self._guard(path, lambda: audio.check_samples(path, info))
            with self._lock:
                self._checked.add(path)
        return self._guard(path, lambda: audio.load(
            path, self.sample_rate, offset_s=offset_s, duration_s=length / self.sample_rate,
            info=info))

    def _raise_if_bad(self, path: str) -> None:
        err = self._bad.get(path)
        if err is not None:  # a fresh exception: several threads may raise it at once
            raise audio.AudioError(err.path, err.kind, err.detail)

    def _guard(self, path: str, fn: Callable[[], Any]) -> Any:
        try:
            with audio.decoder_messages(path) as messages:
                out = fn()
        except audio.AudioError as e:
            with self._lock:
                self._bad.setdefault(path, e)
            raise
        if messages:
            with self._lock:
                first = path not in self._warned
                self._warned.add(path)
            if first:
                self.warn(audio.decoder_warning(path, messages))
        return out


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    sample_rate: int
    segment: int  # samples per training crop and per evaluation window
    hop: int  # samples between evaluation windows
    batch_size: int
    short_clip: str = "pad"
    workers: int = 2
    prefetch_batches: int = 4
    cache: str = "none"  # "memory": keep decoded clips (AudioReader); "device": device_cache
    augment: AugmentConfig = AugmentConfig()  # training only (the host's part: crop, pauses)
    balance: str = "none"  # "class_weights" or "sampler"
    class_weights: tuple[float, ...] | None = None  # by label; used with balance=class_weights
    # One reader per run, shared by training and evaluation (made here when not given).
    reader: AudioReader | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.reader is None:
            object.__setattr__(self, "reader", AudioReader(self.sample_rate, self.cache))
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")


def class_weights(labels: Sequence[int], num_classes: int) -> tuple[float, ...]:
    """Per-class loss weights N / (C * n_c), C the number of classes present: every class weighs
    the same in total, and the mean weight over the training examples is 1. A class without
    examples gets weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    n, present = counts.sum(), int((counts > 0).sum())
    return tuple(float(n / (present * c)) if c else 0.0 for c in counts)


def make_loader_config(cfg: Any, train_files: Sequence[AudioFile],
                       warn: Callable[[str], None] | None = None) -> LoaderConfig:
    """The run's LoaderConfig from the config (``cfg.data``, ``cfg.train``) and its training files
    (which set the class weights); ``warn``: where the reader's warnings go (stderr without)."""
    data_cfg = cfg.data
    segment = int(round(data_cfg.segment_seconds * data_cfg.sample_rate))
    hop = int(round((data_cfg.eval_hop_seconds or data_cfg.segment_seconds) * data_cfg.sample_rate))
    weights = None
    if data_cfg.balance == "class_weights":
        weights = class_weights([f.label for f in train_files], len(data_cfg.classes))
    return LoaderConfig(
        sample_rate=data_cfg.sample_rate, segment=segment, hop=hop,
        batch_size=cfg.train.batch_size, short_clip=data_cfg.short_clip,
        workers=data_cfg.workers, prefetch_batches=data_cfg.prefetch_batches,
        cache=data_cfg.cache, augment=AugmentConfig.from_config(data_cfg.augment),
        balance=data_cfg.balance, class_weights=weights,
        reader=AudioReader(data_cfg.sample_rate, data_cfg.cache, warn))


def balance_summary(cfg: LoaderConfig, train_files: Sequence[AudioFile],
                    classes: Sequence[str]) -> dict:
    """What summary.json records about class balance: the method, the training files per class
    and, with class weights, the weight of each class."""
    counts = collections.Counter(f.label for f in train_files)
    out: dict[str, Any] = {"method": cfg.balance,
                           "train_files": {c: counts[i] for i, c in enumerate(classes)}}
    if cfg.balance == "class_weights" and cfg.class_weights is not None:
        out["class_weights"] = {c: round(w, 6) for c, w in zip(classes, cfg.class_weights,
                                                                strict=True)}
    return out


def epoch_plan(
    files: Sequence[AudioFile], durations: Sequence[float], cfg: LoaderConfig, seed: int, epoch: int
) -> list[list[tuple[int, float]]]:
    """Which files, and at which crop offsets (seconds), make up each batch of an epoch.

    A pure function of its inputs. An epoch has len(files) // batch_size batches. Without a
    sampler it is a permutation of the files (the last partial batch is dropped so that every
    step has the same shape; each epoch reshuffles, so no file is always dropped). With
    ``balance="sampler"`` each example's class is drawn uniformly, and the files of a class are
    visited in a fresh random order, cycling when a small class runs out.
    """
    rng = np.random.default_rng([seed, epoch, 0xDA7A])
    n = len(files) // cfg.batch_size
    if cfg.balance == "sampler":
        order = _balanced_order([f.label for f in files], n * cfg.batch_size, rng)
    else:
        order = rng.permutation(len(files))
    seg_s = cfg.segment / cfg.sample_rate
    spare = np.maximum(np.asarray(durations, dtype=np.float64)[order] - seg_s, 0.0)
    offsets = rng.random(len(order)) * spare
    if not cfg.augment.random_crop:
        offsets = np.zeros_like(offsets)
    return [
        [(int(order[i]), float(offsets[i])) for i in range(b * cfg.batch_size,
                                                          (b + 1) * cfg.batch_size)]
        for b in range(n)
    ]


def _balanced_order(labels: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.asarray(labels)
    present = np.unique(labels)
    slots = rng.choice(present, size=n)
    order = np.empty(n, dtype=np.int64)
    for c in present:
        members = np.flatnonzero(labels == c)
        where = np.flatnonzero(slots == c)
        cycles = -(-len(where) // len(members)) if len(where) else 0
        picks = np.concatenate([rng.permutation(members) for _ in range(cycles)] or [members[:0]])
        order[where] = picks[: len(where)]
    return order


def train_batches(
    files: Sequence[AudioFile],
    durations: Sequence[float],
    cfg: LoaderConfig,
    seed: int,
    epoch: int,
    *,
    on_bad_file: Callable[[audio.AudioError], None] | None = None,
    rows: slice | None = None,
) -> Iterator[Batch]:
    """Yield the training batches of ``epoch``, reading crops in background threads.

    A file that fails to decode is passed to ``on_bad_file`` (which may raise to stop training);
    if it returns, the crop is replaced by silence with weight 0, so shapes stay fixed.
    ``rows``: only these rows of every batch (one process's share of a batch that spans several
    processes): the epoch's plan is the same everywhere and each process reads its part of it;
    a crop's pauses are shortened exactly as in the whole batch. The crops are not augmented
    otherwise: that happens on the device (:mod:`speechmusic_jax.data.device_augment`).
    """
    plan = epoch_plan(files, durations, cfg, seed, epoch)
    first = 0 if rows is None else rows.start
    if rows is not None:
        plan = [items[rows] for items in plan]
    reader = cfg.reader
    assert reader is not None

    def read(slot: int, item: tuple[int, float]) -> tuple[np.ndarray, float]:
        i, offset = item
        pauses = pause_generator(cfg.augment, seed, epoch, slot)
        try:
            if pauses is None:
                x = reader.crop(files[i].path, offset, cfg.segment)
            else:
                x = crop_without_pauses(reader, files[i].path, offset, durations[i], cfg, pauses)
        except audio.AudioError as e:
            if on_bad_file is None:
                raise
            on_bad_file(e)
            return np.zeros(cfg.segment, np.float32), 0.0
        return audio.fit_length(x, cfg.segment, cfg.short_clip), 1.0

    def submit(b: int, pool: concurrent.futures.Executor) -> list[concurrent.futures.Future]:
        base = b * cfg.batch_size + first
        return [pool.submit(read, base + j, item) for j, item in enumerate(plan[b])]

    def assemble(b: int, futures: list[concurrent.futures.Future]) -> Batch:
        results = [f.result() for f in futures]
        y = np.asarray([files[i].label for i, _ in plan[b]], dtype=np.int32)
        w = batch_weights(np.asarray([r[1] for r in results], dtype=np.float32), y, cfg)
        return Batch(x=np.stack([r[0] for r in results]), y=y, weight=w)

    yield from _prefetch(len(plan), submit, assemble, cfg.workers, cfg.prefetch_batches)


def batch_weights(ok: np.ndarray, y: np.ndarray, cfg: LoaderConfig) -> np.ndarray:
    """A batch's loss weights: 1 for a real crop, 0 for a stand-in (``ok``), times the class
    weight of its label under ``balance="class_weights"``."""
    w = np.asarray(ok, np.float32)
    if cfg.balance == "class_weights" and cfg.class_weights is not None:
        w = w * np.asarray(cfg.class_weights, np.float32)[y]
    return w


def crop_without_pauses(reader: AudioReader, path: str, offset_s: float, duration_s: float,
                        cfg: LoaderConfig, rng: np.random.Generator) -> np.ndarray:
    """A crop of up to ``cfg.segment`` samples with its long pauses shortened
    (:func:`augment.shorten_pauses`).

    Shortening removes audio, so it works on a longer stretch: PAUSE_READ_FACTOR crops' worth
    from the planned offset, moved earlier where the clip ends too soon (so it lies inside the
    clip when the clip is long enough). The crop is cut from the shortened stretch at the planned
    offset, or as late as the stretch allows when too little is left after it. A clip too short
    for a whole crop after shortening gives a short crop (padded or looped like a short clip).
    """
    seg, sr = cfg.segment, cfg.sample_rate
    length = PAUSE_READ_FACTOR * seg
    start_s = max(0.0, min(offset_s, duration_s - length / sr))
    x = reader.crop(path, start_s, length)
    y = shorten_pauses(x, sr, cfg.augment.pause_max_ms, cfg.augment.pause_keep_ms, rng)
    skip = max(0, min(int(round((offset_s - start_s) * sr)), y.shape[0] - seg))
    return y[skip : skip + seg]


def _prefetch(
    n: int,
    submit: Callable[[int, concurrent.futures.Executor], Any],
    assemble: Callable[[int, Any], Any],
    workers: int,
    depth: int,
) -> Iterator:
    """Produce ``assemble(i, submit(i, pool))`` for i < n in a background thread.

    Work for the next two items is submitted to a pool of ``workers`` threads before the current
    one is assembled, so the workers never wait for the assembling thread; finished items wait
    in a queue of ``depth``. An exception is handed to the consumer and raised there.
    """
    out: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()
    lookahead = 2

    def put(message: tuple) -> bool:
        """Put unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                out.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        pool = concurrent.futures.ThreadPoolExecutor(max(1, workers),
                                                     thread_name_prefix="audio-read")
        try:
            pending: collections.deque = collections.deque()
            nxt = 0
            for i in range(n):
                while nxt < n and nxt <= i + lookahead:
                    pending.append(submit(nxt, pool))
                    nxt += 1
                if not put(("ok", assemble(i, pending.popleft()))):
                    return
            put(("ok", done))
        except BaseException as e:  # handed to the consumer, raised there
            put(("err", e))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

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
        thread.join()


class ReadAhead:
    """An iterator whose first item is read ahead: a thread takes that item (which also starts the
    iterator's own background reading) while the caller does other work, such as validating the
    previous epoch. Iterating yields that item, then the rest: the same items as the wrapped
    iterator's."""

    def __init__(self, iterator: Iterator):
        self._it = iterator
        self._first: tuple[str, Any] = ("stop", None)
        self._thread = threading.Thread(target=self._take_first, daemon=True,
                                        name="epoch-prefetch")
        self._thread.start()

    def _take_first(self) -> None:
        try:
            self._first = ("ok", next(self._it))
        except StopIteration:
            self._first = ("stop", None)
        except BaseException as e:  # raised to the consumer
            self._first = ("err", e)

    def __iter__(self) -> Iterator:
        self._thread.join()
        kind, value = self._first
        if kind == "err":
            raise value
        if kind == "ok":
            yield value
            yield from self._it

    def close(self) -> None:
        """Stop the background reading (for an epoch that will not run)."""
        self._thread.join()
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


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

    A clip that fails to decode is passed to ``on_bad_file`` and contributes no windows. Clips
    are never augmented.
    """
    reader = cfg.reader
    assert reader is not None

    def read(i: int) -> tuple[int, np.ndarray | None]:
        try:
            x = reader.whole(files[i].path)
        except audio.AudioError as e:
            if on_bad_file is None:
                raise
            on_bad_file(e)
            return i, None
        return i, clip_windows(x, cfg.segment, cfg.hop, cfg.short_clip)

    chunk = max(1, cfg.workers * 2)
    groups = [list(range(s, min(s + chunk, len(files)))) for s in range(0, len(files), chunk)]

    def submit(g: int, pool: concurrent.futures.Executor) -> list[concurrent.futures.Future]:
        return [pool.submit(read, i) for i in groups[g]]

    def assemble(g: int, futures: list[concurrent.futures.Future]) -> list:
        return [f.result() for f in futures]

    pending_x: list[np.ndarray] = []
    pending_c: list[np.ndarray] = []
    count = 0
    for decoded in _prefetch(len(groups), submit, assemble, cfg.workers, cfg.prefetch_batches):
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
