"""Biased triplets grouped by the confused pair that explains them (hand-checked 4- and 6-class cases)."""

import numpy as np
import pytest

from diagnostics.confusion import rank_biased_triplets
from diagnostics.triplet_groups import (
    PAIR, TRIPLET, drop_pairs, group_triplets, pair_explained, pair_negatives, rank_triplet_groups, target_pairs,
)

NAMES = ["cat", "dog", "bird", "ship"]


def _sym(k, entries):
    e = np.zeros((k, k))
    for (a, b), v in entries.items():
        e[a, b] = e[b, a] = v
    return e


# cat/dog confused at 0.30, bird/ship at 0.20; every other pair at most 0.02
E1 = _sym(4, {(0, 1): 0.30, (2, 3): 0.20, (0, 2): 0.02, (1, 3): 0.01})
# as E1 but cat is also confused with ship (0.10): (bird, cat, ship) is a bias of its own
E2 = _sym(4, {(0, 1): 0.30, (2, 3): 0.20, (0, 3): 0.10})


def test_pair_explained_is_the_share_of_the_positive_error_kept_by_cd():
    # cd = 0.30 - 0.06 keeps exactly 80 % of 0.30: explained; 0.07 keeps less
    got = pair_explained([0.30, 0.30, 0.30, 0.0], [0.06, 0.07, 0.0, 0.0], share=0.8)
    assert got.tolist() == [True, False, True, False]   # cd 0 (error_pos 0) is never explained
    # the default 0.5: the negative is confused with the anchor at most half as often
    assert pair_explained([0.30, 0.30], [0.15, 0.16]).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"share must lie in \(0, 1\]"):
        pair_explained([0.3], [0.0], share=0.0)


def test_target_pairs_of_pairs_and_triplets():
    assert target_pairs([(1, 0), (2, 3), (0, 1)]) == [(0, 1), (2, 3)]
    # a bias target's pair is (positive, anchor): the confusion that makes the bias
    assert target_pairs([(0, 2, 1)]) == [(0, 1)]
    with pytest.raises(ValueError, match="pair or a triplet"):
        target_pairs([(0, 1, 2, 3)])


def test_pair_negatives_are_the_classes_rarely_confused_with_the_anchor():
    # anchor dog (column 1 = [0.30, 0, 0, 0.01]); limit 0.2 * 0.30 = 0.06: bird (0) then ship (0.01)
    assert pair_negatives(E1, 0, 1).tolist() == [2, 3]
    # anchor cat (column 0 = [0, 0.30, 0.02, 0]): ship (0) before bird (0.02)
    assert pair_negatives(E1, 1, 0).tolist() == [3, 2]
    # anchor ship in E2: cat is confused with ship at 0.10 > 0.2 * 0.20, so only dog is a negative of bird;
    # at the default share 0.5 the limit is 0.10 and cat counts too (after dog: a higher error)
    assert pair_negatives(E2, 2, 3, share=0.8).tolist() == [1]
    assert pair_negatives(E2, 2, 3).tolist() == [1, 0]
    assert pair_negatives(E1, 2, 0, share=0.8).tolist() == [3]   # error(bird, cat) = 0.02, limit 0.004: ship (0)


def test_every_triplet_of_a_confused_pair_lands_in_one_group():
    ranked = rank_biased_triplets(E1, NAMES)
    grouped = group_triplets(ranked, E1, NAMES)
    assert grouped.kind.tolist() == [PAIR] * len(grouped)
    first, second = grouped.iloc[0], grouped.iloc[1]
    assert (first.group, first.a_id, first.b_id) == ("cat / dog", 0, 1)
    # (dog, ship, cat) cd 0.30 ranks first (anchor cat before anchor dog on the tie)
    assert (first.positive_id, first.negative_id, first.anchor_id) == (1, 3, 0) and first.cd == pytest.approx(0.30)
    # its four triplets: (dog, ship, cat), (cat, bird, dog), (cat, ship, dog), (dog, bird, cat)
    members = {tuple(ranked.loc[r, ["positive_id", "negative_id", "anchor_id"]]) for r in first.rows}
    assert members == {(1, 3, 0), (0, 2, 1), (0, 3, 1), (1, 2, 0)}
    assert first.ranked == 4 and first.negatives == 4 and first.anchors == "cat, dog"
    assert first.pair_error == pytest.approx(0.30)
    assert (second.group, second.ranked) == ("bird / ship", 4)
    assert sum(grouped.ranked) == len(ranked)   # every triplet in exactly one group
    assert sorted(r for rows in grouped.rows for r in rows) == list(range(len(ranked)))


