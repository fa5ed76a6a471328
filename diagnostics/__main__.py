"""``python -m diagnostics <name> --workspace W ... [--json]``: one verb per registered diagnostic.

The verbs come from :mod:`diagnostics.registry`; each prints its result as JSON with ``--json``
(else its ``text``), progress bars on stderr, and on bad input one ``error:`` line, exit 2.
"""

from __future__ import annotations

import sys

from diagnostics.registry import get_diagnostic, list_diagnostics
from workspace.cli import Parser, add_workspace_argument, print_json, run_cli


def get_args_parser() -> Parser:
    parser = Parser(prog="python -m diagnostics", description="Group-level error diagnostics.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in list_diagnostics():
        d = get_diagnostic(name)
        p = sub.add_parser(name, help=d.help, description=d.help)
        add_workspace_argument(p)
        d.add_arguments(p)
        if not any(a.dest == "json" for a in p._actions):
            p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=d.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    result = args.func(args)
    code = int(result.pop("_exit_code", 0)) if isinstance(result, dict) else 0
    if getattr(args, "json", False):
        print_json({k: v for k, v in result.items() if k != "text"} if isinstance(result, dict) else result)
    elif isinstance(result, dict) and "text" in result:
        print(result["text"])
    else:
        print_json(result)
    return code


if __name__ == "__main__":
    sys.exit(run_cli(main))
