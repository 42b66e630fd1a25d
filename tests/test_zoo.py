"""Every preset trains the tiny configuration end to end (a smoke test of the whole zoo)."""

import os

import pytest

from speechmusic_jax.config import load_experiment
from speechmusic_jax.models.presets import PRESETS
from speechmusic_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The deep plain stacks (m11, m18: the same layers as m5, more of them) and SampleCNN (the
# slowest, 3.7 s crops) run with the soak tests only (pytest -m slow), to keep the suite short;
# every preset is still built and counted by tests/test_model.py, and m34_res keeps the
# residual path in the suite.
SLOW = {"m11", "m18", "samplecnn"}


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p
                                    for p in sorted(PRESETS)])
def test_preset_trains_the_tiny_config(preset, tmp_path):
    cfg = load_experiment(os.path.join(REPO, "experiments", "zoo.py"), f"{preset},tiny")
    cfg.train.epochs = 1
    summary = loop.fit(cfg, str(tmp_path / preset), log=lambda _: None)
    assert summary["status"] == "completed" and summary["epochs_run"] == 1
    assert summary["test"]["n_files"] > 0
    assert summary["flops_per_example"] > 0
