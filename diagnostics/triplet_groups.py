"""Biased triplets grouped by the confused pair that explains them.

The WR paper (*Repairing Group-Level Errors for DNNs Using Weighted Regularization*, section
2.2.2) measures the bias of a triplet as ``cd(A, B, C) = |error(A, C) - error(B, C)|`` and ranks
triplets one by one. On real data one heavily confused pair then fills the top of the ranking:
with cat and dog confused at 0.12, every triplet ``(cat, X, dog)`` whose negative X is rarely
confused with dog has ``cd ~ 0.12``, for almost every X. Those triplets say one thing (cat and
dog are confused), not K - 2 things.

Here a triplet (positive A, negative B, anchor C) is **explained by the pair** {A, C} when the
negative's error keeps at most ``1 - share`` of the positive's:
``error(B, C) <= (1 - share) * error(A, C)``, i.e. ``cd >= share * error(A, C)``
(``share`` default 0.5: B is confused with C less than half as often as A is). Such triplets are shown as one *pair group* {A, C} listing their
anchors (C, or A for the triplets ``(C, X, A)``) and negatives; the other triplets are
*genuine* biases (both A and B are confused with C, unequally) and stay one group each. The
grouping and the exclusion of pairs are ours, not the paper's; cd itself is unchanged.

Everything here is a pure function of the (K, K) pair-error matrix and ranked triplet frames
(:func:`diagnostics.confusion.rank_biased_triplets`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

PAIR, TRIPLET = "pair", "triplet"
#: default least share of error(A, C) that cd keeps for a triplet to count as explained by {A, C}.
#: On CIFAR-10 (ResNet-56) 0.8 still left (dog, horse, cat) apart from cat / dog with horse -> cat at
#: 27 % of dog -> cat; at 0.5 the top groups are ten distinct pairs and a triplet stays apart only
#: when both A and B are substantially confused with C.
SHARE = 0.5


def _check_share(share: float) -> float:
    share = float(share)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    return share


def pair_explained(error_pos, error_neg, *, share: float = SHARE) -> np.ndarray:
    """Which triplets are explained by their (positive, anchor) pair.

    Args:
        error_pos: (T,) float error(positive, anchor).
        error_neg: (T,) float error(negative, anchor), at most ``error_pos``.
        share: in (0, 1]; a triplet is explained when ``error_neg <= (1 - share) * error_pos``.

    Returns:
        (T,) bool. A triplet with ``error_pos == 0`` (cd 0) is not explained by anything.
    """
    share = _check_share(share)
    e_pos = np.asarray(error_pos, dtype=np.float64)
    e_neg = np.asarray(error_neg, dtype=np.float64)
    # a small tolerance so that error_neg == (1 - share) * error_pos counts despite rounding
    return (e_pos > 0) & (e_neg <= (1.0 - share) * e_pos + 1e-12)


def unordered(a, b) -> tuple[int, int]:
    """The pair ``(min, max)`` of two class indices."""
    a, b = int(a), int(b)
    return (a, b) if a <= b else (b, a)


def target_pairs(groups: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """The confused pairs a repair target names, as sorted ``(a, b)`` tuples.

    Args:
        groups: a target's class-index groups: pairs ``(a, b)`` (confusion) or triplets
            ``(positive, negative, anchor)`` (bias; its pair is (positive, anchor), the one
            whose confusion makes the bias).

    Returns:
        Sorted, without duplicates.
    """
    found = set()
    for g in groups:
        g = tuple(int(c) for c in g)
        if len(g) == 2:
            found.add(unordered(*g))
        elif len(g) == 3:
            found.add(unordered(g[0], g[2]))
        else:
            raise ValueError(f"a target group is a pair or a triplet, got {g}")
    return sorted(found)


def drop_pairs(triplets, pairs: Iterable[Sequence[int]]):
    """The triplets whose (positive, anchor) pair is none of ``pairs``.

    Args:
        triplets: frame of :func:`diagnostics.confusion.rank_biased_triplets` (needs
            ``positive_id``, ``anchor_id``).
        pairs: class-index pairs in either order.

    Returns:
        The kept rows, in their order, index reset.
    """
    wanted = {unordered(*p) for p in pairs}
    if not wanted or triplets.empty:
        return triplets.reset_index(drop=True)
    lo = np.minimum(triplets["positive_id"].to_numpy(), triplets["anchor_id"].to_numpy())
    hi = np.maximum(triplets["positive_id"].to_numpy(), triplets["anchor_id"].to_numpy())
    drop = np.array([(int(a), int(b)) in wanted for a, b in zip(lo, hi)], dtype=bool)
    return triplets[~drop].reset_index(drop=True)


def pair_negatives(errors: np.ndarray, positive: int, anchor: int, *, share: float = SHARE) -> np.ndarray:
    """Every negative B that makes (positive, B, anchor) a triplet explained by {positive, anchor}.

    Args:
        errors: (K, K) symmetric pair error.

    Returns:
        (M,) int64 class indices (neither ``positive`` nor ``anchor``), lowest error(B, anchor)
        first (ties in class order).
    """
    share = _check_share(share)
    errors = np.asarray(errors, dtype=np.float64)
    column = errors[:, int(anchor)]
    limit = (1.0 - share) * column[int(positive)]
    if column[int(positive)] <= 0:
        return np.zeros(0, dtype=np.int64)
    ok = column <= limit + 1e-12
    ok[[int(positive), int(anchor)]] = False
    found = np.flatnonzero(ok)
    return found[np.argsort(column[found], kind="stable")].astype(np.int64)


def group_triplets(triplets, errors: np.ndarray, class_names: Sequence[str] | None = None, *,
                   share: float | None = SHARE):
    """One row per pair group or genuine triplet, in ranking order.

    Args:
        triplets: ranked frame of :func:`diagnostics.confusion.rank_biased_triplets`
            (columns ``positive_id, negative_id, anchor_id, cd, error_pos, error_neg``).
        errors: (K, K) symmetric pair error (for each pair group's complete negative count).
        class_names: K names (default: the indices as strings).
        share: see :func:`pair_explained`; None keeps every triplet apart (no pair groups).

    Triplets with cd 0 (no bias) are left out.

    Returns:
        DataFrame, one row per group, best group first (the order of each group's best
        triplet in ``triplets``), columns:

        - ``kind``: ``"pair"`` or ``"triplet"``;
        - ``group``: text, ``"A / C"`` for a pair group, ``"A / B | C"`` for a triplet;
        - ``a_id, b_id``: the pair (sorted class indices) of a pair group; the triplet's
          (positive, anchor) pair for a genuine triplet;
        - ``positive_id, negative_id, anchor_id, cd, error_pos, error_neg``: the group's best
          triplet;
        - ``pair_error``: error(a, b);
        - ``ranked``: how many of the given triplets the group holds;
        - ``negatives``: for a pair group, how many triplets the pair explains in all (every
          negative of both anchors, :func:`pair_negatives`); 1 for a genuine triplet;
        - ``anchors``: the anchor names of the ranked members, best first, joined by ", ";
        - ``rows``: the member positions in ``triplets`` (a list of ints), best first.
    """
    import pandas as pd

    if share is not None:
        share = _check_share(share)
    errors = np.asarray(errors, dtype=np.float64)
    k = errors.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    columns = ["kind", "group", "a_id", "b_id", "positive_id", "negative_id", "anchor_id", "cd", "error_pos",
               "error_neg", "pair_error", "ranked", "negatives", "anchors", "rows"]
    if triplets.empty:
        return pd.DataFrame(columns=columns)
    pos = triplets["positive_id"].to_numpy(dtype=np.int64)
    neg = triplets["negative_id"].to_numpy(dtype=np.int64)
    anc = triplets["anchor_id"].to_numpy(dtype=np.int64)
    explained = np.zeros(len(triplets), dtype=bool) if share is None else \
        pair_explained(triplets["error_pos"].to_numpy(), triplets["error_neg"].to_numpy(), share=share)
    biased = triplets["cd"].to_numpy() > 0
    groups: dict[tuple, list[int]] = {}
    for row in np.flatnonzero(biased).tolist():
        key = (PAIR, *unordered(pos[row], anc[row])) if explained[row] else (TRIPLET, row)
        groups.setdefault(key, []).append(row)
    records = []
    for key, rows in groups.items():  # dicts keep insertion order: best group first
        best = rows[0]
        p, n, c = int(pos[best]), int(neg[best]), int(anc[best])
        a, b = unordered(p, c)
        if key[0] == PAIR:
            label = f"{names[a]} / {names[b]}"
            total = len(pair_negatives(errors, a, b, share=share)) + len(pair_negatives(errors, b, a, share=share))
        else:
            label = f"{names[p]} / {names[n]} | {names[c]}"
            total = 1
        anchors = list(dict.fromkeys(names[int(anc[r])] for r in rows))
        records.append({"kind": key[0], "group": label, "a_id": a, "b_id": b, "positive_id": p, "negative_id": n,
                        "anchor_id": c, "cd": float(triplets["cd"].iloc[best]),
                        "error_pos": float(triplets["error_pos"].iloc[best]),
                        "error_neg": float(triplets["error_neg"].iloc[best]), "pair_error": float(errors[a, b]),
                        "ranked": len(rows), "negatives": int(total), "anchors": ", ".join(anchors),
                        "rows": [int(r) for r in rows]})
    return pd.DataFrame.from_records(records, columns=columns)


def rank_triplet_groups(errors: np.ndarray, class_names: Sequence[str] | None = None, *,
                        rank: Callable, groups: int = 20, share: float | None = SHARE,
                        exclude: Iterable[Sequence[int]] = (), anchors: Sequence[int] | None = None,
                        kinds: Sequence[str] = (PAIR, TRIPLET), first: int = 1000, most: int = 64_000) -> tuple:
    """The best ``groups`` triplet groups, ranking deeper until enough are found.

    One pair can explain up to ``2 (K - 2)`` triplets and excluded pairs remove theirs, so the
    first ``groups`` groups may need far more ranked triplets than ``groups``: the ranking is
    asked for ``first`` triplets, then 4x as many, until ``groups + 1`` groups are found (the
    extra one proves the last wanted group is complete in the ranking), every triplet has been
    ranked, or ``most`` is reached.

    Args:
        errors: (K, K) symmetric pair error.
        rank: ``rank(errors, class_names, top=, anchors=)`` returning a ranked frame, i.e.
            :func:`diagnostics.confusion.rank_biased_triplets` (passed in, so this module
            ranks nothing itself).
        groups: how many groups to return.
        share: see :func:`pair_explained`; None: no grouping (each triplet is a group).
        exclude: class-index pairs whose triplets (by their (positive, anchor) pair) are left out.
        anchors: only triplets with these anchors (default all).
        kinds: the group kinds returned (``"pair"``, ``"triplet"``); e.g. only the biases
            that no single pair explains.
        first, most: the first and the largest number of triplets ranked.

    Returns:
        ``(grouped, triplets)``: :func:`group_triplets` of the kept triplets (at most
        ``groups`` rows) and the kept ranked triplets it refers to (``rows`` index them):
        those with cd > 0 whose pair is not excluded.
    """
    if share is not None:
        share = _check_share(share)
    bad = sorted(set(kinds) - {PAIR, TRIPLET})
    if bad or not kinds:
        raise ValueError(f"kinds must be among {PAIR!r}, {TRIPLET!r}; got {list(kinds)}")
    errors = np.asarray(errors, dtype=np.float64)
    k = errors.shape[0]
    n_anchors = k if anchors is None else len(set(int(a) for a in anchors))
    total = n_anchors * max(k - 1, 0) * max(k - 2, 0) // 2
    exclude = [tuple(p) for p in exclude]
    top = max(int(first), 1)
    while True:
        ranked = rank(errors, class_names, top=min(top, max(total, 1)), anchors=anchors)
        kept = drop_pairs(ranked[ranked["cd"] > 0], exclude)
        grouped = group_triplets(kept, errors, class_names, share=share)
        grouped = grouped[grouped["kind"].isin(list(kinds))]
        if len(grouped) > groups or top >= total or top >= most:
            break
        top *= 4
    grouped = grouped.head(groups).reset_index(drop=True)
    return grouped, kept
