"""The configurable 1D convolutional classifier on the raw waveform (Flax NNX).

Layout is (batch, time, channels). A strided stem conv, then stages of
conv + norm + activation (optionally residual), max-pooling after each stage, global pooling over
time, dropout, and a dense head with one logit per class. Train-time behaviour (batch statistics,
dropout) is chosen per call with ``train=``, so the same module serves the jitted train and eval
steps without hidden mode flags. In training, ``mask=`` (batch,) marks the real rows: batch norm
computes its statistics over those only, so the zero rows that stand in for unreadable files
neither shift the other rows' normalisation nor the running statistics.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from speechmusic_jax.models import fused_pool
from speechmusic_jax.models.frontends import Leaf, MelFrontend, SincConv, log_mel
from speechmusic_jax.models.presets import RMS_FLOOR, ModelSpec

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nnx.relu,
    "gelu": nnx.gelu,
    "silu": nnx.silu,
    "elu": nnx.elu,
    "leaky_relu": nnx.leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": nnx.sigmoid,
}


class Norm(nnx.Module):
    """Batch, layer or group normalisation over channels, or nothing."""

    PARTS = ("layer",)  # network order, for layer_order

    def __init__(self, kind: str, channels: int, *, dtype, rngs: nnx.Rngs):
        self.kind = kind
        if kind == "batch":
            self.layer = nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
        elif kind == "layer":
            self.layer = nnx.LayerNorm(channels, epsilon=1e-5, dtype=dtype, rngs=rngs)
        elif kind == "group":
            groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
            self.layer = nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, dtype=dtype,
                                       rngs=rngs)
        elif kind == "none":
            self.layer = None
        else:
            raise ValueError(f"model.norm: unknown normalisation {kind!r}")

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """``mask`` (batch,) bool: in training, batch norm's statistics (and so its running
        averages) come from the rows marked True only; every row is normalised with them. Layer
        and group norm work per example and ignore it, as does batch norm in eval mode."""
        if self.layer is None:
            return x
        if self.kind == "batch":
            if mask is None or not train:
                return self.layer(x, use_running_average=not train)
            return self._masked_batch_norm(x, mask)
        return self.layer(x)

    def _masked_batch_norm(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """nnx.BatchNorm's training path (fast variance, channels last) with the statistics taken
        over the rows ``mask`` marks. With no real row at all (every file of the batch failed),
        the statistics of all the (zero) rows keep the output finite, and the running averages
        are left as they were."""
        bn = self.layer
        mask = jnp.asarray(mask, bool)
        axes = tuple(range(x.ndim - 1))
        x, scale, bias = bn.promote_dtype((x, bn.scale[...], bn.bias[...]), dtype=bn.dtype)
        xs = jnp.asarray(x, jnp.promote_types(x.dtype, jnp.float32))  # statistics in >= float32
        any_real = mask.any()
        rows = jnp.logical_or(mask, jnp.logical_not(any_real))
        rows = rows.reshape(mask.shape + (1,) * (x.ndim - 1))  # broadcasts to (batch, time, ch)
        count = jnp.maximum(rows.sum() * (x.size // x.shape[-1] // x.shape[0]), 1)
        mean = jnp.where(rows, xs, 0).sum(axes) / count
        var = jnp.maximum(0.0, jnp.where(rows, jnp.square(xs), 0).sum(axes) / count
                          - jnp.square(mean))
        self.update_running(mean, var, any_real)
        shape = (1,) * (x.ndim - 1) + (x.shape[-1],)
        y = (x - mean.reshape(shape)) * (jax.lax.rsqrt(var + bn.epsilon) * scale).reshape(shape)
        return jnp.asarray(y + bias.reshape(shape), bn.dtype)

    def update_running(self, mean: jax.Array, var: jax.Array, any_real: jax.Array) -> None:
        """Batch norm's running averages moved towards a batch's ``mean`` and ``var`` (no
        gradient flows into them); left as they were when the batch had no real row."""
        bn = self.layer
        for running, batch in ((bn.mean, mean), (bn.var, var)):
            updated = bn.momentum * running[...] + (1 - bn.momentum) * jax.lax.stop_gradient(batch)
            running[...] = jnp.where(any_real, updated, running[...])


def conv_norm_relu_pool(conv: nnx.Conv, norm: Norm, x: jax.Array, pool: int,
                        mask: jax.Array | None) -> jax.Array:
    """``pool1d(relu(norm(conv(x), train=True, mask=mask)), pool)`` for batch norm and max
    pooling, through ``fused_pool.bn_relu_pool``: the same values and gradients up to float
    rounding, in fewer passes over the conv's output."""
    bn = norm.layer
    mask = jnp.ones(x.shape[:1], bool) if mask is None else jnp.asarray(mask, bool)
    any_real = mask.any()
    rows = jnp.logical_or(mask, jnp.logical_not(any_real))
    out, mean, var = fused_pool.bn_relu_pool(
        fused_pool.conv_without_bias(conv, x), conv.bias[...], bn.scale[...], bn.bias[...], rows,
        pool, bn.epsilon)
    norm.update_running(mean, var, any_real)
    return out


