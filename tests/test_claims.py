"""Claims on sweep trials: created complete, won by one process only, taken over when stale.

(The sweep-level behaviour, a live claim skipped and a dead one taken over by the command:
tests/test_sweep.py.)"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import threading

from speechmusic_jax.tuning import claims

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_claim_file_never_exists_empty(tmp_path, monkeypatch):
    # Every file the claim creates is looked at the moment it is created: the claim itself must
    # not exist yet (an exclusive open of the claim would show it empty until the write).
    path = claims.claim_path(str(tmp_path), 3)
    real_open, seen = os.open, []

    def watching_open(name, flags, *args, **kw):
        fd = real_open(name, flags, *args, **kw)
        if flags & os.O_CREAT:
            seen.append(os.path.exists(path))
        return fd

    monkeypatch.setattr(os, "open", watching_open)
    assert claims.claim(str(tmp_path), 3, log=print)
    monkeypatch.undo()
    assert seen and not any(seen), seen  # not there while its content is being written
    assert json.loads(pathlib.Path(path).read_text())["pid"] == os.getpid()
    assert os.listdir(tmp_path / "claims") == ["003.json"]  # no temporary file left


def test_a_claimer_paused_while_writing_does_not_lose_the_trial_to_a_second_winner(
        tmp_path, monkeypatch):
    # Claimer A pauses right after it creates its first file; claimer B claims meanwhile.
    # Before claims were linked into place, B found A's claim empty, judged it broken, took it
    # over, and then A finished its write: both trained the trial. Now exactly one wins.
    workdir = str(tmp_path)
    real_open = os.open
    created, resume = threading.Event(), threading.Event()
    a_thread = []

    def pausing_open(name, flags, *args, **kw):
        fd = real_open(name, flags, *args, **kw)
        if flags & os.O_CREAT and threading.current_thread() in a_thread and not created.is_set():
            created.set()
            assert resume.wait(30)
        return fd

    monkeypatch.setattr(os, "open", pausing_open)
    result = {}
    a = threading.Thread(target=lambda: result.update(a=claims.claim(workdir, 0, print)))
    a_thread.append(a)
    a.start()
    assert created.wait(30)
    result["b"] = claims.claim(workdir, 0, print)
    resume.set()
    a.join(30)
    assert sorted(result.values()) == [False, True], result


CLAIMER = """
import sys, time
from speechmusic_jax.tuning import claims
workdir, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
won = [i for i in range(40) if claims.claim(workdir, i, log=lambda m: None)]
print(" ".join(map(str, won)), flush=True)
sys.stdin.read()  # hold the claims (alive) until the test has every process's answer
"""


def test_concurrent_processes_claim_each_trial_once(tmp_path):
    import time

    start = time.time() + 3.0  # the processes start together once all are up
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path), str(start)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO)) for _ in range(3)]
    try:
        won = [set(map(int, p.stdout.readline().split())) for p in procs]
    finally:
        for p in procs:
            p.communicate("", timeout=60)
    assert sum(len(w) for w in won) == 40 and set().union(*won) == set(range(40)), won
    assert not any(n.endswith((".tmp", ".stale")) for n in os.listdir(tmp_path / "claims"))


def test_a_stale_claim_is_taken_over_once(tmp_path):
    workdir, logs = str(tmp_path), []
    os.makedirs(tmp_path / "claims")
    path = claims.claim_path(workdir, 1)
    gone = _dead_pid()
    stale = json.dumps({"host": socket.gethostname(), "pid": gone, "started": "then"})
    with open(path, "w") as f:
        f.write(stale)
    assert claims.claim(workdir, 1, logs.append)
    assert logs == [f"trial 1: took over the claim of process {gone}, which is gone"]
    assert json.loads(pathlib.Path(path).read_text())["pid"] == os.getpid()
    # A second taker that judged the same stale claim, and comes after the first has replaced
    # it, leaves the fresh claim in place instead of deleting it.
    fresh = pathlib.Path(path).read_bytes()
    claims._remove_stale(path, stale.encode())
    assert pathlib.Path(path).read_bytes() == fresh
    # while the claim it judged is removed
    with open(path, "w") as f:
        f.write(stale)
    claims._remove_stale(path, stale.encode())
    assert os.listdir(tmp_path / "claims") == []
