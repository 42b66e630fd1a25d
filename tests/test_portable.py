"""speechmusic_jax.portable: the one preprocessing, windowing and decision that the package and
the exported model's loader share (issue 29 part 3). No model needed."""

import numpy as np
import pytest

from speechmusic_jax import portable
from speechmusic_jax.data import audio, pipeline


def test_integer_pcm_is_scaled_and_unsigned_pcm_centred():
    np.testing.assert_array_equal(portable.as_float(np.asarray([-32768, 0, 16384], np.int16)),
                                  [-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(portable.as_float(np.asarray([0, 128, 192], np.uint8)),
                                  [-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(portable.as_float(np.asarray([-2**31, 2**30], np.int32)),
                                  [-1.0, 0.5])
    x = portable.as_float(np.asarray([0.25, -0.5]))  # float64: as it is, in float32
    assert x.dtype == np.float32 and x.tolist() == [0.25, -0.5]
    for bad in (np.asarray([True, False]), np.asarray(["a"]), np.asarray([1j])):
        with pytest.raises(ValueError, match="must hold numbers"):
            portable.as_float(bad)


@pytest.mark.parametrize("shape,last", [((1000, 2), True), ((2, 1000), False),
                                        ((1, 5), False), ((5, 1), True), ((1, 1), True),
                                        ((64, 65), False), ((100, 64), True)])
def test_the_shape_says_which_axis_holds_the_channels(shape, last):
    assert portable.channels_last(shape) is last


@pytest.mark.parametrize("shape,needle", [((2, 2), "ambiguous"), ((3, 50), "ambiguous"),
                                          ((200, 200), "ambiguous"),
                                          ((100, 200), "more than 64 channels")])
def test_a_shape_that_does_not_say_is_refused(shape, needle):
    with pytest.raises(ValueError, match=needle):
        portable.prepare(np.full(shape, 0.1, np.float32), 16000, 16000)


def test_every_layout_of_one_recording_gives_the_same_samples():
    rng = np.random.default_rng(0)
    stereo = (0.4 * rng.standard_normal((3000, 2))).astype(np.float32)
    mono = portable.prepare(stereo, 8000, 16000)
    assert mono.dtype == np.float32 and mono.flags.c_contiguous and mono.size == 6000
    np.testing.assert_array_equal(portable.prepare(stereo.T.copy(), 8000, 16000), mono)
    np.testing.assert_array_equal(portable.prepare(stereo.astype(np.float64), 8000, 16000), mono)
    one = stereo[:, :1]
    np.testing.assert_array_equal(portable.prepare(one.T.copy(), 16000, 16000), one[:, 0])
    # Mixing is the files' mixing: the same float32 mean as audio reads a stereo file with.
    np.testing.assert_array_equal(portable.to_mono(stereo), portable.mix(stereo))


@pytest.mark.parametrize("bad,needle", [(np.zeros(0), "empty"), (np.zeros((0, 2)), "empty"),
                                        (np.asarray([0.1, np.inf]), "NaN or Inf"),
                                        (np.zeros(100), "silent"),
                                        (np.full(100, 128, np.uint8), "silent"),
                                        (np.ones((2, 2, 100)), "got shape")])
def test_what_cannot_be_classified_is_refused_in_one_line(bad, needle):
    with pytest.raises(ValueError, match=needle) as e:
        portable.prepare(bad, 16000, 16000)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, "16k", None, True])
def test_a_sample_rate_must_be_a_positive_whole_number(rate):
    with pytest.raises(ValueError, match="sample_rate must be a positive whole number"):
        portable.prepare(np.full(100, 0.1), rate, 16000)


def test_one_windowing_and_one_silence_threshold():
    assert pipeline.window_starts is portable.window_starts
    assert audio.SILENCE_PEAK is portable.SILENCE_PEAK and audio.fit_length is portable.fit_length
    assert portable.window_starts(10, 4, 3) == [0, 3, 6]
    assert portable.window_starts(11, 4, 3) == [0, 3, 6, 7]  # the last one aligned to the end
    assert portable.window_starts(3, 4, 3) == [0]  # shorter than a window: one, padded
    # A stream asks as samples arrive: the grid so far, then (end known) the rest.
    assert portable.window_starts(8, 4, 3, complete=False) == [0, 3]
    assert portable.window_starts(3, 4, 3, complete=False) == []
    assert portable.window_starts(11, 4, 3, since=4) == [6, 7]
    assert portable.window_starts(11, 4, 3, since=7) == [7]


def test_the_decision_abstains_below_min_confidence():
    probs = np.asarray([0.3, 0.7])
    assert portable.decide(probs, ("speech", "music")) == {
        "predicted": "music", "confidence": 0.7, "p_speech": 0.3, "p_music": 0.7}
    assert portable.decide(probs, ("speech", "music"), 0.7)["predicted"] == "music"
    assert portable.decide(probs, ("speech", "music"), 0.71)["predicted"] == "uncertain"
    assert portable.decide(probs, ("speech", "music"), None, label=0)["confidence"] == 0.3
    for bad in (-0.1, 1.1, float("nan"), "x"):
        with pytest.raises(ValueError, match="--min_confidence must be a probability"):
            portable.check_min_confidence(bad, "--min_confidence")
    assert portable.check_min_confidence(None) is None
    assert portable.check_min_confidence("0.5") == 0.5
