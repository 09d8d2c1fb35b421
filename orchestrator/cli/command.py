"""How a command is declared: its group (`workflow`, `taskdef`, ...), its arguments, the flags
every command takes (--endpoints, --json, --table: before or after the command), and how it
runs (through the API, its result printed by its view)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .client import call
from .filters import BULK_STATUSES, bulk_flags
from .output import Action, View

DEFAULT_ENDPOINTS = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"
ENDPOINTS_HELP = ("comma-separated node addresses, tried in turn (default: env ORCHESTRATOR_ENDPOINTS, "
                  f"else {DEFAULT_ENDPOINTS}); accepted before or after the command")
JSON_HELP = "print JSON, for scripts (the default when stdout is not a terminal)"
TABLE_HELP = "print tables and trees, for people (the default on a terminal)"


def output_flags(parser: argparse.ArgumentParser, default: str) -> None:
    """--json / --table; after the command they default to SUPPRESS, so that the value given
    before it (or the default) stands."""
    parser.add_argument("--json", dest="output", action="store_const", const="json", default=default,
                        help=JSON_HELP)
    parser.add_argument("--table", dest="output", action="store_const", const="table", default=default,
                        help=TABLE_HELP)


def group(commands: Any, name: str, help_text: str) -> Any:
    """A command that holds actions (`orchestrator workflow ACTION`)."""
    return commands.add_parser(name, help=help_text).add_subparsers(metavar="ACTION", help=f"{help_text}: actions")


def add(parent: Any, name: str, help_text: str, action: Action, *, files: bool = False, with_name: bool = False,
        version: bool = False, wid: bool = False, bulk: bool = False,
        view: View | None = None) -> argparse.ArgumentParser:
    """A command run through the API. `bulk`: the id may be replaced by --all and search filters."""
    sub = parent.add_parser(name, help=help_text, description=help_text)
    if files:
        sub.add_argument("files", nargs="+", type=Path, help="JSON or YAML files: one definition or a list")
    if with_name:
        sub.add_argument("name", help="definition name")
    if version:
        sub.add_argument("--version", type=int, default=0, help="definition version (default: the latest)")
    if wid and bulk:
        sub.add_argument("id", nargs="?", default="", help="workflow id (or --all with filters)")
        bulk_flags(sub, BULK_STATUSES[name])
    elif wid:
        sub.add_argument("id", help="workflow id")
    # SUPPRESS: absent after the command, the value given before it (or the default) stands
    sub.add_argument("--endpoints", default=argparse.SUPPRESS, help=ENDPOINTS_HELP)
    output_flags(sub, default=argparse.SUPPRESS)
    sub.set_defaults(handler=lambda args: call(args, action, view))
    return sub  # type: ignore[no-any-return]
