"""The likely-mislabelled flag: the PGD paper's compensated-loss rule, calibrated with confident learning.

**The paper's rule** ("Mitigating Dataset Bias Using Per-Sample Gradients from a Biased
Classifier", section 5, eq. 2): the compensated loss ``L~_i = CE_i / H_i`` (cross-entropy of the
given label over the entropy of the noise model's softmax) and ``delta = sum CE / sum H``;
``L~ >= delta`` is "noise" (:func:`paper_flag`, column ``noisy_paper``). We keep the rule and its
ranking, but on a real model it does not flag a plausible share: the entropy of a confident
prediction is ~0, so every confidently wrong prediction gets a huge ``L~`` (10^8 on a CIFAR-10
ResNet-56) and lands above ``delta``; it flags 6.8 % of that model's train split, hard model
errors with correct labels, where label errors are well under 1 %.

**The calibrated flag** (the default, column ``noisy``) asks how many samples of each
(given label ``i``, predicted class ``j``) pair to flag, with confident learning ("Confident
Learning: Estimating Uncertainty in Dataset Labels", Northcutt, Jiang & Chuang, JAIR 2021,
subsection "Count: characterize and find label errors using the confident joint"):

1. Per-class thresholds ``t_j`` = the average probability of class ``j`` over the samples
   labelled ``j`` (the model's typical self-confidence in that class). A sample is confidently
   in class ``j`` when ``j`` is the most probable of the classes reaching ``p_j >= t_j``; the
   confident joint ``C[i, j]`` counts the samples labelled ``i`` confidently in ``j``.
2. **Departure: a held-out baseline.** CL assumes out-of-sample probabilities; here they are
   the model's on the split it scores, and a model that does not fit that split (the ResNet-56
   gets 89 % of the CIFAR-10 train JPEGs right) is confidently wrong on thousands of correctly
   labelled images (``C`` counts 5.5 % of the split). The same test (same ``t_j``) on the
   labelled held-out split counts how often the model is confidently wrong on (presumed)
   correct labels; per pair, the excess ``m[i, j] = round(max(0, C[i, j] - n_i * E[i, j] / n'_i))``
   is taken as label errors. The held-out error rate is usually above the train one
   (generalisation gap), so this errs on the side of flagging too few rather than flagging the
   model's own errors; in-sample probabilities also hide part of the errors (a model fit to a
   wrong label lowers its probability of the true class: ``C`` holds only half of the demo's
   planted flips).
3. In each pair, the ``m[i, j]`` samples of highest ``L~`` among the paper's flags labelled
   ``i`` and predicted ``j`` are flagged (CL's "prune by noise rate", subsection "Rank and
   prune: data cleaning", with the PGD ranking in place of CL's margin).

Without a held-out split (scoring the eval split itself, whose probabilities *are* out of
sample), ``m = C``. Measured on the demo (4 % planted flips): the default flags 1.9 % of the
train split with recall 0.47 and precision 0.98 (the paper's rule: 9.7 %, 0.97, 0.40); on the
ResNet-56 CIFAR-10 train JPEGs it flags 0.14 % (the paper's rule 6.8 %).
A user moves the count (:func:`flag_top`): the ranking (``noise_rank``) lists the default flags
first, then the other paper flags, each by ``L~``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diagnostics.gradients import EPS, noise_split

#: columns of :func:`noise_table` added to the score table, in order
NOISE_COLUMNS = ["p_label", "p_pred", "ce", "entropy", "noisy_paper", "noise_rank"]


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = _checked_labels(probs, labels)
    return np.asarray(probs, dtype=np.float64), y


def loss_and_entropy(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of the given label and softmax entropy, the two parts of ``L~ = CE / H``.

    Args:
        probs: (N, K) float softmax probabilities; labels: (N,) int given labels.

    Returns:
        ``(ce (N,), entropy (N,))`` float64 in nats, probabilities floored at 1e-12 as in
        :func:`diagnostics.gradients.compensated_loss`.
    """
    p, y = _check(probs, labels)
    p = np.clip(p, EPS, 1.0)
    return -np.log(p[np.arange(len(y)), y]), -(p * np.log(p)).sum(axis=1)


