"""Optimizers and learning-rate schedules by name, over optax.

Every optimizer is built the same way, so that runs compare fairly:

    clip (optional) -> [coupled decay] -> the optimizer's direction (learning rate 1)
    -> [decoupled decay] -> (reduce on plateau) -> multiply by the learning-rate schedule

Weight decay follows the convention of the optimizer's name, as in PyTorch: the "W" optimizers
(adamw, nadamw) and those defined with decoupled decay (lion, adafactor, schedule-free AdamW)
decay *decoupled* and scaled by the schedule (update -= lr(t) * (direction + wd * w); for adamw
exactly optax's AdamW); lamb and lars decay *inside the trust ratio*, as in their papers (wd * w
is added to the direction, Adam's for lamb and the gradient for lars, before the layer-wise trust
ratio ||w|| / ||direction + wd * w|| scales it (times 0.001 and then momentum for lars), then the
schedule); the others (sgd, adam, rmsprop, ...) add wd * w to the gradient before their direction
(*coupled*, an L2 penalty seen by the adaptive scaling). Either way it applies only where the mask
says (kernels by default: biases and normalisation scales are never decayed), and ``summary.json``
records which. An L1/L2 penalty in the loss is a separate knob (``train.l1``, ``train.l2``).

Parameters that the network's output does not depend on (``frozen``: with batch norm, the biases
of the convolutions that feed it; ``models.conv1d.cancelled_by_norm``) get no updates at all,
from any optimizer, weight decay included (:func:`without_updates`): their gradient is zero but
for float rounding, which an adaptive optimizer would scale up to full-size steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

# name -> (factory(**hparams) -> GradientTransformation with learning rate 1, note); the factories
# take the optimizer's moment hyperparameters (MOMENT_NAMES) as keywords, and those of
# TRUST_RATIO also weight_decay and mask (an optax mask function), which they decay inside.
OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], str]] = {
    "sgd": (lambda: optax.sgd(1.0), "plain stochastic gradient descent"),
    "momentum": (lambda momentum=0.9: optax.sgd(1.0, momentum=momentum),
                 "SGD with heavy-ball momentum (0.9)"),
    "nesterov": (lambda momentum=0.9: optax.sgd(1.0, momentum=momentum, nesterov=True),
                 "SGD, Nesterov momentum (0.9)"),
    "adam": (lambda b1=0.9, b2=0.999: optax.adam(1.0, b1=b1, b2=b2), "Adam (b1 0.9, b2 0.999)"),
    "adamw": (lambda b1=0.9, b2=0.999: optax.adam(1.0, b1=b1, b2=b2),
              "Adam with decoupled weight decay"),
    "nadam": (lambda b1=0.9, b2=0.999: optax.nadam(1.0, b1=b1, b2=b2),
              "Adam with Nesterov momentum"),
    "nadamw": (lambda b1=0.9, b2=0.999: optax.nadam(1.0, b1=b1, b2=b2),
               "NAdam with decoupled weight decay"),
    "radam": (lambda b1=0.9, b2=0.999: optax.radam(1.0, b1=b1, b2=b2), "rectified Adam"),
    "rmsprop": (lambda: optax.rmsprop(1.0), "RMSProp (decay 0.9)"),
    "adagrad": (lambda: optax.adagrad(1.0), "AdaGrad"),
    "adadelta": (lambda: optax.adadelta(1.0), "AdaDelta"),
    "adafactor": (lambda: optax.adafactor(1.0, multiply_by_parameter_scale=False),
                  "Adafactor (factored second moments)"),
    "adabelief": (lambda b1=0.9, b2=0.999: optax.adabelief(1.0, b1=b1, b2=b2), "AdaBelief"),
    "lamb": (lambda weight_decay=0.0, mask=None, b1=0.9, b2=0.999: optax.lamb(
        1.0, b1=b1, b2=b2, weight_decay=weight_decay, mask=mask),
             "LAMB (layer-wise trust ratio over Adam)"),
    "lars": (lambda weight_decay=0.0, mask=True, momentum=0.9: optax.lars(
        1.0, weight_decay=weight_decay, weight_decay_mask=mask, momentum=momentum),
             "LARS (layer-wise trust ratio over momentum)"),
    "lion": (lambda b1=0.9, b2=0.99: optax.lion(1.0, b1=b1, b2=b2),
             "Lion (sign of interpolated momentum; use a ~10x lower lr)"),
    "novograd": (lambda b1=0.9, b2=0.25: optax.novograd(1.0, b1=b1, b2=b2), "NovoGrad"),
    "yogi": (lambda b1=0.9, b2=0.999: optax.yogi(1.0, b1=b1, b2=b2), "Yogi"),
    "schedule_free_adamw": (lambda: optax.scale_by_adam(b1=0.0),
                            "schedule-free AdamW (Defazio et al. 2024): evaluates the averaged "
                            "weights; use schedule=constant"),
}
MOMENT_NAMES = ("b1", "b2", "momentum")  # config fields optimizer.b1, .b2, .momentum


def moment_defaults(name: str) -> dict[str, float]:
    """The moment hyperparameters (``b1``, ``b2``, ``momentum``) that optimizer ``name`` takes,
    with its defaults (optax's): e.g. adam {b1: 0.9, b2: 0.999}, lion {b1: 0.9, b2: 0.99},
    momentum {momentum: 0.9}, sgd {}."""
    import inspect

    factory = OPTIMIZERS[name][0]
    return {k: p.default for k, p in inspect.signature(factory).parameters.items()
            if k in MOMENT_NAMES}


def moments_of(optimizer_cfg: Any) -> dict[str, float]:
    """A config's moment hyperparameters for its optimizer: each field set in the config
    (``optimizer.b1`` ...), else the optimizer's default."""
    return {k: float(optimizer_cfg[k]) if optimizer_cfg.get(k) is not None else v
            for k, v in moment_defaults(optimizer_cfg.name).items()}


SCHEDULE_FREE = frozenset({"schedule_free_adamw"})
DECOUPLED = frozenset({"adamw", "nadamw", "lion", "adafactor", "schedule_free_adamw"})
# Decay added to the direction before the layer-wise trust ratio, as in the LAMB and LARS papers.
TRUST_RATIO = frozenset({"lamb", "lars"})

SCHEDULES: dict[str, str] = {
    "constant": "constant learning rate (after the optional warm-up)",
    "cosine": "linear warm-up, then cosine decay to 0 over the run",
    "linear": "linear warm-up, then linear decay to 0",
    "exponential": "linear warm-up, then decay by 10x over the run",
    "step": "linear warm-up, then x0.1 at 50% and 75% of the run",
    "onecycle": "one-cycle: rise to the peak at 30%, then anneal (warm-up ignored)",
    "plateau": "constant after warm-up, times 0.3 whenever the epoch's mean training loss has "
               "not improved for optimizer.plateau_patience epochs",
}

MASKS: dict[str, str] = {
    "kernels": "convolution and dense kernels only (biases and normalisation parameters excluded)",
    "kernels_biases": "kernels and the biases of convolutions and dense layers (normalisation "
                      "parameters and the conv biases batch norm cancels excluded)",
    "all": "every trainable parameter but the conv biases batch norm cancels (which get no "
           "updates at all)",
}


def weight_decay_semantics(name: str = "adamw", mask: str = "kernels") -> str:
    if name in DECOUPLED:
        how = "decoupled, multiplied by the learning-rate schedule (update -= lr(t) * wd * w)"
    elif name == "lamb":
        how = ("inside the trust ratio (as in the LAMB/LARS papers), scaled by the schedule "
               "(u = adam_direction + wd * w; update = -lr(t) * ||w|| / ||u|| * u per layer)")
    elif name in TRUST_RATIO:
        how = ("inside the trust ratio (as in the LAMB/LARS papers), scaled by the schedule "
               "(u = g + wd * w; momentum over 0.001 * ||w|| / ||u|| * u per layer, times -lr(t))")
    else:
        how = ("coupled: wd * w added to the gradient before the optimizer's direction (an L2 "
               "penalty seen by its adaptive scaling, as PyTorch's weight_decay)")
    return f"{how}; applied to {MASKS[mask]}"


def make_schedule(name: str, peak: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)
    rest = total_steps - warmup_steps
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, peak)
    if name in ("constant", "plateau"):
        body = optax.constant_schedule(peak)
    elif name == "cosine":
        body = optax.cosine_decay_schedule(peak, rest)
    elif name == "linear":
        body = optax.linear_schedule(peak, 0.0, rest)
    elif name == "exponential":
        body = optax.exponential_decay(peak, rest, 0.1)
    elif name == "step":
        body = optax.piecewise_constant_schedule(
            peak, {int(rest * 0.5): 0.1, int(rest * 0.75): 0.1})
    else:
        raise ValueError(f"optimizer.schedule: unknown {name!r}; known: {sorted(SCHEDULES)}")
    if warmup_steps == 0:
        return body
    warm = optax.linear_schedule(peak / max(warmup_steps, 1), peak, warmup_steps)
    return optax.join_schedules([warm, body], [warmup_steps])


