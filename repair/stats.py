"""Statistics for comparing repairs (WR paper, "Repairing Group-Level Errors for DNNs Using
Weighted Regularization", section 4.3): pure functions over plain numbers.

* :func:`compute_rank_sum_test`: the Wilcoxon rank-sum test exactly as
  ``scipy.stats.ranksums`` computes it (section 4.3.2), with degenerate inputs handled.
* :func:`compute_a12` / :func:`classify_a12` / :func:`a12_letter`: the Vargha-Delaney A12
  effect size, its magnitude and the one-letter code of the paper's tables.
* :func:`compare_groups`: both of the above for one treatment against one control.
* :func:`rank_competition` / :func:`rank_trade_off`: competition ("1224") ranks, the rank
  sum of accuracy rank and target-error rank (section 4.3.1) and the top-two flag.

No model, no files: the selection rule and the result table live in :mod:`repair.selection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from workspace.errors import WorkspaceError

#: The alternatives of :func:`compute_rank_sum_test` (those of ``scipy.stats.ranksums``).
ALTERNATIVES = ("two-sided", "less", "greater")
#: Rank orders of :func:`rank_competition`.
ORDERS = ("descending", "ascending")
#: Upper bounds (exclusive) of ``|2 A12 - 1|`` for each magnitude; anything else is "large".
#: Romano et al.'s thresholds for Cliff's delta, which equals ``2 A12 - 1``.
A12_THRESHOLDS = ((0.147, "negligible"), (0.33, "small"), (0.474, "medium"))
#: The letters the WR paper's Tables 2-4 print beside an A12 value.
A12_LETTERS = {"negligible": "n", "small": "s", "medium": "m", "large": "l"}


class RankSumResult(NamedTuple):
    """The rank-sum z statistic and p-value, or None for both with the ``reason``."""

    statistic: float | None
    p_value: float | None
    reason: str | None = None


@dataclass(frozen=True)
class GroupComparison:
    """One treatment sample against one control sample.

    Attributes:
        statistic: the rank-sum z statistic (negative when the treatment tends to be lower);
            None when the test could not be run.
        p_value: the rank-sum p-value; None when the test could not be run.
        a12: Vargha-Delaney A12, the probability that a treatment value exceeds a control
            value (ties count one half); None when the test could not be run.
        magnitude: "negligible", "small", "medium" or "large" (None with ``a12``).
        letter: the paper's one-letter code of ``magnitude`` ("n", "s", "m", "l").
        reason: why nothing was computed (None when it was).
    """

    statistic: float | None
    p_value: float | None
    a12: float | None
    magnitude: str | None
    letter: str | None
    reason: str | None = None


def _as_sample(values: Sequence[float] | np.ndarray, name: str) -> tuple[np.ndarray | None, str | None]:
    x = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        return None, f"the {name} values are not all finite"
    return x, None


def compute_rank_sum_test(treatment: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray, *,
                          alternative: str = "two-sided") -> RankSumResult:
    """Wilcoxon rank-sum test of ``treatment`` against ``control`` (WR paper section 4.3.2).

    Exactly ``scipy.stats.ranksums``: the z statistic of the treatment's rank sum in the
    pooled sample under the normal approximation, average ranks for ties, **no** tie
    correction of the variance and **no** continuity correction. The paper's p-values are
    these: 5 runs against 5 runs with no overlap give z = -2.611, p = 0.009 (two-sided).

    Args:
        treatment: (m,) float, the method's values (e.g. target error over seeds).
        control: (n,) float, the baseline's values.
        alternative: "two-sided" (default, as in the paper), "less" (treatment lower) or
            "greater".

    Returns:
        :class:`RankSumResult` ``(statistic, p_value, reason)``. When every pooled value is equal, z = 0 and
        p = 1.0. When either group has fewer than 2 values or a value is not finite, the
        statistic and p-value are None and ``reason`` says why (otherwise ``reason`` is None).

    Raises:
        WorkspaceError: ``alternative`` is not one of :data:`ALTERNATIVES`.
    """
    if alternative not in ALTERNATIVES:
        raise WorkspaceError(f"unknown alternative {alternative!r}; choose one of {', '.join(ALTERNATIVES)}")
    x, why = _as_sample(treatment, "treatment")
    if why:
        return RankSumResult(None, None, why)
    y, why = _as_sample(control, "control")
    if why:
        return RankSumResult(None, None, why)
    if len(x) < 2 or len(y) < 2:
        return RankSumResult(None, None, f"fewer than 2 runs per group ({len(x)} vs {len(y)})")
    if np.all(np.concatenate([x, y]) == x[0]):
        # every rank equal: no evidence either way (scipy gives the same; said here so it holds)
        return RankSumResult(0.0, 1.0)
    from scipy import stats  # here, not at import: up to 1 s of the Repair page's first visit

    res = stats.ranksums(x, y, alternative=alternative)
    return RankSumResult(float(res.statistic), float(res.pvalue))


def compute_a12(treatment: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray) -> float | None:
    """Vargha-Delaney A12 of ``treatment`` against ``control`` (WR paper section 4.3.2).

    ``A12 = (2 R1 - m (m + 1)) / (2 m n)`` where ``R1`` is the rank sum of the treatment in
    the pooled sample (average ranks for ties), ``m`` and ``n`` the group sizes. It equals
    P(X > Y) + P(X = Y) / 2 for X from the treatment and Y from the control: 0.5 means no
    difference, 0 means every treatment value is below every control value.

    Args:
        treatment: (m,) float, the method's values.
        control: (n,) float, the baseline's values.

    Returns:
        A12 in [0, 1]; None when a group is empty or a value is not finite.
    """
    x, why = _as_sample(treatment, "treatment")
    y, why2 = _as_sample(control, "control")
    if why or why2 or len(x) == 0 or len(y) == 0:
        return None
    m, n = len(x), len(y)
    from scipy import stats

    r1 = float(stats.rankdata(np.concatenate([x, y]), method="average")[:m].sum())
    return (2.0 * r1 - m * (m + 1)) / (2.0 * m * n)


def classify_a12(a12: float) -> str:
    """Magnitude of an A12 effect size from ``|2 A12 - 1|``.

    Below 0.147 "negligible", below 0.33 "small", below 0.474 "medium", otherwise "large"
    (so a value exactly on a bound belongs to the larger class). A12 and 1 - A12 have the
    same magnitude.

    Args:
        a12: a Vargha-Delaney A12 in [0, 1].

    Returns:
        "negligible", "small", "medium" or "large".

    Raises:
        WorkspaceError: ``a12`` is not a finite number in [0, 1].
    """
    if not (np.isfinite(a12) and 0.0 <= a12 <= 1.0):
        raise WorkspaceError(f"A12 must be a number in [0, 1], got {a12}")
    # rounding keeps 2 * 0.5735 - 1 (= 0.14700000000000002) on the bound it is meant to hit
    delta = round(abs(2.0 * float(a12) - 1.0), 12)
    for bound, name in A12_THRESHOLDS:
        if delta < bound:
            return name
    return "large"


def a12_letter(a12: float) -> str:
    """The WR paper's one-letter magnitude code of ``a12``: "n", "s", "m" or "l" (Table 2 legend)."""
    return A12_LETTERS[classify_a12(a12)]


