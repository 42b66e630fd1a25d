"""Using a trained run: load its config and weights, classify files, report on a data source.

The library side of the ``evaluate`` and ``predict`` commands (which only parse flags) and of
the Python API (:mod:`speechmusic_jax.classifier`). ``evaluate`` scores a labelled source the
way training scores its test split (:mod:`training.clip_scoring`); ``predict`` streams files in
blocks and batches their windows across files (:mod:`streaming`), and turns the window logits
into rows: one per file, per window, or per merged, smoothed segment (:mod:`segments`). In every
row ``predicted`` is the model's decision and ``p_<class>`` its probabilities; ``label`` only
ever names a known truth."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax import portable, shipped, streaming
from speechmusic_jax import segments as segments_lib
from speechmusic_jax.data import audio, prepare, sources
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.pipeline import LoaderConfig, make_loader_config
from speechmusic_jax.errors import DataError, RunNotFound
from speechmusic_jax.io_utils import atomic_write_json, check_output, read_json
from speechmusic_jax.training import breakdown, builder, clip_scoring, reporting
from speechmusic_jax.training import workdir as workdir_rules
from speechmusic_jax.training.checkpoints import Checkpoints


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    cfg: config_lib.ConfigDict
    workdir: str
    epoch: int  # the epoch whose weights were loaded
    loader: LoaderConfig
    predict: Callable[[Any], jax.Array]  # (batch, segment) -> logits

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cfg.data.classes)


def config_from_json(path: str) -> config_lib.ConfigDict:
    """Rebuild a run's config from its config.json (every field checked against base_config).
    A field added since the run was made (``config_lib.ADDED_FIELDS``) takes the value the run
    was made with, not today's default."""
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    cfg = config_lib.base_config()
    _assign(cfg, config_lib.with_added_fields(saved), "")
    return cfg


