"""The shipped model: `ship` packages a finished run, the name `pretrained` resolves to it, and
every command that reads a run folder reads it (on a tiny run shipped into a temporary folder);
and the model shipped in the package itself, once there is one."""

import hashlib
import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from audio_fixtures import make_folder_tree, signal, write
from tiny_run import REPO, tiny_run

from speechmusic_jax import config as config_lib
from speechmusic_jax import export, shipped, trained_run
from speechmusic_jax.classifier import Classifier
from speechmusic_jax.errors import ConfigError, RunNotFound, WorkdirConflict
from speechmusic_jax.io_utils import read_json
from speechmusic_jax.ship import ship_run
from speechmusic_jax.training import pretrained

TRAIN_COMMAND = "python -c 'loop.fit(tiny)'"


def _ship(run, output, **kw):
    return ship_run(run, str(output), train_command=TRAIN_COMMAND, command="test_shipped",
                    log=lambda _: None, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return "folder:" + make_folder_tree(tmp_path_factory.mktemp("labelled"), per_class=3)


@pytest.fixture(scope="module")
def models(run, data, tmp_path_factory):
    """A models folder holding a shipped model of the tiny run, scored on ``data``."""
    root = tmp_path_factory.mktemp("models")
    _ship(run, root / shipped.NAME, scores=[data])
    return str(root / shipped.NAME)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recording")
    return write(folder / "talk.wav", signal("speech", 3.3, 16000, 1, seed=5), 16000, "PCM_16")


def cmd(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------------------ the folder


def test_shipped_folder_holds_the_tested_weights_config_and_provenance(run, data, models):
    assert set(os.listdir(models)) == shipped.ENTRIES
    summary = read_json(os.path.join(run, "summary.json"))
    prov = shipped.read_provenance(models)
    assert prov["format"] == shipped.FORMAT and shipped.is_shipped_model(models)
    # the config, exactly as the run wrote it, in both files
    assert prov["config"] == read_json(os.path.join(run, "config.json"))
    assert read_json(os.path.join(models, "config.json")) == prov["config"]
    assert prov["run"]["epoch"] == summary["tested_epoch"]
    assert prov["run"]["checkpoint"] == config_lib.tested_checkpoint(
        trained_run.config_from_json(os.path.join(run, "config.json")))
    assert prov["scores"]["test"] == summary["test"]
    assert prov["scores"][data]["n_files"] == 6
    assert prov["train_command"] == TRAIN_COMMAND and prov["ship_command"] == "test_shipped"
    assert prov["params_total"] == summary["params_total"]
    with open(os.path.join(models, shipped.WEIGHTS), "rb") as f:
        blob = f.read()
    assert prov["weights_sha256"] == hashlib.sha256(blob).hexdigest()
    # parameters and batch-norm statistics only: no optimizer state, smaller than a checkpoint
    with np.load(os.path.join(models, shipped.WEIGHTS)) as z:
        names = list(z.files)
        n_values = sum(z[n].size for n in names)
    assert names and all(n.split("/")[0] in ("params", "model_state") for n in names)
    assert n_values == summary["params_total"]  # parameters and statistics, nothing else
    assert len(blob) < summary["checkpoint_bytes"]


def test_shipped_weights_are_the_runs_tested_weights(run, models):
    ours = trained_run.run_weights("pretrained", models_dir=models)
    theirs = trained_run.run_weights(run)
    import jax

    a = jax.tree.leaves((ours.params, ours.model_state))
    b = jax.tree.leaves((theirs.params, theirs.model_state))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert ours.epoch == theirs.epoch and ours.checkpoint == theirs.checkpoint


def test_package_data_carries_the_shipped_files():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["speechmusic_jax"]
    assert set(package_data) >= {f"{shipped.NAME}/{name}" for name in shipped.ENTRIES}
    assert os.path.join(REPO, "speechmusic_jax", shipped.NAME) == shipped.PACKAGE_DIR


# ------------------------------------------------------------------------------ the name


def test_the_name_resolves_to_the_models_folder_and_nothing_else_is_renamed(models, tmp_path):
    assert shipped.resolve("pretrained", models_dir=models) == models
    assert shipped.resolve("runs/default", models_dir=models) == "runs/default"
    assert shipped.resolve("./pretrained", models_dir=models) == "./pretrained"
    with pytest.raises(RunNotFound) as e:
        shipped.resolve("pretrained", models_dir=str(tmp_path))
    message = str(e.value)
    assert "no shipped model" in message and "./run.sh ship" in message and "\n" not in message


def test_missing_model_fails_in_one_line_everywhere(tmp_path):
    empty = str(tmp_path)
    with pytest.raises(RunNotFound, match="no shipped model"):
        Classifier.load("pretrained", models_dir=empty)
    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    cfg.train.init_from = "pretrained"
    with pytest.raises(ConfigError, match=r"^train.init_from: no shipped model"):
        pretrained.check(cfg, models_dir=empty)


@pytest.mark.skipif(shipped.is_shipped_model(shipped.PACKAGE_DIR),
                    reason="a model is shipped in the package; the missing case is tested "
                           "through models_dir")
@pytest.mark.parametrize("args", [
    ["speechmusic_jax.predict", "--model=pretrained", "a.wav"],
    ["speechmusic_jax.evaluate", "--model=pretrained", "--data=synthetic"],
    ["speechmusic_jax.train", "--config=experiments/default.py:tiny", "--workdir=never",
     "--config.train.init_from=pretrained", "--dry_run"],
])
def test_commands_say_in_one_line_that_no_model_is_shipped(args):
    r = cmd(*args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no shipped model" in lines[0] and "ship" in lines[0], r.stderr


# ------------------------------------------------------------------------------ every reader


def test_classifier_loads_pretrained_with_the_runs_answers(run, models, recording):
    ours = Classifier.load("pretrained", models_dir=models)
    theirs = Classifier.load(run)
    assert ours.run.epoch == theirs.run.epoch and ours.classes == theirs.classes
    assert ours.predict_files([recording]) == theirs.predict_files([recording])
    assert ours.segments(recording) == theirs.segments(recording)
    other = "best" if shipped.read_provenance(models)["run"]["checkpoint"] == "last" else "last"
    with pytest.raises(RunNotFound, match="only the weights"):
        Classifier.load("pretrained", weights=other, models_dir=models)


def test_evaluate_scores_as_the_run_and_as_the_provenance_says(run, models, data, tmp_path):
    loaded = trained_run.load_run("pretrained", models_dir=models)
    import dataclasses

    report, path = trained_run.evaluate_source(dataclasses.replace(loaded, workdir=str(tmp_path)),
                                               data, log=lambda _: None)
    assert path.startswith(str(tmp_path)) and set(os.listdir(models)) == shipped.ENTRIES
    expected = shipped.read_provenance(models)["scores"][data]
    for key in ("accuracy", "n_files", "confusion"):
        assert report[key] == expected[key]


def test_evaluate_never_writes_into_a_shipped_folder(models, data):
    r = cmd("speechmusic_jax.evaluate", f"--model={models}", f"--data={data}")
    assert r.returncode == 2 and "--output" in r.stderr, r.stderr[-2000:]
    assert set(os.listdir(models)) == shipped.ENTRIES


def test_predict_and_export_read_a_shipped_folder(run, models, recording, tmp_path):
    r = cmd("speechmusic_jax.predict", f"--model={models}", recording)
    assert r.returncode == 0, r.stderr[-2000:]
    row = Classifier.load(run).predict_files([recording])[0]
    assert r.stdout.splitlines()[1].split(",")[:5] == [
        str(row[k]) for k in ("path", "duration_s", "short", "predicted", "confidence")]
    r = cmd("speechmusic_jax.predict", f"--model={models}", "--segments", recording)
    assert r.returncode == 0 and r.stdout.startswith("path,start_s,end_s"), r.stderr[-2000:]
    out = tmp_path / "model.smj"
    r = cmd("speechmusic_jax.export", f"--model={models}", f"--output={out}",
            "--platforms=cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    model = export.load(out)
    assert model.metadata["run"] == shipped.NAME
    wave = signal("music", 2.5, 16000, 1, seed=2)
    expected = Classifier.load(run).predict(wave, 16000)
    got = model.predict(wave, 16000)
    assert got["predicted"] == expected["predicted"]
    assert got["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)


def test_init_from_pretrained_takes_the_shipped_weights(run, models, tmp_path):
    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    cfg.train.init_from = "pretrained"
    assert "fits this config" in pretrained.check(cfg, [str(tmp_path)], models_dir=models)
    got = pretrained.load(cfg, [str(tmp_path)], models_dir=models)
    cfg.train.init_from = run
    want = pretrained.load(cfg, [str(tmp_path)])
    import jax

    assert got.epoch == want.epoch and got.workdir == models
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got.weights),
                                                     jax.tree.leaves(want.weights), strict=True))
    # by its folder too, from the command line (the dry run checks the weights fit)
    r = cmd("speechmusic_jax.train", "--config=experiments/default.py:tiny",
            f"--workdir={tmp_path / 'ft'}", f"--config.train.init_from={models}", "--dry_run")
    assert r.returncode == 0 and "fits this config" in r.stderr, r.stderr[-2000:]
    other = "best" if got.checkpoint == "last" else "last"
    cfg.train.init_from = f"pretrained:{other}"
    with pytest.raises(ConfigError, match="holds only the weights"):
        pretrained.check(cfg, models_dir=models)


# ------------------------------------------------------------------------------ ship refuses


def test_ship_never_writes_over_what_is_not_a_shipped_model(run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(WorkdirConflict, match="not a shipped model"):
        _ship(run, mine, overwrite=True)
    assert os.listdir(mine) == ["notes.txt"]
    target = tmp_path / "pretrained"
    _ship(run, target)
    with pytest.raises(WorkdirConflict, match="pass --overwrite"):
        _ship(run, target)
    (target / "extra.txt").write_text("someone's")
    with pytest.raises(WorkdirConflict, match="not a shipped model"):
        _ship(run, target, overwrite=True)
    os.remove(target / "extra.txt")
    os.remove(target / shipped.WEIGHTS)  # replaced whole, not patched
    (target / shipped.WEIGHTS).write_bytes(b"")
    _ship(run, target, overwrite=True)
    assert set(os.listdir(target)) == shipped.ENTRIES
    assert os.path.getsize(target / shipped.WEIGHTS) > 0
    # nothing left beside it (the staging folder and the old one are gone)
    assert sorted(os.listdir(tmp_path)) == ["mine", "pretrained"]


def test_ship_refuses_what_is_not_a_finished_run(run, models, tmp_path):
    with pytest.raises(RunNotFound, match="no finished run"):
        _ship(str(tmp_path / "nothing"), tmp_path / "out")
    with pytest.raises(RunNotFound, match="shipped model already"):
        _ship(models, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ship_command_usage():  # --help: test_newcomer, as for every command
    r = cmd("speechmusic_jax.ship", "--workdir=runs/default")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--train_command is required" in lines[0]


# ------------------------------------------------------------------------------ the real one

NOT_SHIPPED = ("no model is shipped in speechmusic_jax/pretrained yet: the lead trains the "
               "default experiment and runs ./run.sh ship at the end of the session "
               "(docs/using-a-model.md: 'The shipped model'); this test then runs")


@pytest.mark.skipif(not shipped.is_shipped_model(shipped.PACKAGE_DIR), reason=NOT_SHIPPED)
def test_the_shipped_model_loads_matches_its_provenance_and_scores_on_fresh_clips():
    from speechmusic_jax.data.synth_music import music_clip
    from speechmusic_jax.data.synth_speech import speech_clip
    from speechmusic_jax.data.synthetic import clip_rng

    folder = shipped.PACKAGE_DIR
    prov = shipped.read_provenance(folder)
    with open(os.path.join(folder, shipped.WEIGHTS), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == prov["weights_sha256"]
    assert read_json(os.path.join(folder, shipped.CONFIG)) == prov["config"]
    clf = Classifier.load("pretrained")
    # the same config (a field added since the model shipped is at the value it had then)
    assert config_lib.diff(json.loads(json.dumps(config_lib.to_dict(clf.run.cfg))),
                           prov["config"]) == []
    assert clf.run.epoch == prov["run"]["epoch"]
    corpus = clf.run.cfg.data.synthetic
    seed = corpus.seed + 1_000_003  # clips no run of that config has seen
    right = total = 0
    for label, make in (("speech", speech_clip), ("music", music_clip)):
        for i in range(100):
            wave = make(clip_rng(seed, label, i), corpus.seconds, corpus.sample_rate)
            pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)  # as the corpus
            right += clf.predict(pcm, corpus.sample_rate)["predicted"] == label
            total += 1
    assert right / total >= 0.99, f"{right}/{total} fresh built-in clips right"
