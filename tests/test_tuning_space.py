"""Search spaces, Halton points, AlgoPerf's JSON format, sweep definitions and their trials."""

import json
import math
import os

import numpy as np
import pytest

from speechmusic_jax.config import base_config
from speechmusic_jax.errors import ConfigError
from speechmusic_jax.tuning import halton, space, spec
from speechmusic_jax.tuning.space import choice, loguniform, uniform, zipped

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_halton_points_are_seeded_even_and_extend_by_prefix():
    a = halton.sequence(64, 3, seed=0)
    assert a.shape == (64, 3) and np.all((a >= 0) & (a < 1))
    np.testing.assert_array_equal(a, halton.sequence(64, 3, seed=0))
    assert not np.allclose(a, halton.sequence(64, 3, seed=1))
    np.testing.assert_array_equal(a[:8], halton.sequence(8, 3, seed=0))  # a bigger budget keeps
    # the points already run; and the points fill every eighth of each axis evenly
    for d in range(3):
        counts = np.bincount((a[:, d] * 8).astype(int), minlength=8)
        assert counts.min() >= 6 and counts.max() <= 10, counts


def test_halton_covers_the_space_better_than_random():
    def worst_gap(u):  # the largest empty stretch of [0, 1) along the first axis
        x = np.sort(np.concatenate([[0.0], u[:, 0], [1.0]]))
        return np.diff(x).max()

    rng = np.random.default_rng(0)
    gaps_random = [worst_gap(rng.random((16, 2))) for _ in range(50)]
    assert worst_gap(halton.sequence(16, 2, seed=3)) < np.median(gaps_random)


def test_distributions_map_the_unit_interval():
    lr = loguniform(1e-4, 1e-1)
    assert lr.at(0.0) == pytest.approx(1e-4) and lr.at(1.0) == pytest.approx(1e-1)
    assert lr.at(0.5) == pytest.approx(math.sqrt(1e-4 * 1e-1))
    assert uniform(0.0, 0.5).at(0.5) == 0.25
    c = choice("relu", "gelu", "silu")
    assert [c.at(u) for u in (0.0, 0.34, 0.99, 1.0)] == ["relu", "gelu", "silu", "silu"]
    assert loguniform(1e-3, 1e-1, grid=3).grid() == pytest.approx([1e-3, 1e-2, 1e-1])
    with pytest.raises(ConfigError, match="low <= high"):
        loguniform(0.0, 1.0)


def test_searches_grid_random_halton_product_and_zip():
    axes = {"model.dropout": choice(0.0, 0.3), "train.l2": choice(0.0, 1e-4, 1e-3)}
    grid = space.sample(axes, "grid", 0)
    assert len(grid) == 6 and {"model.dropout": 0.3, "train.l2": 1e-3} in grid
    lr = {"optimizer.learning_rate": loguniform(1e-4, 1e-1)}
    for search in ("random", "halton"):
        pts = space.sample(lr, search, 5, seed=1)
        assert len(pts) == 5 and pts == space.sample(lr, search, 5, seed=1)
        assert all(1e-4 <= p["optimizer.learning_rate"] <= 1e-1 for p in pts)
    with pytest.raises(ConfigError, match="grid=N"):
        space.sample(lr, "grid", 0)
    both = space.product(space.sample(lr, "halton", 2), grid)
    assert len(both) == 12 and set(both[0]) == {"optimizer.learning_rate", "model.dropout",
                                                "train.l2"}
    zipped_axis = zipped(**{"train.batch_size": [16, 32], "optimizer.learning_rate": [1e-3, 2e-3]})
    assert space.sample({"scaled": zipped_axis}, "grid", 0) == [
        {"train.batch_size": 16, "optimizer.learning_rate": 1e-3},
        {"train.batch_size": 32, "optimizer.learning_rate": 2e-3}]
    rows = space.zip_points([{"a": 1}, {"a": 2}], [{"b": 3}, {"b": 4}])
    assert rows == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(ConfigError, match="different lengths"):
        space.zip_points([{"a": 1}], [{"b": 3}, {"b": 4}])


def test_shared_axes_get_the_same_values_in_every_arm():
    lr = {"optimizer.learning_rate": loguniform(1e-4, 1e-1)}
    with_wd = {**lr, "optimizer.weight_decay": loguniform(1e-5, 1e-1)}
    a = space.sample(lr, "halton", 6, seed=2)
    b = space.sample(with_wd, "halton", 6, seed=2)
    assert [p["optimizer.learning_rate"] for p in a] == [p["optimizer.learning_rate"] for p in b]


