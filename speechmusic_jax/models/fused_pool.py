"""Batch norm (training statistics) -> ReLU -> max-pool as one op with a hand-written gradient.

In a training step, the conv layers followed by a pool (the stem above all: its output is the
largest tensor of the network, (32, 11981, 128) floats in the paper M5) spend much of their time
in full passes over that tensor: the bias add, the batch statistics, the normalisation, the
pooling and the backward pass of each. Autodiff of the plain ops makes XLA CPU (jax 0.10.2)
write several full-size temporaries: the masked copies that feed the statistics' reductions, the
scattered pooling gradient, the centred input, and the input gradient once for the conv bias's
reduction and again in the layout of the weight gradient.

``bn_relu_pool`` computes the same function with fewer passes:
- the statistics come from per-row sums of the conv output (before its bias) and of its
  square, reduced over the real rows afterwards; batch norm cancels the conv bias, so it only
  shifts the mean;
- one pass of the forward computes each window's maximum, the index of its first maximum (as
  ``max_over``, which gives a tie's gradient to the first) and the input there, for the
  backward pass;
- the backward pass uses the closed form of batch norm's gradient and writes the input gradient
  once; the conv bias's gradient (zero up to rounding, since batch norm cancels a bias before
  it) comes from the same closed form, without a pass over the input gradient.
The outputs and gradients equal those of the plain ops up to float rounding
(tests/test_model.py); ``Conv1DClassifier(..., fused_pooling=False)`` runs the plain ops.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def conv_without_bias(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """``conv(x)`` without its bias: the same kernel, strides, dilation and padding (the
    1D "SAME"/"VALID" convs this package builds)."""
    if (conv.padding not in ("SAME", "VALID") or conv.mask is not None
            or conv.feature_group_count != 1 or conv.input_dilation not in (None, 1, (1,))):
        raise ValueError("conv_without_bias: only the 1D SAME/VALID convs of Conv1DClassifier")

    def one(v) -> tuple[int, ...]:
        return (1,) if v is None else (v,) if isinstance(v, int) else tuple(v)

    x, kernel = conv.promote_dtype((x, conv.kernel[...]), dtype=conv.dtype)
    return jax.lax.conv_general_dilated(
        x, kernel, one(conv.strides), conv.padding, rhs_dilation=one(conv.kernel_dilation),
        dimension_numbers=("NWC", "WIO", "NWC"), precision=conv.precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def bn_relu_pool(xp: jax.Array, conv_bias: jax.Array, scale: jax.Array, bias: jax.Array,
                 rows: jax.Array, pool: int, eps: float
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``maxpool(relu(batchnorm(xp + conv_bias)))`` over non-overlapping windows of ``pool``
    (VALID) with batch norm's training statistics over the rows marked by ``rows``.

    ``xp`` (batch, time, channels) float32: a conv's output before its bias; ``rows``
    (batch,) bool: the rows whose statistics count (at least one). Returns the pooled output
    (batch, time // pool, channels) and the batch mean and variance of ``xp + conv_bias``
    (channels,), for the running averages; those two carry no gradient."""
    out, _ = _forward(xp, conv_bias, scale, bias, rows, pool, eps)
    return out


def _forward(xp, conv_bias, scale, bias, rows, pool, eps):
    b, t, c = xp.shape
    t2 = t // pool
    rows_f = rows.astype(jnp.float32)
    n = rows_f.sum() * t
    # per-row sums first, then over the real rows: the reductions read xp as it is (a masked
    # copy of the full tensor would be written first)
    s1 = rows_f @ xp.sum(axis=1)
    s2 = rows_f @ jnp.square(xp).sum(axis=1)
    mean_p = s1 / n  # mean of xp; the bias only shifts it
    var_raw = s2 / n - jnp.square(mean_p)
    var = jnp.maximum(0.0, var_raw)
    inv = jax.lax.rsqrt(var + eps)
    a = inv * scale
    windows = xp[:, : t2 * pool].reshape(b, t2, pool, c)
    y = jax.nn.relu((windows - mean_p[None, None, None]) * a[None, None, None]
                    + bias[None, None, None])
    # each window's maximum, the index of its first maximum, and the input there, in one pass;
    # the index in int8 where it fits, straight from the reduction (an int32 index converted
    # afterwards was kept whole for the backward pass: 49 MB in the paper M5's stem)
    index = jnp.int8 if pool <= 127 else jnp.int32
    out, x_at, arg = jax.lax.reduce(
        (y, windows, jax.lax.broadcasted_iota(index, y.shape, 2)),
        (jnp.array(-jnp.inf, y.dtype), jnp.array(0, xp.dtype), jnp.array(pool, index)),
        _first_max, (2,))
    residuals = (xp, scale, rows_f, n, s1, mean_p, var_raw, inv, arg, x_at, out > 0)
    return (out, mean_p + conv_bias, var), residuals


def _first_max(left, right):
    """Reducer of (value, input, index) triples: the larger value, the lower index at a tie;
    a NaN wins, as in a max."""
    take = ((left[0] > right[0]) | jnp.isnan(left[0])
            | ((left[0] == right[0]) & (left[2] < right[2])))
    return tuple(jnp.where(take, u, v) for u, v in zip(left, right, strict=True))


def _backward(pool, eps, residuals, cotangents):
    xp, scale, rows_f, n, s1, mean_p, var_raw, inv, arg, x_at, positive = residuals
    g = cotangents[0]  # the mean and variance carry no gradient
    b, t, c = xp.shape
    t2 = t // pool
    g = jnp.where(positive, g, 0)  # ReLU's gradient at the window's maximum
    d_bias = g.sum(axis=(0, 1))
    d_scale = (g * ((x_at - mean_p[None, None]) * inv[None, None])).sum(axis=(0, 1))
    # Batch norm's gradient: a * (g_z - [real row] (mean(g_z) + xhat mean(g_z xhat))), where
    # g_z is the gradient at the normalised input (the pooled gradient at each window's
    # maximum, zero elsewhere) and the means are over the real rows' n values.
    a = inv * scale
    g_mean = d_bias / n
    g_hat = jnp.where(var_raw > 0, d_scale / n, 0)  # var = max(0, var_raw)
    at_max = arg[:, :, None, :] == jnp.arange(pool, dtype=arg.dtype)[None, None, :, None]
    g_z = jnp.where(at_max, g[:, :, None, :], 0).reshape(b, t2 * pool, c)
    g_z = jnp.pad(g_z, ((0, 0), (0, t - t2 * pool), (0, 0)))
    xhat = (xp - mean_p[None, None]) * inv[None, None]
    d_xp = a[None, None] * (g_z - rows_f[:, None, None] * (g_mean[None, None]
                                                          + xhat * g_hat[None, None]))
    # sum of d_xp over every row and time step, in closed form (sum of xhat over the real
    # rows is (s1 - n mean) inv)
    d_conv_bias = a * (d_bias - n * g_mean - g_hat * (s1 - n * mean_p) * inv)
    return d_xp, d_conv_bias, d_scale, d_bias, None


bn_relu_pool.defvjp(_forward, _backward)
