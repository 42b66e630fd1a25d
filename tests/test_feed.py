"""The feed: host batches to the step's inputs, cut (data.cache=device) and augmented on the
device, keyed by (seed, epoch, step); a stack's trials get the batch each would get alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from audio_fixtures import make_folder_tree, signal, write
from test_loop_stack import _trials
from test_pipeline import SR, _scanned
from test_pipeline import _cfg as _loader

from speechmusic_jax import config as config_lib
from speechmusic_jax import parallel
from speechmusic_jax.data import device_cache
from speechmusic_jax.data.augment import AugmentConfig
from speechmusic_jax.data.pipeline import train_batches
from speechmusic_jax.errors import DataError
from speechmusic_jax.training import feed, loop

CLASSES = ("speech", "music")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUG = AugmentConfig(gain_db=6.0, noise_prob=0.5, noise_colours=(0.0, 1.0), lowpass_prob=0.5,
                    lowpass_hz=(1000.0, 3000.0), highpass_prob=0.5, polarity_prob=0.5)


def _tree(tmp_path, short=False):
    """Six clips a class; with ``short``, two of them shorter than a crop."""
    root = make_folder_tree(tmp_path / "tree", per_class=6)
    if short:
        for kind in CLASSES:
            write(os.path.join(root, "Speech" if kind == "speech" else "MUSIC", "short.wav"),
                  signal(kind, 0.2, SR, seed=9) + 0.01, SR, "FLOAT")
    return _scanned(root)


@pytest.mark.parametrize("short_clip", ["pad", "loop"])
def test_device_cache_cuts_the_crops_the_host_cuts(tmp_path, short_clip):
    files, durations = _tree(tmp_path, short=True)
    mesh = parallel.make_mesh()
    host = _loader(cache="memory", short_clip=short_clip)
    on_device = feed.make(_loader(cache="device", short_clip=short_clip), mesh, 4, 0,
                          files=files)
    assert on_device.corpus is not None and on_device.augment is None
    assert on_device.corpus.nbytes >= sum(durations) * SR * 4 - 4 * len(files)
    planned = list(on_device.batches(files, durations, 3, 2))
    read = list(train_batches(files, durations, host, 3, 2))
    assert len(planned) == len(read) == len(files) // 4
    for p, b in zip(planned, read, strict=True):
        assert isinstance(p, device_cache.PlannedBatch)
        x, y, w = (np.asarray(a) for a in on_device(p, 2, 0))
        np.testing.assert_array_equal(x, b.x)
        np.testing.assert_array_equal(y, b.y)
        np.testing.assert_array_equal(w, b.weight)


def test_a_fixed_key_gives_a_fixed_batch_and_the_cache_does_not_change_it(tmp_path):
    files, durations = _tree(tmp_path)
    mesh = parallel.make_mesh()
    from_host = feed.make(_loader(augment=AUG, cache="memory"), mesh, 4, 0)  # the same crops
    from_device = feed.make(_loader(augment=AUG, cache="device"), mesh, 4, 0, files=files)
    host_batch = next(iter(from_host.batches(files, durations, 0, 1)))
    plain = host_batch.x.copy()
    a = np.asarray(from_host(host_batch, 1, 0)[0])
    np.testing.assert_array_equal(host_batch.x, plain)  # the host's batch is left as it was
    assert not np.allclose(a, plain)
    np.testing.assert_array_equal(a, np.asarray(from_host(host_batch, 1, 0)[0]))
    planned = next(iter(from_device.batches(files, durations, 0, 1)))
    np.testing.assert_array_equal(np.asarray(from_device(planned, 1, 0)[0]), a)
    for other, (epoch, step) in [(from_host, (2, 0)), (from_host, (1, 1)),
                                 (feed.make(_loader(augment=AUG), mesh, 4, 1), (1, 0))]:
        b = np.asarray(other(host_batch, epoch, step)[0])
        assert not np.any([np.array_equal(a[i], b[i]) for i in range(4)])


def test_the_trials_of_a_stack_get_the_batch_each_gets_alone(tiny_config, tmp_path):
    tiny_config.data.augment.gain_db = 6.0
    tiny_config.data.augment.noise_prob = 0.5
    cfgs = _trials(tiny_config)
    run = loop.setup(cfgs, [str(tmp_path / "a"), str(tmp_path / "b")], lambda _: None)
    assert run.stack is not None and run.feed is not None
    batch = next(iter(run.epoch_batches(1)))
    alone = feed.make(run.loader, parallel.make_mesh(), tiny_config.train.batch_size,
                      tiny_config.seed)
    np.testing.assert_array_equal(np.asarray(run.feed(batch, 1, 0)[0]),
                                  np.asarray(alone(batch, 1, 0)[0]))


def test_a_corpus_too_large_for_the_limit_is_refused_naming_the_field(tiny_config, tmp_path):
    with pytest.raises(DataError, match=r"data.device_cache_mib=0.5\b.*data.cache=memory"):
        device_cache.check_fits([10.0] * 4, 16000, 0.5)
    device_cache.check_fits([10.0] * 4, 16000, 3.0)
    tiny_config.data.cache = "device"
    tiny_config.data.device_cache_mib = 0.01
    workdir = tmp_path / "run"
    with pytest.raises(DataError, match="data.device_cache_mib"):
        loop.fit(tiny_config, str(workdir), log=lambda _: None, progress=False)
    assert not workdir.exists()  # refused before anything was written


def test_device_cache_refuses_pause_shortening_naming_the_field(tiny_config):
    tiny_config.data.cache = "device"
    tiny_config.data.augment.pause_prob = 0.5
    with pytest.raises(config_lib.ConfigError, match="data.cache: .*pause_prob"):
        config_lib.validate(tiny_config)
    tiny_config.data.augment.pause_prob = 0.0
    config_lib.validate(tiny_config)


_TWO_DEVICES = """
import json, os, sys
import numpy as np
sys.path.insert(0, "tests")
import jax
from conftest import REPO
from speechmusic_jax import parallel
from speechmusic_jax.config import load_experiment
from speechmusic_jax.data import sources
from speechmusic_jax.data.augment import AugmentConfig
from speechmusic_jax.data.pipeline import LoaderConfig
from speechmusic_jax.training import feed, loop
root, workdir = sys.argv[1:3]
listing = sources.list_files(f"folder:{root}", ("speech", "music"))
scanned, _ = sources.scan_headers(listing.files, "error")
files, durations = [f for f, _ in scanned], [i.seconds for _, i in scanned]
aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in json.loads(sys.argv[3]).items()})
loader = LoaderConfig(sample_rate=8000, segment=4000, hop=2000, batch_size=4, cache="device",
                      augment=aug)
