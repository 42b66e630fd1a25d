"""Fine-tuning: train.init_from starts a run from a finished run's weights; train.stem_lr_scale
scales (or, at 0, freezes) the stem's learning rate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from tiny_run import REPO, tiny_run

from speechmusic_jax import config as config_lib
from speechmusic_jax import crossval
from speechmusic_jax.models.conv1d import cancelled_by_norm
from speechmusic_jax.trained_run import config_from_json
from speechmusic_jax.training import builder, loop, optim, pretrained
from speechmusic_jax.training.checkpoints import Checkpoints
from speechmusic_jax.training.workdir import Start


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """A finished tiny run (3 epochs on the built-in corpus) to start from."""
    return tiny_run(tmp_path_factory)


def _tested(workdir: str) -> str:
    """The checkpoint a finished run was tested with: its best, or its last (the default
    experiment and its :tiny variant test the last epoch's weights)."""
    return config_lib.tested_checkpoint(config_from_json(os.path.join(workdir, "config.json")))


def _weights(workdir: str, which: str = "tested", workdir_cfg: str | None = None):
    """(params, model_state) of a run's checkpoint, by parameter name, as numpy."""
    cfg = config_from_json(os.path.join(workdir_cfg or workdir, "config.json"))
    which = config_lib.tested_checkpoint(cfg) if which == "tested" else which
    ckpts = Checkpoints(workdir)
    state, _ = ckpts.restore(ckpts.pointer(ckpts.dir, which),
                             builder.abstract_build(cfg).state)
    return tuple({pretrained.leaf_name(p): np.asarray(x)
                  for p, x in jax.tree_util.tree_leaves_with_path(tree)}
                 for tree in (state.params, state.model_state))


def _fine_tune(tiny_config, source: str, epochs: int = 1):
    cfg = tiny_config
    cfg.train.init_from = source
    cfg.train.epochs = epochs
    return cfg


def test_the_first_weights_are_the_pretrained_tested_ones(tiny_config, source, tmp_path):
    cfg = _fine_tune(tiny_config, source)
    cfg.seed = 7  # another seed would initialise other weights
    start = pretrained.load(cfg, [str(tmp_path / "run")])
    run = loop.setup(cfg, str(tmp_path / "run"), _quiet, start_from=start)
    state, (loop_state,) = loop.restore_or_init(run, [Start.NEW], loop.SessionClock())
    which = _tested(source)
    assert which == "last"  # the default experiment's choice
    tested = Checkpoints.pointer(os.path.join(source, "checkpoints"), which)
    assert loop_state.init_from == {"workdir": source, "checkpoint": which,
                                    "epoch": tested["epoch"]}
    assert int(state.step) == 0 and loop_state.epoch == 0 and loop_state.best_value is None
    params, stats = _weights(source)
    for tree, want in ((state.params, params), (state.model_state, stats)):
        got = {pretrained.leaf_name(p): np.asarray(x)
               for p, x in jax.tree_util.tree_leaves_with_path(tree)}
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # DIR:best and DIR:last take those checkpoints, whatever the run was tested with.
    for which in ("best", "last"):
        cfg.train.init_from = f"{source}:{which}"
        got = pretrained.load(cfg)
        assert got.checkpoint == which
        assert got.epoch == Checkpoints.pointer(os.path.join(source, "checkpoints"),
                                                which)["epoch"]


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.model, "preset", "m5_small"),
     r"train.init_from: .*parameter stem.kernel has shape \(80, 1, 8\) in the pretrained "
     r"run and shape \(80, 1, 32\) here"),
    (lambda c: setattr(c.model, "stage_filters", (32,)),
     r"train.init_from: .*parameter stages.0.0.conv1.kernel has shape \(3, 8, 16\) in the "
     r"pretrained run and shape \(3, 8, 32\) here"),
    (lambda c: setattr(c.model, "activation", "gelu"),
     r"train.init_from: .* differ in activation: 'relu' in the pretrained run, 'gelu' here"),
    (lambda c: setattr(c.data, "classes", ("music", "speech")),
     r"train.init_from: the run in .* classifies \['speech', 'music'\], this config's "
     r"data.classes is \['music', 'speech'\]"),
    (lambda c: setattr(c.data, "sample_rate", 22050),
     r"data.sample_rate: 22050 Hz, but the run in train.init_from .* at 16000 Hz"),
])
def test_a_run_that_does_not_fit_fails_before_any_work(tiny_config, source, tmp_path, change,
                                                       message):
    cfg = _fine_tune(tiny_config, source)
    change(cfg)
    with pytest.raises(config_lib.ConfigError, match=message):
        loop.fit(cfg, str(tmp_path / "run"), log=_quiet)
    assert not (tmp_path / "run").exists()


