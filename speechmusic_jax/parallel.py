"""Data parallelism: a 1D device mesh, batches split over it, state replicated.

On one device this is a no-op placement; on several (GPUs, TPU cores, or CPU devices made with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) jit partitions the step over the batch.
Across processes (:mod:`speechmusic_jax.distributed`) the mesh spans every process's devices,
each process's devices form one contiguous block of it, and each process supplies the rows of
the global batch that its devices hold (:func:`put_batch`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class Scope:
    """The devices one run trains on, and the processes that share it.

    ``global_scope()``: every device of every process (a multi-process run, or an ordinary one
    when there is one process). ``local_scope()``: this process's devices only, for work that
    each process does on its own (a sweep's trials, evaluation of its share of the files).
    """

    mesh: Mesh
    process_index: int  # this process's place among the run's processes
    process_count: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and prints its log."""
        return self.process_index == 0

    @property
    def multiprocess(self) -> bool:
        return self.process_count > 1

    def rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process reads and supplies."""
        n = batch_size // self.process_count
        return slice(self.process_index * n, (self.process_index + 1) * n)


def global_scope() -> Scope:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Scope(make_mesh(devices), jax.process_index(), jax.process_count())


def local_scope() -> Scope:
    return Scope(make_mesh(jax.local_devices()), 0, 1)


def make_mesh(devices: list | None = None) -> Mesh:
    devices = devices or jax.devices()
    return Mesh(np.asarray(devices), ("data",))


def group_mesh(trials: int, devices: list | None = None, trial_axis: int | None = None) -> Mesh:
    """A 2D mesh ("trial", "data") for a group of ``trials`` trained together: the stacked
    trials split over the first axis, each trial's batch over the second. ``trial_axis``: the
    size of the first (default: the largest that divides both the device count and
    ``trials``, so that on several devices each trains whole trials on the whole batch and
    nothing but the batch crosses between them)."""
    devices = devices or jax.devices()
    n = len(devices)
    if trial_axis is None:
        trial_axis = max(t for t in range(1, n + 1) if n % t == 0 and trials % t == 0)
    if trial_axis < 1 or n % trial_axis or trials % trial_axis:
        raise ValueError(f"trial axis of {trial_axis}: it must divide both the {n} devices "
                         f"and the {trials} trials")
    return Mesh(np.asarray(devices).reshape(trial_axis, n // trial_axis), ("trial", "data"))


def trial_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays with a leading trial axis (a group's states and hyperparameters), split over the
    mesh's "trial" axis (replicated when it has none)."""
    return NamedSharding(mesh, PartitionSpec("trial") if "trial" in mesh.axis_names
                         else PartitionSpec())


def put_trials(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, trial_sharding(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """``tree`` on every device of ``mesh``. Across processes every process must pass the same
    values (they go through the host, as each process holds only its own devices)."""
    if _spans_processes(mesh):
        tree = to_host(tree)
    return jax.device_put(tree, replicated(mesh))


def put_batch(arrays: tuple[np.ndarray, ...], mesh: Mesh) -> tuple[jax.Array, ...]:
    """Global batches split over ``mesh``; across processes each array holds this process's rows
    only (:meth:`Scope.rows`) and the global batch is assembled from every process's rows."""
    sharding = batch_sharding(mesh)
    if _spans_processes(mesh):
        return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)
    return tuple(jax.device_put(a, sharding) for a in arrays)


def to_host(tree: Any) -> Any:
    """``tree`` as numpy arrays. Arrays that span processes must be replicated (as the state
    and the step's metrics are); each process reads its own copy."""

    def one(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            if not a.is_fully_replicated:
                raise ValueError("to_host: an array split over processes has no local copy")
            return np.asarray(a.addressable_data(0))
        return jax.device_get(a)

    return jax.tree.map(one, tree)


def check_divisible(batch_size: int, mesh: Mesh, field: str) -> None:
    """The batch splits evenly over the mesh's "data" axis (its devices, when it has one)."""
    n = dict(mesh.shape).get("data", mesh.devices.size)
    if batch_size % n:
        raise ValueError(f"{field}: {batch_size} does not divide over {n} devices; "
                         f"use a multiple of {n}")


def _spans_processes(mesh: Mesh) -> bool:
    return len({d.process_index for d in mesh.devices.flat}) > 1
