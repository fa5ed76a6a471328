"""w-os, weighted output smoothing (WR paper section 3.4): a post-hoc repair.

For samples predicted as a target class, the probabilities of all target classes
(``Y_target``, every class named in the targets, section 3.4.4) are multiplied by rho and
the prediction is decided again. Which samples are touched:

- single-label, pairs or triplets: predicted class in ``Y_target``;
- multi-label, pairs (A, B): A and B both predicted, for any target pair;
- multi-label, triplets (A, B, C): A and C, or B and C predicted, for any target triplet.

Only cached probabilities are needed, so the what-if slider and the ``w-os`` repair method
share this code and update instantly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from diagnostics.confusion import target_classes


def affected_rows(preds: np.ndarray, targets: Sequence[Sequence[int]], *, task: str = "single_label") -> np.ndarray:
    """(N,) bool: the samples whose target-class probabilities w-os scales."""
    targets = [tuple(int(c) for c in t) for t in targets]
    if task == "multi_label":
        preds = np.asarray(preds, dtype=bool)
        rows = np.zeros(len(preds), dtype=bool)
        for t in targets:
            if len(t) == 2:
                rows |= preds[:, t[0]] & preds[:, t[1]]
            else:
                rows |= (preds[:, t[0]] | preds[:, t[1]]) & preds[:, t[2]]
        return rows
    return np.isin(np.asarray(preds), target_classes(targets))


def apply_wos(probs: np.ndarray, targets: Sequence[Sequence[int]], rho: float, *,
              task: str = "single_label", threshold: float = 0.5,
              preds: np.ndarray | None = None) -> np.ndarray:
    """Predictions after w-os with trade-off ``rho`` in [0, 1] (1 = no change).

    Args:
        probs: (N, K) softmax (single-label) or sigmoid (multi-label) outputs.
        targets: pairs ``(a, b)`` or triplets ``(positive, negative, anchor)`` of class indices.
        preds: the original predictions, if already known (saves one argmax pass).

    Returns:
        (N,) int64 class indices, or (N, K) bool for multi-label.
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    probs = np.asarray(probs)
    cls = np.asarray(target_classes(targets), dtype=np.int64)
    if task == "multi_label":
        before = probs >= threshold if preds is None else np.asarray(preds, dtype=bool)
        rows = affected_rows(before, targets, task=task)
        after = before.copy()
        sub = probs[np.ix_(rows, cls)] * rho
        after[np.ix_(rows, cls)] = sub >= threshold
        return after
    before = probs.argmax(axis=1) if preds is None else np.asarray(preds, dtype=np.int64)
    rows = np.flatnonzero(np.isin(before, cls))
    after = before.astype(np.int64, copy=True)
    if len(rows) == 0 or rho == 1.0:
        return after
    sub = probs[rows]
    scaled_target = sub[:, cls] * rho
    best_target = cls[scaled_target.argmax(axis=1)]
    others = sub.copy()
    others[:, cls] = -np.inf
    if others.shape[1] > len(cls):
        best_other = others.argmax(axis=1)
        keep = scaled_target.max(axis=1) >= sub[np.arange(len(rows)), best_other]
        after[rows] = np.where(keep, best_target, best_other)
    else:  # every class is a target: scaling all of them changes nothing
        after[rows] = best_target
    return after
