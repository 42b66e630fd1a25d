"""Running a sweep: every trial a run in ``DIR/trials/NNN/``, resumable, shareable, then results.

    result = run_sweep(sweep, "runs/sweeps/optimizers")           # every trial
    result = run_sweep(sweep, DIR, trials=(0, 12))                 # trials 0..11 only

A trial is an ordinary run (``fit``'s workdir rules: a finished one is skipped, an unfinished one
resumes from its last checkpoint); a trial that diverges is recorded with its status and step; a
trial that raises anything else is recorded as ``failed`` (``DIR/failed/NNN.json``, retried on the
next run) and the sweep goes on. ``trials=(START, END)`` runs only those trials, so several
processes or machines can share one sweep folder without overlap; each writes the results of
every finished trial it can see. Trials that share the model's shape and the optimizer family
can instead train together, vmapped, in ``fit`` with a trial axis (which trials group:
:mod:`speechmusic_jax.tuning.group`); a killed group resumes like a run alone.

``DIR`` holds: ``sweep.json`` (the sweep's trials: a rerun with a different sweep is refused),
``trials/NNN/``, ``logs/NNN.log`` (each trial's full log), ``results.csv``, ``results.md``,
``results.json``, ``curves.png``, ``budget.png``, ``pareto.png`` (``profile.png`` with several
workloads).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax import errors
from speechmusic_jax.io_utils import atomic_write_json, atomic_write_text, read_json
from speechmusic_jax.training import workdir as workdir_rules
from speechmusic_jax.tuning import claims
from speechmusic_jax.tuning import records as records_lib
from speechmusic_jax.tuning import space as space_lib
from speechmusic_jax.tuning import spec as spec_lib
from speechmusic_jax.tuning.results import SweepResult
from speechmusic_jax.tuning.spec import Sweep, Trial

Log = Callable[[str], None]
SWEEP_ENTRIES = frozenset({"sweep.json", "trials", "logs", "failed", "claims", "results.csv",
                           "results.md",
                           "results.json", "curves.png", "budget.png", "pareto.png",
                           "profile.png"})


def default_workdir(sweep: Sweep) -> str:
    return os.path.join("runs", "sweeps", sweep.name)


def parse_trials(text: str | None, total: int) -> tuple[int, int]:
    """``START:END`` (either side may be empty), or ``N`` (one trial) -> (start, end), checked."""
    if not text:
        return 0, total
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start, end = int(a) if a.strip() else 0, int(b) if b.strip() else total
        else:
            start = int(text)
            end = start + 1
    except ValueError:
        raise config_lib.ConfigError(f"--trials: expected START:END, got {text!r}") from None
    if not 0 <= start < end <= total:
        raise config_lib.ConfigError(f"--trials={text}: the sweep has trials 0..{total - 1}; "
                                     "need 0 <= START < END <= " + str(total))
    return start, end


def check_workdir(workdir: str, record: dict) -> None:
    """Refuse a folder that is not this sweep's: one holding other files, or another sweep."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.WorkdirConflict(f"--workdir {workdir} is a file, not a folder")
    path = os.path.join(workdir, "sweep.json")
    if not os.path.exists(path):
        found = workdir_rules.others(workdir)
        if found:
            raise errors.WorkdirConflict(f"--workdir {workdir} is not empty and holds no sweep "
                                         f"(found {found[:5]}); choose another workdir")
        return
    try:
        old = read_json(path)
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or "trials" not in old:
        raise errors.WorkdirConflict(f"{path} is not a sweep.json this program wrote; choose "
                                     "another workdir")
    differ = _first_difference(old, record)
    if differ:
        raise errors.WorkdirConflict(
            f"--workdir {workdir} holds a different sweep ({differ}); use another --workdir "
            "(trials already run stay as they are)")


