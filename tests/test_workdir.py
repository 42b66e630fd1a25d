"""--overwrite and output files: only what this program wrote is ever removed or replaced."""

import json
import os
import stat
import subprocess
import sys

import pytest

from speechmusic_jax import errors, io_utils
from speechmusic_jax.training import loop
from speechmusic_jax.training import workdir as workdir_rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_folder(path):
    """A folder of a user's files: what a typo'd --workdir might point at."""
    os.makedirs(path / "photos")
    (path / "notes.txt").write_text("my notes\n")
    (path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    return path


def tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _, files in os.walk(path) for f in files)


def test_overwrite_refuses_a_folder_of_user_files(tiny_config, tmp_path):
    folder = user_folder(tmp_path / "home")
    before = tree(folder)
    with pytest.raises(errors.WorkdirConflict, match="not a run of ours.*nothing was deleted"):
        loop.fit(tiny_config, str(folder), overwrite=True, log=lambda _: None)
    assert tree(folder) == before


def test_overwrite_refuses_a_run_folder_with_a_user_file_added(tmp_path):
    run = tmp_path / "run"
    os.makedirs(run / "checkpoints")
    (run / "config.json").write_text(json.dumps(
        {"name": "x", "seed": 0, "data": {}, "model": {}, "train": {}, "optimizer": {}}))
    (run / "metrics.jsonl").write_text("")
    (run / "my_analysis.ipynb").write_text("{}")
    with pytest.raises(errors.WorkdirConflict, match="my_analysis.ipynb"):
        workdir_rules.remove_run(str(run))
    assert (run / "my_analysis.ipynb").exists() and (run / "config.json").exists()
    (run / "my_analysis.ipynb").unlink()
    (run / ".summary.json.0a1b2c.tmp").write_text("{")  # left by a killed atomic write
    workdir_rules.remove_run(str(run))
    assert not run.exists()


def test_overwrite_refuses_a_config_json_that_is_not_ours(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.json").write_text('{"editor": "vim"}')
    with pytest.raises(errors.WorkdirConflict):
        workdir_rules.remove_run(str(folder))
    assert (folder / "config.json").exists()


def test_overwrite_of_an_empty_or_absent_folder_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    workdir_rules.remove_run(str(tmp_path / "empty"))
    workdir_rules.remove_run(str(tmp_path / "absent"))
    assert not (tmp_path / "empty").exists()


def test_train_cli_overwrite_of_the_current_folder_deletes_nothing(tmp_path):
    folder = user_folder(tmp_path / "cwd")
    before = tree(folder)
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.train",
                        f"--config={REPO}/experiments/default.py:tiny", "--workdir=.",
                        "--overwrite"], cwd=folder, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nothing was deleted" in lines[0], r.stderr
    assert tree(folder) == before


def test_check_output_rules(tmp_path):
    def ours(path):
        return json.loads(open(path).read()).get("what") is not None

    new = tmp_path / "new.json"
    io_utils.check_output(new, overwrite=False, ours=ours)  # absent: fine
    mine = tmp_path / "mine.json"
    mine.write_text('{"what": "step"}')
    with pytest.raises(errors.WorkdirConflict, match="exists; pass --overwrite"):
        io_utils.check_output(mine, overwrite=False, ours=ours)
    io_utils.check_output(mine, overwrite=True, ours=ours)
    theirs = tmp_path / "theirs.json"
    theirs.write_text("not json at all")
    with pytest.raises(errors.WorkdirConflict, match="not a file this program wrote"):
        io_utils.check_output(theirs, overwrite=True, ours=ours)
    with pytest.raises(errors.WorkdirConflict, match="is a folder"):
        io_utils.check_output(tmp_path, overwrite=True, ours=ours)


def test_benchmark_refuses_to_replace_a_user_file_before_any_work(tmp_path):
    from speechmusic_jax import benchmark, config

    target = tmp_path / "results.json"
    target.write_text('{"my": "data"}')
    with pytest.raises(errors.WorkdirConflict, match="not a file this program wrote"):
        benchmark.run("step", config.base_config(), {"batch_sizes": [1], "steps": 3},
                      log=lambda _: None, output=str(target), overwrite=True)
    assert target.read_text() == '{"my": "data"}'


