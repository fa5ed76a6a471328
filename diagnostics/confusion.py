"""Confusion and bias metrics of the WR paper (section 2.2), as pure array functions.

Conventions: ``labels`` are (N,) int class indices (single-label) or (N, K) multi-hot
(multi-label); ``preds`` are (N,) ints or (N, K) bool. The pair error matrix ``E`` is
(K, K) float, symmetric, zero on the diagonal: ``E[a, b]`` is type1conf(a, b) for
single-label tasks and type2conf(a, b) for multi-label tasks.

Targets are lists of class-index tuples: pairs ``(a, b)`` (confusion) or triplets
``(positive, negative, anchor)`` (bias).
"""

from __future__ import annotations

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
    """Multi-label ``type2conf`` for every pair (WR paper 2.2.1, DESIGN.md section 1).

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


#: Triplet entries computed at once; larger problems are ranked block by block of anchors.
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
    """cd for every triplet, vectorised (WR paper 2.2.2, DESIGN.md section 1).

    Every anchor ``C`` and unordered pair ``{A, B}`` not containing ``C`` gives one triplet
    (``K * (K-1) * (K-2) / 2`` of them: 485,100 for 100 classes). It is ordered so that
    ``error(positive, C) >= error(negative, C)``; on a tie the lower class index is positive.
    Memory grows as K^3: for more than a few hundred classes use
    :func:`rank_biased_triplets` with ``top``, which works block by block.

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


def rank_biased_triplets(errors: np.ndarray, class_names: Sequence[str] | None = None, *,
                         top: int | None = None, anchors: Sequence[int] | None = None):
    """Triplets sorted by cd (highest first; ties: higher error_pos, then anchor/class order).

    Args:
        errors: (K, K) symmetric pair error.
        class_names: K names (default: the indices as strings).
        top: keep only the first ``top`` rows; with it, large K is processed in blocks of
            anchors (:data:`TRIPLET_BLOCK` entries), so memory stays bounded.
        anchors: only triplets with these anchor classes (default: all).

    Returns:
        DataFrame with columns ``positive, negative, anchor`` (names), ``cd``, ``error_pos``
        (= error(positive, anchor)), ``error_neg`` (= error(negative, anchor)), and
        ``positive_id, negative_id, anchor_id`` (ints). Empty for fewer than 3 classes.
    """
    import pandas as pd

    errors = np.asarray(errors, dtype=np.float64)
    k = errors.shape[0]
    anchor_ids = np.arange(k) if anchors is None else np.unique(np.asarray(anchors, dtype=np.int64))
    pairs = max(k * (k - 1) // 2, 1)
    step = max(1, TRIPLET_BLOCK // pairs)
    if top is None:
        t = _triplet_block(errors, anchor_ids)
        order = _order(t)
        t = {key: v[order] for key, v in t.items()}
    else:
        top = max(int(top), 0)
        kept = [_keep_top(_triplet_block(errors, anchor_ids[s:s + step]), top)
                for s in range(0, len(anchor_ids), step)] or [_triplet_block(errors, anchor_ids)]
        t = _keep_top({key: np.concatenate([b[key] for b in kept]) for key in kept[0]}, top)
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
