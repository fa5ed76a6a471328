"""``python -m diagnostics gradcam --workspace W [--split eval] [--threshold T] [--target CLASS] [--json]``.

Prints ``{"associations": [{"class", "object", "count", "rate", "share_mean",
"count_correct", "count_wrong"}]}`` sorted by rate descending (see
:mod:`diagnostics.associations`). Grad-CAM and the shares are cached on disk.
"""

from __future__ import annotations

import argparse

from diagnostics.associations import DEFAULT_THRESHOLD, aggregate_associations, workspace_shares
from diagnostics.gradcam import workspace_gradcam
from diagnostics.mask_sources import MASKS_HELP, load_masks
from workspace.cli import UsageError, add_workspace_argument, tqdm_progress
from workspace.core import SPLITS, open_workspace
from workspace.errors import WorkspaceError

KEYS = ("class", "object", "count", "rate", "share_mean", "count_correct", "count_wrong")


def register(subparsers) -> None:
    p = subparsers.add_parser("gradcam", help="Grad-CAM object associations per predicted class")
    add_workspace_argument(p)
    p.add_argument("--split", default="eval", help="train or eval (default eval)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="relevance share at which an object counts as driving the prediction (default 0.3)")
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--target", default=None, metavar="CLASS",
                   help="explain this class for every image instead of the predicted class")
    p.add_argument("--top", type=int, default=0, help="keep only the first N associations (0 = all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict:
    if args.split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {args.split!r}")
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    ws = open_workspace(args.workspace)
    masks = load_masks(ws, args.split)
    if masks is None:
        raise WorkspaceError("this workspace has no object masks. " + " ".join(MASKS_HELP.split()))
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
    if args.json:
        return {"associations": rows}
    return {"associations": rows, "text": text or "no associations"}