def param_name(path: tuple) -> str:
    """The variable's own name ('kernel', 'bias', 'scale', ...) from a pytree path."""
    for entry in reversed(path):
        key = getattr(entry, "key", None)
        if isinstance(key, str):
            return key
    return ""


def is_norm_param(path: tuple) -> bool:
    """True for the parameters of a normalisation layer (any module named ``*norm*``)."""
    return any("norm" in str(getattr(e, "key", "")) for e in path)


def masked(path: tuple, mask: str) -> bool:
    """Whether the parameter at ``path`` is covered by the named mask (see MASKS)."""
    if mask == "all":
        return True
    name = param_name(path)
    if mask == "kernels_biases":
        return name in ("kernel", "bias") and not is_norm_param(path)
    if mask == "kernels":
        return name == "kernel"
    raise ValueError(f"unknown mask {mask!r}; known: {sorted(MASKS)}")


Frozen = Callable[[tuple], bool] | None  # the parameters (by path) that get no updates


def param_mask(mask: str = "kernels", frozen: Frozen = None):
    """An optax mask function: params -> pytree of bools (see MASKS), False where ``frozen``
    (parameters that get no updates are not decayed either)."""
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda p, _: masked(p, mask) and not (frozen and frozen(p)), params)


def without_updates(tx: optax.GradientTransformation,
                    frozen: Frozen) -> optax.GradientTransformation:
    """``tx`` that leaves the parameters ``frozen`` marks (a function of a pytree path) exactly
    where they are: their gradients are zeroed before ``tx`` sees them (so they add nothing to
    a clipped global norm, and Adam's moments for them stay 0) and their updates after it. The
    state is ``tx``'s own, leaf for leaf: a checkpoint of ``tx`` restores into this one."""
    if frozen is None:
        return tx
    tx = optax.with_extra_args_support(tx)

    def zero(tree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda p, u: jnp.zeros_like(u) if frozen(p) else u, tree)

    def update(updates: Any, state: Any, params: Any = None, **extra: Any) -> tuple[Any, Any]:
        updates, state = tx.update(zero(updates), state, params, **extra)
        return zero(updates), state

    return optax.GradientTransformationExtraArgs(tx.init, update)


