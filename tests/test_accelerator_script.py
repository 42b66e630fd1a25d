"""benchmarks/accelerator.sh, the GPU check, can be checked without a GPU: its syntax, and a dry
run that prints every part's command and checks that each program, module and flag it uses is
here (the real run needs a GPU; `--cpu` runs it on the CPU, too slow for the suite)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "accelerator.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON_BIN=sys.executable, PYTHON=sys.executable)
    return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_script_parses():
    r = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_dry_run_names_every_part_and_finds_every_program():
    r = _run("--dry-run", "--cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    commands = [line for line in r.stderr.splitlines() if line.startswith("+ ")]
    assert any("-m pytest" in c and "test_distributed.py" in c for c in commands)
    steps = [c for c in commands if "speechmusic_jax.benchmark" in c and "--batch_sizes=" in c]
    assert steps and all(len(c.split("--batch_sizes=")[1].split()[0].split(",")) > 1
                         for c in steps)  # several batch sizes
    assert "group.time_modes(" in r.stderr  # grouped trials against one alone
    assert any("--what=data" in c for c in commands)
    assert "every program and module is here" in r.stderr


def test_an_unknown_argument_is_refused():
    r = _run("--gpus=2")
    assert r.returncode == 2 and "unknown argument --gpus=2" in r.stderr
