"""The benchmark's worker process: `noop` and `bench_stamp` handlers, nothing else.

    python -m bench.worker_proc --endpoints HOST:PORT,... --concurrency 32

`bench_stamp` returns `time.time()` in ms taken as its first statement, so the
dispatch latency can be read from the stored task output afterwards (the handler
runs in this separate process; nothing in the node is instrumented).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from typing import Any

from worker import Worker, task

from .definitions import STAMP_TASK


@task("noop")
async def noop(data: dict[str, Any]) -> dict[str, Any]:
    """Do nothing: the benchmark measures the orchestrator, not the handler."""
    return {}


@task(STAMP_TASK)
async def stamp(data: dict[str, Any]) -> dict[str, Any]:
    """Report when the handler started, in ms since the epoch (float)."""
    return {"entered_ms": time.time() * 1000}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_proc")
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    Worker(endpoints=endpoints, handlers=[noop, stamp], concurrency=args.concurrency).run_sync(grace_s=5.0)


if __name__ == "__main__":
    main()
