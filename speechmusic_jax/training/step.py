"""Pure train and eval steps over an explicit state.

The model is split once into a static ``graphdef`` and its state; the steps take and return plain
pytrees, merge the module inside the traced function, and have no Python side effects, so they can
be jitted with donated buffers, sharded over devices, or vmapped over trials.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.extend import core as jax_core

from speechmusic_jax.models.conv1d import DropoutRates
from speechmusic_jax.training.optim import masked


class TrainState(NamedTuple):
    params: Any  # nnx.State of nnx.Param
    model_state: Any  # nnx.State of everything else (batch-norm statistics)
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps taken


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[Any, TrainState]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, TrainState(params, rest, tx.init(params), jnp.zeros((), jnp.int32))


def penalty(params: Any, l1: float, l2: float, mask: str = "kernels") -> jax.Array:
    """l1 * sum|w| + l2 * sum w^2 over the parameters the named mask covers (kernels by default:
    biases and norm parameters excluded; see optim.MASKS)."""
    total = jnp.zeros((), jnp.float32)
    if is_zero(l1) and is_zero(l2):
        return total
    for path, w in jax.tree_util.tree_leaves_with_path(params):
        if masked(path, mask):
            w = w.astype(jnp.promote_types(w.dtype, jnp.float32))  # float32, or float64 params
            if not is_zero(l1):
                total += l1 * jnp.abs(w).sum()
            if not is_zero(l2):
                total += l2 * jnp.square(w).sum()
    return total


def is_zero(value: Any) -> bool:
    """True for a Python zero: a term it scales is left out of the program. A traced value
    (a sweep group's per-trial hyperparameter) is never treated as zero."""
    return isinstance(value, int | float) and value == 0


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float,
                  num_classes: int) -> jax.Array:
    """Per-example softmax cross-entropy (with optional label smoothing)."""
    targets = jax.nn.one_hot(labels, num_classes)
    if not is_zero(label_smoothing):
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w): weights 0 mark padding; class weights scale examples."""
    return (values * weight).sum() / jnp.maximum(weight.sum(), 1e-12)


def make_train_step(
    graphdef: Any,
    tx: optax.GradientTransformation,
    *,
    num_classes: int,
    label_smoothing: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    penalty_mask: str = "kernels",
    padded: bool = False,
    rates: DropoutRates | None = None,
    frozen_stem: bool = False,
    fused_pooling: bool = True,
):
    """(state, x, y, weight, key) -> (state, metrics); metrics are device scalars.

    The optimised loss is the ``weight``-ed mean (class weights, padding 0) of the cross-entropy
    with ``label_smoothing``, plus the L1/L2 penalties. The ``padded`` step is for batches with
    rows of weight 0 (the silent stand-ins for unreadable files): it also leaves them out of the
    batch-norm statistics (``mask=weight > 0``). The plain step computes the statistics over
    every row, with less work; the loop uses it for batches whose rows are all real.

    The reported metrics are plain sums over the real examples (weight > 0): ``loss_sum`` of the
    unsmoothed, unweighted cross-entropy, ``correct`` and ``count``; so they mean the same with
    and without class weights or label smoothing, and the training loss is comparable with the
    validation loss. ``grad_norm`` is the global norm of the optimised loss's gradient.

    ``label_smoothing``, ``l1``, ``l2`` and ``rates`` (the model's dropout rates; default: its
    spec's) may be traced scalars: a sweep group passes each trial's own. ``frozen_stem``:
    the stem's batch norm uses (and keeps) its running statistics, as in evaluation (for a
    stem that the optimizer freezes, ``train.stem_lr_scale`` 0). ``fused_pooling``: see
    ``train.fused_pooling`` (False: the model's plain ops).
    """

    def train_step(state: TrainState, x: jax.Array, y: jax.Array, weight: jax.Array,
                   key: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        step_key = jax.random.fold_in(key, state.step)

        def loss_fn(params, model_state):
            model = nnx.merge(graphdef, params, model_state, copy=True)
            logits = model(x, train=True, rngs=nnx.Rngs(dropout=step_key),
                           mask=weight > 0 if padded else None, rates=rates,
                           frozen_stem=frozen_stem, fused_pooling=fused_pooling)
            losses = cross_entropy(logits, y, label_smoothing, num_classes)
            data_loss = weighted_mean(losses, weight)
            new_model_state = nnx.state(model, nnx.Not(nnx.Param))
            objective = data_loss + penalty(params, l1, l2, penalty_mask)
            return objective, (data_loss, logits, new_model_state)

        grads, (data_loss, logits, model_state) = jax.grad(loss_fn, has_aux=True)(
            state.params, state.model_state)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=data_loss)
        params = optax.apply_updates(state.params, updates)
        real = (weight > 0).astype(jnp.float32)
        plain = cross_entropy(logits, y, 0.0, num_classes)  # what validation reports
        metrics = {"loss_sum": (plain * real).sum(),
                   "correct": ((logits.argmax(-1) == y) * real).sum(),
                   "count": real.sum(),
                   "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, model_state, opt_state, state.step + 1), metrics

    return train_step


def make_eval_step(graphdef: Any, chunk_bytes: int = 0, devices: int = 1):
    """(params, model_state, x) -> logits, in inference mode (running statistics, no dropout).

    ``chunk_bytes``: where the batch's largest activation on one device would exceed this many
    bytes, the batch goes through the network in chunks of examples, one after another
    (``lax.map``), each chunk's largest activation within it; 0: the whole batch in one pass.
    The logits are the same (each example's are computed alone either way; batch norm uses its
    running statistics). What changes is memory: on a CPU, XLA allocates a call's temporary
    buffers afresh, so the paper M5's 234 MiB at batch 32 (its stem output alone is 196 MB)
    became fresh pages at every call under glibc's default allocator, and its inference took
    1.4 times as long as with chunks of 2 examples (15 MiB). ``devices``: how many devices the
    batch is split over (each chunks its own share). A batch of symbolic size (``jax.export``)
    goes in one pass.
    """

    def eval_step(params: Any, model_state: Any, x: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, params, model_state, copy=True)

        def forward(xs: jax.Array) -> jax.Array:
            return model(xs, train=False)

        n = x.shape[0]
        if not chunk_bytes or not isinstance(n, int) or n % devices:
            return forward(x)  # also a symbolic batch size (export): one pass
        per_device = n // devices
        example = largest_activation_bytes(
            forward, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
        chunk = eval_chunk(per_device, example, chunk_bytes)
        return forward(x) if chunk == per_device else _in_chunks(forward, x, chunk, devices)

    return eval_step


def eval_chunk(examples: int, example_bytes: int, budget: int) -> int:
    """Examples per chunk: all ``examples`` when their largest activation (``example_bytes``
    each) fits in ``budget`` bytes, else the largest divisor of ``examples`` whose does (at
    least 1)."""
    if examples * example_bytes <= budget:
        return examples
    fits = max(1, budget // max(example_bytes, 1))
    return max(d for d in range(1, min(fits, examples) + 1) if examples % d == 0)


def largest_activation_bytes(fn: Any, *args: Any) -> int:
    """Bytes of the largest array that any operation of ``fn`` (traced on ``args``, shapes
    suffice) produces, nested computations included."""

    def walk(jaxpr: Any) -> int:
        best = 0
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                shape, dtype = getattr(var.aval, "shape", None), getattr(var.aval, "dtype", None)
                if shape is not None and dtype is not None:
                    best = max(best, math.prod(shape) * dtype.itemsize)
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    if isinstance(sub, jax_core.ClosedJaxpr):
                        best = max(best, walk(sub.jaxpr))
                    elif isinstance(sub, jax_core.Jaxpr):
                        best = max(best, walk(sub))
        return best

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def _in_chunks(forward: Any, x: jax.Array, chunk: int, devices: int) -> jax.Array:
    """``forward`` over ``x`` in chunks of ``chunk`` examples per device, one after another.
    Example i of device d's share sits at row d * per_device + i of ``x`` and of the result."""
    n, rest = x.shape[0], x.shape[1:]
    steps = n // devices // chunk
    xs = x.reshape(devices, steps, chunk, *rest).swapaxes(0, 1)  # (steps, devices, chunk, ...)
    ys = jax.lax.map(lambda xi: forward(xi.reshape(devices * chunk, *rest)), xs)
    out = ys.shape[2:]
    return ys.reshape(steps, devices, chunk, *out).swapaxes(0, 1).reshape(n, *out)
