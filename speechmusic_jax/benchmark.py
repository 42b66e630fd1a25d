"""Benchmarks. ``--what`` picks one; each prints its figures and can write them as JSON.

    python -m speechmusic_jax.benchmark --what=data [--config=experiments/NAME.py[:ARG]]
        [--data=SPEC] [--epochs=4] [--steps=30] [--output=FILE.json] [--config.FIELD=VALUE ...]

``data``: is the input pipeline fast enough? Three measurements on the config's training split:

1. the loader alone: examples/s of ``train_batches`` with the thread budget training gives it
   (``data.workers`` reader threads plus one assembling thread), files re-read every epoch
   (with ``data.cache=none``; from the OS page cache, which a second epoch of a real run also
   enjoys). Epoch 1 also checks every file's samples once (NaN/Inf, silence) and is reported
   apart; the headline is the median of the later epochs;
2. the train step alone: examples/s it consumes (batch size / median step time, compiled ahead,
   blocked on every step, on a fixed batch);
3. both together, as ``fit`` runs them (one epoch, the loader's prefetch feeding the step): the
   share of the epoch spent waiting for data.

The loader is not the bottleneck when (1) is well above (2) (the target is 3x) and (3) is small.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from speechmusic_jax import config as config_lib

Log = Callable[[str], None]


def benchmark_data(cfg: config_lib.ConfigDict, *, epochs: int = 4, steps: int = 30,
                   log: Log = print) -> dict:
    """Loader throughput next to the train step's consumption (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from speechmusic_jax import parallel, timing
    from speechmusic_jax.data.pipeline import make_loader_config, train_batches
    from speechmusic_jax.models.conv1d import build_model
    from speechmusic_jax.models.presets import resolve_spec
    from speechmusic_jax.training import loop, optim
    from speechmusic_jax.training.step import init_state, make_train_step

    config_lib.validate(cfg)
    if epochs < 2:
        raise config_lib.ConfigError("--epochs: must be at least 2 (epoch 1 is reported apart)")
    d, t = cfg.data, cfg.train
    with tempfile.TemporaryDirectory(prefix="smj-bench-") as tmp:
        split, durations, errors = loop.prepare_data(cfg, tmp, log, resume=False)
    files = split["train"]
    train_durations = [durations[f.path] for f in files]
    if len(files) < t.batch_size:
        raise config_lib.ConfigError(f"train.batch_size: {t.batch_size} is more than the "
                                     f"{len(files)} training files")
    loader = make_loader_config(cfg, files)
    per_epoch = (len(files) // t.batch_size) * t.batch_size

    # 1. The loader alone.
    def run_epoch(epoch: int) -> float:
        t0 = time.perf_counter()
        n = sum(b.x.shape[0] for b in train_batches(files, train_durations, loader, cfg.seed,
                                                    epoch))
        return n / (time.perf_counter() - t0)

    rates = [run_epoch(e) for e in range(1, epochs + 1)]
    loader_rate = statistics.median(rates[1:])
    log(f"loader: {loader_rate:,.0f} examples/s (median of epochs 2-{epochs}; epoch 1 with the "
        f"first-decode checks: {rates[0]:,.0f}/s), {d.workers} reader thread(s), "
        f"cache={d.cache}, {len(files)} training files, {per_epoch} crops per epoch")

    # 2. The train step alone.
    mesh = parallel.make_mesh()
    steps_per_epoch = len(files) // t.batch_size
    spec = resolve_spec(cfg.model, len(d.classes))
    model = build_model(spec, cfg.seed, t.precision)
    tx, _ = optim.from_config(cfg, steps_per_epoch)
    graphdef, state = init_state(model, tx)
    del model
    state = parallel.put_replicated(state, mesh)
    bshard = parallel.batch_sharding(mesh)
    segment = loader.segment
    specs = (jax.ShapeDtypeStruct((t.batch_size, segment), jnp.float32, sharding=bshard),
             jax.ShapeDtypeStruct((t.batch_size,), jnp.int32, sharding=bshard),
             jax.ShapeDtypeStruct((t.batch_size,), jnp.float32, sharding=bshard))
    key = jax.random.key(cfg.seed)
    step, compile_s, _ = timing.compile_ahead(
        make_train_step(graphdef, tx, num_classes=len(d.classes),
                        label_smoothing=t.label_smoothing, l1=t.l1, l2=t.l2),
        state, *specs, key, donate_argnums=(0,))
    rng = np.random.default_rng(0)
    batch = parallel.put_batch((
        (0.1 * rng.standard_normal((t.batch_size, segment))).astype(np.float32),
        rng.integers(0, len(d.classes), t.batch_size).astype(np.int32),
        np.ones(t.batch_size, np.float32)), mesh)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        state, m = step(state, *batch, key)
        jax.block_until_ready(m)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    step_rate = t.batch_size / step_s
    log(f"train step: {step_rate:,.0f} examples/s consumed (batch {t.batch_size}, median step "
        f"{step_s * 1e3:.1f} ms over {steps} steps; compile {compile_s:.2f}s excluded)")

    # 3. Both together, as fit() runs them.
    wait = 0.0
    n = 0
    t_epoch = time.perf_counter()
    t_wait = t_epoch
    for b in train_batches(files, train_durations, loader, cfg.seed, epochs + 1):
        x, y, w = parallel.put_batch((b.x, b.y, b.weight), mesh)
        wait += time.perf_counter() - t_wait
        state, m = step(state, x, y, w, key)
        jax.block_until_ready(m)
        n += b.x.shape[0]
        t_wait = time.perf_counter()
    epoch_s = time.perf_counter() - t_epoch
    ratio = loader_rate / step_rate
    verdict = ("the loader is not the bottleneck" if ratio >= 3.0 else
               "the loader is below the 3x target: raise data.workers or use data.cache=memory")
    log(f"together: {n / epoch_s:,.0f} examples/s, {100 * wait / epoch_s:.1f}% of the epoch "
        f"waiting for data")
    log(f"loader / step = {ratio:.1f}x: {verdict}")
    info = timing.device_info()
    return {
        "what": "data",
        "config": cfg.name,
        "data_spec": d.spec,
        "workers": d.workers,
        "prefetch_batches": d.prefetch_batches,
        "cache": d.cache,
        "augment": config_lib.to_dict(cfg)["data"]["augment"],
        "batch_size": t.batch_size,
        "segment_samples": segment,
        "train_files": len(files),
        "examples_per_epoch": per_epoch,
        "data_errors": errors,
        "loader_examples_per_s": loader_rate,
        "loader_examples_per_s_by_epoch": rates,
        "loader_note": "median over epochs 2.., files re-read every epoch (OS page cache); "
                       "epoch 1 also checks every file's samples once",
        "step_examples_per_s": step_rate,
        "step_time_ms": timing.summarize_ms(times),
        "compile_time_s": compile_s,
        "together_examples_per_s": n / epoch_s,
        "together_data_wait_fraction": wait / epoch_s,
        "loader_over_step": ratio,
        "target_ratio": 3.0,
        "ok": ratio >= 3.0,
        "cpu_count": os.cpu_count(),
        **info,
        "versions": timing.versions(),
    }


# Each --what: (function(cfg, options, log) -> result dict, one-line description).
WHATS: dict[str, tuple[Callable[..., dict], str]] = {
    "data": (lambda cfg, f, log: benchmark_data(cfg, epochs=f["epochs"], steps=f["steps"],
                                                log=log),
             "loader examples/s next to the train step's consumption"),
}


def run(what: str, cfg: config_lib.ConfigDict, options: dict[str, Any], *, log: Log = print,
        output: str | None = None) -> dict:
    """Dispatch on ``what``; write the result to ``output`` (JSON) when given."""
    if what not in WHATS:
        raise config_lib.ConfigError(f"--what: unknown benchmark {what!r}; known: "
                                     f"{', '.join(sorted(WHATS))}")
    result = WHATS[what][0](cfg, options, log)
    if output:
        from speechmusic_jax.io_utils import atomic_write_json

        atomic_write_json(output, result)
        log(f"wrote {os.path.abspath(output)}")
    return result


def main(argv: list[str]) -> int:
    from absl import app

    from speechmusic_jax import cli

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = cli.apply_shorthands(_FLAGS["config"].value, data=_FLAGS["data"].value)
    options = {"epochs": _FLAGS["epochs"].value, "steps": _FLAGS["steps"].value}
    with cli.friendly_errors():
        run(_FLAGS["what"].value, cfg, options, log=cli.log, output=_FLAGS["output"].value)
    return 0


def _define_flags() -> dict[str, Any]:
    from absl import flags
    from ml_collections import config_flags

    from speechmusic_jax import cli

    return {
        "config": config_flags.DEFINE_config_file(
            "config", cli.default_experiment(), "Experiment file (experiments/NAME.py[:ARG]).",
            lock_config=True),
        "what": flags.DEFINE_enum("what", "data", sorted(WHATS),
                                  "; ".join(f"{k}: {v[1]}" for k, v in sorted(WHATS.items()))),
        "data": flags.DEFINE_string("data", None, "Shorthand for --config.data.spec."),
        "output": flags.DEFINE_string("output", None, "Also write the figures to this JSON file."),
        "epochs": flags.DEFINE_integer("epochs", 4, "data: loader epochs to time (>= 2)."),
        "steps": flags.DEFINE_integer("steps", 30, "data: train steps to time."),
    }


_FLAGS: dict[str, Any] = {}

if __name__ == "__main__":
    from absl import app

    from speechmusic_jax import cli

    _FLAGS.update(_define_flags())
    cli.quiet_jax_logs()
    sys.exit(app.run(main))
