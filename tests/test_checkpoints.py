"""Checkpoint retention under a kill at every step of a save: no pointer ever names a checkpoint
that is missing or incomplete, and the next start resumes from what the pointers name.

A kill is simulated in-process: the k-th file-system step of the saves (an orbax save, a JSON
write, a removal) raises a BaseException instead of running, which no handler of the library
catches, so nothing after it runs, as after SIGKILL. tests/test_reliability.py kills real
processes at a few of these moments."""

import os

import numpy as np
import pytest

from speechmusic_jax.training import checkpoints as ckpt_lib
from speechmusic_jax.training import workdir as workdir_rules

EPOCHS = 3
saved: list[int] = []  # the epochs the last session of train() saved


class Killed(BaseException):
    pass


class Faults:
    """Counts the steps of the saves; raises Killed in place of the ``kill_at``-th."""

    def __init__(self, monkeypatch, ckpts: ckpt_lib.Checkpoints, kill_at: int | None):
        self.steps, self.kill_at = 0, kill_at
        for module, name in ((ckpt_lib, "atomic_write_json"), (workdir_rules, "remove_run")):
            monkeypatch.setattr(module, name, self.wrap(getattr(module, name)))
        monkeypatch.setattr(ckpts._ckpt, "save", self.wrap(ckpts._ckpt.save))

    def wrap(self, fn):
        def step(*args, **kwargs):
            self.steps += 1
            if self.steps == self.kill_at:
                raise Killed(self.steps)
            return fn(*args, **kwargs)

        return step


def improves(epoch: int) -> bool:
    return epoch in (1, 2)  # the monitored metric improves at these epochs


def train(workdir, monkeypatch, kill_at=None, improved=improves) -> int | None:
    """One session of a run that saves every epoch: resume from last.json, save each remaining
    epoch (best too when ``improved``). Returns the step it was killed at (None: finished,
    and then ``saved`` holds the epochs it saved)."""
    with monkeypatch.context() as m:
        ckpts = ckpt_lib.Checkpoints(str(workdir))
        Faults(m, ckpts, kill_at)
        last = ckpts.last()
        first = 1
        saved.clear()
        if last is not None:
            state, loop = ckpts.restore(last, {"w": np.zeros(3, np.float32)})
            assert loop["epoch"] == last["epoch"]
            assert np.all(np.asarray(state["w"]) == loop["epoch"])
            first = last["epoch"] + 1
        try:
            for epoch in range(first, EPOCHS + 1):
                best = {"monitor": "val_loss", "value": -epoch} if improved(epoch) else None
                ckpts.save(epoch, {"w": np.full(3, epoch, np.float32)}, {"epoch": epoch},
                           best=best)
                saved.append(epoch)
        except Killed as k:
            return k.args[0]
    return None


def check_pointers(workdir) -> dict:
    """Every pointer on disk names a complete checkpoint of the epoch it says, which restores."""
    folder = str(workdir / "checkpoints")
    ckpts = ckpt_lib.Checkpoints(str(workdir))
    found = {}
    for which in ("last", "best"):
        if not os.path.exists(os.path.join(folder, f"{which}.json")):
            continue
        pointer = ckpt_lib.Checkpoints.pointer(folder, which)
        assert pointer is not None, f"{which}.json names a missing or incomplete checkpoint"
        assert os.path.exists(os.path.join(folder, pointer["dir"], "state",
                                           "commit_success.txt"))
        state, loop = ckpts.restore(pointer, {"w": np.zeros(3, np.float32)})
        assert loop["epoch"] == pointer["epoch"]
        assert np.all(np.asarray(state["w"]) == pointer["epoch"])
        found[which] = pointer["epoch"]
    return found


def check_finished(workdir) -> None:
    assert check_pointers(workdir) == {"last": EPOCHS, "best": 2}
    named = {ckpt_lib.Checkpoints.pointer(str(workdir / "checkpoints"), w)["dir"]
             for w in ("last", "best")}
    kept = {e for e in os.listdir(workdir / "checkpoints") if e.startswith("epoch_")}
    assert kept >= named
    if saved:  # what no pointer names is pruned at the next save (a kill in the last prune
        assert kept == named  # leaves it until the run saves again)


def test_a_kill_at_every_step_of_the_saves_then_resume(monkeypatch, tmp_path):
    total = None
    k = 1
    while True:
        workdir = tmp_path / f"kill_{k}"
        killed = train(workdir, monkeypatch, kill_at=k)
        if killed is None:
            total = k - 1
            break
        check_pointers(workdir)
        assert train(workdir, monkeypatch) is None
        check_finished(workdir)
        k += 1
    assert total >= EPOCHS * 3  # orbax, loop.json and last.json at least, for every epoch


@pytest.mark.parametrize("rerun_improves", [True, False])
def test_a_kill_between_best_and_last_then_a_kill_at_every_step_of_the_resume(
        monkeypatch, tmp_path, rerun_improves):
    """best.json names epoch 2 and last.json epoch 1: the resume saves epoch 2 again. Neither it
    nor a kill at any step of it may remove the checkpoint that best.json names."""

    def between_best_and_last(workdir, k: int) -> bool:
        """Kill the first session at step ``k``: did that leave best at 2 and last at 1?"""
        train(workdir, monkeypatch, kill_at=k)
        best = ckpt_lib.Checkpoints.pointer(str(workdir / "checkpoints"), "best")
        last = ckpt_lib.Checkpoints.pointer(str(workdir / "checkpoints"), "last")
        return bool(best and last and (best["epoch"], last["epoch"]) == (2, 1))

    k = next(k for k in range(1, 20) if between_best_and_last(tmp_path / f"find_{k}", k))

    def rerun(epoch):
        return improves(epoch) if rerun_improves or epoch != 2 else False

    j = 1
    while True:
        workdir = tmp_path / f"resume_kill_{j}"
        assert between_best_and_last(workdir, k)
        killed = train(workdir, monkeypatch, kill_at=j, improved=rerun)
        check_pointers(workdir)
        if killed is None:
            break
        assert train(workdir, monkeypatch, improved=rerun) is None
        check_finished(workdir)
        j += 1
    assert j > 5
