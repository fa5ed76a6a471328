"""w-os, weighted output smoothing (WR paper section 3.4): a post-hoc repair.

For samples predicted as a target class, the probabilities of all target classes
(``Y_target``, every class named in the targets, section 3.4.4) are multiplied by rho and
the prediction is decided again. Which samples are touched:

- single-label, pairs or triplets: predicted class in ``Y_target``;
- multi-label, pairs (A, B): A and B both predicted, for any target pair;
- multi-label, triplets (A, B, C): A and C, or B and C predicted, for any target triplet.

Only cached probabilities are needed, so the what-if slider and the ``w-os`` repair method
share this code and update instantly. The API (NumPy in, NumPy out; only the curve and the
"what changed" table are pandas DataFrames, imported lazily):

- :func:`apply_wos` / :func:`affected_rows`: the rule itself.
- :class:`WosWhatIf`: precomputes once per (outputs, targets); ``evaluate(rho)`` returns a
  :class:`WosResult` (accuracy, target error, confusion counts/rates and pair errors after,
  predictions, changed/fixed/broken samples, mAP for multi-label) touching only the affected
  rows; ``curve()`` sweeps :func:`rho_grid` (1 .. 1e-4, log); ``changes()`` tabulates them.
- :func:`wos_metrics`, :func:`wos_curve`: one-off wrappers.
- :func:`suggest_rho`: the highest-accuracy rho meeting the "repaired" criterion
  (WR paper 2.2.3: target error -lambda1 relative, accuracy/mAP at most -lambda2 relative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from diagnostics.confusion import (
    confusion_counts, confusion_rates, target_classes, target_error, type2conf_matrix,
)

#: The default rho grid of the what-if curve: 10 points per decade from 1 down to 1e-4,
#: plus the WR paper's grid values (WR paper, section 4.4).
PAPER_RHOS = (0.9, 0.7, 0.5, 0.3, 0.1, 0.01, 0.001, 1e-4)


def rho_grid(points_per_decade: int = 10, *, low: float = 1e-4) -> np.ndarray:
    """Descending log-spaced rho values from 1 to ``low`` merged with :data:`PAPER_RHOS`."""
    if not 0.0 < low < 1.0:
        raise ValueError(f"low must be in (0, 1), got {low}")
    decades = -np.log10(low)
    grid = np.logspace(0.0, -decades, int(round(decades * points_per_decade)) + 1)
    paper = np.array([r for r in PAPER_RHOS if r >= low])
    # drop log points within 5 % of a paper value (0.501 next to 0.5 is noise on a slider)
    near = np.any(np.abs(grid[:, None] / paper[None, :] - 1.0) < 0.05, axis=1) if len(paper) else False
    grid = np.concatenate([grid[~near], paper])
    return np.unique(np.round(grid, 12))[::-1]


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


# ---- the what-if slider: metrics after w-os, fast enough for every slider move ---------------

@dataclass
class WosResult:
    """Metrics of one rho (single-label unless said otherwise).

    Attributes:
        rho: the trade-off parameter.
        accuracy: top-1 accuracy (multi-label: exact-match accuracy).
        target_error: mean type1conf/type2conf of the pairs, or mean cd of the triplets.
        errors: (K, K) pair error matrix after w-os.
        counts: (K, K) int64 confusion counts after w-os (single-label; None for multi-label).
        preds: predictions after w-os, (N,) int64 or (N, K) bool.
        changed: (M,) int64 positions (in the arrays given) whose prediction changed.
        fixed: changed samples that were wrong before and are right after.
        broken: changed samples that were right before and are wrong after.
        map: mean average precision of the scaled scores (multi-label only, else None).
    """

    rho: float
    accuracy: float
    target_error: float
    errors: np.ndarray
    counts: np.ndarray | None
    preds: np.ndarray
    changed: np.ndarray
    fixed: int
    broken: int
    map: float | None = None

    @property
    def rates(self) -> np.ndarray | None:
        """(K, K) row-normalised confusion after w-os (single-label)."""
        return None if self.counts is None else confusion_rates(self.counts)


def mean_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes (with at least one positive) of the average precision of ``scores``.

    Args:
        labels: (N, K) multi-hot ground truth.
        scores: (N, K) scores (higher = more confident); ties are ranked by position.
    """
    present = np.asarray(labels) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, axis=0, kind="stable")              # (N, K)
    hits = np.take_along_axis(present, order, axis=0).astype(np.float64)
    tp = np.cumsum(hits, axis=0)
    precision = tp / np.arange(1, len(hits) + 1)[:, None]
    npos = present.sum(axis=0)
    ap = np.divide((precision * hits).sum(axis=0), npos, out=np.full(npos.shape, np.nan), where=npos > 0)
    return float(np.nanmean(ap)) if np.any(npos > 0) else float("nan")


