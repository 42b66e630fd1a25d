"""The parts of the synthetic corpus (generator version 3): the recording chain, the talker and
the music styles do what their docstrings say."""

from __future__ import annotations

import numpy as np
import pytest

from speechmusic_jax import cues
from speechmusic_jax.data import synth_channel, synth_dsp, synth_music, synth_speech, synthetic

SR = 16000


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_resonator_gain_peaks_at_its_centres():
    f = np.linspace(0.0, 4000.0, 4001)
    g = synth_dsp.resonator_gain(f, np.array([500.0, 1500.0]), np.array([60.0, 90.0]))
    assert g[0] == pytest.approx(1.0)
    local_max = np.flatnonzero((g[1:-1] > g[:-2]) & (g[1:-1] > g[2:])) + 1
    np.testing.assert_allclose(f[local_max], [500.0, 1500.0], atol=5.0)
    frames = synth_dsp.resonator_gain(f, np.array([[500.0, 1500.0]] * 3), np.array([60.0, 90.0]))
    assert frames.shape == (3, len(f)) and np.allclose(frames[1], g)


def test_every_channel_keeps_the_length_and_band_limits_what_it_should():
    x = np.random.default_rng(0).standard_normal(SR)
    seen_cut = 0
    for seed in range(40):
        y = synth_channel.band(np.random.default_rng(seed), x, SR)
        assert y.shape == x.shape and np.all(np.isfinite(y))
        if _band_power(y, 6000, 8000) < 1e-3 * _band_power(x, 6000, 8000):
            seen_cut += 1
    assert 10 <= seen_cut <= 35  # some channels keep the top octave, many cut it
    # A brick wall at a lower rate's Nyquist frequency: nothing left above it.
    rngs = (np.random.default_rng(s) for s in range(200))
    walls = [y for y in (synth_channel.band(r, x, SR) for r in rngs)
             if _band_power(y, 4100, 8000) < 1e-9 * _band_power(x, 4100, 8000)]
    assert walls


def test_recording_chain_sets_level_and_leaves_no_digital_silence():
    for seed in range(12):
        x = np.zeros(SR)
        x[:2000] = np.sin(np.arange(2000) * 0.1)  # a tone, then silence
        y = synth_channel.record(np.random.default_rng(seed), x, SR)
        assert y.dtype == np.float32 and y.shape == x.shape and np.max(np.abs(y)) <= 1.0
        level = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
        assert -41.0 < level < -11.0
        pcm = np.round(y * 32767.0)
        assert np.mean(pcm == 0) < 0.5  # the noise floor fills the silence


def test_limit_crest_reaches_its_target():
    x = np.random.default_rng(0).standard_normal(SR) ** 3  # very peaky
    for seed in range(5):
        y = synth_channel.limit_crest(np.random.default_rng(seed), x)
        crest = 20 * np.log10(np.max(np.abs(y)) / synth_dsp.rms(y))
        assert crest < 20 * np.log10(np.max(np.abs(x)) / synth_dsp.rms(x))
        assert crest <= 17.0 + 0.5


def test_talker_alternates_voiced_and_voiceless_and_moves_its_pitch():
    """Running speech: energy comes and goes several times a second, and the low band
    (voicing) and the high band (frication, bursts) take turns."""
    x = synth_speech.talker(np.random.default_rng(3), 4.0, SR)
    frame = SR // 100
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    low = np.array([_band_power(f, 80, 1000) for f in frames])
    high = np.array([_band_power(f, 3000, 8000) for f in frames])
    env = 10 * np.log10(low + high + 1e-12)
    loud = env > env.max() - 30
    onsets = np.sum(loud[1:] & ~loud[:-1])
    assert onsets / 4.0 >= 1.5  # at least a word's worth of starts per second
    fricative_like = high > low
    assert 0.03 < fricative_like[loud].mean() < 0.6


