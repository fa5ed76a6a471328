"""``python -m repair run|sweep|list|cancel|methods``.

``run`` executes in this process by default (a tqdm bar on stderr with steps, loss and ETA) and
writes the same run row, metrics and model version as a background job; ``--background``
starts a worker process instead and returns at once.

``sweep`` runs the WR paper's protocol (a rho grid per method, its selection rule, seeds of the
selected settings, ranks, rank-sum tests and A12 against orig-ft) as one job; ``--resume ID``
continues a stopped sweep, reusing every finished run; ``--show ID`` prints a sweep as it stands.
"""

from __future__ import annotations

import argparse
import re
import sys

from repair import runs, sweep
from repair.loop import SCHEDULES, TrainConfig
from repair.methods import SCOPES, list_methods, method_table
from repair.selection import DEFAULT_RHOS
from workspace import jobs
from workspace.cli import (
    Parser, UsageError, add_workspace_argument, finite_float, open_from_args, print_json, run_cli,
)
from workspace.targets import Target


def _training_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--scope", default="all", choices=SCOPES,
                     help="all layers, the last block + head, or the head alone on cached embeddings")
    run.add_argument("--epochs", type=int)
    run.add_argument("--lr", type=finite_float)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--weight-decay", type=finite_float)
    run.add_argument("--train-fraction", type=finite_float, default=None,
                     help="train on this random share of the train split (a quick run)")
    run.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    run.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: per epoch)")
    run.add_argument("--schedule", choices=SCHEDULES, default=None,
                     help="cosine (default) or paper (WR: SGD+Nesterov, lr x0.1 at 50%% and 75%%)")
    run.add_argument("--no-augment", action="store_true", help="train on un-augmented images")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    run.add_argument("--parent", default="orig", help="model version to start from")
    run.add_argument("--nproc", type=int, default=1,
                     help="data-parallel fine-tuning over N processes (torchrun; one per GPU, or CPU processes)")
    run.add_argument("--background", action="store_true", help="start a worker process and return")
    run.add_argument("--json", action="store_true")


