"""One builder for every command: the same network, optimizer and step from a config."""

import json
import os
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from speechmusic_jax import parallel
from speechmusic_jax.training import builder, loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def json_from_process(code: str, devices: int) -> dict:
    """Run ``code`` in a fresh Python with ``devices`` CPU devices; the JSON of its last line."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_build_follows_the_config(tiny_config):
    cfg = tiny_config.copy_and_resolve_references()
    cfg.model.frontend = "logmel"
    cfg.data.sample_rate = 8000
    built = builder.build(cfg, steps_per_epoch=4)
    assert built.spec.frontend == "logmel" and built.spec.sample_rate == 8000
    assert built.segment == int(round(cfg.data.segment_seconds * 8000))
    assert built.params_trainable == sum(x.size for x in jax.tree.leaves(built.state.params))


def test_train_step_parts_run_alone(tiny_config, tmp_path):
    """setup, one train_epoch and validate, called directly as fit calls them."""
    logs = []
    run = loop.setup(tiny_config, str(tmp_path / "run"), logs.append)
    clock = loop.SessionClock()
    state, loops = loop.restore_or_init(run, [loop.workdir_rules.Start.NEW], clock)
    assert loops == [loop.LoopState(started_at=clock.started_at, steps_run=0)]
    state, stats = loop.train_epoch(run, state, 1, run.epoch_batches(1))
    assert len(stats.step_times) == run.built.steps_per_epoch
    assert stats.count[0] == run.built.steps_per_epoch * tiny_config.train.batch_size
    assert 0 < stats.loss_sum[0] / stats.count[0] < 10
    (val,) = loop.validate(run, state)
    assert val["n_files"] == len(run.data.split["val"])
    assert np.isfinite(val["loss"]) and np.isfinite(val["window"]["loss"])
    assert any(m.startswith("compiled train step") for m in logs)


def test_the_loop_fetches_each_steps_metrics_after_dispatching_the_next(tiny_config, tmp_path,
                                                                      monkeypatch):
    """No host stall: step k+1 is dispatched before step k's metrics are read, so the device
    always has work queued; the last step's metrics are read after the loop."""
    events = []
    run = loop.setup(tiny_config, str(tmp_path / "run"), lambda _: None)
    state, _ = loop.restore_or_init(run, [loop.workdir_rules.Start.NEW], loop.SessionClock())
    step_for = loop.Run.step_for

    def recording_step_for(self, weight, state):
        step = step_for(self, weight, state)

        def recorded(*args):
            new_state, m = step(*args)
            events.append(("dispatch", id(m)))
            return new_state, m

        return recorded

    monkeypatch.setattr(loop.Run, "step_for", recording_step_for)
    to_host = loop.parallel.to_host
    monkeypatch.setattr(loop.parallel, "to_host",
                        lambda tree: events.append(("fetch", id(tree))) or to_host(tree))
    state, stats = loop.train_epoch(run, state, 1, run.epoch_batches(1))
    n = run.built.steps_per_epoch
    assert n >= 2
    kinds = [kind for kind, _ in events]
    assert kinds == ["dispatch"] + ["dispatch", "fetch"] * (n - 1) + ["fetch"]
    dispatched = [ident for kind, ident in events if kind == "dispatch"]
    fetched = [ident for kind, ident in events if kind == "fetch"]
    assert fetched == dispatched  # every step's own metrics, in order
    assert len(stats.step_times) == n and all(t is None or t > 0 for t in stats.step_times)
    assert 0 <= stats.device_idle_s < stats.seconds


def test_step_clock_accounts_busy_and_idle_time():
    from speechmusic_jax.training.step_clock import account

    # step 1 queued behind step 0; step 2 submitted 0.5 s after step 1 completed
    busy, idle = account(submitted=[0.0, 0.1, 3.5], done=[1.0, 3.0, 4.5])
    assert busy == pytest.approx([1.0, 2.0, 1.0])
    assert idle == pytest.approx(0.5)
    assert account([], []) == ([], 0.0)


