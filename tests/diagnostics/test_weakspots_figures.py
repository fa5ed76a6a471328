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


def test_pair_heatmap_of_chosen_classes_and_an_overview_past_the_limit():
    from diagnostics.figures_weakspots import ANNOTATED_LIMIT

    m = np.zeros((5, 5), dtype=int)
    m[3, 1] = 7
    heat = figure_pair_heatmap(m, list("abcde"), classes=[1, 3]).data[0]
    assert list(heat.x) == ["b", "d"] and np.asarray(heat.z).tolist() == [[0, 0], [7, 0]]
    assert np.asarray(heat.text)[1, 0] == "7"
    k = ANNOTATED_LIMIT + 1
    big = np.zeros((k, k), dtype=int)
    big[0, 1] = 3
    heat = figure_pair_heatmap(big, [f"c{i}" for i in range(k)]).data[0]
    assert np.asarray(heat.z).dtype == np.uint8 and heat.text is None and np.asarray(heat.z)[0, 1] == 255


def test_embedding_map_colours_are_readable_on_white_and_many_classes_are_one_trace():
    from plotly.colors import hex_to_rgb

    from diagnostics.figures_weakspots import PALETTE

    # no pale colour: every channel mix darker than light grey (relative luminance < 0.75)
    def luminance(hex_colour):
        r, g, b = (c / 255 for c in hex_to_rgb(hex_colour))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    assert max(luminance(c) for c in PALETTE) < 0.75
    xy = np.zeros((60, 2), dtype=np.float32)
    labels = np.arange(60) % 30
    fig = figure_embedding_map(xy, labels, [f"c{i}" for i in range(30)], [5])
    assert [t.name for t in fig.data] == ["samples", "pivotal"] and fig.data[0].showlegend is False
    assert fig.data[0].marker.color[0] == PALETTE[0] and fig.data[0].marker.color[25] == PALETTE[1]
    assert list(fig.data[0].text[:2]) == ["c0", "c1"]
