"""The learnable front ends (models/frontends.py): each starts as a mel filterbank, checked
against numpy constructions; every preset x front end fits the default crop."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from speechmusic_jax.config import base_config, validate
from speechmusic_jax.errors import ConfigError
from speechmusic_jax.models import frontends as fe
from speechmusic_jax.models.conv1d import build_model
from speechmusic_jax.models.presets import PRESETS, resolve_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SR, WIN, HOP = 16000, 400, 160


def response(kernels: np.ndarray, n_fft: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """|frequency response| (bins, filters) of (taps, filters) kernels, and the bins in Hz."""
    return np.abs(np.fft.fft(kernels, n_fft, axis=0))[:n_fft // 2 + 1], \
        np.arange(n_fft // 2 + 1) * SR / n_fft


def test_sinc_kernels_equal_a_numpy_windowed_sinc_and_pass_the_mel_centres():
    n = 40
    low, band = fe.sinc_init(n, SR, WIN)
    got = np.asarray(fe.sinc_kernels(jnp.asarray(low), jnp.asarray(band), sample_rate=SR,
                                     win=WIN))
    t = np.arange(WIN) - (WIN - 1) / 2
    want = np.empty((WIN, n))
    for i in range(n):
        f1, f2 = low[i] / SR, min(low[i] / SR + band[i] / SR, 0.5)
        bp = np.sin(2 * np.pi * f2 * t) / (np.pi * t) - np.sin(2 * np.pi * f1 * t) / (np.pi * t)
        want[:, i] = bp * np.hamming(WIN) / (2 * (f2 - f1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    lower, centre, upper = fe.mel_bands(n, SR)
    mag, hz = response(got)
    peak = hz[mag.argmax(axis=0)]
    # each pass band is the mel triangle's half-maximum span: the response peaks inside it
    # (give or take the window's resolution) and passes the mel centre at near-peak gain
    res = 2 * SR / WIN
    assert ((peak >= low - res) & (peak <= low + band + res)).all()
    at_centre = mag[np.abs(hz[:, None] - centre[None]).argmin(axis=0), np.arange(n)]
    wide = band > 2 * res
    assert wide.sum() >= n // 3
    assert (at_centre[wide] > 0.7 * mag.max(axis=0)[wide]).all()


def test_gabor_filters_peak_at_the_mel_centres_with_the_mel_widths():
    n = 40
    centre, sigma = fe.gabor_init(n, SR, WIN)
    kernels = np.asarray(fe.gabor_kernels(jnp.asarray(centre), jnp.asarray(sigma), win=WIN))
    t = np.arange(WIN) - (WIN - 1) / 2
    want = (np.exp(-0.5 * (t[:, None] / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
            * np.exp(1j * centre * t[:, None]))
    np.testing.assert_allclose(kernels, want, rtol=1e-4, atol=1e-6)
    lower, mel_centre, upper = fe.mel_bands(n, SR)
    mag, hz = response(kernels)
    assert np.abs(hz[mag.argmax(axis=0)] - mel_centre).max() <= SR / 8192
    # where the window holds the filter's +-3 sigma, the half-maximum width is the mel
    # triangle's (upper - lower) / 2, within 5 %
    free = 6 * sigma <= WIN
    assert free.sum() > n // 2
    half = mag >= mag.max(axis=0) / 2
    width = half.sum(axis=0) * SR / 8192
    np.testing.assert_allclose(width[free], ((upper - lower) / 2)[free], rtol=0.05)


def numpy_pcen(e, alpha, delta, root, smooth, floor=1e-6):
    m = np.empty_like(e)
    m[:, 0] = e[:, 0]
    for t in range(1, e.shape[1]):
        m[:, t] = (1 - smooth) * m[:, t - 1] + smooth * e[:, t]
    return (e / (floor + m) ** alpha + delta) ** (1 / root) - delta ** (1 / root)


def test_pcen_equals_a_numpy_pcen_per_channel():
    rng = np.random.default_rng(0)
    e = rng.exponential(size=(2, 50, 3)).astype(np.float64) * 10
    params = dict(alpha=np.array([0.96, 0.5, 0.8]), delta=np.array([2.0, 1.0, 0.5]),
                  root=np.array([2.0, 3.0, 1.5]), smooth=np.array([0.04, 0.2, 0.5]))
    got = fe.pcen(jnp.asarray(e, jnp.float32), **{k: jnp.asarray(v, jnp.float32)
                                                   for k, v in params.items()})
    np.testing.assert_allclose(np.asarray(got), numpy_pcen(e, **params), rtol=1e-4, atol=1e-5)
    module = fe.PCEN(3)  # initialised with LEAF's values in every channel
    init = {k: np.full(3, v) for k, v in fe.PCEN_INIT.items()}
    np.testing.assert_allclose(np.asarray(module(jnp.asarray(e, jnp.float32))),
                               numpy_pcen(e, **init), rtol=1e-4, atol=1e-5)


def test_pcen_smooth_min_bounds_the_learnt_smoothing_coefficient():
    """A smoothing coefficient learnt below model.pcen_smooth_min is used at the bound; at the
    old bound (0) the smoother freezes on the first frame: every frame over the first's energy."""
    rng = np.random.default_rng(0)
    e = rng.exponential(size=(2, 40, 3)) * 10
    params = dict(alpha=np.full(3, 0.96), delta=np.full(3, 2.0), root=np.full(3, 2.0))
    smooth = np.array([-0.05, 0.01, 0.3])
    x = jnp.asarray(e, jnp.float32)
    jparams = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    got = fe.pcen(x, **jparams, smooth=jnp.asarray(smooth, jnp.float32), smooth_min=0.02)
    np.testing.assert_allclose(np.asarray(got), numpy_pcen(
        e, **params, smooth=np.array([0.02, 0.02, 0.3])), rtol=1e-4, atol=1e-5)
    frozen = fe.pcen(x, **jparams, smooth=jnp.asarray(smooth, jnp.float32))  # default bound 0
    first = np.repeat(e[:, :1], e.shape[1], axis=1)
    want = (e / (1e-6 + first) ** 0.96 + 2.0) ** 0.5 - 2.0 ** 0.5
    np.testing.assert_allclose(np.asarray(frozen)[..., 0], want[..., 0], rtol=1e-4, atol=1e-5)
    c = config_for("tiny", "logmel", "pcen")
    c.model.pcen_smooth_min = 0.02
    module = build_model(resolve_spec(c.model, 2), 0)
    assert module.frontend.compress.smooth_min == 0.02
    c.model.pcen_smooth_min = -0.1
    with pytest.raises(ConfigError, match="model.pcen_smooth_min"):
        validate(c)


