"""``tfds:NAME``: a TensorFlow Datasets audio set, written once as WAV files plus a manifest.

The adapter needs the optional extra (``pip install '.[tfds]'``: tensorflow-datasets and
TensorFlow, which the builders use to prepare the data). It reads every split of the dataset,
writes each example's audio as a 16-bit (or float) WAV at the dataset's sample rate, and a
``manifest.csv`` (``path,label,group``; the group is the example's original file name when the
dataset has one) that the manifest source then lists. The folder is written under a temporary
name and renamed when complete, so an interrupted export is never used; later runs reuse it.

The label comes from the dataset's ``label`` ClassLabel feature (its names, e.g. ``music`` and
``speech`` for ``gtzan_music_speech``); the audio from its ``audio`` feature.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import soundfile as sf

from speechmusic_jax.errors import DataError

EXPORT_VERSION = 1


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            "data.spec=tfds:... needs TensorFlow Datasets: pip install 'speechmusic_jax[tfds]' "
            f"(or pip install tensorflow-datasets tensorflow-cpu); the import failed: {e}"
        ) from None
    return tfds


def export_dir(name: str, cache_root: str) -> str:
    """Where ``tfds:name`` is exported under ``cache_root``."""
    safe = re.sub(r"[^\w.]+", "-", name)
    tag = hashlib.sha1(f"{name}:{EXPORT_VERSION}".encode()).hexdigest()[:8]
    return os.path.join(cache_root, f"tfds-{safe}-{tag}")


def materialize(name: str, cache_root: str, *, data_dir: str | None = None,
                log: Callable[[str], None] | None = None) -> str:
    """Export ``tfds:name`` to WAV files (once) and return the path of its manifest.csv.

    ``data_dir`` is TFDS's own data folder (default: ``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``); the dataset is downloaded and prepared there if it is not yet.
    """
    out = export_dir(name, cache_root)
    manifest = os.path.join(out, "manifest.csv")
    if os.path.exists(os.path.join(out, "COMPLETE")):
        return manifest
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(f"data.spec=tfds:{name}: no such TFDS dataset ({_short(e)})") from None
    if log:
        log(f"data: preparing tfds:{name} (download and prepare in TFDS's data_dir if needed)")
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise DataError(f"data.spec=tfds:{name}: download_and_prepare failed ({_short(e)}); "
                        "check the network or TFDS_DATA_DIR") from None
    features = builder.info.features
    if "audio" not in features or "label" not in features:
        raise DataError(f"data.spec=tfds:{name}: the dataset has no 'audio' and 'label' features "
                        f"(it has {sorted(features.keys())})")
    names = list(features["label"].names)
    rate = int(getattr(features["audio"], "sample_rate", 0) or 0)
    if rate <= 0:
        raise DataError(f"data.spec=tfds:{name}: its audio feature does not state a sample rate")
    splits = sorted(builder.info.splits.keys()) or ["train"]  # GTZAN has only "train"
    examples = ((split, ex) for split in splits
                for ex in tfds.as_numpy(builder.as_dataset(split=split)))
    os.makedirs(cache_root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=cache_root, prefix=f".{os.path.basename(out)}.")
    try:
        n = write_examples(examples, names, rate, tmp)
        if n == 0:
            raise DataError(f"data.spec=tfds:{name}: the dataset has no examples")
        with open(os.path.join(tmp, "COMPLETE"), "w", encoding="utf-8") as f:
            f.write(f"{n}\n")
        if os.path.exists(out):  # a partial export from an older, interrupted run
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if log:
        log(f"data: wrote {n} clips of tfds:{name} to {out}")
    return manifest


def write_examples(examples: Iterable[tuple[str, dict]], label_names: list[str], rate: int,
                   folder: str) -> int:
    """Write (split, example) pairs as WAV files under ``folder/<label>/`` plus manifest.csv.

    Integer audio is taken as 16-bit PCM (clipped to its range); float audio is written as float.
    Multi-channel audio ((samples, channels)) is kept as it is; the reader mixes it to mono.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "group", "tfds_split"])
    n = 0
    for split, ex in examples:
        label = label_names[int(ex["label"])]
        x = np.asarray(ex["audio"])
        if x.size == 0:
            continue  # nothing to write; the manifest simply lacks it
        filename = ex.get("audio/filename")
        if isinstance(filename, bytes):
            filename = filename.decode("utf-8", "replace")
        stem = os.path.splitext(os.path.basename(filename))[0] if filename else ""
        stem = re.sub(r"[^\w.-]+", "_", stem) or f"{split}_{n:06d}"
        rel = os.path.join(label, f"{n:06d}_{stem}.wav")
        os.makedirs(os.path.join(folder, label), exist_ok=True)
        if np.issubdtype(x.dtype, np.integer):
            sf.write(os.path.join(folder, rel), np.clip(x, -32768, 32767).astype(np.int16), rate,
                     subtype="PCM_16")
        else:
            sf.write(os.path.join(folder, rel), x.astype(np.float32), rate, subtype="FLOAT")
        w.writerow([rel, label, f"{label}/{stem}" if filename else rel, split])
        n += 1
    with open(os.path.join(folder, "manifest.csv"), "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    return n


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
