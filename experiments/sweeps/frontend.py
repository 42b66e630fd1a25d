"""Raw waveform against a log-mel front end (computed in JAX), the learning rate tuned for each.

The log-mel arm runs the same stages over mel frames (64 bands, 25 ms windows, 10 ms hop): its
stem is a kernel_size conv over frames instead of the strided conv over samples, and since
frames come at 100 per second (the raw stem's output at 500 to 2000 per second) it pools less:
no pool after the stem, 2 after each stage.

    --sweep=experiments/sweeps/frontend.py          m5_mid raw vs log-mel; 4 points x 3 seeds
    --sweep=experiments/sweeps/frontend.py:tiny     m5_small raw vs log-mel; 1 point x 2 seeds
"""

from speechmusic_jax.tuning import Sweep, loguniform
from speechmusic_jax.tuning.bases import sweep_base, tiny_base


def get_sweep(arg=None):
    if arg == "tiny":
        base, budget, seeds, target = tiny_base(), 1, (0, 1), 0.8
    elif not arg:
        base, budget, seeds, target = sweep_base(), 4, (0, 1, 2), 0.95
    else:
        raise ValueError(f"experiments/sweeps/frontend.py: unknown variant {arg!r} "
                         "(known: tiny)")
    arms = {"raw": {"model.frontend": "raw"},
            "logmel": {"model.frontend": "logmel", "model.stem_pool": 1,
                       "model.stage_pool": (2, 2, 2)}}
    return Sweep(name="frontend" + ("_tiny" if arg else ""), base=base, arms=arms,
                 space={"optimizer.learning_rate": loguniform(1e-3, 1e-2)}, budget=budget,
                 seeds=seeds, target=("val_accuracy", target),
                 description="Raw waveform against log-mel front end.")
