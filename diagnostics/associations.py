"""Object associations from Grad-CAM heatmaps and object masks (weak-boundary paper 4.1).

For every explained (image, class) row and every object present in the image:
``share = positive relevance inside the object's mask / total positive relevance``
("Addressing Weak Decision Boundaries in Image Classification", section 4.1). The paper records an association when the heatmap's relevance on an
object passes "a certain threshold"; we use the share with threshold 0.3 by default.

Aggregated per (class, object) over the split (:func:`aggregate_associations`):

* ``count``: rows explaining the class whose share on the object is >= threshold;
* ``rate`` = count / ``n_pred`` (rows explaining the class, i.e. images predicted as it);
* ``share_mean``: mean share over the class's rows in which the object is present;
* ``count_correct`` / ``count_wrong``: ``count`` split by whether the row is right;
* ``present``: the class's rows in which the object appears at all;
* ``rate_present`` = count / present: how often the object drives the class when it is there.

Ranking (:func:`rank_associations`): what a reviewer should look at first. A row whose object
*is* the class (the object's name equals the class name, e.g. ``plus <- plus``: a class's own
shape), or that a reviewer marked legitimate, is not a finding (``trivial``) and goes last.
Among the findings, the default order (``"priority"``) is

1. ``count_wrong`` descending: wrong predictions the object drives cost accuracy now;
2. ``excess`` descending: ``count - present * base_rate``, where an object's ``base_rate`` is
   how often it drives the prediction over every class's rows in which it is present. The
   excess counts the images in which the object drives this class beyond what it does for
   an average class: a *surprise* in units of images, so a rare coincidence (one image, high
   rate) does not outrank a pattern;
3. ``count`` descending.

``lift = rate_present / base_rate`` is the same surprise as a ratio (1 = as usual for the
object). The paper leaves the order to the reader; this ranking is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from diagnostics.gradcam import GradCamResult, upsample_cams
from diagnostics.mask_sources import mask_to_input

DEFAULT_THRESHOLD = 0.3
COLUMNS = ["class", "object", "count", "rate", "share_mean", "count_correct", "count_wrong", "n_pred", "present",
           "rate_present"]
RANK_COLUMNS = ["trivial", "excess", "lift"]
#: orders of :func:`rank_associations`: the sort keys after "trivial last"
RANKINGS = {
    "priority": ["count_wrong", "excess", "count"],
    "wrong": ["count_wrong", "count"],
    "excess": ["excess", "count"],
    "lift": ["lift", "count"],
    "rate": ["rate", "count"],
}
Progress = Callable[[int, int], None]


def relevance_shares(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of positive relevance inside each mask.

    Args:
        cams: (R, H, W) float heatmaps (negative values are ignored).
        masks: (R, O, H, W) bool object masks, or (O, H, W) for one heatmap (R = 1).

    Returns:
        (R, O) float32 in [0, 1]; 0 where a heatmap has no positive relevance.
    """
    cams = np.asarray(cams, dtype=np.float64)
    single = masks.ndim == 3
    if single:
        cams, masks = cams.reshape(1, *cams.shape[-2:]), masks[None]
    pos = np.clip(cams, 0.0, None)
    total = pos.sum(axis=(1, 2))
    inside = np.einsum("rhw,rohw->ro", pos, masks.astype(np.float64))
    share = np.divide(inside, total[:, None], out=np.zeros_like(inside), where=total[:, None] > 0)
    share = np.clip(share, 0.0, 1.0).astype(np.float32)
    return share[0:1] if single else share


@dataclass
class ObjectShares:
    """Relevance shares of every explained row on every object.

    Attributes:
        object_names: the O object names (columns).
        shares: (R, O) float32; NaN where the object is absent from the row's image.
        present_images: (N_img, O) bool object presence per explained image.
        image_indices: (N_img,) split positions of ``present_images`` rows.
    """

    object_names: list[str]
    shares: np.ndarray
    present_images: np.ndarray
    image_indices: np.ndarray