def test_leaf_energies_equal_a_direct_numpy_filter_and_pool():
    n, win, hop = 4, 64, 16
    x = np.random.default_rng(1).standard_normal((2, 300)).astype(np.float32)
    leaf = fe.Leaf(n, sample_rate=SR, win=win, hop=hop, compression="pcen")
    got = np.asarray(leaf.energies(jnp.asarray(x)))
    kernels = np.asarray(fe.gabor_kernels(leaf.centre[...], leaf.sigma[...], win=win))
    lowpass = np.asarray(fe.gaussian_windows(leaf.pool_sigma[...], win=win))
    frames = fe.frame_count(300, win, hop)
    want = np.empty((2, frames, n))
    for b in range(2):
        padded = np.pad(x[b], (win // 2, win - 1 - win // 2))
        for c in range(n):
            y = np.array([padded[i:i + win] @ kernels[:, c] for i in range(300)])
            power = np.abs(y) ** 2
            want[b, :, c] = [power[f * hop:f * hop + win] @ lowpass[:, c] for f in range(frames)]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(np.asarray(leaf(jnp.asarray(x))),
                               numpy_pcen(want, **{k: np.full(n, v)
                                                   for k, v in fe.PCEN_INIT.items()}),
                               rtol=1e-3, atol=1e-5)


def direct_gabor_power(x, kernels):
    """gabor_power's function as direct convs of the real and imaginary kernels ("SAME")."""
    win = kernels.shape[0]
    pad = [(win // 2, win - 1 - win // 2)]

    def conv(k):
        return jax.lax.conv_general_dilated(x[..., None], k[:, None, :], (1,), pad,
                                            dimension_numbers=("NWC", "WIO", "NWC"))

    return (jnp.square(conv(kernels.real)) + jnp.square(conv(kernels.imag))).transpose(0, 2, 1)


def direct_window_pool(energy, windows, hop):
    """window_pool's function as a strided depthwise conv."""
    n = energy.shape[1]
    return jax.lax.conv_general_dilated(energy.transpose(0, 2, 1), windows[:, None, :], (hop,),
                                        "VALID", dimension_numbers=("NWC", "WIO", "NWC"),
                                        feature_group_count=n)


def assert_same_function(fast, direct, args, rtol):
    """Equal values, and equal gradients of a non-linear loss with respect to every
    argument."""
    np.testing.assert_allclose(np.asarray(fast(*args)), np.asarray(direct(*args)), rtol=rtol,
                               atol=1e-6)
    argnums = tuple(range(len(args)))
    loss = [jax.grad(lambda *a, f=f: jnp.sum(jnp.sin(f(*a))), argnums=argnums)
            for f in (fast, direct)]
    for got, want in zip(loss[0](*args), loss[1](*args), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol,
                                   atol=rtol * float(np.abs(want).max()))


def test_gabor_power_by_fft_is_the_direct_filter_values_and_gradients():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 203)), jnp.float32)
    centre, sigma = fe.gabor_init(5, SR, 48)

    def fast(x, centre, sigma):
        return fe.gabor_power(x, fe.gabor_kernels(centre, sigma, win=48))

    def direct(x, centre, sigma):
        return direct_gabor_power(x, fe.gabor_kernels(centre, sigma, win=48))

    assert fast(x, centre, sigma).shape == (2, 5, 203)
    assert_same_function(fast, direct, (x, jnp.asarray(centre), jnp.asarray(sigma)), 1e-4)


@pytest.mark.parametrize("samples,win,hop", [(300, 64, 16), (203, 40, 15), (90, 90, 7),
                                             (40, 64, 16)])
def test_window_pool_is_the_strided_depthwise_conv_values_and_gradients(samples, win, hop):
    """Windows a multiple of the hop or not, the last window ending at the last sample, and
    an input shorter than one window (no frames)."""
    rng = np.random.default_rng(4)
    energy = jnp.asarray(rng.exponential(size=(2, 3, samples)), jnp.float32)
    windows = jnp.asarray(rng.random((win, 3)), jnp.float32)
    got = fe.window_pool(energy, windows, hop)
    assert got.shape == (2, fe.frame_count(samples, win, hop), 3)
    if got.size:
        assert_same_function(lambda e, w: fe.window_pool(e, w, hop),
                             lambda e, w: direct_window_pool(e, w, hop), (energy, windows), 1e-5)


def test_leaf_energies_in_chunks_are_those_of_the_whole_batch_values_and_gradients():
    """A batch of 10: a chunk of LEAF_CHUNK and a padded one."""
    assert fe.LEAF_CHUNK == 8
    n, win, hop = 3, 48, 16
    x = jnp.asarray(np.random.default_rng(6).standard_normal((10, 200)), jnp.float32)
    centre, sigma = fe.gabor_init(n, SR, win)
    params = (jnp.asarray(centre), jnp.asarray(sigma), jnp.full((n,), 0.3))

    def chunked(centre, sigma, pool_sigma):
        return fe.pooled_gabor_energies(x, fe.gabor_kernels(centre, sigma, win=win),
                                        fe.gaussian_windows(pool_sigma, win=win), hop)

    def whole(centre, sigma, pool_sigma):
        power = fe.gabor_power(x, fe.gabor_kernels(centre, sigma, win=win))
        return fe.window_pool(power, fe.gaussian_windows(pool_sigma, win=win), hop)

    assert chunked(*params).shape == (10, fe.frame_count(200, win, hop), n)
    assert_same_function(chunked, whole, params, 1e-5)


def test_logmel_with_pcen_compresses_the_mel_energies():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4000)), jnp.float32)
    front = fe.MelFrontend(40, sample_rate=SR, win=WIN, hop=HOP)
    power = np.asarray(fe.mel_power(x, sample_rate=SR, win=WIN, hop=HOP, n_mels=40), np.float64)
    np.testing.assert_allclose(np.asarray(front(x)), numpy_pcen(
        power, **{k: np.full(40, v) for k, v in fe.PCEN_INIT.items()}), rtol=1e-3, atol=1e-5)


