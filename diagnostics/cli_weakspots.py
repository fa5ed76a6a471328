"""``python -m diagnostics weakspots --workspace W --radius D|auto [--k K] [--purity P] --json``.

Prints ``{"radius", "k", "purity", "pivotal": [{"index", "split", "label", "pred", "purity"}],
"pairs": [{"a", "b", "count"}], "counts_by_radius": [{"radius", "count"}]}``: pivotal images
purest first (label and pred are class names, index the position in the split), weakspots
per unordered class pair (most first), and the number of pivotal images over a radius grid
spanning the suggested range. ``--radius auto`` takes the page's suggested radius (the
median distance to the k-th nearest neighbour). The FAISS index used is named on stderr.
"""

from __future__ import annotations

import argparse
import sys

from diagnostics.weakspots import DEFAULT_K, DEFAULT_PURITY, build_representative_set, scan_weakspots
from workspace.cli import UsageError, add_workspace_argument, tqdm_progress
from workspace.core import ORIG, open_workspace


def _radius(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--radius must be a positive number or 'auto', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--radius must be a positive number or 'auto', got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("weakspots", help="FAISS weakspots and pivotal images (weak-boundary paper 4.1)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workspace_argument(p)
    p.add_argument("--radius", type=_radius, default="auto", help="L2 radius d, or 'auto' (default)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"neighbours per sample (default {DEFAULT_K})")
    p.add_argument("--purity", type=float, default=DEFAULT_PURITY,
                   help=f"purity threshold t_perp in (0, 1] (default {DEFAULT_PURITY})")
    p.add_argument("--version", default=ORIG, help="model version (default orig)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> dict:
    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if not 0 < args.purity <= 1:
        raise UsageError(f"--purity must lie in (0, 1], got {args.purity}")
    ws = open_workspace(args.workspace)
    ws.version(args.version)  # unknown version -> WorkspaceError with the valid ids
    outputs = []
    for split in ("train", "eval"):
        with tqdm_progress(f"{split} outputs") as progress:
            outputs.append(ws.outputs(split, args.version, progress=progress))
    rep = build_representative_set(*outputs)
    with tqdm_progress("weakspot search") as progress:
        scan = scan_weakspots(rep, radius=args.radius, k=args.k, purity=args.purity, progress=progress)
    print(f"{scan.index}; {scan.queries} misclassified samples tested", file=sys.stderr)
    return scan.to_dict()
