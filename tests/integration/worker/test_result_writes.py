"""Who writes a result to the node, through a real node: with one task in flight, the task's own
asyncio task writes its result (and credit) at once, without waking the stream's writer for a
turn of the event loop; with several in flight, the writer gathers what ends together into one
message, as before. Told apart by the name of the asyncio task that calls `write` on the stream."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from helpers import BackgroundWorker, register_sequence, unique, wait_for_status
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import Worker, task


class WriterNamingCall:
    """The SDK's stream call, noting for each message that carries results who wrote it: the
    task's own runner ("task-<id>") or the stream's writer."""

    def __init__(self, call: Any, writers: Counter[str], results: Counter[str]) -> None:
        self._call = call
        self._writers = writers
        self._results = results

    async def write(self, message: pb.WorkerMessage) -> None:
        body = message.WhichOneof("body")
        carried = len(message.batch.results) if body == "batch" else int(body == "result")
        if carried:
            current = asyncio.current_task()
            writer = "runner" if current is not None and current.get_name().startswith("task-") else "writer"
            self._writers[writer] += 1
            self._results[writer] += carried
        await self._call.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


@pytest.fixture
def writers(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter[str], Counter[str]]:
    """(messages carrying results, results) by who wrote them."""
    by_messages: Counter[str] = Counter()
    by_results: Counter[str] = Counter()
    real_stub = pb_grpc.TaskServiceStub

    class NamingStub:
        def __init__(self, channel: Any) -> None:
            self._stub = real_stub(channel)

        def Connect(self, **kwargs: Any) -> WriterNamingCall:
            return WriterNamingCall(self._stub.Connect(**kwargs), by_messages, by_results)

    monkeypatch.setattr(pb_grpc, "TaskServiceStub", NamingStub)
    return by_messages, by_results


def test_a_lone_tasks_result_is_written_by_its_own_task(node: Any, writers: tuple[Counter[str], Counter[str]]
                                                        ) -> None:
    by_results = writers[1]
    client = node.client
    name, task_type = unique("lone"), unique("lone_step")
    register_sequence(client, name, [task_type] * 3, retryCount=0)

    @task(task_type)
    async def step(data: dict[str, Any]) -> dict[str, Any]:
        return {}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[step], concurrency=4))
    try:
        background.attached()
        for n in range(10):
            wait_for_status(client, client.start_workflow(name, {"n": n}), "COMPLETED", timeout_s=30)
    finally:
        background.stop()
    assert sum(by_results.values()) == 30, by_results
    # a ping queued in the same turn as a result sends both through the writer: now and then at most
    assert by_results["runner"] >= 27, by_results


def test_results_that_end_together_still_share_the_writers_message(node: Any,
                                                                   writers: tuple[Counter[str], Counter[str]]
                                                                   ) -> None:
    """Four handlers released in one turn of the worker's loop: the first three see others still in
    flight and queue; the last finds their results queued: all four go in one message."""
    by_messages, by_results = writers
    client = node.client
    name, task_type = unique("together"), unique("together_step")
    register_sequence(client, name, [task_type], retryCount=0)
    gate = asyncio.Event()
    arrived = Counter[str]()

    @task(task_type)
    async def step(data: dict[str, Any]) -> dict[str, Any]:
        arrived["n"] += 1
        await gate.wait()
        return {}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[step], concurrency=4))
    try:
        background.attached()
        started = [client.start_workflow(name, {"n": n}) for n in range(4)]
        deadline = time.monotonic() + 10
        while arrived["n"] < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        background.loop.call_soon_threadsafe(gate.set)
        for workflow_id in started:
            wait_for_status(client, workflow_id, "COMPLETED", timeout_s=30)
    finally:
        background.stop()
    assert (by_messages, by_results) == (Counter(writer=1), Counter(writer=4))