def test_importing_io_utils_leaves_the_umask_alone(monkeypatch):
    import importlib

    def no_umask(_mask):
        raise AssertionError("os.umask called at import: racy for other threads")

    monkeypatch.setattr(os, "umask", no_umask)
    importlib.reload(io_utils)


def test_atomic_writes_get_the_permissions_of_open(tmp_path):
    old = os.umask(0o027)
    try:
        io_utils.atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]  # no temporary file left


# ---- --overwrite looks at every entry under the folder, not only the top-level names ----------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tiny_run import tiny_run

    return tiny_run(tmp_path_factory)


def _copy_run(trained, dest):
    import shutil

    shutil.copytree(trained, dest, symlinks=True)
    return dest


def _epoch_folder(run):
    return sorted((run / "checkpoints").glob("epoch_*"))[0]


NESTED_USER_FILES = {
    "eval": lambda run: run / "eval" / "my_notes.txt",
    "eval_json": lambda run: run / "eval" / "mine.json",
    "checkpoints": lambda run: run / "checkpoints" / "README.txt",
    "tensorboard": lambda run: run / "tensorboard" / "notes.txt",
    "epoch": lambda run: _epoch_folder(run) / "notes.txt",
    "orbax": lambda run: _epoch_folder(run) / "state" / "README.txt",
    "folder": lambda run: run / "checkpoints" / "mine" / "a.txt",
}


@pytest.mark.parametrize("where", sorted(NESTED_USER_FILES))
def test_overwrite_refuses_a_run_with_a_nested_user_file(trained, tmp_path, where):
    run = _copy_run(trained, tmp_path / "run")
    planted = NESTED_USER_FILES[where](run)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text('{"mine": 1}\n')
    before = tree(run)
    with pytest.raises(errors.WorkdirConflict) as e:
        workdir_rules.remove_run(str(run))
    rel = os.path.relpath(planted, run)
    assert (rel if where != "folder" else "checkpoints/mine/") in str(e.value)
    assert "nothing was deleted" in str(e.value) and "\n" not in str(e.value)
    assert tree(run) == before


def test_overwrite_removes_a_genuine_run_with_its_eval_files_and_temporaries(trained, tmp_path):
    run = _copy_run(trained, tmp_path / "run")
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "folder_x-0123abcd.json").write_text(
        json.dumps({"accuracy": 1.0, "source": "folder:x"}))
    (run / "eval" / "folder_x-0123abcd.predictions.csv").write_text(
        "path,label,predicted,confidence,p_speech,p_music,correct\n")
    (run / "checkpoints" / ".best.json.0a1b2c.tmp").write_text("{")
    (_epoch_folder(run) / "state.orbax-checkpoint-tmp-1234").mkdir()
    assert workdir_rules.foreign_entries(str(run)) == []
    workdir_rules.remove_run(str(run))
    assert not run.exists()


def test_train_cli_overwrite_keeps_nested_user_files(trained, tmp_path):
    run = _copy_run(trained, tmp_path / "run")
    for where in ("eval", "checkpoints", "epoch"):
        path = NESTED_USER_FILES[where](run)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine\n")
    before = tree(run)
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.train",
                        f"--config={REPO}/experiments/default.py:tiny", f"--workdir={run}",
                        "--overwrite"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nothing was deleted" in lines[0], r.stderr
    assert "eval/my_notes.txt" in lines[0] and "checkpoints/README.txt" in lines[0]
    assert tree(run) == before


def test_crossval_overwrite_refuses_a_fold_with_a_nested_user_file(trained, tiny_config,
                                                                    tmp_path):
    from speechmusic_jax import crossval

    _copy_run(trained, tmp_path / "cv" / "fold_0")
    _copy_run(trained, tmp_path / "cv" / "fold_1")
    (tmp_path / "cv" / "fold_1" / "checkpoints" / "README.txt").write_text("mine\n")
    before = tree(tmp_path / "cv")
    with pytest.raises(errors.WorkdirConflict, match="checkpoints/README.txt"):
        crossval.run(tiny_config, str(tmp_path / "cv"), 2, overwrite=True, log=lambda _: None)
    assert tree(tmp_path / "cv") == before


