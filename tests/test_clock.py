"""AlgoPerf's clock in the one training loop: evaluation points every train.eval_every_steps
steps (evals.jsonl), stopping at the target, a budget of training seconds; alone, in a stack of
trials, on resume, and as a sweep reads it (time to target)."""

import copy
import glob
import math
import os
import textwrap

import pytest

from speechmusic_jax import config as config_lib
from speechmusic_jax import sweep as sweep_cli
from speechmusic_jax.errors import ConfigError
from speechmusic_jax.io_utils import atomic_write_json, read_json, read_jsonl
from speechmusic_jax.training import loop
from speechmusic_jax.tuning import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quiet(_):
    pass


def _points(folder):
    return read_jsonl(os.path.join(str(folder), "evals.jsonl"))


def _config(tiny_config, **train):
    """The tiny experiment (3 epochs of 2 steps) with a point after every step."""
    c = copy.deepcopy(tiny_config)
    c.train.eval_every_steps = 1
    for k, v in train.items():
        c.train[k] = v
    return c


def _lowest_before_last(points):
    """A val_loss target that ``points`` meet first before their last point: their lowest
    val_loss but for the last point, and the point that first meets it."""
    value = min(p["val_loss"] for p in points[:-1])
    first = next(p for p in points if p["val_loss"] <= value)
    return value, first


