"""The data benchmark: loader examples/s next to the train step's consumption."""

from __future__ import annotations

import json
import os

import pytest
from audio_fixtures import make_folder_tree

from speechmusic_jax import benchmark
from speechmusic_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_data_reports_both_rates(tmp_path):
    root = make_folder_tree(tmp_path / "corpus", per_class=10)
    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    cfg.data.spec = f"folder:{root}"
    cfg.data.cache_dir = str(tmp_path / "cache")
    logs: list[str] = []
    out = tmp_path / "bench.json"
    result = benchmark.run("data", cfg, {"epochs": 2, "steps": 3}, log=logs.append,
                           output=str(out))
    with open(out) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    assert result["what"] == "data" and result["workers"] == cfg.data.workers
    assert result["loader_examples_per_s"] > 0 and result["step_examples_per_s"] > 0
    assert len(result["loader_examples_per_s_by_epoch"]) == 2
    # The epoch is the training split in whole batches (70 % of 20 files, batch 8: 14 -> 8).
    assert result["train_files"] == 14 and result["examples_per_epoch"] == 8
    assert 0 <= result["together_data_wait_fraction"] <= 1
    assert isinstance(result["ok"], bool) and result["step_time_ms"]["n"] == 3
    assert any(m.startswith("loader / step = ") for m in logs)
    # The host's cost per example, and what it could feed: consistent with each other.
    cpu = result["host_cpu_s_per_example"]
    assert cpu > 0 and result["host_augment_cpu_s_per_example"] == 0  # no pause shortening
    assert result["host_read_cpu_s_per_example"] == pytest.approx(cpu)
    assert result["step_need_host_cores"] == pytest.approx(result["step_examples_per_s"] * cpu)
    shortest = result["shortest_step_ms_by_host_cores"]
    assert list(shortest)[:4] == ["1", "2", "4", "8"]
    for cores, ms in shortest.items():
        assert ms == pytest.approx(1e3 * 8 * cpu / int(cores))
    assert result["together_over_step"] == pytest.approx(
        result["together_examples_per_s"] / result["step_examples_per_s"])
    assert result["device_augment_ms"] is None  # the tiny config augments nothing
    assert result["step_augment_examples_per_s"] == result["step_examples_per_s"]
    assert result["together_over_step_augment"] == result["together_over_step"]


def test_benchmark_data_times_the_augmentation_on_the_device_and_pauses_on_the_host(tmp_path):
    root = make_folder_tree(tmp_path / "corpus", per_class=10)
    cfg = config_lib.load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
    cfg.data.spec = f"folder:{root}"
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.augment.gain_db = 6.0
    cfg.data.augment.noise_prob = 0.5
    cfg.data.augment.pause_prob = 0.5
    result = benchmark.run("data", cfg, {"epochs": 2, "steps": 3}, log=lambda _: None)
    assert result["device_augment_ms"]["n"] == 3 and result["device_augment_ms"]["median"] > 0
    # the step plus the augmentation, each alone: slower than the step alone, by the augmentation
    step_ms, augment_ms = result["step_time_ms"]["median"], result["device_augment_ms"]["median"]
    assert result["step_augment_examples_per_s"] == pytest.approx(
        8 / ((step_ms + augment_ms) / 1e3), rel=1e-3)
    assert result["step_augment_examples_per_s"] < result["step_examples_per_s"]
    assert result["together_over_step_augment"] == pytest.approx(
        result["together_examples_per_s"] / result["step_augment_examples_per_s"])
    assert 0 < result["host_augment_cpu_s_per_example"] <= result["host_cpu_s_per_example"]
    assert result["host_read_cpu_s_per_example"] == pytest.approx(
        result["host_cpu_s_per_example"] - result["host_augment_cpu_s_per_example"])


def test_unknown_benchmark():
    with pytest.raises(config_lib.ConfigError, match="--what: unknown benchmark 'disk'; known: "
                                                     "compare_torch, data, step"):
        benchmark.run("disk", config_lib.base_config(), {})