class ConvBlock(nnx.Module):
    """conv -> norm -> activation; with ``residual``, two of them plus a (projected) skip."""

    PARTS = ("conv1", "norm1", "conv2", "norm2", "proj")  # network order, for layer_order

    def __init__(self, cin: int, cout: int, spec: ModelSpec, *, kernel: int, stride: int = 1,
                 dilation: int = 1, dtype, rngs: nnx.Rngs):
        self.residual = spec.residual
        self.act = ACTIVATIONS[spec.activation]
        k, d = (kernel,), (dilation,)
        self.conv1 = nnx.Conv(cin, cout, k, strides=(stride,), kernel_dilation=d, padding="SAME",
                              dtype=dtype, rngs=rngs)
        self.norm1 = Norm(spec.norm, cout, dtype=dtype, rngs=rngs)
        if self.residual:
            self.conv2 = nnx.Conv(cout, cout, k, kernel_dilation=d, padding="SAME", dtype=dtype,
                                  rngs=rngs)
            self.norm2 = Norm(spec.norm, cout, dtype=dtype, rngs=rngs)
            self.proj = (nnx.Conv(cin, cout, (1,), strides=(stride,), use_bias=False,
                                  dtype=dtype, rngs=rngs)
                         if cin != cout or stride > 1 else None)

    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None,
                 pool: int = 1) -> jax.Array:
        """The block's output; with ``pool`` > 1 (a block that is not residual, in training,
        with batch norm, ReLU and max pooling: see ``Conv1DClassifier.fusable``) max-pooled
        too, through ``conv_norm_relu_pool``."""
        if pool > 1:
            if self.residual:
                raise ValueError("ConvBlock: pool > 1 is for blocks that are not residual")
            return conv_norm_relu_pool(self.conv1, self.norm1, x, pool, mask)
        y = self.act(self.norm1(self.conv1(x), train=train, mask=mask))
        if not self.residual:
            return y
        y = self.norm2(self.conv2(y), train=train, mask=mask)
        skip = self.proj(x) if self.proj is not None else x
        return self.act(y + skip)


def max_over(x: jax.Array, axis: int) -> jax.Array:
    """``x.max(axis)`` whose gradient goes to one maximum per reduction (the first), as a
    one-hot of the argmax.

    JAX's own rule for a max reduction finds the maxima by comparing the input with the
    output for equality. XLA CPU (jax 0.10.2) may recompute the input of that comparison
    inside a fusion with other rounding, so in a jitted train step some maxima no longer
    compare equal and their gradient is lost: measured on every preset (two pooled,
    batch-normalised layers), the jitted gradient differed from the eager one and from finite
    differences by up to ~80%. An argmax carried from the forward pass needs no such
    comparison. At a tie the first maximum takes the whole gradient (a subgradient; JAX's rule
    splits it)."""
    return _max_over(x, axis % x.ndim, x.shape[axis])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_over(x: jax.Array, axis: int, size: int) -> jax.Array:
    if size <= _SLICED_MAX:  # a pooling window: elementwise maxima of its slices
        parts = [jax.lax.index_in_dim(x, i, axis, keepdims=False) for i in range(size)]
        return functools.reduce(jnp.maximum, parts)
    return x.max(axis=axis)


