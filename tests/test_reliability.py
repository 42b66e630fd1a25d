"""Reliability (issue 5): reproducible batches, kill and resume, divergence, full disk, device
out-of-memory, bad workdirs and configs, hostile paths, nothing written outside the workdir,
multi-device data parallel training.

Faults are injected at deterministic moments by ``tests/fault_helper.py`` (the train command with
one patch), in a subprocess when the process must die or its exit status and stderr matter, and
in this process (with ``monkeypatch``) otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import subprocess
import sys

import fault_helper
import numpy as np
import pytest
import soundfile as sf

from speechmusic_jax import cli, errors
from speechmusic_jax.config import ConfigError, load_experiment, to_dict
from speechmusic_jax.data import audio
from speechmusic_jax.data.pipeline import LoaderConfig, epoch_plan, train_batches
from speechmusic_jax.data.sources import AudioFile
from speechmusic_jax.io_utils import read_jsonl
from speechmusic_jax.training import loop
from speechmusic_jax.training.checkpoints import Checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "tests", "fault_helper.py")
TINY = "--config=experiments/default.py:tiny"
TIMING_KEYS = {"epoch_time_s", "train_time_s", "examples_per_s", "data_wait_s", "device_idle_s",
               "device_idle_share"}


def quiet(_msg: str) -> None:
    pass


def tiny_config():
    return load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run(args: list[str], *, env: dict | None = None, cwd: str = REPO,
        timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def train_cli(workdir, *flags: str, **kw) -> subprocess.CompletedProcess:
    return run(["-m", "speechmusic_jax.train", TINY, f"--workdir={workdir}", *flags], **kw)


def with_fault(fault: str, workdir, *flags: str, **kw) -> subprocess.CompletedProcess:
    return run([HELPER, fault, TINY, f"--workdir={workdir}", *flags], **kw)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """stderr of a failed run: exactly one line, no traceback."""
    assert r.returncode not in (0, -9), (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run: (workdir, metrics without timing keys, summary)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    summary = loop.fit(tiny_config(), str(workdir), log=quiet)
    return workdir, without_timing(read_jsonl(workdir / "metrics.jsonl")), summary


def assert_same_as_reference(workdir, reference) -> None:
    _, ref_rows, ref_summary = reference
    text = (workdir / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    assert without_timing(rows) == ref_rows
    summary = read_json(workdir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["test"] == json.loads(json.dumps(ref_summary["test"]))
    assert summary["best_epoch"] == ref_summary["best_epoch"]


def check_invariants(workdir, *, last: int | None, metrics: list[int],
                     torn_tail: bool = False) -> None:
    """What a killed run leaves: complete pointers only, whole metric lines (a torn last line only
    when the kill hit its write), epochs in order without repeats."""
    text = (workdir / "metrics.jsonl").read_text() if (workdir / "metrics.jsonl").exists() else ""
    assert text.endswith("\n") != torn_tail or not text
    epochs = [r["epoch"] for r in read_jsonl(workdir / "metrics.jsonl")]
    assert epochs == metrics
    ckpts = Checkpoints(str(workdir))
    pointer = ckpts.last()
    assert (pointer or {}).get("epoch") == last
    for which in ("last", "best"):
        p = getattr(ckpts, which)()
        if p is not None:
            folder = workdir / "checkpoints" / p["dir"]
            assert (folder / "state" / "commit_success.txt").exists()
            assert read_json(folder / "loop.json")["epoch"] == p["epoch"]


# --------------------------------------------------------------------------------------------
# 1. Reproducibility


def write_tone(path, seconds: float, sr: int, freq: float, channels: int = 1) -> None:
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(int(freq)).standard_normal(t.size)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise
    sf.write(path, np.repeat(x[:, None], channels, axis=1), sr, subtype="PCM_16")


def test_batches_are_a_pure_function_of_seed_and_epoch(tmp_path):
    files, durations = [], []
    for i in range(6):
        path = tmp_path / f"clip{i}.wav"
        write_tone(path, 1.0 + 0.25 * i, 8000, 200 + 50 * i, channels=1 + i % 2)
        files.append(AudioFile(str(path), i % 2, str(i)))
        durations.append(1.0 + 0.25 * i)
    cfg = LoaderConfig(sample_rate=8000, segment=4000, hop=4000, batch_size=2)

    def batches(seed, epoch):
        # A fresh loader config per call: nothing carries over from an earlier read.
        fresh = LoaderConfig(sample_rate=8000, segment=4000, hop=4000, batch_size=2)
        return list(train_batches(files, durations, fresh, seed, epoch))

    a, b = batches(0, 1), batches(0, 1)
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.x, y.x)
        np.testing.assert_array_equal(x.y, y.y)
        np.testing.assert_array_equal(x.weight, y.weight)
    assert epoch_plan(files, durations, cfg, 0, 1) == epoch_plan(files, durations, cfg, 0, 1)
    for seed, epoch in ((1, 1), (0, 2)):
        other = batches(seed, epoch)
        assert any(not np.array_equal(x.x, y.x) for x, y in zip(a, other, strict=True))
        assert epoch_plan(files, durations, cfg, seed, epoch) != epoch_plan(files, durations,
                                                                            cfg, 0, 1)


def test_run_records_seed_config_and_versions(reference):
    workdir, _, summary = reference
    cfg = tiny_config()
    assert read_json(workdir / "config.json") == to_dict(cfg)
    assert summary["seed"] == cfg.seed
    assert summary["init_seed"] == cfg.seed  # unset: the effective init_seed is seed
    assert set(summary["versions"]) >= {"python", "jax", "jaxlib", "flax", "optax"}
    import jax

    assert summary["versions"]["jax"] == jax.__version__


# --------------------------------------------------------------------------------------------
# 2. Kill and resume


# The moments a kill can hit, each with the checkpoint the next start resumes from (None: a fresh
# start) and the state it leaves behind. The regular suite runs KILLS_FAST (a kill during an
# epoch, during a checkpoint write, during a metrics write); test_soak.py runs them all.
KILLS_FAST = [
    ("kill@step:2:1", None, dict(last=1, metrics=[1])),
    ("kill@orbax-commit:2", 1, dict(last=1, metrics=[1, 2])),
    ("kill@metrics:3", 1, dict(last=2, metrics=[1, 2], torn_tail=True)),
]
KILLS_ALL = [
    ("kill@step:1:1", None, dict(last=None, metrics=[])),
    ("kill@orbax-start:1", None, dict(last=None, metrics=[1])),
    ("kill@step:2:1", None, dict(last=1, metrics=[1])),
    ("kill@orbax-start:2", 1, dict(last=1, metrics=[1, 2])),
    ("kill@orbax-commit:2", 1, dict(last=1, metrics=[1, 2])),
    ("kill@pointer:2", 1, dict(last=1, metrics=[1, 2])),
    ("kill@metrics:3", 1, dict(last=2, metrics=[1, 2], torn_tail=True)),
    ("kill@pointer:3", 2, dict(last=2, metrics=[1, 2, 3])),
    ("kill@summary", 2, dict(last=3, metrics=[1, 2, 3])),
]


def kill_and_resume(workdir, kills, reference) -> None:
    """Kill a run in ``workdir`` at each moment of ``kills`` in turn (each start resuming the
    last), check what each kill leaves, then finish with `train`: it must end where the
    uninterrupted run ended."""
    for fault, resumed_from, left in kills:
        r = with_fault(fault, workdir)
        assert r.returncode == -9 and "fault_helper: KILL" in r.stderr, (fault, r.stderr[-2000:])
        if resumed_from is not None:
            assert f"resuming from the checkpoint of epoch {resumed_from}\n" in r.stdout, fault
        else:
            assert "resuming" not in r.stdout, fault
        check_invariants(workdir, **left)
        epoch = fault.split(":")[-1]
        if fault.startswith("kill@orbax"):
            # The half-written checkpoint is there, in orbax's temporary folder; no pointer names
            # it, and the next start removes it and writes the epoch afresh.
            assert os.listdir(workdir / "checkpoints" / f"epoch_{int(epoch):04d}") == [
                "state.orbax-checkpoint-tmp"]
        if fault.startswith("kill@pointer"):  # complete, but not named by last.json: not used
            assert (workdir / "checkpoints" / f"epoch_{int(epoch):04d}" / "loop.json").exists()
        assert not (workdir / "summary.json").exists()
    last = kills[-1][2]["last"]
    r = train_cli(workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from the checkpoint of epoch {last}\n" in r.stdout
    assert_same_as_reference(workdir, reference)
    # The same checkpoints as the uninterrupted run keeps (the best and the last epoch's; an
    # epoch saved again while a pointer still named its first save is epoch_NNNN.1).
    def epochs(folder):
        return sorted(name.split(".")[0] for name in os.listdir(folder / "checkpoints"))

    assert epochs(workdir) == epochs(reference[0])


@pytest.mark.slow  # ~20 s alone; tests/test_checkpoints.py kills at every step of a save
def test_kills_during_an_epoch_a_checkpoint_and_a_metrics_write_then_train_resumes(
        reference, tmp_path):
    kill_and_resume(tmp_path / "run", KILLS_FAST, reference)


# --------------------------------------------------------------------------------------------
# 3. Divergence


def steps_per_epoch(workdir) -> int:
    with open(workdir / "split.csv", encoding="utf-8") as f:
        n_train = sum(1 for line in f if ",train," in line)
    return n_train // tiny_config().train.batch_size


# The keys of summary.json that ../shared/DESIGN.md lists, and that every run's summary has.
FINISHED_SUMMARY_KEYS = {
    "status", "best_epoch", "epochs_run", "seed", "test", "params_trainable", "params_total",
    "flops_per_example", "compile_time_s", "step_time_ms", "train_time_s", "peak_memory_bytes",
    "peak_memory_kind", "inference", "checkpoint_bytes", "weight_decay_semantics", "data_errors",
    "device_kind", "device_count", "versions"}


@pytest.mark.parametrize("fault,step_in_epoch,shown", [("nan@step:2:1", 1, "nan"),
                                                        ("inf@step:2:2", 2, "inf")])
def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(
        monkeypatch, tmp_path, fault, step_in_epoch, shown):
    fault_helper.install(fault, monkeypatch.setattr)
    workdir = tmp_path / "run"
    with pytest.raises(errors.TrainingDiverged) as err:
        loop.fit(tiny_config(), str(workdir), log=quiet)
    step = steps_per_epoch(workdir) + step_in_epoch
    message = str(err.value)
    assert f"the loss became {shown} at step {step} (epoch 2)" in message
    assert "optimizer.learning_rate" in message and "train.grad_clip_norm" in message
    assert "last good checkpoint (epoch 1) is kept" in message
    summary = read_json(workdir / "summary.json")
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == step and summary["diverged_in_epoch"] == 2
    assert summary["epochs_run"] == 1 and summary["seed"] == 0
    # Every key a finished run's summary has, with what was measured before the divergence.
    assert set(summary) >= FINISHED_SUMMARY_KEYS, FINISHED_SUMMARY_KEYS - set(summary)
    assert summary["test"] is None and summary["inference"] is None
    assert summary["params_trainable"] > 0 and summary["compile_time_s"] > 0
    assert summary["step_time_ms"]["n"] == steps_per_epoch(workdir) + step_in_epoch
    assert summary["checkpoint_bytes"] > 0 and summary["train_time_s"] > 0
    check_invariants(workdir, last=1, metrics=[1])


def test_divergence_from_a_huge_learning_rate_exits_non_zero(tmp_path):
    workdir = tmp_path / "run"
    r = train_cli(workdir, "--config.optimizer.learning_rate=1e30")
    assert r.returncode == 1
    line = one_line_error(r)
    assert line.startswith("training diverged: the loss became")
    assert "optimizer.learning_rate (now 1e+30)" in line
    summary = read_json(workdir / "summary.json")
    assert summary["status"] == "diverged"
    assert f"at step {summary['diverged_at_step']} " in line


# --------------------------------------------------------------------------------------------
# 4. Resources: full disk, device memory, bad workdirs


def test_full_disk_while_appending_metrics_keeps_every_file_whole(reference, monkeypatch,
                                                                  tmp_path):
    workdir = tmp_path / "run"
    with monkeypatch.context() as m:
        fault_helper.install("enospc@metrics:2", m.setattr)
        with pytest.raises(OSError) as err:
            loop.fit(tiny_config(), str(workdir), log=quiet)
    assert err.value.errno == errno.ENOSPC
    assert err.value.filename == str(workdir / "metrics.jsonl")
    # Half the line had reached the disk; it was cut off again.
    check_invariants(workdir, last=1, metrics=[1])
    # Space is back: the same call resumes and ends where the uninterrupted run ended.
    loop.fit(tiny_config(), str(workdir), log=quiet)
    assert_same_as_reference(workdir, reference)


def test_full_disk_while_writing_a_pointer(monkeypatch, tmp_path):
    workdir = tmp_path / "run"
    fault_helper.install("enospc@pointer:2", monkeypatch.setattr)
    with pytest.raises(OSError) as err:
        loop.fit(tiny_config(), str(workdir), log=quiet)
    assert err.value.errno == errno.ENOSPC
    assert err.value.filename == str(workdir / "checkpoints" / "last.json")
    check_invariants(workdir, last=1, metrics=[1, 2])
    assert not [n for n in os.listdir(workdir / "checkpoints") if n.endswith(".tmp")]


def test_full_disk_during_a_checkpoint_keeps_earlier_ones(monkeypatch, tmp_path):
    """orbax reports a full disk as tensorstore's ValueError; it becomes an OSError naming the
    checkpoint, whose partial files are removed."""
    workdir = tmp_path / "run"
    fault_helper.install("enospc@orbax:2", monkeypatch.setattr)
    with pytest.raises(OSError) as err:
        loop.fit(tiny_config(), str(workdir), log=quiet)
    assert err.value.errno == errno.ENOSPC
    assert err.value.filename == str(workdir / "checkpoints" / "epoch_0002")
    check_invariants(workdir, last=1, metrics=[1, 2])
    assert not (workdir / "checkpoints" / "epoch_0002").exists()


@contextlib.contextmanager
def small_tmpfs(path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (root only; the test is skipped elsewhere)."""
    os.makedirs(path)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small file system needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_real_full_disk_then_resume(reference, tmp_path):
    """The workdir on a small tmpfs that fills up after epoch 1's checkpoint: the run stops with
    a clear message, and once space is freed the run resumes and ends where the uninterrupted run
    ended."""
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        workdir = disk / "run"
        r = with_fault("fill@epoch:1", workdir)
        assert r.returncode == 1, r.stderr[-3000:]
        first = r.stderr.splitlines()[0]
        assert first.startswith("error: no space left (No space left on device)"), r.stderr
        assert "earlier checkpoints are intact" in first
        check_invariants(workdir, last=1, metrics=[1] if "epoch_0002" not in first else [1, 2])
        os.remove(workdir / "filler.bin")
        messages: list[str] = []
        loop.fit(tiny_config(), str(workdir), log=messages.append)
        assert "resuming from the checkpoint of epoch 1" in messages
        assert_same_as_reference(workdir, reference)
    one_line_error(r)


