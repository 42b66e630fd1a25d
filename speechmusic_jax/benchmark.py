"""Benchmarks. ``--what`` picks one (``step`` by default); each prints its figures and can write
them as JSON.

    python -m speechmusic_jax.benchmark [--what=step] [--config=experiments/NAME.py[:ARG]]
        [--batch_sizes=1,32,128] [--devices=1,2,4] [--steps=30] [--output=FILE.json]
        [--config.FIELD=VALUE ...]
    python -m speechmusic_jax.benchmark --what=data [--config=...] [--data=SPEC] [--epochs=4]
        [--steps=30] [--output=FILE.json]
    python -m speechmusic_jax.benchmark --compare=torch [--config=experiments/m5.py]
        [--torch_compile] [--batch_sizes=32] [--steps=10] [--rounds=4] [--threads=N]
        [--allocators=release,keep] [--torch_python=PATH] [--output=FILE.json]

``step``: the compiled train step of the config's model on random input of the config's crop
length (no data needed), at each batch size: compile time (apart), step time median/min/max
(blocked on every step), examples/s, FLOPs per step from XLA's cost analysis and the FLOP rate
they imply, inference latency and throughput, and the CPU load other processes put on the
machine while the clock ran (figures taken under load are flagged). Tagged with the device kind
and versions, so that accelerators can be compared. It runs on one device (the figures of one
chip, whatever the machine has), or with ``--devices=1,2,4`` on the first 1, 2 and 4 devices in
turn, the batch (a global batch, as in training) split over them: one record per batch size and
device count, with examples/s per device beside the total. Each record also says how close the
step comes to the device (:mod:`speechmusic_jax.utilisation`): achieved FLOP/s and its share of
the peak (published for a listed GPU or TPU, measured in the same run on a CPU: a matmul and a
read), the bytes XLA's cost analysis says the step accesses and the roofline bound they imply,
and throughput in seconds of audio per second.

``--compare=torch``: the train step and inference beside the same network in PyTorch eager and,
with ``--torch_compile``, ``torch.compile`` (inductor; its compile time apart), each side under
each allocator policy (glibc's default ``release``, then ``keep``), every arm a process of its
own with the same thread count, in blocks run in ABBA order; one table of step times, their
ratio to ours under the same policy and compile times (:mod:`speechmusic_jax.torch_compare`;
PyTorch from the ``[bench]`` extra).

``data``: is the input pipeline fast enough? Measurements on the config's training split:

1. the loader alone: examples/s of the host's batches with the thread budget training gives it
   (``data.workers`` reader threads plus one assembling thread), files re-read every epoch
   (with ``data.cache=none``; from the OS page cache, which a second epoch of a real run also
   enjoys). Epoch 1 also checks every file's samples once (NaN/Inf, silence) and is reported
   apart; the headline is the median of the later epochs. Beside it, the host CPU time per
   example (process CPU time, every thread), split into reading (decode, resample, crop) and
   the augmentation still on the host (pause shortening: the per-crop parts run on the device);
2. the train step alone: examples/s it consumes (batch size / median step time, compiled ahead,
   blocked on every step, on a fixed batch), and the device's augmentation of a batch alone;
3. both together, as ``fit`` runs them (one epoch: the loader's prefetch and the feed, whose
   augmentation runs on the device, feeding the step): examples/s, its ratio to the step alone
   and to the step plus the device's augmentation (each timed alone: on a CPU the two share
   the cores with the loader, and this splits the gap between them), and the share of the
   epoch spent waiting for data;
4. what the host can feed: the step's need in host cores (its examples/s times the host CPU
   per example), and the shortest step the loader could keep busy on 1, 2, 4, ... host cores at
   the measured cost per example.

The loader is not the bottleneck when (1) is well above (2) (the target is 3x) and (3) is close
to 1.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from speechmusic_jax import config as config_lib

Log = Callable[[str], None]


def benchmark_data(cfg: config_lib.ConfigDict, *, epochs: int = 4, steps: int = 30,
                   log: Log = print) -> dict:
    """Loader throughput and host cost next to the train step's consumption (module
    docstring)."""
    import jax
    import numpy as np

    from speechmusic_jax import parallel, timing
    from speechmusic_jax.data.pipeline import make_loader_config
    from speechmusic_jax.data.prepare import prepare_data
    from speechmusic_jax.training import builder, feed

    config_lib.validate(cfg)
    if epochs < 2:
        raise config_lib.ConfigError("--epochs: must be at least 2 (epoch 1 is reported apart)")
    data_cfg, batch_size = cfg.data, cfg.train.batch_size
    with tempfile.TemporaryDirectory(prefix="smj-bench-") as tmp:
        data = prepare_data(cfg, tmp, log, resume=False)
    files = data.split["train"]
    train_durations = [data.durations[f.path] for f in files]
    if len(files) < batch_size:
        raise config_lib.ConfigError(f"train.batch_size: {batch_size} is more than the "
                                     f"{len(files)} training files")
    if data_cfg.cache == "device":
        from speechmusic_jax.data import device_cache

        device_cache.check_fits(train_durations, data_cfg.sample_rate, data_cfg.device_cache_mib)
    loader = make_loader_config(cfg, files)
    per_epoch = (len(files) // batch_size) * batch_size
    mesh = parallel.make_mesh()
    t0 = time.perf_counter()
    batches_in = feed.make(loader, mesh, batch_size, cfg.seed, files=files)  # as fit makes it
    feed_s = time.perf_counter() - t0

    # 1. The loader alone: wall time and the host's CPU time (every thread of this process).
    def run_epoch(epoch: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(b.y.shape[0] for b in batches_in.batches(files, train_durations, cfg.seed,
                                                          epoch))
        return n / (time.perf_counter() - t0), (time.process_time() - c0) / n

    measured = [run_epoch(e) for e in range(1, epochs + 1)]
    rates = [r for r, _ in measured]
    loader_rate = statistics.median(rates[1:])
    host_cpu = statistics.median([c for _, c in measured[1:]])
    host_augment = _host_augment_cpu(loader, files, train_durations, cfg.seed)
    log(f"loader: {loader_rate:,.0f} examples/s (median of epochs 2-{epochs}; epoch 1 with the "
        f"first-decode checks: {rates[0]:,.0f}/s), {data_cfg.workers} reader thread(s), "
        f"cache={data_cfg.cache}, {len(files)} training files, {per_epoch} crops per epoch")
    reading = ("the plan only: the corpus is on the device" if data_cfg.cache == "device"
               else "decode, resample, crop")
    log(f"host CPU per example: {1e3 * host_cpu:.3g} ms in all: reading ({reading}) "
        f"{1e3 * max(0.0, host_cpu - host_augment):.3g} ms, augmentation "
        f"{1e3 * host_augment:.3g} ms (on the host: pause shortening only; the per-crop parts "
        f"run on the device)")

    # 2. The train step alone, and the device's augmentation alone.
    built = builder.build(cfg, steps_per_epoch=len(files) // batch_size)
    state = parallel.put_replicated(built.state, mesh)
    compiled = builder.compile_train_step(built, state, mesh)
    step, compile_s = compiled.fn, compiled.compile_s
    key = builder.dropout_key(cfg)
    segment = loader.segment
    rng = np.random.default_rng(0)
    host_x = (0.1 * rng.standard_normal((batch_size, segment))).astype(np.float32)
    batch = parallel.put_batch((
        host_x, rng.integers(0, len(data_cfg.classes), batch_size).astype(np.int32),
        np.ones(batch_size, np.float32)), mesh)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        state, m = step(state, *batch, key)
        jax.block_until_ready(m)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    step_rate = batch_size / step_s
    log(f"train step: {step_rate:,.0f} examples/s consumed (batch {batch_size}, median step "
        f"{step_s * 1e3:.1f} ms over {steps} steps; compile {compile_s:.2f}s excluded)")
    augment_times = []
    if batches_in.augment is not None:
        for i in range(steps + 2):
            x = parallel.put_batch((host_x,), mesh)[0]
            jax.block_until_ready(x)
            t0 = time.perf_counter()
            jax.block_until_ready(batches_in.augment(x, batches_in.base_key, np.int32(1),
                                                     np.int32(i)))
            if i >= 2:
                augment_times.append(time.perf_counter() - t0)
        log(f"augmentation on the device: {1e3 * statistics.median(augment_times):.2f} ms a "
            f"batch alone (median of {steps}; compile excluded)")

    # 3. Both together, as fit() runs them: the feed (augmentation on the device) before each
    #    step, a step's metrics fetched after the next is dispatched.
    wait = 0.0
    n = 0
    pending = None
    t_epoch = time.perf_counter()
    t_wait = t_epoch
    for i, b in enumerate(batches_in.batches(files, train_durations, cfg.seed, epochs + 1)):
        x, y, w = batches_in(b, epochs + 1, i)
        wait += time.perf_counter() - t_wait
        state, m = step(state, x, y, w, key)
        if pending is not None:
            jax.block_until_ready(pending)
        pending = m
        n += b.y.shape[0]
        t_wait = time.perf_counter()
    jax.block_until_ready(pending)
    epoch_s = time.perf_counter() - t_epoch
    together = n / epoch_s
    ratio = loader_rate / step_rate
    verdict = ("the loader is not the bottleneck" if ratio >= 3.0 else
               "the loader is below the 3x target: raise data.workers or use data.cache=memory")
    # Where the device also augments, what it can do at best is the step plus the augmentation,
    # each timed alone: on a CPU both run on the host's cores, so this says how much of the gap
    # to the step alone is the augmentation's compute and how much the loader's.
    augment_s = statistics.median(augment_times) if augment_times else 0.0
    step_augment_rate = batch_size / (step_s + augment_s)
    log(f"together: {together:,.0f} examples/s = {100 * together / step_rate:.0f}% of the step "
        f"alone, {100 * wait / epoch_s:.1f}% of the epoch waiting for data"
        + (f"; {100 * together / step_augment_rate:.0f}% of the step and the device's "
           f"augmentation alone ({step_augment_rate:,.0f} examples/s)" if augment_times else ""))
    log(f"loader / step = {ratio:.1f}x: {verdict}")
    cores_needed = step_rate * host_cpu
    shortest = {str(c): 1e3 * batch_size * host_cpu / c for c in _core_counts()}
    log(f"the step's need: {step_rate:,.0f} examples/s x {1e3 * host_cpu:.3g} ms of host CPU = "
        f"{cores_needed:.3g} host cores busy feeding it; at this cost the loader could feed a "
        "step as short as " + ", ".join(f"{v:.3g} ms on {k} core(s)"
                                        for k, v in shortest.items()))
    info = timing.device_info()
    return {
        "what": "data",
        "config": cfg.name,
        "data_spec": data_cfg.spec,
        "workers": data_cfg.workers,
        "prefetch_batches": data_cfg.prefetch_batches,
        "cache": data_cfg.cache,
        "augment": config_lib.to_dict(cfg)["data"]["augment"],
        "batch_size": batch_size,
        "segment_samples": segment,
        "train_files": len(files),
        "examples_per_epoch": per_epoch,
        "data_errors": data.errors,
        "loader_examples_per_s": loader_rate,
        "loader_examples_per_s_by_epoch": rates,
        "loader_note": "median over epochs 2.., files re-read every epoch (OS page cache); "
                       "epoch 1 also checks every file's samples once",
        "feed_setup_s": feed_s,
        "feed_setup_note": "compiling the device's augmentation (and, with data.cache=device, "
                           "decoding the corpus onto the device), once per run",
        "host_cpu_s_per_example": host_cpu,
        "host_read_cpu_s_per_example": max(0.0, host_cpu - host_augment),
        "host_augment_cpu_s_per_example": host_augment,
        "host_cpu_note": "process CPU time (every thread) of the loader alone per example, "
                         "median over epochs 2..; augmentation on the host is pause shortening "
                         "only (timed on a sample of stretches, times pause_prob), reading the "
                         "rest (decode, resample, crop; with data.cache=device only the plan)",
        "device_augment_ms": timing.summarize_ms(augment_times),
        "step_examples_per_s": step_rate,
        "step_time_ms": timing.summarize_ms(times),
        "compile_time_s": compile_s,
        "step_need_host_cores": cores_needed,
        "shortest_step_ms_by_host_cores": shortest,
        "together_examples_per_s": together,
        "together_over_step": together / step_rate,
        "step_augment_examples_per_s": step_augment_rate,
        "together_over_step_augment": together / step_augment_rate,
        "step_augment_note": "the batch over the median step time plus the median time of the "
                             "device's augmentation of a batch, each timed alone (the step "
                             "alone where nothing is augmented on the device)",
        "together_data_wait_fraction": wait / epoch_s,
        "loader_over_step": ratio,
        "target_ratio": 3.0,
        "ok": ratio >= 3.0,
        "cpu_count": os.cpu_count(),
        **info,
        "versions": timing.versions(),
    }


def _core_counts() -> list[int]:
    """1, 2, 4, ... up to 64 or the machine's cores, whichever is more."""
    top = max(64, os.cpu_count() or 1)
    return [2**k for k in range(top.bit_length()) if 2**k <= top]


