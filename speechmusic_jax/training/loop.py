"""fit(): train and test one config in one workdir.

    fit = setup                       workdir rules, data, model + optimizer, compiled steps, resume
          then, for each epoch:
            train_epoch               the epoch's batches through the compiled train step
            validate                  clip-level report on the validation split
            record_epoch              metrics.jsonl, TensorBoard, table, then the checkpoint
          until the epochs are done or early stopping says stop, then
          finish                      test the best weights, time inference, summary.json, curves

The loop owns every file in the workdir and writes each one atomically; everything it prints was
measured in this run. Its state between epochs is a :class:`LoopState`, saved with each
checkpoint, so a killed run resumes where its last checkpoint left it.

Across processes (:mod:`speechmusic_jax.distributed`; the workdir on a file system they all
see) every process runs this same loop over a mesh of all their devices: each reads only its
rows of every batch (the epoch's plan is the same everywhere), scores its share of the
evaluation files on its own devices and gathers everyone's predictions, so every process holds
the same metrics and takes the same early-stopping decisions. Process 0 alone prints and writes
the run's files; checkpoints are written by orbax from every process.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterable

import jax
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax import distributed, parallel, timing
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.pipeline import (
    LoaderConfig,
    ReadAhead,
    balance_summary,
    make_loader_config,
    train_batches,
)
from speechmusic_jax.data.prepare import BadFiles, PreparedData, prepare_data
from speechmusic_jax.errors import DataError, DeviceOutOfMemory, TrainingDiverged
from speechmusic_jax.io_utils import atomic_write_json, read_jsonl, write_jsonl
from speechmusic_jax.training import builder, clip_scoring, optim, pretrained, reporting
from speechmusic_jax.training import workdir as workdir_rules
from speechmusic_jax.training.checkpoints import Checkpoints
from speechmusic_jax.training.step import TrainState
from speechmusic_jax.training.step_clock import StepClock

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class LoopState:
    """Where the loop is between epochs; each checkpoint saves it (``loop.json``)."""

    epoch: int = 0  # the last epoch finished
    best_value: float | None = None  # the best monitored value so far ...
    best_epoch: int = 0  # ... and its epoch
    bad_epochs: int = 0  # epochs since the last improvement
    train_time_s: float = 0.0  # seconds spent in training epochs, over every session
    stopped_early: bool = False
    started_at: str | None = None  # when the run's first session started (ISO 8601, UTC)
    wall_time_s: float = 0.0  # wall time of every session up to this checkpoint
    init_from: dict | None = None  # the pretrained weights it started from (train.init_from)

    @classmethod
    def from_json(cls, record: dict) -> LoopState:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run holds fixed from its first epoch to its last."""

    cfg: config_lib.ConfigDict
    workdir: str
    log: Log
    data: PreparedData
    loader: LoaderConfig
    built: builder.Built
    scope: parallel.Scope
    train_step: builder.Compiled
    eval_step: builder.Compiled  # compiled for eval_mesh
    eval_mesh: jax.sharding.Mesh  # the run's mesh; this process's devices when it spans several
    bad_files: BadFiles
    checkpoints: Checkpoints
    device: dict  # device_kind, device_count, backend
    init_from: dict | None = None  # Pretrained.record() of the weights built.state starts from
    # The train step for batches with padding rows, compiled on first need (see step_for).
    _padded_step: dict = dataclasses.field(default_factory=dict)

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.scope.mesh

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cfg.data.classes)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.workdir, "metrics.jsonl")

    def epoch_batches(self, epoch: int) -> Iterable:
        files = self.data.split["train"]
        rows = self.scope.rows(self.cfg.train.batch_size) if self.scope.multiprocess else None
        return train_batches(files, [self.data.durations.get(f.path, 0.0) for f in files],
                             self.loader, self.cfg.seed, epoch, on_bad_file=self.bad_files,
                             rows=rows)

    def step_for(self, weight: np.ndarray, state: TrainState) -> Callable:
        """The compiled train step for a batch with these weights: the plain one when every row
        is real; else the one that keeps the padding rows (unreadable files) out of batch-norm
        statistics, compiled the first time such a batch comes. Across processes the train step
        is always the latter: each process sees only its rows, and all must run one program."""
        if weight.all() or self.scope.multiprocess:
            step = self.train_step
        else:
            if not self._padded_step:
                self._padded_step["step"] = builder.compile_train_step(
                    self.built, state, self.mesh, padded=True)
                self.log(f"compiled the train step for batches with unreadable files in "
                         f"{self._padded_step['step'].compile_s:.2f}s")
            step = self._padded_step["step"]
        return _out_of_memory_hint(step.fn, "train step", "train.batch_size", step.batch_size)

    def score(self, state: TrainState, files: list) -> clip_scoring.Predictions:
        """Window and clip logits of ``files`` with the weights ``state`` evaluates. Across
        processes each scores a contiguous share of the files on its own devices, and every
        process gets everyone's predictions, in the order of ``files``."""
        scope = self.scope
        first, end = 0, len(files)
        if scope.multiprocess:
            state = parallel.put_replicated(parallel.to_host(state), self.eval_mesh)
            first = len(files) * scope.process_index // scope.process_count
            end = len(files) * (scope.process_index + 1) // scope.process_count
        logits = np.zeros((0, len(self.classes)), np.float32)
        clip = np.zeros(0, np.int32)
        if end > first:
            predict = builder.predictor(self.built, state, _out_of_memory_hint(
                self.eval_step.fn, "eval step", "train.eval_batch_size",
                self.eval_step.batch_size))
            shard = parallel.batch_sharding(self.eval_mesh)
            logits, clip = clip_scoring.predict_windows(
                predict, files[first:end], self.loader, self.eval_step.batch_size,
                put=lambda x: jax.device_put(x, shard), on_bad_file=self.bad_files)
            logits = logits.reshape(-1, len(self.classes))
        if scope.multiprocess:  # indices into ``files``, then everyone's windows in order
            clip = np.where(clip >= 0, clip + first, -1).astype(np.int32)
            logits = distributed.gather_rows(logits.astype(np.float32))
            clip = distributed.gather_rows(clip)
        return clip_scoring.assemble(files, logits, clip)


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """One epoch of training, as measured: sums over the real (weight > 0) crops."""

    loss_sum: float
    correct: float
    count: float
    step_times: list[float | None]  # the device's seconds per step (step_clock: busy)
    data_wait_s: float  # time spent waiting for the loader
    seconds: float  # the epoch's training, validation excluded
    device_idle_s: float = 0.0  # the device waiting for the host between steps


