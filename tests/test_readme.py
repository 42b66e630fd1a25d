"""The README's training commands are real: every `./run.sh train ...` line parses and validates."""

import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_train_commands():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("\\\n", " ")  # join continued lines
    out = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("./run.sh train"):
            out.append(shlex.split(line)[2:])
    return out


def test_readme_has_train_commands():
    assert len(readme_train_commands()) >= 4


@pytest.mark.parametrize("args", readme_train_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_train_command_is_valid(args, tmp_path):
    args = [re.sub(r"^--workdir=.*", f"--workdir={tmp_path}/w", a) for a in args]
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.train", "--dry_run", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "config valid" in r.stderr