def test_device_out_of_memory_in_the_train_step_names_the_batch_size(monkeypatch, tmp_path):
    workdir = tmp_path / "run"
    fault_helper.install("oom@step:2:1", monkeypatch.setattr)
    with pytest.raises(errors.DeviceOutOfMemory) as err:
        loop.fit(tiny_config(), str(workdir), log=quiet)
    message = str(err.value)
    assert "ran out of memory in the train step at batch size 8" in message
    assert "--config.train.batch_size=4" in message and "RESOURCE_EXHAUSTED" in message
    check_invariants(workdir, last=1, metrics=[1])


def test_device_out_of_memory_anywhere_is_one_line(tmp_path):
    r = with_fault("oom@compile", tmp_path / "run")
    assert r.returncode == 1
    line = one_line_error(r)
    assert line.startswith("error: the device ran out of memory (RESOURCE_EXHAUSTED")
    assert "smaller train.batch_size" in line


@pytest.mark.parametrize("exc,code,start", [
    (OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl"), 1,
     "error: no space left (No space left on device) while writing /w/metrics.jsonl; earlier "
     "checkpoints are intact"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), 1, "error: no space left (Disk quota"),
    (PermissionError(errno.EACCES, "Permission denied", "/w/config.json"), 1,
     "error: Permission denied: /w/config.json"),
    (errors.DeviceOutOfMemory("the device ran out of memory in the eval step"), 1,
     "error: the device ran out of memory in the eval step"),
    (errors.TrainingDiverged("the loss became nan at step 3"), 1, "training diverged: the loss"),
    (errors.WorkdirConflict("--workdir x is a file"), 2, "error: --workdir x is a file"),
    (ConfigError("train.batch_size: 6 does not divide over 4 devices"), 2,
     "config error: train.batch_size"),
])
def test_friendly_errors_are_one_line(capsys, exc, code, start):
    with pytest.raises(SystemExit) as err, cli.friendly_errors():
        raise exc
    assert err.value.code == code
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), lines