class _Diverged(Exception):
    """A non-finite loss or gradient at ``step``; ``step_times``: the epoch's steps until then."""

    def __init__(self, step: int, epoch: int, loss: float, step_times: list[float | None]):
        super().__init__(f"loss {loss} at step {step}")
        self.step, self.epoch, self.loss, self.step_times = step, epoch, loss, step_times


def fit(cfg: config_lib.ConfigDict, workdir: str, *, log: Log = print,
        overwrite: bool = False, stop_after: int | None = None,
        progress: bool | None = None, scope: parallel.Scope | None = None,
        host_memory: str | None = None) -> dict:
    """Train and test ``cfg`` in ``workdir``; return the summary (also in summary.json).

    ``overwrite`` replaces the workdir's run (never a folder holding anything else): it is
    checked first and removed only once the new start is known good. Nothing is written (no
    folder created, config.json included) before the config, the pretrained weights and the
    data (scanned and split) have been checked: a failed start leaves the workdir as it was.
    ``stop_after`` ends this call after that many epochs as if the process had been stopped
    (checkpoint written, no test, returns ``{"status": "interrupted"}``); the next call resumes.
    It exists for tests and for time-boxed jobs. ``progress`` shows a per-step progress bar
    (default: only when stderr is a terminal). ``scope``: the devices and processes of the run
    (default: every device; after ``jax.distributed`` started, those of every process, which
    must all call ``fit`` with the same arguments). ``host_memory``: the allocator policy in
    effect in this process (``host_memory.apply``'s answer), which the step times depend on;
    summary.json records it (the commands pass it; None: not recorded).
    """
    config_lib.validate(cfg)
    scope = scope or parallel.global_scope()
    if jax.process_count() > 1 and not scope.multiprocess:
        raise ValueError("fit: in a job of several processes a run spans all of them "
                         "(scope=parallel.global_scope())")
    if not scope.is_main:
        log, progress = _quiet, False
    workdir = os.path.abspath(workdir)
    # The pretrained weights are checked and read before anything is written or deleted; a run
    # with a checkpoint of its own resumes from that instead.
    start_from = (pretrained.load(cfg, [workdir], scope.mesh)
                  if pretrained.needed(cfg, workdir, overwrite) else None)
    if overwrite:  # refused now, deleting nothing; removed by setup once the start is good
        workdir_rules.check_removable(workdir)
    begin = (workdir_rules.Start.NEW if overwrite
             else workdir_rules.start(workdir, config_lib.to_dict(cfg)))
    if scope.multiprocess:  # everyone has read the workdir before process 0 writes to it
        distributed.barrier("fit-start")
    if begin is workdir_rules.Start.FINISHED:
        return report_finished(workdir, cfg, log)
    clock = SessionClock()
    run = setup(cfg, workdir, log, scope, start_from, replace=overwrite)
    if host_memory is not None:
        run = dataclasses.replace(run, device={**run.device, "host_memory": host_memory})
    state, loop_state = restore_or_init(run, begin, clock)
    records = (reporting.EpochRecords(run.metrics_path, os.path.join(workdir, "tensorboard"),
                                      log, monitor=cfg.train.early_stopping.monitor)
               if scope.is_main else None)
    step_times: list[float | None] = []
    first_epoch, last_epoch = loop_state.epoch + 1, cfg.train.epochs
    read_ahead: ReadAhead | None = None  # the next epoch's batches, started during validation
    try:
        for epoch in range(first_epoch, last_epoch + 1):
            t_epoch = time.perf_counter()
            batches = read_ahead or run.epoch_batches(epoch)
            state, stats = train_epoch(run, state, epoch, batches, progress)
            step_times += stats.step_times
            read_ahead = ReadAhead(run.epoch_batches(epoch + 1)) if epoch < last_epoch else None
            val = validate(run, state)
            loop_state, stop = record_epoch(run, records, state, loop_state, epoch, stats, val,
                                            epoch_s=time.perf_counter() - t_epoch, clock=clock)
            if stop_after is not None and epoch - first_epoch + 1 >= stop_after and not stop \
                    and epoch < last_epoch:
                log(f"stopping after epoch {epoch} as asked; run again to resume")
                return {"status": "interrupted", "epochs_run": epoch}
            if stop:
                break
    except _Diverged as d:
        finish(run, state, loop_state, step_times + d.step_times, resumed=begin, clock=clock,
               diverged=d)
        raise TrainingDiverged(
            f"the loss became {d.loss:g} at step {d.step} (epoch {d.epoch}); try a lower "
            f"optimizer.learning_rate (now {cfg.optimizer.learning_rate:g}) or gradient clipping "
            "(train.grad_clip_norm=1). "
            + (f"The last good checkpoint (epoch {loop_state.epoch}) is kept."
               if loop_state.epoch else "No checkpoint had been written yet.")) from None
    finally:
        if records is not None:
            records.close()
        if read_ahead is not None:
            read_ahead.close()
    return finish(run, state, loop_state, step_times, resumed=begin, clock=clock)


