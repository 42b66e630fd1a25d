"""A trained model as one portable file, and the small loader that runs it.

Export (needs the training code):

    python -m speechmusic_jax.export --model=DIR|pretrained --output=FILE [--overwrite]
        [--weights=tested|best|last] [--platforms=cpu,cuda,tpu]

writes FILE, a zip archive holding ``model.jaxexport`` (the inference function, window ->
logits, serialised with ``jax.export``: StableHLO with the weights inside and a symbolic batch
dimension, lowered for the platforms named) and ``metadata.json`` (classes, sample rate, window
and hop, how a clip's decision is made, and the speechmusic_jax version and commit that wrote it).

Load and run (needs only NumPy, JAX and flatbuffers, plus soxr to resample other rates; this
module imports nothing of the package at import time but :mod:`speechmusic_jax.portable`, the
preprocessing, windowing and decision that the package itself uses, so the two files can be
copied together next to the model and run without the package)::

    from speechmusic_jax.export import load
    model = load("model.smj")
    model.predict(waveform, sample_rate)    # {"duration_s", "short", "predicted", ...}
    model.logits(windows)                   # (n, segment) float32 -> (n, classes)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import sys
import zipfile
from typing import Any

import numpy as np


def _portable_beside() -> Any:
    """The portable.py copied next to this file (a copy of this file run without the package)."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "portable.py")
    if not os.path.exists(here):
        raise ImportError(f"{os.path.basename(__file__)} needs portable.py beside it: copy "
                          "speechmusic_jax/portable.py with it")
    spec = importlib.util.spec_from_file_location("speechmusic_jax_portable", here)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __package__ == "speechmusic_jax":
    from speechmusic_jax import portable
else:
    portable = _portable_beside()

FORMAT = "speechmusic_jax.exported_model"
FORMAT_VERSION = 1
MODEL_MEMBER = "model.jaxexport"
METADATA_MEMBER = "metadata.json"
PLATFORMS = ("cpu", "cuda", "tpu")


# --------------------------------------------------------------------------------------------
# The loader: NumPy and JAX only


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    metadata: dict
    exported: Any  # jax.export.Exported
    batch_size: int = 64  # windows per call: one compiled shape, bounded memory

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["classes"])

    @property
    def sample_rate(self) -> int:
        return int(self.metadata["sample_rate"])

    @property
    def segment(self) -> int:
        return int(self.metadata["segment"])

    @property
    def hop(self) -> int:
        return int(self.metadata["hop"])

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """(n, segment) float32 windows at ``sample_rate`` -> (n, classes) float32 logits."""
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.segment:
            raise ValueError(f"windows must be (n, {self.segment}), got {windows.shape}")
        out = []
        b = self.batch_size
        for i in range(0, windows.shape[0], b):
            chunk = windows[i : i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, self.segment), np.float32)])
            out.append(np.asarray(self.exported.call(chunk))[:n])
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def windows(self, waveform: np.ndarray) -> np.ndarray:
        """The evaluation windows of a mono waveform at ``sample_rate``: every ``hop`` samples
        from 0, the last one aligned to the end; a waveform shorter than a window is padded
        (``portable.clip_windows``, as in training's evaluation)."""
        return portable.clip_windows(waveform, self.segment, self.hop,
                                     self.metadata.get("short_clip", "pad"))

    def predict(self, waveform: Any, sample_rate: int | None = None, *,
                min_confidence: float | None = None) -> dict:
        """One decision for a waveform, exactly as ``Classifier.predict`` makes it (the same
        preprocessing, windows and decision: :func:`portable.predict_waveform`):
        ``duration_s, short, predicted, confidence, p_<class>...``.

        ``waveform``: samples at ``sample_rate`` (default: the model's), float at full scale 1.0
        or integer PCM, mono (frames,), (frames, channels) or (channels, frames) when the shape
        says which; other rates are resampled (needs soxr). ``short``: shorter than one window
        (padded). Below ``min_confidence`` the decision is ``uncertain``. Raises a one-line
        ValueError for what cannot be classified (an ambiguous shape, empty, NaN, silent)."""
        return portable.predict_waveform(
            self.logits, waveform, self.sample_rate if sample_rate is None else sample_rate,
            model_rate=self.sample_rate, segment=self.segment, hop=self.hop,
            short_clip=self.metadata.get("short_clip", "pad"), classes=self.classes,
            min_confidence=min_confidence)


def read_metadata(path: str | os.PathLike) -> dict:
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read(METADATA_MEMBER).decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)} is not an exported speechmusic_jax model")
    return meta


