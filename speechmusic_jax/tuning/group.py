"""Many trials, one compile: trials that differ only in traced hyperparameters train together.

Trials whose configs are equal but for the learning rate, the weight decay, the label smoothing,
the L1 and L2 penalties and the dropout rates (same seed, model, optimizer, schedule, batch
size, epochs; see ``builder.group_key``) form a group. The group trains as one program: the
trials' states are stacked, the optimizer holds each trial's learning rate and weight decay in
its state (``optax.inject_hyperparams``), the loss and dropout hyperparameters that differ are
the step's traced inputs (``group.hyper``), and one compiled step (``vmap`` over the trials, or
``map``: one after another inside the program) takes every trial through the same batch with the
same dropout key. Every trial of a group therefore sees exactly the batches it would see alone
(a paired design), and trial i trained in a group equals trial i trained alone to float rounding
(tests/test_tuning_group.py), with Adam and batch norm too: the conv biases that batch norm
cancels, whose gradient is zero but for rounding noise that Adam would scale up to +-lr steps
(which moved the validation loss by up to ~1e-3), get no updates (``optim.without_updates``).

Per trial, as ``fit`` does: batch-norm statistics are its own; a non-finite loss or gradient
freezes it (its update is masked from that step on) and records the step; early stopping stops
it alone (frozen likewise); the weights of its best epoch are kept and tested. Validation and
test read each window once for the whole group. Each trial's folder gets the usual run files:
config.json, split.csv, metrics.jsonl, summary.json (with ``grouped``: the group's size and
mode; the train time is the trial's share of the group's), test_predictions.csv, curves.png and
one checkpoint (the tested weights, in the plain optimizer's layout, so ``evaluate`` and
``predict`` work on it). An interrupted group is trained again from the start.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax import parallel, timing
from speechmusic_jax.data import split as split_lib
from speechmusic_jax.data.pipeline import balance_summary, make_loader_config, train_batches
from speechmusic_jax.data.prepare import BadFiles, prepare_data
from speechmusic_jax.errors import DataError
from speechmusic_jax.io_utils import append_jsonl, atomic_write_json, read_jsonl, write_jsonl
from speechmusic_jax.training import builder, clip_scoring, optim, pretrained, reporting
from speechmusic_jax.training import workdir as workdir_rules
from speechmusic_jax.training.checkpoints import Checkpoints
from speechmusic_jax.training.loop import LoopState, early_stopping_update

Log = Callable[[str], None]
MAX_GROUP = 8  # trials per program by default (activation memory grows with the group)


def choose_mode(mode: str, cfgs: Sequence[Any]) -> str:
    """``alone``, ``grouped`` (vmap) or ``grouped_map`` for these trials. ``auto`` groups
    (vmap) when at least two trials share a program and the backend is an accelerator, where a
    vmapped group fills the device; on CPU it runs them alone. Measured on the 2-core CPU for
    the default model at batch 32 (quiet machine): a train step costs 182-217 ms alone and
    241-244 ms per trial in a vmapped group of 4-8 (lax.map: 4.7 s), while 3-epoch trials took
    12.5 s each alone and 9.1 s grouped (compilation, checkpoints and data reading shared); the
    gain shrinks with longer trials, so on CPU a trial alone is the default and ``grouped`` is
    the user's choice."""
    if mode in ("alone", "grouped", "grouped_map"):
        return mode
    if mode != "auto":
        raise config_lib.ConfigError(f"--mode: unknown {mode!r}; known: auto, alone, grouped, "
                                     "grouped_map")
    keys = [builder.group_key(c) for c in cfgs]
    shared = len(set(keys)) < len(keys)
    return "grouped" if shared and jax.default_backend() != "cpu" else "alone"


