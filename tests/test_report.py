"""The report command: docs/results.md's tables from tiny run folders and a benchmark JSON, written
only over a page of its own; and the package version that runs and exports record."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from audio_fixtures import make_folder_tree
from tiny_run import REPO, tiny_run

import speechmusic_jax
from speechmusic_jax import report, torch_compare
from speechmusic_jax.errors import WorkdirConflict
from speechmusic_jax.io_utils import read_json


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(run, tmp_path_factory):
    """The tiny run, evaluated on a labelled folder (its eval/ report), and a copy of it under
    another name with another model name in its records, standing for a second run of a zoo."""
    from speechmusic_jax import trained_run

    root = tmp_path_factory.mktemp("report_runs")
    first = root / "tiny_a"
    shutil.copytree(run, first)
    data = "folder:" + make_folder_tree(root / "labelled", per_class=2)
    trained_run.evaluate_source(trained_run.load_run(str(first)), data, log=lambda _: None)
    second = root / "tiny_b"
    shutil.copytree(first, second)
    shutil.rmtree(second / "eval")
    config = read_json(second / "config.json")
    config["model"]["preset"] = "other_preset"
    (second / "config.json").write_text(json.dumps(config))
    return str(first), str(second)


@pytest.fixture(scope="module")
def step_json(tmp_path_factory):
    from speechmusic_jax import benchmark
    from speechmusic_jax.config import load_experiment

    cfg = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    path = str(tmp_path_factory.mktemp("bench") / "step.json")
    benchmark.run("step", cfg, {"batch_sizes": [8], "steps": 3, "devices": None},
                  log=lambda _: None, output=path)
    return path


def _head_commit() -> str:
    return subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_report_writes_every_table_from_the_runs_records(runs, step_json, tmp_path):
    first, second = runs
    out = tmp_path / "docs" / "results.md"
    page = report.write_report([first, second], str(out), benchmarks=[step_json])
    assert out.read_text() == page + "\n" and page.startswith(report.MARKER + "\n")
    summary = read_json(os.path.join(first, "summary.json"))
    test = summary["test"]
    lo, hi = test["accuracy_ci95"]
    headline = f"| test clip accuracy (95% CI) | {test['accuracy']:.3f} ({lo:.3f}-{hi:.3f})"
    assert headline in page
    assert f"| trainable parameters | {summary['params_trainable']:,} |" in page
    assert f"{summary['step_time_ms']['median']:.1f} ms" in page
    # stamped with the run's own records: its commit, date and CPU
    assert f"commit `{_head_commit()[:7]}" in page
    assert summary["finished_at"].replace("T", " ").replace("+00:00", " UTC") in page
    assert f'"{summary["cpu_model"]}"' in page
    assert "Note: a smoke test" in page  # a tiny run says its numbers mean nothing
    # the zoo: one row per run, in order
    zoo = page.split("## Every run")[1].split("##")[0]
    assert zoo.index("`tiny`") < zoo.index("`other_preset`")
    # transfer: the first run's evaluate report; the second has none
    evals = os.listdir(os.path.join(first, "eval"))
    source = read_json(os.path.join(first, "eval", next(e for e in evals
                                                         if e.endswith(".json"))))["source"]
    transfer = page.split("## Transfer")[1].split("##")[0]
    assert f"| `{os.path.normpath(first)}` | `{source}` |" in transfer
    assert os.path.normpath(second) not in transfer
    # the benchmark's own figures
    bench = read_json(step_json)
    assert f"{bench['results'][0]['step_ms']['median']:.2f} ms" in page.split("## Benchmarks")[1]
    # and how to regenerate it, verbatim
    assert f"--runs={first},{second} --benchmarks={step_json} --output={out}" in page
    # a source can be shown by a name instead of its (local) spec
    named = report.write_report([first], str(tmp_path / "named.md"),
                                source_names=[f"{source}=labelled test clips"])
    assert f"| `{os.path.normpath(first)}` | labelled test clips |" in named
    assert f"`{source}`" not in named.split("## Transfer")[1]
    assert f"--source_names={source}=labelled test clips" in named
    with pytest.raises(report.ReportError, match="not SPEC=NAME"):
        report.write_report([first], str(tmp_path / "bad.md"), source_names=["no name"])


def test_report_reads_segment_bench_timeline_accuracy(runs, tmp_path):
    from speechmusic_jax import segment_bench
    from speechmusic_jax.io_utils import atomic_write_json

    first, _ = runs
    result = segment_bench.accuracy(first, "test", 0.5, 10.0, [0.5], 0, log=lambda _: None)
    path = tmp_path / "timeline.json"
    atomic_write_json(path, result)
    page = report.write_report([first], str(tmp_path / "r.md"), benchmarks=[str(path)])
    section = page.split("## Benchmarks and timelines")[1]
    shown = [r for r in result["results"] if r["smoothing"] in ("none", "hmm, penalty 4")]
    assert len(shown) == 2  # predict --segments' default smoothing, and none for reference
    for r in shown:
        assert (f"| 0.5 | {r['smoothing']} | {r['time_accuracy']:.4f} | "
                f"{r['within_tolerance']}/{r['true']} |") in section
    assert "penalty 0.5 |" not in section and f"commit `{_head_commit()[:7]}" in section
    other = tmp_path / "other.json"
    other.write_text('{"results": []}')
    with pytest.raises(report.ReportError, match="neither a benchmark"):
        report.write_report([first], str(tmp_path / "r.md"), benchmarks=[str(other)])


def test_report_replaces_its_own_page_and_never_another_file(runs, tmp_path):
    first, _ = runs
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    with pytest.raises(WorkdirConflict, match="not a file this program wrote"):
        report.write_report([first], str(mine))
    assert mine.read_text() == "my notes\n"
    page = tmp_path / "results.md"
    report.write_report([first], str(page))
    page.write_text(page.read_text().replace("| ROC-AUC |", "| edited |"))
    report.write_report([first], str(page))  # its own: replaced
    assert "| ROC-AUC |" in page.read_text() and "| edited |" not in page.read_text()
    with pytest.raises(report.ReportError, match="no summary.json"):
        report.write_report([str(tmp_path)], str(page))
    from speechmusic_jax.ship import ship_run

    model = tmp_path / "shipped"
    ship_run(first, str(model), train_command="tiny", command="test", log=lambda _: None)
    with pytest.raises(report.ReportError, match=re.escape(
            f"shipped model; name the run it was shipped from ({first})")):
        report.write_report([str(model)], str(page))


def test_report_puts_the_same_table_between_the_readme_markers_only(runs, tmp_path):
    first, _ = runs
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{report.README_BEGIN}\nold table\n"
                      f"{report.README_END}\nafter\n")
    page = report.write_report([first], str(tmp_path / "results.md"), readme=str(readme))
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("\nafter\n")
    block = text.split(report.README_BEGIN + "\n")[1].split("\n" + report.README_END)[0]
    assert "old table" not in block and block in page  # one table, two places
    no_markers = tmp_path / "OTHER.md"
    no_markers.write_text("# no markers\n")
    with pytest.raises(report.ReportError, match="must hold the lines"):
        report.write_report([first], str(tmp_path / "fresh.md"), readme=str(no_markers))
    assert no_markers.read_text() == "# no markers\n"
    assert not (tmp_path / "fresh.md").exists()  # nothing written when the README is refused


def test_report_command_line(runs, tmp_path):
    first, _ = runs
    out = tmp_path / "r.md"
    ok = subprocess.run([sys.executable, "-m", "speechmusic_jax.report", f"--runs={first}",
                         f"--output={out}"], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert out.read_text().startswith(report.MARKER)
    bad = subprocess.run([sys.executable, "-m", "speechmusic_jax.report",
                          f"--runs={tmp_path / 'nothing'}", f"--output={out}"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "no summary.json" in lines[0]


# ------------------------------------------------------------------------------- the version


def test_version_is_single_sourced_and_installed():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "speechmusic_jax.__version__"}
    assert speechmusic_jax.__version__ == importlib.metadata.version("speechmusic_jax")


def test_summary_and_export_record_the_version_and_commit(run, tmp_path):
    from speechmusic_jax import export, trained_run

    versions = read_json(os.path.join(run, "summary.json"))["versions"]
    assert versions["speechmusic_jax"] == speechmusic_jax.__version__
    assert versions["speechmusic_jax_commit"].removesuffix("-dirty") == _head_commit()
    blob, meta = export.export_run(trained_run.load_run(run), platforms=("cpu",))
    assert meta["speechmusic_jax"] == speechmusic_jax.__version__
    assert meta["speechmusic_jax_commit"] == versions["speechmusic_jax_commit"]
    path = tmp_path / "m.smj"
    path.write_bytes(blob)
    with zipfile.ZipFile(path) as z:
        assert json.loads(z.read(export.METADATA_MEMBER))["speechmusic_jax"] == \
            speechmusic_jax.__version__


def test_report_shows_a_comparison_from_its_results_json(runs, tmp_path):
    """--sweeps: a finished sweep's verdict, per-arm table and paired differences, stamped with
    the machine and commit of its trials; a folder that is not a sweep is refused."""
    from speechmusic_jax.tuning.results import SweepResult

    def rec(trial, arm, seed, val, test):
        return {"trial": trial, "workload": "", "arm": arm, "seed": seed, "point_index": 0,
                "status": "completed", "val_accuracy": val, "test_accuracy": test,
                "test_f1_macro": test, "steps_to_target": 10.0 + trial,
                "seconds_to_target": 1.0, "train_time_s": 2.0, "params_trainable": 100,
                "workdir": "/nonexistent"}

    # "fast" is better on validation and on every seed's test clips: 7 seeds let it be called
    records = [rec(2 * s, "fast", s, 0.9, 0.9) for s in range(7)]
    records += [rec(2 * s + 1, "slow", s, 0.7, 0.5 + 0.01 * s) for s in range(7)]
    folder = tmp_path / "sweep"
    SweepResult("demo", records, [], target=("val_accuracy", 0.8)).write(str(folder),
                                                                        plots=False)
    (folder / "trials" / "000").mkdir(parents=True)
    shutil.copy(os.path.join(runs[0], "summary.json"), folder / "trials" / "000")
    page = report.write_report([runs[0]], str(tmp_path / "results.md"), sweeps=[str(folder)])
    section = page[page.index("## Comparisons"):]
    verdict = read_json(folder / "results.json")["verdict"]
    assert f"**Verdict.** {verdict}" in section and "fast" in verdict
    assert "| fast (reference) | 7/7 | 0.900 ± 0.000 | 0.900 ± 0.000 |" in section
    summary = read_json(os.path.join(runs[0], "summary.json"))
    assert summary["versions"]["speechmusic_jax_commit"][:7] in section
    row = next(line for line in section.splitlines() if line.startswith("| slow − fast"))
    assert "-0.400 -0.390 -0.380 -0.370 -0.360 -0.350 -0.340" in row
    assert "--sweeps=" + str(folder) in page  # the command that regenerates it
    with pytest.raises(report.ReportError, match="no results.json"):
        report.write_report([runs[0]], str(tmp_path / "other.md"), sweeps=[runs[0]])


def test_report_tabulates_a_torch_comparison_row_by_row(runs, tmp_path):
    """A --compare=torch JSON (rows per framework and allocator) becomes one table row each,
    with its median over rounds, its ratio to ours under the same allocator, compile apart."""
    def row(side, allocator, train, ratio=None, default=False, compile_s=None):
        return {"side": side, "allocator": allocator, "default_allocator": default,
                "train_ms": {"median": train}, "infer_ms": {"median": train / 4},
                "train_ratio": None if ratio is None else {"median": ratio},
                "infer_ratio": None if ratio is None else {"median": ratio / 2},
                "compile_s": compile_s}
    bench = {"what": "compare", "preset": "m5", "host_memory": "keep", "cpu_model": "CPU X",
             "versions": {}, "results": [{"batch_size": 32, "rows": [
                 row("jax", "keep", 700.0, default=True, compile_s={"train": 3.3, "infer": 0.5}),
                 row("torch compiled", "keep", 1001.0, 1.43,
                     compile_s={"train": 30.5, "infer": 4.4})]}]}
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(bench))
    page = report.write_report([runs[0]], str(tmp_path / "r.md"), benchmarks=[str(path)])
    assert ("| 32 | JAX (ours) | keep* | ? | 700.00 | (ours) | - | 175.00 | (ours) | - | "
            "3.3 + 0.5 |") in page
    assert ("| 32 | PyTorch torch.compile | keep | ? | 1001.00 | 1.43 | - | 250.25 | 0.71 | - | "
            "30.5 + 4.4 |") in page
    assert torch_compare.DEFAULT_NOTE in page  # the printed table's own footnote


def _copy_run(src: str, dst, *, seed: int, accuracy: float, **fields) -> str:
    """A copy of run ``src`` as another seed (and other ``fields``, dotted) with its own test
    clip accuracy, standing for a run of that configuration."""
    shutil.copytree(src, dst)
    config = read_json(dst / "config.json")
    config["seed"] = seed
    for field, value in fields.items():
        *parents, leaf = field.split("__")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    (dst / "config.json").write_text(json.dumps(config))
    summary = read_json(dst / "summary.json")
    summary["test"]["accuracy"] = accuracy
    (dst / "summary.json").write_text(json.dumps(summary))
    return str(dst)


def _crossval(run: str, dst, *, seed: int, accuracy: float, **fields) -> str:
    """A finished cross-validation folder of ``run``'s config on another corpus."""
    config = read_json(os.path.join(run, "config.json"))
    config.update(seed=seed)
    config["data"].update(spec="folder:/elsewhere", folds=5, fold=0)
    config["train"].update(fields)
    (dst / "fold_0").mkdir(parents=True)
    (dst / "fold_0" / "config.json").write_text(json.dumps(config))
    (dst / "crossval.json").write_text(json.dumps(
        {"folds_k": 5, "folds_tested": 5, "accuracy_mean": accuracy, "folds": [{"fold": 0}]}))
    return str(dst)


