"""Cross-validation: K normal runs over stratified, grouped folds; mean ± std in crossval.json."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from audio_fixtures import make_gtzan_tree

from speechmusic_jax import config as config_lib
from speechmusic_jax import crossval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(tmp_path, spec: str) -> config_lib.ConfigDict:
    c = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    c.data.spec = spec
    c.data.cache_dir = str(tmp_path / "cache")
    c.train.epochs = 1
    return c


@pytest.mark.slow  # suite time (the suite stays under 15 min); run with -m slow
def test_crossval_on_a_gtzan_tree_tests_every_file_once(tmp_path):
    root = make_gtzan_tree(tmp_path / "gtzan", per_class=12, nested=True)
    cfg = _tiny(tmp_path, f"gtzan:{root}")
    workdir = tmp_path / "cv"
    result = crossval.run(cfg, str(workdir), folds=2, log=lambda m: None)
    with open(workdir / "crossval.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(result))
    for key in ("accuracy_mean", "accuracy_std", "f1_macro_mean", "f1_macro_std"):
        assert isinstance(saved[key], float)
    assert saved["folds_k"] == saved["folds_tested"] == 2 and len(saved["folds"]) == 2
    tested = []
    for i, record in enumerate(saved["folds"]):
        assert record["fold"] == i and record["status"] in ("completed", "stopped_early")
        assert {"accuracy", "f1", "confusion", "n_files"} <= set(record)
        with open(workdir / f"fold_{i}" / "config.json") as f:
            data = json.load(f)["data"]
        assert (data["folds"], data["fold"]) == (2, i)
        with open(workdir / f"fold_{i}" / "test_predictions.csv", newline="") as f:
            tested += [r["path"] for r in csv.DictReader(f)]
    assert len(tested) == len(set(tested)) == 24  # every clip tested exactly once
    accs = [r["accuracy"] for r in saved["folds"]]
    assert saved["accuracy_mean"] == pytest.approx(sum(accs) / 2)
    # Running it again finds both folds finished and reports the same numbers.
    again = crossval.run(cfg, str(workdir), folds=2, log=lambda m: None)
    assert again["accuracy_mean"] == result["accuracy_mean"]


def test_aggregate_mean_and_sample_std():
    records = [{"fold": i, "accuracy": a, "f1": {"macro": f}, "n_files": n}
               for i, (a, f, n) in enumerate([(0.8, 0.7, 10), (0.9, 0.9, 10), (1.0, 0.8, 20)])]
    records.append({"fold": 3, "status": "diverged"})
    r = crossval.aggregate(records, 4)
    assert r["folds_tested"] == 3
    assert r["accuracy_mean"] == pytest.approx(0.9) and r["accuracy_std"] == pytest.approx(0.1)
    assert r["f1_macro_mean"] == pytest.approx(0.8) and r["f1_macro_std"] == pytest.approx(0.1)
    assert r["pooled_accuracy"] == pytest.approx((8 + 9 + 20) / 40)


def test_too_few_folds(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="--folds: must be at least 2"):
        crossval.run(_tiny(tmp_path, "synthetic"), str(tmp_path / "cv"), folds=1)


def test_the_command_reports_errors_without_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "speechmusic_jax.crossval",
           f"--config={os.path.join(REPO, 'experiments', 'default.py')}:tiny",
           f"--data=gtzan:{tmp_path / 'nothing'}", "--folds=3", f"--workdir={tmp_path / 'cv'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not a folder" in r.stderr
