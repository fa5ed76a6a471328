"""Where Grad-CAM looks without masks: hand-made heatmaps, hand-computed means and shares."""

import numpy as np
import pytest

from diagnostics.cam_summary import (
    mean_cams, normalise_cams, pair_choices, pair_groups, pair_rows, region_masks, region_shares, rows_for,
    summarise_groups, where_it_looks,
)
from diagnostics.figures_gradcam import (DISPLAY_MAX, class_mean_figure, display_size, looks_figure, pair_mean_figure,
                                         relative_to_uniform)


def test_normalise_and_mean_per_group():
    cams = np.array([
        [[1.0, 1.0], [1.0, 1.0]],    # uniform: 0.25 each
        [[4.0, 0.0], [0.0, 0.0]],    # all on the top-left
        [[0.0, -2.0], [0.0, 0.0]],   # no positive relevance: left out of means
        [[0.0, 2.0], [0.0, 6.0]],    # 0.25 top-right, 0.75 bottom-right
    ])
    norm = normalise_cams(cams)
    np.testing.assert_allclose(norm[0], 0.25)
    np.testing.assert_allclose(norm[2], 0.0)
    np.testing.assert_allclose(norm[3], [[0, 0.25], [0, 0.75]])
    means, counts = mean_cams(cams, np.array([0, 0, 0, 1]), n_groups=3)
    assert counts.tolist() == [3, 1, 0]
    # group 0: the mean of the two maps with relevance (uniform and top-left); the empty map is skipped
    np.testing.assert_allclose(means[0], [[0.625, 0.125], [0.125, 0.125]])
    np.testing.assert_allclose(means[1], [[0, 0.25], [0, 0.75]])
    assert np.isnan(means[2]).all()  # no rows
    # -1 = in no group; the magnitude of a map does not weigh in (10x the uniform map changes nothing)
    scaled, _ = mean_cams(np.stack([10 * cams[0], cams[1], cams[1]]), np.array([0, 0, -1]), n_groups=1)
    np.testing.assert_allclose(scaled[0], means[0])
    with pytest.raises(ValueError, match="group ids"):
        mean_cams(cams, np.array([0, 1, 2, 3]), n_groups=3)


def test_region_masks_geometry():
    centre, border = region_masks((8, 8))  # centre box = middle half, border = one pixel (1/8) band
    assert centre.sum() == 16 and centre[2:6, 2:6].all()
    assert border.sum() == 64 - 36 and not border[1:7, 1:7].any()
    assert not (centre & border).any()
    centre, border = region_masks((4, 8), centre=0.5, border=0.25)
    assert centre.tolist() == [[False] * 8, [False, False, True, True, True, True, False, False],
                               [False, False, True, True, True, True, False, False], [False] * 8]
    assert border[:, :2].all() and border[0].all() and not border[1:3, 2:6].any()
    for bad in ({"centre": 0.0}, {"border": 0.5}, {"centre": 0.8, "border": 0.2}):
        with pytest.raises(ValueError):
            region_masks((8, 8), **bad)


def test_region_shares_and_where_it_looks():
    centre, border = region_masks((4, 4), centre=0.5, border=0.25)  # centre 2x2, border = the outer ring of 12
    middle = np.zeros((4, 4))
    middle[1:3, 1:3] = 1.0           # all in the centre
    edge = np.zeros((4, 4))
    edge[0, :] = 3.0
    edge[1, 1] = 1.0                 # 12/13 on the border, 1/13 in the centre
    empty = -np.ones((4, 4))         # no positive relevance
    cams = np.stack([middle, edge, empty, np.ones((4, 4))])
    c = region_shares(cams, centre)
    b = region_shares(cams, border)
    np.testing.assert_allclose(c[[0, 1, 3]], [1.0, 1 / 13, 4 / 16], rtol=1e-6)
    np.testing.assert_allclose(b[[0, 1, 3]], [0.0, 12 / 13, 12 / 16], rtol=1e-6)
    assert np.isnan(c[2]) and np.isnan(b[2])

    # class 0: rows 0 (right) and 1 (wrong); class 2: row 2 (empty, wrong) and row 3 (right); class 1: none
    df = where_it_looks(c, b, np.array([0, 0, 2, 2]), np.array([True, False, False, True]),
                        class_names=["bg-looker", "unused", "other"])
    assert df["class"].tolist() == ["bg-looker", "other"]
    r0, r2 = df.iloc[0], df.iloc[1]
    assert (r0["n"], r0["n_wrong"], r0["n_empty"]) == (2, 1, 0)
    assert r0["centre_share"] == pytest.approx((1 + 1 / 13) / 2) and r0["border_share"] == pytest.approx(6 / 13)
    assert r0["border_share_wrong"] == pytest.approx(12 / 13)
    assert (r2["n"], r2["n_wrong"], r2["n_empty"]) == (2, 1, 1)
    assert r2["centre_share"] == pytest.approx(0.25)  # the empty map is not averaged in as 0
    assert np.isnan(r2["centre_share_wrong"])  # its only wrong row is empty


