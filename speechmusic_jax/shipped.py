"""The shipped model: a finished run's tested weights and config inside the package, so that a
user classifies without training.

The name ``pretrained`` stands for it wherever a run folder is accepted (``--model=pretrained``,
``Classifier.load("pretrained")``, ``train.init_from=pretrained``): :func:`resolve` is the one
place that turns the name into a folder. A folder named ``pretrained`` in the working
directory is spelled ``./pretrained``. Its folder (``speechmusic_jax/pretrained/``, package
data, written by ``python -m speechmusic_jax.ship``) holds::

    config.json       the run's config, as the run wrote it
    weights.npz       the weights it was tested with: parameters (params/<name>) and batch-norm
                      statistics (model_state/<name>), by dotted name, no optimizer state
    provenance.json   what made it: commit, date, commands, config, CPU, versions, scores

Every command that reads a run folder reads this one too (a slim checkpoint: the tested
weights only, so ``--weights=tested``, or the checkpoint they came from, ``best`` or ``last``).
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Any

import numpy as np

from speechmusic_jax.errors import RunNotFound
from speechmusic_jax.io_utils import read_json

NAME = "pretrained"
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), NAME)
FORMAT = "speechmusic_jax.shipped_model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "weights.npz"
PROVENANCE = "provenance.json"
ENTRIES = frozenset({CONFIG, WEIGHTS, PROVENANCE})
_KINDS = ("params", "model_state")
# How to make one, in every message that says there is none.
HOW_TO_SHIP = ("train one (./run.sh train --workdir=runs/default) and ship it (./run.sh ship "
               "--workdir=runs/default --train_command='./run.sh train --workdir=runs/default')")


def resolve(folder: str, models_dir: str | None = None) -> str:
    """The run folder ``folder`` names: itself, or for the name ``pretrained`` the shipped
    model's folder, ``models_dir`` (default: the package's, :data:`PACKAGE_DIR`). Raises
    :class:`RunNotFound` in one line when no model is shipped there."""
    if folder != NAME:
        return folder
    where = PACKAGE_DIR if models_dir is None else os.path.abspath(models_dir)
    if not is_shipped_model(where):
        raise RunNotFound(f"no shipped model: {where} holds none (the name '{NAME}' means the "
                          f"model shipped in the package; a folder of that name here is "
                          f"./{NAME}); to make one, {HOW_TO_SHIP}")
    return where


def is_shipped_model(folder: str) -> bool:
    """Whether ``folder`` holds a shipped model of ours (its provenance.json says so)."""
    try:
        prov = read_json(os.path.join(folder, PROVENANCE))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(prov, dict) and prov.get("format") == FORMAT


def read_provenance(folder: str) -> dict:
    return read_json(os.path.join(folder, PROVENANCE))


def leaf_arrays(params: Any, model_state: Any) -> dict[str, np.ndarray]:
    """``params/<dotted name>`` and ``model_state/<dotted name>`` -> host array."""
    import jax

    from speechmusic_jax.training.pretrained import leaf_name

    out = {}
    for kind, tree in zip(_KINDS, (params, model_state), strict=True):
        for path, x in jax.tree_util.tree_leaves_with_path(tree):
            out[f"{kind}/{leaf_name(path)}"] = np.asarray(x)
    return out


def weights_bytes(params: Any, model_state: Any) -> bytes:
    """The bytes of weights.npz (uncompressed: float weights hardly compress)."""
    buf = io.BytesIO()
    np.savez(buf, **leaf_arrays(params, model_state))
    return buf.getvalue()


def load_weights(folder: str, which: str, like: Any) -> tuple[Any, Any, int]:
    """(params, model_state, epoch) of the shipped model in ``folder``, in the layout and dtypes
    of ``like`` (a train state built from its config). ``which``: ``tested``, or the checkpoint
    its weights came from. Raises :class:`RunNotFound` naming the folder when the weights are
    not there or do not fit the config."""
    from speechmusic_jax.training.pretrained import in_layout, leaf_name

    prov = read_provenance(folder)
    source = prov.get("run", {})
    if which not in ("tested", source.get("checkpoint")):
        raise RunNotFound(f"{folder} is a shipped model: it holds only the weights its run was "
                          f"tested with (its {source.get('checkpoint')} checkpoint), not its "
                          f"{which} one; use --weights=tested")
    path = os.path.join(folder, WEIGHTS)
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise RunNotFound(f"{path}: cannot read the shipped weights ({e})") from None
    import jax

    trees = []
    for kind in _KINDS:
        wanted = {leaf_name(p): tuple(x.shape)
                  for p, x in jax.tree_util.tree_leaves_with_path(getattr(like, kind))}
        have = {name.split("/", 1)[1]: tuple(x.shape) for name, x in stored.items()
                if name.startswith(f"{kind}/")}
        for name, shape in wanted.items():
            if have.get(name) != shape:
                got = f"shape {have[name]}" if name in have else "no such array"
                raise RunNotFound(f"{path}: {kind} {name} has {got}, its config.json's model "
                                  f"wants shape {shape}")
        extra = sorted(set(have) - set(wanted))
        if extra:
            raise RunNotFound(f"{path}: {kind} {extra[0]} is not in its config.json's model")
        # a flat {dotted name: array} dict: its pytree paths give the same names
        values = {name: stored[f"{kind}/{name}"] for name in wanted}
        trees.append(in_layout(values, getattr(like, kind)))
    return trees[0], trees[1], int(source.get("epoch", 0))
