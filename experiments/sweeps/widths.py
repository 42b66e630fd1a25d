"""Width: every layer's filters scaled by 0.25 to 2, the learning rate tuned for each width.

An arm per width factor (stem and every stage scaled together, at least 4 filters); each gets
the same budget of Halton points of the learning rate. pareto.png shows accuracy against
parameters and training time.

    --sweep=experiments/sweeps/widths.py          m5_mid x 0.25, 0.5, 1, 1.5, 2; 3 points x 3 seeds
    --sweep=experiments/sweeps/widths.py:tiny     m5_small x 0.25, 1, 2; 1 point x 2 seeds
"""

from speechmusic_jax.models.presets import PRESETS
from speechmusic_jax.tuning import Sweep, loguniform
from speechmusic_jax.tuning.bases import scaled_widths, sweep_base, tiny_base


def get_sweep(arg=None):
    if arg == "tiny":
        base, factors, budget, seeds, target = tiny_base(), (0.25, 1, 2), 1, (0, 1), 0.8
    elif not arg:
        base, factors, budget, seeds, target = sweep_base(), (0.25, 0.5, 1, 1.5, 2), 3, \
            (0, 1, 2), 0.95
    else:
        raise ValueError(f"experiments/sweeps/widths.py: unknown variant {arg!r} (known: tiny)")
    preset = PRESETS[base.model.preset]
    arms = {f"width_x{f:g}": scaled_widths(preset, f) for f in factors}
    return Sweep(name="widths" + ("_tiny" if arg else ""), base=base, arms=arms,
                 space={"optimizer.learning_rate": loguniform(1e-3, 1e-2)}, budget=budget,
                 seeds=seeds, target=("val_accuracy", target),
                 description=f"Width: {base.model.preset}'s filters scaled by "
                             f"{', '.join(f'{f:g}' for f in factors)}.")