def test_pair_groups_single_and_multi_label():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 1])
    g = pair_groups(labels, preds, 0, 1)
    assert list(g) == [(0, 0), (0, 1), (1, 1), (1, 0)]
    assert [g[k].tolist() for k in g] == [[0], [1, 2], [3], [4]]  # image 5 (class 2) is in no group
    ml_labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    ml_preds = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=bool)
    g = pair_groups(ml_labels, ml_preds, 0, 1, task="multi_label")
    # image 3 has both labels: in no group
    assert [g[k].tolist() for k in g] == [[0], [1], [2], [4]]
    with pytest.raises(ValueError, match="task"):
        pair_groups(labels, preds, 0, 1, task="multi")
    with pytest.raises(ValueError, match="two different"):
        pair_groups(labels, preds, 1, 1)


def test_rows_for_and_pair_rows():
    # heatmap rows (image, class): image 7 explained as 2 and as 0 (multi-label); image 3 as 1
    ri, rc = np.array([3, 7, 7, 9]), np.array([1, 2, 0, 1])
    assert rows_for(ri, rc, np.array([7, 7, 3, 9, 4]), np.array([0, 2, 1, 0, 1])).tolist() == [2, 1, 0, -1, -1]
    assert rows_for(ri, rc, np.array([3, 9]), 1).tolist() == [0, 3]
    assert rows_for(ri, rc, np.array([], dtype=np.int64), 1).tolist() == []
    # outputs positions 0..2 are split positions 3, 7, 9 (a skipped image leaves a gap)
    groups = {(1, 1): np.array([0, 2]), (1, 2): np.array([1])}
    rows = pair_rows(groups, np.array([3, 7, 9]), ri, rc)
    assert rows[(1, 1)].tolist() == [0, 3] and rows[(1, 2)].tolist() == [1]
    # one class explained for every image: rows explain that class
    assert pair_rows(groups, np.array([3, 7, 9]), ri, rc, target=0)[(1, 2)].tolist() == [2]


def test_summarise_groups():
    cams = np.zeros((4, 2, 2))
    cams[0, 0, 0] = cams[1, 1, 1] = cams[3, 0, 1] = 1.0
    centre = np.array([0.1, 0.3, np.nan, 0.5])
    border = np.array([0.9, 0.7, np.nan, 0.5])
    means, table = summarise_groups(cams, centre, border, {"A -> A": np.array([0, 1, -1]), "A -> B": np.array([2]),
                                                           "B -> B": np.array([], dtype=np.int64)})
    np.testing.assert_allclose(means[0], [[0.5, 0], [0, 0.5]])
    assert np.isnan(means[1]).all() and np.isnan(means[2]).all()
    assert table["group"].tolist() == ["A -> A", "A -> B", "B -> B"]
    assert table["n"].tolist() == [2, 1, 0] and table["n_empty"].tolist() == [0, 1, 0]
    assert table["centre_share"].iloc[0] == pytest.approx(0.2) and np.isnan(table["centre_share"].iloc[1])


def test_pair_choices_default_first():
    errors = np.array([[0, 0.1, 0.3], [0.1, 0, 0.2], [0.3, 0.2, 0]])
    assert pair_choices(errors) == [(0, 2), (1, 2), (0, 1)]
    assert pair_choices(errors, preferred=[(2, 1)]) == [(1, 2), (0, 2), (0, 1)]
    assert pair_choices(errors, preferred=[(0, 1, 2)], top=1) == [(0, 2)]  # a triplet is not a pair


