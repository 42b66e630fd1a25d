"""The built-in procedural corpus: speech-like and music-like clips (generator version 1).

Every clip is synthesised from its own random generator, seeded by (seed, class, index), so clip
``i`` does not depend on how many clips are made, and the written WAV files are byte-identical
from run to run. The corpus lives in ``cache_root/synthetic-v{VERSION}-{hash}``::

    speech/speech_0000.wav ...   16-bit PCM mono
    music/music_0000.wav ...
    manifest.csv                 columns path,label,group (path relative to the manifest)
    COMPLETE                     written last; its presence marks a finished corpus

Speech-like clips: a glottal pulse source with a moving pitch contour (declination, accents,
jitter, shimmer), 4-5 formant resonances gliding between vowel targets, fricative and plosive
noise, 3-7 syllables per second grouped into phrases with pauses, and several speaker profiles.
Music-like clips: notes on a steady tempo grid, melodies and chords in a key, from several
timbres (plucked, organ, bell, bowed with vibrato, wind, FM piano, mallet, square lead), with
rests, dynamics and optional drums.

Both classes then go through the same random chain (reverb, background noise at a random SNR,
band-limiting, gain), so loudness, bandwidth and silence overlap between the classes and what
tells them apart is temporal and spectral structure rather than level.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np
import soundfile as sf

GENERATOR_VERSION: int = 1

LABELS: tuple[str, ...] = ("speech", "music")
_CLASS_ID = {"speech": 0, "music": 1}
_MANIFEST = "manifest.csv"
_COMPLETE = "COMPLETE"


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    clips_per_class: int = 200
    seconds: float = 4.0
    sample_rate: int = 16000
    seed: int = 0

    def __post_init__(self) -> None:
        # Canonical types, so that SyntheticSpec(seconds=4) and seconds=4.0 name the same corpus.
        object.__setattr__(self, "clips_per_class", int(self.clips_per_class))
        object.__setattr__(self, "seconds", float(self.seconds))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        object.__setattr__(self, "seed", int(self.seed))
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
    fields = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(spec)}
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
    rows = []
    total = 2 * spec.clips_per_class
    done = 0
    for label in LABELS:
        (out / label).mkdir()
        make = speech_clip if label == "speech" else music_clip
        for i in range(spec.clips_per_class):
            name = f"{label}_{i:04d}"
            x = make(clip_rng(spec.seed, label, i), spec.seconds, spec.sample_rate)
            _write_wav(out / label / f"{name}.wav", x, spec.sample_rate)
            rows.append((f"{label}/{name}.wav", label, name))
            done += 1
            if done % 100 == 0 and done < total:
                say(f"synthetic corpus: {done}/{total} clips")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("path", "label", "group"))
    writer.writerows(rows)
    (out / _MANIFEST).write_text(buf.getvalue(), encoding="utf-8")
    info = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(spec), "clips": total}
    (out / _COMPLETE).write_text(json.dumps(info, sort_keys=True) + "\n", encoding="utf-8")


def clip_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """The generator of clip ``index`` of class ``label``; independent of the corpus size."""
    return np.random.default_rng([int(seed), _CLASS_ID[label], int(index)])


def _write_wav(path: pathlib.Path, x: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")


# --------------------------------------------------------------------------------------------
# Signal helpers
# --------------------------------------------------------------------------------------------


def _n_fft(sample_rate: int) -> int:
    """About 32 ms, a power of two."""
    return max(64, 1 << int(np.ceil(np.log2(0.032 * sample_rate))))


def _stft(x: np.ndarray, n_fft: int) -> np.ndarray:
    """Hann-windowed STFT with hop n_fft/4; frame t is centred on sample t*hop - n_fft/2."""
    hop = n_fft // 4
    pad_end = n_fft + (-(len(x) + n_fft) % hop)
    xp = np.pad(x, (n_fft, pad_end))
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop]
    return np.fft.rfft(frames * _hann(n_fft), axis=1)


def _istft(spec: np.ndarray, n_fft: int, length: int) -> np.ndarray:
    hop = n_fft // 4
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * _hann(n_fft)
    t = frames.shape[0]
    parts = frames.reshape(t, 4, hop)
    out = np.zeros((t + 3, hop))
    for k in range(4):
        out[k : k + t] += parts[:, k]
    # A periodic Hann window squared sums to 1.5 at 75 % overlap.
    return out.reshape(-1)[n_fft : n_fft + length] / 1.5


def _frame_centres(n: int, n_fft: int) -> np.ndarray:
    hop = n_fft // 4
    t = (n + n_fft + (-(n + n_fft) % hop)) // hop + 1  # the frame count of _stft
    return np.arange(t) * hop - n_fft / 2


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def _interp(t: np.ndarray, points: list[tuple[float, float]], default: float = 0.0) -> np.ndarray:
    if not points:
        return np.full(len(t), default)
    pts = np.asarray(points, dtype=np.float64)
    order = np.argsort(pts[:, 0], kind="stable")
    return np.interp(t, pts[order, 0], pts[order, 1])


def _add_at(buf: np.ndarray, start: int, sig: np.ndarray) -> None:
    if start >= len(buf) or start + len(sig) <= 0:
        return
    s0 = max(0, -start)
    end = min(len(buf), start + len(sig))
    buf[max(start, 0) : end] += sig[s0 : s0 + end - max(start, 0)]


def _coloured_noise(rng: np.random.Generator, n: int, sample_rate: int, slope: float) -> np.ndarray:
    """Noise with power ~ f^-slope (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec *= np.maximum(f, 20.0) ** (-slope / 2)
    spec[0] = 0.0
    y = np.fft.irfft(spec, n=n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _db(v: float) -> float:
    return 10.0 ** (v / 20.0)


# --------------------------------------------------------------------------------------------
# Speech
# --------------------------------------------------------------------------------------------

# Adult (male-scale) formant targets F1..F4 in Hz.
_VOWELS = np.array(
    [
        [280, 2250, 2900, 3500],  # i
        [400, 1900, 2550, 3500],  # I
        [450, 2050, 2650, 3500],  # e
        [550, 1800, 2500, 3500],  # E
        [680, 1700, 2450, 3500],  # ae
        [750, 1250, 2500, 3500],  # a
        [580, 880, 2450, 3300],  # O
        [460, 920, 2400, 3300],  # o
        [430, 1060, 2300, 3300],  # U
        [320, 870, 2250, 3300],  # u
        [500, 1450, 2450, 3400],  # schwa
        [620, 1200, 2400, 3400],  # V
    ],
    dtype=np.float64,
)
_NASAL = np.array([260, 1050, 2300, 3300], dtype=np.float64)
_F2_LOCI = np.array([850.0, 1750.0, 2300.0])  # labial, alveolar, velar-ish


@dataclasses.dataclass
class _Speaker:
    f0: float
    fscale: float
    oq: float
    jitter: float
    shimmer: float
    breath: float
    rate: float
    intonation: float
    bandwidth: float


def _speaker(rng: np.random.Generator) -> _Speaker:
    kind = rng.choice(3, p=[0.4, 0.4, 0.2])
    f0 = (rng.uniform(85, 150), rng.uniform(160, 260), rng.uniform(240, 380))[kind]
    fscale = (rng.uniform(0.92, 1.05), rng.uniform(1.08, 1.22), rng.uniform(1.22, 1.38))[kind]
    return _Speaker(
        f0=f0,
        fscale=fscale,
        oq=rng.uniform(0.4, 0.75),
        jitter=rng.uniform(0.003, 0.02),
        shimmer=rng.uniform(0.02, 0.12),
        breath=rng.uniform(0.0, 0.25),
        rate=rng.uniform(3.0, 7.0),
        intonation=rng.uniform(0.08, 0.4),
        bandwidth=rng.uniform(0.8, 1.5),
    )


class _Tracks:
    """Breakpoint lists for the control signals of one speech clip."""

    def __init__(self) -> None:
        self.voice: list[tuple[float, float]] = []
        self.noise: list[tuple[float, float]] = []
        self.noise_fc: list[tuple[float, float]] = []
        self.noise_bw: list[tuple[float, float]] = []
        self.formants: list[tuple[float, np.ndarray]] = []
        self.accents: list[tuple[float, float, float]] = []  # time, height, width
        self.phrases: list[tuple[float, float, float, float]] = []  # start, end, f0 start, f0 end

    def noise_seg(
        self, t0: float, t1: float, amp: float, fc: float, bw: float, ramp: float
    ) -> None:
        ramp = min(ramp, 0.45 * (t1 - t0))
        self.noise += [(t0, 0.0), (t0 + ramp, amp), (t1 - ramp, amp * 0.8), (t1, 0.0)]
        self.noise_fc += [(t0, fc), (t1, fc)]
        self.noise_bw += [(t0, bw), (t1, bw)]


def _syllable(
    rng: np.random.Generator, tr: _Tracks, sp: _Speaker, t: float, dur: float, sr: int
) -> None:
    nyq = 0.5 * sr
    vowel = _VOWELS[rng.integers(len(_VOWELS))] * sp.fscale * rng.uniform(0.94, 1.06, 4)
    onset = rng.choice(5, p=[0.2, 0.25, 0.3, 0.15, 0.1])  # none, fric, plosive, nasal, glide
    start_f = vowel.copy()
    c_end = t
    if onset == 1:  # fricative
        d = rng.uniform(0.05, 0.13)
        fc = min(rng.uniform(2200, 7000) * np.sqrt(sp.fscale), 0.84 * nyq)
        tr.noise_seg(t, t + d, rng.uniform(0.06, 0.45), fc, fc * rng.uniform(0.1, 0.4), 0.015)
        if rng.random() < 0.3:  # voiced fricative
            tr.voice += [(t, 0.0), (t + 0.01, 0.15), (t + d, 0.15)]
        c_end = t + d
        start_f[1] = 0.5 * start_f[1] + 0.5 * _F2_LOCI[1] * sp.fscale
    elif onset == 2:  # plosive: closure, burst, optional aspiration
        closure = rng.uniform(0.02, 0.07)
        burst = rng.uniform(0.008, 0.02)
        fc = min(rng.uniform(900, 5000) * sp.fscale, 0.8 * nyq)
        tr.voice += [(t, 0.0), (t + closure, 0.0)]
        tr.noise_seg(t + closure, t + closure + burst, rng.uniform(0.15, 0.6), fc, 0.6 * fc, 0.002)
        c_end = t + closure + burst
        if rng.random() < 0.4:
            asp = rng.uniform(0.02, 0.05)
            tr.noise_seg(c_end, c_end + asp, rng.uniform(0.05, 0.2), 1500 * sp.fscale, 1200, 0.01)
            c_end += asp
        locus = _F2_LOCI[rng.integers(3)] * sp.fscale
        start_f[1] = 0.4 * start_f[1] + 0.6 * locus
        start_f[0] = 0.6 * start_f[0]
    elif onset == 3:  # nasal murmur
        d = rng.uniform(0.04, 0.08)
        nasal = _NASAL * sp.fscale
        tr.voice += [(t, 0.0), (t + 0.01, 0.3), (t + d, 0.35)]
        tr.formants += [(t, nasal), (t + d, nasal)]
        c_end = t + d
    elif onset == 4:  # glide from i or u
        start_f = _VOWELS[0 if rng.random() < 0.5 else 9] * sp.fscale
    v_dur = max(0.06, t + dur - c_end - rng.uniform(0.0, 0.03))
    v0, v1 = c_end, c_end + v_dur
    peak = rng.uniform(0.35, 1.0)
    att = v_dur * rng.uniform(0.15, 0.4)
    tr.voice += [
        (v0, 0.0 if onset in (0, 1, 2) else 0.3),
        (v0 + att, peak),
        (v1 - v_dur * rng.uniform(0.1, 0.3), peak * rng.uniform(0.5, 0.95)),
        (v1, 0.0),
    ]
    mid = v0 + v_dur * rng.uniform(0.3, 0.6)
    tr.formants += [(v0, start_f), (mid, vowel)]
    if rng.random() < 0.3:  # diphthong
        tr.formants.append((v1, _VOWELS[rng.integers(len(_VOWELS))] * sp.fscale))
    else:
        tr.formants.append((v1, vowel * rng.uniform(0.95, 1.05, 4)))
    if peak > 0.7:
        tr.accents.append((mid, rng.uniform(0.3, 1.0) * sp.intonation, rng.uniform(0.05, 0.15)))
    if rng.random() < 0.2:  # coda fricative
        d = min(rng.uniform(0.04, 0.09), max(0.0, t + dur - v1) + 0.05)
        fc = min(rng.uniform(3500, 7000) * np.sqrt(sp.fscale), 0.84 * nyq)
        tr.noise_seg(v1 - 0.01, v1 - 0.01 + d, rng.uniform(0.05, 0.35), fc, fc * 0.25, 0.01)


def speech_clip(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """A speech-like clip: float32 mono, ``round(seconds * sample_rate)`` samples in [-1, 1]."""
    sr = int(sample_rate)
    n = max(1, int(round(seconds * sr)))
    sp = _speaker(rng)
    tr = _Tracks()
    fluent = rng.random() < 0.35
    t = rng.uniform(0.0, 0.4) if rng.random() < 0.5 else 0.0
    t -= rng.uniform(0.0, 0.3)  # the clip may begin mid-syllable
    breaths: list[tuple[float, float]] = []
    while t < seconds:
        n_syll = rng.integers(8, 21) if fluent else rng.integers(2, 11)
        p_start = t
        for _ in range(n_syll):
            dur = rng.uniform(0.7, 1.3) / sp.rate
            _syllable(rng, tr, sp, t, dur, sr)
            t += dur
        f0_start = sp.f0 * rng.uniform(1.0, 1.25)
        f0_end = sp.f0 * rng.uniform(0.72, 0.95)
        if rng.random() < 0.15:  # question-like final rise
            tr.accents.append((t - 0.1, rng.uniform(0.2, 0.5), 0.12))
        tr.phrases.append((p_start, t, f0_start, f0_end))
        pause = rng.uniform(0.04, 0.25) if fluent else rng.uniform(0.12, 0.8)
        if pause > 0.3 and rng.random() < 0.3:
            breaths.append((t + 0.05, t + pause - 0.05))
        t += pause
    for b0, b1 in breaths:  # audible inhalation in some pauses
        tr.noise_seg(b0, b1, rng.uniform(0.03, 0.12), 1200 * sp.fscale, 1500, 0.1)

    ts = np.arange(n) / sr
    # Pitch: per-phrase declination, accents, slow wander, and per-period jitter.
    f0 = _interp(ts, [p for a, b, fa, fb in tr.phrases for p in ((a, fa), (b, fb))], sp.f0)
    if tr.accents:
        acc = np.asarray(tr.accents)
        tc = ts[::64]
        bump = np.sum(
            acc[:, 1:2] * np.exp(-0.5 * ((tc[None, :] - acc[:, :1]) / acc[:, 2:3]) ** 2), axis=0
        )
        f0 = f0 * (1.0 + np.interp(ts, tc, bump))
    wander = np.zeros(n)
    for _ in range(3):
        depth, rate, ph = rng.uniform(0.005, 0.03), rng.uniform(0.3, 2.0), rng.uniform(0, 6.3)
        wander += depth * np.sin(2 * np.pi * rate * ts + ph)
    f0 = f0 * (1.0 + wander)
    f0 = np.clip(f0, 50.0, 0.45 * sr)
    phase = np.cumsum(f0) / sr
    period = np.floor(phase).astype(np.int64)
    n_periods = int(period[-1]) + 2
    jit = 1.0 + sp.jitter * rng.standard_normal(n_periods)
    phase = np.cumsum(f0 * jit[period]) / sr
    period = np.floor(phase).astype(np.int64)
    frac = phase - period
    # Rosenberg-like glottal flow; its derivative is the excitation (with lip radiation).
    a = sp.oq * rng.uniform(0.55, 0.7)
    b = sp.oq - a
    flow = np.where(
        frac < a,
        0.5 * (1.0 - np.cos(np.pi * frac / a)),
        np.where(frac < a + b, np.cos(0.5 * np.pi * np.clip((frac - a) / b, 0.0, 1.0)), 0.0),
    )
    shim = 1.0 + sp.shimmer * rng.standard_normal(int(period[-1]) + 2)
    src = np.diff(flow, prepend=0.0) * shim[period] * sr / np.maximum(f0, 1.0)
    src /= _rms(src)
    src += sp.breath * rng.standard_normal(n) * (flow + 0.2)
    voice_amp = _interp(ts, tr.voice)
    src *= np.clip(voice_amp, 0.0, None)

    # Time-varying vocal tract: cascade of formant resonances per STFT frame.
    n_fft = _n_fft(sr)
    centres = _frame_centres(n, n_fft) / sr
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    if tr.formants:
        ft = np.array([p[0] for p in tr.formants])
        fv = np.stack([p[1] for p in tr.formants])
        order = np.argsort(ft, kind="stable")
        fmt = np.stack([np.interp(centres, ft[order], fv[order, k]) for k in range(4)], axis=1)
    else:
        fmt = np.tile(_VOWELS[10] * sp.fscale, (len(centres), 1))
    fmt = np.concatenate([fmt, np.full((len(centres), 1), 4500.0 * sp.fscale)], axis=1)
    bws = np.array([70.0, 100.0, 150.0, 220.0, 400.0]) * sp.bandwidth
    f2 = freqs[None, :, None] ** 2
    ff = fmt[:, None, :] ** 2
    gain = np.prod(ff / np.sqrt((ff - f2) ** 2 + f2 * bws[None, None, :] ** 2), axis=2)
    voiced = _istft(_stft(src, n_fft) * gain, n_fft, n)
    loud = voice_amp > 0.5 * max(float(voice_amp.max()), 1e-6)
    voiced /= _rms(voiced[loud]) if loud.any() else _rms(voiced)

    # Noise sources (fricatives, bursts, aspiration, breaths), band-shaped per frame.
    fc = np.clip(_interp(centres, tr.noise_fc, 3000.0), 100.0, 0.45 * sr)
    bw = np.maximum(_interp(centres, tr.noise_bw, 2000.0), 100.0)
    shape = 1.0 / (1.0 + ((freqs[None, :] - fc[:, None]) / bw[:, None]) ** 2) ** 2
    shape /= np.sqrt(np.mean(shape**2, axis=1, keepdims=True))
    noise = _istft(_stft(rng.standard_normal(n), n_fft) * shape, n_fft, n)
    noise *= np.clip(_interp(ts, tr.noise), 0.0, None)

    x = voiced + noise * rng.uniform(0.7, 1.4)
    return _finish(rng, x, sr)


# --------------------------------------------------------------------------------------------
# Music
# --------------------------------------------------------------------------------------------

_SCALES = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
    (0, 2, 4, 7, 9),  # major pentatonic
    (0, 2, 3, 5, 7, 8, 11),  # harmonic minor
    (0, 2, 4, 5, 7, 9, 10),  # mixolydian
)
_STEP_P = np.array([0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05])  # melodic steps -3..3 degrees
_TIMBRES = ("pluck", "organ", "bell", "bowed", "wind", "fmpiano", "mallet", "square")


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


@dataclasses.dataclass
class _Timbre:
    kind: str
    ratios: np.ndarray  # partial frequency ratios
    amps: np.ndarray
    decays: np.ndarray  # per-partial exponential decay rates (1/s); 0 = sustained
    attack: float
    release: float
    sustain_decay: float  # slow overall decay while held (1/s)
    vibrato_rate: float = 0.0
    vibrato_depth: float = 0.0
    noise: float = 0.0  # breath/bow/attack noise level
    fm_index: float = 0.0
    fm_ratio: float = 1.0
    fm_decay: float = 0.0


def _timbre(rng: np.random.Generator, kind: str) -> _Timbre:
    k = np.arange(1, 25, dtype=np.float64)
    if kind == "pluck":
        p = rng.uniform(0.8, 1.8)
        d0 = rng.uniform(1.5, 5.0)
        inh = rng.uniform(0.0, 3e-4)
        decays = d0 * (1 + rng.uniform(0.1, 0.5) * k)
        return _Timbre(kind, k * np.sqrt(1 + inh * k**2), k**-p, decays, 0.003, 0.04, 0.0,
                       noise=rng.uniform(0.0, 0.3))
    if kind == "organ":
        h = np.array([1, 2, 3, 4, 5, 6, 8], dtype=np.float64)
        w = rng.dirichlet(np.ones(7)) * (h**-0.5)
        w[0] += 0.3
        return _Timbre(kind, h, w, np.zeros(7), rng.uniform(0.005, 0.04), rng.uniform(0.03, 0.15),
                       0.0)
    if kind == "bell":
        base = np.array([1.0, 2.0, 2.76, 3.4, 4.1, 5.43, 6.8, 8.2])
        r = base * rng.uniform(0.97, 1.03, len(base))
        r[0] = 1.0
        amps = rng.uniform(0.3, 1.0, len(base)) * base**-0.7
        dec = rng.uniform(0.6, 1.6) * (1 + 0.7 * np.arange(len(base)))
        return _Timbre(kind, r, amps, dec, 0.002, 0.3, 0.0)
    if kind == "bowed":
        p = rng.uniform(0.8, 1.4)
        return _Timbre(kind, k, k**-p, np.zeros(len(k)), rng.uniform(0.05, 0.2),
                       rng.uniform(0.08, 0.25), 0.0, vibrato_rate=rng.uniform(4.5, 6.5),
                       vibrato_depth=rng.uniform(0.002, 0.008), noise=rng.uniform(0.0, 0.08))
    if kind == "wind":
        h = np.arange(1, 6, dtype=np.float64)
        amps = np.array([1.0, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.3), rng.uniform(0.02, 0.1),
                         rng.uniform(0.0, 0.05)])
        return _Timbre(kind, h, amps, np.zeros(5), rng.uniform(0.03, 0.1), rng.uniform(0.05, 0.15),
                       0.0, vibrato_rate=rng.uniform(4.0, 6.0),
                       vibrato_depth=rng.uniform(0.0, 0.004), noise=rng.uniform(0.03, 0.15))
    if kind == "fmpiano":
        return _Timbre(kind, np.ones(1), np.ones(1), np.array([rng.uniform(1.0, 3.0)]), 0.002,
                       0.08, 0.0, fm_index=rng.uniform(1.0, 4.0),
                       fm_ratio=float(rng.choice([1.0, 2.0, 3.0, 0.5])),
                       fm_decay=rng.uniform(3.0, 9.0))
    if kind == "mallet":
        r = np.array([1.0, rng.uniform(3.9, 4.05), rng.uniform(9.0, 10.0)])
        amps = np.array([1.0, rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.15)])
        d = rng.uniform(3.0, 8.0)
        return _Timbre(kind, r, amps, np.array([d, 2.5 * d, 5 * d]), 0.001, 0.05, 0.0,
                       noise=rng.uniform(0.0, 0.2))
    # square-ish synth lead
    h = np.arange(1, 24, 2, dtype=np.float64)
    p = rng.uniform(1.0, 1.6)
    return _Timbre("square", h, h**-p, np.zeros(len(h)), rng.uniform(0.005, 0.03),
                   rng.uniform(0.03, 0.1), rng.uniform(0.0, 1.0),
                   vibrato_rate=rng.uniform(4.0, 6.5), vibrato_depth=rng.uniform(0.0, 0.004))


