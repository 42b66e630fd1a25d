import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from speechmusic_jax.config import base_config
from speechmusic_jax.models.conv1d import Norm, build_model, count_params, pool1d
from speechmusic_jax.models.presets import PRESETS, resolve_spec


def spec_of(preset, **overrides):
    c = base_config()
    c.model.preset = preset
    for k, v in overrides.items():
        c.model[k] = v
    return resolve_spec(c.model, 2)


def conv(k, cin, cout, bias=True):
    return k * cin * cout + (cout if bias else 0) + 2 * cout  # + batch-norm scale and bias


def convs(widths, cin):
    total = 0
    for w in widths:
        total += conv(3, cin, w)
        cin = w
    return total


def res_stage(width, blocks, cin):
    total = 0
    for _ in range(blocks):
        total += conv(3, cin, width) + conv(3, width, width)
        if cin != width:
            total += cin * width  # 1x1 projection of the skip, no bias
        cin = width
    return total


def fc(cin, cout=2):
    return cin * cout + cout


# Parameter counts from the published layer tables (2 classes, conv biases, batch norm):
# Dai et al. 2017 Table 1 (M3, M5, M11, M18, M34-res), the torchaudio tutorial M5, SampleCNN 3^9
# (Lee et al. 2017, without its final 1x1 conv), and our own tiny, m5_mid and m6_mid.
PUBLISHED = {
    "m3": conv(80, 1, 256) + convs([256], 256) + fc(256),
    "m5": conv(80, 1, 128) + convs([128, 256, 512], 128) + fc(512),
    "m5_small": conv(80, 1, 32) + convs([32, 64, 64], 32) + fc(64),
    "m5_mid": conv(80, 1, 64) + convs([64, 128, 128], 64) + fc(128),
    "m6_mid": conv(80, 1, 64) + convs([64, 128, 128, 128], 64) + fc(128),
    "m11": conv(80, 1, 64) + convs([64] * 2 + [128] * 2 + [256] * 3 + [512] * 2, 64) + fc(512),
    "m18": conv(80, 1, 64) + convs([64] * 4 + [128] * 4 + [256] * 4 + [512] * 4, 64) + fc(512),
    "m34_res": conv(80, 1, 48) + res_stage(48, 3, 48) + res_stage(96, 4, 48)
    + res_stage(192, 6, 96) + res_stage(384, 3, 192) + fc(384),
    "samplecnn": conv(3, 1, 128) + convs([128, 128] + [256] * 6 + [512], 128) + fc(512),
    "tiny": conv(80, 1, 8) + convs([16], 8) + fc(16),
}


def test_every_preset_has_a_published_count():
    assert set(PUBLISHED) == set(PRESETS)
    assert PUBLISHED["m5"] == 555_010 and PUBLISHED["m5_small"] == 24_770


# The deepest presets build slowly on a CPU (m34_res ~10 s): they are counted under -m slow.
@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow)
                                    if p in ("m11", "m18", "m34_res") else p
                                    for p in sorted(PRESETS)])
def test_parameter_counts_match_published_tables(preset):
    model = build_model(spec_of(preset), seed=0)
    assert count_params(nnx.state(model, nnx.Param)) == PUBLISHED[preset]


def test_receptive_field_of_the_default_presets():
    # by hand: stem 80 (stride 8), pool 4 -> 104 samples, 32 apart; each stage's kernel-3 conv
    # adds 2 steps and its pool 3 (or 1), and multiplies the spacing by the pool
    assert spec_of("m5_mid").receptive_field() == 3464  # 0.22 s at 16 kHz
    assert spec_of("m6_mid").receptive_field() == 9608  # 0.60 s
    assert spec_of("m5_small").receptive_field() == 6848


@pytest.mark.parametrize("overrides", [
    {},
    {"residual": True, "stage_dilation": (2, 1), "stage_stride": (2, 1)},
    {"stage_kernel": (5, 3), "stage_repeats": (2, 1), "stage_pool": (3, 1)},
])
def test_receptive_field_is_what_one_output_step_depends_on(overrides):
    """The samples that one interior time step of the last stage depends on, read off its
    gradient (tanh and average pooling, so that no gradient is zero by chance), span exactly
    receptive_field() samples."""
    fields = dict(stem_filters=4, stem_kernel=6, stem_stride=2, stem_pool=2, stage_filters=(4, 4),
                  stage_repeats=(1, 1), stage_pool=(2, 2), kernel_size=3, residual=False,
                  activation="tanh", pool="avg")
    fields.update(overrides)
    spec = spec_of("tiny", **fields)
    model = build_model(spec, seed=0)
    x = jax.random.normal(jax.random.key(1), (1, 4000))
    middle = model.frames(x).shape[1] // 2
    grad = jax.grad(lambda x: model.frames(x)[0, middle].sum())(x)
    hears = np.flatnonzero(np.asarray(grad[0]) != 0)
    assert hears[-1] - hears[0] + 1 == spec.receptive_field()


