"""Several processes, one run: starting JAX's distributed runtime, and the few collectives the
loop needs on the host.

A run spans processes when the flags or the cluster environment say so::

    --coordinator_address=HOST:PORT --num_processes=N --process_id=I    plain machines, localhost
    srun with more than one task (SLURM), mpirun (Open MPI)              detected from the env
    JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES, JAX_PROCESS_ID)        JAX's own variables
    --distributed=on                                                     let JAX detect (TPU pods)

and then :func:`initialize` calls ``jax.distributed.initialize`` once, before any other JAX call.
After it ``jax.devices()`` lists every process's devices and a mesh over them spans the hosts.
Nothing changes for a single process: no runtime is started and every helper here is a no-op.
On CPUs the cross-process collectives use gloo.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np

MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process was asked to start: the distributed flags, as given."""

    mode: str = "auto"  # auto: start when flags or the environment name several processes
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def detected_cluster(env: Mapping[str, str] | None = None) -> str | None:
    """The cluster environment that launched this process as one of several, if any."""
    env = os.environ if env is None else env

    def several(var: str) -> bool:
        try:
            return int(env.get(var, "1")) > 1
        except ValueError:
            return False

    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and several("SLURM_NTASKS"):
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and several("OMPI_COMM_WORLD_SIZE"):
        return "Open MPI"
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    return None


def process_share(num_processes: int | None = None, process_id: int | None = None,
                  env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(this process's index, number of processes) of independent processes that share work
    (a sweep's trials): from the flags, else SLURM or Open MPI, else (0, 1). No runtime starts."""
    env = os.environ if env is None else env
    if (num_processes is None) != (process_id is None):
        raise ValueError("--num_processes and --process_id go together")
    if num_processes is not None and process_id is not None:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id: {process_id} is not in 0..{num_processes - 1}")
        return process_id, num_processes
    for rank, size in (("SLURM_PROCID", "SLURM_NTASKS"),
                       ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        if rank in env and size in env:
            try:
                return int(env[rank]), int(env[size])
            except ValueError:
                raise ValueError(f"${rank}={env[rank]!r}, ${size}={env[size]!r}: not "
                                 "integers") from None
    return 0, 1


def wanted(launch: Launch, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``launch`` asks for the distributed runtime; ValueError names a bad flag."""
    if launch.mode not in MODES:
        raise ValueError(f"--distributed: must be one of {MODES}, got {launch.mode!r}")
    given = {"coordinator_address": launch.coordinator_address,
             "num_processes": launch.num_processes, "process_id": launch.process_id}
    if launch.mode == "off":
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise ValueError(f"--distributed=off contradicts --{named[0]}")
        return False
    if launch.num_processes is not None and launch.num_processes < 1:
        raise ValueError(f"--num_processes: must be at least 1, got {launch.num_processes}")
    if launch.process_id is not None:
        if launch.process_id < 0:
            raise ValueError(f"--process_id: must be >= 0, got {launch.process_id}")
        if launch.num_processes is not None and launch.process_id >= launch.num_processes:
            raise ValueError(f"--process_id: {launch.process_id} is not below --num_processes="
                             f"{launch.num_processes}")
    if launch.mode == "on":
        return True
    if launch.coordinator_address is not None:
        missing = [k for k in ("num_processes", "process_id") if given[k] is None]
        if missing and detected_cluster(env) is None:
            raise ValueError(f"--coordinator_address needs --{missing[0]} as well (or a "
                             "cluster environment that tells it)")
        return launch.num_processes != 1
    if launch.num_processes is not None or launch.process_id is not None:
        if detected_cluster(env) is None:
            raise ValueError("--num_processes and --process_id need --coordinator_address=HOST:"
                             "PORT (the address of process 0)")
        return True
    return detected_cluster(env) is not None


def initialize(launch: Launch, log: Callable[[str], None] = print) -> bool:
    """Start JAX's distributed runtime when ``launch`` asks for it; True when it did.

    Must come before anything else touches JAX's devices. The coordinator (process 0) waits for
    the others; every process returns once all have joined.
    """
    if not wanted(launch):
        return False
    import jax

    # CPU devices of different processes talk over gloo; GPUs and TPUs use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=launch.coordinator_address,
                               num_processes=launch.num_processes,
                               process_id=launch.process_id)
    log(f"distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local of {jax.device_count()} devices "
        f"({jax.devices()[0].platform})")
    return True


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier ``name`` (no-op for one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every process's ``rows`` (the same trailing shape and dtype, any number of rows),
    concatenated in process order; identical on every process. One process: ``rows``.
    32-bit dtypes only: the gather goes through JAX, which would narrow 64-bit values."""
    import jax

    if jax.process_count() == 1:
        return rows
    if rows.dtype.itemsize > 4:
        raise TypeError(f"gather_rows: {rows.dtype} would be narrowed; gather 32-bit values")
    from jax.experimental import multihost_utils

    counts = multihost_utils.process_allgather(np.asarray([len(rows)], np.int64))
    counts = np.asarray(counts).reshape(-1)
    padded = np.zeros((int(counts.max()), *rows.shape[1:]), rows.dtype)
    padded[: len(rows)] = rows
    stacked = np.asarray(multihost_utils.process_allgather(padded))  # (processes, max, ...)
    return np.concatenate([stacked[p, : counts[p]] for p in range(len(counts))])


def gather_objects(obj: object, multiprocess: bool = True) -> list:
    """Every process's ``obj`` (JSON-serialisable), in process order; ``[obj]`` for one."""
    import json

    if not multiprocess:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    lengths = gather_rows(np.asarray([len(data)], np.int32))
    joined = gather_rows(data).tobytes()
    out, at = [], 0
    for n in lengths:
        out.append(json.loads(joined[at: at + int(n)]))
        at += int(n)
    return out