def test_a_folder_without_a_run_or_a_checkpoint(tiny_config, source, tmp_path):
    cfg = _fine_tune(tiny_config, str(tmp_path / "nothing"))
    with pytest.raises(config_lib.ConfigError, match="train.init_from: .* holds no run"):
        loop.fit(cfg, str(tmp_path / "run"), log=_quiet)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(os.path.join(source, "config.json"), half / "config.json")
    cfg.train.init_from = f"{half}:last"
    with pytest.raises(config_lib.ConfigError, match="train.init_from: .* has no last checkpoint"):
        loop.fit(cfg, str(tmp_path / "run"), log=_quiet)
    cfg.train.init_from = str(tmp_path / "run")
    with pytest.raises(config_lib.ConfigError, match="train.init_from: .* this run's own workdir"):
        loop.fit(cfg, str(tmp_path / "run"), log=_quiet)
    assert not (tmp_path / "run").exists()


def test_dry_run_checks_the_pretrained_run_without_training(tiny_config, source, tmp_path):
    cfg = _fine_tune(tiny_config, source)
    epoch = Checkpoints.pointer(os.path.join(source, "checkpoints"), "last")["epoch"]
    assert pretrained.check(cfg, [str(tmp_path / "run")]) == (
        f"train.init_from: the last checkpoint (epoch {epoch}) of the run in "
        f"{os.path.abspath(source)} fits this config")
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.train", "--dry_run",
                        "--config=experiments/default.py:tiny", f"--workdir={tmp_path / 'run'}",
                        f"--config.train.init_from={source}", "--config.model.preset=m5_small"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "train.init_from: the models of" in r.stderr and "stem.kernel" in r.stderr
    assert not (tmp_path / "run").exists()


def test_validation_names_the_fields(tiny_config):
    cfg = tiny_config
    cfg.train.stem_lr_scale = -0.5
    with pytest.raises(config_lib.ConfigError, match="train.stem_lr_scale: must be >= 0"):
        config_lib.validate(cfg)
    cfg.train.stem_lr_scale = 0.0
    cfg.optimizer.name, cfg.optimizer.schedule = "schedule_free_adamw", "constant"
    cfg.model.norm = "layer"
    with pytest.raises(config_lib.ConfigError, match="train.stem_lr_scale: schedule_free"):
        config_lib.validate(cfg)
    cfg = config_lib.base_config()
    cfg.train.init_from = ":last"
    with pytest.raises(config_lib.ConfigError, match="train.init_from: must name a run's folder"):
        config_lib.validate(cfg)
    assert config_lib.parse_init_from("runs/a") == ("runs/a", "tested")
    assert config_lib.parse_init_from("runs/a:last") == ("runs/a", "last")
    assert config_lib.parse_init_from("runs/a:best") == ("runs/a", "best")
    assert config_lib.parse_init_from("runs/a:b") == ("runs/a:b", "tested")


def _updates(cfg, scale: float):
    """One optimizer update of the tiny model's initial weights, by parameter name."""
    cfg.train.stem_lr_scale = scale
    built = builder.build(cfg)
    grads = jax.tree.map(lambda p: np.linspace(-1.0, 1.0, p.size, dtype=np.float32)
                         .reshape(p.shape), built.state.params)
    updates, _ = built.tx.update(grads, built.state.opt_state, built.state.params)
    return {pretrained.leaf_name(p): np.asarray(u)
            for p, u in jax.tree_util.tree_leaves_with_path(updates)}, built