def _first_difference(old: dict, new: dict) -> str | None:
    if old.get("name") != new.get("name"):
        return f"sweep {old.get('name')!r}, not {new.get('name')!r}"
    changed = config_lib.diff(old.get("base", {}), new.get("base", {}))
    if changed:
        return "base config fields: " + ", ".join(changed[:5])
    a, b = old.get("trials", []), new.get("trials", [])
    if len(a) != len(b):
        return f"{len(a)} trials, not {len(b)}"
    for x, y in zip(a, b, strict=True):
        if x != y:
            return f"trial {x.get('trial')} differs: {x} vs {y}"
    for key in ("target", "select"):
        if old.get(key) != new.get(key):
            return f"{key} {old.get(key)} vs {new.get(key)}"
    return None


def collect(sweep: Sweep, workdir: str, trials: Sequence[Trial] | None = None) -> SweepResult:
    """The records of every trial of ``sweep`` found in ``workdir`` (pending where not run)."""
    trials = list(trials if trials is not None else sweep.trials())
    fields = sweep.swept_fields()
    recs = [records_lib.trial_record(t, workdir, sweep.target, _failure(workdir, t.index),
                                     fields) for t in trials]
    budget = len(sweep.arm_points(next(iter(sweep.arms))))
    return SweepResult(sweep.name, recs, fields, sweep.select, sweep.target, budget,
                       sweep.description, sweep.base.data.spec, reference=sweep.reference,
                       note=sweep.notice, left_out=list(sweep.left_out),
                       clock=spec_lib.clock_text(sweep.base))


def run_sweep(sweep: Sweep, workdir: str | None = None, *,
              trials: tuple[int, int] | str | None = None, mode: str | None = None,
              log: Log = print, write: bool = True, plots: bool = True,
              trial_log: bool = False, share: tuple[int, int] = (0, 1),
              poll_s: float = 2.0, host_memory: str | None = None) -> SweepResult:
    """Run the trials of ``sweep`` (those in ``trials``: (start, end) or "START:END") in
    ``workdir`` (default runs/sweeps/NAME), skip finished ones, and return every trial's record.

    ``mode``: ``alone`` (``fit`` per trial), ``grouped`` (trials that can share one compiled,
    vmapped program train together; the others alone), ``grouped_map`` (the same with the
    trials one after another inside the program, lax.map) or ``auto`` (default: the sweep's
    own ``mode``; see ``group.choose_mode``). ``write``: results.csv/.md/.json (and, with ``plots``,
    the figures) in ``workdir``. ``trial_log``: also show each trial's own log (else it goes to
    ``logs/NNN.log``). ``host_memory``: the allocator policy in effect (``host_memory.apply``'s
    answer), recorded in each trial's summary.json with its step times.

    ``share=(i, n)``: this is process i of n sharing the sweep (on one host or several, the
    folder on a file system they all see). Each runs the trials whose index is i modulo n, then
    any that no process has claimed (a process that never started, or one that died on this
    host); claims keep every trial to one process. Each trial trains on its own process's
    devices. Process 0 then waits until every trial is finished or failed (polling the folder
    every ``poll_s`` seconds, taking over what it can) and alone writes the merged results.
    """
    all_trials = sweep.trials()  # validates the sweep
    workdir = os.path.abspath(workdir or default_workdir(sweep))
    start, end = (parse_trials(trials, len(all_trials)) if isinstance(trials, str | None)
                  else parse_trials(f"{trials[0]}:{trials[1]}", len(all_trials)))
    record = sweep.record()
    check_workdir(workdir, record)
    selected = all_trials[start:end]
    configs = {t.index: sweep.trial_config(t) for t in selected}  # every config valid first
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(os.path.join(workdir, "sweep.json"), record)
    log(sweep.describe())
    todo = [t for t in selected
            if records_lib.finished_summary(records_lib.trial_dir(workdir, t.index)) is None]
    log(f"{len(all_trials)} trials in {workdir}; running {len(todo)} of trials {start}..{end - 1}"
        f" ({len(selected) - len(todo)} already finished)")
    index, count = share
    if not 0 <= index < count:
        raise ValueError(f"share: process {index} of {count} does not exist")
    if count > 1:
        todo = [t for t in todo if t.index % count == index]
        log(f"process {index} of {count}: {len(todo)} of these are its share")
    _claim_and_run(todo, configs, workdir, sweep, mode, log, trial_log, host_memory)
    if count > 1:  # then what nobody has claimed; process 0 until every trial is done
        _run_unclaimed(selected, configs, workdir, sweep, mode, log, trial_log, host_memory,
                       wait=index == 0, poll_s=poll_s)
        if index != 0:
            log(f"process {index}: done; process 0 writes the merged results in {workdir}")
            return collect(sweep, workdir, all_trials)
    result = collect(sweep, workdir, all_trials)
    if write:
        result.write(workdir, log=log, plots=plots)
    log("")
    log(result.table())
    if write:
        log(f"results in {workdir} (results.md, results.csv, figures)")
    return result


