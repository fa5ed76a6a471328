"""Plotly figures for the weakspots page (pure functions: frames/arrays in, ``Figure`` out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from diagnostics.figures_confusion import matrix_overview

#: class colours readable on a white background (no pale yellow or light grey)
PALETTE = qualitative.Dark24
#: above this many classes the pair heat map is drawn as an overview without annotations
ANNOTATED_LIMIT = 100


def figure_counts_by_radius(counts: pd.DataFrame, *, radius: float | None = None,
                            suggested: float | None = None) -> go.Figure:
    """Pivotal-image count per radius d (columns ``radius``, ``count``), like the paper's Table 3."""
    fig = go.Figure(go.Scatter(x=counts["radius"], y=counts["count"], mode="lines+markers",
                               name="weakspots", hovertemplate="d=%{x:.3g}<br>%{y} weakspots<extra></extra>"))
    if suggested is not None:
        fig.add_vline(x=suggested, line_dash="dot", line_color="grey", annotation_text="suggested",
                      annotation_position="bottom right")  # apart from "d" when both are close
    if radius is not None:
        fig.add_vline(x=radius, line_color="crimson", annotation_text="d", annotation_position="top left")
    fig.update_layout(xaxis_title="radius d (L2)", yaxis_title="number of weakspots", height=300,
                      margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    return fig


def figure_pair_heatmap(matrix: np.ndarray, class_names, *, classes=None) -> go.Figure:
    """(K, K) weakspot counts, rows = label A, columns = prediction B.

    Args:
        matrix: (K, K) int counts (:func:`diagnostics.weakspots.weakspot_matrix`).
        classes: the class indices to draw (default all). Past :data:`ANNOTATED_LIMIT` of them
            the figure is :func:`diagnostics.figures_confusion.matrix_overview` (no cell text);
            counts are written in the cells up to 25 classes.
    """
    names = list(class_names)
    idx = list(range(len(names))) if classes is None else [int(c) for c in classes]
    sub = np.asarray(matrix)[np.ix_(idx, idx)]
    shown = [names[i] for i in idx]
    if len(idx) > ANNOTATED_LIMIT:
        return matrix_overview(sub, shown, colorscale="Reds", hide_diagonal=False, value_name="weakspots",
                               x_title="predicted B", y_title="labelled A")
    heat = go.Heatmap(z=sub, x=shown, y=shown, colorscale="Reds", zmin=0,
                      hovertemplate="labelled %{y}, predicted %{x}: %{z} weakspots<extra></extra>")
    if len(idx) <= 25:  # past that the numbers are too small to read and only cost the browser
        heat.update(text=np.where(sub > 0, sub.astype(str), ""), texttemplate="%{text}")
    fig = go.Figure(heat)
    fig.update_layout(xaxis_title="predicted B", yaxis_title="labelled A", yaxis_autorange="reversed",
                      height=int(min(900, 120 + 32 * len(idx))), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def figure_embedding_map(xy: np.ndarray, labels: np.ndarray, class_names, pivotal_rows,
                         *, hover: list[str] | None = None, legend_limit: int = len(PALETTE)) -> go.Figure:
    """2-D map of the embeddings coloured by label, pivotal images drawn as black-edged stars.

    Up to ``legend_limit`` classes each class is one trace with a legend entry; beyond, one
    trace holds every point (colours repeat every 24 classes, the hover names the class), so a
    thousand classes do not make a thousand traces and a legend taller than the page.
    """
    fig = go.Figure()
    names = list(class_names)
    labels = np.asarray(labels, dtype=np.int64)

    def texts(sel):
        return None if hover is None else [hover[i] for i in sel]

    if len(names) <= legend_limit:
        for k, name in enumerate(names):
            sel = np.flatnonzero(labels == k)
            fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=name,
                                       marker=dict(size=4, opacity=0.6, color=PALETTE[k % len(PALETTE)]),
                                       text=texts(sel), hoverinfo="text" if hover is not None else "x+y"))
    else:
        colours = np.asarray(PALETTE, dtype=object)[labels % len(PALETTE)]
        text = texts(np.arange(len(labels))) or [names[c] for c in labels]
        fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="samples", showlegend=False,
                                   marker=dict(size=4, opacity=0.6, color=colours), text=text, hoverinfo="text"))
    piv = np.asarray(list(pivotal_rows), dtype=np.int64)
    if len(piv):
        fig.add_trace(go.Scatter(x=xy[piv, 0], y=xy[piv, 1], mode="markers", name="pivotal",
                                 marker=dict(symbol="star", size=11, color="gold", line=dict(width=1, color="black")),
                                 text=texts(piv), hoverinfo="text" if hover is not None else "x+y"))
    fig.update_layout(xaxis_title="PC 1", yaxis_title="PC 2", height=480, margin=dict(l=10, r=10, t=30, b=10))
    return fig