def test_algoperf_search_space_json(tmp_path):
    path = tmp_path / "tuning_search_space.json"
    path.write_text(json.dumps({
        "learning_rate": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
        "beta2": {"feasible_points": [0.999]},
        "warmup_factor": {"feasible_points": [0.05]},
        "weight_decay": {"min": 5e-3, "max": 1.0, "scaling": "log"},
        "label_smoothing": {"feasible_points": [0.1, 0.2]},
        "dropout_rate": {"min": 0.0, "max": 0.1, "scaling": "linear"},
    }))
    axes = space.read_algoperf(str(path))
    assert set(axes) == {"optimizer.learning_rate", "optimizer.warmup_fraction",
                         "optimizer.weight_decay", "train.label_smoothing", "model.dropout"}
    assert isinstance(axes["optimizer.learning_rate"], space.LogUniform)
    assert isinstance(axes["model.dropout"], space.Uniform)
    assert axes["train.label_smoothing"].values == (0.1, 0.2)
    point = space.sample(axes, "halton", 1)[0]
    cfg = space.apply(base_config(), point)
    assert cfg.optimizer.warmup_epochs == pytest.approx(0.05 * cfg.train.epochs)
    assert cfg.train.label_smoothing in (0.1, 0.2)
    # a tuned beta cannot be honoured: refused unless dropped on purpose
    tuned_beta = {"one_minus_beta1": {"min": 4e-3, "max": 0.1, "scaling": "log"}}
    with pytest.raises(ConfigError, match="ignore"):
        space.read_algoperf(tuned_beta)
    assert space.read_algoperf(tuned_beta, ignore=["one_minus_beta1"]) == {}
    points = space.read_algoperf([{"learning_rate": 1e-3, "dropout_rate": 0.1},
                                  {"learning_rate": 3e-3, "dropout_rate": 0.0}])
    assert points == [{"optimizer.learning_rate": 1e-3, "model.dropout": 0.1},
                      {"optimizer.learning_rate": 3e-3, "model.dropout": 0.0}]
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        space.read_algoperf({"momentum_squared": {"feasible_points": [1]}})


def _sweep(**kw):
    base = base_config()
    args = dict(name="s", base=base, arms={"sgd": {"optimizer.name": "sgd"},
                                            "adam": {"optimizer.name": "adam"}},
                space={"optimizer.learning_rate": loguniform(1e-4, 1e-1)}, budget=3,
                seeds=(0, 1))
    args.update(kw)
    return spec.Sweep(**args)


def test_trials_are_every_seed_arm_point_in_a_fixed_order():
    sweep = _sweep()
    trials = sweep.trials()
    assert len(trials) == 2 * 2 * 3
    assert [(t.seed, t.arm, t.point_index) for t in trials[:4]] == [
        (0, "sgd", 0), (0, "sgd", 1), (0, "sgd", 2), (0, "adam", 0)]
    cfg = sweep.trial_config(trials[4])
    assert (cfg.seed, cfg.optimizer.name) == (0, "adam")
    assert cfg.optimizer.learning_rate == trials[4].point["optimizer.learning_rate"]
    assert trials == _sweep().trials()  # deterministic


@pytest.mark.parametrize("change, message", [
    (dict(arms={"a": {"seed": 3}}), "repeat axis"),
    (dict(space={"optimizer.learning_rat": loguniform(1e-4, 1e-1)}), "not a config field"),
    (dict(arm_space={"adam": {"optimizer.weight_decay": choice(0.0, 1e-4)}}, search="grid",
          space={"optimizer.learning_rate": choice(1e-3, 1e-2)}), "different tuning budgets"),
    (dict(seeds=(0, 0)), "distinct"),
    (dict(target=("val_acc", 0.9)), "target"),
    (dict(arm_space={"adamw": {}}), "do not exist"),
])
def test_bad_sweeps_are_refused_before_any_work(change, message):
    with pytest.raises(ConfigError, match=message):
        _sweep(**change).trials()


def test_a_trial_whose_config_is_invalid_is_named():
    sweep = _sweep(arms={"bad": {"model.dropout": 1.5}})
    with pytest.raises(ConfigError, match="trial 0.*model.dropout"):
        sweep.trial_config(sweep.trials()[0])


SWEEPS = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "experiments", "sweeps"))
                if f.endswith(".py"))


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_file_and_its_tiny_variant_are_valid(name):
    path = os.path.join(REPO, "experiments", "sweeps", f"{name}.py")
    for arg in (None, "tiny"):
        sweep = spec.load_sweep(path, arg)
        trials = sweep.trials()
        assert trials
        for t in trials:
            sweep.trial_config(t)
        if arg == "tiny":
            cfg = sweep.trial_config(trials[0])
            assert cfg.train.batch_size % 8 == 0  # runs unchanged on 1, 2, 4 or 8 devices
            assert len(trials) <= 40
    with pytest.raises(ConfigError):
        spec.load_sweep(path, "no_such_variant")
