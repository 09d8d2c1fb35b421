"""A Conductor user's worker program, as they would write it: conductor-python's TaskHandler
running @worker_task functions, pointed at a server by CONDUCTOR_SERVER_URL. Nothing in it
knows it talks to this orchestrator. Task names are prefixed by SDK_TASK_PREFIX (so each test
module has its own), read again in each worker process the SDK spawns.

Run: CONDUCTOR_SERVER_URL=http://host:port/api SDK_TASK_PREFIX=p [SDK_DOMAIN=d] python sdk_worker.py
It stops its worker processes on SIGTERM. (No `from __future__ import annotations`: the SDK
reads the functions' parameter types at run time to convert their inputs.)
"""

import asyncio
import os
import signal
import sys
import threading
from typing import Any

from conductor.client.automator.task_handler import TaskHandler
from conductor.client.configuration.configuration import Configuration
from conductor.client.context.task_context import get_task_context
from conductor.client.worker.worker_task import worker_task

PREFIX = os.environ.get("SDK_TASK_PREFIX", "sdk")
POLL_MS = int(os.environ.get("SDK_POLL_INTERVAL_MS", "100"))
THREADS = int(os.environ.get("SDK_THREADS", "4"))
DOMAIN = os.environ.get("SDK_DOMAIN") or None   # a task domain: the namespace the workers serve


@worker_task(task_definition_name=f"{PREFIX}_charge", poll_interval_millis=POLL_MS, thread_count=THREADS,
             domain=DOMAIN)
def charge(order: str, amount: float) -> dict[str, Any]:
    get_task_context().add_log(f"charging {amount} for {order}")
    return {"charged": amount, "order": order, "by": "conductor-python"}


@worker_task(task_definition_name=f"{PREFIX}_ship", poll_interval_millis=POLL_MS, thread_count=THREADS,
             domain=DOMAIN)
def ship(order: str, packed: bool) -> dict[str, Any]:
    if not packed:
        raise ValueError(f"order {order} was not packed")
    return {"shipped": order}


@worker_task(task_definition_name=f"{PREFIX}_flaky", poll_interval_millis=POLL_MS, thread_count=THREADS,
             domain=DOMAIN)
def flaky(order: str) -> dict[str, Any]:
    if get_task_context().get_retry_count() == 0:
        raise RuntimeError("first attempts always fail")
    return {"attempt": get_task_context().get_retry_count()}


@worker_task(task_definition_name=f"{PREFIX}_echo", poll_interval_millis=POLL_MS, thread_count=THREADS,
             domain=DOMAIN)
def echo(n: int) -> dict[str, Any]:
    return {"n": n}


@worker_task(task_definition_name=f"{PREFIX}_async_double", poll_interval_millis=POLL_MS, thread_count=THREADS,
             domain=DOMAIN)
async def async_double(n: int) -> dict[str, Any]:   # the SDK runs async def workers on its asyncio runner
    await asyncio.sleep(0.01)
    return {"doubled": 2 * n}


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handler = TaskHandler(configuration=Configuration(), scan_for_annotated_workers=True)
    handler.start_processes()
    print("sdk worker started", flush=True)
    stop.wait()
    handler.stop_processes()
    sys.exit(0)


if __name__ == "__main__":
    main()
