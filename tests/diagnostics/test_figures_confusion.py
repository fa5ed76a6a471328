"""The plotly figure builders: data in the traces, hover with both rate and count, markers."""

import numpy as np
import pandas as pd
import pytest

from diagnostics.confusion import rank_biased_triplets
from diagnostics.figures_confusion import (
    comparison_heatmap, confusion_heatmap, triplet_errors_figure, wos_curve_figure,
)

RATES = np.array([[0.8, 0.2], [0.5, 0.5]])
COUNTS = np.array([[8, 2], [5, 5]])


def test_heatmap_rates_counts_and_hover():
    fig = confusion_heatmap(RATES, ["a", "b"], counts=COUNTS)
    heat = fig.data[0]
    assert np.allclose(heat.z, RATES) and list(heat.x) == ["a", "b"]
    assert np.allclose(np.asarray(heat.customdata)[1, 0], [0.5, 5])
    assert "rate" in heat.hovertemplate and "count" in heat.hovertemplate
    assert np.array_equal(confusion_heatmap(RATES, ["a", "b"], counts=COUNTS, show="counts").data[0].z, COUNTS)
    with pytest.raises(ValueError, match="needs counts"):
        confusion_heatmap(RATES, ["a", "b"], show="counts")


def test_comparison_is_coloured_by_better_or_worse_and_centred():
    from types import SimpleNamespace

    change = np.array([[0.1, -0.1], [0.3, -0.3]])    # diagonal a up (better), b->a up (worse)
    better = np.array([[0.1, 0.1], [-0.3, -0.3]])
    heat = comparison_heatmap(SimpleNamespace(change=change, improvement=better), ["a", "b"]).data[0]
    assert heat.zmid == 0 and heat.zmin == pytest.approx(-0.3) and heat.zmax == pytest.approx(0.3)
    assert np.allclose(heat.z, better) and heat.colorscale[0][1] == "#b2182b" and heat.colorscale[-1][1] == "#1a9850"
    assert list(np.asarray(heat.text)[1]) == ["+0.30", "-0.30"]  # the text is the rate change itself
    assert np.asarray(heat.customdata)[1, 0, 1] == "worse" and np.asarray(heat.customdata)[0, 0, 1] == "better"
    # changes that round to zero at two decimals leave the cell blank, not "-0.00" / "+0.00"
    tiny = np.array([[0.004, -0.004], [-0.0049, 0.006]])
    text = np.asarray(comparison_heatmap(SimpleNamespace(change=tiny, improvement=tiny), ["a", "b"]).data[0].text)
    assert text.tolist() == [["", ""], ["", "+0.01"]]


def test_triplet_bars():
    t = rank_biased_triplets(np.array([[0, .2, .1], [.2, 0, 0], [.1, 0, 0]]), ["a", "b", "c"], top=2)
    fig = triplet_errors_figure(t)
    assert [tr.name for tr in fig.data] == ["error(positive, anchor)", "error(negative, anchor)"]
    assert list(fig.data[0].y) == list(t["error_pos"]) and fig.data[0].x[0] == "a / c | b"


def test_curve_marks_current_and_suggested():
    curve = pd.DataFrame({"rho": [1.0, 0.1, 0.01], "accuracy": [0.8, 0.79, 0.7], "target_error": [0.2, 0.1, 0.0]})
    s = {"rho": 0.1, "accuracy": 0.79, "target_error": 0.1, "max_target_error": 0.15, "min_accuracy": 0.792}
    fig = wos_curve_figure(curve, current_rho=0.012, suggestion=s)
    names = [tr.name for tr in fig.data]
    assert names == ["w-os", "rho 0.01", "suggested rho 0.1"]
    assert fig.data[1].x[0] == 0.0 and fig.data[2].y[0] == 0.79


def test_matrix_overview_levels_are_square_root_scaled_bytes_without_the_diagonal():
    from diagnostics.figures_confusion import matrix_overview

    rates = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]])
    heat = matrix_overview(rates, ["a", "b", "c"]).data[0]
    z = np.asarray(heat.z)
    assert z.dtype == np.uint8 and heat.text is None and heat.texttemplate is None
    # off-diagonal max 0.4 -> 255; 0.1 = a quarter of it -> sqrt -> half of 255; the diagonal is blank
    assert z.tolist() == [[0, 128, 0], [255, 0, 0], [0, 0, 0]]
    assert list(heat.x) == ["a", "b", "c"] and heat.zmin == 0 and heat.zmax == 255
    assert list(heat.colorbar.ticktext)[-1] == "0.4"


def test_matrix_overview_diverging_and_block_reduced():
    from diagnostics.figures_confusion import BETTER_WORSE, matrix_overview

    better = np.array([[0.2, -0.1], [0.0, 0.05]])
    z = np.asarray(matrix_overview(better, ["a", "b"], diverging=True, hide_diagonal=False,
                                   colorscale=BETTER_WORSE).data[0].z)
    # 0 -> the middle (127.5 -> 128); +0.2 (the bound) -> 255; -0.1 -> 127.5 * (1 - sqrt(0.5)) = 37.3
    assert z.tolist() == [[255, 37], [128, 191]]
    # 5 classes drawn on at most 2 cells a side: blocks of 3 keep their value of largest magnitude
    m = np.zeros((5, 5))
    m[0, 4], m[3, 1] = 0.5, -0.8
    heat = matrix_overview(m, list("abcde"), diverging=True, max_side=2).data[0]
    assert list(heat.x) == ["a–c", "d–e"]
    assert np.asarray(heat.z).tolist() == [[128, 228], [0, 128]]   # 127.5 * (1 + sqrt(0.5 / 0.8)) = 228.3
    with pytest.raises(ValueError, match="K = 3 names"):
        matrix_overview(np.zeros((2, 2)), ["a", "b", "c"])
