"""Starting a run from a finished run's weights: ``train.init_from`` (fine-tuning).

``train.init_from=DIR`` (or ``DIR:tested``; ``pretrained``: the model shipped in the package,
:mod:`speechmusic_jax.shipped`) takes the weights the run in ``DIR`` was tested
with (its best checkpoint, or its last where it had ``train.early_stopping.restore_best`` off),
``DIR:best`` its best checkpoint, ``DIR:last`` its last. Only the weights are taken, the
parameters and the batch-norm statistics; the optimizer state, the step counter, the schedule
and early stopping start afresh.

Before any work, :func:`load` checks that the weights fit the config, each failure a
:class:`ConfigError` naming the field: ``DIR`` holds a run with a checkpoint; the classes are the
same, in the same order (the head has one output per class); the sample rate is the same (the
stem's filters are tied to it); the parameter and statistics trees have the same paths and
shapes (the first that differs is named, with both shapes); and the resolved model spec is the
same but for the dropout rates (which change no weight).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax import parallel, shipped
from speechmusic_jax.config import parse_init_from, tested_checkpoint
from speechmusic_jax.errors import ConfigError, RunNotFound
from speechmusic_jax.training import builder
from speechmusic_jax.training.checkpoints import Checkpoints

FIELD = "train.init_from"
# ModelSpec fields that may differ between the pretrained run and the one it starts: they
# change no weight (the classes and the sample rate are checked on their own, by name).
_FREE_SPEC_FIELDS = frozenset({"dropout", "stage_dropout", "num_classes", "sample_rate"})


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """The weights a run starts from, as host arrays in the layout of the new run's model."""

    workdir: str  # the pretrained run's folder (absolute)
    checkpoint: str  # "best" or "last"
    epoch: int  # the epoch of the weights taken
    params: Any
    model_state: Any  # the batch-norm statistics

    @property
    def weights(self) -> tuple[Any, Any]:
        return self.params, self.model_state

    def record(self) -> dict:
        """Where the run started from, for summary.json."""
        return {"workdir": self.workdir, "checkpoint": self.checkpoint, "epoch": self.epoch}


def needed(cfg: config_lib.ConfigDict, workdir: str, overwrite: bool = False) -> bool:
    """Whether a run of ``cfg`` in ``workdir`` starts from ``train.init_from`` now: it names a
    run, and the workdir has no checkpoint of its own to resume from (a new run, one started
    afresh with ``overwrite``, or one killed before its first checkpoint)."""
    if not cfg.train.init_from:
        return False
    return overwrite or Checkpoints.pointer(os.path.join(workdir, "checkpoints"), "last") is None


def check(cfg: config_lib.ConfigDict, workdirs: Sequence[str] = (),
          models_dir: str | None = None) -> str:
    """Everything :func:`load` checks, without reading the weights (``train --dry_run``):
    raise :class:`ConfigError` if the run named by ``cfg.train.init_from`` does not fit
    ``cfg``, else return a line saying which checkpoint a run would start from."""
    folder, which, pointer, _, _ = _locate(cfg, workdirs, models_dir)
    return (f"{FIELD}: the {which} checkpoint (epoch {int(pointer['epoch'])}) of the run in "
            f"{folder} fits this config")


def load(cfg: config_lib.ConfigDict, workdirs: Sequence[str] = (),
         mesh: jax.sharding.Mesh | None = None, models_dir: str | None = None) -> Pretrained:
    """Check that the run named by ``cfg.train.init_from`` fits ``cfg`` and take its weights.
    ``workdirs``: the folders of the new run (or runs) (none may be the pretrained run's);
    ``mesh``: the devices of a run over several processes (each reads the checkpoint, as on
    resume); ``models_dir``: where ``pretrained`` names a shipped model (default: the
    package's, :func:`shipped.resolve`)."""
    folder, which, pointer, source, target = _locate(cfg, workdirs, models_dir)
    if shipped.is_shipped_model(folder):  # the tested weights alone, read by every process
        try:
            params, model_state, _ = shipped.load_weights(folder, which, source.state)
        except RunNotFound as e:
            raise ConfigError(f"{FIELD}: {e}") from None
    else:
        multiprocess = mesh is not None and len({d.process_index for d in mesh.devices.flat}) > 1
        state, _ = Checkpoints(folder, mesh if multiprocess else None).restore(pointer,
                                                                               source.state)
        params, model_state = builder.eval_weights(source, state)  # what it was tested with
    params = in_layout(parallel.to_host(params), target.state.params)
    model_state = in_layout(parallel.to_host(model_state), target.state.model_state)
    return Pretrained(folder, which, int(pointer["epoch"]), params, model_state)