# Windows up to this size are maxed as slices (elementwise maxima, which XLA fuses with the
# normalisation and activation before them) instead of a reduction: on XLA CPU (jax 0.10.2)
# the reduction became an XNNPACK fusion that made inference of the tutorial M5 ~25% slower.
_SLICED_MAX = 8


def _max_over_fwd(x: jax.Array, axis: int, size: int) -> tuple[jax.Array, jax.Array]:
    return x.max(axis=axis), jnp.argmax(x, axis=axis)


def _max_over_bwd(axis: int, size: int, argmax: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    onehot = jax.nn.one_hot(argmax, size, dtype=g.dtype, axis=axis)
    return (onehot * jnp.expand_dims(g, axis),)


_max_over.defvjp(_max_over_fwd, _max_over_bwd)


def pool1d(x: jax.Array, size: int, kind: str = "max") -> jax.Array:
    """Non-overlapping max- or average-pool over time (VALID), as a reshape and a reduction."""
    if size <= 1:
        return x
    b, t, c = x.shape
    t2 = t // size
    windows = x[:, : t2 * size].reshape(b, t2, size, c)
    return max_over(windows, 2) if kind == "max" else windows.mean(axis=2)


@dataclasses.dataclass(frozen=True)
class DropoutRates:
    """The dropout rates of one forward pass: before the head's layers (``head``) and after
    each stage's pooling (``stage``). Python floats, or traced scalars."""

    head: Any = 0.0
    stage: Any = 0.0

    def off(self) -> bool:
        """True when no dropout can happen: both rates are Python zeros (a traced rate counts
        as on: its value is only known at run time)."""
        return all(isinstance(r, int | float) and r == 0 for r in (self.head, self.stage))


_STAGE_SLOT, _HEAD_SLOT = 0, 1000  # each dropout site folds its own number into the call's key


def dropout(x: jax.Array, rate: Any, key: jax.Array | None, slot: int) -> jax.Array:
    """Inverted dropout at ``rate`` (a float or a traced scalar; 0 keeps ``x`` as it is) with
    the key of the call folded with the site's ``slot``. Each site's mask depends only on the
    call's key and its slot, never on which other sites are on, so a model trained alone and
    the same model in a sweep group (where any trial's rate may be on) draw the same masks.
    ``key`` None (evaluation, or no dropout anywhere) returns ``x``."""
    if key is None or (isinstance(rate, int | float) and rate == 0):
        return x
    keep = 1.0 - jnp.asarray(rate, x.dtype)
    kept = jax.random.bernoulli(jax.random.fold_in(key, slot), keep, x.shape)
    return jnp.where(kept, x / jnp.maximum(keep, jnp.finfo(x.dtype).tiny), jnp.zeros_like(x))


class Conv1DClassifier(nnx.Module):
    # network order, for layer_order
    PARTS = ("frontend", "stem", "stem_norm", "stages", "hidden", "head")

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.spec = spec
        self.act = ACTIVATIONS[spec.activation]
        # conv -> batch norm -> ReLU -> max-pool runs as one op with a hand-written gradient in
        # training (models/fused_pool.py); float32 only
        self.fusable = (spec.norm == "batch" and spec.activation == "relu" and spec.pool == "max"
                        and jnp.dtype(dtype) == jnp.float32)
        # the front end's learnable parameters (leaf; logmel with PCEN), if any
        frontend = None
        if spec.frontend == "leaf":
            frontend = Leaf(spec.n_mels, sample_rate=spec.sample_rate, win=spec.stft_win,
                            hop=spec.stft_hop, compression=spec.frontend_compression,
                            smooth_min=spec.pcen_smooth_min)
        elif spec.frontend == "logmel" and spec.frontend_compression == "pcen":
            frontend = MelFrontend(spec.n_mels, sample_rate=spec.sample_rate,
                                   win=spec.stft_win, hop=spec.stft_hop,
                                   smooth_min=spec.pcen_smooth_min)
        self.frontend = frontend
        if spec.frames():  # bands in, frames as time: kernel_size, stride 1
            self.stem = nnx.Conv(spec.n_mels, spec.stem_filters, (spec.kernel_size,),
                                 padding="VALID", dtype=dtype, rngs=rngs)
        elif spec.frontend == "sincnet":
            self.stem = SincConv(spec.stem_filters, win=spec.stft_win, stride=spec.stem_stride,
                                 sample_rate=spec.sample_rate, dtype=dtype)
        else:
            self.stem = nnx.Conv(1, spec.stem_filters, (spec.stem_kernel,),
                                 strides=(spec.stem_stride,), padding="VALID", dtype=dtype,
                                 rngs=rngs)
        self.stem_norm = Norm(spec.norm, spec.stem_filters, dtype=dtype, rngs=rngs)
        stages = []
        cin = spec.stem_filters
        for filters, repeats, kernel, stride, dilation in zip(
                spec.stage_filters, spec.stage_repeats, spec.per_stage("stage_kernel",
                                                                       spec.kernel_size),
                spec.per_stage("stage_stride", 1), spec.per_stage("stage_dilation", 1),
                strict=True):
            blocks = []
            for r in range(repeats):
                blocks.append(ConvBlock(cin, filters, spec, kernel=kernel,
                                        stride=stride if r == 0 else 1, dilation=dilation,
                                        dtype=dtype, rngs=rngs))
                cin = filters
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        width = cin * (2 if spec.global_pool == "avgmax" else 1)
        hidden = []
        for size in spec.head_hidden:
            hidden.append(nnx.Linear(width, size, dtype=dtype, rngs=rngs))
            width = size
        self.hidden = nnx.List(hidden)
        self.head = nnx.Linear(width, spec.num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, waveform: jax.Array, *, train: bool = False,
                 rngs: nnx.Rngs | None = None, mask: jax.Array | None = None,
                 rates: DropoutRates | None = None, frozen_stem: bool = False,
                 fused_pooling: bool = True) -> jax.Array:
        """``waveform`` (batch, time) -> logits (batch, num_classes) in float32 (float64 for a
        model computing in float64).

        ``mask`` (batch,) bool, optional: the real rows of a training batch; batch norm takes
        its statistics from those only (see ``Norm``). Without it, or in eval mode, every row
        is treated alike. ``rates``: dropout rates for this call instead of the spec's; they
        may be traced values (the trials of a sweep group each pass their own).
        ``frozen_stem``: the stem's norm runs in inference mode in training too (its running
        statistics used and left as they are), so a frozen stem (``train.stem_lr_scale`` 0)
        computes in training exactly what it computes in evaluation. ``fused_pooling``
        False computes the training pass with the plain ops instead of
        ``conv_norm_relu_pool`` where the model is ``fusable``: the same function (for checks
        and benchmarks)."""
        spec = self.spec
        rates = rates or DropoutRates(spec.dropout, spec.stage_dropout)
        drop_key = None
        if train and not rates.off():
            if rngs is None:
                raise ValueError("dropout in training needs rngs=nnx.Rngs(dropout=key)")
            drop_key = rngs.dropout()
        x = self.frames(waveform, train=train, mask=mask, rates=rates, drop_key=drop_key,
                        frozen_stem=frozen_stem, fused_pooling=fused_pooling)
        if spec.global_pool == "avg":
            x = x.mean(axis=1)
        elif spec.global_pool == "max":
            x = max_over(x, 1)
        else:
            x = jnp.concatenate([x.mean(axis=1), max_over(x, 1)], axis=-1)
        for i, layer in enumerate(self.hidden):
            x = dropout(x, rates.head, drop_key, _HEAD_SLOT + i)
            x = self.act(layer(x))
        x = dropout(x, rates.head, drop_key, _HEAD_SLOT + len(self.hidden))
        x = self.head(x)
        return x.astype(jnp.promote_types(x.dtype, jnp.float32))

    def frames(self, waveform: jax.Array, *, train: bool = False, mask: jax.Array | None = None,
               rates: DropoutRates | None = None, drop_key: jax.Array | None = None,
               frozen_stem: bool = False, fused_pooling: bool = True) -> jax.Array:
        """``waveform`` (batch, time) -> the last stage's output (batch, steps, channels), before
        the global pooling: each step hears ``spec.receptive_field()`` samples. The arguments
        are ``__call__``'s; ``drop_key`` is the key of stage dropout (None: no dropout)."""
        spec = self.spec
        rates = rates or DropoutRates(spec.dropout, spec.stage_dropout)
        if spec.input_norm == "rms":
            power = jnp.mean(jnp.square(waveform.astype(jnp.float32)), axis=-1, keepdims=True)
            scale = jax.lax.rsqrt(jnp.maximum(power, RMS_FLOOR**2))
            waveform = (waveform * scale).astype(waveform.dtype)
        if self.frontend is not None:
            x = self.frontend(waveform)
        elif spec.frontend == "logmel":
            x = log_mel(waveform, sample_rate=spec.sample_rate, win=spec.stft_win,
                        hop=spec.stft_hop, n_mels=spec.n_mels)
        else:
            x = waveform[..., None]
        fuse = train and fused_pooling and self.fusable
        if fuse and not frozen_stem and spec.stem_pool > 1 and isinstance(self.stem, nnx.Conv):
            x = conv_norm_relu_pool(self.stem, self.stem_norm, x, spec.stem_pool, mask)
        else:
            x = self.act(self.stem_norm(self.stem(x), train=train and not frozen_stem,
                                        mask=mask))
            x = pool1d(x, spec.stem_pool, spec.pool)
        for i, (stage, pool) in enumerate(zip(self.stages, spec.stage_pool, strict=True)):
            fused = False
            for j, block in enumerate(stage):
                last = j == len(stage) - 1
                fused = fuse and last and pool > 1 and not block.residual
                x = block(x, train=train, mask=mask, pool=pool if fused else 1)
            if not fused:
                x = pool1d(x, pool, spec.pool)
            x = dropout(x, rates.stage, drop_key, _STAGE_SLOT + i)
        return x


# The convolutions whose output goes straight into a Norm: the stem's and each block's two.
_NORMED_CONVS = ("stem", "conv1", "conv2")


def cancelled_by_norm(spec: ModelSpec) -> Callable[[tuple], bool] | None:
    """Which parameters (by pytree path) the network's output does not depend on, or None if
    none: with batch norm, the bias of each convolution that feeds it (the stem's and every
    block's). Batch norm subtracts each channel's batch mean, the bias with it, so the bias's
    gradient is zero but for float rounding (~1e-9), and an adaptive optimizer such as Adam
    scales that rounding up to full-size steps, which differ between any two programs that sum
    in another order (a vmapped group, another number of processes). The optimizer leaves
    these parameters where they are (``optim.without_updates``). Layer and group norm subtract
    a mean over channels, not each channel's own, so the biases before them do matter."""
    if spec.norm != "batch":
        return None

    def cancelled(path: tuple) -> bool:
        keys = [getattr(e, "key", None) for e in path]
        keys = [k for k in keys if k is not None]
        return len(keys) >= 2 and keys[-1] == "bias" and keys[-2] in _NORMED_CONVS

    return cancelled


def build_model(spec: ModelSpec, seed: int, precision: str = "float32") -> Conv1DClassifier:
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    return Conv1DClassifier(spec, rngs=nnx.Rngs(params=seed), dtype=dtype)


def layer_order(module: nnx.Module, prefix: str = "") -> list[str]:
    """The dotted path of every layer (a module that holds parameters) in the order data flows
    through them: stem first, head last. ``nnx.state`` sorts its keys by name (``head`` before
    ``stem``, ``stages.10`` before ``stages.2``), and so does a model made by ``nnx.merge``; the
    order here comes from each of our modules' ``PARTS`` and from the lists' indices."""
    own = [prefix] if any(isinstance(v, nnx.Param) for v in vars(module).values()) else []
    if isinstance(module, nnx.List):
        children = [(str(i), child) for i, child in enumerate(module)]
    else:
        children = [(name, getattr(module, name, None)) for name in getattr(module, "PARTS", ())]
    for name, child in children:
        if isinstance(child, nnx.Module):
            own += layer_order(child, f"{prefix}.{name}" if prefix else name)
    return own


def count_params(state: nnx.State) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(state)))
