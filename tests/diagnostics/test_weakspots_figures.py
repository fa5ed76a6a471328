"""The weakspots page's figures are pure functions of frames and arrays."""

import numpy as np
import pandas as pd

from diagnostics.figures_weakspots import figure_counts_by_radius, figure_embedding_map, figure_pair_heatmap


def test_counts_by_radius_figure_marks_d_and_the_suggestion():
    counts = pd.DataFrame({"radius": [0.5, 1.0, 2.0], "count": [0, 3, 5]})
    fig = figure_counts_by_radius(counts, radius=1.0, suggested=2.0)
    assert list(fig.data[0].x) == [0.5, 1.0, 2.0] and list(fig.data[0].y) == [0, 3, 5]
    assert sorted(s.x0 for s in fig.layout.shapes) == [1.0, 2.0]


def test_pair_heatmap_rows_are_labels_columns_predictions():
    m = np.array([[0, 4, 0], [1, 0, 0], [0, 0, 0]])
    fig = figure_pair_heatmap(m, ["a", "b", "c"])
    heat = fig.data[0]
    assert list(heat.x) == ["a", "b", "c"] and list(heat.y) == ["a", "b", "c"]
    assert np.asarray(heat.z)[0, 1] == 4 and np.asarray(heat.text)[0, 1] == "4" and np.asarray(heat.text)[2, 2] == ""


def test_embedding_map_highlights_pivotal_rows():
    xy = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=np.float32)
    fig = figure_embedding_map(xy, np.array([0, 0, 1, 1]), ["a", "b"], [2], hover=["p0", "p1", "p2", "p3"])
    assert [t.name for t in fig.data] == ["a", "b", "pivotal"]
    assert list(fig.data[2].x) == [2.0] and list(fig.data[2].text) == ["p2"]
    assert len(figure_embedding_map(xy, np.array([0, 0, 1, 1]), ["a", "b"], []).data) == 2
