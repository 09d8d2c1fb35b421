"""Batches on the worker stream, through a real node: the SDK's worker and a worker older than
batches (the generated stubs alone, one message at a time) share a node; every result of a batch
is acknowledged on its own, a bad one included; and what batches save, in messages per task."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from assertions import scrape, series
from helpers import BackgroundWorker, register_sequence, unique, wait_for_status
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import Worker, task

# the server messages that carry items (pongs and the node's first, empty batch say nothing else)
CARRYING = ("task", "result_ack", "heartbeat_ack", "batch")


class RawStream:
    """A worker stream written by hand against the generated stubs: an SDK older than batches (or
    in another language) when `batches` is off."""

    def __init__(self, endpoint: str, worker_id: str, task_types: list[str], capacity: int,
                 batches: bool = False) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.outgoing: queue.Queue[pb.WorkerMessage | None] = queue.Queue()
        self.incoming: queue.Queue[pb.ServerMessage | grpc.RpcError] = queue.Queue()
        self.outgoing.put(pb.WorkerMessage(hello=pb.WorkerHello(worker_id=worker_id, task_types=task_types,
                                                                capacity=capacity, batches=batches)))

        def requests() -> Iterator[pb.WorkerMessage]:
            while (message := self.outgoing.get()) is not None:
                yield message

        self.call = pb_grpc.TaskServiceStub(self.channel).Connect(requests(), timeout=60)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.incoming.put(message)
        except grpc.RpcError as exc:
            self.incoming.put(exc)

    def send(self, message: pb.WorkerMessage) -> None:
        self.outgoing.put(message)

    def next(self, timeout_s: float = 10.0) -> pb.ServerMessage:
        message = self.incoming.get(timeout=timeout_s)
        if isinstance(message, grpc.RpcError):
            raise AssertionError(f"the stream ended: {message.code()} {message.details()}")
        return message

    def items(self, kind: str, count: int, timeout_s: float = 10.0) -> list[Any]:
        """The next `count` items of this kind ("task", "result_ack", "heartbeat_ack"), whether
        they came alone or in batches; nothing else may come meanwhile but pongs."""
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            message = self.next(max(0.01, deadline - time.monotonic()))
            body = message.WhichOneof("body")
            if body == "batch":
                found.extend(getattr(message.batch, {"task": "tasks"}.get(kind, f"{kind}s")))
            elif body == kind:
                found.append(getattr(message, kind))
            else:
                assert body == "pong", message
        assert len(found) == count, found
        return found

    def close(self) -> None:
        self.outgoing.put(None)
        self.call.cancel()
        self.channel.close()


def result(workflow_id: str, task_id: str, output: dict[str, Any]) -> pb.TaskResult:
    return pb.TaskResult(workflow_id=workflow_id, task_id=task_id, status=pb.TaskResult.COMPLETED,
                         output_json=json.dumps(output).encode())


def test_a_batching_sdk_worker_and_a_worker_older_than_batches_complete_workflows_on_one_node(
        node: Any, run_worker: Any) -> None:
    """Each workflow's first step runs on the SDK (batches both ways), its second on a stream
    that says hello without `batches`: the node never sends it a batch, and it completes its
    steps with single messages as before."""
    client = node.client
    name, new_type, old_type = unique("mixed"), unique("batching"), unique("single")
    register_sequence(client, name, [new_type, old_type], retryCount=0)

    @task(new_type)
    def new_step(data: dict[str, Any]) -> dict[str, Any]:
        return {"by": "sdk", "n": data["n"]}

    sdk = run_worker([node.endpoint], [new_step], concurrency=4)
    old = RawStream(node.endpoint, unique("old"), [old_type], capacity=2)
    received: Counter[str] = Counter()
    stop = threading.Event()

    def serve_one_message_at_a_time() -> None:
        while not stop.is_set():
            try:
                message = old.next(timeout_s=0.2)
            except queue.Empty:
                continue
            except AssertionError:
                return   # the stream ended (the test is over)
            body = message.WhichOneof("body")
            received[body] += 1
            if body == "task":
                assigned = message.task
                old.send(pb.WorkerMessage(result=result(assigned.workflow_id, assigned.task_id,
                                                        {"by": "old", "n": json.loads(assigned.input_json)["n"]})))
                old.send(pb.WorkerMessage(credit=pb.Credit(count=1)))

    server = threading.Thread(target=serve_one_message_at_a_time, daemon=True)
    server.start()
    try:
        started = [client.start_workflow(name, {"n": n}) for n in range(12)]
        done = [wait_for_status(client, workflow_id, "COMPLETED", timeout_s=30) for workflow_id in started]
    finally:
        stop.set()
        server.join(5)
        old.close()
    assert [(w["output"]["step0"], w["output"]["step1"]) for w in done] == [
        ({"by": "sdk", "n": n}, {"by": "old", "n": n}) for n in range(12)]
    assert received["task"] == 12 and received["result_ack"] == 12 and received["batch"] == 0, received
    stream = sdk.worker._links[0].stream
    assert stream is not None and stream.node_reads_batches   # the node told the SDK it reads batches


def test_every_result_of_a_batch_is_acked_on_its_own_and_an_unknown_one_fails_alone(node: Any) -> None:
    """A stream that asks for batches hears so first (an empty ServerBatch); then one WorkerBatch
    of heartbeats, one of three results plus one for a task attempt that does not exist and one
    for a workflow that does not exist: each gets its own ack, the three are stored and their
    workflows complete, the two others are refused and change nothing."""
    client = node.client
    name, task_type = unique("batched"), unique("batch_item")
    register_sequence(client, name, [task_type], retryCount=0)
    stream = RawStream(node.endpoint, unique("raw"), [task_type], capacity=3, batches=True)
    try:
        first = stream.next()
        assert first.WhichOneof("body") == "batch" and first.batch == pb.ServerBatch()
        started = [client.start_workflow(name, {"n": n}) for n in range(3)]
        assigned = stream.items("task", 3)
        assert sorted(a.workflow_id for a in assigned) == sorted(started)

        beats = pb.WorkerMessage()
        beats.batch.heartbeats.extend(pb.Heartbeat(workflow_id=a.workflow_id, task_id=a.task_id) for a in assigned)
        stream.send(beats)
        beat_acks = stream.items("heartbeat_ack", 3)
        assert sorted((a.task_id, a.alive) for a in beat_acks) == sorted((a.task_id, True) for a in assigned)

        results = pb.WorkerMessage()
        results.batch.results.extend(result(a.workflow_id, a.task_id, {"n": json.loads(a.input_json)["n"]})
                                     for a in assigned[:2])
        results.batch.results.append(result(started[0], "no-such-attempt", {"bad": True}))
        results.batch.results.append(result(unique("no-such-workflow"), "no-such-attempt-either", {"bad": True}))
        results.batch.results.append(result(assigned[2].workflow_id, assigned[2].task_id,
                                            {"n": json.loads(assigned[2].input_json)["n"]}))
        results.batch.credits = 3
        stream.send(results)
        acks = {a.task_id: a for a in stream.items("result_ack", 5)}
    finally:
        stream.close()
    assert {task_id for task_id, a in acks.items() if a.accepted} == {a.task_id for a in assigned}
    assert not acks["no-such-attempt"].accepted and not acks["no-such-attempt-either"].accepted
    assert acks["no-such-attempt"].detail == "no such task attempt"
    done = [wait_for_status(client, workflow_id, "COMPLETED") for workflow_id in started]
    assert [w["output"]["step0"] for w in done] == [{"n": n} for n in range(3)]
    assert all(len(w["tasks"]) == 1 for w in done)


def test_one_workflow_at_a_time_the_next_task_is_written_before_the_results_ack(node: Any) -> None:
    """A step alone on its node: the task it hands over is what the workflow waits for, and goes to
    the worker in a message of its own, before the acknowledgement of the result that finished the
    step (which used to hold it back, about 0.1 ms a step, to share its message)."""
    client = node.client
    name, task_type = unique("alone"), unique("alone_step")
    register_sequence(client, name, [task_type, task_type], retryCount=0)
    stream = RawStream(node.endpoint, unique("raw"), [task_type], capacity=1, batches=True)
    messages: list[list[str]] = []   # after the first result: each message's items, in the order they came
    try:
        stream.next()   # the node reads batches
        workflow_id = client.start_workflow(name, {"n": 1})
        [first] = stream.items("task", 1)
        finished = pb.WorkerMessage()
        finished.batch.results.append(result(first.workflow_id, first.task_id, {}))
        finished.batch.credits = 1
        stream.send(finished)
        second: pb.TaskAssignment | None = None
        acked = False
        while not acked or second is None:
            message = stream.next()
            body = message.WhichOneof("body")
            if body == "pong":
                continue
            batch = message.batch if body == "batch" else pb.ServerBatch()
            tasks = list(batch.tasks) + ([message.task] if body == "task" else [])
            acks = list(batch.result_acks) + ([message.result_ack] if body == "result_ack" else [])
            messages.append(["task"] * len(tasks) + ["result_ack"] * len(acks))
            second = second or (tasks[0] if tasks else None)
            acked = acked or bool(acks)
            assert all(ack.task_id == first.task_id and ack.accepted for ack in acks), acks
        stream.send(pb.WorkerMessage(result=result(second.workflow_id, second.task_id, {})))
        wait_for_status(client, workflow_id, "COMPLETED")
    finally:
        stream.close()
    assert messages == [["task"], ["result_ack"]], messages


def test_credits_that_come_with_their_results_are_granted_in_full(node: Any) -> None:
    """A stream may hold MAX_CREDITS (256) tasks asked for and unfinished together. Ten results and
    the ten credits they free, in one batch, make room for exactly ten more: the credits must not
    be refused because the results are still being stored (the worker would never get them back)."""
    client = node.client
    name, task_type = unique("room"), unique("room_step")
    register_sequence(client, name, [task_type], retryCount=0)
    stream = RawStream(node.endpoint, unique("raw"), [task_type], capacity=256, batches=True)
    url = f"http://{node.http_address}"
    try:
        stream.next()   # the node reads batches
        started = [client.start_workflow(name, {"n": n}) for n in range(10)]
        assigned = stream.items("task", 10)
        assert series(scrape(url), "orchestrator_worker_credits", task_type=task_type) == 246
        results = pb.WorkerMessage()
        results.batch.results.extend(result(a.workflow_id, a.task_id, {}) for a in assigned)
        results.batch.credits = 10
        stream.send(results)
        assert all(a.accepted for a in stream.items("result_ack", 10))
        assert series(scrape(url), "orchestrator_worker_credits", task_type=task_type) == 256
    finally:
        stream.close()
    for workflow_id in started:
        wait_for_status(client, workflow_id, "COMPLETED")


def test_large_inputs_and_outputs_together_never_make_a_message_too_large(node: Any) -> None:
    """Six tasks of 700 KB inputs queued before the worker connects (one claim, one gathering) whose
    700 KB outputs are reported in one turn: together they exceed gRPC's 4 MiB message limit (the
    SDK's to receive, the node's `max_message_bytes` to send and receive), alone they fit; every
    batch stays under its cap, so the stream holds and each task runs once."""
    client = node.client
    name, task_type = unique("large"), unique("large_step")
    register_sequence(client, name, [task_type], retryCount=2, retryDelaySeconds=0, responseTimeoutSeconds=5)
    started = [client.start_workflow(name, {"n": f"{n}" + "x" * 700_000}) for n in range(6)]
    gate = asyncio.Event()   # set in the worker's loop once all six run: their results go in one turn
    running = 0

    @task(task_type)
    async def echo_big(data: dict[str, Any]) -> dict[str, Any]:
        nonlocal running
        running += 1
        if running == len(started):
            gate.set()
        await gate.wait()
        return {"echo": data["n"]}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[echo_big], concurrency=8))
    try:
        done = [wait_for_status(client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=30) for workflow_id in started]
        stats = background.worker.stats
    finally:
        background.stop()
    assert [w["status"] for w in done] == ["COMPLETED"] * 6
    assert [len(w["tasks"]) for w in done] == [1] * 6   # no attempt lost to a broken stream
    assert [w["output"]["step0"]["echo"][:1] for w in done] == [f"{n}" for n in range(6)]
    assert (stats.received, stats.reconnects) == (6, 0)


# ---------------------------------------------------------------- what batches save


class CountingCall:
    """The SDK's stream call, counting the messages each way by kind (and the items batches carry)."""

    def __init__(self, call: Any, counts: Counter[str]) -> None:
        self._call = call
        self._counts = counts

    async def write(self, message: pb.WorkerMessage) -> None:
        body = message.WhichOneof("body")
        self._counts[f"up {body}"] += 1
        if body == "batch":
            self._counts["up results in batches"] += len(message.batch.results)
        await self._call.write(message)

    async def read(self) -> Any:
        message = await self._call.read()
        if isinstance(message, pb.ServerMessage):
            body = message.WhichOneof("body")
            self._counts[f"down {body}"] += 1
            if body == "batch" and not (message.batch.tasks or message.batch.result_acks
                                        or message.batch.heartbeat_acks):
                self._counts["down empty batch"] += 1
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


