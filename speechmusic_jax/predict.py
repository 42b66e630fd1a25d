"""Classify audio files with a trained run.

    python -m speechmusic_jax.predict --workdir=DIR [--segments] [--output=FILE.csv|.json] PATH...

PATH is a file or a folder (searched recursively for audio). Without --segments, one decision per
file (mean of its window logits); with --segments, one row per window (start_s, end_s).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys

from absl import app, flags

from speechmusic_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding a trained model.")
_SEGMENTS = flags.DEFINE_bool("segments", False, "One row per window instead of per file.")
_OUTPUT = flags.DEFINE_string("output", None, "Write rows to FILE.csv or FILE.json.")
_ON_ERROR = flags.DEFINE_enum("data_on_error", "error", ["error", "skip"],
                              "Stop at an unreadable file, or skip it.")


def collect(paths: list[str]) -> list[str]:
    from speechmusic_jax.data import audio
    from speechmusic_jax.data.sources import DataError

    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if audio.is_audio_path(f)]
        elif os.path.exists(p):
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError(f"no audio files in {paths}")
    return [os.path.abspath(p) for p in out]


def render(rows: list[dict], path: str | None) -> str:
    if path and path.endswith(".json"):
        return json.dumps(rows, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if len(argv) < 2:
        raise app.UsageError("name at least one audio file or folder")
    if _OUTPUT.value and not _OUTPUT.value.endswith((".csv", ".json")):
        raise app.UsageError("--output must end in .csv or .json")
    cli.quiet_jax_logs()
    from speechmusic_jax import trained_run
    from speechmusic_jax.data import sources
    from speechmusic_jax.io_utils import atomic_write_text
    from speechmusic_jax.training.loop import ErrorCounter

    with cli.friendly_errors():
        run = trained_run.load_run(_WORKDIR.value)
        paths = collect(argv[1:])
        scanned, scan_errors = sources.scan_headers(
            [sources.AudioFile(p, 0, p) for p in paths], _ON_ERROR.value)
        errors = ErrorCounter(_ON_ERROR.value, lambda m: print(m, file=sys.stderr),
                              dict(scan_errors))
        pred = trained_run.classify(run, [f for f, _ in scanned], on_bad_file=errors)
        rows = (trained_run.segments(run, pred) if _SEGMENTS.value
                else trained_run.clip_rows(run, pred))
        text = render(rows, _OUTPUT.value)
        if _OUTPUT.value:
            atomic_write_text(_OUTPUT.value, text)
            print(f"{len(rows)} rows written to {_OUTPUT.value}", file=sys.stderr)
        else:
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    cli.quiet_jax_logs()
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
