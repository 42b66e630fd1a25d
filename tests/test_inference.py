"""evaluate and predict on a finished tiny run: they agree with what training reported."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from tiny_run import tiny_run

from speechmusic_jax import trained_run
from speechmusic_jax.data.sources import DataError
from speechmusic_jax.data.split import read_split_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", f"speechmusic_jax.{module}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_loaded_run_reproduces_the_test_predictions(run_dir):
    run = trained_run.load_run(run_dir)
    split = read_split_csv(os.path.join(run_dir, "split.csv"), run.classes)
    rows = trained_run.clip_rows(run, trained_run.classify(run, split["test"]))
    with open(os.path.join(run_dir, "test_predictions.csv")) as f:
        saved = {r["path"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(saved)
    for r in rows:
        assert r["predicted"] == saved[r["path"]]["predicted"] and "label" not in r
        assert r["p_music"] == pytest.approx(float(saved[r["path"]]["p_music"]), abs=1e-5)


def test_config_from_json_round_trips(run_dir):
    from speechmusic_jax.config import to_dict

    cfg = trained_run.config_from_json(os.path.join(run_dir, "config.json"))
    with open(os.path.join(run_dir, "config.json")) as f:
        assert to_dict(cfg) == json.load(f)


def test_config_from_json_gives_a_field_added_since_its_old_value(tmp_path, monkeypatch):
    """A config.json written before a field existed is rebuilt with the value that field had
    in effect (config_lib.ADDED_FIELDS), not today's default; one that names it keeps it."""
    from speechmusic_jax import config as config_lib

    saved = config_lib.to_dict(config_lib.base_config())
    del saved["model"]["pcen_smooth_min"]
    (tmp_path / "old.json").write_text(json.dumps(saved))
    monkeypatch.setitem(config_lib.ADDED_FIELDS, "model.pcen_smooth_min", 0.25)
    assert trained_run.config_from_json(str(tmp_path / "old.json")).model.pcen_smooth_min == 0.25
    saved["model"]["pcen_smooth_min"] = 0.125
    (tmp_path / "new.json").write_text(json.dumps(saved))
    assert trained_run.config_from_json(str(tmp_path / "new.json")).model.pcen_smooth_min == 0.125


