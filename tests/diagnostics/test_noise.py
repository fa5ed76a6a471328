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


def test_confident_joint_and_the_estimate_without_a_baseline():
    probs, labels = confident_set()
    assert N.confident_joint(probs, labels).tolist() == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    assert not N.estimate_label_errors(probs, labels).any()
    # labelled 0, class 1 at 0.98: t_1 = 0.99 (the label-1 samples' mean) is not reached; 0.995 reaches it
    labels2 = np.append(labels, 0)
    assert not N.estimate_label_errors(np.vstack([probs, [[0.01, 0.98, 0.01]]]), labels2).any()
    m = N.estimate_label_errors(np.vstack([probs, [[0.0025, 0.995, 0.0025]]]), labels2)
    assert m.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_the_held_out_baseline_removes_the_models_own_confident_errors():
    probs, labels = confident_set()
    wrong = [0.0025, 0.995, 0.0025]  # labelled 0, confidently class 1 (0.995 >= t_1 = 0.99)
    probs, labels = np.vstack([probs, [wrong, wrong]]), np.append(labels, [0, 0])  # C[0, 1] = 2 of n_0 = 6
    held_probs = np.array([CONF[0], CONF[0], wrong])  # the model errs on 1 of 3 held-out label-0 samples
    held_labels = np.array([0, 0, 0])
    # expected own errors: 6 * 1/3 = 2 = C[0, 1]: nothing is left for label errors
    assert not N.estimate_label_errors(probs, labels, heldout_probs=held_probs, heldout_labels=held_labels).any()
    held_probs, held_labels = np.vstack([held_probs, [CONF[0]] * 3]), np.zeros(6, dtype=int)
    m = N.estimate_label_errors(probs, labels, heldout_probs=held_probs, heldout_labels=held_labels)
    assert m[0, 1] == 1 and m.sum() == 1  # 2 - 6 * 1/6
    # classes 1 and 2 are absent from the held-out split: their rows keep C
    probs3 = np.vstack([probs, [[0.995, 0.0025, 0.0025]]])
    labels3 = np.append(labels, 2)  # labelled 2, confidently class 0 (t_0 = (4 * 0.99 + 2 * 0.0025) / 6)
    m = N.estimate_label_errors(probs3, labels3, heldout_probs=held_probs, heldout_labels=held_labels)
    assert m[2, 0] == 1
    with pytest.raises(ValueError, match="held-out probabilities have 2 classes"):
        N.estimate_label_errors(probs, labels, heldout_probs=np.ones((2, 2)) / 2, heldout_labels=np.array([0, 1]))


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
    assert table.attrs["confident_errors"] == 0 and table.attrs["noise_default"] == 0
    assert not table["noisy"].any() and table.attrs["heldout_share"] is None
    assert math.isnan(table.attrs["noise_threshold"]) and table.attrs["noisy_share"] == 0
    row = table.iloc[12]
    assert (row.pred, row.p_label, row.p_pred) == (0, 0.24, 0.75)
    assert row.ce == pytest.approx(ce_h) and row.entropy == pytest.approx(h_h)
    assert row.comp_loss == pytest.approx(ce_h / h_h) and row.noise_rank == 1


def two_mislabels() -> tuple[np.ndarray, np.ndarray]:
    probs, labels = confident_set()
    probs = np.vstack([probs, [HARD], [0.01, 0.98, 0.01], [0.98, 0.01, 0.01]])
    return probs, np.append(labels, [1, 0, 2])  # rows 13, 14: the model is sure of another class


def test_mislabelled_samples_are_flagged_and_the_hard_error_is_not():
    probs, labels = two_mislabels()
    table = N.noise_table(probs, labels)
    # t_0 = t_2 = (4 * 0.99 + 0.01) / 5 = 0.794, t_1 = 0.84: both 0.98 reach them, 0.75 does not
    assert table.attrs["confident_errors"] == 2 and table.attrs["noise_default"] == 2
    assert np.flatnonzero(table["noisy"]).tolist() == [13, 14]
    assert table["noisy_paper"].sum() == 2  # the mislabels' CE lifts delta to 6.79, above the hard error's 2.36
    assert table.attrs["noisy_share"] == pytest.approx(2 / 15)
    comp = -math.log(0.01) / -(0.98 * math.log(0.98) + 2 * 0.01 * math.log(0.01))
    assert table.attrs["noise_threshold"] == pytest.approx(comp)  # 41.2, the same for both
    assert table["noise_rank"].tolist()[13:] == [1, 2]  # a tie: the earlier row ranks first


def test_held_out_errors_of_the_same_kind_keep_a_sample_off_the_default_flag():
    probs, labels = two_mislabels()
    # on held-out data the model calls half of the label-2 samples class 0: row 14 (labelled 2,
    # predicted 0) is what it does anyway; expected 5 * 1/2 = 2.5 >= C[2, 0] = 1
    held_probs = np.array([CONF[2], [0.98, 0.01, 0.01]])
    table = N.noise_table(probs, labels, heldout_probs=held_probs, heldout_labels=np.array([2, 2]))
    assert np.flatnonzero(table["noisy"]).tolist() == [13] and table.attrs["noise_default"] == 1
    assert table.attrs["heldout_share"] == 0.5
    assert table["noise_rank"].tolist()[13:] == [1, 2]  # still the next most suspicious
    more = N.noise_table(probs, labels, heldout_probs=held_probs, heldout_labels=np.array([2, 2]), count=2)
    assert np.flatnonzero(more["noisy"]).tolist() == [13, 14] and more.attrs["noise_default"] == 1
    assert N.noise_table(probs, labels, count=10)["noisy"].sum() == 2  # never more than the paper flags


