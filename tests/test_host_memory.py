"""--host_memory: glibc keeps freed large buffers for reuse (no fresh pages per step), or not."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from speechmusic_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="the keep policy is glibc's mallopt")

# In a fresh process (the policy is process-wide): allocate, touch and free a 64 MiB buffer
# six times, the way a compiled step treats its temporaries, and count the page faults of the
# last five rounds. Transparent huge pages are turned off for the process (prctl
# PR_SET_THP_DISABLE), so that a machine with THP "always" counts its faults in pages too.
_ROUNDS = """
import ctypes, ctypes.util, json, resource, sys
from speechmusic_jax import host_memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.prctl(41, 1, 0, 0, 0)
policy = host_memory.apply(sys.argv[1])
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"policy": policy, "faults": faults[1:]}))
"""


def _rounds(policy: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _ROUNDS, policy], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


@glibc_only
def test_keep_reuses_the_pages_of_a_freed_large_buffer_and_release_does_not():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept, released = _rounds("keep"), _rounds("release")
    assert kept["policy"] == "keep" and released["policy"] == "release"
    # glibc's default: each round is a fresh mapping, zeroed page by page on first touch
    assert min(released["faults"]) > 0.9 * pages
    # keep: the heap keeps the freed buffer and the next round touches the same pages
    assert max(kept["faults"]) < 0.05 * pages


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="host memory policy must be one of"):
        host_memory.apply("hoard")
    assert host_memory.apply("release") == "release"  # changes nothing


def test_a_child_process_is_given_the_policy_in_effect_here():
    assert host_memory.flag_for("keep") == "keep"
    for in_effect in ("release", "release (not glibc)", "release (mallopt refused)"):
        assert host_memory.flag_for(in_effect) == "release"


@glibc_only
def test_every_command_takes_the_flag_and_the_benchmark_records_it(tmp_path):
    out = tmp_path / "step.json"
    r = subprocess.run([sys.executable, "-m", "speechmusic_jax.benchmark", "--what=step",
                        "--config=experiments/default.py:tiny", "--batch_sizes=2", "--steps=3",
                        "--host_memory=release", f"--output={out}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["host_memory"] == "release"
    assert "host memory (--host_memory): release" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "speechmusic_jax.predict", "--host_memory=hoard",
                          "x.wav"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "host_memory" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_segment_bench_times_its_processes_under_its_own_policy(tmp_path_factory, monkeypatch):
    """`segment_bench --what=speed` starts `predict` and a start-up probe in fresh processes:
    they run under the policy of the benchmark itself, which its report names."""
    from tiny_run import tiny_run

    from speechmusic_jax import segment_bench

    commands: list[list[str]] = []

    def fake_timed_process(command: list[str]) -> dict:
        commands.append(command)
        return {"wall_s": 1.0, "peak_rss_bytes": 1, "cpu_s": 1.0, "other_cores": 0.0,
                "stderr_tail": ["imports 0.1 restore 0.1 compile 0.1"]}

    monkeypatch.setattr(segment_bench, "timed_process", fake_timed_process)
    report = segment_bench.speed(tiny_run(tmp_path_factory), 30.0, 0, 1, log=lambda _: None,
                                 host_memory="keep")
    assert report["host_memory"] == "keep"
    predicts, startup = commands[:2], commands[2]
    assert len(commands) == 3 and all("speechmusic_jax.predict" in c for c in predicts)
    assert all("--host_memory=keep" in c for c in predicts) and startup[-1] == "keep"