def _pairs(text: str) -> dict[str, str]:
    """``"a=1,b=2"`` -> ``{"a": "1", "b": "2"}`` (an argparse type)."""
    out = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{part!r} is not NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def _floats(text: str) -> list[float]:
    return [finite_float(t) for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m repair", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="repair the model with one method")
    add_workspace_argument(run)
    run.add_argument("--method", required=True, help=f"one of {', '.join(list_methods())}")
    run.add_argument("--targets", required=True, help="A,B (pair), A,B;C,D (pairs) or P,N,C (triplet)")
    run.add_argument("--rho", type=finite_float, default=None,
                     help="the method's trade-off in [0, 1] (1 = plain fine-tuning); default: the method's")
    run.add_argument("--seed", type=int, default=0)
    _training_arguments(run)
    sw = sub.add_parser("sweep", help="which repair really works: rho grid, selection, seeds, ranks and tests")
    add_workspace_argument(sw)
    sw.add_argument("--targets", help="A,B (pair), A,B;C,D (pairs) or P,N,C (triplet); not with --resume/--show")
    sw.add_argument("--methods", type=lambda t: [m.strip() for m in t.split(",") if m.strip()], default=None,
                    help="comma-separated methods (orig-ft is always added); default: every method with a rho")
    sw.add_argument("--rhos", type=_floats, default=list(DEFAULT_RHOS), help="the grid (default 0.1,0.3,0.5,0.7,0.9)")
    sw.add_argument("--seeds", type=int, default=5, help="seeds per selected setting and orig-ft (default 5)")
    sw.add_argument("--method-scope", type=_pairs, default={},
                    help="METHOD=SCOPE,...: where a method runs at another scope (default: the sweep's scope, "
                         "or all where the method cannot run there, e.g. w-bn at head)")
    sw.add_argument("--scope-max-steps", type=_pairs, default={},
                    help="SCOPE=N,...: a step budget for the runs at that scope (e.g. all=30)")
    sw.add_argument("--lambda1", type=finite_float, default=0.25, help="repaired: target error drops by at least")
    sw.add_argument("--lambda2", type=finite_float, default=0.01, help="repaired: accuracy drops by at most")
    sw.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local (one run after another) or ray (every run that can start as a Ray task; "
                         "needs requirements-cluster.txt)")
    sw.add_argument("--address", default=None,
                    help="the Ray cluster: auto or ray://host:10001 (default: a local Ray on this machine)")
    sw.add_argument("--resume", type=int, metavar="SWEEP_ID", help="continue a stopped sweep (finished runs reused)")
    sw.add_argument("--show", type=int, metavar="SWEEP_ID", help="print a sweep as it stands; runs nothing")
    sw.add_argument("--format", choices=("markdown", "csv", "latex"), default="markdown",
                    help="the table's format without --json")
    _training_arguments(sw)
    for name, helptext in (("list", "list runs"), ("methods", "list methods and applicability")):
        p = sub.add_parser(name, help=helptext)
        add_workspace_argument(p)
        if name == "methods":
            p.add_argument("--scope", default="all", choices=SCOPES)
        p.add_argument("--json", action="store_true")
    cancel = sub.add_parser("cancel", help="cancel a queued or running run (or sweep, with its runs)")
    add_workspace_argument(cancel)
    cancel.add_argument("--run-id", type=int, required=True)
    cancel.add_argument("--json", action="store_true")
    return parser


def _config(args, ws) -> TrainConfig:
    preset = TrainConfig.for_workspace(ws)
    if args.schedule == "paper":
        preset = TrainConfig.paper(epochs=preset.epochs, augment=preset.augment)
    return preset.replace(**{k: v for k, v in dict(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
        seed=getattr(args, "seed", None),
        device=args.device, augment=False if args.no_augment else None, scope=args.scope,
        train_fraction=args.train_fraction, max_steps=args.max_steps, eval_every_steps=args.eval_every,
        schedule=args.schedule).items() if v is not None})


def _run(args, ws) -> dict:
    from workspace.models import select_device

    try:
        target = Target.parse(args.targets, ws.class_names)
        config = _config(args, ws)
        select_device(config.device)
        if args.nproc < 1 or (args.nproc > 1 and config.scope == "head"):
            raise ValueError("--nproc must be >= 1, and 1 at the head scope (it trains in seconds)")
        if args.nproc > 1 and config.batch_size % args.nproc:
            raise ValueError(f"--batch-size {config.batch_size} must be divisible by --nproc {args.nproc}")
        run_id = runs.create_run(ws, args.method, target, args.rho, config, parent=args.parent)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.background or args.nproc > 1:
        jobs.start_worker(ws, run_id, nproc=args.nproc)
        if args.background:
            return {"run_id": run_id, "status": "queued", "method": args.method}
    from tqdm import tqdm

    bar = {"tqdm": None, "phase": None}

    def on_progress(done, total, message, eta):
        if bar["phase"] != total:  # a new phase: a new bar
            if bar["tqdm"] is not None:
                bar["tqdm"].close()
            bar["tqdm"] = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, leave=False)
            bar["phase"] = total
        bar["tqdm"].set_description_str(_stage(message))
        if "loss" in message:
            bar["tqdm"].set_postfix_str(message.split(", ", 1)[-1].strip())
        bar["tqdm"].update(done - bar["tqdm"].n)

    def echo(line):
        (tqdm.write if bar["tqdm"] is not None else print)(line, file=sys.stderr)

    try:
        if args.nproc > 1:
            jobs.follow(ws, run_id, on_progress=on_progress)
        else:
            jobs.run_foreground(ws, run_id, echo=echo, on_progress=on_progress)
    finally:
        if bar["tqdm"] is not None:
            bar["tqdm"].close()
    return runs.run_result(ws, run_id)


def _stage(message: str, width: int = 64) -> str:
    """The stage part of a progress message for a bar's description: its own count removed
    (the bar shows it), shortened with an ellipsis only past ``width`` characters."""
    stage = re.sub(r":?\s*[\d,]+/[\d,]+$", "", message.split(", ")[0].strip())
    return stage if len(stage) <= width else stage[:width - 1] + "…"