def load(path: str | os.PathLike, batch_size: int = 64) -> ExportedModel:
    """The exported model in ``path`` (written by ``python -m speechmusic_jax.export``)."""
    from jax import export as jax_export

    meta = read_metadata(path)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{os.fspath(path)}: format version {meta['format_version']} is newer "
                         f"than this loader's ({FORMAT_VERSION})")
    with zipfile.ZipFile(path) as z:
        exported = jax_export.deserialize(bytearray(z.read(MODEL_MEMBER)))
    return ExportedModel(meta, exported, batch_size)


def is_exported_model(path: str) -> bool:
    try:
        read_metadata(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Exporting a trained run (imports the training code when called)


def export_run(run: Any, platforms: tuple[str, ...] = PLATFORMS) -> tuple[bytes, dict]:
    """The archive's bytes and metadata for a ``trained_run.LoadedRun``."""
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    from speechmusic_jax.provenance import code_version

    loader = run.loader
    (batch,) = jax_export.symbolic_shape("batch")
    try:
        exported = jax_export.export(jax.jit(run.predict), platforms=platforms)(
            jax.ShapeDtypeStruct((batch, loader.segment), jnp.float32))
        blob = exported.serialize()
    except ImportError as e:  # jax's serialisation needs the flatbuffers package
        raise ImportError(f"exporting needs a package that is missing ({e}); install it, "
                          "e.g. pip install flatbuffers") from None
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "classes": list(run.classes), "sample_rate": loader.sample_rate,
        "segment": loader.segment, "hop": loader.hop,
        "window_seconds": loader.segment / loader.sample_rate,
        "hop_seconds": loader.hop / loader.sample_rate, "short_clip": loader.short_clip,
        "input": "float32 (batch, segment): mono windows at sample_rate, full scale 1.0 "
                 "(integer PCM scaled from its type's full scale, unsigned PCM centred); "
                 "other rates are resampled (soxr, HQ), channels averaged",
        "output": "float32 (batch, classes) logits; a recording's decision is the argmax of the "
                  "mean of its windows' logits (windows every hop samples from 0, the last one "
                  "aligned to the end; a recording shorter than a window padded with zeros)",
        "platforms": list(exported.platforms), "model_preset": run.cfg.model.preset,
        "weights_epoch": run.epoch, "run": os.path.basename(run.workdir.rstrip(os.sep)),
        "jax_version": jax.__version__, **code_version(),
        "serialization_version": getattr(exported, "calling_convention_version", None),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(METADATA_MEMBER, json.dumps(meta, indent=1) + "\n")
        z.writestr(MODEL_MEMBER, bytes(blob))
    return buf.getvalue(), meta


def define_flags() -> dict[str, Any]:
    from absl import flags

    from speechmusic_jax import cli

    return {
        **cli.model_flags(),
        "output": flags.DEFINE_string("output", None, "The file to write (a zip archive)."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace an existing --output that "
                                       "an earlier export wrote."),
        "weights": cli.weights_flag("to export"),
        "platforms": flags.DEFINE_list("platforms", list(PLATFORMS), "Platforms to lower for "
                                       "(cpu, cuda, rocm, tpu)."),
    }


def main(flags: dict[str, Any], args: list[str]) -> int:
    from speechmusic_jax import cli, trained_run
    from speechmusic_jax.io_utils import atomic_write_bytes, check_output

    if args:
        raise cli.UsageError(f"unexpected arguments: {args}")
    model = cli.model_folder(flags)
    if not flags["output"]:
        raise cli.UsageError("--output is required")
    unknown = sorted(set(flags["platforms"]) - {"cpu", "cuda", "rocm", "tpu"})
    if unknown or not flags["platforms"]:
        raise cli.UsageError(f"--platforms: unknown {unknown} (known: cpu, cuda, rocm, tpu)")
    check_output(flags["output"], overwrite=flags["overwrite"], ours=is_exported_model)
    run = trained_run.load_run(model, flags["weights"])
    try:
        data, meta = export_run(run, tuple(flags["platforms"]))
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    atomic_write_bytes(flags["output"], data)
    print(f"exported the epoch-{run.epoch} weights of {run.workdir} to {flags['output']} "
          f"({len(data):,} bytes; {', '.join(meta['platforms'])}; classes "
          f"{', '.join(meta['classes'])}; {meta['window_seconds']:g} s windows at "
          f"{meta['sample_rate']} Hz)")
    return 0


if __name__ == "__main__":
    from speechmusic_jax import cli

    cli.run_main(define_flags, main)
