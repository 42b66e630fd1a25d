"""The recording chain of the synthetic corpus: the same random conditions for both classes.

Whatever a clip is, it goes through the same distributions of room, background, channel and
level, so that none of them tells speech from music (docs/data.md's cue table measures this):

- room: dry (close microphone) or a synthetic room response with RT60 0.15-1.2 s;
- background at 0-30 dB SNR: white to brown noise (any slope), mains hum with harmonics, slowly
  amplitude-modulated noise, crackle (sparse clicks), low rumble, steady whine (tones anywhere
  in the band: electrical whine, a radio's heterodyne, a machine), or a mix of two; and in a
  quarter of the clips mains hum or a whine on top, 10-35 dB under the signal (a steady tone
  is neither speech nor music);
- channel: full band, a low-pass anywhere from telephone to wide band, the brick wall of a
  recording made at 8, 11.025 or 16 kHz, a telephone band-pass (300-3400 Hz), a codec-like
  spectral quantiser (quiet bins dropped, magnitudes coarsened);
- an automatic gain control (fast attack, slow release, ratio 3-20), clipping, a soft limiter
  towards a random crest factor, a slow level ride, a final level
  from -40 to -12 dBFS, and the recorder's noise floor (-84 to -66 dBFS).

No exact digital silence is written: in real corpora it marks edited speech, a cue to break, not
to teach (the ``data.augment.dither_db`` augmentation removes it from real training data).
"""

from __future__ import annotations

import numpy as np

from speechmusic_jax.data.synth_dsp import (
    coloured_noise,
    db_gain,
    fft_filter,
    interp,
    istft,
    n_fft_for,
    rms,
    stft,
)


