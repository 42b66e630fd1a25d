"""Named architectures and the resolution of config fields into a :class:`ModelSpec`.

The M-networks follow Dai et al. 2017, "Very deep convolutional neural networks for raw
waveforms": a strided stem (kernel 80, stride 4), max-pool 4, then stages of kernel-3 convs.
``m5_small`` is the M5 of the torchaudio speech-command tutorial (stem 32 filters, stride 16).
A preset only fills the structural fields that the config leaves unset.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ml_collections import config_dict

from speechmusic_jax.models.frontends import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    FRAME_FRONTENDS,
    FRONTENDS,
)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    num_classes: int
    stem_filters: int
    stem_kernel: int
    stem_stride: int
    stem_pool: int
    stage_filters: tuple[int, ...]
    stage_repeats: tuple[int, ...]
    stage_pool: tuple[int, ...]
    kernel_size: int = 3
    residual: bool = False
    stage_kernel: tuple[int, ...] = ()  # per stage; empty: kernel_size everywhere
    stage_stride: tuple[int, ...] = ()  # stride of each stage's first conv; empty: 1
    stage_dilation: tuple[int, ...] = ()  # dilation of each stage's convs; empty: 1
    pool: str = "max"  # or "avg": the pooling after the stem and each stage
    stage_dropout: float = 0.0  # dropout after each stage
    head_hidden: tuple[int, ...] = ()  # hidden dense layers before the output layer
    activation: str = "relu"
    norm: str = "batch"
    dropout: float = 0.0
    global_pool: str = "avg"
    frontend: str = "raw"  # or "sincnet", "logmel", "leaf" (models/frontends.py)
    frontend_compression: str = "none"  # logmel and leaf: "log" or "pcen"
    pcen_smooth_min: float = 0.0  # PCEN: the least smoothing coefficient used
    input_norm: str = "none"  # or "rms": every window divided by its RMS (level-free)
    sample_rate: int = 16000
    n_mels: int = 64
    stft_win: int = 400  # samples: logmel's frame, leaf's filters and low-pass, sincnet's taps
    stft_hop: int = 160  # samples: logmel's and leaf's frames

    def frames(self) -> bool:
        """True where the front end gives frames (``stft_hop`` apart) and the stem runs over
        them with stride 1."""
        return self.frontend in FRAME_FRONTENDS

    def stem_taps(self) -> int:
        """The stem conv's taps on the waveform (raw and sincnet)."""
        return self.stft_win if self.frontend == "sincnet" else self.stem_kernel

    def per_stage(self, name: str, default: int) -> tuple[int, ...]:
        values = getattr(self, name)
        return tuple(values) if values else (default,) * len(self.stage_filters)

    def min_input_length(self) -> int:
        """The shortest input (samples) for which every layer still has one time step."""
        need = 1
        for pool, stride in reversed(list(zip(self.stage_pool, self.per_stage("stage_stride", 1),
                                              strict=True))):
            need = (need * max(1, pool) - 1) * stride + 1  # SAME convs: ceil(length / stride)
        need *= max(1, self.stem_pool)
        if self.frames():  # the stem runs over frames: kernel_size, stride 1
            frames = need - 1 + self.kernel_size
            return (frames - 1) * self.stft_hop + self.stft_win
        return (need - 1) * self.stem_stride + self.stem_taps()

    def receptive_field(self) -> int:
        """How many input samples one time step of the last stage depends on (before the
        global pooling): what the network hears at once. Every conv with kernel k and dilation
        d widens it by (k - 1) * d input steps of its own spacing, and every pool p by p - 1;
        strides and pools multiply that spacing. A residual block's skip path is never wider
        than its two convs, so it does not count."""
        if self.frames():  # a frame hears stft_win samples; frames are stft_hop apart
            field, step = self.stft_win, self.stft_hop
            if self.frontend == "leaf":  # the low-pass of stft_win taps over filters as wide
                field += self.stft_win - 1
            field += (self.kernel_size - 1) * step  # the stem: kernel_size frames, stride 1
        else:
            field, step = self.stem_taps(), self.stem_stride
        field += (max(1, self.stem_pool) - 1) * step
        step *= max(1, self.stem_pool)
        convs_per_block = 2 if self.residual else 1
        kernels = self.per_stage("stage_kernel", self.kernel_size)
        for repeats, pool, kernel, stride, dilation in zip(
                self.stage_repeats, self.stage_pool, kernels, self.per_stage("stage_stride", 1),
                self.per_stage("stage_dilation", 1), strict=True):
            for conv in range(repeats * convs_per_block):
                field += (kernel - 1) * dilation * step
                if conv == 0:
                    step *= stride  # a stage's first conv strides
            field += (max(1, pool) - 1) * step
            step *= max(1, pool)
        return field


