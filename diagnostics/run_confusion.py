"""Confusion, bias triplets and the w-os what-if for a workspace (entry module; see :mod:`diagnostics.registry`).

Verbs:

- ``confusion``: accuracy, per-class accuracy, precision/recall/F1, the most confused pairs
  (type1conf, or type2conf for multi-label workspaces) and the most biased triplets (cd).
- ``triplets``: the most biased triplets only, with an anchor filter.
- ``wos``: accuracy and target confusion/bias before and after w-os at one rho; ``--curve``
  adds the whole sweep over rho (1 .. 1e-4) and the suggested rho (WR paper 2.2.3).
"""

from __future__ import annotations

import argparse
import math


from diagnostics.confusion import (
    confusion_counts, confusion_rates, directional_errors, error_matrix, per_class_accuracy, rank_biased_triplets,
    rank_confused_pairs,
)
from diagnostics.registry import Diagnostic, register_diagnostic
from workspace.cli import UsageError, finite_float, open_from_args, tqdm_progress
from workspace.errors import WorkspaceError
from workspace.targets import Target

SPLITS = ("eval", "train")
TRIPLETS_KEPT = 2000  # the pages keep the 2,000 most biased triplets


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="eval", choices=SPLITS, help="which split (default: eval)")
    parser.add_argument("--version", default="orig", help="model version id (default: orig)")


def workspace_outputs(args):
    """Open the workspace of a command and its outputs on ``args.split`` for ``args.version``."""

    ws = open_from_args(args)
    ws.version(args.version)  # an unknown version -> WorkspaceError naming the valid ones
    with tqdm_progress(f"{args.version} on {args.split}") as progress:
        out = ws.outputs(args.split, args.version, progress=progress)
    if out.n == 0:
        raise WorkspaceError(f"the {args.split} split has no usable images")
    return ws, out


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def confusion_tables(out, *, triplets: int = TRIPLETS_KEPT) -> dict:
    """Every confusion table of one outputs object (the pages cache this dict).

    Returns:
        ``errors`` (K, K) pair error, ``directional`` (K, K) directional rates, ``counts``
        (K, K) int or None (multi-label), ``rates`` (row-normalised counts, or directional
        rates), ``pairs`` and ``triplets`` (ranked frames), ``per_class`` (K,) accuracy.
    """
    k = out.num_classes
    errors = error_matrix(out.labels, out.preds, k, task=out.task)
    directional = directional_errors(out.labels, out.preds, k, task=out.task)
    counts = None if out.multi_label else confusion_counts(out.labels, out.preds, k)
    rates = directional if out.multi_label else confusion_rates(counts)
    return {"errors": errors, "directional": directional, "counts": counts, "rates": rates,
            "pairs": rank_confused_pairs(errors, out.class_names, directional=directional),
            "triplets": rank_biased_triplets(errors, out.class_names, top=triplets),
            "per_class": per_class_accuracy(out.labels, out.preds, k, task=out.task)}


def confusion_summary(out, *, top: int = 10) -> dict:
    """The ``confusion`` command's result for cached outputs."""
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
        "triplets": _triplet_rows(triplets),
    }


def _triplet_rows(frame) -> list[dict]:
    return [{"positive": r.positive, "negative": r.negative, "anchor": r.anchor, "cd": float(r.cd),
             "error_pos": float(r.error_pos), "error_neg": float(r.error_neg)} for r in frame.itertuples()]


def run_confusion(args) -> dict:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    _, out = workspace_outputs(args)
    result = confusion_summary(out, top=args.top)
    lines = [f"accuracy {result['accuracy']:.4f} on {result['n']} {args.split} images"]
    lines += [f"  {p['a']} / {p['b']}: {p['conf']:.4f}" for p in result["pairs"]]
    result["text"] = "\n".join(lines)
    return result


def run_triplets(args) -> dict:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    ws, out = workspace_outputs(args)
    if out.num_classes < 3:
        raise WorkspaceError("bias triplets need at least 3 classes")
    anchors = None
    if args.anchor:
        if args.anchor not in out.class_names:
            raise UsageError(f"--anchor: unknown class {args.anchor!r}; valid: {', '.join(out.class_names)}")
        anchors = [out.class_names.index(args.anchor)]
    errors = error_matrix(out.labels, out.preds, out.num_classes, task=out.task)
    rows = _triplet_rows(rank_biased_triplets(errors, out.class_names, top=args.top, anchors=anchors))
    text = "\n".join(f"  {r['positive']} / {r['negative']} | {r['anchor']}: cd {r['cd']:.4f}" for r in rows)
    return {"triplets": rows, "text": text or "no triplets"}


def wos_summary(out, target: Target, *, rho: float | None = None, curve: bool = False,
                lambda1: float = 0.25, lambda2: float = 0.01) -> dict:
    """The ``wos`` command's result for cached outputs and a target."""
    from diagnostics.wos import WosWhatIf, suggest_rho

    what_if = WosWhatIf(out.probs, out.labels, target.groups, task=out.task, threshold=out.threshold,
                        preds=out.preds)

    def point(r) -> dict:
        d = {"accuracy": float(r.accuracy), "target_error": float(r.target_error)}
        if r.map is not None:
            d["map"] = _num(r.map)
        return d

    result: dict = {"targets": target.names}
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
    ws, out = workspace_outputs(args)
    try:
        target = Target.parse(args.targets, out.class_names)
    except ValueError as exc:
        raise UsageError(f"--targets: {exc}") from None
    return wos_summary(out, target, rho=args.rho, curve=args.curve, lambda1=args.lambda1, lambda2=args.lambda2)


def _confusion_args(p) -> None:
    _common(p)
    p.add_argument("--top", type=int, default=10, help="how many pairs and triplets (default 10)")


def _triplet_args(p) -> None:
    _common(p)
    p.add_argument("--top", type=int, default=10, help="how many triplets (default 10)")
    p.add_argument("--anchor", default=None, help="only triplets with this anchor class")


def _wos_args(p) -> None:
    _common(p)
    p.add_argument("--targets", required=True, help='"A,B" (pair), "A,B;C,D" (several pairs) or "P,N,C" (triplet)')
    p.add_argument("--rho", type=finite_float, default=None, help="rho in [0, 1] (required without --curve)")
    p.add_argument("--curve", action="store_true", help="sweep rho from 1 to 1e-4 and suggest one")
    p.add_argument("--lambda1", type=finite_float, default=0.25, help="least relative drop of the target error (0.25)")
    p.add_argument("--lambda2", type=finite_float, default=0.01, help="largest relative accuracy drop (0.01)")


register_diagnostic(Diagnostic("confusion", "accuracy, confused pairs and biased triplets", _confusion_args,
                               run_confusion, page="confusion", example=("--top", "3")))
register_diagnostic(Diagnostic("triplets", "the most biased class triplets (cd)", _triplet_args, run_triplets,
                               page="triplets", example=("--top", "3")))
register_diagnostic(Diagnostic("wos", "w-os post-hoc repair: before/after one rho, or the whole curve", _wos_args,
                               run_wos, page="wos", example=("--targets", "disk,oval", "--rho", "0.1")))

