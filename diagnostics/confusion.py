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
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return counts


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
    present = np.asarray(labels) > 0.5
    pred = np.asarray(preds).astype(bool)
    hit = (pred & present).astype(np.float64)       # a predicted and present
    miss = (pred & ~present).astype(np.float64)     # b predicted but absent
    num = hit.T @ miss                               # (K, K): a present & predicted, b absent & predicted
    den = present.astype(np.float64).T @ (~present).astype(np.float64)
    p = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    conf = (p + p.T) / 2.0
    np.fill_diagonal(conf, 0.0)
    return conf


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


def parse_targets(text: str, class_names: Sequence[str]) -> list[tuple[int, ...]]:
    """Parse ``"A,B"`` / ``"A,B;C,D"`` / ``"P,N,C"`` (names or indices) into index tuples.

    Raises:
        ValueError: unknown class, a repeated class, or mixed pairs and triplets; the
            message lists the valid class names.
    """
    index = {name: k for k, name in enumerate(class_names)}
    targets = []
    for chunk in [c for c in text.split(";") if c.strip()]:
        names = [n.strip() for n in chunk.split(",") if n.strip()]
        ids = []
        for name in names:
            if name in index:
                ids.append(index[name])
            elif name.isdigit() and int(name) < len(class_names):
                ids.append(int(name))
            else:
                shown = ", ".join(class_names[:20]) + ("…" if len(class_names) > 20 else "")
                raise ValueError(f"unknown class {name!r}; valid classes: {shown}")
        if len(ids) not in (2, 3) or len(set(ids)) != len(ids):
            raise ValueError(f"{chunk.strip()!r} must name 2 (pair) or 3 (triplet) different classes")
        targets.append(tuple(ids))
    if not targets:
        raise ValueError("no targets given (use A,B or A,B,C; separate several with ';')")
    if len({len(t) for t in targets}) > 1:
        raise ValueError("targets must be all pairs or all triplets")
    return targets
