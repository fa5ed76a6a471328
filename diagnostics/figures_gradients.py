"""Plotly figures of the gradient-score page (pure functions: DataFrame in, Figure out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

# what each histogram shows: (frame column, axis title). D, S and p_s span hundreds of
# orders of magnitude (vMF concentration in high dimension), so they are drawn as log10.
SCORES = {
    "M": ("M", "magnitude score M"),
    "D": ("log_D", "log10 direction score D"),
    "S": ("log_S", "log10 aggregate score S"),
    "p_s": ("log_p_s", "log10 sampling probability p_s"),
    "comp_loss": ("comp_loss", "compensated loss CE/H"),
    "grad_norm": ("grad_norm", "gradient norm ||g||"),
}
COLOR_BY = ("correct", "minority", "flipped", "noisy")


def sample_groups(frame: pd.DataFrame, by: str, planted: dict | None = None) -> pd.Series:
    """A label per row: correct/wrong prediction, minority/majority, flipped/clean, noisy/clean.

    ``minority`` and ``flipped`` need the demo's ground truth (``planted``).
    """
    if by not in COLOR_BY:
        raise ValueError(f"colour by must be one of {', '.join(COLOR_BY)}, got {by!r}")
    idx = frame["index"].to_numpy()
    if by == "correct":
        flag, yes, no = frame["label"].to_numpy() == frame["pred"].to_numpy(), "correct", "wrong"
    elif by == "noisy":
        flag, yes, no = frame["noisy"].to_numpy().astype(bool), "flagged noisy", "not flagged"
    else:
        key = "minority" if by == "minority" else "flipped_labels"
        if not planted or not planted.get(key):
            raise ValueError(f"no ground truth for {by!r} in this workspace")
        flag = np.isin(idx, planted[key])
        yes, no = ("minority", "majority") if by == "minority" else ("flipped label", "clean label")
    return pd.Series(np.where(flag, yes, no), index=frame.index, name=by)


def score_histogram(frame: pd.DataFrame, score: str, *, color_by: str = "correct", planted: dict | None = None,
                    delta: float | None = None, bins: int = 60) -> go.Figure:
    """Overlaid histogram of one score, coloured by a grouping (see :func:`sample_groups`).

    Args:
        score: one of ``SCORES`` (M, D, S, p_s, comp_loss, grad_norm).
        delta: drawn as a vertical line on the compensated-loss histogram.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    column, title = SCORES[score]
    values = frame[column].to_numpy(dtype=float)
    if column.startswith("log_"):
        values = values / np.log(10.0)
    if score == "comp_loss":  # heavy right tail: clip for readability, keep the flagged side visible
        values = np.minimum(values, np.nanquantile(values, 0.99) if len(values) else 0)
    data = pd.DataFrame({title: values, "group": sample_groups(frame, color_by, planted).to_numpy()})
    fig = px.histogram(data, x=title, color="group", nbins=bins, barmode="overlay", histnorm="probability",
                       opacity=0.6)
    if delta is not None and score == "comp_loss":
        fig.add_vline(x=delta, line_dash="dash", annotation_text=f"delta = {delta:.3f}")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), legend_title_text=color_by,
                      yaxis_title="share of group")
    return fig
