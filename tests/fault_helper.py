"""The train command with one fault injected at a chosen moment (for the reliability tests).

    python tests/fault_helper.py FAULT [train flags ...]

runs ``python -m speechmusic_jax.train [train flags ...]`` in this process after patching the
library so that FAULT happens at a deterministic point. No environment variable and no library
code is involved: the library has no test hooks. FAULT is one of

    kill@step:E:K          SIGKILL after K training steps of epoch E
    kill@metrics:E         SIGKILL halfway through writing epoch E's line of metrics.jsonl
    kill@orbax-start:E     SIGKILL once orbax has begun writing epoch E's checkpoint (its
                           temporary folder exists, the arrays are not written yet)
    kill@orbax-commit:E    SIGKILL when orbax has written all of epoch E's arrays but has not yet
                           renamed its temporary folder into place
    kill@pointer:E         SIGKILL when epoch E's checkpoint is complete (and best.json may name
                           it) but last.json does not name it yet
    kill@summary           SIGKILL just before summary.json is written (every epoch is done)
    nan@step:E:K           the K-th batch (1-based) of epoch E is all NaN
    inf@step:E:K           the train step's loss is +Inf at the K-th step of epoch E
    oom@step:E:K           the K-th train step of epoch E fails as XLA does on a device without
                           enough memory (JaxRuntimeError RESOURCE_EXHAUSTED)
    oom@compile            compiling the train step fails that way
    enospc@metrics:E       writing epoch E's metrics line fails with ENOSPC after half of it
    enospc@orbax:E         orbax fails to save epoch E the way it does on a full disk (tensorstore's
                           ValueError carrying os_error_code=28), after writing part of it
    enospc@pointer:E       writing last.json for epoch E fails with ENOSPC
    fill@epoch:E           after epoch E's checkpoint, fill the file system that holds the workdir
                           (a real full disk; the test mounts a small tmpfs for it)

A kill prints ``fault_helper: KILL <what>`` to stderr first, so a test can tell the kill it asked
for from any other death.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator


def _die(what: str) -> None:
    print(f"fault_helper: KILL {what}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _epoch_of(path: str) -> int | None:
    for part in reversed(os.path.normpath(path).split(os.sep)):
        if part.startswith("epoch_"):
            return int(part.split("_")[1].split(".")[0])
    return None


def install(fault: str, patch: Callable[[object, str, object], None] = setattr) -> None:
    """Patch the library for ``fault`` (see the module docstring).

    ``patch(obj, name, value)`` does each patch: ``setattr`` here, ``monkeypatch.setattr`` in a
    test that injects the fault in its own process (and wants it undone afterwards).
    """
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from speechmusic_jax import timing
    from speechmusic_jax.training import checkpoints, feed, loop, reporting

    kind, _, where = fault.partition("@")
    point, *args = where.split(":")
    nums = [int(a) for a in args]

    if point == "step" and kind in ("kill", "nan"):
        e, k = nums
        original_batches = feed.train_batches

        def train_batches(files, durations, cfg, seed, epoch, **kw):
            for i, batch in enumerate(original_batches(files, durations, cfg, seed, epoch, **kw)):
                if epoch == e and kind == "kill" and i == k:
                    _die(f"after {k} steps of epoch {e}")
                if epoch == e and kind == "nan" and i == k - 1:
                    batch = dataclasses.replace(batch, x=np.full_like(batch.x, np.nan))
                yield batch

        patch(feed, "train_batches", train_batches)
        return

    if point == "step" and kind in ("inf", "oom"):
        e, k = nums
        original_compile = timing.compile_ahead
        calls = {"n": 0, "epoch": 0}
        original_batches = feed.train_batches

        def train_batches(files, durations, cfg, seed, epoch, **kw):
            calls["epoch"], calls["n"] = epoch, 0
            yield from original_batches(files, durations, cfg, seed, epoch, **kw)

        def compile_ahead(fn, *args, donate_argnums=()):
            compiled, seconds, flops = original_compile(fn, *args, donate_argnums=donate_argnums)
            if donate_argnums != (0,):  # not the train step
                return compiled, seconds, flops

            def step(*a):
                calls["n"] += 1
                hit = calls["epoch"] == e and calls["n"] == k
                if hit and kind == "oom":
                    raise jax.errors.JaxRuntimeError(
                        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 "
                        "bytes.")
                state, m = compiled(*a)
                if hit:
                    m = dict(m, loss_sum=m["loss_sum"] * np.inf)
                return state, m

            return step, seconds, flops

        patch(feed, "train_batches", train_batches)
        patch(timing, "compile_ahead", compile_ahead)
        return

    if fault == "oom@compile":
        original_compile = timing.compile_ahead

        def compile_ahead(fn, *args, donate_argnums=()):
            if donate_argnums == (0,):
                raise jax.errors.JaxRuntimeError(
                    "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 "
                    "bytes.")
            return original_compile(fn, *args, donate_argnums=donate_argnums)

        patch(timing, "compile_ahead", compile_ahead)
        return

    if point == "metrics":
        (e,) = nums
        original_append = reporting.append_jsonl

        def append_jsonl(path, row):
            if row.get("epoch") != e:
                return original_append(path, row)
            if kind == "kill":
                line = (json.dumps(row) + "\n").encode()
                with open(path, "ab") as f:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                _die(f"halfway through the metrics line of epoch {e}")
            with disk_full_after_half_a_write():
                return original_append(path, row)

        patch(reporting, "append_jsonl", append_jsonl)
        return

    if point in ("orbax-start", "orbax") and kind in ("kill", "enospc"):
        (e,) = nums
        cls = ocp.StandardCheckpointer
        original_save = cls.save
        original_wait = cls.wait_until_finished
        pending = {"epoch": None}

        def save(self, directory, *args, **kwargs):
            out = original_save(self, directory, *args, **kwargs)
            if _epoch_of(os.fspath(directory)) == e:
                if kind == "kill":
                    _die(f"while orbax starts writing epoch {e}")
                pending["epoch"] = e
            return out

        def wait_until_finished(self):
            original_wait(self)
            if pending["epoch"] is not None:
                pending["epoch"] = None
                raise ValueError(
                    "RESOURCE_EXHAUSTED: Error writing local file \"manifest.ocdbt\": Failed to "
                    "write 281 bytes to file 11: No space left on device [os_error_code='28']")

        patch(cls, "save", save)
        patch(cls, "wait_until_finished", wait_until_finished)
        return

    if fault.startswith("kill@orbax-commit:"):
        (e,) = nums
        from orbax.checkpoint._src.path import atomicity

        original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *args, **kwargs):
            if _epoch_of(os.fspath(self.get())) == e:
                _die(f"before orbax commits epoch {e}")
            return await original_finalize(self, *args, **kwargs)

        patch(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
        return

    if point == "pointer":
        (e,) = nums
        original_write = checkpoints.atomic_write_json

        def atomic_write_json(path, obj):
            if os.path.basename(path) == "last.json" and obj.get("epoch") == e:
                if kind == "kill":
                    _die(f"before last.json names epoch {e}")
                with disk_full_after_half_a_write():
                    return original_write(path, obj)
            return original_write(path, obj)

        patch(checkpoints, "atomic_write_json", atomic_write_json)
        return

    if fault == "kill@summary":
        original_write = loop.atomic_write_json

        def atomic_write_json(path, obj):
            if os.path.basename(path) == "summary.json":
                _die("before summary.json is written")
            return original_write(path, obj)

        patch(loop, "atomic_write_json", atomic_write_json)
        return

    if fault.startswith("fill@epoch:"):
        (e,) = nums
        original_save = checkpoints.Checkpoints.save

        def fill_save(self, epoch, *args, **kwargs):
            original_save(self, epoch, *args, **kwargs)
            if epoch == e:
                fill_disk(os.path.join(os.path.dirname(self.dir), "filler.bin"))

        patch(checkpoints.Checkpoints, "save", fill_save)
        return

    raise SystemExit(f"fault_helper: unknown fault {fault!r}")


@contextlib.contextmanager
def disk_full_after_half_a_write() -> Iterator[None]:
    """Within the block, os.write writes half of its first buffer, then fails with ENOSPC (as a
    full disk does); the library's own error handling runs as it would for real."""
    original_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return original_write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.write = write
    try:
        yield
    finally:
        os.write = original_write


def fill_disk(path: str) -> None:
    """Write ``path`` until the file system is full (ENOSPC), then leave it there."""
    block = b"\0" * (1 << 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    if os.write(fd, block[:size]) < size:
                        break
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def main() -> None:
    fault, argv = sys.argv[1], sys.argv[2:]
    install(fault)
    from speechmusic_jax import cli, train

    sys.argv = ["speechmusic_jax.train", *argv]
    cli.run_main(train.define_flags, train.main)


if __name__ == "__main__":
    main()
