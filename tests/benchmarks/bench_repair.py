"""Fine-tuning speed: our loop's orig-ft vs a bare PyTorch loop, and w-bn's cost vs orig-ft.

Same demo model (a deep copy), same train DataLoader settings (the workspace's train
transform, batch 128, a seeded random sampler), SGD with momentum; the bare loop is
``zero_grad / forward / cross_entropy / backward / step`` with nothing else. Our loop adds
the method hooks, the cancel check, progress callbacks and the LR schedule. Steps are
timed between ``WARM`` and ``WARM + STEPS`` inside the first epoch (no evaluation in the
window), median of ``REPEATS``. Targets: orig-ft / bare >= 0.9 steps per second; w-bn's
time per step relative to orig-ft is informational (it forwards an extra target batch).
On a CUDA machine both run on the GPU (with AMP in our loop).
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time

import torch

WARM, STEPS, REPEATS = 3, 20, 3


class _Stop(Exception):
    pass


def _ours(ws, method: str, device: str) -> float:
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
        finetune(ws, get_method(method), ctx, TrainConfig(epochs=1, batch_size=128, lr=0.001, device=device),
                 on_step=on_step)
    except _Stop:
        pass
    return STEPS / (marks["end"] - marks["start"])


def _bare(ws, device: str) -> float:
    from repair.loop import TrainConfig, _train_loader

    dev = torch.device(device)
    model = copy.deepcopy(ws.model()).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    labels = torch.as_tensor(ws.split("train").labels)
    loader = _train_loader(ws, TrainConfig(batch_size=128), None, torch.Generator().manual_seed(0))
    start = None
    for step, (x, index, _) in enumerate(loader, 1):
        x, y = x.to(dev), labels[index].to(dev)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == WARM:
            start = time.perf_counter()
        if step == WARM + STEPS:
            return STEPS / (time.perf_counter() - start)
    raise RuntimeError("the train split is too small for the benchmark")


def run() -> list[dict]:
    os.environ.setdefault("GROUPFIX_HOME", tempfile.mkdtemp(prefix="gf-bench-"))
    from workspace.core import open_workspace

    ws = open_workspace("demo")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bare, ft, wbn = [], [], []
    for _ in range(REPEATS):
        bare.append(_bare(ws, device))
        ft.append(_ours(ws, "orig-ft", device))
        wbn.append(_ours(ws, "w-bn", device))
    b, f, w = statistics.median(bare), statistics.median(ft), statistics.median(wbn)
    where = f"{device}, threads {torch.get_num_threads()}, demo train batch 128, {STEPS} steps x {REPEATS}"
    return [
        {"name": "orig-ft steps/s / bare training loop steps/s", "value": f / b, "unit": "x", "target": ">= 0.9",
         "ok": f / b >= 0.9, "detail": f"{f:.2f} vs {b:.2f} steps/s bare ({where})"},
        {"name": "w-bn time per step / orig-ft time per step", "value": f / w, "unit": "x", "target": "info",
         "ok": None, "detail": f"{w:.2f} vs {f:.2f} steps/s; w-bn forwards an extra target batch of 128"},
    ]
