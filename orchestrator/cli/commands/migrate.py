"""`orchestrator migrate-state`: move a cluster's state from the layout before partitions into the
partitioned one (issue 23), on the Redis that holds it, with every node of the cluster stopped.
It talks to Redis, not to a node: a node refuses to start on the old layout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..output import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

HELP = "move a cluster's state kept before partitions into the partitioned layout (every node stopped)"
DESCRIPTION = """Move the state of one cluster, kept on one Redis under wfo:<cluster>: in the layout from
before partitions, into the partitioned layout this version reads (wfo:{<cluster>:p<n>}: and
wfo:{<cluster>}:), on the same Redis. Stop every node of that cluster first: the command refuses
when it sees one listening, but cannot see every one. It refuses a state already partitioned and a
Redis that holds no old state. Run again after an interruption, it goes on where it stopped (a key
moved already is not found again); the partition count is written last."""


def add_migrate_command(commands: Any) -> None:
    sub = commands.add_parser("migrate-state", help=HELP, description=DESCRIPTION)
    sub.add_argument("--redis-url", required=True, help="the Redis that holds the state, as redis://host:port/db "
                                                        "(rediss:// and user:password@ as redis-py reads them)")
    sub.add_argument("--cluster", required=True, help="the cluster's name (its nodes' --cluster)")
    sub.add_argument("--partitions", type=int, default=0,
                     help="how many partitions to cut the state into, fixed from then on (default 64; a resumed "
                          "run keeps the number its first run chose)")
    sub.add_argument("--dry-run", action="store_true", help="print what would move, write nothing")
    sub.set_defaults(handler=run_migration)


def run_migration(args: argparse.Namespace) -> int:
    from ...store.redis.migrate import MigrationRefused, migrate

    try:
        migrate(args.redis_url, args.cluster, partitions=args.partitions, dry_run=args.dry_run,
                report=lambda line: print(line, flush=True))
    except ValueError as exc:   # a cluster name or a partition count the layout cannot take
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MigrationRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK
