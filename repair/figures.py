"""Plotly figures of the repair and sweep pages (pure functions; no streamlit).

The runs table and the trade-off chart read store rows only: they live in
:mod:`diagnostics.figures_runs` (the findings report uses them too).

* :func:`curves_figure`: training loss per step and accuracy / target error per evaluation of one run.
* :func:`sweep_figure`: the same trade-off for every run of a sweep, seeds as small points and
  the selected settings ringed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diagnostics.figures_runs import repaired_region


def _flat_range(values) -> list[float] | None:
    """A +-0.01 axis around a curve that never moves (plotly would span +-0.5: accuracy up to 1.5)."""
    values = [v for v in values if v is not None]
    if values and max(values) == min(values):
        return [values[0] - 0.01, values[0] + 0.01]
    return None


def curves_figure(metrics: list[dict], *, title: str = "") -> go.Figure:
    """A run's live curves against epoch: the training loss of every step (top, when the run
    has step losses; a post-hoc run has none) and the evaluations' accuracy and target error
    (bottom; epoch 0 = the parent before the run), each on its own axis with 3 decimals."""
    steps = [m for m in metrics if m.get("accuracy") is None and m.get("loss") is not None]
    evals = [m for m in metrics if m.get("accuracy") is not None]
    if steps:
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.4, 0.6],
                            specs=[[{}], [{"secondary_y": True}]])
        fig.add_trace(go.Scatter(x=[m["epoch"] for m in steps], y=[m["loss"] for m in steps], name="training loss",
                                 mode="lines", line={"width": 1, "color": "#7f7f7f"}), row=1, col=1)
        fig.update_yaxes(title_text="loss", row=1, col=1)
        row = 2
    else:  # no empty loss panel
        fig = make_subplots(rows=1, cols=1, specs=[[{"secondary_y": True}]])
        row = 1
    fig.add_trace(go.Scatter(x=[m["epoch"] for m in evals], y=[m["accuracy"] for m in evals], name="accuracy",
                             mode="lines+markers", line={"color": "#1f77b4"}), row=row, col=1, secondary_y=False)
    fig.add_trace(go.Scatter(x=[m["epoch"] for m in evals], y=[m["target_error"] for m in evals],
                             name="target error", mode="lines+markers", line={"dash": "dash", "color": "#d62728"}),
                  row=row, col=1, secondary_y=True)
    fig.update_xaxes(title_text="epoch", row=row, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".3f", row=row, col=1, secondary_y=False,
                     range=_flat_range([m["accuracy"] for m in evals]))
    fig.update_yaxes(title_text="target error", tickformat=".3f", row=row, col=1, secondary_y=True,
                     range=_flat_range([m["target_error"] for m in evals]))
    fig.update_layout(title=title, height=420 if steps else 300, margin={"t": 40, "b": 10},
                      legend={"orientation": "h"})
    return fig


def sweep_figure(grid: pd.DataFrame, *, original: dict | None, baseline: str, lambda1: float = 0.25,
                 lambda2: float = 0.01, title: str = "") -> go.Figure:
    """Accuracy vs. target error of every finished run of a sweep (WR paper 4.4, Appendix A).

    One colour per method (in the grid's order): the seed-0 runs of the grid as markers (hover:
    rho, seed, run), the other seeds as small points; each selected setting's mean over its
    seeds ringed; the original model a black star, the baseline's runs diamonds. The shaded
    region holds the *repaired* models (WR 2.2.3): target error at most ``(1 - lambda1)`` x
    the original's and accuracy at least ``(1 - lambda2)`` x the original's.

    Args:
        grid: :attr:`repair.sweep.SweepState.grid` (columns ``method``, ``rho``, ``seed``,
            ``accuracy``, ``target_error``, ``status``, ``run_id``, ``selected``); the original
            model's row (if any) and unfinished runs are skipped.
        original: ``{"accuracy", "target_error"}`` of the original model, or None.
        baseline: the baseline method's name (drawn as diamonds).

    Returns:
        The figure; its traces are named by method, "<method> seeds", "selected" and "orig".
    """
    import plotly.colors

    fig = go.Figure()
    done = grid[(grid["status"] == "done") & grid["accuracy"].notna() & grid["run_id"].notna()]
    if original:
        te0, acc0 = original["target_error"], original["accuracy"]
        repaired_region(fig, te0, acc0, top=max([acc0, *done["accuracy"].tolist()]) + 0.005, lambda1=lambda1,
                        lambda2=lambda2)
    palette = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.Dark24
    methods = list(dict.fromkeys(grid["method"][grid["run_id"].notna()]))
    colour = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    hover = ("%{customdata[3]}: run %{customdata[0]}, rho %{customdata[1]}, seed %{customdata[2]}<br>"
             "target error %{x:.4f}<br>accuracy %{y:.4f}<extra></extra>")

    def data(rows):
        return np.stack([rows["run_id"].astype(int), rows["rho"].map(lambda r: "-" if pd.isna(r) else f"{r:g}"),
                         rows["seed"], rows["method"]], axis=1)

    for method in methods:
        rows = done[done["method"] == method]
        symbol = "diamond" if method == baseline else "circle"
        first, rest = rows[rows["seed"] == 0], rows[rows["seed"] != 0]
        fig.add_trace(go.Scatter(x=first["target_error"], y=first["accuracy"], mode="markers", name=method,
                                 legendgroup=method, customdata=data(first), hovertemplate=hover,
                                 marker={"symbol": symbol, "size": 10, "color": colour[method]}))
        if len(rest):
            fig.add_trace(go.Scatter(x=rest["target_error"], y=rest["accuracy"], mode="markers",
                                     name=f"{method} seeds", legendgroup=method, showlegend=False,
                                     customdata=data(rest), hovertemplate=hover,
                                     marker={"symbol": symbol, "size": 5, "color": colour[method], "opacity": 0.7}))
    chosen = done[done["selected"].astype(bool)]
    if len(chosen):
        keys = chosen.assign(_rho=chosen["rho"].fillna(-1.0))
        means = keys.groupby(["method", "_rho"], sort=False)[["target_error", "accuracy"]].mean().reset_index()
        fig.add_trace(go.Scatter(
            x=means["target_error"], y=means["accuracy"], mode="markers", name="selected (mean over seeds)",
            text=[m if r < 0 else f"{m}({r:g})" for m, r in zip(means["method"], means["_rho"])],
            hovertemplate="%{text}: mean target error %{x:.4f}, accuracy %{y:.4f}<extra></extra>",
            marker={"symbol": "circle-open", "size": 20, "line": {"width": 2},
                    "color": [colour[m] for m in means["method"]]}))
    if original:
        fig.add_trace(go.Scatter(x=[original["target_error"]], y=[original["accuracy"]], mode="markers+text",
                                 name="orig", text=["orig"], textposition="top center",
                                 marker={"symbol": "star", "size": 16, "color": "black"}))
    fig.update_layout(title=title, xaxis_title="target error (lower is better)", yaxis_title="accuracy", height=460,
                      margin={"t": 40 if title else 20, "b": 10}, legend={"orientation": "v"})
    return fig