def test_evaluate_on_the_test_split_reproduces_the_test_report(run_dir, tmp_path):
    """evaluate on held-out files (the run's test split, as a manifest): the same report as
    training's test, and no overlap warning."""
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    manifest = tmp_path / "test.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{f.path},{('speech', 'music')[f.label]}\n" for f in split["test"]))
    r = cli("evaluate", f"--workdir={run_dir}", f"--data=manifest:{manifest}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning" not in r.stdout + r.stderr
    name = trained_run.source_name(f"manifest:{manifest}")
    path = os.path.join(run_dir, "eval", f"{name}.json")
    with open(path) as f:
        report = json.load(f)
    with open(os.path.join(run_dir, "summary.json")) as f:
        test = json.load(f)["test"]
    assert report["n_files"] == len(split["test"]) == test["n_files"]
    assert report["confusion"] == test["confusion"]
    for key in ("accuracy", "roc_auc"):
        assert report[key] == pytest.approx(test[key]), key
    assert report["f1"]["macro"] == pytest.approx(test["f1"]["macro"])
    assert report["overlap_with_training"]["files"] == 0 and report["data_errors"] == {}


def test_evaluate_warns_when_the_data_overlaps_training(run_dir, tmp_path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    # Two training files by their own path, one validation file copied under another name.
    copy = tmp_path / "copy_of_val.wav"
    shutil.copyfile(split["val"][0].path, copy)
    rows = [(split["train"][0].path, "speech" if split["train"][0].label == 0 else "music"),
            (split["train"][1].path, "speech" if split["train"][1].label == 0 else "music"),
            (str(copy), "speech" if split["val"][0].label == 0 else "music"),
            *[(f.path, "speech" if f.label == 0 else "music") for f in split["test"]]]
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    run = trained_run.load_run(run_dir)
    logs = []
    report, _ = trained_run.evaluate_source(run, f"manifest:{manifest}", log=logs.append)
    overlap = report["overlap_with_training"]
    assert (overlap["files"], overlap["train"], overlap["val"]) == (3, 2, 1)
    assert any(m.startswith("warning: 3 of the") and "overstate" in m for m in logs)


def test_evaluate_records_every_data_error(run_dir, tmp_path):
    from audio_fixtures import make_folder_tree, write_bad, write_class_files

    root = make_folder_tree(tmp_path / "corpus", per_class=3)
    write_bad(os.path.join(root, "Speech"), "corrupt")  # unreadable header
    write_class_files(os.path.join(root, "noise"), "music", 2)  # a class the run does not know
    run = trained_run.load_run(run_dir)
    logs: list[str] = []
    report, path = trained_run.evaluate_source(run, f"folder:{root}", on_error="skip",
                                               log=logs.append)
    assert report["n_files"] == 6
    # A folder names no speakers, but evaluation splits nothing: no note about the split.
    assert logs and not [m for m in logs if "split across" in m], logs
    assert report["data_errors"] == {"unreadable": 1, "unknown_class": 2}
    with open(path) as f:
        assert json.load(f)["data_errors"] == report["data_errors"]


def test_evaluate_scores_a_source_with_only_some_of_the_models_classes(run_dir, tmp_path):
    # a three-class model on speech and music, or here a two-class one on speech alone: the
    # missing class is no error when scoring (it is when training), and the macro means are
    # over the classes the source has
    from audio_fixtures import write_class_files

    write_class_files(tmp_path / "only" / "speech", "speech", 3)
    run = trained_run.load_run(run_dir)
    report, _ = trained_run.evaluate_source(run, f"folder:{tmp_path / 'only'}",
                                            log=lambda _: None)
    assert report["n_files"] == 3 and report["support"] == {"speech": 3, "music": 0}
    assert report["recall"]["macro"] == report["recall"]["speech"]
    (tmp_path / "none" / "speech").mkdir(parents=True)
    with pytest.raises(DataError, match="no audio files of the classes"):
        trained_run.evaluate_source(run, f"folder:{tmp_path / 'none'}", log=lambda _: None)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_files_match_the_test_predictions_of_training(run_dir, tmp_path):
    """One row per file, streamed and batched across files: the same decisions and
    probabilities as training's test report; ``label`` is never a prediction."""
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    paths = [f.path for f in split["test"]]
    out = tmp_path / "pred.csv"
    r = cli("predict", f"--workdir={run_dir}", f"--output={out}", *paths)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "duration_s", "short", "predicted", "confidence",
                             "p_speech", "p_music", "error"]
    assert [row["path"] for row in rows] == paths
    saved = {row["path"]: row for row in read_csv(os.path.join(run_dir, "test_predictions.csv"))}
    for row in rows:
        assert row["predicted"] == saved[row["path"]]["predicted"] and row["error"] == ""
        assert float(row["p_music"]) == pytest.approx(float(saved[row["path"]]["p_music"]),
                                                      abs=1e-5)
        assert float(row["duration_s"]) == 2.0 and row["short"] == "False"
    assert f"predict: {len(paths)} file(s) to classify" in r.stderr


def test_predict_windows_and_segments(run_dir, tmp_path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    paths = [f.path for f in split["test"][:3]]
    columns = ["path", "start_s", "end_s", "short", "predicted", "confidence", "p_speech",
               "p_music", "error"]
    win = tmp_path / "windows.json"
    r = cli("predict", f"--workdir={run_dir}", "--windows", f"--output={win}", paths[0])
    assert r.returncode == 0, r.stderr[-2000:]
    with open(win) as f:
        windows = json.load(f)
    # 2 s clips, 1 s windows at the run's evaluation hop: two windows covering [0, 2].
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 1.0), (1.0, 2.0)]
    assert list(windows[0]) == columns
    assert all(w["predicted"] in ("speech", "music") and 0.5 <= w["confidence"] <= 1
               and w["error"] is None for w in windows)
    seg = tmp_path / "segments.csv"
    r = cli("predict", f"--workdir={run_dir}", "--segments", f"--output={seg}", *paths)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_csv(seg)
    assert list(rows[0]) == columns
    for path in paths:  # each file's segments tile it: from 0 to its end, without gaps
        mine = [row for row in rows if row["path"] == path]
        assert float(mine[0]["start_s"]) == 0.0 and float(mine[-1]["end_s"]) == 2.0
        assert all(a["end_s"] == b["start_s"] for a, b in zip(mine, mine[1:], strict=False))
        assert all(a["predicted"] != b["predicted"] for a, b in zip(mine, mine[1:],
                                                                    strict=False))
        for row in mine:
            p = float(row[f"p_{row['predicted']}"])
            assert float(row["confidence"]) == p and p >= 0.5