f = feed.make(loader, parallel.make_mesh(), 4, 0, files=files)
x = f(next(iter(f.batches(files, durations, 0, 1))), 1, 0)[0]
c = load_experiment(os.path.join(REPO, "experiments", "default.py"), "tiny")
c.train.epochs = 1
c.data.cache = "device"
c.data.augment.gain_db = 6.0
c.data.augment.noise_prob = 0.5
s = loop.fit(c, workdir, log=lambda _: None, progress=False)
print(json.dumps({"devices": len(x.sharding.device_set), "x": np.asarray(x).tolist(),
                  "status": s["status"], "device_count": s["device_count"]}))
"""


def test_device_cache_and_augmentation_on_two_devices_give_the_batch_of_one(tmp_path):
    import dataclasses

    files, durations = _tree(tmp_path)
    one = feed.make(_loader(cache="device", augment=AUG), parallel.make_mesh(), 4, 0,
                    files=files)
    x1 = np.asarray(one(next(iter(one.batches(files, durations, 0, 1))), 1, 0)[0])
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    r = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(tmp_path / "tree"),
                        str(tmp_path / "run"), json.dumps(dataclasses.asdict(AUG))],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["device_count"] == 2 and out["status"] == "completed"
    np.testing.assert_allclose(np.asarray(out["x"]), x1, rtol=1e-5, atol=1e-6)
