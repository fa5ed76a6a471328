"""Relevance shares and per-class association aggregation on hand-computed examples."""

import numpy as np
import pytest

from diagnostics.associations import (
    ObjectShares, aggregate_associations, association_rows, cooccurring_classes, relevance_shares,
    repair_targets,
)
from diagnostics.gradcam import GradCamResult


def test_relevance_share_hand_computed():
    cam = np.array([[1.0, 3.0], [-5.0, 0.0]])  # positive total = 4 (the -5 is ignored)
    masks = np.array([[[True, False], [False, False]],   # 1/4
                      [[False, True], [True, True]],      # 3/4
                      [[False, False], [True, False]]])   # only negative relevance: 0
    np.testing.assert_allclose(relevance_shares(cam, masks), [[0.25, 0.75, 0.0]])
    zero = relevance_shares(np.zeros((2, 2)), masks)  # no positive relevance at all
    np.testing.assert_array_equal(zero, [[0, 0, 0]])
    batched = relevance_shares(np.stack([cam, 2 * cam]), np.stack([masks, masks]))
    np.testing.assert_allclose(batched, [[0.25, 0.75, 0.0]] * 2)


def _example():
    nan = np.nan
    # rows: class 0 x3, class 1 x2; objects: grass, cloud
    shares = np.array([[0.5, nan], [0.1, 0.4], [nan, 0.29], [0.3, nan], [nan, nan]], dtype=np.float32)
    classes = np.array([0, 0, 0, 1, 1])
    correct = np.array([True, False, True, False, True])
    return shares, classes, correct


def test_aggregate_hand_computed():
    shares, classes, correct = _example()
    df = aggregate_associations(shares, classes, correct, class_names=("tri", "sq"),
                                object_names=["grass", "cloud"], threshold=0.3)
    rows = {(r["class"], r["object"]): r for r in df.to_dict("records")}
    assert set(rows) == {("tri", "grass"), ("tri", "cloud"), ("sq", "grass")}  # sq never has cloud
    g = rows[("tri", "grass")]
    assert (g["count"], g["n_pred"], g["present"], g["count_correct"], g["count_wrong"]) == (1, 3, 2, 1, 0)
    assert g["rate"] == pytest.approx(1 / 3) and g["share_mean"] == pytest.approx(0.3)
    assert g["rate_present"] == pytest.approx(1 / 2)
    c = rows[("tri", "cloud")]
    assert (c["count"], c["count_correct"], c["count_wrong"]) == (1, 0, 1)
    assert c["share_mean"] == pytest.approx((0.4 + 0.29) / 2, rel=1e-6)
    s = rows[("sq", "grass")]  # share exactly at the threshold counts
    assert (s["count"], s["rate"], s["count_wrong"]) == (1, 0.5, 1)
    assert df["rate"].tolist() == sorted(df["rate"].tolist(), reverse=True)
    strict = aggregate_associations(shares, classes, correct, class_names=("tri", "sq"),
                                    object_names=["grass", "cloud"], threshold=0.45)
    assert strict.set_index(["class", "object"])["count"].to_dict() == {
        ("tri", "grass"): 1, ("tri", "cloud"): 0, ("sq", "grass"): 0}
    with pytest.raises(ValueError, match="threshold"):
        aggregate_associations(shares, classes, correct, class_names=("a", "b"), object_names=["g", "c"], threshold=2)


def test_association_rows_and_repair_targets():
    shares, classes, correct = _example()
    result = GradCamResult(indices=np.array([0, 1, 2, 3, 4]), classes=classes, correct=correct,
                           cams=np.zeros((5, 2, 2), np.float32), input_size=(2, 2), layer="c")
    # images: 0,1 grass (labels 0,1); 3 grass (label 2); 2, 4 none
    present = np.array([[1, 0], [1, 1], [0, 1], [1, 0], [0, 0]], dtype=bool)
    os_ = ObjectShares(["grass", "cloud"], shares, present, np.arange(5))
    rows = association_rows(os_, result, 0, "grass", threshold=0.05)
    assert rows["index"].tolist() == [0, 1] and rows["share"].tolist() == pytest.approx([0.5, 0.1])
    labels = np.array([0, 1, 0, 2, 1])
    # per class: class1 images {1, 4}: 1 of 2 has grass; class2 {3}: 1 of 1
    assert cooccurring_classes(os_, labels, "grass", 0) == [(2, 1.0), (1, 0.5)]
    # with the Grad-CAM rows: class 1's grass image 1 is explained as class 0 -> ranked first
    assert cooccurring_classes(os_, labels, "grass", 0, result=result) == [(1, 0.5), (2, 1.0)]
    assert cooccurring_classes(os_, labels, "grass", 0, top=1) == [(2, 1.0)]
    reviews = [{"key": "tri|grass", "verdict": "spurious"}, {"key": "tri|cloud", "verdict": "legitimate"},
               {"key": "gone|grass", "verdict": "spurious"}]
    assert repair_targets(reviews, os_, labels, ("tri", "sq", "star")) == [["tri", "star"], ["tri", "sq"]]