def test_select_per_pair():
    comp = np.array([5.0, 9.0, 7.0, 1.0, 3.0, 8.0])
    eligible = np.array([True, True, True, True, True, False])
    labels = np.array([0, 0, 0, 1, 1, 0])
    preds = np.array([1, 1, 2, 0, 0, 1])
    counts = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    # pair (0, 1): rows 0, 1 eligible (row 5 is not): the higher L~ is row 1; pair (1, 0): row 4 over row 3
    chosen = N.select_per_pair(comp, eligible, labels, preds, counts)
    assert np.flatnonzero(chosen).tolist() == [1, 4]


def test_noise_ranks_and_flag_top():
    comp, eligible = np.array([3.0, 9.0, 5.0, 2.0, 5.0]), np.array([True, False, True, True, True])
    ranks = N.noise_ranks(comp, eligible)
    assert ranks.tolist() == [3, 0, 1, 4, 2]  # the ineligible 9.0 gets no rank; the tie 5.0 keeps position order
    first = np.array([False, True, False, True, False])  # the default flags go first (row 1 is not eligible)
    assert N.noise_ranks(comp, eligible, first).tolist() == [4, 0, 2, 1, 3]
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


def test_flags_are_nested_and_ranked_on_random_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, size=500)
    held = rng.normal(size=(200, 5)) * 3
    held = np.exp(held) / np.exp(held).sum(1, keepdims=True)
    table = N.noise_table(probs, labels, heldout_probs=held, heldout_labels=rng.integers(0, 5, size=200))
    assert list(table.columns) == ["pred", "p_label", "p_pred", "ce", "entropy", "comp_loss", "noisy_paper",
                                   "noise_rank", "noisy"]
    assert not (table["noisy"] & ~table["noisy_paper"]).any()
    assert table.attrs["noise_default"] <= table.attrs["confident_errors"]
    paper = int(table["noisy_paper"].sum())
    assert sorted(table.loc[table["noise_rank"] > 0, "noise_rank"]) == list(range(1, paper + 1))
    half = N.noise_table(probs, labels, count=paper // 2)
    kept, left = half.loc[half["noisy"], "noise_rank"], half.loc[half["noisy_paper"] & ~half["noisy"], "noise_rank"]
    assert len(kept) == paper // 2 and kept.max() < left.min()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="need"):
        N.noise_table(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError, match="class indices"):
        N.noise_table(np.ones((2, 2)) / 2, np.array([0, 2]))
    with pytest.raises(ValueError, match="held-out probabilities have 3 classes"):
        N.noise_table(np.ones((2, 2)) / 2, np.array([0, 1]), heldout_probs=np.ones((2, 3)) / 3,
                      heldout_labels=np.array([0, 1]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_noise_table_equals_the_public_functions_composed(dtype, monkeypatch):
    """The block-by-block table gives the numbers of the public functions on the whole arrays,
    for float32 inputs (converted per block) too, with blocks that split the rows unevenly."""
    rng = np.random.default_rng(1)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(dtype)

    probs, labels = softmax(rng.normal(size=(403, 7)) * 4), rng.integers(0, 7, size=403)
    held, held_labels = softmax(rng.normal(size=(151, 7)) * 4), rng.integers(0, 7, size=151)
    original = N._blocks
    monkeypatch.setattr(N, "_blocks", lambda p, y, chunk: original(p, y, 50))   # 9 blocks, the last of 3 rows
    table = N.noise_table(probs, labels, heldout_probs=held, heldout_labels=held_labels)

    ce, entropy = N.loss_and_entropy(probs, labels)
    paper, comp, delta = N.paper_flag(probs, labels)
    counts = N.estimate_label_errors(probs, labels, heldout_probs=held, heldout_labels=held_labels)
    p64 = probs.astype(np.float64)
    pred = p64.argmax(1)
    default = N.select_per_pair(comp, paper, labels, pred, counts)
    np.testing.assert_array_equal(table["pred"], pred)
    np.testing.assert_array_equal(table["p_label"], p64[np.arange(403), labels])
    np.testing.assert_array_equal(table["ce"], ce)
    np.testing.assert_array_equal(table["entropy"], entropy)
    np.testing.assert_array_equal(table["comp_loss"], comp)
    np.testing.assert_array_equal(table["noisy_paper"], paper)
    np.testing.assert_array_equal(table["noise_rank"], N.noise_ranks(comp, paper, default))
    assert table.attrs["noise_default"] == int(default.sum()) > 0
    assert table.attrs["delta"] == delta
    joint = N.confident_joint(probs, labels)
    assert table.attrs["confident_errors"] == int(joint.sum() - np.trace(joint))
