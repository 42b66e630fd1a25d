"""The built-in procedural corpus: speech-like and music-like clips (generator version 3).

Every clip is synthesised from its own random generator, seeded by (seed, class, index), so clip
``i`` does not depend on how many clips are made, and the written WAV files are byte-identical
from run to run. The corpus lives in ``cache_root/synthetic-v{VERSION}-{hash}`` (a new generator
version is a new folder, so no stale cache is ever reused)::

    speech/speech_0000.wav ...   16-bit PCM mono
    music/music_0000.wav ...
    noise/noise_0000.wav ...     only where asked (SyntheticSpec.noise: data.classes names noise)
    manifest.csv                 columns path,label,group (path relative to the manifest)
    COMPLETE                     written last; its presence marks a finished corpus

The clips come from :mod:`synth_speech` (a source-filter talker driven by a small phonology:
consonants by manner and place, formant transitions, prosody, speaking styles, speakers of
every age and sex, overlapping talkers) and :mod:`synth_music` (twelve timbres including a sung
voice, eight styles with and without drums, keys, tempi, rests); both then go through the same
recording chain, :mod:`synth_channel` (room, noise of many kinds at 0-30 dB SNR, telephone to
full band, codec damage, hum and whine, clipping, level), so that level, bandwidth, noise,
steady tones and silence do not tell the classes apart: temporal and spectral structure does.
With ``SyntheticSpec.transmission`` (``data.synthetic.transmission``) half of the finished
recordings of every class then go over a telephone line (mu-law/A-law), AM, single-sideband or
FM radio, or through a low-bit-rate Vorbis/Opus/MP3 file (:func:`synth_channel.transmit`, drawn
from its own generator, so the recordings themselves are unchanged); such a corpus has its own
cache folder, and one made without it keeps the folder and bytes it had before.
A third class, ``noise`` (:mod:`synth_noise`: coloured and environmental noise, hum,
near-silence, through the same chain), is made where ``data.classes`` names it; it changes
neither the two classes' clips nor their corpus's folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import soundfile as sf

from speechmusic_jax.data.synth_channel import transmit
from speechmusic_jax.data.synth_music import music_clip
from speechmusic_jax.data.synth_noise import noise_clip
from speechmusic_jax.data.synth_speech import speech_clip

GENERATOR_VERSION: int = 3

LABELS: tuple[str, ...] = ("speech", "music")
NOISE = "noise"  # the optional third class (synth_noise)
_CLASS_ID = {"speech": 0, "music": 1, NOISE: 2}
_MANIFEST = "manifest.csv"
_COMPLETE = "COMPLETE"
_PARALLEL_FROM = 64  # clips; smaller corpora are made in-process (starting workers costs ~1 s)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    clips_per_class: int = 200
    seconds: float = 4.0
    sample_rate: int = 16000
    seed: int = 0
    noise: bool = False  # also a third class, noise (data.classes names "noise")
    transmission: bool = False  # also telephone, radio and lossy-file channels (synth_channel)

    @property
    def labels(self) -> tuple[str, ...]:
        return (*LABELS, NOISE) if self.noise else LABELS

    def identity(self) -> dict:
        """What names the corpus (its cache key and COMPLETE file): the fields, ``noise`` and
        ``transmission`` only where they are on, so the corpora made without them keep the key
        and bytes they had before these fields existed."""
        fields = dataclasses.asdict(self)
        for optional in ("noise", "transmission"):
            if not fields[optional]:
                del fields[optional]
        return fields

    def __post_init__(self) -> None:
        # Canonical types, so that SyntheticSpec(seconds=4) and seconds=4.0 name the same corpus.
        object.__setattr__(self, "clips_per_class", int(self.clips_per_class))
        object.__setattr__(self, "seconds", float(self.seconds))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "noise", bool(self.noise))
        object.__setattr__(self, "transmission", bool(self.transmission))
        if self.clips_per_class < 1:
            raise ValueError(f"clips_per_class must be >= 1, got {self.clips_per_class}")
        if not self.seconds > 0 or not np.isfinite(self.seconds):
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if self.sample_rate < 1000:
            raise ValueError(f"sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")


# --------------------------------------------------------------------------------------------
# Cache and files
# --------------------------------------------------------------------------------------------


def _spec_key(spec: SyntheticSpec) -> str:
    fields = {"generator_version": GENERATOR_VERSION, **spec.identity()}
    return json.dumps(fields, sort_keys=True)


def corpus_dir(spec: SyntheticSpec, cache_root: str | os.PathLike) -> pathlib.Path:
    """The folder that holds (or will hold) the corpus of ``spec`` under ``cache_root``."""
    digest = hashlib.sha256(_spec_key(spec).encode("utf-8")).hexdigest()[:12]
    return pathlib.Path(cache_root) / f"synthetic-v{GENERATOR_VERSION}-{digest}"


def _is_complete(path: pathlib.Path) -> bool:
    return (path / _COMPLETE).is_file() and (path / _MANIFEST).is_file()


def ensure_corpus(
    spec: SyntheticSpec,
    cache_root: str | os.PathLike,
    log: Callable[[str], None] | None = None,
) -> pathlib.Path:
    """Return the corpus folder of ``spec``, generating it first if it is not complete.

    Generation writes into a fresh temporary sibling folder and renames it into place at the
    end, so a half-written corpus is never visible under the final name. When several processes
    generate at once, the first rename wins and the others use the winner's corpus.
    """
    say = log or (lambda _msg: None)
    root = pathlib.Path(cache_root)
    final = corpus_dir(spec, root)
    if _is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        say(
            f"synthetic corpus: generating {spec.clips_per_class} clips per class of "
            f"{spec.seconds:g} s at {spec.sample_rate} Hz (seed {spec.seed}) into {final}"
        )
        start = time.monotonic()
        _generate_into(spec, tmp, say)
        say(f"synthetic corpus: done in {time.monotonic() - start:.1f} s")
        if _rename_into_place(tmp, final):
            return final
        if _is_complete(final):
            say("synthetic corpus: another process finished first; using its corpus")
            return final
        # The final name holds something incomplete that no rename of ours produced (e.g. a
        # copy interrupted by hand): move it aside and try once more.
        stale = root / f".{final.name}.stale-{uuid.uuid4().hex}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
        if _rename_into_place(tmp, final) or _is_complete(final):
            return final
        raise OSError(f"could not move the generated corpus into place at {final}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _rename_into_place(tmp: pathlib.Path, final: pathlib.Path) -> bool:
    try:
        os.rename(tmp, final)  # atomic; fails when ``final`` exists and is not empty
    except OSError:
        return False
    return True


def _generate_into(spec: SyntheticSpec, out: pathlib.Path, say: Callable[[str], None]) -> None:
    jobs = [(label, i) for label in spec.labels for i in range(spec.clips_per_class)]
    for label in spec.labels:
        (out / label).mkdir()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(cpus or 1, 8) if len(jobs) >= _PARALLEL_FROM else 1
    tasks = [(spec, str(out), label, i) for label, i in jobs]
    if workers > 1:  # every clip has its own generator, so the bytes do not depend on this
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            rows = _collect(pool.map(_write_clip, tasks, chunksize=8), len(jobs), say)
    else:
        rows = _collect(map(_write_clip, tasks), len(jobs), say)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("path", "label", "group"))
    writer.writerows(rows)
    (out / _MANIFEST).write_text(buf.getvalue(), encoding="utf-8")
    info = {"generator_version": GENERATOR_VERSION, **spec.identity(), "clips": len(rows)}
    (out / _COMPLETE).write_text(json.dumps(info, sort_keys=True) + "\n", encoding="utf-8")


def _write_clip(task: tuple[SyntheticSpec, str, str, int]) -> tuple[str, str, str]:
    spec, out, label, i = task
    make = {"speech": speech_clip, "music": music_clip, NOISE: noise_clip}[label]
    name = f"{label}_{i:04d}"
    x = make(clip_rng(spec.seed, label, i), spec.seconds, spec.sample_rate)
    if spec.transmission:  # its own stream, so the recording itself is the same as without
        x = transmit(clip_rng(spec.seed, label, i, stream=1), x, spec.sample_rate)
    _write_wav(pathlib.Path(out) / label / f"{name}.wav", x, spec.sample_rate)
    return (f"{label}/{name}.wav", label, name)


def _collect(rows: Iterator[tuple[str, str, str]], total: int,
             say: Callable[[str], None]) -> list[tuple[str, str, str]]:
    out = []
    for row in rows:
        out.append(row)
        if len(out) % 100 == 0 and len(out) < total:
            say(f"synthetic corpus: {len(out)}/{total} clips")
    return out


def clip_rng(seed: int, label: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of clip ``index`` of class ``label``; independent of the corpus size.
    ``stream`` 1: the clip's transmission (:func:`synth_channel.transmit`), drawn apart."""
    key = [int(seed), _CLASS_ID[label], int(index)] + ([int(stream)] if stream else [])
    return np.random.default_rng(key)


def _write_wav(path: pathlib.Path, x: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")

