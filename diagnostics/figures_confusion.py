"""Plotly figure builders for the confusion, triplet and what-if pages (no streamlit).

Every function takes arrays or DataFrames and returns a ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

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
    if len(names) <= 20:  # numbers in the cells only while they stay readable
        text = np.vectorize(lambda v: f"{v:.2f}" if show == "rates" else f"{int(v)}")(z)
        fig.data[0].update(text=text, texttemplate="%{text}", textfont={"size": 10})
    fig.update_layout(title=title, xaxis_title="predicted", yaxis_title="label", height=_size(len(names)),
                      yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


#: red (worse) - white - green (better), for improvement matrices
BETTER_WORSE = [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#1a9850"]]


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
        text = np.vectorize(lambda v: "" if abs(v) < 5e-4 else f"{v:+.2f}")(change)
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
