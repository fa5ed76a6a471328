"""``python -m repair run|list|cancel|methods|worker`` (DESIGN.md section 3).

``run`` executes in this process by default (progress on stderr) and writes the same run
row, metrics and model version as a background job; ``--background`` starts a worker
process instead and returns at once. ``worker`` is what the page and ``--background`` start.
"""

from __future__ import annotations

import argparse
import os
import sys

from diagnostics.confusion import parse_targets
from repair import jobs
from repair.loop import TrainConfig
from repair.methods import list_methods, method_table
from workspace.cli import UsageError, add_workspace_argument, print_json, run_cli
from workspace.core import open_workspace


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repair", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="repair the model with one method")
    add_workspace_argument(run)
    run.add_argument("--method", required=True, help=f"one of {', '.join(list_methods())}")
    run.add_argument("--targets", required=True, help="A,B (pair), A,B;C,D (pairs) or P,N,C (triplet)")
    run.add_argument("--rho", type=float, default=0.5, help="trade-off in [0, 1] (1 = plain fine-tuning)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--lr", type=float)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--weight-decay", type=float)
    run.add_argument("--no-augment", action="store_true", help="train on un-augmented images")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    run.add_argument("--parent", default="orig", help="model version to start from")
    run.add_argument("--background", action="store_true", help="start a worker process and return")
    run.add_argument("--json", action="store_true")
    for name, helptext in (("list", "list runs"), ("methods", "list methods and applicability")):
        p = sub.add_parser(name, help=helptext)
        add_workspace_argument(p)
        p.add_argument("--json", action="store_true")
    cancel = sub.add_parser("cancel", help="cancel a queued or running run")
    add_workspace_argument(cancel)
    cancel.add_argument("--run-id", type=int, required=True)
    cancel.add_argument("--json", action="store_true")
    worker = sub.add_parser("worker", help="(internal) execute a queued run")
    add_workspace_argument(worker)
    worker.add_argument("--run-id", type=int, required=True)
    return parser


def _run(args, ws) -> dict:
    try:
        targets = parse_targets(args.targets, ws.class_names)
        config = TrainConfig.for_workspace(ws, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                           weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                                           augment=not args.no_augment)
        run_id = jobs.create_run(ws, args.method, targets, args.rho, config, parent=args.parent)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.background:
        jobs.start_worker(ws, run_id)
        return {"run_id": run_id, "status": "queued", "method": args.method}
    ws.store.update_run(run_id, pid=os.getpid())
    if not jobs.wait_for_turn(ws.store, run_id):
        ws.store.update_run(run_id, status="cancelled")
    else:
        jobs.execute_run(ws, run_id, echo=lambda line: print(line, file=sys.stderr, flush=True))
    return jobs.run_result(ws, run_id)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ws = open_workspace(args.workspace)
    if args.command == "worker":
        run = jobs.run_worker(ws, args.run_id)
        return 0 if run["status"] in ("done", "cancelled") else 1
    if args.command == "run":
        result = _run(args, ws)
    elif args.command == "list":
        result = [{k: r[k] for k in ("id", "method", "rho", "targets", "status", "progress", "model_version",
                                     "baseline", "final", "error", "created_at")} for r in jobs.list_runs(ws)]
    elif args.command == "methods":
        result = method_table(ws.model(), ws)
    else:
        try:
            result = jobs.request_cancel(ws, args.run_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        result = {"run_id": result["id"], "status": result["status"], "cancel_requested": True}
    if getattr(args, "json", False):
        print_json(result)
    elif args.command == "list":
        for r in result:
            fin = r["final"] or {}
            print(f"{r['id']:>4} {r['method']:<8} rho={r['rho']} {r['status']:<9} "
                  f"acc={fin.get('accuracy', '-')} target_error={fin.get('target_error', '-')}")
    else:
        print_json(result)
    if args.command == "run" and result.get("status") == "failed":
        print(f"error: {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
