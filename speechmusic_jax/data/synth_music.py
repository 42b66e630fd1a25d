"""Music-like clips for the synthetic corpus (generator version 3).

Notes on a tempo grid in a key (six scales, 3/4 or 4/4, 60-170 BPM, sometimes a modulation to
another key part-way), from twelve timbres: plucked, organ, bell, bowed with vibrato, wind,
FM piano, mallet, square lead, sawtooth brass/lead, detuned synth pad, overdriven guitar, and
a sung voice (steady notes with vibrato, a vowel per note: the closest music comes to speech).
Nine styles combine them: solo melody, duo, band, chords, sparse (many rests), song (a voice
over accompaniment), electronic (synth lead, pad, sawtooth bass, four-on-the-floor drums),
rock (overdriven strummed chords, bass, drums) and beat (dense sixteenth-note drums with noise
stabs, as in industrial or breakbeat game music). Notes run legato or staccato; some bars rest;
dynamics swell or fade. Drums come with most band styles and few others.

The recording conditions come afterwards, from :mod:`speechmusic_jax.data.synth_channel`, the
same for both classes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from speechmusic_jax.data.synth_channel import record
from speechmusic_jax.data.synth_dsp import add_at, coloured_noise, interp, resonator_gain, rms
from speechmusic_jax.data.synth_speech import VOWELS

_SCALES = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
    (0, 2, 4, 7, 9),  # major pentatonic
    (0, 2, 3, 5, 7, 8, 11),  # harmonic minor
    (0, 2, 4, 5, 7, 9, 10),  # mixolydian
)
_STEP_P = np.array([0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05])  # melodic steps -3..3 degrees
_TIMBRES = ("pluck", "organ", "bell", "bowed", "wind", "fmpiano", "mallet", "square", "saw",
            "pad", "distguitar", "voice")

_STYLES = ("solo", "duo", "band", "chords", "sparse", "song", "electronic", "rock", "beat")
_STYLE_P = (0.13, 0.14, 0.13, 0.09, 0.09, 0.13, 0.11, 0.09, 0.09)
_DRUMS_P = {"band": 0.7, "rock": 0.9, "electronic": 0.9, "song": 0.5, "beat": 1.0}  # others: 0.12


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
    drive: float = 0.0  # tanh overdrive (distorted guitar)
    voice: bool = False  # partial amplitudes from a sung vowel's formants, chosen per note


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
    if kind == "saw":  # brass or a synth lead: a sawtooth through a soft low-pass
        bright = rng.uniform(4.0, 16.0)
        return _Timbre(kind, k, k**-1.0 * np.exp(-k / bright), np.zeros(len(k)),
                       rng.uniform(0.01, 0.08), rng.uniform(0.05, 0.2), rng.uniform(0.0, 0.5),
                       vibrato_rate=rng.uniform(4.5, 6.5), vibrato_depth=rng.uniform(0.0, 0.005))
    if kind == "pad":  # detuned sawtooth pairs with a slow attack
        det = rng.uniform(0.002, 0.008)
        h = np.arange(1, 13, dtype=np.float64)
        amps = h**-1.2 * np.exp(-h / rng.uniform(3.0, 8.0))
        return _Timbre(kind, np.concatenate([h * (1 - det), h * (1 + det)]),
                       np.concatenate([amps, amps]), np.zeros(2 * len(h)),
                       rng.uniform(0.15, 0.8), rng.uniform(0.3, 1.0), 0.0)
    if kind == "distguitar":  # a plucked string driven into a tanh overdrive
        p = rng.uniform(0.7, 1.2)
        decays = rng.uniform(0.5, 2.0) * (1 + 0.2 * k)
        return _Timbre(kind, k, k**-p, decays, 0.003, 0.05, 0.0, drive=rng.uniform(3.0, 20.0),
                       noise=rng.uniform(0.0, 0.2))
    if kind == "voice":  # a sung vowel: steady notes, vibrato, formants
        return _Timbre(kind, k, k**-1.0, np.zeros(len(k)), rng.uniform(0.03, 0.1),
                       rng.uniform(0.05, 0.2), 0.0, vibrato_rate=rng.uniform(4.5, 6.5),
                       vibrato_depth=rng.uniform(0.006, 0.03), noise=rng.uniform(0.0, 0.06),
                       voice=True)
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
    if tb.voice:  # a vowel per note: formant gain at each harmonic
        scale = freq / 200.0 if freq > 200.0 else 1.0  # high voices: shorter tracts
        vowel = VOWELS[rng.integers(len(VOWELS))] * min(scale ** 0.3, 1.35)
        a = a * resonator_gain(r * freq, vowel, np.array([80.0, 100.0, 150.0, 220.0]))
    ph = rng.uniform(0, 2 * np.pi, len(r))
    partials = np.sin(r[:, None] * base[None, :] + ph[:, None])
    if np.any(d > 0):
        partials *= np.exp(-d[:, None] * t[None, :])
    y = a @ partials
    if tb.drive:
        y = np.tanh(tb.drive * y / (np.max(np.abs(y)) + 1e-9))
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
    nz = coloured_noise(rng, len(t), sr, rng.uniform(0.0, 1.0))
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
    style = str(rng.choice(_STYLES, p=_STYLE_P))
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

    # A key change (modulation) part-way through some clips.
    t_mod = rng.uniform(0.3, 0.8) * seconds if rng.random() < 0.15 else np.inf
    mod = int(rng.choice([-5, -3, -2, 2, 3, 5, 7]))

    def deg_midi(deg: int, octave_base: int, t: float) -> int:
        o, i = divmod(deg, len(scale))
        return octave_base + 12 * o + scale[i] + (mod if t >= t_mod else 0)

    layers: list[tuple[np.ndarray, float]] = []
    melody_like = style in ("solo", "duo", "band", "sparse", "song", "electronic", "rock", "beat")
    if melody_like:
        kinds = list(_TIMBRES)
        if style == "sparse":
            kinds = ["pluck", "bell", "fmpiano", "mallet", "wind", "bowed", "voice"]
        elif style == "song":
            kinds = ["voice"]
        elif style == "electronic":
            kinds = ["square", "saw", "fmpiano", "bell"]
        elif style == "rock":
            kinds = ["distguitar", "saw", "voice", "square"]
        elif style == "beat":
            kinds = ["saw", "square", "distguitar", "bell"]
        tb = _timbre(rng, str(rng.choice(kinds)))
        buf = np.zeros(n)
        p_rest = rng.uniform(0.35, 0.7) if style == "sparse" else rng.uniform(0.0, 0.35)
        durs = np.array([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
        w = np.array([1, 4, 5, 2, 3, 1, 1], dtype=np.float64)
        if style == "sparse" or tempo > 130:
            w = w * np.array([0, 0.5, 1, 1, 1.5, 1.5, 1.5])
        w /= w.sum()
        octave = root + 12 * int(rng.integers(0, 3))
        legato = rng.uniform(0.25, 1.0) if rng.random() < 0.3 else rng.uniform(0.7, 1.0)
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
            note = _render_note(rng, tb, _hz(deg_midi(deg, octave, tb_pos)), d * legato, sr) * vel
            add_at(buf, int(round(tb_pos * sr)), note)
            tb_pos += d
        layers.append((buf, 1.0))
    if style in ("duo", "band", "chords", "song", "electronic", "rock"):
        accomp = rng.choice(["pad", "strum", "arp", "bass"]) if style == "duo" else None
        kinds_c = ["organ", "bowed", "wind", "pad"] if accomp == "pad" else [
            "pluck", "fmpiano", "mallet"]
        if style != "duo":
            accomp = str(rng.choice(["pad", "strum", "arp"]))
            kinds_c = ["organ", "bowed", "wind", "pad"]
            if accomp != "pad":
                kinds_c = ["pluck", "fmpiano", "organ"]
        if style == "electronic":
            kinds_c = ["pad", "square", "saw"]
        elif style == "rock":
            accomp, kinds_c = "strum", ["distguitar"]
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
                    note = _render_note(rng, tb, _hz(deg_midi(dg, freq_oct, h0)), hd, sr) * vel
                    strum = int(rng.integers(0, int(0.01 * sr) + 1))
                    add_at(buf, int(round(h0 * sr)) + strum, note)
        layers.append((buf, rng.uniform(0.3, 0.8) if melody_like else 1.0))
    if style in ("band", "song", "electronic", "rock", "beat") and rng.random() < 0.8:
        bass_kinds = ["saw", "square"] if style == "electronic" else ["pluck", "organ", "square"]
        tb = _timbre(rng, str(rng.choice(bass_kinds)))
        buf = np.zeros(n)
        for ci, cdeg in enumerate(chords):
            c0 = offset + ci * chord_per * beat
            for b in range(int(chord_per)):
                if rng.random() < 0.3:
                    continue
                h0 = c0 + b * beat
                if h0 > seconds:
                    break
                add_at(buf, int(round(h0 * sr)),
                        _render_note(rng, tb, _hz(deg_midi(cdeg, root - 12, h0)), beat * 0.8, sr))
        layers.append((buf, rng.uniform(0.3, 0.8)))
    drums = rng.random() < _DRUMS_P.get(style, 0.12)
    four_on_floor = style in ("electronic", "beat") and rng.random() < 0.6
    if drums:
        layers.append((_drums(rng, n, sr, seconds, offset, beat, meter, four_on_floor,
                              dense=style == "beat"), rng.uniform(0.3, 1.0)))
    if style == "beat":  # noise stabs: band-passed noise bursts on the grid (industrial)
        layers.append((_noise_stabs(rng, n, sr, seconds, offset, beat), rng.uniform(0.3, 0.9)))

    x = np.zeros(n)
    for buf, g in layers:
        r = rms(buf)
        if r > 1e-9:
            x += g * buf / r
    if rng.random() < 0.3:  # dynamics: a slow swell or fade across the clip
        pts = [(tt, rng.uniform(0.25, 1.0)) for tt in np.linspace(0, seconds, 3)]
        x *= interp(np.arange(n) / sr, pts)
    return record(rng, x, sr)


def _drums(rng: np.random.Generator, n: int, sr: int, seconds: float, offset: float,
           beat: float, meter: int, four_on_floor: bool, dense: bool) -> np.ndarray:
    """A drum part on an eighth-note grid (sixteenths when ``dense``): kick, snare, hat."""
    kit = _drum_kit(rng, sr)
    buf = np.zeros(n)
    p_hat = rng.uniform(0.4, 1.0)
    div = 4 if dense else 2  # grid steps per beat
    steps = int((seconds - offset) / (beat / div)) + 1
    p_extra = rng.uniform(0.05, 0.3) if dense else 0.0  # syncopated extra kicks and snares
    for j in range(steps):
        t0 = offset + j * beat / div
        pos = j % (div * meter)
        on_beat = pos % div == 0
        s = int(round(t0 * sr))
        if (pos == 0 or (four_on_floor and on_beat)
                or (meter == 4 and pos == 2 * div and rng.random() < 0.8)
                or rng.random() < p_extra):
            add_at(buf, s, kit["kick"] * rng.uniform(0.8, 1.0))
        if (pos in (div, 3 * div) and rng.random() < 0.9) or rng.random() < p_extra / 2:
            add_at(buf, s, kit["snare"] * rng.uniform(0.6, 1.0))
        if rng.random() < p_hat:
            add_at(buf, s, kit["hat"] * rng.uniform(0.3, 1.0))
    return buf


def _noise_stabs(rng: np.random.Generator, n: int, sr: int, seconds: float, offset: float,
                 beat: float) -> np.ndarray:
    """Short bursts of band-passed, sometimes distorted noise on a sixteenth-note pattern."""
    buf = np.zeros(n)
    pattern = rng.random(16) < rng.uniform(0.2, 0.6)
    length = int(rng.uniform(0.03, 0.25) * sr)
    f = np.fft.rfftfreq(length, 1.0 / sr)
    fc, bw = rng.uniform(300.0, 0.4 * sr), rng.uniform(200.0, 3000.0)
    shape = 1.0 / (1.0 + ((f - fc) / bw) ** 2)
    t = np.arange(length) / sr
    env = np.exp(-t / rng.uniform(0.02, 0.12))
    drive = rng.uniform(0.0, 8.0)
    for j in range(int((seconds - offset) / (beat / 4)) + 1):
        if not pattern[j % 16]:
            continue
        hit = np.fft.irfft(np.fft.rfft(rng.standard_normal(length)) * shape, n=length) * env
        if drive > 1.0:
            hit = np.tanh(drive * hit / (np.max(np.abs(hit)) + 1e-9))
        add_at(buf, int(round((offset + j * beat / 4) * sr)), hit)
    return buf


def _chord_probs(k: int) -> np.ndarray:
    p = np.linspace(2.0, 1.0, k)
    return p / p.sum()