def _sweep(args, ws) -> dict:
    """Create (or resume) a sweep and run it here with one progress bar, or show one."""
    from tqdm import tqdm

    if sum(x is not None for x in (args.resume, args.show)) + (args.targets is not None) != 1:
        raise UsageError("give --targets (a new sweep), --resume SWEEP_ID or --show SWEEP_ID")
    try:
        if args.show is not None:
            return sweep.sweep_result(ws, args.show)
        if args.resume is not None:
            sweep_id = sweep.resume_sweep(ws, args.resume)
        else:
            budgets = {}
            for scope, steps in args.scope_max_steps.items():
                if not steps.isdigit():
                    raise ValueError(f"--scope-max-steps {scope}={steps}: the budget must be a whole number")
                budgets[scope] = int(steps)
            sweep_id = sweep.create_sweep(
                ws, Target.parse(args.targets, ws.class_names), args.methods, config=_config(args, ws),
                rhos=args.rhos, seeds=args.seeds, parent=args.parent, method_scopes=args.method_scope,
                scope_max_steps=budgets, lambda1=args.lambda1, lambda2=args.lambda2, executor=args.executor,
                address=args.address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.background:
        jobs.start_worker(ws, sweep_id)
        return {"sweep_id": sweep_id, "status": "queued"}
    bar = tqdm(total=1, file=sys.stderr, dynamic_ncols=True, leave=False, desc="sweep")

    def on_progress(done, total, message, eta):
        bar.total = max(total, 1)
        bar.set_description_str(message.split(":")[0][:30])
        bar.set_postfix_str(message.split(":", 1)[-1].strip()[:60])
        bar.update(done - bar.n)

    try:
        jobs.run_foreground(ws, sweep_id, echo=lambda line: tqdm.write(line, file=sys.stderr),
                            on_progress=on_progress)
    finally:
        bar.close()
    return sweep.sweep_result(ws, sweep_id)


def _print_sweep(result: dict, ws, fmt: str) -> None:
    print(f"sweep {result['sweep_id']} on {'; '.join(','.join(t) for t in result['targets']['targets'])}: "
          f"{result['status']}" + ("" if result["complete"] else " (incomplete)"))
    for s in result["selection"]:
        print(f"  selected {s['method']}" + ("" if s["rho"] is None else f"({s['rho']:g})")
              + f" by rule {s['rule']}: {s['reason']}")
    if result["table"]:
        print(sweep.export_table(sweep.sweep_state(ws, result["sweep_id"]), fmt))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ws = open_from_args(args)
    if args.command == "sweep":
        result = _sweep(args, ws)
        if args.json or "grid" not in result:
            print_json(result)
        else:
            _print_sweep(result, ws, args.format)
        if result.get("status") == "failed":
            print(f"error: sweep {result['sweep_id']} failed: {jobs.get_job(ws, result['sweep_id'])['error']}",
                  file=sys.stderr)
            return 1
        return 0
    if args.command == "run":
        result = _run(args, ws)
    elif args.command == "list":
        result = [{k: r[k] for k in ("id", "method", "rho", "targets", "status", "progress", "model_version",
                                     "baseline", "final", "error", "created_at")}
                  | {"scope": (r["config"] or {}).get("scope", "all"), "sweep": r["parent_run"]}
                  for r in runs.list_runs(ws, sweeps=True)]
    elif args.command == "methods":
        result = method_table(ws.model(), ws, scope=args.scope)
    else:
        try:
            job = jobs.request_cancel(ws, args.run_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        result = {"run_id": job["id"], "status": job["status"], "cancel_requested": True}
    if getattr(args, "json", False):
        print_json(result)
    elif args.command == "list":
        for r in result:
            fin = r["final"] or {}
            print(f"{r['id']:>4} {r['method']:<8} rho={r['rho']} {r['scope']:<10} {r['status']:<9} "
                  f"acc={fin.get('accuracy', '-')} target_error={fin.get('target_error', '-')}")
    else:
        print_json(result)
    if args.command == "run" and result.get("status") == "failed":
        print(f"error: run {result['run_id']} failed: {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
