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
Any other data: add --data=SPEC (e.g. --data=manifest:../shared/data/dev_real/manifest.csv).
"""

from speechmusic_jax.tuning import optimizer_sweep
from speechmusic_jax.tuning.bases import sweep_base, tiny_base


def get_sweep(arg=None):
    if arg == "tiny":
        return optimizer_sweep(tiny_base(), ["momentum", "adam", "adamw", "lion"], budget=3,
                               seeds=3, target=("val_accuracy", 0.8), name="optimizers_tiny")
    if arg:
        raise ValueError(f"experiments/sweeps/optimizers.py: unknown variant {arg!r} "
                         "(known: tiny)")
    return optimizer_sweep(sweep_base("sweep_optimizers"),
                           ["momentum", "adam", "adamw", "lion", "lamb"], budget=8, seeds=3,
                           target=("val_accuracy", 0.95), name="optimizers")
