"""The m5_small reference experiment: the benchmark workload of the comparison with PyTorch.

The M5 of the torchaudio speech-command tutorial (stem 32 filters, kernel 80, stride 16;
stages 32/64/64; 24,770 parameters with 2 classes), on 3 s crops at 16 kHz, batch 32, Adam (no
weight decay), float32, on the built-in corpus. ``benchmark --compare=torch`` times its
train step beside the same network in PyTorch (speechmusic_jax/torch_reference.py).
``:tiny`` is the smoke-test variant (small corpus, batch 8, 2 epochs).
"""

from speechmusic_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "m5_small"
    c.model.preset = "m5_small"
    c.data.sample_rate = 16000
    c.data.segment_seconds = 3.0
    c.data.synthetic.seconds = 4.0
    c.train.batch_size = 32
    c.train.precision = "float32"
    c.optimizer.name = "adam"
    c.optimizer.weight_decay = 0.0
    c.optimizer.learning_rate = 1e-3
    if arg == "tiny":
        c.name = "m5_small_tiny"
        c.note = "a smoke test of the reference experiment in seconds: its accuracy means nothing"
        c.data.synthetic.clips_per_class = 16
        c.train.epochs = 2
        c.train.batch_size = 8
        c.train.eval_batch_size = 16
    elif arg:
        raise ValueError(f"experiments/m5_small.py: unknown variant {arg!r} (known: tiny)")
    return c
