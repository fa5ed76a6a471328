"""The likely-mislabelled flag: the PGD paper's compensated-loss rule, calibrated by confident learning.

The PGD paper ("Mitigating Dataset Bias Using Per-Sample Gradients from a Biased Classifier",
section 5, eq. 2) splits the training set with the compensated loss ``L~_i = CE_i / H_i`` (the
cross-entropy of the given label over the softmax entropy of the noise model's prediction) and
the threshold ``delta = sum CE / sum H``: ``L~ >= delta`` is "noise". We keep that rule
(:func:`paper_flag`, column ``noisy_paper``) and its ranking, but on a real model it does not
flag a plausible share: a network trained on its own train split predicts with entropy ~0, so
every hard but correctly labelled error gets a huge ``L~`` (ratios of 10^7 happen) and lands
above ``delta`` (8.6 % of CIFAR-10 train for a ResNet-56, where label errors are well under 1 %).

**Calibrated flag** (the default, column ``noisy``): how many samples to flag comes from
confident learning ("Confident Learning: Estimating Uncertainty in Dataset Labels", Northcutt,
Jiang & Chuang, JAIR 2021, the subsection "Count: characterize and find label errors using
the confident joint"): with the per-class threshold
``t_j`` = the average probability of class ``j`` over the samples labelled ``j`` (the model's
typical self-confidence in that class), a sample labelled ``i`` is counted as a label error when
the most probable class among those reaching their threshold (``p_j >= t_j``) is some ``j != i``.
The count is that number of samples (:func:`estimate_label_errors`); the flagged samples are
that many of the paper's flags with the highest compensated loss (CL's "prune by noise rate"
from its subsection "Rank and prune: data cleaning", with the PGD ranking in place of CL's margin and one global count instead of one
per class pair). A user can tighten it further with a smaller count or share (:func:`flag_top`).

Departures, and why: the probabilities are the model's on its own train split, not
out-of-sample (cross-validated) as CL assumes; a model fit to a wrong label lowers its
probability of the true class, so CL's own off-diagonal set finds only about half of the demo's
planted flips, while its *count* stays close to the true number. Hence: CL for the count, PGD for
the ranking. The count is not calibrated to the class sizes (CL's optional step), which on the
demo overshoots (the confused pair inflates it) and on real data only loosens the flag.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diagnostics.gradients import EPS, noise_split

#: columns of :func:`noise_table`, in the order they are added to the score table
NOISE_COLUMNS = ["p_label", "p_pred", "ce", "entropy", "noisy_paper", "noise_rank"]


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.ndim != 1 or len(p) != len(y):
        raise ValueError(f"need (N, K) probabilities and (N,) labels, got {p.shape} and {y.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {p.shape[1]})")
    return p, y


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
    """Confident learning's per-class thresholds ``t_j = mean(p_j | label = j)`` (CL, the confident joint).

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
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_class(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """The class each sample is confidently assigned to, or -1 (the confident joint's column in CL).

    A sample is assigned to the most probable class among those with ``p_j >= t_j``;
    samples that reach no threshold are not assigned.

    Args:
        probs: (N, K) float; labels: (N,) int given labels.
        thresholds: (K,) ``t_j`` (default :func:`self_confidence_thresholds`).

    Returns:
        (N,) int64 class index or -1.
    """
    p, y = _check(probs, labels)
    t = self_confidence_thresholds(p, y) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    above = np.where(p >= t[None, :], p, -1.0)  # (N, K)
    best = above.argmax(axis=1)
    return np.where(above.max(axis=1) >= 0, best, -1).astype(np.int64)


def estimate_label_errors(probs: np.ndarray, labels: np.ndarray) -> int:
    """How many samples confident learning counts as mislabelled: off-diagonal confident-joint entries.

    Args:
        probs: (N, K) float softmax probabilities; labels: (N,) int given labels.

    Returns:
        The number of samples whose confident class (:func:`confident_class`) is another class.
    """
    p, y = _check(probs, labels)
    assigned = confident_class(p, y)
    return int(((assigned >= 0) & (assigned != y)).sum())


def paper_flag(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The PGD paper's rule ``L~_i = CE_i / H_i >= delta = sum CE / sum H`` (section 5, eq. 2).

    Returns:
        ``(flag (N,) bool, comp_loss (N,) float64, delta)``.
    """
    p, y = _check(probs, labels)
    return noise_split(p, y)


def noise_ranks(comp_loss: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Rank of each eligible sample by compensated loss: 1 = highest ``L~``; 0 = not eligible.

    Ties are broken by position (stable), so ranks are unique.

    Args:
        comp_loss: (N,) float; eligible: (N,) bool (the paper's flags).

    Returns:
        (N,) int64.
    """
    comp = np.asarray(comp_loss, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    rows = np.flatnonzero(eligible)
    order = rows[np.argsort(-comp[rows], kind="stable")]
    ranks = np.zeros(len(comp), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def flag_top(noise_rank: np.ndarray, count: int) -> np.ndarray:
    """The calibrated flag at a given count: the ``count`` eligible samples of highest ``L~``.

    Args:
        noise_rank: (N,) int from :func:`noise_ranks` (0 = not eligible).
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


def noise_table(probs: np.ndarray, labels: np.ndarray, *, count: int | None = None) -> pd.DataFrame:
    """The evidence and both flags for every sample.

    Args:
        probs: (N, K) float softmax probabilities of the noise model (the paper trains it with
            plain CE: the loaded model); labels: (N,) int given labels.
        count: how many samples the calibrated flag may take (default: the confident-learning
            estimate, :func:`estimate_label_errors`); never more than the paper flags.

    Returns:
        DataFrame in input order with columns ``pred, p_label, p_pred, ce, entropy, comp_loss,
        noisy_paper, noise_rank, noisy`` (``noise_rank``: 1 = the paper flag with the highest
        ``L~``, 0 = not flagged by the paper). ``attrs``: ``delta`` (the paper's threshold),
        ``noise_estimate`` (the CL count), ``noise_count`` (samples flagged), ``noise_threshold``
        (the lowest ``L~`` flagged, NaN when none), ``noisy_share``, ``noisy_paper_share`` and
        ``class_thresholds`` (the K values ``t_j``, None for a class without samples).
    """
    p, y = _check(probs, labels)
    n = len(y)
    pred = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    ce, entropy = loss_and_entropy(p, y)
    paper, comp, delta = paper_flag(p, y)
    estimate = estimate_label_errors(p, y)
    ranks = noise_ranks(comp, paper)
    wanted = estimate if count is None else int(count)
    flag = flag_top(ranks, wanted)
    frame = pd.DataFrame({"pred": pred, "p_label": p[np.arange(n), y], "p_pred": p[np.arange(n), pred],
                          "ce": ce, "entropy": entropy, "comp_loss": comp, "noisy_paper": paper,
                          "noise_rank": ranks, "noisy": flag})
    frame.attrs.update(noise_summary(frame, delta=delta, estimate=estimate))
    thresholds = self_confidence_thresholds(p, y)
    frame.attrs["class_thresholds"] = [float(t) if np.isfinite(t) else None for t in thresholds]
    return frame


def noise_summary(frame: pd.DataFrame, *, delta: float, estimate: int) -> dict:
    """The numbers the page and the CLI report for a frame with ``noisy``, ``noisy_paper``, ``comp_loss``.

    Returns:
        ``{"delta", "noise_estimate", "noise_count", "noise_threshold", "noisy_share",
        "noisy_paper_share"}`` (shares of the frame's rows; threshold NaN when nothing is flagged).
    """
    n = max(len(frame), 1)
    flagged = frame["noisy"].to_numpy(dtype=bool)
    comp = frame["comp_loss"].to_numpy(dtype=np.float64)
    return {"delta": float(delta), "noise_estimate": int(estimate), "noise_count": int(flagged.sum()),
            "noise_threshold": float(comp[flagged].min()) if flagged.any() else float("nan"),
            "noisy_share": float(flagged.sum() / n),
            "noisy_paper_share": float(frame["noisy_paper"].to_numpy(dtype=bool).sum() / n)}
