"""Regularisation: dropout x L2 penalty x early stopping, every combination an arm.

Dropout before the head (model.dropout), an L2 penalty on the kernels in the loss (train.l2;
weight decay stays as the base sets it), and early stopping on the validation loss
(train.early_stopping.patience; 0 trains every epoch). The base learning rate, 3 seeds.

    --sweep=experiments/sweeps/regularisation.py        dropout 0/0.3 x L2 0/1e-3 x patience 0/5
    --sweep=experiments/sweeps/regularisation.py:tiny   dropout 0/0.3 x L2 0/1e-3 x patience 0/2,
                                                        1 seed
"""

from speechmusic_jax.tuning import Sweep
from speechmusic_jax.tuning.bases import sweep_base, tiny_base
from speechmusic_jax.tuning.spec import arm_grid


def get_sweep(arg=None):
    if arg == "tiny":
        base, patience, seeds, target = tiny_base(), 2, (0,), 0.8
    elif not arg:
        base, patience, seeds, target = sweep_base(epochs=30), 5, (0, 1, 2), 0.95
    else:
        raise ValueError(f"experiments/sweeps/regularisation.py: unknown variant {arg!r} "
                         "(known: tiny)")
    arms = arm_grid({"model.dropout": (0.0, 0.3), "train.l2": (0.0, 1e-3),
                     "train.early_stopping.patience": (0, patience)})
    return Sweep(name="regularisation" + ("_tiny" if arg else ""), base=base, arms=arms,
                 seeds=seeds, target=("val_accuracy", target),
                 description="Dropout x L2 x early stopping (every combination).")
