"""Run a sweep: every trial a run in DIR/trials/NNN/, then a table per arm and the figures.

    python -m speechmusic_jax.sweep --sweep=experiments/sweeps/NAME.py[:ARG] [--workdir=DIR]
        [--trials=START:END] [--mode=auto|alone|grouped|grouped_map] [--data=SPEC]
        [--data_on_error=...] [--set=FIELD=VALUE ...] [--report_only] [--dry_run]
        [--reference=ARM] [--time_modes] [--verbose] [--num_processes=N --process_id=I]

Running the same command again skips finished trials and resumes an unfinished one; a diverged
or failed trial is recorded and the sweep goes on. ``--trials=START:END`` (half-open, like a
Python slice) runs only those trials, so several processes or machines can share one DIR.
``--num_processes=N --process_id=I`` (or srun / mpirun, which set them) splits the trials
between N processes: each runs its share and then any trial nobody has claimed; process 0 waits
for the others and writes the merged results. Each trial trains on its own process's devices
(no distributed runtime: trials are independent, so a process that dies costs only its own).
``--data`` sets ``data.spec`` of every trial, ``--set=FIELD=VALUE`` any field of the sweep's base
config (the same sweep on another corpus or budget: use another DIR). ``--time_modes`` measures
the train step of the base config alone and grouped (vmap, map) and prints ms per trial-step.
Outputs in DIR: results.csv, results.md, results.json, curves.png, budget.png, pareto.png
(profile.png with several workloads); see speechmusic_jax/tuning/. results.md and the printed
table open with a verdict: the reference arm (``--reference=ARM``, else the arm with the best
mean validation score) against every other, paired over seeds and Holm-corrected. Ctrl-C says
how many trials are finished and kept; the same command goes on from there.
"""

from __future__ import annotations

import ast
import os
from typing import Any

from speechmusic_jax import cli


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        "sweep": flags.DEFINE_string("sweep", None, "Sweep file experiments/sweeps/NAME.py[:ARG] "
                                     "defining get_sweep(arg)."),
        **cli.data_flags(),
        "workdir": flags.DEFINE_string("workdir", None,
                                       "Sweep folder (default runs/sweeps/<sweep name>)."),
        "trials": flags.DEFINE_string("trials", None, "Run only trials START:END (half-open; "
                                      "either side may be empty), or one trial N."),
        "mode": flags.DEFINE_enum("mode", None, ["auto", "alone", "grouped", "grouped_map"],
                                  "alone: one run per trial; grouped: trials differing only in "
                                  "learning rate, weight decay, label smoothing, L1, L2 and "
                                  "dropout rates train together (vmapped); "
                                  "grouped_map: the same, one trial after another in one "
                                  "program (lax.map); auto (default): the sweep's choice "
                                  "(grouped on accelerators, alone on CPU)."),
        "set": flags.DEFINE_multi_string("set", [], "FIELD=VALUE: set a field of the sweep's "
                                         "base config (repeatable), e.g. --set=train.epochs=5."),
        "time_modes": flags.DEFINE_bool("time_modes", False, "Time the base config's train step "
                                        "alone and grouped (vmap, map; 1, 4, 8 trials) and exit."),
        "report_only": flags.DEFINE_bool("report_only", False, "Train nothing: collect the "
                                         "finished trials and write the results and figures."),
        "dry_run": flags.DEFINE_bool("dry_run", False, "List the trials and exit."),
        "num_processes": flags.DEFINE_integer(
            "num_processes", None, "Processes sharing this sweep (default: SLURM_NTASKS or "
            "OMPI_COMM_WORLD_SIZE when launched by srun or mpirun, else 1)."),
        "process_id": flags.DEFINE_integer(
            "process_id", None, "This process's index, 0 .. num_processes-1 (default: "
            "SLURM_PROCID or OMPI_COMM_WORLD_RANK)."),
        "reference": flags.DEFINE_string(
            "reference", None, "The arm every other is compared with (default: the arm whose "
            "seeds' picks have the best mean validation score; never chosen on test)."),
        "verbose": flags.DEFINE_bool("verbose", False, "Show each trial's own log (always in "
                                     "DIR/logs/NNN.log)."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    import jax

    from speechmusic_jax import config as config_lib
    from speechmusic_jax import distributed, timing
    from speechmusic_jax.tuning import runner, space, spec

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    if not flags["sweep"]:
        raise cli.UsageError("--sweep=experiments/sweeps/NAME.py[:ARG] is required")
    sweep = spec.load_sweep(*spec.parse_sweep_arg(flags["sweep"]))
    shorthands = {"data.spec": flags.get("data"), "data.on_error": flags.get("data_on_error")}
    shorthands = {k: v for k, v in shorthands.items() if v is not None}
    shorthands.update(parse_sets(flags.get("set") or []))
    if shorthands:
        space.check_fields(sweep.base, list(shorthands), "--set")
        sweep.base = space.apply(sweep.base, shorthands)
    if flags.get("time_modes"):
        from speechmusic_jax.tuning import group

        config_lib.validate(sweep.base)
        print(f"{sweep.base.model.preset} at batch {sweep.base.train.batch_size} on "
              f"{timing.device_info()['device_kind']} (jax {jax.__version__}); compilation "
              "excluded; other load: CPU cores used by other processes meanwhile")
        group.time_modes(sweep.base, log=cli.log)
        return 0
    if flags.get("reference"):
        sweep.reference = flags["reference"]
    sweep.validate()  # an unknown --reference fails here, before any work
    workdir = flags["workdir"] or runner.default_workdir(sweep)
    if flags["dry_run"]:
        trials = sweep.trials()
        start, end = runner.parse_trials(flags["trials"], len(trials))
        print(sweep.describe())
        for t in trials[start:end]:
            sweep.trial_config(t)  # validates
            print(f"trial {t.index:03d}: {t.label}")
        print(f"{end - start} of {len(trials)} trials would run in {os.path.abspath(workdir)}")
        return 0
    if flags["report_only"]:
        runner.check_workdir(os.path.abspath(workdir), sweep.record())
        result = runner.collect(sweep, os.path.abspath(workdir))
        result.write(os.path.abspath(workdir), log=cli.log)
        print(result.table())
        return 0
    try:
        share = distributed.process_share(flags.get("num_processes"), flags.get("process_id"))
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    cli.on_interrupt(lambda: runner.interrupt_note(sweep, workdir))
    result = runner.run_sweep(sweep, workdir, trials=flags["trials"], mode=flags["mode"],
                              log=cli.log, trial_log=flags["verbose"], share=share,
                              host_memory=flags.get("host_memory"))
    start, end = runner.parse_trials(flags["trials"], len(result.records))
    mine = result.records[start:end]
    return 1 if mine and all(r["status"] == "failed" for r in mine) else 0


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings -> {field: value}; values read as Python literals where they
    parse (numbers, tuples, booleans), else as strings."""
    out = {}
    for item in items:
        field, sep, text = item.partition("=")
        if not sep or not field:
            raise cli.UsageError(f"--set: expected FIELD=VALUE, got {item!r}")
        try:
            out[field] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[field] = text
    return out


if __name__ == "__main__":
    cli.run_main(define_flags, main)