def test_min_input_length_is_tight():
    spec = spec_of("m5_small")
    n = spec.min_input_length()
    assert n == (4 * 4 * 4 * 4 - 1) * 16 + 80
    model = build_model(spec, seed=0)
    x = jnp.ones((1, n))
    assert np.isfinite(np.asarray(model(x))).all()
    # One sample fewer leaves the last pooled layer with no time steps: the mean is undefined.
    assert not np.isfinite(np.asarray(model(x[:, :-1]))).all()


def test_dropout_acts_in_training_only():
    spec = spec_of("tiny", dropout=0.5)
    model = build_model(spec, seed=0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4000)), jnp.float32)
    e1, e2 = model(x, train=False), model(x, train=False)
    np.testing.assert_array_equal(e1, e2)
    t1 = model(x, train=True, rngs=nnx.Rngs(dropout=1))
    t2 = model(x, train=True, rngs=nnx.Rngs(dropout=2))
    assert not np.allclose(t1, t2)


def fresh_tiny(**overrides):
    return build_model(spec_of("tiny", dropout=0.0, **overrides), seed=0)


def _stats(model):
    return jax.tree_util.tree_leaves(nnx.state(model, nnx.BatchStat))


def test_batch_norm_statistics_skip_masked_rows():
    # Train mode: zero rows (the loader's stand-ins for unreadable files), masked out, change
    # neither the real rows' logits nor the running statistics.
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4000)), jnp.float32)
    padded = jnp.concatenate([x, jnp.zeros((3, 4000))])
    mask = jnp.arange(8) < 5
    plain = fresh_tiny()
    masked = fresh_tiny()
    want = plain(x, train=True)
    got = masked(padded, train=True, mask=mask)
    np.testing.assert_allclose(got[:5], want, rtol=1e-5, atol=1e-5)
    assert np.isfinite(np.asarray(got)).all()
    for a, b in zip(_stats(masked), _stats(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(_stats(plain), _stats(fresh_tiny()),
                                                     strict=True))


def test_batch_norm_mask_of_all_rows_or_in_eval_changes_nothing():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4000)), jnp.float32)
    everyone = jnp.ones(4, bool)
    for train in (True, False):  # jitted, as in the train and eval steps
        a, b = fresh_tiny(), fresh_tiny()
        plain = nnx.jit(lambda m, x, train=train: m(x, train=train))
        masked = nnx.jit(lambda m, x, k, train=train: m(x, train=train, mask=k))
        # Equal to float rounding (flax's masked mean divides by a count computed at run time).
        np.testing.assert_allclose(plain(a, x), masked(b, x, everyone), rtol=1e-5, atol=1e-6)
        for u, v in zip(_stats(a), _stats(b), strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    # Eval mode normalises with the running statistics: the mask has nothing to do.
    model = fresh_tiny()
    np.testing.assert_array_equal(model(x), model(x, mask=jnp.arange(4) < 1))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_masked_batch_norm_is_flax_batch_norm_with_a_mask(precision):
    # Norm's masked training path (with its guard for a batch without any real row) must
    # compute what flax's BatchNorm(x, mask=...) computes.
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    ours = Norm("batch", 8, dtype=dtype, rngs=nnx.Rngs(0))
    ours.layer.scale[...] = jnp.linspace(0.5, 2.0, 8)
    ours.layer.bias[...] = jnp.linspace(-1.0, 1.0, 8)
    flax_bn = nnx.clone(ours.layer)
    rng = np.random.default_rng(0)
    x = jnp.asarray(3.0 + 2.0 * rng.standard_normal((6, 50, 8)), jnp.float32)
    mask = jnp.array([True, False, True, True, False, True])
    got = ours(x, train=True, mask=mask)
    want = flax_bn(x, use_running_average=False, mask=jnp.broadcast_to(mask[:, None, None],
                                                                        x.shape))
    assert got.dtype == want.dtype == dtype
    tol = 1e-2 if precision == "bfloat16" else 1e-5
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tol, atol=tol)
    for name in ("mean", "var"):
        np.testing.assert_allclose(getattr(ours.layer, name)[...],
                                   getattr(flax_bn, name)[...], rtol=1e-5, atol=1e-6)


