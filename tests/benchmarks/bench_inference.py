"""Inference-cache pass throughput vs a bare ``torch.no_grad()`` loop over the same DataLoader.

Both use the demo model and the same DataLoader over the demo's eval split; ours adds the
embedding hook, softmax, bad-image filtering and the copy to NumPy. Repeated, median taken.
Target: ratio (our images/s over bare images/s) >= 0.9.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch


def _bare(model, loader) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for x, _, _ in loader:
            model(x)
    return time.perf_counter() - start


def run() -> list[dict]:
    os.environ.setdefault("GROUPFIX_HOME", tempfile.mkdtemp(prefix="gf-bench-"))
    from workspace.cache import make_loader, run_inference
    from workspace.core import open_workspace

    ws = open_workspace("demo")
    model = ws.model()
    split = ws.split("eval")
    loader = make_loader(ws.dataset("eval"), batch_size=256)
    tap = ws.embedding_tap(model)
    n = len(split)
    _bare(model, loader)  # warm-up (allocator, thread pool)
    ours, bare = [], []
    for _ in range(5):
        bare.append(_bare(model, loader))
        start = time.perf_counter()
        run_inference(model, loader, tap=tap, labels=split.labels, class_names=split.class_names)
        ours.append(time.perf_counter() - start)
    ratio = statistics.median(bare) / statistics.median(ours)
    return [{
        "name": "inference pass / bare no_grad loop (throughput)",
        "value": ratio, "unit": "x", "target": ">= 0.9", "ok": ratio >= 0.9,
        "detail": f"{n / statistics.median(ours):.0f} img/s vs {n / statistics.median(bare):.0f} img/s bare, "
                  f"{n} demo eval images, batch 256, CPU threads {torch.get_num_threads()}",
    }]
