import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from speechmusic_jax.config import base_config
from speechmusic_jax.models.conv1d import Conv1DClassifier, build_model
from speechmusic_jax.models.presets import resolve_spec
from speechmusic_jax.training import optim
from speechmusic_jax.training.step import (
    eval_chunk,
    init_state,
    largest_activation_bytes,
    make_eval_step,
    make_train_step,
    penalty,
)


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


def generic_batch(n=8, length=4000):
    """A fixed batch in which every row is a different signal (noise, or a tone of random
    frequency and phase over a little noise), so no two activations are mathematically equal.

    ``fixed_batch`` repeats one exact tone in every class-1 row: max-pooling over a sampled
    sinusoid meets exact ties, which float rounding breaks one way or the other, so the gradient
    jumps by percents with the summation order (1e-7 relative input noise moves its norm by up to
    2 %; AVX2 against AVX-512 moved it by 0.8 %). On this batch the step is smooth in its inputs:
    the same noise moves the float32 results by < 3e-7 relative."""
    rng = np.random.default_rng(1)
    y = np.arange(n, dtype=np.int32) % 2
    t = np.arange(length) / 16000
    freq = rng.uniform(300.0, 600.0, (n, 1))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1))
    noise = rng.standard_normal((n, length))
    x = np.where(y[:, None] == 1, 0.5 * np.sin(2 * np.pi * freq * t + phase) + 0.05 * noise,
                 0.3 * noise)
    return x, y


# The step under the golden tests: label smoothing, class weights, L1 and L2 penalties, and one
# padding row (zeros, weight 0, as the loader writes for an unreadable file), so that each of them
# moves the recorded values.
GOLDEN_STEP = dict(label_smoothing=0.1, l1=1e-3, l2=1e-2, padded=True)  # one padding row


def golden_inputs():
    x, y = generic_batch()
    w = np.where(y == 1, 1.5, 0.75)
    x[-1], w[-1] = 0.0, 0.0
    return x, y, w


def one_step(dtype, x, y, w, **step_kw):
    """One adamw step of the tiny model (seed 0) computed in ``dtype`` throughout: parameters,
    activations, loss. Returns the metrics and the sum of the batch-norm running statistics."""
    c = base_config()
    c.model.preset = "tiny"
    c.model.dropout = 0.0
    c.model.norm = "batch"
    model = Conv1DClassifier(resolve_spec(c.model, 2), rngs=nnx.Rngs(params=0), dtype=dtype)
    graphdef, variables = nnx.split(model)
    # The same initial values as build_model(seed=0) (initialised in float32), held in dtype.
    model = nnx.merge(graphdef, jax.tree.map(lambda v: v.astype(dtype), variables))
    tx = optim.make_optimizer("adamw", optax.constant_schedule(1e-2))
    graphdef, state = init_state(model, tx)
    assert all(v.dtype == dtype for v in jax.tree_util.tree_leaves(state.params))
    step = jax.jit(make_train_step(graphdef, tx, num_classes=2, **step_kw))
    state, m = step(state, jnp.asarray(x, dtype), jnp.asarray(y), jnp.asarray(w, dtype),
                    jax.random.key(0))
    assert m["grad_norm"].dtype == dtype
    out = {k: float(v) for k, v in m.items()}
    out["stats"] = sum(float(v.sum()) for v in jax.tree_util.tree_leaves(state.model_state))
    out["step"] = int(state.step)
    return out


def float64_step(x, y, w, **step_kw):
    with jax.enable_x64(True):  # only inside this block: the rest of the suite stays float32
        return one_step(jnp.float64, x, y, w, **step_kw)


def test_one_step_golden_value():
    # A regression guard on the maths of one train step: loss, gradient norm and batch-norm
    # statistics after the first step of the tiny model on a fixed batch, computed in float64.
    # In float64 the result does not depend on the CPU's instruction set or the backend (the
    # summation order moves it by ~1e-15 relative on this tie-free batch), so the tolerance is
    # tight, and any change to the maths fails it: ignoring the label smoothing moves the gradient
    # norm by 9 %, the class weights by 13 %, the padding mask by 5 %, the L1 + L2 penalty by
    # 0.1 %, the L1 term alone by 0.04 %. If an intended change moves them, recompute (print
    # float64_step(*golden_inputs(), **GOLDEN_STEP)) and explain why in the commit.
    m = float64_step(*golden_inputs(), **GOLDEN_STEP)
    assert m["count"] == 7.0 and m["step"] == 1
    assert m["loss_sum"] / m["count"] == pytest.approx(GOLDEN_LOSS, rel=1e-9)
    assert m["grad_norm"] == pytest.approx(GOLDEN_GRAD_NORM, rel=1e-9)
    assert m["stats"] == pytest.approx(GOLDEN_STATS, rel=1e-9)


