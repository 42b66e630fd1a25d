"""Using a trained run: load its config and weights, classify files, report on a data source.

The library side of the ``evaluate`` and ``predict`` commands (which only parse flags)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax.data import audio, prepare, sources
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.pipeline import LoaderConfig, make_loader_config, window_starts
from speechmusic_jax.errors import DataError, RunNotFound
from speechmusic_jax.io_utils import atomic_write_json, check_output, read_json
from speechmusic_jax.training import builder, clip_scoring
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
    """Rebuild a run's config from its config.json (every field checked against base_config)."""
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    cfg = config_lib.base_config()
    _assign(cfg, saved, "")
    return cfg


def _assign(node: config_lib.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
        if key not in node:
            raise config_lib.ConfigError(f"{prefix}{key}: not a field of this version's config")
        if isinstance(value, dict):
            _assign(node[key], value, f"{prefix}{key}.")
        else:
            node[key] = tuple(value) if isinstance(value, list) else value


def load_run(workdir: str, which: str = "best") -> LoadedRun:
    """The config and the ``best`` (or ``last``) weights of the run in ``workdir``."""
    workdir = os.path.abspath(workdir)
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise RunNotFound(f"--workdir {workdir} holds no run (no config.json)")
    cfg = config_from_json(cfg_path)
    ckpts = Checkpoints(workdir)
    pointer = ckpts.best() if which == "best" else ckpts.last()
    if pointer is None:
        raise RunNotFound(f"--workdir {workdir} has no {which} checkpoint yet")
    built = builder.build(cfg)
    state, _ = ckpts.restore(pointer, built.state)
    return LoadedRun(cfg, workdir, pointer["epoch"], make_loader_config(cfg, []),
                     builder.predictor(built, state))


def classify(run: LoadedRun, files: Sequence[sources.AudioFile],
             on_bad_file: Callable[[audio.AudioError], None] | None = None
             ) -> clip_scoring.Predictions:
    return clip_scoring.predict_files(run.predict, files, run.loader, run.cfg.train.eval_batch_size,
                                    on_bad_file=on_bad_file)


def segments(run: LoadedRun, pred: clip_scoring.Predictions) -> list[dict]:
    """One row per window: path, start_s, end_s, label, confidence."""
    sr, seg, hop = run.loader.sample_rate, run.loader.segment, run.loader.hop
    probs = clip_scoring.softmax(pred.window_logits)
    out = []
    seen: dict[int, int] = {}
    lengths: dict[int, int] = {}  # samples per clip, from its header (read once per clip)
    for w, clip in enumerate(pred.window_clip):
        f = pred.files[clip]
        k = seen.get(int(clip), 0)
        seen[int(clip)] = k + 1
        if int(clip) not in lengths:
            lengths[int(clip)] = int(round(audio.probe(f.path).seconds * sr))
        n = lengths[int(clip)]
        starts = window_starts(n, seg, hop)
        start = starts[min(k, len(starts) - 1)]
        out.append({"path": f.path, "start_s": round(start / sr, 4),
                    "end_s": round(min(start + seg, max(n, seg)) / sr, 4),
                    "label": run.classes[int(probs[w].argmax())],
                    "confidence": round(float(probs[w].max()), 6)})
    return out


def clip_rows(run: LoadedRun, pred: clip_scoring.Predictions) -> list[dict]:
    """One row per file: path, label (predicted), confidence, p_<class>..."""
    probs = clip_scoring.softmax(pred.clip_logits)
    rows = []
    for f, p in zip(pred.files, probs, strict=True):
        row = {"path": f.path, "label": run.classes[int(np.argmax(p))],
               "confidence": round(float(p.max()), 6)}
        row.update({f"p_{c}": round(float(v), 6) for c, v in zip(run.classes, p, strict=True)})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# What the evaluate and predict commands do, as functions that tests call directly


def source_name(spec: str) -> str:
    """A file name for a data spec (``eval/<source>.json``)."""
    return re.sub(r"[^\w.\-]+", "_", spec).strip("_") or "source"


def evaluate_source(run: LoadedRun, spec: str, *, on_error: str = "error",
                    log: Callable[[str], None] = print) -> tuple[dict, str]:
    """Classify every file of the labelled source ``spec`` with ``run``; write the report (the
    keys of summary.json's ``test``, plus the data errors, the source, the weights' epoch and
    any overlap with the run's own training or validation files) to ``eval/<source>.json``.
    Returns (report, path)."""
    try:
        sources.parse_spec(spec)
    except ValueError as e:
        raise DataError(str(e)) from None
    path = os.path.join(run.workdir, "eval", f"{source_name(spec)}.json")
    check_output(path, overwrite=True, ours=_is_eval_report, flag="eval report")
    scanned = prepare.scan_source(run.cfg.data, spec, on_error, log, merge_duplicates=False)
    bad_files = prepare.BadFiles(on_error, log, scanned.errors)
    overlap = training_overlap(run, scanned.files)
    if overlap["files"]:
        log(f"warning: {overlap['files']} of the {len(scanned.files)} files evaluated are among "
            f"this run's own training or validation files ({overlap['train']} train, "
            f"{overlap['val']} val; e.g. {overlap['examples'][0]}): the scores below overstate "
            "how the model does on new data")
    log(f"evaluating the epoch-{run.epoch} weights of {run.workdir} on {len(scanned.files)} "
        f"files of {spec}")
    report = clip_scoring.report(classify(run, scanned.files, on_bad_file=bad_files), run.classes)
    report.update(data_errors=dict(bad_files.counts), source=spec, weights_epoch=run.epoch,
                  overlap_with_training=overlap)
    atomic_write_json(path, report)
    return report, path


def _is_eval_report(path: str) -> bool:
    report = read_json(path)
    return isinstance(report, dict) and {"accuracy", "source"} <= set(report)


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


def collect_paths(paths: Sequence[str]) -> list[str]:
    """Audio files named by ``paths``: files as they are, folders searched recursively."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(names) if audio.is_audio_path(f)]
        elif os.path.exists(p):
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError(f"no audio files in {list(paths)}")
    return [os.path.abspath(p) for p in out]


def predict_paths(run: LoadedRun, paths: Sequence[str], *, windows: bool = False,
                  on_error: str = "error", log: Callable[[str], None] = print) -> list[dict]:
    """Rows for the audio files under ``paths``: one per file, or one per window."""
    scanned, scan_errors = sources.scan_headers(
        [sources.AudioFile(p, 0, p) for p in collect_paths(paths)], on_error, log=log)
    bad_files = prepare.BadFiles(on_error, log, scan_errors)
    pred = classify(run, [f for f, _ in scanned], on_bad_file=bad_files)
    return segments(run, pred) if windows else clip_rows(run, pred)


def is_prediction_file(path: str) -> bool:
    """Whether ``path`` holds rows that :func:`predict_paths` wrote (CSV or JSON)."""
    if path.endswith(".json"):
        rows = read_json(path)
        return isinstance(rows, list) and all(isinstance(r, dict) and "path" in r for r in rows)
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    return header[:1] == ["path"] and "confidence" in header
