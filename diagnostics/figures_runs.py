"""Figures and tables of repair runs as the store holds them (pure functions; no streamlit).

* :func:`runs_frame`: one row per run (method, rho, status, baseline and final metrics).
* :func:`tradeoff_figure`: accuracy vs. target error of every finished run on the same targets,
  orig marked, the "repaired" region (WR 2.2.3) shaded.

They read store rows only, so the findings report (diagnostics) and the repair pages share them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

RUN_COLUMNS = ["id", "method", "rho", "targets", "status", "progress", "message", "baseline_accuracy",
               "baseline_target_error", "accuracy", "target_error", "model_version", "minutes", "error"]


def repaired_region(fig: go.Figure, te0: float, acc0: float, *, top: float, lambda1: float, lambda2: float) -> None:
    """Shade the *repaired* region of an accuracy vs. target error plot (WR paper, section 2.2.3):
    target error at most ``(1 - lambda1) * te0`` and accuracy at least ``(1 - lambda2) * acc0``
    (up to ``top``)."""
    fig.add_shape(type="rect", x0=0, x1=(1 - lambda1) * te0, y0=(1 - lambda2) * acc0, y1=top,
                  fillcolor="rgba(44,160,44,0.15)", line={"width": 0}, layer="below")
    fig.add_annotation(x=0, y=top, text="repaired", showarrow=False, xanchor="left", yanchor="top")


def targets_label(targets: dict | None) -> str:
    if not targets:
        return ""
    return "; ".join(",".join(t) for t in targets.get("targets", []))


def _row_message(run: dict) -> str:
    """A failed run's row says why it failed, not the last progress line it wrote."""
    error = (run.get("error") or "").split("\n")[0]
    if run.get("status") == "failed" and error:
        return f"failed: {error}"
    return run.get("message") or ""


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
                     "message": _row_message(r), "baseline_accuracy": base.get("accuracy"),
                     "baseline_target_error": base.get("target_error"), "accuracy": fin.get("accuracy"),
                     "target_error": fin.get("target_error"), "model_version": r.get("model_version"),
                     "minutes": minutes, "error": (r.get("error") or "").split("\n")[0]})
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return frame.sort_values("id", ascending=False, ignore_index=True)


def tradeoff_figure(frame: pd.DataFrame, *, baseline: dict | None, lambda1: float = 0.25,
                    lambda2: float = 0.01, reference: str | None = None) -> go.Figure:
    """Final accuracy vs. target error of the finished runs in ``frame`` (:func:`runs_frame`).

    The shaded region holds the *repaired* models: target error at most
    ``(1 - lambda1)`` x orig's and accuracy at least ``(1 - lambda2)`` x orig's. Runs of the
    ``reference`` method (plain fine-tuning) are drawn as diamonds.
    """
    fig = go.Figure()
    done = frame[(frame["status"] == "done") & frame["accuracy"].notna()]
    if baseline:
        te0, acc0 = baseline["target_error"], baseline["accuracy"]
        repaired_region(fig, te0, acc0, top=max([acc0, *done["accuracy"].tolist()]) + 0.01, lambda1=lambda1,
                        lambda2=lambda2)
        fig.add_trace(go.Scatter(x=[te0], y=[acc0], mode="markers+text", name="orig", text=["orig"],
                                 textposition="top center", marker={"symbol": "star", "size": 16, "color": "black"}))
    for method, group in done.groupby("method", sort=True):
        ref = method == reference
        fig.add_trace(go.Scatter(
            x=group["target_error"], y=group["accuracy"], mode="markers", name=method,
            marker={"symbol": "diamond" if ref else "circle", "size": 11 if ref else 9},
            customdata=np.stack([group["id"], group["rho"].fillna(np.nan)], axis=1),
            hovertemplate=f"{method} run %{{customdata[0]}}, rho %{{customdata[1]}}<br>"
                          "target error %{x:.4f}<br>accuracy %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="target error (lower is better)", yaxis_title="accuracy", height=380,
                      margin={"t": 20, "b": 10})
    return fig