GOLDEN_LOSS = 0.6590924941698261
GOLDEN_GRAD_NORM = 3.346533360097287
GOLDEN_STATS = 21.94800421879872

# float32 against the float64 step, relative. The longest sums in the step (stem-kernel gradient,
# batch-norm statistics of the stem) run over batch x frames = 8 x 246 = 1968 terms; their
# worst-case relative rounding error in float32 is n * 2**-24 = 1.2e-4, a few such sums are
# chained, and batch norm's E[x^2] - E[x]^2 can lose a digit more. 1e-3 covers that worst case,
# whatever order an instruction set sums in. Measured: < 3e-7, also with 1e-7 relative noise on
# the input (on fixed_batch, the same noise moves the gradient norm by up to 2 %).
FLOAT32_RTOL = 1e-3


def test_float32_step_matches_the_float64_step():
    x, y, w = golden_inputs()
    want = float64_step(x, y, w, **GOLDEN_STEP)
    with jax.default_matmul_precision("float32"):  # no TF32 / bf16 passes on accelerators
        got = one_step(jnp.float32, x, y, w, **GOLDEN_STEP)
    assert got["count"] == want["count"] and got["correct"] == want["correct"]
    for k in ("loss_sum", "grad_norm", "stats"):
        assert got[k] == pytest.approx(want[k], rel=FLOAT32_RTOL), k


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


def test_padding_rows_do_not_enter_batch_norm_statistics():
    # With batch norm: zero rows of weight 0 (unreadable files) leave the step exactly as the
    # batch without them: the loss, the gradient, the update and the running statistics.
    # (generic_batch: the batch size changes the summation order, which must not flip ties.)
    x, y = (jnp.asarray(a) for a in generic_batch())
    x, w = x.astype(jnp.float32), jnp.ones(len(y), jnp.float32)
    pad = 3
    # sgd: the update is the gradient itself. (Adam's first step is ~lr * sign(gradient), which
    # turns the float noise of a conv bias in front of batch norm, 0 in exact maths, into +-lr.)
    # (Both through the padded step: it is the padding rows' effect that is measured here.)
    _, s1, step1 = tiny_setup(optimizer="sgd", lr=0.1, padded=True)
    _, s2, step2 = tiny_setup(optimizer="sgd", lr=0.1, padded=True)
    s1, m1 = step1(s1, x, y, w, jax.random.key(0))
    s2, m2 = step2(s2, jnp.concatenate([x, jnp.zeros((pad, x.shape[1]))]),
                   jnp.concatenate([y, jnp.zeros(pad, y.dtype)]),
                   jnp.concatenate([w, jnp.zeros(pad)]), jax.random.key(0))
    assert float(m1["count"]) == float(m2["count"]) == 8.0
    assert float(m1["loss_sum"]) == pytest.approx(float(m2["loss_sum"]), rel=1e-5)
    # The gradient norm includes the conv biases in front of batch norm, whose gradient is 0 in
    # exact maths and float noise here (different for 8 and 11 rows): 1e-4 covers that noise,
    # while a zero row in the statistics moves the norm by percents.
    assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_padding_rows_shift_the_statistics_of_the_plain_step():
    # Why the loop takes the padded step for a batch with padding rows: the plain one (for
    # batches whose rows are all real) computes batch norm over every row.
    x, y = (jnp.asarray(a) for a in generic_batch())
    zeros = jnp.zeros((3, x.shape[1]))
    padded = (jnp.concatenate([x.astype(jnp.float32), zeros]),
              jnp.concatenate([y, jnp.zeros(3, y.dtype)]),
              jnp.concatenate([jnp.ones(len(y)), jnp.zeros(3)]))
    _, s1, plain = tiny_setup(optimizer="sgd", lr=0.1)
    _, s2, masked = tiny_setup(optimizer="sgd", lr=0.1, padded=True)
    s1, _ = plain(s1, *padded, jax.random.key(0))
    s2, _ = masked(s2, *padded, jax.random.key(0))
    assert not np.allclose(jax.tree_util.tree_leaves(s1.model_state)[0],
                           jax.tree_util.tree_leaves(s2.model_state)[0], rtol=1e-3)


