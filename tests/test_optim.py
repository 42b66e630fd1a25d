import jax
import numpy as np
import optax
import pytest
from test_step import fixed_batch, tiny_setup

from speechmusic_jax.training import optim

# A learning rate at which each optimizer makes progress on the fixed tiny batch in 15 steps.
LR = {"sgd": 0.1, "momentum": 0.03, "nesterov": 0.03, "adadelta": 1.0, "adagrad": 0.05,
      "lars": 1.0, "lion": 3e-3, "adafactor": 0.03}


def losses_of(optimizer, steps=15, **kw):
    _, state, step = tiny_setup(optimizer=optimizer, lr=LR.get(optimizer, 1e-2), **kw)
    x, y, w = fixed_batch()
    out = []
    for _ in range(steps):
        state, m = step(state, x, y, w, jax.random.key(0))
        out.append(float(m["loss_sum"] / m["count"]))
    return out, state


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_lowers_the_loss(name):
    # Schedule-free optimizers refuse batch norm (config.validate), so they train with layer norm.
    losses, _ = losses_of(name, **({"norm": "layer"} if name in optim.SCHEDULE_FREE else {}))
    assert all(np.isfinite(losses))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_every_schedule_is_sane(name):
    peak, total, warm = 0.1, 100, 10
    sched = optim.make_schedule(name, peak, total, warm)
    values = np.array([float(sched(i)) for i in range(total)])
    assert np.all(values >= 0) and values.max() <= peak * (1 + 1e-6)
    assert values.max() >= 0.9 * peak
    if name not in ("constant", "plateau"):
        assert values[-1] < 0.5 * peak, name  # every decaying schedule decays
    if name != "onecycle":
        assert values[0] < values[warm], "warm-up rises"


def test_unknown_names_list_known_ones():
    with pytest.raises(ValueError, match="adamw"):
        optim.make_optimizer("adamm", optax.constant_schedule(1.0))
    with pytest.raises(ValueError, match="cosine"):
        optim.make_schedule("wavy", 1.0, 10, 0)


def test_plateau_cuts_the_rate_when_the_loss_stalls():
    tx = optim.make_optimizer("sgd", optax.constant_schedule(1.0), plateau_epochs=2,
                              steps_per_epoch=2)
    params = {"kernel": np.ones(3, np.float32)}
    state = tx.init(params)
    grads = {"kernel": np.zeros(3, np.float32)}
    for _ in range(12):  # a flat loss for 6 "epochs"
        _, state = tx.update(grads, state, params, value=1.0)
    assert optim.lr_scale(state) < 1.0
    assert optim.lr_scale(tx.init(params)) == 1.0


def test_schedule_free_evaluates_averaged_weights():
    losses, state = losses_of("schedule_free_adamw", norm="layer")
    evaluated = optim.eval_params("schedule_free_adamw", state.opt_state, state.params)
    diffs = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(evaluated),
                                                   jax.tree_util.tree_leaves(state.params),
                                                   strict=True)]
    assert any(diffs)
    assert optim.eval_params("adamw", state.opt_state, state.params) is state.params


def test_gradient_clipping_bounds_the_first_update():
    _, state, _ = tiny_setup()
    tx = optim.make_optimizer("sgd", optax.constant_schedule(1.0), grad_clip_norm=0.5)
    big = jax.tree.map(lambda p: np.full(p.shape, 100.0, np.float32), state.params)
    updates, _ = tx.update(big, tx.init(state.params), state.params)
    assert float(optax.tree.norm(updates)) == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_every_schedule_lowers_the_loss(name):
    import optax

    from speechmusic_jax.config import base_config
    from speechmusic_jax.models.conv1d import build_model
    from speechmusic_jax.models.presets import resolve_spec
    from speechmusic_jax.training.step import init_state, make_train_step

    c = base_config()
    c.model.preset = "tiny"
    steps = 15
    sched = optim.make_schedule(name, 1e-2, steps, 3)
    tx = optim.make_optimizer("adam", sched, plateau_epochs=2 if name == "plateau" else 0,
                              steps_per_epoch=3)
    graphdef, state = init_state(build_model(resolve_spec(c.model, 2), 0), tx)
    step = jax.jit(make_train_step(graphdef, tx, num_classes=2))
    x, y, w = fixed_batch()
    losses = []
    for _ in range(steps):
        state, m = step(state, x, y, w, jax.random.key(0))
        losses.append(float(m["loss_sum"] / m["count"]))
    assert min(losses[-3:]) < 0.8 * losses[0], losses
    assert isinstance(tx, optax.GradientTransformation)


