"""Depth: one, two or three conv blocks per stage, the learning rate tuned for each depth.

    --sweep=experiments/sweeps/depth.py          m5_mid, 1/2/3 blocks per stage (4, 7, 10 conv
                                                 layers); 3 points x 3 seeds
    --sweep=experiments/sweeps/depth.py:tiny     m5_small, 1/2 blocks per stage; 1 point x 2 seeds
"""

from speechmusic_jax.tuning import Sweep, loguniform
from speechmusic_jax.tuning.bases import sweep_base, tiny_base


def get_sweep(arg=None):
    if arg == "tiny":
        base, repeats, budget, seeds, target = tiny_base(), (1, 2), 1, (0, 1), 0.8
    elif not arg:
        base, repeats, budget, seeds, target = sweep_base(), (1, 2, 3), 3, (0, 1, 2), 0.95
    else:
        raise ValueError(f"experiments/sweeps/depth.py: unknown variant {arg!r} (known: tiny)")
    arms = {f"blocks_x{r}": {"model.stage_repeats": (r, r, r)} for r in repeats}
    return Sweep(name="depth" + ("_tiny" if arg else ""), base=base, arms=arms,
                 space={"optimizer.learning_rate": loguniform(1e-3, 1e-2)}, budget=budget,
                 seeds=seeds, target=("val_accuracy", target),
                 description=f"Depth: {base.model.preset} with {', '.join(map(str, repeats))} "
                             "conv blocks per stage.")
