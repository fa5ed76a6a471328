"""Top-k biased triplets read off sorted columns: identical to ranking every triplet.

The reference is the exhaustive ranking (``top=None``, every triplet built and sorted), cut
to ``top`` rows. Ties are the hard part (cd desc, then error_pos desc, then anchor, then
pair index; on equal errors the lower class index is positive), so most matrices here are
full of them.
"""

import numpy as np
import pytest

import diagnostics.confusion as confusion
from diagnostics.confusion import rank_biased_triplets


def _matrix(kind: str, k: int, rng: np.random.Generator, symmetric: bool = True) -> np.ndarray:
    m = rng.random((k, k))
    if kind == "rounded":                    # values on a 0.1 grid: many exact ties
        m = np.round(m, 1)
    elif kind == "zeros":                    # mostly zero, a few rounded values
        m = np.where(rng.random((k, k)) < 0.7, 0.0, np.round(m, 1))
    elif kind == "constant":
        m = np.full((k, k), 0.3)
    elif kind == "three":                    # three levels only
        m = rng.integers(0, 3, (k, k)) * 0.1
    e = (m + m.T) / 2 if symmetric else m.copy()
    np.fill_diagonal(e, 0.0)
    return e


def _reference(e: np.ndarray, top: int, anchors=None):
    full = rank_biased_triplets(e)                       # exhaustive: every triplet, sorted
    if anchors is not None:
        full = full[full.anchor_id.isin(anchors)]
    return full.head(top).reset_index(drop=True)


@pytest.mark.parametrize("kind", ["random", "rounded", "zeros", "constant", "three"])
@pytest.mark.parametrize("k", [3, 4, 7, 30])
def test_top_k_equals_the_exhaustive_ranking(kind, k):
    rng = np.random.default_rng(k)
    total = k * (k - 1) * (k - 2) // 2
    for symmetric in (True, False):
        e = _matrix(kind, k, rng, symmetric)
        for top in (1, 5, total, total + 4):
            got = rank_biased_triplets(e, top=top)
            assert got.equals(_reference(e, top)), (kind, k, symmetric, top)
        anchors = [k - 1, 0] if k > 3 else [1]
        for top in (1, 5, total):
            got = rank_biased_triplets(e, top=top, anchors=anchors)
            assert set(got.anchor_id) <= set(anchors)
            assert got.equals(_reference(e, top, anchors)), (kind, k, symmetric, top, "anchors")


def test_constant_matrix_ranks_by_anchor_then_pair_by_hand():
    e = np.full((4, 4), 0.25)
    np.fill_diagonal(e, 0.0)
    t = rank_biased_triplets(e, top=5)
    # every cd is 0 and every error_pos 0.25: anchor 0's pairs (1,2) (1,3) (2,3), then anchor 1's
    # (0,2) (0,3); on equal errors the lower class index is the positive
    assert t[["positive_id", "negative_id", "anchor_id"]].values.tolist() == [
        [1, 2, 0], [1, 3, 0], [2, 3, 0], [0, 2, 1], [0, 3, 1]]
    assert (t["cd"] == 0).all() and (t["error_pos"] == 0.25).all()


def test_ties_on_cd_break_by_error_pos_then_anchor_by_hand():
    # E01 = .5, E02 = 0, E03 = .25, E12 = .25, E13 = 0, E23 = .5. Each anchor's column holds
    # 0, .25 and .5, so each anchor has one triplet with cd .5 (error_pos .5), one with cd .25
    # and error_pos .5, and one with cd .25 and error_pos .25.
    e = np.array([[0.0, 0.5, 0.0, 0.25],
                  [0.5, 0.0, 0.25, 0.0],
                  [0.0, 0.25, 0.0, 0.5],
                  [0.25, 0.0, 0.5, 0.0]])
    t = rank_biased_triplets(e, top=12)
    assert t[["positive_id", "negative_id", "anchor_id"]].values.tolist() == [
        [1, 2, 0], [0, 3, 1], [3, 0, 2], [2, 1, 3],      # cd .5: anchor order
        [1, 3, 0], [0, 2, 1], [3, 1, 2], [2, 0, 3],      # cd .25, error_pos .5 ...
        [3, 2, 0], [2, 3, 1], [1, 0, 2], [0, 1, 3]]      # ... before error_pos .25, any anchor
    assert t["cd"].tolist() == [0.5] * 4 + [0.25] * 8
    assert t["error_pos"].tolist() == [0.5] * 8 + [0.25] * 4
    assert rank_biased_triplets(e, top=6).equals(t.head(6))


