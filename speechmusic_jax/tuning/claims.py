"""Claims on trials, so that processes sharing a sweep folder never train the same trial.

``--trials=START:END`` splits a sweep between processes or machines; claims make an overlap (two
ranges that share trials, or the same command started twice) harmless. Before it trains, a
process claims each trial it means to run by creating ``claims/NNN.json`` (host, process id,
start time); it skips the trials another process holds and removes its own claims when it is
done. A claim is created complete: written to a temporary file, then hard-linked into place,
which the file system (a shared one too: NFS, Lustre, GPFS) grants to one process only. So a
claim file is never empty or partly written, and no process mistakes a claim being made for a
broken one. (On a file system without hard links, such as some FUSE mounts, it falls back to
an exclusive create followed by the write.)

A claim left behind by a process that died (killed, or ended by Ctrl-C, which exits at once) is
taken over when it was made on this host and its process no longer exists. A claim from another
host cannot be checked from here: the trial is skipped with a message naming the host, the
process and the file to delete if that process is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence

from speechmusic_jax.io_utils import atomic_write_text

CLAIMS = "claims"


def claim_path(workdir: str, index: int) -> str:
    return os.path.join(workdir, CLAIMS, f"{index:03d}.json")


def _mine() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read(path: str) -> dict | None:
    return _parse(_read_bytes(path))


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _parse(data: bytes | None) -> dict | None:
    """The claim in ``data``; None for no file or one that is not a claim."""
    try:
        held = json.loads(data.decode("utf-8")) if data is not None else None
    except ValueError:
        return None
    return held if isinstance(held, dict) else None


# What os.link raises on a file system without hard links.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


def _create(path: str, content: dict) -> bool:
    """Create the claim ``path`` complete with ``content``; False if it exists."""
    try:
        atomic_write_text(path, json.dumps(content), exclusive=True)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
    try:  # no hard links here: an exclusive create, then the write
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(content, f)
    return True


def _remove_stale(path: str, seen: bytes) -> None:
    """Remove the claim ``path`` judged stale from its content ``seen``, unless another process
    has replaced it in between: the file is first moved aside (atomic, so of two processes
    taking the same claim over only one moves it), and put back if it is not the one judged
    (a fresh claim, which the other process has just made)."""
    aside = f"{path}.{socket.gethostname()}.{os.getpid()}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process moved it first
    try:
        with open(aside, "rb") as f:
            moved = f.read()
        if moved != seen:
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            except OSError:  # no hard links here
                os.rename(aside, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)


def _stale(held: dict | None) -> bool:
    """A claim whose process is gone: made on this host by a process id that no longer
    exists (or a file that is not a claim)."""
    if held is None:
        return True
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    return held["pid"] != os.getpid() and not _alive(held["pid"])


def claim(workdir: str, index: int, log: Callable[[str], None]) -> bool:
    """Claim trial ``index``; False (with a message) when another live process holds it."""
    os.makedirs(os.path.join(workdir, CLAIMS), exist_ok=True)
    path = claim_path(workdir, index)
    mine = _mine()
    if _create(path, mine):
        return True
    seen = _read_bytes(path)
    held = _parse(seen)
    if _stale(held):
        if seen is not None:
            _remove_stale(path, seen)
        if _create(path, mine):  # another process may take it over first
            if seen is not None:  # (None: released in between)
                what = "an unreadable claim" if held is None else (
                    f"the claim of process {held.get('pid')}, which is gone")
                log(f"trial {index}: took over {what}")
            return True
        held = _read(path)
    who = "another process" if held is None else (
        f"process {held.get('pid')} on {held.get('host')} since {held.get('started')}")
    log(f"trial {index}: skipped, {who} is running it (if that process is gone, delete {path})")
    return False


def is_claimed(workdir: str, index: int) -> bool:
    """Whether a live process (or one on another host, which cannot be checked) holds
    trial ``index``."""
    path = claim_path(workdir, index)
    if not os.path.exists(path):
        return False
    return not _stale(_read(path))


def release(workdir: str, index: int) -> None:
    """Remove this process's claim on trial ``index`` (never another process's)."""
    path = claim_path(workdir, index)
    held = _read(path)
    if held is not None and held.get("pid") == os.getpid() and \
            held.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _clear_stale(workdir: str) -> None:
    """Remove the claims of processes on this host that are gone (e.g. ended by Ctrl-C while
    holding a trial that had finished, which nobody claims again)."""
    folder = os.path.join(workdir, CLAIMS)
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            seen = _read_bytes(path)
            held = _parse(seen)
            if name.endswith(".json") and held is not None and _stale(held):
                _remove_stale(path, seen)  # not a claim another process has just made


@contextlib.contextmanager
def held(workdir: str, indices: Sequence[int], log: Callable[[str], None]
         ) -> Iterator[list[int]]:
    """Claim ``indices``; yield those this process got; release them on the way out. Claims
    taken over from processes that are gone (e.g. after Ctrl-C) are reported in one line."""
    taken: list[str] = []

    def note(message: str) -> None:
        (taken.append if ": took over " in message else log)(message)

    got = [i for i in indices if claim(workdir, i, note)]
    if len(taken) == 1:
        log(taken[0])
    elif taken:
        first, last = (m.split(":")[0].split()[-1] for m in (taken[0], taken[-1]))
        log(f"trials {first}..{last}: took over {len(taken)} claims of processes that are gone "
            f"(the first: {taken[0].split(': took over ', 1)[1]})")
    try:
        yield got
    finally:
        for i in got:
            release(workdir, i)
        _clear_stale(workdir)
        with contextlib.suppress(OSError):  # only when empty: other processes' claims stay
            os.rmdir(os.path.join(workdir, CLAIMS))
