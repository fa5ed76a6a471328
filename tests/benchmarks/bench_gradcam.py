"""Batched Grad-CAM throughput vs a batched forward + backward pass over the same images.

Both run the demo model over the demo's eval split with the same DataLoader and the same
per-image target classes (the cached predictions). The baseline computes the logits, picks
each image's target logit and back-propagates to the input of the network (the minimum a
gradient explanation needs); ours is :func:`diagnostics.gradcam.compute_gradcam` (captum
LayerGradCam with hooks, channel weighting, ReLU, copy to NumPy). A second, informational
row compares with a backward pass that stops at the Grad-CAM layer (what captum's wrapper
costs). Repeated 3 times, median taken.
Target: ratio (our images/s over baseline images/s) >= 0.5.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import torch


def _forward_backward(model, loader, classes: torch.Tensor) -> float:
    start, done = time.perf_counter(), 0
    for x, _, _ in loader:
        x = x.requires_grad_(True)
        logits = model(x)
        picked = logits.gather(1, classes[done:done + len(x), None]).sum()
        torch.autograd.grad(picked, x)
        done += len(x)
    return time.perf_counter() - start


def _forward_backward_to_layer(model, module, loader, classes: torch.Tensor) -> float:
    """The same, but back-propagating only to the Grad-CAM layer's output (captum's overhead)."""
    start, done, store = time.perf_counter(), 0, {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        for x, _, _ in loader:
            logits = model(x)
            picked = logits.gather(1, classes[done:done + len(x), None]).sum()
            torch.autograd.grad(picked, store["a"])
            done += len(x)
    finally:
        handle.remove()
    return time.perf_counter() - start


def run() -> list[dict]:
    os.environ.setdefault("GROUPFIX_HOME", tempfile.mkdtemp(prefix="gf-bench-"))
    from diagnostics.gradcam import compute_gradcam, resolve_layer
    from workspace.cache import make_loader
    from workspace.core import open_workspace

    ws = open_workspace("demo")
    model = ws.model()
    out = ws.outputs("eval")
    layer = resolve_layer(model, "auto", ws.example_input())
    dataset = ws.dataset("eval", indices=out.indices)
    loader = make_loader(dataset, batch_size=128)
    classes = torch.as_tensor(out.preds, dtype=torch.long)
    n = len(out.indices)
    _forward_backward(model, loader, classes)  # warm-up
    module = dict(model.named_modules())[layer]
    ours, base, to_layer = [], [], []
    for _ in range(3):
        base.append(_forward_backward(model, loader, classes))
        to_layer.append(_forward_backward_to_layer(model, module, loader, classes))
        start = time.perf_counter()
        compute_gradcam(model, ws.dataset("eval"), layer=layer, indices=out.indices, classes=np.asarray(out.preds),
                        batch_size=128, device="cpu")
        ours.append(time.perf_counter() - start)
    ratio = statistics.median(base) / statistics.median(ours)
    overhead = statistics.median(to_layer) / statistics.median(ours)
    return [{
        "name": "batched Grad-CAM / batched forward+backward (throughput)",
        "value": ratio, "unit": "x", "target": ">= 0.5", "ok": ratio >= 0.5,
        "detail": f"{n / statistics.median(ours):.0f} img/s vs {n / statistics.median(base):.0f} img/s, "
                  f"{n} demo eval images, batch 128, layer {layer}, CPU threads {torch.get_num_threads()}",
    }, {
        "name": "batched Grad-CAM / forward+backward to the Grad-CAM layer",
        "value": overhead, "unit": "x", "target": "info", "ok": None,
        "detail": f"{n / statistics.median(to_layer):.0f} img/s when the backward stops at {layer}",
    }]
