"""One record per trial, read back from its run folder: what results.csv holds.

A trial's folder is an ordinary run (``summary.json``, ``metrics.jsonl``, ``config.json``), so
its record is computed from those files alone, whoever trained it (``fit`` one at a time, or a
grouped, vmapped program) and whichever process: a sweep shared over machines is collected the
same way. Time to target comes from the run's evaluation points (``evals.jsonl``: every
``train.eval_every_steps`` steps and at each epoch's end): the first point whose validation
metric meets the target, in optimizer steps and in seconds of training (validation and
compilation excluded); a trial that never meets it, or meets it only after its budget
``train.max_seconds`` was spent, scores infinity (AlgoPerf). Runs made before evaluation points
existed are read per epoch from ``metrics.jsonl``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax.io_utils import read_json, read_jsonl
from speechmusic_jax.tuning.spec import Trial

FINISHED = ("completed", "stopped_early", "diverged")
# results.csv: these columns, with the swept fields after ``status``.
LEADING = ("trial", "workload", "arm", "optimizer", "seed", "status")
TRAILING = ("best_epoch", "epochs_run", "stopped_by", "max_seconds_exceeded", "val_accuracy",
            "val_loss", "val_f1", "test_accuracy", "test_f1_macro", "test_clips",
            "steps_to_target", "seconds_to_target", "train_time_s", "step_time_ms",
            "compile_time_s", "params_trainable", "flops_per_example", "mode", "group_size",
            "group_train_time_s", "diverged_at_step", "error")


def trial_dir(workdir: str, index: int) -> str:
    return os.path.join(workdir, "trials", f"{index:03d}")


def finished_summary(folder: str) -> dict | None:
    """The summary of a finished (completed, stopped early or diverged) run in ``folder``."""
    path = os.path.join(folder, "summary.json")
    if not os.path.exists(path):
        return None
    try:
        summary = read_json(path)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") in FINISHED else None


def train_seconds(row: dict, steps_per_epoch: int, batch_size: int) -> float | None:
    """Seconds of training in one epoch row (validation excluded): the row's ``train_time_s``
    (every run since it was added), else examples / (examples per second) for older runs."""
    if row.get("train_time_s") is not None:
        return float(row["train_time_s"])
    rate = row.get("examples_per_s")
    return steps_per_epoch * batch_size / rate if rate else None


def time_to_target(rows: list[dict], target: tuple[str, float] | None, steps_per_epoch: int,
                   batch_size: int, points: list[dict] | None = None,
                   max_seconds: float = 0.0) -> tuple[float, float]:
    """(steps, seconds) until the first evaluation point whose ``target[0]`` meets ``target[1]``
    (higher is better, lower for losses); (inf, inf) when none does, when it comes after
    ``max_seconds`` of training (> 0), or without a target. ``points``: the rows of
    evals.jsonl (step, train_time_s: cumulative); without them (a run made before they
    existed), the epochs of metrics.jsonl ``rows``."""
    if target is None:
        return math.inf, math.inf
    if not points:
        points, seconds = [], 0.0
        for row in sorted(rows, key=lambda r: r["epoch"]):
            s = train_seconds(row, steps_per_epoch, batch_size)
            seconds += s if s is not None else math.nan
            points.append({**row, "step": row["epoch"] * steps_per_epoch,
                           "train_time_s": seconds})
    for point in sorted(points, key=lambda p: p["step"]):
        if max_seconds > 0 and point["train_time_s"] > max_seconds:
            break
        if config_lib.meets_target(point.get(target[0]), target):
            return float(point["step"]), float(point["train_time_s"])
    return math.inf, math.inf


def trial_record(trial: Trial, workdir: str, target: tuple[str, float] | None,
                 failure: dict | None = None, fields: Sequence[str] = ()) -> dict:
    """The record of ``trial`` (see LEADING/TRAILING): status ``pending`` when it has not run,
    ``failed`` (with ``error``) when its last attempt raised. ``fields`` (the sweep's swept
    fields) that the trial does not set are filled from its config.json: the value it ran with."""
    folder = trial_dir(workdir, trial.index)
    rec: dict[str, Any] = {"trial": trial.index, "workload": trial.workload, "arm": trial.arm,
                           "optimizer": None, "seed": trial.seed, "point_index": trial.point_index,
                           **trial.fixed, **trial.point, "workdir": folder}
    cfg = _read(os.path.join(folder, "config.json"))
    if cfg:
        rec["optimizer"] = cfg["optimizer"]["name"]
        for field in fields:
            if field not in rec:
                rec[field] = _dotted(cfg, field)
    summary = finished_summary(folder)
    if summary is None:
        rec["status"] = "failed" if failure else "pending"
        rec["error"] = (failure or {}).get("error")
        return _fill(rec)
    rows = read_jsonl(os.path.join(folder, "metrics.jsonl"))
    batch_size = cfg["train"]["batch_size"] if cfg else 1
    steps_per_epoch = (summary.get("n_files") or {}).get("train", 0) // max(batch_size, 1)
    # the validation metrics of the weights the trial was tested with (its best epoch, or its
    # last with train.early_stopping.restore_best off)
    tested = summary.get("tested_epoch") or summary.get("best_epoch")
    row = next((r for r in rows if r["epoch"] == tested), None)
    steps, seconds = time_to_target(
        rows, target, steps_per_epoch, batch_size,
        read_jsonl(os.path.join(folder, "evals.jsonl")),
        float(_dotted(cfg, "train.max_seconds") or 0.0) if cfg else 0.0)
    test = summary.get("test") or {}
    grouped = summary.get("grouped") or {}
    step_ms = (summary.get("step_time_ms") or {}).get("median")
    rec.update(
        status=summary["status"], best_epoch=summary.get("best_epoch"),
        epochs_run=summary.get("epochs_run"), stopped_by=summary.get("stopped_by"),
        max_seconds_exceeded=summary.get("max_seconds_exceeded"),
        val_accuracy=row.get("val_accuracy") if row else None,
        val_loss=row.get("val_loss") if row else None,
        val_f1=row.get("val_f1") if row else None,
        test_accuracy=test.get("accuracy"),
        test_f1_macro=(test.get("f1") or {}).get("macro"),
        test_clips=test.get("n_files"),
        steps_to_target=steps, seconds_to_target=seconds,
        # a grouped trial's: what it would take alone (its steps at its program's step time
        # measured alone); its group's wall time of training: group_train_time_s
        train_time_s=summary.get("train_time_s"),
        step_time_ms=step_ms,
        compile_time_s=summary.get("compile_time_s"),
        params_trainable=summary.get("params_trainable"),
        flops_per_example=summary.get("flops_per_example"),
        mode=grouped.get("mode", "alone"), group_size=grouped.get("size", 1),
        group_train_time_s=grouped.get("train_time_s_group"),
        diverged_at_step=summary.get("diverged_at_step"),
        steps_per_epoch=steps_per_epoch)
    return _fill(rec)


def _fill(rec: dict) -> dict:
    for key in TRAILING:
        rec.setdefault(key, None)
    return rec


def _dotted(d: dict, field: str) -> Any:
    for part in field.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _read(path: str) -> dict | None:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
