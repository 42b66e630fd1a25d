"""End-to-end runs of the tiny experiment: artifacts, determinism, early stopping, workdir rules."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from speechmusic_jax import errors
from speechmusic_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = {"epoch_time_s", "train_time_s", "examples_per_s", "data_wait_s", "device_idle_s",
               "device_idle_share"}


def quiet(_msg: str) -> None:
    pass


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from speechmusic_jax.config import load_experiment

    cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
    summary = loop.fit(cfg, workdir, log=quiet)
    return cfg, workdir, summary


def test_run_writes_every_artifact(tiny_run):
    cfg, workdir, summary = tiny_run
    for name in ("config.json", "split.csv", "metrics.jsonl", "test_predictions.csv",
                 "summary.json", "curves.png", "checkpoints/best.json", "checkpoints/last.json",
                 "tensorboard"):
        assert os.path.exists(os.path.join(workdir, name)), name
    rows = read_metrics(workdir)
    assert [r["epoch"] for r in rows] == list(range(1, cfg.train.epochs + 1))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1",
                "learning_rate", "epoch_time_s", "train_time_s", "examples_per_s"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 < r["train_time_s"] <= r["epoch_time_s"] for r in rows)
    assert sum(r["train_time_s"] for r in rows) == pytest.approx(summary["train_time_s"])
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("status", "best_epoch", "epochs_run", "seed", "params_trainable", "params_total",
                "train_time_s", "step_time_ms", "compile_time_s", "device_kind", "device_count",
                "versions", "flops_per_example", "inference", "peak_memory_bytes",
                "checkpoint_bytes", "weight_decay_semantics", "data_errors", "balance"):
        assert key in summary, key
    assert summary["status"] == "completed"
    assert summary["epochs_run"] == cfg.train.epochs
    assert set(summary["versions"]) >= {"python", "jax", "jaxlib", "flax", "optax"}
    st = summary["step_time_ms"]
    assert 0 < st["min"] <= st["median"] <= st["max"]
    test = summary["test"]
    lo, hi = test["accuracy_ci95"]
    assert 0 <= lo <= test["accuracy"] <= hi <= 1
    assert set(test["f1"]) == {"speech", "music", "macro"}
    assert np.asarray(test["confusion"]).sum() == test["n_files"]
    assert "window" in test and test["window"]["n_windows"] >= test["n_files"]
    # Whole-run throughput beside the step's, both measured in this run.
    tp = summary["throughput"]
    examples = sum(r["examples_per_s"] * r["train_time_s"] for r in rows)  # every crop real
    assert tp["train_examples_per_s"] == pytest.approx(examples / summary["train_time_s"])
    assert tp["step_examples_per_s"] == pytest.approx(
        cfg.train.batch_size / (st["median"] / 1e3))
    assert tp["ratio"] == pytest.approx(tp["train_examples_per_s"] / tp["step_examples_per_s"])
    assert tp["ratio"] > 0 and tp["note"]


def test_split_is_by_file_stratified_and_saved(tiny_run):
    cfg, workdir, summary = tiny_run
    with open(os.path.join(workdir, "split.csv")) as f:
        rows = list(csv.DictReader(f))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 2 * cfg.data.synthetic.clips_per_class
    assert all(os.path.isabs(p) for p in paths)
    for s in ("train", "val", "test"):
        labels = [r["label"] for r in rows if r["split"] == s]
        assert labels.count("speech") == labels.count("music") > 0, s
    with open(os.path.join(workdir, "test_predictions.csv")) as f:
        preds = list(csv.DictReader(f))
    test_paths = {r["path"] for r in rows if r["split"] == "test"}
    assert {p["path"] for p in preds} == test_paths
    for p in preds:
        probs = [float(p["p_speech"]), float(p["p_music"])]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert p["predicted"] == ("speech", "music")[int(np.argmax(probs))]


def test_same_seed_same_metrics_and_other_seed_differs(tiny_run, tmp_path):
    cfg, workdir, _ = tiny_run
    loop.fit(cfg, str(tmp_path / "again"), log=quiet)
    assert without_timing(read_metrics(str(tmp_path / "again"))) == without_timing(
        read_metrics(workdir))
    with open(os.path.join(workdir, "split.csv")) as a, open(tmp_path / "again" / "split.csv") as b:
        assert a.read() == b.read()
    other = cfg.copy_and_resolve_references()
    other.seed = 1
    loop.fit(other, str(tmp_path / "seed1"), log=quiet)
    assert without_timing(read_metrics(str(tmp_path / "seed1"))) != without_timing(
        read_metrics(workdir))


def test_finished_run_is_not_trained_again(tiny_run):
    cfg, workdir, summary = tiny_run
    before = os.path.getmtime(os.path.join(workdir, "metrics.jsonl"))
    messages = []
    again = loop.fit(cfg, workdir, log=messages.append)
    assert again == json.loads(json.dumps(summary))
    assert os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) == before
    assert any("finished run" in m for m in messages)


def test_different_config_in_workdir_names_fields(tiny_run):
    cfg, workdir, _ = tiny_run
    other = cfg.copy_and_resolve_references()
    other.train.epochs = cfg.train.epochs + 1
    other.optimizer.learning_rate = 0.5
    with pytest.raises(errors.WorkdirConflict, match=r"optimizer\.learning_rate, train\.epochs"):
        loop.fit(other, workdir, log=quiet)


def test_workdir_that_is_a_file_is_refused(tiny_config, tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(errors.WorkdirConflict, match="is a file"):
        loop.fit(tiny_config, str(path), log=quiet)


def test_early_stopping_stops_and_restores_best(tiny_config, tmp_path):
    from speechmusic_jax.data.pipeline import LoaderConfig
    from speechmusic_jax.data.split import read_split_csv
    from speechmusic_jax.models.conv1d import build_model
    from speechmusic_jax.models.presets import resolve_spec
    from speechmusic_jax.training import clip_scoring
    from speechmusic_jax.training.checkpoints import Checkpoints
    from speechmusic_jax.training.step import TrainState, make_eval_step

    cfg = tiny_config
    cfg.train.epochs = 6
    cfg.train.early_stopping.monitor = "val_accuracy"
    cfg.train.early_stopping.min_delta = 1.0  # no epoch can improve on the first by more than 1
    cfg.train.early_stopping.patience = 2
    cfg.train.early_stopping.restore_best = True  # the default experiment tests its last epoch
    workdir = str(tmp_path / "es")
    summary = loop.fit(cfg, workdir, log=quiet)
    assert summary["status"] == "stopped_early"
    assert summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    ckpts = Checkpoints(workdir)
    assert ckpts.best()["epoch"] == 1 and ckpts.last()["epoch"] == 3

    # The test predictions are those of the epoch-1 weights, not the last ones.
    from flax import nnx

    spec = resolve_spec(cfg.model, 2)
    graphdef, params, rest = nnx.split(build_model(spec, cfg.seed), nnx.Param, ...)
    like = TrainState(params, rest, None, np.zeros((), np.int32))
    state, _ = ckpts.restore(ckpts.best(), like._replace(opt_state=_opt_like(cfg, params)))
    evaluate = jax.jit(make_eval_step(graphdef))
    split = read_split_csv(os.path.join(workdir, "split.csv"), cfg.data.classes)
    seg = int(cfg.data.segment_seconds * cfg.data.sample_rate)
    loader = LoaderConfig(cfg.data.sample_rate, seg, seg, cfg.train.batch_size)
    pred = clip_scoring.predict_files(lambda x: evaluate(state.params, state.model_state, x),
                                    split["test"], loader, cfg.train.eval_batch_size)
    with open(os.path.join(workdir, "test_predictions.csv")) as f:
        saved = {r["path"]: float(r["p_music"]) for r in csv.DictReader(f)}
    probs = clip_scoring.softmax(pred.clip_logits)[:, 1]
    for f, p in zip(pred.files, probs, strict=True):
        assert saved[f.path] == pytest.approx(p, abs=1e-5)


def _opt_like(cfg, params):
    from speechmusic_jax.training import optim

    tx = optim.make_optimizer(cfg.optimizer.name, lambda _: 1.0,
                              weight_decay=cfg.optimizer.weight_decay)
    return tx.init(params)


def test_two_epochs_resume_two_more_equals_four_straight(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.train.epochs = 4
    straight = loop.fit(cfg, str(tmp_path / "straight"), log=quiet)
    resumed = str(tmp_path / "resumed")
    first = loop.fit(cfg, resumed, log=quiet, stop_after=2)
    assert first["status"] == "interrupted"
    assert [r["epoch"] for r in read_metrics(resumed)] == [1, 2]
    messages = []
    second = loop.fit(cfg, resumed, log=messages.append)
    assert any("resuming from the checkpoint of epoch 2" in m for m in messages)
    assert without_timing(read_metrics(resumed)) == without_timing(
        read_metrics(str(tmp_path / "straight")))
    assert second["test"] == straight["test"]
    assert second["best_epoch"] == straight["best_epoch"]


def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "speechmusic_jax.train", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_trains_with_overrides(tmp_path):
    workdir = tmp_path / "cli"
    r = run_cli("--config=experiments/default.py:tiny", f"--workdir={workdir}",
                "--config.train.epochs=1", "--config.optimizer.learning_rate=0.002",
                "--data=synthetic", "--host_memory=release")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "final report" in r.stdout and "test, clip level" in r.stdout
    # the step times were taken under this allocator policy: the summary says which
    assert "; host memory: release)" in r.stdout
    with open(workdir / "summary.json") as f:
        assert json.load(f)["host_memory"] == "release"
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    assert saved["train"]["epochs"] == 1 and saved["optimizer"]["learning_rate"] == 0.002
    assert saved["data"]["spec"] == "synthetic"


@pytest.mark.parametrize("args,needle", [
    (["--config.train.epochs=0"], "train.epochs"),
    (["--config.optimizer.name=adamm"], "optimizer.name"),
    (["--data=nowhere:/x"], "data.spec"),
    (["--config.train.epochz=3"], "epochz"),
])
def test_cli_rejects_bad_config_before_any_work(tmp_path, args, needle):
    workdir = tmp_path / "bad"
    r = run_cli("--config=experiments/default.py:tiny", f"--workdir={workdir}", *args)
    assert r.returncode != 0
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert not workdir.exists()


def test_early_stopping_update_modes():
    start = loop.LoopState()
    rec, improved, stop = loop.early_stopping_update(start, 1, 0.5, mode="min", patience=2,
                                                     min_delta=0.0)
    assert improved and not stop and rec.best_epoch == 1 and rec.epoch == 1
    rec, improved, stop = loop.early_stopping_update(rec, 2, 0.6, mode="min", patience=2,
                                                     min_delta=0.0)
    assert not improved and not stop and rec.bad_epochs == 1 and rec.epoch == 2
    rec, improved, stop = loop.early_stopping_update(rec, 3, 0.49, mode="min", patience=2,
                                                     min_delta=0.05)
    assert not improved and stop  # better, but not by more than min_delta
    rec, improved, _ = loop.early_stopping_update(start, 1, 0.5, mode="max", patience=2,
                                                  min_delta=0.0)
    rec, improved, _ = loop.early_stopping_update(rec, 2, 0.6, mode="max", patience=2,
                                                  min_delta=0.0)
    assert improved and rec.best_value == 0.6
    _, _, stop = loop.early_stopping_update(rec, 3, 0.1, mode="max", patience=0, min_delta=0.0)
    assert not stop  # patience 0: never stops


def test_loop_state_round_trips_through_a_checkpoint_record():
    state = loop.LoopState(epoch=3, best_value=0.25, best_epoch=2, bad_epochs=1,
                           train_time_s=1.5, stopped_early=False)
    record = json.loads(json.dumps(dataclasses.asdict(state)))
    assert loop.LoopState.from_json(record) == state
    # loop.json of a checkpoint written before train_time_s existed still restores.
    assert loop.LoopState.from_json({"epoch": 2, "best_value": None, "best_epoch": 0,
                                     "bad_epochs": 0}).epoch == 2


@pytest.mark.parametrize("module", ["train", "crossval", "benchmark"])
def test_unknown_field_on_the_default_config_is_one_line(module):
    # Without --config, ml_collections applies overrides while the flag is being defined.
    r = subprocess.run([sys.executable, "-m", f"speechmusic_jax.{module}",
                        "--config.train.epochz=3"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "epochz" in r.stderr
