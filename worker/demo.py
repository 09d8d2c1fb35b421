"""A demo worker for the demo order workflow.

    python -m worker.demo --endpoints 127.0.0.1:50051,127.0.0.1:50052

Handlers: ``fetch_order``, ``charge_card``, ``send_receipt`` and ``noop``.
Outputs are deterministic functions of the input (and of the idempotency
key, which is stable across retries), so a re-run attempt produces the same
output. ``--delay-ms`` makes each task take a while (to kill a worker or a
node mid-task) and ``--fail-rate`` makes ``charge_card`` fail retryably now
and then. SIGINT/SIGTERM shut down gracefully; a second one stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from . import TaskError, Worker, context, task

log = logging.getLogger("worker.demo")

_SETTINGS = {"delay_s": 0.0, "fail_rate": 0.0}


def _digest(*parts: object) -> int:
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


async def _work(name: str) -> None:
    ctx = context()
    log.info("%s: workflow %s task %s attempt %d", name, ctx.workflow_id, ctx.task_id, ctx.attempt)
    if _SETTINGS["delay_s"] > 0:
        await asyncio.sleep(_SETTINGS["delay_s"])


@task("fetch_order")
async def fetch_order(data: dict[str, Any]) -> dict[str, Any]:
    """Look an order up: amount and items derived from ``order_id``."""
    await _work("fetch_order")
    order_id = str(data.get("order_id", ""))
    seed = _digest("order", order_id)
    items = [
        {"sku": f"SKU-{(seed >> (8 * i)) % 1000:03d}", "qty": 1 + (seed >> (4 * i)) % 3} for i in range(1 + seed % 3)
    ]
    return {"order_id": data.get("order_id", ""), "amount": round(5 + (seed % 50_000) / 100, 2), "items": items}


@task("charge_card")
async def charge_card(data: dict[str, Any]) -> dict[str, Any]:
    """Charge ``amount``; the payment id comes from the idempotency key, as a
    real payment provider would deduplicate retried charges."""
    await _work("charge_card")
    if random.random() < _SETTINGS["fail_rate"]:
        raise TaskError("card processor unavailable (injected by --fail-rate)")
    payment_id = f"pay_{_digest('payment', context().idempotency_key):016x}"
    return {"charged": data.get("amount", 0), "payment_id": payment_id}


@task("send_receipt")
async def send_receipt(data: dict[str, Any]) -> dict[str, Any]:
    """Send a receipt to ``email`` (or to a made-up address for the order)."""
    await _work("send_receipt")
    to = data.get("email") or f"customer-{data.get('order_id', 'unknown')}@example.com"
    return {"sent": True, "to": to}


@task("noop")
async def noop(data: dict[str, Any]) -> dict[str, Any]:
    """Do nothing (benchmarks measure the orchestrator, not the handler)."""
    await _work("noop")
    return {}


HANDLERS = [fetch_order, charge_card, send_receipt, noop]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the demo's command line."""
    parser = argparse.ArgumentParser(prog="python -m worker.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", required=True, help="comma-separated host:port list of the nodes")
    parser.add_argument("--concurrency", type=int, default=8, help="handlers run at once (default 8)")
    parser.add_argument("--worker-id", default=None, help="default: host-pid-random")
    parser.add_argument("--delay-ms", type=int, default=0, help="sleep this long in every task (default 0)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="charge_card fails with this probability")
    parser.add_argument("--grace-s", type=float, default=10.0, help="shutdown grace period (default 10)")
    parser.add_argument("--node-timeout-s", type=float, default=3.0,
                        help="leave a node that sends nothing for this long, pings unanswered (default 3; 0: never)")
    parser.add_argument("--streams", type=int, default=1,
                        help="hold a stream to this many of the nodes at once (default 1; see Worker's streams)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build_worker(args: argparse.Namespace) -> Worker:
    """The demo's Worker for its parsed command line."""
    endpoints = [endpoint.strip() for endpoint in args.endpoints.split(",") if endpoint.strip()]
    return Worker(endpoints=endpoints, handlers=HANDLERS, concurrency=args.concurrency, worker_id=args.worker_id,
                  node_timeout_s=args.node_timeout_s if args.node_timeout_s > 0 else None, streams=args.streams)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo worker until SIGINT/SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _SETTINGS["delay_s"] = max(args.delay_ms, 0) / 1000
    _SETTINGS["fail_rate"] = args.fail_rate
    build_worker(args).run_sync(grace_s=args.grace_s)


if __name__ == "__main__":
    main()
