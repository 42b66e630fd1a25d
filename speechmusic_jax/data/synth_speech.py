"""Speech-like clips for the synthetic corpus (generator version 3).

A source-filter model driven by a small phonology, so that the clips carry what running speech
has and music has not: 3-8 syllables a second, each an onset of 0-2 consonants, a vowel and an
optional coda; formants that move all the time (consonant loci, vowel targets, diphthongs);
a pitch that never holds a note (phrase declination, accents on stressed syllables, rises and
falls inside syllables, creak at phrase ends); voicing that keeps switching off for plosives and
voiceless fricatives; and pauses of natural lengths, from none to half a second.

- **Source**: a Rosenberg-like glottal pulse with per-period jitter and shimmer, breath noise,
  aspiration (noise through the vocal tract) for /h/ and voiceless plosive release, creaky voice.
- **Consonants** (by manner and place, with a common-consonant frequency): plosives /p b t d k g/
  (closure, voice bar, burst shaped by place, aspiration), fricatives /f v th s z sh x h/ (noise
  bands per place), nasals /m n ng/ (murmur formants), liquids /l r/ and glides /w j/ (formant
  glides); each place has its F2 locus, so formant transitions follow the consonant.
- **Speakers**: men, women and children (pitch, vocal-tract length), each with their own open
  quotient, jitter, shimmer, breathiness, speaking rate and pitch range.
- **Styles**: read sentences, conversation (changing rate, filled pauses "uh"/"um", hesitation),
  fast continuous speech, isolated words with pauses, and acted character voices (wide pitch
  swings, drawn-out vowels); sometimes a second talker overlaps.

The recording conditions (room, noise, channel, level) come afterwards, from
:mod:`speechmusic_jax.data.synth_channel`, the same for both classes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from speechmusic_jax.data.synth_channel import record
from speechmusic_jax.data.synth_dsp import (
    frame_centres,
    interp,
    istft,
    n_fft_for,
    resonator_gain,
    rms,
    stft,
)

# Adult (male-scale) formant targets F1..F4 in Hz.
VOWELS = np.array(
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
        [300, 1750, 2200, 3300],  # y (rounded front)
        [420, 1600, 2300, 3400],  # ø
    ],
    dtype=np.float64,
)
_SCHWA = 10

# F2 locus (Hz, male scale) of each place of articulation: where F2 starts or ends next to it.
_LOCUS = {"labial": 800.0, "labiodental": 1000.0, "dental": 1400.0, "alveolar": 1750.0,
          "postalveolar": 2000.0, "velar": 0.0, "glottal": 0.0}  # 0: follows the vowel

# (manner, place, voiced, relative frequency in running speech)
CONSONANTS: tuple[tuple[str, str, bool, float], ...] = (
    ("plosive", "labial", False, 2.0), ("plosive", "labial", True, 1.5),
    ("plosive", "alveolar", False, 5.0), ("plosive", "alveolar", True, 3.5),
    ("plosive", "velar", False, 3.0), ("plosive", "velar", True, 1.0),
    ("fricative", "labiodental", False, 1.5), ("fricative", "labiodental", True, 1.5),
    ("fricative", "dental", False, 1.0), ("fricative", "alveolar", False, 4.5),
    ("fricative", "alveolar", True, 2.0), ("fricative", "postalveolar", False, 1.2),
    ("fricative", "velar", False, 0.8), ("fricative", "glottal", False, 1.5),
    ("nasal", "labial", True, 2.5), ("nasal", "alveolar", True, 5.0),
    ("nasal", "velar", True, 1.0), ("liquid", "l", True, 3.0), ("liquid", "r", True, 4.0),
    ("glide", "w", True, 1.5), ("glide", "j", True, 1.0),
)
_CONS_P = np.array([c[3] for c in CONSONANTS]) / sum(c[3] for c in CONSONANTS)
_SONORANT = np.array([c[0] in ("liquid", "glide") for c in CONSONANTS])
_CODA_OK = np.array([c[0] in ("plosive", "fricative", "nasal", "liquid") and c[1] != "glottal"
                     for c in CONSONANTS])

# Fricative noise per place: (centre Hz, bandwidth Hz, amplitude range), male scale.
_FRICATION = {
    "labiodental": (4000.0, 4500.0, (0.04, 0.12)),
    "dental": (5000.0, 4500.0, (0.03, 0.1)),
    "alveolar": (5600.0, 2000.0, (0.25, 0.6)),
    "postalveolar": (3100.0, 1400.0, (0.25, 0.5)),
    "velar": (1900.0, 800.0, (0.08, 0.25)),
}
_BURST = {"labial": (900.0, 1500.0), "alveolar": (4200.0, 2500.0), "velar": (0.0, 700.0)}
_NASAL_F2 = {"labial": 1000.0, "alveolar": 1500.0, "velar": 2000.0}
_LIQUID = {"l": np.array([360.0, 1300.0, 2800.0, 3500.0]),
           "r": np.array([400.0, 1150.0, 1600.0, 3300.0]),
           "w": np.array([300.0, 700.0, 2200.0, 3300.0]),
           "j": np.array([280.0, 2200.0, 3000.0, 3500.0])}


@dataclasses.dataclass(frozen=True)
class Speaker:
    f0: float  # typical pitch, Hz
    fscale: float  # formant scale (shorter vocal tract: higher)
    oq: float  # open quotient of the glottal pulse
    jitter: float
    shimmer: float
    breath: float
    rate: float  # syllables per second
    intonation: float  # pitch accent size, relative
    bandwidth: float  # formant bandwidth scale
    creak: float  # probability of creaky voice at a phrase end


def speaker(rng: np.random.Generator) -> Speaker:
    kind = rng.choice(3, p=[0.42, 0.42, 0.16])  # man, woman, child
    f0 = (rng.uniform(80, 150), rng.uniform(150, 260), rng.uniform(220, 380))[kind]
    fscale = (rng.uniform(0.9, 1.05), rng.uniform(1.08, 1.22), rng.uniform(1.2, 1.4))[kind]
    return Speaker(
        f0=f0, fscale=fscale, oq=rng.uniform(0.4, 0.75), jitter=rng.uniform(0.003, 0.02),
        shimmer=rng.uniform(0.02, 0.12), breath=rng.uniform(0.0, 0.3),
        rate=rng.uniform(3.0, 7.5), intonation=rng.uniform(0.08, 0.5),
        bandwidth=rng.uniform(0.8, 1.6), creak=rng.uniform(0.0, 0.6),
    )


class _Tracks:
    """Breakpoint lists for the control signals of one talker."""

    def __init__(self) -> None:
        self.voice: list[tuple[float, float]] = [(0.0, 0.0)]
        self.asp: list[tuple[float, float]] = [(0.0, 0.0)]  # noise through the vocal tract
        self.noise: list[tuple[float, float]] = [(0.0, 0.0)]  # frication, bursts
        self.noise_fc: list[tuple[float, float]] = []
        self.noise_bw: list[tuple[float, float]] = []
        self.formants: list[tuple[float, np.ndarray]] = []
        self.accents: list[tuple[float, float, float]] = []  # time, height, width
        self.phrases: list[tuple[float, float, float, float]] = []  # start, end, f0 start, end
        self.creak: list[tuple[float, float]] = [(0.0, 0.0)]

    def env(self, track: list[tuple[float, float]], t0: float, t1: float, amp: float,
            ramp: float, end_amp: float | None = None) -> None:
        ramp = min(ramp, 0.45 * (t1 - t0))
        end = amp if end_amp is None else end_amp
        track += [(t0, 0.0), (t0 + ramp, amp), (t1 - ramp, end), (t1, 0.0)]

    def band(self, t0: float, t1: float, amp: float, fc: float, bw: float, ramp: float) -> None:
        self.env(self.noise, t0, t1, amp, ramp, 0.8 * amp)
        self.noise_fc += [(t0, fc), (t1, fc)]
        self.noise_bw += [(t0, bw), (t1, bw)]


def _consonant(rng: np.random.Generator, tr: _Tracks, sp: Speaker, t: float, tempo: float,
               idx: int, vowel: np.ndarray, nyq: float) -> tuple[float, np.ndarray | None]:
    """Add consonant ``idx`` at ``t``; return its end time and the formants it leaves from
    (or arrives at), or None when it has no formant target of its own."""
    manner, place, voiced, _ = CONSONANTS[idx]
    s = sp.fscale
    locus = _LOCUS.get(place, 0.0) * s or vowel[1] * 1.05
    edge = vowel.copy()
    edge[1] = 0.45 * vowel[1] + 0.55 * locus
    edge[0] = 0.55 * vowel[0]
    if manner == "plosive":
        closure = rng.uniform(0.035, 0.08) * tempo
        if voiced:  # a voice bar through the closure
            tr.env(tr.voice, t, t + closure, rng.uniform(0.05, 0.15), 0.01)
            tr.formants += [(t, np.array([200.0, 1000.0, 2400.0, 3300.0]) * s)]
        fc, bw = _BURST[place]
        fc = min((fc * s) or vowel[1] * 1.1 * rng.uniform(0.9, 1.2), 0.85 * nyq)
        burst = rng.uniform(0.006, 0.018)
        tr.band(t + closure, t + closure + burst, rng.uniform(0.1, 0.35), fc, bw * s, 0.002)
        end = t + closure + burst
        if not voiced:
            vot = rng.uniform(0.03, 0.075) * np.sqrt(tempo)
            tr.env(tr.asp, end - 0.004, end + vot, rng.uniform(0.15, 0.4), 0.01, 0.3)
            end += vot
        return end, edge
    if manner == "fricative":
        d = rng.uniform(0.06, 0.13) * tempo
        if place == "glottal":
            tr.env(tr.asp, t, t + d, rng.uniform(0.2, 0.45), 0.02)
            return t + d, None
        fc0, bw0, (a0, a1) = _FRICATION[place]
        fc = min(fc0 * np.sqrt(s) * rng.uniform(0.85, 1.15), 0.85 * nyq)
        tr.band(t, t + d, rng.uniform(a0, a1), fc, bw0 * rng.uniform(0.8, 1.2), 0.012)
        if voiced:
            tr.env(tr.voice, t, t + d, rng.uniform(0.15, 0.3), 0.015)
        return t + d, edge
    if manner == "nasal":
        d = rng.uniform(0.04, 0.09) * tempo
        murmur = np.array([250.0, _NASAL_F2[place], 2500.0, 3300.0]) * s
        tr.env(tr.voice, t, t + d, rng.uniform(0.25, 0.4), 0.01)
        tr.formants += [(t, murmur), (t + d, murmur)]
        return t + d, edge
    d = rng.uniform(0.03, 0.07) * tempo  # liquid or glide
    target = _LIQUID[place] * s
    tr.env(tr.voice, t, t + d, rng.uniform(0.45, 0.7), 0.01, 0.8)
    tr.formants += [(t, target), (t + 0.6 * d, target)]
    return t + d, None


def _syllable(rng: np.random.Generator, tr: _Tracks, sp: Speaker, t: float, tempo: float,
              stressed: bool, final: bool, nyq: float, drawl: float = 1.0) -> float:
    """Add one syllable starting at ``t``; return its end. ``drawl`` > 1 stretches stressed
    and phrase-final vowels (acted, expressive speech)."""
    s = sp.fscale
    vowel = VOWELS[rng.integers(len(VOWELS))] * s * rng.uniform(0.93, 1.07, 4)
    if not stressed and rng.random() < 0.4:  # reduced vowels drift to schwa
        vowel = 0.5 * vowel + 0.5 * VOWELS[_SCHWA] * s
    n_onset = rng.choice(3, p=[0.18, 0.67, 0.15])
    start_f = None
    for k in range(n_onset):
        if k == 1:  # second element of a cluster: a liquid or glide
            idx = int(rng.choice(np.flatnonzero(_SONORANT)))
        else:
            idx = int(rng.choice(len(CONSONANTS), p=_CONS_P))
        t, edge = _consonant(rng, tr, sp, t, tempo, idx, vowel, nyq)
        start_f = edge if edge is not None else start_f
    v_dur = rng.uniform(0.05, 0.12) * tempo * (1.5 if stressed else 1.0) * (1.6 if final else 1.0)
    if stressed or final:
        v_dur *= drawl
    v0, v1 = t, t + v_dur
    peak = rng.uniform(0.7, 1.0) if stressed else rng.uniform(0.3, 0.75)
    att = v_dur * rng.uniform(0.1, 0.3)
    tr.voice += [(v0, 0.0), (v0 + att, peak),
                 (v1 - v_dur * rng.uniform(0.1, 0.3), peak * rng.uniform(0.5, 0.95)), (v1, 0.0)]
    mid = v0 + v_dur * rng.uniform(0.3, 0.6)
    tr.formants += [(v0, vowel if start_f is None else start_f), (mid, vowel)]
    if rng.random() < 0.25:  # diphthong
        tr.formants.append((v1, VOWELS[rng.integers(len(VOWELS))] * s))
    else:
        tr.formants.append((v1, vowel * rng.uniform(0.95, 1.05, 4)))
    if stressed:  # a pitch accent: mostly a rise-fall peak, sometimes a dip
        sign = 1.0 if rng.random() < 0.8 else -0.6
        tr.accents.append((mid, sign * rng.uniform(0.3, 1.0) * sp.intonation,
                           rng.uniform(0.05, 0.14)))
    else:  # a small movement inside the syllable
        tr.accents.append((mid, rng.uniform(-0.25, 0.25) * sp.intonation, v_dur * 0.5 + 0.01))
    t = v1
    if rng.random() < 0.45:
        idx = int(rng.choice(np.flatnonzero(_CODA_OK)))
        t, _ = _consonant(rng, tr, sp, t, tempo * 0.85, idx, vowel, nyq)
    return t


def _filled_pause(rng: np.random.Generator, tr: _Tracks, sp: Speaker, t: float) -> float:
    """"uh" or "um": a long central vowel on a low, flat pitch."""
    d = rng.uniform(0.18, 0.5)
    vowel = VOWELS[_SCHWA if rng.random() < 0.6 else 11] * sp.fscale
    tr.env(tr.voice, t, t + d, rng.uniform(0.35, 0.6), 0.04)
    tr.formants += [(t, vowel), (t + d, vowel)]
    tr.phrases.append((t, t + d, sp.f0 * 0.92, sp.f0 * 0.88))
    if rng.random() < 0.4:  # "um": a nasal ending
        m = np.array([250.0, 1000.0, 2500.0, 3300.0]) * sp.fscale
        tr.formants += [(t + 0.7 * d, vowel), (t + 0.85 * d, m), (t + d, m)]
    return t + d


def _plan(rng: np.random.Generator, tr: _Tracks, sp: Speaker, seconds: float, sr: int) -> None:
    """Lay out phrases, syllables and pauses of one talker over ``seconds``."""
    nyq = 0.5 * sr
    style = rng.choice(["read", "conversation", "fast", "isolated", "acted"],
                       p=[0.3, 0.3, 0.15, 0.1, 0.15])
    if style == "acted":  # character voices: wide pitch swings, drawn-out vowels
        sp = dataclasses.replace(sp, intonation=sp.intonation * rng.uniform(1.5, 3.0),
                                 f0=sp.f0 * rng.uniform(0.9, 1.4))
    t = -rng.uniform(0.0, 0.4)  # the clip may begin mid-syllable
    if rng.random() < 0.3:
        t = rng.uniform(0.0, 0.3)
    while t < seconds:
        if style == "isolated":
            n_syll = int(rng.integers(1, 4))
        elif style == "acted":
            n_syll = int(rng.integers(2, 11))
        elif style == "fast":
            n_syll = int(rng.integers(8, 25))
        else:
            n_syll = int(rng.integers(3, 16))
        tempo = 5.0 / sp.rate * (rng.uniform(0.8, 1.25) if style == "conversation" else 1.0)
        p_start = t
        stress_every = int(rng.integers(2, 4))
        for j in range(n_syll):
            stressed = (j % stress_every == 0) != (rng.random() < 0.2)
            drawl = rng.uniform(1.0, 3.5) if style == "acted" else 1.0
            t = _syllable(rng, tr, sp, t, tempo, stressed, j == n_syll - 1, nyq, drawl)
            if style == "conversation" and rng.random() < 0.03:
                t = _filled_pause(rng, tr, sp, t + rng.uniform(0.0, 0.1))
        f0_start = sp.f0 * rng.uniform(1.0, 1.3)
        f0_end = sp.f0 * rng.uniform(0.7, 0.95)
        if rng.random() < 0.15:  # question-like final rise
            tr.accents.append((t - 0.1, rng.uniform(0.2, 0.5), 0.12))
        elif rng.random() < sp.creak:
            tr.env(tr.creak, max(p_start, t - rng.uniform(0.1, 0.3)), t, 1.0, 0.05)
        tr.phrases.append((p_start, t, f0_start, f0_end))
        if style == "fast":
            pause = rng.uniform(0.0, 0.2)
        elif style == "isolated":
            pause = rng.uniform(0.15, 0.7)
        else:
            pause = float(np.clip(rng.lognormal(np.log(0.22), 0.6), 0.03, 1.0))
        if style == "conversation" and rng.random() < 0.15:
            t = _filled_pause(rng, tr, sp, t + 0.05)
        if pause > 0.3 and rng.random() < 0.35:  # an audible breath
            tr.band(t + 0.04, t + pause - 0.04, rng.uniform(0.01, 0.04), 1400 * sp.fscale, 1800,
                    0.08)
        t += pause


def _render(rng: np.random.Generator, tr: _Tracks, sp: Speaker, n: int, sr: int) -> np.ndarray:
    ts = np.arange(n) / sr
    # Pitch: per-phrase declination, accents, slow wander, per-period jitter, creak.
    f0 = interp(ts, [p for a, b, fa, fb in tr.phrases for p in ((a, fa), (b, fb))], sp.f0)
    if tr.accents:
        acc = np.asarray(tr.accents)
        tc = ts[::64]
        bump = np.sum(
            acc[:, 1:2] * np.exp(-0.5 * ((tc[None, :] - acc[:, :1]) / acc[:, 2:3]) ** 2), axis=0
        )
        f0 = f0 * np.exp(np.interp(ts, tc, bump))
    wander = np.zeros(n)
    for _ in range(3):
        depth, rate, ph = rng.uniform(0.005, 0.03), rng.uniform(0.3, 2.0), rng.uniform(0, 6.3)
        wander += depth * np.sin(2 * np.pi * rate * ts + ph)
    creak = np.clip(interp(ts, tr.creak), 0.0, 1.0)
    f0 = f0 * (1.0 + wander) * (1.0 - 0.45 * creak)
    f0 = np.clip(f0, 40.0, 0.45 * sr)
    phase = np.cumsum(f0) / sr
    period = np.floor(phase).astype(np.int64)
    n_periods = int(period[-1]) + 2
    jitter = sp.jitter + 0.12 * creak[np.searchsorted(period, np.arange(n_periods)).clip(0, n - 1)]
    jit = 1.0 + jitter * rng.standard_normal(n_periods)
    phase = np.cumsum(f0 * np.clip(jit[period], 0.5, 1.5)) / sr
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
    src /= rms(src)
    src += sp.breath * rng.standard_normal(n) * (flow + 0.2)
    voice_amp = np.clip(interp(ts, tr.voice), 0.0, None)
    src *= voice_amp
    src += 2.0 * rng.standard_normal(n) * np.clip(interp(ts, tr.asp), 0.0, None)

    # Time-varying vocal tract: a cascade of formant resonances per STFT frame.
    n_fft = n_fft_for(sr)
    centres = frame_centres(n, n_fft) / sr
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    if tr.formants:
        ft = np.array([p[0] for p in tr.formants])
        fv = np.stack([p[1] for p in tr.formants])
        order = np.argsort(ft, kind="stable")
        fmt = np.stack([np.interp(centres, ft[order], fv[order, k]) for k in range(4)], axis=1)
    else:
        fmt = np.tile(VOWELS[_SCHWA] * sp.fscale, (len(centres), 1))
    fmt = np.concatenate([fmt, np.full((len(centres), 1), 4500.0 * sp.fscale)], axis=1)
    bws = np.array([70.0, 100.0, 150.0, 220.0, 400.0]) * sp.bandwidth
    gain = resonator_gain(freqs, fmt, bws)
    voiced = istft(stft(src, n_fft) * gain, n_fft, n)
    loud = voice_amp > 0.5 * max(float(voice_amp.max()), 1e-6)
    voiced /= rms(voiced[loud]) if loud.any() else rms(voiced)

    # Frication and bursts: noise band-shaped per frame.
    fc = np.clip(interp(centres, tr.noise_fc, 3000.0), 100.0, 0.45 * sr)
    bw = np.maximum(interp(centres, tr.noise_bw, 2000.0), 100.0)
    shape = 1.0 / (1.0 + ((freqs[None, :] - fc[:, None]) / bw[:, None]) ** 2) ** 2
    shape /= np.sqrt(np.mean(shape**2, axis=1, keepdims=True))
    noise = istft(stft(rng.standard_normal(n), n_fft) * shape, n_fft, n)
    noise *= np.clip(interp(ts, tr.noise), 0.0, None)
    return voiced + noise * rng.uniform(0.7, 1.4)


def talker(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """One dry talker: float64, ``round(seconds * sr)`` samples, not normalised."""
    n = max(1, int(round(seconds * sr)))
    sp = speaker(rng)
    tr = _Tracks()
    _plan(rng, tr, sp, seconds, sr)
    return _render(rng, tr, sp, n, sr)


def speech_clip(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    """A speech-like clip: float32 mono, ``round(seconds * sample_rate)`` samples in [-1, 1]."""
    sr = int(sample_rate)
    x = talker(rng, seconds, sr)
    x = x / rms(x)
    if rng.random() < 0.12:  # a second talker, overlapping for a stretch
        other = talker(rng, seconds, sr)
        ts = np.arange(len(x)) / sr
        t0 = rng.uniform(0.0, 0.7) * seconds
        t1 = t0 + rng.uniform(0.3, 1.0) * (seconds - t0)
        share = interp(ts, [(t0 - 0.05, 0.0), (t0, 1.0), (t1, 1.0), (t1 + 0.05, 0.0)])
        x = x + other / rms(other) * share * 10.0 ** (-rng.uniform(2.0, 10.0) / 20.0)
    return record(rng, x, sr)