def test_friendly_errors_let_bugs_through():
    with pytest.raises(ZeroDivisionError), cli.friendly_errors():
        raise ZeroDivisionError
    with pytest.raises(OSError), cli.friendly_errors():
        raise OSError("no errno, no file: a bug, keep its traceback")


def test_workdir_that_is_a_file_or_under_a_file_via_the_cli(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    r = train_cli(afile)
    assert r.returncode == 2 and "is a file, not a folder" in one_line_error(r)
    r = train_cli(afile / "run")
    assert r.returncode == 1
    assert one_line_error(r) == f"error: Not a directory: {afile / 'run'}"
    assert afile.read_text() == "not a folder"


# --------------------------------------------------------------------------------------------
# 5. Config errors at start


@pytest.mark.parametrize("field,value", [
    ("train.eval_batch_size", 0),
    ("train.eval_chunk_mib", -1.0),
    ("data.workers", 0),
    ("data.prefetch_batches", 0),
    ("data.eval_hop_seconds", -1.0),
    ("data.synthetic.clips_per_class", 0),
    ("data.synthetic.seconds", 0.0),
    ("data.synthetic.sample_rate", -16000),
    ("train.grad_clip_norm", -1.0),
    ("train.label_smoothing", 1.0),
    ("train.l2", -0.1),
    ("train.early_stopping.patience", -1),
    ("optimizer.weight_decay", -1e-4),
    ("optimizer.warmup_epochs", -1.0),
    ("optimizer.learning_rate", float("nan")),
    ("data.augment.noise_prob", 1.5),
])
def test_negative_zero_and_out_of_range_values_name_the_field(field, value):
    from speechmusic_jax.config import validate

    cfg = tiny_config()
    cfg.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(field)


@pytest.mark.parametrize("field", ["data.segment_seconds", "optimizer.learning_rate"])
def test_infinite_values_name_the_field(field):
    from speechmusic_jax.config import validate

    cfg = tiny_config()
    section, leaf = field.split(".")
    cfg[section][leaf] = math.inf
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(field)


@pytest.mark.parametrize("args,start,needle", [
    (["--config.train.batch_size=abc"], "flag error: flag --config.train.batch_size=abc",
     "invalid literal"),
    (["--config.data.segment_seconds=0.01"], "config error: data.segment_seconds",
     "minimum input of 320 samples"),
    (["--config.trian.epochs=3"], "config error", "trian"),
    (["--config=experiments/no_such_experiment.py"],
     "config error: --config=experiments/no_such_experiment.py", "No such file"),
    (["--config=experiments/default.py:huge"], "flag error: flag --config=", "unknown variant"),
])
def test_cli_config_errors_are_one_line_and_write_nothing(tmp_path, args, start, needle):
    workdir = tmp_path / "run"
    r = run(["-m", "speechmusic_jax.train", TINY, f"--workdir={workdir}", *args])
    assert r.returncode == 2
    line = one_line_error(r)
    assert line.startswith(start) and needle in line, line
    assert not workdir.exists()


def test_experiment_file_that_fails_to_import_is_one_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def get_config(arg=None)\n    return None\n")
    r = run(["-m", "speechmusic_jax.train", f"--config={bad}", f"--workdir={tmp_path / 'run'}"])
    assert r.returncode == 2
    assert one_line_error(r).startswith("config error: the experiment file failed: SyntaxError")


# --------------------------------------------------------------------------------------------
# Multi-device data parallel training (4 CPU devices), hostile paths, nothing written outside


def sandbox_env(tmp_path, **extra: str) -> tuple[dict, dict[str, str]]:
    """An environment whose HOME, TMPDIR and cwd are fresh, empty folders."""
    dirs = {name: tmp_path / name for name in ("home", "tmp", "cwd")}
    for d in dirs.values():
        d.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TMP", "TEMP")}
    env.update(HOME=str(dirs["home"]), TMPDIR=str(dirs["tmp"]), **extra)
    return env, {k: str(v) for k, v in dirs.items()}


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


# Third-party caches a run may create under HOME: matplotlib's font list (made on its first use;
# it is a cache of the installed fonts, not output of ours).
ALLOWED_IN_HOME = (".cache/matplotlib/", ".config/matplotlib/")


def assert_nothing_written_outside(dirs: dict[str, str], allowed_in_home=ALLOWED_IN_HOME):
    assert files_under(dirs["tmp"]) == []
    assert files_under(dirs["cwd"]) == []
    stray = [f for f in files_under(dirs["home"]) if not f.startswith(allowed_in_home)]
    assert stray == []


def test_batch_that_does_not_divide_over_devices_is_refused_at_start(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    workdir = tmp_path / "run"
    r = train_cli(workdir, "--config.train.batch_size=6", env=env)
    assert r.returncode == 2
    assert one_line_error(r) == ("config error: train.batch_size: 6 does not divide over 4 "
                                 "devices; use a multiple of 4")
    assert not workdir.exists()


def test_four_devices_and_non_ascii_paths_end_to_end_writing_only_the_workdir(tmp_path):
    """The tiny experiment from the command line, data parallel over 4 CPU devices, on a folder
    corpus and into a workdir whose paths have spaces and non-ASCII letters, with HOME, TMPDIR
    and the working directory pointed at empty folders: the run completes on 4 devices, and
    writes nothing outside its workdir (not even into the corpus)."""
    corpus = tmp_path / "my data ñ 音声" / "set, one"
    for label, base in (("speech", 150.0), ("music", 440.0)):
        (corpus / label).mkdir(parents=True)
        for i in range(12):
            name = f"clip {i} é 音 'q'.wav" if i % 2 else f"Ünïcødé {i}.flac"
            write_tone(corpus / label / name, 1.5, 16000, base * (1 + 0.1 * i))
    before = {f: os.path.getmtime(corpus / f) for f in files_under(corpus)}
    env, dirs = sandbox_env(tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env.pop("SPEECHMUSIC_CACHE", None)
    workdir = tmp_path / "runs ü" / "tiny run 一"
    r = run(["-m", "speechmusic_jax.train", f"--config={REPO}/experiments/default.py:tiny",
             f"--workdir={workdir}", f"--data=folder:{corpus}", "--config.train.epochs=2"],
            env=env, cwd=dirs["cwd"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "devices: 4 x cpu" in r.stdout
    summary = read_json(workdir / "summary.json")
    assert summary["status"] == "completed" and summary["device_count"] == 4
    assert summary["test"]["n_files"] > 0
    rows = read_jsonl(workdir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    split = (workdir / "split.csv").read_text(encoding="utf-8")
    assert "clip 1 é 音 'q'.wav" in split and "Ünïcødé 0.flac" in split
    assert {f: os.path.getmtime(corpus / f) for f in files_under(corpus)} == before
    assert_nothing_written_outside(dirs)


def test_hostile_wav_headers_in_a_corpus_are_reported_not_crashed_on(tmp_path):
    """Truncated and corrupted WAV files in a corpus: on_error=error stops with a one-line
    message naming a bad file; the reader itself raises AudioError for each (tests of many more
    such files are in test_properties.py)."""
    corpus = tmp_path / "corpus"
    for label in ("speech", "music"):
        (corpus / label).mkdir(parents=True)
        for i in range(10):
            write_tone(corpus / label / f"{label}{i}.wav", 1.2, 16000, 200 + 30 * i)
    good = (corpus / "speech" / "speech0.wav").read_bytes()
    (corpus / "speech" / "truncated.wav").write_bytes(good[:30])
    (corpus / "music" / "garbage.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEfmt " + b"\x00" * 40)
    for bad in ("speech/truncated.wav", "music/garbage.wav"):
        with pytest.raises(audio.AudioError, match=bad.split("/")[1]):
            audio.load(corpus / bad, 16000)
    r = train_cli(tmp_path / "run", f"--data=folder:{corpus}")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")
    assert "truncated.wav" in r.stderr and "garbage.wav" in r.stderr, r.stderr


def test_a_checkpoint_that_cannot_fit_is_refused_before_orbax_starts(monkeypatch, tmp_path):
    import collections

    import numpy as np

    from speechmusic_jax.training import checkpoints

    ckpts = checkpoints.Checkpoints(str(tmp_path))
    state = {"w": np.ones(1000, np.float32)}
    ckpts.save(1, state, {"epoch": 1})
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _p: usage(10, 10, 1000))
    with pytest.raises(OSError) as err:
        ckpts.save(2, state, {"epoch": 2})
    assert err.value.errno == errno.ENOSPC and err.value.filename.endswith("epoch_0002")
    assert ckpts.last()["epoch"] == 1
    assert not os.path.exists(os.path.join(ckpts.dir, "epoch_0002"))
