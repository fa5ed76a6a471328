"""Figures of the Grad-CAM page: heat map layout, colour ramp, outlines, overlays."""

import numpy as np
import pandas as pd

from diagnostics.figures_gradcam import association_heatmap, colorize, outline, overlay


def test_heatmap_rows_columns_and_values():
    df = pd.DataFrame({"class": ["tri", "tri", "sq"], "object": ["grass", "tri", "sq"],
                       "rate": [0.4, 0.1, 0.8], "count": [4, 1, 8]})
    fig = association_heatmap(df, class_names=("tri", "sq"))
    hm = fig.data[0]
    # rows in class order; context objects first, then class-named objects in class order
    assert list(hm.y) == ["tri", "sq"] and list(hm.x) == ["grass", "tri", "sq"]
    z = np.array(hm.z, dtype=float)
    assert z[0, 0] == 0.4 and z[0, 1] == 0.1 and z[1, 2] == 0.8 and np.isnan(z[1, 0])
    assert hm.text[0][0] == "0.40" and hm.text[1][0] == ""
    counts = np.array(association_heatmap(df, value="count").data[0].z, dtype=float)
    assert counts[0, :2].tolist() == [4, 1] and np.isnan(counts[0, 2])


def test_colorize_outline_overlay():
    c = colorize(np.array([[0.0, 2.0], [1.0, -1.0]]))
    assert c.dtype == np.uint8 and c[0, 1].tolist() == [180, 0, 0] and c[0, 0].tolist() == [0, 0, 130]
    assert c[1, 1].tolist() == [0, 0, 130]  # negative relevance = none
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    edge = outline(m)
    assert edge.sum() == 8 and not edge[2, 2]
    img = np.full((5, 5, 3), 100, np.uint8)
    out = overlay(img, np.zeros((5, 5)), m, min_size=10, alpha=0.0)
    assert out.shape == (10, 10, 3)
    assert out[2, 2].tolist() == [0, 255, 0] and out[0, 0].tolist() == [100, 100, 100]
    assert out[5, 5].tolist() == [100, 100, 100]  # inside the object, away from the edge
