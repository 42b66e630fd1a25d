"""Ship a finished run as the package's model (``pretrained``), with its provenance.

    python -m speechmusic_jax.ship --workdir=runs/default --train_command='COMMAND'
        [--score=SPEC ...] [--data_on_error=error|skip] [--output=DIR] [--overwrite]

Copies the config and the weights the run was tested with (parameters and batch-norm
statistics only, no optimizer state) into ``--output`` (default: the package's
``speechmusic_jax/pretrained``, see :mod:`speechmusic_jax.shipped`), and writes
``provenance.json`` beside them: the commit of this checkout and whether it had uncommitted
changes, the date, the command that trained the run (``--train_command``: a run does not record
it) and this one, the config, the CPU the run trained on and this one, the versions, and the
scores: the run's own test split (from its summary.json) and every labelled ``--score`` source,
each evaluated with the shipped weights as ``evaluate`` does (its report also lands in the run's
eval/). The folder is written beside the target and renamed into place once whole; an existing
one is replaced only with ``--overwrite`` and only when it is a shipped model of ours (or an
empty folder), anything else never.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import platform
import secrets
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any

from speechmusic_jax import cli
from speechmusic_jax.provenance import git_commit


def check_output_folder(folder: str, overwrite: bool) -> None:
    """Refuse (WorkdirConflict) to write the shipped model over anything but an absent or empty
    folder, or, with ``overwrite``, a shipped model of ours (and nothing else in it)."""
    from speechmusic_jax import shipped
    from speechmusic_jax.errors import WorkdirConflict

    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise WorkdirConflict(f"--output={folder} is not a folder; choose another path")
    entries = set(os.listdir(folder))
    if not entries:
        return
    if not shipped.is_shipped_model(folder) or not entries <= shipped.ENTRIES:
        raise WorkdirConflict(f"--output={folder} holds files that are not a shipped model of "
                              "ours; it was left as it is. Choose another --output.")
    if not overwrite:
        raise WorkdirConflict(f"--output={folder} holds a shipped model; pass --overwrite to "
                              "replace it")


def ship_run(workdir: str, output: str, *, train_command: str, command: str,
             scores: Sequence[str] = (), on_error: str = "error", overwrite: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Write the shipped model of the finished run in ``workdir`` to the folder ``output`` (see
    the module's docstring) and return its provenance. ``command``: the command doing it."""
    from speechmusic_jax import shipped, timing, trained_run
    from speechmusic_jax.data import sources
    from speechmusic_jax.errors import DataError, RunNotFound
    from speechmusic_jax.io_utils import atomic_write_bytes, atomic_write_json, read_json

    output = os.path.abspath(output)
    check_output_folder(output, overwrite)
    for spec in scores:  # before any work
        try:
            sources.parse_spec(spec)
        except ValueError as e:
            raise DataError(f"--score: {e}") from None
    workdir = os.path.abspath(workdir)
    if shipped.is_shipped_model(workdir):
        raise RunNotFound(f"--workdir {workdir} is a shipped model already; name the training "
                          "run it came from")
    summary_path = os.path.join(workdir, "summary.json")
    summary = read_json(summary_path) if os.path.exists(summary_path) else {}
    if summary.get("status") not in ("completed", "stopped_early") or not summary.get("test"):
        raise RunNotFound(f"--workdir {workdir} holds no finished run with test scores (its "
                          f"summary.json: {summary.get('status', 'none')}); finish training it "
                          "first")
    weights = trained_run.run_weights(workdir, "tested")
    if weights.epoch != summary.get("tested_epoch"):
        raise RunNotFound(f"--workdir {workdir}: its tested checkpoint is epoch {weights.epoch}, "
                          f"its summary.json's test scores are of epoch "
                          f"{summary.get('tested_epoch')}; they must be the same weights")
    blob = shipped.weights_bytes(weights.params, weights.model_state)
    commit, dirty = git_commit()
    provenance = {
        "format": shipped.FORMAT, "format_version": shipped.FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "uncommitted_changes": dirty,
        "commit_note": "the checkout's commit when the model was shipped; the run's own, where "
                       "it recorded one, is run.versions.speechmusic_jax_commit",
        "train_command": train_command,
        "ship_command": command,
        "run": {"workdir": workdir, "name": weights.cfg.name, "checkpoint": weights.checkpoint,
                "epoch": int(weights.epoch), "status": summary.get("status"),
                "finished_at": summary.get("finished_at"),
                "train_time_s": summary.get("train_time_s"),
                "device_kind": summary.get("device_kind"), "backend": summary.get("backend"),
                "cpu_model": summary.get("cpu_model"), "versions": summary.get("versions")},
        "shipped_on": {"cpu_model": timing.cpu_model(), "platform": platform.platform(),
                       "versions": timing.versions()},
        "params_total": summary.get("params_total"),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "weights_bytes": len(blob),
        "config": read_json(os.path.join(workdir, "config.json")),
        "scores": {"test": summary["test"]},
        "scores_note": "test: the run's own test split of its data (summary.json, the same "
                       "weights); every other key: a labelled source evaluated with the shipped "
                       "weights, as evaluate does",
    }
    parent, base = os.path.split(output)
    tmp = os.path.join(parent, f".{base}.{secrets.token_hex(6)}.tmp")
    os.makedirs(tmp)
    try:
        with open(os.path.join(workdir, "config.json"), "rb") as f:
            atomic_write_bytes(os.path.join(tmp, shipped.CONFIG), f.read())
        atomic_write_bytes(os.path.join(tmp, shipped.WEIGHTS), blob)
        atomic_write_json(os.path.join(tmp, shipped.PROVENANCE), provenance)
        shipped_run = _read_back(tmp, weights)
        # scored with the weights as shipped; the reports land in the run's eval/, and the
        # overlap check compares with the run's own split
        shipped_run = dataclasses.replace(shipped_run, workdir=workdir)
        for spec in scores:
            report, path = trained_run.evaluate_source(shipped_run, spec, on_error=on_error,
                                                       log=log)
            log(f"{spec}: accuracy {report['accuracy']:.4f} over {report['n_files']} files "
                f"(report: {path})")
            provenance["scores"][spec] = report
        atomic_write_json(os.path.join(tmp, shipped.PROVENANCE), provenance)
        _into_place(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"shipped the epoch-{weights.epoch} weights ({weights.checkpoint} checkpoint) of "
        f"{workdir} to {output} ({len(blob):,} bytes of weights)")
    return provenance