def _host_augment_cpu(loader: Any, files: list, durations: list[float], seed: int,
                      sample: int = 16) -> float:
    """Host CPU seconds per example of the augmentation left on the host (pause shortening):
    timed on up to ``sample`` stretches as the loader reads them, times ``pause_prob``."""
    import numpy as np

    from speechmusic_jax.data.augment import PAUSE_READ_FACTOR, shorten_pauses

    a = loader.augment
    if a.pause_prob <= 0 or loader.cache == "device":
        return 0.0
    spent = []
    for i, f in enumerate(files[:sample]):
        x = loader.reader.crop(f.path, 0.0, PAUSE_READ_FACTOR * loader.segment)
        rng = np.random.default_rng([seed, i])
        c0 = time.process_time()
        shorten_pauses(x, loader.sample_rate, a.pause_max_ms, a.pause_keep_ms, rng)
        spent.append(time.process_time() - c0)
    return a.pause_prob * statistics.mean(spent) if spent else 0.0


# Each --what: (function(cfg, options, log) -> result dict, one-line description).
def benchmark_step(cfg: config_lib.ConfigDict, *, batch_sizes: list[int], steps: int = 30,
                   warmup: int = 3, device_counts: list[int] | None = None,
                   log: Log = print) -> dict:
    """Time the compiled train step and inference at each batch size (module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from speechmusic_jax import parallel, timing, utilisation
    from speechmusic_jax.training import builder

    config_lib.validate(cfg)
    if not batch_sizes or min(batch_sizes) < 1:
        raise config_lib.ConfigError("--batch_sizes: give positive integers, e.g. 1,32,128")
    if steps < 3:
        raise config_lib.ConfigError("--steps: must be at least 3")
    device_counts = device_counts or [1]  # one device: the figures of one chip
    available = len(jax.devices())
    for n in device_counts:
        if not 1 <= n <= available:
            raise config_lib.ConfigError(f"--devices: {n} is not between 1 and the {available} "
                                         "device(s) here")
        for batch in batch_sizes:
            if batch % n:
                raise config_lib.ConfigError(f"--batch_sizes: {batch} does not divide over {n} "
                                             "devices (--devices)")
    n_classes, sample_rate = len(cfg.data.classes), cfg.data.sample_rate
    built = builder.build(cfg, steps_per_epoch=100)
    length = built.segment
    out: dict[str, Any] = {"what": "step", "preset": cfg.model.preset,
                           "optimizer": cfg.optimizer.name,
                           "precision": cfg.train.precision, "input_samples": length,
                           "sample_rate": sample_rate, **timing.device_info(),
                           "params_trainable": built.params_trainable,
                           "versions": timing.versions(), "results": []}
    device = jax.devices()[0]
    peak = utilisation.peaks(device.device_kind, device.platform, cfg.train.precision)
    out.update(peak)
    rng = np.random.default_rng(0)
    for devices, batch in [(n, b) for n in device_counts for b in batch_sizes]:
        mesh = parallel.make_mesh(jax.devices()[:devices])
        state = parallel.put_replicated(jax.tree.map(jnp.array, built.state), mesh)  # a copy:
        compiled = builder.compile_train_step(built, state, mesh, batch_size=batch)  # donated
        step, compile_s, flops = compiled.fn, compiled.compile_s, compiled.flops
        x, y, w = parallel.put_batch(
            (rng.standard_normal((batch, length), dtype=np.float32),
             np.arange(batch, dtype=np.int32) % n_classes, np.ones((batch,), np.float32)), mesh)
        key = jax.random.key(0)
        for _ in range(warmup):
            state, m = step(state, x, y, w, key)
        jax.block_until_ready(m)
        times = []
        with timing.OtherLoad() as load:
            for _ in range(steps):
                t0 = time.perf_counter()
                state, m = step(state, x, y, w, key)
                jax.block_until_ready(m)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        predict = builder.predictor(built, state)  # weights as arguments, not constants
        inference = timing.inference_speed(predict, np.asarray(x), sample_rate,
                                           repeats=max(5, steps // 2))
        per_device_bytes = timing.bytes_accessed(step)
        moved = per_device_bytes * devices if per_device_bytes else None
        scaled = {k: v * devices for k, v in peak.items() if k.startswith("peak_") and
                  isinstance(v, float)}  # the peak of the devices the step runs on
        row = {"batch_size": batch, "devices": devices, "compile_s": compile_s,
               "step_ms": timing.summarize_ms(times), "examples_per_s": batch / med,
               "examples_per_s_per_device": batch / med / devices,
               "audio_seconds_per_s": batch * length / sample_rate / med,
               "flops_per_step": flops, "gflops_per_s": flops / med / 1e9 if flops else None,
               "bytes_accessed_per_step": moved,
               **utilisation.utilisation(flops, moved, med, scaled),
               "inference": inference, "other_load_cores": load.cores,
               "loss_last": float(m["loss_sum"] / m["count"])}
        out["results"].append(row)
        flag = (f"  (other processes used {load.cores:.2f} cores: not to be trusted)"
                if load.cores is not None and load.cores > 0.1 else "")
        log(f"batch {batch:>4}"
            + (f" on {devices} device(s)" if len(device_counts) > 1 or devices > 1 else "")
            + f": step {row['step_ms']['median']:8.2f} ms median "
            f"(min {row['step_ms']['min']:.2f}, max {row['step_ms']['max']:.2f}), "
            f"{row['examples_per_s']:9.1f} examples/s, compile {compile_s:.2f}s, "
            + (f"{row['gflops_per_s']:.1f} GFLOP/s = {100 * row['peak_fraction']:.0f}% of peak"
               if flops else "FLOPs n/a")
            + (f" (roofline bound {1e3 * row['roofline_s']:.1f} ms)" if row["roofline_s"] else "")
            + f"; inference {inference['examples_per_s']:.0f} examples/s, "
            f"batch-1 {inference['latency_ms_batch1']:.2f} ms{flag}")
    peak_memory, peak_kind = timing.peak_memory()
    out.update(peak_memory_bytes=peak_memory, peak_memory_kind=peak_kind)
    log(f"{out['preset']}: {out['params_trainable']:,} params, {length} samples per example, "
        f"timed on {' then '.join(map(str, device_counts))} of {out['device_count']} x "
        f"{out['device_kind']}" + (f" ({out['cpu_model']})" if out.get("cpu_model") else "")
        + f", jax {out['versions']['jax']}; compilation excluded from every time; peak "
        f"{out['peak_flops_per_s'] / 1e9:.0f} GFLOP/s and {out['peak_bytes_per_s'] / 1e9:.0f} "
        f"GB/s per device, {out['peak_source']}; peak memory {peak_memory / 2**20:.0f} MiB "
        f"({peak_kind})")
    return out


WHATS: dict[str, tuple[Callable[..., dict], str]] = {
    "step": (lambda cfg, f, log: benchmark_step(cfg, batch_sizes=f["batch_sizes"],
                                                steps=f["steps"],
                                                device_counts=f.get("devices"), log=log),
             "compiled train step and inference time at each batch size"),
    "compare_torch": (lambda cfg, f, log: _compare_torch(cfg, f, log),
                      "the train step and inference beside PyTorch (--compare=torch)"),
    "data": (lambda cfg, f, log: benchmark_data(cfg, epochs=f["epochs"], steps=f["steps"],
                                                log=log),
             "loader examples/s next to the train step's consumption"),
}


def _compare_torch(cfg: config_lib.ConfigDict, f: dict[str, Any], log: Log) -> dict:
    from speechmusic_jax import torch_compare

    return torch_compare.compare_torch(cfg, batch_sizes=f["batch_sizes"], steps=f["steps"],
                                       rounds=f.get("rounds", 4), python=f.get("torch_python"),
                                       host_memory=f.get("host_memory", "release"),
                                       allocators=f.get("allocators"),
                                       threads=f.get("threads"),
                                       torch_compile=f.get("torch_compile", False), log=log)


def run(what: str, cfg: config_lib.ConfigDict, options: dict[str, Any], *, log: Log = print,
        output: str | None = None, overwrite: bool = False) -> dict:
    """Dispatch on ``what``; write the result to ``output`` (JSON) when given."""
    from speechmusic_jax.io_utils import atomic_write_json, check_output, read_json

    if what not in WHATS:
        raise config_lib.ConfigError(f"--what: unknown benchmark {what!r}; known: "
                                     f"{', '.join(sorted(WHATS))}")
    if output:  # before any work: a refused output costs nothing
        check_output(output, overwrite=overwrite, ours=lambda p: "what" in read_json(p))
    result = WHATS[what][0](cfg, options, log)
    if "host_memory" in options:  # the allocator policy the figures were taken under
        result.setdefault("host_memory", options["host_memory"])
        if what != "compare_torch":  # compare names both sides' policies itself
            log(f"host memory (--host_memory): {options['host_memory']}")
    if output:
        atomic_write_json(output, result)
        log(f"wrote {os.path.abspath(output)}")
    return result


def define_flags() -> dict[str, Any]:
    from absl import flags

    from speechmusic_jax import cli

    return {
        "config": cli.config_flag(),
        "what": flags.DEFINE_enum("what", "step", sorted(WHATS), "Which benchmark (default "
                                  "step): " + "; ".join(f"{k}: {v[1]}"
                                                        for k, v in sorted(WHATS.items()))),
        **cli.data_flags(),
        "output": flags.DEFINE_string("output", None, "Also write the figures to this JSON file."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace an existing --output file "
                                       "that an earlier benchmark wrote."),
        "epochs": flags.DEFINE_integer("epochs", 4, "data: loader epochs to time (>= 2)."),
        "steps": flags.DEFINE_integer("steps", 30, "data, step: train steps to time."),
        "batch_sizes": flags.DEFINE_string("batch_sizes", None,
                                           "step: comma-separated batch sizes (default: the "
                                           "config's train.batch_size)."),
        "compare": flags.DEFINE_enum("compare", None, ["torch"], "Time the train step and "
                                     "inference beside the same network in this framework, "
                                     "alternating (needs the [bench] extra)."),
        "rounds": flags.DEFINE_integer("rounds", 4, "compare: rounds, each arm once a round, "
                                       "in ABBA order (even: every arm's mean place in time "
                                       "is the same)."),
        "torch_compile": flags.DEFINE_bool("torch_compile", False, "compare: also time "
                                           "torch.compile (inductor; needs a C++ compiler), "
                                           "its compile time apart."),
        "threads": flags.DEFINE_integer("threads", None, "compare: intra-op threads on each "
                                        "side, each pinned to as many cores (default: every "
                                        "core this process may use)."),
        "allocators": flags.DEFINE_list("allocators", "release,keep", "compare: the "
                                        "--host_memory policies to time every side under "
                                        "(release: each framework's default)."),
        "precision": flags.DEFINE_enum("precision", None, ["float32", "bfloat16"],
                                       "Shorthand for --config.train.precision (with "
                                       "--compare=torch: CPU autocast on the PyTorch side)."),
        "torch_python": flags.DEFINE_string("torch_python", None, "compare: the Python that "
                                            "has torch (default: this one)."),
        "devices": flags.DEFINE_string("devices", "1", "step: comma-separated device counts "
                                       "to time in turn (the batch split over the first N "
                                       "devices), e.g. 1,2,4."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import cli

    cfg = cli.config_from(flags, args)
    if flags.get("precision"):
        cfg.train.precision = flags["precision"]
    sizes = flags["batch_sizes"]
    try:
        batch_sizes = [int(b) for b in sizes.split(",")] if sizes else [cfg.train.batch_size]
    except ValueError:
        raise cli.UsageError(f"--batch_sizes: comma-separated integers, got {sizes!r}") from None
    try:
        devices = [int(n) for n in flags["devices"].split(",")]
    except ValueError:
        raise cli.UsageError(f"--devices: comma-separated integers, got "
                             f"{flags['devices']!r}") from None
    options = {"epochs": flags["epochs"], "steps": flags["steps"], "batch_sizes": batch_sizes,
               "devices": devices, "rounds": flags.get("rounds", 4),
               "torch_python": flags.get("torch_python"),
               "torch_compile": flags.get("torch_compile", False),
               "threads": flags.get("threads"), "allocators": flags.get("allocators"),
               "host_memory": flags.get("host_memory", "release")}
    what = "compare_torch" if flags.get("compare") == "torch" else flags["what"]
    run(what, cfg, options, log=cli.log, output=flags["output"], overwrite=flags["overwrite"])
    return 0


if __name__ == "__main__":
    from speechmusic_jax import cli

    cli.run_main(define_flags, main)