def test_an_all_padding_batch_changes_nothing_but_the_step_count():
    _, state, step = tiny_setup(padded=True)
    x, y, w = fixed_batch()
    new, m = step(state, jnp.zeros_like(x), y, jnp.zeros_like(w), jax.random.key(0))
    assert float(m["count"]) == 0.0 and float(m["loss_sum"]) == 0.0
    assert float(m["grad_norm"]) == 0.0
    for a, b in zip(jax.tree_util.tree_leaves((state.params, state.model_state)),
                    jax.tree_util.tree_leaves((new.params, new.model_state)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(new.step) == 1


def test_reported_loss_is_the_unsmoothed_cross_entropy():
    # loss_sum means the same as the validation loss: plain cross-entropy summed over the real
    # examples, whatever the label smoothing and class weights of the optimised loss.
    graphdef, state, step = tiny_setup(label_smoothing=0.2)
    x, y, w = fixed_batch()
    w = w * jnp.where(y == 1, 3.0, 0.5)
    model = nnx.merge(graphdef, state.params, state.model_state, copy=True)
    logits = np.asarray(model(x, train=True), np.float64)  # the step's forward pass
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    plain = -log_p[np.arange(len(y)), np.asarray(y)].sum()
    # Smoothed targets: 1 - 0.2 + 0.2 / 2 on the label, 0.2 / 2 on the other class.
    smoothed = -(0.8 * log_p[np.arange(len(y)), np.asarray(y)] + 0.1 * log_p.sum(-1)).sum()
    _, m = step(state, x, y, w, jax.random.key(0))
    assert abs(plain - smoothed) > 0.05 * plain
    assert float(m["loss_sum"]) == pytest.approx(plain, rel=1e-5)
    assert float(m["loss_sum"]) != pytest.approx(smoothed, rel=1e-2)
    assert float(m["count"]) == 8.0


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


def test_eval_step_is_deterministic_and_training_moves_running_stats():
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


def test_eval_step_uses_running_stats_not_batch_stats():
    # An example's logits must not depend on the other examples of its batch: with batch
    # statistics, alone and among others it would be normalised differently.
    graphdef, state, step = tiny_setup()
    x, y, w = fixed_batch()
    for _ in range(3):  # running statistics away from their initial 0 / 1
        state, _ = step(state, x, y, w, jax.random.key(0))
    evaluate = jax.jit(make_eval_step(graphdef))
    others = jnp.asarray(generic_batch()[0], jnp.float32)
    for i in (0, 1):
        alone = evaluate(state.params, state.model_state, x[i:i + 1])
        among = evaluate(state.params, state.model_state, others.at[3].set(x[i]))
        np.testing.assert_allclose(alone[0], among[3], rtol=1e-5, atol=1e-5)


def test_eval_chunk_is_the_largest_divisor_that_fits_the_budget():
    assert eval_chunk(32, 100, 3200) == 32  # the whole batch fits: one pass
    assert eval_chunk(32, 100, 3199) == 16
    assert eval_chunk(32, 100, 1000) == 8  # 10 would fit, 8 is the largest divisor of 32 under it
    assert eval_chunk(30, 100, 1000) == 10
    assert eval_chunk(31, 100, 1000) == 1  # a prime batch: one example at a time
    assert eval_chunk(8, 10**9, 1) == 1  # one example alone over the budget: still one at a time


def test_largest_activation_bytes_looks_inside_nested_computations():
    def fn(v):
        return jax.jit(lambda u: jnp.outer(u, u))(v).sum() + v.sum()  # (100, 100) inside a jit

    assert largest_activation_bytes(fn, jax.ShapeDtypeStruct((100,), jnp.float32)) == 100 * 100 * 4
    assert largest_activation_bytes(lambda v: v * 2, jax.ShapeDtypeStruct((7,), jnp.int8)) == 7


def test_chunked_eval_step_gives_each_example_its_logits_with_less_memory():
    # The paper M5, whose stem output (128 channels at a quarter of the input's rate) dwarfs
    # the input, as the chunks are there for.
    c = base_config()
    c.model.preset = "m5"
    tx = optim.make_optimizer("adam", optax.constant_schedule(1e-3))
    graphdef, state = init_state(build_model(resolve_spec(c.model, 2), seed=0), tx)
    x = jnp.asarray(generic_batch(8, 16000)[0], jnp.float32)  # every row different: order shows

    def forward(xs):
        return nnx.merge(graphdef, state.params, state.model_state, copy=True)(xs, train=False)

    example = largest_activation_bytes(forward, jax.ShapeDtypeStruct((1, x.shape[1]), x.dtype))
    steps = {"whole": make_eval_step(graphdef),
             "chunked": make_eval_step(graphdef, chunk_bytes=2 * example),  # 4 chunks of 2 rows
             "fits": make_eval_step(graphdef, chunk_bytes=8 * example)}  # the 8 rows fit: 1 pass
    args = (state.params, state.model_state, x)
    compiled = {k: jax.jit(fn).lower(*args).compile() for k, fn in steps.items()}
    expected = compiled["whole"](*args)
    np.testing.assert_allclose(compiled["chunked"](*args), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(compiled["fits"](*args), expected)
    assert "while" in compiled["chunked"].as_text() and "while" not in compiled["whole"].as_text()
    temp = {k: comp.memory_analysis().temp_size_in_bytes for k, comp in compiled.items()}
    assert temp["chunked"] < temp["whole"] / 2, temp


def test_eval_step_with_a_chunk_budget_exports_for_any_batch_size():
    # export.py exports the eval step with a symbolic batch size: no chunks can be chosen for
    # it, so it goes in one pass (the chunk choice once failed on the symbolic comparison).
    from jax import export as jax_export

    graphdef, state, _ = tiny_setup()
    (batch,) = jax_export.symbolic_shape("batch")
    fn = jax.jit(make_eval_step(graphdef, chunk_bytes=2**24))  # the default budget
    spec = jax.ShapeDtypeStruct((batch, 4000), jnp.float32)
    exported = jax_export.export(fn)(state.params, state.model_state, spec)
    x = jnp.asarray(generic_batch(3)[0], jnp.float32)
    np.testing.assert_allclose(exported.call(state.params, state.model_state, x),
                               jax.jit(make_eval_step(graphdef))(state.params,
                                                                 state.model_state, x),
                               rtol=1e-5, atol=1e-6)


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


def test_jitted_gradient_matches_finite_differences_leaf_by_leaf_on_a_multi_stage_model():
    # Regression test for a wrong gradient: with max-pooling as a plain reshape + max, the
    # jitted gradient of m5_small (four pooled, batch-normalised layers) differed from the eager
    # one by 75 % (relative norm) on XLA CPU, jax 0.10.2, and its slope along itself was 9.48
    # against 11.21 by finite differences. models.conv1d.max_over routes the gradient to the
    # argmax instead. Each parameter's gradient is checked here against central differences
    # along it (and the whole gradient along itself): the loss is jitted too, so no eager pass
    # (13 s of op-by-op compilation) is needed.
    x, y = generic_batch(8, 16000)
    x = jnp.asarray(x, jnp.float32)
    c = base_config()
    c.model.preset = "m5_small"
    c.model.dropout = 0.0
    graphdef, params, rest = nnx.split(build_model(resolve_spec(c.model, 2), 0), nnx.Param, ...)

    @jax.jit
    def loss(p):
        logits = nnx.merge(graphdef, p, rest, copy=True)(x, train=True)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(8), y])

    grads = jax.tree.map(np.asarray, jax.jit(jax.grad(loss))(params))
    eps = 1e-2

    @jax.jit
    def slope(direction):  # central difference of the loss along a unit direction
        up, down = (loss(jax.tree.map(lambda p, d, s=s: p + s * eps * d, params, direction))
                    for s in (1.0, -1.0))
        return (up - down) / (2 * eps)

    def along(keep):  # the gradient restricted to the leaves `keep` says yes to, unit length
        kept = jax.tree_util.tree_map_with_path(
            lambda path, g: g if keep(jax.tree_util.keystr(path)) else np.zeros_like(g), grads)
        norm = float(np.sqrt(sum(np.sum(g * g) for g in jax.tree.leaves(kept))))
        return jax.tree.map(lambda g: g / max(norm, 1e-30), kept), norm

    whole, norm = along(lambda _: True)
    assert norm == pytest.approx(float(slope(whole)), rel=0.05)
    checked = 0
    for path, _ in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        if "bias" in name and "norm" not in name and "head" not in name:
            continue  # a conv bias before batch norm: its gradient is zero up to rounding
        direction, norm = along(lambda k, name=name: k == name)
        if norm < 1e-2:
            continue  # too small for a float32 difference of the loss to resolve
        assert norm == pytest.approx(float(slope(direction)), rel=0.05), name
        checked += 1
    assert checked >= 8  # every stage's kernel and most batch-norm scales and offsets


def test_fused_pooling_switch_gives_the_same_step(monkeypatch):
    # train.fused_pooling picks models/fused_pool.py's op or the plain ops for the training
    # pass; both are the same function (to float rounding), and False really runs the plain ops.
    from speechmusic_jax.models import fused_pool

    traced = []
    op = fused_pool.bn_relu_pool
    monkeypatch.setattr(fused_pool, "bn_relu_pool", lambda *a: traced.append(1) or op(*a))
    x, y, w = fixed_batch()
    results = {}
    for fused in (True, False):
        traced.clear()
        graphdef, state, step = tiny_setup(fused_pooling=fused)
        results[fused] = step(state, x, y, w, jax.random.key(0))
        assert len(traced) == (2 if fused else 0)  # the tiny model's stem and stage
    (s_fused, m_fused), (s_plain, m_plain) = results[True], results[False]
    for k in ("loss_sum", "grad_norm"):
        assert float(m_fused[k]) == pytest.approx(float(m_plain[k]), rel=1e-5), k
    for a, b in zip(jax.tree.leaves(s_fused.model_state), jax.tree.leaves(s_plain.model_state),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", pytest.param("layer", marks=pytest.mark.slow)])
def test_conv_biases_that_batch_norm_cancels_never_move(tiny_config, norm):
    # A conv bias in front of batch norm has a gradient that is 0 but for float rounding, which
    # Adam's normalised steps would turn into full-size moves; the builder's optimizer gives
    # those biases no updates, whatever else decays or is penalised (here: weight decay and an
    # L2 penalty on every parameter). The optimizer state keeps the plain chain's layout.
    # Before layer norm, whose mean is over channels, the biases matter and train.
    from speechmusic_jax import parallel
    from speechmusic_jax.models.conv1d import cancelled_by_norm
    from speechmusic_jax.training import builder

    tiny_config.model.norm = norm
    tiny_config.model.dropout = 0.0
    tiny_config.optimizer.weight_decay_mask = "all"
    tiny_config.train.l2 = 1e-3
    built = builder.build(tiny_config, steps_per_epoch=4)
    plain = optim.make_optimizer("adamw", optax.constant_schedule(1e-2), weight_decay=0.1)
    assert jax.tree.structure(built.state.opt_state) == jax.tree.structure(
        plain.init(built.state.params))
    cancelled = cancelled_by_norm(built.spec) or (lambda path: False)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        built.state.params) if cancelled(p)]
    assert len(paths) == (2 if norm == "batch" else 0), paths  # the stem's and the block's
    x, y = (jnp.asarray(a) for a in generic_batch(8, built.segment))
    batch = (x.astype(jnp.float32), y, jnp.ones(8, jnp.float32))

    def loss(params):
        model = nnx.merge(built.graphdef, params, built.state.model_state, copy=True)
        logits = model(batch[0], train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(built.state.params)
    mesh = parallel.make_mesh()
    step = builder.compile_train_step(built, built.state, mesh).fn
    state = parallel.put_replicated(built.state, mesh)
    start = jax.tree.map(np.asarray, built.state.params)
    for _ in range(4):
        state, _ = step(state, *batch, jax.random.key(0))
    moved = {jax.tree_util.keystr(p): not np.array_equal(a, b) for (p, a), b in zip(
        jax.tree_util.tree_leaves_with_path(start), jax.tree.leaves(state.params), strict=True)}
    norm_of_all = float(optax.tree.norm(grads))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        if cancelled(path):
            assert float(jnp.abs(g).max()) < 1e-5 * norm_of_all, name  # rounding only
            assert not moved[name], name
        else:
            assert moved[name], name
