"""One sample at a time: its top-k classes, its neighbourhood, gallery search (pure functions).

The sample view shows a single image of a split with what every diagnostic knows about it.
This module holds the parts that are plain functions of arrays: the top-k probabilities of one
row of the cached outputs, the summary of its nearest neighbours in the representative set
(Dammu et al., "Addressing Weak Decision Boundaries in Image Classification by Leveraging Web
Search and Generative Models", the weak-boundary paper, section 4.1: the neighbourhood of a
misclassified sample is what makes it *pivotal*), the search and class filters of the galleries, and the keys under which reviews of a
sample are stored. Workspace-level work (outputs, Grad-CAM, FAISS) is in
:mod:`diagnostics.run_sample`.

A sample is named ``"<split>:<index>"`` (index = position in the split) everywhere: in the URL
of the sample view, in the review store (mislabel reviews ``"train:<index>"``, notes on pivotal
images ``"<split>:<index>"``) and in the findings report.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: review kinds in the workspace store (``Store.upsert_review(kind, key, ...)``)
MISLABEL_KIND = "mislabel"       # key "<split>:<index>", verdict "mislabelled" / "not mislabelled"
PIVOTAL_KIND = "pivotal"         # key "<split>:<index>", verdict "note", a free-text note
ASSOCIATION_KIND = "association"  # key "<class>|<object>", verdict spurious / legitimate / unsure
MISLABEL_VERDICTS = ("mislabelled", "not mislabelled")
SPLITS = ("train", "eval")

TOPK_COLUMNS = ["rank", "class", "class_id", "prob"]
NEIGHBOUR_COLUMNS = ["rank", "row", "split", "index", "label", "pred", "label_name", "pred_name", "distance",
                     "correct"]
_INDEX_QUERY = re.compile(r"#?\s*(\d+)")


def sample_key(split: str, index: int) -> str:
    """The key of a sample in the review store and the report, e.g. ``"train:12"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return f"{split}:{int(index)}"


def parse_sample(split: str | None, index: str | int | None, sizes: dict[str, int]) -> tuple[str, int]:
    """A sample reference from text (the URL's ``split`` and ``index``), checked against the splits.

    Args:
        split: "train" or "eval" (None = "eval").
        index: position in the split, as an int or a decimal string.
        sizes: ``{split: number of images}``.

    Returns:
        ``(split, index)``.

    Raises:
        ValueError: unknown split, an index that is not a number, or one outside the split,
            with a message that says what is valid.
    """
    split = split or "eval"
    if split not in sizes:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(sizes)}")
    try:
        value = int(str(index).strip().lstrip("#"))
    except ValueError:
        raise ValueError(f"sample index must be a whole number, got {index!r}") from None
    if not 0 <= value < sizes[split]:
        raise ValueError(f"no image {value} in the {split} split (it has {sizes[split]:,}: 0 to {sizes[split] - 1:,})")
    return split, value


def top_k(probs: np.ndarray, class_names: Sequence[str], *, k: int = 5) -> pd.DataFrame:
    """The ``k`` most probable classes of one sample.

    Args:
        probs: (K,) float probabilities of one sample (softmax, or sigmoid for multi-label).
        class_names: the K class names.
        k: how many (clamped to K); at least 1.

    Returns:
        Columns ``rank`` (1 = most probable), ``class``, ``class_id``, ``prob``; highest first,
        ties in class order.

    Raises:
        ValueError: ``k < 1`` or ``probs`` and ``class_names`` of different lengths.
    """
    probs = np.asarray(probs, dtype=np.float64).ravel()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(probs) != len(class_names):
        raise ValueError(f"{len(probs)} probabilities for {len(class_names)} classes")
    order = np.argsort(-probs, kind="stable")[:k]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "class": [class_names[i] for i in order],
                         "class_id": order.astype(np.int64), "prob": probs[order]}, columns=TOPK_COLUMNS)


