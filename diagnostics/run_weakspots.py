"""Weakspots and pivotal images for a workspace (entry module; see :mod:`diagnostics.registry`).

``python -m diagnostics weakspots --workspace W --radius D|auto [--k K] [--purity P] --json`` prints
``{"radius", "k", "purity", "pivotal": [{"index", "split", "label", "pred", "purity"}],
"pairs": [{"a", "b", "count"}], "counts_by_radius": [{"radius", "count"}]}``: pivotal images
purest first (label and pred are class names, index the position in the split), weakspots per
unordered class pair (most first), and the number of pivotal images over a radius grid spanning
the suggested range. ``--radius auto`` takes the suggested radius (the median distance to the k-th
nearest neighbour). The FAISS index used is named on stderr.

:func:`neighbour_data` is what the page uses: the nearest neighbours of every misclassified sample
(and of a random sample, for the radius suggestion), searched once per model version with the
largest k the page offers and kept in the artifact store; radius, k and purity changes only slice it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from diagnostics.neighbours import build_index
from diagnostics.registry import Diagnostic, register_diagnostic
from diagnostics.weakspots import (
    DEFAULT_K, DEFAULT_PURITY, build_representative_set, find_neighbours, sample_distances, scan_weakspots,
)
from workspace.artifacts import content_key
from workspace.cache import Progress
from workspace.cli import UsageError, finite_float, open_from_args, tqdm_progress
from workspace.core import ORIG
from workspace.errors import WorkspaceError

K_MAX = 50  # one search with the largest k the page's slider allows
NEIGHBOURS_FORMAT = 1


def neighbour_data(ws, version: str = ORIG, *, k_max: int = K_MAX, progress: Progress | None = None) -> dict:
    """``{"rep", "table", "sample"}`` of a model version: the representative set (train + eval),
    the kNN table of every misclassified sample (``k_max``) and sampled kNN distances.

    Raises:
        WorkspaceError: no embeddings, a multi-label task, fewer than two samples.
    """
    train = ws.outputs("train", version, progress=progress)
    evals = ws.outputs("eval", version, progress=progress)
    rep = build_representative_set(train, evals)
    k = min(k_max, rep.n - 1)
    if k < 1:
        raise WorkspaceError("need at least two samples to look for neighbours")

    def compute() -> dict:
        index = build_index(rep.embeddings)
        table = find_neighbours(rep, k=k, index=index, progress=progress)
        sample = sample_distances(rep, k=k, index=index)
        return {"queries": table.queries, "distances": table.distances, "neighbours": table.neighbours,
                "index": table.index, "sample": sample}

    key = content_key(ws.outputs_key("train", version), ws.outputs_key("eval", version), k)
    found = ws.artifacts.get_or_compute("neighbours", key, compute, slot=version, version=NEIGHBOURS_FORMAT)
    from diagnostics.weakspots import NeighbourTable

    table = NeighbourTable(found["queries"], found["distances"], found["neighbours"], str(found["index"]))
    return {"rep": rep, "table": table, "sample": np.asarray(found["sample"])}


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


def _args(p) -> None:
    p.add_argument("--radius", type=_radius, default="auto", help="L2 radius d, or 'auto' (default)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"neighbours per sample (default {DEFAULT_K})")
    p.add_argument("--purity", type=finite_float, default=DEFAULT_PURITY,
                   help=f"purity threshold t_perp in (0, 1] (default {DEFAULT_PURITY})")
    p.add_argument("--version", default=ORIG, help="model version (default orig)")


def run(args) -> dict:

    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if not 0 < args.purity <= 1:
        raise UsageError(f"--purity must lie in (0, 1], got {args.purity}")
    ws = open_from_args(args)
    ws.version(args.version)  # unknown version -> WorkspaceError with the valid ids
    outputs = []
    for split in ("train", "eval"):
        with tqdm_progress(f"{split} outputs") as progress:
            outputs.append(ws.outputs(split, args.version, progress=progress))
    rep = build_representative_set(*outputs)
    with tqdm_progress("weakspot search") as progress:
        scan = scan_weakspots(rep, radius=args.radius, k=args.k, purity=args.purity, progress=progress)
    print(f"{scan.index}; {scan.queries} misclassified samples tested", file=sys.stderr)
    result = scan.to_dict()
    result["text"] = (f"radius {scan.radius:.4g}, k {scan.k}, purity {scan.purity}: {len(scan.pivotal)} pivotal "
                      f"images; " + ", ".join(f"{r['a']}/{r['b']} {r['count']}" for r in result["pairs"][:10]))
    return result


register_diagnostic(Diagnostic("weakspots", "FAISS weakspots and pivotal images (weak-boundary paper 4.1)", _args,
                               run, page="weakspots", example=("--k", "5")))
