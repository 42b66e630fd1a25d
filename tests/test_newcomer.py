"""A newcomer's first hour: help, usage errors, interrupts, discoverable commands."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = f"--config={REPO}/experiments/default.py:tiny"


def run(*args, **kw):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


BUILT_IN = ("test", "setup", "lint")  # run.sh's own commands; the others are modules


def run_sh_commands() -> list[str]:
    """The commands ``./run.sh --help`` lists."""
    out = subprocess.run(["bash", "run.sh", "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return [ln.split()[0] for ln in out.split("commands:\n", 1)[1].splitlines() if ln.strip()]


@pytest.mark.parametrize("command", [c for c in run_sh_commands() if c not in BUILT_IN])
def test_help_of_every_module_command_exits_zero_in_one_format_and_runs_nothing(command,
                                                                               tmp_path):
    r = subprocess.run([sys.executable, "-m", f"speechmusic_jax.{command}", "--help"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"python -m speechmusic_jax.{command}" in r.stdout  # the usage, from the docstring
    assert "\nflags:\n" in r.stdout and "--host_memory" in r.stdout, r.stdout  # cli.print_help
    assert r.stderr == "" and list(tmp_path.iterdir()) == []  # nothing ran, nothing written


@pytest.mark.parametrize("command", BUILT_IN)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_sh_help_of_a_built_in_command_prints_help_and_runs_nothing(command, flag, tmp_path):
    # A scratch copy with no virtualenv and an interpreter that leaves a mark when called:
    # setting up, testing or linting would create the virtualenv or call it.
    for name in ("run.sh", "pyproject.toml"):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\ntouch {tmp_path}/python-was-called\nexit 1\n")
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "SPEECHMUSIC_VENV": str(tmp_path / "venv")}
    args = ["tests/test_train.py", "-k", "resume", flag] if command == "test" else [flag]
    r = subprocess.run(["bash", "run.sh", command, *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: ./run.sh {command}") and r.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml", "python", "run.sh"]
    if command == "test":
        assert "./run.sh test tests/test_train.py -k resume" in r.stdout


def test_train_help_says_how_to_see_and_set_fields_and_what_the_star_means():
    text = " ".join(run("-m", "speechmusic_jax.train", "--help").stdout.split())
    assert "--dry_run prints the resolved config" in text and "--config.FIELD" in text
    assert "A `*` marks an epoch" in text and "--config.train.epochs" in text


@pytest.mark.parametrize("args,needle", [
    (["predict", "--workdir=x"], "name at least one audio file"),
    (["predict", "--workdir=x", "--output=rows.txt", "a.wav"], "--output must end in"),
    (["evaluate", "--workdir=x"], "--data is required"),
    (["evaluate", "--data=synthetic"], "--model is required"),
    (["predict", "--model=x", "--workdir=y", "a.wav"], "--model and --workdir both"),
    (["baseline"], "--split=PATH/split.csv is required"),
    (["train", TINY, "stray_argument"], "unexpected arguments"),
])
def test_usage_errors_are_one_line_and_exit_two(args, needle):
    r = run("-m", f"speechmusic_jax.{args[0]}", *args[1:])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_run_sh_lists_every_command_and_refuses_an_unknown_one():
    r = subprocess.run(["bash", "run.sh", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0
    for command in ("train", "test", "setup", "lint", "list", "evaluate", "predict", "crossval",
                    "benchmark", "baseline", "ship"):
        assert f"\n  {command} " in r.stdout, command
    assert "set -euo" not in r.stdout
    bad = subprocess.run(["bash", "run.sh", "trian"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'trian'" in bad.stderr
    assert "No module named" not in bad.stderr and "\n  train " in bad.stderr


def test_list_presets_is_fast():
    # It counts parameters from shapes, without initialising or compiling the models: a few
    # seconds where it took half a minute (a generous bound: this is not a benchmark).
    t0 = time.perf_counter()
    r = run("-m", "speechmusic_jax.list", "presets")
    assert r.returncode == 0 and "555,010" in r.stdout and "4,072,178" in r.stdout
    assert time.perf_counter() - t0 < 20


def test_the_tiny_run_says_it_is_a_smoke_test(tiny_config, tmp_path):
    from speechmusic_jax.training import loop

    logs = []
    loop.fit(tiny_config, str(tmp_path / "run"), log=logs.append)
    notes = [m for m in logs if m.startswith("note: default_tiny: a smoke test")]
    assert len(notes) == 2 and "accuracy means nothing" in notes[0]


# Interrupts: SIGINT (Ctrl-C) and SIGTERM at each phase of a run end with one true line.
PHASES = {  # a line the run prints -> the phase it starts
    "synthetic corpus: generating": "corpus generation",
    "model: ": "compilation",
    "(* marks an epoch": "training",
    "testing the weights": "test",
}


def _phase_signal_cases():
    """Every phase with each signal; the suite takes the signals in turn across the phases
    (the handler is one code path for both) and the soak tests take the other half."""
    for i, (marker, phase) in enumerate(PHASES.items()):
        for j, signum in enumerate((signal.SIGINT, signal.SIGTERM)):
            marks = [pytest.mark.slow] if (i + j) % 2 else []
            yield pytest.param(marker, signum, id=f"{phase}-{signum.name}", marks=marks)


@pytest.mark.parametrize(("marker", "signum"), list(_phase_signal_cases()))
def test_an_interrupt_at_any_phase_ends_with_one_true_line(tmp_path, marker, signum):
    workdir = tmp_path / "run"
    env = dict(os.environ, SPEECHMUSIC_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    extra = ["--config.train.epochs=30"] if PHASES[marker] == "training" else []
    proc = subprocess.Popen([sys.executable, "-m", "speechmusic_jax.train", TINY,
                             f"--workdir={workdir}", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith(marker) or line.startswith("    1 ") and marker.startswith("(*"):
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip(f"the run finished before the signal landed ({PHASES[marker]})")
    assert proc.returncode == 128 + signum, err
    assert "Fatal Python error" not in err and "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"interrupted ({signal.Signals(signum).name}): "), err
    # The message is true about what was kept.
    last = workdir / "checkpoints" / "last.json"
    if "is kept; run the same command to resume" in lines[0]:
        epoch = json.loads(last.read_text())["epoch"]
        assert f"checkpoint of epoch {epoch} " in lines[0]
    elif "no checkpoint had been written yet" in lines[0]:
        assert not last.exists() and (workdir / "config.json").exists()
    elif "had finished" in lines[0]:
        assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"
    else:
        assert lines[0].endswith("nothing was written") and not workdir.exists(), lines[0]


def test_summary_records_wall_clock_start_end_and_total(tiny_config, tmp_path):
    import datetime

    from speechmusic_jax.training import loop

    workdir = str(tmp_path / "run")
    t0 = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    assert loop.fit(tiny_config, workdir, log=lambda _: None, stop_after=1)["status"] == \
        "interrupted"
    time.sleep(1.5)  # between the sessions: not counted
    summary = loop.fit(tiny_config, workdir, log=lambda _: None)
    started = datetime.datetime.fromisoformat(summary["started_at"])
    finished = datetime.datetime.fromisoformat(summary["finished_at"])
    assert t0 <= started <= finished
    # The total is both sessions' wall time: more than this session's training alone, and less
    # than the clock from the first start (the pause between the sessions is not counted).
    assert summary["train_time_s"] < summary["wall_time_s"]
    assert summary["wall_time_s"] <= (finished - started).total_seconds() + 1


def test_a_finished_run_continues_for_more_epochs(tiny_config, tmp_path):
    from speechmusic_jax.training import loop

    workdir = str(tmp_path / "run")
    first = loop.fit(tiny_config, workdir, log=lambda _: None)
    assert first["epochs_run"] == 3
    more = tiny_config.copy_and_resolve_references()
    more.train.epochs = 5
    logs = []
    summary = loop.fit(more, workdir, log=logs.append)
    assert summary["epochs_run"] == 5 and summary["status"] == "completed"
    assert any(m.startswith("continuing the finished run from epoch 3 to epoch 5") for m in logs)
    assert any(m.startswith("resuming from the checkpoint of epoch 3") for m in logs)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3, 4, 5]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["epochs"] == 5
    fewer = tiny_config.copy_and_resolve_references()
    fewer.train.epochs = 2  # fewer epochs than were run: a different run, refused
    from speechmusic_jax import errors

    with pytest.raises(errors.WorkdirConflict, match="train.epochs"):
        loop.fit(fewer, workdir, log=lambda _: None)
