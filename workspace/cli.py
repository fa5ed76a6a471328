"""Shared plumbing for the command lines (``python -m workspace|diagnostics|repair``).

Every command prints its result (JSON with ``--json``) on stdout, progress bars (tqdm) on
stderr, and on bad input one line ``error: ...`` on stderr with exit status 2. An unexpected
failure (a bug) prints one line naming a log file that holds the traceback, exit status 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from workspace.errors import WorkspaceError


class UsageError(WorkspaceError):
    """A bad command-line value."""


class Parser(argparse.ArgumentParser):
    """argparse with one ``error: ...`` line (no usage block) and exit status 2 on bad arguments."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (NaN and infinity are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_workspace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", "-w", required=True,
                        help="'demo', 'demo-digits[:bias]' or a path to workspace.toml")
    parser.add_argument("--recheck", action="store_true",
                        help="list every data folder again (the listing cache misses images replaced in place)")


def open_from_args(args, progress=None):
    """The workspace named by ``--workspace`` (re-listing the data with ``--recheck``)."""
    from workspace.core import open_workspace

    return open_workspace(args.workspace, progress=progress, recheck=bool(getattr(args, "recheck", False)))


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


def check_output(path: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse an output file up front (before any long computation): one that exists (without
    ``overwrite``) or whose folder does not. Returns ``path`` as a Path.

    Raises:
        UsageError: one line naming the file or the folder.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; refusing to overwrite it (choose another name)")
    if not path.parent.is_dir():
        raise UsageError(f"folder {path.parent} does not exist")
    return path


def write_output(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Write a file the user asked for (``--out``) so that a failure never leaves part of it.

    ``write(tmp)`` fills a temporary file beside ``path``; only a complete file is then moved to
    ``path``. Without ``overwrite`` an existing file is never replaced, even one that appears while
    writing (the move is a hard link, which fails on an existing name).

    Args:
        path: the file to write.
        write: called once with the temporary file's path.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        WorkspaceError: the file exists (without ``overwrite``), its folder does not, or the
            write fails (disk full, read-only folder): one line; nothing is left behind.
    """
    path = check_output(path, overwrite=overwrite)
    tmp = None
    try:
        name = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask's mode, as a plain write
        tmp = name
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UsageError(f"{path} exists; refusing to overwrite it (choose another name)") from None
            except OSError:  # a file system without hard links: the name was free a moment ago
                if path.exists():
                    raise UsageError(f"{path} exists; refusing to overwrite it (choose another name)") from None
                os.replace(tmp, path)
    except OSError as exc:
        raise WorkspaceError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def crash_log(detail: str) -> Path | None:
    """Write an unexpected failure's traceback to ``$GROUPFIX_HOME/logs``; returns the file."""
    try:
        folder = Path(os.environ.get("GROUPFIX_HOME", Path.home() / ".groupfix")).expanduser() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(detail)
        return path
    except OSError:
        return None


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main`` behind the command line's error boundary.

    User errors (:class:`WorkspaceError`) print one ``error:`` line and exit 2; Ctrl-C exits 130;
    anything else is a bug: one line naming the crash log (exit 1), or the traceback with ``--debug``.
    """
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return int(main(argv) or 0)
    except WorkspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the boundary: never a bare traceback for users
        if debug:
            raise
        path = crash_log(traceback.format_exc())
        text = " ".join(str(exc).split())[:300]
        where = f"; the traceback is in {path}" if path else ""
        print(f"error: unexpected failure (a bug in Groupfix): {type(exc).__name__}: {text}{where}", file=sys.stderr)
        return 1
