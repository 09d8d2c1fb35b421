"""Run the order flow both ways on a local cluster, with the same failures, and compare.

    make order-flow                      # starts a throwaway three-node cluster, runs both, stops it
    .venv/bin/python -m examples.order_flow --endpoints 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053

Both runs get the same orders at the same rate and the same failures: every 10th card is
declined (the order must be undone), every 7th request or event is sent twice, and the stock
service fails every call for 1.5 s in the middle of the run. The table compares end-to-end
latency, messages per order, what the failures left behind, where a person looks for a stuck
order, and how many places change to add a step. It is also written to
run/order-flow/order_flow.md (--output elsewhere; `--output bench/results/order_flow.md` updates
the published figures). The failures the run injects are expected: they are counted and summed
up in one line per style, while anything else that goes wrong is logged as it happens.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from worker import WorkflowClient

from . import choreographed, orchestrated
from .shop import CARD_LIMIT, Shop, Unavailable

RESULTS = Path("run") / "order-flow" / "order_flow.md"   # under the current folder, as `make cluster`'s run/
OUTAGE_S = 1.5


class ExpectedFailures(logging.Filter):
    """Counts, and keeps off the terminal, the subscribers' warnings about deliveries that failed
    because the stock service was down on purpose (each is delivered again, as designed); every
    other record passes."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(arg, Unavailable) for arg in args):
            self.count += 1
            return False
        return True