def test_figures():
    m = np.zeros((4, 4, 4))
    m[:, 0, 0] = 1.0
    m[1] = 0.0
    m[1, 3, 3] = 1.0
    m[3] = np.nan  # no B -> A mistakes
    np.testing.assert_allclose(relative_to_uniform(m[0])[0, 0], 16.0)
    fig = pair_mean_figure(m, [5, 2, 4, 0], names=("cat", "dog"))
    assert len(fig.data) == 6
    titles = [a.text for a in fig.layout.annotations]
    assert "cat → dog (mistakes, n=2)" in titles and "dog → cat (mistakes, n=0)" in titles
    diff = np.array(fig.data[2].z, dtype=float)
    assert diff[3, 3] == 16 and diff[0, 0] == -16  # mistakes look at the bottom-right, correct at the top-left
    fig = class_mean_figure(m[:3], [1, 2, 3], ["a", "b", "c"], columns=2)
    assert len(fig.data) == 3 and [a.text for a in fig.layout.annotations] == ["a (n=1)", "b (n=2)", "c (n=3)"]
    assert fig.data[0].x is None  # drawn at the input's size: plain pixel indices
    # near-zero relevance is black: Streamlit drew the named scale's first stop "#000004" as purple
    for trace in fig.data:
        assert trace.colorscale[0][1] == "rgb(0, 0, 4)" and not any(c.startswith("#") for _, c in trace.colorscale)
    import pandas as pd

    df = pd.DataFrame({"class": ["a", "b"], "centre_share": [0.6, 0.1], "border_share": [0.1, 0.7]})
    fig = looks_figure(df, centre_area=0.25, border_area=0.4375)
    assert [t.name for t in fig.data] == ["centre", "border"] and list(fig.data[1].y) == [0.1, 0.7]
    assert sorted(s.y0 for s in fig.layout.shapes) == [0.25, 0.4375]


def test_cli_without_masks(tiny_workspace, capsys):
    import json

    from diagnostics.__main__ import main
    from workspace.cli import run_cli

    assert run_cli(main, ["gradcam-summary", "--workspace", str(tiny_workspace), "--pair", "cat,dog", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 12x12 inputs: the centre box is 6x6 pixels; the band holds pixels whose centre is within 1.5 px of
    # an edge, i.e. the outer ring of one pixel: 144 - 10 * 10
    assert out["centre_area"] == pytest.approx(36 / 144) and out["border_area"] == pytest.approx(44 / 144, abs=1e-6)
    assert sum(c["n"] for c in out["classes"]) == 9  # 9 eval images, one heatmap each
    assert all(c["centre_share"] is None or 0 <= c["centre_share"] <= 1 for c in out["classes"])
    pair = out["pair"]
    assert (pair["a"], pair["b"], pair["explain"]) == ("cat", "dog", "pred")
    assert [g["group"] for g in pair["groups"]] == ["cat -> cat", "cat -> dog", "dog -> dog", "dog -> cat"]
    assert run_cli(main, ["gradcam-summary", "--workspace", str(tiny_workspace), "--pair", "cat,dog",
                          "--explain", "cat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pair"]["explain"] == "cat"
    for bad, message in ((["--pair", "cat,cow"], "--pair"), (["--pair", "cat,dog,fox"], "one pair"),
                         (["--explain", "cow"], "valid: cat, dog, fox")):
        assert run_cli(main, ["gradcam-summary", "--workspace", str(tiny_workspace), *bad]) == 2
        assert message in capsys.readouterr().err


def test_mean_maps_of_large_inputs_are_drawn_small_in_input_pixels():
    """A 224-pixel model's maps are drawn at 64 a side (a Grad-CAM layer has ~7-16 cells a side), the
    axes and the hover still in input pixels; small inputs are drawn as they are."""
    assert DISPLAY_MAX == 64
    assert display_size((224, 224)) == (64, 64) and display_size((32, 32)) == (32, 32)
    assert display_size((100, 300)) == (21, 64) and display_size((1, 1000)) == (1, 64)
    m = np.random.default_rng(0).random((4, 64, 64))
    for fig in (pair_mean_figure(m, [1, 1, 1, 1], names=("a", "b"), input_size=(224, 224)),
                class_mean_figure(m[:2], [1, 1], ["a", "b"], input_size=(224, 224))):
        x, y = np.asarray(fig.data[0].x), np.asarray(fig.data[0].y)
        assert len(x) == len(y) == 64
        np.testing.assert_allclose([x[0], x[-1]], [1.25, 221.75])  # cell centres: 3.5 input pixels per cell
        assert np.asarray(fig.data[0].z).dtype == np.float64 and np.allclose(fig.data[0].z, np.round(fig.data[0].z, 3))
    pair = pair_mean_figure(m, [1, 1, 1, 1], names=("a", "b"), input_size=(224, 224))
    assert all(t.hovertemplate.startswith("x %{x:.0f}, y %{y:.0f}") for t in pair.data)  # input pixels, whole