def _render_note(
    rng: np.random.Generator, tb: _Timbre, freq: float, hold: float, sr: int
) -> np.ndarray:
    """One note held for ``hold`` seconds, plus its release (or natural decay) tail."""
    decaying = tb.kind in ("pluck", "bell", "fmpiano", "mallet")
    if decaying:
        slowest = float(np.min(tb.decays[tb.decays > 0])) if np.any(tb.decays > 0) else 2.0
        length = hold + min(4.0 / slowest, 2.5) if tb.kind == "bell" else hold + tb.release
    else:
        length = hold + tb.release
    n = max(8, int(length * sr))
    t = np.arange(n) / sr
    env = np.clip(t / tb.attack, 0.0, 1.0)
    if tb.kind != "bell":
        env *= np.clip(1.0 - (t - hold) / tb.release, 0.0, 1.0)  # damped at note off
    else:
        env *= np.clip(1.0 - (t - (length - 0.05)) / 0.05, 0.0, 1.0)
    if tb.sustain_decay:
        env *= np.exp(-tb.sustain_decay * t)
    if tb.vibrato_depth:
        onset = np.clip((t - 0.15) / 0.3, 0.0, 1.0)
        vib = 1.0 + tb.vibrato_depth * onset * np.sin(
            2 * np.pi * tb.vibrato_rate * t + rng.uniform(0, 6.3)
        )
        base = 2 * np.pi * freq * np.cumsum(vib) / sr
    else:
        base = 2 * np.pi * freq * t
    if tb.kind == "fmpiano":
        idx = tb.fm_index * np.exp(-tb.fm_decay * t)
        y = np.sin(base + idx * np.sin(tb.fm_ratio * base)) * np.exp(-tb.decays[0] * t)
        return (y * env).astype(np.float64)
    keep = tb.ratios * freq < 0.45 * sr
    if not np.any(keep):
        return np.zeros(n)
    r, a, d = tb.ratios[keep], tb.amps[keep], tb.decays[keep]
    ph = rng.uniform(0, 2 * np.pi, len(r))
    partials = np.sin(r[:, None] * base[None, :] + ph[:, None])
    if np.any(d > 0):
        partials *= np.exp(-d[:, None] * t[None, :])
    y = a @ partials
    if tb.noise:
        nz = rng.standard_normal(n)
        if tb.kind in ("pluck", "mallet"):
            y += tb.noise * nz * np.exp(-t / 0.01)
        else:
            y += tb.noise * nz * np.convolve(np.abs(y), np.ones(32) / 32, mode="same")
    return y * env


