"""Best and last checkpoints with orbax, never half-written, never half-read.

Layout under ``workdir/checkpoints``::

    epoch_0007/        an orbax checkpoint of the train state (+ loop.json: where the loop was)
    last.json          {"epoch": 7, "dir": "epoch_0007"}  -- written atomically, after the save
    best.json          {"epoch": 5, "dir": "epoch_0005", "monitor": ..., "value": ...}

A checkpoint directory counts only once a pointer names it, and a pointer is replaced atomically
after orbax has finished (orbax itself writes into a temporary directory and renames it). So a
process killed mid-save leaves the previous pointers, which still name complete checkpoints.
Directories that no pointer names are removed after each save; a directory that a pointer names
is never removed or written over. A kill between the two pointer writes leaves best.json naming
``epoch_N`` while last.json names an earlier epoch; the resumed run saves epoch N again, into
``epoch_N.1`` (the next free ``epoch_N.K``), so the checkpoint best.json names stays whole until
both pointers have moved on (tests/test_checkpoints.py kills a save at every step to prove it).
Every removal goes through :func:`workdir.remove_run`, which deletes only what a save writes.

A save that fails for lack of space (or any other storage error) raises :class:`OSError` naming
the folder, removes what it wrote, and leaves the earlier checkpoints and pointers as they were.
orbax reports such errors from tensorstore as ``ValueError``s whose message carries the OS error
code; :func:`storage_error` turns them back into ``OSError``.

A run over several processes (``mesh`` spanning them) needs the workdir on a file system that
every process sees. Every process calls :meth:`Checkpoints.save` with the same global (replicated)
state and orbax writes it once, coordinating the processes itself; the folders, ``loop.json``,
the pointers and the pruning are process 0's, between barriers. Every process restores the same
checkpoint (they read the same pointers). Restoring always names the target devices, so a
checkpoint written by any number of processes or devices loads anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from speechmusic_jax import distributed
from speechmusic_jax.errors import WorkdirConflict
from speechmusic_jax.io_utils import atomic_write_json
from speechmusic_jax.training import workdir as workdir_rules


class Checkpoints:
    def __init__(self, workdir: str, mesh: jax.sharding.Mesh | None = None):
        """``mesh``: the devices of a run over several processes (None: this process alone)."""
        self.dir = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.multiprocess = mesh is not None and len(
            {d.process_index for d in mesh.devices.flat}) > 1
        self.is_main = not self.multiprocess or jax.process_index() == 0
        self._target = (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
                        if self.multiprocess else
                        jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
        self._ckpt = ocp.StandardCheckpointer()

    @staticmethod
    def pointer(folder: str, which: str) -> dict | None:
        """The ``last`` or ``best`` pointer in the checkpoint ``folder``, if it names a complete
        checkpoint (readable without starting orbax)."""
        path = os.path.join(folder, f"{which}.json")
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            pointer = json.load(f)
        if not os.path.isdir(os.path.join(folder, pointer["dir"], "state")):
            return None
        return pointer

    def last(self) -> dict | None:
        return self.pointer(self.dir, "last")

    def best(self) -> dict | None:
        return self.pointer(self.dir, "best")

    def save(self, epoch: int, state: Any, loop: dict, *, best: dict | None = None) -> None:
        """Save ``state`` as epoch ``epoch``; make it the last (and, with ``best``, the best).
        ``state``: device arrays (global ones across processes) or host arrays."""
        name = self._free_name(epoch)  # from the pointers alone: the same in every process
        folder = os.path.join(self.dir, name)
        if not self.multiprocess:
            state = jax.device_get(state)
        if self.is_main:
            if os.path.lexists(folder):  # an earlier save's, that no pointer names (a kill)
                workdir_rules.remove_run(folder, "epoch")
            os.makedirs(self.dir, exist_ok=True)
            self._check_space(state, folder)
        self._sync(f"checkpoint-{epoch}-start")
        try:
            if self.is_main:
                os.makedirs(folder)
            self._sync(f"checkpoint-{epoch}-folder")
            try:
                self._ckpt.save(os.path.join(folder, "state"), state)
            finally:
                self._ckpt.wait_until_finished()
            if self.is_main:
                atomic_write_json(os.path.join(folder, "loop.json"), loop)
        except Exception as e:
            if self.is_main:  # incomplete: free the space it took
                with contextlib.suppress(OSError, WorkdirConflict):
                    workdir_rules.remove_run(folder, "epoch")
            translated = storage_error(e, folder)
            if translated is None:
                raise
            raise translated from None
        if self.is_main:
            if best is not None:
                atomic_write_json(os.path.join(self.dir, "best.json"),
                                  {"epoch": epoch, "dir": name, **best})
            atomic_write_json(os.path.join(self.dir, "last.json"), {"epoch": epoch, "dir": name})
            self._prune()
        self._sync(f"checkpoint-{epoch}-done")  # the pointers name it everywhere

    def _named(self) -> set[str]:
        """The directories the pointers on disk name, complete or not."""
        named = set()
        for which in ("last", "best"):
            pointer = workdir_rules.read_json(os.path.join(self.dir, f"{which}.json"))
            if isinstance(pointer, dict) and isinstance(pointer.get("dir"), str):
                named.add(pointer["dir"])
        return named

    def _free_name(self, epoch: int) -> str:
        """``epoch_NNNN``, or ``epoch_NNNN.K`` (the first K >= 1) when a pointer names that."""
        named, name, k = self._named(), f"epoch_{epoch:04d}", 0
        while (f"{name}.{k}" if k else name) in named:
            k += 1
        return f"{name}.{k}" if k else name

    def _sync(self, name: str) -> None:
        if self.multiprocess:
            distributed.barrier(name)

    @staticmethod
    def _check_space(state: Any, folder: str) -> None:
        """Refuse to start a save that cannot fit: orbax's own failure on a full disk comes from
        background threads that print tracebacks long after the error has been reported."""
        needed = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree_util.tree_leaves(state))
        needed += 1 << 20  # metadata, manifest, loop.json
        free = shutil.disk_usage(os.path.dirname(folder)).free
        if free < needed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)

    def restore(self, pointer: dict, like: Any) -> tuple[Any, dict]:
        """The state (shaped like ``like``) and loop record of the checkpoint ``pointer`` names."""
        folder = os.path.join(self.dir, pointer["dir"])
        abstract = jax.tree.map(lambda x: _on(ocp.utils.to_shape_dtype_struct(x), self._target),
                                like)
        state = self._ckpt.restore(os.path.join(folder, "state"), abstract)
        with open(os.path.join(folder, "loop.json"), encoding="utf-8") as f:
            loop = json.load(f)
        return state, loop

    def size_bytes(self, pointer: dict) -> int:
        folder = os.path.join(self.dir, pointer["dir"], "state")
        return sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(folder) for f in files)

    def _prune(self) -> None:
        """Remove the checkpoints no pointer names (one holding a file of the user's stays)."""
        keep = self._named()
        for entry in os.listdir(self.dir):
            path = os.path.join(self.dir, entry)
            if entry.startswith("epoch_") and entry not in keep and os.path.isdir(path):
                with contextlib.suppress(OSError, WorkdirConflict):
                    workdir_rules.remove_run(path, "epoch")


def _on(leaf: Any, sharding: jax.sharding.Sharding) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    return leaf


def storage_error(e: BaseException, path: str) -> OSError | None:
    """``e`` as an :class:`OSError` naming ``path`` when it is a file-system error (also when
    tensorstore reports it inside orbax as a ``ValueError``), else None."""
    if isinstance(e, OSError):
        if e.filename is None and e.errno is not None:
            return type(e)(e.errno, e.strerror or os.strerror(e.errno), path)
        return e
    text = str(e)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        n = int(code.group(1))
        return OSError(n, os.strerror(n), path)
    if "No space left on device" in text:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    if "Disk quota exceeded" in text:
        return OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), path)
    return None