class SessionClock:
    """Wall time of this session (process) of a run, on top of the earlier sessions'."""

    def __init__(self) -> None:
        self.started_at = _now()
        self.before = 0.0  # earlier sessions' wall time, up to the checkpoint resumed from
        self._t0 = time.perf_counter()

    def total_s(self) -> float:
        return self.before + self.session_s()

    def session_s(self) -> float:
        return time.perf_counter() - self._t0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def interrupt_note(workdir: str) -> str:
    """What an interrupt now leaves of the run in ``workdir``, in one clause (read from the files,
    so it is true whatever the loop was doing)."""
    workdir = os.path.abspath(workdir)
    summary = workdir_rules.read_json(os.path.join(workdir, "summary.json")) or {}
    if summary.get("status") in ("completed", "stopped_early"):
        return f"the run in {workdir} had finished; its results are kept"
    last = Checkpoints.pointer(os.path.join(workdir, "checkpoints"), "last")
    if last is not None:
        return (f"the checkpoint of epoch {last['epoch']} in {workdir} is kept; run the same "
                "command to resume from it")
    if os.path.exists(os.path.join(workdir, "config.json")):
        return (f"no checkpoint had been written yet in {workdir}; the same command starts the "
                "run afresh")
    return "nothing was written"


def report_finished(workdir: str, cfg: config_lib.ConfigDict, log: Log) -> dict:
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    log(f"{workdir} holds a finished run (status {summary['status']}); its summary:")
    log(reporting.format_summary(summary, cfg.data.classes))
    return summary


