"""Optimizers over several workloads (presets x data): AlgoPerf's performance profiles.

Each workload is a preset on a corpus; the optimizers are the arms, tuned on every workload with
the same budget of the same search (as in optimizers.py). With several workloads results.md and
profile.png add AlgoPerf's performance profile: for each optimizer, the fraction of workloads
on which its time to target (steps) is within a factor tau of the fastest optimizer's there.

    --sweep=experiments/sweeps/optimizers_workloads.py        momentum, adam, adamw, lion x 8
                                                            points x 3 seeds on presets m5_small,
                                                            m5_mid x two draws of the built-in
                                                            corpus (seeds 0, 1): 384 runs
    --sweep=experiments/sweeps/optimizers_workloads.py:tiny   momentum, adamw, lion x 2 points x
                                                            1 seed on presets tiny, m5_small x
                                                            two draws of the small corpus: 24
                                                            short runs, a smoke test
"""

from speechmusic_jax.tuning import optimizer_sweep
from speechmusic_jax.tuning.bases import sweep_base, tiny_base


def workloads(presets, corpus_seeds):
    """Every preset on every draw of the built-in corpus, named PRESET-corpusSEED."""
    return {f"{p}-corpus{s}": {"model.preset": p, "data.synthetic.seed": s}
            for p in presets for s in corpus_seeds}


def get_sweep(arg=None):
    if arg == "tiny":
        sweep = optimizer_sweep(tiny_base(), ["momentum", "adamw", "lion"], budget=2, seeds=1,
                                target=("val_accuracy", 0.8), name="optimizers_workloads_tiny")
        sweep.workloads = workloads(("tiny", "m5_small"), (0, 1))
        return sweep
    if arg:
        raise ValueError(f"experiments/sweeps/optimizers_workloads.py: unknown variant {arg!r} "
                         "(known: tiny)")
    sweep = optimizer_sweep(sweep_base("sweep_optimizers_workloads"),
                            ["momentum", "adam", "adamw", "lion"], budget=8, seeds=3,
                            target=("val_accuracy", 0.95), name="optimizers_workloads")
    sweep.workloads = workloads(("m5_small", "m5_mid"), (0, 1))
    return sweep