INPUT_NORMS = ("none", "rms")
# The floor of input_norm=rms: windows quieter than this (about -80 dBFS) are scaled as if this
# loud, so that digital silence or a faint hiss is not blown up to full scale.
RMS_FLOOR = 1e-4

_STRUCTURE = ("stem_filters", "stem_kernel", "stem_stride", "stem_pool", "stage_filters",
              "stage_repeats", "stage_pool", "kernel_size", "residual")

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(stem_filters=8, stem_kernel=80, stem_stride=16, stem_pool=4,
                 stage_filters=(16,), stage_repeats=(1,), stage_pool=(4,), kernel_size=3,
                 residual=False),
    "m3": dict(stem_filters=256, stem_kernel=80, stem_stride=4, stem_pool=4,
               stage_filters=(256,), stage_repeats=(1,), stage_pool=(4,), kernel_size=3,
               residual=False),
    "m5": dict(stem_filters=128, stem_kernel=80, stem_stride=4, stem_pool=4,
               stage_filters=(128, 256, 512), stage_repeats=(1, 1, 1), stage_pool=(4, 4, 4),
               kernel_size=3, residual=False),
    "m5_small": dict(stem_filters=32, stem_kernel=80, stem_stride=16, stem_pool=4,
                     stage_filters=(32, 64, 64), stage_repeats=(1, 1, 1), stage_pool=(4, 4, 4),
                     kernel_size=3, residual=False),
    "m5_mid": dict(stem_filters=64, stem_kernel=80, stem_stride=8, stem_pool=4,
                   stage_filters=(64, 128, 128), stage_repeats=(1, 1, 1), stage_pool=(4, 4, 4),
                   kernel_size=3, residual=False),
    "m6_mid": dict(stem_filters=64, stem_kernel=80, stem_stride=8, stem_pool=4,
                   stage_filters=(64, 128, 128, 128), stage_repeats=(1, 1, 1, 1),
                   stage_pool=(4, 4, 4, 2), kernel_size=3, residual=False),
    "m11": dict(stem_filters=64, stem_kernel=80, stem_stride=4, stem_pool=4,
                stage_filters=(64, 128, 256, 512), stage_repeats=(2, 2, 3, 2),
                stage_pool=(4, 4, 4, 1), kernel_size=3, residual=False),
    "m18": dict(stem_filters=64, stem_kernel=80, stem_stride=4, stem_pool=4,
                stage_filters=(64, 128, 256, 512), stage_repeats=(4, 4, 4, 4),
                stage_pool=(4, 4, 4, 1), kernel_size=3, residual=False),
    "m34_res": dict(stem_filters=48, stem_kernel=80, stem_stride=4, stem_pool=4,
                    stage_filters=(48, 96, 192, 384), stage_repeats=(3, 4, 6, 3),
                    stage_pool=(4, 4, 4, 1), kernel_size=3, residual=True),
    "samplecnn": dict(stem_filters=128, stem_kernel=3, stem_stride=3, stem_pool=1,
                      stage_filters=(128, 128, 256, 256, 256, 256, 256, 256, 512),
                      stage_repeats=(1,) * 9, stage_pool=(3,) * 9, kernel_size=3,
                      residual=False),
}

PRESET_NOTES = {
    "tiny": "a few thousand parameters, for tests and smoke runs",
    "m3": "Dai et al. 2017 M3",
    "m5": "Dai et al. 2017 M5 (555,010 parameters with 2 classes)",
    "m5_small": "torchaudio tutorial M5: stem 32 filters, kernel 80, stride 16 (24,770 params)",
    "m5_mid": "the base config's: M5 between the two above, stem 64 filters, kernel 80, "
              "stride 8; stages 64/128/128 (92,546 params)",
    "m6_mid": "the default experiment's: m5_mid with a fourth stage of 128 filters (pool 2), "
              "which widens what one output frame hears from 0.22 to 0.60 s at 16 kHz "
              "(142,082 params)",
    "m11": "Dai et al. 2017 M11",
    "m18": "Dai et al. 2017 M18",
    "m34_res": "Dai et al. 2017 M34-res: residual blocks of two kernel-3 convs, 1x1 projection "
               "where the width changes",
    "samplecnn": "SampleCNN 3^9 (Lee et al. 2017) without its final 1x1 conv: needs 59,049 "
                 "samples per crop (data.segment_seconds >= 3.7 at 16 kHz)",
}


