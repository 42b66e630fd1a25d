"""The default experiment: an M5-style net on the built-in synthetic corpus.

``--config=experiments/default.py:tiny`` is the variant for tests and smoke runs: a tiny model,
a small corpus, a global batch of 8 (it divides over 1, 2, 4 or 8 devices), a few epochs.
"""

from speechmusic_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "default"
    if arg == "tiny":
        c.name = "default_tiny"
        c.note = ("a smoke test of the whole pipeline in seconds: its accuracy means nothing "
                  "(a 1,130-parameter model, 3 epochs, 32 clips)")
        c.data.synthetic.clips_per_class = 16
        c.data.synthetic.seconds = 2.0
        c.data.segment_seconds = 1.0
        c.model.preset = "tiny"
        c.train.epochs = 3
        c.train.batch_size = 8
        c.train.eval_batch_size = 16
        c.train.early_stopping.patience = 0
        c.optimizer.learning_rate = 1e-2
        c.optimizer.warmup_epochs = 0.0
    elif arg:
        raise ValueError(f"experiments/default.py: unknown variant {arg!r} (known: tiny)")
    return c
