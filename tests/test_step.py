import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from speechmusic_jax.config import base_config
from speechmusic_jax.models.conv1d import build_model
from speechmusic_jax.models.presets import resolve_spec
from speechmusic_jax.training import optim
from speechmusic_jax.training.step import init_state, make_eval_step, make_train_step, penalty


def tiny_setup(optimizer="adamw", lr=1e-2, weight_decay=0.0, dropout=0.0, norm="batch",
               **step_kw):
    c = base_config()
    c.model.preset = "tiny"
    c.model.dropout = dropout
    c.model.norm = norm
    model = build_model(resolve_spec(c.model, 2), seed=0)
    tx = optim.make_optimizer(optimizer, optax.constant_schedule(lr), weight_decay=weight_decay)
    graphdef, state = init_state(model, tx)
    step = jax.jit(make_train_step(graphdef, tx, num_classes=2, **step_kw))
    return graphdef, state, step


def fixed_batch(n=8, length=4000):
    rng = np.random.default_rng(0)
    y = np.arange(n, dtype=np.int32) % 2
    t = np.arange(length) / 16000
    # Class 1: a steady tone; class 0: noise. Learnable in a few steps.
    x = np.where(y[:, None] == 1, 0.5 * np.sin(2 * np.pi * 440 * t)[None],
                 0.3 * rng.standard_normal((n, length)))
    return jnp.asarray(x, jnp.float32), jnp.asarray(y), jnp.ones(n, jnp.float32)


def test_one_step_golden_value():
    # A regression guard: the loss and gradient norm of the first step of a fixed tiny model on a
    # fixed batch. If an intended change moves them, recompute and explain why in the commit.
    _, state, step = tiny_setup()
    x, y, w = fixed_batch()
    state, m = step(state, x, y, w, jax.random.key(0))
    loss = float(m["loss_sum"] / m["count"])
    assert loss == pytest.approx(GOLDEN_LOSS, rel=1e-4)
    assert float(m["grad_norm"]) == pytest.approx(GOLDEN_GRAD_NORM, rel=1e-3)
    assert int(state.step) == 1


GOLDEN_LOSS = 0.4346277117729187
GOLDEN_GRAD_NORM = 3.1113221645355225


def test_loss_falls_over_steps():
    _, state, step = tiny_setup()
    x, y, w = fixed_batch()
    key = jax.random.key(0)
    losses = []
    for _ in range(30):
        state, m = step(state, x, y, w, key)
        losses.append(float(m["loss_sum"] / m["count"]))
    assert losses[-1] < 0.5 * losses[0]


