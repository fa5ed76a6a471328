"""Weakspots on a hand-made 2-D embedding whose pivotal points are known.

Layout (class id: 0 = "a", 1 = "b", 2 = "c"; every point is (label, pred)):

- A-cluster: (0,0) (1,0) (0,1) (1,1), all (0, 0).  M = (0.5, 0.5) is (1, 0): labelled b,
  predicted a, its four neighbours at 0.707 are labelled and predicted a -> pivotal b->a.
- B-cluster around P = (10, 0), which is (0, 1): labelled a, predicted b. Its neighbours
  (12,0) (8,0) (10,2) (10,-2) are (1, 1) at distance exactly 2 (squared 4), and (10,2.5) is
  (0, 0) at distance 2.5. Within d=3: 4 good of 5 -> purity 0.8 -> pivotal a->b at
  t_perp 0.7 but not at 0.9; within d=2.2: purity 1.0; within d=1: nobody -> not pivotal.
  A squared-distance bug would see nobody within d=3 (4 > 3).
- C-cluster (20,0) (20,1) (21,0): all (2, 1), labelled c, predicted b. Their neighbours are
  all *predicted* b but not *labelled* b -> purity 0, never pivotal.
- Q = (50, 0), (0, 1): far from everything -> no neighbour within any tested radius.
"""

import numpy as np
import pytest

from diagnostics.neighbours import build_index, search_neighbours
from diagnostics.weakspots import (
    RepresentativeSet, build_representative_set, count_weakspots_by_pair, count_weakspots_by_radius,
    find_neighbours, find_pivotal_images, neighbour_purity, project_pca, radius_grid, scan_weakspots,
    suggest_radius, weakspot_matrix,
)
from workspace.cache import InferenceOutputs
from workspace.errors import WorkspaceError

POINTS = [  # x, y, label, pred
    (0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0), (0.5, 0.5, 1, 0),        # rows 0-4, M=4
    (10, 0, 0, 1), (12, 0, 1, 1), (8, 0, 1, 1), (10, 2, 1, 1), (10, -2, 1, 1),      # rows 5-9, P=5
    (10, 2.5, 0, 0),                                                                 # row 10
    (20, 0, 2, 1), (20, 1, 2, 1), (21, 0, 2, 1),                                     # rows 11-13
    (50, 0, 0, 1),                                                                   # row 14, Q
]
M, P, Q = 4, 5, 14
NAMES = ("a", "b", "c")


@pytest.fixture
def rep() -> RepresentativeSet:
    arr = np.array(POINTS, dtype=np.float64)
    n = len(arr)
    return RepresentativeSet(arr[:, :2].astype(np.float32), arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64),
                             np.array(["train"] * 10 + ["eval"] * (n - 10)), np.r_[0:10, 0:n - 10], NAMES)


def test_queries_are_the_misclassified_and_self_is_excluded(rep):
    assert rep.misclassified.tolist() == [M, P, 11, 12, 13, Q]
    table = find_neighbours(rep, k=6)
    assert (table.neighbours != table.queries[:, None]).all()
    row_p = table.queries.tolist().index(P)
    np.testing.assert_allclose(table.distances[row_p, :5], [2, 2, 2, 2, 2.5], rtol=1e-6)  # L2, not squared
    assert set(table.neighbours[row_p, :4].tolist()) == {6, 7, 8, 9}
    assert table.neighbours[row_p, 4] == 10
    assert (np.diff(table.distances, axis=1) >= 0).all()


def test_purity_counts_only_neighbours_labelled_and_predicted_b(rep):
    table = find_neighbours(rep, k=10)
    purity, n_within = neighbour_purity(rep, table, radius=3.0)
    got = dict(zip(table.queries.tolist(), zip(purity.tolist(), n_within.tolist())))
    assert got[P] == (pytest.approx(0.8), 5)
    assert got[M] == (pytest.approx(1.0), 4)
    for c in (11, 12, 13):  # neighbours predicted b but labelled c
        assert got[c] == (0.0, 2)
    assert np.isnan(got[Q][0]) and got[Q][1] == 0


