"""Claims on trials, so that processes sharing a sweep folder never train the same trial.

``--trials=START:END`` splits a sweep between processes or machines; claims make an overlap (two
ranges that share trials, or the same command started twice) harmless. Before it trains, a
process claims each trial it means to run by creating ``claims/NNN.json`` (host, process id,
start time) with an exclusive create, which the file system grants to one process only; it
skips the trials another process holds and removes its own claims when it is done.

A claim left behind by a process that died (killed, or ended by Ctrl-C, which exits at once) is
taken over when it was made on this host and its process no longer exists. A claim from another
host cannot be checked from here: the trial is skipped with a message naming the host, the
process and the file to delete if that process is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence

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
    try:
        with open(path, encoding="utf-8") as f:
            held = json.load(f)
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _create(path: str, content: dict) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(content, f)
    return True


def _stale(held: dict | None) -> bool:
    """A claim whose process is gone: made on this host by a process id that no longer
    exists (or a file that is not a claim: a write cut short)."""
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
    held = _read(path)
    if _stale(held):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if _create(path, mine):  # another process may take it over first
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
            held = _read(path)
            if name.endswith(".json") and held is not None and _stale(held):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


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
