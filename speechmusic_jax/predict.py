"""Classify audio files with a trained run: one row per file, per window, or a timeline.

    python -m speechmusic_jax.predict --model=DIR|pretrained [--segments|--windows]
        [--output=FILE.csv|.json] [--overwrite] [--plot=FILE.png] [--min_confidence=P] PATH...

--model names a run folder, or pretrained for the model shipped in the package (--workdir is
its older spelling). PATH is a file or a folder (searched recursively for audio). Without
--segments or --windows, one decision per file (the mean of its window logits, as in
training's evaluation): columns path, duration_s, short, predicted, confidence,
p_<class>..., error. --windows gives one row per window and --segments the merged, smoothed
segments of a timeline, both with columns path, start_s, end_s, short, predicted, confidence,
p_<class>..., error. short is true for a file shorter than one window (padded to one: the
answer rests on less audio than the model takes).
With --min_confidence=P, a file, window or segment whose confidence is below P is predicted
"uncertain" instead of being forced into a class. Files are read in blocks (memory stays flat
with their length) and the windows of many files share batches. A file that cannot be read gets
one row with its error and is named once on stderr; --data_on_error=error stops at it instead.
An existing --output (or --plot) file is replaced only with --overwrite, and only if this
program wrote it.

Exit status: 0 when every file was classified; 1 when some could not be read (their rows are
written all the same), unless --allow_errors or an explicit --data_on_error=skip says that is
expected (then 0); 2 when none could be read, or for a usage error.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from speechmusic_jax import cli
from speechmusic_jax.portable import check_min_confidence

if TYPE_CHECKING:
    from speechmusic_jax.trained_run import PathPredictions

MAX_PLOT_PANELS = 12


def define_flags() -> dict[str, Any]:
    from absl import flags

    from speechmusic_jax.segments import DEFAULT

    return {
        **cli.model_flags(),
        "weights": cli.weights_flag("to use"),
        "segments": flags.DEFINE_bool("segments", False, "A timeline: merged, smoothed segments "
                                      "(start_s, end_s, predicted, confidence) per file."),
        "windows": flags.DEFINE_bool("windows", False, "One row per window, unsmoothed."),
        "output": flags.DEFINE_string("output", None, "Write rows to FILE.csv or FILE.json "
                                      "(default: CSV on stdout)."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace an existing --output or "
                                       "--plot file that an earlier predict wrote."),
        "plot": flags.DEFINE_string("plot", None, "With --segments or --windows: draw the "
                                    f"timelines (window scores, segments) of the first "
                                    f"{MAX_PLOT_PANELS} files to FILE.png."),
        "smoothing": flags.DEFINE_enum("smoothing", None, ["hmm", "median", "none"],
                                       "Timeline smoothing: hmm (Viterbi with a cost per change "
                                       "of label; the default), median, or none."),
        "switch_penalty": flags.DEFINE_float("switch_penalty", None, "hmm smoothing: cost of "
                                             "one change of label, in nats (default "
                                             f"{DEFAULT.switch_penalty:g})."),
        "median_seconds": flags.DEFINE_float("median_seconds", None, "median smoothing: width "
                                             "of the filter in seconds (default "
                                             f"{DEFAULT.median_seconds:g})."),
        "hop_seconds": flags.DEFINE_float("hop_seconds", None, "Seconds between windows "
                                          "(default: a quarter window for --segments, the run's "
                                          "evaluation hop otherwise)."),
        "batch_size": flags.DEFINE_integer("batch_size", None, "Windows per batch (default: the "
                                           "run's train.eval_batch_size)."),
        "data_on_error": flags.DEFINE_enum("data_on_error", None, ["error", "skip"],
                                           "skip (the default): a file that cannot be read gets "
                                           "a row with its error and the others go on; error: "
                                           "stop at it (exit 2). Given explicitly, skip also "
                                           "means exit 0 when some files failed."),
        "allow_errors": flags.DEFINE_bool("allow_errors", False, "Exit 0 even when some files "
                                          "could not be read (by default: exit 1, after "
                                          "writing every row)."),
        "min_confidence": flags.DEFINE_float("min_confidence", None, "A probability P in [0, "
                                             "1]: a file, window or segment whose confidence "
                                             "is below P is predicted 'uncertain'."),
    }


def render(rows: list[dict], path: str | None) -> str:
    if path and path.endswith(".json"):
        return json.dumps(rows, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def smoothing_from(flags: dict[str, Any]):
    from speechmusic_jax import segments

    default = segments.DEFAULT
    try:
        return segments.Smoothing(
            flags["smoothing"] or default.method,
            default.switch_penalty if flags["switch_penalty"] is None else flags["switch_penalty"],
            default.median_seconds if flags["median_seconds"] is None else flags["median_seconds"])
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


def check_usage(flags: dict[str, Any], args: list[str]) -> None:
    output, plot = flags["output"], flags["plot"]
    cli.model_folder(flags)
    if not args:
        raise cli.UsageError("name at least one audio file or folder")
    if output and not output.endswith((".csv", ".json")):
        raise cli.UsageError("--output must end in .csv or .json")
    if flags["segments"] and flags["windows"]:
        raise cli.UsageError("--segments and --windows exclude each other")
    if plot and not (flags["segments"] or flags["windows"]):
        raise cli.UsageError("--plot draws timelines: add --segments or --windows")
    if plot and not plot.endswith(".png"):
        raise cli.UsageError("--plot must end in .png")
    if flags["hop_seconds"] is not None and flags["hop_seconds"] <= 0:
        raise cli.UsageError("--hop_seconds must be positive")
    if flags["batch_size"] is not None and flags["batch_size"] <= 0:
        raise cli.UsageError("--batch_size must be positive")
    try:
        check_min_confidence(flags["min_confidence"], "--min_confidence")
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import segments, trained_run
    from speechmusic_jax.io_utils import atomic_write_bytes, atomic_write_text, check_output

    check_usage(flags, args)
    smoothing = smoothing_from(flags)
    output, plot = flags["output"], flags["plot"]
    # Before any work: a refused output costs nothing.
    if output:
        check_output(output, overwrite=flags["overwrite"], ours=trained_run.is_prediction_file)
    if plot:
        check_output(plot, overwrite=flags["overwrite"], ours=segments.is_plot_file,
                     flag="--plot")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    run = trained_run.load_run(cli.model_folder(flags), flags["weights"])
    kind = "segments" if flags["segments"] else "windows" if flags["windows"] else "files"
    done = trained_run.predict_paths(
        run, args, rows=kind, hop_seconds=flags["hop_seconds"], smoothing=smoothing,
        on_error=flags["data_on_error"] or "skip", log=log, batch_size=flags["batch_size"],
        panels=MAX_PLOT_PANELS if plot else 0, min_confidence=flags["min_confidence"])
    text = render(done.rows, output)
    if output:
        atomic_write_text(output, text)
        log(f"{len(done.rows)} rows written to {output}")
    else:
        sys.stdout.write(text)
    if plot:
        atomic_write_bytes(plot, segments.plot_png(done.panels, run.classes))
        more = (f" (the first {len(done.panels)} of {done.found} files)"
                if done.found > len(done.panels) else "")
        log(f"timelines drawn to {plot}{more}")
    return finish(done, flags, log, run.cfg.data.segment_seconds)


def finish(done: PathPredictions, flags: dict[str, Any], log: Callable[[str], None],
           window_s: float) -> int:
    """The closing lines on stderr and the exit status (see the module's docstring)."""
    from speechmusic_jax.errors import DataError

    classified = done.found - len(done.failed)
    if done.short:
        log(f"note: {done.short} file(s) shorter than one window ({window_s:g} s) were padded "
            "to one; their rows say short")
    if done.failed:  # each was named once, as it was met
        log(f"{len(done.failed)} of the {done.found} file(s) could not be read and were "
            "skipped (named above; their rows hold the error)")
    if not classified:
        raise DataError(f"none of the {done.found} file(s) could be read")
    log(f"{classified} of the {done.found} file(s) classified")
    if done.failed and not (flags["allow_errors"] or flags["data_on_error"] == "skip"):
        log("exit status 1: some files could not be read (--allow_errors or "
            "--data_on_error=skip: exit 0)")
        return 1
    return 0


if __name__ == "__main__":
    cli.run_main(define_flags, main)
