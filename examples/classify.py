"""Classify recordings with a trained run, from Python.

    python examples/classify.py --workdir=runs/default recording.wav [more.flac folder/ ...]

Prints one decision per file, the decision for the first file's waveform read into memory (any
sample rate, any number of channels), and that file's timeline: merged, smoothed segments.
"""

from __future__ import annotations

import argparse

import soundfile as sf

from speechmusic_jax.classifier import Classifier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify recordings with a trained run.")
    parser.add_argument("--workdir", default="runs/default", help="a trained run's folder")
    parser.add_argument("paths", nargs="+", help="audio files or folders")
    args = parser.parse_args(argv)

    clf = Classifier.load(args.workdir)
    print(f"classes {', '.join(clf.classes)}; {clf.window_seconds:g} s windows at "
          f"{clf.sample_rate} Hz")

    # 1. Files and folders: one row per file. A file that cannot be read gets a row with its
    #    error instead of stopping the others.
    rows = clf.predict_files(args.paths)
    for row in rows:
        if row["error"]:
            print(f"{row['path']}: not classified ({row['error']})")
        else:
            print(f"{row['path']}: {row['predicted']} (confidence {row['confidence']:.3f}, "
                  f"{row['duration_s']:.1f} s)")
    readable = [row["path"] for row in rows if not row["error"]]
    if not readable:
        return 1

    # 2. A waveform already in memory: (frames,) or (frames, channels), at its own rate.
    waveform, rate = sf.read(readable[0], dtype="float32")
    decision = clf.predict(waveform, rate)
    print(f"in memory: {decision['predicted']} "
          + ", ".join(f"p_{c} {decision[f'p_{c}']:.3f}" for c in clf.classes))

    # 3. The timeline of a recording, read in blocks (an hour costs what a minute costs).
    print("timeline:")
    for segment in clf.segments(readable[0]):
        print(f"  {segment['start_s']:8.2f} - {segment['end_s']:8.2f} s  "
              f"{segment['predicted']:<8} confidence {segment['confidence']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