# ---- nothing is written before the inputs are known good ---------------------------------------

def test_a_failed_start_writes_nothing_and_the_corrected_commands_run(tmp_path):
    """A typo'd manifest, then a bad file in it, then the flag the error suggests: the first two
    leave no folder behind (and nothing in an empty one), the third trains."""
    from audio_fixtures import make_manifest_tree, write_bad

    manifest = make_manifest_tree(tmp_path / "corpus", per_class=8)
    bad = write_bad(tmp_path / "corpus" / "audio", "corrupt")
    with open(manifest, "a", encoding="utf-8") as f:
        f.write(f"{os.path.relpath(bad, tmp_path / 'corpus')},speech,fixture,x\n")
    (tmp_path / "empty").mkdir()

    def train(data, workdir, *flags):
        return subprocess.run([sys.executable, "-m", "speechmusic_jax.train",
                               f"--config={REPO}/experiments/default.py:tiny", f"--data={data}",
                               f"--workdir={workdir}", *flags], capture_output=True, text=True,
                              timeout=300, env=dict(os.environ, PYTHONPATH=REPO))

    typo = f"manifest:{tmp_path / 'corpus' / 'manifst.csv'}"
    for workdir in (tmp_path / "runs" / "mine", tmp_path / "empty"):
        r = train(typo, workdir)
        assert r.returncode not in (0, -9) and "manifst.csv" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists() and os.listdir(tmp_path / "empty") == []
    r = train(f"manifest:{manifest}", tmp_path / "runs" / "mine")
    assert r.returncode not in (0, -9) and "--data_on_error=skip" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
    r = train(f"manifest:{manifest}", tmp_path / "runs" / "mine", "--data_on_error=skip")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "runs" / "mine" / "config.json", encoding="utf-8") as f:
        assert json.load(f)["data"]["on_error"] == "skip"


def test_fields_that_do_not_change_training_never_make_a_different_config(tmp_path):
    from speechmusic_jax import config as config_lib

    cfg = config_lib.to_dict(config_lib.base_config())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    changed = json.loads(json.dumps(cfg))
    changed["data"].update(on_error="skip", workers=7, prefetch_batches=1, cache="memory")
    changed["train"]["eval_chunk_mib"] = 0.0
    changed["note"] = "another note"
    assert workdir_rules.start(str(tmp_path), changed) is workdir_rules.Start.RESUME
    changed["data"]["spec"] = "folder:/elsewhere"
    with pytest.raises(errors.WorkdirConflict, match=r"\(fields: data.spec\)"):
        workdir_rules.start(str(tmp_path), changed)


def test_a_run_resumes_with_a_new_on_error_and_records_it(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    first = loop.fit(tiny_config, workdir, stop_after=1, log=lambda _: None)
    assert first["status"] == "interrupted"
    tiny_config.data.on_error = "skip"
    tiny_config.data.workers = 1
    logged = []
    summary = loop.fit(tiny_config, workdir, log=logged.append)
    assert summary["status"] in ("completed", "stopped_early")
    assert "resuming from the checkpoint of epoch 1" in logged
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        data = json.load(f)["data"]
    assert (data["on_error"], data["workers"]) == ("skip", 1)


def test_a_folder_holding_only_our_temporaries_starts_like_an_empty_one(tmp_path):
    """A kill during a run's or a sweep's first atomic write leaves ``.NAME.HEX.tmp`` behind
    (found by the fault soak: the rerun of the same sweep command was refused); the same command
    must then start, and any other entry still refuses the folder."""
    from speechmusic_jax.tuning import runner

    for name, check in (("config.json", lambda w: workdir_rules.start(w, {})),
                        ("sweep.json", lambda w: runner.check_workdir(w, {}))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f".{name}.0123456789ab.tmp").write_text("{")
        check(str(folder))  # no error: starts as in an empty folder
        (folder / "notes.txt").write_text("mine")
        with pytest.raises(errors.WorkdirConflict, match=r"not empty .*\['notes.txt'\]"):
            check(str(folder))