def compare_groups(treatment: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray, *,
                   alternative: str = "two-sided") -> GroupComparison:
    """Rank-sum test and A12 of ``treatment`` against ``control``, as the paper reports them.

    Args:
        treatment: (m,) float, the method's values over seeds.
        control: (n,) float, the baseline's values over seeds.
        alternative: passed to :func:`compute_rank_sum_test`.

    Returns:
        A :class:`GroupComparison`; every field but ``reason`` is None when the test cannot
        be run (fewer than 2 values per group, non-finite values).
    """
    statistic, p, reason = compute_rank_sum_test(treatment, control, alternative=alternative)
    if reason:
        return GroupComparison(None, None, None, None, None, reason)
    a12 = compute_a12(treatment, control)
    return GroupComparison(statistic, p, a12, classify_a12(a12), a12_letter(a12))


def rank_competition(values: Sequence[float] | np.ndarray, *, order: str = "descending",
                     decimals: int | None = None) -> np.ndarray:
    """Competition ("1224") ranks: equal values share the lowest rank, the next rank skips.

    Args:
        values: (R,) float.
        order: "descending" (largest value gets rank 1, e.g. accuracy) or "ascending"
            (smallest gets rank 1, e.g. target error).
        decimals: when given, values are rounded to this many decimals first, so that
            rows printed the same (the paper prints 4 decimals) share a rank.

    Returns:
        (R,) int64 ranks starting at 1.

    Raises:
        WorkspaceError: ``order`` is not one of :data:`ORDERS`, or a value is not finite.
    """
    if order not in ORDERS:
        raise WorkspaceError(f"unknown rank order {order!r}; choose one of {', '.join(ORDERS)}")
    x = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise WorkspaceError("cannot rank values that are not finite (NaN or infinite)")
    if decimals is not None:
        x = np.round(x, decimals)
    if order == "descending":
        x = -x
    from scipy import stats

    return stats.rankdata(x, method="min").astype(np.int64)


def rank_trade_off(accuracy: Sequence[float] | np.ndarray, target_error: Sequence[float] | np.ndarray, *,
                   decimals: int | None = None, top: int = 2) -> pd.DataFrame:
    """Rank rows by accuracy and by target error and sum the ranks (WR paper section 4.3.1).

    The row with the smallest rank sum is the best trade-off. The paper highlights the
    "top2 (or top3 if tied)" rows: here every row whose competition rank of the rank sum
    is at most ``top`` (rank sums 5, 8, 8 flag three rows; 5, 5, 8 flag two).

    Args:
        accuracy: (R,) float, higher is better.
        target_error: (R,) float (confusion or bias), lower is better.
        decimals: round before ranking (see :func:`rank_competition`).
        top: how many best rank sums to flag (default 2).

    Returns:
        DataFrame with R rows in the input order and columns ``accuracy_rank``,
        ``target_error_rank``, ``rank_sum`` (int64) and ``top2`` (bool).
    """
    acc = np.asarray(accuracy, dtype=float).ravel()
    err = np.asarray(target_error, dtype=float).ravel()
    if len(acc) != len(err):
        raise WorkspaceError(f"accuracy and target error differ in length ({len(acc)} vs {len(err)})")
    acc_rank = rank_competition(acc, order="descending", decimals=decimals)
    err_rank = rank_competition(err, order="ascending", decimals=decimals)
    rank_sum = acc_rank + err_rank
    top_flag = rank_competition(rank_sum, order="ascending") <= top if len(rank_sum) else np.zeros(0, bool)
    return pd.DataFrame({"accuracy_rank": acc_rank, "target_error_rank": err_rank,
                         "rank_sum": rank_sum, "top2": np.asarray(top_flag, dtype=bool)})
