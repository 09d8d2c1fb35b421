"""The `orchestrator` command: run a node, manage definitions and workflows, watch the cluster.

A client of the cluster's API through the worker SDK's WorkflowClient (`node` runs a node instead).
    parser.py       the argparse tree: the flags before the command, then each command group
    command.py      how a command is declared (its arguments, --endpoints/--json/--table) and run
    commands/       one module per command group, with the actions it runs: node, definitions,
                    workflows, operations (and bulk: --all), cluster, events
    client.py       the WorkflowClient from the flags, and running an action with it
    inputs.py       reading flags and files (JSON, YAML, statuses, times); bad input is a UsageError
    filters.py      the flags that select workflows (search, --all) and the times they give
    output.py       what a command prints (JSON, or its view for people) and its exit code
    views/          what people see: tables, the task tree, the live watch
    completion.py   the bash and zsh completion scripts, generated from the argparse tree
"""

from __future__ import annotations

from .output import EXIT_INTERRUPTED, EXIT_USAGE
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv) and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