def test_predict_names_the_files_it_skips(run_dir, tmp_path):
    """Issue 14 item 8: a file that cannot be read gets a row with its error and a line on
    stderr; the count announced is the count of rows; the others are classified. Issue 29:
    each error is named once, and the exit status is 1 unless failures were allowed
    (--allow_errors, or --data_on_error=skip given explicitly)."""
    from audio_fixtures import write_bad, write_class_files, write_junk

    folder = tmp_path / "mixed"
    good = write_class_files(folder, "speech", 3, seconds=1.5)
    corrupt = write_bad(folder, "corrupt")
    m4a = write_bad(folder, "unsupported")
    write_junk(folder)  # README.txt, cover.jpg, .DS_Store: not audio, counted apart
    out = tmp_path / "rows.json"
    r = cli("predict", f"--workdir={run_dir}", f"--output={out}", str(folder))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "exit status 1: some files could not be read" in r.stderr
    with open(out) as f:
        rows = json.load(f)
    assert "predict: 5 file(s) to classify (3 non-audio file(s)" in r.stderr
    assert len(rows) == 5
    errors = {row["path"]: row["error"] for row in rows if row["error"]}
    assert set(errors) == {corrupt, m4a}
    assert errors[corrupt].startswith("unreadable:")
    assert errors[m4a].startswith("unsupported_format:")
    assert all(row["predicted"] is None and row["p_music"] is None for row in rows
               if row["error"])
    assert f"warning: skipping {corrupt}" in r.stderr and f"warning: skipping {m4a}" in r.stderr
    assert r.stderr.count("bad_corrupt.wav") == r.stderr.count(os.path.basename(m4a)) == 1
    assert "2 of the 5 file(s) could not be read" in r.stderr
    assert "3 of the 5 file(s) classified" in r.stderr
    for allowed in ("--allow_errors", "--data_on_error=skip"):
        r = cli("predict", f"--workdir={run_dir}", allowed, corrupt, good[0])
        assert r.returncode == 0 and "exit status 1" not in r.stderr, r.stderr[-2000:]
        assert r.stdout.count("bad_corrupt.wav") == 1 and r.stderr.count("bad_corrupt.wav") == 1
    stopped = cli("predict", f"--workdir={run_dir}", "--data_on_error=error", str(folder))
    lines = [ln for ln in stopped.stderr.splitlines() if ln.startswith("error")]
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert len(lines) == 1 and "bad_corrupt.wav" in lines[0], stopped.stderr
    none = cli("predict", f"--workdir={run_dir}", corrupt, str(tmp_path / "no_such.wav"))
    assert none.returncode == 2 and "none of the 2 file(s) could be read" in none.stderr


@pytest.mark.slow  # with the soak tests: the suite stays under 15 min
def test_predict_plot(run_dir, tmp_path):
    from speechmusic_jax.segments import is_plot_file

    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    plot = tmp_path / "timeline.png"
    r = cli("predict", f"--workdir={run_dir}", "--segments", f"--plot={plot}",
            split["test"][0].path, split["test"][1].path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert is_plot_file(str(plot)) and f"timelines drawn to {plot}" in r.stderr
    assert r.stdout.startswith("path,start_s,end_s,predicted")
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\n my own picture")
    r = cli("predict", f"--workdir={run_dir}", "--segments", f"--plot={mine}", "--overwrite",
            split["test"][0].path)
    assert r.returncode == 2 and "not a file this program wrote" in r.stderr
    assert mine.read_bytes().endswith(b"my own picture")
    for extra, needle in ((["--plot=t.png"], "add --segments or --windows"),
                          (["--segments", "--windows"], "exclude each other"),
                          (["--segments", "--plot=t.pdf"], "--plot must end in .png"),
                          (["--segments", "--smoothing=hmm", "--switch_penalty=-1"],
                           "switch_penalty")):
        r = cli("predict", f"--workdir={run_dir}", *extra, split["test"][0].path)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.splitlines()) == 1