def self_confidence_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confident learning's per-class thresholds ``t_j = mean(p_j | label = j)``.

    Args:
        probs: (N, K) float softmax probabilities; labels: (N,) int given labels.

    Returns:
        (K,) float64; ``inf`` for a class no sample is labelled with (nothing can be
        confidently assigned to it).
    """
    p, y = _check(probs, labels)
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    sums = np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_class(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """The class each sample is confidently in, or -1 (the confident joint's column in CL).

    A sample is assigned to the most probable class among those with ``p_j >= t_j``;
    samples that reach no threshold are not assigned.

    Args:
        probs: (N, K) float; labels: (N,) int given labels.
        thresholds: (K,) ``t_j`` (default :func:`self_confidence_thresholds` of these samples).

    Returns:
        (N,) int64 class index or -1.
    """
    p, y = _check(probs, labels)
    t = self_confidence_thresholds(p, y) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    above = np.where(p >= t[None, :], p, -1.0)  # (N, K)
    return np.where(above.max(axis=1) >= 0, above.argmax(axis=1), -1).astype(np.int64)


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """``C[i, j]``: samples labelled ``i`` confidently in class ``j`` (see :func:`confident_class`).

    Returns:
        (K, K) int64; off-diagonal entries are CL's label-error counts.
    """
    p, y = _check(probs, labels)
    assigned = confident_class(p, y, thresholds)
    k = p.shape[1]
    joint = np.zeros((k, k), dtype=np.int64)
    ok = assigned >= 0
    np.add.at(joint, (y[ok], assigned[ok]), 1)
    return joint


def estimate_label_errors(probs: np.ndarray, labels: np.ndarray, *, heldout_probs: np.ndarray | None = None,
                          heldout_labels: np.ndarray | None = None) -> np.ndarray:
    """Label errors per (given, true) class pair: the confident joint, less the held-out baseline.

    Args:
        probs: (N, K) float softmax probabilities; labels: (N,) int given labels.
        heldout_probs, heldout_labels: the same model on a labelled held-out split (optional).
            Its confident joint, with the thresholds of ``probs``, scaled to the class sizes of
            ``labels``, is the model's own rate of confident errors; only the excess counts.

    Returns:
        (K, K) int64 ``m[i, j]`` with a zero diagonal: ``C[i, j]`` without a held-out split,
        else ``round(max(0, C[i, j] - n_i * E[i, j] / n'_i))`` (``E`` = the held-out joint,
        ``n``, ``n'`` the class sizes; a class absent from the held-out split keeps ``C``).
    """
    p, y = _check(probs, labels)
    t = self_confidence_thresholds(p, y)
    joint = confident_joint(p, y, t).astype(np.float64)
    if heldout_probs is not None:
        hp, hy = _check(heldout_probs, heldout_labels)
        if hp.shape[1] != p.shape[1]:
            raise ValueError(f"held-out probabilities have {hp.shape[1]} classes, expected {p.shape[1]}")
        k = p.shape[1]
        sizes, held_sizes = np.bincount(y, minlength=k), np.bincount(hy, minlength=k)
        rate = confident_joint(hp, hy, t) / np.maximum(held_sizes, 1)[:, None]  # (K, K)
        joint = np.maximum(joint - sizes[:, None] * rate, 0.0)
    np.fill_diagonal(joint, 0.0)
    return np.floor(joint + 0.5).astype(np.int64)


def paper_flag(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The PGD paper's rule ``L~_i = CE_i / H_i >= delta = sum CE / sum H`` (section 5, eq. 2).

    Returns:
        ``(flag (N,) bool, comp_loss (N,) float64, delta)``.
    """
    p, y = _check(probs, labels)
    return noise_split(p, y)


def select_per_pair(comp_loss: np.ndarray, eligible: np.ndarray, labels: np.ndarray, preds: np.ndarray,
                    counts: np.ndarray) -> np.ndarray:
    """In each (label ``i``, prediction ``j``) pair, the ``counts[i, j]`` eligible samples of highest ``L~``.

    Args:
        comp_loss: (N,) float; eligible: (N,) bool (the paper's flags); labels, preds: (N,) int.
        counts: (K, K) int, e.g. :func:`estimate_label_errors`.

    Returns:
        (N,) bool; ties are broken by position.
    """
    comp = np.asarray(comp_loss, dtype=np.float64)
    eligible, labels, preds = np.asarray(eligible, dtype=bool), np.asarray(labels), np.asarray(preds)
    chosen = np.zeros(len(comp), dtype=bool)
    for i, j in zip(*np.nonzero(np.asarray(counts) > 0)):
        rows = np.flatnonzero(eligible & (labels == i) & (preds == j))
        chosen[rows[np.argsort(-comp[rows], kind="stable")][:int(counts[i, j])]] = True
    return chosen


def noise_ranks(comp_loss: np.ndarray, eligible: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
    """Order of suspicion: 1 = most suspicious; 0 = not eligible.

    The ``first`` samples (the default flags) come first, then the other eligible ones, each
    group by decreasing ``L~``; ties keep position order, so ranks are unique.

    Args:
        comp_loss: (N,) float; eligible: (N,) bool (the paper's flags); first: (N,) bool subset.

    Returns:
        (N,) int64.
    """
    comp = np.asarray(comp_loss, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    first = np.zeros(len(comp), dtype=bool) if first is None else np.asarray(first, dtype=bool) & eligible
    rows = np.flatnonzero(eligible)
    order = rows[np.lexsort((-comp[rows], ~first[rows]))]  # last key sorts first: the default flags
    ranks = np.zeros(len(comp), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def flag_top(noise_rank: np.ndarray, count: int) -> np.ndarray:
    """The flag at a given count: the ``count`` most suspicious samples (:func:`noise_ranks`).

    Args:
        noise_rank: (N,) int (0 = not eligible).
        count: how many to flag (>= 0); more than the eligible samples flags them all.

    Returns:
        (N,) bool.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rank = np.asarray(noise_rank)
    return (rank > 0) & (rank <= count)


def count_for_share(share: float, n: int) -> int:
    """The number of samples a share of ``n`` stands for (rounded half up); share in [0, 1]."""
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"share must be in [0, 1], got {share}")
    return int(np.floor(share * n + 0.5))


def _blocks(probs, labels: np.ndarray, chunk: int | None):
    """``(start, p (B, K) float64, y (B,))`` row blocks of about 4M entries (32 MB of float64)."""
    n, k = probs.shape
    step = max(1, int(chunk) if chunk else (1 << 22) // max(k, 1))
    for start in range(0, n, step):
        yield start, np.asarray(probs[start:start + step], dtype=np.float64), labels[start:start + step]


def _row_stats(probs, labels: np.ndarray, *, chunk: int | None = None) -> dict[str, np.ndarray]:
    """``pred, p_label, p_pred, ce, entropy`` of every row, block by block (no (N, K) float64 copy).

    ``ce`` and ``entropy`` are computed exactly as :func:`loss_and_entropy` and
    :func:`diagnostics.gradients.compensated_loss` do, on the same float64 values.
    """
    n = len(labels)
    out = {"pred": np.empty(n, dtype=np.int64), "p_label": np.empty(n), "p_pred": np.empty(n),
           "ce": np.empty(n), "entropy": np.empty(n)}
    for start, p, y in _blocks(probs, labels, chunk):
        rows, stop = np.arange(len(y)), start + len(y)
        pred = p.argmax(axis=1)
        out["pred"][start:stop], out["p_label"][start:stop], out["p_pred"][start:stop] = pred, p[rows, y], p[rows, pred]
        q = np.clip(p, EPS, 1.0)
        out["ce"][start:stop], out["entropy"][start:stop] = -np.log(q[rows, y]), -(q * np.log(q)).sum(axis=1)
    return out


def _assigned(probs, labels: np.ndarray, thresholds: np.ndarray, *, chunk: int | None = None) -> np.ndarray:
    """:func:`confident_class` block by block (the same comparisons on the same float64 values)."""
    out = np.empty(len(labels), dtype=np.int64)
    for start, p, y in _blocks(probs, labels, chunk):
        above = np.where(p >= thresholds[None, :], p, -1.0)
        out[start:start + len(y)] = np.where(above.max(axis=1) >= 0, above.argmax(axis=1), -1)
    return out


def _joint(assigned: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    joint = np.zeros((k, k), dtype=np.int64)
    ok = assigned >= 0
    np.add.at(joint, (labels[ok], assigned[ok]), 1)
    return joint


def _checked_labels(probs, labels, k: int | None = None) -> np.ndarray:
    """Shape and range checks of :func:`_check` without converting the probabilities."""
    shape = np.shape(probs)
    y = np.asarray(labels)
    if len(shape) != 2 or y.ndim != 1 or shape[0] != len(y):
        raise ValueError(f"need (N, K) probabilities and (N,) labels, got {shape} and {y.shape}")
    if k is not None and shape[1] != k:
        raise ValueError(f"held-out probabilities have {shape[1]} classes, expected {k}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= shape[1]):
        raise ValueError(f"labels must be class indices in [0, {shape[1]})")
    return y


def noise_table(probs: np.ndarray, labels: np.ndarray, *, heldout_probs: np.ndarray | None = None,
                heldout_labels: np.ndarray | None = None, count: int | None = None) -> pd.DataFrame:
    """The evidence and both flags for every sample.

    Args:
        probs: (N, K) float softmax probabilities of the noise model (the paper's is trained
            with plain CE: the loaded model); labels: (N,) int given labels.
        heldout_probs, heldout_labels: the same model on a labelled held-out split, the
            baseline of :func:`estimate_label_errors` (strongly advised for a train split).
        count: flag this many of the most suspicious samples instead of the default
            (the per-pair selection of the module docstring).

    Returns:
        DataFrame in input order with columns ``pred, p_label, p_pred, ce, entropy, comp_loss,
        noisy_paper, noise_rank, noisy`` (:func:`noise_ranks`). ``attrs``: those of
        :func:`noise_summary` plus ``noise_default`` (the default count), ``confident_errors``
        (CL's off-diagonal count, before the baseline), ``heldout_share`` (the held-out split's
        share of confident errors, None without one) and ``class_thresholds`` (the ``t_j``,
        None for a class without samples).
    """
    # the same numbers as composing the public functions above (tests check it), read in row
    # blocks: those each convert (N, K) to float64 and recompute shared parts (3 s at 20,000 x 1,000)
    y = _checked_labels(probs, labels)
    k = np.shape(probs)[1]
    stats = _row_stats(probs, y)
    pred, ce, entropy = stats["pred"], stats["ce"], stats["entropy"]
    delta = float(ce.sum() / max(entropy.sum(), EPS))
    comp = ce / np.maximum(entropy, EPS)
    paper = comp >= delta
    sizes = np.bincount(y, minlength=k)
    thresholds = np.where(sizes > 0, np.bincount(y, weights=stats["p_label"], minlength=k) / np.maximum(sizes, 1),
                          np.inf)
    joint = _joint(_assigned(probs, y, thresholds), y, k)
    counts = joint.astype(np.float64)
    heldout_share = None
    if heldout_probs is not None:
        hy = _checked_labels(heldout_probs, heldout_labels, k)
        held = _joint(_assigned(heldout_probs, hy, thresholds), hy, k)
        counts = np.maximum(counts - sizes[:, None] * (held / np.maximum(np.bincount(hy, minlength=k), 1)[:, None]),
                            0.0)
        heldout_share = float((held.sum() - np.trace(held)) / max(len(hy), 1))
    np.fill_diagonal(counts, 0.0)
    default = select_per_pair(comp, paper, y, pred, np.floor(counts + 0.5).astype(np.int64))
    ranks = noise_ranks(comp, paper, default)
    flag = flag_top(ranks, int(default.sum()) if count is None else int(count))
    frame = pd.DataFrame({"pred": pred, "p_label": stats["p_label"], "p_pred": stats["p_pred"],
                          "ce": ce, "entropy": entropy, "comp_loss": comp, "noisy_paper": paper,
                          "noise_rank": ranks, "noisy": flag})
    frame.attrs.update(noise_summary(frame, delta=delta))
    frame.attrs.update({"noise_default": int(default.sum()),
                        "confident_errors": int(joint.sum() - np.trace(joint)), "heldout_share": heldout_share,
                        "class_thresholds": [float(t) if np.isfinite(t) else None for t in thresholds]})
    return frame


def noise_summary(frame: pd.DataFrame, *, delta: float) -> dict:
    """What the page and the CLI report for a frame with ``noisy``, ``noisy_paper`` and ``comp_loss``.

    Returns:
        ``{"delta", "noise_count", "noise_threshold", "noisy_share", "noisy_paper_share"}``:
        the paper's threshold, samples flagged, the lowest ``L~`` flagged (NaN when none) and
        the shares of the frame's rows flagged by each rule.
    """
    n = max(len(frame), 1)
    flagged = frame["noisy"].to_numpy(dtype=bool)
    comp = frame["comp_loss"].to_numpy(dtype=np.float64)
    return {"delta": float(delta), "noise_count": int(flagged.sum()),
            "noise_threshold": float(comp[flagged].min()) if flagged.any() else float("nan"),
            "noisy_share": float(flagged.sum() / n),
            "noisy_paper_share": float(frame["noisy_paper"].to_numpy(dtype=bool).sum() / n)}