def test_batch_norm_with_no_real_row_keeps_its_statistics():
    model = fresh_tiny()
    before = [np.asarray(v) for v in _stats(model)]
    out = model(jnp.zeros((3, 4000)), train=True, mask=jnp.zeros(3, bool))
    assert np.isfinite(np.asarray(out)).all()
    for a, b in zip(_stats(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("norm", ["layer", "group", "none"])
def test_mask_is_accepted_by_every_norm(norm):
    model = fresh_tiny(norm=norm)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4000)), jnp.float32)
    np.testing.assert_array_equal(model(x, train=True),
                                  model(x, train=True, mask=jnp.array([True, True, False])))


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "none"])
@pytest.mark.parametrize("act", ["relu", "gelu", "tanh"])
def test_norm_and_activation_choices(norm, act):
    model = build_model(spec_of("tiny", norm=norm, activation=act), seed=0)
    out = model(jnp.ones((2, 4000)), train=False)
    assert out.shape == (2, 2)


def test_pooling_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 10, 3)).astype(np.float32)
    windows = x[:, :8].reshape(2, 2, 4, 3)
    np.testing.assert_array_equal(np.asarray(pool1d(jnp.asarray(x), 4, "max")),
                                  windows.max(axis=2))
    np.testing.assert_allclose(np.asarray(pool1d(jnp.asarray(x), 4, "avg")),
                               windows.mean(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(pool1d(jnp.asarray(x), 1)), x)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = build_model(spec_of("tiny"), seed=0, precision="bfloat16")
    params = nnx.state(model, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert model(jnp.ones((2, 4000))).dtype == jnp.float32


def test_logmel_frontend_matches_a_numpy_reference():
    from speechmusic_jax.models.frontends import log_mel, mel_filterbank

    sr, win, hop, n_mels = 16000, 400, 160, 40
    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    got = np.asarray(log_mel(jnp.asarray(x), sample_rate=sr, win=win, hop=hop, n_mels=n_mels))
    frames = 1 + (4000 - win) // hop
    want = np.empty((2, frames, n_mels))
    fb = mel_filterbank(512, n_mels, sr)
    for b in range(2):
        for f in range(frames):
            seg = x[b, f * hop:f * hop + win] * np.hanning(win)
            want[b, f] = np.log(np.abs(np.fft.rfft(seg, 512)) ** 2 @ fb + 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    # No filter is empty, and the highest ones reach their peak of 1 (bins are dense there).
    assert (fb.sum(axis=0) > 0).all()
    assert fb[:, -10:].max(axis=0) == pytest.approx(np.ones(10), abs=0.05)


def test_logmel_model_trains_and_states_its_minimum():
    import optax

    from speechmusic_jax.training.step import init_state, make_train_step

    c = base_config()
    c.model.preset = "tiny"
    c.model.frontend = "logmel"
    spec = resolve_spec(c.model, 2, sample_rate=16000)
    assert spec.stft_win == 400 and spec.stft_hop == 160
    # no pool after the stem over frames (model.stem_pool unset), stage pool 4: 4 frames after
    # a kernel-3 stem, 6 frames of 10 ms
    assert spec.stem_pool == 1 and spec.min_input_length() == 5 * 160 + 400
    c.model.stem_pool = 4  # set explicitly, it is kept: 16 frames after the stem
    assert resolve_spec(c.model, 2).min_input_length() == 17 * 160 + 400
    tx = optax.adam(1e-3)
    graphdef, state = init_state(build_model(spec, seed=0), tx)
    step = jax.jit(make_train_step(graphdef, tx, num_classes=2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16000)), jnp.float32)
    state, m = step(state, x, jnp.array([0, 1]), jnp.ones(2), jax.random.key(0))
    assert np.isfinite(float(m["loss_sum"]))


def test_stage_stride_dilation_kernel_and_pool_kind_act():
    base = spec_of("tiny")
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8000)), jnp.float32)
    ref = np.asarray(build_model(base, seed=0)(x))
    n_ref = count_params(nnx.state(build_model(base, seed=0), nnx.Param))
    for field, value in [("stage_dilation", (2,)), ("pool", "avg"), ("stage_stride", (2,)),
                         ("stage_kernel", (5,))]:
        spec = spec_of("tiny", **{field: value})
        model = build_model(spec, seed=0)
        out = np.asarray(model(x))
        assert out.shape == ref.shape and not np.allclose(out, ref), field
        n = count_params(nnx.state(model, nnx.Param))
        if field == "stage_kernel":  # 5 taps instead of 3 on an 8 -> 16 conv
            assert n == n_ref + 2 * 8 * 16
        else:
            assert n == n_ref, field
    strided = spec_of("tiny", stage_stride=(2,))
    assert strided.min_input_length() > base.min_input_length()
    model = build_model(strided, seed=0)
    assert np.isfinite(np.asarray(model(jnp.ones((1, strided.min_input_length()))))).all()
    assert not np.isfinite(np.asarray(model(jnp.ones((1, strided.min_input_length() - 1))))).all()


