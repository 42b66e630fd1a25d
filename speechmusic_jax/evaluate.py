"""Evaluate a trained run's weights (by default those it was tested with) on a labelled data
source.

    python -m speechmusic_jax.evaluate --model=DIR|pretrained --data=SPEC
        [--data_on_error=error|skip] [--weights=tested|best|last] [--by=COL[,COL...]]

--model names a run folder, or pretrained for the model shipped in the package (--workdir is
its older spelling); a shipped model's report goes to --output (its folder is not written to).

Every file of the source is classified (clip level: mean of window logits); the report, with the
same keys as summary.json's ``test``, is printed and written to DIR/eval/<source>.json. A warning
says when the source shares files (or identical audio) with the run's own training or
validation split. Then one table per column of ``--by`` (``group`` or a manifest column; by
default those with a few sizeable values, see :mod:`training.breakdown`; ``--by=`` for none):
clips, right/clips per class, clip and window accuracy for each value, worst first; the same
under ``by`` in the JSON.
"""

from __future__ import annotations

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
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import shipped, trained_run
    from speechmusic_jax.training import breakdown, metrics

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    model = cli.model_folder(flags)
    if not flags["data"]:
        raise cli.UsageError("--data is required")
    if shipped.is_shipped_model(shipped.resolve(model)) and not flags.get("output"):
        # a shipped model's folder holds what was shipped, and may be read-only (site-packages)
        raise cli.UsageError(f"{model} is a shipped model, whose folder is not written to: name "
                             "the report's file with --output=FILE.json")
    run = trained_run.load_run(model, flags["weights"])
    try:
        report, path = trained_run.evaluate_source(run, flags["data"],
                                                   on_error=flags["data_on_error"], log=cli.log,
                                                   by=flags["by"])
    except breakdown.UnknownColumn as e:
        raise cli.UsageError(f"--by: {e}") from None
    cli.log(metrics.format_report(report, run.classes, title=f"{flags['data']}, clip level"))
    window = report["window"]
    cli.log(f"window level: accuracy {window['accuracy']:.4f} over {window['n_windows']} windows")
    for column, rows in report["by"].items():
        cli.log("\n" + breakdown.format_breakdown(column, rows, run.classes))
    cli.log(f"written to {path}")
    return 0


if __name__ == "__main__":
    cli.run_main(define_flags, main)
