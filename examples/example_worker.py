"""Handlers for the example workflows in this folder.

    python examples/example_worker.py --endpoints 127.0.0.1:50051,127.0.0.1:50052

Outputs are pure functions of the input and the idempotency key, so a retried or
re-delivered task gives the same answer (what real handlers should aim for).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from typing import Any

from worker import TerminalTaskError, Worker, context, task

CARD_LIMIT = 1000


def _code(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:10]


@task("book_flight")
def book_flight(data: dict[str, Any]) -> dict[str, Any]:
    return {"booking": f"FL-{_code(context().idempotency_key)}", "to": data.get("to")}


@task("book_hotel")
def book_hotel(data: dict[str, Any]) -> dict[str, Any]:
    return {"booking": f"HO-{_code(context().idempotency_key)}", "city": data.get("city")}


@task("charge_trip")
def charge_trip(data: dict[str, Any]) -> dict[str, Any]:
    amount = data.get("amount") or 0
    if amount > CARD_LIMIT:
        raise TerminalTaskError(f"card declined: {amount} is over the limit of {CARD_LIMIT}")
    return {"payment": f"PAY-{_code(context().idempotency_key)}", "charged": amount}


@task("cancel_flight")
def cancel_flight(data: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": data["booking"]}


@task("cancel_hotel")
def cancel_hotel(data: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": data["booking"]}


@task("quote")
def quote(data: dict[str, Any]) -> dict[str, Any]:
    """A supplier's price: each round of haggling takes 20 off, never below 50."""
    base = 100 + int(_code(data.get("supplier", ""), data.get("item", "")), 16) % 100
    return {"price": max(50, base - 20 * (int(data.get("round") or 1) - 1)), "supplier": data.get("supplier")}


@task("ship")
async def ship(data: dict[str, Any]) -> dict[str, Any]:
    return {"tracking": f"TR-{_code(data)}", "item": data.get("item")}


@task("notify")
async def notify(data: dict[str, Any]) -> dict[str, Any]:
    return {"sent": data.get("text", "")}


HANDLERS = [book_flight, book_hotel, charge_trip, cancel_flight, cancel_hotel, quote, ship, notify]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default="127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    Worker(endpoints=args.endpoints.split(","), handlers=HANDLERS, concurrency=args.concurrency).run_sync()


if __name__ == "__main__":
    main()
