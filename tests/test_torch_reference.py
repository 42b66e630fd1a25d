"""The PyTorch twin that `benchmark --compare=torch` times is the same network as ours.

Needs the [bench] extra (torch); `.ci/bench.sh` runs this file in its own environment, where
SPEECHMUSIC_REQUIRE_TORCH turns the skip into a failure. In the main suite it skips.
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


def test_compare_torch_alternates_and_reports_each_pairs_ratio(tmp_path):
    out = tmp_path / "compare.json"
    r = subprocess.run(
        [sys.executable, "-m", "speechmusic_jax.benchmark", "--compare=torch",
         "--config=experiments/m5_small.py:tiny", "--steps=3", "--rounds=2",
         f"--output={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["what"] == "compare" and result["versions"]["torch"].startswith("2.13.0")
    (row,) = result["results"]
    for kind in ("train", "infer"):
        assert len(row[kind]) == 2  # two rounds, each a JAX block then a PyTorch block
        for pair in row[kind]:
            assert pair["ratio"] == pytest.approx(pair["torch_ms"] / pair["jax_ms"])
        assert row[f"{kind}_ratio"]["min"] <= row[f"{kind}_ratio"]["median"]
    assert 0 < row["jax_train_peak_fraction"] < 1.5
    assert "PyTorch / JAX" in r.stdout
    # both sides under one allocator policy: the command's default, applied in the worker too
    if platform.libc_ver()[0] == "glibc":
        assert result["host_memory"] == {"jax": "keep", "torch": "keep"}
