"""Compare optimizers fairly from Python, then look at the answer.

    python examples/compare_optimizers.py                       # 4 optimizers x 4 points x 3 seeds
    python examples/compare_optimizers.py --quick               # seconds: what the test runs
    python examples/compare_optimizers.py --data=manifest:../shared/data/dev_real/manifest.csv

Every optimizer gets the same budget of quasi-random points from the same kind of search space
(learning rate log-uniform, plus weight decay for the decoupled ones), and every point runs with
the same seeds: same split, same initial weights, same batches across optimizers. The result
holds one record per trial; the per-arm summary, the paired differences and the budget curves
are computed from those records.
"""

from __future__ import annotations

import argparse
import os

from speechmusic_jax.config import load_experiment
from speechmusic_jax.tuning import compare_optimizers
from speechmusic_jax.tuning.bases import tiny_base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/sweeps/compare_optimizers")
    parser.add_argument("--data", default=None, help="data spec (default: the built-in corpus)")
    parser.add_argument("--quick", action="store_true",
                        help="2 optimizers x 1 point x 2 seeds of the tiny model")
    args = parser.parse_args(argv)

    if args.quick:
        cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
        optimizers, budget, seeds = ["momentum", "adamw"], 1, 2
    else:
        cfg = tiny_base()
        optimizers, budget, seeds = ["momentum", "adam", "adamw", "lion"], 4, 3
    if args.data:
        cfg.data.spec = args.data

    result = compare_optimizers(cfg, optimizers, budget=budget, seeds=seeds,
                                target=("val_accuracy", 0.8), workdir=args.workdir,
                                name="compare_optimizers" + ("_quick" if args.quick else ""))

    # The records are plain dicts: filter and aggregate them as you like.
    finished = result.filter(lambda r: r["status"] in ("completed", "stopped_early"))
    print(f"\n{len(finished.records)} of {len(result.records)} trials finished")
    for summary in result.arms():  # mean ± std over seeds of each seed's pick
        print(f"{summary['arm']:>10}: test accuracy {summary['test_accuracy_mean']:.3f} ± "
              f"{summary['test_accuracy_std']:.3f} over {summary['seeds']} seeds")
    for (_, arm), trial in result.best().items():  # each arm's best trial by validation
        print(f"{arm:>10}: best trial {trial['trial']} (learning rate "
              f"{trial['optimizer.learning_rate']:.3g}) in {trial['workdir']}")
    a, b = optimizers[-1], optimizers[0]
    diff = result.paired(a, b)  # same seeds: same split, initial weights and batches
    per_seed = ", ".join(f"{d:+.3f}" for d in diff["differences"])
    print(f"{a} - {b}: {diff['mean']:+.3f} test accuracy (per seed {per_seed}); sign-flip "
          f"p = {diff['p_value']:.3g}, "
          + (f"95% interval [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]" if diff["ci95"]
             else f"no interval with {diff['n']} seeds (the test needs {diff['min_seeds']})"))
    print(f"verdict: {result.verdict()}")  # the reference (best on validation) against the rest
    for (_, arm), curve in result.best_of_k().items():  # which optimizer needs less tuning
        print(f"{arm:>10}: expected best validation accuracy after k trials: "
              + ", ".join(f"k={c['k']}: {c['mean']:.3f}" for c in curve))
    print(f"\nresults.md, results.csv and the figures are in {os.path.abspath(args.workdir)}")
    return {"result": result, "paired": diff}


if __name__ == "__main__":
    main()
