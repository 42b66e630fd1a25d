"""The same network in PyTorch, timed in its own process for ``benchmark --compare=torch``.

    python -m speechmusic_jax.torch_reference --spec=JSON --batch=B --samples=L
        [--precision=float32|bfloat16] [--threads=N] [--host_memory=keep|release] [--compile]

builds the PyTorch twin of a plain (non-residual) M-network preset (``ModelSpec`` as JSON):
a strided stem conv without padding, then kernel-k convs with "same" padding, each followed by
batch norm (momentum 0.1 in PyTorch's convention = our 0.9), ReLU and max-pooling, global average
pooling and a linear layer; Adam at the same learning rate. Input is (batch, 1, samples), as
PyTorch's Conv1d wants. Eager by default; with ``--compile``, ``torch.compile`` (inductor, its
default mode) of the forward pass with its loss, of the inference forward pass and of Adam's
step, compiled on their first calls (which the caller times apart as compilation). It then
serves timing requests on stdin (:mod:`speechmusic_jax.worker_protocol`: ``info``,
``train N``, ``infer N BATCH``, ``quit``), so that the caller can alternate JAX and PyTorch
blocks in one run without paying start-up each time. ``info`` answers the parameter count and
tensors, the torch version, whether it is compiled, the threads and the allocator in effect.

Nothing is imported from the JAX side: only numpy, torch (the ``[bench]`` extra, pinned so that a
CPU run does not pull a CUDA build), ``host_memory`` and ``worker_protocol`` (standard library
only), so that both sides run under one allocator policy and one thread count.
"""

from __future__ import annotations

import argparse
import json
import sys

from speechmusic_jax import worker_protocol
from speechmusic_jax.host_memory import apply as apply_host_memory


def build(spec: dict, torch):  # noqa: ANN001 (torch is the module, imported by the caller)
    nn = torch.nn
    supported = (spec["frontend"] == "raw" and spec.get("input_norm", "none") == "none"
                 and not spec["residual"] and spec["norm"] == "batch"
                 and spec["activation"] == "relu" and spec["pool"] == "max"
                 and spec["global_pool"] == "avg" and not spec["head_hidden"]
                 and not spec["stage_kernel"] and not spec["stage_stride"]
                 and not spec["stage_dilation"])
    if not supported:
        raise ValueError("torch_reference: only plain M-networks (raw waveform, batch norm, "
                         "ReLU, max-pool, no residual blocks, average pooling, no hidden head)")

    def block(cin: int, cout: int, kernel: int, stride: int, padding, pool: int) -> list:
        layers = [nn.Conv1d(cin, cout, kernel, stride=stride, padding=padding),
                  nn.BatchNorm1d(cout, eps=1e-5, momentum=0.1), nn.ReLU()]
        return layers + ([nn.MaxPool1d(pool)] if pool > 1 else [])

    layers = block(1, spec["stem_filters"], spec["stem_kernel"], spec["stem_stride"], 0,
                   spec["stem_pool"])
    cin = spec["stem_filters"]
    for filters, repeats, pool in zip(spec["stage_filters"], spec["stage_repeats"],
                                      spec["stage_pool"], strict=True):
        for r in range(repeats):
            layers += block(cin, filters, spec["kernel_size"], 1, "same",
                            pool if r == repeats - 1 else 1)
            cin = filters

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(cin, spec["num_classes"])

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.head(self.features(x).mean(dim=-1))

    return Net()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, help="ModelSpec as JSON")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads, on as many "
                        "cores (0: PyTorch's default, on every core)")
    parser.add_argument("--host_memory", choices=["keep", "release"], default="release",
                        help="the allocator policy of speechmusic_jax/host_memory.py (the JAX "
                        "side's, for a comparison under one allocator)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (inductor) the "
                        "forward pass with its loss and the optimizer step")
    args = parser.parse_args()
    host_memory = apply_host_memory(args.host_memory)  # before torch allocates
    cores = worker_protocol.pin_threads(args.threads) if args.threads else None

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(json.loads(args.spec), torch)
    opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.batch, 1, args.samples), dtype=np.float32))
    y = torch.from_numpy((np.arange(args.batch) % model.head.out_features).astype(np.int64))
    bf16 = args.precision == "bfloat16"

    def loss_of(x, y):  # noqa: ANN001, ANN202
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.nn.functional.cross_entropy(model(x).float(), y)

    def forward(x):  # noqa: ANN001, ANN202
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x).float().sum()

    optimizer_step = opt.step
    if args.compile:  # compiled on first use: the caller's first calls carry the compilation
        loss_of, forward = torch.compile(loss_of), torch.compile(forward)
        optimizer_step = torch.compile(opt.step)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(x, y)
        loss.backward()
        optimizer_step()
        loss.item()  # CPU work is synchronous; this also keeps the step honest elsewhere

    def infer(batch: int) -> None:
        with torch.inference_mode():
            forward(x[:batch]).item()

    def train(n: int) -> list[float]:
        model.train()
        return worker_protocol.timed(train_step, n)

    def infer_block(n: int, batch: int) -> list[float]:
        model.eval()
        return worker_protocol.timed(lambda: infer(batch), n)

    def info() -> dict:
        return {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "layers": [[name, list(p.shape)] for name, p in model.named_parameters()],
                "torch": torch.__version__, "compiled": args.compile,
                "compile_mode": "default (inductor)" if args.compile else None,
                "threads": {"requested": args.threads or None,
                            "in_effect": torch.get_num_threads(), "cores": cores},
                "host_memory": host_memory}

    worker_protocol.serve(info, train, infer_block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
