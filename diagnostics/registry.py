"""The diagnostics registry: one entry per diagnostic, enumerated by the CLI, the pages and the tests.

A diagnostic is an algorithm module (pure functions of arrays) plus one *entry module*
``diagnostics/run_<topic>.py`` that computes it for a workspace (through the workspace's artifact
store and job runner) and declares it here with :func:`register_diagnostic`: its command-line
verb and arguments, the function the command runs, the page that shows it and a quick example
invocation (used by the tests to run every diagnostic through the CLI and its page).

``python -m diagnostics NAME`` is generated from this registry; nothing outside an entry module
tests a diagnostic's name.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

#: entry modules: every ``diagnostics/run_<topic>.py``, imported on first use of the registry
ENTRY_PATTERN = "run_*.py"


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic.

    Attributes:
        name: the command-line verb (``python -m diagnostics NAME``).
        help: one line.
        add_arguments: adds the verb's options (``--workspace`` is added for you).
        run: ``run(args) -> dict``: the JSON result (a ``"text"`` key is printed without
            ``--json``); raises :class:`~workspace.errors.WorkspaceError` on bad input (exit
            status 2). An ``"_exit_code"`` key, removed before printing, sets the exit status
            of a run that worked but has a verdict to report (the ``gate`` verb: 1 when a
            bound is broken); without it the status is 0.
        page: the page file showing it (``pages/<page>.py``), or None.
        example: extra CLI arguments that run it quickly on the demo (for the tests);
            ``{tmp}`` is replaced by a temporary folder.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    page: str | None = None
    example: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, Diagnostic] = {}
_loaded = False


def register_diagnostic(diagnostic: Diagnostic) -> Diagnostic:
    if diagnostic.name in _REGISTRY and _REGISTRY[diagnostic.name] is not diagnostic:
        raise ValueError(f"diagnostic {diagnostic.name!r} is already registered")
    _REGISTRY[diagnostic.name] = diagnostic
    return diagnostic


def entry_modules() -> list[str]:
    """The entry modules found next to this file (a new diagnostic only adds its own file)."""
    return sorted(f"diagnostics.{p.stem}" for p in Path(__file__).resolve().parent.glob(ENTRY_PATTERN))


def _load() -> None:
    global _loaded
    if not _loaded:
        for name in entry_modules():
            importlib.import_module(name)
        _loaded = True


def list_diagnostics() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_diagnostic(name: str) -> Diagnostic:
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown diagnostic {name!r}; valid: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
