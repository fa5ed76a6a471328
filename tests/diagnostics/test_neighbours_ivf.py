"""IVF indexes for 1M-10M embeddings: layout by the FAISS guidelines, exact re-rank of lossy
codes, measured recall and the nprobe it picks, memmapped inputs."""

import os

import numpy as np
import pytest

import diagnostics.neighbours as nb
from diagnostics.neighbours import build_index, choose_ivf, exact_neighbours, search_neighbours
from workspace.errors import WorkspaceError
from tests.conftest import mapping_rss_kb


def _clusters(n=4000, d=16, k=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 3
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)


def test_layout_follows_the_faiss_guidelines():
    gib = 2 ** 30
    # 4 sqrt(1M) = 4000 -> 4096 cells; 1 GB of float32 fits the 4 GiB budget
    assert choose_ivf(1_000_000, 256) == "IVF4096,Flat"
    # 4 sqrt(50k) = 894 -> 1024; 4 sqrt(1000) = 126 -> 128, capped at 1000 // 30 = 33 cells
    assert choose_ivf(50_000, 64) == "IVF1024,Flat"
    assert choose_ivf(1_000, 8) == "IVF33,Flat"
    # past 1M: 65,536 cells under an HNSW32 graph; 5M x 256 float32 = 5.1 GB > 4 GiB -> SQ8
    assert choose_ivf(2_000_000, 256) == "IVF65536_HNSW32,Flat"
    assert choose_ivf(5_000_000, 256) == "IVF65536_HNSW32,SQ8"
    # past 10M: 262,144 cells; 20M x 512 bytes > 4 GiB -> PQ with 128 one-byte codes (<= d/4)
    assert choose_ivf(20_000_000, 512) == "IVF262144_HNSW32,PQ128"
    assert choose_ivf(20_000_000, 512, memory_budget=gib) == "IVF262144_HNSW32,PQ32"
    assert choose_ivf(10_000, 16, nlist=64, storage="sq8", quantizer="hnsw") == "IVF64_HNSW32,SQ8"
    with pytest.raises(WorkspaceError, match="valid: auto, flat, sq8, pq"):
        choose_ivf(10_000, 16, storage="zip")
    with pytest.raises(WorkspaceError, match="valid: auto, flat, hnsw"):
        choose_ivf(10_000, 16, quantizer="tree")
    with pytest.raises(WorkspaceError, match="do not fit"):
        choose_ivf(10_000_000, 16, memory_budget=1_000_000)


def test_exact_neighbours_by_hand_across_blocks(monkeypatch):
    x = np.array([[0.0], [1.0], [3.0], [7.0], [7.5]], dtype=np.float32)
    monkeypatch.setattr(nb, "ADD_BLOCK", 2)              # three blocks to merge
    got = exact_neighbours(x, np.array([0, 3, 2]), 2)
    # row 0: 1 (d 1), 2 (d 3); row 3: 4 (d .5), 2 (d 4); row 2: 1 (d 2), 0 (d 3) - never itself
    assert got.tolist() == [[1, 2], [4, 2], [1, 0]]


@pytest.mark.parametrize("storage, rerank", [("sq8", 4), ("pq", 10)])
def test_lossy_codes_are_reranked_to_exact_distances(storage, rerank):
    x = _clusters()
    index = build_index(x, kind="ivf", nlist=16, nprobe=16, storage=storage)
    assert index.rerank == rerank and index.vectors is x
    assert index.factory == ("IVF16,SQ8" if storage == "sq8" else "IVF16,PQ4")
    rows = np.arange(0, 4000, 37)
    dist, ids = search_neighbours(index, x, rows, 10)
    exact = np.linalg.norm(x[ids] - x[rows][:, None, :], axis=2)
    np.testing.assert_allclose(dist, exact, rtol=1e-5, atol=1e-5)   # what the radius test sees
    assert (np.diff(dist, axis=1) >= 0).all() and (ids != rows[:, None]).all()
    flat_d, _ = search_neighbours(build_index(x, kind="flat"), x, rows, 10)
    assert (dist >= flat_d - 1e-5).all()            # never closer than the true neighbours
    assert index.recall >= 0.9 and f"x{rerank} re-ranked exactly" in index.describe()


def test_hnsw_coarse_quantizer_probing_every_cell_is_exact():
    x = _clusters(seed=1)
    index = build_index(x, kind="ivf", nlist=32, nprobe=32, quantizer="hnsw")
    assert index.factory == "IVF32_HNSW32,Flat" and index.recall == pytest.approx(1.0)
    rows = np.arange(0, 4000, 101)
    d_ivf, i_ivf = search_neighbours(index, x, rows, 5)
    d_flat, i_flat = search_neighbours(build_index(x, kind="flat"), x, rows, 5)
    np.testing.assert_allclose(d_ivf, d_flat, rtol=1e-5)


def test_nprobe_is_raised_until_the_recall_target_is_met():
    x = np.random.default_rng(2).normal(size=(6000, 32)).astype(np.float32)   # no clusters: hard
    easy = build_index(x, kind="ivf", nlist=128, target_recall=0.0)
    assert easy.nprobe == 8
    strict = build_index(x, kind="ivf", nlist=128, target_recall=0.995)
    assert strict.nprobe in (16, 32, 64, 128)
    assert strict.recall >= 0.995 or strict.nprobe == 128
    assert strict.recall >= easy.recall
    # the reported recall is the recall of what search_neighbours returns
    sample = np.random.default_rng(0).choice(6000, 300, replace=False)
    truth = exact_neighbours(x, sample, 20)
    _, found = search_neighbours(strict, x, sample, 20)
    again = np.mean([len(set(f) & set(t)) / 20 for f, t in zip(found, truth)])
    assert again == pytest.approx(strict.recall, abs=0.02)


def test_memmapped_embeddings_give_the_same_neighbours(tmp_path, monkeypatch):
    monkeypatch.setattr(nb, "ADD_BLOCK", 1000)
    x = _clusters(seed=3)
    np.save(tmp_path / "x.npy", x)
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.arange(0, 4000, 53)
    for kind in ("flat", "ivf"):
        a = build_index(m, kind=kind, nlist=16, nprobe=4)
        b = build_index(x, kind=kind, nlist=16, nprobe=4)
        assert a.recall == b.recall
        da, ia = search_neighbours(a, m, rows, 8)
        db, ib = search_neighbours(b, x, rows, 8)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(da, db)


def test_non_finite_rows_in_a_later_block_are_refused(monkeypatch):
    monkeypatch.setattr(nb, "ADD_BLOCK", 100)
    x = _clusters(n=500)
    x[450, 3] = np.inf
    for kind in ("flat", "ivf"):
        with pytest.raises(WorkspaceError, match="NaN or infinite"):
            build_index(x, kind=kind, nlist=4)



@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_a_memmap_is_not_left_resident_after_indexing_and_search(tmp_path):
    x = _clusters(n=20000, d=32, seed=4)                 # 2.5 MB on disk
    np.save(tmp_path / "x.npy", x)
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    path = str((tmp_path / "x.npy").resolve())
    for kind in ("flat", "ivf"):
        index = build_index(m, kind=kind, storage="sq8")
        search_neighbours(index, m, np.arange(0, 20000, 7), 10)
        assert mapping_rss_kb(path) < 64, kind
    m[::5].sum()                                        # the probe does see pages read through it
    assert mapping_rss_kb(path) > 1000
