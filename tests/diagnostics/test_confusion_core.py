"""Hand-computed checks of the pair error matrices and the target error."""

import numpy as np
import pytest

from diagnostics.confusion import (
    confusion_counts, confusion_rates, error_matrix, target_classes, target_error,
    type1conf_matrix, type2conf_matrix,
)


def test_type1conf_by_hand():
    # class 0: 4 samples, 1 predicted as 1;  class 1: 2 samples, 1 predicted as 0;  class 2: 2 correct
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 0, 1, 2, 2])
    counts = confusion_counts(labels, preds, 3)
    assert counts.tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert np.allclose(confusion_rates(counts).sum(1), 1)
    conf = type1conf_matrix(labels, preds, 3)
    assert conf[0, 1] == conf[1, 0] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert conf[0, 2] == 0 and np.all(np.diag(conf) == 0)


def test_type2conf_by_hand():
    # classes: person(0), bus(1), car(2)
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    preds = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=bool)
    conf = type2conf_matrix(labels, preds)
    # person present & bus absent: rows 0, 1 -> both predicted in row 0: 1/2
    # bus present & person absent: row 2 -> both predicted: 1/1
    assert conf[0, 1] == pytest.approx((0.5 + 1.0) / 2)
    assert conf[1, 0] == conf[0, 1]
    # person present & car absent: rows 0,1,3; car never predicted -> 0; car never present -> 0
    assert conf[0, 2] == 0
    assert np.allclose(error_matrix(labels, preds, 3, task="multi_label"), conf)


def test_target_error_pairs_and_cd():
    e = np.array([[0, 0.4, 0.1], [0.4, 0, 0.3], [0.1, 0.3, 0]])
    assert target_error(e, [(0, 1)]) == pytest.approx(0.4)
    assert target_error(e, [(0, 1), (1, 2)]) == pytest.approx(0.35)
    # cd(positive=1, negative=0, anchor=2) = |0.3 - 0.1|
    assert target_error(e, [(1, 0, 2)]) == pytest.approx(0.2)
    assert target_classes([(1, 0, 2)]) == [0, 1, 2]
    with pytest.raises(ValueError):
        target_error(e, [(0, 1), (0, 1, 2)])
