"""Per-sample gradient throughput: torch.func ``vmap(grad)`` vs the obvious baselines.

Same data (demo train images, preloaded as one tensor), same demo model in eval mode:

* ours, all parameters: :func:`diagnostics.gradients.per_sample_gradients` (``torch.func``
  ``vmap(grad)``) in chunks of 64;
* baseline 1: a Python loop of single-sample forward + backward passes (target: ours >= 10x);
* baseline 2: one batched forward + backward of the mean loss over the same data, which gives
  only the summed gradient (report the ratio; the closer to 1 the better);
* ours, last layer (the default): the exact closed form from cached embeddings, and the
  generic ``vmap`` path over the classifier's parameters, each vs the loop restricted to the
  classifier.

On CPU the all-parameter path is compute-bound: a per-sample method cannot beat one batched
forward + backward, so its speed-up over the loop is capped by (batched / loop), a few x on a
small CNN with 2 cores; on a GPU the loop is launch-bound and the gap is far larger.

Median of repeats; CPU threads as torch has them (``make bench`` does not pin them).

It also reports the demo's must-show recovery numbers (issue 5): ROC AUC of p_s for the
planted minority with the loaded model and with the GCE biased model (trained here if not
cached: ~35 s on one CPU thread), and the noise flag's recall / clean share.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _interleaved(fns, repeats: int) -> list[float]:
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for slot, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            slot.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def run(n: int = 256, loop_n: int = 64, chunk: int = 64, repeats: int = 5) -> list[dict]:
    os.environ.setdefault("GROUPFIX_HOME", tempfile.mkdtemp(prefix="gf-bench-"))
    from diagnostics.gradients import last_layer_gradients, loop_gradients, per_sample_gradients
    from workspace.core import open_workspace

    ws = open_workspace("demo")
    model = ws.load_model()
    data = ws.dataset("train", indices=np.arange(n))
    x = torch.stack([data[i][0] for i in range(n)])
    y = torch.as_tensor(ws.split("train").labels[:n])
    params = sum(p.numel() for p in model.parameters())

    def ours():
        for s in range(0, n, chunk):
            per_sample_gradients(model, x[s:s + chunk], y[s:s + chunk])

    def batched():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    # interleaved rounds, median per method: the machine's load drifts between rounds
    loop_part = lambda: loop_gradients(model, x[:loop_n], y[:loop_n])  # noqa: E731
    t_ours, t_loop, t_batch = _interleaved([ours, loop_part, batched], repeats)
    t_loop *= n / loop_n
    # correctness of what is timed: vmap rows equal the loop rows
    ref = loop_gradients(model, x[:8], y[:8])
    diff = (per_sample_gradients(model, x[:8], y[:8]) - ref).abs().max().item()

    with torch.no_grad():
        tap = ws.embedding_tap(model)
        logits, emb = tap.forward(x)
    probs, emb_np, y_np = torch.softmax(logits, 1).numpy(), emb.numpy(), y.numpy()
    names = ["fc.weight", "fc.bias"]
    t_closed = _time(lambda: last_layer_gradients(probs, y_np, emb_np), repeats)

    def vmap_last():
        for s in range(0, n, chunk):
            per_sample_gradients(model, x[s:s + chunk], y[s:s + chunk], names=names)

    t_vmap_last, t_loop_last = _interleaved(
        [vmap_last, lambda: loop_gradients(model, x[:loop_n], y[:loop_n], names=names)], repeats)
    t_loop_last *= n / loop_n

    rows = _demo_rows(ws)
    speed = t_loop / t_ours
    vs_batch = t_batch / t_ours
    threads = torch.get_num_threads()
    return rows + [
        {"name": "all-param per-sample grads: vmap vs single-sample loop", "value": speed, "unit": "x",
         "target": ">= 10", "ok": speed >= 10,
         "detail": f"{n / t_ours:.0f} vs {n / t_loop:.0f} samples/s; {params} params, chunk {chunk}, "
                   f"{threads} threads; max |diff| {diff:.1e}"},
        {"name": "all-param per-sample grads: vmap vs one batched fwd+bwd", "value": vs_batch, "unit": "x",
         "target": "-> 1", "ok": None,
         "detail": f"{n / t_ours:.0f} vs {n / t_batch:.0f} samples/s (batched gives only the mean gradient)"},
        {"name": "last-layer grads: closed form vs single-sample loop", "value": t_loop_last / t_closed, "unit": "x",
         "target": ">= 10", "ok": t_loop_last / t_closed >= 10,
         "detail": f"{n / t_closed:.0f} vs {n / t_loop_last:.0f} samples/s (closed form from cached embeddings)"},
        {"name": "last-layer grads: vmap (generic path) vs single-sample loop", "value": t_loop_last / t_vmap_last,
         "unit": "x", "target": ">= 10", "ok": t_loop_last / t_vmap_last >= 10,
         "detail": f"{n / t_vmap_last:.0f} vs {n / t_loop_last:.0f} samples/s (full forward, backward to fc only)"},
    ]


def _demo_rows(ws) -> list[dict]:
    from diagnostics.run_gradients import compute_scores

    start = time.perf_counter()
    rows = []
    for source, lam in ((None, 1.0), (None, 0.0), ("gce", 1.0), ("gce", 0.0)):
        frame = compute_scores(ws, biased_model=source, lam=lam)
        auc = frame.attrs["minority_auc"]
        rows.append({"name": f"demo minority ROC AUC of p_s ({source or 'loaded'} model, lambda {lam:g})",
                     "value": auc, "unit": "AUC", "target": ">= 0.8" if source else "info",
                     "ok": auc >= 0.8 if source else None,
                     "detail": f"effective sample share of p_s {frame.attrs['effective_share']:.4f}"})
    rows.append({"name": "demo flipped labels flagged, paper's rule (L~ >= delta)",
                 "value": frame.attrs["flip_recall_paper"], "unit": "share", "target": ">= 0.90",
                 "ok": frame.attrs["flip_recall_paper"] >= 0.9, "detail": f"delta {frame.attrs['delta']:.3f}"})
    rows.append({"name": "demo clean samples flagged, paper's rule", "value": frame.attrs["clean_flagged_paper"],
                 "unit": "share", "target": "<= 0.10", "ok": frame.attrs["clean_flagged_paper"] <= 0.1,
                 "detail": "the rule flags every hard sample too"})
    rows.append({"name": "demo flipped labels flagged, calibrated flag (default)", "value": frame.attrs["flip_recall"],
                 "unit": "share", "target": ">= 0.40", "ok": frame.attrs["flip_recall"] >= 0.4,
                 "detail": "conservative by design: the model's own confident-error rate is subtracted"})
    rows.append({"name": "demo clean samples flagged, calibrated flag", "value": frame.attrs["clean_flagged"],
                 "unit": "share", "target": "<= 0.002", "ok": frame.attrs["clean_flagged"] <= 0.002,
                 "detail": f"scores incl. GCE training if needed: {time.perf_counter() - start:.0f}s"})
    return rows
