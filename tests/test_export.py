"""export: a trained model as one file that runs without the training code, in a fresh process,
and gives the predictions of the run itself."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import signal, write
from tiny_run import REPO, tiny_run

from speechmusic_jax import export
from speechmusic_jax.classifier import Classifier

FRESH = r"""
import json, sys
import numpy as np
import standalone_loader as loader   # a copy of speechmusic_jax/export.py, alone in a folder

model = loader.load(sys.argv[1])
data = np.load(sys.argv[2])
out = {"logits": {}, "decisions": []}
for name in ("w1", "w5", "w70"):
    out["logits"][name] = model.logits(data[name]).tolist()
for i in range(int(data["n_waves"])):
    out["decisions"].append(model.predict(data[f"wave{i}"], int(data[f"rate{i}"])))
out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
out["classes"], out["segment"] = list(model.classes), model.segment
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    workdir = tiny_run(tmp_path_factory)
    path = str(tmp_path_factory.mktemp("export") / "model.smj")
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.export", f"--workdir={workdir}",
                        f"--output={path}"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("exported the epoch-")
    return workdir, path


def test_the_archive_says_what_a_caller_needs(exported):
    _, path = exported
    meta = export.read_metadata(path)
    assert meta["classes"] == ["speech", "music"]
    assert (meta["sample_rate"], meta["segment"], meta["hop"]) == (16000, 16000, 16000)
    assert meta["platforms"] == ["cpu", "cuda", "tpu"] and meta["short_clip"] == "pad"
    with zipfile.ZipFile(path) as z:
        assert set(z.namelist()) == {"metadata.json", "model.jaxexport"}
    model = export.load(path)
    (batch,) = model.exported.in_avals[0].shape[:1]
    assert not isinstance(batch, int)  # symbolic: any number of windows
    assert model.exported.in_avals[0].shape[1] == 16000


def test_a_fresh_process_without_the_training_code_matches_the_run(exported, tmp_path):
    workdir, path = exported
    clf = Classifier.load(workdir)
    rng = np.random.default_rng(0)
    inputs = {f"w{n}": (0.1 * rng.standard_normal((n, 16000))).astype(np.float32)
              for n in (1, 5, 70)}
    waves = [(signal("speech", 2.7, 44100, 2, seed=1), 44100),  # (frames, channels), resampled
             (signal("music", 0.6, 16000, 1, seed=2)[:, 0], 16000),  # shorter than a window
             (signal("music", 3.1, 16000, 1, seed=3)[:, 0], 16000)]
    for i, (wave, rate) in enumerate(waves):
        inputs[f"wave{i}"], inputs[f"rate{i}"] = wave, np.asarray(rate)
    np.savez(tmp_path / "inputs.npz", n_waves=len(waves), **inputs)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(export.__file__, alone / "standalone_loader.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", FRESH, path, str(tmp_path / "inputs.npz")],
                       cwd=alone, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert not {"speechmusic_jax", "flax", "optax", "orbax"} & set(got["modules"])
    assert got["classes"] == ["speech", "music"] and got["segment"] == 16000
    for name in ("w1", "w5", "w70"):
        np.testing.assert_allclose(got["logits"][name], clf.window_logits(inputs[name]),
                                   atol=1e-5)
    for (wave, rate), decision in zip(waves, got["decisions"], strict=True):
        mine = clf.predict(wave, rate)
        assert decision["predicted"] == mine["predicted"]
        assert decision["duration_s"] == mine["duration_s"]
        assert decision["p_music"] == pytest.approx(mine["p_music"], abs=1e-5)
    # A file on disk, read as predict reads it: the same decision as the run's own row.
    wav = write(tmp_path / "clip.wav", waves[0][0], 44100, "PCM_16")
    row = clf.predict_files([wav])[0]
    data, rate = sf.read(wav, dtype="float32")
    assert export.load(path).predict(data, rate)["p_music"] == pytest.approx(row["p_music"],
                                                                             abs=1e-5)


@pytest.mark.slow  # with the soak tests: the suite stays under 15 min
def test_export_never_writes_over_a_user_file(exported, tmp_path):
    workdir, path = exported
    mine = tmp_path / "mine.zip"
    mine.write_bytes(b"my archive")
    for extra in ([], ["--overwrite"]):
        r = subprocess.run([sys.executable, "-m", "speechmusic_jax.export",
                            f"--workdir={workdir}", f"--output={mine}", *extra], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert mine.read_bytes() == b"my archive"
    assert export.is_exported_model(path) and not export.is_exported_model(str(mine))
    again = subprocess.run([sys.executable, "-m", "speechmusic_jax.export",
                            f"--workdir={workdir}", f"--output={path}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.export", "--workdir=x"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--workdir and --output are required" in r.stderr
