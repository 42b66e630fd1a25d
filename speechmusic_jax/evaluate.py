"""Evaluate a trained run's weights (by default those it was tested with) on a labelled data
source.

    python -m speechmusic_jax.evaluate --model=DIR|pretrained --data=SPEC
        [--data_on_error=error|skip] [--weights=tested|best|last] [--by=COL[,COL...]]
        [--output=FILE.json [--overwrite]]

--model names a run folder, or pretrained for the model shipped in the package (--workdir is
its older spelling); a shipped model's report goes to --output (its folder is not written to).

Every file of the source is classified (clip level: mean of window logits); the report, with the
same keys as summary.json's ``test``, is printed and written to DIR/eval/<source>.json (<source>:
a readable form of the spec and a hash of it, so two sources never share a file; an earlier
report on the same source is replaced), or to ``--output``. Beside the report,
``<same name>.predictions.csv`` lists every file: path, label, predicted, confidence,
p_<class>..., correct (1 or 0); the output says how many files were wrong and where that list
is. An existing ``--output`` is replaced only with ``--overwrite``, and only when it and its
predictions file are an evaluate report of ours; a folder or anyone else's file never. A warning
says when the source shares files (or identical audio) with the run's own training or
validation split. Then one table per column of ``--by`` (``group`` or a manifest column; by
default those with a few sizeable values, see :mod:`training.breakdown`; ``--by=`` for none):
clips, right/clips per class, clip and window accuracy for each value, worst first; the same
under ``by`` in the JSON.
"""

from __future__ import annotations

import os
from typing import Any

from speechmusic_jax import cli


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        **cli.model_flags(),
        **cli.data_flags(on_error_default="error"),
        "weights": cli.weights_flag("to use"),
        "by": flags.DEFINE_list("by", None, "Columns to break the accuracy down by: group or "
                                "any column of a manifest (default: those with 2 to 30 values "
                                "and at least two files per value; --by= for none)."),
        "output": flags.DEFINE_string("output", None, "Write the report to FILE.json (and the "
                                      "per-file predictions to FILE.predictions.csv) instead of "
                                      "DIR/eval/."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace an existing --output (only "
                                       "an evaluate report this program wrote)."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import shipped, trained_run
    from speechmusic_jax.training import breakdown, metrics

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    model = cli.model_folder(flags)
    if not flags["data"]:
        raise cli.UsageError("--data is required")
    output = flags.get("output")
    if output is not None and not output.endswith(".json"):
        raise cli.UsageError("--output must end in .json")
    if shipped.is_shipped_model(shipped.resolve(model)) and not output:
        # a shipped model's folder holds what was shipped, and may be read-only (site-packages)
        raise cli.UsageError(f"{model} is a shipped model, whose folder is not written to: name "
                             "the report's file with --output=FILE.json")
    run = trained_run.load_run(model, flags["weights"])
    try:
        report, path = trained_run.evaluate_source(run, flags["data"],
                                                   on_error=flags["data_on_error"], log=cli.log,
                                                   by=flags["by"], output=output,
                                                   overwrite=flags.get("overwrite", False))
    except breakdown.UnknownColumn as e:
        raise cli.UsageError(f"--by: {e}") from None
    cli.log(metrics.format_report(report, run.classes, title=f"{flags['data']}, clip level"))
    window = report["window"]
    cli.log(f"window level: accuracy {window['accuracy']:.4f} over {window['n_windows']} windows")
    for column, rows in report["by"].items():
        cli.log("\n" + breakdown.format_breakdown(column, rows, run.classes))
    listed = os.path.join(os.path.dirname(path), report["predictions_file"])
    cli.log(f"{report['wrong']} of {report['n_files']} files wrong; every file's prediction "
            f"(column correct) in {listed}")
    cli.log(f"written to {path}")
    return 0


if __name__ == "__main__":
    cli.run_main(define_flags, main)
