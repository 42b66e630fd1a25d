"""How a sweep's trials are grouped: which train together as one program, and in which mode.

Trials whose configs are equal but for the learning rate, the weight decay, the label smoothing,
the L1 and L2 penalties and the dropout rates (same seed, model, optimizer, schedule, batch
size, epochs; ``builder.group_key`` decides) can form a group, which ``training.loop.fit``
trains as one stack: the trials' states on a leading axis, one compiled step (``vmap`` over the
trials, or ``map``: one after another inside the program) taking every trial through the same
batch (a paired design); see :mod:`training.stack`. Each trial is then a run like one alone:
its own early stopping, best and last checkpoints, folder and summary (with ``grouped``), and
a killed group resumes. Here: whether to group (:func:`choose_mode`), how to split the trials
into groups (:func:`plan`), and a timing of the modes (:func:`time_modes`).

Trial i trained in a group equals trial i trained alone to float rounding
(tests/test_tuning_group.py), with Adam and batch norm too: the conv biases that batch norm
cancels, whose gradient is zero but for rounding noise that Adam would scale up to +-lr steps
(which moved the validation loss by up to ~1e-3), get no updates (``optim.without_updates``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from speechmusic_jax import config as config_lib
from speechmusic_jax import parallel, timing
from speechmusic_jax.training import builder, stack

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
    x, y, w = stack.probe_batch(built, mesh)
    key = builder.dropout_key(cfg)
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
            keys = builder.group_keys(cfgs)

            def run_group(step=step, active=active, hyper=group.hyper, keys=keys):
                nonlocal states
                states, m, _ = step.fn(states, hyper, active, x, y, w, keys)
                return m

            with timing.OtherLoad() as load:
                times = _timed(run_group, steps)
            out.append({"mode": strategy, "size": size,
                        "ms_per_trial": statistics.median(times) * 1e3 / size,
                        "compile_s": step.compile_s, "other_load_cores": load.cores})
            log(f"{strategy} x{size}: {out[-1]['ms_per_trial']:.1f} ms per trial-step "
                f"(compile {step.compile_s:.1f}s, other load {load.cores or 0:.2f} cores)")
    return out
