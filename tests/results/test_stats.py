"""Intervals and paired tests against hand-computed and published cases."""

import pytest

from lib.results.stats import mcnemar_exact, paired_difference, wilson_interval


def table(both: int, only_first: int, only_second: int, neither: int) -> tuple[list[bool], list[bool]]:
    first = [True] * both + [True] * only_first + [False] * only_second + [False] * neither
    second = [True] * both + [False] * only_first + [True] * only_second + [False] * neither
    return first, second


def test_all_agree_is_no_difference():
    result = paired_difference(*table(30, 0, 0, 10))
    assert result["difference"] == 0 and result["fixed"] == result["broken"] == 0 and result["mcnemar_p"] == 1.0
    low, high = result["ci95"]
    assert low < 0 < high


def test_all_flipping_one_way_is_a_difference_of_one():
    result = paired_difference(*table(0, 0, 10, 0))
    assert result["difference"] == 1.0 and result["fixed"] == 10 and result["broken"] == 0
    assert result["mcnemar_p"] == pytest.approx(2 / 2 ** 10)  # both tails of Binomial(10, 1/2) at 0 and 10
    low, high = result["ci95"]
    assert 0 < low < 1 and high == pytest.approx(1.0)


def test_mcnemar_exact_p_by_hand():
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)  # 2 * P(X <= 1), X ~ Binomial(10, 1/2)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0


def test_newcombe_interval_matches_the_published_example():
    # Cavo et al. (2012) complete response before/after consolidation, 59/6/16/80: Fagerland, Lydersen and
    # Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: first - second = -0.0621 (-0.1186 to -0.0046).
    result = paired_difference(*table(59, 6, 16, 80))
    assert result["difference"] == pytest.approx(0.0621, abs=1e-4)
    assert result["ci95"] == pytest.approx((0.0046, 0.1186), abs=1e-4)
    assert result["mcnemar_p"] == pytest.approx(0.052479, abs=1e-6)


def test_a_balanced_flip_has_an_interval_containing_zero():
    result = paired_difference(*table(10, 3, 3, 10))
    low, high = result["ci95"]
    assert result["difference"] == 0 and low < 0 < high and result["mcnemar_p"] == 1.0


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 0.0)