def test_step_benchmark_reports_measured_figures(tiny_config, tmp_path):
    import json

    from speechmusic_jax import benchmark

    out = tmp_path / "step.json"
    result = benchmark.run("step", tiny_config, {"batch_sizes": [1, 8], "steps": 3},
                           log=lambda _: None, output=str(out))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [r["batch_size"] for r in result["results"]] == [1, 8]
    for r in result["results"]:
        st = r["step_ms"]
        assert 0 < st["min"] <= st["median"] <= st["max"] and st["n"] == 3
        assert r["examples_per_s"] > 0 and r["compile_s"] > 0
        assert r["inference"]["examples_per_s"] > 0
        assert r["devices"] == 1 and r["examples_per_s_per_device"] == r["examples_per_s"]
        # utilisation against the peak measured in the same run (a CPU here)
        assert 0 < r["peak_fraction"] < 1.5 and r["bytes_accessed_per_step"] > 0
        assert r["roofline_s"] > 0 and r["roofline_fraction"] == pytest.approx(
            r["roofline_s"] / (st["median"] / 1e3))
        assert r["audio_seconds_per_s"] == pytest.approx(
            r["examples_per_s"] * result["input_samples"] / result["sample_rate"])
    assert result["params_trainable"] > 0 and result["device_kind"]
    assert result["peak_source"].startswith("measured") and result["peak_flops_per_s"] > 1e9
    assert result["peak_memory_bytes"] > 0 and "cpu_model" in result


def test_published_peaks_are_found_by_device_kind_prefix():
    from speechmusic_jax import utilisation

    assert utilisation.published("NVIDIA H200")["bfloat16"] == 989e12
    assert utilisation.published("NVIDIA A100-SXM4-80GB")["bandwidth"] == 2.04e12
    assert utilisation.published("TPU v5 lite")["float32"] is None
    assert utilisation.published("cpu") is None
    # the roofline: the slower of compute at peak and traffic at peak bandwidth
    u = utilisation.utilisation(2e9, 4e8, 0.1, {"peak_flops_per_s": 1e11,
                                                "peak_bytes_per_s": 1e10})
    assert u["achieved_flops_per_s"] == pytest.approx(2e10)
    assert u["peak_fraction"] == pytest.approx(0.2)
    assert u["roofline_s"] == pytest.approx(0.04) and u["roofline_fraction"] == pytest.approx(0.4)


def test_step_benchmark_refuses_device_counts_it_cannot_time(tiny_config):
    import jax

    from speechmusic_jax import benchmark

    many = len(jax.devices()) + 1
    with pytest.raises(config_lib.ConfigError, match=f"--devices: {many} is not between 1"):
        benchmark.run("step", tiny_config, {"batch_sizes": [8], "steps": 3, "devices": [many]},
                      log=lambda _: None)


def test_step_benchmark_trains_the_configs_loss(tiny_config):
    """The benchmark's step is the run's step: the L2 penalty of the config changes its
    trajectory (a hand-made copy of the step once left the penalties out)."""
    def last_loss(l2: float) -> float:
        cfg = tiny_config.copy_and_resolve_references()
        cfg.train.l2 = l2
        result = benchmark.run("step", cfg, {"batch_sizes": [8], "steps": 3}, log=lambda _: None)
        return result["results"][0]["loss_last"]

    assert last_loss(0.0) != last_loss(10.0)


@pytest.mark.slow  # suite time: the README's benchmark command runs the same default path
def test_benchmark_without_what_times_the_step(tmp_path):
    """`benchmark` with no --what does what its help says: the step benchmark."""
    import subprocess
    import sys

    out = tmp_path / "step.json"
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.benchmark",
                        "--config=experiments/default.py:tiny", "--batch_sizes=8", "--steps=3",
                        f"--output={out}"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["what"] == "step"
    help_text = subprocess.run([sys.executable, "-m", "speechmusic_jax.benchmark", "--helpfull"],
                               cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    assert "(default step)" in " ".join(help_text.split())


def test_other_load_does_not_count_a_worker_being_timed():
    """The PyTorch worker of --compare=torch is part of its own timing, not other load."""
    import os
    import time

    from speechmusic_jax import timing

    seconds = timing._process_seconds(os.getpid())
    if seconds is None:
        pytest.skip("no /proc here")
    assert abs(seconds - time.process_time()) < 0.5
    assert timing._process_seconds(2**22 + 12345) is None  # no such process
