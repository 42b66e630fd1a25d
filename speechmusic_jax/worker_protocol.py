"""What the timed processes of ``benchmark --compare=torch`` share: thread pinning and the
request loop (:mod:`speechmusic_jax.compare_worker` for JAX, :mod:`speechmusic_jax.torch_reference`
for PyTorch).

Each side runs in a process of its own, started once per batch size and then asked for blocks of
steps on stdin, one request per line, one JSON answer per line on stdout::

    info                 -> what the process is (parameters, versions, threads, allocator, ...)
    train N              -> {"step_s": [N train step times]}
    infer N BATCH        -> {"step_s": [N forward times at batch BATCH]}
    quit

Standard library only: the PyTorch process imports nothing of JAX.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable


def pin_threads(threads: int) -> list[int] | None:
    """Keep this process on the first ``threads`` cores it may use (Linux), before a framework
    sizes its thread pools: XLA's CPU pool takes one thread per core it may run on. Returns the
    cores, or None where the OS cannot pin (nothing changes then)."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    return cores


def threads_named(prefix: str) -> int | None:
    """How many threads of this process have a name starting with ``prefix`` (Linux /proc;
    None elsewhere): the size of a thread pool as it is, not as it was asked for."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    n = 0
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm", encoding="utf-8") as f:
                n += f.read().startswith(prefix)
        except OSError:
            continue
    return n


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """Wall seconds of ``n`` calls of ``fn`` (which must return only when its work is done)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def serve(info: Callable[[], dict], train: Callable[[int], list[float]],
          infer: Callable[[int, int], list[float]]) -> None:
    """Answer the requests of the module docstring on stdin until ``quit`` or end of input:
    ``train(n)`` times n train steps, ``infer(n, batch)`` n forward passes (see :func:`timed`)."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "quit":
                break
            if words[0] == "info":
                answer = info()
            elif words[0] == "train" and len(words) == 2:
                answer = {"step_s": train(int(words[1]))}
            elif words[0] == "infer" and len(words) == 3:
                answer = {"step_s": infer(int(words[1]), int(words[2]))}
            else:
                answer = {"error": f"unknown request {line.strip()!r}"}
        except Exception as e:  # one line back to the caller, which reports it
            answer = {"error": f"{type(e).__name__}: {str(e).strip()[-800:]}"}
        print(json.dumps(answer), flush=True)
