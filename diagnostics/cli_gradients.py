"""``python -m diagnostics gradients`` (score table as CSV) and ``gce`` (train the biased model).

    python -m diagnostics gradients --workspace W [--split train] [--params last|all] [--k K]
        [--lam L] [--biased-model gce] --out scores.csv [--json]
    python -m diagnostics gce --workspace W [--epochs 4] [--lr 1e-3] [--q 0.7]

The CSV has the columns ``index,label,pred,grad_norm,M,D,S,p_s,comp_loss,noisy,log_p_s`` (index =
position in the split). The ``gce`` command is also the body of the page's background job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workspace.cli import UsageError, add_workspace_argument, tqdm_progress


def register(subparsers) -> None:
    p = subparsers.add_parser("gradients", help="per-sample gradient scores (PGD) and the noisy-label split")
    add_workspace_argument(p)
    p.add_argument("--split", default="train", choices=["train", "eval"])
    p.add_argument("--params", default="last", choices=["last", "all"],
                   help="last layer (default, exact closed form) or all parameters reduced to --k dims")
    p.add_argument("--k", type=int, default=256, help="dominant dimensions kept with --params all (default 256)")
    p.add_argument("--lam", type=float, default=1.0, help="balance lambda of the harmonic mean (default 1)")
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--biased-model", default="loaded", choices=["loaded", "gce"],
                   help="score with the loaded model (default) or a GCE-trained biased model")
    p.add_argument("--out", required=True, type=Path, help="CSV file to write (never overwritten)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)

    g = subparsers.add_parser("gce", help="train the GCE (q=0.7) biased model of the PGD paper")
    add_workspace_argument(g)
    g.add_argument("--epochs", type=int, default=4)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--q", type=float, default=0.7)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=run_gce)


def run(args: argparse.Namespace) -> dict:
    from diagnostics.gradients import CSV_COLUMNS, compute_scores
    from workspace.core import open_workspace

    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; refusing to overwrite it (choose another --out)")
    if not out.parent.is_dir():
        raise UsageError(f"folder {out.parent} does not exist")
    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if args.lam < 0:
        raise UsageError(f"--lam must be >= 0, got {args.lam}")
    ws = open_workspace(args.workspace)
    ws.version(args.version)
    with tqdm_progress("gradients") as progress:
        frame = compute_scores(ws, args.version, split=args.split, params=args.params, k=args.k, lam=args.lam,
                               biased_model=None if args.biased_model == "loaded" else "gce", progress=progress)
    frame[CSV_COLUMNS].to_csv(out, index=False)
    noisy = int(frame["noisy"].sum())
    result = {
        "out": str(out), "split": args.split, "rows": len(frame), "params": args.params,
        "biased_model": args.biased_model, "delta": float(frame.attrs["delta"]), "noisy": noisy,
        "p_s": {"min": float(frame["p_s"].min()), "median": float(frame["p_s"].median())},
        **{k: frame.attrs[k] for k in ("minority_auc", "flip_recall", "clean_flagged") if k in frame.attrs},
    }
    planted = "".join(f", {k} {result[k]:.3f}" for k in ("minority_auc", "flip_recall", "clean_flagged") if k in result)
    result["text"] = (f"wrote {len(frame)} rows to {out}; {noisy} flagged noisy (delta {result['delta']:.3f})"
                      f"{planted}")
    return result


def run_gce(args: argparse.Namespace) -> dict:
    from diagnostics.gce import GCEConfig, run_job
    from workspace.core import open_workspace

    config = GCEConfig(q=args.q, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    config.validate()
    ws = open_workspace(args.workspace)
    with tqdm_progress("GCE training") as progress:
        result = run_job(ws, config, progress=progress)
    result["text"] = f"GCE biased model trained; weights {result['weights']}"
    return result