def _locate(cfg: config_lib.ConfigDict, workdirs: Sequence[str], models_dir: str | None = None
            ) -> tuple[str, str, dict, builder.Built, builder.Built]:
    """The pretrained run's folder, which checkpoint, its pointer, and both models built
    abstractly, once every check has passed."""
    from speechmusic_jax.trained_run import config_from_json

    folder, which = parse_init_from(cfg.train.init_from)
    try:
        folder = os.path.abspath(shipped.resolve(folder, models_dir))
    except RunNotFound as e:
        raise ConfigError(f"{FIELD}: {e}") from None
    if any(os.path.realpath(folder) == os.path.realpath(w) for w in workdirs):
        raise ConfigError(f"{FIELD}: {folder} is this run's own workdir; name the finished run "
                          "to start from, and train in another folder")
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConfigError(f"{FIELD}: {folder} holds no run (no config.json)")
    try:
        source_cfg = config_from_json(cfg_path)
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"{FIELD}: cannot read {cfg_path}: {e}") from None
    if which == "tested":
        which = tested_checkpoint(source_cfg)
    if shipped.is_shipped_model(folder):
        run = shipped.read_provenance(folder)["run"]
        if which != run["checkpoint"]:
            raise ConfigError(f"{FIELD}: {folder} is a shipped model: it holds only the weights "
                              f"its run was tested with (its {run['checkpoint']} checkpoint), "
                              f"not its {which} one")
        pointer = {"epoch": run["epoch"]}
    else:
        pointer = Checkpoints.pointer(os.path.join(folder, "checkpoints"), which)
    if pointer is None:
        raise ConfigError(f"{FIELD}: the run in {folder} has no {which} checkpoint (it has not "
                          "finished an epoch)")
    source = builder.abstract_build(source_cfg)
    target = builder.abstract_build(cfg)
    check_compatible(source_cfg, source, cfg, target, folder)
    return folder, which, pointer, source, target


def check_compatible(source_cfg: config_lib.ConfigDict, source: builder.Built,
                     cfg: config_lib.ConfigDict, target: builder.Built, folder: str) -> None:
    """Raise :class:`ConfigError` naming the first way the pretrained run (``source_cfg``,
    built abstractly as ``source``) does not fit ``cfg`` (``target``)."""
    old, new = tuple(source_cfg.data.classes), tuple(cfg.data.classes)
    if old != new:
        raise ConfigError(f"{FIELD}: the run in {folder} classifies {list(old)}, this config's "
                          f"data.classes is {list(new)}; they must be the same names in the "
                          "same order (the head has one output per class)")
    if source_cfg.data.sample_rate != cfg.data.sample_rate:
        raise ConfigError(f"data.sample_rate: {cfg.data.sample_rate} Hz, but the run in {FIELD} "
                          f"({folder}) was trained at {source_cfg.data.sample_rate} Hz; its stem's "
                          "filters are tied to that rate: use the same data.sample_rate")
    described = (f"the run in {folder} (model.preset={source_cfg.model.preset}) and this config "
                 f"(model.preset={cfg.model.preset})")
    for kind in ("params", "model_state"):
        old_shapes = _shapes(getattr(source.state, kind))
        new_shapes = _shapes(getattr(target.state, kind))
        for name, shape in new_shapes.items():
            if old_shapes.get(name) != shape:
                had = (f"shape {old_shapes[name]}" if name in old_shapes else "no such parameter")
                raise ConfigError(f"{FIELD}: the models of {described} differ: parameter {name} "
                                  f"has {had} in the pretrained run and shape {shape} here")
        extra = [name for name in old_shapes if name not in new_shapes]
        if extra:
            raise ConfigError(f"{FIELD}: the models of {described} differ: the pretrained run "
                              f"has parameter {extra[0]} (shape {old_shapes[extra[0]]}), this "
                              "config's model has none")
    for f in dataclasses.fields(target.spec):
        a, b = getattr(source.spec, f.name), getattr(target.spec, f.name)
        if f.name not in _FREE_SPEC_FIELDS and a != b:
            raise ConfigError(f"{FIELD}: the models of {described} differ in {f.name}: {a!r} "
                              f"in the pretrained run, {b!r} here (the model.* fields must "
                              "resolve to the same network; only the dropout rates may differ)")


def leaf_name(path: tuple) -> str:
    """A parameter's dotted name from its pytree path: ``stem.kernel``,
    ``stages.0.0.norm1.layer.mean``."""
    return ".".join(str(k.key) for k in path if hasattr(k, "key"))


# The model's top-level parts in the order the input flows through them.
_FORWARD = {"frontend": 0, "stem": 1, "stem_norm": 2, "stages": 3, "hidden": 4, "head": 5}
_VARIABLES = {"kernel": 0, "bias": 1, "scale": 2, "mean": 3, "var": 4}  # within a layer


def _forward_order(name: str) -> tuple:
    *layer, variable = name.split(".")
    return (_FORWARD.get(layer[0] if layer else "", len(_FORWARD)),
            *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in layer),
            _VARIABLES.get(variable, len(_VARIABLES)), variable)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, in the order the input flows through the model (so the first
    difference named is the earliest layer's)."""
    shapes = {leaf_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    return {name: shapes[name] for name in sorted(shapes, key=_forward_order)}


def in_layout(values: Any, like: Any) -> Any:
    """``values`` (host arrays, checked to have ``like``'s names and shapes) in the pytree
    layout of ``like`` and its dtypes."""
    by_name = {leaf_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(values)}
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(by_name[leaf_name(p)], x.dtype) for p, x in paths])
