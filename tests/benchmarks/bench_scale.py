"""ImageNet-sized label spaces on one machine: biased triplets, gradient scores, weakspots.

1. Top biased triplets of a 1,000-class error matrix (ImageNet-like: 50 eval images per
   class, a quarter misread as one of 5 similar classes or any class, so the errors are
   multiples of 1/100 with many ties): the top-k path of ``rank_biased_triplets`` against
   the exhaustive ranking it replaced (every anchor x pair, block by block,
   ``_exhaustive_top``), same result asserted. Then 10,000 classes (500,000 samples), where
   the exhaustive path (5e11 triplets) is out of reach: top-20 and the dashboard's top-2000.
2. :func:`diagnostics.gradients.last_layer_scores` (PGD scores of the last layer, no
   gradient stored) and ``compensated_loss`` on memmapped float32 probabilities (K = 1,000)
   and float16 embeddings (D = 2,048), in a fresh process so its peak RSS (``VmHWM``; the
   ``resource.getrusage`` maximum is shown beside it, but on Linux it also carries the
   launching process's peak over ``exec``) is the computation's own (imports included,
   about 0.6 GB with torch). By default 200,000 rows of 200 classes (1,000 rows per class, as at 1M x 1,000):
   the work is linear in the number of classes at a fixed class size, so the 1M-row time is
   5x that and the peak RSS the same; ``GROUPFIX_BENCH_SCALE_ROWS=1000000`` measures the
   full size (about 8 GB of input generated once under ``bench_out/scale``). The classes
   are scored in parallel, one per available core (single-threaded BLAS each); the time depends on
   the inputs being in the OS page cache (read from disk, the 1M run takes about twice as
   long). Then, in another process, the rows of the first 10 classes are scored from
   their float32/float16 values (float32 Gram products) and from the same values in
   float64: the largest relative difference of log p_s is the precision row.
3. Weakspot search over 1,000,000 x 256 embeddings (1,000 classes, a 48-dimensional
   latent spread plus noise, memmapped float32): ``build_index`` (IVF by the FAISS
   guidelines, nprobe tuned to 95 % measured recall@20) + ``search_neighbours`` of 100,000
   queries (k = 20, self excluded), in a fresh process for its peak RSS;
   ``GROUPFIX_BENCH_SCALE_WEAK_ROWS`` changes N.

The machine is shared: wall times vary with its load, so each row also reports the CPU
seconds and the load average.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "bench_out" / "scale"


def _load() -> str:
    return f"load avg {os.getloadavg()[0]:.1f}"


# ---- 1. triplets -----------------------------------------------------------------------------
def imagenet_like_errors(k: int, per_class: int = 50, seed: int = 0) -> np.ndarray:
    """(K, K) type1conf of a synthetic eval split: a quarter of the samples misread as one
    of five 'similar' classes (70 %) or any class (30 %)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per_class)
    similar = (np.arange(k)[:, None] + rng.integers(1, k, (k, 5))) % k
    wrong = rng.random(len(labels)) < 0.25
    near = similar[labels, rng.integers(0, 5, len(labels))]
    anywhere = (labels + rng.integers(1, k, len(labels))) % k
    preds = np.where(wrong, np.where(rng.random(len(labels)) < 0.7, near, anywhere), labels)
    rates = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k) / per_class
    errors = rates + rates.T
    errors /= 2.0
    np.fill_diagonal(errors, 0.0)
    return errors


def _median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _triplet_rows() -> list[dict]:
    from diagnostics import confusion

    e = imagenet_like_errors(1000)
    fast = confusion.rank_biased_triplets(e, top=20)         # warm-up (imports pandas)
    t_fast = _median_time(lambda: confusion.rank_biased_triplets(e, top=20))
    start = time.perf_counter()
    slow = confusion._exhaustive_top(e, np.arange(1000), 20)
    t_slow = time.perf_counter() - start
    same = (fast["positive_id"].tolist() == slow["positive"].tolist()
            and fast["anchor_id"].tolist() == slow["anchor"].tolist() and fast["cd"].tolist() == slow["cd"].tolist())
    assert same, "top-k triplets differ from the exhaustive ranking"
    t_2000 = _median_time(lambda: confusion.rank_biased_triplets(e, top=2000))
    big = imagenet_like_errors(10_000)
    times = {top: _median_time(lambda: confusion.rank_biased_triplets(big, top=top), 3) for top in (20, 2000)}
    n_trip = 1000 * 999 * 998 // 2
    return [
        {"name": "top-20 triplets, 1,000 classes (top-k path)", "value": t_fast, "unit": "s", "target": "< 0.5",
         "ok": t_fast < 0.5, "detail": f"median of 5; top-2000 {t_2000:.2f}s; {_load()}"},
        {"name": "same: exhaustive ranking / top-k path (time)", "value": t_slow / t_fast, "unit": "x",
         "target": "info", "ok": None,
         "detail": f"exhaustive {t_slow:.1f}s over {n_trip:,} triplets; identical top 20"},
        {"name": "top-20 triplets, 10,000 classes", "value": times[20], "unit": "s", "target": "< 10",
         "ok": times[20] < 10, "detail": f"median of 3; exhaustive: 5.0e11 triplets, not run; {_load()}"},
        {"name": "top-2000 triplets, 10,000 classes (the dashboard's table)", "value": times[2000], "unit": "s",
         "target": "< 10", "ok": times[2000] < 10, "detail": _load()},
    ]


