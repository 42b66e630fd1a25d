"""fit(): train and test one config in one workdir, or a stack of trials, each in its own.

    fit = setup                       workdir rules, data, model + optimizer, compiled steps, resume
          then, for each epoch:
            train_epoch               the epoch's batches through the compiled train step,
                                      pausing at evaluation points (train.eval_every_steps)
            validate                  clip-level report on the validation split
            record_epoch              metrics.jsonl, TensorBoard, table, then the checkpoint
          until the epochs are done or early stopping says stop, then
          finish                      test the best weights, time inference, summary.json, curves

AlgoPerf's clock: every validation is an evaluation point, a line of ``evals.jsonl`` (epoch, step,
training seconds so far: compilation and evaluation excluded, validation metrics). With
``train.eval_every_steps`` > 0 the epoch also stops for one after every that many steps (its
training clock stopped meanwhile), so time to target is measured finer than an epoch. A point
that meets the target (``train.target_metric``/``train.target_value``) under
``train.stop_at_target``, or finds ``train.max_seconds`` of training spent, stops the run there:
its last epoch's row then covers the steps up to the point, it is checkpointed and tested as
usual, and summary.json says why (``stopped_by``) and whether the budget was spent.

The loop owns every file in the workdir and writes each one atomically; everything it prints was
measured in this run. Its state between epochs is a :class:`LoopState`, saved with each
checkpoint, so a killed run resumes where its last checkpoint left it.

Given several configs (a sweep's group: configs equal but for traced hyperparameters, see
``builder.group_key``) the same loop trains them as one compiled program, their states stacked
on a leading trial axis (:mod:`training.stack`; one config has no trial axis). Each trial has
its own :class:`LoopState` (epoch, best epoch, early-stopping counter), is frozen when it stops
early, meets its target, spends its budget or diverges while the others go on, and writes into
its own folder exactly what it would write alone (summary.json adds ``grouped``: the group's
size and mode), its best and last checkpoints included, in a run alone's layout. A killed group
resumes from its trials' own checkpoints, each at its own epoch. A grouped trial's training
times are those of its own steps at the step time of its program measured alone
(``stack.calibrate``), plus the epoch's time outside the steps (data waits): what it would
report alone; the group's own figures are in ``grouped``.

Across processes (:mod:`speechmusic_jax.distributed`; the workdir on a file system they all
see) every process runs this same loop over a mesh of all their devices: each reads only its
rows of every batch (the epoch's plan is the same everywhere), scores its share of the
evaluation files on its own devices and gathers everyone's predictions, so every process holds
the same metrics and takes the same early-stopping decisions. Process 0 alone prints and writes
the run's files; checkpoints are written by orbax from every process. (A stack of trials runs
in one process.)
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence

import jax
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax import distributed, parallel, timing
from speechmusic_jax.data import device_cache
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.pipeline import (
    LoaderConfig,
    ReadAhead,
    balance_summary,
    make_loader_config,
)
from speechmusic_jax.data.prepare import BadFiles, PreparedData, prepare_data
from speechmusic_jax.errors import DataError, DeviceOutOfMemory, TrainingDiverged
from speechmusic_jax.io_utils import append_jsonl, atomic_write_json, read_jsonl, write_jsonl
from speechmusic_jax.training import builder, clip_scoring, feed, optim, pretrained, reporting
from speechmusic_jax.training import stack as stack_lib
from speechmusic_jax.training import workdir as workdir_rules
from speechmusic_jax.training.checkpoints import Checkpoints
from speechmusic_jax.training.step import TrainState
from speechmusic_jax.training.step_clock import StepClock

Log = Callable[[str], None]
EVALS = "evals.jsonl"  # one line per evaluation point (AlgoPerf's clock)


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
    group_train_time_s: float | None = None  # a grouped trial: its group's training seconds
    stopped_by: str | None = None  # why it stopped early: early_stopping, target, max_seconds
    over_budget: bool = False  # an evaluation point found train.max_seconds spent
    target_step: int | None = None  # the first evaluation point that met the target: its step
    target_seconds: float | None = None  # ... and the training seconds up to it
    steps_run: int | None = None  # train steps over every epoch run (None: not known)

    @classmethod
    def from_json(cls, record: dict) -> LoopState:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


@dataclasses.dataclass(frozen=True)
class Trial:
    """One trial of a run: its config, folder, network (initial weights, schedule), checkpoints
    and log. A run alone is one trial."""

    cfg: config_lib.ConfigDict
    workdir: str
    built: builder.Built
    checkpoints: Checkpoints
    log: Log

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.workdir, "metrics.jsonl")

    @property
    def evals_path(self) -> str:
        return os.path.join(self.workdir, EVALS)


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run holds fixed from its first epoch to its last. ``cfg``, ``workdir``,
    ``built`` and ``checkpoints`` are the first trial's (the only one's, alone)."""

    cfg: config_lib.ConfigDict
    workdir: str
    log: Log
    data: PreparedData
    loader: LoaderConfig
    built: builder.Built
    scope: parallel.Scope
    train_step: builder.Compiled  # a stack's: the group's step
    eval_step: builder.Compiled  # compiled for eval_mesh (a stack: for its FLOPs alone)
    eval_mesh: jax.sharding.Mesh  # the run's mesh; this process's devices when it spans several
    bad_files: BadFiles
    checkpoints: Checkpoints
    device: dict  # device_kind, device_count, backend
    init_from: dict | None = None  # Pretrained.record() of the weights built.state starts from
    trials: tuple[Trial, ...] = ()
    stack: stack_lib.Stack | None = None  # None: one trial, no trial axis
    feed: feed.Feed | None = None  # host batches -> the step's inputs (crop, augment on device)
    # The train step for batches with padding rows, compiled on first need (see step_for).
    _padded_step: dict = dataclasses.field(default_factory=dict)

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.scope.mesh

    @property
    def size(self) -> int:
        return len(self.trials)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cfg.data.classes)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.workdir, "metrics.jsonl")

    def epoch_batches(self, epoch: int) -> Iterable:
        files = self.data.split["train"]
        rows = self.scope.rows(self.cfg.train.batch_size) if self.scope.multiprocess else None
        assert self.feed is not None
        return self.feed.batches(files, [self.data.durations.get(f.path, 0.0) for f in files],
                                 self.cfg.seed, epoch, on_bad_file=self.bad_files, rows=rows)

    def step_for(self, weight: np.ndarray, state: TrainState) -> Callable:
        """The compiled train step for a batch with these weights: the plain one when every row
        is real; else the one that keeps the padding rows (unreadable files) out of batch-norm
        statistics, compiled the first time such a batch comes. Across processes the train step
        is always the latter: each process sees only its rows, and all must run one program."""
        if weight.all() or self.scope.multiprocess:
            step = self.train_step
        else:
            if not self._padded_step:
                self._padded_step["step"] = (
                    builder.compile_train_step(self.built, state, self.mesh, padded=True)
                    if self.stack is None else self.stack.step_for(True, state))
                self.log(f"compiled the train step for batches with unreadable files in "
                         f"{self._padded_step['step'].compile_s:.2f}s")
            step = self._padded_step["step"]
        return _out_of_memory_hint(step.fn, "train step", "train.batch_size", step.batch_size)

    def trial_states(self, state: TrainState) -> list[TrainState]:
        """Each trial's state in a run alone's layout (alone: ``state`` itself)."""
        return [state] if self.stack is None else self.stack.trial_states(state)

    def trial_seconds(self, i: int, stats: EpochStats) -> float:
        """Trial ``i``'s training seconds in an epoch: the epoch's, alone; in a stack, its steps
        at its program's step time alone plus the epoch's time outside the group's steps."""
        if self.stack is None:
            return stats.seconds
        timed = [t for t in stats.step_times if t is not None]
        typical = float(np.median(timed)) if timed else 0.0  # for a step the clock did not time
        busy = sum(typical if t is None else t for t in stats.step_times)
        outside = max(0.0, stats.seconds - busy)
        return outside + len(stats.step_times) * self.stack.alone[i].step_s

    def score(self, state: TrainState, files: list) -> list[clip_scoring.Predictions]:
        """Per trial, window and clip logits of ``files`` with the weights ``state`` evaluates.
        Across processes each scores a contiguous share of the files on its own devices, and
        every process gets everyone's predictions, in the order of ``files``."""
        scope = self.scope
        first, end = 0, len(files)
        if scope.multiprocess:
            state = parallel.put_replicated(parallel.to_host(state), self.eval_mesh)
            first = len(files) * scope.process_index // scope.process_count
            end = len(files) * (scope.process_index + 1) // scope.process_count
        width = len(self.classes) * self.size
        logits = np.zeros((0, width), np.float32)
        clip = np.zeros(0, np.int32)
        if end > first:
            if self.stack is None:
                predict = builder.predictor(self.built, state, _out_of_memory_hint(
                    self.eval_step.fn, "eval step", "train.eval_batch_size",
                    self.eval_step.batch_size))
            else:
                evaluate = _out_of_memory_hint(self.stack.evaluate, "eval step",
                                               "train.eval_batch_size",
                                               self.cfg.train.eval_batch_size)

                def predict(x):
                    return evaluate(state, x)

            shard = parallel.batch_sharding(self.eval_mesh)
            logits, clip = clip_scoring.predict_windows(
                predict, files[first:end], self.loader, self.eval_step.batch_size,
                put=lambda x: jax.device_put(x, shard), on_bad_file=self.bad_files)
            logits = logits.reshape(-1, width)
        if scope.multiprocess:  # indices into ``files``, then everyone's windows in order
            clip = np.where(clip >= 0, clip + first, -1).astype(np.int32)
            logits = distributed.gather_rows(logits.astype(np.float32))
            clip = distributed.gather_rows(clip)
        if self.stack is not None:
            return self.stack.split(logits, files, clip, len(self.classes))
        return [clip_scoring.assemble(files, logits, clip)]


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """One epoch of training, as measured: per trial, sums over the real (weight > 0) crops."""

    loss_sum: np.ndarray  # (trials,)
    correct: np.ndarray  # (trials,)
    count: np.ndarray  # (trials,)
    step_times: list[float | None]  # the device's seconds per step (step_clock: busy)
    data_wait_s: float  # time spent waiting for the loader
    seconds: float  # the epoch's training, validation excluded
    device_idle_s: float = 0.0  # the device waiting for the host between steps
    diverged: dict = dataclasses.field(default_factory=dict)  # trial -> Divergence


