"""How the process's C allocator treats freed memory: keep it for reuse, or give it back.

On a CPU, XLA allocates every large buffer of a compiled step afresh at each call and frees it
at the end. glibc's malloc serves requests above 32 MiB with a fresh ``mmap`` and returns them to
the OS on ``free``, so each step touches its buffers for the first time and the kernel zeroes
every 4 KiB page on that touch: about 190,000 page faults (760 MiB) per paper-M5 train step.
Without them the paper M5's step took 23 % less time and the default experiment's 18 % less
(docs/benchmarks.md). ``keep`` asks glibc to serve large buffers from its heap and not to trim
it, so the next step reuses the same pages. The process's resident memory then stays at its peak
instead of falling between steps.

``keep`` uses one malloc arena for the threads that start after it: with several arenas, large
buffers still came from fresh pages. The one arena costs latency at batch 1 (0.1-0.5 ms per call
of the default model), which ``release`` avoids.

This module imports nothing but the standard library: the PyTorch worker of
``benchmark --compare=torch`` applies the same policy, so both sides run under one allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

POLICIES = ("keep", "release")
DEFAULT = "keep"  # what the commands run under unless --host_memory says otherwise

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def apply(policy: str) -> str:
    """Apply ``policy`` ('keep' or 'release') to this process; return what is in effect.

    'release' leaves the allocator as the process started. 'keep' works with glibc only; with
    another C library the answer is 'release (not glibc)' and nothing changes.
    """
    if policy not in POLICIES:
        raise ValueError(f"host memory policy must be one of {POLICIES}, not {policy!r}")
    if policy == "release":
        return "release"
    if platform.libc_ver()[0] != "glibc":
        return "release (not glibc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1
          and libc.mallopt(_M_MMAP_MAX, 0) == 1  # large buffers from the heap, not mmap
          and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)  # and the heap not trimmed
    return "keep" if ok else "release (mallopt refused)"


def flag_for(in_effect: str) -> str:
    """The ``--host_memory`` value that gives a child process the policy ``in_effect`` here
    (what :func:`apply` returned), so that what it times runs under the same allocator."""
    return "keep" if in_effect == "keep" else "release"
