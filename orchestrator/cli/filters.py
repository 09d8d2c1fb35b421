"""The flags that select workflows by what they are and when they were created (`workflow
search`, and the operations that take --all), and the creation times they give."""

from __future__ import annotations

import argparse

from .inputs import UsageError, status_arg, when_arg

# The operations that take --all, and the statuses they consider when --status is not given.
BULK_STATUSES = {"terminate": ("RUNNING", "PAUSED"), "pause": ("RUNNING",), "resume": ("PAUSED",),
                 "retry": ("FAILED", "TIMED_OUT")}


def filter_flags(parser: argparse.ArgumentParser, status_help: str) -> None:
    parser.add_argument("--name", default="", help="workflow definition name")
    parser.add_argument("--status", default="", type=status_arg, metavar="STATUS", help=status_help)
    parser.add_argument("--correlation-id", default="", help="the correlation id given at start")
    parser.add_argument("--since", default="", type=when_arg("--since"), metavar="WHEN",
                        help="created at or after: a time ago (30s, 10m, 1h, 2h30m, 7d) or a date "
                             "(2024-05-01, 2024-05-01T10:00, local time unless it names an offset)")
    parser.add_argument("--until", default="", type=when_arg("--until"), metavar="WHEN",
                        help="created at or before: a time ago or a date, as --since")


def bulk_flags(parser: argparse.ArgumentParser, statuses: tuple[str, ...]) -> None:
    """--all, the filters it goes with, --yes and --dry-run."""
    parser.add_argument("--all", action="store_true",
                        help="every workflow the filters below match (at least one filter); asks first")
    default = " and ".join(status.lower() for status in statuses)
    filter_flags(parser, status_help=f"with --all: only this status (default: {default})")
    parser.add_argument("--yes", "-y", action="store_true", help="with --all: do not ask for confirmation")
    parser.add_argument("--dry-run", action="store_true", help="with --all: list the matches, change nothing")


def created(args: argparse.Namespace) -> tuple[int, int]:
    """The creation times searched, in epoch ms (0: unbounded), from --since/--until or --from-ms/--to-ms."""
    if (args.since and getattr(args, "from_ms", 0)) or (args.until and getattr(args, "to_ms", 0)):
        raise UsageError("give --since or --from-ms (and --until or --to-ms), not both")
    since, until = args.since or getattr(args, "from_ms", 0), args.until or getattr(args, "to_ms", 0)
    if since and until and since > until:
        raise UsageError("--since is after --until: nothing was created in between (--since 1h --until 10m "
                         "means from an hour ago to ten minutes ago)")
    return since, until
