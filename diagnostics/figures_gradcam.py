"""Figures for the Grad-CAM page: the class x object heat map and heatmap overlays.

Pure functions (DataFrame / arrays in, plotly Figure / uint8 image out); no streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import hex_to_rgb
from plotly.colors import sequential as _sequential

# a "jet"-like ramp: blue -> cyan -> yellow -> red
_RAMP = np.array([[0, 0, 130], [0, 90, 255], [0, 230, 230], [255, 230, 0], [255, 60, 0], [180, 0, 0]], float)
#: plotly's Inferno as rgb() strings: drawn in Streamlit (either chart theme), the named scale's
#: first stop "#000004" came out bright purple / pink, so near-zero relevance looked like a
#: medium value (seen on every mean map, e.g. the ResNet-56's corners)
INFERNO = [[k / (len(_sequential.Inferno) - 1), "rgb({}, {}, {})".format(*hex_to_rgb(c))]
           for k, c in enumerate(_sequential.Inferno)]
#: the longest side of a mean map drawn as a plotly heat map: Grad-CAM maps come from a layer of
#: 7-16 cells a side, so upsampling them to a 224-pixel input adds smoothness, not information,
#: and a 224-pixel model's pair chart (6 maps) was 4.1 MB of JSON (0.36 MB at 64)
DISPLAY_MAX = 64


def display_size(size: tuple[int, int], cap: int = DISPLAY_MAX) -> tuple[int, int]:
    """The (H, W) a map of an input of ``size`` is drawn at: ``size`` scaled so its longer side is at
    most ``cap`` (aspect kept; never larger than the input)."""
    h, w = int(size[0]), int(size[1])
    scale = min(1.0, cap / max(h, w, 1))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _pixel_axes(shape: tuple[int, int], input_size: tuple[int, int] | None) -> dict:
    """Heat map coordinates in input pixels (cell centres) when a map is drawn smaller than the input."""
    if input_size is None or tuple(input_size) == tuple(shape):
        return {}
    (h, w), (big_h, big_w) = shape, input_size
    return {"x": (np.arange(w) + 0.5) * big_w / w - 0.5, "y": (np.arange(h) + 0.5) * big_h / h - 0.5}


def _rounded(z: np.ndarray) -> np.ndarray:
    # 3 decimals of "x uniform" are more than a colour shows; full float64 digits tripled the JSON
    return np.round(np.asarray(z, dtype=np.float64), 3)


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
    # counts are whole numbers: "61", not "61.00"
    text = np.where(np.isnan(table.values), "", np.char.mod("%d" if value == "count" else "%.2f",
                                                            np.nan_to_num(table.values)))
    # a neutral scale: a high rate is not in itself bad (a class's own object sits on the diagonal),
    # and red is kept for "worse" elsewhere in the app
    fig = go.Figure(go.Heatmap(
        z=table.values, x=list(table.columns), y=list(table.index), colorscale="Blues", zmin=0,
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


def relative_to_uniform(cam: np.ndarray) -> np.ndarray:
    """(H, W) relevance -> the same map divided by its mean (1 = a uniform map); NaN stays NaN."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    mean = np.nanmean(cam) if np.isfinite(cam).any() else np.nan
    return cam / mean if mean > 0 else np.full(cam.shape, np.nan)


def _map_axes(fig: go.Figure, n: int) -> None:
    # image orientation (row 0 on top), square pixels, no ticks
    for k in range(1, n + 1):
        suffix = "" if k == 1 else str(k)
        fig.layout[f"yaxis{suffix}"].update(autorange="reversed", scaleanchor=f"x{suffix}", showticklabels=False)
        fig.layout[f"xaxis{suffix}"].update(showticklabels=False, constrain="domain")