def topk_figure(frame: pd.DataFrame, *, label: Sequence[str] = (), title: str = "") -> go.Figure:
    """Horizontal bars of :func:`top_k`'s frame, most probable on top; the label's bars in green.

    Args:
        label: names of the sample's label class(es), drawn in green (others grey-blue).
    """
    colors = ["#1a9850" if c in set(label) else "#4c78a8" for c in frame["class"]]
    fig = go.Figure(go.Bar(x=frame["prob"], y=frame["class"], orientation="h", marker_color=colors,
                           text=[f"{p:.3f}" for p in frame["prob"]], textposition="auto",
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis={"title": "probability", "range": [0, 1]},
                      yaxis={"autorange": "reversed"}, height=60 + 32 * max(len(frame), 1),
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return fig


def neighbour_frame(labels: np.ndarray, preds: np.ndarray, splits: np.ndarray, indices: np.ndarray,
                    rows: np.ndarray, distances: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """The nearest neighbours of one sample as a table.

    Args:
        labels, preds: (N,) int64 labels and predictions of the representative set.
        splits, indices: (N,) split names and positions in the split.
        rows: (k,) int64 neighbour rows of the set, nearest first; -1 = none (left out).
        distances: (k,) float L2 distances, aligned with ``rows``.

    Returns:
        Columns :data:`NEIGHBOUR_COLUMNS`: ``rank`` (1 = nearest), ``row``, ``split``, ``index``,
        ``label``/``pred`` (class ids), ``label_name``, ``pred_name``, ``distance``, ``correct``.
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    distances = np.asarray(distances, dtype=np.float64).ravel()
    keep = rows >= 0
    rows, distances = rows[keep], distances[keep]
    names = np.asarray(class_names, dtype=object)
    return pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1), "row": rows, "split": np.asarray(splits)[rows],
        "index": np.asarray(indices, dtype=np.int64)[rows], "label": labels[rows], "pred": preds[rows],
        "label_name": names[labels[rows]], "pred_name": names[preds[rows]], "distance": distances,
        "correct": labels[rows] == preds[rows],
    }, columns=NEIGHBOUR_COLUMNS)


def neighbour_summary(frame: pd.DataFrame, *, label: int, pred: int, class_names: Sequence[str]) -> dict:
    """What the neighbourhood of a sample (label A, prediction B) says about it.

    Args:
        frame: :func:`neighbour_frame` of the sample.
        label, pred: the sample's label A and prediction B (class ids).

    Returns:
        ``{"k", "mean_distance", "same_label", "labelled_as_pred", "firm_pred", "wrong",
        "majority", "majority_share"}``: shares in [0, 1] of the neighbours labelled A, labelled
        B, labelled *and* predicted B (the weak-boundary paper's purity, before any radius cut),
        misclassified; the most common label among them (ties: lower class id) and its share.
        Shares are None when there is no neighbour.
    """
    n = len(frame)
    if n == 0:
        return {"k": 0, "mean_distance": None, "same_label": None, "labelled_as_pred": None, "firm_pred": None,
                "wrong": None, "majority": None, "majority_share": None}
    lab, prd = frame["label"].to_numpy(), frame["pred"].to_numpy()
    counts = np.bincount(lab, minlength=len(class_names))
    top = int(np.argmax(counts))
    return {"k": n, "mean_distance": float(frame["distance"].mean()),
            "same_label": float((lab == label).mean()), "labelled_as_pred": float((lab == pred).mean()),
            "firm_pred": float(((lab == pred) & (prd == pred)).mean()), "wrong": float((lab != prd).mean()),
            "majority": class_names[top], "majority_share": float(counts[top] / n)}


def filter_samples(indices: np.ndarray, ids: Sequence[str], labels: np.ndarray, preds: np.ndarray | None = None,
                   *, query: str = "", label_classes: Sequence[int] = (), pred_classes: Sequence[int] = ()
                   ) -> np.ndarray:
    """Rows matching a gallery search and class filters.

    Args:
        indices: (N,) int64 positions in the split of the rows.
        ids: N image ids (paths) of the rows.
        labels: (N,) int64 labels or (N, K) multi-hot.
        preds: (N,) int64 predictions or (N, K) bool, or None (no outputs: the prediction
            filter then matches nothing when given).
        query: ``""`` = everything; a whole number (optionally ``#12``) = the image at that
            split index; any other text = ids containing it (case-insensitive).
        label_classes: keep rows labelled with one of these class ids (empty = any).
            Multi-label: rows carrying any of them.
        pred_classes: keep rows predicted as one of these (multi-label: any of them predicted).

    Returns:
        (M,) int64 row positions (into the given arrays), ascending.
    """
    indices = np.asarray(indices, dtype=np.int64)
    keep = np.ones(len(indices), dtype=bool)
    text = (query or "").strip()
    if text:
        number = _INDEX_QUERY.fullmatch(text)
        if number:
            keep &= indices == int(number.group(1))
        else:
            needle = text.lower()
            keep &= np.array([needle in str(i).lower() for i in ids], dtype=bool)
    if len(label_classes):
        keep &= _has_class(np.asarray(labels), label_classes)
    if len(pred_classes):
        keep &= False if preds is None else _has_class(np.asarray(preds), pred_classes)
    return np.flatnonzero(keep).astype(np.int64)


def _has_class(values: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    classes = np.asarray(list(classes), dtype=np.int64)
    if values.ndim == 2:  # multi-hot (N, K)
        return (values[:, classes] > 0.5).any(axis=1)
    return np.isin(values, classes)


def prediction_change(before_correct: bool, after_correct: bool) -> str | None:
    """``"fixed"`` (wrong -> right), ``"broken"`` (right -> wrong) or None, as in the WR paper's Figure 7."""
    if before_correct == after_correct:
        return None
    return "fixed" if after_correct else "broken"
