"""Train and test one experiment.

    python -m speechmusic_jax.train [--config=experiments/NAME.py[:ARG]] [--workdir=DIR]
        [--data=SPEC] [--data_on_error=error|skip] [--overwrite] [--dry_run]
        [--config.FIELD=VALUE ...]

Flags are parsed here and turned into the config; the library never reads flags.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from speechmusic_jax import cli

# ml_collections applies --config.FIELD overrides while defining the flag: errors become one line.
_CONFIG = cli.define_flags(lambda: config_flags.DEFINE_config_file(
    "config", cli.default_experiment(), "Experiment file (experiments/NAME.py[:ARG]).",
    lock_config=True))
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (default runs/<config.name>).")
_DATA = flags.DEFINE_string("data", None, "Shorthand for --config.data.spec.")
_ON_ERROR = flags.DEFINE_enum("data_on_error", None, ["error", "skip"],
                              "Shorthand for --config.data.on_error.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the workdir's run and start afresh.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Validate the config, print it as JSON and exit without any work.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.quiet_jax_logs()
    cfg = cli.apply_shorthands(_CONFIG.value, data=_DATA.value, on_error=_ON_ERROR.value)
    workdir = _WORKDIR.value or os.path.join("runs", cfg.name)
    if _DRY_RUN.value:
        import json

        from speechmusic_jax import config as config_lib

        with cli.friendly_errors():
            config_lib.validate(cfg)
        print(json.dumps(config_lib.to_dict(cfg), indent=2))
        print(f"config valid; a run would write to {os.path.abspath(workdir)}", file=sys.stderr)
        return 0
    from speechmusic_jax.training import loop

    with cli.friendly_errors():
        summary = loop.fit(cfg, workdir, log=cli.log, overwrite=_OVERWRITE.value)
        print(f"outputs in {os.path.abspath(workdir)}", flush=True)
    return 0 if summary.get("status") != "diverged" else 1


if __name__ == "__main__":
    cli.quiet_jax_logs()
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