def test_adam_couples_weight_decay_and_adamw_decouples_it():
    params = {"kernel": np.full(4, 2.0, np.float32)}
    zeros = {"kernel": np.zeros(4, np.float32)}
    lr, wd = 0.1, 0.01

    def first_update(name):
        tx = optim.make_optimizer(name, optax.constant_schedule(lr), weight_decay=wd)
        updates, _ = tx.update(zeros, tx.init(params), params)
        return np.asarray(updates["kernel"])

    # AdamW: the decay bypasses Adam's scaling: -lr * wd * w.
    np.testing.assert_allclose(first_update("adamw"), -lr * wd * 2.0, rtol=1e-5)
    # Adam: wd * w is a gradient, normalised by Adam's first step to magnitude ~1: about -lr.
    np.testing.assert_allclose(first_update("adam"), -lr, rtol=1e-3)
    assert "decoupled" in optim.weight_decay_semantics("adamw")
    assert "coupled" in optim.weight_decay_semantics("adam")
    assert "decoupled" not in optim.weight_decay_semantics("adam")


def _trust_ratio_case():
    """A small pytree (a decayed kernel, an undecayed bias), its gradients, and float64 copies."""
    rng = np.random.default_rng(3)
    params = {"conv": {"kernel": rng.standard_normal((3, 4)).astype(np.float32),
                       "bias": rng.standard_normal(4).astype(np.float32)}}
    grads = {"conv": {"kernel": rng.standard_normal((3, 4)).astype(np.float32),
                      "bias": rng.standard_normal(4).astype(np.float32)}}
    as64 = lambda tree: {k: v.astype(np.float64) for k, v in tree["conv"].items()}  # noqa: E731
    return params, grads, as64(params), as64(grads)


def _assert_close(got, want, leaf):
    # float32 vs a float64 reference: 1e-5 relative, measured against the leaf's largest entry
    # (an entry where wd * w nearly cancels the direction has fewer correct digits).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=leaf)


def _first_update(name, params, grads, lr, wd):
    tx = optim.make_optimizer(name, optax.constant_schedule(lr), weight_decay=wd)
    updates, _ = tx.update(grads, tx.init(params), params)
    return {k: np.asarray(v, np.float64) for k, v in updates["conv"].items()}


def test_lamb_decays_inside_the_trust_ratio():
    params, grads, w, g = _trust_ratio_case()
    lr, wd, eps = 0.05, 0.3, 1e-6
    got = _first_update("lamb", params, grads, lr, wd)
    for leaf in ("kernel", "bias"):
        # Adam's bias-corrected first step: m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps).
        u = g[leaf] / (np.abs(g[leaf]) + eps)
        if leaf == "kernel":  # the default mask decays kernels only
            u = u + wd * w[leaf]
        ratio = np.linalg.norm(w[leaf]) / np.linalg.norm(u)
        _assert_close(got[leaf], -lr * ratio * u, leaf)
    semantics = optim.weight_decay_semantics("lamb")
    assert "inside the trust ratio" in semantics and "decoupled" not in semantics


def test_lars_decays_inside_the_trust_ratio():
    params, grads, w, g = _trust_ratio_case()
    lr, wd, trust = 0.05, 0.3, 1e-3  # optax.lars's trust coefficient
    got = _first_update("lars", params, grads, lr, wd)
    for leaf in ("kernel", "bias"):
        u = g[leaf] + (wd * w[leaf] if leaf == "kernel" else 0.0)  # decay added to the gradient
        ratio = trust * np.linalg.norm(w[leaf]) / np.linalg.norm(u)
        # First step: the momentum trace starts at zero, so it is the scaled update itself.
        _assert_close(got[leaf], -lr * ratio * u, leaf)
    semantics = optim.weight_decay_semantics("lars")
    assert "inside the trust ratio" in semantics and "decoupled" not in semantics


