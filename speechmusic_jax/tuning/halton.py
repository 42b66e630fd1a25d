"""Quasi-random points in the unit cube: a scrambled, shifted Halton sequence, seeded.

Quasi-random search (Bousquet et al. 2017, "Critical hyper-parameters: no random, no cry") covers
a search space more evenly than random search for the same budget; AlgoPerf's baselines are tuned
with it. Dimension ``d`` is a van der Corput sequence in the ``d``-th prime base whose digits are
permuted (0 kept) and which is shifted modulo 1, both drawn from the seed; the first ``skip``
points are dropped (the start of a Halton sequence is correlated across dimensions).

The points are not shuffled: the first ``k`` points of a search of ``n`` are the points of a
search of ``k``, so a budget can be raised later without changing the trials already run.
"""

from __future__ import annotations

import numpy as np


def primes(n: int) -> list[int]:
    """The first ``n`` primes."""
    out: list[int] = []
    candidate = 2
    while len(out) < n:
        if all(candidate % p for p in out if p * p <= candidate):
            out.append(candidate)
        candidate += 1
    return out


def radical_inverse(index: int, base: int, digits: np.ndarray | None = None) -> float:
    """The van der Corput number of ``index`` in ``base``: its digits mirrored about the point,
    each mapped through the permutation ``digits`` (identity when None)."""
    value, scale = 0.0, 1.0 / base
    while index > 0:
        index, digit = divmod(index, base)
        value += (digits[digit] if digits is not None else digit) * scale
        scale /= base
    return value


def sequence(n: int, dims: int, seed: int = 0, skip: int = 20) -> np.ndarray:
    """(n, dims) points in [0, 1): the scrambled, shifted Halton sequence of ``seed``."""
    if n < 0 or dims < 0 or skip < 0:
        raise ValueError(f"need n, dims, skip >= 0 (got {n}, {dims}, {skip})")
    out = np.zeros((n, dims))
    for d, base in enumerate(primes(dims)):
        rng = np.random.default_rng([seed, d, 0x4A170])
        digits = np.concatenate([[0], 1 + rng.permutation(base - 1)])
        shift = rng.random()
        for i in range(n):
            out[i, d] = (radical_inverse(i + 1 + skip, base, digits) + shift) % 1.0
    return out
