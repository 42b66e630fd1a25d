"""The one typed configuration: defaults, validation, and helpers for experiments.

A config is an ``ml_collections.ConfigDict`` built by :func:`base_config` and adjusted by an
experiment file's ``get_config(arg)``. It is locked: a misspelt field fails instead of being
added, and every field keeps its type (``--config.train.epochs=abc`` fails). :func:`validate`
checks values and raises :class:`ConfigError`, whose message names the field, before any work.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from ml_collections import config_dict

from speechmusic_jax.errors import ConfigError

ConfigDict = config_dict.ConfigDict

ON_ERROR = ("error", "skip")
SHORT_CLIP = ("pad", "loop")
PRECISIONS = ("float32", "bfloat16")
ACTIVATIONS = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "sigmoid")
NORMS = ("batch", "layer", "group", "none")
GLOBAL_POOLS = ("avg", "max", "avgmax")
CACHES = ("none", "memory", "device")
BALANCES = ("none", "class_weights", "sampler")
# Which checkpoint of a finished run to use: "tested", the weights the run was tested with (its
# best epoch, or its last with train.early_stopping.restore_best false); "best"; or "last".
CHECKPOINTS = ("tested", "best", "last")  # also train.init_from=DIR:tested, DIR:best, DIR:last
MONITORS = {"val_loss": "min", "val_accuracy": "max", "val_f1": "max"}
# Fields that change how a run is carried out or shown, never what it trains: a run folder whose
# config.json differs from the command's only in these is the same run (train resumes it, or
# reports it when finished, and records the new values). data.on_error: a run that met a bad file
# under "error" stopped there, so "skip" (which the error message suggests) continues the same
# run; the loader's threads, read-ahead and caches change only the speed; eval_chunk_mib gives the
# same logits with less memory; note is text. (train.epochs, when it grows, extends a finished
# run: training/workdir.py.) Not here, though they do not touch training either: eval_batch_size
# (the validation logits, hence early stopping, may differ in their last digits).
RUNTIME_FIELDS = frozenset({
    "note", "data.on_error", "data.workers", "data.prefetch_batches", "data.cache",
    "data.cache_dir", "data.device_cache_mib", "train.eval_chunk_mib"})
# Fields added after runs were made, with the value that gives a run made before them: a
# config.json without such a field is the same run as one with it at this value.
ADDED_FIELDS: dict[str, Any] = {
    "train.eval_every_steps": 0, "train.target_metric": "val_accuracy",
    "train.target_value": None, "train.stop_at_target": False, "train.max_seconds": 0.0,
    "data.synthetic.transmission": False, "model.pcen_smooth_min": 0.0}


def base_config() -> ConfigDict:
    """Every field with its default. Experiments start from this and change what they need."""
    c = ConfigDict()
    c.name = "default"
    c.note = ""  # what the experiment is for, printed at the start and end of a run
    c.seed = 0  # the data: the split, the order and crops of the batches, augmentation
    # the model: its initial weights and dropout masks; None: the value of seed (so a run that
    # leaves it unset is the run of one seed). Trials that differ only in it train on the same
    # batches, in one program when grouped (a paired design over initialisations).
    c.init_seed = config_dict.placeholder(int)

    c.data = ConfigDict()
    c.data.spec = "synthetic"
    c.data.on_error = "error"
    c.data.classes = ("speech", "music")
    c.data.sample_rate = 16000
    c.data.segment_seconds = 2.0
    c.data.eval_hop_seconds = config_dict.placeholder(float)  # default: segment_seconds
    c.data.split = (0.7, 0.15, 0.15)
    c.data.folds = 0
    c.data.fold = 0
    c.data.group_regex = ""
    c.data.short_clip = "pad"
    c.data.workers = 2
    c.data.prefetch_batches = 4
    c.data.cache_dir = ""  # default: $SPEECHMUSIC_CACHE or ~/.cache/speechmusic_jax
    # "memory": keep decoded audio in memory (small sets); "device": keep the training audio on
    # the device and cut the crops there (a corpus that fits; no pause shortening)
    c.data.cache = "none"
    c.data.device_cache_mib = 2048.0  # data.cache=device refuses a larger training corpus
    c.data.balance = "none"  # "class_weights" (in the loss) or "sampler" (balanced batches)
    c.data.augment = ConfigDict()  # training only; each 0/False turns its part off
    c.data.augment.random_crop = True  # else the crop starts at 0
    c.data.augment.gain_db = 0.0  # random gain, uniform in [-gain_db, +gain_db]
    c.data.augment.noise_prob = 0.0  # probability of additive white noise ...
    c.data.augment.noise_snr_db = (10.0, 40.0)  # ... at an SNR uniform in this range
    c.data.augment.polarity_prob = 0.0  # probability of flipping the sign
    c.data.augment.lowpass_prob = 0.0  # probability of a random low-pass ...
    c.data.augment.lowpass_hz = (2000.0, 7000.0)  # ... with a cut-off uniform in this range
    # Noise colour per example, drawn from these slopes (power ~ 1/f**slope): 0 white, 1 pink,
    # 2 brown; e.g. (0.0, 1.0, 2.0).
    c.data.augment.noise_colours = (0.0,)
    c.data.augment.pause_prob = 0.0  # probability of shortening the crop's long pauses: ...
    c.data.augment.pause_max_ms = 80.0  # ... each low-level run longer than this (ms) ...
    c.data.augment.pause_keep_ms = (30.0, 80.0)  # ... to a length (ms) uniform in this range
    c.data.augment.dither_db = 0.0  # < 0: add white noise at this RMS level (dBFS); 0 is off
    c.data.augment.highpass_prob = 0.0  # probability of a random high-pass ...
    c.data.augment.highpass_hz = (100.0, 400.0)  # ... with a cut-off uniform in this range
    c.data.synthetic = ConfigDict()
    c.data.synthetic.clips_per_class = 200
    c.data.synthetic.seconds = 4.0
    c.data.synthetic.sample_rate = 16000
    c.data.synthetic.seed = 0
    # Half the clips also sent over a telephone line, AM/SSB/FM radio or a low-bit-rate lossy
    # file (data/synth_channel.py, transmit); its own cache folder
    c.data.synthetic.transmission = False

    c.model = ConfigDict()
    c.model.preset = "m5_mid"
    # Structural fields left unset take the preset's value; a value set here wins.
    c.model.stem_filters = config_dict.placeholder(int)
    c.model.stem_kernel = config_dict.placeholder(int)
    c.model.stem_stride = config_dict.placeholder(int)
    c.model.stem_pool = config_dict.placeholder(int)
    c.model.stage_filters = config_dict.placeholder(tuple)
    c.model.stage_repeats = config_dict.placeholder(tuple)
    c.model.stage_pool = config_dict.placeholder(tuple)
    c.model.kernel_size = config_dict.placeholder(int)
    c.model.residual = config_dict.placeholder(bool)
    c.model.stage_kernel = config_dict.placeholder(tuple)  # per stage (default: kernel_size)
    c.model.stage_stride = config_dict.placeholder(tuple)  # each stage's first conv (default 1)
    c.model.stage_dilation = config_dict.placeholder(tuple)  # per stage (default 1)
    c.model.pool = "max"  # or "avg": pooling after the stem and each stage
    c.model.stage_dropout = 0.0  # dropout after each stage
    c.model.head_hidden = ()  # hidden dense layers (sizes) before the output layer
    c.model.activation = "relu"
    c.model.norm = "batch"
    c.model.dropout = 0.1
    c.model.global_pool = "avg"
    # "raw", "sincnet" (learnable band-pass stem), "logmel" (log-mel spectrogram in JAX, mel
    # bands as channels) or "leaf" (learnable Gabor filterbank, low-pass and PCEN): see
    # models/frontends.py. logmel and leaf give frames stft_hop_ms apart: no pool after their
    # stem unless model.stem_pool is set.
    c.model.frontend = "raw"
    # logmel and leaf: "log" or "pcen" (learnable per-channel); default log for logmel, pcen
    # for leaf. raw and sincnet: unset or "none" (to switch an experiment that sets one, such
    # as the default, to raw: --config.model.frontend=raw --config.model.frontend_compression=none)
    c.model.frontend_compression = config_dict.placeholder(str)
    # PCEN (logmel or leaf with pcen): the least value its learnt smoothing coefficient takes
    # (LEAF's bound, 0, lets the smoother freeze on the first frame; models/frontends.py's pcen)
    c.model.pcen_smooth_min = 0.0
    c.model.input_norm = "none"  # or "rms": each window scaled to unit RMS (level-invariant)
    c.model.n_mels = 64  # logmel and leaf: bands (channels); sincnet has model.stem_filters
    c.model.stft_win_ms = 25.0  # logmel's frames, leaf's filters and low-pass, sincnet's taps
    c.model.stft_hop_ms = 10.0  # logmel and leaf: the frames' hop

    c.train = ConfigDict()
    c.train.epochs = 40
    c.train.batch_size = 32
    c.train.eval_batch_size = 64
    # Inference (evaluation, predict, benchmark) passes a batch through the network in chunks of
    # examples, one after another, where the batch's largest activation would exceed this many
    # MiB (per device): the same logits with a fraction of the memory (training/step.py's
    # make_eval_step). 0: the whole batch in one pass.
    c.train.eval_chunk_mib = 16.0
    c.train.precision = "float32"
    # conv -> batch norm -> ReLU -> max-pool of the training pass as one op with a hand-written
    # gradient (models/fused_pool.py): the same function, computed with fewer passes over
    # memory, where it applies (float32, batch norm, ReLU, max pooling). false: the plain ops,
    # the numerics of runs made before it existed (2026-11-30), bit for bit.
    c.train.fused_pooling = True
    c.train.label_smoothing = 0.0
    c.train.grad_clip_norm = 0.0
    c.train.l1 = 0.0  # L1 penalty on kernels, in the loss
    c.train.l2 = 0.0  # L2 penalty on kernels, in the loss (weight decay is optimizer.weight_decay)
    c.train.penalty_mask = "kernels"  # what L1/L2 cover: kernels, kernels_biases or all
    # Fine-tuning: start from the weights (parameters and batch-norm statistics) of the finished
    # run in this folder: the weights it was tested with ("DIR" or "DIR:tested"), its best
    # checkpoint ("DIR:best") or its last ("DIR:last");
    # the optimizer, schedule and early stopping start afresh. "": initialise with the seed.
    c.train.init_from = ""
    # Multiplies the learning rate of the stem (the first conv and its norm); 0 freezes it:
    # its parameters and batch-norm statistics stay as they were (docs/experiments.md: fine-tuning).
    c.train.stem_lr_scale = 1.0
    # > 0: evaluate (validate, test, serve, fine-tune from) an exponential moving average of the
    # weights over about this many epochs (decay per step 1 - 1 / (epochs * steps per epoch));
    # 0 evaluates the weights as trained. Batch-norm statistics stay the running ones.
    c.train.ema_epochs = 0.0
    # AlgoPerf's clock (time to target; see training/loop.py): > 0 validates every this many
    # optimizer steps as well as at each epoch's end; every validation is an evaluation point
    # in evals.jsonl (step, training seconds so far, validation metrics). 0: once per epoch.
    c.train.eval_every_steps = 0
    # The target of a run: a validation metric (see MONITORS) and the value that meets it
    # (higher is better, lower for losses); None: no target. A sweep's target sets them.
    c.train.target_metric = "val_accuracy"
    c.train.target_value = config_dict.placeholder(float)
    c.train.stop_at_target = False  # stop at the first evaluation point that meets the target
    # > 0: a budget of training seconds (compilation and evaluation excluded); a run that has
    # spent it stops at its next evaluation point, recorded as over budget (time to target:
    # infinity, as in AlgoPerf). 0: no budget.
    c.train.max_seconds = 0.0
    c.train.early_stopping = ConfigDict()
    c.train.early_stopping.monitor = "val_loss"
    c.train.early_stopping.mode = "auto"  # "min" or "max"; auto: min for losses, max otherwise
    c.train.early_stopping.patience = 8
    c.train.early_stopping.min_delta = 0.0
    c.train.early_stopping.restore_best = True

    c.optimizer = ConfigDict()
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_mask = "kernels"  # kernels, kernels_biases or all
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_epochs = 1.0
    c.optimizer.plateau_patience = 3  # epochs, for schedule=plateau
    # The optimizer's moments, for those that have them (default: the optimizer's own):
    c.optimizer.b1 = config_dict.placeholder(float)  # adam family, lion, novograd, yogi, lamb
    c.optimizer.b2 = config_dict.placeholder(float)
    c.optimizer.momentum = config_dict.placeholder(float)  # momentum, nesterov, lars
    c.lock()
    return c


def import_file(path: str, kind: str) -> Any:
    """Import the Python file ``path`` (an experiment or a sweep file) as a fresh module named
    ``_<kind>_<stem>``; its import errors propagate."""
    name = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(f"_{kind}_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(path: str, arg: str | None = None) -> ConfigDict:
    """Import ``experiments/NAME.py`` and return its ``get_config(arg)``."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no experiment file {path}")
    module = import_file(path, "experiment")
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config: {path} has no get_config(arg=None)")
    return module.get_config(arg) if arg is not None else module.get_config()