def test_pivotal_images_at_known_radii(rep):
    table = find_neighbours(rep, k=10)
    piv = find_pivotal_images(rep, table, radius=3.0, k=10, purity=0.7)
    assert sorted(piv["row"].tolist()) == [M, P]
    p = piv.set_index("row").loc[P]
    assert (p["split"], p["index"], p["label_name"], p["pred_name"]) == ("train", 5, "a", "b")
    assert p["purity"] == pytest.approx(0.8) and p["n_within"] == 5 and p["nearest"] == pytest.approx(2.0)
    assert piv["row"].tolist()[0] == M  # purest first
    assert find_pivotal_images(rep, table, radius=3.0, k=10, purity=0.9)["row"].tolist() == [M]
    assert sorted(find_pivotal_images(rep, table, radius=2.2, k=10, purity=0.9)["row"]) == [M, P]
    assert find_pivotal_images(rep, table, radius=1.0, k=10, purity=0.7)["row"].tolist() == [M]
    # k=4 keeps only P's four distance-2 neighbours: purity 1 even at d=3
    assert sorted(find_pivotal_images(rep, table, radius=3.0, k=4, purity=0.9)["row"]) == [M, P]
    # at least 5 neighbours within d required: only P has them (M has 4)
    assert find_pivotal_images(rep, table, radius=3.0, k=10, purity=0.7, min_neighbours=5)["row"].tolist() == [P]


def test_counts_by_radius_and_pair(rep):
    table = find_neighbours(rep, k=10)
    counts = count_weakspots_by_radius(rep, table, [3.0, 0.5, 1.0, 2.2, 100.0], k=10, purity=0.7)
    assert counts["radius"].tolist() == [0.5, 1.0, 2.2, 3.0, 100.0]
    # at d=100 all 10 neighbours count: P has 4 good of 10, M 5 of 10 (A-cluster + (10,2.5))
    assert counts["count"].tolist() == [0, 1, 2, 2, 0]
    piv = find_pivotal_images(rep, table, radius=3.0, k=10)
    pairs = count_weakspots_by_pair(piv, NAMES)
    assert pairs.to_dict("records") == [{"a": "a", "b": "b", "a_id": 0, "b_id": 1, "count": 2,
                                         "a_to_b": 1, "b_to_a": 1}]
    m = weakspot_matrix(piv, 3)
    assert m[0, 1] == 1 and m[1, 0] == 1 and m.sum() == 2


def test_vectorised_purity_matches_a_python_loop():
    rng = np.random.default_rng(1)
    n, k = 400, 7
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 4, n))
    rep = RepresentativeSet(emb, labels, preds, np.array(["eval"] * n), np.arange(n), tuple("wxyz"))
    table = find_neighbours(rep, k=k)
    radius = float(np.median(table.distances[:, 3]))
    purity, n_within = neighbour_purity(rep, table, radius=radius)
    for q, row in enumerate(table.queries):
        b = preds[row]
        near = [j for j, d in zip(table.neighbours[q], table.distances[q]) if d <= radius]
        good = [j for j in near if labels[j] == b and preds[j] == b]
        assert n_within[q] == len(near)
        if near:
            assert purity[q] == pytest.approx(len(good) / len(near))
        else:
            assert np.isnan(purity[q])


def test_duplicates_keep_each_other_but_not_themselves():
    emb = np.array([[0, 0], [0, 0], [0, 0], [5, 5]], dtype=np.float32)
    index = build_index(emb)
    dist, ids = search_neighbours(index, emb, np.arange(4), 2)
    for row in range(3):
        assert row not in ids[row] and set(ids[row]) == set(range(3)) - {row}
        np.testing.assert_array_equal(dist[row], [0, 0])
    assert ids[3, 0] in (0, 1, 2) and dist[3, 0] == pytest.approx(np.sqrt(50))


def test_ivf_index_reports_its_measured_recall():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 8)).astype(np.float32)
    exact = build_index(emb, kind="auto")
    assert exact.kind == "flat" and exact.recall == 1.0
    ivf = build_index(emb, kind="auto", ivf_threshold=1000, nlist=16, nprobe=16)  # probes every cell
    assert ivf.kind == "ivf" and ivf.recall == pytest.approx(1.0)
    assert "recall@20 100.0%" in ivf.describe()
    rough = build_index(emb, kind="ivf", nlist=32, nprobe=1)
    assert 0.0 < rough.recall < 1.0 and f"{rough.recall:.1%}" in rough.describe()
    with pytest.raises(WorkspaceError, match="valid: auto, flat, ivf"):
        build_index(emb, kind="hnsw")
    with pytest.raises(WorkspaceError, match="NaN"):
        build_index(np.full((3, 2), np.nan, dtype=np.float32))