@dataclasses.dataclass(frozen=True)
class PointStop:
    """A trial stopped at an evaluation point inside an epoch: why (``target`` or
    ``max_seconds``), at which step of the run, after how many training seconds of the epoch."""

    reason: str
    step: int
    epoch_seconds: float


# on_point(state, steps done in the epoch, the epoch's stats so far, the trials still training)
# -> the trials to stop there (see train_epoch)
PointHook = Callable[[TrainState, int, "EpochStats", np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Divergence:
    """A non-finite loss or gradient of a trial at ``step`` (in ``epoch``)."""

    step: int
    epoch: int
    loss: float


def fit(cfg: config_lib.ConfigDict | Sequence[config_lib.ConfigDict],
        workdir: str | Sequence[str], *, log: Log = print, overwrite: bool = False,
        stop_after: int | None = None, progress: bool | None = None,
        scope: parallel.Scope | None = None, host_memory: str | None = None,
        strategy: str = "vmap", trial_axis: int | None = None) -> dict | list[dict]:
    """Train and test ``cfg`` in ``workdir``; return the summary (also in summary.json). Given
    a list of configs (equal ``builder.group_key``) and one workdir each, train them as one
    stack (``strategy``: vmap or map; ``trial_axis``: see ``parallel.group_mesh``) and return
    their summaries; a trial that diverges is reported so, where one alone raises.

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
    alone = isinstance(workdir, str | os.PathLike)
    cfgs, workdirs = _trial_lists(cfg, workdir)
    scope = _check_scope(cfgs, scope)
    if not scope.is_main:
        log, progress = _quiet, False
    begins, start_from = _begin(cfgs, workdirs, scope, overwrite)
    finished = [i for i, b in enumerate(begins) if b is workdir_rules.Start.FINISHED]
    if finished:
        return _report_finished(cfgs, workdirs, finished, log, alone, overwrite=overwrite,
                                stop_after=stop_after, progress=progress, scope=scope,
                                host_memory=host_memory, strategy=strategy,
                                trial_axis=trial_axis)
    clock = SessionClock()
    run = setup(cfgs, workdirs, log, scope, start_from, replace=overwrite, strategy=strategy,
                trial_axis=trial_axis)
    if host_memory is not None:
        run = dataclasses.replace(run, device={**run.device, "host_memory": host_memory})
    state, loops = restore_or_init(run, begins, clock)
    records = [reporting.EpochRecords(t.metrics_path, os.path.join(t.workdir, "tensorboard"),
                                      t.log, monitor=t.cfg.train.early_stopping.monitor)
               if scope.is_main else None for t in run.trials]
    step_times: list[float | None] = []
    diverged: dict[int, Divergence] = {}
    last_epoch = cfgs[0].train.epochs
    first_epoch = min([lp.epoch + 1 for lp in loops if not lp.stopped_early] or [last_epoch + 1])
    read_ahead: ReadAhead | None = None  # the next epoch's batches, started during validation
    try:
        for epoch in range(first_epoch, last_epoch + 1):
            active = _active(loops, diverged, epoch)
            if not active.any():
                break
            t_epoch = time.perf_counter()
            batches = read_ahead or run.epoch_batches(epoch)
            stops: dict[int, PointStop] = {}  # trials stopped at a point inside the epoch

            def on_point(state, done, stats, running, epoch=epoch, stops=stops, loops=loops):
                stop, loops[:] = evaluation_point(run, records, state, loops, epoch, done,
                                                  stats, running, stops)  # in place
                return stop

            state, stats = train_epoch(run, state, epoch, batches, progress, active=active,
                                       on_point=on_point if _points(cfgs) else None)
            step_times += stats.step_times
            diverged.update(stats.diverged)
            trained = active & ~_mask(run.size, diverged)
            if not trained.any():
                break
            read_ahead = (ReadAhead(run.epoch_batches(epoch + 1))
                          if epoch < last_epoch and len(stops) < trained.sum() else None)
            vals = validate(run, state, trained)
            loops = record_epoch(run, records, state, loops, epoch, stats, vals, trained,
                                 epoch_s=time.perf_counter() - t_epoch, clock=clock,
                                 stops=stops)
            going = _active(loops, diverged, epoch + 1).any()
            if stop_after is not None and epoch - first_epoch + 1 >= stop_after and going \
                    and epoch < last_epoch:
                log(f"stopping after epoch {epoch} as asked; run again to resume")
                return {"status": "interrupted", "epochs_run": epoch}
    finally:
        for r in records:
            if r is not None:
                r.close()
        if read_ahead is not None:
            read_ahead.close()
    summaries = finish(run, state, loops, step_times, resumed=begins, clock=clock,
                       diverged=diverged)
    if alone and diverged:
        raise _diverged_error(cfgs[0], diverged[0], loops[0])
    return summaries[0] if alone else summaries


def _trial_lists(cfg, workdir) -> tuple[list, list[str]]:
    """(configs, absolute workdirs) of one run or of a stack of trials."""
    if isinstance(workdir, str | os.PathLike):
        return [cfg], [os.path.abspath(workdir)]
    cfgs, workdirs = list(cfg), [os.path.abspath(w) for w in workdir]
    if len(cfgs) != len(workdirs) or not cfgs:
        raise ValueError("fit: one workdir per config")
    if len(set(workdirs)) != len(workdirs):
        raise ValueError("fit: every trial needs a workdir of its own")
    return cfgs, workdirs


def _check_scope(cfgs: list, scope: parallel.Scope | None) -> parallel.Scope:
    for c in cfgs:
        config_lib.validate(c)
    scope = scope or parallel.global_scope()
    if jax.process_count() > 1 and not scope.multiprocess:
        raise ValueError("fit: in a job of several processes a run spans all of them "
                         "(scope=parallel.global_scope())")
    if len(cfgs) > 1 and scope.multiprocess:
        raise ValueError("fit: a stack of trials trains in one process")
    return scope


def _begin(cfgs: list, workdirs: list[str], scope: parallel.Scope,
           overwrite: bool) -> tuple[list[workdir_rules.Start], pretrained.Pretrained | None]:
    """How each trial begins (``workdir.start``; NEW for all with ``overwrite``, whose runs are
    only checked here, deleting nothing, and removed by ``setup`` once the start is good), and
    the pretrained weights of ``train.init_from`` (checked and read before anything is written
    or deleted; a run with a checkpoint of its own resumes from that instead; the trials of a
    stack share ``train.init_from``, part of the group key)."""
    start_from = (pretrained.load(cfgs[0], workdirs, scope.mesh)
                  if any(pretrained.needed(c, w, overwrite) for c, w in zip(cfgs, workdirs,
                                                                          strict=True))
                  else None)
    if overwrite:  # refused now, deleting nothing; removed by setup once the start is good
        for w in workdirs:
            workdir_rules.check_removable(w)
    begins = [workdir_rules.Start.NEW if overwrite
              else workdir_rules.start(w, config_lib.to_dict(c))
              for c, w in zip(cfgs, workdirs, strict=True)]
    if scope.multiprocess:  # everyone has read the workdir before process 0 writes to it
        distributed.barrier("fit-start")
    return begins, start_from


def _report_finished(cfgs: list, workdirs: list[str], finished: list[int], log: Log,
                     alone: bool, **fit_args) -> dict | list[dict]:
    """The summaries of the finished trials, read back; the others trained as a stack."""
    reports = {i: report_finished(workdirs[i], cfgs[i], log) for i in finished}
    rest = [i for i in range(len(cfgs)) if i not in reports]
    if alone:
        return reports[0]
    if rest:
        trained = fit([cfgs[i] for i in rest], [workdirs[i] for i in rest], log=log, **fit_args)
        if isinstance(trained, dict):  # interrupted
            return trained
        reports.update(zip(rest, trained, strict=True))
    return [reports[i] for i in range(len(cfgs))]


def _active(loops: list[LoopState], diverged: dict, epoch: int) -> np.ndarray:
    """The trials that train in ``epoch``: not stopped, not diverged, not past it already (a
    resumed trial whose checkpoint is ahead of the others waits for them)."""
    return np.asarray([i not in diverged and not lp.stopped_early and lp.epoch < epoch
                       for i, lp in enumerate(loops)], bool)


def _points(cfgs: list) -> bool:
    """Whether the run evaluates inside epochs (train.eval_every_steps; a stack's trials share
    it, part of the group key)."""
    return cfgs[0].train.eval_every_steps > 0


def evaluation_point(run: Run, records: Sequence, state: TrainState, loops: list[LoopState],
                     epoch: int, done: int, stats: EpochStats, running: np.ndarray,
                     stops: dict[int, PointStop]) -> tuple[np.ndarray, list[LoopState]]:
    """An evaluation point inside ``epoch``, ``done`` steps into it: validate the ``running``
    trials, write each one's point to its evals.jsonl (process 0) and note those to stop there
    (into ``stops``); return (the trials to stop, the loop states)."""
    loops = list(loops)
    vals = validate(run, state, running)
    stop = np.zeros(run.size, bool)
    step = (epoch - 1) * run.built.steps_per_epoch + done
    for i in np.flatnonzero(running):
        seconds = run.trial_seconds(i, stats)
        row = {"epoch": epoch, "step": step,
               "train_time_s": _agreed(run, loops[i].train_time_s + seconds),
               **_val_fields(vals[i])}
        loops[i], reason = _fold_point(run.trials[i], loops[i], row, records[i] is not None)
        if reason is not None:
            stop[i] = True
            stops[int(i)] = PointStop(reason, step, seconds)
    return stop, loops


def _agreed(run: Run, seconds: float) -> float:
    """Training seconds every process agrees on (the slowest's), so that each takes the same
    budget decision; alone in its process, ``seconds``."""
    return max(distributed.gather_objects(seconds, run.scope.multiprocess))


def _val_fields(val: dict) -> dict:
    """A validation report's columns in metrics.jsonl and evals.jsonl."""
    return {"val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "val_f1": val["f1"]["macro"], "val_window_loss": val["window"]["loss"],
            "val_window_accuracy": val["window"]["accuracy"]}


def _fold_point(trial: Trial, loop_state: LoopState, row: dict,
                write: bool) -> tuple[LoopState, str | None]:
    """Record one evaluation point of ``trial`` (``write``: in its evals.jsonl) and fold it into
    its loop state: (state, why to stop here: ``max_seconds`` when the point finds the
    training budget spent, ``target`` when it meets the target under train.stop_at_target; else
    None). A target met after the budget was spent does not count (AlgoPerf)."""
    if write:
        append_jsonl(trial.evals_path, row)
    train = trial.cfg.train
    target = config_lib.target(trial.cfg)
    seconds = row["train_time_s"]
    if train.max_seconds > 0 and seconds > train.max_seconds:
        trial.log(f"stopping at step {row['step']}: {seconds:.1f}s of training, over the "
                  f"budget train.max_seconds={train.max_seconds:g} (time to target: infinity)")
        return dataclasses.replace(loop_state, over_budget=True), "max_seconds"
    if target is None or not config_lib.meets_target(row[target[0]], target):
        return loop_state, None
    if loop_state.target_step is None:
        loop_state = dataclasses.replace(loop_state, target_step=row["step"],
                                         target_seconds=seconds)
    if not train.stop_at_target:
        return loop_state, None
    trial.log(f"stopping at step {row['step']}: {target[0]} {row[target[0]]:.4f} meets the "
              f"target {target[1]:g} after {seconds:.1f}s of training (train.stop_at_target)")
    return loop_state, "target"


def _mask(size: int, indices: Iterable[int]) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[list(indices)] = True
    return mask


def _diverged_error(cfg: config_lib.ConfigDict, d: Divergence,
                    loop_state: LoopState) -> TrainingDiverged:
    return TrainingDiverged(
        f"the loss became {d.loss:g} at step {d.step} (epoch {d.epoch}); try a lower "
        f"optimizer.learning_rate (now {cfg.optimizer.learning_rate:g}) or gradient clipping "
        "(train.grad_clip_norm=1). "
        + (f"The last good checkpoint (epoch {loop_state.epoch}) is kept."
           if loop_state.epoch else "No checkpoint had been written yet."))


class SessionClock:
    """Wall time of this session (process) of a run, on top of the earlier sessions'."""

    def __init__(self) -> None:
        self.started_at = _now()
        # per trial, earlier sessions' wall time, up to the checkpoint it resumed from
        self.before: list[float] = []
        self._t0 = time.perf_counter()

    def total_s(self, trial: int = 0) -> float:
        before = self.before[trial] if trial < len(self.before) else 0.0
        return before + self.session_s()

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


def setup(cfg: config_lib.ConfigDict | Sequence[config_lib.ConfigDict],
          workdir: str | Sequence[str], log: Log, scope: parallel.Scope | None = None,
          start_from: pretrained.Pretrained | None = None, *, replace: bool = False,
          strategy: str = "vmap", trial_axis: int | None = None) -> Run:
    """Everything before the first epoch: devices, data, model and optimizer, compiled steps.
    ``start_from``: the pretrained weights of ``train.init_from`` (None: initialise with the
    seed; a resumed run then loads its own checkpoint over them). ``replace``: remove each
    workdir's run (--overwrite) and start afresh. The workdirs are written to (config.json,
    split.csv) only once the data is scanned and split and fits the batch: a start that fails
    before then leaves them as they were. Several configs and workdirs: a stack of trials (see
    ``fit``)."""
    cfgs, workdirs = _trial_lists(cfg, workdir)
    cfg, workdir = cfgs[0], workdirs[0]
    scope = scope or parallel.global_scope()
    try:  # a config error, reported before anything is written
        if len(cfgs) > 1:
            scope = parallel.Scope(parallel.group_mesh(
                len(cfgs), trial_axis=trial_axis if strategy == "vmap" else 1), 0, 1)
        mesh = scope.mesh
        eval_mesh = parallel.local_scope().mesh if scope.multiprocess else mesh
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
        for c, w in zip(cfgs, workdirs, strict=True):  # a stack's trials share the split
            _write_start(c, w, data, replace=replace)
    if scope.multiprocess:
        distributed.barrier("fit-data")
        if not scope.is_main:
            data = prepare_data(cfg, workdir, log, resume=True)
    assert data is not None
    _check_batch(cfg, data)
    train_files = data.split["train"]
    # Class weights / balanced sampling, the crops, pause shortening and the memory cache live
    # in the loader; the per-crop augmentation (and data.cache=device) in the feed.
    loader = make_loader_config(cfg, train_files, warn=log)
    if cfg.data.balance != "none":
        log(f"data: class balance by {cfg.data.balance}: "
            f"{balance_summary(loader, train_files, cfg.data.classes)}")

    steps_per_epoch = len(train_files) // cfg.train.batch_size
    weights = start_from.weights if start_from else None
    stack = (stack_lib.build(cfgs, steps_per_epoch, weights, strategy=strategy,
                             trial_axis=trial_axis, log=log) if len(cfgs) > 1 else None)
    built = (builder.build(cfg, steps_per_epoch=steps_per_epoch, weights=weights)
             if stack is None else stack.group.built)
    log(reporting.layer_table(built.state.params, built.layers))
    log(built.describe() + ("" if stack is None else " (the first trial's)"))
    if start_from is not None:
        log(f"starting from the weights of epoch {start_from.epoch} ({start_from.checkpoint} "
            f"checkpoint) of {start_from.workdir}; the optimizer, schedule and early stopping "
            "start afresh")
    if stack is None:
        state = parallel.put_replicated(built.state, mesh)
        train_step = builder.compile_train_step(built, state, mesh, padded=scope.multiprocess)
    else:
        log("trials: " + builder.describe_trials(cfgs))
        state = stack.put(stack.initial())
        train_step = builder.compile_group_train_step(stack.group, state, mesh,
                                                      strategy=strategy)
    eval_step = builder.compile_eval_step(built, built.state, eval_mesh)
    bad_files = BadFiles(cfg.data.on_error, log, data.errors)
    batches_in = feed.make(loader, mesh, cfg.train.batch_size, cfg.seed, files=train_files,
                           on_bad_file=bad_files)
    if batches_in.corpus is not None:
        log(f"data: data.cache=device: {len(train_files)} training clips on each device, "
            f"{batches_in.corpus.nbytes / 2**20:.0f} MiB")
    log(f"compiled train step in {train_step.compile_s:.2f}s, eval step in "
        f"{eval_step.compile_s:.2f}s (timings below exclude compilation)"
        + ("" if stack is None else
           f"; a group of {len(cfgs)} trials ({strategy}) on {mesh.devices.size} device(s): "
           f"trials split {mesh.shape['trial']} ways, each batch {mesh.shape['data']} ways")
        + (f"; the batch's crop and augmentation on the device in {batches_in.compile_s:.2f}s"
           if batches_in.compile_s else ""))
    trials = tuple(
        Trial(c, w, b, Checkpoints(w, mesh if scope.multiprocess else None),
              log if stack is None else _prefixed(log, os.path.basename(w)))
        for c, w, b in zip(cfgs, workdirs, (built,) if stack is None else stack.group.builts,
                           strict=True))
    return Run(cfg, workdir, log, data, loader, built, scope, train_step, eval_step, eval_mesh,
               bad_files, trials[0].checkpoints, {**device, "process_count": scope.process_count},
               start_from.record() if start_from else None, trials, stack, batches_in)


def _prefixed(log: Log, name: str) -> Log:
    return lambda message: log(f"[{name}] {message}")


def _check_batch(cfg: config_lib.ConfigDict, data: PreparedData) -> None:
    if len(data.split["train"]) < cfg.train.batch_size:
        raise DataError(f"train.batch_size: {cfg.train.batch_size} is more than the "
                        f"{len(data.split['train'])} training files")
    if cfg.data.cache == "device":
        device_cache.check_fits([data.durations.get(f.path, 0.0) for f in data.split["train"]],
                                cfg.data.sample_rate, cfg.data.device_cache_mib)


def _write_start(cfg: config_lib.ConfigDict, workdir: str, data: PreparedData, *,
                 replace: bool) -> None:
    """A trial's config.json and (unless it resumes with one) split.csv, once the start is
    known good; ``replace`` first removes its old run (--overwrite)."""
    resuming = not replace and os.path.exists(os.path.join(workdir, "config.json"))
    if replace:
        workdir_rules.remove_run(workdir)
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(os.path.join(workdir, "config.json"), config_lib.to_dict(cfg))
    split_path = os.path.join(workdir, "split.csv")
    if not (resuming and os.path.exists(split_path)):
        split_lib.write_split_csv(split_path, data.split, cfg.data.classes)


def restore_or_init(run: Run, begins: Sequence[workdir_rules.Start],
                    clock: SessionClock) -> tuple[TrainState, list[LoopState]]:
    """The initial state, or each trial's last checkpoint's when resuming or extending a
    finished run (a stack: each trial at its own epoch); each metrics.jsonl is cut back to the
    epochs its checkpoint holds (a kill between the two writes leaves one more line).
    ``clock`` learns the earlier sessions' wall time."""
    loops, restored = [], {}
    initial = run.built.state if run.stack is None else run.stack.initial()
    for i, (trial, begin) in enumerate(zip(run.trials, begins, strict=True)):
        loop_state = LoopState(started_at=clock.started_at, init_from=run.init_from,
                               steps_run=0)
        last = trial.checkpoints.last() if begin is not workdir_rules.Start.NEW else None
        if last is not None:
            like = initial if run.stack is None else run.stack.trial_state(initial, i)
            restored[i], record = trial.checkpoints.restore(last, like)
            loop_state = LoopState.from_json({"started_at": clock.started_at, **record})
            trial.log(f"resuming from the checkpoint of epoch {loop_state.epoch}")
        if begin is workdir_rules.Start.EXTEND:
            trial.log(f"continuing the finished run from epoch {loop_state.epoch} to epoch "
                      f"{trial.cfg.train.epochs}; the learning-rate schedule now spans "
                      f"{trial.cfg.train.epochs} epochs")
            loop_state = dataclasses.replace(loop_state, stopped_early=False, bad_epochs=0,
                                             stopped_by=None)
        clock.before.append(loop_state.wall_time_s)
        if run.scope.is_main:
            for path in (trial.metrics_path, trial.evals_path):
                rows = [r for r in read_jsonl(path) if r.get("epoch", 0) <= loop_state.epoch]
                if rows or os.path.exists(path):
                    write_jsonl(path, rows)
                if path == trial.metrics_path and loop_state.steps_run is None:
                    # a checkpoint from before loop.json counted steps: its epochs' rows do
                    loop_state = dataclasses.replace(loop_state, steps_run=sum(
                        int(r.get("steps", trial.built.steps_per_epoch)) for r in rows))
        loops.append(loop_state)
    if run.stack is None:
        return parallel.put_replicated(restored.get(0, initial), run.mesh), loops
    return run.stack.put(run.stack.with_trials(initial, restored)), loops


def train_epoch(run: Run, state: TrainState, epoch: int, batches: Iterable,
                progress: bool | None = None, active: np.ndarray | None = None,
                on_point: PointHook | None = None) -> tuple[TrainState, EpochStats]:
    """One epoch of steps of the ``active`` trials (default: all).

    Each step's metrics are fetched after the next step is dispatched, so the device never
    waits for the host to read them; a non-finite loss is seen one step late. Alone, the
    diverged trial's epoch ends there (that step's update is thrown away with the rest: the run
    stops, keeping its last checkpoint); in a stack, the step itself froze the trial, on the
    device, and the others go on (the epoch ends when none is left). Step times and the
    device's idle time come from :class:`StepClock`, which does not block.

    ``on_point(state, steps_done, stats, running)`` is called at each evaluation point inside
    the epoch
    (after every ``train.eval_every_steps``-th step of the run, but not at the epoch's last
    step, whose point is the epoch's own validation), with the epoch's training clock stopped:
    ``stats`` are the epoch's so far. It returns the trials to stop there (their target met,
    their time spent), which are frozen while the others go on; alone, the epoch ends."""
    keys = builder.dropout_key(run.cfg) if run.stack is None else run.stack.keys
    steps_per_epoch = run.built.steps_per_epoch
    every = run.cfg.train.eval_every_steps if on_point is not None else 0
    first_step = (epoch - 1) * steps_per_epoch
    running = np.ones(run.size, bool) if active is None else np.array(active, bool)
    on_device = None if run.stack is None else run.stack.active(running)
    sums = np.zeros((run.size, 3))
    bar = reporting.ProgressBar(steps_per_epoch, epoch, enabled=progress)
    diverged: dict[int, Divergence] = {}
    timed = {"busy": [], "idle": 0.0, "wait": 0.0, "seconds": 0.0}

    def take(m: dict) -> bool:
        """Fold in one step's metrics; whether any trial still trains."""
        m = parallel.to_host(m)  # waits for that step only
        loss_sum, correct, count, grad_norm = (np.atleast_1d(np.asarray(m[k], np.float64))
                                               for k in ("loss_sum", "correct", "count",
                                                         "grad_norm"))
        losses = loss_sum / np.maximum(count, 1.0)
        bar.step(float(losses[running].mean()))
        bad = running & ~(np.isfinite(loss_sum) & np.isfinite(grad_norm))
        for i in np.flatnonzero(bad):
            diverged[int(i)] = Divergence(first_step + bar.done, epoch, float(losses[i]))
        running[bad] = False
        sums[running] += np.stack([loss_sum, correct, count], axis=1)[running]
        return bool(running.any())

    def so_far() -> EpochStats:
        return EpochStats(sums[:, 0].copy(), sums[:, 1].copy(), sums[:, 2].copy(),
                          list(timed["busy"]), timed["wait"], timed["seconds"], timed["idle"],
                          dict(diverged))

    assert run.feed is not None
    batches = iter(batches)
    fed = 0  # the epoch's batches taken so far: the feed's key for the next one
    while True:  # spans of steps between evaluation points, each timed on its own
        span = steps_per_epoch - bar.done
        if every:
            span = min(span, every - (first_step + bar.done) % every)
        clock = StepClock()
        pending = None  # the metrics of the step before the one just dispatched
        done_before, ended = bar.done, True
        t_span = t_wait = time.perf_counter()
        try:
            for batch in itertools.islice(batches, span):
                x, y, w = run.feed(batch, epoch, fed)  # cut and augmented on the device
                fed += 1
                timed["wait"] += time.perf_counter() - t_wait
                step = run.step_for(batch.weight, state)  # may compile, before the clock starts
                submitted = clock.submit()
                if run.stack is None:
                    state, m = step(state, x, y, w, keys)
                else:
                    state, m, good = step(state, run.stack.hyper, on_device, x, y, w, keys)
                    on_device = run.stack.active(good)  # the trials still training, on device
                clock.dispatched(m, submitted)
                if pending is not None and not take(pending):
                    pending = None
                    break
                pending = m
                t_wait = time.perf_counter()
            else:
                if pending is not None:
                    take(pending)
                ended = bar.done - done_before < span  # the batches ran out
        finally:
            busy, idle = clock.close()
        timed["seconds"] += time.perf_counter() - t_span
        # a diverged run's last step (dispatched after the bad one) ran too: not counted
        timed["busy"] += busy[: bar.done - done_before]
        timed["idle"] += idle
        if ended or not running.any() or bar.done >= steps_per_epoch:
            break
        stop = np.asarray(on_point(state, bar.done, so_far(), running.copy()), bool) & running
        if stop.any():
            running &= ~stop
            if not running.any():
                break
            on_device = run.stack.active(running) if run.stack is not None else on_device
    bar.close()
    return state, so_far()


def validate(run: Run, state: TrainState, trained: np.ndarray | None = None) -> list[dict | None]:
    """Per trial, the clip-level report on the validation split (window level under
    ``window``); None for the trials not ``trained`` this epoch (default: all trained; a
    stack's frozen trial, diverged say, may score non-finite logits)."""
    preds = run.score(state, run.data.split["val"])
    return [clip_scoring.report(p, run.classes) if trained is None or trained[i] else None
            for i, p in enumerate(preds)]


def record_epoch(run: Run, records: Sequence[reporting.EpochRecords | None], state: TrainState,
                 loops: list[LoopState], epoch: int, stats: EpochStats, vals: list,
                 trained: np.ndarray, *, epoch_s: float, clock: SessionClock,
                 stops: dict[int, PointStop] | None = None) -> list[LoopState]:
    """Write the epoch's records of each ``trained`` trial, then its checkpoint; return the
    loop states. ``epoch_s``: the epoch's wall time, validation included. The epoch's end is an
    evaluation point (evals.jsonl), except for a trial in ``stops``: stopped at a point inside
    the epoch (its row then covers the epoch up to there)."""
    loops = list(loops)
    stops = stops or {}
    states = run.trial_states(state)
    steps_per_epoch = run.built.steps_per_epoch
    for i in np.flatnonzero(trained):
        trial, es = run.trials[i], run.trials[i].cfg.train.early_stopping
        point = stops.get(int(i))
        seconds = point.epoch_seconds if point else run.trial_seconds(i, stats)
        # a grouped trial's epoch: its training as alone, then the group's validation
        epoch_time = epoch_s if run.stack is None else epoch_s - stats.seconds + seconds
        val = vals[i]
        row = {
            "epoch": epoch,
            "steps": point.step - (epoch - 1) * steps_per_epoch if point else steps_per_epoch,
            "train_loss": float(stats.loss_sum[i]) / max(float(stats.count[i]), 1),
            "train_accuracy": float(stats.correct[i]) / max(float(stats.count[i]), 1),
            **_val_fields(val),
            "learning_rate": float(trial.built.schedule(epoch * trial.built.steps_per_epoch - 1))
            * optim.lr_scale(states[i].opt_state),
            "epoch_time_s": epoch_time,
            "train_time_s": seconds,
            "examples_per_s": float(stats.count[i]) / seconds if seconds > 0 else None,
            "data_wait_s": stats.data_wait_s,
            "device_idle_s": stats.device_idle_s,
            "device_idle_share": stats.device_idle_s / seconds if seconds > 0 else None,
        }
        mode = config_lib.MONITORS[es.monitor] if es.mode == "auto" else es.mode
        loop_state, improved, stop = early_stopping_update(
            dataclasses.replace(loops[i], train_time_s=loops[i].train_time_s + seconds,
                                steps_run=None if loops[i].steps_run is None
                                else loops[i].steps_run + row["steps"]),
            epoch, row[es.monitor], mode=mode, patience=es.patience, min_delta=es.min_delta)
        reason = point.reason if point else None
        if point is None:  # the epoch's end is an evaluation point
            loop_state, reason = _fold_point(
                trial, loop_state, {"epoch": epoch, "step": epoch * steps_per_epoch,
                                    "train_time_s": _agreed(run, loop_state.train_time_s),
                                    **_val_fields(val)}, records[i] is not None)
        last_epoch = epoch >= trial.cfg.train.epochs
        stopped = point is not None or ((stop or reason is not None) and not last_epoch)
        loop_state = dataclasses.replace(
            loop_state, stopped_early=stopped, wall_time_s=clock.total_s(i),
            stopped_by=(reason or "early_stopping") if stopped else None,
            group_train_time_s=None if run.stack is None else
            (loop_state.group_train_time_s or 0.0) + stats.seconds)
        # Records of the epoch first, then the checkpoint: a kill in between is cut back (or, in
        # TensorBoard, overwritten by the same step) on resume. Only process 0 keeps records.
        if records[i] is not None:
            records[i].write(row, improved)
        trial.checkpoints.save(epoch, states[i], dataclasses.asdict(loop_state),
                               best={"monitor": es.monitor, "value": row[es.monitor]}
                               if improved else None)
        if loop_state.stopped_by == "early_stopping":
            trial.log(f"early stopping: {es.monitor} has not improved for {es.patience} "
                      f"epochs (best {loop_state.best_value:.4f} at epoch "
                      f"{loop_state.best_epoch})")
        loops[i] = loop_state
    return loops


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


def finish(run: Run, state: TrainState, loops: list[LoopState],
           step_times: list[float | None], *,
           resumed: Sequence[workdir_rules.Start], clock: SessionClock,
           diverged: dict[int, Divergence]) -> list[dict]:
    """Test each trial's best weights (or the last, with restore_best off), time inference,
    and write each trial's summary.json and curves.png; return the summaries. A diverged trial
    is not tested; its summary has the same keys, with what was measured up to the
    divergence."""
    pointers = [t.checkpoints.best() if config_lib.tested_checkpoint(t.cfg) == "best"
                else t.checkpoints.last() for t in run.trials]
    tests, inference = _test(run, state, pointers, [i for i in range(run.size)
                                                   if i not in diverged])
    peak, peak_kind = timing.peak_memory()
    data_errors = _all_processes_counts(run)
    summaries = []
    for i, (trial, loop_state) in enumerate(zip(run.trials, loops, strict=True)):
        d, pointer = diverged.get(i), pointers[i]
        summary = {
            "status": ("diverged" if d else
                       "stopped_early" if loop_state.stopped_early else "completed"),
            "best_epoch": loop_state.best_epoch,
            "tested_epoch": pointer["epoch"] if d is None else None,
            "epochs_run": loop_state.epoch,
            "seed": trial.cfg.seed,
            "init_seed": config_lib.init_seed(trial.cfg),
            "init_from": loop_state.init_from,
            "test": tests[i],
            "params_trainable": trial.built.params_trainable,
            "params_total": trial.built.params_total,
            "flops_per_example": run.eval_step.flops_per_example,
            **_step_figures(run, i, step_times, resumed[i]),
            "train_time_s": loop_state.train_time_s,
            "stopped_by": loop_state.stopped_by,
            **_clock_figures(trial.cfg, loop_state),
            "started_at": loop_state.started_at,
            "finished_at": _now(),
            "wall_time_s": clock.total_s(i),
            "wall_time_note": "from the start of the run's first session to the end of this "
                              "one, summed over sessions (the time between a kill and a "
                              "restart, and after a session's last checkpoint, not counted)",
            "peak_memory_bytes": peak,
            "peak_memory_kind": peak_kind,
            "inference": inference if d is None else None,
            "checkpoint_bytes": trial.checkpoints.size_bytes(pointer) if pointer else None,
            "weight_decay_semantics": optim.weight_decay_semantics(
                trial.cfg.optimizer.name, trial.cfg.optimizer.weight_decay_mask),
            "balance": balance_summary(run.loader, run.data.split["train"], run.classes),
            "data_errors": data_errors,
            "n_files": {name: len(files) for name, files in run.data.split.items()},
            **run.device,
            "versions": timing.versions(),
        }
        summary["throughput"] = _throughput(trial, loop_state, summary["step_time_ms"])
        if run.stack is not None:
            summary["grouped"] = _grouped(run, i, loop_state, step_times)
        if d is not None:
            summary.update(diverged_at_step=d.step, diverged_in_epoch=d.epoch)
        if run.scope.is_main:
            _write_summary(run, trial, summary, loop_state.best_epoch)
        summaries.append(summary)
    if run.scope.is_main and run.cfg.note and len(diverged) < run.size:
        run.log(f"note: {run.cfg.name}: {run.cfg.note}")
    return summaries


def _clock_figures(cfg: config_lib.ConfigDict, loop_state: LoopState) -> dict:
    """summary.json's AlgoPerf clock: the budget and whether it was spent; the target and the
    first evaluation point that met it (within the budget), in steps and training seconds."""
    out: dict = {"max_seconds": cfg.train.max_seconds or None,
                 "max_seconds_exceeded": loop_state.over_budget,
                 "eval_every_steps": cfg.train.eval_every_steps or None}
    target = config_lib.target(cfg)
    if target is not None:
        out["target"] = {"metric": target[0], "value": target[1],
                         "steps": loop_state.target_step, "seconds": loop_state.target_seconds,
                         "note": "the first evaluation point (evals.jsonl) that met the target "
                                 "within the budget; seconds: training only (compilation and "
                                 "evaluation excluded); null: never met"}
    return out


def _test(run: Run, state: TrainState, pointers: list[dict | None],
          tested: list[int]) -> tuple[list[dict | None], dict | None]:
    """Per trial, the test report of its tested checkpoint (``tested``: the trials that did
    not diverge), written to test_predictions.csv; and the inference speed of those weights
    (in a stack, of the first tested trial's: every trial runs the same network)."""
    tests: list[dict | None] = [None] * run.size
    if not tested:
        return tests, None
    if run.stack is None:
        host_state, _ = run.checkpoints.restore(pointers[0], parallel.to_host(state))
        state = one = parallel.put_replicated(host_state, run.mesh)
    else:
        initial = run.stack.initial()
        plain = {i: run.trials[i].checkpoints.restore(
            pointers[i], run.stack.trial_state(initial, i))[0] for i in tested}
        state = run.stack.put(run.stack.with_trials(state, plain))
        one = jax.device_put(plain[tested[0]])
    for i in tested:
        train_cfg = run.trials[i].cfg.train
        weights = ("the moving average of the weights at" if train_cfg.ema_epochs > 0
                   else "the weights of")
        es = train_cfg.early_stopping
        run.trials[i].log(f"testing {weights} epoch {pointers[i]['epoch']} "
                          f"({'best ' + es.monitor if es.restore_best else 'last epoch'})")
    if run.data.split["test"]:
        preds = run.score(state, run.data.split["test"])
        for i in tested:
            tests[i] = clip_scoring.report(preds[i], run.classes)
            if run.scope.is_main:
                reporting.write_predictions(
                    os.path.join(run.trials[i].workdir, "test_predictions.csv"), preds[i],
                    run.classes)
    return tests, _inference_speed(run, one)


def _step_figures(run: Run, i: int, step_times: list[float | None],
                  resumed: workdir_rules.Start) -> dict:
    """The train step's FLOPs, compile time and step times of trial ``i``: alone, its own; in
    a stack, those of its program alone (compiled and timed before the group trained)."""
    after = " (after resume)" if resumed is not workdir_rules.Start.NEW else ""
    if run.stack is None:
        return {"train_step_flops_per_example": run.train_step.flops_per_example,
                "compile_time_s": run.train_step.compile_s,
                "step_time_ms": timing.summarize_ms(step_times),
                "step_time_note": "train step only, compilation excluded: the device's time per "
                                  "step (between completions; the loop never waits for a "
                                  "step); n: this session's steps" + after
                                  + "; median, min and max over the timed ones (timed), leaving "
                                  "out each pair of steps whose completions the timing thread "
                                  "saw together (their split unknown)"}
    alone = run.stack.alone[i]
    return {"train_step_flops_per_example": alone.flops_per_example,
            "compile_time_s": alone.compile_s,
            "step_time_ms": timing.summarize_ms(alone.step_times),
            "step_time_note": "train step only, compilation excluded: the device's time per "
                              "step of this trial's program alone, each step waited for, "
                              "in a calibration before its group trained; "
                              "train_time_s counts its steps at this time (the group's own "
                              "step: grouped.step_time_ms_group)" + after}


def _throughput(trial: Trial, loop_state: LoopState, step_ms: dict | None) -> dict:
    """The whole training's examples/s beside its steps' rate, both measured in this run."""
    # every epoch's steps (fewer in one that stopped at an evaluation point)
    steps = loop_state.steps_run
    examples = steps * trial.cfg.train.batch_size if steps is not None else None
    seconds = loop_state.train_time_s
    whole = examples / seconds if seconds > 0 and examples else None
    median = (step_ms or {}).get("median")
    step = trial.cfg.train.batch_size / (median / 1e3) if median else None
    return {"train_examples_per_s": whole, "step_examples_per_s": step,
            "ratio": whole / step if whole and step else None,
            "note": "train_examples_per_s: the examples of every epoch run over train_time_s "
                    "(every session; the epochs' training, data waits included, validation "
                    "not); step_examples_per_s: the batch over the median step time "
                    "(step_time_ms: the device's time per step, the batch's augmentation on "
                    "the device included, timed during the run: where host and device share "
                    "a CPU, the loader's threads slow the steps too, which this ratio cannot "
                    "see; benchmark --what=data compares with the step alone); ratio: how "
                    "close the run came to its steps"}


def _grouped(run: Run, i: int, loop_state: LoopState,
             step_times: list[float | None]) -> dict:
    """A grouped trial's ``grouped`` entry: its group, and the group's own times."""
    assert run.stack is not None
    return {"size": run.size, "mode": run.stack.strategy, "index": i,
            "trials": [os.path.basename(t.workdir) for t in run.trials],
            "train_time_s_group": loop_state.group_train_time_s,
            "step_time_ms_group": timing.summarize_ms(step_times),
            "compile_time_s_group": run.train_step.compile_s,
            "note": "trained in one compiled program with the other trials of its group. "
                    "train_time_s, step_time_ms, compile_time_s and the metrics' train_time_s: "
                    "what this trial alone would take (its steps at its program's step time "
                    "measured alone, plus the epoch's time outside the steps); "
                    "train_time_s_group, step_time_ms_group (a step of the whole group, this "
                    "session's) and compile_time_s_group: the group's own; wall_time_s: the "
                    "group's wall time, shared"}


def _write_summary(run: Run, trial: Trial, summary: dict, best_epoch: int) -> None:
    atomic_write_json(os.path.join(trial.workdir, "summary.json"), summary)
    try:
        from speechmusic_jax import plots

        plots.curves(read_jsonl(trial.metrics_path), os.path.join(trial.workdir, "curves.png"),
                     best_epoch=best_epoch)
    except Exception as e:  # a plot must never cost the run
        trial.log(f"warning: could not draw curves.png ({e})")
    if summary["status"] != "diverged":
        trial.log(reporting.format_summary(summary, run.classes))


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
