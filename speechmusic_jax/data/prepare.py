"""From a data spec to a run's split: list the source, scan every header, merge duplicates, split.

What ``train``, ``crossval``, ``benchmark --what=data`` and ``evaluate`` share about finding
data lives here; the per-epoch reading is in :mod:`speechmusic_jax.data.pipeline`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable

from speechmusic_jax.data import sources
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.synthetic import SyntheticSpec, ensure_corpus
from speechmusic_jax.errors import AudioError, DataError

Log = Callable[[str], None]


def default_cache_root() -> str:
    """Where generated corpora and exported TFDS sets live: $SPEECHMUSIC_CACHE, or
    ~/.cache/speechmusic_jax."""
    return os.environ.get("SPEECHMUSIC_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "speechmusic_jax")


class BadFiles:
    """The bad-file policy of a run: raise on the first bad file (``on_error='error'``), or log it
    once and count it by kind (``'skip'``). Called from reader threads, so it locks."""

    def __init__(self, on_error: str, log: Log, counts: dict[str, int] | None = None):
        self.on_error = on_error
        self.log = log
        self.counts: collections.Counter[str] = collections.Counter(counts or {})
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, err: AudioError) -> None:
        if self.on_error == "error":
            raise DataError(
                f"{err}\nFix or remove the file, or pass --data_on_error=skip to leave it out.")
        with self._lock:
            if err.path in self.seen:
                return
            self.seen.add(err.path)
            self.counts[err.kind] += 1
        self.log(f"warning: skipping {err}")


@dataclasses.dataclass(frozen=True)
class Scanned:
    """The usable files of a source, with their durations and what was dropped."""

    files: list[sources.AudioFile]
    durations: dict[str, float]  # seconds, by path, from the headers
    errors: dict[str, int]  # files dropped under on_error=skip, by kind
    root: str  # the folder or manifest listed


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A run's files: the split, the duration of every file, and the files left out."""

    split: dict[str, list[sources.AudioFile]]  # train, val, test
    durations: dict[str, float]
    errors: dict[str, int]


def list_source(data_cfg, spec: str, on_error: str, log: Log, *,
                splitting: bool = True) -> sources.Listing:
    """The files of the data source ``spec`` under the data config ``data_cfg`` (classes,
    grouping, corpus cache: the built-in corpus is generated there on first use).
    ``splitting``: the files will be split (train/val/test or folds), so a missing grouping
    is worth a note, and every class of ``data_cfg.classes`` needs files; evaluating a trained
    run splits nothing, and the source may lack some of its classes (speech and music only for a
    model that also knows noise)."""
    cache_root = data_cfg.cache_dir or default_cache_root()

    def synthetic_dir() -> str:
        corpus = data_cfg.synthetic
        noise = "noise" in (c.lower() for c in data_cfg.classes)
        return str(ensure_corpus(SyntheticSpec(corpus.clips_per_class, corpus.seconds,
                                               corpus.sample_rate, corpus.seed, noise=noise,
                                               transmission=corpus.transmission),
                                 cache_root, log=log))

    listing = sources.list_files(spec, tuple(data_cfg.classes), group_regex=data_cfg.group_regex,
                                 on_error=on_error, synthetic_dir=synthetic_dir,
                                 cache_root=cache_root, log=log, every_class=splitting)
    for note in listing.notes:  # what was left out (non-audio files, musan noise/, ...)
        log(f"data: {note}")
    for note in listing.split_notes if splitting else ():
        log(f"data: {note}")
    return listing


def scan_source(data_cfg, spec: str, on_error: str, log: Log, *,
                merge_duplicates: bool = True, splitting: bool = True) -> Scanned:
    """List ``spec`` and check every file's header before any work; with ``merge_duplicates``,
    files of identical audio share a group (so a split keeps them together), and copies with
    different labels are refused (or dropped under on_error=skip)."""
    classes = tuple(data_cfg.classes)
    listing = list_source(data_cfg, spec, on_error, log, splitting=splitting)
    scanned, scan_errors = sources.scan_headers(listing.files, on_error,
                                                workers=4 * data_cfg.workers, log=log)
    errors = collections.Counter(scan_errors) + collections.Counter(listing.errors)
    if scan_errors:
        sources.check_classes([f for f, _ in scanned], classes, where=listing.root,
                              after=f" after skipping {sum(scan_errors.values())} unusable file(s)",
                              every_class=splitting)
    files = [f for f, _ in scanned]
    if merge_duplicates:
        files = _merge_duplicates(scanned, classes, on_error, errors, listing.root, log,
                                  workers=4 * data_cfg.workers)
    durations = {f.path: info.seconds for f, info in scanned}
    return Scanned(files, durations, dict(errors), listing.root)


def _merge_duplicates(scanned, classes, on_error: str, errors: collections.Counter, root: str,
                      log: Log, workers: int) -> list[sources.AudioFile]:
    duplicates = sources.find_duplicates(scanned, workers=workers)
    files, conflicts = split_lib.merge_duplicates([f for f, _ in scanned], duplicates)
    if duplicates:
        n = sum(len(s) for s in duplicates)
        a, b = duplicates[0][0].path, duplicates[0][1].path
        log(f"warning: {n} files in {len(duplicates)} set(s) have identical audio content "
            f"(e.g. {a} and {b}); each set is kept in one split")
    if conflicts:
        shown = "; ".join(" = ".join(f"{f.path} ({classes[f.label]})" for f in c)
                          for c in conflicts[:3])
        if on_error == "error":
            raise DataError(
                f"{len(conflicts)} set(s) of files have identical audio but different labels: "
                f"{shown}. Fix the labels, or pass --data_on_error=skip to leave them out.")
        drop = {f.path for c in conflicts for f in c}
        files = [f for f in files if f.path not in drop]
        errors["conflicting_labels"] += len(drop)
        log(f"warning: skipping {len(drop)} file(s) with identical audio but different labels: "
            f"{shown}")
        sources.check_classes(files, classes, where=root,
                              after=" after skipping files with conflicting labels")
    return files


def prepare_data(cfg, workdir: str, log: Log, *, resume: bool,
                 write: bool = True) -> PreparedData:
    """Scan the config's source and split it (or, resuming, read the run's split.csv back).
    A new split is written to the workdir's split.csv, unless ``write`` is false (the caller
    then writes it with :func:`split.write_split_csv` once the start is known good)."""
    data_cfg = cfg.data
    t0 = time.perf_counter()
    scanned = scan_source(data_cfg, data_cfg.spec, data_cfg.on_error, log)
    if data_cfg.cache == "memory":
        kept = sum(scanned.durations[f.path] for f in scanned.files) * data_cfg.sample_rate * 4
        log(f"data: data.cache=memory keeps the decoded audio: about {kept / 2**20:.0f} MiB")
    split_path = os.path.join(workdir, "split.csv")
    if resume and os.path.exists(split_path):
        split = split_lib.read_split_csv(split_path, data_cfg.classes)
    else:
        split = split_lib.split_files(scanned.files, data_cfg.split, cfg.seed,
                                      folds=data_cfg.folds, fold=data_cfg.fold,
                                      classes=tuple(data_cfg.classes))
        if write:
            split_lib.write_split_csv(split_path, split, data_cfg.classes)
    log(f"data: {data_cfg.spec}: {len(scanned.files)} files scanned in "
        f"{time.perf_counter() - t0:.1f}s; {split_lib.describe(split, data_cfg.classes)}")
    for name in ("train", "val"):
        if not split[name]:
            raise DataError(f"the {name} split is empty; use more data or change data.split")
    return PreparedData(split, scanned.durations, scanned.errors)