def test_a_step_seen_complete_with_the_one_before_has_no_time_of_its_own():
    from speechmusic_jax.timing import summarize_ms
    from speechmusic_jax.training.step_clock import account

    # Steps of 1 s queued back to back; the watcher noted step 1's end late (at 2.9999 s), when
    # step 2 had ended too: 2.9999 -> 3.0 is the watcher, not a step of 0.1 ms.
    submitted, done = [0.0, 0.1, 0.2, 0.3], [1.0, 2.9999, 3.0, 4.0]
    busy, _ = account(submitted, done)  # without knowing which steps were complete already
    assert min(busy) == pytest.approx(1e-4)
    busy, idle = account(submitted, done, ready_before=[False, False, True, False])
    assert busy[0] == pytest.approx(1.0) and busy[3] == pytest.approx(1.0)
    assert busy[1] is None and busy[2] is None and idle == 0.0
    assert summarize_ms(busy) == pytest.approx({"median": 1000.0, "min": 1000.0, "max": 1000.0,
                                                "n": 4, "timed": 2})
    # complete already but submitted after the watcher noted the step before (the host was
    # slow, or the runtime ran it at dispatch): its start is known, and so its time
    busy, idle = account([0.0, 1.5], [1.0, 2.5], ready_before=[False, True])
    assert busy == pytest.approx([1.0, 1.0]) and idle == pytest.approx(0.5)


class _FakeStep:
    """A step's outputs that complete when the test says so."""

    def __init__(self):
        self.finished = threading.Event()

    def is_ready(self) -> bool:
        return self.finished.is_set()

    def block_until_ready(self):
        self.finished.wait()
        return self


def test_step_clock_leaves_out_the_steps_whose_completions_it_saw_together():
    from speechmusic_jax.training.step_clock import StepClock

    clock = StepClock()
    steps = [_FakeStep() for _ in range(3)]
    for step in steps[:2]:
        clock.dispatched(step, clock.submit())
    steps[1].finished.set()  # step 1 completes before the watcher learns of step 0
    steps[0].finished.set()
    time.sleep(0.1)
    clock.dispatched(steps[2], clock.submit())  # the watcher is waiting when step 2 ends
    time.sleep(0.1)
    steps[2].finished.set()
    busy, _ = clock.close()
    assert busy[0] is None and busy[1] is None
    assert busy[2] is not None and busy[2] >= 0.1


@pytest.mark.slow  # suite time (the suite stays under 15 min); run with -m slow
def test_flops_count_every_device():
    """XLA's cost analysis of a program split over devices counts one device's share; the
    builder reports the whole call, so FLOPs per example do not depend on the device count.
    The step benchmark times the step on 4 devices (--devices=4) and counts the whole batch."""
    code = """
import json, jax
from speechmusic_jax import benchmark, parallel
from speechmusic_jax.config import load_experiment
from speechmusic_jax.training import builder
cfg = load_experiment('experiments/default.py', 'tiny')
built = builder.build(cfg)
out = {}
for n in (1, 4):
    mesh = parallel.make_mesh(jax.devices()[:n])
    out[n] = [builder.compile_eval_step(built, built.state, mesh).flops_per_example,
              builder.compile_train_step(built, built.state, mesh).flops_per_example]
bench = benchmark.benchmark_step(cfg, batch_sizes=[8], steps=3, device_counts=[4],
                                 log=lambda _: None)
out["bench"] = [(r["devices"], r["batch_size"], r["flops_per_step"], r["examples_per_s"],
                 r["examples_per_s_per_device"]) for r in bench["results"]]
print(json.dumps(out))
"""
    flops = json_from_process(code, devices=4)
    one, four = flops["1"], flops["4"]
    assert one[0] > 0 and one[1] > one[0]
    # within 5 %: partitioned, XLA counts a few elementwise ops (the pooling's maxima) apart
    assert four[0] == pytest.approx(one[0], rel=0.05)
    assert four[1] == pytest.approx(one[1], rel=0.05)
    ((d4, b4, f4, e4, p4),) = flops["bench"]
    assert (d4, b4) == (4, 8)
    assert f4 == pytest.approx(one[1] * 8, rel=0.05)  # the whole batch's work, split over 4
    assert p4 == pytest.approx(e4 / 4)


def test_predictor_evaluates_the_weights_given(tiny_config):
    built = builder.build(tiny_config)
    x = np.zeros((2, built.segment), np.float32)
    x[:, ::7] = 0.3
    mesh = parallel.make_mesh()
    step = builder.compile_eval_step(built, built.state, mesh, batch_size=2)
    direct = builder.predictor(built, built.state, step.fn)(jax.device_put(x))
    jitted = builder.predictor(built, built.state)(x)
    np.testing.assert_allclose(np.asarray(direct), np.asarray(jitted), rtol=1e-5, atol=1e-6)


