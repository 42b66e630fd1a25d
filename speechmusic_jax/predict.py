"""Classify audio files with a trained run.

    python -m speechmusic_jax.predict --workdir=DIR [--segments] [--output=FILE.csv|.json]
        [--overwrite] PATH...

PATH is a file or a folder (searched recursively for audio). Without --segments, one decision per
file (mean of its window logits); with --segments, one row per window (start_s, end_s). An
existing --output file is replaced only with --overwrite, and only if this program wrote it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

from speechmusic_jax import cli


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        "workdir": flags.DEFINE_string("workdir", None, "Run folder holding a trained model."),
        "segments": flags.DEFINE_bool("segments", False, "One row per window instead of per "
                                      "file."),
        "output": flags.DEFINE_string("output", None, "Write rows to FILE.csv or FILE.json."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace an existing --output file "
                                       "that an earlier predict wrote."),
        "data_on_error": flags.DEFINE_enum("data_on_error", "error", ["error", "skip"],
                                           "Stop at an unreadable file, or skip it."),
    }


def render(rows: list[dict], path: str | None) -> str:
    if path and path.endswith(".json"):
        return json.dumps(rows, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import trained_run
    from speechmusic_jax.io_utils import atomic_write_text, check_output

    output = flags["output"]
    if not flags["workdir"]:
        raise cli.UsageError("--workdir is required")
    if not args:
        raise cli.UsageError("name at least one audio file or folder")
    if output and not output.endswith((".csv", ".json")):
        raise cli.UsageError("--output must end in .csv or .json")
    if output:  # before any work: a refused output costs nothing
        check_output(output, overwrite=flags["overwrite"], ours=trained_run.is_prediction_file)
    run = trained_run.load_run(flags["workdir"])
    rows = trained_run.predict_paths(run, args, windows=flags["segments"],
                                     on_error=flags["data_on_error"],
                                     log=lambda m: print(m, file=sys.stderr))
    text = render(rows, output)
    if output:
        atomic_write_text(output, text)
        print(f"{len(rows)} rows written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    cli.run_main(define_flags, main)
