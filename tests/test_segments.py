"""Timelines without a model: smoothing, merging, scoring against the truth, plotting."""

import numpy as np
import pytest

from speechmusic_jax import segments
from speechmusic_jax.segments import Smoothing


def probs_of(labels, confidence=0.9):
    """(T, 2) probabilities whose argmax is ``labels``."""
    labels = np.asarray(labels)
    p1 = np.where(labels == 1, confidence, 1 - confidence)
    return np.stack([1 - p1, p1], axis=1)


def test_viterbi_removes_a_short_blip_unless_switching_is_free():
    labels = [0] * 10 + [1] + [0] * 10
    log_p = np.log(probs_of(labels))
    assert segments.viterbi(log_p, switch_penalty=0.0).tolist() == labels
    assert segments.viterbi(log_p, switch_penalty=4.0).tolist() == [0] * 21
    # A long run survives any moderate penalty: its evidence (8 windows * log 9) is larger.
    long = [0] * 10 + [1] * 8 + [0] * 10
    assert segments.viterbi(np.log(probs_of(long)), switch_penalty=4.0).tolist() == long


def test_viterbi_three_classes_and_empty():
    labels = [0] * 5 + [2] * 5 + [1] * 5
    p = np.full((15, 3), 0.05)
    p[np.arange(15), labels] = 0.9
    assert segments.viterbi(np.log(p), 1.0).tolist() == labels
    assert segments.viterbi(np.zeros((0, 2)), 1.0).tolist() == []


def test_median_filter_removes_isolated_windows_and_keeps_edges():
    labels = [1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0]
    smoothed = segments.smooth_labels(probs_of(labels), Smoothing("median", median_seconds=1.5),
                                      hop_s=0.5, segment_s=2.0)  # 3 windows
    assert smoothed.tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    none = segments.smooth_labels(probs_of(labels), Smoothing("none"), 0.5, 2.0)
    assert none.tolist() == labels


def test_hmm_penalty_means_the_same_whatever_the_hop():
    """Overlapping windows share evidence: a 1 s blip is removed at hop 0.25 s (4 windows) as at
    hop 1 s (1 window) with the same penalty."""
    smoothing = Smoothing("hmm", switch_penalty=3.0)
    coarse = [0] * 10 + [1] + [0] * 10
    fine = [0] * 40 + [1] * 4 + [0] * 40
    assert set(segments.smooth_labels(probs_of(coarse), smoothing, 1.0, 2.0)) == {0}
    assert set(segments.smooth_labels(probs_of(fine), smoothing, 0.25, 2.0)) == {0}


def test_cell_edges_tile_the_recording():
    # 2 s windows every 0.5 s over 4.2 s (16 kHz samples): the last window is end-aligned.
    starts = np.asarray([0, 8000, 16000, 24000, 35200])
    edges = segments.cell_edges(starts, 32000, 67200)
    assert edges[0] == 0 and edges[-1] == 67200
    assert np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges[1:-1], [20000, 28000, 36000, 45600])
    # One window (a short recording): the whole recording.
    assert segments.cell_edges(np.asarray([0]), 32000, 5000).tolist() == [0, 5000]


def test_timeline_merges_and_averages_over_time():
    sr, seg, hop = 100, 200, 50  # 2 s windows every 0.5 s
    labels = [0] * 6 + [1] * 6
    starts = np.arange(12) * hop
    n = starts[-1] + seg
    probs = probs_of(labels, 0.8)
    got = segments.timeline(starts, probs, n, sample_rate=sr, segment=seg, hop=hop,
                            smoothing=Smoothing("none"))
    assert [(s0, s1, k) for s0, s1, k, _ in got] == [(0.0, 3.75, 0), (3.75, 7.5, 1)]
    np.testing.assert_allclose(got[0][3], [0.8, 0.2])
    np.testing.assert_allclose(got[1][3], [0.2, 0.8])
    # The segments cover the recording without gaps.
    assert got[0][0] == 0 and got[-1][1] == n / sr


