"""Data parallelism: a 1D device mesh, batches split over it, state replicated.

On one device this is a no-op placement; on several (GPUs, TPU cores, or CPU devices made with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) jit partitions the step over the batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: list | None = None) -> Mesh:
    devices = devices or jax.devices()
    return Mesh(np.asarray(devices), ("data",))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))


def put_batch(arrays: tuple[np.ndarray, ...], mesh: Mesh) -> tuple[jax.Array, ...]:
    sharding = batch_sharding(mesh)
    return tuple(jax.device_put(a, sharding) for a in arrays)


def check_divisible(batch_size: int, mesh: Mesh, field: str) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{field}: {batch_size} does not divide over {n} devices; "
                         f"use a multiple of {n}")
