"""The one before/after comparison, on hand-made outputs."""

import numpy as np
import pytest

from diagnostics.compare import compare_outputs
from workspace.cache import InferenceOutputs


def outputs(preds, labels=(0, 0, 1, 1, 2), indices=(0, 1, 2, 3, 4), task="single_label"):
    n = len(labels)
    return InferenceOutputs(logits=np.zeros((n, 3)), probs=np.full((n, 3), 1 / 3), preds=np.array(preds),
                            labels=np.array(labels), embeddings=None, indices=np.array(indices),
                            class_names=("a", "b", "c"), task=task, threshold=0.5)


def test_fixed_broken_rates_and_target_error():
    before = outputs([0, 1, 0, 1, 2])       # wrong: 1 (a->b), 2 (b->a)
    after = outputs([0, 0, 1, 0, 2])        # wrong: 3 (b->a)
    cmp = compare_outputs(before, after, targets=[(0, 1)])
    assert cmp.fixed.tolist() == [1, 2] and cmp.broken.tolist() == [3] and cmp.changed == 3 and cmp.n == 5
    assert cmp.accuracy == (pytest.approx(0.6), pytest.approx(0.8))
    assert cmp.before_rates[0].tolist() == [0.5, 0.5, 0.0] and cmp.after_rates[1].tolist() == [0.5, 0.5, 0.0]
    # type1conf(a, b): before (0.5 + 0.5) / 2 = 0.5, after (0 + 0.5) / 2 = 0.25
    assert cmp.target_error == (pytest.approx(0.5), pytest.approx(0.25))
    assert np.allclose(cmp.change, cmp.after_rates - cmp.before_rates)
    # improvement: + on the diagonal when it rises, + off the diagonal when it falls
    assert cmp.improvement[0, 0] == pytest.approx(0.5) and cmp.improvement[0, 1] == pytest.approx(0.5)
    assert cmp.improvement[1, 1] == pytest.approx(0.0) and cmp.improvement[2, 2] == 0


def test_identical_means_no_sample_and_no_rate_moved():
    same = compare_outputs(outputs([0, 1, 0, 1, 2]), outputs([0, 1, 0, 1, 2]))
    assert same.identical and same.changed == 0
    # wrong -> another wrong class: nothing fixed or broken, but a rate moved
    moved = compare_outputs(outputs([0, 1, 0, 1, 2]), outputs([0, 2, 0, 1, 2]))
    assert moved.changed == 0 and not moved.identical
    assert not compare_outputs(outputs([0, 1, 0, 1, 2]), outputs([0, 0, 0, 1, 2])).identical


def test_rows_are_matched_by_split_index():
    before = outputs([0, 1, 0, 1, 2])
    after = outputs([2, 1, 0], labels=(2, 1, 0), indices=(4, 1, 0))  # another order, a subset
    cmp = compare_outputs(before, after)
    assert cmp.n == 3 and cmp.fixed.tolist() == [1] and cmp.broken.tolist() == []


def test_multi_label_lower_confusion_is_better():
    labels = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    before = outputs(np.array([[1, 1, 0], [0, 1, 0]]), labels=labels, indices=(0, 1), task="multi_label")
    after = outputs(np.array([[1, 0, 0], [0, 1, 0]]), labels=labels, indices=(0, 1), task="multi_label")
    cmp = compare_outputs(before, after, targets=[(0, 1)])
    assert cmp.fixed.tolist() == [0] and cmp.target_error[0] > cmp.target_error[1] == 0
    assert cmp.improvement[0, 1] > 0 and np.allclose(cmp.improvement, -cmp.change)