def compute_object_shares(result: GradCamResult, masks, *, resize: int, crop: int | None = None,
                          progress: Progress | None = None, batch_size: int = 256) -> ObjectShares:
    """Shares of every Grad-CAM row on every object of its image.

    Args:
        result: the Grad-CAM rows (heatmaps at layer resolution).
        masks: a mask source (``objects(i)``, ``object_names()``).
        resize, crop: the workspace transform's geometry, applied to the masks.
        progress: ``progress(done, total)``; raise from it to cancel.
    """
    names = list(masks.object_names())
    col = {n: j for j, n in enumerate(names)}
    uniq = np.unique(result.indices)
    pos_of = {int(i): k for k, i in enumerate(uniq)}
    present = np.zeros((len(uniq), len(names)), dtype=bool)
    shares = np.full((result.n, len(names)), np.nan, dtype=np.float32)
    cache: dict[int, tuple[list[int], np.ndarray]] = {}
    for start in range(0, result.n, batch_size):
        stop = min(start + batch_size, result.n)
        up = upsample_cams(result.cams[start:stop], result.input_size)  # (B, H, W)
        for r in range(start, stop):
            index = int(result.indices[r])
            if index not in cache:
                objs = masks.objects(index)
                cols = [col[n] for n in objs if n in col]
                stack = np.stack([mask_to_input(objs[n], resize=resize, crop=crop) for n in objs if n in col]) \
                    if cols else np.zeros((0, *result.input_size), dtype=bool)
                cache = {index: (cols, stack)}  # images repeat only in adjacent rows
                present[pos_of[index], cols] = True
            cols, stack = cache[index]
            if cols:
                shares[r, cols] = relevance_shares(up[r - start], stack)[0]
        if progress is not None:
            progress(stop, result.n)
    return ObjectShares(names, shares, present, uniq)


