"""w-os against hand-worked examples (WR paper 3.4)."""

import numpy as np
import pytest

from diagnostics.wos import affected_rows, apply_wos

PROBS = np.array([
    [0.50, 0.40, 0.10],   # pred 0 (target); 0.5*0.5=0.25 < 0.10? no -> stays target; rho 0.1 -> 0.05 < 0.10 -> class 2
    [0.30, 0.45, 0.25],   # pred 1 (target); rho 0.5 -> 0.225 < 0.25 -> class 2
    [0.20, 0.10, 0.70],   # pred 2 (not target): untouched
])


def test_single_label_pair():
    assert apply_wos(PROBS, [(0, 1)], 1.0).tolist() == [0, 1, 2]
    assert apply_wos(PROBS, [(0, 1)], 0.5).tolist() == [0, 2, 2]
    assert apply_wos(PROBS, [(0, 1)], 0.1).tolist() == [2, 2, 2]


def test_single_label_scaling_keeps_order_among_targets():
    probs = np.array([[0.45, 0.44, 0.11]])
    # both targets scaled by rho: the larger target stays ahead of the other target
    assert apply_wos(probs, [(0, 1)], 0.3).tolist() == [0]
    assert apply_wos(probs, [(0, 1)], 0.2).tolist() == [2]


def test_single_label_triplet_touches_anchor_predictions():
    probs = np.array([[0.1, 0.1, 0.5, 0.3]])   # predicted anchor 2
    assert apply_wos(probs, [(0, 1, 2)], 0.5).tolist() == [3]
    assert apply_wos(probs, [(0, 1)], 0.5).tolist() == [2]


def test_multi_label_confusion_needs_both_predicted():
    probs = np.array([
        [0.9, 0.8, 0.1],   # A and B predicted -> scaled
        [0.9, 0.2, 0.7],   # only A -> untouched
    ])
    out = apply_wos(probs, [(0, 1)], 0.6, task="multi_label")
    assert out.tolist() == [[True, False, False], [True, False, True]]


def test_multi_label_bias_rows():
    preds = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=bool)
    assert affected_rows(preds, [(0, 1, 2)], task="multi_label").tolist() == [True, True, False]


def test_rho_out_of_range():
    with pytest.raises(ValueError):
        apply_wos(PROBS, [(0, 1)], 1.5)
