"""NeuronTune-style neuron scores for a workspace (entry module; see :mod:`diagnostics.registry`).

Our reading of "NeuronTune" (Zheng et al.; the paper gives only its abstract here): embedding
neurons that activate more on misclassified than on correctly classified samples of the same class
are spurious (:mod:`diagnostics.neurons`). Scores come from a held-out set: the workspace's
``[data] validation`` split when it has one, else the eval split (which makes eval numbers after a
regulation optimistic: the page and the command say so).

``python -m diagnostics neurons --workspace W [--lam 0] [--rule all|any] [--class C] --json`` prints
the spurious sets under both rules, the held-out split used and the neurons with the largest deltas.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from diagnostics import neurons
from diagnostics.registry import Diagnostic, register_diagnostic
from workspace.cache import Progress
from workspace.cli import UsageError, finite_float, open_from_args, tqdm_progress
from workspace.errors import WorkspaceError


def heldout_split(ws) -> tuple[str, str | None]:
    """The split neurons are scored on, and a warning when it is the eval split."""
    if ws.has_split("validation"):
        return "validation", None
    return "eval", ("scored on the eval split (the workspace has no [data] validation split): eval numbers after "
                    "a regulation are optimistic")


def neuron_scores(ws, version: str = "orig", *, lam: float = 0.0, progress: Progress | None = None) -> dict:
    """Neuron deltas and spurious sets of a model version on its held-out split.

    Returns:
        ``{"split", "warning", "scores": NeuronScores, "outputs": the held-out InferenceOutputs}``.

    Raises:
        WorkspaceError: multi-label, or a model without embeddings.
    """
    if ws.multi_label:
        raise WorkspaceError("neuron scores need a single-label workspace")
    split, warning = heldout_split(ws)
    out = ws.outputs(split, version, progress=progress)
    if out.embeddings is None:
        raise WorkspaceError("neuron scores need the penultimate embeddings, and this model gives none "
                             "(set [model] embedding_layer)")
    scores = neurons.score_neurons(np.asarray(out.embeddings), np.asarray(out.labels), np.asarray(out.preds),
                                   lam=lam, num_classes=ws.num_classes)
    return {"split": split, "warning": warning, "scores": scores, "outputs": out}


def top_neurons(scores: neurons.NeuronScores, *, top: int = 20) -> pd.DataFrame:
    """Neurons by their smallest delta over the valid classes (a neuron in the "all" set has it > lambda)."""
    valid = scores.deltas[scores.valid]
    if not len(valid):
        return pd.DataFrame(columns=["neuron", "min_delta", "max_delta", "spurious_all", "spurious_any"])
    frame = pd.DataFrame({"neuron": np.arange(scores.deltas.shape[1]), "min_delta": valid.min(axis=0),
                          "max_delta": valid.max(axis=0), "spurious_all": scores.spurious_all,
                          "spurious_any": scores.spurious_any})
    return frame.sort_values(["min_delta", "max_delta"], ascending=False).head(top).reset_index(drop=True)


def _args(p) -> None:
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--lam", type=finite_float, default=0.0, help="lambda: the margin a delta must exceed (default 0)")
    p.add_argument("--top", type=int, default=20, help="how many neurons to list (default 20)")


def run(args: argparse.Namespace) -> dict:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    ws = open_from_args(args)
    ws.version(args.version)
    with tqdm_progress("held-out outputs") as progress:
        found = neuron_scores(ws, args.version, lam=args.lam, progress=progress)
    s = found["scores"]
    rows = top_neurons(s, top=args.top)
    result = {"split": found["split"], "warning": found["warning"], **s.summary(),
              "spurious_all_neurons": np.flatnonzero(s.spurious_all).tolist(),
              "spurious_any_neurons": np.flatnonzero(s.spurious_any).tolist(),
              "top": [{k: (bool(v) if k.startswith("spurious") else float(v) if k != "neuron" else int(v))
                       for k, v in r.items()} for r in rows.to_dict("records")]}
    result["text"] = (f"{s.summary()['neurons']} neurons scored on {found['split']}: {int(s.spurious_all.sum())} "
                      f"spurious for every class, {int(s.spurious_any.sum())} for some class (lambda {args.lam:g})"
                      + (f"; {found['warning']}" if found["warning"] else ""))
    return result


register_diagnostic(Diagnostic("neurons", "NeuronTune-style scores: embedding neurons that drive mistakes",
                               _args, run, page="neurons", example=("--top", "5")))
