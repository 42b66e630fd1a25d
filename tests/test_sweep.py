"""The sweep command and the Python API: trials run, resume, share a folder, fail alone."""

import csv
import os
import re
import subprocess
import sys
import textwrap

import pytest

from speechmusic_jax import sweep as sweep_cli
from speechmusic_jax.errors import WorkdirConflict
from speechmusic_jax.io_utils import read_json
from speechmusic_jax.tuning import records, runner, spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP_FILE = textwrap.dedent('''
    """A test sweep: two optimizers x 1 point x 2 seeds of the tiny default experiment."""
    import os
    from speechmusic_jax.config import load_experiment
    from speechmusic_jax.tuning import Sweep, choice

    def get_sweep(arg=None):
        base = load_experiment(os.path.join({repo!r}, "experiments", "default.py"), "tiny")
        base.train.epochs = 2
        arms = {{"sgd": {{"optimizer.name": "momentum"}}, "adamw": {{"optimizer.name": "adamw"}}}}
        if arg == "broken":  # one arm diverges, one cannot find its data
            arms = {{"huge_lr": {{"optimizer.name": "sgd", "optimizer.learning_rate": 1e30}},
                     "no_data": {{"data.spec": "folder:/nonexistent/corpus"}},
                     "fine": {{"optimizer.name": "adamw"}}}}
        return Sweep(name="test_sweep", base=base, arms=arms,
                     space={{"train.label_smoothing": choice(0.0)}}, budget=1, seeds=(0, 1),
                     target=("val_accuracy", 0.5), mode="alone")
''')


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "test_sweep.py"
    path.write_text(SWEEP_FILE.format(repo=REPO))
    return str(path)


def _flags(path, workdir, **kw):
    flags = {"sweep": path, "workdir": str(workdir), "trials": None, "mode": None, "data": None,
             "data_on_error": None, "report_only": False, "dry_run": False, "verbose": False}
    flags.update(kw)
    return flags


def _rows(workdir):
    with open(workdir / "results.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _mtimes(workdir):
    return {name: os.path.getmtime(os.path.join(workdir, "trials", name, "summary.json"))
            for name in sorted(os.listdir(os.path.join(workdir, "trials")))}


@pytest.mark.slow  # ~25 s alone; test_overlapping_processes_never_train_one_trial_twice stays fast
def test_two_processes_share_a_sweep_and_a_rerun_trains_nothing(sweep_file, tmp_path, capsys):
    # Two processes (as on two machines: --num_processes/--process_id, or srun) share the
    # folder: each trains its share, every trial exactly once, and process 0 merges.
    workdir = tmp_path / "sweep"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "speechmusic_jax.sweep", f"--sweep={sweep_file}",
         f"--workdir={workdir}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    ran = [{int(line.split()[1]) for line in out.splitlines()
            if line.startswith("trial ") and ": completed" in line} for out in outputs]
    assert ran[0] | ran[1] == {0, 1, 2, 3} and not ran[0] & ran[1]  # each trial by one process
    for t in range(4):  # every trial is an ordinary run, with its log beside it: one session
        assert (workdir / "trials" / f"{t:03d}" / "checkpoints").is_dir()
        assert (workdir / "logs" / f"{t:03d}.log").read_text().count("compiled train step") == 1
    assert "process 0 writes the merged results" in outputs[1]
    assert "results in" in outputs[0] and "(results.md" not in outputs[1]
    assert not (workdir / "claims").exists()
    rows = _rows(workdir)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert [(r["arm"], r["seed"]) for r in rows] == [("sgd", "0"), ("adamw", "0"), ("sgd", "1"),
                                                      ("adamw", "1")]
    for r in rows:
        assert float(r["test_accuracy"]) >= 0 and r["train.label_smoothing"] == "0.0"
        assert r["steps_to_target"] and int(r["params_trainable"]) > 0
    for name in ("results.md", "results.json", "curves.png", "budget.png", "pareto.png",
                 "sweep.json"):
        assert (workdir / name).exists(), name
    md = (workdir / "results.md").read_text()
    assert "| sgd |" in md and "Paired differences" in md
    assert "adamw" in outputs[0] and "test_accuracy" in outputs[0]  # the per-arm table
    before = _mtimes(workdir)
    assert sweep_cli.main(_flags(sweep_file, workdir, trials="1:3"), []) == 0
    assert "running 0 of trials 1..2 (2 already finished)" in capsys.readouterr().out
    assert sweep_cli.main(_flags(sweep_file, workdir), []) == 0
    assert "running 0 of trials 0..3 (4 already finished)" in capsys.readouterr().out
    assert _mtimes(workdir) == before  # no trial ran twice
    # the same results from the files alone
    assert sweep_cli.main(_flags(sweep_file, workdir, report_only=True), []) == 0


def test_overlapping_processes_never_train_one_trial_twice(sweep_file, tmp_path, capsys):
    # Trial 0 is held by a live process (here: a child that sleeps), trial 1 by one that is
    # gone: this process skips 0, takes 1 over, and leaves no claim of its own behind.
    workdir = tmp_path / "sweep"
    assert sweep_cli.main(_flags(sweep_file, workdir, trials="3"), []) == 0
    (workdir / "claims").mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = __import__("socket").gethostname()
    for index, pid in ((0, live.pid), (1, gone.pid)):
        (workdir / "claims" / f"{index:03d}.json").write_text(
            f'{{"host": "{host}", "pid": {pid}, "started": "now"}}')
    try:
        assert sweep_cli.main(_flags(sweep_file, workdir, trials="0:2"), []) == 0
    finally:
        live.kill()
    out = capsys.readouterr().out
    assert f"trial 0: skipped, process {live.pid} on {host}" in out
    assert f"trial 1: took over the claim of process {gone.pid}, which is gone" in out
    assert [r["status"] for r in _rows(workdir)] == ["pending", "completed", "pending",
                                                     "completed"]
    assert os.listdir(workdir / "claims") == ["000.json"]  # the live one's, untouched
    # what Ctrl-C now says: the finished trials are kept (a rerun skips them)
    note = runner.interrupt_note(spec.load_sweep(sweep_file), str(workdir))
    assert note.startswith(f"2 of 4 trials are finished and kept in {workdir}")
    assert runner.interrupt_note(spec.load_sweep(sweep_file), str(tmp_path / "none")) == \
        "nothing was written"


def test_claims_left_by_a_process_that_is_gone_are_taken_over_in_one_line(tmp_path):
    from speechmusic_jax.tuning import claims

    (tmp_path / "claims").mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = __import__("socket").gethostname()
    for index in (*range(5), 7):  # 7: a finished trial's claim, which nobody claims again
        (tmp_path / "claims" / f"{index:03d}.json").write_text(
            f'{{"host": "{host}", "pid": {gone.pid}, "started": "now"}}')
    lines = []
    with claims.held(str(tmp_path), list(range(5)), lines.append) as got:
        assert got == [0, 1, 2, 3, 4]
    assert lines == [f"trials 0..4: took over 5 claims of processes that are gone (the first: "
                     f"the claim of process {gone.pid}, which is gone)"]
    assert not (tmp_path / "claims").exists()  # the stale claim of trial 7 cleared too


def test_a_diverged_and_a_failed_trial_are_recorded_and_the_sweep_goes_on(sweep_file, tmp_path):
    workdir = tmp_path / "broken"
    sweep = spec.load_sweep(sweep_file, "broken")
    result = runner.run_sweep(sweep, str(workdir), log=lambda m: None, plots=False,
                              host_memory="release")
    by_arm = {(r["arm"], r["seed"]): r for r in result.records}
    assert by_arm[("huge_lr", 0)]["status"] == "diverged"
    assert by_arm[("huge_lr", 0)]["diverged_at_step"] >= 1
    assert by_arm[("huge_lr", 0)]["steps_to_target"] == float("inf")
    assert by_arm[("no_data", 0)]["status"] == "failed"
    assert "nonexistent" in by_arm[("no_data", 0)]["error"]
    assert by_arm[("fine", 1)]["status"] == "completed"
    folders = [records.trial_dir(str(workdir), r["trial"]) for r in result.records
               if r["status"] == "completed"]
    assert folders and all(read_json(os.path.join(f, "summary.json"))["host_memory"] == "release"
                           for f in folders)  # the allocator policy of the step times
    table = result.table()
    assert "0/2 (2 diverged)" in table and "0/2 (2 failed)" in table
    # a rerun retries the failed trials only
    lines = []
    runner.run_sweep(sweep, str(workdir), log=lines.append, plots=False)
    assert any("running 2 of trials 0..5 (4 already finished)" in line for line in lines)


