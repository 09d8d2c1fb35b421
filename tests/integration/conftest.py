"""Fixtures of the integration tests beyond tests/conftest.py's servers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from helpers import BackgroundWorker, unique
from worker import Worker, context, task


@pytest.fixture
def recorder(node: Any) -> Any:
    """A worker for a fresh task type that records each call's idempotency key and attempt,
    failing the first attempt of any input that asks for it."""
    name = unique("record")
    calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    @task(name)
    def record(data: dict[str, Any]) -> dict[str, Any]:
        info = context()
        with lock:
            calls.append({"key": info.idempotency_key, "attempt": info.attempt, "ref": info.reference_name,
                          "input": data})
        if data.get("flaky") and info.attempt == 0:
            raise RuntimeError("first attempt fails")
        return {"seen": data}

    node.client.register_task_def({"name": name, "retryCount": 2, "retryDelaySeconds": 0})
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[record], concurrency=4))
    yield name, calls
    background.stop()
