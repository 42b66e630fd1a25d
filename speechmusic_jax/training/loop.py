"""fit(): data, model, epochs, early stopping, checkpoints, test report, summary.

The loop is a thin driver around pure pieces (pipeline, steps, metrics). It owns every file in
the workdir and writes each one atomically. Everything it prints was measured in this run.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax import parallel, timing
from speechmusic_jax.data import audio, sources
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.pipeline import (
    ReadAhead,
    balance_summary,
    make_loader_config,
    train_batches,
)
from speechmusic_jax.data.synthetic import SyntheticSpec, ensure_corpus
from speechmusic_jax.errors import DataError, DeviceOutOfMemory, TrainingDiverged, WorkdirConflict
from speechmusic_jax.io_utils import (
    append_jsonl,
    atomic_write_json,
    read_jsonl,
    write_jsonl,
)
from speechmusic_jax.models.conv1d import build_model, count_params
from speechmusic_jax.models.presets import resolve_spec
from speechmusic_jax.training import clip_scoring, optim, reporting
from speechmusic_jax.training.checkpoints import Checkpoints
from speechmusic_jax.training.step import init_state, make_eval_step, make_train_step

Log = Callable[[str], None]


def default_cache_root() -> str:
    return os.environ.get("SPEECHMUSIC_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "speechmusic_jax")


# --------------------------------------------------------------------------------------------
# Workdir rules


def workdir_state(workdir: str, cfg_dict: dict) -> str:
    """'new', 'resume' (unfinished, same config) or 'finished'; WorkdirConflict otherwise."""
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        if os.path.isdir(workdir) and os.listdir(workdir):
            leftovers = sorted(os.listdir(workdir))[:5]
            raise WorkdirConflict(
                f"--workdir {workdir} is not empty and holds no run (found {leftovers}); "
                "choose another workdir or pass --overwrite")
        return "new"
    with open(cfg_path, encoding="utf-8") as f:
        old = json.load(f)
    changed = config_lib.diff(old, cfg_dict)
    if changed:
        raise WorkdirConflict(
            f"--workdir {workdir} holds a run with a different config (fields: "
            f"{', '.join(changed)}); use another --workdir or pass --overwrite to start afresh")
    summary = os.path.join(workdir, "summary.json")
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            if json.load(f).get("status") in ("completed", "stopped_early"):
                return "finished"
    return "resume"


# --------------------------------------------------------------------------------------------
# Data


class ErrorCounter:
    """Counts bad files by kind (thread-safe); raises instead when on_error is 'error'."""

    def __init__(self, on_error: str, log: Log, initial: dict[str, int] | None = None):
        self.on_error = on_error
        self.log = log
        self.counts: collections.Counter[str] = collections.Counter(initial or {})
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, err: audio.AudioError) -> None:
        if self.on_error == "error":
            raise DataError(
                f"{err}\nFix or remove the file, or pass --data_on_error=skip to leave it out.")
        with self._lock:
            if err.path in self.seen:
                return
            self.seen.add(err.path)
            self.counts[err.kind] += 1
        self.log(f"warning: skipping {err}")


def list_source(d: config_lib.ConfigDict, spec: str, on_error: str, log: Log) -> sources.Listing:
    """The files of the data source ``spec`` under the data config ``d`` (classes, grouping,
    corpus cache: the built-in corpus is generated there on first use)."""
    cache_root = d.cache_dir or default_cache_root()

    def synthetic_dir() -> str:
        s = d.synthetic
        return str(ensure_corpus(SyntheticSpec(s.clips_per_class, s.seconds, s.sample_rate,
                                               s.seed), cache_root, log=log))

    return sources.list_files(spec, tuple(d.classes), group_regex=d.group_regex,
                              on_error=on_error, synthetic_dir=synthetic_dir,
                              cache_root=cache_root, log=log)


def prepare_data(cfg: config_lib.ConfigDict, workdir: str, log: Log,
                 resume: bool) -> tuple[dict[str, list[sources.AudioFile]], dict[str, float],
                                        dict[str, int]]:
    """List, scan and split the files; returns (split, duration by path, data errors)."""
    d = cfg.data
    t0 = time.perf_counter()
    classes = tuple(d.classes)
    listing = list_source(d, d.spec, d.on_error, log)
    for note in listing.notes:  # what was left out (non-audio files, musan noise/, ...)
        log(f"data: {note}")
    # Header scan of every file before any work (cheap: soundfile.info).
    scanned, scan_errors = sources.scan_headers(listing.files, d.on_error,
                                                workers=4 * d.workers, log=log)
    errors = collections.Counter(scan_errors) + collections.Counter(listing.errors)
    if scan_errors:
        sources.check_classes([f for f, _ in scanned], classes, where=listing.root,
                              after=f" after skipping {sum(scan_errors.values())} unusable file(s)")
    # Identical audio (copies, re-encodings) goes into one group, so into one split.
    duplicates = sources.find_duplicates(scanned, workers=4 * d.workers)
    files, conflicts = split_lib.merge_duplicates([f for f, _ in scanned], duplicates)
    if duplicates:
        n = sum(len(s) for s in duplicates)
        a, b = duplicates[0][0].path, duplicates[0][1].path
        log(f"warning: {n} files in {len(duplicates)} set(s) have identical audio content "
            f"(e.g. {a} and {b}); each set is kept in one split")
    if conflicts:
        shown = "; ".join(" = ".join(f"{f.path} ({classes[f.label]})" for f in c)
                          for c in conflicts[:3])
        if d.on_error == "error":
            raise DataError(
                f"{len(conflicts)} set(s) of files have identical audio but different labels: "
                f"{shown}. Fix the labels, or pass --data_on_error=skip to leave them out.")
        drop = {f.path for c in conflicts for f in c}
        files = [f for f in files if f.path not in drop]
        errors["conflicting_labels"] += len(drop)
        log(f"warning: skipping {len(drop)} file(s) with identical audio but different labels: "
            f"{shown}")
        sources.check_classes(files, classes, where=listing.root,
                              after=" after skipping files with conflicting labels")
    errors = dict(errors)
    durations = {f.path: info.seconds for f, info in scanned}
    if d.cache == "memory":
        kept = sum(durations[f.path] for f in files) * d.sample_rate * 4
        log(f"data: data.cache=memory keeps the decoded audio: about {kept / 2**20:.0f} MiB")
    split_path = os.path.join(workdir, "split.csv")
    if resume and os.path.exists(split_path):
        split = split_lib.read_split_csv(split_path, classes)
    else:
        split = split_lib.split_files(files, d.split, cfg.seed, folds=d.folds, fold=d.fold,
                                      classes=classes)
        split_lib.write_split_csv(split_path, split, classes)
    log(f"data: {d.spec}: {len(files)} files scanned in {time.perf_counter() - t0:.1f}s; "
        f"{split_lib.describe(split, d.classes)}")
    for s in ("train", "val"):
        if not split[s]:
            raise DataError(f"the {s} split is empty; use more data or change data.split")
    return split, durations, errors


# --------------------------------------------------------------------------------------------
# The run


def fit(cfg: config_lib.ConfigDict, workdir: str, *, log: Log = print,
        overwrite: bool = False, stop_after: int | None = None,
        progress: bool | None = None) -> dict:
    """Train and test ``cfg`` in ``workdir``; return the summary (also in summary.json).

    ``stop_after`` ends this call after that many epochs as if the process had been stopped
    (checkpoint written, no test, returns ``{"status": "interrupted"}``); the next call resumes.
    It exists for tests and for time-boxed jobs. ``progress`` shows a per-step progress bar
    (default: only when stderr is a terminal).
    """
    config_lib.validate(cfg)
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirConflict(f"--workdir {workdir} is a file, not a folder")
    cfg_dict = config_lib.to_dict(cfg)
    if overwrite and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    mode = workdir_state(workdir, cfg_dict)
    if mode == "finished":
        with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        log(f"{workdir} holds a finished run (status {summary['status']}); its summary:")
        log(reporting.format_summary(summary, cfg.data.classes))
        return summary
    mesh = parallel.make_mesh()
    try:  # a config error, reported before anything is written
        parallel.check_divisible(cfg.train.batch_size, mesh, "train.batch_size")
        parallel.check_divisible(cfg.train.eval_batch_size, mesh, "train.eval_batch_size")
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(os.path.join(workdir, "config.json"), cfg_dict)
    info = timing.device_info()
    log(f"devices: {info['device_count']} x {info['device_kind']} ({info['backend']}), "
        f"jax {jax.__version__}")

    d, t, o = cfg.data, cfg.train, cfg.optimizer
    classes = tuple(d.classes)
    split, durations, scan_errors = prepare_data(cfg, workdir, log, resume=(mode == "resume"))
    errors = ErrorCounter(d.on_error, log, scan_errors)
    segment = int(round(d.segment_seconds * d.sample_rate))
    train_files = split["train"]
    # Augmentation, class weights / balanced sampling and the memory cache live in the loader.
    loader = make_loader_config(cfg, train_files)
    balance = balance_summary(loader, train_files, classes)
    if d.balance != "none":
        log(f"data: class balance by {d.balance}: {balance}")
    if len(train_files) < t.batch_size:
        raise DataError(f"train.batch_size: {t.batch_size} is more than the "
                                f"{len(train_files)} training files")
    train_durations = [durations.get(f.path, 0.0) for f in train_files]
    steps_per_epoch = len(train_files) // t.batch_size

    spec = resolve_spec(cfg.model, len(classes), d.sample_rate)
    model = build_model(spec, cfg.seed, t.precision)
    tx, schedule = optim.from_config(cfg, steps_per_epoch)
    graphdef, state = init_state(model, tx)
    del model
    params_trainable = count_params(state.params)
    params_total = params_trainable + count_params(state.model_state)
    log(reporting.layer_table(state.params))
    stem = (f"log-mel {spec.n_mels} bands, {spec.stem_filters}/{spec.kernel_size}/1"
            if spec.frontend == "logmel" else
            f"{spec.stem_filters}/{spec.stem_kernel}/{spec.stem_stride}")
    log(f"model: {cfg.model.preset} ({stem} stem, stages {list(spec.stage_filters)}), "
        f"{params_trainable:,} trainable parameters; "
        f"optimizer {o.name}, lr {o.learning_rate:g} ({o.schedule}), weight decay "
        f"{o.weight_decay:g}")

    ckpts = Checkpoints(workdir)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    loop = {"epoch": 0, "best_value": None, "best_epoch": 0, "bad_epochs": 0, "train_time_s": 0.0,
            "stopped_early": False}
    last = ckpts.last() if mode == "resume" else None
    if last is not None:
        state, loop = ckpts.restore(last, state)
        log(f"resuming from the checkpoint of epoch {loop['epoch']}")
    rows = [r for r in read_jsonl(metrics_path) if r.get("epoch", 0) <= loop["epoch"]]
    write_jsonl(metrics_path, rows)  # cut back to what the checkpoint holds

    state = parallel.put_replicated(state, mesh)
    key = jax.random.key(cfg.seed)
    bshard = parallel.batch_sharding(mesh)
    x_spec = jax.ShapeDtypeStruct((t.batch_size, segment), jnp.float32, sharding=bshard)
    y_spec = jax.ShapeDtypeStruct((t.batch_size,), jnp.int32, sharding=bshard)
    w_spec = jax.ShapeDtypeStruct((t.batch_size,), jnp.float32, sharding=bshard)
    train_step, compile_s, step_flops = timing.compile_ahead(
        make_train_step(graphdef, tx, num_classes=len(classes),
                        label_smoothing=t.label_smoothing, l1=t.l1, l2=t.l2,
                        penalty_mask=t.penalty_mask),
        state, x_spec, y_spec, w_spec, key, donate_argnums=(0,))
    eval_fn = make_eval_step(graphdef)
    ex_spec = jax.ShapeDtypeStruct((t.eval_batch_size, segment), jnp.float32, sharding=bshard)
    eval_compiled, eval_compile_s, eval_flops = timing.compile_ahead(
        eval_fn, state.params, state.model_state, ex_spec)
    log(f"compiled train step in {compile_s:.2f}s, eval step in {eval_compile_s:.2f}s "
        "(timings below exclude compilation)")
    train_step = _out_of_memory_hint(train_step, "train step", "train.batch_size", t.batch_size)
    eval_compiled = _out_of_memory_hint(eval_compiled, "eval step", "train.eval_batch_size",
                                        t.eval_batch_size)

    def predict_with(st):
        params = optim.eval_params(o.name, st.opt_state, st.params)
        return lambda x: eval_compiled(params, st.model_state, x)

    def put_x(x):
        return jax.device_put(x, bshard)

    def evaluate(st, files):
        return clip_scoring.predict_files(predict_with(st), files, loader, t.eval_batch_size,
                                        put=put_x, on_bad_file=errors)

    es = t.early_stopping
    mode = config_lib.MONITORS[es.monitor] if es.mode == "auto" else es.mode
    step_times: list[float] = []
    status = "completed"
    printer = reporting.EpochPrinter(log)
    overfit = reporting.OverfitWatch(log)
    board = reporting.TensorBoard(os.path.join(workdir, "tensorboard"))
    first_epoch = loop["epoch"] + 1

    def epoch_batches(e: int):
        return train_batches(train_files, train_durations, loader, cfg.seed, e,
                             on_bad_file=errors)

    upcoming: list[ReadAhead] = []  # the next epoch's batches, started during validation
    try:
        for epoch in range(first_epoch, t.epochs + 1):
            t_epoch = time.perf_counter()
            sums = np.zeros(3)
            wait = 0.0
            t_wait = time.perf_counter()
            bar = reporting.ProgressBar(steps_per_epoch, epoch, enabled=progress)
            batches = upcoming.pop() if upcoming else epoch_batches(epoch)
            for batch in batches:
                x, y, w = parallel.put_batch((batch.x, batch.y, batch.weight), mesh)
                wait += time.perf_counter() - t_wait
                t0 = time.perf_counter()
                state, m = train_step(state, x, y, w, key)
                m = jax.device_get(m)  # blocks: the clock stops when the step is done
                step_times.append(time.perf_counter() - t0)
                bar.step(float(m["loss_sum"]) / max(float(m["count"]), 1.0))
                finite = math.isfinite(float(m["loss_sum"])) and math.isfinite(
                    float(m["grad_norm"]))
                if not finite:
                    bar.close()
                    step_no = (epoch - 1) * steps_per_epoch + bar.done
                    _write_diverged(workdir, cfg, loop, step_no, epoch, info)
                    raise TrainingDiverged(
                        f"the loss became {float(m['loss_sum']) / max(float(m['count']), 1):g} at "
                        f"step {step_no} (epoch {epoch}); try a lower optimizer.learning_rate "
                        f"(now {o.learning_rate:g}) or gradient clipping (train.grad_clip_norm=1). "
                        + (f"The last good checkpoint (epoch {loop['epoch']}) is kept."
                           if loop["epoch"] else "No checkpoint had been written yet."))
                sums += (float(m["loss_sum"]), float(m["correct"]), float(m["count"]))
                t_wait = time.perf_counter()
            bar.close()
            train_s = time.perf_counter() - t_epoch
            if epoch < t.epochs:  # the next epoch's first reads overlap this validation
                upcoming.append(ReadAhead(epoch_batches(epoch + 1)))
            val = clip_scoring.report(evaluate(state, split["val"]), classes)
            epoch_s = time.perf_counter() - t_epoch
            loop["train_time_s"] += train_s
            row = {
                "epoch": epoch,
                "train_loss": sums[0] / max(sums[2], 1),
                "train_accuracy": sums[1] / max(sums[2], 1),
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "val_f1": val["f1"]["macro"],
                "learning_rate": float(schedule(epoch * steps_per_epoch - 1))
                * optim.lr_scale(state.opt_state),
                "epoch_time_s": epoch_s,
                "examples_per_s": sums[2] / train_s if train_s > 0 else None,
                "data_wait_s": wait,
            }
            loop, improved, stop = early_stopping_update(loop, epoch, row[es.monitor], mode=mode,
                                                         patience=es.patience,
                                                         min_delta=es.min_delta)
            loop["stopped_early"] = stop and epoch < t.epochs
            # Records of the epoch first, then the checkpoint: a kill in between is cut back (or, in
            # TensorBoard, overwritten by the same step) on resume.
            append_jsonl(metrics_path, row)
            board.write(row)
            ckpts.save(epoch, jax.device_get(state), loop,
                       best={"monitor": es.monitor, "value": row[es.monitor]} if improved else None)
            printer.row(row, improved)
            overfit.update(row)
            if stop_after is not None and epoch - first_epoch + 1 >= stop_after and not stop \
                    and epoch < t.epochs:
                board.close()
                log(f"stopping after epoch {epoch} as asked; run again to resume")
                return {"status": "interrupted", "epochs_run": epoch}
            if stop:
                if epoch < t.epochs:
                    status = "stopped_early"
                    log(f"early stopping: {es.monitor} has not improved for {es.patience} epochs "
                        f"(best {loop['best_value']:.4f} at epoch {loop['best_epoch']})")
                break
    finally:
        for pending in upcoming:
            pending.close()
    if loop["stopped_early"]:
        status = "stopped_early"

    # Test with the best weights (or the last, with restore_best off).
    pointer = ckpts.best() if es.restore_best else ckpts.last()
    host_state, _ = ckpts.restore(pointer, jax.device_get(state))
    state = parallel.put_replicated(host_state, mesh)
    log(f"testing the weights of epoch {pointer['epoch']} "
        f"({'best ' + es.monitor if es.restore_best else 'last epoch'})")
    test_pred = evaluate(state, split["test"]) if split["test"] else None
    test = clip_scoring.report(test_pred, classes) if test_pred else None
    if test_pred:
        reporting.write_predictions(os.path.join(workdir, "test_predictions.csv"), test_pred,
                                    classes)

    # Inference speed of the tested weights, at the eval batch size and at batch 1.
    tested = optim.eval_params(o.name, state.opt_state, state.params)
    predict = partial(jax.jit(eval_fn), tested, state.model_state)  # weights as arguments
    probe_x = np.random.default_rng(0).standard_normal((t.eval_batch_size, segment)).astype(
        np.float32) * 0.1
    inference = timing.inference_speed(predict, probe_x, d.sample_rate)
    peak, peak_kind = timing.peak_memory()

    summary = {
        "status": status,
        "best_epoch": loop["best_epoch"],
        "epochs_run": loop["epoch"],
        "seed": cfg.seed,
        "test": test,
        "params_trainable": params_trainable,
        "params_total": params_total,
        "flops_per_example": eval_flops / t.eval_batch_size if eval_flops else None,
        "train_step_flops_per_example": step_flops / t.batch_size if step_flops else None,
        "compile_time_s": compile_s,
        "step_time_ms": timing.summarize_ms(step_times),
        "step_time_note": "train step only, compilation excluded, blocked on the result; "
                          "this session's steps" + (" (after resume)" if last else ""),
        "train_time_s": loop["train_time_s"],
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "inference": inference,
        "checkpoint_bytes": ckpts.size_bytes(pointer),
        "weight_decay_semantics": optim.weight_decay_semantics(o.name, o.weight_decay_mask),
        "balance": balance,
        "data_errors": dict(errors.counts),
        "n_files": {s: len(v) for s, v in split.items()},
        **info,
        "versions": timing.versions(),
    }
    atomic_write_json(os.path.join(workdir, "summary.json"), summary)
    try:
        from speechmusic_jax import plots

        plots.curves(read_jsonl(metrics_path), os.path.join(workdir, "curves.png"),
                     best_epoch=loop["best_epoch"])
    except Exception as e:  # a plot must never cost the run
        log(f"warning: could not draw curves.png ({e})")
    board.close()
    log(reporting.format_summary(summary, classes))
    return summary


def early_stopping_update(loop: dict, epoch: int, value: float, *, mode: str, patience: int,
                          min_delta: float) -> tuple[dict, bool, bool]:
    """Fold one epoch's monitored value into the loop record: (record, improved, stop).

    An epoch improves when it beats the best so far by more than ``min_delta`` (lower for mode
    'min', higher for 'max'); training stops after ``patience`` epochs without improvement
    (``patience`` 0: never).
    """
    best = loop["best_value"]
    sign = 1.0 if mode == "min" else -1.0
    improved = best is None or sign * (best - value) > min_delta
    loop = dict(loop, epoch=epoch)
    if improved:
        loop.update(best_value=value, best_epoch=epoch, bad_epochs=0)
    else:
        loop["bad_epochs"] += 1
    return loop, improved, patience > 0 and loop["bad_epochs"] >= patience


def _out_of_memory_hint(step: Callable, what: str, field: str, batch_size: int) -> Callable:
    """``step``, raising :class:`DeviceOutOfMemory` naming ``field`` when XLA cannot allocate."""

    def call(*args):
        try:
            return step(*args)
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                raise
            detail = str(e).strip().splitlines()[0][:200]
            raise DeviceOutOfMemory(
                f"the device ran out of memory in the {what} at batch size {batch_size} "
                f"({detail}); try a smaller {field} (e.g. --config.{field}="
                f"{max(1, batch_size // 2)}) or train.precision=bfloat16. Earlier checkpoints "
                "are intact.") from None

    return call


def _write_diverged(workdir: str, cfg, loop: dict, step_no: int, epoch: int, info: dict) -> None:
    atomic_write_json(os.path.join(workdir, "summary.json"), {
        "status": "diverged", "diverged_at_step": step_no, "diverged_in_epoch": epoch,
        "best_epoch": loop["best_epoch"], "epochs_run": loop["epoch"], "seed": cfg.seed,
        "test": None, **info, "versions": timing.versions()})