@pytest.mark.parametrize("name, decay", [("sgd", 0.0), ("adamw", 1e-2), ("momentum", 1e-2)])
def test_stem_lr_scale_scales_the_stems_updates_exactly(tiny_config, name, decay):
    tiny_config.optimizer.name, tiny_config.optimizer.weight_decay = name, decay
    tiny_config.optimizer.schedule = "constant"
    full, built = _updates(tiny_config, 1.0)
    half, _ = _updates(tiny_config, 0.5)
    frozen, frozen_built = _updates(tiny_config, 0.0)
    stem = {n for n in full if n.split(".")[0] in optim.STEM}
    assert stem == {"stem.kernel", "stem.bias", "stem_norm.layer.scale", "stem_norm.layer.bias"}
    for n in full:
        if n in stem:
            np.testing.assert_array_equal(half[n], full[n] * np.float32(0.5), err_msg=n)
            assert not np.any(frozen[n]) and np.any(full[n]) != cancelled(n), n
        else:
            np.testing.assert_array_equal(half[n], full[n], err_msg=n)
            np.testing.assert_array_equal(frozen[n], full[n], err_msg=n)
    # A frozen stem has no optimizer state (adam's moments cover the other parameters only).
    size = sum(x.size for x in jax.tree.leaves(built.state.opt_state))
    frozen_size = sum(x.size for x in jax.tree.leaves(frozen_built.state.opt_state))
    stem_size = sum(full[n].size for n in stem)
    moments = {"sgd": 0, "momentum": 1, "adamw": 2}[name]
    assert size - frozen_size == moments * stem_size


def cancelled(name: str) -> bool:
    """A conv bias that batch norm (the tiny model's norm) cancels, by parameter name: the
    optimizer leaves it where it is (optim.without_updates)."""
    path = tuple(jax.tree_util.DictKey(k) for k in name.split("."))
    return cancelled_by_norm(types.SimpleNamespace(norm="batch"))(path)


def _assert_only_the_stem_kept(before: tuple, after: tuple) -> None:
    """The stem's parameters and statistics are bit-identical, and so are the conv biases that
    batch norm cancels; every other array changed."""
    for old, new in zip(before, after, strict=True):
        for name in old:
            if name.split(".")[0] in optim.STEM or cancelled(name):
                np.testing.assert_array_equal(new[name], old[name], err_msg=name)
            else:
                assert not np.array_equal(new[name], old[name]), name


def test_a_frozen_stem_stays_as_pretrained(tiny_config, source, tmp_path):
    """stem_lr_scale=0: the stem's parameters and batch-norm statistics are bit-identical
    after training, the rest changed; the summary says where the run started."""
    cfg = _fine_tune(tiny_config, source)
    cfg.train.stem_lr_scale = 0.0
    summary = loop.fit(cfg, str(tmp_path / "run"), log=_quiet)
    last = Checkpoints.pointer(os.path.join(source, "checkpoints"), "last")
    assert summary["init_from"] == {"workdir": source, "checkpoint": "last",
                                    "epoch": last["epoch"]}
    _assert_only_the_stem_kept(_weights(source), _weights(str(tmp_path / "run"), "last"))


@pytest.mark.slow  # suite time; run with -m slow
def test_a_resumed_fine_tuning_run_resumes_from_its_own_checkpoint(tiny_config, source,
                                                                  tmp_path):
    copy = tmp_path / "pretrained"
    shutil.copytree(source, copy)
    cfg = _fine_tune(tiny_config, str(copy), epochs=2)
    workdir = str(tmp_path / "run")
    assert loop.fit(cfg, workdir, log=_quiet, stop_after=1)["status"] == "interrupted"
    epoch = Checkpoints.pointer(os.path.join(copy, "checkpoints"), "last")["epoch"]
    shutil.rmtree(copy)  # a reload would now fail
    logs: list[str] = []
    summary = loop.fit(cfg, workdir, log=logs.append)
    assert summary["epochs_run"] == 2 and summary["status"] == "completed"
    assert any("resuming from the checkpoint of epoch 1" in m for m in logs)
    assert not any("starting from the weights" in m for m in logs)
    assert summary["init_from"] == {"workdir": str(copy), "checkpoint": "last", "epoch": epoch}
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["init_from"]["epoch"] == epoch