def plan(items: Sequence[tuple[Any, Any]], max_group: int = MAX_GROUP) -> list[list]:
    """Split (trial, config) pairs into groups of equal ``group_key`` (in order of first
    appearance), at most ``max_group`` each; a trial alone in its key is a group of one."""
    by_key: dict[str, list] = {}
    for item in items:
        by_key.setdefault(builder.group_key(item[1]), []).append(item)
    units = []
    for members in by_key.values():
        n = math.ceil(len(members) / max_group)
        size = math.ceil(len(members) / n)  # even sizes: 9 trials -> 5 + 4, not 8 + 1
        units += [members[i:i + size] for i in range(0, len(members), size)]
    return units


def _stack_select(mask: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


_select = jax.jit(_stack_select)


def train_group(cfgs: Sequence[Any], folders: Sequence[str], *, log: Log = print,
                strategy: str = "vmap", trial_axis: int | None = None,
                host_memory: str | None = None) -> list[dict]:
    """Train and test the trials ``cfgs`` (one group) in ``folders``; return their summaries.
    ``host_memory``: the allocator policy in effect, recorded with the step times (as ``fit``).

    On several devices the trials are split over a "trial" mesh axis of ``trial_axis``
    devices and each trial's batch over the rest (default: as many whole trials per device as
    divide evenly; see :func:`parallel.group_mesh`)."""
    if len(cfgs) != len(folders) or not cfgs:
        raise ValueError("train_group: one folder per config")
    for cfg in cfgs:
        config_lib.validate(cfg)
    folders = [os.path.abspath(f) for f in folders]
    # The trials of a group share train.init_from (it is part of the group key); every trial
    # starts afresh, from those weights.
    start_from = pretrained.load(cfgs[0], folders) if cfgs[0].train.init_from else None
    for cfg, folder in zip(cfgs, folders, strict=True):
        if workdir_rules.start(folder, config_lib.to_dict(cfg)) is not workdir_rules.Start.NEW:
            workdir_rules.remove_run(folder)  # an unfinished run of ours: trained afresh
    cfg0, size = cfgs[0], len(cfgs)
    try:
        mesh = parallel.group_mesh(size, trial_axis=trial_axis if strategy == "vmap" else 1)
        parallel.check_divisible(cfg0.train.batch_size, mesh, "train.batch_size")
        parallel.check_divisible(cfg0.train.eval_batch_size, mesh, "train.eval_batch_size")
    except ValueError as e:
        raise config_lib.ConfigError(str(e)) from None
    for cfg, folder in zip(cfgs, folders, strict=True):
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(os.path.join(folder, "config.json"), config_lib.to_dict(cfg))
    device = timing.device_info()
    if host_memory is not None:
        device["host_memory"] = host_memory
    data = prepare_data(cfg0, folders[0], log, resume=False)
    for folder in folders[1:]:
        split_lib.write_split_csv(os.path.join(folder, "split.csv"), data.split,
                                  cfg0.data.classes)
    train_files = data.split["train"]
    loader = make_loader_config(cfg0, train_files, warn=log)
    if len(train_files) < cfg0.train.batch_size:
        raise DataError(f"train.batch_size: {cfg0.train.batch_size} is more than the "
                        f"{len(train_files)} training files")
    spe = len(train_files) // cfg0.train.batch_size
    group = builder.build_group(cfgs, spe, start_from.weights if start_from else None)
    built = group.built
    log(built.describe() + " (the first trial's)")
    if start_from is not None:
        log(f"every trial starts from the weights of epoch {start_from.epoch} "
            f"({start_from.checkpoint} checkpoint) of {start_from.workdir}")
    log("trials: " + builder.describe_trials(cfgs))
    states = parallel.put_trials(group.state, mesh)
    hyper = parallel.put_trials(group.hyper, mesh)
    train_step = builder.compile_group_train_step(group, states, mesh, strategy=strategy)
    padded_step: dict = {}
    single_eval = builder.compile_eval_step(built, built.state, mesh)  # for its FLOPs
    evaluate = jax.jit(builder.group_eval_fn(group))
    axes = dict(mesh.shape)
    log(f"group of {size} trials ({strategy}) on {mesh.devices.size} device(s): trials split "
        f"{axes['trial']} ways, each batch {axes['data']} ways; compiled the train step in "
        f"{train_step.compile_s:.2f}s (timings exclude compilation)")
    classes = tuple(cfg0.data.classes)
    bad_files = BadFiles(cfg0.data.on_error, log, data.errors)
    shard = parallel.batch_sharding(mesh)

    def score(stacked: Any, files: list) -> list[clip_scoring.Predictions]:
        pred = clip_scoring.predict_files(lambda x: evaluate(stacked, x), files, loader,
                                          cfg0.train.eval_batch_size,
                                          put=lambda x: jax.device_put(x, shard),
                                          on_bad_file=bad_files)
        c = len(classes)
        return [clip_scoring.Predictions(pred.files, pred.clip_logits[:, i * c:(i + 1) * c],
                                         pred.window_logits[:, i * c:(i + 1) * c],
                                         pred.window_labels, pred.window_clip)
                for i in range(size)]

    es = cfg0.train.early_stopping
    mode = config_lib.MONITORS[es.monitor] if es.mode == "auto" else es.mode
    active = np.ones(size, bool)
    loops = [LoopState(init_from=start_from.record() if start_from else None)
             for _ in range(size)]
    diverged: list[dict | None] = [None] * size
    best = jax.tree.map(jnp.copy, states)
    key = jax.random.key(cfg0.seed)
    step_times: list[float] = []
    schedules = [optim.make_schedule(c.optimizer.schedule, c.optimizer.learning_rate,
                                     c.train.epochs * spe,
                                     int(round(c.optimizer.warmup_epochs * spe))) for c in cfgs]
    for folder in folders:
        write_jsonl(os.path.join(folder, "metrics.jsonl"), [])
    group_train_s = 0.0
    for epoch in range(1, cfg0.train.epochs + 1):
        if not active.any():
            break
        started = active.copy()
        sums = np.zeros((size, 3))
        t_epoch = time.perf_counter()
        batches = train_batches(train_files, [data.durations[f.path] for f in train_files],
                                loader, cfg0.seed, epoch, on_bad_file=bad_files)
        try:
            for steps_done, batch in enumerate(batches, start=1):
                x, y, w = parallel.put_batch((batch.x, batch.y, batch.weight), mesh)
                if batch.weight.all():
                    step = train_step
                else:
                    if not padded_step:
                        padded_step["step"] = builder.compile_group_train_step(
                            group, states, mesh, padded=True, strategy=strategy)
                    step = padded_step["step"]
                t0 = time.perf_counter()
                states, m, good = step.fn(states, hyper,
                                          jax.device_put(active, parallel.trial_sharding(mesh)),
                                          x, y, w, key)
                m, good = jax.device_get((m, good))
                step_times.append(time.perf_counter() - t0)
                for i in np.flatnonzero(active & ~good):
                    loss = float(m["loss_sum"][i]) / max(float(m["count"][i]), 1.0)
                    diverged[i] = {"step": (epoch - 1) * spe + steps_done, "epoch": epoch,
                                   "loss": loss}
                    active[i] = False
                rows = active & good
                sums[rows] += np.stack([m["loss_sum"], m["correct"], m["count"]], axis=1)[rows]
                if not active.any():
                    break
        finally:
            batches.close()
        seconds = time.perf_counter() - t_epoch
        group_train_s += seconds
        share = seconds / size
        trained = started & active  # these finished the epoch
        if not trained.any():
            continue
        val = score(states, data.split["val"])
        improved = np.zeros(size, bool)
        for i in np.flatnonzero(trained):
            report = clip_scoring.report(val[i], classes)
            lr = float(schedules[i](epoch * spe - 1))
            if cfgs[i].optimizer.schedule == "plateau":
                lr *= optim.lr_scale(jax.tree.map(lambda a, i=i: a[i], states.opt_state))
            row = {"epoch": epoch,
                   "train_loss": sums[i, 0] / max(sums[i, 2], 1),
                   "train_accuracy": sums[i, 1] / max(sums[i, 2], 1),
                   "val_loss": report["loss"], "val_accuracy": report["accuracy"],
                   "val_f1": report["f1"]["macro"],
                   "val_window_loss": report["window"]["loss"],
                   "val_window_accuracy": report["window"]["accuracy"],
                   "learning_rate": lr, "epoch_time_s": time.perf_counter() - t_epoch,
                   "examples_per_s": sums[i, 2] / share if share > 0 else None,
                   "data_wait_s": None, "train_time_s": share}
            loops[i], improved[i], stop = early_stopping_update(
                dataclasses.replace(loops[i], train_time_s=loops[i].train_time_s + share),
                epoch, row[es.monitor], mode=mode, patience=es.patience,
                min_delta=es.min_delta)
            append_jsonl(os.path.join(folders[i], "metrics.jsonl"), row)
            if stop and epoch < cfg0.train.epochs:
                loops[i] = dataclasses.replace(loops[i], stopped_early=True)
                active[i] = False
        if improved.any():
            best = _select(jnp.asarray(improved), states, best)
        log(f"epoch {epoch}: {int(trained.sum())} of {size} trials trained ({seconds:.1f}s); "
            f"{int(active.sum())} still training")
    tested = best if es.restore_best else states
    needs_test = [i for i in range(size) if diverged[i] is None]
    test = score(tested, data.split["test"]) if needs_test and data.split["test"] else None
    peak, peak_kind = timing.peak_memory()
    summaries = []
    for i, (cfg, folder) in enumerate(zip(cfgs, folders, strict=True)):
        status = ("diverged" if diverged[i] else
                  "stopped_early" if loops[i].stopped_early else "completed")
        test_report = None
        if status != "diverged" and test is not None:
            test_report = clip_scoring.report(test[i], classes)
            reporting.write_predictions(os.path.join(folder, "test_predictions.csv"), test[i],
                                        classes)
        pointer_bytes = None
        tested_epoch = (None if status == "diverged" else
                        loops[i].best_epoch if es.restore_best else loops[i].epoch)
        if tested_epoch is not None and loops[i].best_epoch:
            ckpt = Checkpoints(folder)
            ckpt.save(tested_epoch, jax.device_get(group.trial_state(tested, i)),
                      dataclasses.asdict(loops[i]),
                      best={"monitor": es.monitor, "value": loops[i].best_value})
            pointer = ckpt.best()
            pointer_bytes = ckpt.size_bytes(pointer) if pointer else None
        summary = {
            "status": status, "best_epoch": loops[i].best_epoch, "epochs_run": loops[i].epoch,
            "tested_epoch": tested_epoch,
            "seed": cfg.seed, "init_from": loops[i].init_from, "test": test_report,
            "params_trainable": built.params_trainable, "params_total": built.params_total,
            "flops_per_example": single_eval.flops_per_example,
            "train_step_flops_per_example": (train_step.flops_per_example / size
                                             if train_step.flops_per_example else None),
            "compile_time_s": train_step.compile_s,
            "step_time_ms": timing.summarize_ms(step_times),
            "step_time_note": f"the step of the whole group of {size} trials ({strategy}), "
                              "compilation excluded, blocked on the result",
            "train_time_s": loops[i].train_time_s,
            "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
            "inference": None,
            "checkpoint_bytes": pointer_bytes,
            "weight_decay_semantics": optim.weight_decay_semantics(
                cfg.optimizer.name, cfg.optimizer.weight_decay_mask),
            "balance": balance_summary(loader, train_files, classes),
            "data_errors": dict(bad_files.counts),
            "n_files": {name: len(files) for name, files in data.split.items()},
            **device, "versions": timing.versions(),
            "grouped": {"size": size, "mode": strategy, "index": i,
                        "trials": [os.path.basename(f) for f in folders],
                        "train_time_s_group": group_train_s,
                        "note": "trained in one compiled program with the other trials of its "
                                "group; train_time_s is its share (the group's time / size); "
                                "inference speed is not measured for grouped trials"},
        }
        if diverged[i]:
            summary.update(diverged_at_step=diverged[i]["step"],
                           diverged_in_epoch=diverged[i]["epoch"])
        atomic_write_json(os.path.join(folder, "summary.json"), summary)
        try:
            from speechmusic_jax import plots

            plots.curves(_rows(folder), os.path.join(folder, "curves.png"),
                         best_epoch=loops[i].best_epoch)
        except Exception as e:  # a plot must never cost the run
            log(f"warning: could not draw curves.png ({e})")
        summaries.append(summary)
    return summaries


def _rows(folder: str) -> list[dict]:
    return read_jsonl(os.path.join(folder, "metrics.jsonl"))


def _timed(fn: Callable[[], Any], steps: int, budget_s: float = 20.0) -> list[float]:
    """Seconds of up to ``steps`` blocked calls after one warm-up call; fewer (at least 2) when
    a call is slow, so one measurement takes about ``budget_s``."""
    first = timing.time_calls(fn, 1, warmup=1)[0]
    repeats = max(2, min(steps, int(budget_s / max(first, 1e-6))))
    return timing.time_calls(fn, repeats, warmup=0)


def time_modes(cfg: Any, sizes: Sequence[int] = (1, 4, 8),
               strategies: Sequence[str] = ("vmap", "map"), steps: int = 10,
               log: Log = print, map_sizes: Sequence[int] = (2,)) -> list[dict]:
    """Milliseconds per trial per train step of ``cfg``'s model at its batch size: alone (the
    plain compiled step) and grouped (``strategies`` x ``sizes``; ``map`` only at
    ``map_sizes``: on CPU it is seconds a step), on random batches, compiled ahead
    (compilation excluded), blocked on each step, with the load of other processes."""
    built = builder.build(cfg, 10)
    mesh = parallel.make_mesh()
    bs, seg = cfg.train.batch_size, built.segment
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.standard_normal((bs, seg)).astype(np.float32) * 0.1)
    y = jax.device_put((np.arange(bs) % len(cfg.data.classes)).astype(np.int32))
    w = jax.device_put(np.ones(bs, np.float32))
    key = jax.random.key(0)
    out = []
    alone = builder.compile_train_step(built, built.state, mesh)
    state = parallel.put_replicated(built.state, mesh)

    def run_alone():
        nonlocal state
        state, m = alone.fn(state, x, y, w, key)
        return m

    with timing.OtherLoad() as load:
        times = _timed(run_alone, steps)
    out.append({"mode": "alone", "size": 1, "ms_per_trial": statistics.median(times) * 1e3,
                "compile_s": alone.compile_s, "other_load_cores": load.cores})
    log(f"alone: {out[-1]['ms_per_trial']:.1f} ms per trial-step (compile {alone.compile_s:.1f}s, "
        f"other load {load.cores or 0:.2f} cores)")
    for strategy in strategies:
        for size in (map_sizes if strategy == "map" else sizes):
            cfgs = [cfg] * size
            group = builder.build_group(cfgs, 10)
            states = parallel.put_replicated(group.state, mesh)
            step = builder.compile_group_train_step(group, states, mesh, strategy=strategy)
            active = jnp.ones(size, bool)

            def run_group(step=step, active=active, hyper=group.hyper):
                nonlocal states
                states, m, _ = step.fn(states, hyper, active, x, y, w, key)
                return m

            with timing.OtherLoad() as load:
                times = _timed(run_group, steps)
            out.append({"mode": strategy, "size": size,
                        "ms_per_trial": statistics.median(times) * 1e3 / size,
                        "compile_s": step.compile_s, "other_load_cores": load.cores})
            log(f"{strategy} x{size}: {out[-1]['ms_per_trial']:.1f} ms per trial-step "
                f"(compile {step.compile_s:.1f}s, other load {load.cores or 0:.2f} cores)")
    return out
