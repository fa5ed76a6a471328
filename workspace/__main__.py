"""``python -m workspace info|cache|worker --workspace W [--json]``.

``worker`` is what the job runner starts for a background job (:mod:`workspace.jobs`).
"""

from __future__ import annotations

import argparse
import sys
import time

from workspace.cli import Parser, add_workspace_argument, open_from_args, print_json, run_cli, tqdm_progress
from workspace.core import ORIG, SPLITS
from workspace.errors import WorkspaceError


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m workspace", description="Workspace information, cache and job workers.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="classes, split sizes, model version, accuracy, planted ground truth")
    add_workspace_argument(info)
    info.add_argument("--version", default=ORIG, help="model version (default: orig)")
    info.add_argument("--json", action="store_true")
    cache = sub.add_parser("cache", help="build (or reuse) the inference cache")
    add_workspace_argument(cache)
    cache.add_argument("--version", default=ORIG)
    cache.add_argument("--split", choices=[*SPLITS, "all"], default="all")
    cache.add_argument("--rebuild", action="store_true", help="ignore the existing cache")
    cache.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    cache.add_argument("--json", action="store_true")
    worker = sub.add_parser("worker", help="(internal) execute a queued job")
    add_workspace_argument(worker)
    worker.add_argument("--job-id", type=int, required=True)
    return parser


def info(args) -> dict:
    with tqdm_progress("preparing workspace") as progress:
        ws = open_from_args(args, progress)
    with tqdm_progress("eval inference") as progress:
        outputs = ws.outputs("eval", args.version, progress=progress)
    row = ws.version(args.version)
    return {
        "name": ws.name,
        "task": ws.task,
        "classes": list(ws.class_names),
        "splits": {s: len(ws.split(s)) for s in SPLITS},
        "model": {"version": row["id"], "path": row["path"], "weights": ws.weights_summary},
        "accuracy": outputs.accuracy,
        "warnings": ws.warnings(),
        "skipped": outputs.skipped,
        "planted": ws.planted,
    }


def cache(args) -> dict:
    with tqdm_progress("preparing workspace") as progress:
        ws = open_from_args(args, progress)
    from workspace.models import select_device

    select_device(args.device)  # an unknown or absent device is refused even when the cache is reused
    splits = SPLITS if args.split == "all" else (args.split,)
    missing = [s for s in splits if args.rebuild or ws.cached_outputs(s, args.version) is None]
    if missing and ws.artifacts.read_only:  # say so before the model pass, not after
        raise WorkspaceError(f"the state folder {ws.state_dir} is read-only: cannot store the {'/'.join(missing)} "
                             "inference cache (viewing works; copy the workspace or set state_dir to a writable "
                             "folder)")
    report = {"name": ws.name, "version": args.version, "splits": {}}
    for split in splits:
        start = time.perf_counter()
        reused = split not in missing
        with tqdm_progress(f"{split} inference") as progress:
            outputs = ws.outputs(split, args.version, progress=progress, rebuild=args.rebuild, device=args.device)
        report["splits"][split] = {
            "n": outputs.n, "reused": reused, "seconds": round(time.perf_counter() - start, 3),
            "accuracy": outputs.accuracy, "skipped": outputs.skipped,
        }
    return report


def worker(args) -> int:
    from workspace import jobs

    ws = open_from_args(args)
    job = jobs.run_worker(ws, args.job_id)
    return 0 if job["status"] in ("done", "cancelled") else 1


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "worker":
        return worker(args)
    result = info(args) if args.command == "info" else cache(args)
    if args.json:
        print_json(result)
    elif args.command == "info":
        print(f"{result['name']} ({result['task']}): {len(result['classes'])} classes, "
              f"train {result['splits']['train']}, eval {result['splits']['eval']}, "
              f"model {result['model']['version']}, eval accuracy {result['accuracy']:.4f}")
        if result["model"]["weights"]:
            print(f"weights: {result['model']['weights']}")
        for problem in result["skipped"]:
            print(f"skipped {problem['id']}: {problem['error']}")
        for warning in result["warnings"]:
            print(f"warning: {warning}")
    else:
        for split, r in result["splits"].items():
            how = "reused" if r["reused"] else "built"
            print(f"{split}: {r['n']} images, {how} in {r['seconds']:.2f}s, accuracy {r['accuracy']:.4f}")
            for problem in r["skipped"]:
                print(f"  skipped {problem['id']}: {problem['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
