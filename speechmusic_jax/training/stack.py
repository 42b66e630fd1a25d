"""A stack of N >= 2 trials that ``fit`` trains as one compiled program.

Trials whose configs differ only in traced hyperparameters (``builder.group_key``) share a
program: their states are stacked on a leading trial axis, the optimizer holds each trial's
learning rate and weight decay in its state, the step's other traced hyperparameters are
inputs (``builder.BuiltGroup.hyper``), and one compiled step (``vmap`` over the trials, or
``map``: one after another inside the program) takes every trial through the same batch.
A trial alone (N = 1) has no trial axis and none of this: ``fit`` then runs the plain step.

What the loop needs of a stack, and nothing of the loop: the compiled steps, the trials'
evaluation in one pass over the windows, the slices between the stacked state and each
trial's own (the layout of a run alone, in which its checkpoints are written and read back),
and the step time of each trial's program measured alone (:func:`calibrate`), from which a
grouped trial's times are derived, so that they mean what the same trial alone would report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from speechmusic_jax import parallel, timing
from speechmusic_jax.training import builder, clip_scoring
from speechmusic_jax.training.step import TrainState

CALIBRATION_STEPS = 8  # timed steps of a trial's program alone (after one untimed)


@dataclasses.dataclass(frozen=True)
class Alone:
    """A trial's program compiled alone, as ``fit`` would run it: its compile time, FLOPs and
    the step times of a short calibration (compilation excluded; :func:`calibrate`)."""

    compile_s: float
    flops_per_example: float | None
    step_times: list[float]

    @property
    def step_s(self) -> float:
        """The median step."""
        return float(np.median(self.step_times))


@dataclasses.dataclass(frozen=True)
class Stack:
    group: builder.BuiltGroup
    strategy: str  # "vmap" or "map"
    mesh: Mesh  # ("trial", "data"): the trials over the first axis, each batch over the second
    hyper: Any  # group.hyper on the devices
    keys: jax.Array  # the trials' dropout keys
    evaluate: Callable  # (stacked state, x) -> (batch, trials * classes) logits
    alone: tuple[Alone, ...]  # per trial: its program alone
    _padded: dict = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.group.size

    def initial(self) -> TrainState:
        return jax.tree.map(np.asarray, self.group.state)

    def put(self, state: TrainState) -> TrainState:
        return parallel.put_trials(state, self.mesh)

    def active(self, mask: np.ndarray | jax.Array) -> jax.Array:
        """The group step's ``active`` input, placed as the compiled step expects it (a step's
        own ``good`` output stays on the devices: no wait for the host)."""
        if isinstance(mask, np.ndarray):
            mask = np.asarray(mask, bool)
        return jax.device_put(mask, parallel.trial_sharding(self.mesh))

    def trial_states(self, state: TrainState) -> list[TrainState]:
        """Every trial's (host) state in a run alone's layout."""
        host = jax.device_get(state)
        return [self.trial_state(host, i) for i in range(self.size)]

    def trial_state(self, host: TrainState, i: int) -> TrainState:
        """Trial ``i`` of a host (numpy) stacked state, in a run alone's layout (arrays, not
        numpy scalars: what orbax writes and restores)."""
        return jax.tree.map(np.asarray, self.group.trial_state(host, i))

    def with_trials(self, state: TrainState, plain: dict[int, TrainState]) -> TrainState:
        """The stacked (host) ``state`` with the trials of ``plain`` (index -> a run alone's
        layout) put in."""
        host = jax.device_get(state)
        for i, one in plain.items():
            host = self.group.with_trial(host, i, one)
        return host

    def step_for(self, padded: bool, state: TrainState) -> builder.Compiled | None:
        """The group's step for batches with padding rows, compiled on first need."""
        if not padded:
            return None
        if not self._padded:
            self._padded["step"] = builder.compile_group_train_step(
                self.group, state, self.mesh, padded=True, strategy=self.strategy)
        return self._padded["step"]

    def split(self, logits: np.ndarray, files: Sequence, clip: np.ndarray,
              classes: int) -> list[clip_scoring.Predictions]:
        """Per trial, the predictions of the group's (windows, trials * classes) logits."""
        logits = logits.reshape(-1, self.size * classes)
        return [clip_scoring.assemble(files, logits[:, i * classes:(i + 1) * classes], clip)
                for i in range(self.size)]


def build(cfgs: Sequence[Any], steps_per_epoch: int, weights: tuple[Any, Any] | None, *,
          strategy: str, trial_axis: int | None, log: Callable[[str], None]) -> Stack:
    """The stack of ``cfgs``: built, placed on a trial mesh, its steps compiled and each
    distinct program alone timed."""
    if strategy not in builder.GROUP_STRATEGIES:
        raise ValueError(f"strategy: unknown {strategy!r}; known: {builder.GROUP_STRATEGIES}")
    mesh = parallel.group_mesh(len(cfgs), trial_axis=trial_axis if strategy == "vmap" else 1)
    group = builder.build_group(cfgs, steps_per_epoch, weights)
    evaluate = jax.jit(builder.group_eval_fn(group))
    programs: dict[tuple, Alone] = {}
    for b in group.builts:
        key = builder.alone_program(b.cfg)
        if key not in programs:
            programs[key] = calibrate(b, parallel.make_mesh(list(mesh.devices.flat)))
            log(f"a trial's program alone: compiled in {programs[key].compile_s:.2f}s, "
                f"{programs[key].step_s * 1e3:.1f} ms a step (median of "
                f"{len(programs[key].step_times)}; the times a grouped trial reports are "
                "derived from it)")
    alone = tuple(programs[builder.alone_program(b.cfg)] for b in group.builts)
    trials = parallel.trial_sharding(mesh)
    return Stack(group, strategy, mesh, jax.device_put(group.hyper, trials),
                 jax.device_put(builder.group_keys(cfgs), trials), evaluate, alone)


def calibrate(built: builder.Built, mesh: Mesh, steps: int = CALIBRATION_STEPS) -> Alone:
    """Compile ``built``'s plain train step and time ``steps`` steps of it on a probe batch
    (after one untimed step), each waited for: with no host work between them there is nothing
    for a queued step to overlap, so a step's wall time is its time alone, and every step has
    one (the watcher of ``StepClock`` may tell none apart on a busy machine)."""
    state = parallel.put_replicated(jax.tree.map(jnp.copy, built.state), mesh)
    compiled = builder.compile_train_step(built, state, mesh)
    x, y, w = probe_batch(built, mesh)
    key = builder.dropout_key(built.cfg)

    def step() -> Any:
        nonlocal state
        state, m = compiled.fn(state, x, y, w, key)
        return m

    busy = timing.time_calls(step, steps, warmup=1)
    return Alone(compiled.compile_s, compiled.flops_per_example, busy)


def probe_batch(built: builder.Built, mesh: Mesh) -> tuple[jax.Array, ...]:
    """A batch of noise at the config's batch size (speed does not depend on the values)."""
    bs = built.cfg.train.batch_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((bs, built.segment)).astype(np.float32) * 0.1
    y = (np.arange(bs) % len(built.cfg.data.classes)).astype(np.int32)
    return parallel.put_batch((x, y, np.ones(bs, np.float32)), mesh)