def resolve_spec(model: config_dict.ConfigDict, num_classes: int,
                 sample_rate: int = 16000) -> ModelSpec:
    """Combine the preset with the config's explicit fields; raise ValueError naming a field."""
    if model.preset not in PRESETS:
        raise ValueError(f"model.preset: unknown preset {model.preset!r}; known: {sorted(PRESETS)}")
    fields = dict(PRESETS[model.preset])
    for name in _STRUCTURE:
        value = model[name]
        if value is not None:
            fields[name] = tuple(value) if isinstance(value, list | tuple) else value
    n = len(fields["stage_filters"])
    for name in ("stage_repeats", "stage_pool"):
        if len(fields[name]) != n:
            raise ValueError(
                f"model.{name}: needs one entry per stage ({n}, as model.stage_filters), "
                f"got {fields[name]}"
            )
    for name in ("stem_filters", "stem_kernel", "stem_stride", "stem_pool", "kernel_size"):
        if not isinstance(fields[name], int) or fields[name] < 1:
            raise ValueError(f"model.{name}: must be a positive integer, got {fields[name]!r}")
    for name in ("stage_kernel", "stage_stride", "stage_dilation"):
        value = model[name]
        fields[name] = tuple(value) if value else ()
        if fields[name] and len(fields[name]) != n:
            raise ValueError(f"model.{name}: needs one entry per stage ({n}, as "
                             f"model.stage_filters), got {fields[name]}")
    for name in ("stage_filters", "stage_repeats", "stage_pool", "stage_kernel", "stage_stride",
                 "stage_dilation"):
        if not all(isinstance(v, int) and v >= 1 for v in fields[name]):
            raise ValueError(f"model.{name}: entries must be positive integers, got {fields[name]}")
    head_hidden = tuple(model.head_hidden)
    if not all(isinstance(v, int) and v >= 1 for v in head_hidden):
        raise ValueError(f"model.head_hidden: entries must be positive integers, got {head_hidden}")
    if model.pool not in ("max", "avg"):
        raise ValueError(f"model.pool: must be 'max' or 'avg', got {model.pool!r}")
    if not 0.0 <= model.stage_dropout < 1.0:
        raise ValueError(f"model.stage_dropout: must be in [0, 1), got {model.stage_dropout}")
    if model.frontend not in FRONTENDS:
        raise ValueError(f"model.frontend: must be one of {FRONTENDS}, got {model.frontend!r}")
    compression = model.frontend_compression
    frames = model.frontend in FRAME_FRONTENDS
    if compression is not None and not frames and compression != "none":
        # an experiment with a frame front end sets its compression; a user who switches to
        # raw or sincnet says "none" as well (the error says so), nothing is dropped silently
        raise ValueError(f"model.frontend_compression: applies to the frontends "
                         f"{FRAME_FRONTENDS} only, not {model.frontend!r}: with "
                         f"{model.frontend!r} set it to 'none' (got {compression!r})")
    if compression is not None and frames and compression not in COMPRESSIONS:
        raise ValueError(f"model.frontend_compression: {model.frontend!r} needs one of "
                         f"{COMPRESSIONS}, got {compression!r}")
    compression = compression or DEFAULT_COMPRESSION.get(model.frontend, "none")
    smooth_min = model.pcen_smooth_min
    if not 0.0 <= smooth_min < 1.0:
        raise ValueError(f"model.pcen_smooth_min: must be in [0, 1), got {smooth_min}")
    if model.frontend in FRAME_FRONTENDS and model.stem_pool is None:
        # Frames are already stft_hop samples apart (10 ms: more than the raw stems' stride x
        # pool of 64 samples at most): no pool after the stem unless model.stem_pool says so,
        # so that every preset's stages fit the default 2 s crop.
        fields["stem_pool"] = 1
    if model.input_norm not in INPUT_NORMS:
        raise ValueError(f"model.input_norm: must be one of {INPUT_NORMS}, "
                         f"got {model.input_norm!r}")
    win = int(round(model.stft_win_ms * sample_rate / 1000))
    hop = int(round(model.stft_hop_ms * sample_rate / 1000))
    if model.frontend != "raw" and (win < 16 or hop < 1 or hop > win):
        raise ValueError(f"model.stft_win_ms/stft_hop_ms: need a window of at least 16 samples "
                         f"and 1 <= hop <= window (got {win} and {hop} samples)")
    if model.frontend in FRAME_FRONTENDS and not 1 <= model.n_mels <= win // 2:
        raise ValueError(f"model.n_mels: must be between 1 and {win // 2}, got {model.n_mels}")
    return ModelSpec(
        num_classes=num_classes,
        frontend=model.frontend,
        frontend_compression=compression,
        pcen_smooth_min=float(smooth_min) if compression == "pcen" else 0.0,
        input_norm=model.input_norm,
        sample_rate=sample_rate,
        n_mels=model.n_mels,
        stft_win=win,
        stft_hop=hop,
        activation=model.activation,
        norm=model.norm,
        dropout=float(model.dropout),
        pool=model.pool,
        stage_dropout=float(model.stage_dropout),
        head_hidden=head_hidden,
        global_pool=model.global_pool,
        **fields,
    )