def test_moments_reach_the_optimizer():
    # optimizer.b1/b2/momentum set the optimizer's own hyperparameters; unset, its defaults.
    params = {"w": np.ones(3, np.float32)}
    grads = [{"w": np.asarray(g, np.float32)} for g in ([1.0, -2.0, 0.5], [0.3, 0.1, -1.0])]

    def updates(tx):
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(np.asarray(u["w"]))
        return out

    one = optax.constant_schedule(1.0)
    for name, moments, reference in (
            ("adam", {"b1": 0.5, "b2": 0.9}, optax.adam(1.0, b1=0.5, b2=0.9)),
            ("lion", {}, optax.lion(1.0, b1=0.9, b2=0.99)),
            ("momentum", {"momentum": 0.5}, optax.sgd(1.0, momentum=0.5))):
        got = updates(optim.make_optimizer(name, one, moments=moments))
        for a, b in zip(got, updates(reference), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert optim.moment_defaults("lion") == {"b1": 0.9, "b2": 0.99}
    assert optim.moment_defaults("sgd") == {}
    with pytest.raises(ValueError, match="optimizer.b1: sgd has no such hyperparameter"):
        optim.make_optimizer("sgd", one, moments={"b1": 0.9})


def _ema_by_hand(snapshots, decay):
    """The bias-corrected exponential average of the weights after each step."""
    n = len(snapshots)
    w = np.array([(1 - decay) * decay ** (n - 1 - i) for i in range(n)]) / (1 - decay ** n)
    return np.tensordot(w, np.stack(snapshots), axes=1)


@pytest.mark.parametrize("injected", [False, True])
def test_ema_evaluates_the_moving_average_and_trains_as_before(injected):
    from speechmusic_jax.config import base_config

    cfg = base_config()
    cfg.optimizer.name, cfg.optimizer.schedule = "momentum", "constant"
    cfg.optimizer.learning_rate, cfg.optimizer.warmup_epochs = 0.1, 0.0
    cfg.train.epochs = 5

    def chain(ema_epochs):
        cfg.train.ema_epochs = ema_epochs
        if injected:  # a sweep group's chain: hyperparameters in the state
            return optim.injected_from_config(cfg, steps_per_epoch=1)
        return optim.from_config(cfg, steps_per_epoch=1)[0]

    plain, averaged = chain(0.0), chain(2.5)  # a window of 2.5 steps: decay 0.6
    params = {"kernel": np.array([1.0, -2.0, 3.0], np.float32)}
    p_plain, s_plain, s_avg = params, plain.init(params), averaged.init(params)
    before = optim.eval_params("momentum", s_avg, params)["kernel"]
    np.testing.assert_array_equal(before, params["kernel"])  # before any step: the weights
    snapshots = []
    for t in range(5):
        grads = {"kernel": np.array([0.5, 1.0, -1.0], np.float32) * (t + 1)}
        u_plain, s_plain = plain.update(grads, s_plain, p_plain)
        u_avg, s_avg = averaged.update(grads, s_avg, p_plain)
        np.testing.assert_array_equal(u_avg["kernel"], u_plain["kernel"])  # training unchanged
        p_plain = optax.apply_updates(p_plain, u_plain)
        snapshots.append(np.asarray(p_plain["kernel"]))
    evaluated = optim.eval_params("momentum", s_avg, p_plain)["kernel"]
    np.testing.assert_allclose(evaluated, _ema_by_hand(snapshots, 0.6), rtol=1e-5)
    assert not np.allclose(evaluated, snapshots[-1])
    assert optim.eval_params("momentum", s_plain, p_plain) is p_plain


def test_the_average_spans_the_same_epochs_whatever_the_data_size():
    assert optim.ema_decay_per_step(0.0, 100) is None
    assert optim.ema_decay_per_step(6.0, 10) == pytest.approx(1 - 1 / 60)
    assert optim.ema_decay_per_step(6.0, 100) == pytest.approx(1 - 1 / 600)
    assert optim.ema_decay_per_step(0.1, 3) == 0.0  # under one step: the last weights

    from speechmusic_jax.config import base_config

    cfg = base_config()
    cfg.train.ema_epochs = 0.1
    params = {"kernel": np.ones(3, np.float32)}
    # A checkpoint restores into a state built without knowing the data size (one step per
    # epoch), so the state's layout must not depend on it.
    shapes = [jax.tree.structure(optim.from_config(cfg, n)[0].init(params)) for n in (1, 50)]
    assert shapes[0] == shapes[1]