def flat_items(c: ConfigDict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted field name, value) for every leaf of ``c``."""
    for k in sorted(c.keys()):
        v = c[k]
        if isinstance(v, ConfigDict):
            yield from flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def to_dict(c: ConfigDict) -> dict:
    """A JSON-ready plain dict (tuples become lists)."""
    return json.loads(c.to_json())


def training_diff(a: dict, b: dict) -> list[str]:
    """The fields of :func:`diff` that change what a run trains (not in RUNTIME_FIELDS)."""
    return [field for field in diff(a, b) if field not in RUNTIME_FIELDS]


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of fields that differ between two plain config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{k}.")
        elif va != vb and not _added_at_default(f"{prefix}{k}", k in a, k in b, va, vb):
            out.append(f"{prefix}{k}")
    return out


def _added_at_default(field: str, in_a: bool, in_b: bool, va: Any, vb: Any) -> bool:
    """Whether ``field`` is missing on one side and at its ADDED_FIELDS value on the other."""
    if field not in ADDED_FIELDS or in_a == in_b:
        return False
    return (vb if in_b else va) == ADDED_FIELDS[field]


def with_added_fields(saved: dict) -> dict:
    """A copy of a plain config dict (a run's config.json) with every field added since it was
    written (``ADDED_FIELDS``) at the value the run had, where it does not name the field."""
    out = copy.deepcopy(saved)
    for field, value in ADDED_FIELDS.items():
        node, leaf = field_parent(out, field)
        node.setdefault(leaf, value)
    return out


def field_parent(tree: ConfigDict | dict, dotted: str) -> tuple[Any, str]:
    """The section that holds the dotted field ``dotted`` of a ConfigDict or a plain nested
    dict (a config.json), and the field's own name: ``node[leaf]`` reads or sets it. Sections
    a plain dict lacks are added, empty."""
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    return node, leaf


def split_comma_lists(c: ConfigDict) -> ConfigDict:
    """Turn every list field given on the command line as one comma-separated string into its
    items: ml_collections reads ``--config.data.classes=speech,music,noise`` as the one-item tuple
    ``('speech,music,noise',)`` (numbers it splits itself: ``noise_colours=0,1,2``). The items
    are stripped of spaces; ``('speech','music')`` syntax keeps working. Returns ``c``."""
    for field, value in list(flat_items(c)):
        if (isinstance(value, tuple | list) and len(value) == 1 and isinstance(value[0], str)
                and "," in value[0]):
            node, leaf = field_parent(c, field)
            node[leaf] = tuple(item.strip() for item in value[0].split(","))
    return c


def init_seed(c: Any) -> int:
    """The seed of a config's initial weights and dropout masks: ``init_seed``, or ``seed`` when
    it is None (unset; also a config written before the field existed). config.json keeps the
    field as given (null: the rule), so a run started before it existed resumes unchanged."""
    value = c.get("init_seed")
    return int(c["seed"] if value is None else value)


def validate(c: ConfigDict) -> None:
    """Raise :class:`ConfigError` naming the first invalid field."""

    def need(ok: bool, field: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{field}: {msg} (got {_get(c, field)!r})")

    from speechmusic_jax.data.sources import parse_spec
    from speechmusic_jax.models.presets import PRESETS
    from speechmusic_jax.training.optim import OPTIMIZERS, SCHEDULES

    for field, value in flat_items(c):  # no NaN or infinity anywhere
        numbers = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{field}: must be a finite number (got {value!r})")
    need(bool(re.fullmatch(r"[\w.\-]+", c.name)), "name", "use letters, digits, '.', '-', '_'")
    need(isinstance(c.seed, int) and c.seed >= 0, "seed", "must be a non-negative integer")
    need(c.get("init_seed") is None or (isinstance(c.init_seed, int) and c.init_seed >= 0),
         "init_seed", "must be a non-negative integer, or None for the value of seed")
    data = c.data
    try:
        parse_spec(data.spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    need(data.on_error in ON_ERROR, "data.on_error", f"must be one of {ON_ERROR}")
    classes = tuple(data.classes)
    need(len(classes) >= 2, "data.classes", "needs at least two class names")
    need(all(isinstance(x, str) and x for x in classes), "data.classes", "names must be strings")
    need(len({x.lower() for x in classes}) == len(classes), "data.classes", "names must differ")
    need(data.sample_rate >= 1000, "data.sample_rate", "must be at least 1000 Hz")
    need(data.segment_seconds > 0, "data.segment_seconds", "must be positive")
    if data.eval_hop_seconds is not None:
        need(0 < data.eval_hop_seconds <= data.segment_seconds, "data.eval_hop_seconds",
             "must be positive and at most data.segment_seconds, so windows cover every sample")
    split = tuple(data.split)
    need(len(split) == 3 and all(x >= 0 for x in split), "data.split",
         "must be three non-negative fractions (train, val, test)")
    need(abs(sum(split) - 1.0) < 1e-6, "data.split", "fractions must add up to 1")
    need(split[0] > 0 and split[1] > 0, "data.split", "train and val fractions must be positive")
    need(data.folds == 0 or data.folds >= 2, "data.folds", "must be 0 (no folds) or at least 2")
    need(0 <= data.fold < max(data.folds, 1), "data.fold", "must be in [0, data.folds)")
    if data.group_regex:
        try:
            re.compile(data.group_regex)
        except re.error as e:
            raise ConfigError(f"data.group_regex: not a valid regex ({e})") from None
    need(data.short_clip in SHORT_CLIP, "data.short_clip", f"must be one of {SHORT_CLIP}")
    need(data.cache in CACHES, "data.cache", f"must be one of {CACHES}")
    need(data.device_cache_mib > 0, "data.device_cache_mib", "must be positive (MiB)")
    need(data.cache != "device" or data.augment.pause_prob == 0, "data.cache",
         "'device' cuts fixed-size crops on the device, and pause shortening "
         "(data.augment.pause_prob) changes the length on the host: set "
         "data.augment.pause_prob=0 or use data.cache=memory")
    need(data.balance in BALANCES, "data.balance", f"must be one of {BALANCES}")
    augment = data.augment
    need(augment.gain_db >= 0, "data.augment.gain_db", "must be >= 0")
    for field in ("noise_prob", "polarity_prob", "lowpass_prob", "highpass_prob", "pause_prob"):
        need(0.0 <= augment[field] <= 1.0, f"data.augment.{field}",
             "must be a probability in [0, 1]")
    need(len(augment.noise_snr_db) == 2 and augment.noise_snr_db[0] <= augment.noise_snr_db[1],
         "data.augment.noise_snr_db", "must be (low, high) with low <= high")
    need(len(augment.lowpass_hz) == 2 and 0 < augment.lowpass_hz[0] <= augment.lowpass_hz[1],
         "data.augment.lowpass_hz", "must be (low, high) with 0 < low <= high")
    need(augment.lowpass_hz[1] < data.sample_rate / 2, "data.augment.lowpass_hz",
         "must stay below the Nyquist frequency (data.sample_rate / 2)")
    need(len(augment.highpass_hz) == 2 and 0 < augment.highpass_hz[0] <= augment.highpass_hz[1],
         "data.augment.highpass_hz", "must be (low, high) with 0 < low <= high")
    need(augment.highpass_hz[1] * 1.2 < data.sample_rate / 2, "data.augment.highpass_hz",
         "must stay well below the Nyquist frequency (its roll-off ends at 1.2 times the "
         "cut-off, which must be under data.sample_rate / 2)")
    colours = augment.noise_colours
    need(isinstance(colours, tuple | list) and len(colours) >= 1
         and all(isinstance(v, int | float) and 0 <= v <= 3 for v in colours),
         "data.augment.noise_colours", "must be one or more slopes in [0, 3] (0 white, 1 pink, "
         "2 brown)")
    need(augment.pause_max_ms >= 10, "data.augment.pause_max_ms",
         "must be at least 10 (ms, one frame of the pause rule)")
    keep = augment.pause_keep_ms
    need(len(keep) == 2 and 0 < keep[0] <= keep[1] <= augment.pause_max_ms,
         "data.augment.pause_keep_ms",
         "must be (low, high) ms with 0 < low <= high <= data.augment.pause_max_ms")
    need(-160 <= augment.dither_db <= 0 and (augment.dither_db == 0 or augment.dither_db <= -20),
         "data.augment.dither_db", "must be 0 (off) or a level in [-160, -20] dBFS")
    need(data.workers >= 1, "data.workers", "must be at least 1")
    need(data.prefetch_batches >= 1, "data.prefetch_batches", "must be at least 1")
    corpus = data.synthetic
    need(corpus.clips_per_class >= 3, "data.synthetic.clips_per_class", "must be at least 3")
    need(corpus.seconds > 0, "data.synthetic.seconds", "must be positive")
    need(corpus.sample_rate >= 1000, "data.synthetic.sample_rate", "must be at least 1000 Hz")
    need(corpus.seed >= 0, "data.synthetic.seed", "must be non-negative")

    model = c.model
    need(model.preset in PRESETS, "model.preset", f"unknown preset; known: {sorted(PRESETS)}")
    need(model.activation in ACTIVATIONS, "model.activation", f"must be one of {ACTIVATIONS}")
    need(model.norm in NORMS, "model.norm", f"must be one of {NORMS}")
    need(model.global_pool in GLOBAL_POOLS, "model.global_pool", f"must be one of {GLOBAL_POOLS}")
    need(0.0 <= model.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    from speechmusic_jax.models.presets import resolve_spec

    try:
        spec = resolve_spec(model, num_classes=len(classes), sample_rate=data.sample_rate)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    segment = int(round(data.segment_seconds * data.sample_rate))
    need(segment >= spec.min_input_length(), "data.segment_seconds",
         f"a crop of {segment} samples is shorter than the model's minimum input of "
         f"{spec.min_input_length()} samples ({spec.min_input_length() / data.sample_rate:.3f} s "
         f"at {data.sample_rate} Hz)")

    train = c.train
    need(train.epochs >= 1, "train.epochs", "must be at least 1")
    need(train.batch_size >= 1, "train.batch_size", "must be at least 1")
    need(train.eval_batch_size >= 1, "train.eval_batch_size", "must be at least 1")
    need(train.eval_chunk_mib >= 0, "train.eval_chunk_mib", "must be at least 0 (0: no chunks)")
    need(train.precision in PRECISIONS, "train.precision", f"must be one of {PRECISIONS}")
    need(0.0 <= train.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
    need(train.l1 >= 0, "train.l1", "must be >= 0")
    need(train.l2 >= 0, "train.l2", "must be >= 0")
    from speechmusic_jax.training.optim import MASKS

    need(train.penalty_mask in MASKS, "train.penalty_mask", f"must be one of {sorted(MASKS)}")
    need(c.optimizer.weight_decay_mask in MASKS, "optimizer.weight_decay_mask",
         f"must be one of {sorted(MASKS)}")
    need(train.grad_clip_norm >= 0, "train.grad_clip_norm", "must be >= 0 (0 turns clipping off)")
    need(isinstance(train.init_from, str), "train.init_from", "must be a folder name")
    if train.init_from:
        need(bool(parse_init_from(train.init_from)[0]), "train.init_from",
             "must name a run's folder: DIR, DIR:tested, DIR:best or DIR:last")
    need(train.stem_lr_scale >= 0, "train.stem_lr_scale", "must be >= 0 (0 freezes the stem)")
    need(train.ema_epochs >= 0, "train.ema_epochs",
         "must be >= 0 (0 evaluates the weights as trained)")
    need(isinstance(train.eval_every_steps, int) and train.eval_every_steps >= 0,
         "train.eval_every_steps", "must be an integer >= 0 (0: evaluate once per epoch)")
    need(train.target_metric in MONITORS, "train.target_metric",
         f"must be one of {list(MONITORS)}")
    need(not train.stop_at_target or train.target_value is not None, "train.target_value",
         "train.stop_at_target needs a target: set train.target_value (and "
         "train.target_metric)")
    need(train.max_seconds >= 0, "train.max_seconds", "must be >= 0 (0: no budget)")
    e = train.early_stopping
    need(e.monitor in MONITORS, "train.early_stopping.monitor", f"must be one of {list(MONITORS)}")
    need(e.mode in ("auto", "min", "max"), "train.early_stopping.mode",
         "must be 'auto', 'min' or 'max'")
    need(e.patience >= 0, "train.early_stopping.patience", "must be >= 0 (0 turns it off)")
    need(e.min_delta >= 0, "train.early_stopping.min_delta", "must be >= 0")

    opt = c.optimizer
    need(opt.name in OPTIMIZERS, "optimizer.name",
         f"unknown optimizer; known: {sorted(OPTIMIZERS)}")
    need(opt.learning_rate > 0, "optimizer.learning_rate", "must be positive")
    need(opt.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    need(opt.schedule in SCHEDULES, "optimizer.schedule",
         f"unknown schedule; known: {sorted(SCHEDULES)}")
    need(opt.warmup_epochs >= 0, "optimizer.warmup_epochs", "must be >= 0")
    need(opt.plateau_patience >= 1, "optimizer.plateau_patience", "must be at least 1")
    from speechmusic_jax.training.optim import MOMENT_NAMES, moment_defaults

    for k in MOMENT_NAMES:
        value = opt.get(k)
        if value is None:
            continue
        takes = moment_defaults(opt.name) if opt.name in OPTIMIZERS else {}
        need(k in takes, f"optimizer.{k}", f"{opt.name} has no {k} (it takes "
             f"{', '.join(sorted(takes)) or 'none of b1, b2, momentum'})")
        need(0 <= value < 1, f"optimizer.{k}", "must be in [0, 1)")
    from speechmusic_jax.training.optim import SCHEDULE_FREE

    need(opt.name not in SCHEDULE_FREE or model.norm != "batch", "optimizer.name",
         f"{opt.name} evaluates its averaged weights, but model.norm=batch would evaluate them "
         "with running statistics gathered under the training weights: use model.norm=layer or "
         "group")
    need(opt.name not in SCHEDULE_FREE or train.stem_lr_scale == 1.0, "train.stem_lr_scale",
         f"{opt.name} averages every parameter with its own learning rate: a stem learning "
         "rate of its own is not supported with it (use 1.0, or another optimizer)")
    need(opt.name not in SCHEDULE_FREE or train.ema_epochs == 0, "train.ema_epochs",
         f"{opt.name} already evaluates averaged weights: use 0 (or another optimizer)")
    need(opt.name not in SCHEDULE_FREE or opt.schedule == "constant", "optimizer.schedule",
         f"{opt.name} replaces the schedule: use 'constant' (optimizer.warmup_epochs still "
         "applies)")


def parse_init_from(value: str) -> tuple[str, str]:
    """(folder, checkpoint) of a ``train.init_from`` value: ``DIR`` and ``DIR:tested`` name the
    weights the run in DIR was tested with, ``DIR:best`` its best checkpoint, ``DIR:last`` its
    last (any other colon is part of the folder's name)."""
    folder, sep, which = value.rpartition(":")
    if sep and which in CHECKPOINTS:
        return folder, which
    return value, "tested"


def target(cfg: Any) -> tuple[str, float] | None:
    """A run's target, (validation metric, value), from ``train.target_metric`` and
    ``train.target_value``; None without one (also a config written before they existed)."""
    train = cfg["train"]
    value = train.get("target_value")
    return None if value is None else (str(train.get("target_metric", "val_accuracy")),
                                       float(value))


def meets_target(value: float | None, target: tuple[str, float]) -> bool:
    """Whether a value of ``target[0]`` meets the target: at least ``target[1]``, or at most
    for a loss (lower is better)."""
    if value is None or not math.isfinite(value):
        return False
    lower = MONITORS.get(target[0]) == "min"
    return value <= target[1] if lower else value >= target[1]


def tested_checkpoint(cfg: ConfigDict) -> str:
    """The checkpoint a run of ``cfg`` was tested with: "best", or "last" where
    ``train.early_stopping.restore_best`` is off."""
    return "best" if cfg.train.early_stopping.restore_best else "last"


def _get(c: ConfigDict, dotted: str) -> Any:
    for part in dotted.split("."):
        c = c[part]
    return c