class WosWhatIf:
    """Precomputed w-os for one set of targets; :meth:`evaluate` is cheap per rho.

    Single-label: scaling all target classes by the same rho keeps their order, so for each
    affected row the best target class, its probability and the best non-target class are
    found once here. A slider move then compares two vectors over the affected rows only and
    updates the confusion counts with two ``bincount`` calls over the changed rows.
    Multi-label: only the affected rows' target columns are re-thresholded; the pair errors
    (type2conf) and mAP are recomputed in full.

    Args:
        probs: (N, K) softmax (single-label) or sigmoid (multi-label) outputs.
        labels: (N,) int class indices, or (N, K) multi-hot.
        targets: pairs ``(a, b)`` or triplets ``(positive, negative, anchor)``.
        task: "single_label" or "multi_label".
        threshold: multi-label decision threshold.
        preds: the original predictions (default: decided from ``probs``).
    """

    def __init__(self, probs: np.ndarray, labels: np.ndarray, targets: Sequence[Sequence[int]], *,
                 task: str = "single_label", threshold: float = 0.5, preds: np.ndarray | None = None):
        if task not in ("single_label", "multi_label"):
            raise ValueError(f"task must be 'single_label' or 'multi_label', got {task!r}")
        self.targets = [tuple(int(c) for c in t) for t in targets]
        self.probs = np.asarray(probs)
        self.labels = np.asarray(labels)
        self.task, self.threshold = task, float(threshold)
        n, k = self.probs.shape
        self.num_classes = k
        self.cls = np.asarray(target_classes(self.targets), dtype=np.int64)
        if len(self.cls) and (self.cls.min() < 0 or self.cls.max() >= k):
            raise ValueError(f"target class index out of range for {k} classes")
        if task == "multi_label":
            self.before = self.probs >= threshold if preds is None else np.asarray(preds, dtype=bool)
            self.present = self.labels > 0.5
            self.rows = np.flatnonzero(affected_rows(self.before, self.targets, task=task))
            self._sub = self.probs[np.ix_(self.rows, self.cls)]                  # (M, T)
            self.base = self.evaluate(1.0)
            return
        self.before = self.probs.argmax(axis=1) if preds is None else np.asarray(preds, dtype=np.int64)
        self.before = self.before.astype(np.int64, copy=False)
        self.rows = np.flatnonzero(np.isin(self.before, self.cls))               # (M,)
        sub = self.probs[self.rows]                                              # (M, K)
        sub_t = sub[:, self.cls]
        self._best_t = self.cls[sub_t.argmax(axis=1)]
        self._max_t = sub_t.max(axis=1)
        if k > len(self.cls):
            others = sub.copy()
            others[:, self.cls] = -np.inf
            self._best_o = others.argmax(axis=1)
            self._max_o = others[np.arange(len(self.rows)), self._best_o]
        else:  # every class is a target: scaling all of them changes nothing
            self._best_o, self._max_o = self._best_t, np.full(len(self.rows), -np.inf)
        self._lab_rows = self.labels[self.rows].astype(np.int64)
        self._flat_before = self._lab_rows * k + self.before[self.rows]
        self._counts = confusion_counts(self.labels, self.before, k)
        self._correct = int(np.trace(self._counts))
        self._correct_rows = self.before[self.rows] == self._lab_rows
        self.base = self.evaluate(1.0)

    @property
    def n(self) -> int:
        return len(self.probs)

    def evaluate(self, rho: float) -> WosResult:
        """Accuracy, target error, confusion after w-os and what changed, for one rho."""
        rho = float(rho)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        if self.task == "multi_label":
            return self._evaluate_multi(rho)
        k = self.num_classes
        after_rows, moved, fixed, broken = self._moves(rho)
        counts = self._counts
        if moved.any():
            delta = (np.bincount(self._lab_rows[moved] * k + after_rows[moved], minlength=k * k)
                     - np.bincount(self._flat_before[moved], minlength=k * k))
            counts = counts + delta.reshape(k, k)
        preds = self.before.copy()
        preds[self.rows] = after_rows
        rates = confusion_rates(counts)
        errors = (rates + rates.T) / 2.0
        np.fill_diagonal(errors, 0.0)
        n = max(self.n, 1)
        return WosResult(rho=rho, accuracy=(self._correct + fixed - broken) / n,
                         target_error=target_error(errors, self.targets) if self.targets else float("nan"),
                         errors=errors, counts=counts, preds=preds, changed=self.rows[moved],
                         fixed=fixed, broken=broken)

    def _evaluate_multi(self, rho: float) -> WosResult:
        preds = self.before.copy()
        scores = self.probs.astype(np.float64, copy=True)
        if len(self.rows):
            scaled = self._sub * rho
            preds[np.ix_(self.rows, self.cls)] = scaled >= self.threshold
            scores[np.ix_(self.rows, self.cls)] = scaled
        moved_rows = np.any(preds[self.rows] != self.before[self.rows], axis=1) if len(self.rows) else np.zeros(0, bool)
        right_before = np.all(self.before == self.present, axis=1)
        right_after = np.all(preds == self.present, axis=1)
        changed = self.rows[moved_rows]
        errors = type2conf_matrix(self.labels, preds)
        return WosResult(rho=rho, accuracy=float(right_after.mean()) if self.n else float("nan"),
                         target_error=target_error(errors, self.targets) if self.targets else float("nan"),
                         errors=errors, counts=None, preds=preds, changed=changed,
                         fixed=int(np.count_nonzero(right_after[changed] & ~right_before[changed])),
                         broken=int(np.count_nonzero(right_before[changed] & ~right_after[changed])),
                         map=mean_average_precision(self.labels, scores))

    def curve(self, rhos: Sequence[float] | None = None):
        """The trade-off curve: DataFrame ``rho, accuracy, target_error`` (+ ``map`` for
        multi-label), one row per rho of ``rhos`` (default :func:`rho_grid`), rho descending."""
        import pandas as pd

        rhos = rho_grid() if rhos is None else sorted({float(r) for r in rhos}, reverse=True)
        rows = []
        for rho in rhos:
            if self.task == "multi_label":
                r = self.evaluate(rho)
                rows.append({"rho": r.rho, "accuracy": r.accuracy, "target_error": r.target_error, "map": r.map})
            else:
                rows.append({"rho": float(rho), **self._point(float(rho))})
        return pd.DataFrame(rows)

    def _moves(self, rho: float) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Single-label: the new prediction of every affected row (:attr:`rows`) at ``rho``,
        which of them moved, and how many moves fixed / broke a sample."""
        best_t = self._best_t if rho > 0 else np.full(len(self.rows), self.cls[0] if len(self.cls) else 0)
        after_rows = np.where(self._max_t * rho >= self._max_o, best_t, self._best_o)
        moved = after_rows != self.before[self.rows]
        right_after = after_rows[moved] == self._lab_rows[moved]
        right_before = self._correct_rows[moved]
        return (after_rows, moved, int(np.count_nonzero(right_after & ~right_before)),
                int(np.count_nonzero(right_before & ~right_after)))

    def _point(self, rho: float) -> dict:
        """Single-label accuracy and target error for one rho, as :meth:`evaluate` gives them,
        from the target classes' rows of the confusion counts only (the K x K rates of every
        point made a 46-point curve 0.4 s at 1,000 classes). A row's total (its label's
        count) never changes with w-os, so only the moved samples' cells are recounted."""
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        after_rows, moved, fixed, broken = self._moves(rho)
        accuracy = (self._correct + fixed - broken) / max(self.n, 1)
        if not self.targets:
            return {"accuracy": accuracy, "target_error": float("nan")}
        cls = self.cls
        local = np.full(self.num_classes, -1, dtype=np.int64)
        local[cls] = np.arange(len(cls))
        sub = self._counts[np.ix_(cls, cls)].astype(np.int64)                     # (T, T)
        lab = local[self._lab_rows[moved]]
        for cols, sign in ((local[after_rows[moved]], 1), (local[self.before[self.rows][moved]], -1)):
            keep = (lab >= 0) & (cols >= 0)
            np.add.at(sub, (lab[keep], cols[keep]), sign)
        totals = self._counts[cls].sum(axis=1, keepdims=True)
        rates = np.divide(sub, totals, out=np.zeros(sub.shape, dtype=np.float64), where=totals > 0)
        errors = (rates + rates.T) / 2.0
        np.fill_diagonal(errors, 0.0)
        return {"accuracy": accuracy,
                "target_error": target_error(errors, [tuple(local[c] for c in t) for t in self.targets])}

    def changes(self, result: WosResult, class_names: Sequence[str] | None = None):
        """What changed, as a DataFrame.

        Single-label: one row per (label, before, after) transition with ``label, before,
        after, count, effect`` (effect: "fixed", "broken" or "still wrong"), most frequent first.
        Multi-label: one row per target class with ``class, removed_correct`` (true positives
        dropped) and ``removed_wrong`` (false positives dropped).
        """
        import pandas as pd

        k = self.num_classes
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        if self.task == "multi_label":
            idx = result.changed
            dropped = self.before[idx] & ~result.preds[idx]
            pres = self.present[idx]
            return pd.DataFrame({"class": [names[c] for c in self.cls],
                                 "removed_correct": (dropped & pres)[:, self.cls].sum(axis=0),
                                 "removed_wrong": (dropped & ~pres)[:, self.cls].sum(axis=0)})
        idx = result.changed
        lab, b, a = self.labels[idx].astype(np.int64), self.before[idx], result.preds[idx]
        if len(idx) == 0:
            return pd.DataFrame(columns=["label", "before", "after", "count", "effect"])
        code = (lab * k + b) * k + a
        uniq, count = np.unique(code, return_counts=True)
        ul, ub, ua = uniq // (k * k), (uniq // k) % k, uniq % k
        effect = np.where(ua == ul, "fixed", np.where(ub == ul, "broken", "still wrong"))
        frame = pd.DataFrame({"label": [names[i] for i in ul], "before": [names[i] for i in ub],
                              "after": [names[i] for i in ua], "count": count, "effect": effect})
        return frame.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def wos_metrics(probs: np.ndarray, labels: np.ndarray, targets: Sequence[Sequence[int]], rho: float, *,
                task: str = "single_label", threshold: float = 0.5, preds: np.ndarray | None = None) -> WosResult:
    """One-off :meth:`WosWhatIf.evaluate` (build a :class:`WosWhatIf` to evaluate many rhos)."""
    return WosWhatIf(probs, labels, targets, task=task, threshold=threshold, preds=preds).evaluate(rho)


