"""One builder of a run's model, optimizer, state and compiled steps from a config.

Every command that needs a network goes through here: ``train`` and ``crossval`` (via ``fit``),
``benchmark``, ``evaluate`` and ``predict`` (via ``trained_run``), and sweeps. So a config means
the same network, the same optimizer chain and the same loss everywhere::

    built = build(cfg, steps_per_epoch)       # spec, graphdef, initial state, tx, schedule
    train = compile_train_step(built, state, mesh)    # jit + lower + compile, timed, FLOPs
    evals = compile_eval_step(built, state, mesh)
    predict = predictor(built, state, evals.fn)       # x -> logits, the weights to evaluate
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from speechmusic_jax import parallel, timing
from speechmusic_jax.models.conv1d import (
    DropoutRates,
    build_model,
    cancelled_by_norm,
    count_params,
    layer_order,
)
from speechmusic_jax.models.presets import ModelSpec, resolve_spec
from speechmusic_jax.training import optim
from speechmusic_jax.training.step import TrainState, init_state, make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class Built:
    """A config's network and optimizer, with its initial (host) state."""

    cfg: Any
    spec: ModelSpec
    graphdef: Any
    state: TrainState  # initial weights (seeded by init_seed) and optimizer state; a train step
    # donates the state it is given, so copy this one before stepping it where it is reused
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps_per_epoch: int
    params_trainable: int
    params_total: int  # trainable and the rest (batch-norm statistics)
    layers: tuple[str, ...] = ()  # the model's layers in network order (conv1d.layer_order)

    @property
    def segment(self) -> int:
        """Samples per training crop and per evaluation window."""
        return int(round(self.cfg.data.segment_seconds * self.cfg.data.sample_rate))

    def describe(self) -> str:
        """One line: the preset, its stem and stages, parameters, optimizer."""
        spec, o = self.spec, self.cfg.optimizer
        if spec.frames():
            stem = (f"{spec.frontend} {spec.n_mels} bands ({spec.frontend_compression}), "
                    f"{spec.stem_filters}/{spec.kernel_size}/1")
        else:
            stem = (f"{'sinc ' if spec.frontend == 'sincnet' else ''}{spec.stem_filters}/"
                    f"{spec.stem_taps()}/{spec.stem_stride}")
        scale = self.cfg.train.stem_lr_scale
        if scale != 1.0:
            stem += ", frozen" if scale == 0 else f", learning rate x{scale:g}"
        return (f"model: {self.cfg.model.preset} ({stem} stem, stages "
                f"{list(spec.stage_filters)}), {self.params_trainable:,} trainable parameters; "
                f"optimizer {o.name}, lr {o.learning_rate:g} ({o.schedule}), weight decay "
                f"{o.weight_decay:g}")


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A step compiled ahead for one batch shape."""

    fn: Callable
    compile_s: float
    flops: float | None  # per call, summed over the devices the batch is split over
    batch_size: int

    @property
    def flops_per_example(self) -> float | None:
        return self.flops / self.batch_size if self.flops else None


def build(cfg, steps_per_epoch: int = 1, weights: tuple[Any, Any] | None = None) -> Built:
    """The model of ``cfg.model`` for ``cfg.data``'s classes and sample rate, initialised with
    ``cfg.init_seed`` (unset: ``cfg.seed``; ``config.init_seed``), and the optimizer of
    ``cfg.optimizer``/``cfg.train`` whose schedule spans ``cfg.train.epochs`` epochs of
    ``steps_per_epoch`` steps. ``weights``: (params, model_state) to start from instead (a
    pretrained run's, of the same structure: see :mod:`training.pretrained`); the optimizer
    state is made fresh for them."""
    spec = resolve_spec(cfg.model, len(cfg.data.classes), cfg.data.sample_rate)
    tx, schedule = optim.from_config(cfg, steps_per_epoch, frozen=cancelled_by_norm(spec))
    from speechmusic_jax import config as config_lib

    model = build_model(spec, config_lib.init_seed(cfg), cfg.train.precision)
    layers = tuple(layer_order(model))
    graphdef, state = init_state(model, tx)
    if weights is not None:
        params, model_state = (jax.tree.map(lambda like, w: jnp.asarray(w, like.dtype), like,
                                            given)
                               for like, given in zip((state.params, state.model_state),
                                                      weights, strict=True))
        state = TrainState(params, model_state, tx.init(params), state.step)
    trainable = count_params(state.params)
    return Built(cfg, spec, graphdef, state, tx, schedule, steps_per_epoch, trainable,
                 trainable + count_params(state.model_state), layers)


def abstract_build(cfg) -> Built:
    """``build(cfg)`` with shapes (``jax.ShapeDtypeStruct``) in place of initial weights, for
    restoring a checkpoint into or comparing structures: initialising the weights op by op
    was half the start-up of ``predict`` (2.4 of 4.6 s on the 2-core machine)."""
    made: list[Built] = []

    def init() -> Any:
        made.append(build(cfg))
        return made[0].state

    abstract = jax.eval_shape(init)
    return dataclasses.replace(made[0], state=abstract)


def train_step_fn(built: Built, padded: bool = False) -> Callable:
    """The pure train step of the config: loss, label smoothing, L1/L2 penalties and their mask;
    ``padded``: the variant for batches with padding rows (see ``make_train_step``)."""
    train_cfg = built.cfg.train
    return make_train_step(built.graphdef, built.tx, num_classes=len(built.cfg.data.classes),
                           label_smoothing=train_cfg.label_smoothing, l1=train_cfg.l1,
                           l2=train_cfg.l2, penalty_mask=train_cfg.penalty_mask, padded=padded,
                           frozen_stem=train_cfg.stem_lr_scale == 0,
                           fused_pooling=train_cfg.fused_pooling)


def compile_train_step(built: Built, state: TrainState, mesh: Mesh,
                       batch_size: int | None = None, *, padded: bool = False) -> Compiled:
    """(state, x, y, weight, key) -> (state, metrics), state donated, batch split over ``mesh``."""
    batch_size = batch_size or built.cfg.train.batch_size
    shard = parallel.batch_sharding(mesh)
    specs = (jax.ShapeDtypeStruct((batch_size, built.segment), jnp.float32, sharding=shard),
             jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=shard),
             jax.ShapeDtypeStruct((batch_size,), jnp.float32, sharding=shard))
    fn, seconds, flops = timing.compile_ahead(train_step_fn(built, padded), state, *specs,
                                              jax.random.key(0), donate_argnums=(0,))
    return Compiled(fn, seconds, flops, batch_size)


def compile_eval_step(built: Built, state: TrainState, mesh: Mesh,
                      batch_size: int | None = None) -> Compiled:
    """(params, model_state, x) -> logits in inference mode, batch split over ``mesh``."""
    batch_size = batch_size or built.cfg.train.eval_batch_size
    x = jax.ShapeDtypeStruct((batch_size, built.segment), jnp.float32,
                             sharding=parallel.batch_sharding(mesh))
    args = (state.params, state.model_state, x)
    step = make_eval_step(built.graphdef, eval_chunk_bytes(built), devices=mesh.size)
    fn, seconds, _ = timing.compile_ahead(step, *args)
    # XLA's cost analysis counts a loop's body once, and the step may go through the batch in
    # chunks (a loop): the FLOPs are those of one pass over the whole batch, counted on the
    # program before XLA optimises and splits it (within 0.2 % of the count after, for the
    # experiments' models), so the same with chunks or without and on any number of devices.
    flops = timing.flops_of(jax.jit(make_eval_step(built.graphdef)).lower(*args))
    return Compiled(fn, seconds, flops, batch_size)


def eval_chunk_bytes(built: Built) -> int:
    """``train.eval_chunk_mib`` in bytes: the eval step's budget for one chunk's largest
    activation (``make_eval_step``)."""
    return int(built.cfg.train.eval_chunk_mib * 2**20)


def eval_weights(built: Built, state: TrainState) -> tuple[Any, Any]:
    """(params, model_state) to evaluate: schedule-free optimizers evaluate averaged weights, and
    so does a run with ``train.ema_epochs`` (the moving average of its weights)."""
    return (optim.eval_params(built.cfg.optimizer.name, state.opt_state, state.params),
            state.model_state)


def predictor(built: Built, state: TrainState,
              step: Callable | None = None) -> Callable[[Any], jax.Array]:
    """x -> logits with the weights to evaluate, passed as arguments (not baked in as constants).

    ``step`` is a compiled eval step (one batch shape); without it, a jitted one that compiles
    for each new batch shape (inference at several batch sizes).
    """
    return weights_predictor(built, *eval_weights(built, state), step)


def weights_predictor(built: Built, params: Any, model_state: Any,
                      step: Callable | None = None) -> Callable[[Any], jax.Array]:
    """x -> logits with the weights to evaluate given as they are (``params`` and the batch-norm
    statistics ``model_state``: a shipped model's, which holds no optimizer state)."""
    fn = step or jax.jit(make_eval_step(built.graphdef, eval_chunk_bytes(built)))
    return lambda x: fn(params, model_state, x)


# ---- a group of trials in one compiled program (sweeps) ----------------------------------------

# The config fields a group's trials may differ in: traced inputs of one compiled program (the
# optimizer's injected hyperparameters, learning rate, weight decay and moments, held in its
# state; the loss's and the dropout rates, passed to the step as ``hyper``), and init_seed (each
# trial's initial weights are its own). Every other field, the seed included, is shared.
STEP_TRACED = {"train.label_smoothing": "label_smoothing", "train.l1": "l1", "train.l2": "l2",
               "model.dropout": "dropout", "model.stage_dropout": "stage_dropout"}
GROUP_TRACED = tuple(f"optimizer.{name}" for name in optim.INJECTED) + tuple(STEP_TRACED)
GROUP_STRATEGIES = ("vmap", "map")  # one vmapped step, or one trial after another (lax.map)


def group_key(cfg) -> str:
    """Trials with equal keys can train as one group: the same config but for the traced
    hyperparameters (:data:`GROUP_TRACED`; weight decay all zero or all positive), the
    ``init_seed`` (the initial weights are per trial; the seed, which fixes the data and
    batches, is shared: a group of init seeds is a paired design) and the name."""
    import json

    from speechmusic_jax import config as config_lib

    d = config_lib.to_dict(cfg)
    d.pop("name", None)
    d.pop("init_seed", None)
    for field in GROUP_TRACED:
        section, name = field.split(".")
        d[section] = {k: v for k, v in d[section].items() if k != name}
    d["optimizer"]["decays"] = cfg.optimizer.weight_decay > 0
    return json.dumps(d, sort_keys=True)


def _field(cfg: Any, field: str) -> Any:
    section, name = field.split(".")
    return cfg[section][name]


def step_hyper(cfgs) -> dict[str, np.ndarray]:
    """The loss and dropout hyperparameters (:data:`STEP_TRACED`) that differ between
    ``cfgs``: step argument name -> (trials,) float32 values. The ones all trials share stay
    Python constants of the step, so a group that varies none of them runs the plain
    program."""
    out = {}
    for field, arg in STEP_TRACED.items():
        values = [float(_field(c, field)) for c in cfgs]
        if len(set(values)) > 1:
            out[arg] = np.asarray(values, np.float32)
    return out


def dropout_key(cfg) -> jax.Array:
    """The key of a run's dropout masks (folded with the step number at each step): seeded by
    ``init_seed`` (unset: ``seed``; ``config.init_seed``), as are the initial weights."""
    from speechmusic_jax import config as config_lib

    return jax.random.key(config_lib.init_seed(cfg))


def alone_program(cfg) -> tuple:
    """What decides the program a trial of a group would compile alone, beyond what the
    group shares: which of the step's traced hyperparameters are zero (a zero term is left out
    of the program). Trials with equal values compile programs of the same arithmetic alone
    (the learning rate and the like are constants in them), so one timing serves them all."""
    return tuple(float(_field(cfg, field)) == 0 for field in STEP_TRACED)


@dataclasses.dataclass(frozen=True)
class BuiltGroup:
    """Trials that share a model and optimizer family, their states stacked on a leading axis.

    Each trial's initial weights are those its own config builds alone (``builts``: its
    ``init_seed``; the group shares the seed, and so the data and batches); the trials differ
    in the injected hyperparameters held in their optimizer states and in the step's traced
    inputs (``hyper``), so one compiled step trains them all.
    """

    built: Built  # the first trial's network, initial weights and schedule
    cfgs: tuple
    tx: optax.GradientTransformation  # the injected chain (hyperparameters in the state)
    state: TrainState  # stacked: every leaf has a leading axis of size ``size``
    size: int
    hyper: dict  # step_hyper(cfgs): the step's traced hyperparameters, (size,) each
    builts: tuple = ()  # each trial's own build (its initial weights and schedule)

    def trial_state(self, state: TrainState, i: int) -> TrainState:
        """Trial ``i``'s state in the plain optimizer's layout (what ``build`` makes), from a
        stacked state of this group: the injected chain's inner state is the plain chain's."""
        one = jax.tree.map(lambda a: a[i], state)
        return TrainState(one.params, one.model_state, one.opt_state.inner_state, one.step)

    def with_trial(self, state: TrainState, i: int, plain: TrainState) -> TrainState:
        """The stacked (host) ``state`` with trial ``i`` replaced by ``plain`` (the layout of
        ``trial_state``, e.g. a checkpoint of the trial): the inverse of ``trial_state``. The
        injected hyperparameters are the trial's own (they never change) and the injected
        chain's step count is the trial's step."""
        opt = state.opt_state
        count = np.asarray(plain.step, np.asarray(opt.count).dtype)
        one = TrainState(plain.params, plain.model_state,
                         opt._replace(count=count, hyperparams=jax.tree.map(
                             lambda a: a[i], opt.hyperparams), inner_state=plain.opt_state),
                         plain.step)

        def put(stacked: Any, leaf: Any) -> np.ndarray:
            out = np.array(stacked)
            out[i] = np.asarray(leaf)
            return out

        return jax.tree.map(put, state, one)


def build_group(cfgs, steps_per_epoch: int = 1,
                weights: tuple[Any, Any] | None = None) -> BuiltGroup:
    """The group of ``cfgs`` (equal :func:`group_key`): one network, one injected optimizer,
    the trials' states stacked, each trial's weights initialised by its own config;
    ``weights``: as in :func:`build`."""
    keys = {group_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ValueError("build_group: the configs differ in more than the traced "
                         f"hyperparameters {GROUP_TRACED}")
    builts = tuple(build(c, steps_per_epoch, weights) for c in cfgs)
    decay = cfgs[0].optimizer.weight_decay > 0
    moments = [optim.moments_of(c.optimizer) for c in cfgs]
    varied = [k for k in moments[0] if len({m[k] for m in moments}) > 1]
    txs = [optim.injected_from_config(c, steps_per_epoch, decay=decay, traced_moments=varied,
                                      frozen=cancelled_by_norm(b.spec))
           for c, b in zip(cfgs, builts, strict=True)]
    states = [TrainState(b.state.params, b.state.model_state, tx.init(b.state.params),
                         b.state.step) for b, tx in zip(builts, txs, strict=True)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    return BuiltGroup(builts[0], tuple(cfgs), txs[0], stacked, len(cfgs), step_hyper(cfgs),
                      builts)


def group_keys(cfgs) -> jax.Array:
    """The trials' dropout keys (:func:`dropout_key`), stacked: the group step's ``keys``."""
    return jnp.stack([dropout_key(c) for c in cfgs])


def describe_trials(cfgs) -> str:
    """One line: what each trial of a group sets (learning rate, weight decay, and whichever
    other traced hyperparameters differ: moments, loss terms, dropout rates)."""
    varied = [f for f in STEP_TRACED if len({_field(c, f) for c in cfgs}) > 1]
    moments = [optim.moments_of(c.optimizer) for c in cfgs]
    varied_moments = [k for k in moments[0] if len({m[k] for m in moments}) > 1]
    return "; ".join(", ".join([f"lr {c.optimizer.learning_rate:.3g}",
                                f"weight decay {c.optimizer.weight_decay:.3g}",
                                *(f"{k} {m[k]:.3g}" for k in varied_moments),
                                *(f"{STEP_TRACED[f]} {_field(c, f):.3g}" for f in varied)])
                     for c, m in zip(cfgs, moments, strict=True))


def group_train_step_fn(group: BuiltGroup, padded: bool = False,
                        strategy: str = "vmap") -> Callable:
    """(states, hyper, active, x, y, weight, keys) -> (states, metrics, good): every trial's
    train step on the same batch, with its own dropout key (``keys``: :func:`group_keys`)
    and ``hyper`` (``group.hyper``: the traced loss and dropout hyperparameters); a trial not
    ``active``, or whose loss or gradient is not finite, keeps its state (frozen); ``good``
    says which trials stepped (the next step's ``active``, so a trial freezes on the device
    at the step that went wrong, without the host looking). ``strategy``:
    ``vmap`` (one batched program) or ``map`` (the trials one after another inside one
    program)."""
    if strategy not in GROUP_STRATEGIES:
        raise ValueError(f"strategy: unknown {strategy!r}; known: {GROUP_STRATEGIES}")
    built = group.built
    train_cfg, model_cfg = built.cfg.train, built.cfg.model
    shared = {"label_smoothing": train_cfg.label_smoothing, "l1": train_cfg.l1,
              "l2": train_cfg.l2, "dropout": model_cfg.dropout,
              "stage_dropout": model_cfg.stage_dropout}

    def trial_step(state: TrainState, hyper: dict, x, y, weight, key):
        h = {**shared, **hyper}
        step = make_train_step(built.graphdef, group.tx,
                               num_classes=len(built.cfg.data.classes),
                               label_smoothing=h["label_smoothing"], l1=h["l1"], l2=h["l2"],
                               penalty_mask=train_cfg.penalty_mask, padded=padded,
                               rates=DropoutRates(h["dropout"], h["stage_dropout"]),
                               frozen_stem=train_cfg.stem_lr_scale == 0,
                               fused_pooling=train_cfg.fused_pooling)
        return step(state, x, y, weight, key)

    def group_step(states: TrainState, hyper: dict, active: jax.Array, x: jax.Array,
                   y: jax.Array, weight: jax.Array, keys: jax.Array):
        if strategy == "vmap":
            new, metrics = jax.vmap(trial_step, in_axes=(0, 0, None, None, None, 0))(
                states, hyper, x, y, weight, keys)
        else:
            new, metrics = jax.lax.map(lambda shk: trial_step(shk[0], shk[1], x, y, weight,
                                                              shk[2]), (states, hyper, keys))
        good = active & jnp.isfinite(metrics["loss_sum"]) & jnp.isfinite(metrics["grad_norm"])

        def keep(a, b):
            return jnp.where(good.reshape(good.shape + (1,) * (a.ndim - 1)), a, b)

        return jax.tree.map(keep, new, states), metrics, good

    return group_step


def compile_group_train_step(group: BuiltGroup, state: TrainState, mesh: Mesh,
                             *, padded: bool = False, strategy: str = "vmap") -> Compiled:
    """The group step compiled ahead, states donated, the batch split over ``mesh``'s "data"
    axis and the trials (states, hyperparameters) over its "trial" axis, if it has one."""
    batch_size = group.built.cfg.train.batch_size
    shard = parallel.batch_sharding(mesh)
    trials = parallel.trial_sharding(mesh)
    specs = (jax.ShapeDtypeStruct((group.size,), jnp.bool_, sharding=trials),
             jax.ShapeDtypeStruct((batch_size, group.built.segment), jnp.float32, sharding=shard),
             jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=shard),
             jax.ShapeDtypeStruct((batch_size,), jnp.float32, sharding=shard))
    hyper = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=trials)
             for k, v in group.hyper.items()}
    keys = jax.device_put(group_keys(group.cfgs), trials)
    fn, seconds, flops = timing.compile_ahead(group_train_step_fn(group, padded, strategy),
                                              state, hyper, *specs, keys, donate_argnums=(0,))
    return Compiled(fn, seconds, flops, batch_size)


def group_eval_fn(group: BuiltGroup) -> Callable:
    """(states, x) -> logits (batch, trials * classes): every trial's evaluation weights on the
    same windows, trial i's logits in columns [i * classes, (i + 1) * classes)."""
    evaluate = make_eval_step(group.built.graphdef)
    name = group.built.cfg.optimizer.name

    def one(state: TrainState, x: jax.Array) -> jax.Array:
        return evaluate(optim.eval_params(name, state.opt_state, state.params),
                        state.model_state, x)

    def group_eval(states: TrainState, x: jax.Array) -> jax.Array:
        logits = jax.vmap(one, in_axes=(0, None))(states, x)  # (trials, batch, classes)
        return jnp.transpose(logits, (1, 0, 2)).reshape(x.shape[0], -1)

    return group_eval