def test_timeline_of_an_alternating_recording(run_dir, tmp_path):
    """Streaming, smoothing and merging end to end, with a stand-in model whose errors are
    known (zero-crossing rate: noise is "speech", a tone "music") on a 44.1 kHz stereo FLAC
    whose runs do not fall on the window grid."""
    import dataclasses

    import numpy as np
    import soundfile as sf
    from test_streaming import zcr_logits

    from speechmusic_jax import segments

    rate, rng = 44100, np.random.default_rng(0)
    lengths = [7.3, 10.4, 9.85, 12.1, 10.0, 8.6, 11.25]
    parts, truth, t = [], [], 0.0
    for k, seconds in enumerate(lengths):
        n = int(round(seconds * rate))
        if k % 2 == 0:
            x = rng.normal(0, 0.1, n)
        else:
            x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
        parts.append(x)
        truth.append((t, t + n / rate, k % 2))
        t += n / rate
    mono = np.concatenate(parts).astype(np.float32)
    path = str(tmp_path / "alternating.flac")
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1), rate, subtype="PCM_24")
    run = dataclasses.replace(trained_run.load_run(run_dir), predict=zcr_logits)
    done = trained_run.predict_paths(run, [path], rows="segments", log=lambda _: None)
    got = [(r["start_s"], r["end_s"], ("speech", "music").index(r["predicted"]))
           for r in done.rows]
    assert got[0][0] == 0 and got[-1][1] == pytest.approx(t, abs=1e-3)
    assert segments.time_accuracy(got, truth) > 0.97
    report = segments.boundary_report(got, truth, tolerance_s=0.5)
    assert report["within_tolerance"] == report["true"] == 6 and report["spurious"] == 0