def _unfinished(trials: Sequence[Trial], workdir: str) -> list[Trial]:
    return [t for t in trials
            if records_lib.finished_summary(records_lib.trial_dir(workdir, t.index)) is None]


def _claim_and_run(todo: list[Trial], configs: dict, workdir: str, sweep: Sweep,
                   mode: str | None, log: Log, trial_log: bool,
                   host_memory: str | None) -> int:
    """Claim ``todo``, run what this process got; the number of trials run."""
    if not todo:
        return 0
    with claims.held(workdir, [t.index for t in todo], log) as mine:
        # a trial another process finished between the check and the claim: skipped
        todo = [t for t in _unfinished(todo, workdir) if t.index in mine]
        _run_trials(todo, configs, workdir, sweep, mode, log, trial_log, host_memory)
    return len(todo)


def _run_unclaimed(selected: list[Trial], configs: dict, workdir: str, sweep: Sweep,
                   mode: str | None, log: Log, trial_log: bool, host_memory: str | None,
                   *, wait: bool, poll_s: float) -> None:
    """Run the unfinished trials that no live process has claimed (failed ones stay failed);
    with ``wait``, repeat until none is unfinished and unclaimed or running elsewhere."""
    last_note = time.monotonic()
    while True:
        pending = [t for t in _unfinished(selected, workdir)
                   if _failure(workdir, t.index) is None or claims.is_claimed(workdir, t.index)]
        free = [t for t in pending if not claims.is_claimed(workdir, t.index)]
        if free:
            _claim_and_run(free, configs, workdir, sweep, mode, _quiet_skips(log), trial_log,
                           host_memory)
            continue
        if not pending or not wait:
            return
        if time.monotonic() - last_note > 60:
            last_note = time.monotonic()
            log(f"waiting for {len(pending)} trial(s) that other processes are running: "
                f"{', '.join(str(t.index) for t in pending[:10])} (their claims are in "
                f"{os.path.join(workdir, claims.CLAIMS)}; delete the claim of a process that "
                "is gone)")
        time.sleep(poll_s)


def _quiet_skips(log: Log) -> Log:
    """``log`` without the claims' "skipped, another process is running it" lines."""
    return lambda message: None if ": skipped, " in message else log(message)


def _run_trials(todo: list[Trial], configs: dict, workdir: str, sweep: Sweep,
                mode: str | None, log: Log, trial_log: bool, host_memory: str | None) -> None:
    from speechmusic_jax.tuning import group

    if not todo:
        return
    chosen = group.choose_mode(mode or sweep.mode, [configs[t.index] for t in todo])
    grouped = chosen.startswith("grouped")
    units = (group.plan([(t, configs[t.index]) for t in todo]) if grouped
             else [[(t, configs[t.index])] for t in todo])
    log(f"mode: {chosen}" + (f" ({len(units)} program(s) for {len(todo)} trials)"
                             if grouped else ""))
    t0 = time.perf_counter()
    for unit in units:
        if len(unit) == 1:
            _run_alone(unit[0][0], unit[0][1], workdir, sweep, log, trial_log, host_memory)
        else:
            _run_group(unit, workdir, sweep, log, trial_log, host_memory,
                       "map" if chosen == "grouped_map" else "vmap")
    log(f"ran {len(todo)} trial(s) in {time.perf_counter() - t0:.1f}s")


