"""Which optimizer, tuned fairly: the same budget of the same kind of search for each (AlgoPerf).

Every optimizer is an arm; each gets ``budget`` quasi-random (Halton) points of its own space:
the learning rate log-uniform over three decades around its usual values, plus weight decay
log-uniform for those defined with it (adamw, lion, lamb, ...). Every point runs with every seed;
a seed fixes the split, the initial weights and the batches, so the arms are paired. The
workload (network, data, loss) is the same for every arm. Several workloads, for performance
profiles: optimizers_workloads.py.

    --sweep=experiments/sweeps/optimizers.py          5 optimizers x 8 points x 3 seeds, m5_mid,
                                                      15 epochs (120 runs of the default model)
    --sweep=experiments/sweeps/optimizers.py:tiny     4 optimizers x 3 points x 3 seeds, the small
                                                      M5 on a small corpus (36 runs, a few
                                                      minutes on 2 CPU cores)
    --sweep=experiments/sweeps/optimizers.py:m5_small 4 optimizers x 4 points x 7 seeds of the
                                                      m5_small experiment (batch 16, 12 epochs,
                                                      no early stopping), validated after every
                                                      step: time to val_accuracy 0.9 finer than
                                                      an epoch (112 runs; seeds 0-4 are trials
                                                      0-79, --trials=0:80)
Any other data: add --data=SPEC (e.g. --data=manifest:../shared/data/dev_real/manifest.csv).
"""

import os

from speechmusic_jax.config import load_experiment
from speechmusic_jax.tuning import optimizer_sweep
from speechmusic_jax.tuning.bases import sweep_base, tiny_base

EXPERIMENTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def m5_small_base():
    """The m5_small experiment with a fixed budget: every trial trains 12 epochs (no early
    stopping; the best epoch by validation loss is still the one tested), at batch 16 so that
    a small corpus still has a few steps an epoch, each followed by an evaluation point."""
    c = load_experiment(os.path.join(EXPERIMENTS, "m5_small.py"))
    c.name = "sweep_optimizers_m5_small"
    c.train.epochs = 12
    c.train.batch_size = 16
    c.train.early_stopping.patience = 0
    c.train.eval_every_steps = 1
    return c


def get_sweep(arg=None):
    if arg == "tiny":
        return optimizer_sweep(tiny_base(), ["momentum", "adam", "adamw", "lion"], budget=3,
                               seeds=3, target=("val_accuracy", 0.8), name="optimizers_tiny")
    if arg == "m5_small":
        return optimizer_sweep(m5_small_base(), ["momentum", "adam", "adamw", "lion"], budget=4,
                               seeds=7, target=("val_accuracy", 0.9),
                               name="optimizers_m5_small")
    if arg:
        raise ValueError(f"experiments/sweeps/optimizers.py: unknown variant {arg!r} "
                         "(known: tiny, m5_small)")
    return optimizer_sweep(sweep_base("sweep_optimizers"),
                           ["momentum", "adam", "adamw", "lion", "lamb"], budget=8, seeds=3,
                           target=("val_accuracy", 0.95), name="optimizers")