def test_padding_weight_zero_is_ignored():
    # Without batch norm, rows of weight 0 cannot influence the loss, the gradient or the update.
    x, y, w = fixed_batch()
    w_pad = w.at[-2:].set(0.0)
    _, s1, step1 = tiny_setup(norm="none")
    _, s2, step2 = tiny_setup(norm="none")
    s1, m1 = step1(s1, x, y, w_pad, jax.random.key(0))
    s2, m2 = step2(s2, x.at[-2:].set(100.0), y.at[-2:].set(1 - y[-2:]), w_pad, jax.random.key(0))
    assert float(m1["count"]) == float(m2["count"]) == 6.0
    assert float(m1["loss_sum"]) == pytest.approx(float(m2["loss_sum"]), rel=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_weight_decay_mask_leaves_biases_and_norms_alone():
    _, state, _ = tiny_setup(optimizer="sgd", lr=1.0, weight_decay=0.1)
    tx = optim.make_optimizer("sgd", optax.constant_schedule(1.0), weight_decay=0.1)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    updates, _ = tx.update(zeros, tx.init(state.params), state.params)
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        name = optim.param_name(path)
        w = _leaf(state.params, path)
        if name == "kernel":
            np.testing.assert_allclose(u, -0.1 * w, rtol=1e-6)
        else:
            assert not np.any(np.asarray(u)), f"{name} was decayed"


def _leaf(tree, path):
    for p, v in jax.tree_util.tree_leaves_with_path(tree):
        if p == path:
            return v
    raise KeyError(path)


def test_l1_l2_penalties_cover_kernels_only():
    _, state, _ = tiny_setup()
    kernels = [v for p, v in jax.tree_util.tree_leaves_with_path(state.params)
               if optim.param_name(p) == "kernel"]
    l1 = sum(float(jnp.abs(k).sum()) for k in kernels)
    l2 = sum(float(jnp.square(k).sum()) for k in kernels)
    assert float(penalty(state.params, 0.0, 0.0)) == 0.0
    assert float(penalty(state.params, 0.5, 0.0)) == pytest.approx(0.5 * l1, rel=1e-5)
    assert float(penalty(state.params, 0.0, 0.5)) == pytest.approx(0.5 * l2, rel=1e-5)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_penalties_shrink_weights(kind):
    x, y, w = fixed_batch()

    def kernel_norm(**kw):
        _, state, step = tiny_setup(optimizer="sgd", lr=0.05, **kw)
        for _ in range(20):
            state, _ = step(state, x, y, w, jax.random.key(0))
        return sum(float(jnp.abs(v).sum()) for p, v in
                   jax.tree_util.tree_leaves_with_path(state.params)
                   if optim.param_name(p) == "kernel")

    assert kernel_norm(**{kind: 0.05}) < 0.98 * kernel_norm()


def test_eval_step_is_deterministic_and_uses_running_stats():
    graphdef, state, step = tiny_setup(dropout=0.5)
    x, y, w = fixed_batch()
    evaluate = jax.jit(make_eval_step(graphdef))
    a = evaluate(state.params, state.model_state, x)
    b = evaluate(state.params, state.model_state, x)
    np.testing.assert_array_equal(a, b)
    new_state, _ = step(state, x, y, w, jax.random.key(0))
    stats_before = jax.tree_util.tree_leaves(state.model_state)
    stats_after = jax.tree_util.tree_leaves(new_state.model_state)
    assert any(not np.allclose(u, v) for u, v in zip(stats_before, stats_after, strict=True))


def test_class_weights_change_the_update_but_not_the_reported_metrics():
    x, y, w = fixed_batch()
    weighted = w * jnp.where(y == 1, 3.0, 1.0)
    _, s1, step1 = tiny_setup()
    _, s2, step2 = tiny_setup()
    s1, m1 = step1(s1, x, y, w, jax.random.key(0))
    s2, m2 = step2(s2, x, y, weighted, jax.random.key(0))
    assert float(m1["count"]) == float(m2["count"]) == 8.0
    assert float(m1["loss_sum"]) == pytest.approx(float(m2["loss_sum"]), rel=1e-6)
    assert float(m1["correct"]) == float(m2["correct"])
    assert float(m1["grad_norm"]) != pytest.approx(float(m2["grad_norm"]), rel=1e-3)


@pytest.mark.parametrize("mask,decayed", [
    ("kernels", {"kernel"}),
    ("kernels_biases", {"kernel", "bias"}),
    ("all", {"kernel", "bias", "scale", "norm_bias"}),
])
def test_weight_decay_mask_choices(mask, decayed):
    _, state, _ = tiny_setup()
    tx = optim.make_optimizer("sgd", optax.constant_schedule(1.0), weight_decay=0.1,
                              weight_decay_mask=mask)
    ones = jax.tree.map(jnp.ones_like, state.params)  # biases start at 0: decay would not show
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    updates, _ = tx.update(zeros, tx.init(ones), ones)
    for path, u in jax.tree_util.tree_leaves_with_path(updates):
        name = optim.param_name(path)
        kind = "norm_bias" if name == "bias" and optim.is_norm_param(path) else name
        assert bool(np.any(np.asarray(u))) == (kind in decayed), (mask, path)


def test_penalty_mask_choices():
    _, state, _ = tiny_setup()
    kernels = float(penalty(state.params, 0.0, 1.0, "kernels"))
    with_biases = float(penalty(state.params, 0.0, 1.0, "kernels_biases"))
    everything = float(penalty(state.params, 0.0, 1.0, "all"))
    ones = jax.tree.map(jnp.ones_like, state.params)
    n_kernel = float(penalty(ones, 0.0, 1.0, "kernels"))
    assert n_kernel < float(penalty(ones, 0.0, 1.0, "kernels_biases")) < float(
        penalty(ones, 0.0, 1.0, "all"))
    assert kernels <= with_biases < everything  # batch-norm scales start at one