def test_a_folder_of_other_things_or_another_sweep_is_refused(sweep_file, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    sweep = spec.load_sweep(sweep_file)
    with pytest.raises(WorkdirConflict, match="holds no sweep"):
        runner.run_sweep(sweep, str(foreign), log=lambda m: None)
    assert (foreign / "notes.txt").read_text() == "keep me"
    other = tmp_path / "other"
    runner.run_sweep(sweep, str(other), trials="0:1", log=lambda m: None, write=False)
    sweep.seeds = (0, 1, 2)  # a different sweep in the same folder
    with pytest.raises(WorkdirConflict, match="different sweep"):
        runner.run_sweep(sweep, str(other), log=lambda m: None)
    with pytest.raises(Exception, match="--trials"):
        runner.parse_trials("5:2", 4)


@pytest.mark.slow  # suite time (the suite stays under 15 min); run with -m slow
def test_grouped_mode_trains_each_group_in_one_program(sweep_file, tmp_path):
    workdir = tmp_path / "grouped"
    sweep = spec.load_sweep(sweep_file)
    # the second point diverges at once: frozen in its group, recorded with its step
    sweep.space = {"optimizer.learning_rate": runner.space_lib.choice(1e-2, 1e30)}
    sweep.search, sweep.seeds = "grid", (0,)
    result = runner.run_sweep(sweep, str(workdir), mode="grouped", log=lambda m: None,
                              plots=False)
    assert [r["status"] for r in result.records] == ["completed", "diverged"] * 2
    assert [r["mode"] for r in result.records] == ["vmap"] * 4
    assert [r["group_size"] for r in result.records] == [2] * 4
    assert result.records[1]["diverged_at_step"] == 2  # the first step makes the weights huge
    summary = read_json(os.path.join(records.trial_dir(str(workdir), 0), "summary.json"))
    assert summary["grouped"]["trials"] == ["000", "001"]
    assert summary["test"]["accuracy"] >= 0


@pytest.mark.slow  # with the soak tests: the suite stays under 15 min
def test_the_example_runs(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "examples"))
    try:
        import compare_optimizers
    finally:
        sys.path.pop(0)
    out = compare_optimizers.main(["--quick", "--workdir", str(tmp_path / "example")])
    result = out["result"]
    assert len(result.records) == 4 and result.counts == {"completed": 4}
    assert {s["arm"] for s in result.arms()} == {"momentum", "adamw"}
    assert out["paired"]["n"] == 2
    assert (tmp_path / "example" / "results.md").exists()


SWEEPS = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "experiments", "sweeps"))
                if f.endswith(".py"))


# The suite runs the optimizer comparisons' first trials; the other ready sweeps (each a tiny
# train of a config that tests/test_tuning_space.py already builds) run under -m slow.
FAST_SWEEPS = {"optimizers", "optimizers_workloads"}


@pytest.mark.parametrize("name", [n if n in FAST_SWEEPS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in SWEEPS])
def test_each_ready_sweep_runs_its_first_tiny_trial(name, tmp_path):
    sweep = spec.load_sweep(os.path.join(REPO, "experiments", "sweeps", f"{name}.py"), "tiny")
    sweep.base.train.epochs = 2  # the trial as its sweep defines it, for fewer epochs
    result = runner.run_sweep(sweep, str(tmp_path / name), trials=(0, 1), log=lambda m: None,
                              plots=False)
    assert result.records[0]["status"] in ("completed", "stopped_early"), result.records[0]


