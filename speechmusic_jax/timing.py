"""Measuring the compiled step: compile time, FLOPs, step times, memory, inference speed.

Every timing here excludes compilation (functions are compiled ahead with ``lower().compile()``)
and blocks on the result before reading the clock.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def compile_ahead(fn: Callable, *args: Any, donate_argnums: tuple[int, ...] = ()) -> tuple[
        Any, float, float | None]:
    """jit + lower + compile ``fn`` for ``args``: (compiled, seconds, FLOPs per call or None).

    The FLOPs are those of the whole call: XLA's cost analysis of a program partitioned over
    several devices counts one device's share, so it is multiplied by the number of devices the
    arguments are placed on (our programs split the batch evenly over them).
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
    seconds = time.perf_counter() - t0
    per_device = flops_of(compiled)
    return compiled, seconds, per_device * devices_of(args) if per_device else None


def devices_of(args: Any) -> int:
    """The number of devices the arrays (or ShapeDtypeStructs) in ``args`` are placed on."""
    counts = [len(s.device_set) for leaf in jax.tree_util.tree_leaves(args)
              if (s := getattr(leaf, "sharding", None)) is not None]
    return max(counts, default=1)


def flops_of(compiled: Any) -> float | None:
    """FLOPs of one call on one device from XLA's cost analysis (None where the backend does not
    say). Given a ``Lowered`` program (not compiled), the count before XLA's optimisations and
    partitioning: the whole call's."""
    return _cost(compiled, "flops")


def bytes_accessed(compiled: Any) -> float | None:
    """Bytes one call reads and writes on one device, by XLA's cost analysis (None where the
    backend does not say)."""
    return _cost(compiled, "bytes accessed")


def _cost(compiled: Any, key: str) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    value = float(cost.get(key, 0.0)) if cost else 0.0
    return value if value > 0 else None


def summarize_ms(seconds: list[float | None]) -> dict[str, float] | None:
    """Median, min and max in ms of the steps that were timed (None: a step whose time is not
    known, see training/step_clock.py); ``n``: every step, ``timed``: those in the figures."""
    if not seconds:
        return None
    ms = [s * 1e3 for s in seconds if s is not None]
    if not ms:
        return {"n": len(seconds), "timed": 0}
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(seconds),
            "timed": len(ms)}


def peak_memory() -> tuple[int, str]:
    """Peak memory in bytes: the device's allocator peak where it reports one, else host RSS."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        stats = None
    if stats and stats.get("peak_bytes_in_use"):
        return int(stats["peak_bytes_in_use"]), "device"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss * (1 if sys.platform == "darwin" else 1024)), "host_rss"


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (blocked on), after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def inference_speed(
    predict: Callable[[Any], Any], batch: np.ndarray, sample_rate: int, repeats: int = 10
) -> dict[str, float]:
    """Examples/s at the batch's size, batch-1 latency, and real-time factor.

    ``predict`` must be compiled for both shapes before (or its first call is the warm-up).
    The real-time factor is seconds of audio classified per second of compute at the batch size.
    """
    xb = jax.device_put(batch)
    x1 = jax.device_put(batch[:1])
    t_batch = statistics.median(time_calls(lambda: predict(xb), repeats))
    t_one = statistics.median(time_calls(lambda: predict(x1), repeats))
    n, length = batch.shape
    return {
        "examples_per_s": n / t_batch,
        "latency_ms_batch1": t_one * 1e3,
        "realtime_factor": n * length / sample_rate / t_batch,
        "batch_size": n,
    }


class OtherLoad:
    """CPU cores used by *other* processes during a block (Linux /proc/stat; None elsewhere).

    ``with OtherLoad() as load: ...`` then ``load.cores``: a figure above about 0.1 means the
    timing shared the machine and is not to be trusted. ``also_mine``: process ids whose work
    is part of the measurement (a worker process being timed), not other load.
    """

    def __init__(self, also_mine: tuple[int, ...] = ()) -> None:
        self.also_mine = also_mine

    def _mine(self) -> float:
        return time.process_time() + sum(_process_seconds(pid) or 0.0 for pid in self.also_mine)

    def __enter__(self) -> OtherLoad:
        self.cores: float | None = None
        self._start = (_busy_seconds(), self._mine(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy0, cpu0, wall0 = self._start
        busy1 = _busy_seconds()
        if busy0 is None or busy1 is None:
            return
        wall = time.perf_counter() - wall0
        mine = self._mine() - cpu0
        self.cores = max(0.0, ((busy1 - busy0) - mine) / wall) if wall > 0 else None


def _process_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) that process ``pid`` has used (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {"device_kind": devices[0].device_kind, "device_count": len(devices),
            "backend": jax.default_backend(), "cpu_model": cpu_model()}


def cpu_model() -> str | None:
    """The host CPU's model name (/proc/cpuinfo; ``platform.processor()`` elsewhere): CPU
    timings and the speed of other frameworks depend on it, so it goes beside every figure."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def now() -> float:
    return time.perf_counter()


def versions() -> dict[str, str | None]:
    import flax
    import jaxlib
    import optax

    from speechmusic_jax.provenance import code_version

    return {"python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            **code_version()}
