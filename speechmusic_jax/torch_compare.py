"""``benchmark --compare=torch``: the config's train step and inference beside the same network
in PyTorch, eager and (``--torch_compile``) compiled, each under each allocator policy, in one run
and one table.

Every arm is a process of its own (:mod:`speechmusic_jax.compare_worker` for JAX,
:mod:`speechmusic_jax.torch_reference` for PyTorch; :mod:`speechmusic_jax.worker_protocol`),
started once per batch size under its allocator policy (``--host_memory``: ``release``, glibc's
and so each framework's default, and ``keep``) and pinned to the same ``threads`` cores with as
many intra-op threads, then asked for blocks of steps. So no two arms share a process, a thread
pool or an allocator, and none pays another's start-up inside a timing. The arms start one at a
time, each compiling (JAX ahead, torch.compile in its first calls) while the others wait, so
compile times are their own and never part of a step time. The rounds run the arms in ABBA order
(:func:`abba`); each PyTorch block, divided by the JAX block under the same policy in the same
round, gives one ratio, and the spread of those ratios over the rounds says how much to trust
the figure. The networks are checked to be the same before anything is timed: the same parameter
count and the same parameter tensors (sizes). The float32 matmul peak is measured in each JAX
process, before and after the rounds, so that its step's achieved FLOP/s can be put against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from speechmusic_jax import config as config_lib
from speechmusic_jax import host_memory as host_memory_lib

Log = Callable[[str], None]


class Worker:
    """One timed process (:mod:`speechmusic_jax.worker_protocol`): one request per line, one
    JSON answer per line."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None):
        env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(
            [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
             os.environ.get("PYTHONPATH", "")]))
        # a file, not a pipe: a pipe nobody reads could fill and block the process
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)

    def ask(self, request: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            err = self.stderr.read()
            raise RuntimeError(f"a timed process ended: {err.strip()[-800:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                self.ask("quit")
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


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


JAX, EAGER, COMPILED = "jax", "torch eager", "torch compiled"
SIDE_NAMES = {JAX: "JAX (ours)", EAGER: "PyTorch eager", COMPILED: "PyTorch torch.compile"}
WARMUP = {"train": 3, "infer": 2}  # calls before the timed blocks (compilation for torch.compile)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One timed process: a side (JAX, PyTorch eager or compiled) under one allocator policy."""

    side: str
    allocator: str  # the --host_memory policy asked for

    @property
    def name(self) -> str:
        return f"{self.side} / {self.allocator}"


def arms(allocators: list[str], torch_compile: bool) -> list[Arm]:
    """The arms in the order each round starts with: per allocator policy, JAX then PyTorch
    eager (then compiled), so that each PyTorch block runs next to the JAX block it is
    divided by."""
    sides = [JAX, EAGER] + ([COMPILED] if torch_compile else [])
    return [Arm(side, policy) for policy in allocators for side in sides]


def abba(items: list[Any], rounds: int) -> list[list[Any]]:
    """The run order of each round: forwards in odd rounds, backwards in even ones (A B B A
    A B ...): over every two rounds each arm's mean place in time is the same, so a steady drift
    of the machine's speed weighs on every arm alike."""
    return [list(items) if r % 2 == 0 else list(reversed(items)) for r in range(rounds)]


def default_allocator(side: str) -> str:
    """The policy a side runs under unless told: our commands' ``--host_memory`` default (keep);
    glibc's own behaviour (release) for PyTorch."""
    return host_memory_lib.DEFAULT if side == JAX else "release"


def table_order(rows: list[dict]) -> list[dict]:
    """The table's rows: JAX, PyTorch eager, compiled PyTorch; within each, its default
    allocator first. So the first rows of JAX and of PyTorch eager are each framework as it
    comes, and the rows under ``keep`` compare both under one allocator."""
    sides = [JAX, EAGER, COMPILED]
    policies = list(dict.fromkeys(r["allocator"] for r in rows))
    return sorted(rows, key=lambda r: (sides.index(r["side"]),
                                       r["allocator"] != default_allocator(r["side"]),
                                       policies.index(r["allocator"])))


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "per_round": values}


COLUMNS = ("framework", "allocator", "threads", "train step ms", "/ JAX same",
           "/ JAX default", "inference ms", "/ JAX same", "/ JAX default",
           "compile s (train + infer)")
DEFAULT_NOTE = (f"* the framework's default: our commands run under {host_memory_lib.DEFAULT} "
                "(--host_memory), PyTorch under glibc's own behaviour (release). / JAX same: "
                "the row's time over JAX's under the same allocator; / JAX default: over JAX's "
                "under its default; both per round, median (range)")


def row_cells(r: dict) -> list[str]:
    """One row of the table as text, a cell per :data:`COLUMNS`: step times (median of the
    rounds' medians and their range); the ratio to JAX's under the same allocator policy and to
    JAX's under its default one (above 1: JAX is faster); the compile time, which no step time
    includes. The one formatting of a row, for the printed table and for ``report``; a field
    missing (a JSON from an older version) reads ``n/a``."""

    def spread(v: dict) -> str:
        if "min" not in v:
            return f"{v['median']:.2f}"
        return f"{v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f})"

    def ms(v: dict | None) -> str:
        return "n/a" if not v else spread(v)

    def ratio(v: dict | None, ours: bool = False) -> str:
        if v is None:
            return "(ours)" if ours else "-"
        return spread(v)

    compile_s = r.get("compile_s")
    threads = (r.get("threads") or {}).get("in_effect")
    default = r.get("default_allocator",
                    r.get("allocator") == default_allocator(r.get("side", "")))
    ours = r.get("side") == JAX
    return [SIDE_NAMES.get(r.get("side", ""), str(r.get("side"))),
            str(r.get("allocator_in_effect") or r.get("allocator")) + ("*" if default else ""),
            "?" if threads is None else str(threads),
            ms(r.get("train_ms")), ratio(r.get("train_ratio"), ours),
            ratio(r.get("train_ratio_to_default")), ms(r.get("infer_ms")),
            ratio(r.get("infer_ratio"), ours), ratio(r.get("infer_ratio_to_default")),
            "-" if not compile_s else
            f"{compile_s.get('train', 0):.1f} + {compile_s.get('infer', 0):.1f}"]


def format_table(rows: list[dict]) -> list[str]:
    """The printed table: one fixed-width line per row of :func:`table_order`
    (:func:`row_cells`), then a line that says which allocator is each framework's default
    (marked *)."""
    widths = (22, 10, 7, 24, 17, 17, 22, 17, 17, 0)

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return " ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(COLUMNS)] + [line(row_cells(r)) for r in rows] + [DEFAULT_NOTE]


def compiler_check() -> None:
    """torch.compile's inductor builds C++ at run time with $CXX or g++: fail early without."""
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise config_lib.ConfigError(
            f"--torch_compile: torch.compile (inductor) needs a C++ compiler at run time and "
            f"{cxx!r} is not on PATH: install g++ (or set CXX), or leave out --torch_compile")


def default_threads() -> int:
    """Every core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def compare_torch(cfg: config_lib.ConfigDict, *, batch_sizes: list[int], steps: int = 10,
                  rounds: int = 4, python: str | None = None, host_memory: str = "release",
                  allocators: list[str] | None = None, threads: int | None = None,
                  torch_compile: bool = False, log: Log = print) -> dict:
    """Time every arm (JAX, PyTorch eager, with ``torch_compile`` PyTorch compiled; each under
    every policy of ``allocators``) in blocks of ``steps`` train steps, then of inference, in
    :func:`abba` order over ``rounds`` rounds, per batch size; print and return one table.

    Every arm is a process of its own, pinned to ``threads`` cores with as many intra-op
    threads (default: every core), under its allocator policy. ``host_memory`` is the policy in
    effect in this process, which times nothing."""
    from speechmusic_jax import timing
    from speechmusic_jax.io_utils import atomic_write_json
    from speechmusic_jax.training import builder

    config_lib.validate(cfg)
    if steps < 3 or rounds < 1:
        raise config_lib.ConfigError("--steps must be at least 3 and --rounds at least 1")
    allocators = allocators or ["release", "keep"]
    if len(set(allocators)) != len(allocators):
        raise config_lib.ConfigError(f"--allocators: {','.join(allocators)} names a policy twice")
    for policy in allocators:
        if policy not in host_memory_lib.POLICIES:
            raise config_lib.ConfigError(f"--allocators: {policy!r} is not one of "
                                         f"{', '.join(host_memory_lib.POLICIES)}")
    available = default_threads()
    threads = threads or available
    if not 1 <= threads <= available:
        raise config_lib.ConfigError(f"--threads: {threads} is not between 1 and the "
                                     f"{available} cores this process may use")
    if torch_compile:
        compiler_check()
    python = torch_python(python)
    precision = cfg.train.precision
    built = builder.build(cfg, steps_per_epoch=100)
    spec = json.dumps(dataclasses.asdict(built.spec))
    the_arms = arms(allocators, torch_compile)
    out: dict[str, Any] = {
        "what": "compare", "framework": "jax",
        "other": "torch eager" + (", torch compiled" if torch_compile else ""),
        "preset": cfg.model.preset, "precision": precision, "optimizer": cfg.optimizer.name,
        "input_samples": built.segment, "sample_rate": cfg.data.sample_rate,
        "params_trainable": built.params_trainable, **timing.device_info(),
        "versions": timing.versions(), "rounds": rounds, "steps": steps, "order": "ABBA",
        "threads": threads, "allocators": allocators, "torch_compile": torch_compile,
        "default_allocators": {"jax": default_allocator(JAX), "torch": default_allocator(EAGER)},
        "host_memory": host_memory, "warmup_calls": WARMUP, "results": []}
    with tempfile.TemporaryDirectory(prefix="smj-compare-") as tmp:
        cfg_path = os.path.join(tmp, "config.json")
        atomic_write_json(cfg_path, config_lib.to_dict(cfg))
        for batch in batch_sizes:
            out["results"].append(_compare_batch(
                built, the_arms, batch, steps=steps, rounds=rounds, threads=threads,
                python=python, spec=spec, cfg_path=cfg_path, tmp=tmp, out=out, log=log))
    for result in out["results"]:
        log(f"{cfg.model.preset}, batch {result['batch_size']}, {precision}, "
            f"{built.segment} samples per example; {rounds} rounds of {steps} steps a block in "
            f"ABBA order; {threads} thread(s) a side; {out['cpu_model'] or out['device_kind']}; "
            f"jax {out['versions']['jax']}, torch {out['versions'].get('torch')}. Step times "
            "exclude compilation (compile s: apart); above 1 in a / JAX column: JAX is faster")
        for line in format_table(result["rows"]):
            log(line)
        loads = [b["other_load_cores"] for b in result["blocks"]
                 if b["other_load_cores"] is not None]
        if loads and max(loads) > 0.1:
            log(f"other processes used up to {max(loads):.2f} cores during the blocks: these "
                "times were taken under load and are not to be trusted")
        for row in result["rows"]:
            if row["side"] == JAX and row["train_peak_fraction"] is not None:
                log(f"JAX train step under {row['allocator_in_effect']}: "
                    f"{row['train_flops_per_s'] / 1e9:.1f} GFLOP/s = "
                    f"{100 * row['train_peak_fraction']:.0f}% of the float32 matmul peak "
                    f"measured in its process ({row['matmul_peak_flops_per_s'] / 1e9:.0f} "
                    "GFLOP/s)")
    return out


def _start(arm: Arm, *, batch: int, threads: int, python: str, spec: str, cfg_path: str,
           samples: int, precision: str, learning_rate: float, tmp: str) -> Worker:
    if arm.side == JAX:
        return Worker([sys.executable, "-m", "speechmusic_jax.compare_worker",
                       f"--config={cfg_path}", f"--batch={batch}", f"--threads={threads}",
                       f"--host_memory={arm.allocator}"])
    cache = os.path.join(tmp, f"inductor-{arm.allocator}-{batch}")  # cold: compiled afresh
    return Worker([python, "-m", "speechmusic_jax.torch_reference", f"--spec={spec}",
                   f"--batch={batch}", f"--samples={samples}", f"--precision={precision}",
                   f"--learning_rate={learning_rate}", f"--host_memory={arm.allocator}",
                   f"--threads={threads}"] + (["--compile"] if arm.side == COMPILED else []),
                  env={"TORCHINDUCTOR_CACHE_DIR": cache})


def _compare_batch(built: Any, the_arms: list[Arm], batch: int, *, steps: int, rounds: int,
                   threads: int, python: str, spec: str, cfg_path: str, tmp: str,
                   out: dict, log: Log) -> dict:
    from speechmusic_jax import timing

    workers: dict[Arm, Worker] = {}
    first: dict[Arm, dict[str, list[float]]] = {}
    infos: dict[Arm, dict] = {}
    blocks: list[dict] = []
    try:
        for arm in the_arms:  # one at a time: no compilation competes with another
            workers[arm] = w = _start(arm, batch=batch, threads=threads, python=python,
                                      spec=spec, cfg_path=cfg_path, samples=built.segment,
                                      precision=built.cfg.train.precision,
                                      learning_rate=built.cfg.optimizer.learning_rate, tmp=tmp)
            first[arm] = {"train": w.ask(f"train {WARMUP['train']}")["step_s"],
                          "infer": w.ask(f"infer {WARMUP['infer']} {batch}")["step_s"]}
            infos[arm] = info = w.ask("info")
            if arm.side != JAX:
                differs = same_network(built.state.params, info)
                if differs:
                    raise RuntimeError(f"the PyTorch twin of {built.cfg.model.preset} is not "
                                       f"the same network: {differs}")
                out["versions"]["torch"] = info["torch"]
        for r, order in enumerate(abba(the_arms, rounds), start=1):
            for kind in ("train", "infer"):
                request = f"train {steps}" if kind == "train" else f"infer {steps} {batch}"
                for arm in order:
                    with timing.OtherLoad(also_mine=(workers[arm].proc.pid,)) as load:
                        med = statistics.median(workers[arm].ask(request)["step_s"])
                    blocks.append({"round": r, "kind": kind, "arm": arm.name,
                                   "median_ms": med * 1e3, "other_load_cores": load.cores})
                    log(f"batch {batch} round {r} {kind:5} {SIDE_NAMES[arm.side]:21} "
                        f"{arm.allocator:7}: {med * 1e3:9.2f} ms")
        after = {arm: workers[arm].ask("info") for arm in the_arms if arm.side == JAX}
    finally:
        for w in workers.values():
            w.close()
    rows = [_row(arm, blocks, first[arm], infos[arm], after.get(arm)) for arm in the_arms]
    return {"batch_size": batch, "rows": table_order(rows), "blocks": blocks}


def _row(arm: Arm, blocks: list[dict], first: dict[str, list[float]], info: dict,
         after: dict | None) -> dict:
    """One table row: the arm's block medians per round, and its ratio to JAX's blocks under
    the same allocator in the same rounds."""

    def medians(name: str, kind: str) -> list[float]:
        return [b["median_ms"] for b in blocks if b["arm"] == name and b["kind"] == kind]

    row: dict[str, Any] = {"side": arm.side, "allocator": arm.allocator,
                           "default_allocator": arm.allocator == default_allocator(arm.side),
                           "allocator_in_effect": info["host_memory"],
                           "threads": info["threads"], "first_calls_s": first}
    def over(mine: list[float], name: str, kind: str) -> dict | None:
        theirs = medians(name, kind)
        if not theirs or name == arm.name:
            return None  # that JAX arm was not run (--allocators), or it is this row
        return summary([a / b for a, b in zip(mine, theirs, strict=True)])

    for kind in ("train", "infer"):
        mine = medians(arm.name, kind)
        row[f"{kind}_ms"] = summary(mine)
        row[f"{kind}_ratio"] = over(mine, Arm(JAX, arm.allocator).name, kind)
        row[f"{kind}_ratio_to_default"] = over(mine, Arm(JAX, default_allocator(JAX)).name,
                                               kind)
    if arm.side == JAX:
        row["compile_s"] = info["compile_s"]  # compiled ahead, apart from any step
        flops = info["train_flops"]
        achieved = flops / (row["train_ms"]["median"] / 1e3) if flops else None
        peak = max(info["matmul_flops_per_s"], after["matmul_flops_per_s"]) if after else None
        row.update(train_flops=flops, train_flops_per_s=achieved,
                   matmul_peak_flops_per_s=peak,
                   train_peak_fraction=achieved / peak if achieved and peak else None)
    elif arm.side == COMPILED:  # compiled in its first calls: their time less as many steps
        row["compile_mode"] = info.get("compile_mode")
        row["compile_s"] = {kind: max(0.0, sum(first[kind]) - len(first[kind]) * row[
            f"{kind}_ms"]["median"] / 1e3) for kind in ("train", "infer")}
    else:
        row["compile_s"] = None
    return row