def test_chunked_inference_over_two_devices_keeps_every_row_in_place():
    """Split over devices, each device takes its own share of the batch through the network in
    chunks (train.eval_chunk_mib): the logits must be those of one pass on one device, row for
    row."""
    code = """
import json, jax, numpy as np
from flax import nnx
from speechmusic_jax import parallel
from speechmusic_jax.config import load_experiment
from speechmusic_jax.training import builder, step
cfg = load_experiment('experiments/default.py', 'tiny')
built = builder.build(cfg)
def forward(x):
    return nnx.merge(built.graphdef, built.state.params, built.state.model_state,
                     copy=True)(x, train=False)
example = step.largest_activation_bytes(
    forward, jax.ShapeDtypeStruct((1, built.segment), np.float32))
x = np.random.default_rng(0).standard_normal((8, built.segment)).astype(np.float32)
out = {}
for devices, mib in ((1, 0), (2, 2 * example / 2**20)):  # two chunks of 2 rows per device
    cfg.train.eval_chunk_mib = mib
    b = builder.build(cfg)
    mesh = parallel.make_mesh(jax.devices()[:devices])
    compiled = builder.compile_eval_step(b, b.state, mesh, batch_size=8)
    logits = compiled.fn(b.state.params, b.state.model_state, parallel.put_batch((x,), mesh)[0])
    out[devices] = {"logits": np.asarray(logits).tolist(),
                    "loop": "while" in compiled.fn.as_text()}
print(json.dumps(out))
"""
    out = json_from_process(code, devices=2)
    assert not out["1"]["loop"] and out["2"]["loop"]
    np.testing.assert_allclose(out["2"]["logits"], out["1"]["logits"], rtol=1e-5, atol=1e-6)


def test_eval_step_counts_the_flops_of_the_whole_batch_when_it_goes_in_chunks(tiny_config):
    # XLA's cost analysis counts a loop's body once: chunks must not divide the FLOPs reported.
    flops = {}
    for mib in (0.0, 1e-3):  # one pass; chunks of one example (1 KiB fits none whole)
        tiny_config.train.eval_chunk_mib = mib
        built = builder.build(tiny_config)
        compiled = builder.compile_eval_step(built, built.state, parallel.make_mesh(), 8)
        flops[mib] = (compiled.flops_per_example, "while" in compiled.fn.as_text())
    assert flops[0.0][0] > 0 and flops[0.0][0] == flops[1e-3][0]
    assert not flops[0.0][1] and flops[1e-3][1]


def test_init_seed_fixes_the_initial_weights_and_defaults_to_seed(tiny_config):
    # Unset, init_seed is seed: the initial weights are those the model was built with before
    # the field existed (build_model seeded with seed). Set, it alone changes them; trials
    # that differ only in it share a group (the same data, batches and program).
    from flax import nnx

    from speechmusic_jax import config as config_lib
    from speechmusic_jax.models.conv1d import build_model
    from speechmusic_jax.models.presets import resolve_spec

    def params(cfg):
        return [np.asarray(x) for x in jax.tree.leaves(builder.build(cfg).state.params)]

    tiny_config.seed = 3
    assert tiny_config.init_seed is None and config_lib.init_seed(tiny_config) == 3
    spec = resolve_spec(tiny_config.model, 2, tiny_config.data.sample_rate)
    before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(build_model(spec, 3), nnx.Param))]
    unset = params(tiny_config)
    assert all(np.array_equal(a, b) for a, b in zip(unset, before, strict=True))
    same = tiny_config.copy_and_resolve_references()
    same.init_seed = 3
    assert all(np.array_equal(a, b) for a, b in zip(params(same), unset, strict=True))
    other = tiny_config.copy_and_resolve_references()
    other.init_seed = 4
    config_lib.validate(other)
    assert not all(np.array_equal(a, b) for a, b in zip(params(other), unset, strict=True))
    assert builder.group_key(other) == builder.group_key(tiny_config)
    group = builder.build_group([tiny_config, other])  # each trial starts from its own weights
    for i, want in enumerate((unset, params(other))):
        got = jax.tree.leaves(group.trial_state(group.state, i).params)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), i
    moved = tiny_config.copy_and_resolve_references()
    moved.seed = 4
    assert builder.group_key(moved) != builder.group_key(tiny_config)
    # a config written before the field existed (config.json of an older run) reads as seed
    old = config_lib.to_dict(tiny_config)
    del old["init_seed"]
    assert config_lib.init_seed(old) == 3 and config_lib.diff(old, config_lib.to_dict(
        tiny_config)) == []
