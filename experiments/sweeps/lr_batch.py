"""Learning rate x batch size: every batch size an arm, each with the same grid of learning rates.

The product of a log-spaced learning-rate grid and the batch sizes, every cell run with every
seed; the epochs stay fixed, so a larger batch takes fewer, larger steps (time to target in steps
and seconds shows the trade). The schedule is cosine with one epoch of warm-up.

    --sweep=experiments/sweeps/lr_batch.py          batch 16, 32, 64 x lr 3e-4 .. 1e-2 (5) x 3 seeds
    --sweep=experiments/sweeps/lr_batch.py:tiny     batch 8, 16 x lr 1e-3 .. 3e-2 (3) x 2 seeds
"""

from speechmusic_jax.tuning import Sweep, loguniform
from speechmusic_jax.tuning.bases import sweep_base, tiny_base
from speechmusic_jax.tuning.spec import arm_grid


def get_sweep(arg=None):
    if arg == "tiny":
        base, batches, lr, seeds, target = tiny_base(), (8, 16), (1e-3, 3e-2, 3), (0, 1), 0.8
    elif not arg:
        base, batches, lr, seeds, target = sweep_base(), (16, 32, 64), (3e-4, 1e-2, 5), \
            (0, 1, 2), 0.95
    else:
        raise ValueError(f"experiments/sweeps/lr_batch.py: unknown variant {arg!r} (known: tiny)")
    return Sweep(name="lr_batch" + ("_tiny" if arg else ""), base=base,
                 arms=arm_grid({"train.batch_size": batches}),
                 space={"optimizer.learning_rate": loguniform(lr[0], lr[1], grid=lr[2])},
                 search="grid", seeds=seeds, target=("val_accuracy", target),
                 description="Learning rate x batch size (a grid: every arm the same "
                             "learning rates).")
