"""Evaluate a trained run's best weights on a labelled data source.

    python -m speechmusic_jax.evaluate --workdir=DIR --data=SPEC [--data_on_error=error|skip]

Every file of the source is classified (clip level: mean of window logits); the report, with the
same keys as summary.json's ``test``, is printed and written to DIR/eval/<source>.json.
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags

from speechmusic_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding a trained model.")
_DATA = flags.DEFINE_string("data", None, "Data source (synthetic, folder:PATH, gtzan:PATH, ...).")
_ON_ERROR = flags.DEFINE_enum("data_on_error", "error", ["error", "skip"],
                              "Stop at a bad file, or skip it and count it.")
_WHICH = flags.DEFINE_enum("weights", "best", ["best", "last"], "Which checkpoint to use.")


def source_name(spec: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", spec).strip("_") or "source"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value or not _DATA.value:
        raise app.UsageError("--workdir and --data are required")
    cli.quiet_jax_logs()
    from speechmusic_jax import trained_run
    from speechmusic_jax.data import sources
    from speechmusic_jax.errors import DataError
    from speechmusic_jax.io_utils import atomic_write_json
    from speechmusic_jax.training import clip_scoring, metrics
    from speechmusic_jax.training.loop import ErrorCounter, list_source

    with cli.friendly_errors():
        run = trained_run.load_run(_WORKDIR.value, _WHICH.value)
        try:
            sources.parse_spec(_DATA.value)
        except ValueError as e:
            raise DataError(str(e)) from None
        listing = list_source(run.cfg.data, _DATA.value, _ON_ERROR.value, cli.log)
        scanned, scan_errors = sources.scan_headers(listing.files, _ON_ERROR.value)
        errors = ErrorCounter(_ON_ERROR.value, cli.log, dict(scan_errors))
        files = [f for f, _ in scanned]
        cli.log(f"evaluating the epoch-{run.epoch} weights of {run.workdir} on {len(files)} "
                f"files of {_DATA.value}")
        pred = trained_run.classify(run, files, on_bad_file=errors)
        report = clip_scoring.report(pred, run.classes)
        report["data_errors"] = dict(errors.counts)
        report["source"] = _DATA.value
        path = os.path.join(run.workdir, "eval", f"{source_name(_DATA.value)}.json")
        atomic_write_json(path, report)
        cli.log(metrics.format_report(report, run.classes, title=f"{_DATA.value}, clip level"))
        win = report["window"]
        cli.log(f"window level: accuracy {win['accuracy']:.4f} over {win['n_windows']} windows")
        cli.log(f"written to {path}")
    return 0


if __name__ == "__main__":
    cli.quiet_jax_logs()
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
