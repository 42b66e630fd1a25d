import os

import pytest

from speechmusic_jax.config import (
    ConfigError,
    base_config,
    diff,
    load_experiment,
    to_dict,
    validate,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_validate_and_experiments_load():
    validate(base_config())
    for name in sorted(os.listdir(os.path.join(REPO, "experiments"))):
        if name.endswith(".py"):
            validate(load_experiment(os.path.join(REPO, "experiments", name)))
    validate(load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny"))


def test_tiny_batch_divides_over_up_to_eight_devices(tiny_config):
    assert tiny_config.train.batch_size % 8 == 0
    assert tiny_config.train.eval_batch_size % 8 == 0


def test_unknown_field_is_refused():
    c = base_config()
    with pytest.raises(AttributeError, match="epoch"):
        c.train.epoch = 3  # misspelt: the field is train.epochs


def test_wrong_type_is_refused():
    c = base_config()
    with pytest.raises(TypeError, match="epochs"):
        c.train.epochs = "many"


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("seed", -1, "seed"),
        ("init_seed", -1, "init_seed"),
        ("data.spec", "mp3dir:/x", "data.spec"),
        ("data.spec", "folder:", "data.spec"),
        ("data.on_error", "ignore", "data.on_error"),
        ("data.classes", ("speech",), "data.classes"),
        ("data.classes", ("speech", "Speech"), "data.classes"),
        ("data.sample_rate", 0, "data.sample_rate"),
        ("data.segment_seconds", 0.0, "data.segment_seconds"),
        ("data.split", (0.5, 0.5, 0.5), "data.split"),
        ("data.split", (0.9, 0.0, 0.1), "data.split"),
        ("data.folds", 1, "data.folds"),
        ("data.group_regex", "(", "data.group_regex"),
        ("data.eval_hop_seconds", 3.0, "data.eval_hop_seconds"),
        ("train.label_smoothing", float("nan"), "train.label_smoothing"),
        ("model.preset", "m99", "model.preset"),
        ("model.activation", "swish2", "model.activation"),
        ("model.dropout", 1.0, "model.dropout"),
        ("model.stage_repeats", (1, 1), "model.stage_repeats"),
        ("model.stem_filters", 0, "model.stem_filters"),
        ("train.epochs", 0, "train.epochs"),
        ("train.batch_size", -4, "train.batch_size"),
        ("train.precision", "float16", "train.precision"),
        ("train.early_stopping.monitor", "loss", "train.early_stopping.monitor"),
        ("optimizer.name", "adamm", "optimizer.name"),
        ("optimizer.learning_rate", 0.0, "optimizer.learning_rate"),
        ("optimizer.schedule", "wavy", "optimizer.schedule"),
        ("optimizer.b2", 1.0, "optimizer.b2"),  # adamw: in [0, 1)
        ("optimizer.momentum", 0.9, "optimizer.momentum"),  # adamw has none
    ],
)
def test_invalid_values_name_the_field(field, value, needle):
    c = base_config()
    c.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError) as err:
        validate(c)
    assert str(err.value).startswith(needle)


def test_unknown_optimizer_lists_known_names():
    c = base_config()
    c.optimizer.name = "adamm"
    with pytest.raises(ConfigError, match="adamw"):
        validate(c)


def test_crop_shorter_than_receptive_field_states_minimum():
    c = base_config()
    c.model.preset = "m5_small"  # needs 4160 samples
    c.data.segment_seconds = 0.1  # 1600 samples at 16 kHz
    with pytest.raises(ConfigError, match=r"data.segment_seconds.*4160 samples"):
        validate(c)


def test_preset_fields_can_be_overridden():
    from speechmusic_jax.models.presets import resolve_spec

    c = base_config()
    c.model.preset = "m5"
    c.model.stem_filters = 64
    spec = resolve_spec(c.model, 2)
    assert spec.stem_filters == 64 and spec.stage_filters == (128, 256, 512)


def test_diff_names_changed_fields():
    a, b = to_dict(base_config()), base_config()
    b.train.epochs = 3
    b.data.spec = "folder:/x"
    assert diff(a, to_dict(b)) == ["data.spec", "train.epochs"]


def test_experiment_unknown_variant_fails():
    with pytest.raises(ValueError, match="variant"):
        load_experiment(os.path.join(REPO, "experiments", "default.py"), "huge")


def test_schedule_free_refuses_batch_norm():
    # Schedule-free AdamW evaluates its averaged weights; batch-norm running statistics were
    # gathered under the training weights, so they would not match.
    c = base_config()
    c.optimizer.name = "schedule_free_adamw"
    c.optimizer.schedule = "constant"
    assert c.model.norm == "batch"
    with pytest.raises(ConfigError) as err:
        validate(c)
    message = str(err.value)
    assert message.startswith("optimizer.name: ")
    for needle in ("model.norm", "layer", "group"):
        assert needle in message, message
    for norm in ("layer", "group"):
        c.model.norm = norm
        validate(c)


def test_negative_ema_epochs_names_the_field():
    c = base_config()
    c.train.ema_epochs = -1.0
    with pytest.raises(ConfigError, match=r"^train.ema_epochs: must be >= 0"):
        validate(c)


def test_schedule_free_refuses_a_moving_average():
    c = base_config()
    c.optimizer.name, c.optimizer.schedule = "schedule_free_adamw", "constant"
    c.model.norm = "layer"
    c.train.ema_epochs = 2.0
    with pytest.raises(ConfigError, match="^train.ema_epochs: schedule_free_adamw already"):
        validate(c)


@pytest.mark.parametrize("value, expected", [
    ("speech,music,noise", ("speech", "music", "noise")),  # the form docs/data.md shows
    ("speech, music", ("speech", "music")),
    ("('speech','music','noise')", ("speech", "music", "noise")),  # ml_collections' own form
])
def test_class_list_from_the_command_line(value, expected):
    # ml_collections reads a comma-separated string for a tuple of strings as a one-item
    # tuple, which failed validation as "needs at least two class names"
    from absl import flags
    from ml_collections import config_flags

    from speechmusic_jax import cli

    argv = ["prog", f"--config.data.classes={value}", "--config.data.augment.noise_colours=0,2"]
    values = flags.FlagValues()  # the overrides parse as under cli.config_flag's config file
    config_flags.DEFINE_config_dict("config", load_experiment(os.path.join(REPO, "experiments",
                                                                          "default.py")),
                                    flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    cfg = cli.apply_shorthands(values.config)
    assert cfg.data.classes == expected
    assert cfg.data.augment.noise_colours == (0, 2)
    validate(cfg)