def test_scoring_against_the_truth():
    truth = [(0.0, 30.0, 0), (30.0, 60.0, 1), (60.0, 90.0, 0)]
    got = [(0.0, 30.5, 0), (30.5, 59.0, 1), (59.0, 70.0, 0), (70.0, 72.0, 1), (72.0, 90.0, 0)]
    assert segments.time_accuracy(got, truth) == pytest.approx((30 + 28.5 + 28) / 90)
    report = segments.boundary_report(got, truth, tolerance_s=1.0)
    assert (report["true"], report["predicted"], report["within_tolerance"]) == (2, 4, 2)
    assert report["max_error_s"] == pytest.approx(1.0) and report["spurious"] == 2
    assert segments.boundary_report([(0.0, 90.0, 0)], truth)["within_tolerance"] == 0


def test_smoothing_is_validated():
    with pytest.raises(ValueError, match="smoothing must be one of"):
        Smoothing("mean")
    with pytest.raises(ValueError, match="switch_penalty"):
        Smoothing("hmm", switch_penalty=-1)


def test_plot_is_a_png_that_says_who_wrote_it(tmp_path):
    panels = [{"path": "/a/talk.wav", "edges": np.asarray([0.0, 1.0, 2.0, 3.0]),
               "probs": probs_of([0, 1, 1]), "segments": [(0.0, 1.0, 0), (1.0, 3.0, 1)]},
              {"path": "/a/bad.wav", "error": "unreadable: not audio"}]
    png = segments.plot_png(panels, ("speech", "music"))
    (tmp_path / "t.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and segments.is_plot_file(str(tmp_path / "t.png"))
    (tmp_path / "other.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert not segments.is_plot_file(str(tmp_path / "other.png"))


def test_the_alternating_recording_of_segment_bench(tmp_path):
    """The truth the timeline figures are measured against: alternating runs of the classes'
    clips, 30 s +- 1 s after a first run of random length, covering the whole file."""
    import soundfile as sf

    from speechmusic_jax.segment_bench import write_alternating

    rate = 1000
    clips = [[np.full(3500, 0.1, np.float32), np.full(2000, 0.2, np.float32)],
             [np.full(4000, -0.3, np.float32)]]
    path = str(tmp_path / "alt.wav")
    truth = write_alternating(path, clips, rate, 300, run_seconds=30, seed=3)
    x, sr = sf.read(path, dtype="float32")
    assert sr == rate and x.size == 300 * rate
    assert truth[0][0] == 0 and truth[-1][1] == 300
    assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(truth, truth[1:], strict=False))
    assert 6 <= truth[0][1] <= 30
    assert all(29 <= t1 - t0 <= 31 for t0, t1, _ in truth[1:-1])
    for t0, t1, label in truth:  # every sample of a run comes from its class's clips
        run = x[int(round(t0 * rate)) : int(round(t1 * rate))]
        assert (run > 0).all() if label == 0 else (run < 0).all()


def test_segments_below_min_confidence_are_uncertain_and_merge():
    p = lambda a: np.asarray([a, 1 - a])  # noqa: E731
    segs = [(0.0, 2.0, 0, p(0.9)), (2.0, 3.0, 1, p(0.4)), (3.0, 4.0, 0, p(0.55)),
            (4.0, 6.0, 1, p(0.2))]
    assert segments.abstain(segs, None) == segs
    got = segments.abstain(segs, 0.7)
    assert [(s[0], s[1], s[2]) for s in got] == [(0.0, 2.0, 0), (2.0, 4.0, segments.UNCERTAIN),
                                                 (4.0, 6.0, 1)]
    merged = got[1]  # 1 s at music 0.6 and 1 s at speech 0.55: time-weighted
    np.testing.assert_allclose(merged[3], [0.475, 0.525])
    assert segments.confidence(merged) == pytest.approx(0.575) and 0.575 < 0.7
    assert [s[2] for s in segments.abstain(segs, 1.0)] == [segments.UNCERTAIN]
