"""evaluate and predict on a finished tiny run: they agree with what training reported."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from speechmusic_jax import trained_run
from speechmusic_jax.data.split import read_split_csv
from speechmusic_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from speechmusic_jax.config import load_experiment

    cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    workdir = str(tmp_path_factory.mktemp("inf") / "run")
    loop.fit(cfg, workdir, log=lambda _: None)
    return workdir


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", f"speechmusic_jax.{module}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_loaded_run_reproduces_the_test_predictions(run_dir):
    run = trained_run.load_run(run_dir)
    split = read_split_csv(os.path.join(run_dir, "split.csv"), run.classes)
    rows = trained_run.clip_rows(run, trained_run.classify(run, split["test"]))
    with open(os.path.join(run_dir, "test_predictions.csv")) as f:
        saved = {r["path"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(saved)
    for r in rows:
        assert r["label"] == saved[r["path"]]["predicted"]
        assert r["p_music"] == pytest.approx(float(saved[r["path"]]["p_music"]), abs=1e-5)


def test_config_from_json_round_trips(run_dir):
    from speechmusic_jax.config import to_dict

    cfg = trained_run.config_from_json(os.path.join(run_dir, "config.json"))
    with open(os.path.join(run_dir, "config.json")) as f:
        assert to_dict(cfg) == json.load(f)


def test_evaluate_on_the_test_split_reproduces_the_test_report(run_dir, tmp_path):
    """evaluate on held-out files (the run's test split, as a manifest): the same report as
    training's test, and no overlap warning."""
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    manifest = tmp_path / "test.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{f.path},{('speech', 'music')[f.label]}\n" for f in split["test"]))
    r = cli("evaluate", f"--workdir={run_dir}", f"--data=manifest:{manifest}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning" not in r.stdout + r.stderr
    name = trained_run.source_name(f"manifest:{manifest}")
    path = os.path.join(run_dir, "eval", f"{name}.json")
    with open(path) as f:
        report = json.load(f)
    with open(os.path.join(run_dir, "summary.json")) as f:
        test = json.load(f)["test"]
    assert report["n_files"] == len(split["test"]) == test["n_files"]
    assert report["confusion"] == test["confusion"]
    for key in ("accuracy", "roc_auc"):
        assert report[key] == pytest.approx(test[key]), key
    assert report["f1"]["macro"] == pytest.approx(test["f1"]["macro"])
    assert report["overlap_with_training"]["files"] == 0 and report["data_errors"] == {}


def test_evaluate_warns_when_the_data_overlaps_training(run_dir, tmp_path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    # Two training files by their own path, one validation file copied under another name.
    copy = tmp_path / "copy_of_val.wav"
    shutil.copyfile(split["val"][0].path, copy)
    rows = [(split["train"][0].path, "speech" if split["train"][0].label == 0 else "music"),
            (split["train"][1].path, "speech" if split["train"][1].label == 0 else "music"),
            (str(copy), "speech" if split["val"][0].label == 0 else "music"),
            *[(f.path, "speech" if f.label == 0 else "music") for f in split["test"]]]
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    run = trained_run.load_run(run_dir)
    logs = []
    report, _ = trained_run.evaluate_source(run, f"manifest:{manifest}", log=logs.append)
    overlap = report["overlap_with_training"]
    assert (overlap["files"], overlap["train"], overlap["val"]) == (3, 2, 1)
    assert any(m.startswith("warning: 3 of the") and "overstate" in m for m in logs)


def test_evaluate_records_every_data_error(run_dir, tmp_path):
    from audio_fixtures import make_folder_tree, write_bad, write_class_files

    root = make_folder_tree(tmp_path / "corpus", per_class=3)
    write_bad(os.path.join(root, "Speech"), "corrupt")  # unreadable header
    write_class_files(os.path.join(root, "noise"), "music", 2)  # a class the run does not know
    run = trained_run.load_run(run_dir)
    report, path = trained_run.evaluate_source(run, f"folder:{root}", on_error="skip",
                                               log=lambda _: None)
    assert report["n_files"] == 6
    assert report["data_errors"] == {"unreadable": 1, "unknown_class": 2}
    with open(path) as f:
        assert json.load(f)["data_errors"] == report["data_errors"]


def test_predict_cli_files_and_segments(run_dir, tmp_path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    paths = [f.path for f in split["test"]]
    out = tmp_path / "pred.csv"
    r = cli("predict", f"--workdir={run_dir}", f"--output={out}", *paths)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == paths
    seg = tmp_path / "seg.json"
    r = cli("predict", f"--workdir={run_dir}", "--segments", f"--output={seg}", paths[0])
    assert r.returncode == 0, r.stderr[-2000:]
    with open(seg) as f:
        windows = json.load(f)
    # 2 s clips, 1 s windows: two windows covering [0, 2].
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 1.0), (1.0, 2.0)]
    assert all(w["label"] in ("speech", "music") and 0.5 <= w["confidence"] <= 1 for w in windows)


def test_predict_output_is_never_written_over_a_user_file(run_dir, tmp_path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    out = tmp_path / "rows.csv"
    out.write_text("my,own,table\n")
    for extra in ([], ["--overwrite"]):
        r = cli("predict", f"--workdir={run_dir}", f"--output={out}", *extra, split["test"][0].path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert out.read_text() == "my,own,table\n"
    out.unlink()
    first = cli("predict", f"--workdir={run_dir}", f"--output={out}", split["test"][0].path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli("predict", f"--workdir={run_dir}", f"--output={out}", split["test"][1].path)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    forced = cli("predict", f"--workdir={run_dir}", f"--output={out}", "--overwrite",
                 split["test"][1].path)
    assert forced.returncode == 0 and split["test"][1].path in out.read_text()


def test_predict_and_evaluate_fail_clearly_without_a_run(tmp_path):
    r = cli("predict", f"--workdir={tmp_path}", "x.wav")
    assert r.returncode == 2 and "holds no run" in r.stderr and "Traceback" not in r.stderr
    r = cli("evaluate", f"--workdir={tmp_path}", "--data=synthetic")
    assert r.returncode == 2 and "holds no run" in r.stderr
