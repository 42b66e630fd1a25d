"""The rules of a run's folder: start, resume, report a finished run, or refuse.

``train`` on a workdir that is absent or empty starts a run; one holding an unfinished run with
the same config resumes it; a finished run is reported, or continued from its last epoch when
only ``train.epochs`` changed and grew; anything else is refused with a message.
``--overwrite`` removes a folder only when it holds nothing but a run of ours (or nothing at all):
a folder with any file this program did not write is never deleted, whatever the flags.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil

from speechmusic_jax import config as config_lib
from speechmusic_jax.errors import WorkdirConflict

# What a run writes into its folder (see README: "What a run leaves"). Temporary files of atomic
# writes (".NAME.*.tmp") may be left by a kill.
RUN_ENTRIES = frozenset({"config.json", "split.csv", "metrics.jsonl", "summary.json",
                         "test_predictions.csv", "curves.png", "checkpoints", "tensorboard",
                         "eval"})
_TEMPORARY = re.compile(r"^\..+\.tmp$")
# The top-level sections of every config.json we write.
_CONFIG_SECTIONS = frozenset({"name", "seed", "data", "model", "train", "optimizer"})


class Start(enum.Enum):
    NEW = "new"  # nothing there yet
    RESUME = "resume"  # an unfinished run with the same config
    FINISHED = "finished"  # a completed (or early-stopped) run with the same config
    EXTEND = "extend"  # a finished run, now asked for more epochs: continue from its last epoch


def start(workdir: str, cfg_dict: dict) -> Start:
    """How ``train`` begins in ``workdir`` for the config ``cfg_dict``; WorkdirConflict when it
    must not (a file, a folder of other things, a run of another config)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirConflict(f"--workdir {workdir} is a file, not a folder")
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        if os.path.isdir(workdir) and os.listdir(workdir):
            leftovers = sorted(os.listdir(workdir))[:5]
            raise WorkdirConflict(
                f"--workdir {workdir} is not empty and holds no run (found {leftovers}); "
                "choose another workdir")
        return Start.NEW
    old = read_json(cfg_path) or {}
    changed = config_lib.diff(old, cfg_dict)
    more_epochs = (changed == ["train.epochs"]
                   and cfg_dict["train"]["epochs"] > old["train"]["epochs"])
    if changed and not more_epochs:
        raise WorkdirConflict(
            f"--workdir {workdir} holds a run with a different config (fields: "
            f"{', '.join(changed)}); use another --workdir or pass --overwrite to start afresh")
    summary = read_json(os.path.join(workdir, "summary.json")) or {}
    if summary.get("status") in ("completed", "stopped_early"):
        return Start.EXTEND if more_epochs else Start.FINISHED
    return Start.RESUME


def foreign_entries(workdir: str) -> list[str]:
    """What in ``workdir`` is not part of a run of ours (empty for a run of ours, or for an
    empty or absent folder). A folder with entries but no config.json of ours is all foreign."""
    if not os.path.isdir(workdir):
        return [] if not os.path.exists(workdir) else [os.path.basename(workdir)]
    entries = sorted(os.listdir(workdir))
    if not entries:
        return []
    cfg = read_json(os.path.join(workdir, "config.json"))
    if not isinstance(cfg, dict) or not set(cfg) >= _CONFIG_SECTIONS:
        return entries
    return [e for e in entries if e not in RUN_ENTRIES and not _TEMPORARY.match(e)]


def remove_run(workdir: str) -> None:
    """Delete the run in ``workdir`` (for --overwrite), or refuse with WorkdirConflict, deleting
    nothing, when the folder holds anything else."""
    if not os.path.lexists(workdir):
        return
    if os.path.islink(workdir) or not os.path.isdir(workdir):
        raise WorkdirConflict(f"--workdir {workdir} is not a folder of ours; --overwrite removes "
                              "only a run folder this program wrote. Nothing was deleted.")
    foreign = foreign_entries(workdir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise WorkdirConflict(
            f"--overwrite refused: {workdir} holds files that are not a run of ours ({shown}); "
            "nothing was deleted. Choose another --workdir, or move those files away.")
    shutil.rmtree(workdir)


def read_json(path: str):
    """The JSON in ``path``, or None when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
