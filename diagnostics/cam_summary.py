"""Where Grad-CAM looks, without object masks: mean heat maps per group, centre/border shares.

The weak-boundary paper ("Addressing Weak Decision Boundaries in Image Classification",
section 4.1) reads Grad-CAM through object masks. Most data sets have none, yet the heatmaps
alone already answer two questions:

* **Do the mistakes look elsewhere?** For a confused pair A/B, the mean heat map of the
  ``A -> B`` mistakes next to the mean heat map of the correctly classified ``A`` (and
  ``B -> A`` next to ``B -> B``), and their difference (:func:`pair_groups`, :func:`mean_cams`).
* **Does a class look at the background?** Per predicted class, the share of the positive
  relevance that falls in the centre of the image and on its border (:func:`region_shares`,
  :func:`where_it_looks`). Objects are usually framed near the centre, so a class whose
  relevance sits on the border more than a uniform map would put there stands out.

Every map is first normalised to unit total positive relevance (:func:`normalise_cams`), so a
mean map is the average *distribution* of relevance and a few high-magnitude maps cannot
dominate it. Shares are unitless: a uniform map puts ``centre_area`` of its relevance in the
centre and ``border_area`` on the border.

Pure functions: arrays in, arrays and frames out; no model, no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from diagnostics.associations import relevance_shares
from diagnostics.confusion import TASKS, pair_mistakes

#: side of the centre box, as a fraction of the image's side (the central quarter of the area)
CENTRE = 0.5
#: width of the border band, as a fraction of the image's side (7/16 of the area at 0.125)
BORDER = 0.125
LOOKS_COLUMNS = ["class", "n", "n_wrong", "n_empty", "centre_share", "border_share", "centre_share_wrong",
                 "border_share_wrong"]


def normalise_cams(cams: np.ndarray) -> np.ndarray:
    """Each heatmap divided by its total positive relevance.

    Args:
        cams: (R, h, w) float heatmaps; negative values count as no relevance.

    Returns:
        (R, h, w) float32, each map summing to 1; a map without positive relevance stays 0.
    """
    pos = np.clip(np.asarray(cams, dtype=np.float64), 0.0, None)
    total = pos.sum(axis=(1, 2), keepdims=True)
    out = np.divide(pos, total, out=np.zeros_like(pos), where=total > 0)
    return out.astype(np.float32)


def mean_cams(cams: np.ndarray, groups: np.ndarray, *, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean normalised heatmap of every group.

    Args:
        cams: (R, h, w) float heatmaps.
        groups: (R,) int group of each row in ``[0, n_groups)``; -1 = in no group.
        n_groups: G.

    Returns:
        means (G, h, w) float32 (each sums to 1; NaN for a group with no rows with relevance)
        and counts (G,) int64 rows per group.

    Raises:
        ValueError: a group id outside ``[-1, n_groups)`` or mismatched lengths.
    """
    cams = np.asarray(cams)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != (len(cams),):
        raise ValueError(f"groups must have shape ({len(cams)},), got {groups.shape}")
    if len(groups) and (groups.min() < -1 or groups.max() >= n_groups):
        raise ValueError(f"group ids must be in [-1, {n_groups}), got {groups.min()}..{groups.max()}")
    keep = groups >= 0
    pixels = int(np.prod(cams.shape[1:]))
    norm = normalise_cams(cams[keep]).reshape(int(keep.sum()), pixels).astype(np.float64)  # (R', h*w)
    g = groups[keep]
    # sums without an (R, G) one-hot: G may be 1,000 classes and R 50,000 rows
    sums = np.zeros((n_groups, norm.shape[1]))
    np.add.at(sums, g, norm)
    counts = np.bincount(g, minlength=n_groups).astype(np.int64)
    # maps without relevance are all zero: average over the maps that have some
    has = np.bincount(g, weights=(norm.sum(axis=1) > 0).astype(np.float64), minlength=n_groups)
    means = np.full(sums.shape, np.nan)
    means[has > 0] = sums[has > 0] / has[has > 0, None]
    return means.reshape(n_groups, *cams.shape[1:]).astype(np.float32), counts


