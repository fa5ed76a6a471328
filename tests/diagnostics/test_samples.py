"""The pure parts of the sample view: top-k, neighbour tables and summaries, gallery search, keys."""

import numpy as np
import pytest

from diagnostics.samples import (
    filter_samples, neighbour_frame, neighbour_summary, parse_sample, prediction_change, sample_key, top_k,
    topk_figure,
)

NAMES = ("cat", "dog", "fox", "owl")


def test_top_k_sorts_by_probability_and_breaks_ties_in_class_order():
    frame = top_k(np.array([0.1, 0.5, 0.2, 0.2]), NAMES, k=3)
    assert frame["class"].tolist() == ["dog", "fox", "owl"]  # fox and owl tie at 0.2: class order
    assert frame["rank"].tolist() == [1, 2, 3]
    assert frame["class_id"].tolist() == [1, 2, 3]
    assert frame["prob"].tolist() == pytest.approx([0.5, 0.2, 0.2])


def test_top_k_clamps_k_and_checks_its_input():
    assert len(top_k(np.array([0.3, 0.7, 0.0, 0.0]), NAMES, k=10)) == 4
    with pytest.raises(ValueError, match="at least 1"):
        top_k(np.array([1.0, 0, 0, 0]), NAMES, k=0)
    with pytest.raises(ValueError, match="3 probabilities for 4 classes"):
        top_k(np.array([0.2, 0.3, 0.5]), NAMES)


def test_topk_figure_colours_the_label_green():
    fig = topk_figure(top_k(np.array([0.1, 0.6, 0.3, 0.0]), NAMES, k=3), label=["fox"])
    bar = fig.data[0]
    assert list(bar.y) == ["dog", "fox", "cat"]
    assert list(bar.marker.color) == ["#4c78a8", "#1a9850", "#4c78a8"]


# a representative set of 6 samples (labels, preds), neighbours of a sample labelled 0 predicted 1
LABELS = np.array([0, 1, 1, 1, 0, 2])
PREDS = np.array([1, 1, 1, 0, 0, 2])
SPLITS = np.array(["eval", "train", "train", "eval", "train", "eval"])
INDICES = np.array([7, 0, 1, 2, 3, 9])


def test_neighbour_frame_drops_missing_rows_and_names_the_classes():
    frame = neighbour_frame(LABELS, PREDS, SPLITS, INDICES, np.array([1, 3, 2, -1]), np.array([0.5, 1.0, 2.0, np.inf]),
                            NAMES)
    assert frame["row"].tolist() == [1, 3, 2]
    assert frame["rank"].tolist() == [1, 2, 3]
    assert frame["split"].tolist() == ["train", "eval", "train"]
    assert frame["index"].tolist() == [0, 2, 1]
    assert frame["label_name"].tolist() == ["dog", "dog", "dog"]
    assert frame["pred_name"].tolist() == ["dog", "cat", "dog"]
    assert frame["correct"].tolist() == [True, False, True]


def test_neighbour_summary_by_hand():
    # query: label 0 (cat), pred 1 (dog); neighbours rows 1, 2, 3, 4:
    # labels 1, 1, 1, 0 -> same label 1/4, labelled dog 3/4; labelled and predicted dog: rows 1, 2 -> 2/4;
    # misclassified: row 3 (dog -> cat) -> 1/4; majority dog 3/4
    frame = neighbour_frame(LABELS, PREDS, SPLITS, INDICES, np.array([1, 2, 3, 4]), np.array([1.0, 2.0, 3.0, 6.0]),
                            NAMES)
    s = neighbour_summary(frame, label=0, pred=1, class_names=NAMES)
    assert s == {"k": 4, "mean_distance": pytest.approx(3.0), "same_label": 0.25, "labelled_as_pred": 0.75,
                 "firm_pred": 0.5, "wrong": 0.25, "majority": "dog", "majority_share": 0.75}


def test_neighbour_summary_without_neighbours():
    frame = neighbour_frame(LABELS, PREDS, SPLITS, INDICES, np.array([-1]), np.array([np.inf]), NAMES)
    assert neighbour_summary(frame, label=0, pred=1, class_names=NAMES)["k"] == 0


IDS = ["/data/cat/a01.png", "/data/dog/b12.png", "/data/cat/A12.png", "/data/fox/x.png"]
ROW_INDICES = np.array([0, 1, 3, 12])  # split positions (image 2 failed to load: a gap)
ROW_LABELS = np.array([0, 1, 0, 2])
ROW_PREDS = np.array([0, 0, 1, 2])


@pytest.mark.parametrize("query, expected", [
    ("", [0, 1, 2, 3]),
    ("12", [3]),             # a number is a split index, not a path substring (b12, A12 do not match)
    ("#3", [2]),
    ("# 1", [1]),
    ("a12", [2]),            # text: case-insensitive substring of the path
    ("/cat/", [0, 2]),
    ("zebra", []),
])
def test_filter_samples_search(query, expected):
    rows = filter_samples(ROW_INDICES, IDS, ROW_LABELS, ROW_PREDS, query=query)
    assert rows.tolist() == expected


def test_filter_samples_class_filters_combine_with_and():
    assert filter_samples(ROW_INDICES, IDS, ROW_LABELS, ROW_PREDS, label_classes=[0]).tolist() == [0, 2]
    assert filter_samples(ROW_INDICES, IDS, ROW_LABELS, ROW_PREDS, pred_classes=[0, 2]).tolist() == [0, 1, 3]
    # labelled cat AND predicted dog: the mistake cat -> dog only
    assert filter_samples(ROW_INDICES, IDS, ROW_LABELS, ROW_PREDS, label_classes=[0], pred_classes=[1]).tolist() == [2]
    assert filter_samples(ROW_INDICES, IDS, ROW_LABELS, ROW_PREDS, query="/cat/", pred_classes=[0]).tolist() == [0]
    # no predictions known: a prediction filter matches nothing, a label filter still works
    assert filter_samples(ROW_INDICES, IDS, ROW_LABELS, None, pred_classes=[0]).tolist() == []
    assert filter_samples(ROW_INDICES, IDS, ROW_LABELS, None, label_classes=[2]).tolist() == [3]


def test_filter_samples_multi_label():
    labels = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    preds = np.array([[True, False, False], [False, True, True], [False, False, True]])
    ids = ["x", "y", "z"]
    assert filter_samples(np.arange(3), ids, labels, preds, label_classes=[2]).tolist() == [0]
    assert filter_samples(np.arange(3), ids, labels, preds, pred_classes=[2]).tolist() == [1, 2]
    assert filter_samples(np.arange(3), ids, labels, preds, label_classes=[0, 1]).tolist() == [0, 1]


def test_sample_keys_and_references():
    assert sample_key("train", 12) == "train:12"
    with pytest.raises(ValueError, match="one of train, eval"):
        sample_key("test", 1)
    sizes = {"eval": 10, "train": 20}
    assert parse_sample("train", "19", sizes) == ("train", 19)
    assert parse_sample(None, "#3", sizes) == ("eval", 3)
    with pytest.raises(ValueError, match="no image 10 in the eval split"):
        parse_sample("eval", 10, sizes)
    with pytest.raises(ValueError, match="whole number"):
        parse_sample("eval", "abc", sizes)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        parse_sample("val", 1, sizes)


def test_prediction_change():
    assert prediction_change(False, True) == "fixed"
    assert prediction_change(True, False) == "broken"
    assert prediction_change(True, True) is None and prediction_change(False, False) is None
