"""Using a finished run: load its config and weights, classify files, report on a data source."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import numpy as np

from speechmusic_jax import config as config_lib
from speechmusic_jax.data import audio, sources
from speechmusic_jax.data.pipeline import LoaderConfig, make_loader_config, window_starts
from speechmusic_jax.errors import RunNotFound
from speechmusic_jax.models.conv1d import build_model
from speechmusic_jax.models.presets import resolve_spec
from speechmusic_jax.training import clip_scoring, optim
from speechmusic_jax.training.checkpoints import Checkpoints
from speechmusic_jax.training.step import init_state, make_eval_step


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    cfg: config_lib.ConfigDict
    workdir: str
    epoch: int  # the epoch whose weights were loaded
    loader: LoaderConfig
    predict: Callable[[Any], jax.Array]  # (batch, segment) -> logits

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cfg.data.classes)


def config_from_json(path: str) -> config_lib.ConfigDict:
    """Rebuild a run's config from its config.json (every field checked against base_config)."""
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    cfg = config_lib.base_config()
    _assign(cfg, saved, "")
    return cfg


def _assign(node: config_lib.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
        if key not in node:
            raise config_lib.ConfigError(f"{prefix}{key}: not a field of this version's config")
        if isinstance(value, dict):
            _assign(node[key], value, f"{prefix}{key}.")
        else:
            node[key] = tuple(value) if isinstance(value, list) else value


def load_run(workdir: str, which: str = "best") -> LoadedRun:
    """The config and the ``best`` (or ``last``) weights of the run in ``workdir``."""
    workdir = os.path.abspath(workdir)
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise RunNotFound(f"--workdir {workdir} holds no run (no config.json)")
    cfg = config_from_json(cfg_path)
    ckpts = Checkpoints(workdir)
    pointer = ckpts.best() if which == "best" else ckpts.last()
    if pointer is None:
        raise RunNotFound(f"--workdir {workdir} has no {which} checkpoint yet")
    spec = resolve_spec(cfg.model, len(cfg.data.classes), cfg.data.sample_rate)
    tx, _ = optim.from_config(cfg, steps_per_epoch=1)
    graphdef, like = init_state(build_model(spec, cfg.seed, cfg.train.precision), tx)
    state, _ = ckpts.restore(pointer, like)
    params = optim.eval_params(cfg.optimizer.name, state.opt_state, state.params)
    eval_fn = make_eval_step(graphdef)
    predict = partial(jax.jit(eval_fn), params, state.model_state)  # weights as arguments
    return LoadedRun(cfg, workdir, pointer["epoch"], make_loader_config(cfg, []), predict)


def classify(run: LoadedRun, files: Sequence[sources.AudioFile],
             on_bad_file: Callable[[audio.AudioError], None] | None = None
             ) -> clip_scoring.Predictions:
    return clip_scoring.predict_files(run.predict, files, run.loader, run.cfg.train.eval_batch_size,
                                    on_bad_file=on_bad_file)


def segments(run: LoadedRun, pred: clip_scoring.Predictions) -> list[dict]:
    """One row per window: path, start_s, end_s, label, confidence."""
    sr, seg, hop = run.loader.sample_rate, run.loader.segment, run.loader.hop
    probs = clip_scoring.softmax(pred.window_logits)
    out = []
    seen: dict[int, int] = {}
    lengths: dict[int, int] = {}  # samples per clip, from its header (read once per clip)
    for w, clip in enumerate(pred.window_clip):
        f = pred.files[clip]
        k = seen.get(int(clip), 0)
        seen[int(clip)] = k + 1
        if int(clip) not in lengths:
            lengths[int(clip)] = int(round(audio.probe(f.path).seconds * sr))
        n = lengths[int(clip)]
        starts = window_starts(n, seg, hop)
        start = starts[min(k, len(starts) - 1)]
        out.append({"path": f.path, "start_s": round(start / sr, 4),
                    "end_s": round(min(start + seg, max(n, seg)) / sr, 4),
                    "label": run.classes[int(probs[w].argmax())],
                    "confidence": round(float(probs[w].max()), 6)})
    return out


def clip_rows(run: LoadedRun, pred: clip_scoring.Predictions) -> list[dict]:
    """One row per file: path, label (predicted), confidence, p_<class>..."""
    probs = clip_scoring.softmax(pred.clip_logits)
    rows = []
    for f, p in zip(pred.files, probs, strict=True):
        row = {"path": f.path, "label": run.classes[int(np.argmax(p))],
               "confidence": round(float(p.max()), 6)}
        row.update({f"p_{c}": round(float(v), 6) for c, v in zip(run.classes, p, strict=True)})
        rows.append(row)
    return rows
