"""What a command prints and the status it exits with.

Output is for people on a terminal (drawn by the command's view) and JSON when stdout is not a
terminal, so that scripts and pipes get what they always got; --json and --table choose."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.json import JSON

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_STILL_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(frozen=True)
class Reply:
    """What an action prints: `output` as JSON (or, for people, `view` drawn by the command's
    renderer: `output` when None) on stdout and, when it fell short, a sentence on stderr and a
    non-zero exit code."""

    output: Any
    exit_code: int = EXIT_OK
    note: str = ""
    view: Any = None


Action = Callable[[Any, argparse.Namespace], Any]   # (a WorkflowClient, the arguments) -> what to print
View = Callable[[Any], RenderableType]


def for_people(args: argparse.Namespace) -> bool:
    """Tables (not JSON) on stdout: --table, or a terminal without --json."""
    output = getattr(args, "output", "auto")
    return output == "table" or (output == "auto" and sys.stdout.isatty())


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def print_reply(reply: Reply, args: argparse.Namespace | None = None, view: View | None = None) -> int:
    """Print `reply` as the arguments ask and return its exit code."""
    if reply.output is not None:
        if args is not None and for_people(args):
            data = reply.view if reply.view is not None else reply.output
            shown = view(data) if view is not None else JSON.from_data(data)
            out = console()
            out.width = max(out.width, getattr(shown, "wanted_width", 0))   # --wide: lines as long as it takes
            out.print(shown)
        else:
            print(json.dumps(reply.output, indent=2, sort_keys=False), flush=True)
    if reply.note:
        print(reply.note, file=sys.stderr)
    return reply.exit_code