def wos_curve(probs: np.ndarray, labels: np.ndarray, targets: Sequence[Sequence[int]], *,
              rhos: Sequence[float] | None = None, task: str = "single_label", threshold: float = 0.5,
              preds: np.ndarray | None = None):
    """The accuracy / target-error trade-off over rho (default: :func:`rho_grid`, 1 .. 1e-4)."""
    return WosWhatIf(probs, labels, targets, task=task, threshold=threshold, preds=preds).curve(rhos)


def suggest_rho(curve, lambda1: float = 0.25, lambda2: float = 0.01, *, metric: str | None = None) -> dict:
    """The highest-accuracy rho that *repairs* the targets (WR paper, section 2.2.3).

    Repaired: ``target_error <= (1 - lambda1) * target_error(rho=1)`` and
    ``metric >= (1 - lambda2) * metric(rho=1)``, where the metric is accuracy, or mAP when
    the curve has a ``map`` column (multi-label). Ties: lower target error, then larger rho.

    Args:
        curve: DataFrame from :func:`wos_curve`; must contain rho = 1 (the original model).
        lambda1: the least relative drop of the target error (default 25 %).
        lambda2: the largest relative drop of accuracy/mAP (default 1 %).

    Returns:
        dict with ``rho`` (None when no rho qualifies), ``accuracy``, ``target_error``,
        ``meets`` (bool), ``metric``, ``base_accuracy``, ``base_target_error``,
        ``max_target_error``, ``min_accuracy`` (the two bounds) and ``reason`` (one sentence).
    """
    if not 0.0 <= lambda1 <= 1.0 or not 0.0 <= lambda2 <= 1.0:
        raise ValueError(f"lambda1 and lambda2 must be in [0, 1], got {lambda1}, {lambda2}")
    metric = metric or ("map" if "map" in curve.columns else "accuracy")
    base = curve[np.isclose(curve["rho"].to_numpy(dtype=float), 1.0)]
    if base.empty:
        raise ValueError("the curve must include rho = 1 (the original model)")
    base_acc, base_err = float(base[metric].iloc[0]), float(base["target_error"].iloc[0])
    max_err, min_acc = (1.0 - lambda1) * base_err, (1.0 - lambda2) * base_acc
    out = {"rho": None, "accuracy": None, "target_error": None, "meets": False, "metric": metric,
           "base_accuracy": base_acc, "base_target_error": base_err,
           "max_target_error": max_err, "min_accuracy": min_acc}
    if not base_err > 0:
        return {**out, "reason": "the original target error is already 0: there is nothing to repair"}
    eps = 1e-12
    ok = curve[(curve["target_error"] <= max_err + eps) & (curve[metric] >= min_acc - eps)
               & (curve["target_error"] < base_err)]
    if ok.empty:
        fewer = curve[curve["target_error"] <= max_err + eps]
        if fewer.empty:
            why = (f"no rho in the grid lowers the target error by {lambda1:.0%} "
                   f"(best {curve['target_error'].min():.4f} vs. bound {max_err:.4f})")
        else:
            why = (f"every rho that lowers the target error by {lambda1:.0%} costs more than {lambda2:.0%} "
                   f"{metric} (best {fewer[metric].max():.4f} vs. bound {min_acc:.4f})")
        return {**out, "reason": why}
    best = ok.sort_values([metric, "target_error", "rho"], ascending=[False, True, False], kind="stable").iloc[0]
    return {**out, "rho": float(best["rho"]), "accuracy": float(best[metric]),
            "target_error": float(best["target_error"]), "meets": True,
            "reason": (f"rho = {best['rho']:.4g} lowers the target error from {base_err:.4f} to "
                       f"{best['target_error']:.4f} with {metric} {best[metric]:.4f} "
                       f"(bounds: error <= {max_err:.4f}, {metric} >= {min_acc:.4f})")}
