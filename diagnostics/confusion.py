"""Confusion and bias metrics of the WR paper (section 2.2), as pure array functions.

Conventions: ``labels`` are (N,) int class indices (single-label) or (N, K) multi-hot
(multi-label); ``preds`` are (N,) ints or (N, K) bool. The pair error matrix ``E`` is
(K, K) float, symmetric, zero on the diagonal: ``E[a, b]`` is type1conf(a, b) for
single-label tasks and type2conf(a, b) for multi-label tasks.

Targets are lists of class-index tuples: pairs ``(a, b)`` (confusion) or triplets
``(positive, negative, anchor)`` (bias).
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

TASKS = ("single_label", "multi_label")


def confusion_counts(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = label, column = prediction (single-label)."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    for name, values in (("labels", labels), ("preds", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in [0, {num_classes}), "
                             f"found {values.min()}..{values.max()}")
    flat = labels * num_classes + preds
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_rates(counts: np.ndarray) -> np.ndarray:
    """Row-normalised counts: ``rates[i, j] = P(pred = j | label = i)``; empty rows are 0."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def type1conf_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``E[a, b] = mean(P(pred=b | label=a), P(pred=a | label=b))`` for every pair; diag 0."""
    rates = confusion_rates(confusion_counts(labels, preds, num_classes))
    conf = (rates + rates.T) / 2.0
    np.fill_diagonal(conf, 0.0)
    return conf


def type2conf_matrix(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Multi-label ``type2conf`` for every pair (WR paper, section 2.2.1).

    ``E[a, b] = mean(P(a and b predicted | a present, b absent),
    P(a and b predicted | b present, a absent))``; a direction with no such samples counts 0.

    Args:
        labels: (N, K) multi-hot ground truth.
        preds: (N, K) bool predictions.
    """
    p = type2conf_directional(labels, preds)
    return (p + p.T) / 2.0


def error_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int, *, task: str = "single_label") -> np.ndarray:
    """The (K, K) pair error of the task: type1conf (single-label) or type2conf (multi-label)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "multi_label":
        return type2conf_matrix(labels, preds)
    return type1conf_matrix(labels, preds, num_classes)


def target_error(errors: np.ndarray, targets: Sequence[Sequence[int]]) -> float:
    """Mean error over the targets: type1/type2conf of each pair, or cd of each triplet.

    ``cd(A, B, C) = |E[A, C] - E[B, C]|`` (WR paper 2.2.2). All targets must have the
    same length (2 or 3).
    """
    targets = [tuple(int(c) for c in t) for t in targets]
    if not targets:
        raise ValueError("no targets given")
    sizes = {len(t) for t in targets}
    if sizes not in ({2}, {3}):
        raise ValueError("targets must be all pairs (a, b) or all triplets (positive, negative, anchor)")
    values = []
    for t in targets:
        if len(set(t)) != len(t):
            raise ValueError(f"a target repeats a class: {t}")
        if len(t) == 2:
            values.append(errors[t[0], t[1]])
        else:
            values.append(abs(errors[t[0], t[2]] - errors[t[1], t[2]]))
    return float(np.mean(values))


def target_classes(targets: Sequence[Sequence[int]]) -> list[int]:
    """``Y_target``: every class named in the targets, sorted."""
    return sorted({int(c) for t in targets for c in t})


# ---- per-class accuracy, directional rates, all pairs and all triplets --------------------

def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int, *,
                       task: str = "single_label") -> np.ndarray:
    """(K,) float64 accuracy per class; NaN for a class with no samples.

    Single-label: ``P(pred = k | label = k)`` (the confusion diagonal, i.e. recall).
    Multi-label: the per-class binary accuracy ``mean(pred_k == present_k)`` over all samples.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "multi_label":
        present = np.asarray(labels) > 0.5
        pred = np.asarray(preds).astype(bool)
        if len(pred) == 0:
            return np.full(num_classes, np.nan)
        return (pred == present).mean(axis=0).astype(np.float64)
    counts = confusion_counts(labels, preds, num_classes)
    totals = counts.sum(axis=1)
    return np.divide(np.diag(counts).astype(np.float64), totals,
                     out=np.full(num_classes, np.nan), where=totals > 0)


def type2conf_directional(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(K, K) ``P(a and b predicted | a present, b absent)`` (multi-label); 0 where undefined."""
    present = np.asarray(labels) > 0.5
    pred = np.asarray(preds).astype(bool)
    hit = (pred & present).astype(np.float64)
    miss = (pred & ~present).astype(np.float64)
    num = hit.T @ miss
    den = present.astype(np.float64).T @ (~present).astype(np.float64)
    p = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    np.fill_diagonal(p, 0.0)
    return p


