"""Measure timelines: how right they are, and how fast and lean ``predict --segments`` runs.

    python -m speechmusic_jax.segment_bench --workdir=DIR --what=accuracy [--split=val|test]
        [--minutes=10] [--hops=0.5,1,2] [--output=FILE.json]
    python -m speechmusic_jax.segment_bench --workdir=DIR --what=speed [--output=FILE.json]

``accuracy`` builds a recording that alternates runs of ``--run_seconds`` (30 s) of the two
classes, each run made of held-back clips of one class (the run's ``--split`` files from its
``split.csv``: ``val`` to choose settings, ``test`` to report). The first run has a random length
and the others last 30 s +- 1 s, so that the true changes fall at every phase of the window
grid. For every hop and smoothing setting it reports the fraction of time labelled right and how
far each true change of label is from the nearest predicted one, and how many predicted changes
are more than 1 s from every true one (a misplaced change counts there too).

``speed`` measures, with the run's model: ``predict --segments`` on generated 10-minute and
1-hour recordings, end to end in a fresh process (start-up included), with the peak RSS of that
process (flat memory: the two should be about equal); classifying 100 files of 10 s in one
process after start-up; and start-up itself (imports, restore, compile) in a fresh process.
Every timing records how busy the rest of the machine was (``other_cores``) and is repeated
(up to ``--tries`` times) while that is above 0.3 cores.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from speechmusic_jax import cli
from speechmusic_jax import host_memory as host_memory_lib

QUIET_CORES = 0.3


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        "workdir": flags.DEFINE_string("workdir", None, "Run folder holding a trained model."),
        "what": flags.DEFINE_enum("what", "accuracy", ["accuracy", "speed"], "What to measure."),
        "split": flags.DEFINE_enum("split", "test", ["train", "val", "test"],
                                   "accuracy: the split.csv files to build the recording from."),
        "minutes": flags.DEFINE_float("minutes", 10.0, "accuracy: length of the recording."),
        "run_seconds": flags.DEFINE_float("run_seconds", 30.0, "Length of each run of one "
                                          "class."),
        "hops": flags.DEFINE_list("hops", ["0.25", "0.5", "1"], "accuracy: hops to try (seconds)."),
        "seed": flags.DEFINE_integer("seed", 0, "Seed of the clip order and first run."),
        "tries": flags.DEFINE_integer("tries", 3, "speed: attempts per timing on a busy "
                                      "machine."),
        "output": flags.DEFINE_string("output", None, "Also write the figures to FILE.json."),
    }


# --------------------------------------------------------------------------------------------
# Alternating recordings


def clips_by_class(workdir: str, split: str, classes: tuple[str, ...], sample_rate: int
                   ) -> list[list[np.ndarray]]:
    """The decoded clips of ``split`` in the run's split.csv, per class."""
    from speechmusic_jax.data import audio
    from speechmusic_jax.data.split import read_split_csv

    files = read_split_csv(os.path.join(workdir, "split.csv"), classes)[split]
    out: list[list[np.ndarray]] = [[] for _ in classes]
    for f in files:
        out[f.label].append(audio.load(f.path, sample_rate))
    for name, clips in zip(classes, out, strict=True):
        if not clips:
            raise ValueError(f"no {name} clips in the {split} split of {workdir}")
    return out


