"""The rules of a run's folder: start, resume, report a finished run, or refuse.

``train`` on a workdir that is absent or empty starts a run; one holding an unfinished run with
the same config resumes it; a finished run is reported, or continued from its last epoch when
only ``train.epochs`` changed and grew; anything else is refused with a message. "The same
config" ignores the fields that do not change what is trained (``config.RUNTIME_FIELDS``:
``data.on_error``, the loader's speed settings, ``note``...).
``--overwrite`` removes a folder only when everything under it, in every subfolder, is what a run
of ours writes there (or it is empty): a folder with any file this program did not write is
never deleted, whatever the flags. :func:`remove_run` is the one deletion of a run or a part of
one (crossval folds, sweep trials and the checkpoints' own pruning all go through it).
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil

from speechmusic_jax import config as config_lib
from speechmusic_jax.errors import WorkdirConflict
from speechmusic_jax.training import reporting

# What a run of ours writes, folder by folder (docs/experiments.md: "What a run leaves"): for
# each kind of folder, the names of its files and of its subfolders (with their kinds), as regular
# expressions over the whole name. Every folder may also hold the temporaries of atomic writes
# (".NAME.*.tmp") that a kill leaves behind. --overwrite deletes a folder only when every entry
# anywhere under it matches; a user's checkpoints/README.txt or eval/notes.txt stops it.
_TEMPORARY = re.compile(r"\..+\.tmp")
_LAYOUT: dict[str, tuple[str, dict[str, str]]] = {
    "run": (r"config\.json|split\.csv|metrics\.jsonl|evals\.jsonl|summary\.json"
            r"|test_predictions\.csv"
            r"|curves\.png",
            {r"checkpoints": "checkpoints", r"tensorboard": "tensorboard", r"eval": "eval"}),
    # training/checkpoints.py: epoch_NNNN (or epoch_NNNN.K, a re-save of an epoch that a
    # pointer still names) and the two pointers.
    "checkpoints": (r"best\.json|last\.json", {r"epoch_\d{4,}(\.\d+)?": "epoch"}),
    "epoch": (r"loop\.json", {r"state(\.orbax-checkpoint-tmp.*)?": "orbax"}),
    # What orbax (StandardCheckpointer, OCDBT format) and tensorstore write in a checkpoint:
    # metadata files, chunk files named by 32 hex digits, their folders, orbax's commit marker
    # and the lock files of tensorstore's writes.
    "orbax": (r"_[A-Z_]+|_sharding|commit_success\.txt|manifest\.ocdbt|[0-9a-f]{32}"
              r"|process_\d+|descriptor\.pbtxt|.+\.__lock",
              {r"d|ocdbt\.process_\d+|array_metadatas|descriptor": "orbax"}),
    "tensorboard": (r"events\.out\.tfevents\..+", {}),
    # evaluate's reports and per-file predictions (trained_run.eval_paths); their content is
    # checked too, since the names come from the user's source specs.
    "eval": (r".+\.json|.+\.predictions\.csv", {}),
}
# The top-level sections of every config.json we write.
_CONFIG_SECTIONS = frozenset({"name", "seed", "data", "model", "train", "optimizer"})


class Start(enum.Enum):
    NEW = "new"  # nothing there yet
    RESUME = "resume"  # an unfinished run with the same config
    FINISHED = "finished"  # a completed (or early-stopped) run with the same config
    EXTEND = "extend"  # a finished run, now asked for more epochs: continue from its last epoch


def others(folder: str) -> list[str]:
    """The entries of ``folder`` (sorted; none when it is absent) other than the temporaries of
    our atomic writes: a kill in the middle of a run's or a sweep's first write leaves one, and
    the same command must then start as in an empty folder."""
    if not os.path.isdir(folder):
        return []
    return sorted(e for e in os.listdir(folder) if not _TEMPORARY.fullmatch(e))


def start(workdir: str, cfg_dict: dict) -> Start:
    """How ``train`` begins in ``workdir`` for the config ``cfg_dict``; WorkdirConflict when it
    must not (a file, a folder of other things, a run of another config)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirConflict(f"--workdir {workdir} is a file, not a folder")
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        leftovers = others(workdir)
        if leftovers:
            raise WorkdirConflict(
                f"--workdir {workdir} is not empty and holds no run (found {leftovers[:5]}); "
                "choose another workdir")
        return Start.NEW
    old = read_json(cfg_path) or {}
    changed = config_lib.training_diff(old, cfg_dict)
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