def aggregate_associations(shares: np.ndarray, classes: np.ndarray, correct: np.ndarray, *,
                           class_names, object_names, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Per (class, object) association statistics (columns in the module docstring).

    Args:
        shares: (R, O) float32, NaN where the object is absent.
        classes: (R,) int64 explained class per row.
        correct: (R,) bool.
        threshold: share at or above which a row counts as an association.

    Returns:
        One row per (class, object) with the object present in at least one of the
        class's rows, sorted by rate descending (then count).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    K = len(class_names)
    classes = np.asarray(classes, dtype=np.int64)
    is_present = ~np.isnan(shares)
    hit = is_present & (np.nan_to_num(shares, nan=0.0) >= threshold)
    onehot = np.eye(K, dtype=np.float64)[classes]  # (R, K)
    n_pred = onehot.sum(axis=0)  # (K,)
    count = onehot.T @ hit  # (K, O)
    count_correct = onehot.T @ (hit & np.asarray(correct, bool)[:, None])
    present = onehot.T @ is_present
    share_sum = onehot.T @ np.nan_to_num(shares, nan=0.0)
    kk, oo = np.nonzero(present > 0)
    n = n_pred[kk]
    df = pd.DataFrame({
        "class": [class_names[k] for k in kk], "object": [object_names[o] for o in oo],
        "count": count[kk, oo].astype(int), "rate": count[kk, oo] / np.maximum(n, 1),
        "share_mean": share_sum[kk, oo] / present[kk, oo],
        "count_correct": count_correct[kk, oo].astype(int),
        "count_wrong": (count[kk, oo] - count_correct[kk, oo]).astype(int),
        "n_pred": n.astype(int), "present": present[kk, oo].astype(int),
        "rate_present": count[kk, oo] / present[kk, oo],
    }, columns=COLUMNS)
    return df.sort_values(["rate", "count"], ascending=False, kind="stable").reset_index(drop=True)


def same_name(class_name: str, object_name: str) -> bool:
    """Whether an object is named like a class (case, spaces, ``_`` and ``-`` ignored)."""
    norm = lambda s: " ".join(str(s).casefold().replace("_", " ").replace("-", " ").split())  # noqa: E731
    return norm(class_name) == norm(object_name)


def rank_associations(df: pd.DataFrame, *, legitimate=(), by: str = "priority") -> pd.DataFrame:
    """Associations in the order a reviewer should look at them (module docstring: Ranking).

    Args:
        df: :func:`aggregate_associations` output.
        legitimate: ``(class, object)`` name pairs a reviewer marked legitimate (trivial).
        by: a key of :data:`RANKINGS`: ``"priority"`` (default), ``"wrong"``, ``"excess"``,
            ``"lift"`` or ``"rate"``; trivial rows come last in every order.

    Returns:
        ``df`` re-ordered with three more columns: ``trivial`` (bool), ``excess`` (float,
        images beyond the object's base rate) and ``lift`` (float; NaN where the object never
        drives any class).

    Raises:
        ValueError: an unknown ``by`` (the message lists the valid orders).
    """
    if by not in RANKINGS:
        raise ValueError(f"unknown ranking {by!r}; valid: {', '.join(RANKINGS)}")
    df = df.copy()
    totals = df.groupby("object")[["count", "present"]].sum()
    base = (totals["count"] / totals["present"].where(totals["present"] > 0)).fillna(0.0)
    base_rate = df["object"].map(base).astype(float)
    marked = {(str(c), str(o)) for c, o in legitimate}
    df["trivial"] = [same_name(c, o) or (c, o) in marked for c, o in zip(df["class"], df["object"])]
    df["excess"] = df["count"] - df["present"] * base_rate
    df["lift"] = (df["rate_present"] / base_rate.where(base_rate > 0)).astype(float)
    keys = ["trivial", *RANKINGS[by], "class", "object"]
    ascending = [True] + [False] * len(RANKINGS[by]) + [True, True]
    return df.sort_values(keys, ascending=ascending, kind="stable", na_position="last").reset_index(drop=True)


def association_rows(shares: ObjectShares, result: GradCamResult, cls: int, obj: str, *,
                     threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """The rows behind one association (share >= threshold), highest share first.

    Returns:
        DataFrame with columns row, index, share, correct.
    """
    j = shares.object_names.index(obj)
    s = shares.shares[:, j]
    keep = np.nonzero((result.classes == cls) & ~np.isnan(s) & (np.nan_to_num(s) >= threshold))[0]
    df = pd.DataFrame({"row": keep, "index": result.indices[keep], "share": s[keep],
                       "correct": result.correct[keep]})
    return df.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)


def cooccurring_classes(shares: ObjectShares, labels: np.ndarray, obj: str, cls: int, *, top: int = 3,
                        result: GradCamResult | None = None) -> list[tuple[int, float]]:
    """Classes (other than ``cls``) whose images most often contain ``obj``.

    Args:
        labels: the split's labels indexed by split position ((N,) int or (N, K) multi-hot).
        result: when given, classes are ranked first by how many of their images that
            contain ``obj`` are explained as ``cls`` (confusions the object may cause), then
            by the co-occurrence fraction.

    Returns:
        Up to ``top`` (class, fraction of its explained images containing obj), fraction > 0.
    """
    j = shares.object_names.index(obj)
    lab = np.asarray(labels)[shares.image_indices]
    onehot = lab > 0.5 if lab.ndim == 2 else np.eye(int(max(lab.max(), cls)) + 1, dtype=bool)[lab]
    has = shares.present_images[:, j]
    per_class = (onehot & has[:, None]).sum(axis=0) / np.maximum(onehot.sum(axis=0), 1)
    confused = np.zeros(len(per_class))
    if result is not None:
        as_cls = np.isin(shares.image_indices, result.indices[result.classes == cls])
        confused = (onehot & (has & as_cls)[:, None]).sum(axis=0)
    order = np.lexsort((-per_class, -confused))
    keep = [k for k in order if k != cls and per_class[k] > 0]
    return [(int(k), float(per_class[k])) for k in keep[:top]]


def repair_targets(reviews: list[dict], shares: ObjectShares, labels: np.ndarray, class_names, *,
                   top: int = 3, result: GradCamResult | None = None) -> list[list[str]]:
    """Confusion repair targets from reviews marked spurious: [class, co-occurring class] pairs.

    See :func:`cooccurring_classes` for how the partner classes are chosen.
    """
    pairs: list[list[str]] = []
    for rev in reviews:
        if rev.get("verdict") != "spurious":
            continue
        cls_name, _, obj = rev["key"].partition("|")
        if cls_name not in class_names or obj not in shares.object_names:
            continue
        cls = list(class_names).index(cls_name)
        for k, _ in cooccurring_classes(shares, labels, obj, cls, top=top, result=result):
            pair = [cls_name, class_names[k]]
            if pair not in pairs and pair[::-1] not in pairs:
                pairs.append(pair)
    return pairs
