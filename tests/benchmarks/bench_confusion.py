"""Speed of the w-os what-if slider and of all-triplet cd.

1. One slider update (predictions after w-os, accuracy, the full K x K confusion counts and
   rates, the pair error matrix and the target error) for 10,000 samples x 100 classes, as a
   ratio to one ``argmax`` pass over the same (N, K) float32 probability array (the obvious
   baseline: re-deciding every sample). Targets fixed (two pairs); the per-target
   precomputation (:class:`diagnostics.wos.WosWhatIf`) is reported separately, as it runs once
   when the targets are picked, not on slider moves. Target: at most 3x. A second row
   repeats it with 25 target pairs (half of all samples affected).
2. cd of all 485,100 triplets of 100 classes, ranked (``rank_biased_triplets``): well under 1 s.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _timeit(fn, repeat: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _probs(n: int = 10_000, k: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 2.5
    confused = np.isin(labels, [0, 1])                       # a planted confusable pair
    logits[confused, 0] += 2.0
    logits[confused, 1] += 2.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32), labels


def run() -> list[dict]:
    from diagnostics.confusion import all_triplet_cd, rank_biased_triplets, type1conf_matrix
    from diagnostics.wos import WosWhatIf

    probs, labels = _probs()
    n, k = probs.shape
    targets = [(0, 1), (2, 3)]
    baseline = _timeit(lambda: probs.argmax(axis=1))
    preds = probs.argmax(axis=1)
    what_if = WosWhatIf(probs, labels, targets, preds=preds)
    rhos = iter(np.tile(np.logspace(0, -4, 41), 100))
    update = _timeit(lambda: what_if.evaluate(next(rhos)).rates, repeat=200)
    setup = _timeit(lambda: WosWhatIf(probs, labels, targets, preds=preds), repeat=10)
    many = [(2 * i, 2 * i + 1) for i in range(25)]            # half the classes are targets
    heavy = WosWhatIf(probs, labels, many, preds=preds)
    heavy_update = _timeit(lambda: heavy.evaluate(next(rhos)).rates, repeat=100)
    r = what_if.evaluate(0.1)
    assert np.array_equal(r.counts, np.bincount(labels * k + r.preds, minlength=k * k).reshape(k, k))
    e = type1conf_matrix(labels, preds, k)
    triplets = _timeit(lambda: rank_biased_triplets(e, top=20), repeat=5)
    raw = _timeit(lambda: all_triplet_cd(e), repeat=5)
    rng = np.random.default_rng(1)
    big = rng.random((300, 300)) * 0.1
    big = (big + big.T) / 2
    np.fill_diagonal(big, 0)
    start = time.perf_counter()
    rank_biased_triplets(big, top=20)
    blockwise = time.perf_counter() - start
    return [
        {"name": "w-os slider update / one argmax pass (10k x 100)", "value": update / baseline, "unit": "x",
         "target": "<= 3", "ok": update / baseline <= 3.0,
         "detail": f"update {update * 1e3:.3f} ms vs argmax {baseline * 1e3:.3f} ms; "
                   f"{len(what_if.rows)} affected rows of {n}, 2 target pairs"},
        {"name": "same, 25 target pairs (half the classes)", "value": heavy_update / baseline, "unit": "x",
         "target": "<= 3", "ok": heavy_update / baseline <= 3.0,
         "detail": f"update {heavy_update * 1e3:.3f} ms; {len(heavy.rows)} affected rows of {n}"},
        {"name": "w-os target precomputation (once per target choice)", "value": setup * 1e3, "unit": "ms",
         "target": "-", "ok": None, "detail": f"= {setup / baseline:.1f} argmax passes"},
        {"name": "all-triplet cd, 100 classes, ranked", "value": triplets, "unit": "s",
         "target": "< 1", "ok": triplets < 1.0,
         "detail": f"{k * (k - 1) * (k - 2) // 2:,} ordered triplets (anchor x pair); "
                   f"cd of all of them unranked: {raw * 1e3:.0f} ms"},
        {"name": "top-20 triplets, 300 classes (block-wise, bounded memory)", "value": blockwise, "unit": "s",
         "target": "-", "ok": None, "detail": f"{300 * 299 * 298 // 2:,} triplets"},
    ]
