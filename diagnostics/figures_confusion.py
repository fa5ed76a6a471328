"""Plotly figure builders for the confusion, triplet and what-if pages (no streamlit).

Every function takes arrays or DataFrames and returns a ``plotly.graph_objects.Figure``.
Class-by-class matrices are drawn two ways: an annotated heat map of a few classes
(:func:`confusion_heatmap`, :func:`comparison_heatmap`), and, for any number of classes, an
overview without annotations whose colours are one byte per cell (:func:`matrix_overview`):
1,000 classes are a 500 x 500 image of 2 x 2 blocks (about 0.3 MB) rather than a million
annotated cells.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go


def _size(k: int) -> int:
    return int(min(900, max(380, 40 * k + 160)))


def confusion_heatmap(rates: np.ndarray, class_names: Sequence[str], *, counts: np.ndarray | None = None,
                      show: str = "rates", title: str = "") -> go.Figure:
    """Heatmap of the confusion matrix (rows: label, columns: prediction).

    Args:
        rates: (K, K) row-normalised confusion (or, multi-label, the directional type2 rates).
        counts: (K, K) counts for the hover text and for ``show="counts"`` (optional).
        show: colour by "rates" or "counts".
    """
    if show not in ("rates", "counts"):
        raise ValueError(f"show must be 'rates' or 'counts', got {show!r}")
    if show == "counts" and counts is None:
        raise ValueError("show='counts' needs counts")
    names = list(class_names)
    z = counts if show == "counts" else rates
    custom = np.dstack([rates, counts if counts is not None else np.full(rates.shape, np.nan)])
    hover = ("label %{y}<br>predicted %{x}<br>rate %{customdata[0]:.3f}"
             + ("<br>count %{customdata[1]:d}" if counts is not None else "") + "<extra></extra>")
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, customdata=custom, hovertemplate=hover,
                               colorscale="Blues", colorbar={"title": show}))
    if len(names) <= 20:  # numbers in the cells only while they stay readable; zeros left blank
        text = np.vectorize(lambda v: "" if v == 0 else (f"{v:.2f}" if show == "rates" else f"{int(v)}"))(z)
        fig.data[0].update(text=text, texttemplate="%{text}", textfont={"size": 10})
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="label", height=_size(len(names)),
                      yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


#: red (worse) - white - green (better), for improvement matrices
BETTER_WORSE = [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#1a9850"]]


#: the largest side, in cells, of an overview; larger matrices are reduced block by block (500: a
#: 720 px figure shows no more, and the browser draws 1,000 classes in ~0.7 s less than at full size)
OVERVIEW_SIDE = 500
_LEVELS = 255


def _block_extreme(m: np.ndarray, step: int) -> np.ndarray:
    """(ceil(K/step), ceil(K/step)) the value of largest magnitude in each step x step block."""
    k = m.shape[0]
    kb = math.ceil(k / step)
    padded = np.zeros((kb * step, kb * step))
    padded[:k, :k] = m
    blocks = padded.reshape(kb, step, kb, step).transpose(0, 2, 1, 3).reshape(kb, kb, step * step)
    pick = np.abs(blocks).argmax(axis=2)
    return np.take_along_axis(blocks, pick[..., None], axis=2)[..., 0]


def _nice_ticks(bound: float) -> list[float]:
    return [f * bound for f in (0.0, 0.01, 0.05, 0.25, 1.0)]


def matrix_overview(matrix: np.ndarray, class_names: Sequence[str], *, title: str = "", colorscale="Blues",
                    diverging: bool = False, hide_diagonal: bool = True, value_name: str = "rate",
                    x_title: str = "predicted", y_title: str = "label", max_side: int = OVERVIEW_SIDE) -> go.Figure:
    """A whole class-by-class matrix as one zoomable heat map without annotations.

    Colours are square-root scaled (``sqrt(|v| / max|v|)``) so that the small off-diagonal rates
    of a large confusion matrix stay visible, and quantised to one byte per cell (a 1,000 x 1,000
    figure is about 1.3 MB). Past ``max_side`` classes every ``step x step`` block is
    drawn as its value of largest magnitude, so no confusion disappears; its hover names the
    first and last class of the block. The hover gives the classes, not the value: the value
    is read from the colour bar, or from the detailed heat map of the classes picked.

    Args:
        matrix: (K, K) float, rows = label, columns = prediction.
        class_names: K names.
        colorscale: a plotly colour scale; for ``diverging`` one whose middle is neutral.
        diverging: signed values centred on 0 (e.g. an improvement matrix, + = better).
        hide_diagonal: draw the diagonal as 0 (it holds per-class accuracy and would set the
            colour range).
        value_name: the colour bar's title.

    Returns:
        A figure with one ``Heatmap`` trace of uint8 levels (0..255; 127.5 is 0 when diverging).
    """
    m = np.array(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(f"matrix must be (K, K) with K = {len(class_names)} names, got {m.shape}")
    m = np.nan_to_num(m)
    if hide_diagonal:
        np.fill_diagonal(m, 0.0)
    names = list(class_names)
    step = max(1, math.ceil(len(names) / max(int(max_side), 1)))
    if step > 1:
        m = _block_extreme(m, step)
        names = [f"{names[i]}–{names[min(i + step, len(names)) - 1]}" for i in range(0, len(names), step)]
    bound = float(np.abs(m).max()) or 1.0

    def level(v):
        v = np.asarray(v, dtype=np.float64)
        frac = np.sqrt(np.clip(np.abs(v) / bound, 0.0, 1.0))
        if diverging:
            return 127.5 + 127.5 * np.sign(v) * frac
        return _LEVELS * frac

    z = np.rint(level(m)).astype(np.uint8)
    ticks = _nice_ticks(bound)
    if diverging:
        ticks = sorted({-t for t in ticks} | set(ticks))
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=0, zmax=_LEVELS, colorscale=colorscale,
        colorbar={"title": f"{value_name}<br>(√ scale)", "tickvals": [float(level(t)) for t in ticks],
                  "ticktext": [f"{t:+.3g}" if diverging else f"{t:.3g}" for t in ticks]},
        hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<extra></extra>"))
    many = len(names) > 60
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=720,
                      xaxis={"showticklabels": not many, "constrain": "domain"},
                      yaxis={"autorange": "reversed", "showticklabels": not many, "scaleanchor": "x"},
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def comparison_heatmap(cmp, class_names: Sequence[str], *, rows: Sequence[int] | None = None,
                       title: str = "") -> go.Figure:
    """The change of a :class:`~diagnostics.compare.Comparison` coloured by better (green) / worse (red).

    The cell text is the signed change of the rate (after - before); the colour is its
    improvement (diagonal up = better, off-diagonal up = worse), centred on 0.

    Args:
        rows: the class indices to show (default all).
    """
    names = list(class_names)
    idx = list(range(len(names))) if rows is None else list(rows)
    sub = np.ix_(idx, idx)
    change, better = np.asarray(cmp.change)[sub], np.asarray(cmp.improvement)[sub]
    shown = [names[i] for i in idx]
    bound = float(np.nanmax(np.abs(better))) if better.size else 0.0
    verdict = np.where(better > 1e-12, "better", np.where(better < -1e-12, "worse", "unchanged"))
    fig = go.Figure(go.Heatmap(
        z=better, x=shown, y=shown, zmid=0.0, zmin=-(bound or 1e-9), zmax=bound or 1e-9, colorscale=BETTER_WORSE,
        customdata=np.dstack([change, verdict]), colorbar={"title": "better ↑<br>worse ↓"},
        hovertemplate="label %{y}<br>predicted %{x}<br>rate change %{customdata[0]:+.3f} (%{customdata[1]})"
                      "<extra></extra>"))
    if len(idx) <= 25:
        # blank where the two-decimal text would read "+0.00" or "-0.00" (the hover has 3 decimals)
        text = np.vectorize(lambda v: "" if round(float(v), 2) == 0 else f"{v:+.2f}")(change)
        fig.data[0].update(text=text, texttemplate="%{text}", textfont={"size": 10})
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="label", height=_size(len(idx)),
                      yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def triplet_errors_figure(triplets) -> go.Figure:
    """Grouped bars of error(positive, anchor) and error(negative, anchor) per triplet.

    Args:
        triplets: DataFrame from :func:`diagnostics.confusion.rank_biased_triplets`.
    """
    labels = [f"{p} / {n} | {c}" for p, n, c in zip(triplets["positive"], triplets["negative"], triplets["anchor"])]
    fig = go.Figure([
        go.Bar(name="error(positive, anchor)", x=labels, y=triplets["error_pos"]),
        go.Bar(name="error(negative, anchor)", x=labels, y=triplets["error_neg"]),
    ])
    fig.update_layout(barmode="group", xaxis_title="positive / negative | anchor", yaxis_title="error",
                      height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def wos_curve_figure(curve, *, current_rho: float | None = None, suggestion: dict | None = None,
                     metric: str = "accuracy") -> go.Figure:
    """The w-os trade-off: accuracy (or mAP) against target error over rho.

    Args:
        curve: DataFrame ``rho, accuracy, target_error`` (:func:`diagnostics.wos.wos_curve`).
        current_rho: the slider's rho, marked in red (nearest curve point).
        suggestion: :func:`diagnostics.wos.suggest_rho`'s dict; draws the repaired bounds and the
            suggested point.
    """
    fig = go.Figure(go.Scatter(x=curve["target_error"], y=curve[metric], mode="lines+markers", name="w-os",
                               customdata=curve["rho"],
                               hovertemplate="rho %{customdata:.4g}<br>target error %{x:.4f}<br>"
                                             + metric + " %{y:.4f}<extra></extra>"))
    if current_rho is not None and len(curve):
        row = curve.iloc[int(np.argmin(np.abs(np.log10(curve["rho"].to_numpy()) - np.log10(max(current_rho, 1e-12)))))]
        fig.add_trace(go.Scatter(x=[row["target_error"]], y=[row[metric]], mode="markers", name=f"rho {row['rho']:.4g}",
                                 marker={"size": 14, "color": "red", "symbol": "circle-open", "line": {"width": 3}}))
    if suggestion:
        fig.add_vline(x=suggestion["max_target_error"], line_dash="dot", annotation_text="error bound")
        fig.add_hline(y=suggestion["min_accuracy"], line_dash="dot", annotation_text=f"{metric} bound",
                      annotation_position="bottom left")
        if suggestion.get("rho") is not None:
            fig.add_trace(go.Scatter(x=[suggestion["target_error"]], y=[suggestion["accuracy"]], mode="markers",
                                     name=f"suggested rho {suggestion['rho']:.4g}",
                                     marker={"size": 14, "color": "green", "symbol": "star"}))
    fig.update_layout(xaxis_title="target error (confusion / bias)", yaxis_title=metric, height=380,
                      margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig
