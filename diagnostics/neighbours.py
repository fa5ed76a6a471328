"""Nearest neighbours of embeddings with FAISS (the only module that imports faiss).

Exact search uses ``faiss.IndexFlatL2`` as in the weak-boundary paper (section 4.1). Past
``ivf_threshold`` vectors (default 200,000) an inverted-file index is built instead, by the
FAISS guidelines for choosing an index ("Guidelines to choose an index", faiss wiki):

* ``nlist`` about ``4 sqrt(N)`` cells up to 1M vectors (a power of two), 65,536 cells
  with an HNSW32 coarse quantizer past 1M (``IVF65536_HNSW32``) and 262,144 past 10M;
* the cells are trained on a sample of ``TRAIN_PER_LIST`` (40) vectors per cell (FAISS
  asks for 30 to 256), not on all N;
* the vectors are stored whole (``Flat``) while they fit ``memory_budget``, else as 8-bit
  scalars (``SQ8``, 4x smaller) or product-quantised codes (``PQ``); lossy codes give only
  candidates, which are re-ranked with exact distances from the original embeddings, so
  every distance returned (and every radius test on it) is exact;
* ``nprobe`` is raised until the measured recall reaches ``target_recall``.

The recall is measured against exact search on a random sample of indexed vectors (each
query's own row left out, as :func:`search_neighbours` does) and reported with the index,
so callers can state it.

FAISS L2 indexes return **squared** Euclidean distances; everything returned from here is
the plain Euclidean (L2) distance, so a radius ``d`` means ``||x - y||_2 <= d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from workspace.errors import WorkspaceError

IVF_THRESHOLD = 200_000
KINDS = ("auto", "flat", "ivf")
STORAGES = ("auto", "flat", "sq8", "pq")
QUANTIZERS = ("auto", "flat", "hnsw")
#: Bytes the stored vectors of an IVF index may take before they are compressed.
MEMORY_BUDGET = 4 * 2 ** 30
#: Training vectors per IVF cell (FAISS: 30 to 256).
TRAIN_PER_LIST = 40
#: Candidates per wanted neighbour fetched from lossy codes before the exact re-rank.
RERANK = {"sq8": 4, "pq": 10}
#: Rows added to an index (and scanned for the exact recall reference) at a time.
ADD_BLOCK = 65_536

Progress = Callable[[int, int], None]


@dataclass
class NeighbourIndex:
    """A FAISS index over N embeddings.

    Attributes:
        index: the faiss index (``IndexFlatL2`` or an IVF index).
        kind: "flat" (exact) or "ivf" (approximate).
        ntotal: N, the number of indexed vectors.
        dim: D.
        recall: for "ivf", the measured recall@k of the true k nearest neighbours
            (``recall_k``) on ``recall_queries`` random queries; 1.0 for "flat".
        nprobe: IVF cells probed per query (None for "flat").
        factory: the ``faiss.index_factory`` string ("Flat", "IVF4096,Flat", ...).
        vectors: the indexed embeddings (not a copy), kept where stored codes are lossy
            so candidates can be re-ranked exactly; None otherwise.
        rerank: candidates fetched per wanted neighbour before that re-rank (1: none).
    """

    index: object
    kind: str
    ntotal: int
    dim: int
    recall: float = 1.0
    recall_k: int = 0
    recall_queries: int = 0
    nprobe: int | None = None
    factory: str = "Flat"
    vectors: np.ndarray | None = None
    rerank: int = 1

    def describe(self) -> str:
        if self.kind == "flat":
            return f"exact IndexFlatL2 over {self.ntotal:,} x {self.dim} embeddings"
        exact = f", candidates x{self.rerank} re-ranked exactly" if self.rerank > 1 else ""
        return (f"approximate {self.factory} over {self.ntotal:,} x {self.dim} embeddings (nprobe "
                f"{self.nprobe}{exact}): measured recall@{self.recall_k} {self.recall:.1%} on "
                f"{self.recall_queries} random queries")

    def set_nprobe(self, nprobe: int) -> None:
        """Cells probed per query (IVF only); an HNSW coarse quantizer explores at least as
        many candidates, else it would miss cells."""
        import faiss

        ivf = faiss.extract_index_ivf(self.index)
        ivf.nprobe = int(nprobe)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = max(64, 2 * int(nprobe))
        self.nprobe = int(nprobe)

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
        wanted = min(k * self.rerank, self.ntotal)
        sq, ids = self.index.search(queries, wanted)
        ids = ids.astype(np.int64, copy=False)
        if self.rerank > 1:
            sq, ids = _exact_rerank(queries, self.vectors, ids, k)
        dist = np.sqrt(np.maximum(sq, 0.0, dtype=np.float32))  # faiss gives squared L2
        dist[ids < 0] = np.inf
        return dist.astype(np.float32, copy=False), ids


def _as_float32(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise WorkspaceError(f"embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise WorkspaceError(f"embeddings have {x.shape[1]} dimensions, the index has {dim}")
    return x


def _release(array: np.ndarray) -> None:
    """Drop the pages of a read-only ``np.memmap`` from this process's resident set.

    Pages read through a mapping stay resident (on recent kernels whole large folios per
    touched row) until the mapping goes, so a scan of a 1 GB memmap would add 1 GB to the
    process on top of the index's own copy; ``MADV_DONTNEED`` unmaps them (the OS page
    cache keeps them, so a later read is cheap).
    """
    import mmap

    mm = getattr(array, "_mmap", None)
    if isinstance(mm, mmap.mmap) and getattr(array, "mode", "") == "r" and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED)


def _rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 copies of some rows (sorted reads, so a memmap is read in file order)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    out[order] = np.asarray(vectors[rows[order]], dtype=np.float32)
    _release(vectors)
    return out


def _exact_rerank(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int,
                  block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances recomputed from the original vectors; the k nearest kept."""
    q, c = ids.shape
    sq = np.full((q, k), np.inf, dtype=np.float32)
    best = np.full((q, k), -1, dtype=np.int64)
    for start in range(0, q, block):
        cand = ids[start:start + block]                                  # (B, C)
        found = cand >= 0
        rows = _rows(vectors, np.where(found, cand, 0).ravel()).reshape(len(cand), c, -1)
        diff = rows - queries[start:start + block, None, :]              # (B, C, D)
        d2 = np.einsum("bcd,bcd->bc", diff, diff)
        d2[~found] = np.inf
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        sq[start:start + block] = np.take_along_axis(d2, order, axis=1)
        best[start:start + block] = np.where(np.isfinite(sq[start:start + block]),
                                             np.take_along_axis(cand, order, axis=1), -1)
    return sq, best