def test_head_hidden_layers_and_stage_dropout():
    plain = build_model(spec_of("tiny"), seed=0)
    deep = build_model(spec_of("tiny", head_hidden=(32, 8)), seed=0)
    extra = count_params(nnx.state(deep, nnx.Param)) - count_params(nnx.state(plain, nnx.Param))
    assert extra == (16 * 32 + 32) + (32 * 8 + 8) + (8 * 2 + 2) - (16 * 2 + 2)
    model = build_model(spec_of("tiny", stage_dropout=0.5), seed=0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4000)), jnp.float32)
    np.testing.assert_array_equal(model(x), model(x))
    assert not np.allclose(model(x, train=True, rngs=nnx.Rngs(dropout=1)),
                           model(x, train=True, rngs=nnx.Rngs(dropout=2)))


@pytest.mark.parametrize("field,value", [("stage_stride", (1, 2)), ("stage_dilation", (0,)),
                                         ("head_hidden", (0,)), ("pool", "median"),
                                         ("stage_dropout", 1.0)])
def test_bad_stage_fields_are_refused(field, value):
    with pytest.raises(ValueError, match=f"model.{field}"):
        spec_of("tiny", **{field: value})


def test_max_over_a_pooling_window_is_the_exact_maximum():
    """Windows up to 8 are maxed as elementwise maxima of slices (faster inference on XLA CPU);
    the values are exactly those of the reduction, ties and signs included."""
    from speechmusic_jax.models import conv1d

    x = np.random.default_rng(0).standard_normal((3, 7, 4, 5)).astype(np.float32)
    x[0, 0, :, 0] = 1.5  # a tie over the whole window
    x[1, 2, :, 1] = -2.0
    for axis in (2, 1):  # windows of 4 and of 7
        got = jax.jit(lambda v, a=axis: conv1d.max_over(v, a))(x)
        np.testing.assert_array_equal(np.asarray(got), x.max(axis=axis))
    wide = np.random.default_rng(1).standard_normal((2, 50, 3)).astype(np.float32)  # reduce
    np.testing.assert_array_equal(np.asarray(conv1d.max_over(jnp.asarray(wide), 1)),
                                  wide.max(axis=1))


def test_rms_input_norm_makes_the_model_level_free():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4000)).astype(np.float32) * 0.05)
    plain = build_model(spec_of("tiny"), seed=0)
    normed = build_model(spec_of("tiny", input_norm="rms"), seed=0)
    a, b = normed(x, train=False), normed(x * 8.0, train=False)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    loud = np.asarray(plain(x * 8.0, train=False))
    assert not np.allclose(np.asarray(plain(x, train=False)), loud, rtol=1e-4, atol=1e-5)
    # Same weights either way: the normalisation has no parameters.
    assert count_params(nnx.state(plain)) == count_params(nnx.state(normed))
    # Silence stays silence (the floor), nothing becomes NaN.
    assert np.all(np.isfinite(np.asarray(normed(jnp.zeros((2, 4000)), train=False))))


def test_input_norm_is_checked():
    with pytest.raises(ValueError, match="model.input_norm"):
        spec_of("tiny", input_norm="peak")


def _grads_and_stats(spec, x, mask, fuse):
    model = build_model(spec, seed=0)
    weights = jnp.asarray(np.random.default_rng(9).standard_normal((x.shape[0], 2)), jnp.float32)

    def loss(m):
        return jnp.sum(m(x, train=True, mask=mask, fused_pooling=fuse) * weights)

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
    return value, jax.tree_util.tree_leaves(grads), [np.asarray(v) for v in _stats(model)]


