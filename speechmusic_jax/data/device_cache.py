"""``data.cache=device``: the decoded, resampled training corpus kept on the device.

At the start of a run every training file is decoded once (and checked, as its first crop would
be) and the clips are laid end to end in one float32 array on each device of the run's mesh,
with each clip's start and length. The epoch's plan stays the host's
(:func:`pipeline.epoch_plan`: which files, which offsets), so a batch crosses to the device as
four small arrays (file, start sample, label, weight) and its crops are cut there
(:func:`crop`): the same crops as with ``data.cache=memory`` or ``none``, so the cache changes
only the speed, never what a run trains. It is for a corpus that fits on the device (an
accelerator's memory); :func:`check_fits` refuses one larger than ``data.device_cache_mib``
before anything is decoded. Pause shortening changes the crop's length on the host and is not
available with it (the config refuses the pair).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from speechmusic_jax.data import audio
from speechmusic_jax.data.pipeline import LoaderConfig, batch_weights, epoch_plan
from speechmusic_jax.data.sources import AudioFile
from speechmusic_jax.errors import DataError

_MAX_SAMPLES = 2**31 - 1  # int32 indices into the corpus


@dataclasses.dataclass(frozen=True)
class DeviceCorpus:
    """The training clips end to end on the device (replicated over the mesh)."""

    audio: jax.Array  # (total,) float32
    starts: jax.Array  # (files,) int32: where each clip begins in ``audio``
    lengths: jax.Array  # (files,) int32: samples; 0 for a file that could not be read
    host_lengths: np.ndarray  # the same lengths on the host (for the start of each crop)

    @property
    def nbytes(self) -> int:
        return int(self.audio.size) * 4


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    """A training batch of ``data.cache=device``: which clip and which sample each crop starts
    at; the crops themselves are cut on the device."""

    index: np.ndarray  # (batch,) int32 file
    start: np.ndarray  # (batch,) int32 first sample of the crop in its clip
    y: np.ndarray  # (batch,) int32
    weight: np.ndarray  # (batch,) float32


def expected_bytes(durations_s: Sequence[float], sample_rate: int) -> int:
    """Bytes of the corpus on one device, from the files' header durations."""
    return int(sum(round(d * sample_rate) for d in durations_s)) * 4


def check_fits(durations_s: Sequence[float], sample_rate: int, limit_mib: float) -> None:
    """Refuse (a :class:`DataError` naming ``data.device_cache_mib``) a corpus that would take
    more than ``limit_mib`` on each device."""
    need = expected_bytes(durations_s, sample_rate)
    if need > limit_mib * 2**20 or need // 4 > _MAX_SAMPLES:
        raise DataError(
            f"data.cache=device: the training audio takes {need / 2**20:,.0f} MiB at "
            f"{sample_rate} Hz on each device, more than data.device_cache_mib="
            f"{limit_mib:g}" + (" (and more than 2**31 samples)" if need // 4 > _MAX_SAMPLES
                                else "")
            + "; raise data.device_cache_mib if the device has the memory, or use "
            "data.cache=memory (host memory) or none")


def load(files: Sequence[AudioFile], cfg: LoaderConfig, sharding: jax.sharding.Sharding, *,
         on_bad_file: Callable[[audio.AudioError], None] | None = None) -> DeviceCorpus:
    """Decode every training file (``cfg.workers`` threads) and place the corpus. A file that
    cannot be read goes to ``on_bad_file`` (which may raise) and gets length 0: its crops are
    silent with weight 0, as the host loader makes them."""
    reader = cfg.reader
    assert reader is not None

    def read(f: AudioFile) -> np.ndarray:
        try:
            return np.asarray(reader.whole(f.path), np.float32)
        except audio.AudioError as e:
            if on_bad_file is None:
                raise
            on_bad_file(e)
            return np.zeros(0, np.float32)

    with concurrent.futures.ThreadPoolExecutor(max(1, cfg.workers),
                                               thread_name_prefix="device-cache") as pool:
        clips = list(pool.map(read, files))
    lengths = np.asarray([c.shape[0] for c in clips], np.int64)
    if lengths.sum() > _MAX_SAMPLES:
        raise DataError("data.cache=device: the training audio has more than 2**31 samples; "
                        "use data.cache=memory or none")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    flat = np.concatenate(clips + [np.zeros(1, np.float32)])  # never empty
    return DeviceCorpus(jax.device_put(flat, sharding),
                        jax.device_put(starts, sharding),
                        jax.device_put(lengths.astype(np.int32), sharding),
                        lengths.astype(np.int32))


def planned_batches(files: Sequence[AudioFile], durations: Sequence[float], cfg: LoaderConfig,
                    corpus: DeviceCorpus, seed: int, epoch: int, *,
                    rows: slice | None = None) -> Iterator[PlannedBatch]:
    """The batches of ``epoch`` (:func:`pipeline.epoch_plan`), as clip and start sample per
    crop; each crop starts where :class:`pipeline.AudioReader` would cut it from memory.
    ``rows``: this process's rows of every batch."""
    lengths = corpus.host_lengths
    for items in epoch_plan(files, durations, cfg, seed, epoch):
        if rows is not None:
            items = items[rows]
        index = np.asarray([i for i, _ in items], np.int32)
        wanted = np.asarray([int(round(o * cfg.sample_rate)) for _, o in items], np.int64)
        start = np.minimum(wanted, np.maximum(0, lengths[index] - 1)).astype(np.int32)
        y = np.asarray([files[i].label for i in index], np.int32)
        yield PlannedBatch(index, start, y, batch_weights(lengths[index] > 0, y, cfg))


def crop(audio_: jax.Array, starts: jax.Array, lengths: jax.Array, index: jax.Array,
         start: jax.Array, segment: int, short_clip: str = "pad") -> jax.Array:
    """(batch, segment) crops: ``segment`` samples of clip ``index`` from sample ``start``; what
    the clip lacks after ``start`` is zeros (``short_clip="pad"``) or the crop again
    (``"loop"``), as :func:`audio.fit_length` makes them."""
    t = jnp.arange(segment)

    def one(i: jax.Array, s: jax.Array) -> jax.Array:
        have = jnp.minimum(segment, lengths[i] - s)  # samples of the clip from s (<= segment)
        pos = t % jnp.maximum(have, 1) if short_clip == "loop" else t
        x = audio_[starts[i] + s + jnp.minimum(pos, jnp.maximum(have - 1, 0))]
        return jnp.where(pos < have, x, 0.0)

    return jax.vmap(one)(index, start)
