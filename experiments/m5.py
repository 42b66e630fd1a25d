"""The m5 reference experiment: the benchmark workload of the comparison with PyTorch.

The M5 of Dai et al. 2017 (stem 128 filters, kernel 80, stride 4; stages 128/256/512;
555,010 parameters with 2 classes), on 3 s crops at 16 kHz, batch 32, Adam (no
weight decay), float32, on the built-in corpus. ``benchmark --compare=torch`` times its
train step beside the same network in PyTorch (speechmusic_jax/torch_reference.py).
``:tiny`` is the smoke-test variant (small corpus, batch 8, 2 epochs).
"""

from speechmusic_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "m5"
    c.model.preset = "m5"
    c.data.sample_rate = 16000
    c.data.segment_seconds = 3.0
    c.data.synthetic.seconds = 4.0
    c.train.batch_size = 32
    c.train.precision = "float32"
    c.optimizer.name = "adam"
    c.optimizer.weight_decay = 0.0
    c.optimizer.learning_rate = 1e-3
    if arg == "tiny":
        c.name = "m5_tiny"
        c.note = "a smoke test of the reference experiment in seconds: its accuracy means nothing"
        c.data.synthetic.clips_per_class = 16
        c.train.epochs = 2
        c.train.batch_size = 8
        c.train.eval_batch_size = 16
    elif arg:
        raise ValueError(f"experiments/m5.py: unknown variant {arg!r} (known: tiny)")
    return c
