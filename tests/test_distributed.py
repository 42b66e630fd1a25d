"""One run over several processes (jax.distributed on localhost, CPU collectives over gloo) and
over several devices of one process: the same training as one process on one device.

The multi-process tests start real processes, as a user would (tests/distributed_worker.py),
with 3 epochs of the tiny experiment. (A sweep shared by two processes: tests/test_sweep.py.)
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from speechmusic_jax import distributed
from speechmusic_jax.io_utils import read_json, read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
TIMEOUT_S = 300


# ---- start-up: when the runtime starts, and the messages when it cannot -----------------------

def test_flags_and_cluster_environments_decide_whether_the_runtime_starts():
    launch = distributed.Launch
    assert not distributed.wanted(launch(), env={})
    assert distributed.wanted(launch("auto", "localhost:1234", 2, 0), env={})
    assert not distributed.wanted(launch("auto", "localhost:1234", 1, 0), env={})
    assert distributed.wanted(launch("on"), env={})  # JAX detects (a TPU pod slice)
    slurm = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "1", "SLURM_NTASKS": "4"}
    assert distributed.detected_cluster(slurm) == "SLURM"
    assert distributed.wanted(launch(), env=slurm)
    assert not distributed.wanted(launch(), env={**slurm, "SLURM_NTASKS": "1"})
    assert not distributed.wanted(launch("off"), env=slurm)
    assert distributed.detected_cluster({"JAX_COORDINATOR_ADDRESS": "h:1"}) is not None
    for bad, field in [(launch("auto", "h:1", None, 0), "--num_processes"),
                       (launch("auto", None, 2, 0), "--coordinator_address"),
                       (launch("auto", "h:1", 2, 2), "--process_id"),
                       (launch("auto", "h:1", 0, 0), "--num_processes"),
                       (launch("off", "h:1", 2, 0), "--distributed=off"),
                       (launch("maybe"), "--distributed")]:
        with pytest.raises(ValueError, match=field):
            distributed.wanted(bad, env={})


def test_a_sweep_share_comes_from_flags_or_the_launcher():
    assert distributed.process_share(env={}) == (0, 1)
    assert distributed.process_share(3, 1, env={}) == (1, 3)
    assert distributed.process_share(env={"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}) == (2, 4)
    assert distributed.process_share(
        env={"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}) == (0, 2)
    with pytest.raises(ValueError, match="go together"):
        distributed.process_share(2, None, env={})
    with pytest.raises(ValueError, match="process_id"):
        distributed.process_share(2, 5, env={})


def test_the_train_command_names_a_bad_distributed_flag(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "speechmusic_jax.train", "--config=experiments/default.py:tiny",
         f"--workdir={tmp_path / 'run'}", "--num_processes=2", "--process_id=0"],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode == 2
    assert "--coordinator_address" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


# ---- training over processes and devices -------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(tmp_path, name: str, processes: int = 1, devices: int = 1, **kw) -> list[dict]:
    """Run the worker in ``processes`` processes of ``devices`` CPU devices each; return what
    each process's fit returned."""
    workdir = tmp_path / name
    # PYTHONPATH: the worker (a script in tests/) imports this checkout, not an installed copy
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=REPO)
    port = _free_port()
    procs = []
    for i in range(processes):
        cmd = [sys.executable, WORKER, str(workdir), str(tmp_path / f"{name}.{i}.json")]
        cmd += [f"--{k}={v}" for k, v in kw.items()]
        if processes > 1:
            cmd += [f"--coordinator=localhost:{port}", f"--processes={processes}",
                    f"--process_id={i}"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return [json.loads((tmp_path / f"{name}.{i}.json").read_text()) for i in range(processes)]


def _curve(tmp_path, name: str) -> np.ndarray:
    rows = read_jsonl(str(tmp_path / name / "metrics.jsonl"))
    return np.asarray([[r["epoch"], r["train_loss"], r["train_accuracy"], r["val_loss"],
                        r["val_accuracy"]] for r in rows])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same experiment, one process, one device (trained once per session
    for every module that needs a tiny trained run)."""
    from tiny_run import tiny_run

    workdir = tiny_run(tmp_path_factory)
    return _curve(workdir), read_json(os.path.join(workdir, "summary.json")), workdir


def _curve(workdir) -> np.ndarray:
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return np.asarray([[r["epoch"], r["train_loss"], r["train_accuracy"], r["val_loss"],
                        r["val_accuracy"]] for r in rows])


def _probabilities(path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {r["path"]: np.asarray([float(v) for k, v in r.items() if k.startswith("p_")])
            for r in rows}


# |validation loss| differences measured over the tiny experiment's 3 epochs against one process
# on one device: 8.3e-9 for 2 processes x 2 devices, 5.3e-9 for 4 devices of one process. Before
# the conv biases that batch norm cancels were frozen (training.optim.without_updates), Adam
# stepped them on their rounding-noise gradient, which differs with the reduction's split over
# devices: 2.1e-4 and 1.3e-4 then. The tolerance is 100x above the first, 100x below the second.
VAL_LOSS_ATOL = 1e-6


def _same_training(curve: np.ndarray, reference: np.ndarray) -> None:
    """Equal loss curves to float tolerance (the reductions split over devices round
    differently)."""
    assert curve.shape == reference.shape
    np.testing.assert_array_equal(curve[:, 0], reference[:, 0])  # the same epochs
    np.testing.assert_allclose(curve[:, 1], reference[:, 1], rtol=1e-4)  # train loss
    np.testing.assert_allclose(curve[:, 2], reference[:, 2])  # train accuracy
    np.testing.assert_allclose(curve[:, 3], reference[:, 3], atol=VAL_LOSS_ATOL)  # val loss


def test_two_processes_train_as_one_agree_on_every_metric_and_resume_after_a_stop(
        tmp_path, one_process, tiny_config):
    # 2 processes x 2 CPU devices: each process reads 4 rows of every batch of 8, which the
    # mesh of 4 devices splits. Stopped after epoch 1 (as a time-boxed job is), then restarted.
    reference, ref_summary, ref_workdir = one_process
    stopped = _train(tmp_path, "run", processes=2, devices=2, stop_after=1)
    assert all(w["summary"] == {"status": "interrupted", "epochs_run": 1} for w in stopped)
    assert read_json(tmp_path / "run" / "checkpoints" / "last.json")["epoch"] == 1
    two = _train(tmp_path, "run", processes=2, devices=2)
    assert [w["process_index"] for w in two] == [0, 1]
    assert all(w["process_count"] == 2 and w["device_count"] == 4 for w in two)
    _same_training(_curve(tmp_path / "run"), reference)
    # both processes hold the same results: test metrics, early-stopping decisions
    first, second = (w["summary"] for w in two)
    for key in ("test", "best_epoch", "epochs_run", "status", "params_trainable", "n_files"):
        assert first[key] == second[key], key
    # The tested weights (the last epoch's, as in the default experiment) are those of the
    # one-process run up to the rounding that _same_training allows for: the same test clips,
    # the same probabilities to 0.02. (An accuracy over the few test clips of a barely trained
    # model can flip with that rounding.)
    assert first["tested_epoch"] == ref_summary["tested_epoch"] == 3
    got, want = (_probabilities(os.path.join(w, "test_predictions.csv"))
                 for w in (tmp_path / "run", ref_workdir))
    assert got.keys() == want.keys() and len(got) > 0
    for path in want:
        np.testing.assert_allclose(got[path], want[path], atol=0.02, err_msg=path)
    assert first["process_count"] == 2 and first["device_count"] == 4
    # process 0 alone wrote the run's files: those of a one-process run, summary included
    assert set(os.listdir(tmp_path / "run")) == {
        "config.json", "split.csv", "metrics.jsonl", "evals.jsonl", "summary.json",
        "test_predictions.csv", "curves.png", "checkpoints", "tensorboard"}
    assert read_json(tmp_path / "run" / "summary.json")["test"] == first["test"]
    # its checkpoint, written by both processes over 4 devices, loads in one process
    from speechmusic_jax.training import builder
    from speechmusic_jax.training.checkpoints import Checkpoints

    ckpts = Checkpoints(str(tmp_path / "run"))
    state, loop_record = ckpts.restore(ckpts.best(), builder.build(tiny_config).state)
    assert loop_record["epoch"] == first["best_epoch"]
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


@pytest.mark.slow  # one process over two devices: test_feed.py; two processes: the test above
def test_two_processes_augment_on_the_device_as_one_process_does(tmp_path):
    # Each process reads its rows of the batch; the device augments the global batch, keyed by
    # (seed, epoch, step), so the rows are augmented as in one process (here with the training
    # corpus on the devices too).
    one = _train(tmp_path, "one", augment=1, epochs=2)
    two = _train(tmp_path, "two", processes=2, augment=1, epochs=2, cache="device")
    assert two[0]["summary"]["test"] == two[1]["summary"]["test"]
    assert one[0]["summary"]["status"] == "completed"
    _same_training(_curve(tmp_path / "two"), _curve(tmp_path / "one"))


@pytest.mark.slow  # four devices end to end: test_reliability.py; 2 x 2: the test above
def test_four_devices_of_one_process_train_as_one(tmp_path, one_process):
    reference, _, _ = one_process
    four = _train(tmp_path, "four", devices=4)
    assert four[0]["device_count"] == 4 and four[0]["process_count"] == 1
    _same_training(_curve(tmp_path / "four"), reference)


@pytest.mark.slow  # with the soak tests: the suite stays under 15 min
def test_two_processes_fine_tune_from_a_pretrained_run(tmp_path, tmp_path_factory):
    """train.init_from across processes: each reads the pretrained checkpoint; a frozen stem
    (train.stem_lr_scale 0) stays bit-identical while the rest trains (but the conv biases
    that batch norm cancels, which never move)."""
    from test_init_from import _weights, cancelled
    from tiny_run import tiny_run

    source = tiny_run(tmp_path_factory)
    two = _train(tmp_path, "ft", processes=2, devices=2, epochs=1, init_from=source,
                 stem_lr_scale=0.0)
    assert all(w["summary"]["init_from"]["workdir"] == source for w in two)
    for old, new in zip(_weights(source), _weights(str(tmp_path / "ft"), "last"), strict=True):
        for name in old:
            kept = name.split(".")[0] in ("stem", "stem_norm") or cancelled(name)
            assert np.array_equal(new[name], old[name]) == kept, name


# ---- a group of trials over a trial axis (a sweep shared by processes: test_sweep.py) ----------


GROUP_ON_TWO_DEVICES = """
import json, os, sys
from speechmusic_jax.config import load_experiment
from speechmusic_jax.io_utils import read_jsonl
from speechmusic_jax.training import loop
cfg = load_experiment(os.path.join(sys.argv[1], "experiments", "default.py"), "tiny")
other = cfg.copy_and_resolve_references()
other.optimizer.learning_rate = 2 * cfg.optimizer.learning_rate
lines = []
folders = [os.path.join(sys.argv[2], str(i)) for i in range(2)]
loop.fit([cfg, other], folders, log=lines.append, trial_axis=2, host_memory="release")
print(json.dumps({"log": [l for l in lines if "trials split" in l],
                  "rows": [read_jsonl(os.path.join(f, "metrics.jsonl")) for f in folders],
                  "host_memory": [json.load(open(os.path.join(f, "summary.json")))["host_memory"]
                                  for f in folders]}))
"""


def test_a_group_of_trials_splits_over_a_trial_mesh_axis_and_trains_as_alone(tmp_path,
                                                                              one_process):
    # 2 trials on 2 CPU devices, a whole trial per device; trial 0 is the tiny experiment,
    # which the one-process reference trained alone on one device.
    reference, _, _ = one_process
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", GROUP_ON_TWO_DEVICES, REPO, str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "trials split 2 ways, each batch 1 ways" in out["log"][0]
    rows = out["rows"][0]
    curve = np.asarray([[r["epoch"], r["train_loss"], r["train_accuracy"], r["val_loss"],
                         r["val_accuracy"]] for r in rows])
    _same_training(curve, reference)
    assert out["rows"][1][-1]["train_loss"] != rows[-1]["train_loss"]  # the other trial
    assert out["host_memory"] == ["release", "release"]  # recorded with the step times
