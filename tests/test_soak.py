"""Soak tests (marked slow: not in ./run.sh test; run them by hand).

    .venv/bin/pytest -m slow tests/test_soak.py -s                    # 30 minutes
    SOAK_SECONDS=180 .venv/bin/pytest -m slow tests/test_soak.py -s   # a 3-minute version

``test_random_kills_end_where_an_uninterrupted_run_ends``: a run of the tiny experiment, sized so
that an uninterrupted run takes about a third of SOAK_SECONDS (default 1800), is killed with
SIGKILL at random moments (every SOAK_KILL_EVERY seconds on average, default SOAK_SECONDS / 10)
and restarted with `train` on the same workdir until it finishes; it must end with the metrics
and test results of the uninterrupted run. After every kill the workdir must hold whole metric
lines (a torn last line at most), consecutive epochs, and complete checkpoints. SOAK_SEED fixes
the kill times.

``test_every_kill_point_then_resume``: every deterministic kill point of tests/fault_helper.py in
turn on one workdir (the regular suite runs three of them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_reliability import (  # noqa: F401  (reference is a fixture)
    KILLS_ALL,
    REPO,
    check_invariants,
    kill_and_resume,
    reference,
    without_timing,
)

from speechmusic_jax.io_utils import read_jsonl
from speechmusic_jax.training.checkpoints import Checkpoints

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "1800"))
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", str(SOAK_SECONDS / 10)))
# The soak run: the tiny experiment on a larger corpus, so that an epoch takes a moment.
FLAGS = ["--config=experiments/default.py:tiny", "--config.data.synthetic.clips_per_class=48"]


def test_every_kill_point_then_resume(reference, tmp_path):  # noqa: F811
    kill_and_resume(tmp_path / "run", KILLS_ALL, reference)


class Run:
    """A command (`train` unless ``module`` says) in a subprocess; its stdout lines with the time
    each arrived. ``base``: the flags before ``--workdir`` (the soak run's, for `train`)."""

    def __init__(self, workdir, *flags: str, module: str = "speechmusic_jax.train",
                 base: tuple[str, ...] | list[str] = tuple(FLAGS)):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *base, f"--workdir={workdir}", *flags], cwd=REPO,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.stderr = ""
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.start, line.rstrip("\n")))

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join()
        return rc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # our own child, by its pid
        self.wait()

    def epoch_times(self) -> list[float]:
        """When each epoch's row of the epoch table was printed."""
        return [t for t, line in self.lines if line.split()[:1] and line.split()[0].isdigit()]


def calibrate(tmp_path) -> tuple[float, float]:
    """(seconds per epoch, seconds of start-up and finish) of the soak configuration."""
    run = Run(tmp_path / "calibration", "--config.train.epochs=6")
    assert run.wait(600) == 0, run.stderr[-3000:]
    times = run.epoch_times()
    assert len(times) == 6
    per_epoch = (times[-1] - times[0]) / (len(times) - 1)
    total = run.lines[-1][0]
    return per_epoch, total - 6 * per_epoch


