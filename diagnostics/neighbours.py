"""Nearest neighbours of embeddings with FAISS (the only module that imports faiss).

Exact search uses ``faiss.IndexFlatL2`` as in the weak-boundary paper (section 4.1). Past
``ivf_threshold`` vectors (default 200,000) an ``IndexIVFFlat`` is used instead; its recall
at ``k`` is measured against exact search on a random sample of queries and reported with
the index, so callers can state it.

FAISS L2 indexes return **squared** Euclidean distances; everything returned from here is
the plain Euclidean (L2) distance, so a radius ``d`` means ``||x - y||_2 <= d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import faiss
import numpy as np

from workspace.errors import WorkspaceError

IVF_THRESHOLD = 200_000
KINDS = ("auto", "flat", "ivf")

Progress = Callable[[int, int], None]


@dataclass
class NeighbourIndex:
    """A FAISS index over N embeddings.

    Attributes:
        index: the faiss index (``IndexFlatL2`` or ``IndexIVFFlat``).
        kind: "flat" (exact) or "ivf" (approximate).
        ntotal: N, the number of indexed vectors.
        dim: D.
        recall: for "ivf", the measured recall@k of the true k nearest neighbours
            (``recall_k``) on ``recall_queries`` random queries; 1.0 for "flat".
        nprobe: IVF lists probed per query (None for "flat").
    """

    index: object
    kind: str
    ntotal: int
    dim: int
    recall: float = 1.0
    recall_k: int = 0
    recall_queries: int = 0
    nprobe: int | None = None

    def describe(self) -> str:
        if self.kind == "flat":
            return f"exact IndexFlatL2 over {self.ntotal:,} x {self.dim} embeddings"
        return (f"approximate IndexIVFFlat over {self.ntotal:,} x {self.dim} embeddings (nprobe "
                f"{self.nprobe}): measured recall@{self.recall_k} {self.recall:.1%} on "
                f"{self.recall_queries} random queries")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed vectors of every query.

        Args:
            queries: (Q, D) float.
            k: neighbours per query (clamped to N).

        Returns:
            distances (Q, k) float32 Euclidean (not squared), ascending, ``inf`` where FAISS
            found fewer than k; ids (Q, k) int64 rows of the indexed set, -1 where missing.
        """
        queries = _as_float32(queries, self.dim)
        k = max(1, min(int(k), self.ntotal))
        sq, ids = self.index.search(queries, k)
        dist = np.sqrt(np.maximum(sq, 0.0, dtype=np.float32))  # faiss gives squared L2
        dist[ids < 0] = np.inf
        return dist.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def _as_float32(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise WorkspaceError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise WorkspaceError(f"embeddings have {x.shape[1]} dimensions, the index has {dim}")
    return x


def build_index(embeddings: np.ndarray, *, kind: str = "auto", ivf_threshold: int = IVF_THRESHOLD,
                nlist: int | None = None, nprobe: int | None = None, recall_k: int = 20,
                recall_queries: int = 500, seed: int = 0) -> NeighbourIndex:
    """Index embeddings for L2 nearest-neighbour search.

    Args:
        embeddings: (N, D) float; must be finite.
        kind: "flat" (exact ``IndexFlatL2``), "ivf" (``IndexIVFFlat``), or "auto" (flat up
            to ``ivf_threshold`` vectors, IVF above).
        nlist: IVF cells (default ``4 * sqrt(N)``); nprobe: cells probed (default
            ``max(8, nlist // 16)``).
        recall_k, recall_queries: how the IVF recall is measured (exact search of
            ``recall_queries`` random indexed vectors; overlap of the top ``recall_k``).

    Returns:
        A :class:`NeighbourIndex`.

    Raises:
        WorkspaceError: bad ``kind``, empty or non-finite embeddings.
    """
    if kind not in KINDS:
        raise WorkspaceError(f"unknown index kind {kind!r}; valid: {', '.join(KINDS)}")
    x = _as_float32(embeddings)
    n, dim = x.shape
    if n == 0:
        raise WorkspaceError("no embeddings to index")
    if not np.isfinite(x).all():
        raise WorkspaceError("embeddings contain NaN or infinite values; cannot index them")
    if kind == "auto":
        kind = "ivf" if n > ivf_threshold else "flat"
    flat = faiss.IndexFlatL2(dim)
    if kind == "flat":
        flat.add(x)
        return NeighbourIndex(flat, "flat", n, dim)
    nlist = int(nlist or max(1, min(n // 39, round(4 * np.sqrt(n)))))  # faiss wants >= 39 points per cell
    ivf = faiss.IndexIVFFlat(flat, dim, nlist, faiss.METRIC_L2)
    rng = np.random.default_rng(seed)
    train = x if n <= 256 * nlist else x[rng.choice(n, 256 * nlist, replace=False)]
    ivf.train(train)
    ivf.add(x)
    ivf.nprobe = int(nprobe or max(8, nlist // 16))
    out = NeighbourIndex(ivf, "ivf", n, dim, nprobe=ivf.nprobe)
    out.recall_k = min(recall_k, n)
    sample = rng.choice(n, min(recall_queries, n), replace=False)
    exact = faiss.IndexFlatL2(dim)
    exact.add(x)
    _, truth = exact.search(x[sample], out.recall_k)
    _, found = ivf.search(x[sample], out.recall_k)
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    out.recall, out.recall_queries = float(hits.mean()), len(sample)
    return out


def search_neighbours(index: NeighbourIndex, embeddings: np.ndarray, rows: np.ndarray, k: int, *,
                      exclude_self: bool = True, batch_size: int = 16384,
                      progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of some indexed vectors, each without itself.

    Args:
        index: built over ``embeddings``.
        embeddings: (N, D) the indexed vectors.
        rows: (Q,) int rows of ``embeddings`` to query.
        k: neighbours per query (clamped to N - 1 when excluding self).
        exclude_self: drop the query's own row from its neighbours. FAISS is asked for
            k + 1; where the query's own row is absent (exact duplicates can push it past
            the first place), the farthest of the k + 1 is dropped instead.
        progress: ``progress(done, total)`` after each batch; raise from it to cancel.

    Returns:
        distances (Q, k) float32 Euclidean, ascending per row; neighbours (Q, k) int64 rows
        (-1 with distance ``inf`` where the index found fewer).
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= index.ntotal):
        raise WorkspaceError(f"query rows must lie in [0, {index.ntotal})")
    k = max(0, min(int(k), index.ntotal - (1 if exclude_self else 0)))
    q = len(rows)
    dist = np.empty((q, k), dtype=np.float32)
    ids = np.empty((q, k), dtype=np.int64)
    if k == 0 or q == 0:
        return dist, ids
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    for start in range(0, q, batch_size):
        part = rows[start:start + batch_size]
        d, i = index.search(x[part], k + (1 if exclude_self else 0))
        if exclude_self:
            is_self = i == part[:, None]
            is_self[~is_self.any(axis=1), -1] = True  # no self found: drop the farthest
            keep = ~is_self
            # exactly one False per row was removed, so the rest reshape to (B, k), order kept
            d = d[keep].reshape(len(part), k)
            i = i[keep].reshape(len(part), k)
        dist[start:start + len(part)], ids[start:start + len(part)] = d, i
        if progress is not None:
            progress(min(start + len(part), q), q)
    return dist, ids


def set_threads(n: int) -> None:
    """Limit FAISS's OpenMP threads (benchmarks and shared machines)."""
    faiss.omp_set_num_threads(max(1, int(n)))
