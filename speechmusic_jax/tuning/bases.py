"""Base configs the ready sweeps (experiments/sweeps/) start from.

``sweep_base()``: the default experiment with a fixed budget of 15 epochs and no early stopping
(every trial trains the same number of steps; the best epoch by validation loss is still the one
tested). ``tiny_base()``: a small corpus (48 clips per class of 2 s, 1 s crops) and the small M5
for 6 epochs of 8 steps: a few seconds per trial on a CPU, still a task on which settings can be
told apart; every sweep's ``:tiny`` variant uses it, and its note (printed at a sweep's start
and end and in results.md, as ``train`` does for a ``:tiny`` experiment) says it is a smoke test.
"""

from __future__ import annotations

from speechmusic_jax.config import base_config


def sweep_base(name: str = "sweep", epochs: int = 15):
    c = base_config()
    c.name = name
    c.train.epochs = epochs
    c.train.early_stopping.patience = 0
    return c


def tiny_base(name: str = "sweep_tiny"):
    c = base_config()
    c.name = name
    c.data.synthetic.clips_per_class = 48
    c.data.synthetic.seconds = 2.0
    c.data.segment_seconds = 1.0
    c.model.preset = "m5_small"
    c.train.epochs = 6
    c.train.batch_size = 8
    c.train.eval_batch_size = 16
    c.train.early_stopping.patience = 0
    c.optimizer.warmup_epochs = 0.0
    c.note = ("a smoke test of the sweep in minutes (small corpus, small M5, 6 epochs): its "
              "numbers say nothing about which setting is better")
    return c


def scaled_widths(preset_fields: dict, factor: float) -> dict:
    """Fixed fields that scale a preset's filters by ``factor`` (at least 4 filters a layer)."""
    return {"model.stem_filters": max(4, int(round(preset_fields["stem_filters"] * factor))),
            "model.stage_filters": tuple(max(4, int(round(f * factor)))
                                         for f in preset_fields["stage_filters"])}
