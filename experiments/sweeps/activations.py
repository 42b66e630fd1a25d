"""Activation functions: each an arm, the learning rate tuned with the same budget for each.

    --sweep=experiments/sweeps/activations.py       relu, gelu, silu, elu, leaky_relu, tanh;
                                                    4 points x 3 seeds
    --sweep=experiments/sweeps/activations.py:tiny  relu, gelu, tanh; 1 point x 2 seeds
"""

from speechmusic_jax.tuning import Sweep, loguniform
from speechmusic_jax.tuning.bases import sweep_base, tiny_base
from speechmusic_jax.tuning.spec import arm_grid


def get_sweep(arg=None):
    if arg == "tiny":
        base, names, budget, seeds, target = tiny_base(), ("relu", "gelu", "tanh"), 1, (0, 1), 0.8
    elif not arg:
        base, budget, seeds, target = sweep_base(), 4, (0, 1, 2), 0.95
        names = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh")
    else:
        raise ValueError(f"experiments/sweeps/activations.py: unknown variant {arg!r} "
                         "(known: tiny)")
    return Sweep(name="activations" + ("_tiny" if arg else ""), base=base,
                 arms=arm_grid({"model.activation": names}),
                 space={"optimizer.learning_rate": loguniform(1e-3, 1e-2)}, budget=budget,
                 seeds=seeds, target=("val_accuracy", target),
                 description="Activation functions, the learning rate tuned for each.")
