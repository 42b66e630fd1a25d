"""Front ends x augmentations: raw waveform, SincNet, log-mel (log or PCEN) and LEAF.

Every front end (models/frontends.py) on the default experiment's network (``m6_mid``) and
corpus, each with three augmentation settings, the ones that decide transfer to real audio
(docs/data.md, "Shortcut cues"; docs/experiments.md, "Augmentation"):
- ``none``: no augmentation;
- ``noise``: coloured background noise only (0-30 dB SNR, white/pink/brown), as the default's;
- ``default``: the default experiment's set: noise, random low-pass and high-pass (band
  limits), gain and shortened pauses.
The frame front ends (logmel, leaf) need no pool after their stem (frames are 10 ms apart) and
fit the 2 s crop as they are; PCEN's smoothing coefficient keeps the default's lower bound
(``model.pcen_smooth_min``). No tuning: the default experiment's learning rate, 3 seeds.

    --sweep=experiments/sweeps/frontend.py          5 front ends x 3 augmentations x 3 seeds
    --sweep=experiments/sweeps/frontend.py:tiny     5 front ends x none/default, tiny base, 1 seed
"""

from speechmusic_jax.config import base_config, load_experiment
from speechmusic_jax.tuning import Sweep
from speechmusic_jax.tuning.bases import tiny_base

FRONTENDS = {
    "raw": {"model.frontend": "raw", "model.frontend_compression": "none"},
    "sincnet": {"model.frontend": "sincnet", "model.frontend_compression": "none"},
    "logmel": {"model.frontend": "logmel", "model.frontend_compression": "log"},
    "logmel_pcen": {"model.frontend": "logmel", "model.frontend_compression": "pcen"},
    "leaf": {"model.frontend": "leaf", "model.frontend_compression": "pcen"},
}


def augmentations(default) -> dict[str, dict]:
    """The augmentation arms as overrides of the base's ``data.augment`` (``default``: the
    default experiment's, whose every field each arm sets)."""
    off = {f"data.augment.{k}": v for k, v in base_config().data.augment.items()}
    noise = dict(off)
    for k in ("noise_prob", "noise_colours", "noise_snr_db"):
        noise[f"data.augment.{k}"] = default[k]
    return {"none": off, "noise": noise,
            "default": {f"data.augment.{k}": v for k, v in default.items()}}


def get_sweep(arg=None):
    from speechmusic_jax.cli import default_experiment

    default = load_experiment(default_experiment())
    if arg == "tiny":
        base, seeds, target = tiny_base(), (0,), 0.8
        augs = {k: v for k, v in augmentations(default.data.augment).items() if k != "noise"}
    elif not arg:
        base, seeds, target = default, (0, 1, 2), 0.95
        augs = augmentations(default.data.augment)
    else:
        raise ValueError(f"experiments/sweeps/frontend.py: unknown variant {arg!r} "
                         "(known: tiny)")
    arms = {f"{fe}+{aug}": {**fe_over, **aug_over}
            for fe, fe_over in FRONTENDS.items() for aug, aug_over in augs.items()}
    return Sweep(name="frontend" + ("_tiny" if arg else ""), base=base, arms=arms, space={},
                 budget=1, seeds=seeds, target=("val_accuracy", target),
                 description="Front ends x augmentations, on the default experiment.")
