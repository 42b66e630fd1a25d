import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from speechmusic_jax.config import base_config
from speechmusic_jax.models.conv1d import build_model, count_params, max_pool
from speechmusic_jax.models.presets import PRESETS, resolve_spec


def spec_of(preset, **overrides):
    c = base_config()
    c.model.preset = preset
    for k, v in overrides.items():
        c.model[k] = v
    return resolve_spec(c.model, 2)


@pytest.mark.parametrize("preset,expected", [("m5", 555_010), ("m5_small", 24_770)])
def test_parameter_counts_match_published_tables(preset, expected):
    # Dai et al. 2017 M5 with 2 classes and conv biases; torchaudio tutorial M5 with 2 classes.
    model = build_model(spec_of(preset), seed=0)
    assert count_params(nnx.state(model, nnx.Param)) == expected


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_on_its_minimum_input(preset):
    spec = spec_of(preset)
    model = build_model(spec, seed=0)
    logits = model(jnp.zeros((2, spec.min_input_length())))
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


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


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "none"])
@pytest.mark.parametrize("act", ["relu", "gelu", "tanh"])
def test_norm_and_activation_choices(norm, act):
    model = build_model(spec_of("tiny", norm=norm, activation=act), seed=0)
    out = model(jnp.ones((2, 4000)), train=False)
    assert out.shape == (2, 2)


def test_max_pool_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 10, 3)).astype(np.float32)
    got = np.asarray(max_pool(jnp.asarray(x), 4))
    want = x[:, :8].reshape(2, 2, 4, 3).max(axis=2)
    np.testing.assert_array_equal(got, want)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = build_model(spec_of("tiny"), seed=0, precision="bfloat16")
    params = nnx.state(model, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert model(jnp.ones((2, 4000))).dtype == jnp.float32
