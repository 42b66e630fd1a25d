"""The PyTorch twin that `benchmark --compare=torch` times is the same network as ours.

Needs the [bench] extra (torch); `.ci/bench.sh` runs this file in its own environment, where
SPEECHMUSIC_REQUIRE_TORCH turns the skip into a failure. In the main suite it skips. The
torch.compile arm's test is marked slow (inductor takes minutes on a busy 2-core machine):
`.ci/bench.sh -m slow` runs it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from speechmusic_jax.config import load_experiment
from speechmusic_jax.training import builder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
except ImportError:
    torch = None
    if os.environ.get("SPEECHMUSIC_REQUIRE_TORCH"):
        raise
pytestmark = pytest.mark.skipif(torch is None, reason="needs the [bench] extra (torch); "
                                "`.ci/bench.sh` runs these tests in their own environment")


def _built(name: str):
    return builder.build(load_experiment(os.path.join(REPO, "experiments", f"{name}.py")))


def _copy_weights(built, net) -> None:
    """Our initial weights into the PyTorch twin (its layout: (out, in, kernel) convs, (out,
    in) linear layers; batch norm's scale is its weight, the running averages its buffers)."""
    params, stats = built.state.params, built.state.model_state
    layers = [("stem", "stem_norm")] + [
        (("stages", i, j, "conv1"), ("stages", i, j, "norm1"))
        for i, repeats in enumerate(built.spec.stage_repeats) for j in range(repeats)]

    def at(tree, path):
        node = tree
        for p in path if isinstance(path, tuple) else (path,):
            node = node[p]
        return node

    convs = [m for m in net.features if isinstance(m, torch.nn.Conv1d)]
    norms = [m for m in net.features if isinstance(m, torch.nn.BatchNorm1d)]
    with torch.no_grad():
        for (conv_path, norm_path), conv, norm in zip(layers, convs, norms, strict=True):
            kernel = np.asarray(at(params, conv_path)["kernel"][...])  # (width, in, out)
            conv.weight.copy_(torch.from_numpy(kernel.transpose(2, 1, 0).copy()))
            conv.bias.copy_(torch.tensor(np.asarray(at(params, conv_path)["bias"][...])))
            layer, running = at(params, norm_path)["layer"], at(stats, norm_path)["layer"]
            norm.weight.copy_(torch.tensor(np.asarray(layer["scale"][...])))
            norm.bias.copy_(torch.tensor(np.asarray(layer["bias"][...])))
            norm.running_mean.copy_(torch.tensor(np.asarray(running["mean"][...])))
            norm.running_var.copy_(torch.tensor(np.asarray(running["var"][...])))
        net.head.weight.copy_(torch.tensor(np.asarray(params["head"]["kernel"][...]).T.copy()))
        net.head.bias.copy_(torch.tensor(np.asarray(params["head"]["bias"][...])))


@pytest.mark.parametrize("name, params", [("m5", 555_010), ("m5_small", 24_770)])
def test_the_twin_has_our_layers_and_computes_our_logits(name, params):
    import dataclasses

    from speechmusic_jax import torch_compare, torch_reference

    built = _built(name)
    net = torch_reference.build(dataclasses.asdict(built.spec), torch)
    info = {"params": sum(p.numel() for p in net.parameters()),
            "layers": [[n, list(p.shape)] for n, p in net.named_parameters()]}
    assert built.params_trainable == info["params"] == params
    assert torch_compare.same_network(built.state.params, info) is None
    # the same weights give the same logits (inference mode: running statistics)
    _copy_weights(built, net)
    net.eval()
    x = np.random.default_rng(0).standard_normal((2, built.segment)).astype(np.float32)
    ours = np.asarray(builder.predictor(built, built.state)(x))
    with torch.inference_mode():
        theirs = net(torch.from_numpy(x[:, None, :])).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_a_different_network_is_refused():
    from speechmusic_jax import torch_compare

    built = _built("m5_small")
    info = {"params": built.params_trainable + 1, "layers": []}
    assert "parameters in JAX" in torch_compare.same_network(built.state.params, info)


def _compare(tmp_path, *flags: str) -> tuple[dict, str]:
    out = tmp_path / "compare.json"
    r = subprocess.run(
        [sys.executable, "-m", "speechmusic_jax.benchmark", "--compare=torch",
         "--config=experiments/m5_small.py:tiny", "--steps=3", "--rounds=2", "--threads=1",
         f"--output={out}", *flags], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout


def _check_table(result: dict, stdout: str, want: list[tuple[str, str]],
                 allocators: list[str]) -> None:
    """The rows ``want`` (side, policy), in that order; blocks in ABBA order; threads and
    allocator recorded as in effect; compile time apart from the step times."""
    from speechmusic_jax import torch_compare as tc

    assert result["what"] == "compare" and result["versions"]["torch"].startswith("2.13.0")
    assert result["order"] == "ABBA" and result["threads"] == 1
    (batch,) = result["results"]
    rows = batch["rows"]
    assert [(r["side"], r["allocator"]) for r in rows] == want
    arms = tc.arms(allocators, any(side == tc.COMPILED for side, _ in want))
    for kind in ("train", "infer"):  # forwards in round 1, backwards in round 2
        ran = [(b["round"], b["arm"]) for b in batch["blocks"] if b["kind"] == kind]
        assert ran == [(1, a.name) for a in arms] + [(2, a.name) for a in reversed(arms)]
    glibc = platform.libc_ver()[0] == "glibc"
    for row in rows:
        assert row["threads"]["requested"] == 1
        if platform.system() == "Linux":  # XLA's pool and torch.get_num_threads(), as they are
            assert row["threads"]["in_effect"] == 1 and len(row["threads"]["cores"]) == 1
        if glibc:
            assert row["allocator_in_effect"] == row["allocator"]
        assert len(row["train_ms"]["per_round"]) == 2
        if row["side"] == tc.JAX:
            assert row["train_ratio"] is None and row["compile_s"]["train"] > 0
            assert 0 < row["train_peak_fraction"] < 1.5
            continue
        same = next(r for r in rows if r["side"] == tc.JAX and
                    r["allocator"] == row["allocator"])
        default = next(r for r in rows if r["side"] == tc.JAX and r["default_allocator"])
        for kind in ("train", "infer"):
            for key, ours in ((f"{kind}_ratio", same), (f"{kind}_ratio_to_default", default)):
                assert row[key]["per_round"] == pytest.approx(
                    [a / b for a, b in zip(row[f"{kind}_ms"]["per_round"],
                                           ours[f"{kind}_ms"]["per_round"], strict=True)])
        if row["side"] == tc.EAGER:
            assert row["compile_s"] is None
        else:  # compiled in the first calls, which no timed block contains
            assert row["compile_s"]["train"] > 0 and row["compile_s"]["infer"] > 0
            assert sum(row["first_calls_s"]["train"]) > row["train_ms"]["max"] / 1e3
    table = [line for line in stdout.splitlines() if line.startswith(("JAX (ours)", "PyTorch "))]
    assert len(table) == len(rows)
    assert "compile s" in stdout and "/ JAX" in stdout


def test_compare_torch_tabulates_each_framework_under_each_allocator(tmp_path):
    from speechmusic_jax import torch_compare as tc

    result, stdout = _compare(tmp_path)
    # each framework under its default first: ours keep, PyTorch glibc's release
    _check_table(result, stdout, [(tc.JAX, "keep"), (tc.JAX, "release"),
                                  (tc.EAGER, "release"), (tc.EAGER, "keep")],
                 ["release", "keep"])
    assert result["torch_compile"] is False


@pytest.mark.slow  # torch.compile of the tiny model takes minutes on a busy 2-core machine
def test_compare_torch_compiled_arm_has_its_row_and_its_compile_time_apart(tmp_path):
    from speechmusic_jax import torch_compare as tc

    if tc.shutil.which(os.environ.get("CXX") or "g++") is None:
        pytest.skip("torch.compile needs a C++ compiler")
    result, stdout = _compare(tmp_path, "--torch_compile", "--allocators=keep")
    _check_table(result, stdout, [(tc.JAX, "keep"), (tc.EAGER, "keep"), (tc.COMPILED, "keep")],
                 ["keep"])
    assert result["torch_compile"] is True