def _quiet(_: str) -> None:
    """The log of every process but process 0 in a run over several."""


def setup(cfg: config_lib.ConfigDict, workdir: str, log: Log,
          scope: parallel.Scope | None = None,
          start_from: pretrained.Pretrained | None = None, *, replace: bool = False) -> Run:
    """Everything before the first epoch: devices, data, model and optimizer, compiled steps.
    ``start_from``: the pretrained weights of ``train.init_from`` (None: initialise with the
    seed; a resumed run then loads its own checkpoint over them). ``replace``: remove the
    workdir's run (--overwrite) and start afresh. The workdir is written to (config.json,
    split.csv) only once the data is scanned and split and fits the batch: a start that fails
    before then leaves it as it was."""
    scope = scope or parallel.global_scope()
    mesh = scope.mesh
    eval_mesh = parallel.local_scope().mesh if scope.multiprocess else mesh
    try:  # a config error, reported before anything is written
        parallel.check_divisible(cfg.train.batch_size, mesh, "train.batch_size")
        parallel.check_divisible(cfg.train.eval_batch_size, eval_mesh, "train.eval_batch_size")
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None
    resuming = not replace and os.path.exists(os.path.join(workdir, "config.json"))
    if cfg.note:
        log(f"note: {cfg.name}: {cfg.note}")
    device = timing.device_info()
    log(f"devices: {device['device_count']} x {device['device_kind']} ({device['backend']})"
        + (f" over {scope.process_count} processes" if scope.multiprocess else "")
        + f", jax {jax.__version__}")

    # Process 0 scans (making the built-in corpus if needed) and splits first, checks, then writes
    # the run's config.json and split.csv; the others then read the same split back.
    data = (prepare_data(cfg, workdir, log, resume=resuming, write=False) if scope.is_main
            else None)
    if scope.is_main:
        _check_batch(cfg, data)
        if replace:
            workdir_rules.remove_run(workdir)
        os.makedirs(workdir, exist_ok=True)
        atomic_write_json(os.path.join(workdir, "config.json"), config_lib.to_dict(cfg))
        split_path = os.path.join(workdir, "split.csv")
        if not (resuming and os.path.exists(split_path)):
            split_lib.write_split_csv(split_path, data.split, cfg.data.classes)
    if scope.multiprocess:
        distributed.barrier("fit-data")
        if not scope.is_main:
            data = prepare_data(cfg, workdir, log, resume=True)
    assert data is not None
    _check_batch(cfg, data)
    train_files = data.split["train"]
    # Augmentation, class weights / balanced sampling and the memory cache live in the loader.
    loader = make_loader_config(cfg, train_files, warn=log)
    if cfg.data.balance != "none":
        log(f"data: class balance by {cfg.data.balance}: "
            f"{balance_summary(loader, train_files, cfg.data.classes)}")

    built = builder.build(cfg, steps_per_epoch=len(train_files) // cfg.train.batch_size,
                          weights=start_from.weights if start_from else None)
    log(reporting.layer_table(built.state.params, built.layers))
    log(built.describe())
    if start_from is not None:
        log(f"starting from the weights of epoch {start_from.epoch} ({start_from.checkpoint} "
            f"checkpoint) of {start_from.workdir}; the optimizer, schedule and early stopping "
            "start afresh")
    state = parallel.put_replicated(built.state, mesh)
    train_step = builder.compile_train_step(built, state, mesh, padded=scope.multiprocess)
    eval_step = builder.compile_eval_step(built, built.state, eval_mesh)
    log(f"compiled train step in {train_step.compile_s:.2f}s, eval step in "
        f"{eval_step.compile_s:.2f}s (timings below exclude compilation)")
    return Run(cfg, workdir, log, data, loader, built, scope, train_step, eval_step, eval_mesh,
               BadFiles(cfg.data.on_error, log, data.errors),
               Checkpoints(workdir, mesh if scope.multiprocess else None),
               {**device, "process_count": scope.process_count},
               start_from.record() if start_from else None)