def _trial_logger(log: Log, show: bool) -> tuple[list[str], Log]:
    """(lines, tlog): tlog keeps a trial's messages in lines (for logs/NNN.log) and, with
    ``show``, passes them on to ``log``."""
    lines: list[str] = []

    def tlog(message: str) -> None:
        lines.append(message)
        if show:
            log(message)

    return lines, tlog


def _run_alone(trial: Trial, cfg: Any, workdir: str, sweep: Sweep, log: Log,
               trial_log: bool, host_memory: str | None) -> None:
    from speechmusic_jax.training import loop

    folder = records_lib.trial_dir(workdir, trial.index)
    lines, tlog = _trial_logger(log, trial_log)
    t0 = time.perf_counter()
    try:
        loop.fit(cfg, folder, log=tlog, progress=False, host_memory=host_memory)
        _clear_failure(workdir, trial.index)
    except errors.TrainingDiverged as e:
        tlog(f"training diverged: {e}")
        _clear_failure(workdir, trial.index)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # recorded; the sweep goes on
        tlog(traceback.format_exc())
        _write_failure(workdir, trial.index, e)
    finally:
        _write_log(workdir, trial.index, lines)
    log(_trial_line(trial, workdir, sweep, time.perf_counter() - t0))


def _run_group(unit: list[tuple[Trial, Any]], workdir: str, sweep: Sweep, log: Log,
               trial_log: bool, host_memory: str | None, strategy: str) -> None:
    from speechmusic_jax.training import loop

    lines, tlog = _trial_logger(log, trial_log)
    t0 = time.perf_counter()
    folders = [records_lib.trial_dir(workdir, t.index) for t, _ in unit]
    try:
        loop.fit([c for _, c in unit], folders, log=tlog, progress=False, strategy=strategy,
                 host_memory=host_memory)
        for t, _ in unit:
            _clear_failure(workdir, t.index)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        tlog(traceback.format_exc())
        for t, _ in unit:
            _write_failure(workdir, t.index, e)
    finally:
        for t, _ in unit:
            _write_log(workdir, t.index, lines)
    seconds = time.perf_counter() - t0
    log(f"group of {len(unit)} trials ({unit[0][0].arm}, seed {unit[0][0].seed}) in "
        f"{seconds:.1f}s:")
    for t, _ in unit:
        log("  " + _trial_line(t, workdir, sweep, None))


def _trial_line(trial: Trial, workdir: str, sweep: Sweep, seconds: float | None) -> str:
    rec = records_lib.trial_record(trial, workdir, sweep.target, _failure(workdir, trial.index))
    parts = [f"trial {trial.index:03d} {trial.label}: {rec['status']}"]
    if rec["status"] == "failed":
        parts.append(str(rec.get("error")))
    if rec["status"] == "diverged":
        parts.append(f"at step {rec.get('diverged_at_step')}")
    if rec.get(sweep.select) is not None:
        parts.append(f"{sweep.select} {rec[sweep.select]:.4f}")
    if rec.get("test_accuracy") is not None:
        parts.append(f"test accuracy {rec['test_accuracy']:.4f}")
    if sweep.target and rec["status"] not in ("failed", "pending"):
        parts.append(f"steps to target {rec['steps_to_target']:g}")
    if seconds is not None:
        parts.append(f"({seconds:.1f}s)")
    return ", ".join(parts)


def _failure_path(workdir: str, index: int) -> str:
    return os.path.join(workdir, "failed", f"{index:03d}.json")


def _failure(workdir: str, index: int) -> dict | None:
    path = _failure_path(workdir, index)
    try:
        return read_json(path) if os.path.exists(path) else None
    except (OSError, ValueError):
        return None


def _write_failure(workdir: str, index: int, e: BaseException) -> None:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    atomic_write_json(_failure_path(workdir, index),
                      {"trial": index, "error": f"{type(e).__name__}: {text}"[:500]})


def _clear_failure(workdir: str, index: int) -> None:
    path = _failure_path(workdir, index)
    if os.path.exists(path):
        os.remove(path)


