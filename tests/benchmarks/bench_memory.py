"""Opening a 1,000,000 x 1,000-class eval cache: time and peak memory (issue: ImageNet-sized workspaces).

A synthetic workspace (1,000 classes, tiny in-memory images, a demo-architecture model) gets eval
outputs of N samples written straight into its artifact store (logits and probabilities float32,
predictions, labels, 64-dim embeddings). A fresh process then opens the workspace, reads the outputs
(memory-mapped) and computes what the Confusion page and ``diagnostics confusion`` compute (accuracy,
the pair errors, the top pairs, the top triplets). Reported: that process's wall time and peak RSS
(VmHWM). Target: it opens on this 24 GB machine; the detail gives the numbers. N defaults to
1,000,000 (``GROUPFIX_BENCH_OPEN_ROWS``); the generated files (~9 GB) stay under bench_out/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
K = 1000

SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
from tests.benchmarks.bench_memory import synthetic_workspace
from diagnostics.run_confusion import confusion_summary
ws = synthetic_workspace({root!r}, {n})
out = ws.cached_outputs("eval")
assert out is not None and out.n == {n}
summary = confusion_summary(out, top=10)
elapsed = time.perf_counter() - t0
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024**2
print(json.dumps({{"seconds": elapsed, "peak_gb": peak, "accuracy": summary["accuracy"],
                   "top_pair": summary["pairs"][0]}}))
"""


def synthetic_workspace(root: str, n: int):
    """The bench's workspace (built the same way every time, so its content keys match)."""
    import numpy as np

    from workspace.config import DataSpec, ModelSpec, TransformSpec, WorkspaceConfig
    from workspace.core import Workspace
    from workspace.data import ArraySplit

    names = tuple(f"c{k:04d}" for k in range(K))
    images = np.zeros((n, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % K
    small = np.zeros((K, 8, 8, 3), dtype=np.uint8)
    config = WorkspaceConfig(name=f"synthetic {n:,} x {K}", task="single_label", root=REPO,
                             model=ModelSpec(factory="workspace.demo:build_demo_model"),
                             data=DataSpec(format="demo", train=REPO, eval=REPO, classes=names),
                             transform=TransformSpec(resize=8, mean=(0.5,) * 3, std=(0.25,) * 3))
    splits = {"train": ArraySplit(small, np.arange(K, dtype=np.int64), names),
              "eval": ArraySplit(images, labels, names)}
    return Workspace(config, state_dir=Path(root), splits=splits, spec=f"synthetic-{n}")


def _write(root: Path, n: int) -> None:
    import numpy as np

    from workspace.cache import InferenceOutputs

    ws = synthetic_workspace(str(root), n)
    if ws.cached_outputs("eval") is not None:
        return
    rng = np.random.default_rng(0)
    labels = ws.split("eval").labels
    logits = rng.standard_normal((n, K), dtype=np.float32)
    logits[np.arange(n), labels] += 3.0  # ~80 % right, mistakes spread over the other classes
    logits[np.arange(n), (labels + 1) % K] += 2.5 * (labels % 7 == 0)  # a few confused pairs
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    out = InferenceOutputs(logits=logits, probs=probs.astype(np.float32), preds=logits.argmax(1).astype(np.int64),
                           labels=labels, embeddings=rng.standard_normal((n, 64), dtype=np.float32),
                           indices=np.arange(n, dtype=np.int64), class_names=ws.class_names)
    ws.save_outputs(out, "eval", "orig")


def run() -> list[dict]:
    n = int(os.environ.get("GROUPFIX_BENCH_OPEN_ROWS", "1000000"))
    root = REPO / "bench_out" / f"open-{n}"
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    _write(root, n)
    made = time.perf_counter() - start
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO), root=str(root), n=n)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return [{"name": f"open a {n:,} x {K} eval cache", "value": float("nan"), "unit": "s", "target": "opens",
                 "ok": False, "detail": proc.stderr.strip().splitlines()[-1][:200]}]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return [
        {"name": f"open a {n:,} x {K} eval cache + confusion summary", "value": r["seconds"], "unit": "s",
         "target": "info", "ok": None, "detail": f"top pair {r['top_pair']['a']}/{r['top_pair']['b']}; "
                                                  f"files written in {made:.0f} s (once)"},
        {"name": f"peak memory opening {n:,} x {K}", "value": r["peak_gb"], "unit": "GB", "target": "< 24 (opens)",
         "ok": r["peak_gb"] < 24, "detail": "VmHWM of the process; logits and probs are 8 GB on disk, memory-mapped"},
    ]