def test_random_kills_end_where_an_uninterrupted_run_ends(tmp_path):
    seed = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(2**31))))
    rng = random.Random(seed)
    per_epoch, overhead = calibrate(tmp_path)
    epochs = max(5, int((SOAK_SECONDS / 3 - overhead) / per_epoch))
    assert 2 * overhead < KILL_EVERY, (
        f"SOAK_KILL_EVERY={KILL_EVERY:.0f}s leaves no time to train after a start-up of "
        f"{overhead:.0f}s; raise it")
    print(f"\nsoak: seed {seed}; {per_epoch:.2f}s per epoch, {overhead:.1f}s start-up; "
          f"{epochs} epochs; a kill every {KILL_EVERY:.0f}s on average")

    t0 = time.monotonic()
    ref = Run(tmp_path / "reference", f"--config.train.epochs={epochs}")
    assert ref.wait() == 0, ref.stderr[-3000:]
    print(f"soak: uninterrupted run: {time.monotonic() - t0:.0f}s")

    workdir = tmp_path / "killed"
    kills = []
    t0 = time.monotonic()
    while True:
        assert time.monotonic() - t0 < 4 * SOAK_SECONDS, "the killed run makes no progress"
        run = Run(workdir, f"--config.train.epochs={epochs}")
        delay = rng.uniform(0.5, 1.5) * KILL_EVERY
        rc = run.wait(delay)
        if rc is not None:
            assert rc == 0, run.stderr[-3000:]
            break
        run.kill()
        doing = run.lines[-1][1] if run.lines else "(starting)"
        last = Checkpoints(str(workdir)).last()
        kills.append((round(delay, 1), (last or {}).get("epoch"), moment(workdir, last)))
        print(f"soak: kill {len(kills)} after {delay:.1f}s ({kills[-1][2]}): checkpoint of "
              f"epoch {kills[-1][1]}; last output: {doing[:50]!r}")
        assert_whole(workdir, last)
    moments = sorted({k[2] for k in kills})
    print(f"soak: killed run: {time.monotonic() - t0:.0f}s, {len(kills)} kills: "
          + ", ".join(f"{sum(k[2] == m for k in kills)} {m}" for m in moments))

    assert len(kills) >= 3
    got = read_jsonl(workdir / "metrics.jsonl")
    assert (workdir / "metrics.jsonl").read_text().endswith("\n")
    assert without_timing(got) == without_timing(read_jsonl(tmp_path / "reference" /
                                                            "metrics.jsonl"))
    with open(workdir / "summary.json") as a, open(tmp_path / "reference" / "summary.json") as b:
        killed, uninterrupted = json.load(a), json.load(b)
    assert killed["status"] == uninterrupted["status"] == "completed"
    assert killed["test"] == uninterrupted["test"]
    assert killed["best_epoch"] == uninterrupted["best_epoch"]


def moment(workdir, last: dict | None) -> str:
    """Where a kill landed, as far as the workdir tells."""
    folder = workdir / "checkpoints"
    last_epoch = (last or {}).get("epoch", 0)
    keep = {p["dir"] for p in (last, Checkpoints(str(workdir)).best()) if p}
    if folder.exists():
        for entry in sorted(os.listdir(folder)):
            if entry.endswith(".tmp"):
                return "during a pointer write"
            if not entry.startswith("epoch_") or not (folder / entry).is_dir():
                continue
            epoch = int(entry.split("_")[1].split(".")[0])  # epoch_NNNN or epoch_NNNN.K
            inner = os.listdir(folder / entry)
            if epoch > last_epoch:
                if "loop.json" in inner:
                    return "after a checkpoint, before its pointer"
                return "during a checkpoint write"
            if epoch < last_epoch and entry not in keep:
                return "while removing an old checkpoint"
    n = len(read_jsonl(workdir / "metrics.jsonl"))
    if last is None and n == 0:
        return "before the first checkpoint"
    if n == last_epoch + 1:
        return "between a metrics line and its checkpoint"
    return "during an epoch"


def assert_whole(workdir, last: dict | None) -> None:
    """What any kill may leave: whole metric lines (at most a torn last one) for epochs 1..n in
    order, n at most one past the last checkpoint, and complete checkpoints behind the
    pointers."""
    path = workdir / "metrics.jsonl"
    epochs = [r["epoch"] for r in read_jsonl(path)]
    assert epochs == list(range(1, len(epochs) + 1))
    if last is None:
        assert len(epochs) <= 1
        return
    # Each line is written before its epoch's checkpoint, and a resumed run cuts the file back
    # to its checkpoint: so the file holds the checkpoint's epochs, and at most one more.
    assert last["epoch"] <= len(epochs) <= last["epoch"] + 1
    check_invariants(workdir, last=last["epoch"], metrics=epochs,
                     torn_tail=path.exists() and path.stat().st_size > 0
                     and not path.read_text().endswith("\n"))
