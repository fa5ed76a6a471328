"""Shared plumbing for the command lines (``python -m workspace|diagnostics|repair``).

Every command prints its result (JSON with ``--json``) on stdout, progress bars (tqdm) on
stderr, and on bad input one line ``error: ...`` on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from typing import Callable

import numpy as np

from workspace.errors import WorkspaceError


class UsageError(WorkspaceError):
    """A bad command-line value."""


def add_workspace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", "-w", required=True,
                        help="'demo', 'demo-digits[:bias]' or a path to workspace.toml")


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=_default, allow_nan=False))


@contextmanager
def tqdm_progress(desc: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main`` turning user errors into one line on stderr and exit status 2."""
    try:
        return int(main(argv) or 0)
    except WorkspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: cancelled", file=sys.stderr)
        return 130