# ---- 2. gradient scores --------------------------------------------------------------------
def gradient_inputs(rows: int, k: int = 1000, d: int = 2048, seed: int = 0) -> Path:
    """Memmapped ``probs.npy`` (float32), ``embeddings.npy`` (float16, ReLU-like) and
    ``labels.npy`` under ``bench_out/scale``, generated once: 1,000 rows per class, so
    ``rows / 1000`` of the K classes have samples."""
    folder = DATA / f"grad-{rows}x{k}x{d}"
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(1, min(k, rows // 1000)), rows)
    np.save(folder / "labels.npy", labels)
    probs = np.lib.format.open_memmap(folder / "probs.npy", mode="w+", dtype=np.float32, shape=(rows, k))
    emb = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.float16, shape=(rows, d))
    step = 20_000
    for s in range(0, rows, step):
        y = labels[s:s + step]
        z = rng.standard_normal((len(y), k), dtype=np.float32)
        z[np.arange(len(y)), y] += 4.0
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        probs[s:s + len(y)] = z
        emb[s:s + len(y)] = np.abs(rng.standard_normal((len(y), d), dtype=np.float32))
    probs.flush()
    emb.flush()
    del probs, emb
    (folder / "done").write_text("ok")
    return folder


#: the start of every measuring child process: imports and its own peak memory
_CHILD_PRELUDE = """
import json, resource, sys, time
import numpy as np

def _peak_mb():
    # VmHWM: this process's own peak. ru_maxrss also counts the launching process's peak
    # (Linux carries the pre-exec high-water mark over), so it is only the fallback.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_GRADIENT_CHILD = _CHILD_PRELUDE + """
from diagnostics.gradients import _available_cpus, compensated_loss, last_layer_scores
folder = sys.argv[1]
probs = np.load(folder + "/probs.npy", mmap_mode="r")
emb = np.load(folder + "/embeddings.npy", mmap_mode="r")
labels = np.load(folder + "/labels.npy")
start, cpu = time.perf_counter(), time.process_time()
frame = last_layer_scores(probs, labels, emb, lam=1.0)
t_scores, cpu_scores = time.perf_counter() - start, time.process_time() - cpu
start = time.perf_counter()
comp, delta = compensated_loss(probs, labels)
t_comp = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"scores_s": t_scores, "scores_cpu_s": cpu_scores, "comp_s": t_comp, "cpu_s": use.ru_utime + use.ru_stime,
                  "peak_rss_mb": _peak_mb(), "ru_maxrss_mb": use.ru_maxrss / 1024,
                  "finite": bool(np.isfinite(frame["log_p_s"]).all()),
                  "classes": int(len(np.unique(labels))), "threads": _available_cpus()}))
"""

# the float32 products against float64 ones on the rows of the first classes (a separate
# process: the float64 copies must not count in the peak RSS above)
_PRECISION_CHILD = """
import json, sys
import numpy as np
from diagnostics.gradients import last_layer_scores
folder, classes = sys.argv[1], int(sys.argv[2])
labels = np.load(folder + "/labels.npy")
rows = np.flatnonzero(labels < classes)
probs = np.load(folder + "/probs.npy", mmap_mode="r")[rows]
emb = np.load(folder + "/embeddings.npy", mmap_mode="r")[rows]
fast = last_layer_scores(probs, labels[rows], emb)
exact = last_layer_scores(probs.astype(np.float64), labels[rows], emb.astype(np.float64))
def rel(c):
    return float(np.max(np.abs(fast[c] - exact[c]) / np.maximum(np.abs(exact[c]), 1e-300)))
print(json.dumps({"rows": len(rows), "log_p_s_rel": rel("log_p_s"), "log_D_rel": rel("log_D"),
                  "log_D_abs": float(np.max(np.abs(fast["log_D"] - exact["log_D"]))),
                  "log_D_span": float(np.ptp(exact["log_D"])), "grad_norm_rel": rel("grad_norm")}))
