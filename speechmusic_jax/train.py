"""Train and test one experiment.

    python -m speechmusic_jax.train [--config=experiments/NAME.py[:ARG]] [--workdir=DIR]
        [--data=SPEC] [--data_on_error=error|skip] [--overwrite] [--dry_run]
        [--config.FIELD=VALUE ...]
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I | --distributed=on]

Every config field can be set on the command line (--config.train.epochs=20,
--config.model.preset=m5, ...). --dry_run prints the resolved config, every field with its value,
as JSON and exits without any work; the defaults are in speechmusic_jax/config.py (base_config).

The epoch table: train_loss and train_acc over the epoch's training crops; val_loss, val_acc and
val_f1 over the validation clips; val_win_loss over the validation windows (a crop's unit, which
the overfitting note compares with train_loss); lr at the end of the epoch; time_s for training
and validation.
A `*` marks an epoch that improved the early-stopping monitor (val_loss unless
train.early_stopping.monitor says otherwise): its weights are the best so far, and the best are
the ones tested at the end.

Running the same command again resumes an interrupted run; with a larger
--config.train.epochs, it continues a finished run from its last checkpoint.

One run can span several processes (hosts): start the same command in each, with the
distributed flags or under SLURM / Open MPI; process 0 prints and writes the outputs, into a
workdir that every process sees (BUILD.md: "Several hosts").

Flags are parsed here and turned into the config; the library never reads flags.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from speechmusic_jax import cli


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        "config": cli.config_flag(),
        **cli.data_flags(),
        **cli.distributed_flags(),
        "workdir": flags.DEFINE_string("workdir", None, "Run folder (default runs/<config.name>)."),
        "overwrite": flags.DEFINE_bool("overwrite", False,
                                       "Delete the workdir's run and start afresh (a folder "
                                       "holding anything but a run of ours is never deleted)."),
        "dry_run": flags.DEFINE_bool("dry_run", False, "Validate the config, print it as JSON "
                                     "and exit without any work."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import config as config_lib

    cfg = cli.config_from(flags, args)
    workdir = flags["workdir"] or os.path.join("runs", cfg.name)
    if flags["dry_run"]:
        config_lib.validate(cfg)
        if cfg.train.init_from:  # the pretrained run is read (config and shapes), not loaded
            from speechmusic_jax.training import pretrained

            print(pretrained.check(cfg, [workdir]), file=sys.stderr)
        print(json.dumps(config_lib.to_dict(cfg), indent=2))
        print(f"config valid; a run would write to {os.path.abspath(workdir)}", file=sys.stderr)
        return 0
    cli.start_distributed(flags)
    import jax

    from speechmusic_jax.training import loop

    cli.on_interrupt(lambda: loop.interrupt_note(workdir))
    summary = loop.fit(cfg, workdir, log=cli.log, overwrite=flags["overwrite"],
                       host_memory=flags.get("host_memory"))
    if jax.process_index() == 0:
        print(f"outputs in {os.path.abspath(workdir)}", flush=True)
    return 0 if summary.get("status") != "diverged" else 1


if __name__ == "__main__":
    cli.run_main(define_flags, main)