def test_a_genuine_bias_stays_a_triplet_of_its_own():
    ranked = rank_biased_triplets(E2, NAMES)
    grouped = group_triplets(ranked, E2, NAMES, share=0.8)
    genuine = grouped[grouped.kind == TRIPLET]
    # (dog, ship, cat): 0.30 vs 0.10 keeps 67 %; (bird, cat, ship): 0.20 vs 0.10 keeps 50 %
    assert genuine.group.tolist() == ["dog / ship | cat", "bird / cat | ship"]
    row = genuine.iloc[1]
    assert (row.positive_id, row.negative_id, row.anchor_id) == (2, 0, 3)
    assert row.cd == pytest.approx(0.10) and row.error_neg == pytest.approx(0.10) and row.negatives == 1
    # with the default share 0.5 both count as explained by their pair (0.10 <= 0.5 * 0.20)
    loose = group_triplets(ranked, E2, NAMES)
    assert TRIPLET not in set(loose.kind)
    # without grouping every biased triplet is its own row; (bird, ship, dog) and (cat, dog, bird) have cd 0
    assert len(group_triplets(ranked, E2, NAMES, share=None)) == len(ranked) - 2 == int((ranked.cd > 0).sum())


def test_drop_pairs_removes_the_triplets_of_a_pair_in_either_order():
    ranked = rank_biased_triplets(E1, NAMES)
    kept = drop_pairs(ranked, [(1, 0)])
    lo = np.minimum(kept.positive_id, kept.anchor_id)
    hi = np.maximum(kept.positive_id, kept.anchor_id)
    assert not ((lo == 0) & (hi == 1)).any()
    assert len(kept) == len(ranked) - 4
    assert kept.cd.is_monotonic_decreasing and list(kept.index) == list(range(len(kept)))
    assert len(drop_pairs(ranked, [])) == len(ranked)


def test_rank_triplet_groups_ranks_deeper_until_enough_groups():
    # 6 classes, three confused pairs (0,1) > (2,3) > (4,5): each explains 8 triplets
    e = _sym(6, {(0, 1): 0.30, (2, 3): 0.20, (4, 5): 0.10})
    tops = []

    def rank(errors, names, *, top, anchors):
        tops.append(top)
        return rank_biased_triplets(errors, names, top=top, anchors=anchors)

    grouped, kept = rank_triplet_groups(e, None, rank=rank, groups=2, first=4)
    # top 4: one group; top 16: two groups, not yet a third to prove the second complete; top 60 (all)
    assert tops == [4, 16, 60]
    # 24 triplets have cd > 0 (8 per pair); the other 36 are left out
    assert grouped.group.tolist() == ["0 / 1", "2 / 3"] and len(kept) == 24
    tops.clear()
    grouped, _ = rank_triplet_groups(e, None, rank=rank, groups=2, first=4, exclude=[(1, 0)])
    assert grouped.group.tolist() == ["2 / 3", "4 / 5"]
    # only the biases no single pair explains: none here, every triplet is one pair's
    grouped, _ = rank_triplet_groups(e, None, rank=rank, groups=2, kinds=["triplet"])
    assert grouped.empty
    with pytest.raises(ValueError, match="kinds must be among"):
        rank_triplet_groups(e, None, rank=rank, kinds=["pairs"])
    # the anchor filter is passed on
    grouped, kept = rank_triplet_groups(e, None, rank=rank, groups=5, anchors=[5])
    assert set(kept.anchor_id) == {5} and grouped.group.tolist()[0] == "4 / 5"


def test_planted_demo_triplet_is_in_the_planted_pair_group(demo_ws, demo_eval):
    from diagnostics.confusion import error_matrix

    e = error_matrix(demo_eval.labels, demo_eval.preds, demo_eval.num_classes)
    names = list(demo_eval.class_names)
    grouped, kept = rank_triplet_groups(e, names, rank=rank_biased_triplets, groups=5)
    top = grouped.iloc[0]
    assert top.kind == PAIR and {names[top.a_id], names[top.b_id]} == set(demo_ws.planted["confused_pair"])
    planted = list(demo_ws.planted["biased_triplet"])
    members = [kept.loc[r, ["positive", "negative", "anchor"]].tolist() for r in top.rows]
    assert planted in members


def test_only_the_triplets_no_pair_explains():
    # E2 at share 0.8: two genuine triplets among the pair groups
    tops = []

    def rank(errors, names, *, top, anchors):
        tops.append(top)
        return rank_biased_triplets(errors, names, top=top, anchors=anchors)

    grouped, kept = rank_triplet_groups(E2, NAMES, rank=rank, groups=5, share=0.8, kinds=[TRIPLET], first=2)
    assert grouped.group.tolist() == ["dog / ship | cat", "bird / cat | ship"]
    assert tops == [2, 8, 12]   # deeper until every triplet (12) is ranked: no third genuine one exists
    rows = [kept.loc[r, ["positive", "negative", "anchor"]].tolist() for r in grouped.rows.sum()]
    assert rows == [["dog", "ship", "cat"], ["bird", "cat", "ship"]]