@pytest.mark.parametrize("together", [60, 1])
def test_batches_carry_a_task_in_fewer_stream_messages_each_way(node: Any, monkeypatch: pytest.MonkeyPatch,
                                                                together: int) -> None:
    """60 three-step workflows through one SDK worker, started together or one after the other:
    the stream messages that carry items (results, credits, heartbeats up; tasks and acks down),
    per task. Single messages cost two each way per task (a result and a credit; a task and an
    ack); batched, a result rides with its credit, and, started together, an ack with the next task
    of its workflow. One at a time the next task goes at once, in a message of its own, and the
    ack after it (`test_one_workflow_at_a_time_the_next_task_is_written_before_the_results_ack`)."""
    counts: Counter[str] = Counter()
    real_stub = pb_grpc.TaskServiceStub

    class CountingStub:
        def __init__(self, channel: Any) -> None:
            self._stub = real_stub(channel)

        def Connect(self, **kwargs: Any) -> CountingCall:
            return CountingCall(self._stub.Connect(**kwargs), counts)

    monkeypatch.setattr(pb_grpc, "TaskServiceStub", CountingStub)
    client = node.client
    name, task_type = unique("counted"), unique("counted_step")
    register_sequence(client, name, [task_type] * 3, retryCount=0)

    @task(task_type)
    def step(data: dict[str, Any]) -> dict[str, Any]:
        return {}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[step], concurrency=8))
    try:
        background.attached()   # so that every task goes through the stream
        started: list[str] = []
        while len(started) < 60:
            wave = [client.start_workflow(name, {"n": n}) for n in range(together)]
            for workflow_id in wave:
                wait_for_status(client, workflow_id, "COMPLETED", timeout_s=30)
            started += wave
    finally:
        background.stop()
    tasks = 3 * len(started)
    up = sum(n for kind, n in counts.items() if kind.startswith("up ") and kind[3:] in
             ("result", "credit", "heartbeat", "release", "batch"))
    down = sum(n for kind, n in counts.items() if kind.startswith("down ") and kind[5:] in CARRYING)
    down -= counts["down empty batch"]
    print(f"\n{together} together: stream messages per task: up {up / tasks:.2f}, down {down / tasks:.2f} "
          f"({tasks} tasks; {dict(counts)})")
    assert counts["up batch"] > 0
    assert up / tasks <= 1.1, counts     # a result and its credit always share a message
    if together > 1:   # an ack and the next task of its workflow usually do
        assert counts["down batch"] > counts["down empty batch"]
        assert down / tasks <= 1.5, counts
    else:
        assert down / tasks <= 2.0, counts
