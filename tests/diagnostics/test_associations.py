"""Relevance shares and per-class association aggregation on hand-computed examples."""

import numpy as np
import pandas as pd
import pytest

from diagnostics.associations import (
    ObjectShares, aggregate_associations, association_rows, cooccurring_classes, rank_associations,
    relevance_shares, repair_targets, same_name,
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


def _ranking_example() -> pd.DataFrame:
    rows = [  # class, object, count, present, count_wrong, n_pred
        ("plus", "plus", 9, 10, 0, 10),          # the class's own shape: trivial
        ("triangle", "grass", 6, 8, 5, 20),      # the planted kind of finding
        ("square", "grass", 1, 10, 1, 20),
        ("triangle", "square", 2, 2, 2, 20),     # another class's shape drives triangle mistakes
        ("square", "square", 8, 10, 0, 20),      # named like the class: trivial
    ]
    df = pd.DataFrame(rows, columns=["class", "object", "count", "present", "count_wrong", "n_pred"])
    df["rate"] = df["count"] / df["n_pred"]
    df["rate_present"] = df["count"] / df["present"]
    df["count_correct"] = df["count"] - df["count_wrong"]
    return df


def test_rank_associations_hand_computed():
    df = _ranking_example()
    ranked = rank_associations(df)
    order = list(zip(ranked["class"], ranked["object"]))
    # findings by wrong predictions, trivial rows last (ties there broken by excess: 0 before -1/3)
    assert order == [("triangle", "grass"), ("triangle", "square"), ("square", "grass"), ("plus", "plus"),
                     ("square", "square")]
    assert ranked["trivial"].tolist() == [False, False, False, True, True]
    r = ranked.set_index(["class", "object"])
    # grass drives 7 of its 18 present rows: base rate 7/18
    assert r.loc[("triangle", "grass"), "excess"] == pytest.approx(6 - 8 * 7 / 18)
    assert r.loc[("square", "grass"), "excess"] == pytest.approx(1 - 10 * 7 / 18)
    assert r.loc[("triangle", "grass"), "lift"] == pytest.approx((6 / 8) / (7 / 18))
    # the square shape drives 10 of its 12 present rows
    assert r.loc[("triangle", "square"), "lift"] == pytest.approx(1 / (10 / 12))
    assert r.loc[("square", "square"), "excess"] == pytest.approx(8 - 10 * 10 / 12)
    by_lift = rank_associations(df, by="lift")
    assert list(by_lift["object"][:3]) == ["grass", "square", "grass"]
    assert list(by_lift["class"][:3]) == ["triangle", "triangle", "square"]
    by_rate = rank_associations(df, by="rate")
    assert by_rate["trivial"].tolist()[-2:] == [True, True]  # plus <- plus has the highest rate, still last
    # a reviewer's "legitimate" makes a row trivial
    legit = rank_associations(df, legitimate=[("triangle", "square")])
    assert list(zip(legit["class"], legit["object"]))[:2] == [("triangle", "grass"), ("square", "grass")]
    assert legit.set_index(["class", "object"]).loc[("triangle", "square"), "trivial"]
    with pytest.raises(ValueError, match="valid: priority"):
        rank_associations(df, by="surprise")


def test_same_name():
    assert same_name("traffic light", "Traffic_Light") and same_name("t-shirt", "t shirt")
    assert not same_name("plus", "plush") and not same_name("grass", "triangle")


def test_demo_ranking_puts_the_planted_association_in_the_top_3(demo_ws, demo_eval):
    from diagnostics.mask_sources import load_masks
    from diagnostics.run_gradcam import workspace_gradcam, workspace_shares

    planted = demo_ws.planted["spurious"]
    result = workspace_gradcam(demo_ws, "eval", outputs=demo_eval)
    shares = workspace_shares(demo_ws, result, load_masks(demo_ws, "eval"))
    df = aggregate_associations(shares.shares, result.classes, result.correct, class_names=demo_ws.class_names,
                                object_names=shares.object_names)
    ranked = rank_associations(df)
    top3 = list(zip(ranked["class"], ranked["object"]))[:3]
    assert (planted["class"], planted["object"]) in top3, ranked.head()
    # every class's own shape is trivial and ranked after every finding
    own = ranked[ranked["class"] == ranked["object"]]
    assert own["trivial"].all() and own.index.min() > ranked.index[~ranked["trivial"]].max()