def _checked_block(embeddings: np.ndarray, start: int, stop: int) -> np.ndarray:
    block = _as_float32(embeddings[start:stop])
    if isinstance(embeddings, np.memmap) and np.shares_memory(block, embeddings):
        block = block.copy()                     # off the mapping, whose pages are dropped next
    _release(embeddings)
    if not np.isfinite(block).all():
        raise WorkspaceError("embeddings contain NaN or infinite values; cannot index them")
    return block


def exact_neighbours(embeddings: np.ndarray, rows: np.ndarray, k: int, *, block: int = 16_384) -> np.ndarray:
    """(Q, k) int64 true nearest neighbours of some indexed rows, each row itself left out.

    Brute force over ``block`` rows at a time (``||q||^2 + ||x||^2 - 2 q.x``, as
    ``IndexFlatL2``), so no second copy of the embeddings is made. The reference of the
    recall measurement.
    """
    rows = np.asarray(rows, dtype=np.int64)
    queries = _rows(embeddings, rows)
    qn = np.einsum("ij,ij->i", queries, queries)
    best_d = np.full((len(rows), 0), np.inf, dtype=np.float32)
    best_i = np.zeros((len(rows), 0), dtype=np.int64)
    for start in range(0, len(embeddings), block):
        part = _checked_block(embeddings, start, start + block)
        d2 = queries @ part.T                                            # (Q, B)
        d2 *= -2.0
        d2 += qn[:, None]
        d2 += np.einsum("ij,ij->i", part, part)[None, :]
        inside = np.flatnonzero((rows >= start) & (rows < start + len(part)))
        d2[inside, rows[inside] - start] = np.inf                         # leave the query out
        ids = np.arange(start, start + len(part))
        keep = min(k, d2.shape[1])
        near = np.argpartition(d2, keep - 1, axis=1)[:, :keep]
        best_d = np.concatenate([best_d, np.take_along_axis(d2, near, axis=1)], axis=1)
        best_i = np.concatenate([best_i, ids[near]], axis=1)
        top = np.argsort(best_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(best_d, top, axis=1), np.take_along_axis(best_i, top, axis=1)
    return best_i


def choose_ivf(n: int, dim: int, *, nlist: int | None = None, storage: str = "auto",
               quantizer: str = "auto", memory_budget: int = MEMORY_BUDGET) -> str:
    """The ``faiss.index_factory`` string for an IVF index over n vectors of dim D.

    Args:
        nlist: cells (default: ``4 sqrt(n)`` rounded to a power of two up to 1M vectors,
            65,536 past 1M, 262,144 past 10M; at most ``n / 30`` so every cell trains on 30
            vectors or more).
        storage: "flat" (float32), "sq8" (one byte per dimension), "pq" (``dim / 8`` or
            fewer bytes per vector) or "auto": the first of these that fits ``memory_budget``.
        quantizer: "flat" (exact cell assignment), "hnsw" (HNSW32 graph over the cells) or
            "auto": HNSW past 1M vectors.

    Raises:
        WorkspaceError: an unknown storage or quantizer, or vectors that fit no budget.
    """
    if storage not in STORAGES:
        raise WorkspaceError(f"unknown index storage {storage!r}; valid: {', '.join(STORAGES)}")
    if quantizer not in QUANTIZERS:
        raise WorkspaceError(f"unknown coarse quantizer {quantizer!r}; valid: {', '.join(QUANTIZERS)}")
    if nlist is None:
        if n > 10_000_000:
            nlist = 262_144
        elif n > 1_000_000:
            nlist = 65_536
        else:
            nlist = 2 ** int(round(np.log2(max(4.0 * np.sqrt(n), 1.0))))
    nlist = int(max(1, min(nlist, n // 30 or 1)))
    if storage == "auto":
        if n * dim * 4 <= memory_budget:
            storage = "flat"
        elif n * dim <= memory_budget:
            storage = "sq8"
        else:
            storage = "pq"
    code = {"flat": "Flat", "sq8": "SQ8"}.get(storage)
    if code is None:
        # PQ: m one-byte sub-quantizers, m dividing dim, as many as the budget allows
        fits = [m for m in range(1, dim // 2 + 1) if dim % m == 0 and n * m <= memory_budget and m <= dim // 4]
        if not fits:
            raise WorkspaceError(f"{n:,} x {dim} embeddings do not fit a {memory_budget / 2 ** 30:.1f} GiB "
                                 "index budget even as product-quantised codes")
        code = f"PQ{max(fits)}"
    hnsw = quantizer == "hnsw" or (quantizer == "auto" and n > 1_000_000)
    return f"IVF{nlist}{'_HNSW32' if hnsw else ''},{code}"


def build_index(embeddings: np.ndarray, *, kind: str = "auto", ivf_threshold: int = IVF_THRESHOLD,
                nlist: int | None = None, nprobe: int | None = None, storage: str = "auto",
                quantizer: str = "auto", memory_budget: int = MEMORY_BUDGET, target_recall: float = 0.95,
                recall_k: int = 20, recall_queries: int = 500, seed: int = 0,
                progress: Progress | None = None) -> NeighbourIndex:
    """Index embeddings for L2 nearest-neighbour search.

    Args:
        embeddings: (N, D) float, finite; a ``np.memmap`` is read in blocks (the index
            keeps its own float32 copy or codes, never a second one).
        kind: "flat" (exact ``IndexFlatL2``), "ivf" (approximate, see
            :func:`choose_ivf`), or "auto" (flat up to ``ivf_threshold`` vectors, IVF above).
        nlist, storage, quantizer, memory_budget: the IVF layout (:func:`choose_ivf`).
        nprobe: IVF cells probed; default: the smallest power of two from 8 whose measured
            recall reaches ``target_recall`` (capped at nlist).
        recall_k, recall_queries: how the IVF recall is measured (exact search of
            ``recall_queries`` random indexed vectors, their own row left out; the share of
            the true ``recall_k`` nearest found among the ``recall_k`` returned).
        progress: ``progress(done, total)`` over the added rows; raise from it to cancel.

    Returns:
        A :class:`NeighbourIndex`.

    Raises:
        WorkspaceError: bad ``kind``/``storage``/``quantizer``, empty or non-finite embeddings.
    """
    import faiss  # here, not at import: 0.24 s that pages showing stored neighbours never need

    if kind not in KINDS:
        raise WorkspaceError(f"unknown index kind {kind!r}; valid: {', '.join(KINDS)}")
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        embeddings = _as_float32(embeddings)
    n, dim = embeddings.shape
    if n == 0:
        raise WorkspaceError("no embeddings to index")
    if kind == "auto":
        kind = "ivf" if n > ivf_threshold else "flat"
    if kind == "flat":
        flat = faiss.IndexFlatL2(dim)
        _add(flat, embeddings, progress)
        return NeighbourIndex(flat, "flat", n, dim)
    factory = choose_ivf(n, dim, nlist=nlist, storage=storage, quantizer=quantizer, memory_budget=memory_budget)
    index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.min_points_per_centroid = 30                     # FAISS's own lower guideline
    if isinstance(ivf, faiss.IndexIVFPQ):
        ivf.do_polysemous_training = False                  # only for Hamming filtering; slow
    rng = np.random.default_rng(seed)
    # product quantisers train 256 centroids per sub-vector: FAISS wants 39 x 256 points
    size = min(n, max(TRAIN_PER_LIST * ivf.nlist, 39 * 256 if "PQ" in factory else 0))
    train = _rows(embeddings, np.sort(rng.choice(n, size, replace=False)))
    if not np.isfinite(train).all():
        raise WorkspaceError("embeddings contain NaN or infinite values; cannot index them")
    index.train(train)
    del train
    _add(index, embeddings, progress)
    lossy = not factory.endswith(",Flat")
    out = NeighbourIndex(index, "ivf", n, dim, factory=factory, vectors=embeddings if lossy else None,
                         rerank=RERANK["sq8" if "SQ8" in factory else "pq"] if lossy else 1)
    out.recall_k = max(1, min(recall_k, n - 1))
    sample = np.sort(rng.choice(n, min(recall_queries, n), replace=False))
    truth = exact_neighbours(embeddings, sample, out.recall_k)
    queries = _rows(embeddings, sample)

    def measured(probe: int) -> float:
        out.set_nprobe(probe)
        _, found = out.search(queries, out.recall_k + 1)
        is_self = found == sample[:, None]                   # left out as search_neighbours does
        is_self[~is_self.any(axis=1), -1] = True
        found = np.where(is_self, -1, found)
        hits = (found[:, :, None] == truth[:, None, :]).any(axis=1) & (truth >= 0)
        return float(hits.sum() / max((truth >= 0).sum(), 1))

    if nprobe is not None:
        out.recall = measured(max(1, min(int(nprobe), ivf.nlist)))
    else:
        probe = min(8, ivf.nlist)
        out.recall = measured(probe)
        while out.recall < target_recall and probe < ivf.nlist:
            probe = min(2 * probe, ivf.nlist)
            out.recall = measured(probe)
    out.recall_queries = len(sample)
    return out


def _add(index, embeddings: np.ndarray, progress: Progress | None) -> None:
    n = len(embeddings)
    for start in range(0, n, ADD_BLOCK):
        index.add(_checked_block(embeddings, start, start + ADD_BLOCK))
        if progress is not None:
            progress(min(start + ADD_BLOCK, n), n)


def search_neighbours(index: NeighbourIndex, embeddings: np.ndarray, rows: np.ndarray, k: int, *,
                      exclude_self: bool = True, batch_size: int = 16384,
                      progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of some indexed vectors, each without itself.

    Args:
        index: built over ``embeddings``.
        embeddings: (N, D) the indexed vectors (a ``np.memmap`` is read batch by batch).
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
    for start in range(0, q, batch_size):
        part = rows[start:start + batch_size]
        d, i = index.search(_rows(embeddings, part), k + (1 if exclude_self else 0))
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
    import faiss

    faiss.omp_set_num_threads(max(1, int(n)))
