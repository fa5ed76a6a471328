"""Plotly figures for the weakspots page (pure functions: frames/arrays in, ``Figure`` out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def figure_counts_by_radius(counts: pd.DataFrame, *, radius: float | None = None,
                            suggested: float | None = None) -> go.Figure:
    """Pivotal-image count per radius d (columns ``radius``, ``count``), like the paper's Table 3."""
    fig = go.Figure(go.Scatter(x=counts["radius"], y=counts["count"], mode="lines+markers",
                               name="weakspots", hovertemplate="d=%{x:.3g}<br>%{y} weakspots<extra></extra>"))
    if suggested is not None:
        fig.add_vline(x=suggested, line_dash="dot", line_color="grey", annotation_text="suggested")
    if radius is not None:
        fig.add_vline(x=radius, line_color="crimson", annotation_text="d", annotation_position="top left")
    fig.update_layout(xaxis_title="radius d (L2)", yaxis_title="number of weakspots", height=300,
                      margin=dict(l=10, r=10, t=30, b=10), showlegend=False)
    return fig


def figure_pair_heatmap(matrix: np.ndarray, class_names) -> go.Figure:
    """(K, K) weakspot counts, rows = label A, columns = prediction B."""
    names = list(class_names)
    fig = go.Figure(go.Heatmap(
        z=matrix, x=names, y=names, colorscale="Reds", zmin=0,
        text=np.where(matrix > 0, matrix.astype(str), ""), texttemplate="%{text}",
        hovertemplate="labelled %{y}, predicted %{x}: %{z} weakspots<extra></extra>"))
    fig.update_layout(xaxis_title="predicted B", yaxis_title="labelled A", yaxis_autorange="reversed",
                      height=120 + 32 * len(names), margin=dict(l=10, r=10, t=30, b=10))
    return fig


def figure_embedding_map(xy: np.ndarray, labels: np.ndarray, class_names, pivotal_rows,
                         *, hover: list[str] | None = None) -> go.Figure:
    """2-D map of the embeddings coloured by label, pivotal images drawn as black-edged stars."""
    fig = go.Figure()
    names = list(class_names)
    for k, name in enumerate(names):
        sel = np.flatnonzero(labels == k)
        fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=name,
                                   marker=dict(size=4, opacity=0.45),
                                   text=None if hover is None else [hover[i] for i in sel],
                                   hoverinfo="text" if hover is not None else "x+y"))
    piv = np.asarray(list(pivotal_rows), dtype=np.int64)
    if len(piv):
        fig.add_trace(go.Scatter(x=xy[piv, 0], y=xy[piv, 1], mode="markers", name="pivotal",
                                 marker=dict(symbol="star", size=11, color="gold", line=dict(width=1, color="black")),
                                 text=None if hover is None else [hover[i] for i in piv],
                                 hoverinfo="text" if hover is not None else "x+y"))
    fig.update_layout(xaxis_title="PC 1", yaxis_title="PC 2", height=480, margin=dict(l=10, r=10, t=30, b=10))
    return fig
