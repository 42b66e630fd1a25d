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
def test_readme_train_command_is_valid(args, tmp_path, request):
    args = [re.sub(r"^--workdir=.*", f"--workdir={tmp_path}/w", a) for a in args]
    if any(a.startswith("--config.train.init_from=") for a in args):
        # --dry_run checks the pretrained run: a finished tiny run, and the tiny experiment
        # (its model) for the command's other flags.
        run = request.getfixturevalue("tiny_run")
        args = ["--config=experiments/default.py:tiny",
                *(f"--config.train.init_from={run}" if a.startswith("--config.train.init_from=")
                  else a for a in args)]
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.train", "--dry_run", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "config valid" in r.stderr


# Every other command the README shows runs for real, on a tiny run and small fake data.
OTHER_COMMANDS = ("evaluate", "predict", "crossval", "benchmark", "list", "export", "cues")


def readme_commands(modules=OTHER_COMMANDS):
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        for prefix in ("./run.sh ", "python -m speechmusic_jax."):
            if line.startswith(prefix):
                words = shlex.split(line[len(prefix):])
                if words and words[0] in modules:
                    out.append(words)
    return out


def test_readme_shows_every_command():
    assert {words[0] for words in readme_commands()} == set(OTHER_COMMANDS)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from speechmusic_jax.config import load_experiment
    from speechmusic_jax.training import loop

    cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    workdir = str(tmp_path_factory.mktemp("readme") / "run")
    loop.fit(cfg, workdir, log=lambda _: None)
    return workdir


def localise(words, tiny_run, tmp):
    """The README's command with its paths replaced by a tiny run, fake data of the named kind
    and temporary outputs, and its sizes shrunk (folds, batch sizes, epochs)."""
    from audio_fixtures import (
        make_folder_tree,
        make_gtzan_tree,
        make_manifest_tree,
        make_musan_tree,
        write_class_files,
    )

    makers = {"folder": make_folder_tree, "gtzan": make_gtzan_tree, "musan": make_musan_tree,
              "manifest": make_manifest_tree}
    module, args = words[0], []
    for arg in words[1:]:
        name, _, value = arg.partition("=")
        if name == "--workdir":
            value = tiny_run if value == "runs/default" else str(tmp / "work")
        elif name in ("--model", "--config.train.init_from"):  # a run or the shipped model:
            value = tiny_run  # the tiny run stands for both
        elif name == "--data" and ":" in value:
            kind = value.split(":")[0]
            value = f"{kind}:{makers[kind](tmp / kind, per_class=12)}"
        elif name in ("--output", "--plot", "--json"):
            value = str(tmp / os.path.basename(value))
        elif name == "--folds":
            value = "2"
        elif name == "--batch_sizes":
            value = "1,8"
        elif not arg.startswith("-") and module == "predict":  # audio files and folders
            if arg.endswith("/"):
                write_class_files(tmp / arg, "music", 2)
            else:
                write_class_files(tmp, "speech", 1, nested=False, prefix=arg + "_")
                os.replace(next(p for p in tmp.iterdir() if p.name.startswith(arg + "_")),
                           tmp / arg)
            args.append(str(tmp / arg))
            continue
        args.append(f"{name}={value}" if value else name)
    if module in ("crossval", "benchmark") and not any(a.startswith("--config=") for a in args):
        args.insert(0, "--config=experiments/default.py:tiny")  # before any --config.FIELD
    if module == "crossval":
        args += ["--config.train.epochs=1"]
    if module == "benchmark":
        args += ["--steps=3", "--epochs=2"]
    return [module, *args]


def _suite_commands():
    """The README's commands; after the first crossval command the others (same module, another
    data layout, which test_sources covers) run with the soak tests (-m slow): suite time."""
    seen = False
    for words in readme_commands():
        if words[0] == "crossval":
            if seen:
                yield pytest.param(words, marks=pytest.mark.slow)
                continue
            seen = True
        yield words


@pytest.mark.parametrize("words", list(_suite_commands()), ids=lambda w: " ".join(w)[:60])
def test_readme_command_runs(words, tiny_run, tmp_path):
    command = localise(words, tiny_run, tmp_path)
    r = subprocess.run([sys.executable, "-m", f"speechmusic_jax.{command[0]}", *command[1:]],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{command}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