def _drum_kit(rng: np.random.Generator, sr: int) -> dict[str, np.ndarray]:
    def t_of(sec: float) -> np.ndarray:
        return np.arange(int(sec * sr)) / sr

    t = t_of(0.4)
    f_start, f_end = rng.uniform(100, 180), rng.uniform(40, 60)
    fk = f_end + (f_start - f_end) * np.exp(-t / rng.uniform(0.02, 0.06))
    kick = np.sin(2 * np.pi * np.cumsum(fk) / sr) * np.exp(-t / rng.uniform(0.08, 0.2))
    t = t_of(0.3)
    nz = _coloured_noise(rng, len(t), sr, rng.uniform(0.0, 1.0))
    snare = (nz * rng.uniform(0.5, 1.0) + np.sin(2 * np.pi * rng.uniform(160, 240) * t)) * np.exp(
        -t / rng.uniform(0.04, 0.1)
    )
    t = t_of(0.12)
    hn = np.diff(rng.standard_normal(len(t) + 1))
    hat = hn * np.exp(-t / rng.uniform(0.01, 0.04)) * 0.5
    return {"kick": kick, "snare": snare, "hat": hat}


def music_clip(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """A music-like clip: float32 mono, ``round(seconds * sample_rate)`` samples in [-1, 1]."""
    sr = int(sample_rate)
    n = max(1, int(round(seconds * sr)))
    tempo = rng.uniform(60.0, 170.0)
    beat = 60.0 / tempo
    meter = 3 if rng.random() < 0.2 else 4
    scale = _SCALES[rng.integers(len(_SCALES))]
    root = int(rng.integers(45, 58))  # A2..G#3
    style = rng.choice(["solo", "duo", "band", "chords", "sparse"], p=[0.25, 0.25, 0.2, 0.15, 0.15])
    start = rng.uniform(0.0, 0.4) if rng.random() < 0.5 else 0.0
    offset = start - rng.uniform(0.0, beat * meter) * (rng.random() < 0.5)
    n_bars = int(np.ceil((seconds - offset) / (beat * meter))) + 1
    # Chord progression: one diatonic chord (scale-degree triad) per bar or half-bar.
    prog_choices = [0, 3, 4, 5, 1, 2] if len(scale) == 7 else [0, 1, 2, 3, 4]
    chord_per = meter * (0.5 if rng.random() < 0.25 and meter == 4 else 1.0)
    chords = [
        int(rng.choice(prog_choices, p=_chord_probs(len(prog_choices))))
        for _ in range(int(np.ceil(n_bars * meter / chord_per)) + 1)
    ]

    def deg_midi(deg: int, octave_base: int) -> int:
        o, i = divmod(deg, len(scale))
        return octave_base + 12 * o + scale[i]

    layers: list[tuple[np.ndarray, float]] = []
    melody_like = style in ("solo", "duo", "band", "sparse")
    if melody_like:
        kinds = list(_TIMBRES)
        if style == "sparse":
            kinds = ["pluck", "bell", "fmpiano", "mallet", "wind", "bowed"]
        tb = _timbre(rng, str(rng.choice(kinds)))
        buf = np.zeros(n)
        p_rest = rng.uniform(0.35, 0.7) if style == "sparse" else rng.uniform(0.0, 0.35)
        durs = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
        w = np.array([1, 4, 5, 2, 3, 1, 1], dtype=np.float64)
        if style == "sparse" or tempo > 130:
            w = w * np.array([0, 0.5, 1, 1, 1.5, 1.5, 1.5])
        w /= w.sum()
        octave = root + 12 * int(rng.integers(0, 3))
        legato = rng.uniform(0.5, 1.0)
        deg = int(rng.integers(0, len(scale)))
        tb_pos = offset
        while tb_pos < seconds:
            d = float(rng.choice(durs, p=w)) * beat
            if rng.random() < p_rest:
                tb_pos += min(d * (2.0 if style == "sparse" else 1.0), max(0.8, beat))
                continue
            step = int(rng.choice(np.arange(-3, 4), p=_STEP_P))
            deg = int(np.clip(deg + step, -3, 2 * len(scale)))
            vel = rng.uniform(0.5, 1.0)
            note = _render_note(rng, tb, _hz(deg_midi(deg, octave)), d * legato, sr) * vel
            _add_at(buf, int(round(tb_pos * sr)), note)
            tb_pos += d
        layers.append((buf, 1.0))
    if style in ("duo", "band", "chords"):
        accomp = rng.choice(["pad", "strum", "arp", "bass"]) if style == "duo" else None
        kinds_c = ["organ", "bowed", "wind"] if accomp == "pad" else ["pluck", "fmpiano", "mallet"]
        if style != "duo":
            accomp = str(rng.choice(["pad", "strum", "arp"]))
            kinds_c = ["organ", "bowed", "wind"]
            if accomp != "pad":
                kinds_c = ["pluck", "fmpiano", "organ"]
        tb = _timbre(rng, str(rng.choice(kinds_c)))
        buf = np.zeros(n)
        base_oct = root + 12 * int(rng.integers(0, 2))
        for ci, cdeg in enumerate(chords):
            c0 = offset + ci * chord_per * beat
            if c0 > seconds:
                break
            if rng.random() < (0.25 if style == "chords" else 0.1):
                continue  # a silent bar
            tones = [cdeg, cdeg + 2, cdeg + 4] + ([cdeg + 6] if rng.random() < 0.2 else [])
            if accomp == "bass":
                hits = [(c0 + b * beat, beat * 0.9, [cdeg]) for b in range(0, int(chord_per), 2)]
                freq_oct = root - 12
            elif accomp == "pad":
                hits = [(c0, chord_per * beat * 0.98, tones)]
                freq_oct = base_oct
            elif accomp == "strum":
                step = int(rng.choice([1, 2]))
                hits = [
                    (c0 + b * beat, beat * step * 0.8, tones)
                    for b in range(0, int(chord_per), step)
                ]
                freq_oct = base_oct
            else:  # arpeggio in eighths
                seq = tones + tones[1:-1][::-1]
                hits = [
                    (c0 + j * beat / 2, beat / 2 * 0.9, [seq[j % len(seq)]])
                    for j in range(int(2 * chord_per))
                ]
                freq_oct = base_oct
            for h0, hd, hts in hits:
                if h0 > seconds:
                    break
                vel = rng.uniform(0.5, 1.0) / np.sqrt(len(hts))
                for dg in hts:
                    note = _render_note(rng, tb, _hz(deg_midi(dg, freq_oct)), hd, sr) * vel
                    strum = int(rng.integers(0, int(0.01 * sr) + 1))
                    _add_at(buf, int(round(h0 * sr)) + strum, note)
        layers.append((buf, rng.uniform(0.3, 0.8) if melody_like else 1.0))
    if style == "band" and rng.random() < 0.8:
        tb = _timbre(rng, str(rng.choice(["pluck", "organ", "square"])))
        buf = np.zeros(n)
        for ci, cdeg in enumerate(chords):
            c0 = offset + ci * chord_per * beat
            for b in range(int(chord_per)):
                if rng.random() < 0.3:
                    continue
                h0 = c0 + b * beat
                if h0 > seconds:
                    break
                _add_at(buf, int(round(h0 * sr)),
                        _render_note(rng, tb, _hz(deg_midi(cdeg, root - 12)), beat * 0.8, sr))
        layers.append((buf, rng.uniform(0.3, 0.8)))
    drums = rng.random() < (0.7 if style == "band" else 0.15)
    if drums:
        kit = _drum_kit(rng, sr)
        buf = np.zeros(n)
        p_hat = rng.uniform(0.4, 1.0)
        eighths = int((seconds - offset) / (beat / 2)) + 1
        for j in range(eighths):
            t0 = offset + j * beat / 2
            pos_in_bar = j % (2 * meter)
            s = int(round(t0 * sr))
            if pos_in_bar == 0 or (meter == 4 and pos_in_bar == 4 and rng.random() < 0.8):
                _add_at(buf, s, kit["kick"] * rng.uniform(0.8, 1.0))
            if pos_in_bar in (2, 6) and rng.random() < 0.9:
                _add_at(buf, s, kit["snare"] * rng.uniform(0.6, 1.0))
            if rng.random() < p_hat:
                _add_at(buf, s, kit["hat"] * rng.uniform(0.3, 1.0))
        layers.append((buf, rng.uniform(0.3, 1.0)))

    x = np.zeros(n)
    for buf, g in layers:
        r = _rms(buf)
        if r > 1e-9:
            x += g * buf / r
    if rng.random() < 0.3:  # dynamics: a slow swell or fade across the clip
        pts = [(tt, rng.uniform(0.25, 1.0)) for tt in np.linspace(0, seconds, 3)]
        x *= _interp(np.arange(n) / sr, pts)
    return _finish(rng, x, sr)


def _chord_probs(k: int) -> np.ndarray:
    p = np.linspace(2.0, 1.0, k)
    return p / p.sum()


# --------------------------------------------------------------------------------------------
# Shared recording chain
# --------------------------------------------------------------------------------------------


def _finish(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Reverb, background noise, band-limiting and gain; the same distributions for both classes."""
    n = len(x)
    x = np.nan_to_num(x)
    if _rms(x) < 1e-9:  # nothing sounded (a very short clip); keep it as quiet noise
        x = 1e-3 * rng.standard_normal(n)
    x = x / _rms(x)
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.2, 1.2)
        m = max(2, int(min(rt60, 1.0) * sr))
        ti = np.arange(m) / sr
        ir = rng.standard_normal(m) * np.exp(-6.9 * ti / rt60)
        ir[0] = 0.0
        ir *= rng.uniform(0.1, 0.6) / np.sqrt(np.sum(ir**2))
        ir[0] = 1.0
        nfft = 1 << int(np.ceil(np.log2(n + m)))
        x = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[:n]
        x = x / _rms(x)
    snr_db = rng.uniform(8.0, 40.0)
    kind = rng.integers(4)
    if kind < 3:
        bg = _coloured_noise(rng, n, sr, float(kind))
    else:  # mains hum with a little hiss
        ts = np.arange(n) / sr
        mains = 50.0 if rng.random() < 0.5 else 60.0
        bg = sum(
            rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * mains * h * ts + rng.uniform(0, 6.3))
            for h in range(1, 6)
            if mains * h < 0.45 * sr
        ) + 0.3 * rng.standard_normal(n)
        bg = bg / _rms(bg)
    x = x + bg * _db(-snr_db)
    if rng.random() < 0.5:  # band-limiting: low-pass, sometimes with a high-pass too
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1.0 / sr)
        fc = min(np.exp(rng.uniform(np.log(1800.0), np.log(7000.0))), 0.45 * sr)
        order = rng.integers(2, 7)
        h = 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))
        if rng.random() < 0.4:
            fh = rng.uniform(80.0, 350.0)
            h = h / np.sqrt(1.0 + (fh / np.maximum(f, 1e-3)) ** 4)
        x = np.fft.irfft(spec * h, n=n)
    level = _db(rng.uniform(-38.0, -16.0))
    x = x * (level / _rms(x))
    peak = float(np.max(np.abs(x)))
    if peak > 0.98:
        x = x * (0.98 / peak)
    return np.nan_to_num(x).astype(np.float32)