@pytest.fixture(scope="module")
def free_run(tmp_path_factory):
    """One run without stopping: a point after each of its 6 steps."""
    from speechmusic_jax.config import load_experiment

    cfg = _config(load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny"))
    folder = tmp_path_factory.mktemp("clock") / "free"
    summary = loop.fit(cfg, str(folder), log=_quiet, progress=False)
    return cfg, folder, summary


def test_eval_every_steps_gives_a_point_per_step_and_keeps_one_row_per_epoch(free_run,
                                                                              tmp_path):
    cfg, folder, summary = free_run
    points = _points(folder)
    assert [p["step"] for p in points] == [1, 2, 3, 4, 5, 6]
    assert [p["epoch"] for p in points] == [1, 1, 2, 2, 3, 3]
    seconds = [p["train_time_s"] for p in points]
    assert all(s > 0 for s in seconds) and seconds == sorted(seconds)
    rows = read_jsonl(os.path.join(str(folder), "metrics.jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2, 3] and [r["steps"] for r in rows] == [2, 2, 2]
    for r, p in zip(rows, points[1::2], strict=True):  # the epoch's end is its last point
        assert p["val_loss"] == r["val_loss"] and p["val_accuracy"] == r["val_accuracy"]
    # the training seconds exclude the evaluations: the epochs' own training times add up
    assert points[-1]["train_time_s"] == pytest.approx(sum(r["train_time_s"] for r in rows))
    assert summary["status"] == "completed" and summary["stopped_by"] is None
    assert summary["eval_every_steps"] == 1 and summary["max_seconds_exceeded"] is False
    # every 4 steps: the step-4 point and each epoch's end (steps 2, 4, 6), once each
    every4 = _config(cfg, eval_every_steps=4)
    loop.fit(every4, str(tmp_path / "every4"), log=_quiet, progress=False)
    assert [p["step"] for p in _points(tmp_path / "every4")] == [2, 4, 6]


def test_stop_at_target_stops_at_the_first_point_that_meets_it(free_run, tmp_path):
    cfg, folder, _ = free_run
    value, first = _lowest_before_last(_points(folder))
    stop = _config(cfg, stop_at_target=True, target_metric="val_loss", target_value=value)
    summary = loop.fit(stop, str(tmp_path / "stop"), log=_quiet, progress=False)
    points = _points(tmp_path / "stop")
    assert [p["step"] for p in points] == list(range(1, first["step"] + 1))
    assert points[-1]["val_loss"] == pytest.approx(first["val_loss"])
    assert summary["status"] == "stopped_early" and summary["stopped_by"] == "target"
    assert summary["epochs_run"] == first["epoch"] and summary["test"]["n_files"] > 0
    assert summary["target"]["steps"] == first["step"]
    assert summary["target"]["seconds"] == points[-1]["train_time_s"]
    rows = read_jsonl(os.path.join(str(tmp_path / "stop"), "metrics.jsonl"))
    assert rows[-1]["steps"] == first["step"] - 2 * (first["epoch"] - 1)
    steps, seconds = records.time_to_target(rows, ("val_loss", value), 2, 8, points)
    assert (steps, seconds) == (first["step"], points[-1]["train_time_s"])
    # Whole-run throughput counts the steps that ran, not whole epochs.
    tp = summary["throughput"]
    assert tp["train_examples_per_s"] == pytest.approx(
        first["step"] * stop.train.batch_size / summary["train_time_s"])


def test_max_seconds_stops_at_the_first_point_and_scores_infinity(free_run, tmp_path):
    cfg, _, _ = free_run
    tight = _config(cfg, max_seconds=1e-6, target_metric="val_loss", target_value=100.0)
    summary = loop.fit(tight, str(tmp_path / "tight"), log=_quiet, progress=False)
    points = _points(tmp_path / "tight")
    assert [p["step"] for p in points] == [1]  # met the target there, but over the budget
    assert summary["status"] == "stopped_early" and summary["stopped_by"] == "max_seconds"
    assert summary["max_seconds_exceeded"] is True and summary["target"]["steps"] is None
    assert summary["test"]["n_files"] > 0
    assert records.time_to_target([], ("val_loss", 100.0), 2, 8, points,
                                  max_seconds=1e-6) == (math.inf, math.inf)
    assert records.time_to_target([], ("val_loss", 100.0), 2, 8, points) == (
        1.0, points[0]["train_time_s"])


def test_a_resumed_run_redoes_the_points_of_its_unfinished_epoch(free_run, tmp_path):
    cfg, folder, _ = free_run
    workdir = str(tmp_path / "resumed")
    assert loop.fit(cfg, workdir, log=_quiet, progress=False, stop_after=1)["status"] == \
        "interrupted"
    with open(os.path.join(workdir, "evals.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"epoch": 2, "step": 3, "train_time_s": 9.0}\n')  # killed after a point
    # a checkpoint from before loop.json counted the steps run: metrics.jsonl's rows count them
    (loop_json,) = glob.glob(os.path.join(workdir, "checkpoints", "*", "loop.json"))
    record = read_json(loop_json)
    assert record.pop("steps_run") == 2
    atomic_write_json(loop_json, record)
    summary = loop.fit(cfg, workdir, log=_quiet, progress=False)
    assert summary["throughput"]["train_examples_per_s"] == pytest.approx(
        6 * cfg.train.batch_size / summary["train_time_s"])
    points, free = _points(workdir), _points(folder)
    assert [p["step"] for p in points] == [p["step"] for p in free]
    for p, q in zip(points, free, strict=True):
        assert p["val_loss"] == pytest.approx(q["val_loss"], rel=1e-5)
    seconds = [p["train_time_s"] for p in points]
    assert seconds == sorted(seconds) and seconds[-1] < 9.0


def test_a_stack_stops_the_trial_that_meets_the_target_and_trains_the_other(tiny_config,
                                                                           tmp_path):
    # a learning trial and one that barely moves (lr 1e-9): their val_loss curves differ, so
    # a val_loss target that one meets before its last point and the other never meets exists
    cfgs = [_config(tiny_config, epochs=3) for _ in range(2)]
    cfgs[0].optimizer.learning_rate, cfgs[1].optimizer.learning_rate = 1e-2, 1e-9
    free = [str(tmp_path / f"free{i}") for i in range(2)]
    loop.fit(cfgs, free, log=_quiet, progress=False)
    curves = [_points(f) for f in free]
    for hit in (0, 1):
        value, first = _lowest_before_last(curves[hit])
        if all(p["val_loss"] > value for p in curves[1 - hit]):
            break
    else:
        pytest.fail("no val_loss target separates the two trials")
    stop = [_config(c, stop_at_target=True, target_metric="val_loss", target_value=value)
            for c in cfgs]
    folders = [str(tmp_path / f"stop{i}") for i in range(2)]
    summaries = loop.fit(stop, folders, log=_quiet, progress=False)
    hit_points, miss_points = _points(folders[hit]), _points(folders[1 - hit])
    assert [p["step"] for p in hit_points] == list(range(1, first["step"] + 1))
    assert [p["step"] for p in miss_points] == [1, 2, 3, 4, 5, 6]
    for p, q in zip(miss_points, curves[1 - hit], strict=True):  # the other trained on as alone
        assert p["val_loss"] == pytest.approx(q["val_loss"], rel=1e-5)
    assert summaries[hit]["stopped_by"] == "target"
    assert summaries[hit]["epochs_run"] == first["epoch"]
    assert summaries[1 - hit]["status"] == "completed"
    assert summaries[1 - hit]["target"]["steps"] is None
    assert all(s["test"]["n_files"] > 0 for s in summaries)
    target = ("val_loss", value)
    assert records.time_to_target([], target, 2, 8, hit_points)[0] == first["step"]
    assert records.time_to_target([], target, 2, 8, miss_points) == (math.inf, math.inf)


SWEEP_FILE = textwrap.dedent('''
    import os
    from speechmusic_jax.config import load_experiment
    from speechmusic_jax.tuning import Sweep, choice

    def get_sweep(arg=None):
        base = load_experiment(os.path.join({repo!r}, "experiments", "default.py"), "tiny")
        return Sweep(name="clock_sweep", base=base, arms={{"adamw": {{}}}},
                     space={{"train.label_smoothing": choice(0.0)}}, budget=1, seeds=(0,),
                     target=("val_accuracy", 2.0), mode="alone")
''')


def test_a_sweep_stops_its_trials_at_the_target_and_times_them_by_points(tmp_path):
    path = tmp_path / "clock_sweep.py"
    path.write_text(SWEEP_FILE.format(repo=REPO))
    workdir = tmp_path / "sweep"
    flags = {"sweep": str(path), "workdir": str(workdir), "trials": None, "mode": None,
             "data": None, "data_on_error": None, "report_only": False, "dry_run": False,
             "verbose": False,
             # the base config's own target replaces the sweep's (unreachable) one
             "set": ["train.eval_every_steps=1", "train.stop_at_target=True",
                     "train.target_metric=val_loss", "train.target_value=100.0"]}
    assert sweep_cli.main(flags, []) == 0
    trial = workdir / "trials" / "000"
    assert read_json(trial / "config.json")["train"]["target_value"] == 100.0
    points = _points(trial)
    assert [p["step"] for p in points] == [1]
    result = read_json(workdir / "results.json")
    assert result["target"] == ["val_loss", 100.0] and "stops at the target" in result["clock"]
    (rec,) = result["records"]
    assert rec["stopped_by"] == "target" and rec["steps_to_target"] == 1
    assert rec["seconds_to_target"] == points[0]["train_time_s"]
    assert "validation after every step" in (workdir / "results.md").read_text()


def test_the_clock_fields_are_checked_at_start(tiny_config):
    for field, value, words in (("eval_every_steps", -1, "integer >= 0"),
                                ("max_seconds", -1.0, ">= 0"),
                                ("target_metric", "val_speed", "must be one of"),
                                ("stop_at_target", True, "needs a target")):
        c = copy.deepcopy(tiny_config)
        c.train[field] = value
        with pytest.raises(ConfigError, match=words) as e:
            config_lib.validate(c)
        assert str(e.value).startswith("train.")


def test_a_run_made_before_the_added_fields_is_the_same_run_at_their_defaults(tiny_config):
    new = config_lib.to_dict(tiny_config)
    old = copy.deepcopy(new)
    for field in config_lib.ADDED_FIELDS:
        *parents, leaf = field.split(".")
        node = old
        for part in parents:
            node = node[part]
        del node[leaf]
    assert config_lib.training_diff(old, new) == []
    tiny_config.train.eval_every_steps = 5
    assert config_lib.training_diff(old, config_lib.to_dict(tiny_config)) == [
        "train.eval_every_steps"]