def room(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Convolve with an exponentially decaying noise response (a small-to-large room)."""
    n = len(x)
    rt60 = rng.uniform(0.15, 1.2)
    m = max(2, int(min(rt60, 1.0) * sr))
    ti = np.arange(m) / sr
    ir = rng.standard_normal(m) * np.exp(-6.9 * ti / rt60)
    ir[: int(0.002 * sr) + 1] = 0.0  # the direct sound arrives first
    ir *= rng.uniform(0.15, 0.8) / np.sqrt(np.sum(ir**2))
    ir[0] = 1.0
    nfft = 1 << int(np.ceil(np.log2(n + m)))
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[:n]


def background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS background of one or two random kinds."""
    kinds = rng.choice(7, size=1 + int(rng.random() < 0.3), replace=False)
    out = np.zeros(n)
    for kind in kinds:
        out += rng.uniform(0.4, 1.0) * _background_kind(rng, int(kind), n, sr)
    return out / rms(out)


def _background_kind(rng: np.random.Generator, kind: int, n: int, sr: int) -> np.ndarray:
    ts = np.arange(n) / sr
    if kind in (0, 1):  # stationary noise of any colour
        return coloured_noise(rng, n, sr, rng.uniform(0.0, 2.0))
    if kind == 2:  # mains hum with a little hiss
        bg = hum(rng, n, sr) + 0.3 * rng.standard_normal(n)
        return bg / rms(bg)
    if kind == 3:  # noise whose level swells and fades (traffic, wind, air conditioning)
        step = rng.uniform(0.3, 1.5)
        pts = [(t, rng.uniform(0.1, 1.0)) for t in np.arange(0.0, ts[-1] + 1.5, step)]
        bg = coloured_noise(rng, n, sr, rng.uniform(0.5, 2.0)) * interp(ts, pts)
        return bg / rms(bg)
    if kind == 4:  # crackle: sparse clicks of random size over faint hiss
        bg = 0.05 * rng.standard_normal(n)
        count = int(rng.uniform(2, 30) * ts[-1]) + 1
        at = rng.integers(0, n, count)
        bg[at] += rng.standard_normal(count) * rng.uniform(0.5, 3.0)
        return bg / rms(bg)
    if kind == 6:  # whine with a little hiss
        bg = whine(rng, n, sr) + 0.3 * coloured_noise(rng, n, sr, rng.uniform(0.0, 2.0))
        return bg / rms(bg)
    # rumble: brown noise low-passed under 200 Hz
    f = np.fft.rfftfreq(n, 1.0 / sr)
    bg = fft_filter(coloured_noise(rng, n, sr, 2.0), 1.0 / (1.0 + (f / rng.uniform(60, 200)) ** 4))
    return bg / rms(bg)


def hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS mains hum: 50 or 60 Hz and its harmonics in random proportions, drifting a
    little in frequency (a steady low tone that is neither speech nor music)."""
    ts = np.arange(n) / sr
    mains = (50.0 if rng.random() < 0.5 else 60.0) * (1.0 + rng.uniform(-0.01, 0.01))
    drift = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * ts + rng.uniform(0, 6.3))
    phase = 2 * np.pi * mains * np.cumsum(drift) / sr
    tilt = rng.uniform(0.3, 1.5)
    y = sum(rng.uniform(0.2, 1.0) * h**-tilt * np.sin(h * phase + rng.uniform(0, 6.3))
            for h in range(1, 10) if mains * h < 0.45 * sr)
    return y / rms(y)


def whine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS steady tones: one to four, each at 150 Hz-7 kHz with up to three harmonics,
    drifting a little, at constant levels for the whole clip (a power supply's or a monitor's
    whine, a radio's heterodyne whistle, a machine): tonal like music, but never a note."""
    ts = np.arange(n) / sr
    y = np.zeros(n)
    for _ in range(rng.integers(1, 5)):
        f0 = np.exp(rng.uniform(np.log(150.0), np.log(min(7000.0, 0.4 * sr))))
        drift = 1.0 + rng.uniform(0.0, 0.003) * np.sin(
            2 * np.pi * rng.uniform(0.02, 0.3) * ts + rng.uniform(0, 6.3))
        phase = 2 * np.pi * f0 * np.cumsum(drift) / sr
        level = db_gain(-rng.uniform(0.0, 15.0))
        for h in range(1, 1 + rng.integers(1, 5)):
            if f0 * h < 0.45 * sr:
                y += level * rng.uniform(0.1, 1.0) / h * np.sin(h * phase + rng.uniform(0, 6.3))
    return y / rms(y)


def band(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """A random channel: full band (35 %), a gentle low-pass from 2 kHz up (30 %), a recording
    made at a lower sample rate (8, 11.025 or 16 kHz: a brick wall at its Nyquist frequency,
    20 %), or telephone (300-3400 Hz, 15 %)."""
    u = rng.random()
    if u < 0.35:
        return x
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    if u < 0.65:
        fc = min(np.exp(rng.uniform(np.log(2000.0), np.log(7500.0))), 0.45 * sr)
        order = rng.integers(2, 9)
        h = 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))
        if rng.random() < 0.3:
            fh = rng.uniform(60.0, 300.0)
            h = h / np.sqrt(1.0 + (fh / np.maximum(f, 1e-3)) ** 4)
        return fft_filter(x, h)
    if u < 0.85:
        nyquist = float(rng.choice([4000.0, 5512.5, 8000.0]))
        if nyquist >= 0.5 * sr:
            return x
        edge = nyquist * rng.uniform(0.9, 0.98)  # where the resampler's filter starts to cut
        h = np.clip((nyquist - f) / (nyquist - edge), 0.0, 1.0)
        return fft_filter(x, h)
    lo, hi = rng.uniform(250, 400), min(rng.uniform(3000, 3700), 0.45 * sr)
    h = 1.0 / np.sqrt((1.0 + (f / hi) ** 12) * (1.0 + (lo / np.maximum(f, 1e-3)) ** 8))
    return fft_filter(x, h)


