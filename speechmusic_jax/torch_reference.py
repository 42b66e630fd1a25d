"""The same network in PyTorch, timed in its own process for ``benchmark --compare=torch``.

    python -m speechmusic_jax.torch_reference --spec=JSON --batch=B --samples=L
        [--precision=float32|bfloat16] [--threads=N]

builds the PyTorch twin of a plain (non-residual) M-network preset (``ModelSpec`` as JSON):
a strided stem conv without padding, then kernel-k convs with "same" padding, each followed by
batch norm (momentum 0.1 in PyTorch's convention = our 0.9), ReLU and max-pooling, global average
pooling and a linear layer; Adam at the same learning rate. Input is (batch, 1, samples), as
PyTorch's Conv1d wants. It then serves timing requests on stdin, one per line, so that the
caller can alternate JAX and PyTorch blocks in one run without paying start-up each time::

    info                 -> {"params": ..., "layers": [[name, shape], ...], "torch": version}
    train N              -> {"step_s": [N step times]}     (eager Adam train steps)
    infer N BATCH        -> {"step_s": [N forward times]}  (inference mode, batch BATCH)
    quit

Each answer is one JSON line on stdout. Nothing is imported from the JAX side: only numpy,
torch (the ``[bench]`` extra, pinned so that a CPU run does not pull a CUDA build) and
``host_memory`` (standard library only), so that both sides run under one allocator policy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

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
    parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    parser.add_argument("--host_memory", choices=["keep", "release"], default="release",
                        help="the allocator policy of speechmusic_jax/host_memory.py (the JAX "
                        "side's, for a comparison under one allocator)")
    args = parser.parse_args()
    host_memory = apply_host_memory(args.host_memory)  # before torch allocates

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

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        loss.item()  # eager CPU is synchronous; this also keeps the step honest elsewhere

    def infer(batch: int) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x[:batch]).float().sum().item()

    def timed(fn, n: int) -> list[float]:  # noqa: ANN001
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "info":
            answer = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                      "layers": [[name, list(p.shape)] for name, p in model.named_parameters()],
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "host_memory": host_memory}
        elif words[0] == "train":
            model.train()
            answer = {"step_s": timed(train_step, int(words[1]))}
        elif words[0] == "infer":
            model.eval()
            batch = int(words[2])
            answer = {"step_s": timed(lambda b=batch: infer(b), int(words[1]))}
        else:
            answer = {"error": f"unknown request {line.strip()!r}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