def write_alternating(path: str, clips: list[list[np.ndarray]], sample_rate: int,
                      seconds: float, run_seconds: float = 30.0, seed: int = 0,
                      jitter_seconds: float = 1.0) -> list[tuple[float, float, int]]:
    """Write a WAV (16-bit) of ``seconds`` alternating runs of the classes of ``clips`` (each
    run: that class's clips in a shuffled, repeating order, the last one cut). The first run's
    length is drawn in [0.2, 1] * run_seconds, the others in run_seconds +- jitter_seconds, so
    that the changes of class fall at every phase of the window grid. Written run by run (flat
    memory). Returns the truth as (start_s, end_s, label) runs."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    order = [list(rng.permutation(len(c))) for c in clips]
    cursor = [0] * len(clips)
    truth = []
    total = int(round(seconds * sample_rate))
    first = int(round(rng.uniform(0.2, 1.0) * run_seconds * sample_rate))
    label = int(rng.integers(len(clips)))
    pos = 0
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        while pos < total:
            jitter = rng.uniform(-jitter_seconds, jitter_seconds)
            length = min(first if pos == 0 else int(round((run_seconds + jitter) * sample_rate)),
                         total - pos)
            parts, got = [], 0
            while got < length:
                k = order[label][cursor[label] % len(order[label])]
                cursor[label] += 1
                piece = clips[label][k][: length - got]
                parts.append(piece)
                got += piece.size
            f.write(np.concatenate(parts))
            truth.append((pos / sample_rate, (pos + length) / sample_rate, label))
            pos += length
            label = (label + 1) % len(clips)
    return truth


def smoothing_grid():
    from speechmusic_jax.segments import Smoothing

    return ([Smoothing("none")]
            + [Smoothing("median", median_seconds=s) for s in (2.0, 3.0, 5.0, 9.0)]
            + [Smoothing("hmm", switch_penalty=p) for p in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)])


def describe(smoothing) -> str:
    if smoothing.method == "hmm":
        return f"hmm, penalty {smoothing.switch_penalty:g}"
    if smoothing.method == "median":
        return f"median {smoothing.median_seconds:g} s"
    return "none"


def accuracy(workdir: str, split: str, minutes: float, run_seconds: float,
             hops: list[float], seed: int, log=print) -> dict:
    from speechmusic_jax import segments, trained_run

    run = trained_run.load_run(workdir)
    sr = run.loader.sample_rate
    clips = clips_by_class(workdir, split, run.classes, sr)
    out: dict[str, Any] = {"workdir": workdir, "split": split, "minutes": minutes,
                           "run_seconds": run_seconds, "clips": [len(c) for c in clips],
                           "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "alternating.wav")
        truth = write_alternating(path, clips, sr, minutes * 60, run_seconds, seed)
        out["true_changes"] = len(truth) - 1
        log(f"{minutes:g} min alternating {run_seconds:g} s runs of {split} clips "
            f"({', '.join(f'{len(c)} {n}' for c, n in zip(clips, run.classes, strict=True))}), "
            f"{len(truth) - 1} changes of class")
        log(f"{'hop':>5}  {'smoothing':<18} {'time right':>10}  {'within 1 s':>10}  "
            f"{'median':>7} {'max':>7}  {'spurious':>8}")
        for hop_s in hops:
            (result,) = trained_run.stream_files(run, [path], hop_seconds=hop_s,
                                                 on_error="error", log=log)
            hop = trained_run.windowing(run, hop_s).hop
            for smoothing in smoothing_grid():
                got = trained_run.timeline(run, result, hop, smoothing)
                b = segments.boundary_report(got, truth, 1.0)
                row = {"hop_s": hop_s, "smoothing": describe(smoothing),
                       "time_accuracy": segments.time_accuracy(got, truth), **b}
                out["results"].append(row)
                log(f"{hop_s:>5g}  {row['smoothing']:<18} {row['time_accuracy']:>10.4f}  "
                    f"{b['within_tolerance']:>4}/{b['true']:<5}  {b['median_error_s']:>7.2f} "
                    f"{b['max_error_s']:>7.2f}  {b['spurious']:>8}")
    return out


# --------------------------------------------------------------------------------------------
# Speed and memory


def _busy_seconds() -> float | None:
    from speechmusic_jax import timing

    return timing._busy_seconds()


def timed_process(command: list[str]) -> dict:
    """Run ``command``; wall seconds, its peak RSS and how busy the rest of the machine was."""
    busy0, own0, t0 = _busy_seconds(), time.process_time(), time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy1, own = _busy_seconds(), time.process_time() - own0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed ({proc.returncode}): {err[-2000:]}")
    child_cpu = usage.ru_utime + usage.ru_stime
    other = (None if busy0 is None or busy1 is None
             else max(0.0, (busy1 - busy0 - own - child_cpu) / wall))
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "cpu_s": child_cpu,
            "other_cores": other, "stderr_tail": err.strip().splitlines()[-1:]}


def quiet(measure, tries: int, log=print) -> dict:
    """``measure()`` until the rest of the machine used under QUIET_CORES cores meanwhile."""
    best = None
    for attempt in range(tries):
        got = measure()
        got["attempt"] = attempt + 1
        if got["other_cores"] is None or got["other_cores"] < QUIET_CORES:
            return got
        log(f"  busy machine ({got['other_cores']:.2f} other cores): measuring again")
        best = got if best is None or got["other_cores"] < best["other_cores"] else best
        time.sleep(5)
    best["busy"] = True
    return best


STARTUP = """
import time, sys
from speechmusic_jax import host_memory
host_memory.apply(sys.argv[2])
t0 = time.perf_counter()
import numpy as np
from speechmusic_jax.classifier import Classifier
t1 = time.perf_counter()
clf = Classifier.load(sys.argv[1])
t2 = time.perf_counter()
clf.window_logits(np.zeros((1, clf.run.loader.segment), np.float32))
t3 = time.perf_counter()
print(f"imports {t1 - t0:.3f} restore {t2 - t1:.3f} compile {t3 - t2:.3f}", file=sys.stderr)
"""


def speed(workdir: str, run_seconds: float, seed: int, tries: int, log=print,
          host_memory: str = "release") -> dict:
    """``host_memory``: the allocator policy in effect here (``host_memory.apply``'s answer);
    the ``predict`` processes it times run under the same one."""
    import soundfile as sf

    from speechmusic_jax import timing, trained_run
    from speechmusic_jax.classifier import Classifier

    run = trained_run.load_run(workdir)
    sr = run.loader.sample_rate
    clips = clips_by_class(workdir, "test", run.classes, sr)
    out: dict[str, Any] = {"workdir": workdir, "cpu": cpu_model(), "cores": os.cpu_count(),
                           "versions": timing.versions(), "host_memory": host_memory}
    policy = host_memory_lib.flag_for(host_memory)
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (10, 60):
            path = os.path.join(tmp, f"alternating_{minutes}min.wav")
            write_alternating(path, clips, sr, minutes * 60, run_seconds, seed)
            csv_path = os.path.join(tmp, "segments.csv")
            command = [sys.executable, "-m", "speechmusic_jax.predict", f"--workdir={workdir}",
                       "--segments", f"--output={csv_path}", "--overwrite",
                       f"--host_memory={policy}", path]

            got = quiet(lambda command=command: timed_process(command), tries, log)
            got["realtime_factor"] = minutes * 60 / got["wall_s"]
            out[f"segments_{minutes}min"] = got
            log(f"predict --segments, {minutes} min recording, end to end: "
                f"{got['wall_s']:.2f} s ({got['realtime_factor']:.0f}x real time), peak RSS "
                f"{got['peak_rss_bytes'] / 2**20:.0f} MiB, other load {got['other_cores']:.2f}")
            os.unlink(path)
        startup_command = [sys.executable, "-c", STARTUP, workdir, policy]
        startup = quiet(lambda: timed_process(startup_command), tries, log)
        out["startup"] = startup
        log(f"start-up in a fresh process (interpreter, imports, restore, compile): "
            f"{startup['wall_s']:.2f} s ({' '.join(startup['stderr_tail'])}), other load "
            f"{startup['other_cores']:.2f}")
        files = []
        rng = np.random.default_rng(seed)
        for i in range(100):
            label = i % len(clips)
            x = np.concatenate([clips[label][k] for k in rng.permutation(len(clips[label]))])
            while x.size < 10 * sr:
                x = np.concatenate([x, x])
            files.append(os.path.join(tmp, f"file_{i:03d}.wav"))
            sf.write(files[-1], x[: 10 * sr], sr, subtype="PCM_16")
        clf = Classifier.load(workdir)
        clf.predict_files(files[:1])  # compile, warm the reader

        def many() -> dict:
            with timing.OtherLoad() as load:
                t0 = time.perf_counter()
                rows = clf.predict_files(files)
                wall = time.perf_counter() - t0
            assert len(rows) == 100 and not any(r["error"] for r in rows)
            right = sum(r["predicted"] == run.classes[i % len(clips)] for i, r in
                        enumerate(rows))
            return {"wall_s": wall, "other_cores": load.cores, "right": right}

        got = quiet(many, tries, log)
        got["realtime_factor"] = 1000.0 / got["wall_s"]
        out["files_100x10s"] = got
        log(f"100 files of 10 s after start-up: {got['wall_s']:.2f} s "
            f"({got['realtime_factor']:.0f}x real time), other load {got['other_cores']:.2f}")
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax.io_utils import atomic_write_json, check_output

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    if not flags["workdir"]:
        raise cli.UsageError("--workdir is required")
    workdir = os.path.abspath(flags["workdir"])
    if flags["output"]:
        check_output(flags["output"], overwrite=True, ours=_is_report)
    if flags["what"] == "accuracy":
        try:
            hops = [float(h) for h in flags["hops"]]
        except ValueError:
            raise cli.UsageError(f"--hops: numbers please, got {flags['hops']}") from None
        report = accuracy(workdir, flags["split"], flags["minutes"], flags["run_seconds"], hops,
                          flags["seed"])
    else:
        report = speed(workdir, flags["run_seconds"], flags["seed"], flags["tries"],
                       host_memory=flags.get("host_memory", "release"))
        cli.log(f"host memory (--host_memory): {report['host_memory']}")
    if flags["output"]:
        atomic_write_json(flags["output"], report)
    return 0


def _is_report(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    return isinstance(report, dict) and "workdir" in report and (
        "results" in report or "startup" in report)


if __name__ == "__main__":
    cli.run_main(define_flags, main)
