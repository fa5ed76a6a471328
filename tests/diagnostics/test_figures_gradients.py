"""Readable numbers and log axes of the gradient-score page (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from diagnostics import figures_gradients as F


def test_format_value_reads_like_a_person_writes():
    assert F.format_value(0.5312) == "0.53"
    assert F.format_value(12.346) == "12.35"
    assert F.format_value(20_350_144) == "10^7.3"
    assert F.format_value(3.162e-4) == "10^-3.5"
    assert F.format_value(0) == "0" and F.format_value(-0.25) == "-0.25"
    assert F.format_value(float("nan")) == "nan"


def test_format_log_is_exact_where_the_value_underflows():
    assert F.format_log(math.log(0.25)) == "0.25"
    assert F.format_log(-35.5 * math.log(10)) == "10^-35.5"
    assert F.format_log(-2000.0) == f"10^{-2000 / math.log(10):.1f}"  # exp(-2000) is 0 in a double
    assert F.format_log(-math.inf) == "0"


def frame(m, p_s_log, comp):
    n = len(m)
    return pd.DataFrame({"index": np.arange(n), "label": np.zeros(n, int), "pred": np.zeros(n, int),
                         "M": m, "log_M": np.log(m), "p_s": np.exp(p_s_log), "log_p_s": p_s_log,
                         "comp_loss": comp, "noisy": np.zeros(n, bool)})


def test_log_axis_only_when_values_span_three_decades():
    f = frame(np.array([1e-6, 1e-4, 0.5]), np.array([-2000.0, -1.0, 0.0]), np.array([0.0, 2.0, 5.0]))
    values, is_log = F.log10_values(f, "M")
    assert is_log and values == pytest.approx([-6, -4, math.log10(0.5)])
    values, is_log = F.log10_values(f, "p_s")  # from the exact log: p_s itself underflows to 0
    assert is_log and values[0] == pytest.approx(-2000 / math.log(10))
    values, is_log = F.log10_values(f, "comp_loss")  # 2 to 5: less than a decade, linear
    assert not is_log and values.tolist() == [0.0, 2.0, 5.0]
    f["comp_loss"] = [0.0, 0.01, 2e7]
    values, is_log = F.log10_values(f, "comp_loss")  # 0 is floored at the smallest positive value
    assert is_log and values == pytest.approx([-2, -2, math.log10(2e7)])


def test_histogram_titles_and_empty_data():
    f = frame(np.array([1e-6, 1e-4, 0.5]), np.array([-2000.0, -1.0, 0.0]), np.array([0.0, 0.01, 2e7]))
    fig = F.score_histogram(f, "comp_loss", delta=0.84)
    assert fig.layout.xaxis.title.text == "log10 compensated loss CE/H"
    assert fig.layout.shapes[0].x0 == pytest.approx(math.log10(0.84))  # delta drawn on the log axis
    assert F.has_histogram_data(f, "M")
    empty = f.iloc[:0]
    assert not F.has_histogram_data(empty, "M")
    f["comp_loss"] = np.nan
    assert not F.has_histogram_data(f, "comp_loss")
    with pytest.raises(ValueError, match="no finite comp_loss"):
        F.score_histogram(f, "comp_loss")
    with pytest.raises(ValueError, match="score must be one of"):
        F.score_histogram(f, "entropy")


def test_histogram_is_binned_per_group_as_shares():
    """Six samples, three correct (values 0, 0, 1) and three wrong (1, 1, 1): two bins over [0, 1]
    hold the correct group as 2/3 and 1/3 and the wrong group as 0 and 1; the figure carries the
    bins, not the samples."""
    f = frame(np.array([1.0, 1.0, 2.0, 2.0, 2.0, 2.0]), np.zeros(6), np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    f["pred"] = [0, 0, 0, 1, 1, 1]  # labels are all 0: the last three are wrong
    fig = F.score_histogram(f, "comp_loss", bins=2)
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"correct", "wrong"} and fig.layout.barmode == "overlay"
    assert list(bars["correct"].x) == pytest.approx([0.25, 0.75])
    assert list(bars["correct"].y) == pytest.approx([2 / 3, 1 / 3])
    assert list(bars["wrong"].y) == pytest.approx([0.0, 1.0])
    assert fig.layout.xaxis.title.text == "compensated loss CE/H"
