"""Every preset trains the tiny configuration end to end (a smoke test of the whole zoo)."""

import os

import pytest

from speechmusic_jax.config import load_experiment
from speechmusic_jax.models.presets import PRESETS
from speechmusic_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The deep stacks (m11, m18: the same layers as m5, more of them; m34_res: 34 layers of
# residual blocks) and SampleCNN (the slowest, 3.7 s crops) run with the soak tests only
# (pytest -m slow), to keep the suite short; every preset is still built and counted by
# tests/test_model.py, and the residual path trains in the suite on the tiny model below.
SLOW = {"m11", "m18", "m34_res", "samplecnn", "m3", "m5", "m5_mid", "m5_small"}


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p
                                    for p in sorted(PRESETS)])
def test_preset_trains_the_tiny_config(preset, tmp_path):
    cfg = load_experiment(os.path.join(REPO, "experiments", "zoo.py"), f"{preset},tiny")
    cfg.train.epochs = 1
    summary = loop.fit(cfg, str(tmp_path / preset), log=lambda _: None)
    assert summary["status"] == "completed" and summary["epochs_run"] == 1
    assert summary["test"]["n_files"] > 0
    assert summary["flops_per_example"] > 0


def test_residual_blocks_train_end_to_end(tiny_config, tmp_path):
    """The residual path (two convs and a projected skip per block) through fit, on the tiny
    model with residual blocks: what m34_res trains, in seconds."""
    tiny_config.model.residual = True
    tiny_config.model.stage_repeats = (2,)
    tiny_config.train.epochs = 1
    summary = loop.fit(tiny_config, str(tmp_path / "residual"), log=lambda _: None)
    assert summary["status"] == "completed" and summary["test"]["n_files"] > 0
    assert summary["params_trainable"] > 1130  # the plain tiny model's: the blocks add convs
