"""Timing train steps without waiting for them.

The loop dispatches step k and only then fetches step k-1's metrics, so the device always has
the next step queued (on a GPU or TPU the host's work between steps, such as assembling the
next batch, overlaps the device's). Timing a step by blocking on it would undo that, so a
watcher thread waits for each step's result instead and notes when it completed. From the
moments each step was submitted and completed:

    busy(k) = done(k) - max(done(k-1), submitted(k))     the device's time on step k
    idle(k) = max(0, submitted(k) - done(k-1))           the device waiting for the host

``idle`` counts only the gaps between steps of an epoch (not the time before its first step,
which is validation and start-up). The watcher learns of a completion when the runtime reports
it, so a busy time includes the runtime's own overhead of one step, as a blocked timing does.

The watcher is a Python thread: on a busy host (or while another thread holds the GIL) it can
learn of step k-1's completion late, after step k has already completed too. ``done(k-1)`` is
then late by up to a step and ``done(k) - done(k-1)`` measures the watcher, not the device
(a "step" of 0.1 ms beside steps of 180 ms, and the step before it as much too long). Such a
step is recognised (it was already complete when the watcher came to it, and it was submitted
before the watcher had noted the previous one's end), and it and the step before it have no
time of their own: ``busy`` holds None for both. Their sum is still right, but its split is
not known.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

import jax


class StepClock:
    """``submit()`` before dispatching a step, ``dispatched(outputs, token)`` after; ``close()``
    returns (busy seconds per step, None where not measured; idle seconds between steps)."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._submitted: list[float] = []
        self._done: list[float] = []
        self._ready_before: list[bool] = []  # complete before the watcher came to it
        self._thread = threading.Thread(target=self._watch, daemon=True, name="step-clock")
        self._thread.start()

    @staticmethod
    def submit() -> float:
        return time.perf_counter()

    def dispatched(self, outputs: Any, submitted: float) -> None:
        self._submitted.append(submitted)
        self._queue.put(outputs)

    def _watch(self) -> None:
        while True:
            outputs = self._queue.get()
            if outputs is None:
                return
            ready = _is_ready(outputs)
            with contextlib.suppress(Exception):  # the loop meets it when it fetches
                jax.block_until_ready(outputs)
            self._done.append(time.perf_counter())
            self._ready_before.append(ready)

    def close(self) -> tuple[list[float | None], float]:
        """Wait for the steps dispatched so far; (busy seconds per step, None for a step whose
        time is not known; idle seconds). May be called again (the same figures)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return account(self._submitted, self._done, self._ready_before)


def _is_ready(outputs: Any) -> bool:
    """Whether every array of a step's outputs is complete now (without waiting)."""
    try:
        return all(leaf.is_ready() for leaf in jax.tree_util.tree_leaves(outputs)
                   if hasattr(leaf, "is_ready"))
    except Exception:  # a failed step: the loop meets its error when it fetches
        return False


def account(submitted: list[float], done: list[float],
            ready_before: list[bool] | None = None) -> tuple[list[float | None], float]:
    """(busy seconds per step, idle seconds between steps) from the moments each step was
    submitted and seen complete (module docstring). ``ready_before[k]``: step k was complete
    before the watcher came to it; when, besides, it was submitted before the watcher noted
    step k-1's end, neither step's own time is known and both are None."""
    busy: list[float | None] = []
    idle = 0.0
    for k, (sub, end) in enumerate(zip(submitted, done, strict=False)):
        previous = done[k - 1] if k else sub
        busy.append(end - max(previous, sub))
        if k:
            idle += max(0.0, sub - previous)
            if ready_before and ready_before[k] and previous > sub:
                busy[k - 1] = busy[k] = None
    return busy, idle