FRONTENDS = [("raw", None), ("sincnet", None), ("logmel", "log"), ("logmel", "pcen"),
             ("leaf", "pcen"), ("leaf", "log")]


def config_for(preset, frontend, compression):
    c = base_config()
    c.model.preset, c.model.frontend, c.model.frontend_compression = preset, frontend, compression
    return c


def test_every_preset_fits_the_default_crop_with_every_frontend():
    """Every preset whose raw network takes the default crop takes it with every front end
    (the frame front ends pool less after their stem); the networks of the default preset
    and of tiny build and run on it (shapes only)."""
    crop = int(round(base_config().data.segment_seconds * SR))
    for preset in PRESETS:
        raw = resolve_spec(config_for(preset, "raw", None).model, 2)
        if raw.min_input_length() > crop:  # samplecnn: 3.7 s whatever the front end
            assert preset == "samplecnn"
            continue
        for frontend, compression in FRONTENDS:
            spec = resolve_spec(config_for(preset, frontend, compression).model, 2)
            assert spec.min_input_length() <= crop, (preset, frontend)
            if preset not in ("tiny", "m6_mid") or frontend == "raw":
                continue
            out = jax.eval_shape(lambda spec=spec: build_model(spec, 0)(
                jnp.zeros((2, crop)), train=True, rngs=nnx.Rngs(dropout=0)))
            assert out.shape == (2, 2), (preset, frontend)
            # the stated minimum is the real one: one step at the end, none a sample shorter
            for length, steps in ((spec.min_input_length(), 1), (spec.min_input_length() - 1, 0)):
                out = jax.eval_shape(lambda spec=spec, n=length: build_model(spec, 0).frames(
                    jnp.zeros((1, n))))
                assert out.shape[1] == steps, (preset, frontend, length)