# the model's first block: its conv, that conv's norm, and the front end's learnable parameters
STEM = ("frontend", "stem", "stem_norm")


def is_stem(path: tuple) -> bool:
    """True for a parameter (or statistic) of the stem, the model's first conv block."""
    return bool(path) and getattr(path[0], "key", None) in STEM


def with_stem_rate(tx: optax.GradientTransformation,
                   scale: float) -> optax.GradientTransformation:
    """``tx`` whose updates of the stem's parameters are multiplied by ``scale`` (its learning
    rate times ``scale``, weight decay included). ``scale`` 0 freezes the stem: ``tx`` sees
    only the other parameters (no optimizer state for the stem, its gradient left out of the
    global-norm clipping) and the stem's updates are exactly zero."""
    if scale == 1.0:
        return tx
    if scale == 0.0:
        def labels(params: Any) -> Any:
            return jax.tree_util.tree_map_with_path(
                lambda p, _: "frozen" if is_stem(p) else "trained", params)

        return optax.partition({"trained": tx, "frozen": optax.set_to_zero()}, labels)

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return jax.tree_util.tree_map_with_path(
            lambda p, u: u * scale if is_stem(p) else u, updates), state

    return optax.chain(tx, optax.GradientTransformation(lambda _: optax.EmptyState(), update))


