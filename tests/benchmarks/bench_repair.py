"""Fine-tuning speed: our loop against a bare loop over in-memory tensors, the head scope, a step's parts.

The model and data are the shared CIFAR-10 ResNet-56 on the CIFAR-10 JPEGs when they have been
prepared in ``data/resnet56`` (see ``tests/benchmarks/real_model.py``), else the demo (the detail
column says which); ``GROUPFIX_BENCH_DEMO=1`` picks the demo (to compare with earlier demo-only runs).

* ``all``-scope orig-ft steps/s against a bare loop (``zero_grad / forward / cross_entropy /
  backward / step`` over a preloaded, normalised float tensor of the train split, random batches):
  target >= 0.8. Our loop adds the batch gather from the decoded uint8 split, tensor
  augmentation, normalisation, the method hooks, the cancel check, progress and the schedule.
* ``head``-scope epoch over the train split's cached embeddings (target < 2 s at 50,000 samples).
* w-bn's time per step against orig-ft (informational: an extra target batch).
* Where a step's time goes (informational): decoding with the DataLoader path (what every step
  paid before the decoded splits), the tensor gather + augmentation, forward, backward, optimizer,
  and one evaluation pass over the eval split.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time

import numpy as np
import torch

WARM, STEPS, REPEATS = 2, 8, 3


class _Stop(Exception):
    pass


def _workspace():
    from tests.benchmarks.real_model import real_workspace
    from workspace.core import open_workspace

    ws = None if os.environ.get("GROUPFIX_BENCH_DEMO") else real_workspace()  # =1: the demo, to compare
    return (ws, "ResNet-56 on CIFAR-10 JPEGs") if ws is not None else (open_workspace("demo"), "demo")


def _ours(ws, method: str, device: str, scope: str = "all") -> float:
    from repair.loop import TrainConfig, finetune
    from repair.methods import TargetContext, get_method

    ctx = TargetContext(((0, 1),), 0.5, ws.num_classes, ws.task)
    marks = {}

    def on_step(step, total, loss):
        if step == WARM:
            marks["start"] = time.perf_counter()
        if step == WARM + STEPS:
            marks["end"] = time.perf_counter()
            raise _Stop()

    try:
        finetune(ws, get_method(method), ctx, TrainConfig(epochs=1, batch_size=128, lr=0.001, device=device,
                                                          scope=scope), on_step=on_step, probe=True)
    except _Stop:
        pass
    return STEPS / (marks["end"] - marks["start"])


def _bare(ws, device: str) -> float:
    from workspace.tensors import decoded, normalise

    dev = torch.device(device)
    model = copy.deepcopy(ws.model()).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    t = ws.config.transform
    x_all = normalise(torch.from_numpy(np.array(decoded(ws, "train").images)), t.mean, t.std)  # in memory
    labels = torch.as_tensor(ws.split("train").labels)
    gen = torch.Generator().manual_seed(0)
    start = None
    for step in range(1, WARM + STEPS + 1):
        idx = torch.randint(0, len(labels), (128,), generator=gen)
        x, y = x_all[idx].to(dev), labels[idx].to(dev)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == WARM:
            start = time.perf_counter()
    return STEPS / (time.perf_counter() - start)


def _head_epoch(ws) -> tuple[float, int]:
    from repair.loop import TrainConfig, finetune
    from repair.methods import TargetContext, get_method

    ws.outputs("train")
    ctx = TargetContext(((0, 1),), 0.5, ws.num_classes, ws.task)
    start = time.perf_counter()
    finetune(ws, get_method("w-loss"), ctx, TrainConfig(epochs=1, batch_size=128, lr=0.01, scope="head"))
    return time.perf_counter() - start, ws.cached_outputs("train").n


def _breakdown(ws, device: str) -> dict:
    """Seconds per batch of 128 for each part of a step, and per eval pass."""
    from repair.loop import evaluate
    from workspace.cache import make_loader
    from workspace.tensors import TensorBatches, decoded

    dev = torch.device(device)
    t = ws.config.transform
    out = {}
    loader = make_loader(ws.dataset("train", train=True), batch_size=128)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(3):
        next(it)
    out["decode + PIL transforms (DataLoader path)"] = (time.perf_counter() - start) / 3
    pixels = decoded(ws, "train")
    gen = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0).permutation(pixels.n)
    batches = iter(TensorBatches(pixels, order, batch_size=128, mean=t.mean, std=t.std, augment="flip_crop",
                                 generator=gen))
    next(batches)
    start = time.perf_counter()
    for _ in range(5):
        x, index, ok = next(batches)
    out["gather + tensor augmentation (decoded path)"] = (time.perf_counter() - start) / 5
    model = copy.deepcopy(ws.model()).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    y = torch.as_tensor(ws.split("train").labels[index.numpy()]).to(dev)
    x = x.to(dev)
    fw, bw, st = [], [], []
    for _ in range(4):
        a = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        b = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        c = time.perf_counter()
        opt.step()
        d = time.perf_counter()
        fw.append(b - a), bw.append(c - b), st.append(d - c)
    out["forward"], out["backward"], out["optimizer"] = (statistics.median(v[1:]) for v in (fw, bw, st))
    start = time.perf_counter()
    evaluate(ws, model, dev)
    out["evaluation pass (eval split)"] = time.perf_counter() - start
    return out


def run() -> list[dict]:
    os.environ.setdefault("GROUPFIX_HOME", tempfile.mkdtemp(prefix="gf-bench-"))
    ws, what = _workspace()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bare, ft, wbn = [], [], []
    for _ in range(REPEATS):
        bare.append(_bare(ws, device))
        ft.append(_ours(ws, "orig-ft", device))
        wbn.append(_ours(ws, "w-bn", device))
    b, f, w = statistics.median(bare), statistics.median(ft), statistics.median(wbn)
    where = f"{what}, {device}, threads {torch.get_num_threads()}, batch 128, {STEPS} steps x {REPEATS}"
    head_seconds, head_n = _head_epoch(ws)
    rows = [
        {"name": "all-scope orig-ft steps/s / bare loop over in-memory tensors", "value": f / b, "unit": "x",
         "target": ">= 0.8", "ok": f / b >= 0.8, "detail": f"{f:.3f} vs {b:.3f} steps/s bare ({where})"},
        {"name": "w-bn time per step / orig-ft time per step", "value": f / w, "unit": "x", "target": "info",
         "ok": None, "detail": f"{w:.3f} vs {f:.3f} steps/s; w-bn forwards an extra target batch of 128"},
        {"name": "head-scope epoch (w-loss) over cached embeddings", "value": head_seconds, "unit": "s",
         "target": "< 2", "ok": head_seconds < 2 if head_n >= 50_000 else None,
         "detail": f"{head_n:,} train embeddings ({what}); evaluation included"},
    ]
    for part, seconds in _breakdown(ws, device).items():
        rows.append({"name": f"step part: {part}", "value": seconds, "unit": "s", "target": "info", "ok": None,
                     "detail": f"per batch of 128 ({what})" if "evaluation" not in part else what})
    return rows