@pytest.mark.parametrize("frontend,compression", [("sincnet", None), ("leaf", "pcen"),
                                                  ("logmel", "pcen")])
def test_a_learnable_frontend_trains_one_step(frontend, compression):
    from speechmusic_jax.training.step import init_state, make_train_step

    spec = resolve_spec(config_for("tiny", frontend, compression).model, 2)
    tx = optax.adam(1e-2)
    model = build_model(spec, seed=0)
    part = model.stem if frontend == "sincnet" else model.frontend
    before = jax.tree.map(np.asarray, nnx.state(part, nnx.Param))
    graphdef, state = init_state(model, tx)
    step = jax.jit(make_train_step(graphdef, tx, num_classes=2))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4000)), jnp.float32)
    state, m = step(state, x, jnp.array([0, 1]), jnp.ones(2), jax.random.key(0))
    assert np.isfinite(float(m["loss_sum"]))
    name = "stem" if frontend == "sincnet" else "frontend"
    after = jax.tree.map(np.asarray, state.params[name])
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before),
                                                    jax.tree.leaves(after), strict=True)]
    assert all(moved)  # every front-end parameter is learnt


@pytest.mark.parametrize("frontend,compression,field", [
    ("raw", "pcen", "model.frontend_compression"),
    ("sincnet", "log", "model.frontend_compression"),
    ("logmel", "sqrt", "model.frontend_compression"),
    ("logmel", "none", "model.frontend_compression"),
    ("gammatone", None, "model.frontend")])
def test_frontend_fields_are_validated_by_name(frontend, compression, field):
    c = config_for("tiny", frontend, compression)
    with pytest.raises(ConfigError, match=field):
        validate(c)


def test_switching_an_experiment_with_pcen_to_raw_says_none_and_is_the_raw_model():
    """The default experiment sets log-mel with PCEN: --config.model.frontend=raw alone is an
    error that says what to add; with frontend_compression=none it is the raw network."""
    from speechmusic_jax.config import load_experiment

    c = load_experiment(os.path.join(REPO, "experiments", "default.py"))
    assert (c.model.frontend, c.model.frontend_compression) == ("logmel", "pcen")
    c.model.frontend = "raw"
    with pytest.raises(ConfigError, match="model.frontend_compression.*set it to 'none'"):
        validate(c)
    c.model.frontend_compression = "none"
    validate(c)
    raw = config_for("m6_mid", "raw", None)
    assert resolve_spec(c.model, 2) == resolve_spec(raw.model, 2)
    assert resolve_spec(c.model, 2).frontend_compression == "none"


def test_the_frontend_parameters_count_as_the_stem():
    """train.stem_lr_scale scales (0: freezes) the learnable front end with the stem."""
    from speechmusic_jax.training.optim import is_stem

    spec = resolve_spec(config_for("tiny", "leaf", "pcen").model, 2)
    params = jax.eval_shape(lambda: nnx.state(build_model(spec, 0), nnx.Param))
    paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    front = [p for p in paths if p[0].key == "frontend"]
    assert len(front) == 7  # centre, sigma, pool_sigma, and PCEN's four
    assert all(is_stem(p) for p in front)
    assert not any(is_stem(p) for p in paths if p[0].key in ("stages", "head"))