@pytest.mark.parametrize("style", synth_music._STYLES)
def test_every_music_style_renders(style, monkeypatch):
    """Force each style in turn; every one makes a finite, non-silent clip."""
    p = np.zeros(len(synth_music._STYLES))
    p[synth_music._STYLES.index(style)] = 1.0
    monkeypatch.setattr(synth_music, "_STYLE_P", tuple(p))
    for i in range(2):
        x = synth_music.music_clip(synthetic.clip_rng(0, "music", i), 1.5, SR)
        assert np.all(np.isfinite(x)) and synth_dsp.rms(x.astype(np.float64)) > 1e-4


def test_sung_voice_holds_steady_notes():
    """A sung note keeps its pitch (vibrato aside): the strongest low harmonic stays put."""
    tb = synth_music._timbre(np.random.default_rng(0), "voice")
    note = synth_music._render_note(np.random.default_rng(1), tb, 220.0, 1.0, SR)
    spec = np.abs(np.fft.rfft(note[: SR] * np.hanning(SR)))
    f = np.fft.rfftfreq(SR, 1.0 / SR)
    peak = f[np.argmax(spec * (f < 2000))]
    assert abs(peak / 220.0 - round(peak / 220.0)) < 0.05  # a harmonic of the sung pitch


def test_simple_cues_do_not_separate_the_classes():
    """The promise of versions 2 and 3, on a small sample: no single cue of docs/data.md's table
    separates speech from music well. (The full corpus's table is in docs/data.md.)"""
    values = {name: [] for name in cues.CUES}
    labels = []
    for label, make in (("speech", synthetic.speech_clip), ("music", synthetic.music_clip)):
        for i in range(24):
            x = make(synthetic.clip_rng(11, label, i), 2.0, SR)
            pcm = np.round(x * 32767.0)
            c = cues.clip_cues(pcm / 32767.0, SR, exact_zeros=float(np.mean(pcm == 0)))
            for name in values:
                values[name].append(c[name])
            labels.append(0 if label == "speech" else 1)
    for name, v in values.items():
        acc = cues.best_threshold(v, labels).accuracy
        assert acc <= 0.8, (name, acc)