def test_crossval_starts_every_fold_from_the_pretrained_weights(tiny_config, source, tmp_path):
    cfg = _fine_tune(tiny_config, source)
    cfg.data.cache_dir = str(tmp_path / "cache")
    result = crossval.run(cfg, str(tmp_path / "cv"), folds=2, log=_quiet)
    assert result["folds_tested"] == 2 and result["config"]["train.init_from"] == source
    for i in range(2):
        with open(tmp_path / "cv" / f"fold_{i}" / "summary.json") as f:
            assert json.load(f)["init_from"]["workdir"] == source


@pytest.mark.slow  # suite time; run with -m slow
def test_a_grouped_sweep_starts_every_trial_from_the_pretrained_weights(tiny_config, source,
                                                                        tmp_path):
    cfgs = []
    for lr in (1e-2, 3e-3):
        c = _fine_tune(tiny_config.copy_and_resolve_references(), source)
        c.train.stem_lr_scale = 0.0
        c.optimizer.learning_rate = lr
        cfgs.append(c)
    folders = [str(tmp_path / f"trial_{i}") for i in range(2)]
    summaries = loop.fit(cfgs, folders, log=_quiet)
    before = _weights(source)
    for summary, folder in zip(summaries, folders, strict=True):
        assert summary["init_from"]["workdir"] == source
        _assert_only_the_stem_kept(before, _weights(folder))


def test_a_run_with_a_moving_average_is_served_and_fine_tuned_from_the_average(tiny_config,
                                                                               tmp_path):
    from speechmusic_jax import trained_run
    from speechmusic_jax.training.step import make_eval_step

    cfg = tiny_config
    cfg.train.epochs, cfg.train.ema_epochs = 2, 1.0
    ema_run = str(tmp_path / "ema")
    logs = []
    loop.fit(cfg, ema_run, log=logs.append)
    assert any(m.startswith("testing the moving average of the weights at epoch") for m in logs)
    built = builder.abstract_build(config_from_json(os.path.join(ema_run, "config.json")))
    ckpts = Checkpoints(ema_run)
    state, _ = ckpts.restore(ckpts.pointer(ckpts.dir, _tested(ema_run)), built.state)
    averaged = optim.eval_params(cfg.optimizer.name, state.opt_state, state.params)
    as_named = {pretrained.leaf_name(p): np.asarray(x)
                for p, x in jax.tree_util.tree_leaves_with_path(averaged)}
    assert any(not np.allclose(as_named[n], w) for n, w in _weights(ema_run)[0].items())

    x = np.random.default_rng(0).normal(size=(3, 16000)).astype(np.float32)
    served = trained_run.load_run(ema_run).predict(x)
    expected = make_eval_step(built.graphdef)(averaged, state.model_state, x)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)

    cfg.train.ema_epochs = 0.0
    start = pretrained.load(_fine_tune(cfg, ema_run), [str(tmp_path / "fine")])
    taken = {pretrained.leaf_name(p): np.asarray(x)
             for p, x in jax.tree_util.tree_leaves_with_path(start.params)}
    assert taken.keys() == as_named.keys()
    for name, w in taken.items():
        np.testing.assert_array_equal(w, as_named[name])


def test_served_weights_are_the_tested_ones(source):
    # The default experiment tests its last epoch's weights (restore_best off); predict,
    # evaluate, export and Classifier.load serve those by default too, and the summary says
    # which epoch was tested. --weights=best and last still name those checkpoints.
    from speechmusic_jax import trained_run
    from speechmusic_jax.training import reporting

    pointers = {w: Checkpoints.pointer(os.path.join(source, "checkpoints"), w)["epoch"]
                for w in ("best", "last")}
    with open(os.path.join(source, "summary.json")) as f:
        summary = json.load(f)
    assert summary["tested_epoch"] == pointers["last"] == summary["epochs_run"]
    assert trained_run.load_run(source).epoch == pointers["last"]
    for which in ("best", "last"):
        assert trained_run.load_run(source, which).epoch == pointers[which]
    report = reporting.format_summary({**summary, "best_epoch": 1, "tested_epoch": 3},
                                      ("speech", "music"))
    assert "best epoch 1 of 3; tested: the weights of epoch 3)" in report
    report = reporting.format_summary({**summary, "best_epoch": 3, "tested_epoch": 3},
                                      ("speech", "music"))
    assert "best epoch 3 of 3) ===" in report
