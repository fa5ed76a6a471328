"""Plotly figures and tables of the repair page (pure functions; no streamlit).

* :func:`runs_frame`: one row per run (method, rho, status, baseline and final metrics).
* :func:`curves_figure`: accuracy and target error per evaluation of one run.
* :func:`tradeoff_figure`: accuracy vs. target error of every finished run on the same
  targets, orig and orig-ft marked, the "repaired" region (DESIGN.md 1) shaded.
* :func:`compare_outputs` / :func:`confusion_diff_figure`: the before/after view
  (WR paper Figure 7): fixed (wrong -> right) and broken (right -> wrong) eval samples and
  the change of the row-normalised confusion matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diagnostics.confusion import confusion_counts, confusion_rates

RUN_COLUMNS = ["id", "method", "rho", "targets", "status", "progress", "message", "baseline_accuracy",
               "baseline_target_error", "accuracy", "target_error", "model_version", "minutes", "error"]


def targets_label(targets: dict | None) -> str:
    if not targets:
        return ""
    return "; ".join(",".join(t) for t in targets.get("targets", []))


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """Columns :data:`RUN_COLUMNS`; ``targets`` as "A,B; C,D" text; newest run first."""
    rows = []
    for r in runs:
        base, fin = r.get("baseline") or {}, r.get("final") or {}
        minutes = None
        if r.get("started_at") is not None and r.get("finished_at") is not None:
            minutes = (r["finished_at"] - r["started_at"]) / 60
        rows.append({"id": r["id"], "method": r["method"], "rho": r["rho"], "targets": targets_label(r.get("targets")),
                     "status": r["status"], "progress": float(r.get("progress") or 0.0),
                     "message": r.get("message") or "", "baseline_accuracy": base.get("accuracy"),
                     "baseline_target_error": base.get("target_error"), "accuracy": fin.get("accuracy"),
                     "target_error": fin.get("target_error"), "model_version": r.get("model_version"),
                     "minutes": minutes, "error": (r.get("error") or "").split("\n")[0]})
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values("id", ascending=False, ignore_index=True)


def curves_figure(metrics: list[dict], *, title: str = "") -> go.Figure:
    """Accuracy (left axis) and target error (right axis) against epoch (0 = before)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    epochs = [m["epoch"] for m in metrics]
    fig.add_trace(go.Scatter(x=epochs, y=[m["accuracy"] for m in metrics], name="accuracy",
                             mode="lines+markers"), secondary_y=False)
    fig.add_trace(go.Scatter(x=epochs, y=[m["target_error"] for m in metrics], name="target error",
                             mode="lines+markers", line={"dash": "dash"}), secondary_y=True)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="accuracy", secondary_y=False)
    fig.update_yaxes(title_text="target error", secondary_y=True)
    fig.update_layout(title=title, height=320, margin={"t": 40, "b": 10}, legend={"orientation": "h"})
    return fig


def tradeoff_figure(frame: pd.DataFrame, *, baseline: dict | None, lambda1: float = 0.25,
                    lambda2: float = 0.01) -> go.Figure:
    """Final accuracy vs. target error of the finished runs in ``frame`` (:func:`runs_frame`).

    The shaded region holds the *repaired* models: target error at most
    ``(1 - lambda1)`` x orig's and accuracy at least ``(1 - lambda2)`` x orig's.
    """
    fig = go.Figure()
    done = frame[(frame["status"] == "done") & frame["accuracy"].notna()]
    if baseline:
        te0, acc0 = baseline["target_error"], baseline["accuracy"]
        top = max([acc0, *done["accuracy"].tolist()]) + 0.01
        fig.add_shape(type="rect", x0=0, x1=(1 - lambda1) * te0, y0=(1 - lambda2) * acc0, y1=top,
                      fillcolor="rgba(44,160,44,0.15)", line={"width": 0}, layer="below")
        fig.add_annotation(x=0, y=top, text="repaired", showarrow=False, xanchor="left", yanchor="top")
        fig.add_trace(go.Scatter(x=[te0], y=[acc0], mode="markers+text", name="orig", text=["orig"],
                                 textposition="top center", marker={"symbol": "star", "size": 16, "color": "black"}))
    for method, group in done.groupby("method", sort=True):
        symbol = "diamond" if method == "orig-ft" else "circle"
        fig.add_trace(go.Scatter(
            x=group["target_error"], y=group["accuracy"], mode="markers", name=method,
            marker={"symbol": symbol, "size": 11 if method == "orig-ft" else 9},
            customdata=np.stack([group["id"], group["rho"].fillna(np.nan)], axis=1),
            hovertemplate=f"{method} run %{{customdata[0]}}, rho %{{customdata[1]}}<br>"
                          "target error %{x:.4f}<br>accuracy %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="target error (lower is better)", yaxis_title="accuracy", height=380,
                      margin={"t": 20, "b": 10})
    return fig


def compare_outputs(before, after) -> dict:
    """Fixed and broken samples between two eval outputs of the same split.

    Returns:
        ``{"fixed": (M,) int64 split indices wrong before and right after, "broken": the
        reverse, "before_rates", "after_rates": (K, K) row-normalised confusion (single-label;
        for multi-label the per-class correct rates are not compared and these are None)}``.
    """
    common, ib, ia = np.intersect1d(before.indices, after.indices, return_indices=True)
    cb, ca = before.correct[ib], after.correct[ia]
    out = {"fixed": common[~cb & ca], "broken": common[cb & ~ca], "before_rates": None, "after_rates": None}
    if not before.multi_label:
        K = before.num_classes
        out["before_rates"] = confusion_rates(confusion_counts(before.labels[ib], before.preds[ib], K))
        out["after_rates"] = confusion_rates(confusion_counts(after.labels[ia], after.preds[ia], K))
    return out


def confusion_diff_figure(before_rates: np.ndarray, after_rates: np.ndarray, class_names) -> go.Figure:
    """Heat map of after - before, row-normalised (blue: fewer predictions of that cell)."""
    diff = np.asarray(after_rates) - np.asarray(before_rates)
    limit = float(np.abs(diff).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=diff, x=list(class_names), y=list(class_names), zmid=0, zmin=-limit, zmax=limit,
                               colorscale="RdBu_r", texttemplate="%{z:+.2f}",
                               hovertemplate="label %{y}, predicted %{x}: %{z:+.3f}<extra></extra>"))
    fig.update_layout(xaxis_title="predicted", yaxis_title="label", yaxis_autorange="reversed", height=420,
                      margin={"t": 20, "b": 10})
    return fig