def quiet_expected_failures() -> ExpectedFailures:
    """Warnings and errors to stderr, one line each, but not the failures this run injects."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    expected = ExpectedFailures()
    logging.getLogger("worker.subscriber").addFilter(expected)
    return expected


def _orders(count: int) -> list[dict[str, Any]]:
    return [{"order": f"o-{uuid.uuid4().hex[:8]}", "amount": CARD_LIMIT * 5 if i % 10 == 9 else 20 + i % 50,
             "items": 1 + i % 3} for i in range(count)]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _outage(shop: Shop, at_index: int) -> Any:
    """A callback per order index: at `at_index` the stock service goes down for OUTAGE_S."""
    def on_order(index: int) -> None:
        if index == at_index:
            shop.stock_down.set()
            threading.Timer(OUTAGE_S, shop.stock_down.clear).start()
    return on_order


def run_orchestrated(endpoints: list[str], orders: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    shop = Shop()
    client = WorkflowClient(endpoints)
    orchestrated.register(client)
    with orchestrated.running(orchestrated.worker(shop, endpoints)):
        ids, duplicates = orchestrated.run_orders(client, orders, rate, 7, _outage(shop, len(orders) // 2))
        ended = orchestrated.collect(client, ids, timeout_s=120)
    latencies = [int(w["ended_at_ms"]) - int(w["created_at_ms"]) for w in ended.values()]
    statuses = [w["status"] for w in ended.values()]
    client.close()
    print(f"  expected failures: {shop.refused} calls refused while the stock service was down (each task "
          f"retried), {shop.declined} charges declined (each order undone)", flush=True)
    return {"style": "orchestrated", "orders": len(orders), "ended": len(ended), "latencies": latencies,
            "shipped": statuses.count("COMPLETED"), "undone": statuses.count("COMPENSATED"),
            "messages_per_order": statistics.mean(orchestrated.messages(w) for w in ended.values()) if ended else 0,
            "duplicates_sent": duplicates, "duplicates_ignored": shop.duplicates, "left_behind": shop.left_behind()}


def run_choreographed(endpoints: list[str], orders: list[dict[str, Any]], rate: float,
                      expected: ExpectedFailures | None = None) -> dict[str, Any]:
    shop = Shop()
    logged_before = expected.count if expected is not None else 0
    run = uuid.uuid4().hex[:6]
    client = WorkflowClient(endpoints)
    services = choreographed.Services(shop, endpoints, run)
    services.start()
    try:
        placed, duplicates = choreographed.run_orders(client, run, orders, rate, 7, _outage(shop, len(orders) // 2))
        ended = choreographed.collect(client, run, placed, timeout_s=120)
        time.sleep(2 * choreographed.REDELIVER_S)   # let redeliveries settle before counting
    finally:
        services.stop()
    client.close()
    print(f"  expected failures: {shop.refused} deliveries refused while the stock service was down (each "
          f"delivered again{f', {expected.count - logged_before} warnings not shown' if expected else ''}), "
          f"{shop.declined} charges declined (each order undone)", flush=True)
    placements = len(orders) + duplicates
    return {"style": "choreographed", "orders": len(orders), "ended": len(ended),
            "latencies": [ms for _, ms in ended.values()],
            "shipped": sum(1 for how, _ in ended.values() if how == "order.shipped"),
            "undone": sum(1 for how, _ in ended.values() if how == "order.cancelled"),
            "messages_per_order": (placements + services.published + services.received) / len(orders),
            "duplicates_sent": duplicates, "duplicates_ignored": shop.duplicates, "left_behind": shop.left_behind()}


def report(results: list[dict[str, Any]], rate: float) -> str:
    def row(label: str, *values: Any) -> str:
        return "| " + " | ".join([label, *map(str, values)]) + " |"

    lat = [(r["latencies"], r) for r in results]
    lines = [f"# The order flow both ways ({results[0]['orders']} orders at {rate:g}/s each; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             "| | orchestrated (one workflow, saga) | choreographed (events only) |", "| --- | --- | --- |",
             row("orders ended (shipped / undone)",
                 *(f"{r['ended']} of {r['orders']} ({r['shipped']} / {r['undone']})" for r in results)),
             row("end-to-end latency p50 / p99, ms",
                 *(f"{_percentile(v, 0.5):.0f} / {_percentile(v, 0.99):.0f}" for v, _ in lat)),
             row("messages per order", *(f"{r['messages_per_order']:.1f}" for r in results)),
             row("duplicates sent / repeats the services ignored",
                 *(f"{r['duplicates_sent']} / {r['duplicates_ignored']}" for r in results)),
             row("left behind: orders not finished, stock held by cancelled orders, charged not shipped",
                 *(f"{b['orders_not_finished']}, {b['stock_units_held_by_cancelled_orders']}, "
                   f"{b['charged_but_not_shipped']}" for b in (r["left_behind"] for r in results))),
             row("where a person looks for a stuck order",
                 "one place: `orchestrator workflow search --correlation-id <order>`, then `workflow get`: "
                 "the step it waits on, its attempts and last error (or the console)",
                 "six topics and four services: `orchestrator event read` on each topic for the order's key, "
                 "the services' logs, and `deadletter`"),
             row("places that change to add \"send email\" after shipping",
                 "2: a task in the definition, a handler", "1: a new subscriber on order.shipped (the flow's end "
                 "is then no longer one event: a report of 'done' must learn of it too)"),
             "",
             "Messages: orchestrated = the start + per task attempt (retries and compensations included) the "
             "assignment pushed and the result reported; choreographed = events published (placements "
             "included) + deliveries to subscribers. Latency: orchestrated from the workflow's creation to its "
             "end (COMPLETED or COMPENSATED); choreographed from publishing orders.placed to the first "
             "order.shipped or order.cancelled event. Failures injected in both: every 10th card declined, "
             f"every 7th request/event sent twice, the stock service down for {OUTAGE_S} s mid-run.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.order_flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", default="", help="a running cluster's gRPC endpoints (default: start one)")
    parser.add_argument("--orders", type=int, default=200, help="orders per style (default 200)")
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second (default 20)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where the table goes (default {RESULTS}; "
                        "bench/results/order_flow.md holds the published figures)")
    args = parser.parse_args()
    expected = quiet_expected_failures()
    orders = _orders(args.orders)
    cluster = None
    folder: Path | None = None
    finished = False
    if args.endpoints:
        endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    else:
        from devtools.local_cluster import ClusterSettings, LocalCluster, wait_for_leader
        folder = Path(tempfile.mkdtemp(prefix="order-flow-"))
        cluster = LocalCluster(folder, ClusterSettings(
            name="order-flow", etcd_members=1, node_ports=[0, 0, 0], workers=0, log_level="WARNING"))
    try:
        if cluster is not None:
            cluster.start(workers=False)
            endpoints = cluster.endpoints
            with WorkflowClient(endpoints) as probe:
                wait_for_leader(probe, 30.0)
        print(f"orchestrated: {args.orders} orders at {args.rate:g}/s ...", flush=True)
        first = run_orchestrated(endpoints, orders, args.rate)
        print(f"choreographed: {args.orders} orders at {args.rate:g}/s ...", flush=True)
        second = run_choreographed(endpoints, _orders(args.orders), args.rate, expected)
        finished = True
    finally:
        if cluster is not None:
            cluster.stop()
        if folder is not None and finished:
            shutil.rmtree(folder, ignore_errors=True)   # the throwaway cluster's data (etcd alone is ~60 MB)
        elif folder is not None:
            print(f"the throwaway cluster's logs are kept in {folder}/", file=sys.stderr, flush=True)
    text = report([first, second], args.rate)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
