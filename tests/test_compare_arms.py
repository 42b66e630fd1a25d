"""How `benchmark --compare=torch` orders, pins and tabulates its arms (no torch needed: the
runs themselves are in tests/test_torch_reference.py, which `.ci/bench.sh` runs)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from speechmusic_jax import torch_compare as tc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_abba_gives_every_arm_the_same_mean_place_in_time():
    order = tc.abba(["a", "b", "c"], 4)
    assert order == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"], ["c", "b", "a"]]
    places = {x: [] for x in "abc"}
    for r, names in enumerate(order):
        for i, name in enumerate(names):
            places[name].append(r * 3 + i)
    means = {sum(p) / len(p) for p in places.values()}
    assert len(means) == 1  # a steady drift weighs on each arm alike


def test_arms_run_each_torch_arm_next_to_jax_under_its_policy_and_tabulate_as_asked():
    arms = tc.arms(["release", "keep"], torch_compile=True)
    assert [(a.side, a.allocator) for a in arms] == [
        (tc.JAX, "release"), (tc.EAGER, "release"), (tc.COMPILED, "release"),
        (tc.JAX, "keep"), (tc.EAGER, "keep"), (tc.COMPILED, "keep")]
    assert [a.side for a in tc.arms(["keep"], torch_compile=False)] == [tc.JAX, tc.EAGER]
    rows = [{"side": a.side, "allocator": a.allocator} for a in arms]
    # each framework as it comes first (ours under keep, PyTorch under glibc's release), then
    # the other policy; compiled PyTorch under each
    assert [(r["side"], r["allocator"]) for r in tc.table_order(rows)] == [
        (tc.JAX, "keep"), (tc.JAX, "release"), (tc.EAGER, "release"), (tc.EAGER, "keep"),
        (tc.COMPILED, "release"), (tc.COMPILED, "keep")]


def _blocks(arms, rounds, ms):
    """Blocks in ABBA order with the times ``ms[(arm name, kind)][round - 1]``."""
    return [{"round": r, "kind": kind, "arm": a.name, "median_ms": ms[(a.name, kind)][r - 1]}
            for r, order in enumerate(tc.abba(arms, rounds), start=1)
            for kind in ("train", "infer") for a in order]


def test_a_row_divides_by_jax_under_the_same_policy_round_by_round_and_keeps_compile_apart():
    arms = tc.arms(["release", "keep"], torch_compile=True)
    ms = {}
    for i, a in enumerate(arms):
        ms[(a.name, "train")] = [10.0 * (i + 1), 12.0 * (i + 1)]
        ms[(a.name, "infer")] = [2.0 * (i + 1), 3.0 * (i + 1)]
    blocks = _blocks(arms, 2, ms)
    threads = {"requested": 2, "in_effect": 2, "cores": [0, 1]}
    jax_info = {"host_memory": "keep", "threads": threads, "train_flops": 1e9,
                "compile_s": {"train": 4.0, "infer": 1.0}, "matmul_flops_per_s": 2e11}
    first = {"train": [5.0, 0.2, 0.1], "infer": [1.0, 0.05]}
    compiled = tc._row(arms[5], blocks, first, {"host_memory": "keep", "threads": threads},
                       None)
    # compiled/keep (arm 6) over jax/keep (arm 4), in each round
    assert compiled["train_ratio"]["per_round"] == pytest.approx([60 / 40, 72 / 48])
    assert compiled["infer_ratio"]["per_round"] == pytest.approx([12 / 8, 18 / 12])
    assert compiled["train_ms"]["median"] == pytest.approx(66.0)
    # compilation: the first calls less as many steady steps; never in a step time
    assert compiled["compile_s"]["train"] == pytest.approx(5.3 - 3 * 0.066)
    assert compiled["compile_s"]["infer"] == pytest.approx(1.05 - 2 * 0.015)
    assert compiled["train_ratio_to_default"] == compiled["train_ratio"]  # keep: ours
    eager = tc._row(arms[1], blocks, first, {"host_memory": "release", "threads": threads},
                    None)
    assert eager["compile_s"] is None and eager["default_allocator"]
    assert eager["train_ratio"]["per_round"] == pytest.approx([20 / 10, 24 / 12])
    # PyTorch as it comes against JAX as it comes (eager/release over jax/keep)
    assert eager["train_ratio_to_default"]["per_round"] == pytest.approx([20 / 40, 24 / 48])
    ours = tc._row(arms[3], blocks, first, jax_info, {**jax_info, "matmul_flops_per_s": 1e11})
    assert ours["train_ratio"] is None and ours["train_ratio_to_default"] is None
    assert ours["compile_s"] == jax_info["compile_s"] and ours["default_allocator"]
    assert ours["train_peak_fraction"] == pytest.approx(1e9 / 0.044 / 2e11)
    released = tc._row(arms[0], blocks, first, {**jax_info, "host_memory": "release"}, jax_info)
    assert released["train_ratio_to_default"]["per_round"] == pytest.approx([10 / 40, 12 / 48])
    lines = tc.format_table(tc.table_order(
        [tc._row(a, blocks, first, {**jax_info, "host_memory": a.allocator}, jax_info)
         for a in arms]))
    assert len(lines) == 8 and "compile s" in lines[0] and lines[-1].startswith("* ")
    assert [line.split()[:2] for line in lines[1:7]] == [
        ["JAX", "(ours)"], ["JAX", "(ours)"], ["PyTorch", "eager"], ["PyTorch", "eager"],
        ["PyTorch", "torch.compile"], ["PyTorch", "torch.compile"]]
    assert [line.split()[2] for line in lines[1:7]] == [
        "keep*", "release", "release*", "keep", "release*", "keep"]
    assert all("(ours)" in line for line in lines[1:7] if line.startswith("JAX"))


def test_a_missing_cpp_compiler_is_one_line_before_any_work():
    env = dict(os.environ, CXX="/nonexistent/g++")
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.benchmark", "--compare=torch",
                        "--torch_compile", "--config=experiments/m5_small.py:tiny"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "C++ compiler" in line and "/nonexistent/g++" in line and "--torch_compile" in line


@pytest.mark.skipif(platform.system() != "Linux", reason="pinning and /proc are Linux's")
def test_pinning_sizes_xlas_thread_pool():
    code = ("from speechmusic_jax import worker_protocol as w\n"
            "cores = w.pin_threads(1)\n"
            "import jax, jax.numpy as jnp\n"
            "(jnp.ones((256, 256)) @ jnp.ones((256, 256))).block_until_ready()\n"
            "print(len(cores), w.threads_named('tf_XLAEigen'))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["1", "1"]
