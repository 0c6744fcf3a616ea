"""Small statistics helpers."""

from __future__ import annotations

import math


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (better than the normal one near 0, 1 or small n)."""
    if total == 0:
        return 0.0, 0.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as Binomial(b + c, 1/2), doubling the
    smaller tail (capped at 1). All pairs concordant: 1."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    smaller = min(only_first, only_second)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def paired_difference(first: list[bool], second: list[bool], z: float = 1.959964) -> dict:
    """Second minus first success rate on the same items, with Newcombe's (1998, method 10) 95%
    interval for paired proportions (Wilson intervals of both rates joined through the phi
    correlation of the 2x2 table) and the exact McNemar test.

    fixed: items the first got wrong and the second right; broken: the reverse."""
    if len(first) != len(second):
        raise ValueError("paired outcomes must have the same length")
    n = len(first)
    both = sum(f and s for f, s in zip(first, second))
    broken = sum(f and not s for f, s in zip(first, second))
    fixed = sum(s and not f for f, s in zip(first, second))
    neither = n - both - broken - fixed
    if n == 0:
        return {"n": 0, "first_rate": 0.0, "second_rate": 0.0, "difference": 0.0, "ci95": (0.0, 0.0),
                "fixed": 0, "broken": 0, "mcnemar_p": 1.0}
    p_second, p_first = (both + fixed) / n, (both + broken) / n
    low_s, high_s = wilson_interval(both + fixed, n, z)
    low_f, high_f = wilson_interval(both + broken, n, z)
    # phi: the correlation of the two outcomes, a positive one reduced by n/2 as Newcombe specifies
    margins = (both + broken) * (fixed + neither) * (both + fixed) * (broken + neither)
    cross = both * neither - broken * fixed
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    difference = p_second - p_first
    below = math.sqrt(max(0.0, (p_second - low_s) ** 2 - 2 * phi * (p_second - low_s) * (high_f - p_first)
                          + (high_f - p_first) ** 2))
    above = math.sqrt(max(0.0, (high_s - p_second) ** 2 - 2 * phi * (high_s - p_second) * (p_first - low_f)
                          + (p_first - low_f) ** 2))
    return {"n": n, "first_rate": p_first, "second_rate": p_second, "difference": difference,
            "ci95": (max(-1.0, difference - below), min(1.0, difference + above)),
            "fixed": fixed, "broken": broken, "mcnemar_p": mcnemar_exact(broken, fixed)}
