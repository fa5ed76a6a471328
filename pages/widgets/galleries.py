"""Gallery search and class filters, and the sample view's "find a sample" box.

:func:`gallery_search` draws a search box (a split index such as ``12`` or ``#12``, or part of an
image path) and label / predicted-class filters over one split's cached outputs, and returns the
matching rows (:func:`diagnostics.samples.filter_samples`). A page adopts it in three lines::

    found, active = galleries.gallery_search(ws, out, key="<page>_search")
    rows = found if active else <the page's own selection>
    ui.thumbnails(ws, out.split, out.indices[rows], captions)
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from diagnostics.samples import filter_samples
from pages import ui

SHOWN = 24  # matches shown by the "find a sample" box


def gallery_search(ws, out, *, key: str, predictions: bool = True) -> tuple[np.ndarray, bool]:
    """Search and class filters over one split's outputs.

    Args:
        out: the split's ``InferenceOutputs``.
        key: widget-key prefix (unique per page).
        predictions: offer the predicted-class filter.

    Returns:
        ``(rows, active)``: (M,) int64 row positions into ``out`` that match (ascending), and
        whether any search or filter is set (all rows match otherwise).
    """
    names = list(out.class_names)
    c1, c2, c3 = st.columns([2, 2, 2]) if predictions else (*st.columns([2, 2]), None)
    query = c1.text_input("Search", key=f"{key}_query", placeholder="index (12 or #12) or part of the path",
                          help="A whole number finds the image at that position of the split; other text finds "
                               "images whose path contains it (any case)")
    label_pick = c2.multiselect("Label", names, key=f"{key}_labels", placeholder="any class")
    pred_pick = c3.multiselect("Predicted", names, key=f"{key}_preds", placeholder="any class") if c3 else []
    active = bool(query.strip() or label_pick or pred_pick)
    if not active:
        return np.arange(out.n, dtype=np.int64), False
    ids = ws.split(out.split).ids
    rows = filter_samples(out.indices, [ids[i] for i in out.indices], out.labels, out.preds, query=query,
                          label_classes=[names.index(n) for n in label_pick],
                          pred_classes=[names.index(n) for n in pred_pick])
    return rows, True


def _caption(out, row: int) -> str:
    names = out.class_names
    if out.multi_label:
        return ", ".join(names[k] for k in np.flatnonzero(out.labels[row] > 0.5)) or "(no label)"
    mark = "" if out.labels[row] == out.preds[row] else " ❌"
    return f"{names[int(out.labels[row])]} → {names[int(out.preds[row])]}{mark}"


def find_sample(ws, version: str) -> None:
    """The "find a sample" box: pick a split, search and filter, open a match in the sample view."""
    with st.expander("Find a sample", icon=":material/search:"):
        split = st.radio("Split", ["eval", "train"], horizontal=True, key="sample_find_split")
        out = ui.outputs(ws, split, version)
        rows, active = gallery_search(ws, out, key="sample_find")
        if not active:
            st.caption("Type an index or part of a path, or pick label / predicted classes.")
            return
        if not len(rows):
            st.info("No image matches.")
            return
        st.caption(f"{len(rows):,} matching images" + (f"; the first {SHOWN} shown" if len(rows) > SHOWN else "")
                   + ". Each opens with its link.")
        shown = rows[:SHOWN]
        ui.thumbnails(ws, split, out.indices[shown], [_caption(out, int(r)) for r in shown], columns=8, width=72)


def per_class_rows(out, rows: np.ndarray, per_class: int) -> np.ndarray:
    """At most ``per_class`` of ``rows`` for each label class (multi-label: first label), in class order."""
    labels = out.labels if not out.multi_label else out.labels.argmax(1)
    return np.concatenate([rows[labels[rows] == k][:per_class] for k in range(out.num_classes)] or
                          [np.zeros(0, np.int64)]).astype(np.int64)
