"""Any model preset on the built-in corpus: --config=experiments/zoo.py:PRESET[,tiny].

Used to compare the presets side by side (parameters, FLOPs, step time, accuracy) with the same
data, optimizer and budget: 15 epochs, no early stopping (deep nets such as SampleCNN validate
at chance for several epochs before they take off), best epoch by validation loss restored.
SampleCNN needs 59,049 samples per crop, so its crops are 3.7 s instead of 2 s.
"""

from speechmusic_jax.config import base_config
from speechmusic_jax.models.presets import PRESETS


def get_config(arg: str | None = None):
    preset, _, variant = (arg or "m5_mid").partition(",")
    if preset not in PRESETS:
        raise ValueError(f"experiments/zoo.py: unknown preset {preset!r}; known: {sorted(PRESETS)}")
    c = base_config()
    c.name = f"zoo_{preset}"
    c.model.preset = preset
    c.train.epochs = 15
    c.train.early_stopping.patience = 0
    if preset == "samplecnn":
        c.data.segment_seconds = 3.7
    if variant == "tiny":
        c.name += "_tiny"
        c.note = "a smoke test of the preset in seconds: its accuracy means nothing"
        c.data.synthetic.clips_per_class = 16
        c.data.synthetic.seconds = 4.0 if preset == "samplecnn" else 2.0
        c.train.epochs = 2
        c.train.batch_size = 8
        c.train.eval_batch_size = 16
    elif variant:
        raise ValueError(f"experiments/zoo.py: unknown variant {variant!r} (known: tiny)")
    return c
