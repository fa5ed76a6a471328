"""One before/after comparison of two model versions' outputs on the same split.

Used by every page that compares (Confusion's version difference, What-if after w-os, Repair's
before/after): overall accuracy (mAP is the caller's), the target error when a target is given,
both confusion-rate matrices, their change, and the samples fixed (wrong -> right) and broken
(right -> wrong), as in the WR paper's Figure 7.

The change is also given as an *improvement* matrix whose sign means better (+) or worse (-) for
that cell: on the diagonal (correct rates) an increase is better; off the diagonal (a label
predicted as another class, or for multi-label a type2 confusion rate) a decrease is better. Pages
colour by it (green better, red worse) and write the signed change of the rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diagnostics.confusion import (
    confusion_counts, confusion_rates, error_matrix, target_error, type2conf_directional,
)


@dataclass
class Comparison:
    """Before/after of one split.

    Attributes:
        accuracy: ``(before, after)`` top-1 (multi-label: exact-match) accuracy on the shared samples.
        target_error: ``(before, after)`` mean target confusion/cd, or None without a target.
        before_rates, after_rates: (K, K) row-normalised confusion (single-label) or directional
            type2conf rates (multi-label).
        change: ``after_rates - before_rates``.
        improvement: ``change`` signed so that + is better (see the module docstring).
        fixed, broken: (M,) int64 split indices wrong -> right and right -> wrong.
        n: samples compared (present in both).
    """

    accuracy: tuple[float, float]
    target_error: tuple[float, float] | None
    before_rates: np.ndarray
    after_rates: np.ndarray
    change: np.ndarray
    improvement: np.ndarray
    fixed: np.ndarray
    broken: np.ndarray
    n: int

    @property
    def changed(self) -> int:
        return len(self.fixed) + len(self.broken)

    @property
    def identical(self) -> bool:
        """Nothing to draw: no sample fixed or broken and no confusion rate moved (e.g. a repair
        that kept its parent's weights, or w-os at rho 1)."""
        return self.changed == 0 and not np.abs(self.change).max(initial=0.0) > 0


def compare_outputs(before, after, targets=None) -> Comparison:
    """Compare two ``InferenceOutputs`` of the same split (rows matched by split index).

    Args:
        targets: class-index pairs or triplets (or None).
    """
    if tuple(before.class_names) != tuple(after.class_names):
        raise ValueError("the two outputs have different classes")
    common, ib, ia = np.intersect1d(before.indices, after.indices, return_indices=True)
    cb, ca = before.correct[ib], after.correct[ia]
    k, task = before.num_classes, before.task
    lb, pb, la, pa = before.labels[ib], before.preds[ib], after.labels[ia], after.preds[ia]
    if before.multi_label:
        rb, ra = type2conf_directional(lb, pb), type2conf_directional(la, pa)
        change = ra - rb
        improvement = -change
    else:
        rb = confusion_rates(confusion_counts(lb, pb, k))
        ra = confusion_rates(confusion_counts(la, pa, k))
        change = ra - rb
        improvement = np.where(np.eye(k, dtype=bool), change, -change)
    te = None
    if targets:
        te = (target_error(error_matrix(lb, pb, k, task=task), targets),
              target_error(error_matrix(la, pa, k, task=task), targets))
    return Comparison(accuracy=(float(cb.mean()) if len(cb) else float("nan"),
                                float(ca.mean()) if len(ca) else float("nan")),
                      target_error=te, before_rates=rb, after_rates=ra, change=change, improvement=improvement,
                      fixed=common[~cb & ca], broken=common[cb & ~ca], n=len(common))
