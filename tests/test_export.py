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

from speechmusic_jax import export, portable
from speechmusic_jax.classifier import Classifier

FRESH = r"""
import json, sys
import numpy as np
import standalone_loader as loader   # copies of export.py and portable.py, alone in a folder

model = loader.load(sys.argv[1])
data = np.load(sys.argv[2])
out = {"logits": {}, "decisions": []}
for name in ("w1", "w5", "w70"):
    out["logits"][name] = model.logits(data[name]).tolist()
for i in range(int(data["n_waves"])):
    try:
        out["decisions"].append(model.predict(data[f"wave{i}"], int(data[f"rate{i}"])))
    except ValueError as e:
        out["decisions"].append({"error": str(e)})
out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
out["classes"], out["segment"] = list(model.classes), model.segment
print(json.dumps(out))
"""


def _odd_inputs() -> list[tuple[np.ndarray, int]]:
    """One recording as the arrays users hand over: integer PCM, unsigned 8-bit, float64,
    torchaudio's (channels, frames), (frames, channels); and a shape that says nothing."""
    wave = signal("speech", 1.7, 22050, 2, seed=4)  # (frames, 2) float32 in [-0.5, 0.5]
    mono = wave[:, 0]
    return [(np.round(mono * 32767).astype(np.int16), 22050),
            (np.round(mono * 127 + 128).astype(np.uint8), 22050),
            (np.round(wave * 2147483647).astype(np.int32), 22050),
            (mono.astype(np.float64), 22050),
            (np.ascontiguousarray(mono[None, :]), 22050),  # (1, N)
            (np.ascontiguousarray(wave.T), 22050),  # (2, N)
            (wave, 22050),  # (N, 2)
            (np.full((2, 2), 0.3, np.float32), 16000)]  # (2, 2): refused


ODD_INPUTS = _odd_inputs()


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
             (signal("music", 3.1, 16000, 1, seed=3)[:, 0], 16000),
             *ODD_INPUTS]
    for i, (wave, rate) in enumerate(waves):
        inputs[f"wave{i}"], inputs[f"rate{i}"] = wave, np.asarray(rate)
    np.savez(tmp_path / "inputs.npz", n_waves=len(waves), **inputs)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(export.__file__, alone / "standalone_loader.py")
    shutil.copyfile(portable.__file__, alone / "portable.py")
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
        try:
            mine = clf.predict(wave, rate)
        except ValueError as e:
            assert decision == {"error": str(e)}
            continue
        assert decision.keys() == mine.keys()
        assert decision["predicted"] == mine["predicted"]
        assert (decision["duration_s"], decision["short"]) == (mine["duration_s"], mine["short"])
        assert decision["p_music"] == pytest.approx(mine["p_music"], abs=1e-5)
    assert sum("error" in d for d in got["decisions"]) == 1  # the (2, 2) one
    # A file on disk, read as predict reads it: the same decision as the run's own row.
    wav = write(tmp_path / "clip.wav", waves[0][0], 44100, "PCM_16")
    row = clf.predict_files([wav])[0]
    data, rate = sf.read(wav, dtype="float32")
    assert export.load(path).predict(data, rate)["p_music"] == pytest.approx(row["p_music"],
                                                                             abs=1e-5)


def test_odd_inputs_give_the_same_numbers_through_the_api_and_the_exported_model(exported):
    """Issue 29 part 3: one preprocessing. Integer PCM is scaled (int16 was 32768 times too loud
    in the exported model), (channels, frames) is mixed over the right axis (the exported model
    averaged (1, N) into one sample), and a shape that does not say which axis holds the
    channels is refused by both, with the same message."""
    workdir, path = exported
    clf, model = Classifier.load(workdir), export.load(path)
    reference = clf.predict(ODD_INPUTS[3][0].astype(np.float32), 22050)  # the float32 samples
    for wave, rate in ODD_INPUTS:
        if wave.shape == (2, 2):
            for predictor in (clf, model):
                with pytest.raises(ValueError, match=r"shape \(2, 2\) is ambiguous"):
                    predictor.predict(wave, rate)
            continue
        mine, theirs = clf.predict(wave, rate), model.predict(wave, rate)
        assert mine["duration_s"] == theirs["duration_s"] == 1.7 and not mine["short"]
        for c in ("speech", "music"):
            assert theirs[f"p_{c}"] == pytest.approx(mine[f"p_{c}"], abs=1e-4)
        if wave.ndim == 1 or 1 in wave.shape:  # the same mono samples, to PCM's precision
            assert mine["p_music"] == pytest.approx(reference["p_music"], abs=1e-3)


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
    assert r.returncode == 2 and "--output is required" in r.stderr
