"""Grad-CAM and object associations for a workspace (entry module; see :mod:`diagnostics.registry`).

``python -m diagnostics gradcam --workspace W [--split eval] [--threshold T] [--target CLASS] [--json]``
prints ``{"associations": [{"class", "object", "count", "rate", "share_mean", "count_correct",
"count_wrong"}]}`` sorted by rate descending (see :mod:`diagnostics.associations`). Heatmaps and
shares live in the workspace's artifact store, keyed by the model version's outputs key (weights,
data, transform), the Grad-CAM layer, the explained class and, for shares, the masks.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from diagnostics.associations import DEFAULT_THRESHOLD, ObjectShares, aggregate_associations, compute_object_shares
from diagnostics.gradcam import GradCamResult, compute_gradcam, resolve_layer, target_rows
from diagnostics.mask_sources import MASKS_HELP, load_masks, masks_fingerprint
from diagnostics.registry import Diagnostic, register_diagnostic
from workspace.artifacts import content_key
from workspace.cache import Progress
from workspace.cli import UsageError, finite_float, open_from_args, tqdm_progress
from workspace.errors import WorkspaceError

GRADCAM_FORMAT = 2
SHARES_FORMAT = 2
KEYS = ("class", "object", "count", "rate", "share_mean", "count_correct", "count_wrong")


def gradcam_key(ws, split: str, version: str, target: str | None) -> str:
    return content_key(ws.outputs_key(split, version), ws.config.model.gradcam_layer, target or "pred")


def cached_gradcam(ws, split: str = "eval", version: str = "orig", *, target: str | None = None
                   ) -> GradCamResult | None:
    """The stored result if present and current (never runs the model)."""
    return ws.artifacts.load("gradcam", gradcam_key(ws, split, version, target),
                             slot=f"{version}/{split}/{target or 'pred'}", version=GRADCAM_FORMAT)


def workspace_gradcam(ws, split: str = "eval", version: str = "orig", *, target: str | None = None,
                      progress: Progress | None = None, batch_size: int = 128, device: str = "auto",
                      rebuild: bool = False, outputs=None) -> GradCamResult:
    """Grad-CAM of a model version on a split, from the artifact store or one batched pass.

    Args:
        target: None = explain the predicted class(es); a class name = that class.
        progress: ``progress(done, total)``; raise from it to cancel (nothing is stored).
        outputs: the split's ``InferenceOutputs`` if the caller has them.

    Raises:
        WorkspaceError: TorchScript or conv-less model, bad layer, unknown class name.
    """
    target_idx = None
    if target is not None:
        if target not in ws.class_names:
            raise WorkspaceError(f"unknown class {target!r}; valid: {', '.join(ws.class_names)}")
        target_idx = ws.class_names.index(target)

    def compute() -> GradCamResult:
        model = ws.model(version)
        layer = resolve_layer(model, ws.config.model.gradcam_layer, ws.example_input())
        out = outputs if outputs is not None else ws.outputs(split, version)
        indices, classes, correct = target_rows(out.preds, out.labels, out.indices, task=ws.task, target=target_idx)
        cams = compute_gradcam(model, ws.dataset(split), layer=layer, indices=indices, classes=classes,
                               batch_size=batch_size, device=device, progress=progress)
        size = tuple(int(s) for s in ws.example_input(1).shape[-2:])
        return GradCamResult(indices, classes, np.asarray(correct, bool), cams, size, layer, target or "pred",
                             split, version)

    return ws.artifacts.get_or_compute("gradcam", gradcam_key(ws, split, version, target), compute,
                                       slot=f"{version}/{split}/{target or 'pred'}", version=GRADCAM_FORMAT,
                                       rebuild=rebuild)


def workspace_shares(ws, result: GradCamResult, masks, *, progress: Progress | None = None) -> ObjectShares:
    """:func:`diagnostics.associations.compute_object_shares` for a workspace, stored."""
    t = ws.config.transform
    key = content_key(gradcam_key(ws, result.split, result.model_version, None if result.target == "pred"
                                  else result.target), masks_fingerprint(masks), t.resize, t.crop)

    def compute() -> ObjectShares:
        if hasattr(masks, "prepare"):  # a segmentation model: label maps first (cached)
            masks.prepare(progress)
        return compute_object_shares(result, masks, resize=t.resize, crop=t.crop, progress=progress)

    return ws.artifacts.get_or_compute("object-shares", key, compute,
                                       slot=f"{result.model_version}/{result.split}/{result.target}",
                                       version=SHARES_FORMAT)


def _args(p) -> None:
    p.add_argument("--split", default="eval", choices=["eval", "train"], help="train or eval (default eval)")
    p.add_argument("--threshold", type=finite_float, default=DEFAULT_THRESHOLD,
                   help="relevance share at which an object counts as driving the prediction (default 0.3)")
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--target", default=None, metavar="CLASS",
                   help="explain this class for every image instead of the predicted class")
    p.add_argument("--top", type=int, default=0, help="keep only the first N associations (0 = all)")


def run(args: argparse.Namespace) -> dict:

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.top < 0:
        raise UsageError(f"--top must be >= 0, got {args.top}")
    ws = open_from_args(args)
    ws.version(args.version)
    masks = load_masks(ws, args.split)
    if masks is None:
        raise WorkspaceError("this workspace has no object masks. " + " ".join(MASKS_HELP.split()))
    for warning in getattr(masks, "warnings", []) or []:
        print(f"warning: {warning}", file=sys.stderr)
    with tqdm_progress("inference") as progress:
        outputs = ws.outputs(args.split, args.version, progress=progress)
    with tqdm_progress("grad-cam") as progress:
        result = workspace_gradcam(ws, args.split, args.version, target=args.target, progress=progress,
                                   outputs=outputs)
    with tqdm_progress("object shares") as progress:
        shares = workspace_shares(ws, result, masks, progress=progress)
    df = aggregate_associations(shares.shares, result.classes, result.correct, class_names=ws.class_names,
                                object_names=shares.object_names, threshold=args.threshold)
    if args.top > 0:
        df = df.head(args.top)
    rows = [{k: (round(float(r[k]), 6) if k in ("rate", "share_mean") else r[k]) for k in KEYS}
            for r in df.to_dict("records")]
    rows = [{k: (int(v) if k.startswith("count") else v) for k, v in r.items()} for r in rows]
    text = "\n".join(f"{r['class']:>14} <- {r['object']:<14} rate {r['rate']:.3f}  count {r['count']}"
                     f" ({r['count_correct']} correct, {r['count_wrong']} wrong)  share {r['share_mean']:.3f}"
                     for r in rows[:30])
    return {"associations": rows, "text": text or "no associations"}


register_diagnostic(Diagnostic("gradcam", "Grad-CAM object associations per predicted class", _args, run,
                               page="gradcam", example=("--top", "5")))