def foreign_entries(workdir: str, kind: str = "run") -> list[str]:
    """What under ``workdir`` a run of ours does not write there (paths relative to it, in
    walk order; empty for a run of ours, or for an empty or absent folder). ``kind``: what the
    folder is, a key of the layout above ("run": a whole run folder, whose config.json must be
    ours, else everything in it is foreign). Links are always foreign: we write none."""
    if not os.path.lexists(workdir):
        return []
    if os.path.islink(workdir) or not os.path.isdir(workdir):
        return [os.path.basename(workdir)]
    entries = sorted(os.listdir(workdir))
    if kind == "run" and entries:
        cfg = read_json(os.path.join(workdir, "config.json"))
        if not isinstance(cfg, dict) or not set(cfg) >= _CONFIG_SECTIONS:
            return entries
    return _foreign(workdir, "", kind)


def _foreign(root: str, rel: str, kind: str) -> list[str]:
    files, folders = _LAYOUT[kind]
    out = []
    for name in sorted(os.listdir(os.path.join(root, rel))):
        path = os.path.join(rel, name)
        full = os.path.join(root, path)
        if os.path.islink(full):
            out.append(path)
        elif os.path.isdir(full):
            sub = next((k for pattern, k in folders.items() if re.fullmatch(pattern, name)), None)
            out += _foreign(root, path, sub) if sub else [path + os.sep]
        elif not (_TEMPORARY.fullmatch(name)
                  or (re.fullmatch(files, name) and _content_ours(kind, full))):
            out.append(path)
    return out


def _content_ours(kind: str, path: str) -> bool:
    """For eval/, whose file names come from the user's source specs: is the file's content
    one of ours (an evaluate report, or its predictions)?"""
    if kind != "eval":
        return True
    if path.endswith(".json"):
        return is_eval_report(path)
    try:
        return reporting.is_predictions_file(path)
    except (OSError, UnicodeDecodeError):
        return False


def is_eval_report(path: str) -> bool:
    """Is ``path`` a report that ``evaluate`` wrote (a JSON object with its keys)?"""
    report = read_json(path)
    return isinstance(report, dict) and {"accuracy", "source"} <= set(report)


def remove_run(workdir: str, kind: str = "run") -> None:
    """Delete the run in ``workdir`` (for --overwrite), or refuse with WorkdirConflict, deleting
    nothing, when anything under it is not what a run of ours writes there. The one way this
    program deletes a folder of its results: ``kind`` names a part of a run (a key of the layout
    above, e.g. "epoch" for one checkpoint) for the checkpoints' own pruning."""
    if not os.path.lexists(workdir):
        return
    check_removable(workdir, kind)
    shutil.rmtree(workdir)


def check_removable(workdir: str, kind: str = "run") -> None:
    """Raise what :func:`remove_run` would raise for ``workdir``, deleting nothing."""
    if not os.path.lexists(workdir):
        return
    if os.path.islink(workdir) or not os.path.isdir(workdir):
        raise WorkdirConflict(f"--workdir {workdir} is not a folder of ours; --overwrite removes "
                              "only a run folder this program wrote. Nothing was deleted.")
    foreign = foreign_entries(workdir, kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        if kind != "run":
            raise WorkdirConflict(f"{workdir} was not removed: it holds files that a run of ours "
                                  f"does not write ({shown}); nothing was deleted")
        raise WorkdirConflict(
            f"--overwrite refused: {workdir} holds files that are not a run of ours ({shown}); "
            "nothing was deleted. Choose another --workdir, or move those files away.")


def read_json(path: str):
    """The JSON in ``path``, or None when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