def directional_errors(labels: np.ndarray, preds: np.ndarray, num_classes: int, *,
                       task: str = "single_label") -> np.ndarray:
    """(K, K) one-direction error ``D[a, b]``; the pair error is ``(D + D.T) / 2``.

    Single-label: ``P(pred = b | label = a)`` (row-normalised confusion, diagonal zeroed).
    Multi-label: :func:`type2conf_directional`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "multi_label":
        return type2conf_directional(labels, preds)
    rates = confusion_rates(confusion_counts(labels, preds, num_classes))
    np.fill_diagonal(rates, 0.0)
    return rates


def _names(class_names: Sequence[str] | None, k: int) -> np.ndarray:
    return np.asarray(list(class_names) if class_names is not None else [str(i) for i in range(k)], dtype=object)


def rank_confused_pairs(errors: np.ndarray, class_names: Sequence[str] | None = None, *,
                        directional: np.ndarray | None = None, top: int | None = None):
    """All unordered class pairs sorted by pair error (type1conf/type2conf), highest first.

    Args:
        errors: (K, K) symmetric pair error (:func:`error_matrix`).
        class_names: K names (default: the indices as strings).
        directional: (K, K) :func:`directional_errors`, for the ``a_to_b`` / ``b_to_a`` columns.
        top: keep only the first ``top`` rows.

    Returns:
        DataFrame, one row per pair (``a`` has the lower class index), columns ``a, b`` (names),
        ``conf``, ``a_to_b``, ``b_to_a`` (NaN without ``directional``), ``a_id, b_id`` (ints).
        Ties keep class-index order.
    """
    import pandas as pd

    errors = np.asarray(errors, dtype=np.float64)
    k = errors.shape[0]
    a, b = np.triu_indices(k, 1)
    conf = errors[a, b]
    order = np.argsort(-conf, kind="stable")
    if top is not None:
        order = order[:max(int(top), 0)]
    a, b = a[order], b[order]
    names = _names(class_names, k)
    d = np.full((k, k), np.nan) if directional is None else np.asarray(directional, dtype=np.float64)
    return pd.DataFrame({
        "a": names[a], "b": names[b], "conf": conf[order],
        "a_to_b": d[a, b], "b_to_a": d[b, a],
        "a_id": a.astype(np.int64), "b_id": b.astype(np.int64),
    })


#: Column entries handled at once (anchors x classes): bounds the memory of the exhaustive
#: ranking and of the candidate search of the top-k ranking.
TRIPLET_BLOCK = 4_000_000


def _triplet_block(errors: np.ndarray, anchors: np.ndarray) -> dict[str, np.ndarray]:
    k = errors.shape[0]
    i, j = np.triu_indices(k, 1)                        # (P,) pairs
    c = np.asarray(anchors, dtype=np.int64)[:, None]    # (A, 1) anchors
    valid = (c != i[None, :]) & (c != j[None, :])       # (A, P)
    e_i = errors[i[None, :], c]                         # (A, P) error(i, c)
    e_j = errors[j[None, :], c]
    first = e_i >= e_j
    pos = np.where(first, i[None, :], j[None, :])[valid]
    neg = np.where(first, j[None, :], i[None, :])[valid]
    anchor = np.broadcast_to(c, valid.shape)[valid]
    e_pos = np.maximum(e_i, e_j)[valid]
    e_neg = np.minimum(e_i, e_j)[valid]
    # a global id (anchor-major, then pair) makes tie-breaking identical across blocks
    gid = (c * len(i) + np.arange(len(i))[None, :])[valid]
    return {"positive": pos.astype(np.int64), "negative": neg.astype(np.int64),
            "anchor": anchor.astype(np.int64), "cd": e_pos - e_neg,
            "error_pos": e_pos, "error_neg": e_neg, "id": gid.astype(np.int64)}


def all_triplet_cd(errors: np.ndarray) -> dict[str, np.ndarray]:
    """cd for every triplet, vectorised (WR paper 2.2.2).

    Every anchor ``C`` and unordered pair ``{A, B}`` not containing ``C`` gives one triplet
    (``K * (K-1) * (K-2) / 2`` of them: 485,100 for 100 classes). It is ordered so that
    ``error(positive, C) >= error(negative, C)``; on a tie the lower class index is positive.
    Memory grows as K^3: for more than a few hundred classes use
    :func:`rank_biased_triplets` with ``top``, which never enumerates all triplets.

    Args:
        errors: (K, K) symmetric pair error.

    Returns:
        dict of equally long arrays: ``positive, negative, anchor`` (int64 class indices),
        ``cd, error_pos, error_neg`` (float64), ``id`` (int64, anchor-major order), unsorted.
    """
    errors = np.asarray(errors, dtype=np.float64)
    return _triplet_block(errors, np.arange(errors.shape[0]))


def _order(t: dict[str, np.ndarray]) -> np.ndarray:
    # lexsort: the last key is primary; cd desc, error_pos desc, then anchor-major id
    return np.lexsort((t["id"], -t["error_pos"], -t["cd"]))


def _keep_top(t: dict[str, np.ndarray], top: int) -> dict[str, np.ndarray]:
    """The ``top`` first rows of ``t`` in :func:`_order`, exactly (every tie at the cut is kept
    until the final sort)."""
    if len(t["cd"]) > top:
        kth = np.partition(t["cd"], len(t["cd"]) - top)[len(t["cd"]) - top]
        t = {key: v[t["cd"] >= kth] for key, v in t.items()}
    order = _order(t)[:top]
    return {key: v[order] for key, v in t.items()}


def _exhaustive_top(errors: np.ndarray, anchor_ids: np.ndarray, top: int) -> dict[str, np.ndarray]:
    """The ``top`` first triplets by enumerating every triplet, block by block of anchors.

    O(K^3) time; the reference for :func:`_top_triplets` in the tests and the benchmark.
    """
    k = errors.shape[0]
    step = max(1, TRIPLET_BLOCK // max(k * (k - 1) // 2, 1))
    kept = [_keep_top(_triplet_block(errors, anchor_ids[s:s + step]), top)
            for s in range(0, len(anchor_ids), step)] or [_triplet_block(errors, anchor_ids)]
    return _keep_top({key: np.concatenate([b[key] for b in kept]) for key in kept[0]}, top)


def _pair_ids(lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """Position of the pair ``lo < hi`` in ``np.triu_indices(k, 1)`` (row-major)."""
    return lo * (2 * k - lo - 1) // 2 + (hi - lo - 1)


def _column_extremes(errors: np.ndarray, anchor_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest entry of each anchor's column, the anchor itself left out."""
    k = errors.shape[0]
    block = max(1, TRIPLET_BLOCK // k)
    highs, lows = [], []
    for start in range(0, len(anchor_ids), block):
        ids = anchor_ids[start:start + block]
        cols = errors[:, ids]                                  # (K, B) copy
        rows = np.arange(len(ids))
        cols[ids, rows] = -np.inf
        highs.append(cols.max(axis=0))
        cols[ids, rows] = np.inf
        lows.append(cols.min(axis=0))
    return np.concatenate(highs), np.concatenate(lows)


def _column_candidates(errors: np.ndarray, anchor_ids: np.ndarray, depth: int) -> dict[int, tuple]:
    """The entries of each anchor's column that its best triplets use.

    For anchor ``c`` the column holds ``error(a, c)`` for every ``a != c``. Kept: every entry
    at least the ``depth + 1``-th largest or at most the ``depth + 1``-th smallest of the
    whole column (the anchor's own entry counted there, then dropped), so at least ``depth``
    per side and a tie group is never split; all entries when ``2 * depth >= K - 1``.

    Returns:
        ``{anchor: (cls, value, bound)}``: the kept class indices and values, sorted by value
        descending then class index ascending, and the largest cd that a triplet of this
        anchor using a dropped entry can have (``-inf`` when nothing was dropped).
    """
    k = errors.shape[0]
    block = max(1, TRIPLET_BLOCK // k)
    found = {}
    for start in range(0, len(anchor_ids), block):
        ids = anchor_ids[start:start + block]
        rows = np.arange(len(ids))
        cols = np.ascontiguousarray(errors[:, ids].T)           # (B, K): cols[r, a] = error(a, ids[r])
        if 2 * depth >= k - 1:
            keep = np.ones(cols.shape, dtype=bool)
            low_cut = top_cut = None
        else:
            part = np.partition(cols, [depth, k - 1 - depth], axis=1)
            low_cut, top_cut = part[:, depth], part[:, k - 1 - depth]
            keep = (cols >= top_cut[:, None]) | (cols <= low_cut[:, None])
        keep[rows, ids] = False
        r, a = np.nonzero(keep)
        v = cols[r, a]
        order = np.lexsort((a, -v, r))
        r, a, v = r[order], a[order], v[order]
        ends = np.cumsum(np.bincount(r, minlength=len(ids)))
        begins = ends - np.bincount(r, minlength=len(ids))
        for slot, anchor in enumerate(ids.tolist()):
            cls, val = a[begins[slot]:ends[slot]], v[begins[slot]:ends[slot]]
            bound = -np.inf
            if len(cls) < k - 1:
                # a dropped x lies strictly between the cuts; x - y is monotone in both
                below_top = np.nextafter(top_cut[slot], -np.inf)
                above_low = np.nextafter(low_cut[slot], np.inf)
                bound = max(below_top - val[-1], val[0] - above_low)
            found[anchor] = (cls, val, bound)
    return found


def _cell_pairs(first: np.ndarray, second: np.ndarray | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` pairs of one cell in pair-index order (``(min, max)`` ascending).

    The cell is every pair ``(x, y)``, x from ``first``, y from ``second`` (x positive), or
    every pair of two members of ``first`` when ``second`` is None (equal errors: the lower
    class index is positive). Both arrays are sorted ascending. Returns (positive, negative).
    """
    if second is None:
        lows = first
        partners_from = np.arange(1, len(first) + 1)            # partners of first[q]: first[q+1:]
        counts = len(first) - partners_from
    else:
        lows = np.concatenate([first, second])
        side = np.concatenate([np.zeros(len(first), bool), np.ones(len(second), bool)])
        order = np.argsort(lows, kind="stable")
        lows, side = lows[order], side[order]
        # partners of a low member: the members of the other side above it
        partners_from = np.where(side, np.searchsorted(first, lows, side="right"),
                                 np.searchsorted(second, lows, side="right"))
        counts = np.where(side, len(first), len(second)) - partners_from
    ends = np.cumsum(counts)
    used = int(np.searchsorted(ends, limit, side="left")) + 1       # lows needed to reach limit
    used = min(used, len(lows))
    take = counts[:used].copy()
    if used and ends[used - 1] > limit:
        take[-1] -= ends[used - 1] - limit
    which = np.repeat(np.arange(used), take)
    offset = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    low = lows[which]
    partner_at = partners_from[which] + offset
    if second is None:
        high = first[partner_at]
        return low, high
    high = np.where(side[which], first[np.minimum(partner_at, len(first) - 1)],
                    second[np.minimum(partner_at, len(second) - 1)])
    is_second = side[which]
    return np.where(is_second, high, low), np.where(is_second, low, high)


def _walk_cells(slot: np.ndarray, value: np.ndarray, n_slots: int, top: int):
    """Cells of equal (cd, error_pos, anchor) in ranking order until ``top`` triplets are met.

    Args:
        slot, value: the kept column entries of :func:`_column_candidates`, anchors in
            ascending class order numbered 0..n_slots-1, each sorted by value descending.

    Within an anchor the kept entries form groups of equal value ``u_0 > u_1 > ...``; a cell
    ``(a, b)``, ``a <= b``, holds the triplets whose positive is in group a and negative in
    group b, all with cd ``u_a - u_b`` and error_pos ``u_a``. cd grows towards ``(0, last)``,
    so cells are visited best first with one heap over all anchors: each cell has one parent
    ``(a - 1, b)`` (or ``(0, b + 1)`` when a = 0) that never ranks below it.

    Returns:
        ``(taken, cut, need, starts, base)``: cells taken whole (``(slot, a, b)`` tuples),
        the cells of the key group cut by ``top`` (or an empty list), how many triplets that
        cut group must give, where the groups start in the entries, and each anchor's first
        group (group a of anchor s is group ``base[s] + a``).
    """
    new = np.ones(len(value), dtype=bool)
    new[1:] = (slot[1:] != slot[:-1]) | (value[1:] != value[:-1])
    starts = np.flatnonzero(new)
    group_slot = slot[starts]
    group_value = value[starts].tolist()
    group_size = np.diff(np.append(starts, len(value))).tolist()
    base = np.searchsorted(group_slot, np.arange(n_slots), side="left").tolist()
    last = (np.bincount(group_slot, minlength=n_slots) - 1).tolist()

    def cell(s, a, b):
        ua, ub = group_value[base[s] + a], group_value[base[s] + b]
        return (-(ua - ub), -ua, s, a, b)

    heap = [cell(s, 0, last[s]) for s in range(n_slots) if last[s] >= 0]
    heapq.heapify(heap)
    taken, count = [], 0
    while heap and count < top:
        key = heap[0][:3]
        same = []
        # a child can tie its parent (u_a - u_b rounds equal): drain the whole key group
        while heap and heap[0][:3] == key:
            _, _, s, a, b = heapq.heappop(heap)
            same.append((s, a, b))
            if a + 1 <= b:
                heapq.heappush(heap, cell(s, a + 1, b))
            if a == 0 and b >= 1:
                heapq.heappush(heap, cell(s, 0, b - 1))
        size = 0
        for s, a, b in same:
            na = group_size[base[s] + a]
            size += na * group_size[base[s] + b] if a < b else na * (na - 1) // 2
        if count + size > top:
            return taken, same, top - count, starts, base
        taken.extend(same)
        count += size
    return taken, [], 0, starts, base


def _read_cells(errors: np.ndarray, anchors: np.ndarray, cls: np.ndarray, walk) -> dict[str, np.ndarray]:
    """The triplets of the cells chosen by :func:`_walk_cells`, sorted by :func:`_order`."""
    k = errors.shape[0]
    pairs = k * (k - 1) // 2
    taken, cut, need, starts, base = walk
    ends = np.append(starts, len(cls))

    def group(s, a):
        g = base[s] + a
        return cls[starts[g]:ends[g + 1]]

    pos, neg, anc = [], [], []
    for s, a, b in taken:
        x = group(s, a)
        if a < b:
            y = group(s, b)
            pos.append(np.repeat(x, len(y)))
            neg.append(np.tile(y, len(x)))
        else:
            p, n = _cell_pairs(x, None, len(x) * (len(x) - 1) // 2)
            pos.append(p)
            neg.append(n)
        anc.append(np.full(len(pos[-1]), anchors[s], dtype=np.int64))
    if cut:
        # one key group, one anchor: its triplets rank by pair index alone
        parts = [_cell_pairs(group(s, a), group(s, b) if a < b else None, need) for s, a, b in cut]
        p = np.concatenate([q[0] for q in parts])
        n = np.concatenate([q[1] for q in parts])
        first = np.argsort(_pair_ids(np.minimum(p, n), np.maximum(p, n), k), kind="stable")[:need]
        pos.append(p[first])
        neg.append(n[first])
        anc.append(np.full(len(first), anchors[cut[0][0]], dtype=np.int64))
    empty = np.zeros(0, dtype=np.int64)
    p = np.concatenate(pos) if pos else empty
    n = np.concatenate(neg) if neg else empty
    c = np.concatenate(anc) if anc else empty
    e_pos, e_neg = errors[p, c], errors[n, c]
    t = {"positive": p, "negative": n, "anchor": c, "cd": e_pos - e_neg, "error_pos": e_pos,
         "error_neg": e_neg, "id": c * pairs + _pair_ids(np.minimum(p, n), np.maximum(p, n), k)}
    order = _order(t)
    return {key: v[order] for key, v in t.items()}


#: Entries kept per side of a column on first look; anchors whose dropped entries could
#: still reach the top are looked at again four times deeper.
FIRST_DEPTH = 16
#: Anchors looked at in the first round (then twice as many per round).
FIRST_BATCH = 64


def _top_triplets(errors: np.ndarray, anchor_ids: np.ndarray, top: int) -> dict[str, np.ndarray]:
    """The ``top`` first triplets in :func:`_order`, without enumerating all of them.

    For a fixed anchor c the largest ``|E[a, c] - E[b, c]|`` pair the largest and smallest
    entries of column c, so only the extremes of each column are kept
    (:func:`_column_candidates`) and the triplets are read off best first
    (:func:`_walk_cells`). Two exact prunings keep the work near O(K^2):

    * an anchor whose column range ``max - min`` is below the ``top``-th cd found so far
      cannot contribute (nor, on equal range, one whose largest entry is below that
      triplet's error_pos, or equal with a higher anchor index); anchors are visited in
      that order, in doubling batches;
    * an anchor keeps only its ``FIRST_DEPTH`` largest and smallest entries unless a
      triplet using a dropped entry could reach the ``top``-th cd found, in which case it
      is looked at again, deeper (finally whole).

    Every step is a bound on float differences (``x - y`` is monotone in x and y), so the
    result is identical to ranking every triplet, rounding ties included.
    """
    k = errors.shape[0]
    n = len(anchor_ids)
    high, low = _column_extremes(errors, anchor_ids)
    reach = high - low                  # no triplet of the anchor has a larger cd ...
    # ... and one with cd == reach has error_pos <= high: (reach, high, anchor) bounds the
    # anchor's best ranking key, so anchors are visited in that key's order
    queue = np.lexsort((np.arange(n), -high, -reach))
    depth = np.zeros(n, dtype=np.int64)                       # 0: not looked at yet
    found: dict[int, tuple] = {}
    kth, batch, t = -np.inf, FIRST_BATCH, None
    grow = np.zeros(0, dtype=np.int64)
    while True:
        waiting = queue[depth[queue] == 0]
        if np.isfinite(kth):
            last = (t["cd"][-1], t["error_pos"][-1], t["anchor"][-1])
            # the waiting anchors that can still rank before the top-th triplet: a prefix
            beats = (reach[waiting] > last[0]) | ((reach[waiting] == last[0]) & (
                (high[waiting] > last[1]) | ((high[waiting] == last[1]) & (anchor_ids[waiting] < last[2]))))
            waiting = waiting[:len(beats) if beats.all() else int(np.argmin(beats))]
        fresh = waiting[:batch]
        if not len(fresh) and not len(grow):
            return t
        depth[fresh] = min(top, FIRST_DEPTH)
        depth[grow] = np.minimum(depth[grow] * 4, k)         # k: the whole column
        for d in np.unique(depth[np.concatenate([fresh, grow])]):
            todo = np.sort(np.concatenate([fresh, grow]))
            todo = todo[depth[todo] == d]
            found.update(_column_candidates(errors, anchor_ids[todo], int(d)))
        batch *= 2
        looked = np.flatnonzero(depth > 0)                    # ascending: anchor order
        ids = anchor_ids[looked]
        entries = [found[int(c)] for c in ids]
        sizes = np.array([len(e[0]) for e in entries], dtype=np.int64)
        slot = np.repeat(np.arange(len(looked)), sizes)
        cls = np.concatenate([e[0] for e in entries])
        value = np.concatenate([e[1] for e in entries])
        t = _read_cells(errors, ids, cls, _walk_cells(slot, value, len(looked), top))
        kth = t["cd"][-1] if len(t["cd"]) == top else -np.inf
        bound = np.array([e[2] for e in entries], dtype=np.float64)
        grow = looked[(bound >= kth) & (bound > -np.inf)]


def rank_biased_triplets(errors: np.ndarray, class_names: Sequence[str] | None = None, *,
                         top: int | None = None, anchors: Sequence[int] | None = None):
    """Triplets sorted by cd (WR paper 2.2.2; highest first; ties: higher error_pos, then
    anchor/class order).

    Args:
        errors: (K, K) symmetric pair error, finite.
        class_names: K names (default: the indices as strings).
        top: keep only the first ``top`` rows. With it, the triplets are read off the sorted
            extremes of each anchor's column (about O(K^2); some 0.02 s for 1,000 classes
            and 2 s for 10,000 on two cores) and the result is identical to ranking every
            triplet; without it all ``K (K-1) (K-2) / 2`` triplets are built (K^3 memory:
            only for small K).
        anchors: only triplets with these anchor classes (default: all).

    Returns:
        DataFrame with columns ``positive, negative, anchor`` (names), ``cd``, ``error_pos``
        (= error(positive, anchor)), ``error_neg`` (= error(negative, anchor)), and
        ``positive_id, negative_id, anchor_id`` (ints). Empty for fewer than 3 classes.

    Raises:
        ValueError: ``errors`` is not a finite square matrix, or an anchor is not a class.
    """
    import pandas as pd

    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[0] != errors.shape[1]:
        raise ValueError(f"errors must be a square (K, K) matrix, got shape {errors.shape}")
    if not np.isfinite(errors).all():
        raise ValueError("errors contain NaN or infinite values; triplets cannot be ranked")
    k = errors.shape[0]
    anchor_ids = np.arange(k) if anchors is None else np.unique(np.asarray(anchors, dtype=np.int64))
    if anchor_ids.size and (anchor_ids[0] < 0 or anchor_ids[-1] >= k):
        raise ValueError(f"anchors must be class indices in [0, {k}), got {anchor_ids.tolist()}")
    if top is None:
        t = _triplet_block(errors, anchor_ids)
        order = _order(t)
        t = {key: v[order] for key, v in t.items()}
    elif k < 3 or int(top) <= 0 or anchor_ids.size == 0:
        t = _triplet_block(errors, anchor_ids[:0])
    else:
        t = _top_triplets(errors, anchor_ids, int(top))
    names = _names(class_names, k)
    return pd.DataFrame({
        "positive": names[t["positive"]], "negative": names[t["negative"]],
        "anchor": names[t["anchor"]], "cd": t["cd"],
        "error_pos": t["error_pos"], "error_neg": t["error_neg"],
        "positive_id": t["positive"], "negative_id": t["negative"], "anchor_id": t["anchor"],
    })


def pair_mistakes(labels: np.ndarray, preds: np.ndarray, a: int, b: int, *,
                  task: str = "single_label") -> np.ndarray:
    """(M,) int64 positions of the ``a -> b`` mistakes.

    Single-label: label ``a`` predicted ``b``. Multi-label (type2): ``a`` present, ``b``
    absent, both predicted.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "multi_label":
        present = np.asarray(labels) > 0.5
        pred = np.asarray(preds).astype(bool)
        hit = present[:, a] & ~present[:, b] & pred[:, a] & pred[:, b]
    else:
        hit = (np.asarray(labels) == a) & (np.asarray(preds) == b)
    return np.flatnonzero(hit).astype(np.int64)


def per_class_metrics(labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str], *,
                      task: str = "single_label"):
    """Per-class precision, recall, F1 and support (multi-label: per label, one-vs-rest).

    Args:
        labels: (N,) int, or (N, K) multi-hot. preds: (N,) int, or (N, K) bool.

    Returns:
        DataFrame ``class, precision, recall, f1, support``; NaN where undefined (no
        prediction of the class, or no sample of it).
    """
    import pandas as pd

    k = len(class_names)
    if task == "multi_label":
        truth, pred = np.asarray(labels) > 0.5, np.asarray(preds, dtype=bool)
        tp = (truth & pred).sum(0).astype(float)
        predicted, support = pred.sum(0).astype(float), truth.sum(0).astype(float)
    else:
        counts = confusion_counts(labels, preds, k).astype(float)
        tp, predicted, support = np.diag(counts), counts.sum(0), counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
    return pd.DataFrame({"class": list(class_names), "precision": precision, "recall": recall, "f1": f1,
                         "support": support.astype(int)})