def _write_log(workdir: str, index: int, lines: list[str]) -> None:
    path = os.path.join(workdir, "logs", f"{index:03d}.log")
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            old = f.read()
    atomic_write_text(path, old + "\n".join(lines) + ("\n" if lines else ""))


# ---- comparing optimizers ----------------------------------------------------------------------

# Learning-rate ranges (log-uniform over three decades) around each optimizer's usual values:
# the same kind of space for every arm, centred where that optimizer works.
LR_RANGES: dict[str, tuple[float, float]] = {
    "sgd": (1e-3, 1.0), "momentum": (1e-4, 1e-1), "nesterov": (1e-4, 1e-1),
    "adam": (1e-4, 1e-1), "adamw": (1e-4, 1e-1), "nadam": (1e-4, 1e-1), "nadamw": (1e-4, 1e-1),
    "radam": (1e-4, 1e-1), "adabelief": (1e-4, 1e-1), "yogi": (1e-4, 1e-1),
    "rmsprop": (1e-5, 1e-2), "adagrad": (1e-3, 1.0), "adadelta": (1e-2, 10.0),
    "adafactor": (1e-4, 1e-1), "lamb": (1e-4, 1e-1), "lars": (1e-2, 10.0),
    "lion": (1e-5, 1e-2), "novograd": (1e-4, 1e-1), "schedule_free_adamw": (1e-4, 1e-1),
}
# Each optimizer's own main hyperparameter besides the learning rate: weight decay, for those
# defined with it (decoupled or inside the trust ratio); the others keep the base config's.
WD_RANGE = (1e-5, 1e-1)


def optimizer_space(name: str, lr_range: tuple[float, float] | None = None,
                    tune_weight_decay: bool | None = None) -> dict[str, space_lib.Dist]:
    """The search space of one optimizer arm: learning rate log-uniform (its LR_RANGES range),
    plus weight decay log-uniform for the decoupled and trust-ratio optimizers."""
    from speechmusic_jax.training import optim

    if name not in optim.OPTIMIZERS:
        raise config_lib.ConfigError(f"unknown optimizer {name!r}; known: "
                                     f"{sorted(optim.OPTIMIZERS)}")
    low, high = lr_range or LR_RANGES.get(name, (1e-4, 1e-1))
    axes: dict[str, space_lib.Dist] = {"optimizer.learning_rate": space_lib.loguniform(low, high)}
    decays = name in optim.DECOUPLED | optim.TRUST_RATIO
    if tune_weight_decay if tune_weight_decay is not None else decays:
        axes["optimizer.weight_decay"] = space_lib.loguniform(*WD_RANGE)
    return axes


def optimizer_arms(names: Sequence[str], base: Any) -> tuple[dict[str, dict], list[str]]:
    """(arms, left_out): one arm per optimizer that can train ``base`` as it is, and one line for
    each that cannot. The workload (network, data, loss) is the same for every arm; only the
    optimizer's own settings differ (schedule-free AdamW brings the constant schedule it
    replaces). An optimizer that the workload rules out (schedule-free AdamW with batch norm,
    whose running statistics would not match its averaged weights) is left out and said so,
    never run on a changed network: that would confound the optimizer with the architecture."""
    from speechmusic_jax.training import optim

    config_lib.validate(base)  # an invalid base is the user's error, not an arm's
    arms, left_out = {}, []
    for name in names:
        fixed: dict[str, Any] = {"optimizer.name": name}
        if name in optim.SCHEDULE_FREE:
            fixed["optimizer.schedule"] = "constant"
        try:
            config_lib.validate(space_lib.apply(base, fixed))
        except config_lib.ConfigError as e:
            left_out.append(f"left out: {name} cannot run on this workload ({e})")
            continue
        arms[name] = fixed
    return arms, left_out