def test_suggested_radius_from_the_distance_distribution():
    dist = np.array([[1, 2, 3], [2, 4, 6], [3, 6, 9]], dtype=np.float32)
    s = suggest_radius(dist, k=3)
    assert s.suggested == pytest.approx(6.0)              # median 3rd-neighbour distance
    assert s.low == pytest.approx(1.1)                    # 5th percentile of 1st-neighbour distance
    assert s.high == pytest.approx(8.7)                   # 95th percentile of 3rd-neighbour distance
    assert suggest_radius(dist, k=1).suggested == pytest.approx(2.0)
    grid = radius_grid(s, n=4)
    assert grid[0] == pytest.approx(1.1) and grid[-1] == pytest.approx(8.7) and 6.0 in grid.tolist()


def test_scan_and_json_shape(rep):
    scan = scan_weakspots(rep, radius=3.0, k=10, purity=0.7, radii=[1.0, 3.0])
    out = scan.to_dict()
    assert list(out) == ["radius", "k", "purity", "pivotal", "pairs", "counts_by_radius"]
    assert out["pivotal"][1] == {"index": 5, "split": "train", "label": "a", "pred": "b", "purity": pytest.approx(0.8)}
    assert out["pairs"] == [{"a": "a", "b": "b", "count": 2}]
    assert out["counts_by_radius"] == [{"radius": 1.0, "count": 1}, {"radius": 3.0, "count": 2}]
    auto = scan_weakspots(rep, radius="auto", k=3)
    assert auto.radius == pytest.approx(auto.suggestion.suggested)
    assert any(r["radius"] == pytest.approx(auto.radius) for r in auto.to_dict()["counts_by_radius"])
    for bad in ({"radius": "big"}, {"radius": -1.0}, {"radius": 1.0, "purity": 0.0}, {"radius": 1.0, "k": 0}):
        with pytest.raises(WorkspaceError):
            scan_weakspots(rep, **bad)


def _outputs(split, emb, task="single_label"):
    n = 4
    labels = np.zeros((n, 2), np.float32) if task == "multi_label" else np.zeros(n, np.int64)
    return InferenceOutputs(np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32), labels.astype(np.int64),
                            labels, emb, np.arange(n), ("x", "y"), task=task, split=split, model_version="v1")


def test_representative_set_and_clear_messages():
    rep = build_representative_set(_outputs("train", np.ones((4, 3), np.float32)),
                                   _outputs("eval", np.zeros((4, 3), np.float32)))
    assert rep.n == 8 and rep.splits.tolist() == ["train"] * 4 + ["eval"] * 4
    assert rep.row_of("eval", 2) == 6
    with pytest.raises(WorkspaceError, match="gives no embeddings"):
        build_representative_set(_outputs("train", None))
    with pytest.raises(WorkspaceError, match="single-label"):
        build_representative_set(_outputs("train", np.ones((4, 3), np.float32), task="multi_label"))


def test_pca_recovers_the_main_axis():
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    emb = np.c_[t * 10, t * 10, rng.normal(size=500) * 0.1, rng.normal(size=500) * 0.01]
    xy = project_pca(emb)
    assert xy.shape == (500, 2)
    assert abs(np.corrcoef(xy[:, 0], t)[0, 1]) > 0.999


def test_neighbourhood_counts_equal_the_elementwise_comparison():
    from diagnostics.weakspots import _counts_within

    rng = np.random.default_rng(3)
    dist = np.sort(rng.gamma(2.0, 1.0, size=(50, 12)).astype(np.float32), axis=1)
    dist[:5, -3:] = np.inf  # missing neighbours
    dist[5:10] = np.round(dist[5:10], 1)  # distances equal to a radius
    good = rng.random((50, 12)) < 0.6
    radii = np.array([2.0, 0.5, 1.3, 0.1, 5.0, 2.0, 100.0, float(dist[7, 3])])  # unsorted, repeated, a tie
    within, n_good = _counts_within(dist, good, radii)
    brute = dist[..., None] <= radii.reshape(1, 1, -1)
    np.testing.assert_array_equal(within, brute.sum(axis=1))
    np.testing.assert_array_equal(n_good, (brute & good[..., None]).sum(axis=1))
    assert within.dtype == n_good.dtype == np.int64