@pytest.mark.parametrize("overrides,length,mask", [
    ({}, 4001, None),  # the stem's output length not a multiple of its pool
    ({}, 4000, [True, False, True, True, False]),  # masked rows
    ({}, 4000, [False] * 5),  # no real row: statistics of every row, running ones kept
    pytest.param({"stage_filters": (8, 12), "stage_repeats": (2, 1), "stage_pool": (3, 2),
                  "stage_stride": (1, 2), "stage_dilation": (2, 1)}, 6000,
                 [True, True, False, True, True], marks=pytest.mark.slow),  # ~15 s alone
])
def test_fused_conv_norm_relu_pool_is_the_plain_model(overrides, length, mask):
    # The training pass's conv -> batch norm -> ReLU -> max-pool runs as one op with a
    # hand-written gradient (models/fused_pool.py). Loss, every parameter's gradient and the
    # running statistics must be those of the plain ops, to float rounding.
    spec = spec_of("tiny", dropout=0.0, **overrides)
    x = jnp.asarray(0.3 + np.random.default_rng(0).standard_normal((5, length)), jnp.float32)
    mask = None if mask is None else jnp.asarray(mask)
    v_fused, g_fused, s_fused = _grads_and_stats(spec, x, mask, True)
    v_plain, g_plain, s_plain = _grads_and_stats(spec, x, mask, False)
    np.testing.assert_allclose(v_fused, v_plain, rtol=1e-5, atol=1e-5)
    scale = max(float(np.abs(g).max()) for g in g_plain)
    assert scale > 0
    for a, b in zip(g_fused, g_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    for a, b in zip(s_fused, s_plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_pooling_is_used_where_it_applies_only():
    x = jnp.ones((2, 4000))

    def uses_it(spec, **kwargs):
        graphdef, state = nnx.split(build_model(spec, seed=0))
        jaxpr = jax.make_jaxpr(lambda s, v: nnx.merge(graphdef, s)(v, **kwargs))(state, x)
        return str(jaxpr).count("name=bn_relu_pool")

    tiny = spec_of("tiny", dropout=0.0)
    assert uses_it(tiny, train=True) == 1 + len(tiny.stage_filters)  # the stem and each stage
    assert uses_it(tiny, train=True, frozen_stem=True) == len(tiny.stage_filters)
    assert uses_it(tiny, train=True, fused_pooling=False) == 0
    assert uses_it(tiny, train=False) == 0
    for overrides in ({"norm": "layer"}, {"activation": "gelu"}, {"pool": "avg"}):
        assert uses_it(spec_of("tiny", dropout=0.0, **overrides), train=True) == 0, overrides
    assert uses_it(spec_of("tiny", dropout=0.0, residual=True), train=True) == 1  # the stem
    assert not build_model(tiny, seed=0, precision="bfloat16").fusable  # float32 only
    assert uses_it(spec_of("tiny", dropout=0.0, stem_pool=1), train=True) == len(
        tiny.stage_filters)


def test_fused_pooling_under_vmap_is_per_problem():
    # A sweep group vmaps the train step over trials: the op's batching must keep each
    # problem's statistics and gradients its own.
    from speechmusic_jax.models import fused_pool

    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.standard_normal((2, 4, 21, 6)) + [[[[1.0]]], [[[-2.0]]]], jnp.float32)
    cb, scale, bias = (jnp.asarray(rng.standard_normal((2, 6)), jnp.float32) for _ in range(3))
    rows = jnp.array([[True, True, False, True], [True] * 4])
    cot = jnp.asarray(rng.standard_normal((2, 4, 5, 6)), jnp.float32)

    def loss(x, c, s, b, r, g):
        return jnp.sum(fused_pool.bn_relu_pool(x, c, s, b, r, 4, 1e-5)[0] * g)

    grad = jax.grad(loss, argnums=(0, 1, 2, 3))
    batched = jax.jit(jax.vmap(grad))(xs, cb, scale, bias, rows, cot)
    for i in range(2):
        one = grad(xs[i], cb[i], scale[i], bias[i], rows[i], cot[i])
        for a, b in zip(batched, one, strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


def test_fused_pooling_keeps_the_window_index_in_int8():
    # The backward pass needs each window's argmax; with windows up to 127 wide it is kept in
    # int8, and no int32 index of the pooled tensor's size is written at all (XLA kept the
    # int32 index whole when it was converted after the reduction).
    from speechmusic_jax.models import fused_pool

    x = jnp.asarray(np.random.default_rng(7).standard_normal((2, 100, 3)), jnp.float32)
    c = jnp.zeros(3)

    def loss(x):
        return jnp.sum(fused_pool.bn_relu_pool(x, c, c + 1, c, jnp.ones(2, bool), 4, 1e-5)[0])

    hlo = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
    assert "s8[2,25,3]" in hlo
    assert "s32[2,25,3]" not in hlo and "s32[2,25,4,3]" not in hlo


def _plain_bn_relu_pool(x, bias, pool):
    """batch norm (statistics of every row, scale 1) -> ReLU -> max-pool, with the plain ops."""
    from speechmusic_jax.models import conv1d

    mean = x.mean(axis=(0, 1))
    var = jnp.maximum(0.0, jnp.square(x).mean(axis=(0, 1)) - jnp.square(mean))
    y = jax.nn.relu((x - mean[None, None]) * jax.lax.rsqrt(var + 1e-5)[None, None]
                    + bias[None, None])
    return conv1d.pool1d(y, pool)


def _fused_and_plain_grads(xp, bias, pool, cot):
    from speechmusic_jax.models import fused_pool

    c = xp.shape[-1]
    rows = jnp.ones(xp.shape[0], bool)

    def fused(x):
        return fused_pool.bn_relu_pool(x, jnp.zeros(c), jnp.ones(c), bias, rows, pool, 1e-5)[0]

    want = jax.grad(lambda x: jnp.sum(_plain_bn_relu_pool(x, bias, pool) * cot))(xp)
    got = jax.jit(jax.grad(lambda x: jnp.sum(fused(x) * cot)))(xp)
    return got, want


def test_fused_pooling_gives_a_tie_to_the_first_maximum():
    # As max_over: at a tie inside a window, the first maximum takes the whole gradient.
    rng = np.random.default_rng(4)
    xp = rng.standard_normal((2, 8, 3)).astype(np.float32)
    xp[0, 1] = xp[0, 0] = xp[0, :4].max(axis=0) + 1.0  # a tie at the top of the first window
    cot = jnp.asarray(rng.standard_normal((2, 2, 3)), jnp.float32)
    got, want = _fused_and_plain_grads(jnp.asarray(xp), jnp.full(3, 5.0), 4, cot)  # all > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert abs(float(got[0, 0, 0] - got[0, 1, 0])) > 0.5 * abs(float(cot[0, 0, 0]))


def test_fused_pooling_passes_a_nan_on_and_takes_wide_windows():
    # A NaN in the input comes out of every window it reaches (as with max), so a diverging
    # run still shows a non-finite loss. A window wider than an int8 index can tell apart
    # (300 > 256) still sends each window's gradient to its maximum.
    from speechmusic_jax.models import fused_pool

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 600, 3)).astype(np.float32)
    cot = jnp.asarray(rng.standard_normal((2, 2, 3)), jnp.float32)
    got, want = _fused_and_plain_grads(jnp.asarray(x), jnp.zeros(3), 300, cot)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (x.reshape(2, 2, 300, 3).argmax(axis=2) > 255).any()  # some maxima past 8 bits
    x = x[:, :400]
    ones, zeros, rows = jnp.ones(3), jnp.zeros(3), jnp.ones(2, bool)
    x[1, 250, 2] = np.nan
    out = np.asarray(fused_pool.bn_relu_pool(jnp.asarray(x), zeros, ones, zeros, rows, 4,
                                             1e-5)[0])
    assert np.isnan(out[:, :, 2]).all()  # channel 2: NaN statistics, so every window is NaN
    assert np.isfinite(out[:, :, :2]).all()
    # A NaN born after the statistics (an infinite scale times an input equal to the mean)
    # wins its window too, as in a max, however the window's other values compare.
    one = jnp.ones(1)
    for x in ([0.0, -1.0, 0.0, 1.0], [0.0, 0.0, -1.0, 1.0], [1.0, 0.0, 0.0, -1.0]):
        out = fused_pool.bn_relu_pool(jnp.asarray(x).reshape(1, 4, 1), 0 * one, one * np.inf,
                                      0 * one, jnp.ones(1, bool), 4, 0.0)[0]
        assert np.isnan(np.asarray(out)).all(), x