def region_masks(shape: tuple[int, int], *, centre: float = CENTRE, border: float = BORDER
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The centre box and the border band of an (h, w) grid.

    A pixel belongs to a region when its centre does: the centre box spans the middle
    ``centre`` of each side; the border band is every pixel within ``border`` of an edge.

    Args:
        shape: (h, w).
        centre: side of the centre box as a fraction of each side, in (0, 1).
        border: band width as a fraction of each side, in (0, 0.5); the two regions may
            not overlap (``centre / 2 + border <= 0.5``).

    Returns:
        centre (h, w) bool, border (h, w) bool.
    """
    if not 0.0 < centre < 1.0:
        raise ValueError(f"centre must be in (0, 1), got {centre}")
    if not 0.0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border}")
    if centre / 2 + border > 0.5 + 1e-12:
        raise ValueError(f"the centre box ({centre}) and the border band ({border}) overlap")
    h, w = shape
    y = (np.arange(h) + 0.5) / h  # pixel centres in (0, 1)
    x = (np.arange(w) + 0.5) / w
    lo, hi = 0.5 - centre / 2, 0.5 + centre / 2
    inner = ((y >= lo) & (y < hi))[:, None] & ((x >= lo) & (x < hi))[None, :]
    band = ((y < border) | (y > 1 - border))[:, None] | ((x < border) | (x > 1 - border))[None, :]
    return inner, band


def region_shares(cams: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Share of each heatmap's positive relevance inside one region.

    Args:
        cams: (R, H, W) float heatmaps (negative values ignored).
        region: (H, W) bool.

    Returns:
        (R,) float32 in [0, 1]; NaN for a map without positive relevance (Grad-CAM after
        its ReLU can be all zero: no location supports the class), so means skip it.
    """
    cams = np.asarray(cams)
    region = np.asarray(region, dtype=bool)
    if cams.shape[1:] != region.shape:
        raise ValueError(f"region shape {region.shape} does not match the heatmaps {cams.shape[1:]}")
    masks = np.broadcast_to(region, (len(cams), 1, *region.shape))
    share = relevance_shares(cams, masks)[:, 0]
    empty = ~(np.clip(cams, 0, None).reshape(len(cams), -1) > 0).any(axis=1)
    share[empty] = np.nan
    return share


def where_it_looks(centre_share: np.ndarray, border_share: np.ndarray, classes: np.ndarray, correct: np.ndarray,
                   *, class_names: Sequence[str]) -> pd.DataFrame:
    """Per-class mean centre and border shares, over all rows and over the wrong ones.

    Args:
        centre_share, border_share: (R,) float from :func:`region_shares` (NaN = empty map).
        classes: (R,) int64 the class each row is grouped under (the predicted class).
        correct: (R,) bool.
        class_names: the K names.

    Returns:
        One row per class with at least one row, in class order; columns ``class``, ``n``,
        ``n_wrong``, ``n_empty`` (rows whose heatmap has no positive relevance),
        ``centre_share``, ``border_share`` (means over the class's non-empty rows) and
        ``centre_share_wrong``, ``border_share_wrong`` (over its non-empty wrong rows; NaN
        if none).
    """
    k = len(class_names)
    classes = np.asarray(classes, dtype=np.int64)
    wrong = ~np.asarray(correct, dtype=bool)
    centre_share = np.asarray(centre_share, dtype=np.float64)
    border_share = np.asarray(border_share, dtype=np.float64)
    empty = np.isnan(centre_share) | np.isnan(border_share)
    count = lambda rows: np.bincount(classes[rows], minlength=k)  # noqa: E731

    def mean(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = rows & ~empty
        total = np.bincount(classes[rows], weights=values[rows], minlength=k)
        n = count(rows)
        return np.divide(total, n, out=np.full(k, np.nan), where=n > 0)

    every = np.ones(len(classes), dtype=bool)
    df = pd.DataFrame({
        "class": list(class_names), "n": count(every), "n_wrong": count(wrong), "n_empty": count(empty),
        "centre_share": mean(centre_share, every), "border_share": mean(border_share, every),
        "centre_share_wrong": mean(centre_share, wrong), "border_share_wrong": mean(border_share, wrong),
    }, columns=LOOKS_COLUMNS)
    return df[df["n"] > 0].reset_index(drop=True)


def pair_groups(labels: np.ndarray, preds: np.ndarray, a: int, b: int, *, task: str = "single_label"
                ) -> dict[tuple[int, int], np.ndarray]:
    """Positions of the four (true, predicted) groups of a pair: A->A, A->B, B->B, B->A.

    Single-label: label ``t`` predicted ``p``. Multi-label (type2 confusion): ``t`` present,
    the other class absent, ``t`` predicted, and the other class predicted (a mistake) or not
    (correct); the mistakes are :func:`diagnostics.confusion.pair_mistakes`.

    Args:
        labels: (N,) int64 or (N, K) multi-hot.
        preds: (N,) int64 or (N, K) bool.
        a, b: the two class indices (distinct).

    Returns:
        ``{(a, a): pos, (a, b): pos, (b, b): pos, (b, a): pos}``, each (M,) int64 positions.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if a == b:
        raise ValueError(f"a pair needs two different classes, got {a} twice")
    out: dict[tuple[int, int], np.ndarray] = {}
    for t, o in ((a, b), (b, a)):
        if task == "multi_label":
            present = np.asarray(labels) > 0.5
            pred = np.asarray(preds).astype(bool)
            right = present[:, t] & ~present[:, o] & pred[:, t] & ~pred[:, o]
        else:
            right = (np.asarray(labels) == t) & (np.asarray(preds) == t)
        out[(t, t)] = np.flatnonzero(right).astype(np.int64)
        out[(t, o)] = pair_mistakes(labels, preds, t, o, task=task)
    return out


def rows_for(result_indices: np.ndarray, result_classes: np.ndarray, indices: np.ndarray,
             classes: np.ndarray | int) -> np.ndarray:
    """The heatmap rows explaining ``classes`` on images ``indices`` (-1 where there is none).

    Args:
        result_indices: (R,) int64 image of each heatmap row.
        result_classes: (R,) int64 class each row explains.
        indices: (M,) int64 images to look up.
        classes: (M,) int64 or one int: the class to find for each image.

    Returns:
        (M,) int64 row numbers into the heatmaps, -1 where no row explains that class there.
    """
    ri = np.asarray(result_indices, dtype=np.int64)
    rc = np.asarray(result_classes, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    classes = np.broadcast_to(np.asarray(classes, dtype=np.int64), indices.shape)
    if not len(ri) or not len(indices):
        return np.full(len(indices), -1, dtype=np.int64)
    width = int(max(rc.max(), classes.max(initial=0))) + 1
    keys = ri * width + rc
    order = np.argsort(keys, kind="stable")
    want = indices * width + classes
    pos = np.searchsorted(keys[order], want).clip(0, len(keys) - 1)
    found = keys[order][pos] == want
    return np.where(found, order[pos], -1).astype(np.int64)


def pair_rows(groups: dict[tuple[int, int], np.ndarray], out_indices: np.ndarray, result_indices: np.ndarray,
              result_classes: np.ndarray, *, target: int | None = None) -> dict[tuple[int, int], np.ndarray]:
    """The heatmap rows of each (true, predicted) group of :func:`pair_groups`.

    Args:
        groups: ``{(true, pred): positions}`` into the inference outputs.
        out_indices: (N,) int64 split position of each output row.
        result_indices, result_classes: (R,) the heatmap rows (image, explained class).
        target: None when the heatmaps explain the predicted class (a group's rows explain
            its ``pred``); the explained class when one class is explained for every image.

    Returns:
        ``{(true, pred): (M,) int64 rows}`` aligned with the group's positions (-1 = none).
    """
    out_indices = np.asarray(out_indices, dtype=np.int64)
    return {(t, p): rows_for(result_indices, result_classes, out_indices[pos], p if target is None else target)
            for (t, p), pos in groups.items()}


def summarise_groups(cams: np.ndarray, centre_share: np.ndarray, border_share: np.ndarray,
                     rows: dict[str, np.ndarray]) -> tuple[np.ndarray, pd.DataFrame]:
    """Mean heatmap and mean centre/border shares of named groups of heatmap rows.

    Args:
        cams: (R, h, w) heatmaps.
        centre_share, border_share: (R,) float per row (:func:`region_shares`).
        rows: ``{group name: (M,) int64 rows}`` in display order; -1 entries are skipped.

    Returns:
        means (G, h, w) float32 (:func:`mean_cams`; NaN for an empty group) and a frame with
        one row per group: ``group``, ``n``, ``n_empty`` (heatmaps without positive relevance),
        ``centre_share``, ``border_share`` (means over the non-empty ones; NaN if none).
    """
    cams = np.asarray(cams)
    means = np.full((len(rows), *cams.shape[1:]), np.nan, dtype=np.float32)
    records = []
    for g, (name, r) in enumerate(rows.items()):
        r = np.asarray(r, dtype=np.int64)
        r = r[r >= 0]
        if len(r):
            means[g] = mean_cams(cams[r], np.zeros(len(r), np.int64), n_groups=1)[0][0]
        c, b = np.asarray(centre_share, np.float64)[r], np.asarray(border_share, np.float64)[r]
        full = ~(np.isnan(c) | np.isnan(b))
        records.append({"group": name, "n": len(r), "n_empty": int((~full).sum()),
                        "centre_share": float(c[full].mean()) if full.any() else np.nan,
                        "border_share": float(b[full].mean()) if full.any() else np.nan})
    return means, pd.DataFrame(records, columns=["group", "n", "n_empty", "centre_share", "border_share"])


def pair_choices(errors: np.ndarray, *, preferred: Sequence[Sequence[int]] = (), top: int = 10
                 ) -> list[tuple[int, int]]:
    """Pairs to offer, the default first: the preferred pairs (a repair target), then the most confused.

    Args:
        errors: (K, K) symmetric pair error (type1conf / type2conf).
        preferred: pairs to put first (in their order), e.g. the workspace's repair target.
        top: how many of the most confused pairs to add.

    Returns:
        Distinct unordered pairs ``(a, b)`` with ``a < b``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    a, b = np.triu_indices(errors.shape[0], 1)
    order = np.argsort(-errors[a, b], kind="stable")[:max(int(top), 0)]
    out: list[tuple[int, int]] = []
    for pair in [tuple(sorted(map(int, p))) for p in preferred if len(p) == 2] + \
            [(int(a[i]), int(b[i])) for i in order]:
        if pair not in out and pair[0] != pair[1]:
            out.append(pair)
    return out


@dataclass
class CamRegions:
    """Centre and border shares of every heatmap row of a Grad-CAM result.

    Attributes:
        centre: (R,) float32 share of positive relevance in the centre box.
        border: (R,) float32 share on the border band.
        centre_area, border_area: the regions' shares of the image area (what a uniform
            heatmap would give).
        centre_fraction, border_fraction: the geometry (:func:`region_masks`).
    """

    centre: np.ndarray
    border: np.ndarray
    centre_area: float
    border_area: float
    centre_fraction: float = CENTRE
    border_fraction: float = BORDER