class ParamEmaState(NamedTuple):
    """A moving average of the weights after each step: ``ema`` is the weighted sum and
    ``total`` the sum of its weights (``1 - decay ** steps``), so ``ema / total`` is the
    average, unbiased by the zeros it starts from."""

    total: jax.Array  # float32 scalar
    ema: Any


def param_ema(decay: float) -> optax.GradientTransformation:
    """Leaves the updates as they are and keeps, in its state, the exponential moving average of
    the weights they lead to (``params + updates``), with weight ``decay ** k`` for the weights
    of ``k`` steps ago: Polyak averaging over a window of about ``1 / (1 - decay)`` steps. The
    last transformation of a chain, so that it sees the final updates."""

    def init(params: Any) -> ParamEmaState:
        return ParamEmaState(jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))

    def update(updates: Any, state: ParamEmaState, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError("param_ema needs the parameters (tx.update(..., params))")
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: (decay * e + (1 - decay) * p).astype(e.dtype),
                           state.ema, new)
        return updates, ParamEmaState(decay * state.total + (1 - decay), ema)

    return optax.GradientTransformation(init, update)


def ema_decay_per_step(ema_epochs: float, steps_per_epoch: int) -> float | None:
    """The per-step decay of a moving average over about ``ema_epochs`` epochs (0: none, None):
    ``1 - 1 / window`` for a window of ``ema_epochs * steps_per_epoch`` steps (at least one,
    decay 0: the last weights), so a run's average spans the same share of training whatever
    the size of its data."""
    if ema_epochs <= 0:
        return None
    return 1.0 - 1.0 / max(1.0, ema_epochs * steps_per_epoch)


def ema_params(state: ParamEmaState, params: Any) -> Any:
    """The moving average in ``state``; ``params`` itself before the first step."""
    return jax.tree.map(
        lambda e, p: jnp.where(state.total > 0, e / jnp.maximum(state.total, 1e-30), p)
        .astype(p.dtype), state.ema, params)


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    weight_decay: float = 0.0,
    weight_decay_mask: str = "kernels",
    grad_clip_norm: float = 0.0,
    plateau_epochs: int = 0,
    steps_per_epoch: int = 1,
    moments: dict[str, float] | None = None,
    stem_lr_scale: float = 1.0,
    ema_decay: float | None = None,
    frozen: Frozen = None,
) -> optax.GradientTransformation:
    """The optimizer chain described at the top of this module.

    ``plateau_epochs`` > 0 appends optax's reduce-on-plateau, fed with the training loss (the
    train step passes ``value=loss``) and averaged over an epoch of steps. ``moments``: the
    optimizer's ``b1``/``b2``/``momentum`` (default: its own, :func:`moment_defaults`).
    ``stem_lr_scale``: the stem's learning rate relative to the rest (:func:`with_stem_rate`).
    ``ema_decay`` (None: none) keeps a moving average of the weights with this decay per step
    (:func:`param_ema`; :func:`ema_decay_per_step` for a window in epochs), which
    :func:`eval_params` returns. ``frozen`` (a function of a parameter's pytree path; None:
    none) marks the parameters that get no updates (:func:`without_updates`).
    """
    return _chain(name, schedule, weight_decay, decay=weight_decay > 0,
                  weight_decay_mask=weight_decay_mask, grad_clip_norm=grad_clip_norm,
                  plateau_epochs=plateau_epochs, steps_per_epoch=steps_per_epoch,
                  moments=moments or {}, stem_lr_scale=stem_lr_scale, ema_decay=ema_decay,
                  frozen=frozen)


