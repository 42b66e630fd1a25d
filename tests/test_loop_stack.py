"""fit with a stack of trials: each trial's folder is a run's, and a killed group resumes."""

import copy
import json
import os

import numpy as np
import pytest

from speechmusic_jax.io_utils import read_json, read_jsonl
from speechmusic_jax.trained_run import load_run
from speechmusic_jax.training import loop
from speechmusic_jax.training.checkpoints import Checkpoints

TIMING = {"epoch_time_s", "train_time_s", "examples_per_s", "data_wait_s", "device_idle_s",
          "device_idle_share"}


def _quiet(_):
    pass


def _trials(tiny_config):
    """Two trials of one group, 3 epochs, whose best epoch (1: with a huge min_delta nothing
    after it counts as better) is not their last (3: patience 0 never stops)."""
    tiny_config.train.epochs = 3
    tiny_config.train.early_stopping.patience = 0
    tiny_config.train.early_stopping.min_delta = 1e9
    cfgs = []
    for lr in (1e-2, 3e-3):
        c = copy.deepcopy(tiny_config)
        c.optimizer.learning_rate = lr
        cfgs.append(c)
    return cfgs


def _results(folder):
    rows = [{k: v for k, v in r.items() if k not in TIMING}
            for r in read_jsonl(os.path.join(folder, "metrics.jsonl"))]
    summary = read_json(os.path.join(folder, "summary.json"))
    with open(os.path.join(folder, "test_predictions.csv"), encoding="utf-8") as f:
        predictions = f.read()
    return rows, summary["test"], summary["best_epoch"], summary["epochs_run"], predictions


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from conftest import REPO

    from speechmusic_jax.config import load_experiment

    cfgs = _trials(load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny"))
    root = tmp_path_factory.mktemp("group")
    folders = [str(root / f"t{i}") for i in range(2)]
    summaries = loop.fit(cfgs, folders, log=_quiet, progress=False)
    return cfgs, folders, summaries


def test_a_grouped_trial_writes_what_it_would_alone(uninterrupted, tmp_path):
    cfgs, folders, summaries = uninterrupted
    alone_dir = str(tmp_path / "alone")
    alone = loop.fit(cfgs[0], alone_dir, log=_quiet, progress=False)
    grouped = summaries[0]
    assert grouped["grouped"]["size"] == 2 and grouped["grouped"]["mode"] == "vmap"
    assert set(grouped) - {"grouped"} == set(alone)
    assert set(read_json(os.path.join(folders[0], "summary.json"))) == set(grouped)
    assert sorted(os.listdir(folders[0])) == sorted(os.listdir(alone_dir))
    rows_g = read_jsonl(os.path.join(folders[0], "metrics.jsonl"))
    rows_a = read_jsonl(os.path.join(alone_dir, "metrics.jsonl"))
    assert [set(r) for r in rows_g] == [set(r) for r in rows_a]
    assert all(r["device_idle_s"] is not None for r in rows_g)
    # the grouped trial's times are its own: its program's step measured alone, not the group's
    assert grouped["step_time_ms"]["n"] >= 2 and grouped["grouped"]["step_time_ms_group"]
    assert grouped["train_time_s"] == pytest.approx(sum(r["train_time_s"] for r in rows_g))
    assert grouped["grouped"]["train_time_s_group"] > 0
    for key in ("started_at", "finished_at", "wall_time_s", "process_count", "inference"):
        assert grouped[key] is not None, key
    assert (grouped["best_epoch"], grouped["epochs_run"]) == (alone["best_epoch"],
                                                              alone["epochs_run"])


def test_a_grouped_trial_keeps_distinct_best_and_last_checkpoints(uninterrupted):
    _, folders, summaries = uninterrupted
    for folder, summary in zip(folders, summaries, strict=True):
        assert (summary["best_epoch"], summary["epochs_run"]) == (1, 3)
        ckpts = Checkpoints(folder)
        assert (ckpts.best()["epoch"], ckpts.last()["epoch"]) == (1, 3)
        with open(os.path.join(ckpts.dir, ckpts.last()["dir"], "loop.json")) as f:
            assert json.load(f)["epoch"] == 3
        best, last = load_run(folder, "best"), load_run(folder, "last")
        assert (best.epoch, last.epoch) == (1, 3)
        segment = int(round(best.cfg.data.segment_seconds * best.cfg.data.sample_rate))
        x = np.random.default_rng(0).normal(size=(2, segment)).astype(np.float32)
        assert not np.allclose(best.predict(x), last.predict(x))  # --weights=last: the last


def test_a_killed_group_resumes_every_trial_at_its_own_epoch(uninterrupted, tmp_path):
    cfgs, folders, _ = uninterrupted
    resumed = [str(tmp_path / f"t{i}") for i in range(2)]
    assert loop.fit(cfgs, resumed, log=_quiet, progress=False,
                    stop_after=2)["status"] == "interrupted"
    # as if killed while the group saved epoch 2: trial 1's last checkpoint is still epoch 1
    ckpts = Checkpoints(resumed[1])
    assert ckpts.last()["epoch"] == 2 and ckpts.best()["epoch"] == 1
    with open(os.path.join(ckpts.dir, "last.json"), "w") as f:
        json.dump({"epoch": 1, "dir": ckpts.best()["dir"]}, f)
    logs = []
    loop.fit(cfgs, resumed, log=logs.append, progress=False)
    assert any("[t0] resuming from the checkpoint of epoch 2" in m for m in logs)
    assert any("[t1] resuming from the checkpoint of epoch 1" in m for m in logs)
    for done, again in zip(folders, resumed, strict=True):
        assert _results(again) == _results(done)


def test_a_diverged_trial_is_frozen_and_reported_while_its_group_goes_on(tiny_config,
                                                                         tmp_path):
    tiny_config.train.epochs = 2
    cfgs = []
    for lr in (1e-2, 1e30):  # the second's loss is not finite within a few steps
        c = copy.deepcopy(tiny_config)
        c.optimizer.learning_rate = lr
        cfgs.append(c)
    folders = [str(tmp_path / f"t{i}") for i in range(2)]
    healthy, diverged = loop.fit(cfgs, folders, log=_quiet, progress=False)
    assert (healthy["status"], diverged["status"]) == ("completed", "diverged")
    assert diverged["test"] is None and diverged["diverged_at_step"] >= 1
    assert healthy["test"] is not None and healthy["epochs_run"] == 2
    assert set(diverged) == set(healthy) | {"diverged_at_step", "diverged_in_epoch"}


def test_a_stack_with_overwrite_that_fails_its_data_check_leaves_every_trial_folder(tiny_config,
                                                                                     tmp_path):
    # --overwrite only checks the trials' runs up front; they are removed once the data is
    # known good, so a batch larger than the training split deletes and writes nothing.
    from speechmusic_jax.config import to_dict
    from speechmusic_jax.errors import DataError
    from speechmusic_jax.io_utils import atomic_write_json

    cfgs = _trials(tiny_config)
    folders = [tmp_path / f"t{i}" for i in range(2)]
    for folder, c in zip(folders, cfgs, strict=True):  # an earlier start's config.json
        folder.mkdir()
        atomic_write_json(str(folder / "config.json"), to_dict(c))
    before = [(f / "config.json").read_bytes() for f in folders]
    for c in cfgs:
        c.train.batch_size = 4096
    with pytest.raises(DataError, match="train.batch_size"):
        loop.fit(cfgs, [str(f) for f in folders], log=_quiet, progress=False, overwrite=True)
    assert [(f / "config.json").read_bytes() for f in folders] == before
    assert [sorted(os.listdir(f)) for f in folders] == [["config.json"]] * 2


def test_calibration_times_every_step_even_where_the_clock_tells_none_apart(tiny_config,
                                                                           monkeypatch):
    """On a busy machine StepClock may time no step (each None): the calibration times its
    steps waited for one by one, so a grouped trial's seconds are never NaN."""
    from speechmusic_jax import parallel
    from speechmusic_jax.training import builder
    from speechmusic_jax.training import stack as stack_lib
    from speechmusic_jax.training.step_clock import StepClock

    real_close = StepClock.close
    monkeypatch.setattr(StepClock, "close",
                        lambda self: ([None] * len(real_close(self)[0]), 0.0))
    mesh = parallel.make_mesh()
    alone = stack_lib.calibrate(builder.build(tiny_config, steps_per_epoch=4), mesh, steps=3)
    assert len(alone.step_times) == 3 and all(t > 0 for t in alone.step_times)
    assert np.isfinite(alone.step_s) and alone.step_s > 0
