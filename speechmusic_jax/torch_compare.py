"""``benchmark --compare=torch``: the config's train step and inference beside the same network
in PyTorch, alternating in one run.

PyTorch runs in its own process (:mod:`speechmusic_jax.torch_reference`, started once per batch
size and then asked for blocks of steps), so the two frameworks never share a process, a thread
pool or an allocator, and neither pays the other's start-up inside a timing. The blocks alternate
JAX, PyTorch, JAX, PyTorch, ...; each pair gives one ratio (PyTorch's median step time over
JAX's), and the spread of those ratios over the rounds says how much to trust the figure. The
two networks are checked to be the same before anything is timed: the same parameter count and
the same parameter tensors (sizes) in the same order. The float32 matmul peak of the machine is
measured in the same run, before and after, so that the JAX step's achieved FLOP/s can be put
against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax import host_memory as host_memory_lib

Log = Callable[[str], None]


class TorchWorker:
    """The PyTorch process: one request per line, one JSON answer per line."""

    def __init__(self, python: str, spec: dict, batch: int, samples: int, precision: str,
                 learning_rate: float, host_memory: str = "release"):
        cmd = [python, "-m", "speechmusic_jax.torch_reference", f"--spec={json.dumps(spec)}",
               f"--batch={batch}", f"--samples={samples}", f"--precision={precision}",
               f"--learning_rate={learning_rate}", f"--host_memory={host_memory}"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
             os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)

    def ask(self, request: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the PyTorch process ended: {err.strip()[-800:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, ValueError):
                self.ask("quit")
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class JaxSide:
    """The config's compiled train step and eval step at one batch size, on one device, on a
    fixed random batch; ``train(n)`` and ``infer(n)`` return n step times (blocked on each)."""

    def __init__(self, built: Any, batch: int, seed: int = 0):
        import jax
        import jax.numpy as jnp
        import numpy as np

        from speechmusic_jax import parallel
        from speechmusic_jax.training import builder

        self.built = built
        mesh = parallel.make_mesh(jax.devices()[:1])
        self.state = parallel.put_replicated(jax.tree.map(jnp.array, built.state), mesh)
        self.train_step = builder.compile_train_step(built, self.state, mesh, batch_size=batch)
        self.eval_step = builder.compile_eval_step(built, built.state, mesh, batch_size=batch)
        rng = np.random.default_rng(seed)
        self.batch = parallel.put_batch(
            (rng.standard_normal((batch, built.segment), dtype=np.float32),
             np.arange(batch, dtype=np.int32) % built.spec.num_classes,
             np.ones((batch,), np.float32)), mesh)
        self.key = jax.random.key(seed)

    def train(self, n: int) -> list[float]:
        import jax

        from speechmusic_jax import timing

        times = []
        for _ in range(n):
            t0 = timing.now()
            self.state, m = self.train_step.fn(self.state, *self.batch, self.key)
            jax.block_until_ready(m)
            times.append(timing.now() - t0)
        return times

    def infer(self, n: int) -> list[float]:
        from speechmusic_jax import timing
        from speechmusic_jax.training import builder

        predict = builder.predictor(self.built, self.state, self.eval_step.fn)
        x = self.batch[0]
        return timing.time_calls(lambda: predict(x), n, warmup=0)


def torch_python(python: str | None) -> str:
    """The interpreter that runs PyTorch: ``python``, or this one when it has torch."""
    python = python or sys.executable
    probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise config_lib.ConfigError(
            "benchmark --compare=torch needs PyTorch: pip install -e '.[bench]' (torch==2.13.0, "
            f"the CPU build), or --torch_python=PATH of an interpreter that has it ({python} "
            "cannot import torch)")
    return python


def same_network(jax_params: Any, torch_info: dict) -> str | None:
    """Why the two networks differ (None when they have the same parameter tensors): the same
    count, and the same tensor sizes in the same order (PyTorch's layout differs: only sizes
    are compared, in JAX's flattening order, which is layer by layer like PyTorch's)."""
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_leaves_with_path(jax_params)
    jax_sizes = sorted(int(np.size(x)) for _, x in leaves)
    torch_sizes = sorted(int(np.prod(shape)) for _, shape in torch_info["layers"])
    total = sum(jax_sizes)
    if total != torch_info["params"]:
        return f"{total:,} parameters in JAX, {torch_info['params']:,} in PyTorch"
    if jax_sizes != torch_sizes:
        return f"parameter tensors differ: JAX {jax_sizes}, PyTorch {torch_sizes}"
    return None


def compare_torch(cfg: config_lib.ConfigDict, *, batch_sizes: list[int], steps: int = 10,
                  rounds: int = 3, python: str | None = None, host_memory: str = "release",
                  log: Log = print) -> dict:
    """Alternate JAX and PyTorch blocks of ``steps`` train steps (then inference) ``rounds``
    times per batch size; ratios are PyTorch's time over JAX's (above 1: JAX is faster).

    ``host_memory`` is the allocator policy in effect in this process (what
    ``host_memory.apply`` returned); the PyTorch worker runs under the same one."""
    from speechmusic_jax import timing, utilisation
    from speechmusic_jax.training import builder

    config_lib.validate(cfg)
    if steps < 3 or rounds < 1:
        raise config_lib.ConfigError("--steps must be at least 3 and --rounds at least 1")
    python = torch_python(python)
    precision = cfg.train.precision
    built = builder.build(cfg, steps_per_epoch=100)
    spec = dataclasses.asdict(built.spec)
    info = timing.device_info()
    probe_before = utilisation.matmul_probe("float32")
    out: dict[str, Any] = {
        "what": "compare", "framework": "jax", "other": "torch eager",
        "preset": cfg.model.preset, "precision": precision, "optimizer": cfg.optimizer.name,
        "input_samples": built.segment, "sample_rate": cfg.data.sample_rate,
        "params_trainable": built.params_trainable, **info,
        "versions": timing.versions(), "rounds": rounds, "steps": steps,
        "host_memory": {"jax": host_memory}, "results": []}
    worker_policy = host_memory_lib.flag_for(host_memory)
    for batch in batch_sizes:
        worker = TorchWorker(python, spec, batch, built.segment, precision,
                             cfg.optimizer.learning_rate, worker_policy)
        try:
            torch_info = worker.ask("info")
            out["host_memory"]["torch"] = torch_info.get("host_memory")
            differs = same_network(built.state.params, torch_info)
            if differs:
                raise RuntimeError(f"the PyTorch twin of {cfg.model.preset} is not the same "
                                   f"network: {differs}")
            out["versions"]["torch"] = torch_info["torch"]
            side = JaxSide(built, batch)
            side.train(3)
            side.infer(2)
            worker.ask("train 3")
            worker.ask(f"infer 2 {batch}")
            row: dict[str, Any] = {"batch_size": batch, "train": [], "infer": []}
            for r in range(1, rounds + 1):
                for kind, mine, theirs in (("train", side.train, f"train {steps}"),
                                           ("infer", side.infer, f"infer {steps} {batch}")):
                    with timing.OtherLoad() as load_a:
                        a = statistics.median(mine(steps))
                    with timing.OtherLoad(also_mine=(worker.proc.pid,)) as load_b:
                        b = statistics.median(worker.ask(theirs)["step_s"])
                    loads = [v for v in (load_a.cores, load_b.cores) if v is not None]
                    row[kind].append({"jax_ms": a * 1e3, "torch_ms": b * 1e3, "ratio": b / a,
                                      "other_load_cores": max(loads) if loads else None})
                    log(f"batch {batch} {kind} round {r}: JAX {a * 1e3:9.2f} ms, PyTorch "
                        f"{b * 1e3:9.2f} ms: PyTorch / JAX = {b / a:.2f}")
            for kind in ("train", "infer"):
                ratios = [p["ratio"] for p in row[kind]]
                row[f"{kind}_ratio"] = {"median": statistics.median(ratios), "min": min(ratios),
                                        "max": max(ratios)}
            jax_train_s = statistics.median(p["jax_ms"] for p in row["train"]) / 1e3
            flops = side.train_step.flops
            row["train_flops"] = flops
            row["jax_train_flops_per_s"] = flops / jax_train_s if flops else None
            out["results"].append(row)
        finally:
            worker.close()
    probe_after = utilisation.matmul_probe("float32")
    out["matmul_peak_flops_per_s"] = {"before": probe_before, "after": probe_after}
    peak = max(probe_before, probe_after)
    for row in out["results"]:
        achieved = row["jax_train_flops_per_s"]
        row["jax_train_peak_fraction"] = achieved / peak if achieved else None
        t, i = row["train_ratio"], row["infer_ratio"]
        log(f"{cfg.model.preset} batch {row['batch_size']}: train PyTorch / JAX = "
            f"{t['median']:.2f} (rounds {t['min']:.2f}-{t['max']:.2f}), inference "
            f"{i['median']:.2f} ({i['min']:.2f}-{i['max']:.2f}); JAX train step at "
            + (f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of the float32 "
               f"matmul peak measured here ({peak / 1e9:.0f} GFLOP/s)" if achieved else
               "(no FLOP count)"))
    log(f"{out['preset']}, {precision}, {out['input_samples']} samples per example; "
        f"{out['cpu_model'] or out['device_kind']}; jax {out['versions']['jax']}, torch "
        f"{out['versions'].get('torch')}; compilation excluded; host memory (--host_memory): "
        f"JAX {host_memory}, PyTorch {out['host_memory'].get('torch')}")
    return out