def _assign(node: config_lib.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
        if key not in node:
            raise config_lib.ConfigError(f"{prefix}{key}: not a field of this version's config")
        if isinstance(value, dict):
            _assign(node[key], value, f"{prefix}{key}.")
        else:
            node[key] = tuple(value) if isinstance(value, list) else value


def load_run(workdir: str, which: str = "tested", models_dir: str | None = None) -> LoadedRun:
    """The config and the weights of the run in ``workdir``: ``tested``, the weights it was
    tested with (see ``config_lib.CHECKPOINTS``), its ``best`` or its ``last`` checkpoint.
    ``workdir`` may be a shipped model's folder, or ``pretrained`` for the package's
    (:func:`shipped.resolve`; ``models_dir``: where to look instead of the package)."""
    return loaded(run_weights(workdir, which, models_dir))


@dataclasses.dataclass(frozen=True)
class RunWeights:
    cfg: config_lib.ConfigDict
    workdir: str  # absolute
    built: builder.Built  # abstract: shapes only
    checkpoint: str  # "best" or "last": where the weights came from
    epoch: int
    params: Any  # the weights to evaluate (averaged ones where the optimizer keeps them)
    model_state: Any  # the batch-norm statistics


def loaded(w: RunWeights) -> LoadedRun:
    return LoadedRun(w.cfg, w.workdir, w.epoch, make_loader_config(w.cfg, []),
                     builder.weights_predictor(w.built, w.params, w.model_state))


def run_weights(workdir: str, which: str = "tested", models_dir: str | None = None
                ) -> RunWeights:
    """What :func:`load_run` loads, the weights themselves included (``ship`` writes them)."""
    workdir = os.path.abspath(shipped.resolve(workdir, models_dir))
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise RunNotFound(f"--workdir {workdir} holds no run (no config.json)")
    cfg = config_from_json(cfg_path)
    built = builder.abstract_build(cfg)
    if shipped.is_shipped_model(workdir):
        params, model_state, epoch = shipped.load_weights(workdir, which, built.state)
        checkpoint = shipped.read_provenance(workdir)["run"]["checkpoint"]
        return RunWeights(cfg, workdir, built, checkpoint, epoch, params, model_state)
    if which == "tested":
        which = config_lib.tested_checkpoint(cfg)
    ckpts = Checkpoints(workdir)
    pointer = ckpts.best() if which == "best" else ckpts.last()
    if pointer is None:
        raise RunNotFound(f"--workdir {workdir} has no {which} checkpoint yet")
    state, _ = ckpts.restore(pointer, built.state)
    return RunWeights(cfg, workdir, built, which, pointer["epoch"],
                      *builder.eval_weights(built, state))


def classify(run: LoadedRun, files: Sequence[sources.AudioFile],
             on_bad_file: Callable[[audio.AudioError], None] | None = None
             ) -> clip_scoring.Predictions:
    return clip_scoring.predict_files(run.predict, files, run.loader, run.cfg.train.eval_batch_size,
                                    on_bad_file=on_bad_file)


def clip_rows(run: LoadedRun, pred: clip_scoring.Predictions) -> list[dict]:
    """One row per file of ``pred`` (training's evaluation path): path, predicted,
    confidence, p_<class>..."""
    probs = clip_scoring.softmax(pred.clip_logits)
    rows = []
    for f, p in zip(pred.files, probs, strict=True):
        row = {"path": f.path, "predicted": run.classes[int(np.argmax(p))],
               "confidence": round(float(p.max()), 6)}
        row.update({f"p_{c}": round(float(v), 6) for c, v in zip(run.classes, p, strict=True)})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# What the evaluate and predict commands do, as functions that tests call directly


def source_name(spec: str) -> str:
    """The file stem of a data spec's evaluation (``eval/<stem>.json``): a readable part (the
    spec with other characters as ``_``; for a long one, its kind and the end of its path) and 8
    hex digits of the SHA-256 of the spec with its path made absolute, so that two sources never
    share a name (``folder:/a/b`` and ``folder:/a_b`` read alike) and one always gets the same."""
    def clean(text: str) -> str:
        return re.sub(r"[^\w.\-]+", "_", text).strip("_.")

    try:
        kind, arg = sources.parse_spec(spec)
    except ValueError:
        kind, arg = "", spec
    readable = clean(spec)
    if len(readable) > 60:
        readable = clean(f"{kind or 'source'}_{clean(arg)[-50:]}")
    readable = readable or "source"
    if kind and kind not in ("synthetic", "tfds"):
        arg = os.path.abspath(arg)
    digest = hashlib.sha256(f"{kind}:{arg}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def eval_paths(workdir: str, spec: str, output: str | None = None) -> tuple[str, str]:
    """Where evaluate writes the report on ``spec`` and its per-file predictions: ``output``
    (a .json file) or ``workdir/eval/<source_name>.json``, and beside it the same name ending
    in ``.predictions.csv``."""
    report = output or os.path.join(workdir, "eval", f"{source_name(spec)}.json")
    return report, re.sub(r"\.json$", "", report) + ".predictions.csv"


def evaluate_source(run: LoadedRun, spec: str, *, on_error: str = "error",
                    log: Callable[[str], None] = print,
                    by: Sequence[str] | None = None, output: str | None = None,
                    overwrite: bool = False) -> tuple[dict, str]:
    """Classify every file of the labelled source ``spec`` with ``run``; write the report (the
    keys of summary.json's ``test``, plus the data errors, the source, the weights' epoch, any
    overlap with the run's own training or validation files, the number of files it got
    ``wrong`` and the name of its ``predictions_file``, and under ``by`` the accuracy per value
    of each column in ``by``: None for the default columns, see :mod:`training.breakdown`) to
    ``eval/<source>.json``, or to ``output``; and beside it the per-file predictions (see
    :func:`eval_paths`). Returns (report, path). In eval/ an earlier report of ours on the same
    source is replaced; an ``output`` that exists only with ``overwrite`` and only when it (and
    its predictions file) is ours; a file of anyone else's, or a folder, never. Both are checked
    before any work, as is a column the source lacks (:class:`breakdown.UnknownColumn`)."""
    try:
        sources.parse_spec(spec)
    except ValueError as e:
        raise DataError(str(e)) from None
    path, predictions_path = eval_paths(run.workdir, spec, output)
    replace = overwrite if output else True
    check_output(path, overwrite=replace, ours=workdir_rules.is_eval_report,
                 flag="--output" if output else "eval report")
    check_output(predictions_path, overwrite=replace, ours=reporting.is_predictions_file,
                 flag="predictions file")
    scanned = prepare.scan_source(run.cfg.data, spec, on_error, log, merge_duplicates=False,
                                  splitting=False)
    bad_files = prepare.BadFiles(on_error, log, scanned.errors)
    columns = breakdown.resolve_columns(by, scanned.files, where=spec)
    others = breakdown.other_columns(scanned.files, columns) if by is None else []
    if others:
        log(f"breakdown by {', '.join(columns) or 'no column'} (the default; also there: "
            f"--by={','.join(others)})")
    overlap = training_overlap(run, scanned.files)
    if overlap["files"]:
        log(f"warning: {overlap['files']} of the {len(scanned.files)} files evaluated are among "
            f"this run's own training or validation files ({overlap['train']} train, "
            f"{overlap['val']} val; e.g. {overlap['examples'][0]}): the scores below overstate "
            "how the model does on new data")
    log(f"evaluating the epoch-{run.epoch} weights of {run.workdir} on {len(scanned.files)} "
        f"files of {spec}")
    pred = classify(run, scanned.files, on_bad_file=bad_files)
    report = clip_scoring.report(pred, run.classes)
    wrong = reporting.write_predictions(predictions_path, pred, run.classes)
    report.update(data_errors=dict(bad_files.counts), source=spec, weights_epoch=run.epoch,
                  overlap_with_training=overlap,
                  by=breakdown.by_columns(pred, columns, run.classes, explicit=by is not None),
                  wrong=wrong, predictions_file=os.path.basename(predictions_path))
    atomic_write_json(path, report)
    return report, path


def training_overlap(run: LoadedRun, files: Sequence[sources.AudioFile]) -> dict:
    """How many of ``files`` the run trained or validated on: the same path, or the same audio
    under another path (a copy). Counts by split, and up to three examples."""
    split_path = os.path.join(run.workdir, "split.csv")
    found = {"files": 0, "train": 0, "val": 0, "examples": []}
    if not os.path.exists(split_path):
        return found
    split = split_lib.read_split_csv(split_path, run.classes)
    seen = {os.path.realpath(f.path): name for name in ("train", "val") for f in split[name]}
    hits: dict[str, str] = {}  # evaluated path -> the split it was in
    for f in files:
        if os.path.realpath(f.path) in seen:
            hits[f.path] = seen[os.path.realpath(f.path)]
    # Copies under other paths: the duplicate finder over both sets (headers, then content).
    rest = [f for f in files if f.path not in hits]
    known = [sources.AudioFile(f.path, f.label, name) for name in ("train", "val")
             for f in split[name] if os.path.exists(f.path)]
    scanned, _ = sources.scan_headers([*rest, *known], "skip")
    evaluated = {f.path for f in rest}
    for group in sources.find_duplicates(scanned):
        trained = [f.group for f in group if f.path not in evaluated]
        for f in group:
            if f.path in evaluated and trained:
                hits[f.path] = trained[0]
    for path, name in sorted(hits.items()):
        found["files"] += 1
        found[name] += 1
        if len(found["examples"]) < 3:
            found["examples"].append(path)
    return found


# --------------------------------------------------------------------------------------------
# Predicting on audio files: one row per file, per window, or per merged segment


ROW_KINDS = ("files", "windows", "segments")


@dataclasses.dataclass(frozen=True)
class Found:
    """The files that ``predict`` will classify, and what the folders held besides."""

    paths: list[str]  # absolute; files named on the command line come as they are
    ignored: int  # files in the folders searched that are not audio (a README, a cover image)


def collect_paths(paths: Sequence[str]) -> Found:
    """Audio files named by ``paths``: files as they are (a missing or unreadable one gets its
    error row later), folders searched recursively for audio (including containers libsndfile
    cannot read, so that they are reported rather than silently left out)."""
    out, ignored = [], 0
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                for name in sorted(names):
                    if audio.is_audio_path(name) or audio.is_unsupported_audio_path(name):
                        out.append(os.path.join(root, name))
                    else:
                        ignored += 1
        else:
            out.append(p)
    if not out:
        raise DataError(f"no audio files in {list(paths)}")
    return Found([os.path.abspath(p) for p in out], ignored)


def windowing(run: LoadedRun, hop_seconds: float | None = None) -> streaming.Windowing:
    """The run's windows (``data.segment_seconds``), every ``hop_seconds`` (default: the run's
    evaluation hop, with which a file's decision is the one training's evaluation makes)."""
    loader = run.loader
    hop = loader.hop if hop_seconds is None else int(round(hop_seconds * loader.sample_rate))
    if hop <= 0:
        raise DataError(f"the hop must be positive, got {hop_seconds} s")
    return streaming.Windowing(loader.sample_rate, loader.segment, hop, loader.short_clip)


def timeline_hop_seconds(run: LoadedRun) -> float:
    """The default hop of timelines (``--segments``): a fraction of the run's window."""
    return run.cfg.data.segment_seconds * segments_lib.DEFAULT_HOP_FRACTION


def stream_files(run: LoadedRun, paths: Sequence[str], *, hop_seconds: float | None = None,
                 on_error: str = "skip", log: Callable[[str], None] = print,
                 batch_size: int | None = None) -> Iterator[streaming.FileResult]:
    """Window logits of each file of ``paths`` (in order), read in blocks with flat memory and
    batched across files. ``on_error="error"`` stops at the first unreadable file (DataError);
    ``"skip"`` logs it and returns it with its ``error``."""
    if on_error not in ("error", "skip"):
        raise ValueError(f"on_error must be 'error' or 'skip', got {on_error!r}")

    def on_bad_file(e: audio.AudioError) -> None:
        if on_error == "error":
            raise DataError(f"{e} (pass --data_on_error=skip to classify the other files)")
        log(f"warning: skipping {e}")

    yield from streaming.run_files(run.predict, paths, windowing(run, hop_seconds),
                                   batch_size or run.cfg.train.eval_batch_size,
                                   on_bad_file=on_bad_file)


def probability_columns(run: LoadedRun, probs: np.ndarray | None,
                        min_confidence: float | None = None, label: int | None = None) -> dict:
    """``predicted, confidence, p_<class>...`` of class probabilities (all None without);
    ``uncertain`` below ``min_confidence`` (:func:`portable.decide`)."""
    return portable.decide(probs, run.classes, min_confidence, label)


def is_short(run: LoadedRun, result: streaming.FileResult) -> bool | None:
    """Whether a file is shorter than one window (padded to one; None for an unread file)."""
    return None if result.error is not None else bool(result.n_samples < run.loader.segment)


def _error_text(result: streaming.FileResult) -> str | None:
    e = result.error
    return None if e is None else f"{e.kind}: {e.detail}"


def file_row(run: LoadedRun, result: streaming.FileResult,
             min_confidence: float | None = None) -> dict:
    """path, duration_s, short, predicted, confidence, p_<class>..., error (one decision per
    file: the mean of its window logits; ``uncertain`` below ``min_confidence``)."""
    ok = result.error is None
    probs = clip_scoring.softmax(result.clip_logits[None])[0] if ok else None
    return {"path": result.path,
            "duration_s": round(result.duration_s(run.loader.sample_rate), 3) if ok else None,
            "short": is_short(run, result),
            **probability_columns(run, probs, min_confidence), "error": _error_text(result)}


def _span_row(run: LoadedRun, result: streaming.FileResult, start_s: float | None,
              end_s: float | None, columns: dict) -> dict:
    return {"path": result.path,
            "start_s": None if start_s is None else round(start_s, 3),
            "end_s": None if end_s is None else round(end_s, 3),
            "short": is_short(run, result), **columns, "error": _error_text(result)}


def window_rows(run: LoadedRun, result: streaming.FileResult,
                min_confidence: float | None = None) -> list[dict]:
    """One row per window: path, start_s, end_s, short, predicted, confidence, p_<class>...,
    error (``uncertain`` below ``min_confidence``)."""
    if result.error is not None:
        return [_span_row(run, result, None, None, probability_columns(run, None))]
    sr, seg = run.loader.sample_rate, run.loader.segment
    probs = clip_scoring.softmax(result.logits.astype(np.float64))
    return [_span_row(run, result, s / sr, min(s + seg, result.n_samples) / sr,
                      probability_columns(run, p, min_confidence))
            for s, p in zip(result.starts.tolist(), probs, strict=True)]


def timeline(run: LoadedRun, result: streaming.FileResult, hop: int,
             smoothing: segments_lib.Smoothing = segments_lib.DEFAULT,
             min_confidence: float | None = None) -> list[tuple]:
    """The merged, smoothed segments of one file (start_s, end_s, label, probabilities), those
    below ``min_confidence`` labelled ``segments.UNCERTAIN`` (:func:`segments.abstain`)."""
    return segments_lib.abstain(segments_lib.timeline(
        result.starts, clip_scoring.softmax(result.logits.astype(np.float64)), result.n_samples,
        sample_rate=run.loader.sample_rate, segment=run.loader.segment, hop=hop,
        smoothing=smoothing), min_confidence)


def segment_rows(run: LoadedRun, result: streaming.FileResult, hop: int,
                 smoothing: segments_lib.Smoothing = segments_lib.DEFAULT,
                 min_confidence: float | None = None) -> list[dict]:
    """One row per merged segment: path, start_s, end_s, short, predicted, confidence,
    p_<class>..., error. ``predicted`` is the smoothed label and ``confidence`` its mean
    probability over the segment; ``uncertain`` below ``min_confidence``."""
    if result.error is not None:
        return [_span_row(run, result, None, None, probability_columns(run, None))]
    rows = []
    for seg in timeline(run, result, hop, smoothing, min_confidence):
        columns = probability_columns(run, seg[3], label=max(seg[2], 0))
        if seg[2] == segments_lib.UNCERTAIN:
            columns.update(predicted=portable.UNCERTAIN,
                           confidence=round(segments_lib.confidence(seg), 6))
        rows.append(_span_row(run, result, seg[0], seg[1], columns))
    return rows


@dataclasses.dataclass
class PathPredictions:
    rows: list[dict]
    found: int  # files found (named, or audio in the folders named): one result each
    failed: list[str]  # "path: error" of every file that could not be read
    ignored: int  # non-audio files in the folders searched
    panels: list[dict]  # per file, what a timeline plot draws (only when asked for)
    short: int = 0  # files shorter than one window (padded to one)


def predict_paths(run: LoadedRun, paths: Sequence[str], *, rows: str = "files",
                  hop_seconds: float | None = None,
                  smoothing: segments_lib.Smoothing = segments_lib.DEFAULT,
                  on_error: str = "skip", log: Callable[[str], None] = print,
                  batch_size: int | None = None, panels: int = 0,
                  min_confidence: float | None = None) -> PathPredictions:
    """Rows for the audio files under ``paths``: one per file (``rows="files"``), per window
    (``"windows"``) or per merged, smoothed segment (``"segments"``). An unreadable file gets one
    row with its ``error`` (or, with ``on_error="error"``, stops everything with a DataError).
    Every row says whether its file is ``short`` (shorter than one window, padded to one); a
    file, window or segment whose confidence is below ``min_confidence`` is ``uncertain``.
    ``panels``: keep what a timeline plot needs for the first ``panels`` files."""
    if rows not in ROW_KINDS:
        raise ValueError(f"rows must be one of {ROW_KINDS}, got {rows!r}")
    min_confidence = portable.check_min_confidence(min_confidence)
    found = collect_paths(paths)
    ignored = f" ({found.ignored} non-audio file(s) in the folders left out)" \
        if found.ignored else ""
    log(f"predict: {len(found.paths)} file(s) to classify{ignored}")
    if hop_seconds is None and rows == "segments":
        hop_seconds = timeline_hop_seconds(run)
    hop = windowing(run, hop_seconds).hop
    out = PathPredictions([], len(found.paths), [], found.ignored, [])
    for result in stream_files(run, found.paths, hop_seconds=hop_seconds, on_error=on_error,
                               log=log, batch_size=batch_size):
        if result.error is not None:
            out.failed.append(f"{result.path}: {_error_text(result)}")
        out.short += bool(is_short(run, result))
        if rows == "files":
            out.rows.append(file_row(run, result, min_confidence))
        elif rows == "windows":
            out.rows += window_rows(run, result, min_confidence)
        else:
            out.rows += segment_rows(run, result, hop, smoothing, min_confidence)
        if len(out.panels) < panels:
            out.panels.append(_panel(run, result, hop, smoothing, min_confidence))
    return out


def _panel(run: LoadedRun, result: streaming.FileResult, hop: int,
           smoothing: segments_lib.Smoothing, min_confidence: float | None = None) -> dict:
    if result.error is not None:
        return {"path": result.path, "error": _error_text(result)}
    sr, seg = run.loader.sample_rate, run.loader.segment
    return {"path": result.path,
            "edges": segments_lib.cell_edges(result.starts, seg, result.n_samples) / sr,
            "probs": clip_scoring.softmax(result.logits.astype(np.float64)),
            "segments": timeline(run, result, hop, smoothing, min_confidence)}


def is_prediction_file(path: str) -> bool:
    """Whether ``path`` holds rows that :func:`predict_paths` wrote (CSV or JSON)."""
    if path.endswith(".json"):
        rows = read_json(path)
        return isinstance(rows, list) and all(isinstance(r, dict) and "path" in r for r in rows)
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    return header[:1] == ["path"] and "confidence" in header