def pair_mean_figure(means: np.ndarray, counts, *, names: tuple[str, str],
                     input_size: tuple[int, int] | None = None) -> go.Figure:
    """Mean heat maps of a pair's correct samples and mistakes, side by side, with differences.

    Row 1: mean of ``A -> A``, mean of ``A -> B``, and ``(A -> B) - (A -> A)``; row 2 the same
    for B. Maps are shown relative to a uniform map (1 = uniform, 3 = three times the average
    relevance), on one colour scale; differences are red where the mistakes look more.

    Args:
        means: (4, H, W) float mean maps in the order A->A, A->B, B->B, B->A (NaN = no sample).
        counts: 4 sample counts, same order.
        names: (A, B) class names.
        input_size: the model input's (H, W) when the maps are drawn smaller (hover and axes then
            give input pixels).
    """
    from plotly.subplots import make_subplots

    a, b = names
    axes = _pixel_axes(np.shape(means)[1:], input_size)
    groups = [(a, a), (a, b), (b, b), (b, a)]
    rel = [relative_to_uniform(m) for m in np.asarray(means, dtype=np.float64)]
    top = max([np.nanmax(r) for r in rel if np.isfinite(r).any()] or [1.0])
    diffs = [rel[1] - rel[0], rel[3] - rel[2]]
    span = max([np.nanmax(np.abs(d)) for d in diffs if np.isfinite(d).any()] or [1.0])
    titles = []
    for row in range(2):
        (t, _), (_, p) = groups[2 * row], groups[2 * row + 1]
        titles += [f"{t} → {t} (correct, n={counts[2 * row]})", f"{t} → {p} (mistakes, n={counts[2 * row + 1]})",
                   "difference: mistakes − correct"]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.1)
    hover = "x %{x:.0f}, y %{y:.0f}<br>%{z:.2f} × uniform<extra></extra>"
    for row in range(2):
        for col, z in enumerate([rel[2 * row], rel[2 * row + 1]]):
            fig.add_trace(go.Heatmap(z=_rounded(z), **axes, zmin=0, zmax=top, colorscale=INFERNO, hovertemplate=hover,
                                     showscale=row == 0 and col == 0,
                                     colorbar={"title": "× uniform", "x": 1.0, "len": 0.42, "y": 0.78}),
                          row=row + 1, col=col + 1)
        fig.add_trace(go.Heatmap(z=_rounded(diffs[row]), **axes, zmin=-span, zmax=span, colorscale="RdBu_r", zmid=0,
                                 hovertemplate="x %{x:.0f}, y %{y:.0f}<br>%{z:+.2f}<extra></extra>",
                                 showscale=row == 0,
                                 colorbar={"title": "mistakes<br>− correct", "x": 1.0, "len": 0.42, "y": 0.22}),
                      row=row + 1, col=3)
    _map_axes(fig, 6)
    fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def class_mean_figure(means: np.ndarray, counts, class_names, *, columns: int = 5,
                      input_size: tuple[int, int] | None = None) -> go.Figure:
    """Small multiples: the mean heat map of every predicted class (relative to uniform, one scale).

    Args:
        means: (K, H, W) mean maps (NaN = no sample).
        counts: K sample counts.
        class_names: K names.
        input_size: as in :func:`pair_mean_figure`.
    """
    from plotly.subplots import make_subplots

    k = len(class_names)
    axes = _pixel_axes(np.shape(means)[1:], input_size)
    rows = max(1, -(-k // columns))
    rel = [relative_to_uniform(m) for m in np.asarray(means, dtype=np.float64)]
    top = max([np.nanmax(r) for r in rel if np.isfinite(r).any()] or [1.0])
    fig = make_subplots(rows=rows, cols=columns, horizontal_spacing=0.02, vertical_spacing=0.08,
                        subplot_titles=[f"{c} (n={n})" for c, n in zip(class_names, counts)])
    for j, z in enumerate(rel):
        fig.add_trace(go.Heatmap(z=_rounded(z), **axes, zmin=0, zmax=top, colorscale=INFERNO, showscale=j == 0,
                                 colorbar={"title": "× uniform"}, name=class_names[j],
                                 hovertemplate=f"{class_names[j]}<br>%{{z:.2f}} × uniform<extra></extra>"),
                      row=j // columns + 1, col=j % columns + 1)
    _map_axes(fig, rows * columns)
    fig.update_layout(height=60 + 170 * rows, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def looks_figure(df: pd.DataFrame, *, centre_area: float, border_area: float) -> go.Figure:
    """Per predicted class: share of relevance in the centre and on the border, vs a uniform map.

    Args:
        df: :func:`diagnostics.cam_summary.where_it_looks` output.
        centre_area, border_area: the shares a uniform heatmap would give (dashed lines).
    """
    fig = go.Figure()
    for col, name, colour in (("centre_share", "centre", "#1f77b4"), ("border_share", "border", "#d62728")):
        fig.add_trace(go.Bar(x=df["class"], y=df[col], name=name, marker_color=colour,
                             hovertemplate="%{x}: %{y:.0%} of the relevance on the " + name + "<extra></extra>"))
    for value, name, colour in ((centre_area, "centre", "#1f77b4"), (border_area, "border", "#d62728")):
        fig.add_hline(y=value, line_dash="dash", line_color=colour,
                      annotation_text=f"uniform map: {name} {value:.0%}", annotation_position="top right")
    fig.update_layout(barmode="group", yaxis={"title": "share of positive relevance", "tickformat": ".0%",
                                              "range": [0, 1]},
                      xaxis_title="predicted class", height=340, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": 1.12})
    return fig