def _check_batch(cfg: config_lib.ConfigDict, data: PreparedData) -> None:
    if len(data.split["train"]) < cfg.train.batch_size:
        raise DataError(f"train.batch_size: {cfg.train.batch_size} is more than the "
                        f"{len(data.split['train'])} training files")


def restore_or_init(run: Run, begin: workdir_rules.Start,
                    clock: SessionClock) -> tuple[TrainState, LoopState]:
    """The initial state, or the last checkpoint's when resuming or extending a finished run;
    metrics.jsonl is cut back to the epochs that checkpoint holds (a kill between the two writes
    leaves one more line). ``clock`` learns the earlier sessions' wall time."""
    state = run.built.state
    loop_state = LoopState(started_at=clock.started_at, init_from=run.init_from)
    last = run.checkpoints.last() if begin is not workdir_rules.Start.NEW else None
    if last is not None:
        state, record = run.checkpoints.restore(last, state)
        loop_state = LoopState.from_json({"started_at": clock.started_at, **record})
        run.log(f"resuming from the checkpoint of epoch {loop_state.epoch}")
    if begin is workdir_rules.Start.EXTEND:
        run.log(f"continuing the finished run from epoch {loop_state.epoch} to epoch "
                f"{run.cfg.train.epochs}; the learning-rate schedule now spans "
                f"{run.cfg.train.epochs} epochs")
        loop_state = dataclasses.replace(loop_state, stopped_early=False, bad_epochs=0)
    clock.before = loop_state.wall_time_s
    if run.scope.is_main:
        rows = [r for r in read_jsonl(run.metrics_path) if r.get("epoch", 0) <= loop_state.epoch]
        write_jsonl(run.metrics_path, rows)
    return parallel.put_replicated(state, run.mesh), loop_state


def train_epoch(run: Run, state: TrainState, epoch: int, batches: Iterable,
                progress: bool | None = None) -> tuple[TrainState, EpochStats]:
    """One epoch of steps; raises _Diverged at the first non-finite loss or gradient norm.

    Each step's metrics are fetched after the next step is dispatched, so the device never
    waits for the host to read them; a non-finite loss is seen one step late (that step's
    update is thrown away with the rest: the run stops, keeping its last checkpoint). Step
    times and the device's idle time come from :class:`StepClock`, which does not block."""
    key = jax.random.key(run.cfg.seed)
    steps_per_epoch = run.built.steps_per_epoch
    sums = np.zeros(3)
    wait = 0.0
    bar = reporting.ProgressBar(steps_per_epoch, epoch, enabled=progress)
    clock = StepClock()
    pending = None  # the metrics of the step before the one just dispatched

    def take(m: dict) -> None:
        m = parallel.to_host(m)  # waits for that step only
        loss = float(m["loss_sum"]) / max(float(m["count"]), 1.0)
        bar.step(loss)
        if not (math.isfinite(float(m["loss_sum"])) and math.isfinite(float(m["grad_norm"]))):
            bar.close()
            busy, _ = clock.close()  # the step after the diverged one ran too: not counted
            raise _Diverged((epoch - 1) * steps_per_epoch + bar.done, epoch, loss,
                            busy[: bar.done])
        sums[:] += (float(m["loss_sum"]), float(m["correct"]), float(m["count"]))

    t_epoch = t_wait = time.perf_counter()
    try:
        for batch in batches:
            x, y, w = parallel.put_batch((batch.x, batch.y, batch.weight), run.mesh)
            wait += time.perf_counter() - t_wait
            step = run.step_for(batch.weight, state)  # may compile, before the clock starts
            submitted = clock.submit()
            state, m = step(state, x, y, w, key)
            clock.dispatched(m, submitted)
            if pending is not None:
                take(pending)
            pending = m
            t_wait = time.perf_counter()
        if pending is not None:
            take(pending)
    finally:
        busy, idle = clock.close()
    bar.close()
    return state, EpochStats(*sums, busy, wait, time.perf_counter() - t_epoch, idle)


def validate(run: Run, state: TrainState) -> dict:
    """Clip-level report on the validation split (window level under ``window``)."""
    return clip_scoring.report(run.score(state, run.data.split["val"]), run.classes)


