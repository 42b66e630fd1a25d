"""How close a step comes to what its device can do: peak FLOP rates and memory bandwidth, and
the roofline bound that XLA's cost analysis implies.

Accelerators: published dense peaks per device kind (float32 and bfloat16 FLOP/s, memory
bandwidth), from the vendors' data sheets; a device kind that is not listed gets no published
peak. CPUs have no useful published figure (it depends on the model, the vector units, the
clock and the cores this process may use), so on a CPU the peak is *measured in the same run*:
a large matmul in the benchmark's precision (:func:`matmul_probe`) and a large read
(:func:`bandwidth_probe`), with the same threads the step uses.
"""

from __future__ import annotations

import statistics
from typing import Any

import jax
import jax.numpy as jnp

from speechmusic_jax import timing

# device_kind (as jax reports it, matched by prefix) -> float32 and bfloat16 dense FLOP/s
# (no sparsity), and memory bandwidth in bytes/s. TPUs compute float32 matmuls in several
# bfloat16 passes and publish no float32 peak.
PUBLISHED: dict[str, dict[str, float | None]] = {
    "NVIDIA H200": {"float32": 67e12, "bfloat16": 989e12, "bandwidth": 4.8e12},
    "NVIDIA H100 80GB HBM3": {"float32": 67e12, "bfloat16": 989e12, "bandwidth": 3.35e12},
    "NVIDIA H100 PCIe": {"float32": 51e12, "bfloat16": 756e12, "bandwidth": 2.0e12},
    "NVIDIA A100-SXM4-80GB": {"float32": 19.5e12, "bfloat16": 312e12, "bandwidth": 2.04e12},
    "NVIDIA A100-SXM4-40GB": {"float32": 19.5e12, "bfloat16": 312e12, "bandwidth": 1.56e12},
    "NVIDIA A100-PCIE-40GB": {"float32": 19.5e12, "bfloat16": 312e12, "bandwidth": 1.56e12},
    "NVIDIA L4": {"float32": 30.3e12, "bfloat16": 121e12, "bandwidth": 0.3e12},
    "NVIDIA A10": {"float32": 31.2e12, "bfloat16": 125e12, "bandwidth": 0.6e12},
    "Tesla V100-SXM2-16GB": {"float32": 15.7e12, "bfloat16": None, "bandwidth": 0.9e12},
    "Tesla T4": {"float32": 8.1e12, "bfloat16": None, "bandwidth": 0.32e12},
    "TPU v4": {"float32": None, "bfloat16": 275e12, "bandwidth": 1.2e12},
    "TPU v5 lite": {"float32": None, "bfloat16": 197e12, "bandwidth": 0.82e12},
    "TPU v5e": {"float32": None, "bfloat16": 197e12, "bandwidth": 0.82e12},
    "TPU v5p": {"float32": None, "bfloat16": 459e12, "bandwidth": 2.76e12},
    "TPU v6 lite": {"float32": None, "bfloat16": 918e12, "bandwidth": 1.64e12},
    "TPU v6e": {"float32": None, "bfloat16": 918e12, "bandwidth": 1.64e12},
}


def published(device_kind: str) -> dict[str, float | None] | None:
    """The published peaks of ``device_kind`` (longest matching prefix), or None."""
    matches = [k for k in PUBLISHED if device_kind.startswith(k)]
    return PUBLISHED[max(matches, key=len)] if matches else None


def matmul_probe(precision: str = "float32", n: int = 2048, repeats: int = 7,
                 device: Any = None) -> float:
    """Measured FLOP/s of an n x n matmul in ``precision`` on ``device`` (median of repeats)."""
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    device = device or jax.devices()[0]
    a = jax.device_put(jnp.ones((n, n), dtype) * 0.5, device)
    f = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / statistics.median(timing.time_calls(lambda: f(a), repeats))


def bandwidth_probe(megabytes: int = 256, repeats: int = 7, device: Any = None) -> float:
    """Measured bytes/s of reading a large float32 array (a sum over it). A read, not a copy:
    a copy into a fresh buffer also pays the operating system's first touch of every page,
    which on a CPU costs more than the transfer and would understate the memory's bandwidth."""
    device = device or jax.devices()[0]
    n = megabytes * 2**20 // 4
    a = jax.device_put(jnp.ones((n,), jnp.float32), device)
    f = jax.jit(jnp.sum)
    return 4 * n / statistics.median(timing.time_calls(lambda: f(a), repeats))


def peaks(device_kind: str, platform: str, precision: str) -> dict[str, Any]:
    """The peak FLOP/s and bandwidth to compare a step with: published for a listed accelerator,
    measured now on a CPU (or an accelerator that is not listed)."""
    table = published(device_kind) if platform != "cpu" else None
    flops = table.get(precision) if table else None
    bandwidth = table.get("bandwidth") if table else None
    source = "published"
    if flops is None or bandwidth is None:
        flops = flops or matmul_probe(precision)
        bandwidth = bandwidth or bandwidth_probe()
        source = "measured in this run (2048 x 2048 matmul, sum over 256 MiB)"
    return {"peak_flops_per_s": flops, "peak_bytes_per_s": bandwidth, "peak_source": source}


def utilisation(flops: float | None, bytes_accessed: float | None, seconds: float,
                peak: dict[str, Any]) -> dict[str, float | None]:
    """Achieved FLOP/s and its share of the peak; the roofline bound (the slower of compute at
    peak and memory traffic at peak bandwidth) and the share of it the step achieves."""
    out: dict[str, float | None] = {"achieved_flops_per_s": None, "peak_fraction": None,
                                    "roofline_s": None, "roofline_fraction": None,
                                    "arithmetic_intensity": None}
    if flops:
        out["achieved_flops_per_s"] = flops / seconds
        out["peak_fraction"] = flops / seconds / peak["peak_flops_per_s"]
    if flops and bytes_accessed:
        bound = max(flops / peak["peak_flops_per_s"], bytes_accessed / peak["peak_bytes_per_s"])
        out["roofline_s"] = bound
        out["roofline_fraction"] = bound / seconds
        out["arithmetic_intensity"] = flops / bytes_accessed
    return out
