"""From the host's batches to the train step's inputs, on the device.

The one path by which training batches reach the step (``fit`` and ``benchmark --what=data``
both use it): the host's batch (crops read by :mod:`speechmusic_jax.data.pipeline`, or, with
``data.cache=device``, which clip and sample each crop starts at) is placed on the mesh, the
crops are cut there from the device corpus when there is one
(:mod:`speechmusic_jax.data.device_cache`), and the per-crop augmentation runs
(:mod:`speechmusic_jax.data.device_augment`), keyed by (seed, epoch, step). Each of these is a
function compiled ahead for the batch's shape and placement; ``batch -> (x, y, weight)`` dispatches
them without waiting, so the device runs them right before the step.

A stack of trials shares the data seed (``builder.group_key``), so each batch is augmented once
and every trial trains on what it would see alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from speechmusic_jax import parallel
from speechmusic_jax.data import device_augment, device_cache
from speechmusic_jax.data.pipeline import Batch, LoaderConfig, train_batches
from speechmusic_jax.data.sources import AudioFile


@dataclasses.dataclass(frozen=True)
class Feed:
    loader: LoaderConfig
    mesh: Mesh
    batch_size: int  # the global batch
    base_key: jax.Array  # device_augment.base_key(seed)'s data, replicated
    augment: Callable | None  # compiled (x, base key, epoch, step) -> x; None: nothing to do
    corpus: device_cache.DeviceCorpus | None = None  # data.cache=device
    crop: Callable | None = None  # compiled (audio, starts, lengths, index, start) -> x
    compile_s: float = 0.0  # of augment and crop

    def batches(self, files: Sequence[AudioFile], durations: Sequence[float], seed: int,
                epoch: int, *, on_bad_file: Callable | None = None,
                rows: slice | None = None) -> Iterator[Batch | device_cache.PlannedBatch]:
        """The host's batches of ``epoch`` (this process's ``rows`` of each)."""
        if self.corpus is not None:
            return device_cache.planned_batches(files, durations, self.loader, self.corpus,
                                                seed, epoch, rows=rows)
        return train_batches(files, durations, self.loader, seed, epoch,
                             on_bad_file=on_bad_file, rows=rows)

    def __call__(self, batch: Batch | device_cache.PlannedBatch, epoch: int,
                 step: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(x, y, weight) on the mesh, ``x`` cut and augmented: the ``step``-th batch (from 0)
        of ``epoch``. Dispatches without waiting."""
        if isinstance(batch, device_cache.PlannedBatch):
            assert self.corpus is not None and self.crop is not None
            index, start, y, w = parallel.put_batch((batch.index, batch.start, batch.y,
                                                     batch.weight), self.mesh)
            x = self.crop(self.corpus.audio, self.corpus.starts, self.corpus.lengths, index,
                          start)
        else:
            x, y, w = parallel.put_batch((batch.x, batch.y, batch.weight), self.mesh)
        if self.augment is not None:
            x = self.augment(x, self.base_key, np.int32(epoch), np.int32(step))
        return x, y, w


def make(loader: LoaderConfig, mesh: Mesh, batch_size: int, seed: int, *,
         files: Sequence[AudioFile] = (), on_bad_file: Callable | None = None) -> Feed:
    """The feed of a run: its augmentation compiled for (``batch_size``, ``loader.segment``) on
    ``mesh``; with ``loader.cache == "device"``, ``files`` (the training files) decoded onto the
    devices first."""
    shard, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    x_spec = jax.ShapeDtypeStruct((batch_size, loader.segment), jnp.float32, sharding=shard)
    base = parallel.put_replicated(
        np.asarray(jax.random.key_data(device_augment.base_key(seed))), mesh)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    seconds = 0.0
    augment = None
    fn = device_augment.make_batch_augment(loader.augment, loader.sample_rate)
    if fn is not None:
        augment, s = _compile(fn, (x_spec, base, scalar, scalar), shard, donate=(0,))
        seconds += s
    corpus = crop = None
    if loader.cache == "device":
        corpus = device_cache.load(files, loader, rep, on_bad_file=on_bad_file)
        index = jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=shard)

        def cut(audio, starts, lengths, i, s):
            return device_cache.crop(audio, starts, lengths, i, s, loader.segment,
                                     loader.short_clip)

        crop, s = _compile(cut, (corpus.audio, corpus.starts, corpus.lengths, index, index),
                           shard)
        seconds += s
    return Feed(loader, mesh, batch_size, base, augment, corpus, crop, seconds)


def _compile(fn: Callable, args: tuple[Any, ...], out: jax.sharding.Sharding,
             donate: tuple[int, ...] = ()) -> tuple[Callable, float]:
    t0 = time.perf_counter()
    compiled = jax.jit(fn, out_shardings=out, donate_argnums=donate).lower(*args).compile()
    return compiled, time.perf_counter() - t0
