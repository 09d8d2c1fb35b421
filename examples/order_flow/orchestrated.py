"""The order flow as one orchestrated workflow: create, reserve, charge, ship; a declined charge
fails the workflow and the saga undoes the completed steps (release the stock, cancel the order).
The services are task handlers on one gRPC worker; the cluster holds the flow's state."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from worker import TaskError, TerminalTaskError, Worker, WorkflowClient, task

from .shop import Declined, Shop, Unavailable

WORKFLOW = "order_flow"
RETRIED = {"retryCount": 10, "retryLogic": "FIXED", "retryDelaySeconds": 1, "responseTimeoutSeconds": 30}


def _step(name: str, ref: str, compensation: str | None = None) -> dict[str, Any]:
    inputs = {"order": "${workflow.input.order}", "amount": "${workflow.input.amount}",
              "items": "${workflow.input.items}"}
    step: dict[str, Any] = {"name": name, "taskReferenceName": ref, "inputParameters": inputs}
    if compensation:
        step["compensation"] = {"name": compensation, "inputParameters": {"order": "${workflow.input.order}"}}
    return step


DEFINITION = {
    "name": WORKFLOW, "description": "Create an order, reserve stock, charge, ship; undo on a declined card",
    "tasks": [_step("of_create_order", "create", "of_cancel_order"),
              _step("of_reserve_stock", "reserve", "of_release_stock"),
              _step("of_charge_payment", "charge"),
              _step("of_ship", "ship")],
    "outputParameters": {"order": "${workflow.input.order}"}}
TASK_DEFS = [{"name": name, **RETRIED} for name in
             ("of_create_order", "of_reserve_stock", "of_charge_payment", "of_ship", "of_release_stock",
              "of_cancel_order")]


def register(client: WorkflowClient) -> None:
    for task_def in TASK_DEFS:
        client.register_task_def(task_def)
    client.register_workflow_def(DEFINITION)


def worker(shop: Shop, endpoints: list[str]) -> Worker:
    def guarded(operation: Any, order: str) -> dict[str, Any]:
        try:
            operation(order)
        except Unavailable as exc:
            raise TaskError(str(exc)) from None         # retried under the task definition
        except Declined as exc:
            raise TerminalTaskError(str(exc)) from None  # not retried: the saga undoes the order
        return {}

    @task("of_create_order")
    def create(data: dict[str, Any]) -> dict[str, Any]:
        shop.create_order(data["order"], int(data["amount"]), int(data["items"]))
        return {}

    @task("of_reserve_stock")
    def reserve(data: dict[str, Any]) -> dict[str, Any]:
        return guarded(shop.reserve_stock, data["order"])

    @task("of_charge_payment")
    def charge(data: dict[str, Any]) -> dict[str, Any]:
        return guarded(shop.charge, data["order"])

    @task("of_ship")
    def ship(data: dict[str, Any]) -> dict[str, Any]:
        return guarded(shop.ship, data["order"])

    @task("of_release_stock")
    def release(data: dict[str, Any]) -> dict[str, Any]:
        return guarded(shop.release_stock, data["order"])

    @task("of_cancel_order")
    def cancel(data: dict[str, Any]) -> dict[str, Any]:
        return guarded(shop.cancel_order, data["order"])

    return Worker(endpoints=endpoints, handlers=[create, reserve, charge, ship, release, cancel], concurrency=16)


@contextlib.contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """The worker on an event loop of its own in a thread, shut down gracefully at the end."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    run = asyncio.run_coroutine_threadsafe(worker.run(), loop)
    try:
        yield worker
    finally:
        asyncio.run_coroutine_threadsafe(worker.shutdown(5.0), loop).result(20)
        run.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def run_orders(client: WorkflowClient, orders: list[dict[str, Any]], rate: float, duplicate_every: int,
               on_order: Any) -> tuple[list[str], int]:
    """Start one workflow per order at `rate`/s (correlation id = order id; the idempotency key
    is the order id, so the duplicated requests start nothing). (workflow ids, duplicates sent)."""
    started: list[str] = []
    duplicates = 0
    for index, order in enumerate(orders):
        on_order(index)
        workflow_id = client.start_workflow(WORKFLOW, order, correlation_id=order["order"],
                                            idempotency_key=order["order"])
        if duplicate_every and index % duplicate_every == 0:
            assert client.start_workflow(WORKFLOW, order, idempotency_key=order["order"]) == workflow_id
            duplicates += 1
        started.append(workflow_id)
        time.sleep(1 / rate)
    return started, duplicates


def collect(client: WorkflowClient, workflow_ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Each workflow once it ended (COMPLETED, or COMPENSATED after a decline)."""
    ended: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(ended) < len(workflow_ids) and time.monotonic() < deadline:
        for workflow_id in workflow_ids:
            if workflow_id not in ended:
                workflow = client.get_workflow(workflow_id)
                if workflow["status"] not in ("RUNNING", "PAUSED", "COMPENSATING"):
                    ended[workflow_id] = workflow
        time.sleep(0.2)
    return ended


def messages(workflow: dict[str, Any]) -> int:
    """Messages between the services and the orchestrator for one order: the start, then per
    task attempt the assignment pushed and the result reported."""
    return 1 + 2 * sum(1 for t in workflow.get("tasks", []) if t.get("started_at_ms"))
