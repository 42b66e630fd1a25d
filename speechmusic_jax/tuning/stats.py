"""Exact, small-sample statistics for comparing arms over a handful of seeds (numpy only).

A sweep has few seeds (3 to 10), so nothing here leans on a normal approximation:

* ``sign_flip_pvalue``: the paired sign-flip permutation test of "no difference" on the per-seed
  differences d_1..d_n (under the null each d_i is as likely to be -d_i): the two-sided p-value
  of their sum, by exact enumeration of the 2^n sign patterns (n <= ``EXACT_MAX``). It can
  never go below 2 / 2^n: with 3 seeds no p-value is under 0.25.
* ``sign_flip_interval``: the interval that inverts that test (Hartigan 1969): of the 2^n - 1
  means of non-empty subsets of the differences, the k-th smallest and the k-th largest, with
  k = floor(alpha * 2^n / 2), cover the centre of the differences with probability at least
  1 - alpha. It lies inside [min d, max d], so inside the possible range by construction; where
  n is too small for any k >= 1 no informative interval exists and the possible range itself is
  returned. The interval excludes 0 exactly when ``sign_flip_pvalue`` <= alpha.
* ``holm``: Holm-Bonferroni adjusted p-values for m comparisons (step-down).
* ``min_seeds``: the fewest seeds with which the corrected test can reject at all.
* ``pooled_wilson``: a Wilson interval over clips pooled across seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05
EXACT_MAX = 16  # exact enumeration up to 2^16 sign patterns; Monte Carlo (seeded) beyond
_DRAWS = 1 << 16
_TOL = 1e-9  # differences of accuracies are multiples of 1/clips: ties are real ties


def _masks(n: int) -> np.ndarray:
    """Rows of 0/1: every subset of n items (exact), or a seeded random sample of them."""
    if n <= EXACT_MAX:
        return (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
    rng = np.random.default_rng(0)
    return np.vstack([np.zeros((1, n), dtype=np.int64),
                      rng.integers(0, 2, size=(_DRAWS - 1, n))])


def sign_flip_pvalue(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the paired sign-flip test that the differences are centred on 0:
    twice the smaller one-sided tail of their sum over all sign patterns (at most 1)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return 1.0
    sums = _masks(d.size) @ d  # flipping subset S moves the sum from T to T - 2 sum_S d
    upper = np.mean(sums <= _TOL)  # patterns whose sum is at least the observed one
    lower = np.mean(sums >= -_TOL)
    return float(min(1.0, 2.0 * min(upper, lower)))


def sign_flip_interval(diffs: Sequence[float], alpha: float = ALPHA,
                       bounds: tuple[float, float] = (-1.0, 1.0)) -> tuple[float, float]:
    """A (1 - alpha) interval for the centre of the differences, by inverting the sign-flip
    test; clipped to ``bounds`` (for a difference of accuracies, [-1, 1]). With too few
    differences for any bounded interval at this level, ``bounds`` itself."""
    d = np.asarray(diffs, dtype=np.float64)
    lo_bound, hi_bound = bounds
    masks = _masks(d.size)[1:] if d.size else np.zeros((0, 0))
    sizes = masks.sum(axis=1)
    keep = sizes > 0
    means = np.sort((masks[keep] @ d) / sizes[keep]) if d.size else np.zeros(0)
    k = math.floor(alpha * (len(means) + 1) / 2 + 1e-12)
    if k < 1:
        return float(lo_bound), float(hi_bound)
    # inside [min d, max d] in exact arithmetic; clipped so that rounding cannot step out
    low = max(float(means[k - 1]), float(d.min()), lo_bound)
    high = min(float(means[-k]), float(d.max()), hi_bound)
    return low, high


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: the i-th smallest of m is
    multiplied by (m - i + 1), then made non-decreasing, at most 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def min_seeds(comparisons: int, alpha: float = ALPHA) -> int:
    """The fewest paired seeds with which the sign-flip test can reach alpha / comparisons
    (its smallest p-value is 2 / 2^n): below it no difference can ever be called."""
    return max(1, math.ceil(math.log2(2 * max(1, comparisons) / alpha) - 1e-12))


def pooled_wilson(accuracies: Sequence[float], clips: Sequence[int]
                  ) -> tuple[float, tuple[float, float], int] | None:
    """(pooled accuracy, 95% Wilson interval, clips) over the clips of several test sets, each
    given as (accuracy, number of clips); None without clips."""
    from speechmusic_jax.training.metrics import wilson_interval

    pairs = [(a, int(n)) for a, n in zip(accuracies, clips, strict=True)
             if a is not None and n]
    total = sum(n for _, n in pairs)
    if not total:
        return None
    correct = sum(round(a * n) for a, n in pairs)
    return correct / total, wilson_interval(correct, total), total