def codec(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Codec-like damage: STFT bins more than 25-45 dB under their frame's peak are dropped,
    the rest coarsely quantised in level (what low-bit-rate perceptual coders leave)."""
    n_fft = n_fft_for(sr)
    spec = stft(x, n_fft)
    mag = np.abs(spec)
    floor = mag.max(axis=1, keepdims=True) * db_gain(-rng.uniform(25.0, 45.0))
    step_db = rng.uniform(1.5, 6.0)
    q = db_gain(step_db * np.round(20 * np.log10(np.maximum(mag, 1e-12)) / step_db))
    keep = mag > floor
    spec = np.where(keep, spec / np.maximum(mag, 1e-12) * q, 0.0)
    return istft(spec, n_fft, len(x))


def clip_peaks(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Hard clipping at 30-90 % of the peak (an overdriven recorder)."""
    limit = float(np.max(np.abs(x))) * rng.uniform(0.3, 0.9)
    return np.clip(x, -limit, limit)


def limit_crest(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A soft limiter towards a crest factor (peak over RMS) drawn from 8-17 dB, whatever the
    class: speech is peakier than music, and broadcast or voice-chat compression hides that."""
    target = db_gain(rng.uniform(8.0, 17.0))
    y = x
    for _ in range(4):  # limiting lowers the RMS a little, so the ceiling is set again
        ceiling = target * rms(y)
        if float(np.max(np.abs(y))) <= ceiling * 1.01:
            break
        knee = 0.7 * ceiling
        mag = np.abs(y)
        soft = knee + (ceiling - knee) * np.tanh((mag - knee) / (ceiling - knee))
        y = np.where(mag > knee, np.sign(y) * soft, y)
    return y


def compress(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """An automatic gain control / compressor (radio, voice chat, broadcast): the level over
    10 ms frames follows the signal with a fast attack and a slow release, and everything above
    a threshold is turned down by the ratio; the make-up gain then lifts quiet stretches, so
    the background between words or notes comes up too."""
    frame = max(1, int(0.01 * sr))
    m = len(x) // frame * frame
    if m == 0:
        return x
    level = 10 * np.log10(np.mean(x[:m].reshape(-1, frame) ** 2, axis=1) + 1e-12)
    attack = np.exp(-1.0 / max(rng.uniform(0.5, 3.0), 1e-3))  # per frame: 5-30 ms
    release = np.exp(-1.0 / rng.uniform(10.0, 60.0))  # 100-600 ms
    env = np.empty_like(level)
    e = level[0]
    for i, v in enumerate(level):
        e = attack * e + (1 - attack) * v if v > e else release * e + (1 - release) * v
        env[i] = e
    threshold = np.quantile(env, 0.9) - rng.uniform(10.0, 30.0)
    ratio = rng.uniform(3.0, 20.0)
    gain_db = -(1.0 - 1.0 / ratio) * np.maximum(env - threshold, 0.0)
    centres = (np.arange(len(gain_db)) + 0.5) * frame
    return x * 10.0 ** (np.interp(np.arange(len(x)), centres, gain_db) / 20.0)


def level_ride(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """A slow gain change of up to +-6 dB across the clip (a hand on a fader, a moving talker)."""
    ts = np.arange(len(x)) / sr
    pts = [(t, db_gain(rng.uniform(-6.0, 6.0))) for t in np.linspace(0, ts[-1], 4)]
    return x * interp(ts, pts)


def record(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """The whole chain; returns float32 in [-1, 1] with an RMS between -40 and -12 dBFS."""
    n = len(x)
    x = np.nan_to_num(x)
    if rms(x) < 1e-9:  # nothing sounded (a very short clip); keep it as quiet noise
        x = 1e-3 * rng.standard_normal(n)
    x = x / rms(x)
    if rng.random() < 0.5:
        x = room(rng, x, sr)
        x = x / rms(x)
    if rng.random() < 0.9:
        snr_db = rng.uniform(0.0, 30.0) if rng.random() < 0.7 else rng.uniform(30.0, 50.0)
        x = x + background(rng, n, sr) * db_gain(-snr_db)
    if rng.random() < 0.25:  # mains hum or a whine on top of whatever background there is
        tone = hum(rng, n, sr) if rng.random() < 0.6 else whine(rng, n, sr)
        x = x + tone * db_gain(-rng.uniform(10.0, 35.0))
    x = band(rng, x, sr)
    if rng.random() < 0.25:
        x = codec(rng, x, sr)
    if rng.random() < 0.3:
        x = level_ride(rng, x, sr)
    if rng.random() < 0.3:
        x = compress(rng, x, sr)
    if rng.random() < 0.12:
        x = clip_peaks(rng, x)
    if rng.random() < 0.7:
        x = limit_crest(rng, x)
    x = x * (db_gain(rng.uniform(-40.0, -12.0)) / rms(x))
    peak = float(np.max(np.abs(x)))
    if peak > 0.98:
        x = x * (0.98 / peak)
    # The recorder's own noise floor, a few 16-bit steps: quiet stretches are seldom exact
    # digital zeros, in either class.
    x = x + rng.standard_normal(len(x)) * db_gain(rng.uniform(-84.0, -66.0))
    return np.nan_to_num(x).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Transmission: what happens to a finished recording on its way to the listener (telephone,
# radio, a lossy file). Only corpora made with SyntheticSpec.transmission have it, so the corpora
# made without it keep their bytes and cache folders.
# --------------------------------------------------------------------------------------------

TRANSMISSIONS: tuple[str, ...] = ("telephone", "am_radio", "ssb_radio", "fm_radio", "lossy_file")


def transmit(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Half of the recordings as they are; the other half through one of ``TRANSMISSIONS`` in
    equal shares: a G.711 telephone line (:func:`telephone`), AM, single-sideband or FM radio
    (:func:`am_radio`, :func:`ssb_radio`, :func:`fm_radio`) or a low-bit-rate Vorbis, Opus or
    MP3 file (:func:`lossy_file`). The RMS level is kept (peaks limited to 0.98) and float32
    returned, like :func:`record`'s. A pure function of ``rng`` and ``x``, whatever the class."""
    if rng.random() < 0.5:
        return x
    level = rms(x)
    kind = TRANSMISSIONS[int(rng.integers(len(TRANSMISSIONS)))]
    y = {"telephone": telephone, "am_radio": am_radio, "ssb_radio": ssb_radio,
         "fm_radio": fm_radio, "lossy_file": lossy_file}[kind](rng, np.asarray(x, np.float64), sr)
    y = np.nan_to_num(y) * (level / max(rms(y), 1e-12))
    peak = float(np.max(np.abs(y)))
    if peak > 0.98:
        y = y * (0.98 / peak)
    return y.astype(np.float32)


def compand(rng: np.random.Generator, x: np.ndarray, law: str | None = None) -> np.ndarray:
    """8-bit mu-law (mu = 255) or A-law (A = 87.6) companding, as on a G.711 telephone line:
    the signal is set to peak 0-15 dB under the codec's full scale, compressed, rounded to 256
    levels, expanded and set back. Quiet samples keep fine steps, loud ones get coarse ones, and
    a quiet line is left with granular noise. ``law``: "mu", "a" or None (either, at random)."""
    law = law or ("mu" if rng.random() < 0.5 else "a")
    g = db_gain(-rng.uniform(0.0, 15.0)) / max(float(np.max(np.abs(x))), 1e-12)
    y = np.clip(x * g, -1.0, 1.0)
    a = np.abs(y)
    if law == "mu":
        c = np.log1p(255.0 * a) / np.log1p(255.0)
    else:
        c = np.where(a < 1 / 87.6, 87.6 * a, 1.0 + np.log(np.maximum(87.6 * a, 1.0)))
        c = c / (1.0 + np.log(87.6))
    c = np.round(c * 127.0) / 127.0
    if law == "mu":
        e = np.expm1(c * np.log1p(255.0)) / 255.0
    else:
        t = c * (1.0 + np.log(87.6))
        e = np.where(t < 1.0, t / 87.6, np.exp(t - 1.0) / 87.6)
    return np.sign(y) * e / g


def _band_pass(x: np.ndarray, sr: int, lo: float, hi: float, order: int = 4) -> np.ndarray:
    f = np.fft.rfftfreq(len(x), 1.0 / sr)
    h = 1.0 / np.sqrt((1.0 + (f / min(hi, 0.45 * sr)) ** (2 * order))
                      * (1.0 + (lo / np.maximum(f, 1e-3)) ** (2 * order)))
    return fft_filter(x, h)


def telephone(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """A landline: 300-3400 Hz (give or take), a little line hiss, mu-law or A-law (G.711) at
    an 8 kHz sampling rate."""
    y = _band_pass(x, sr, rng.uniform(200.0, 400.0), rng.uniform(3000.0, 3600.0),
                   int(rng.integers(3, 7)))
    y = y / rms(y) + coloured_noise(rng, len(y), sr, rng.uniform(0.0, 1.0)) * db_gain(
        -rng.uniform(30.0, 50.0))
    # the line's 8 kHz sampling: the quantisation noise stays under its 4 kHz Nyquist frequency
    return _band_pass(compand(rng, y), sr, 20.0, 3800.0, 12)


def _fading(rng: np.random.Generator, n: int, sr: int, depth_db: float) -> np.ndarray:
    """A slowly wandering gain (radio fading), 0 to -``depth_db`` dB, changing at 0.1-2 Hz."""
    ts = np.arange(n) / sr
    step = 1.0 / rng.uniform(0.1, 2.0)
    pts = [(t, db_gain(-rng.uniform(0.0, depth_db))) for t in np.arange(0.0, ts[-1] + step, step)]
    return interp(ts, pts)


def am_radio(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """AM broadcast: 80-200 Hz to 2.5-5 kHz, fading, static (hiss with crackle) at 5-30 dB SNR,
    sometimes a heterodyne whistle, then the receiver's automatic gain control."""
    n = len(x)
    y = _band_pass(x, sr, rng.uniform(80.0, 200.0), rng.uniform(2500.0, 5000.0),
                   int(rng.integers(2, 6)))
    y = y / rms(y) * _fading(rng, n, sr, rng.uniform(0.0, 10.0))
    static = _background_kind(rng, 4, n, sr) * rng.uniform(0.2, 1.0) + coloured_noise(
        rng, n, sr, rng.uniform(0.0, 1.5))
    y = y / rms(y) + static / rms(static) * db_gain(-rng.uniform(5.0, 30.0))
    if rng.random() < 0.3:
        y = y + whine(rng, n, sr) * db_gain(-rng.uniform(15.0, 35.0))
    return compress(rng, _band_pass(y, sr, 60.0, 0.45 * sr, 2), sr)


def shift_frequency(x: np.ndarray, sr: int, hz: float) -> np.ndarray:
    """Every component moved by ``hz`` (a single-sideband receiver tuned off by that much):
    harmonics stop being multiples of their fundamental. Via the analytic signal."""
    n = len(x)
    spec = np.fft.fft(x)
    h = np.zeros(n)
    h[0] = 1.0
    h[1:(n + 1) // 2] = 2.0
    if n % 2 == 0:
        h[n // 2] = 1.0
    analytic = np.fft.ifft(spec * h)
    return np.real(analytic * np.exp(2j * np.pi * hz * np.arange(n) / sr))


def ssb_radio(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Amateur (single-sideband) radio: 200-400 Hz to 2.4-3 kHz, mistuned by up to +-150 Hz,
    noise at 3-25 dB SNR with fading, the receiver's AGC pulling the noise up in pauses,
    sometimes clipping, then the receiver's audio filter."""
    n = len(x)
    y = shift_frequency(x, sr, rng.uniform(-150.0, 150.0))
    y = y / rms(y) * _fading(rng, n, sr, rng.uniform(0.0, 6.0))
    y = y / rms(y) + coloured_noise(rng, n, sr, rng.uniform(0.0, 1.0)) * db_gain(
        -rng.uniform(3.0, 25.0))
    y = compress(rng, y, sr)
    if rng.random() < 0.3:
        y = clip_peaks(rng, y)
    return _band_pass(y, sr, rng.uniform(200.0, 400.0), rng.uniform(2400.0, 3000.0),
                      int(rng.integers(4, 9)))


def fm_radio(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """FM (broadcast or a two-way handset): 30-300 Hz to 3-7.5 kHz, hiss that rises with
    frequency (what de-emphasis leaves of FM's triangular noise) at 10-40 dB SNR, a broadcast
    compressor."""
    n = len(x)
    y = _band_pass(x, sr, np.exp(rng.uniform(np.log(30.0), np.log(300.0))),
                   rng.uniform(3000.0, 7500.0), int(rng.integers(2, 7)))
    hiss = coloured_noise(rng, n, sr, -rng.uniform(0.5, 1.5))  # power rising with frequency
    y = y / rms(y) + hiss * db_gain(-rng.uniform(10.0, 40.0))
    return compress(rng, y, sr)


def lossy_file(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """A round trip, in memory, through a low-bit-rate Vorbis, Opus or MP3 file (libsndfile's
    encoders via soundfile; the bytes depend on their versions): the codec's own low-pass,
    pre-echo, warbling and holes, not an imitation."""
    import io

    import soundfile as sf

    fmt, subtype, level = [("OGG", "VORBIS", rng.uniform(0.6, 1.0)),
                           ("OGG", "OPUS", rng.uniform(0.75, 1.0)),
                           ("MP3", "MPEG_LAYER_III", rng.uniform(0.5, 0.9))][int(rng.integers(3))]
    peak = max(float(np.max(np.abs(x))), 1e-12)
    buf = io.BytesIO()
    sf.write(buf, (x * (0.9 / peak)).astype(np.float32), sr, format=fmt, subtype=subtype,
             compression_level=float(level))
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float64")
    y = y.reshape(len(y), -1)[:, 0][: len(x)]
    return np.pad(y, (0, len(x) - len(y))) * (peak / 0.9)