def test_rounded_differences_that_collide_stay_exact():
    # 1.0 - 1e-17 == 1.0 - 0.0 in float64: two cells of one anchor share a ranking key, so
    # their triplets interleave by pair index
    rng = np.random.default_rng(5)
    e = rng.choice([1.0, 1e-17, 0.0, 2e-17, 0.5, 0.5 + 1e-16], size=(40, 40))
    np.fill_diagonal(e, 0.0)
    assert 1.0 - 1e-17 == 1.0 - 0.0
    for top in (1, 3, 50, 700):
        assert rank_biased_triplets(e, top=top).equals(_reference(e, top)), top


def test_deeper_looks_and_anchor_pruning_stay_exact(monkeypatch):
    # one entry per column side on first look: almost every anchor must be looked at again;
    # two anchors in the first round, so anchors left unseen must be ruled out by their range
    monkeypatch.setattr(confusion, "FIRST_DEPTH", 1)
    monkeypatch.setattr(confusion, "FIRST_BATCH", 2)
    monkeypatch.setattr(confusion, "TRIPLET_BLOCK", 300)       # a few anchors per block
    rng = np.random.default_rng(11)
    for kind in ("random", "rounded", "three", "constant", "zeros"):
        e = _matrix(kind, 60, rng)
        for top in (1, 9, 400):
            assert rank_biased_triplets(e, top=top).equals(_reference(e, top)), (kind, top)


def test_anchors_left_unseen_are_ruled_out_exactly(monkeypatch):
    # one anchor per round: an anchor whose range equals the top-th cd must still be looked
    # at when its largest entry (the best error_pos it can give) is higher
    monkeypatch.setattr(confusion, "FIRST_BATCH", 1)
    rng = np.random.default_rng(4)
    for trial in range(40):
        k = (6, 8, 12)[trial % 3]
        m = np.round(rng.random((k, k)) * 4) / 4           # quarter grid: ties everywhere
        e = (m + m.T) / 2 if trial % 2 else m
        np.fill_diagonal(e, 0.0)
        for top in (1, 2, 3, 5, 8):
            assert rank_biased_triplets(e, top=top).equals(_reference(e, top)), (trial, top)


def test_matches_the_blockwise_enumeration_on_150_classes():
    rng = np.random.default_rng(2)
    e = _matrix("random", 150, rng)
    e[:, 7] = e[7, :] = np.round(e[7], 2)            # one coarse anchor among fine ones
    e[7, 7] = 0.0
    got = rank_biased_triplets(e, top=100)
    ref = confusion._exhaustive_top(e, np.arange(150), 100)
    assert got["positive_id"].tolist() == ref["positive"].tolist()
    assert got["negative_id"].tolist() == ref["negative"].tolist()
    assert got["anchor_id"].tolist() == ref["anchor"].tolist()
    assert got["cd"].tolist() == ref["cd"].tolist()


def test_bad_input_is_refused():
    e = np.zeros((4, 4))
    with pytest.raises(ValueError, match="NaN"):
        rank_biased_triplets(np.full((4, 4), np.nan), top=3)
    with pytest.raises(ValueError, match=r"anchors must be class indices in \[0, 4\)"):
        rank_biased_triplets(e, top=3, anchors=[4])
    with pytest.raises(ValueError, match="square"):
        rank_biased_triplets(np.zeros((3, 4)), top=3)
    assert len(rank_biased_triplets(e, top=0)) == 0
    assert len(rank_biased_triplets(e, top=3, anchors=[])) == 0
    assert len(rank_biased_triplets(np.zeros((2, 2)), top=3)) == 0