def test_compressor_narrows_the_gap_between_loud_and_quiet():
    x = np.concatenate([np.sin(np.arange(SR // 2) * 0.1),
                        0.01 * np.random.default_rng(0).standard_normal(SR // 2)])

    def gap(y: np.ndarray) -> float:
        half = len(y) // 2
        return 20 * np.log10(synth_dsp.rms(y[:half]) / synth_dsp.rms(y[half:]))

    for seed in range(4):
        y = synth_channel.compress(np.random.default_rng(seed), x, SR)
        assert y.shape == x.shape and np.all(np.isfinite(y))
        assert gap(y) < gap(x) - 3.0


def test_hum_is_mains_and_its_harmonics():
    n = 4 * SR  # 0.25 Hz bins
    f = np.fft.rfftfreq(n, 1.0 / SR)
    for seed in range(3):
        y = synth_channel.hum(np.random.default_rng(seed), n, SR)
        assert synth_dsp.rms(y) == pytest.approx(1.0)
        spec = np.abs(np.fft.rfft(y))
        low = (f > 45) & (f < 65)
        base = f[low][np.argmax(spec[low])]  # 50 or 60 Hz, give or take 1 %
        assert abs(base - 50.0) <= 1.5 or abs(base - 60.0) <= 1.5
        ratio = f[spec > 0.2 * spec.max()] / base
        assert np.all((np.round(ratio) >= 1) & (np.abs(ratio - np.round(ratio)) < 0.03))


def test_whine_is_a_few_steady_tones_at_constant_level():
    n = 4 * SR
    f = np.fft.rfftfreq(n, 1.0 / SR)
    frame = SR // 10
    for seed in range(4):
        y = synth_channel.whine(np.random.default_rng(seed), n, SR)
        assert synth_dsp.rms(y) == pytest.approx(1.0)
        spec = np.abs(np.fft.rfft(y)) ** 2
        peaks = f[spec > 1e-3 * spec.max()]
        assert peaks.min() >= 150 * 0.99 and peaks.max() < 0.45 * SR
        # Tones, not noise: 99 % of the energy sits in under 5 % of the frequency bins (white
        # noise needs 86 % of them).
        top = np.sort(spec)[::-1]
        assert np.searchsorted(np.cumsum(top), 0.99 * spec.sum()) < 0.05 * len(spec)
        # Steady: no 0.1 s frame more than 3 dB from another.
        levels = 20 * np.log10(np.sqrt(np.mean(y.reshape(-1, frame) ** 2, axis=1)))
        assert np.ptp(levels) < 3.0, seed


def _tone(hz: float, seconds: float = 1.0, amp: float = 0.1) -> np.ndarray:
    return amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)


@pytest.mark.parametrize("law", ["mu", "a"])
def test_companding_is_8_bit_with_steps_that_grow_with_the_level(law):
    x = np.random.default_rng(0).standard_normal(SR) * np.linspace(0.01, 1.0, SR)
    y = synth_channel.compand(np.random.default_rng(1), x, law)
    assert y.shape == x.shape and not np.allclose(y, x)
    assert len(np.unique(np.round(y, 12))) <= 256  # 8 bits
    err = y - x
    quiet, loud = slice(0, SR // 10), slice(-SR // 10, None)
    # the error follows the level (logarithmic steps): the same SNR, give or take, quiet or loud
    snr = [10 * np.log10(np.mean(x[s] ** 2) / np.mean(err[s] ** 2)) for s in (quiet, loud)]
    assert min(snr) > 25.0 and abs(snr[0] - snr[1]) < 12.0
    assert np.array_equal(y, synth_channel.compand(np.random.default_rng(1), x, law))


def test_shift_frequency_moves_a_tone():
    y = synth_channel.shift_frequency(_tone(1000.0), SR, 120.0)
    peak = np.fft.rfftfreq(SR, 1.0 / SR)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert peak == pytest.approx(1120.0, abs=1.0)


@pytest.mark.parametrize("kind", synth_channel.TRANSMISSIONS)
def test_each_transmission_keeps_the_length_and_limits_the_band(kind):
    x = np.random.default_rng(0).standard_normal(SR) * 0.1
    fn = getattr(synth_channel, kind)
    y = fn(np.random.default_rng(3), x, SR)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert np.array_equal(y, fn(np.random.default_rng(3), x, SR))  # a pure function
    if kind in ("telephone", "ssb_radio"):  # nothing much above 3.6 kHz
        assert _band_power(y, 5000, 8000) < 1e-2 * _band_power(y, 500, 2500)
    if kind == "lossy_file":  # a codec keeps the signal recognisable
        assert np.corrcoef(x, y)[0, 1] > 0.3


def test_transmit_keeps_level_and_draws_the_same_whatever_the_class(monkeypatch):
    speech = synth_speech.speech_clip(np.random.default_rng(0), 1.0, SR)
    music = synth_music.music_clip(np.random.default_rng(0), 1.0, SR)
    untouched = 0
    for seed in range(20):
        for x in (speech, music):
            y = synth_channel.transmit(np.random.default_rng(seed), x, SR)
            assert y.dtype == np.float32 and y.shape == x.shape and np.max(np.abs(y)) <= 0.98
            assert synth_dsp.rms(y) == pytest.approx(synth_dsp.rms(x), rel=0.3)
            untouched += y is x
    assert 8 <= untouched <= 32  # about half the clips go out as recorded
    chosen = []
    for kind in synth_channel.TRANSMISSIONS:
        monkeypatch.setattr(synth_channel, kind,
                            lambda rng, x, sr, kind=kind: chosen.append(kind) or x)
    for seed in range(40):  # which channel depends on the generator alone, not on the audio
        synth_channel.transmit(np.random.default_rng(seed), speech, SR)
        synth_channel.transmit(np.random.default_rng(seed), music, SR)
    assert chosen[0::2] == chosen[1::2] and set(chosen) == set(synth_channel.TRANSMISSIONS)
