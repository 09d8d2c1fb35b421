"""The Conductor user's worker the `conductor` scenario runs: conductor-python's TaskHandler with
one @worker_task that returns the time its body started (for dispatch latency), as any Conductor
user would write it. Settings from the environment: CONDUCTOR_SERVER_URL, BENCH_POLL_MS (the
SDK's poll_interval_millis; its default is 100), BENCH_THREADS. Stops on SIGTERM.
(No `from __future__ import annotations`: the SDK reads parameter types at run time.)
"""

import os
import signal
import threading
import time
from typing import Any

from conductor.client.automator.task_handler import TaskHandler
from conductor.client.configuration.configuration import Configuration
from conductor.client.worker.worker_task import worker_task

TASK_TYPE = "bench_sdk"


@worker_task(task_definition_name=TASK_TYPE, poll_interval_millis=int(os.environ.get("BENCH_POLL_MS", "100")),
             thread_count=int(os.environ.get("BENCH_THREADS", "16")))
def bench_sdk(n: int) -> dict[str, Any]:
    return {"entered_ms": time.time() * 1000, "n": n}


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    handler = TaskHandler(configuration=Configuration(), scan_for_annotated_workers=True)
    handler.start_processes()
    stop.wait()
    handler.stop_processes()


if __name__ == "__main__":
    main()
