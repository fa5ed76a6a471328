"""The likely-mislabelled flag (diagnostics.noise) on hand-made probabilities where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diagnostics import noise as N

CONF = {0: [0.99, 0.005, 0.005], 1: [0.005, 0.99, 0.005], 2: [0.005, 0.005, 0.99]}
HARD = [0.75, 0.24, 0.01]  # labelled 1, predicted 0 with a plausible 0.24 left on the label: a hard error


def confident_set(per_class: int = 4) -> tuple[np.ndarray, np.ndarray]:
    probs = np.array([CONF[c] for c in range(3) for _ in range(per_class)])
    return probs, np.repeat(np.arange(3), per_class)


def test_loss_and_entropy_hand_values():
    ce, h = N.loss_and_entropy(np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1]))
    np.testing.assert_allclose(ce, [math.log(2), -math.log(0.75)])
    np.testing.assert_allclose(h, [math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])


def test_self_confidence_thresholds_are_class_means_of_the_label_probability():
    probs = np.array([[0.9, 0.1, 0.0], [0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [0.4, 0.6, 0.0]])
    t = N.self_confidence_thresholds(probs, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(t[:2], [0.8, 0.7])  # (0.9 + 0.7) / 2, (0.8 + 0.6) / 2
    assert t[2] == np.inf  # nobody is labelled 2: nothing can be confidently assigned to it


def test_confident_class_picks_the_most_probable_class_over_its_threshold():
    t = np.array([0.8, 0.7, 0.2])
    probs = np.array([[0.9, 0.1, 0.0],     # only class 0 reaches 0.8
                      [0.7, 0.3, 0.0],     # nothing reaches its threshold
                      [0.05, 0.72, 0.23],  # classes 1 and 2 both reach theirs: 1 is more probable
                      [0.75, 0.0, 0.25]])  # only class 2 reaches its threshold (0.75 < 0.8)
    labels = np.array([0, 0, 2, 0])
    assert N.confident_class(probs, labels, t).tolist() == [0, -1, 1, 2]


def test_estimate_counts_samples_confidently_in_another_class():
    probs, labels = confident_set()
    assert N.estimate_label_errors(probs, labels) == 0
    # labelled 0, class 1 at 0.98: t_1 = 0.99 (the label-1 samples' mean) is not reached; 0.995 reaches it
    labels2 = np.append(labels, 0)
    assert N.estimate_label_errors(np.vstack([probs, [[0.01, 0.98, 0.01]]]), labels2) == 0
    assert N.estimate_label_errors(np.vstack([probs, [[0.0025, 0.995, 0.0025]]]), labels2) == 1


def test_a_hard_error_meets_the_paper_rule_but_is_not_flagged():
    probs, labels = confident_set()
    probs, labels = np.vstack([probs, [HARD]]), np.append(labels, 1)
    table = N.noise_table(probs, labels)
    ce_c, h_c = -math.log(0.99), -(0.99 * math.log(0.99) + 2 * 0.005 * math.log(0.005))
    ce_h, h_h = -math.log(0.24), -(0.75 * math.log(0.75) + 0.24 * math.log(0.24) + 0.01 * math.log(0.01))
    delta = (12 * ce_c + ce_h) / (12 * h_c + h_h)  # = 1.138
    assert table.attrs["delta"] == pytest.approx(delta)
    assert ce_h / h_h > delta > ce_c / h_c  # the paper flags the hard error (L~ = 2.36) and nothing else
    assert table["noisy_paper"].tolist() == [False] * 12 + [True]
    # t_0 = 0.99 (all four label-0 samples): 0.75 does not reach it, and 0.24 < t_1 = (4 * 0.99 + 0.24) / 5
    assert table.attrs["class_thresholds"] == pytest.approx([0.99, 0.84, 0.99])
    assert table.attrs["noise_estimate"] == 0 and not table["noisy"].any()
    assert math.isnan(table.attrs["noise_threshold"]) and table.attrs["noisy_share"] == 0
    row = table.iloc[12]
    assert (row.pred, row.p_label, row.p_pred) == (0, 0.24, 0.75)
    assert row.ce == pytest.approx(ce_h) and row.entropy == pytest.approx(h_h)
    assert row.comp_loss == pytest.approx(ce_h / h_h) and row.noise_rank == 1


def test_mislabelled_samples_are_flagged_and_the_hard_error_is_not():
    probs, labels = confident_set()
    probs = np.vstack([probs, [HARD], [0.01, 0.98, 0.01], [0.98, 0.01, 0.01]])
    labels = np.append(labels, [1, 0, 2])  # rows 13, 14: the model is sure of another class
    table = N.noise_table(probs, labels)
    # t_0 = t_2 = (4 * 0.99 + 0.01) / 5 = 0.794, t_1 = 0.84: both 0.98 reach them, 0.75 does not
    assert table.attrs["noise_estimate"] == 2
    assert np.flatnonzero(table["noisy"]).tolist() == [13, 14]
    assert table["noisy_paper"].sum() == 2  # the mislabels' CE lifts delta to 6.79, above the hard error's 2.36
    assert table.attrs["noisy_share"] == pytest.approx(2 / 15)
    comp = -math.log(0.01) / -(0.98 * math.log(0.98) + 2 * 0.01 * math.log(0.01))
    assert table.attrs["noise_threshold"] == pytest.approx(comp)  # 41.2, the same for both
    assert table["noise_rank"].tolist()[13:] == [1, 2]  # a tie: the earlier row ranks first


def test_the_count_cuts_the_paper_flags_by_compensated_loss():
    probs, labels = confident_set()
    probs = np.vstack([probs, [HARD], [0.01, 0.98, 0.01], [0.98, 0.01, 0.01]])
    labels = np.append(labels, [1, 0, 2])
    table = N.noise_table(probs, labels, count=1)
    assert np.flatnonzero(table["noisy"]).tolist() == [13]
    assert N.noise_table(probs, labels, count=10)["noisy"].sum() == 2  # never more than the paper flags


def test_noise_ranks_and_flag_top():
    ranks = N.noise_ranks(np.array([3.0, 9.0, 5.0, 2.0, 5.0]), np.array([True, False, True, True, True]))
    assert ranks.tolist() == [3, 0, 1, 4, 2]  # the ineligible 9.0 gets no rank; the tie 5.0 keeps position order
    assert N.flag_top(ranks, 2).tolist() == [False, False, True, False, True]
    assert N.flag_top(ranks, 0).tolist() == [False] * 5
    assert N.flag_top(ranks, 99).tolist() == [True, False, True, True, True]
    with pytest.raises(ValueError, match="count must be >= 0"):
        N.flag_top(ranks, -1)


def test_count_for_share():
    assert N.count_for_share(0.0, 50_000) == 0
    assert N.count_for_share(0.002, 50_000) == 100
    assert N.count_for_share(0.5, 3) == 2  # 1.5 rounds half up
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\]"):
        N.count_for_share(1.5, 10)


def test_flags_are_nested_and_sizes_hold_on_random_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, size=500)
    table = N.noise_table(probs, labels)
    assert list(table.columns) == ["pred", "p_label", "p_pred", "ce", "entropy", "comp_loss", "noisy_paper",
                                   "noise_rank", "noisy"]
    assert not (table["noisy"] & ~table["noisy_paper"]).any()
    assert table["noisy"].sum() == min(table.attrs["noise_estimate"], table["noisy_paper"].sum())
    half = N.noise_table(probs, labels, count=int(table["noisy_paper"].sum()) // 2)
    kept, left = half.loc[half["noisy"], "comp_loss"], half.loc[half["noisy_paper"] & ~half["noisy"], "comp_loss"]
    assert len(left) >= len(kept) > 0 and kept.min() >= left.max()
    assert sorted(table.loc[table["noise_rank"] > 0, "noise_rank"]) == list(range(1, table["noisy_paper"].sum() + 1))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="need"):
        N.noise_table(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        N.noise_table(np.ones((2, 2)) / 2, np.array([0, 2]))