def optimizer_sweep(base: Any, optimizers: Sequence[str], *, budget: int = 8,
                    seeds: int | Sequence[int] = 3, target: tuple[str, float] | None = None,
                    search: str = "halton", name: str = "compare_optimizers",
                    lr_ranges: dict[str, tuple[float, float]] | None = None,
                    search_seed: int = 0, mode: str = "auto",
                    reference: str | None = None) -> Sweep:
    """The sweep :func:`compare_optimizers` runs (also what experiments/sweeps/optimizers.py
    builds): every optimizer an arm with the same budget of the same kind of search, on the same
    workload (an optimizer that cannot run on it is left out, see ``optimizer_arms``).
    ``reference``: the arm to compare the others with (default: the best on validation)."""
    if len(set(optimizers)) != len(optimizers) or not optimizers:
        raise config_lib.ConfigError(f"optimizers: need distinct names (got {list(optimizers)})")
    lr_ranges = lr_ranges or {}
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    arms, left_out = optimizer_arms(optimizers, base)
    if not arms:
        raise config_lib.ConfigError("optimizers: none can run on this workload: "
                                     + "; ".join(left_out))
    return Sweep(
        name=name, base=copy.deepcopy(base), arms=arms, left_out=left_out,
        reference=reference,
        arm_space={o: optimizer_space(o, lr_ranges.get(o)) for o in arms},
        search=search, budget=budget, seeds=seeds, target=target, search_seed=search_seed,
        mode=mode,
        description=(f"Optimizers {', '.join(arms)}: each tuned with {budget} "
                     f"{'Halton' if search == 'halton' else search} "
                     "points (learning rate log-uniform over its range; weight decay "
                     "log-uniform for the decoupled and trust-ratio ones), each point run with "
                     f"seeds {list(seeds)}."))


def compare_optimizers(base_config: Any, optimizers: Sequence[str], *, budget: int = 8,
                       seeds: int | Sequence[int] = 3, target: tuple[str, float] | None = None,
                       workdir: str | None = None, search: str = "halton",
                       lr_ranges: dict[str, tuple[float, float]] | None = None,
                       mode: str | None = None, log: Log = print,
                       name: str = "compare_optimizers", reference: str | None = None,
                       **kwargs: Any) -> SweepResult:
    """Compare ``optimizers`` on ``base_config`` fairly: the same tuning budget of the same kind
    of search space for each, the same seeds (split, initial weights, batches) for all, in
    ``workdir`` (default ``runs/sweeps/NAME`` under the current folder); logs the verdict and
    the per-arm table at the end and returns the per-trial records with per-arm summaries (see
    :class:`SweepResult`). ``reference``: the arm the others are compared with (default: the
    one with the best mean validation score).

        cfg = load_experiment("experiments/default.py")
        result = compare_optimizers(cfg, ["momentum", "adam", "adamw", "lion"], budget=8,
                                    seeds=3, target=("val_accuracy", 0.9), workdir="runs/opt")
        result.verdict(); result.arms(); result.best(); result.paired("adamw", "momentum")
    """
    sweep = optimizer_sweep(base_config, optimizers, budget=budget, seeds=seeds, target=target,
                            search=search, name=name, lr_ranges=lr_ranges, reference=reference)
    return run_sweep(sweep, workdir, mode=mode, log=log, **kwargs)


def interrupt_note(sweep: Sweep, workdir: str) -> str:
    """What an interrupt leaves of the sweep in ``workdir``, in one clause (read from the
    files, so it is true whatever was running)."""
    workdir = os.path.abspath(workdir)
    if not os.path.exists(os.path.join(workdir, "sweep.json")):
        return "nothing was written"
    trials = sweep.trials()
    done = sum(records_lib.finished_summary(records_lib.trial_dir(workdir, t.index)) is not None
               for t in trials)
    return (f"{done} of {len(trials)} trials are finished and kept in {workdir}; the same "
            "command skips them and resumes the rest (a trial that was training, from its last "
            "checkpoint)")


def replace(sweep: Sweep, **changes: Any) -> Sweep:
    """A copy of ``sweep`` with ``changes`` (e.g. ``mode="alone"``)."""
    return dataclasses.replace(sweep, **changes)
