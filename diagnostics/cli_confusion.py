"""``python -m diagnostics confusion|wos --workspace W ... [--json]``.

- ``confusion``: accuracy, per-class accuracy, the most confused pairs (type1conf, or
  type2conf for multi-label workspaces) and the most biased triplets (cd), sorted descending.
- ``wos``: accuracy and target confusion/bias before and after w-os at one rho; ``--curve``
  adds the whole sweep over rho (1 .. 1e-4) and the suggested rho (WR paper 2.2.3).
"""

from __future__ import annotations

import argparse
import math

from diagnostics.confusion import (
    directional_errors, error_matrix, parse_targets, per_class_accuracy, rank_biased_triplets,
    rank_confused_pairs,
)
from workspace.cli import UsageError, add_workspace_argument, tqdm_progress
from workspace.errors import WorkspaceError

SPLITS = ("eval", "train")


def _common(parser: argparse.ArgumentParser) -> None:
    add_workspace_argument(parser)
    parser.add_argument("--split", default="eval", choices=SPLITS, help="which split (default: eval)")
    parser.add_argument("--version", default="orig", help="model version id (default: orig)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def register(subparsers) -> None:
    p = subparsers.add_parser("confusion", help="accuracy, confused pairs and biased triplets")
    _common(p)
    p.add_argument("--top", type=int, default=10, help="how many pairs and triplets (default 10)")
    p.set_defaults(func=run_confusion)

    p = subparsers.add_parser("wos", help="w-os post-hoc repair: before/after one rho, or the whole curve")
    _common(p)
    p.add_argument("--targets", required=True, help='"A,B" (pair), "A,B;C,D" (several pairs) or "P,N,C" (triplet)')
    p.add_argument("--rho", type=float, default=None, help="rho in [0, 1] (required without --curve)")
    p.add_argument("--curve", action="store_true", help="sweep rho from 1 to 1e-4 and suggest one")
    p.add_argument("--lambda1", type=float, default=0.25, help="least relative drop of the target error (0.25)")
    p.add_argument("--lambda2", type=float, default=0.01, help="largest relative accuracy drop (0.01)")
    p.set_defaults(func=run_wos)


def _outputs(args):
    from workspace.core import open_workspace

    ws = open_workspace(args.workspace)
    known = [v["id"] for v in ws.versions()]
    if args.version not in known:
        raise UsageError(f"unknown model version {args.version!r}; known: {', '.join(known)}")
    with tqdm_progress(f"{args.version} on {args.split}") as progress:
        out = ws.outputs(args.split, args.version, progress=progress)
    if out.n == 0:
        raise WorkspaceError(f"the {args.split} split has no usable images")
    return ws, out


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def confusion_summary(out, *, top: int = 10) -> dict:
    """The ``confusion`` command's result for cached outputs (also used by tests)."""
    k = out.num_classes
    errors = error_matrix(out.labels, out.preds, k, task=out.task)
    pairs = rank_confused_pairs(errors, out.class_names, top=top,
                                directional=directional_errors(out.labels, out.preds, k, task=out.task))
    triplets = rank_biased_triplets(errors, out.class_names, top=top)
    acc = per_class_accuracy(out.labels, out.preds, k, task=out.task)
    return {
        "accuracy": float(out.accuracy), "n": int(out.n), "classes": list(out.class_names),
        "per_class_accuracy": {name: _num(float(a)) for name, a in zip(out.class_names, acc)},
        "pairs": [{"a": r.a, "b": r.b, "conf": float(r.conf), "a_to_b": float(r.a_to_b), "b_to_a": float(r.b_to_a)}
                  for r in pairs.itertuples()],
        "triplets": [{"positive": r.positive, "negative": r.negative, "anchor": r.anchor, "cd": float(r.cd),
                      "error_pos": float(r.error_pos), "error_neg": float(r.error_neg)}
                     for r in triplets.itertuples()],
    }


def run_confusion(args) -> dict:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    _, out = _outputs(args)
    return confusion_summary(out, top=args.top)


def wos_summary(out, targets, *, rho: float | None = None, curve: bool = False,
                lambda1: float = 0.25, lambda2: float = 0.01) -> dict:
    """The ``wos`` command's result for cached outputs and parsed targets."""
    from repair.wos import WosWhatIf, suggest_rho

    what_if = WosWhatIf(out.probs, out.labels, targets, task=out.task, threshold=out.threshold, preds=out.preds)

    def point(r) -> dict:
        d = {"accuracy": float(r.accuracy), "target_error": float(r.target_error)}
        if r.map is not None:
            d["map"] = _num(r.map)
        return d

    result: dict = {"targets": [[out.class_names[c] for c in t] for t in targets]}
    if rho is not None:
        after = what_if.evaluate(rho)
        result = {"rho": float(rho), **result, "before": point(what_if.base),
                  "after": {**point(after), "changed": int(len(after.changed)),
                            "fixed": after.fixed, "broken": after.broken}}
    if curve:
        frame = what_if.curve()
        suggestion = suggest_rho(frame, lambda1, lambda2)
        result["curve"] = [{key: _num(v) for key, v in row.items()} for row in frame.to_dict("records")]
        result["suggested_rho"] = suggestion["rho"]
        result["suggestion"] = {"meets": suggestion["meets"], "reason": suggestion["reason"],
                                "lambda1": lambda1, "lambda2": lambda2,
                                "max_target_error": suggestion["max_target_error"],
                                "min_accuracy": suggestion["min_accuracy"]}
    return result


def run_wos(args) -> dict:
    if args.rho is None and not args.curve:
        raise UsageError("give --rho R (in [0, 1]) or --curve")
    if args.rho is not None and not 0.0 <= args.rho <= 1.0:
        raise UsageError(f"--rho must be in [0, 1], got {args.rho}")
    for name in ("lambda1", "lambda2"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name} must be in [0, 1], got {getattr(args, name)}")
    ws, out = _outputs(args)
    try:
        targets = parse_targets(args.targets, out.class_names)
    except ValueError as exc:
        raise UsageError(f"--targets: {exc}") from None
    return wos_summary(out, targets, rho=args.rho, curve=args.curve, lambda1=args.lambda1, lambda2=args.lambda2)