def _chain(name: str, schedule: optax.Schedule, weight_decay: Any, *, decay: bool,
           weight_decay_mask: str, grad_clip_norm: float, plateau_epochs: int,
           steps_per_epoch: int, moments: dict[str, Any],
           stem_lr_scale: float = 1.0, ema_decay: float | None = None,
           frozen: Frozen = None) -> optax.GradientTransformation:
    """The chain of :func:`make_optimizer`; ``decay`` says whether the decay steps are in it, so
    that ``weight_decay`` (and the schedule's peak) may be traced values (see
    :func:`make_injected_optimizer`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: unknown {name!r}; known: {sorted(OPTIMIZERS)}")
    unknown = set(moments) - set(moment_defaults(name))
    if unknown:
        raise ValueError(f"optimizer.{sorted(unknown)[0]}: {name} has no such hyperparameter "
                         f"(it takes {sorted(moment_defaults(name)) or 'none'})")
    if name in SCHEDULE_FREE and stem_lr_scale != 1.0:
        raise ValueError(f"train.stem_lr_scale: not supported with {name}")
    if name in SCHEDULE_FREE and ema_decay is not None:
        raise ValueError(f"train.ema_epochs: not supported with {name}")
    parts = []
    if grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    mask = param_mask(weight_decay_mask, frozen)
    if name in SCHEDULE_FREE:
        inner = [OPTIMIZERS[name][0]()]
        if decay:
            inner.append(optax.add_decayed_weights(weight_decay, mask=mask))
        inner.append(optax.scale_by_learning_rate(schedule))
        parts.append(optax.contrib.schedule_free(optax.chain(*inner), learning_rate=schedule))
        return without_updates(optax.chain(*parts), frozen)
    if decay and name not in DECOUPLED | TRUST_RATIO:
        parts.append(optax.add_decayed_weights(weight_decay, mask=mask))  # g + wd * w
    if name in TRUST_RATIO:
        # optax adds +wd * w to the direction before the trust ratio, then negates (learning
        # rate 1): -ratio * (d + wd * w), so here the decay keeps its positive sign.
        parts.append(OPTIMIZERS[name][0](weight_decay=weight_decay, mask=mask, **moments))
    else:  # the direction, already negated (learning rate 1)
        parts.append(OPTIMIZERS[name][0](**moments))
    if decay and name in DECOUPLED:
        # The direction is negated, so decay enters with a negative sign: -(d + wd * w).
        parts.append(optax.add_decayed_weights(-weight_decay, mask=mask))
    if plateau_epochs > 0:
        parts.append(optax.contrib.reduce_on_plateau(
            factor=0.3, patience=plateau_epochs, accumulation_size=max(1, steps_per_epoch)))
    parts.append(optax.scale_by_schedule(schedule))
    tx = without_updates(with_stem_rate(optax.chain(*parts), stem_lr_scale), frozen)
    return tx if ema_decay is None else optax.chain(tx, param_ema(ema_decay))


# The hyperparameters that make_injected_optimizer takes as traced inputs (the moments: those
# the optimizer has).
INJECTED = ("learning_rate", "weight_decay", *MOMENT_NAMES)


def make_injected_optimizer(
    name: str,
    schedule: str,
    total_steps: int,
    warmup_steps: int,
    *,
    learning_rate: float,
    weight_decay: float,
    decay: bool,
    weight_decay_mask: str = "kernels",
    grad_clip_norm: float = 0.0,
    plateau_epochs: int = 0,
    steps_per_epoch: int = 1,
    moments: dict[str, float] | None = None,
    traced_moments: Sequence[str] = (),
    stem_lr_scale: float = 1.0,
    ema_decay: float | None = None,
    frozen: Frozen = None,
) -> optax.GradientTransformation:
    """The chain of :func:`make_optimizer` with the peak learning rate, the weight decay and the
    ``traced_moments`` of the optimizer's moments (``b1``/``b2``/``momentum``; values
    ``moments``, default its own) held in the optimizer state (``optax.inject_hyperparams``)
    instead of baked in as constants; the other moments stay constants (so a group that does
    not vary them runs the same arithmetic as a trial alone).

    The state's ``hyperparams`` then carry the values, so one compiled step serves trials that
    differ only in them (their states stacked and the step vmapped), and nothing recompiles.
    ``decay`` decides whether the decay steps are in the chain at all (a static choice: true if
    any trial of a group decays; a trial with ``weight_decay`` 0 then adds exactly 0 * w).
    The update is that of ``make_optimizer`` with ``make_schedule(schedule, learning_rate,
    ...)`` to float rounding.
    """

    moments = {**moment_defaults(name), **(moments or {})}
    fixed = {k: v for k, v in moments.items() if k not in traced_moments}

    def factory(learning_rate, weight_decay, b1=None, b2=None, momentum=None):
        peak_schedule = make_schedule(schedule, learning_rate, total_steps, warmup_steps)
        given = {"b1": b1, "b2": b2, "momentum": momentum, **fixed}
        return _chain(name, peak_schedule, weight_decay, decay=decay,
                      weight_decay_mask=weight_decay_mask, grad_clip_norm=grad_clip_norm,
                      plateau_epochs=plateau_epochs, steps_per_epoch=steps_per_epoch,
                      moments={k: given[k] for k in moments}, stem_lr_scale=stem_lr_scale,
                      ema_decay=ema_decay, frozen=frozen)

    return optax.inject_hyperparams(factory)(
        learning_rate=learning_rate, weight_decay=weight_decay,
        **{k: v for k, v in moments.items() if k in traced_moments})


def injected_from_config(cfg: Any, steps_per_epoch: int, *, decay: bool | None = None,
                         traced_moments: Sequence[str] = (),
                         frozen: Frozen = None) -> optax.GradientTransformation:
    """:func:`make_injected_optimizer` for a run's config (``decay``: default, the config's
    weight decay is positive; ``frozen``: see :func:`make_optimizer`)."""
    o, t = cfg.optimizer, cfg.train
    return make_injected_optimizer(
        o.name, o.schedule, t.epochs * steps_per_epoch,
        int(round(o.warmup_epochs * steps_per_epoch)), learning_rate=o.learning_rate,
        weight_decay=o.weight_decay, decay=o.weight_decay > 0 if decay is None else decay,
        weight_decay_mask=o.weight_decay_mask, grad_clip_norm=t.grad_clip_norm,
        plateau_epochs=o.plateau_patience if o.schedule == "plateau" else 0,
        steps_per_epoch=steps_per_epoch, moments=moments_of(o), traced_moments=traced_moments,
        stem_lr_scale=t.stem_lr_scale,
        ema_decay=ema_decay_per_step(t.ema_epochs, steps_per_epoch), frozen=frozen)


def eval_params(name: str, opt_state: Any, params: Any) -> Any:
    """The weights to evaluate: the moving average of a chain that keeps one
    (``train.ema_epochs``), the averaged weights of schedule-free optimizers, else ``params``."""
    ema_state = _find(opt_state, ParamEmaState)
    if ema_state is not None:
        return ema_params(ema_state, params)
    if name not in SCHEDULE_FREE:
        return params
    sf_state = _find(opt_state, optax.contrib.ScheduleFreeState)
    return optax.contrib.schedule_free_eval_params(sf_state, params)


def lr_scale(opt_state: Any) -> float:
    """The reduce-on-plateau multiplier in ``opt_state`` (1.0 when there is none)."""
    state = _find(opt_state, optax.contrib.ReduceLROnPlateauState)
    return 1.0 if state is None else float(state.scale)


def _find(tree: Any, kind: type) -> Any:
    if isinstance(tree, kind):
        return tree
    if isinstance(tree, dict):  # optax.partition's inner states (train.stem_lr_scale 0)
        tree = list(tree.values())
    if isinstance(tree, tuple | list):
        for item in tree:
            found = _find(item, kind)
            if found is not None:
                return found
    return None


def from_config(cfg: Any, steps_per_epoch: int, frozen: Frozen = None
                ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and schedule of a run's config (``optimizer.*``, ``train.*``); ``frozen``:
    the parameters that get no updates (see :func:`make_optimizer`)."""
    o, t = cfg.optimizer, cfg.train
    schedule = make_schedule(o.schedule, o.learning_rate, t.epochs * steps_per_epoch,
                             int(round(o.warmup_epochs * steps_per_epoch)))
    tx = make_optimizer(o.name, schedule, weight_decay=o.weight_decay,
                        weight_decay_mask=o.weight_decay_mask, grad_clip_norm=t.grad_clip_norm,
                        plateau_epochs=o.plateau_patience if o.schedule == "plateau" else 0,
                        steps_per_epoch=steps_per_epoch, moments=moments_of(o),
                        stem_lr_scale=t.stem_lr_scale,
                        ema_decay=ema_decay_per_step(t.ema_epochs, steps_per_epoch),
                        frozen=frozen)
    return tx, schedule
