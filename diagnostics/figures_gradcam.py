"""Figures for the Grad-CAM page: the class x object heat map and heatmap overlays.

Pure functions (DataFrame / arrays in, plotly Figure / uint8 image out); no streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

# a "jet"-like ramp: blue -> cyan -> yellow -> red
_RAMP = np.array([[0, 0, 130], [0, 90, 255], [0, 230, 230], [255, 230, 0], [255, 60, 0], [180, 0, 0]], float)


def association_heatmap(df: pd.DataFrame, *, value: str = "rate", class_names=None) -> go.Figure:
    """Class (rows) x object (columns) heat map of one association column.

    Args:
        df: :func:`diagnostics.associations.aggregate_associations` output.
        value: the column to colour by ("rate", "share_mean", "count", ...).
        class_names: row order (default: classes as they appear in ``df``).
    """
    rows = list(class_names) if class_names is not None else list(dict.fromkeys(df["class"]))
    table = df.pivot_table(index="class", columns="object", values=value, aggfunc="first")
    table = table.reindex(index=[c for c in rows if c in table.index])
    # context objects first, then objects named like classes in class order (a diagonal)
    objects = sorted(o for o in table.columns if o not in rows) + [c for c in rows if c in table.columns]
    table = table[objects]
    counts = df.pivot_table(index="class", columns="object", values="count", aggfunc="first")
    counts = counts.reindex(index=table.index, columns=table.columns)
    text = np.where(np.isnan(table.values), "", np.char.mod("%.2f", np.nan_to_num(table.values)))
    fig = go.Figure(go.Heatmap(
        z=table.values, x=list(table.columns), y=list(table.index), colorscale="Reds", zmin=0,
        text=text, texttemplate="%{text}", customdata=counts.values, hoverongaps=False,
        hovertemplate="class %{y} <- object %{x}<br>" + value + " %{z:.3f}<br>count %{customdata}<extra></extra>",
        colorbar={"title": value},
    ))
    fig.update_layout(xaxis_title="object", yaxis_title="predicted class", yaxis_autorange="reversed",
                      height=max(300, 28 * len(table.index) + 120), margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def colorize(cam: np.ndarray) -> np.ndarray:
    """(H, W) relevance -> (H, W, 3) uint8 colours, normalised by the map's maximum."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    top = cam.max()
    t = cam / top if top > 0 else cam
    pos = t * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> the mask's boundary pixels (inside pixels with an outside 4-neighbour)."""
    m = np.pad(np.asarray(mask, bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return np.asarray(mask, bool) & ~inner


def overlay(image: np.ndarray, cam: np.ndarray, mask: np.ndarray | None = None, *, alpha: float = 0.5,
            min_size: int = 160, outline_color=(0, 255, 0)) -> np.ndarray:
    """The image with the heatmap blended in and the object's outline drawn.

    Args:
        image: (H, W, 3) uint8, the model input before normalisation.
        cam: (H, W) relevance at the same size.
        mask: (H, W) bool object mask, or None.
        min_size: small images are enlarged (nearest) to at least this many pixels wide.

    Returns:
        (H', W', 3) uint8.
    """
    h, w = cam.shape
    scale = max(1, int(np.ceil(min_size / max(w, 1))))
    big = lambda a: np.kron(a, np.ones((scale, scale) + (1,) * (a.ndim - 2), dtype=a.dtype))  # noqa: E731
    if image.shape[:2] != (h, w):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    out = (big(image).astype(np.float64) * (1 - alpha) + big(colorize(cam)).astype(np.float64) * alpha)
    out = out.astype(np.uint8)
    if mask is not None:
        edge = outline(big(np.asarray(mask, bool)))
        thick = edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)
        out[thick & big(np.asarray(mask, bool))] = outline_color
    return out