@pytest.mark.slow  # suite time (the suite stays under 15 min); run with -m slow
def test_predict_output_is_never_written_over_a_user_file(run_dir, tmp_path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    out = tmp_path / "rows.csv"
    out.write_text("my,own,table\n")
    for extra in ([], ["--overwrite"]):
        r = cli("predict", f"--workdir={run_dir}", f"--output={out}", *extra, split["test"][0].path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert out.read_text() == "my,own,table\n"
    out.unlink()
    first = cli("predict", f"--workdir={run_dir}", f"--output={out}", split["test"][0].path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = cli("predict", f"--workdir={run_dir}", f"--output={out}", split["test"][1].path)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    forced = cli("predict", f"--workdir={run_dir}", f"--output={out}", "--overwrite",
                 split["test"][1].path)
    assert forced.returncode == 0 and split["test"][1].path in out.read_text()


def test_predict_and_evaluate_fail_clearly_without_a_run(tmp_path):
    r = cli("predict", f"--workdir={tmp_path}", "x.wav")
    assert r.returncode == 2 and "holds no run" in r.stderr and "Traceback" not in r.stderr
    r = cli("evaluate", f"--workdir={tmp_path}", "--data=synthetic")
    assert r.returncode == 2 and "holds no run" in r.stderr


def test_evaluate_breaks_the_accuracy_down_by_manifest_columns(run_dir, tmp_path):
    """A manifest of held-out clips and other audio with extra columns: a table per column of a
    few values (not the snr_db that differs on every file), the same numbers in the JSON, and
    --by for any column (a numeric one of many values in quantile bins)."""
    from audio_fixtures import write_class_files, write_manifest

    from speechmusic_jax import cli as cli_lib
    from speechmusic_jax import evaluate

    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    rows = [{"path": f.path, "label": ("speech", "music")[f.label],
             "source_package": "built_in"} for f in split["test"]]
    for kind in ("speech", "music"):
        rows += [{"path": p, "label": kind, "source_package": "fixture"}
                 for p in write_class_files(tmp_path / kind, kind, 3, nested=False)]
    for i, row in enumerate(rows):
        row["snr_db"] = f"{2.5 * i:g}"
    manifest = write_manifest(tmp_path / "real.csv", rows)
    r = cli("evaluate", f"--workdir={run_dir}", f"--data=manifest:{manifest}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "== by source_package (2 values, worst first" in r.stdout and "by snr_db" not in r.stdout
    assert "breakdown by source_package (the default; also there: --by=snr_db)" in r.stdout
    with open(os.path.join(run_dir, "eval", f"{trained_run.source_name(f'manifest:{manifest}')}"
                                            ".json")) as f:
        report = json.load(f)
    by = report["by"]["source_package"]
    assert list(report["by"]) == ["source_package"]
    assert sorted(row["value"] for row in by) == ["built_in", "fixture"]
    assert [row["n"] for row in by if row["value"] == "fixture"] == [6]
    assert sum(row["n"] for row in by) == report["n_files"] == len(rows)
    assert sum(row["n_windows"] for row in by) == report["window"]["n_windows"]
    right = sum(round(row["accuracy"] * row["n"]) for row in by)
    assert right == round(report["accuracy"] * report["n_files"])
    assert by[0]["accuracy"] <= by[1]["accuracy"]

    run = trained_run.load_run(run_dir)
    report, _ = trained_run.evaluate_source(run, f"manifest:{manifest}", log=lambda _: None,
                                            by=["SNR_DB"])
    bins = report["by"]["snr_db"]
    assert len(bins) == 4 and sum(row["n"] for row in bins) == len(rows)
    assert sorted(row["range"][0] for row in bins)[0] == 0.0
    flags = {"workdir": run_dir, "data": f"manifest:{manifest}", "data_on_error": "error",
             "weights": "best", "by": ["speaker"]}
    with pytest.raises(cli_lib.UsageError, match="--by: no column 'speaker' in manifest:.*; "
                                                 "available: group, source_package, snr_db"):
        evaluate.main(flags, [])


def test_short_inputs_are_flagged_and_low_confidence_is_uncertain(run_dir, tmp_path):
    """Issue 29 part 5: a 0.05 s white-noise WAV is padded to a window as before, but its row
    says ``short``; below --min_confidence a file, window or segment is ``uncertain``, never
    forced into a class (and neighbouring uncertain segments merge)."""
    import numpy as np
    from audio_fixtures import signal, write

    noise = write(tmp_path / "noise.wav", 0.3 * np.random.default_rng(0).standard_normal(800),
                  16000, "PCM_16")
    clip = write(tmp_path / "clip.flac", signal("music", 2.5, 22050, 2, seed=3), 22050,
                 "PCM_16")
    run = trained_run.load_run(run_dir)

    def rows(kind, p=None):
        return trained_run.predict_paths(run, [noise, clip], rows=kind, log=lambda _: None,
                                         min_confidence=p).rows

    plain = rows("files")
    assert [r["short"] for r in plain] == [True, False] and plain[0]["duration_s"] == 0.05
    assert all(r["predicted"] in run.classes for r in plain)
    p = sum(r["confidence"] for r in plain) / 2  # between the two files' confidences
    assert plain[0]["confidence"] != plain[1]["confidence"]
    for kind in ("files", "windows", "segments"):
        for threshold in (0.0, p, 1.0):
            got = rows(kind, threshold)
            assert all((r["predicted"] == "uncertain") == (r["confidence"] < threshold)
                       and r["predicted"] in (*run.classes, "uncertain") for r in got), got
            assert {r["short"] for r in got if r["path"] == noise} == {True}
            if kind == "segments":  # uncertain neighbours merge; the timeline still tiles
                for path in (noise, clip):
                    mine = [r for r in got if r["path"] == path]
                    assert all(a["predicted"] != b["predicted"] and a["end_s"] == b["start_s"]
                               for a, b in zip(mine, mine[1:], strict=False))
    files = rows("files", p)
    assert sum(r["predicted"] == "uncertain" for r in files) == 1
    with pytest.raises(ValueError, match="min_confidence must be a probability"):
        rows("files", 1.5)
    out = tmp_path / "rows.json"
    r = cli("predict", f"--workdir={run_dir}", f"--min_confidence={p}", f"--output={out}",
            noise, clip)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "note: 1 file(s) shorter than one window (1 s) were padded" in r.stderr
    with open(out) as f:
        assert json.load(f) == files
    r = cli("predict", f"--workdir={run_dir}", "--min_confidence=1.5", noise)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "--min_confidence must be a probability in [0, 1], got 1.5" in r.stderr


# ---- evaluate: per-file predictions, --output, names that cannot collide -----------------------

def _test_manifest(run_dir, path):
    split = read_split_csv(os.path.join(run_dir, "split.csv"), ("speech", "music"))
    path.write_text("path,label\n" + "".join(
        f"{f.path},{('speech', 'music')[f.label]}\n" for f in split["test"]))
    return path


def test_evaluate_lists_every_file_and_says_how_many_were_wrong(run_dir, tmp_path):
    manifest = _test_manifest(run_dir, tmp_path / "test.csv")
    output = tmp_path / "out" / "report.json"
    r = cli("evaluate", f"--workdir={run_dir}", f"--data=manifest:{manifest}",
            f"--output={output}")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(output.read_text())
    listed = tmp_path / "out" / "report.predictions.csv"
    assert report["predictions_file"] == "report.predictions.csv"
    assert (f"{report['wrong']} of {report['n_files']} files wrong; every file's prediction "
            f"(column correct) in {listed}") in r.stdout
    assert not os.path.exists(os.path.join(
        run_dir, "eval", f"{trained_run.source_name(f'manifest:{manifest}')}.json"))
    rows = read_csv(listed)
    assert list(rows[0]) == ["path", "label", "predicted", "confidence", "p_speech", "p_music",
                             "correct"]
    assert len(rows) == report["n_files"]
    assert sum(row["correct"] == "0" for row in rows) == report["wrong"]
    assert report["wrong"] == report["n_files"] - round(report["accuracy"] * report["n_files"])
    saved = {row["path"]: row for row in read_csv(os.path.join(run_dir, "test_predictions.csv"))}
    for row in rows:  # the weights training tested with: the same answers as its test
        assert row["correct"] == str(int(row["predicted"] == row["label"]))
        assert float(row["confidence"]) == max(float(row["p_speech"]), float(row["p_music"]))
        assert row["predicted"] == saved[row["path"]]["predicted"]
        assert float(row["p_music"]) == pytest.approx(float(saved[row["path"]]["p_music"]),
                                                      abs=1e-5)


def test_evaluate_output_replaces_only_its_own_report(run_dir, tmp_path):
    from speechmusic_jax.errors import WorkdirConflict

    manifest = _test_manifest(run_dir, tmp_path / "test.csv")
    spec = f"manifest:{manifest}"
    run = trained_run.load_run(run_dir)
    quiet = lambda _: None  # noqa: E731
    mine = tmp_path / "report.json"
    trained_run.evaluate_source(run, spec, log=quiet, output=str(mine))
    assert (tmp_path / "report.predictions.csv").exists()
    with pytest.raises(WorkdirConflict, match="exists; pass --overwrite"):
        trained_run.evaluate_source(run, spec, log=quiet, output=str(mine))
    trained_run.evaluate_source(run, spec, log=quiet, output=str(mine), overwrite=True)
    users = tmp_path / "users.json"
    users.write_text('{"accuracy": 0.5}')
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "theirs.predictions.csv").write_text("my,own,table\n")
    (tmp_path / "theirs.json").write_text(mine.read_text())  # a report of ours, but ...
    for target, match in ((users, "not a file this program wrote"),
                          (tmp_path / "folder.json", "is a folder"),
                          (tmp_path / "theirs.json", "predictions file.*not a file this")):
        with pytest.raises(WorkdirConflict, match=match):
            trained_run.evaluate_source(run, spec, log=quiet, output=str(target),
                                        overwrite=True)
    assert users.read_text() == '{"accuracy": 0.5}'
    assert (tmp_path / "theirs.predictions.csv").read_text() == "my,own,table\n"
    assert os.listdir(tmp_path / "folder.json") == []
    r = cli("evaluate", f"--workdir={run_dir}", f"--data={spec}", f"--output={tmp_path}/r.csv")
    assert r.returncode == 2 and "--output must end in .json" in r.stderr


def test_eval_reports_of_sources_with_alike_names_do_not_collide(run_dir, tmp_path):
    from audio_fixtures import write_class_files

    specs = []
    for folder in (tmp_path / "a" / "b", tmp_path / "a_b"):
        for kind in ("speech", "music"):
            write_class_files(folder / kind, kind, 2, nested=False, seed=len(specs))
        specs.append(f"folder:{folder}")
    names = [trained_run.source_name(s) for s in specs]
    assert names[0] != names[1]
    assert names[0].rsplit("-", 1)[0] == names[1].rsplit("-", 1)[0]  # alike to read ...
    assert names[0].rsplit("-", 1)[0].endswith("_a_b")  # ... and readable
    assert trained_run.source_name(specs[0]) == names[0]  # the same source, the same name
    run = trained_run.load_run(run_dir)
    paths = [trained_run.evaluate_source(run, s, log=lambda _: None)[1] for s in specs]
    assert paths[0] != paths[1]
    for spec, path in zip(specs, paths, strict=True):
        with open(path) as f:
            assert json.load(f)["source"] == spec
        assert os.path.exists(path[:-len(".json")] + ".predictions.csv")
