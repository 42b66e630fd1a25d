"""K-fold cross-validation: every fold a normal run, then mean ± std of the clip-level scores.

    python -m speechmusic_jax.crossval [--config=experiments/NAME.py[:ARG]] --data=SPEC \\
        --folds=K [--workdir=DIR] [--data_on_error=error|skip] [--overwrite] \\
        [--config.FIELD=VALUE ...]

Fold I is ``fit`` with ``data.folds=K, data.fold=I`` in ``DIR/fold_I``: its test set is the I-th
of K stratified, grouped folds, and validation (for early stopping) is carved out of the rest.
Every file is tested exactly once over the K folds. A fold's workdir follows the usual rules, so
running the same command again resumes an interrupted fold and skips finished ones.
With ``train.init_from`` every fold starts from the same pretrained weights (and a resumed fold
from its own checkpoint).

``DIR/crossval.json``: ``accuracy_mean, accuracy_std, f1_macro_mean, f1_macro_std`` (std: the
sample standard deviation over folds, ddof=1), ``pooled_accuracy`` (all folds' test clips
together), and ``folds``: one test record per fold (the ``test`` of its summary.json, plus
``fold``, ``status`` and ``workdir``).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax import errors
from speechmusic_jax.io_utils import atomic_write_json, check_output, read_json

Log = Callable[[str], None]


def run(cfg: config_lib.ConfigDict, workdir: str, folds: int, *, log: Log = print,
        overwrite: bool = False, host_memory: str | None = None) -> dict:
    """Run the ``folds`` folds of ``cfg`` under ``workdir``; return (and write) crossval.json.
    ``host_memory``: the allocator policy in effect, for each fold's summary.json."""
    from speechmusic_jax.training import loop
    from speechmusic_jax.training import workdir as workdir_rules

    if folds < 2:
        raise config_lib.ConfigError(f"--folds: must be at least 2 (got {folds})")
    workdir = os.path.abspath(workdir)
    fold_dirs = [os.path.join(workdir, f"fold_{i}") for i in range(folds)]
    if overwrite:  # refuse before any fold is deleted, not after the first ones
        for fold_dir in fold_dirs:
            if workdir_rules.foreign_entries(fold_dir):
                workdir_rules.remove_run(fold_dir)  # raises, naming what is there
    records = []
    for i, fold_dir in enumerate(fold_dirs):
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.data.folds = folds
        fold_cfg.data.fold = i
        config_lib.validate(fold_cfg)
        log(f"\n=== cross-validation fold {i + 1} of {folds} ({fold_dir}) ===")
        try:
            summary = loop.fit(fold_cfg, fold_dir, log=log, overwrite=overwrite,
                               host_memory=host_memory)
        except errors.TrainingDiverged as e:
            log(f"fold {i} diverged: {e}")
            summary = {"status": "diverged", "test": None}
        record = {"fold": i, "status": summary.get("status"), "workdir": fold_dir,
                  "best_epoch": summary.get("best_epoch")}
        if summary.get("test"):
            record.update(summary["test"])
        records.append(record)
    result = aggregate(records, folds)
    result["config"] = {"name": cfg.name, "data.spec": cfg.data.spec, "seed": cfg.seed,
                        "train.init_from": cfg.train.init_from}
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "crossval.json")
    check_output(path, overwrite=True, ours=lambda p: "folds_k" in read_json(p),
                 flag="crossval.json")
    atomic_write_json(path, result)
    log(format_result(result))
    return result


def aggregate(records: list[dict], folds: int) -> dict:
    """Mean and sample std (ddof=1) of clip accuracy and macro F1 over folds with a test."""
    tested = [r for r in records if "accuracy" in r]
    acc = [float(r["accuracy"]) for r in tested]
    f1 = [float(r["f1"]["macro"]) for r in tested]
    n_files = sum(int(r.get("n_files", 0)) for r in tested)
    correct = sum(float(r["accuracy"]) * int(r.get("n_files", 0)) for r in tested)
    return {
        "folds_k": folds,
        "folds_tested": len(tested),
        "accuracy_mean": _mean(acc),
        "accuracy_std": _std(acc),
        "f1_macro_mean": _mean(f1),
        "f1_macro_std": _std(f1),
        "std_note": "sample standard deviation over folds (ddof=1); clip-level scores",
        "pooled_accuracy": correct / n_files if n_files else None,
        "n_files": n_files,
        "folds": records,
    }


def _mean(x: list[float]) -> float | None:
    return sum(x) / len(x) if x else None


def _std(x: list[float]) -> float | None:
    if len(x) < 2:
        return 0.0 if x else None
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))


def format_result(r: dict) -> str:
    lines = [f"\n=== cross-validation: {r['folds_tested']} of {r['folds_k']} folds tested ===",
             f"{'fold':>4} {'status':>14} {'n_files':>7} {'accuracy':>8} {'f1_macro':>8}"]
    for f in r["folds"]:
        if "accuracy" in f:
            lines.append(f"{f['fold']:>4} {f['status']:>14} {f['n_files']:>7} "
                         f"{f['accuracy']:>8.4f} {f['f1']['macro']:>8.4f}")
        else:
            lines.append(f"{f['fold']:>4} {f['status']!s:>14} {'-':>7} {'-':>8} {'-':>8}")
    if r["accuracy_mean"] is not None:
        lines.append(f"clip accuracy {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}, "
                     f"macro F1 {r['f1_macro_mean']:.4f} ± {r['f1_macro_std']:.4f} "
                     f"(mean ± sample std over folds); pooled accuracy "
                     f"{r['pooled_accuracy']:.4f} over {r['n_files']} clips")
    return "\n".join(lines)


def define_flags() -> dict[str, Any]:
    from absl import flags

    from speechmusic_jax import cli

    return {
        "config": cli.config_flag(),
        **cli.data_flags(),
        "workdir": flags.DEFINE_string(
            "workdir", None, "Folder for the folds (default runs/<config.name>_crossval)."),
        "folds": flags.DEFINE_integer("folds", 5, "Number of folds K (at least 2)."),
        "overwrite": flags.DEFINE_bool("overwrite", False,
                                       "Delete each fold's run and start afresh (a fold folder "
                                       "holding anything but a run of ours is never deleted)."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import cli

    cfg = cli.config_from(flags, args)
    workdir = flags["workdir"] or os.path.join("runs", f"{cfg.name}_crossval")
    cli.on_interrupt(lambda: "every finished fold and the last checkpoint of the fold in "
                             f"progress are kept under {os.path.abspath(workdir)}; run the same "
                             "command to resume")
    result = run(cfg, workdir, flags["folds"], log=cli.log, overwrite=flags["overwrite"],
                 host_memory=flags.get("host_memory"))
    print(f"outputs in {os.path.abspath(workdir)}", flush=True)
    return 0 if result["folds_tested"] == result["folds_k"] else 1


if __name__ == "__main__":
    from speechmusic_jax import cli

    cli.run_main(define_flags, main)