"""


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gradient_rows() -> list[dict]:
    rows = int(os.environ.get("GROUPFIX_BENCH_SCALE_ROWS", 200_000))
    start = time.perf_counter()
    folder = gradient_inputs(rows)
    made = time.perf_counter() - start
    got = _child(_GRADIENT_CHILD, str(folder))
    assert got["finite"]
    prec = _child(_PRECISION_CHILD, str(folder), "10")
    scale = 1_000_000 / rows
    full = got["scores_s"] * scale
    size = f"{rows:,} x 1,000 x 2,048 ({got['classes']} classes of ~1,000 rows)"
    note = "" if rows == 1_000_000 else f"; 1M rows = {scale:g}x this ({got['scores_s']:.1f}s measured, extrapolated)"
    return [
        {"name": "last-layer gradient scores, 1M x 1,000 x 2,048 (time)", "value": full, "unit": "s",
         "target": "< 60", "ok": full < 60,
         "detail": f"{size}{note}; {got['threads']} threads (classes in parallel, single-threaded BLAS each), "
                   f"CPU of the scores {got['scores_cpu_s']:.0f}s; {_load()}; inputs made in {made:.0f}s"},
        {"name": "same, peak RSS (memmapped inputs, imports included)", "value": got["peak_rss_mb"] / 1024,
         "unit": "GB", "target": "< 2", "ok": got["peak_rss_mb"] < 2048,
         "detail": f"{size}; getrusage max {got['ru_maxrss_mb'] / 1024:.2f} GB; materialised float32 gradients "
                   f"would take {rows * 1000 * 2049 * 4 / 1e9:,.0f} GB"},
        {"name": "same, max relative difference of log p_s to float64 products", "value": prec["log_p_s_rel"],
         "unit": "", "target": "< 1e-5", "ok": prec["log_p_s_rel"] < 1e-5,
         "detail": f"first 10 classes ({prec['rows']:,} rows): the float32/float16 inputs scored with float32 "
                   f"Gram products against the same inputs in float64; log D moves by at most "
                   f"{prec['log_D_abs']:.1e} (relative {prec['log_D_rel']:.1e}) over a span of "
                   f"{prec['log_D_span']:.2g}; gradient norms {prec['grad_norm_rel']:.0e}"},
        {"name": "compensated loss (noise split), 1M x 1,000", "value": got["comp_s"] * scale, "unit": "s",
         "target": "info", "ok": None, "detail": f"{got['comp_s']:.1f}s for {rows:,} rows, in row chunks"},
    ]


# ---- 3. weakspots ----------------------------------------------------------------------------
def weakspot_inputs(n: int, d: int = 256, classes: int = 1000, latent: int = 48, seed: int = 0) -> Path:
    """Memmapped float32 ``embeddings.npy`` under ``bench_out/scale``: class centres plus a
    shared 48-dimensional latent spread plus isotropic noise, generated once."""
    folder = DATA / f"weak-{n}x{d}"
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)).astype(np.float32) * 2.0
    basis = rng.normal(size=(latent, d)).astype(np.float32) / np.sqrt(latent) * 1.5
    labels = rng.integers(0, classes, n)
    x = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 100_000):
        y = labels[s:s + 100_000]
        z = rng.standard_normal((len(y), latent), dtype=np.float32)
        x[s:s + len(y)] = centres[y] + z @ basis + 0.3 * rng.standard_normal((len(y), d), dtype=np.float32)
    x.flush()
    del x
    (folder / "done").write_text("ok")
    return folder


_WEAKSPOT_CHILD = _CHILD_PRELUDE + """
from diagnostics.neighbours import build_index, search_neighbours
x = np.load(sys.argv[1] + "/embeddings.npy", mmap_mode="r")
queries = np.sort(np.random.default_rng(1).choice(len(x), int(sys.argv[2]), replace=False))
start = time.perf_counter()
index = build_index(x, recall_k=20)
t_build = time.perf_counter() - start
start = time.perf_counter()
dist, ids = search_neighbours(index, x, queries, 20)
t_search = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"build_s": t_build, "search_s": t_search, "cpu_s": use.ru_utime + use.ru_stime,
                  "peak_rss_mb": _peak_mb(), "recall": index.recall, "describe": index.describe(),
                  "complete": bool((ids >= 0).all())}))
"""


def _weakspot_rows() -> list[dict]:
    n = int(os.environ.get("GROUPFIX_BENCH_SCALE_WEAK_ROWS", 1_000_000))
    queries = min(100_000, n // 10)
    folder = weakspot_inputs(n)
    got = _child(_WEAKSPOT_CHILD, str(folder), str(queries))
    total = got["build_s"] + got["search_s"]
    return [
        {"name": f"weakspot index + search, {n:,} x 256 (IVF)", "value": total, "unit": "s", "target": "info",
         "ok": None, "detail": f"build {got['build_s']:.0f}s, {queries:,} queries (k=20) {got['search_s']:.0f}s; "
                               f"CPU {got['cpu_s']:.0f}s; {_load()}"},
        {"name": "same, measured recall@20 against exact search", "value": got["recall"], "unit": "",
         "target": ">= 0.95", "ok": got["recall"] >= 0.95, "detail": got["describe"]},
        {"name": "same, peak RSS", "value": got["peak_rss_mb"] / 1024, "unit": "GB", "target": "info", "ok": None,
         "detail": f"embeddings {n * 256 * 4 / 1e9:.1f} GB memmapped (pages dropped after each read); "
                   "the index holds its own float32 copy"},
    ]


def run() -> list[dict]:
    return _triplet_rows() + _gradient_rows() + _weakspot_rows()