def test_report_groups_seeds_of_one_configuration_with_its_crossvals(runs, tmp_path):
    """Runs differing only in seed form one row (mean ± sample std over seeds), a run with
    another front end its own row named by the field; a cross-validation joins the row of the
    config it shares (its corpus and folds apart); the figure is drawn beside the page and
    never over a file this command did not write."""
    from speechmusic_jax import config_groups

    first = runs[0]
    s1 = _copy_run(first, tmp_path / "s1", seed=1, accuracy=0.8)
    s2 = _copy_run(first, tmp_path / "s2", seed=2, accuracy=0.6)
    other = _copy_run(first, tmp_path / "logmel", seed=0, accuracy=0.5,
                      model__frontend="logmel")
    cvs = [_crossval(first, tmp_path / f"cv{s}", seed=s, accuracy=a)
           for s, a in ((0, 0.9), (1, 0.7))]
    tuned = _crossval(first, tmp_path / "cv_tuned", seed=0, accuracy=0.95, init_from="x")
    out = tmp_path / "docs" / "results.md"
    page = report.write_report([first, s1, s2, other], str(out), crossval=[*cvs, tuned])
    section = page[page.index("## By configuration"):].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3, section
    acc = read_json(os.path.join(first, "summary.json"))["test"]["accuracy"]
    mean = (acc + 0.8 + 0.6) / 3
    std = (sum((v - mean) ** 2 for v in (acc, 0.8, 0.6)) / 2) ** 0.5
    assert rows[0].startswith(f"| as `{os.path.normpath(first)}` | 0, 1, 2 | "
                              f"{mean:.3f} ± {std:.3f} (3) |")
    assert rows[0].endswith("| 0.800 ± 0.141 (2) |")  # the two CVs of the same config
    assert rows[1].startswith("| `model.frontend=logmel` | 0 | 0.500 (1) |")
    assert rows[1].endswith("| - |")
    assert rows[2].startswith("| `train.init_from=x` | 0 | - |")
    assert rows[2].endswith("| 0.950 (1) |")
    assert "grouped 5-fold CV on `folder:/elsewhere`" in section
    figure = tmp_path / "docs" / "results_configurations.png"
    assert config_groups.is_our_png(figure)
    assert "](results_configurations.png)" in section
    assert "--crossval=" + ",".join([*cvs, tuned]) in page
    # the figure is redrawn over its own file, never over another
    report.write_report([first, s1], str(out))
    figure.write_bytes(figure.read_bytes()[:8] + b"a user's png")
    with pytest.raises(WorkdirConflict):
        report.write_report([first, s1], str(out))
    # one run of each configuration and no crossval: no such section, no figure
    page = report.write_report([first, other], str(tmp_path / "single.md"))
    assert "## By configuration" not in page
    assert not (tmp_path / "single_configurations.png").exists()
    with pytest.raises(report.ReportError, match="no crossval.json"):
        report.write_report([first], str(tmp_path / "bad.md"), crossval=[first])


def test_configurations_ignore_seeds_and_fields_added_at_their_old_value():
    from speechmusic_jax import config_groups
    from speechmusic_jax.config import base_config, to_dict

    ref = to_dict(base_config())
    older = to_dict(base_config())
    older["seed"], older["init_seed"] = 3, 7
    del older["train"]["max_seconds"]  # a run made before the field existed
    older["data"]["cache"] = "memory"  # how it ran, not what it trained
    assert config_groups.differences(ref, older) == ()
    cv = to_dict(base_config())
    cv["data"].update(spec="manifest:x.csv", folds=5, fold=2)
    assert config_groups.differences(ref, cv, crossval=True) == ()
    assert config_groups.differences(ref, cv) == (("data.fold", 2), ("data.folds", 5),
                                                  ("data.spec", "manifest:x.csv"))
    # a run made before a field existed, against a reference that sets it: named at the value
    # it ran with, not as null
    del older["model"]["pcen_smooth_min"]
    assert config_groups.differences(ref, older) == ()
    ref["model"]["pcen_smooth_min"] = 0.02
    assert config_groups.differences(ref, older) == (("model.pcen_smooth_min", 0.0),)