def test_an_optimizer_the_workload_rules_out_is_left_out_not_run_on_another_network():
    from speechmusic_jax.tuning.bases import tiny_base

    base = tiny_base()
    assert base.model.norm == "batch"
    sweep = runner.optimizer_sweep(base, ["adamw", "schedule_free_adamw"], budget=1, seeds=1)
    assert list(sweep.arms) == ["adamw"]
    assert len(sweep.left_out) == 1 and sweep.left_out[0].startswith(
        "left out: schedule_free_adamw cannot run on this workload (optimizer.name:")
    assert sweep.left_out[0] in sweep.describe()
    assert all(sweep.trial_config(t).model.norm == "batch" for t in sweep.trials())
    result = runner.collect(sweep, "/nonexistent")
    assert sweep.left_out[0] in result.markdown() and result.to_json()["left_out"]
    # on a workload it can run, it runs that workload unchanged, as every other arm does
    base.model.norm = "layer"
    sweep = runner.optimizer_sweep(base, ["adamw", "schedule_free_adamw"], budget=1, seeds=1)
    assert list(sweep.arms) == ["adamw", "schedule_free_adamw"] and not sweep.left_out
    configs = [sweep.trial_config(t) for t in sweep.trials()]
    assert {c.model.norm for c in configs} == {"layer"}
    assert [c.optimizer.schedule for c in configs] == [base.optimizer.schedule, "constant"]
    base.model.norm = "batch"
    from speechmusic_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="none can run on this workload"):
        runner.optimizer_sweep(base, ["schedule_free_adamw"], budget=1, seeds=1)


def test_the_workloads_sweep_covers_presets_times_data_for_profiles():
    sweep = spec.load_sweep(os.path.join(REPO, "experiments", "sweeps",
                                         "optimizers_workloads.py"), "tiny")
    fixed = list(sweep.workloads.values())
    assert len({f["model.preset"] for f in fixed}) == 2
    assert len({f["data.synthetic.seed"] for f in fixed}) == 2 and len(fixed) == 4
    assert sweep.notice.startswith("a smoke test")
    # records of every workload: the result has a profile (profile.png, results.md)
    recs = [dict(r, status="completed", val_accuracy=0.9, test_accuracy=0.8,
                 steps_to_target=10.0 * (1 + r["trial"] % 3), seconds_to_target=1.0)
            for r in runner.collect(sweep, "/nonexistent").records]
    result = runner.collect(sweep, "/nonexistent")
    result.records = recs
    assert result.profiles()["workloads"] == sorted(sweep.workloads)
    assert "Performance profiles" in result.markdown()


def test_the_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    run = subprocess.run([sys.executable, "-m", "speechmusic_jax.sweep",
                          "--sweep=experiments/sweeps/optimizers.py:tiny", "--dry_run",
                          f"--workdir={tmp_path / 'w'}", "--trials=0:3", "--reference=adam"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "trial 002" in run.stdout and "trial 003" not in run.stdout
    assert run.stdout.startswith("note: optimizers_tiny: a smoke test")  # as train's :tiny
    assert "reference arm: adam (named)" in run.stdout
    unknown = subprocess.run([sys.executable, "-m", "speechmusic_jax.sweep",
                              "--sweep=experiments/sweeps/optimizers.py:tiny", "--dry_run",
                              "--reference=sgd"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 2
    assert "reference: no arm 'sgd'" in unknown.stderr
    assert not (tmp_path / "w").exists()
    bad = subprocess.run([sys.executable, "-m", "speechmusic_jax.sweep",
                          "--sweep=experiments/sweeps/nothing.py"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "config error: --sweep: no sweep file experiments/sweeps/nothing.py"]


@pytest.mark.slow  # five tiny trials (minutes on a busy 2-core machine): with the soak tests
def test_the_docs_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    with open(os.path.join(REPO, "docs", "sweeps.md"), encoding="utf-8") as f:
        blocks = [b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S)
                  if "compare_optimizers(" in b]
    assert len(blocks) == 1
    # "in the repository's folder": its experiments/, and runs/ of its own
    (tmp_path / "experiments").symlink_to(os.path.join(REPO, "experiments"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "docs/sweeps.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert out.count("verdict: ") == 2  # the comparison's table and the sweep's, once each
    assert out.count("sweep compare_optimizers on synthetic: 4 trials") == 1
    compared = read_json(str(tmp_path / "runs" / "compare_optimizers" / "results.json"))
    assert compared["reference_rule"] == "best mean validation accuracy"
    assert compared["reference_arm"] in ("momentum", "adamw")
    assert "no claim can be made with 2 seeds" in compared["verdict"]
    assert (tmp_path / "runs" / "sweeps" / "widths_tiny" / "results.md").exists()
    assert namespace["result"].counts == {"completed": 1, "pending": 5}
