"""Width x depth: every combination an arm, for the accuracy-against-cost picture (pareto.png).

    --sweep=experiments/sweeps/width_depth.py       m5_mid, width x0.5/1/2 x 1/2/3 blocks per
                                                    stage; the base learning rate; 3 seeds
    --sweep=experiments/sweeps/width_depth.py:tiny  m5_small, width x0.25/1 x 1/2 blocks; 2 seeds
"""

from speechmusic_jax.models.presets import PRESETS
from speechmusic_jax.tuning import Sweep
from speechmusic_jax.tuning.bases import scaled_widths, sweep_base, tiny_base


def get_sweep(arg=None):
    if arg == "tiny":
        base, factors, repeats, seeds, target = tiny_base(), (0.25, 1), (1, 2), (0, 1), 0.8
    elif not arg:
        base, factors, repeats, seeds, target = sweep_base(), (0.5, 1, 2), (1, 2, 3), \
            (0, 1, 2), 0.95
    else:
        raise ValueError(f"experiments/sweeps/width_depth.py: unknown variant {arg!r} "
                         "(known: tiny)")
    preset = PRESETS[base.model.preset]
    arms = {f"width_x{f:g},blocks_x{r}": {**scaled_widths(preset, f),
                                          "model.stage_repeats": (r,) * len(
                                              preset["stage_filters"])}
            for f in factors for r in repeats}
    return Sweep(name="width_depth" + ("_tiny" if arg else ""), base=base, arms=arms,
                 seeds=seeds, target=("val_accuracy", target),
                 description="Width x depth at the base learning rate: accuracy against "
                             "parameters and training time.")