def _read_back(folder: str, weights: Any) -> Any:
    """The model written to ``folder``, read as every command reads it (a LoadedRun), after
    checking that it holds the run's weights bit for bit."""
    import jax
    import numpy as np

    from speechmusic_jax import trained_run

    back = trained_run.run_weights(folder, "tested")
    for a, b in zip(jax.tree.leaves((back.params, back.model_state)),
                    jax.tree.leaves((weights.params, weights.model_state)), strict=True):
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            raise OSError(f"{folder}: the weights read back differ from the run's")
    return trained_run.loaded(back)


def _into_place(tmp: str, output: str) -> None:
    """Rename the finished folder ``tmp`` to ``output``; an old shipped model there (checked
    before) is renamed aside first and removed once the new one is in place."""
    old = None
    if os.path.isdir(output) and os.listdir(output):
        old = f"{tmp}.old"
        os.rename(output, old)
    os.replace(tmp, output)  # onto an absent or empty folder
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def define_flags() -> dict[str, Any]:
    from absl import flags

    return {
        "workdir": flags.DEFINE_string("workdir", None, "The finished run to ship."),
        "train_command": flags.DEFINE_string("train_command", None, "The exact command that "
                                             "trained the run (recorded in provenance.json; a "
                                             "run does not record it)."),
        "score": flags.DEFINE_multi_string("score", [], "A labelled data source to score the "
                                           "shipped weights on (folder:PATH, manifest:FILE.csv, "
                                           "...); repeat for several."),
        "data_on_error": flags.DEFINE_enum("data_on_error", "error", ["error", "skip"],
                                           "A --score file that cannot be read: stop, or skip "
                                           "it and count it."),
        "output": flags.DEFINE_string("output", None, "The folder to write (default: the "
                                      "package's speechmusic_jax/pretrained, which "
                                      "--model=pretrained reads)."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace a shipped model already "
                                       "in --output."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import shipped

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    if not flags["workdir"]:
        raise cli.UsageError("--workdir is required: the finished run to ship")
    if not (flags["train_command"] or "").strip():
        raise cli.UsageError("--train_command is required: the exact command that trained the "
                             "run (provenance.json records it)")
    ship_run(flags["workdir"], flags["output"] or shipped.PACKAGE_DIR,
             train_command=flags["train_command"].strip(),
             command=shlex.join([os.path.basename(sys.executable), "-m", "speechmusic_jax.ship",
                                 *sys.argv[1:]]),
             scores=flags["score"], on_error=flags["data_on_error"],
             overwrite=flags["overwrite"], log=cli.log)
    return 0


if __name__ == "__main__":
    cli.run_main(define_flags, main)