def record_epoch(run: Run, records: reporting.EpochRecords | None, state: TrainState,
                 loop_state: LoopState, epoch: int, stats: EpochStats, val: dict, *,
                 epoch_s: float, clock: SessionClock) -> tuple[LoopState, bool]:
    """Write the epoch's records, then its checkpoint; return (loop state, stop now).
    ``epoch_s``: the epoch's wall time, validation included."""
    es = run.cfg.train.early_stopping
    steps_per_epoch = run.built.steps_per_epoch
    row = {
        "epoch": epoch,
        "train_loss": stats.loss_sum / max(stats.count, 1),
        "train_accuracy": stats.correct / max(stats.count, 1),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_f1": val["f1"]["macro"],
        "val_window_loss": val["window"]["loss"],
        "val_window_accuracy": val["window"]["accuracy"],
        "learning_rate": float(run.built.schedule(epoch * steps_per_epoch - 1))
        * optim.lr_scale(state.opt_state),
        "epoch_time_s": epoch_s,
        "train_time_s": stats.seconds,
        "examples_per_s": stats.count / stats.seconds if stats.seconds > 0 else None,
        "data_wait_s": stats.data_wait_s,
        "device_idle_s": stats.device_idle_s,
        "device_idle_share": stats.device_idle_s / stats.seconds if stats.seconds > 0 else None,
    }
    mode = config_lib.MONITORS[es.monitor] if es.mode == "auto" else es.mode
    loop_state, improved, stop = early_stopping_update(
        dataclasses.replace(loop_state, train_time_s=loop_state.train_time_s + stats.seconds),
        epoch, row[es.monitor], mode=mode, patience=es.patience, min_delta=es.min_delta)
    last_epoch = epoch >= run.cfg.train.epochs
    loop_state = dataclasses.replace(loop_state, stopped_early=stop and not last_epoch,
                                     wall_time_s=clock.total_s())
    # Records of the epoch first, then the checkpoint: a kill in between is cut back (or, in
    # TensorBoard, overwritten by the same step) on resume. Only process 0 keeps records.
    if records is not None:
        records.write(row, improved)
    run.checkpoints.save(epoch, state, dataclasses.asdict(loop_state),
                         best={"monitor": es.monitor, "value": row[es.monitor]} if improved
                         else None)
    if loop_state.stopped_early:
        run.log(f"early stopping: {es.monitor} has not improved for {es.patience} epochs "
                f"(best {loop_state.best_value:.4f} at epoch {loop_state.best_epoch})")
    return loop_state, stop


def early_stopping_update(loop_state: LoopState, epoch: int, value: float, *, mode: str,
                          patience: int, min_delta: float) -> tuple[LoopState, bool, bool]:
    """Fold one epoch's monitored value into the loop state: (state, improved, stop).

    An epoch improves when it beats the best so far by more than ``min_delta`` (lower for mode
    'min', higher for 'max'); training stops after ``patience`` epochs without improvement
    (``patience`` 0: never).
    """
    best = loop_state.best_value
    sign = 1.0 if mode == "min" else -1.0
    improved = best is None or sign * (best - value) > min_delta
    if improved:
        loop_state = dataclasses.replace(loop_state, epoch=epoch, best_value=value,
                                         best_epoch=epoch, bad_epochs=0)
    else:
        loop_state = dataclasses.replace(loop_state, epoch=epoch,
                                         bad_epochs=loop_state.bad_epochs + 1)
    return loop_state, improved, patience > 0 and loop_state.bad_epochs >= patience


