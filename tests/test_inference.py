"""evaluate and predict on a finished tiny run: they agree with what training reported."""

import csv
import json
import os
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


def test_evaluate_cli_writes_a_report(run_dir):
    r = cli("evaluate", f"--workdir={run_dir}", "--data=synthetic")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(os.path.join(run_dir, "eval", "synthetic.json")) as f:
        report = json.load(f)
    assert report["n_files"] == 32
    for key in ("accuracy", "accuracy_ci95", "precision", "recall", "f1", "confusion", "window"):
        assert key in report


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


def test_predict_and_evaluate_fail_clearly_without_a_run(tmp_path):
    r = cli("predict", f"--workdir={tmp_path}", "x.wav")
    assert r.returncode == 2 and "holds no run" in r.stderr and "Traceback" not in r.stderr
    r = cli("evaluate", f"--workdir={tmp_path}", "--data=synthetic")
    assert r.returncode == 2 and "holds no run" in r.stderr
