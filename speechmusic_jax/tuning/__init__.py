"""Sweeps: compare optimizers and hyperparameters fairly, many trials per compile.

    from speechmusic_jax import tuning
    from speechmusic_jax.config import load_experiment

    cfg = load_experiment("experiments/default.py")
    result = tuning.compare_optimizers(cfg, ["momentum", "adam", "adamw", "lion"], budget=8,
                                       seeds=3, target=("val_accuracy", 0.9), workdir="runs/opt")
    result.verdict()  # the reference arm (best on validation) against the others
    result = tuning.run_sweep(tuning.load_sweep("experiments/sweeps/widths.py", "tiny"))

Modules: ``space`` (search spaces, AlgoPerf's JSON), ``halton`` (quasi-random points), ``spec``
(the Sweep and its trials), ``runner`` (running, resuming, sharing a sweep), ``group`` (trials
trained together in one vmapped program), ``records`` (a trial's record from its run folder),
``analysis`` (per-arm statistics, the reference arm and the verdict, time to target, paired
differences, best-of-k, performance profiles), ``stats`` (the exact sign-flip test over seeds,
its interval, Holm), ``results`` (SweepResult and its files), ``plots`` (the figures).
"""

from speechmusic_jax.tuning.results import SweepResult
from speechmusic_jax.tuning.runner import (
    collect,
    compare_optimizers,
    optimizer_space,
    optimizer_sweep,
    run_sweep,
)
from speechmusic_jax.tuning.space import (
    choice,
    loguniform,
    product,
    read_algoperf,
    sample,
    uniform,
    zip_points,
    zipped,
)
from speechmusic_jax.tuning.spec import Sweep, Trial, load_sweep

__all__ = ["Sweep", "SweepResult", "Trial", "choice", "collect", "compare_optimizers",
           "load_sweep", "loguniform", "optimizer_space", "optimizer_sweep", "product",
           "read_algoperf", "run_sweep", "sample", "uniform", "zip_points", "zipped"]
