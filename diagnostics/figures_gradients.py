"""Plotly figures and readable numbers of the gradient-score page (pure functions: DataFrame in, Figure out).

Scores of real models span many orders of magnitude (M and D are normalised over thousands of
samples per class, the vMF direction score is peaked in gradient dimension, the entropy of a
confident prediction is ~0), so a histogram switches to a log10 axis as soon as the positive
values of its column span :data:`LOG_DECADES` decades, and numbers are written as ``10^-3.2``
below 0.01.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# the histogram tabs: score -> (frame column, exact natural log column or None, axis title)
SCORES = {
    "M": ("M", "log_M", "magnitude score M"),
    "D": ("D", "log_D", "direction score D"),
    "S": ("S", "log_S", "aggregate score S"),
    "p_s": ("p_s", "log_p_s", "sampling probability p_s"),
    "comp_loss": ("comp_loss", None, "compensated loss CE/H"),
    "grad_norm": ("grad_norm", None, "gradient norm ||g||"),
}
COLOR_BY = ("correct", "minority", "flipped", "noisy")
LOG_DECADES = 3.0  # positive values spanning at least this many decades get a log10 axis


def format_value(x: float, *, digits: int = 2) -> str:
    """A number a person can read: ``0.53``, ``12.4``, ``10^-3.2``, ``10^6.3``.

    Values in [0.01, 10^4) are printed with ``digits`` decimals (integers above 100);
    others as a power of ten with one decimal of the exponent; 0, NaN and infinities as such.
    """
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    sign = "-" if x < 0 else ""
    a = abs(x)
    if 0.01 <= a < 1e4:
        return f"{sign}{a:.0f}" if a >= 100 else f"{sign}{a:.{digits}f}"
    return f"{sign}10^{math.log10(a):.1f}"


def format_log(log_value: float) -> str:
    """:func:`format_value` of ``exp(log_value)``, exact where the value underflows a double."""
    log_value = float(log_value)
    if not math.isfinite(log_value):
        return "0" if log_value == -math.inf else str(log_value)
    value = math.exp(log_value) if -700 < log_value < 700 else 0.0
    if value != 0 and 0.01 <= value < 1e4:
        return format_value(value)
    return f"10^{log_value / math.log(10.0):.1f}"


def log10_values(frame: pd.DataFrame, score: str) -> tuple[np.ndarray, bool]:
    """The values drawn for one score and whether they are log10.

    Log10 when the positive finite values span at least :data:`LOG_DECADES` decades; the
    exact natural-log column is used where the frame has one (D and p_s underflow to 0 in
    linear space), zeros are floored at the smallest positive value (a log axis has no 0).

    Returns:
        ``(values (N,) float64 with NaN for missing, is_log10)``.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    column, log_column, _ = SCORES[score]
    values = frame[column].to_numpy(dtype=np.float64)
    if log_column is not None and log_column in frame:
        logs = frame[log_column].to_numpy(dtype=np.float64) / np.log(10.0)
        finite = logs[np.isfinite(logs)]
        if len(finite) and finite.max() - finite.min() >= LOG_DECADES:
            return logs, True
        return values, False
    positive = values[np.isfinite(values) & (values > 0)]
    if len(positive) and math.log10(positive.max() / positive.min()) >= LOG_DECADES:
        return np.log10(np.where(values > 0, values, positive.min())), True
    return values, False


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
        flag, yes, no = frame["noisy"].to_numpy().astype(bool), "flagged mislabelled", "not flagged"
    else:
        key = "minority" if by == "minority" else "flipped_labels"
        if not planted or not planted.get(key):
            raise ValueError(f"no ground truth for {by!r} in this workspace")
        flag = np.isin(idx, planted[key])
        yes, no = ("minority", "majority") if by == "minority" else ("flipped label", "clean label")
    return pd.Series(np.where(flag, yes, no), index=frame.index, name=by)


def has_histogram_data(frame: pd.DataFrame, score: str) -> bool:
    """Whether :func:`score_histogram` has at least one finite value to draw."""
    return bool(len(frame)) and bool(np.isfinite(log10_values(frame, score)[0]).any())


def score_histogram(frame: pd.DataFrame, score: str, *, color_by: str = "correct", planted: dict | None = None,
                    delta: float | None = None, bins: int = 60) -> go.Figure:
    """Overlaid histogram of one score, coloured by a grouping (see :func:`sample_groups`).

    The x axis is log10 when the values span :data:`LOG_DECADES` decades or more (see
    :func:`log10_values`); the y axis is the share of each group. The bins are counted here and
    drawn as bars (``bins`` equal bins over the finite values' range, shared by the groups), so
    the figure carries ``bins`` numbers per group rather than every sample's value (20,000
    samples were 270 KB per rerun, binned again by the browser). Check
    :func:`has_histogram_data` first: an empty frame has nothing to draw.

    Args:
        score: one of ``SCORES`` (M, D, S, p_s, comp_loss, grad_norm).
        delta: drawn as a vertical line on the compensated-loss histogram (the paper's threshold).

    Raises:
        ValueError: for an unknown score or grouping, or nothing finite to draw.
    """
    values, is_log = log10_values(frame, score)
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError(f"no finite {score} value to draw")
    title = ("log10 " if is_log else "") + SCORES[score][2]
    groups = sample_groups(frame, color_by, planted).to_numpy()[finite]
    values = values[finite]
    edges = np.histogram_bin_edges(values, bins=bins)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for group in pd.unique(groups):
        counts = np.histogram(values[groups == group], bins=edges)[0]
        fig.add_trace(go.Bar(x=centres, y=counts / counts.sum(), width=widths, name=str(group), opacity=0.6,
                             customdata=np.stack([edges[:-1], edges[1:], counts], axis=1),
                             hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{customdata[2]:d} "
                                           "samples, %{y:.1%} of " + str(group) + "<extra></extra>"))
    if delta is not None and score == "comp_loss" and delta > 0:
        x = math.log10(delta) if is_log else delta
        fig.add_vline(x=x, line_dash="dash", annotation_text=f"delta = {format_value(delta, digits=3)}")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), legend_title_text=color_by,
                      barmode="overlay", bargap=0, xaxis_title=title, yaxis_title="share of group")
    return fig
