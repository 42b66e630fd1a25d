"""The small-sample statistics of a comparison, on hand examples with known answers."""

import itertools

import numpy as np
import pytest

from speechmusic_jax.tuning import stats


def test_sign_flip_pvalue_by_hand():
    # all three differences positive: of the 8 sign patterns only the observed one reaches a sum
    # of 0.6 (one-sided 1/8), and only its mirror -0.6 (the other tail): p = 2/8
    assert stats.sign_flip_pvalue([0.1, 0.2, 0.3]) == pytest.approx(0.25)
    # sum 0.4; patterns with a sum >= 0.4: the observed one and the one flipping -0.05: 2 of 16
    assert stats.sign_flip_pvalue([0.1, -0.05, 0.2, 0.15]) == pytest.approx(0.25)
    # six differences of one sign: 2/64, the smallest this test can give with six seeds
    assert stats.sign_flip_pvalue([0.1] * 6) == pytest.approx(1 / 32)
    assert stats.sign_flip_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert stats.sign_flip_pvalue([0.1, -0.1]) == 1.0


def test_sign_flip_pvalue_matches_brute_force():
    rng = np.random.default_rng(1)
    for n in (3, 5, 7):
        d = np.round(rng.normal(0.02, 0.05, n), 3)
        t = d.sum()
        sums = [np.dot(s, d) for s in itertools.product((1, -1), repeat=n)]
        upper = np.mean([s >= t - 1e-9 for s in sums])
        lower = np.mean([s <= t + 1e-9 for s in sums])
        assert stats.sign_flip_pvalue(d) == pytest.approx(min(1, 2 * min(upper, lower)))


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3 = 0.03, x2 = 0.06, x1 = 0.04 raised to 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.2]) == [0.2]
    assert stats.holm([]) == []


def test_min_seeds_is_where_the_test_can_first_reject():
    assert stats.min_seeds(1) == 6  # 2/2^6 = 0.031 <= 0.05, 2/2^5 = 0.0625 is not
    assert stats.min_seeds(3) == 7  # 0.05/3 = 0.0167: 2/2^7 = 0.0156
    for m in (1, 2, 3, 5, 10):
        n = stats.min_seeds(m)
        assert stats.sign_flip_pvalue([0.1] * n) <= 0.05 / m
        assert stats.sign_flip_pvalue([0.1] * (n - 1)) > 0.05 / m


def test_the_interval_inverts_the_test_and_stays_in_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 10))
        clips = int(rng.integers(5, 30))
        # differences of two accuracies measured on the same number of clips
        d = (rng.integers(0, clips + 1, n) - rng.integers(0, clips + 1, n)) / clips
        for alpha in (0.05, 0.05 / 3):
            lo, hi = stats.sign_flip_interval(d, alpha)
            assert -1.0 <= lo <= hi <= 1.0
            p = stats.sign_flip_pvalue(d)
            assert (lo > 0 or hi < 0) == (p <= alpha), (d, alpha, lo, hi, p)
    # extreme differences: never outside [-1, 1]
    assert stats.sign_flip_interval([1.0] * 8) == (1.0, 1.0)
    assert stats.sign_flip_interval([-1.0, 1.0, -1.0]) == (-1.0, 1.0)
    # too few seeds for a bounded interval: the possible range
    assert stats.sign_flip_interval([0.1, 0.2, 0.3]) == (-1.0, 1.0)
    # six seeds at 95%: k = 1, the range of the differences
    assert stats.sign_flip_interval([0.1, 0.2, 0.3, 0.1, 0.0, 0.4]) == pytest.approx((0.0, 0.4))


def test_pooled_wilson_counts_clips_over_seeds():
    acc, (lo, hi), n = stats.pooled_wilson([0.5, 1.0, 0.75], [10, 10, 20])
    assert n == 40 and acc == pytest.approx(30 / 40)
    assert 0 <= lo < acc < hi <= 1
    assert stats.pooled_wilson([None], [10]) is None
