"""Files that must never be half-written: write to a temporary file, fsync, then rename.

A write that fails (a full disk, say) raises :class:`OSError` with ``filename`` set to the file
that was being written, and leaves the file as it was: the old version, or no file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from speechmusic_jax.errors import WorkdirConflict


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    ``exclusive``: create ``path`` only if it does not exist (else :class:`FileExistsError`,
    and nothing is written): the complete temporary file is hard-linked into place, which the
    file system grants to one writer only, so no reader ever sees it empty or partly written
    (an exclusive ``open`` would show an empty file until the write)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    # The temporary file is created with mode 0666, which the kernel reduces by the process's
    # umask: the same permissions open() would give (reading the umask would mean changing it).
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as e:
        raise with_filename(e, path) from None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, FileExistsError) and exclusive:
            raise FileExistsError(e.errno, e.strerror, path) from None
        if isinstance(e, OSError):
            raise with_filename(e, path) from None
        raise
    _fsync_dir(folder)


def atomic_write_text(path: str | os.PathLike, text: str, *, exclusive: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Complete JSON lines of ``path`` (a torn last line, from a killed writer, is ignored)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one line and fsync it.

    If the write fails (a full disk), the file is cut back to its old length, so it never ends in
    a partial line that this process wrote (a process killed mid-write can leave one; readers
    skip it, see :func:`read_jsonl`).
    """
    path = os.fspath(path)
    data = (json.dumps(row) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise with_filename(e, path) from None
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise with_filename(e, path) from None
    finally:
        os.close(fd)


def check_output(path: str | os.PathLike, *, overwrite: bool, ours: Callable[[str], bool],
                 flag: str = "--output") -> None:
    """Refuse (WorkdirConflict) to write an output file over something that exists, unless
    ``overwrite`` is given and the file is one this program wrote (``ours(path)`` says so from
    its content): a user's file is never replaced, whatever the flags."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) or os.path.islink(path):
        raise WorkdirConflict(f"{flag}={path} is a folder or a link, not a file to write")
    if not overwrite:
        raise WorkdirConflict(f"{flag}={path} exists; pass --overwrite to replace it")
    try:
        mine = ours(path)
    except (OSError, ValueError, UnicodeDecodeError):
        mine = False
    if not mine:
        raise WorkdirConflict(f"{flag}={path} exists and is not a file this program wrote; it was "
                              "left as it is. Choose another output path.")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def with_filename(e: OSError, path: str | os.PathLike) -> OSError:
    """``e`` itself when it names a file, else the same error naming ``path``."""
    if e.filename is not None or e.errno is None:
        return e
    return type(e)(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path))


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take only part, e.g. on a full disk)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # cannot happen for regular files; never loop forever
            raise OSError(28, os.strerror(28))
        view = view[n:]


def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
