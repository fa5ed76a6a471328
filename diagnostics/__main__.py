"""``python -m diagnostics <command> --workspace W ... [--json]``.

Each command lives in its own module ``diagnostics/cli_<topic>.py`` exposing
``register(subparsers)``, which adds its sub-parsers with ``set_defaults(func=...)``;
``func(args)`` returns the result dict (printed as JSON with ``--json``) or raises
:class:`~workspace.errors.WorkspaceError` for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from workspace.cli import print_json, run_cli

COMMAND_MODULES = (
    "diagnostics.cli_confusion",   # confusion, wos
    "diagnostics.cli_gradcam",     # gradcam
    "diagnostics.cli_gradients",   # gradients
    "diagnostics.cli_weakspots",   # weakspots
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diagnostics", description="Group-level error diagnostics.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    result = args.func(args)
    if getattr(args, "json", False):
        print_json(result)
    elif isinstance(result, dict) and "text" in result:
        print(result["text"])
    else:
        print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