def finish(run: Run, state: TrainState, loop_state: LoopState,
           step_times: list[float | None], *,
           resumed: workdir_rules.Start, clock: SessionClock,
           diverged: _Diverged | None = None) -> dict:
    """Test the best weights (or the last, with restore_best off), time inference, and write
    summary.json and curves.png. A diverged run is not tested; its summary has the same keys,
    with what was measured up to the divergence."""
    cfg, es = run.cfg, run.cfg.train.early_stopping
    status = ("diverged" if diverged else
              "stopped_early" if loop_state.stopped_early else "completed")
    test, inference = None, None
    tested = config_lib.tested_checkpoint(cfg)
    pointer = run.checkpoints.best() if tested == "best" else run.checkpoints.last()
    if diverged is None:
        host_state, _ = run.checkpoints.restore(pointer, parallel.to_host(state))
        state = parallel.put_replicated(host_state, run.mesh)
        weights = ("the moving average of the weights at" if run.cfg.train.ema_epochs > 0
                   else "the weights of")
        run.log(f"testing {weights} epoch {pointer['epoch']} "
                f"({'best ' + es.monitor if es.restore_best else 'last epoch'})")
        if run.data.split["test"]:
            pred = run.score(state, run.data.split["test"])
            test = clip_scoring.report(pred, run.classes)
            if run.scope.is_main:
                reporting.write_predictions(os.path.join(run.workdir, "test_predictions.csv"),
                                            pred, run.classes)
        inference = _inference_speed(run, state)
    peak, peak_kind = timing.peak_memory()
    summary = {
        "status": status,
        "best_epoch": loop_state.best_epoch,
        "tested_epoch": pointer["epoch"] if diverged is None else None,
        "epochs_run": loop_state.epoch,
        "seed": cfg.seed,
        "init_from": loop_state.init_from,
        "test": test,
        "params_trainable": run.built.params_trainable,
        "params_total": run.built.params_total,
        "flops_per_example": run.eval_step.flops_per_example,
        "train_step_flops_per_example": run.train_step.flops_per_example,
        "compile_time_s": run.train_step.compile_s,
        "step_time_ms": timing.summarize_ms(step_times),
        "step_time_note": "train step only, compilation excluded: the device's time per step "
                          "(between completions; the loop never waits for a step); n: this "
                          "session's steps"
                          + (" (after resume)" if resumed is not workdir_rules.Start.NEW else "")
                          + "; median, min and max over the timed ones (timed), leaving out each "
                          "pair of steps whose completions the timing thread saw together (their "
                          "split unknown)",
        "train_time_s": loop_state.train_time_s,
        "started_at": loop_state.started_at,
        "finished_at": _now(),
        "wall_time_s": clock.total_s(),
        "wall_time_note": "from the start of the run's first session to the end of this one, "
                          "summed over sessions (the time between a kill and a restart, and "
                          "after a session's last checkpoint, not counted)",
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "inference": inference,
        "checkpoint_bytes": run.checkpoints.size_bytes(pointer) if pointer else None,
        "weight_decay_semantics": optim.weight_decay_semantics(
            cfg.optimizer.name, cfg.optimizer.weight_decay_mask),
        "balance": balance_summary(run.loader, run.data.split["train"], run.classes),
        "data_errors": _all_processes_counts(run),
        "n_files": {name: len(files) for name, files in run.data.split.items()},
        **run.device,
        "versions": timing.versions(),
    }
    if diverged is not None:
        summary.update(diverged_at_step=diverged.step, diverged_in_epoch=diverged.epoch)
    if not run.scope.is_main:
        return summary
    atomic_write_json(os.path.join(run.workdir, "summary.json"), summary)
    try:
        from speechmusic_jax import plots

        plots.curves(read_jsonl(run.metrics_path), os.path.join(run.workdir, "curves.png"),
                     best_epoch=loop_state.best_epoch)
    except Exception as e:  # a plot must never cost the run
        run.log(f"warning: could not draw curves.png ({e})")
    if diverged is None:
        run.log(reporting.format_summary(summary, run.classes))
        if cfg.note:
            run.log(f"note: {cfg.name}: {cfg.note}")
    return summary


def _all_processes_counts(run: Run) -> dict[str, int]:
    """The data-error counts of every process (each reads its own share of the files)."""
    total: collections.Counter = collections.Counter()
    for counts in distributed.gather_objects(dict(run.bad_files.counts), run.scope.multiprocess):
        total.update(counts)
    return dict(total)


def _inference_speed(run: Run, state: TrainState) -> dict:
    """Windows per second of the tested weights at the eval batch size, and batch-1 latency
    (across processes: of one process, on its own devices)."""
    if run.scope.multiprocess:
        state = jax.device_put(parallel.to_host(state), jax.local_devices()[0])
    predict = builder.predictor(run.built, state)  # compiles for each of the two batch shapes
    probe_x = np.random.default_rng(0).standard_normal(
        (run.cfg.train.eval_batch_size, run.built.segment)).astype(np.float32) * 0.1
    return timing.inference_speed(predict, probe_x, run.cfg.data.sample_rate)


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
