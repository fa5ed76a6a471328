"""Rank-sum test, A12 and competition ranks against hand-worked examples (WR paper 4.3)."""

import math

import numpy as np
import pytest

from repair.stats import (
    a12_letter, classify_a12, compare_groups, compute_a12, compute_rank_sum_test, rank_competition,
    rank_trade_off,
)
from workspace.errors import WorkspaceError

# sd of the rank sum for 5 vs 5 under H0: sqrt(m n (m + n + 1) / 12) = sqrt(275 / 12)
SD_5_5 = math.sqrt(5 * 5 * 11 / 12)


def two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def test_fully_separated_five_against_five_gives_the_papers_0_009():
    # treatment ranks 1..5: R1 = 15, expected 5 * 11 / 2 = 27.5
    z = (15 - 27.5) / SD_5_5
    res = compute_rank_sum_test([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert res.reason is None
    assert res.statistic == pytest.approx(z) and res.statistic == pytest.approx(-2.6112, abs=1e-4)
    assert res.p_value == pytest.approx(two_sided_p(z))
    assert round(res.p_value, 3) == 0.009
    # the other way round: same p, opposite sign
    back = compute_rank_sum_test([6, 7, 8, 9, 10], [1, 2, 3, 4, 5])
    assert back.statistic == pytest.approx(-z) and back.p_value == pytest.approx(res.p_value)


def test_one_sided_alternative_halves_the_p_value():
    less = compute_rank_sum_test([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], alternative="less")
    greater = compute_rank_sum_test([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], alternative="greater")
    assert less.p_value == pytest.approx(two_sided_p(-2.6112) / 2, rel=1e-3)
    assert greater.p_value == pytest.approx(1 - less.p_value)


def test_ties_use_average_ranks_without_variance_correction():
    x, y = [1, 2, 2, 3, 3], [2, 3, 4, 4, 5]
    # pooled: 1 -> 1; 2,2,2 -> 3; 3,3,3 -> 6; 4,4 -> 8.5; 5 -> 10. R1 = 1 + 3 + 3 + 6 + 6 = 19
    z = (19 - 27.5) / SD_5_5
    res = compute_rank_sum_test(x, y)
    assert res.statistic == pytest.approx(z)
    assert res.p_value == pytest.approx(two_sided_p(z))
    assert res.p_value == pytest.approx(0.0758, abs=1e-4)
    # A12 = (2 * 19 - 30) / 50; by pairs: x=2 ties one y (0.5 each), x=3 beats one, ties one (1.5 each)
    assert compute_a12(x, y) == pytest.approx(0.16)
    assert compute_a12(x, y) == pytest.approx((0.5 + 0.5 + 1.5 + 1.5) / 25)


def test_all_equal_values_give_p_one():
    res = compute_rank_sum_test([0.3, 0.3, 0.3], [0.3, 0.3])
    assert res.statistic == 0.0 and res.p_value == 1.0 and res.reason is None
    assert compute_a12([0.3, 0.3, 0.3], [0.3, 0.3]) == 0.5


@pytest.mark.parametrize("x, y", [([0.1], [0.2, 0.3]), ([0.1, 0.2], [0.3]), ([], [0.1, 0.2])])
def test_fewer_than_two_per_group_is_not_tested(x, y):
    res = compute_rank_sum_test(x, y)
    assert res.statistic is None and res.p_value is None
    assert "fewer than 2" in res.reason
    cmp = compare_groups(x, y)
    assert cmp.p_value is None and cmp.a12 is None and cmp.letter is None and "fewer than 2" in cmp.reason


def test_non_finite_values_are_not_tested():
    res = compute_rank_sum_test([0.1, float("nan")], [0.2, 0.3])
    assert res.p_value is None and "finite" in res.reason
    assert compute_a12([0.1, float("nan")], [0.2, 0.3]) is None


def test_unknown_alternative_lists_the_valid_ones():
    with pytest.raises(WorkspaceError, match="two-sided, less, greater"):
        compute_rank_sum_test([1, 2], [3, 4], alternative="lower")


def test_a12_extremes_and_formula():
    assert compute_a12([1, 2, 3], [4, 5]) == 0.0
    assert compute_a12([4, 5], [1, 2, 3]) == 1.0
    # m = 2, n = 3: pooled [1, 2, 3, 4, 5], x = [2, 5] -> R1 = 2 + 5 = 7, A12 = (14 - 6) / 12
    assert compute_a12([2, 5], [1, 3, 4]) == pytest.approx(8 / 12)


def test_a12_equals_the_pairwise_probability():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 6, size=7).astype(float), rng.integers(0, 6, size=4).astype(float)
    pairs = (x[:, None] > y[None, :]).mean() + 0.5 * (x[:, None] == y[None, :]).mean()
    assert compute_a12(x, y) == pytest.approx(pairs)


CONTROL = [0, 10, 20, 30, 40]


# Each treatment value's "wins" against CONTROL (a tie with 30 or 40 counts one half) are
# in the comments; A12 = wins / 25 and the magnitude comes from |2 A12 - 1|.
@pytest.mark.parametrize("treatment, a12, magnitude", [
    ([5, 15, 25, 35, 35], 0.56, "negligible"),   # 1+2+3+4+4 = 14      |2A-1| = 0.12 < 0.147
    ([5, 15, 25, 35, 40], 0.58, "small"),        # 1+2+3+4+4.5 = 14.5  0.16
    ([5, 25, 35, 45, 30], 0.66, "small"),        # 1+3+4+5+3.5 = 16.5  0.32 < 0.33
    ([5, 25, 35, 45, 35], 0.68, "medium"),       # 1+3+4+5+4 = 17      0.36
    ([15, 25, 35, 45, 35], 0.72, "medium"),      # 2+3+4+5+4 = 18      0.44 < 0.474
    ([15, 25, 35, 45, 40], 0.74, "large"),       # 2+3+4+5+4.5 = 18.5  0.48
])
def test_a12_near_each_magnitude_threshold(treatment, a12, magnitude):
    got = compute_a12(treatment, CONTROL)
    assert got == pytest.approx(a12)
    assert classify_a12(got) == magnitude
    # mirrored (control first): 1 - A12, same magnitude
    assert compute_a12(CONTROL, treatment) == pytest.approx(1 - a12)
    assert classify_a12(compute_a12(CONTROL, treatment)) == magnitude


@pytest.mark.parametrize("a12, magnitude", [
    (0.5735, "small"), (0.4265, "small"), (0.5734, "negligible"),   # |2A-1| = 0.147 is not < 0.147
    (0.665, "medium"), (0.335, "medium"), (0.6649, "small"),        # 0.33
    (0.737, "large"), (0.263, "large"), (0.7369, "medium"),         # 0.474
    (0.5, "negligible"), (0.0, "large"), (1.0, "large"),
])
def test_a12_exactly_on_a_threshold_belongs_to_the_larger_class(a12, magnitude):
    assert classify_a12(a12) == magnitude


# A12 values and letters as printed in the WR paper's Tables 2 and 3
@pytest.mark.parametrize("a12, letter", [
    (0.680, "m"), (0.420, "s"), (0.280, "m"), (0.180, "l"), (0.48, "n"), (0.240, "l"), (0.360, "s"),
    (0.400, "s"), (0.3, "m"), (0.0, "l"), (1.0, "l"), (0.060, "l"), (0.160, "l"),
])
def test_letters_match_the_papers_tables(a12, letter):
    assert a12_letter(a12) == letter


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_a12_out_of_range_is_refused(bad):
    with pytest.raises(WorkspaceError, match="A12"):
        classify_a12(bad)


def test_compare_groups_combines_test_and_effect_size():
    cmp = compare_groups([0.10, 0.11, 0.12, 0.13, 0.14], [0.20, 0.21, 0.22, 0.23, 0.24])
    assert round(cmp.p_value, 3) == 0.009 and cmp.statistic < 0
    assert cmp.a12 == 0.0 and cmp.magnitude == "large" and cmp.letter == "l" and cmp.reason is None


def test_competition_ranks_share_the_lowest_and_skip():
    assert rank_competition([0.9, 0.8, 0.9, 0.7]).tolist() == [1, 3, 1, 4]
    assert rank_competition([0.1, 0.2, 0.1, 0.05], order="ascending").tolist() == [2, 4, 2, 1]
    assert rank_competition([5, 5, 5]).tolist() == [1, 1, 1]
    # printed to 4 decimals, 0.87791 and 0.87789 are both 0.8779
    assert rank_competition([0.87791, 0.87789, 0.8], decimals=4).tolist() == [1, 1, 3]
    assert rank_competition([0.87791, 0.87789, 0.8]).tolist() == [1, 2, 3]


def test_competition_rank_refuses_bad_input():
    with pytest.raises(WorkspaceError, match="descending, ascending"):
        rank_competition([1, 2], order="up")
    with pytest.raises(WorkspaceError, match="finite"):
        rank_competition([1, float("nan")])


def test_rank_sums_reproduce_the_papers_table_2_cifar10_resnet18():
    # WR paper Table 2, CIFAR-10 / ResNet-18 (confusion): means as printed; w-bn(0.9)'s
    # confusion is printed "0.866", a typo for 0.0866 (its rank, 3, only fits 0.0866)
    names = ["orig", "orig-ft", "w-aug(0.7)", "w-bn(0.7)", "w-bn(0.9)", "w-loss(0.9)", "w-dbr(0.9)", "w-os(0.1)"]
    acc = [0.8747, 0.8779, 0.8778, 0.8489, 0.8746, 0.8761, 0.8779, 0.8654]
    conf = [0.0960, 0.0993, 0.0966, 0.0671, 0.0866, 0.1003, 0.0891, 0.071]
    ranks = rank_trade_off(acc, conf, decimals=4)
    assert ranks["accuracy_rank"].tolist() == [5, 1, 3, 8, 6, 4, 1, 7]
    assert ranks["target_error_rank"].tolist() == [5, 7, 6, 1, 3, 8, 4, 2]
    assert ranks["rank_sum"].tolist() == [10, 8, 9, 9, 9, 12, 5, 9]
    assert [n for n, t in zip(names, ranks["top2"]) if t] == ["orig-ft", "w-dbr(0.9)"]


def test_top2_takes_every_row_tied_for_second_but_not_for_third():
    # sums 2, 5, 5, 8: rank-sum ranks 1, 2, 2, 4 -> three rows ("top3 if tied")
    r = rank_trade_off([0.9, 0.8, 0.7, 0.6], [0.1, 0.3, 0.2, 0.4])
    assert r["rank_sum"].tolist() == [2, 5, 5, 8] and r["top2"].tolist() == [True, True, True, False]
    # sums 3, 3, 6, 8: ranks 1, 1, 3, 4 -> two rows
    r = rank_trade_off([0.9, 0.8, 0.7, 0.6], [0.2, 0.1, 0.3, 0.4])
    assert r["rank_sum"].tolist() == [3, 3, 6, 8] and r["top2"].tolist() == [True, True, False, False]


def test_rank_trade_off_refuses_lengths_that_differ():
    with pytest.raises(WorkspaceError, match="length"):
        rank_trade_off([0.9, 0.8], [0.1])
