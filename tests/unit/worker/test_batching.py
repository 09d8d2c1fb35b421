"""Batches on the worker stream ("Batches" in orchestrator.proto), without an orchestrator.

First the gathering rules (orchestrator_api/batches.py, used by the node and the SDK), then a real
Worker against scripted nodes: one that reads batches (it says so with a first, empty ServerBatch)
and one older than batches, which must never be sent a WorkerBatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any


from helpers import serving_task_service
from orchestrator_api.batches import (
    MAX_BATCH_BYTES,
    WorkerItem,
    gather_server_messages,
    gather_worker_messages,
    server_batch_hello,
)
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import Worker, task

TIMEOUT_S = 5.0


def result(task_id: str) -> pb.TaskResult:
    return pb.TaskResult(workflow_id="wf", task_id=task_id, status=pb.TaskResult.COMPLETED, output_json=b"{}")


def beat(task_id: str) -> pb.Heartbeat:
    return pb.Heartbeat(workflow_id="wf", task_id=task_id)


def credit(count: int = 1) -> pb.Credit:
    return pb.Credit(count=count)


HELLO = pb.WorkerMessage(hello=pb.WorkerHello(worker_id="w", task_types=["t"], capacity=2, batches=True))
PING = pb.WorkerMessage(ping=pb.Ping(seq=1))


# ---------------------------------------------------------------- the worker's gathering


def test_a_workers_results_heartbeats_releases_and_credits_of_one_gathering_go_in_one_batch() -> None:
    queued: list[WorkerItem] = [result("a"), credit(), beat("b"), pb.Release(workflow_id="wf", task_id="c"),
                                result("d"), credit()]
    [message] = gather_worker_messages(queued, batches=True)
    batch = message.batch
    assert [r.task_id for r in batch.results] == ["a", "d"]
    assert [h.task_id for h in batch.heartbeats] == ["b"]
    assert [r.task_id for r in batch.releases] == ["c"]
    assert batch.credits == 2


def test_a_message_that_is_never_batched_stays_in_place_between_the_batches_around_it() -> None:
    queued: list[WorkerItem] = [HELLO, result("a"), result("b"), PING, result("c"), credit(3)]
    sent = gather_worker_messages(queued, batches=True)
    assert [m.WhichOneof("body") for m in sent] == ["hello", "batch", "ping", "batch"]
    assert [r.task_id for r in sent[1].batch.results] == ["a", "b"] and sent[1].batch.credits == 0
    assert [r.task_id for r in sent[3].batch.results] == ["c"] and sent[3].batch.credits == 3


def test_a_lone_item_goes_as_itself() -> None:
    assert gather_worker_messages([result("a")], batches=True) == [pb.WorkerMessage(result=result("a"))]
    assert gather_worker_messages([credit(2)], batches=True) == [pb.WorkerMessage(credit=credit(2))]
    assert gather_worker_messages([], batches=True) == []


def test_to_a_node_older_than_batches_every_item_goes_alone_and_the_credits_add_up() -> None:
    queued: list[WorkerItem] = [HELLO, result("re-sent"), result("a"), credit(), beat("b"), result("c"), credit(),
                                PING, credit()]
    sent = gather_worker_messages(queued, batches=False)
    assert [m.WhichOneof("body") for m in sent] == ["hello", "result", "result", "heartbeat", "result", "credit",
                                                    "ping", "credit"]
    assert [sent[5].credit.count, sent[7].credit.count] == [2, 1]
    assert not any(m.HasField("batch") for m in sent)


def test_large_items_never_make_a_batch_larger_than_the_cap_and_one_too_large_goes_alone() -> None:
    def big(task_id: str, kib: int) -> pb.TaskResult:
        return pb.TaskResult(workflow_id="wf", task_id=task_id, output_json=b"x" * (kib * 1024))

    queued: list[WorkerItem] = [result("a"), big("b", 30), big("c", 30), big("d", 30), big("e", 100),
                                result("f"), credit(4)]
    sent = gather_worker_messages(queued, batches=True)
    assert [[r.task_id for r in m.batch.results] or [m.result.task_id] for m in sent] == [
        ["a", "b", "c"], ["d"], ["e"], ["f"]]
    assert [m.WhichOneof("body") for m in sent] == ["batch", "result", "result", "batch"]
    assert sent[-1].batch.credits == 4   # the credits go with the last batch of the run
    assert all(m.ByteSize() <= MAX_BATCH_BYTES + 64 for m in sent if m.HasField("batch"))


# ---------------------------------------------------------------- the node's gathering


def assigned(task_id: str) -> pb.ServerMessage:
    return pb.ServerMessage(task=pb.TaskAssignment(workflow_id="wf", task_id=task_id, task_type="t"))


def acked(task_id: str, accepted: bool = True) -> pb.ServerMessage:
    return pb.ServerMessage(result_ack=pb.ResultAck(task_id=task_id, accepted=accepted))


def test_a_nodes_assignments_and_acks_of_one_gathering_go_in_one_batch_and_a_drain_after_them() -> None:
    beat_ack = pb.ServerMessage(heartbeat_ack=pb.HeartbeatAck(task_id="h", alive=True, lease_ms=900))
    drain = pb.ServerMessage(drain=pb.Drain(detail="stopping"))
    sent = gather_server_messages([assigned("a"), acked("x", False), beat_ack, assigned("b"), drain, acked("y")])
    assert [m.WhichOneof("body") for m in sent] == ["batch", "drain", "result_ack"]   # a lone ack: itself
    batch = sent[0].batch
    assert [t.task_id for t in batch.tasks] == ["a", "b"]
    assert [(a.task_id, a.accepted) for a in batch.result_acks] == [("x", False)]
    assert [(a.task_id, a.lease_ms) for a in batch.heartbeat_acks] == [("h", 900)]


def test_a_nodes_large_assignments_are_split_into_batches_under_the_cap() -> None:
    def big(task_id: str, kib: int) -> pb.ServerMessage:
        return pb.ServerMessage(task=pb.TaskAssignment(task_id=task_id, input_json=b"x" * (kib * 1024)))

    sent = gather_server_messages([big("a", 40), acked("x"), big("b", 40), big("c", 70), acked("y"), acked("z")])
    assert [[t.task_id for t in m.batch.tasks] + [a.task_id for a in m.batch.result_acks]
            if m.HasField("batch") else [m.task.task_id] for m in sent] == [["a", "x"], ["b"], ["c"], ["y", "z"]]
    assert all(m.ByteSize() <= MAX_BATCH_BYTES + 64 for m in sent if m.HasField("batch"))


def test_the_nodes_first_message_to_a_worker_that_asked_for_batches_is_an_empty_batch() -> None:
    hello = server_batch_hello()
    assert hello.WhichOneof("body") == "batch" and hello.batch == pb.ServerBatch()


# ---------------------------------------------------------------- a real Worker against scripted nodes


class ScriptedNode(pb_grpc.TaskServiceServicer):
    """A TaskService that records what the worker sends and pushes what the test queues; with
    `reads_batches`, it answers a hello that asks for batches with an empty ServerBatch, as a node
    does; without, it is a node older than batches."""

    def __init__(self, reads_batches: bool) -> None:
        self.reads_batches = reads_batches
        self.inbox: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        self.outbox: asyncio.Queue[pb.ServerMessage | None] = asyncio.Queue()

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[pb.ServerMessage]:
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            while (message := await self.outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def _read(self, request_iterator: Any) -> None:
        async for message in request_iterator:
            if message.WhichOneof("body") == "hello" and message.hello.batches and self.reads_batches:
                self.outbox.put_nowait(server_batch_hello())
            if message.WhichOneof("body") != "ping":
                await self.inbox.put(message)
        self.outbox.put_nowait(None)

    async def next(self) -> pb.WorkerMessage:
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT_S)


@contextlib.asynccontextmanager
async def scripted_node(reads_batches: bool) -> AsyncIterator[tuple[ScriptedNode, str]]:
    node = ScriptedNode(reads_batches)
    async with serving_task_service(node) as address:
        yield node, address


def gated_assignment(task_id: str) -> pb.TaskAssignment:
    return pb.TaskAssignment(workflow_id="wf", task_id=task_id, task_type="gated",
                             input_json=json.dumps({"n": task_id}).encode(), lease_ms=30_000)


def pushed(task_ids: tuple[str, ...], acks: tuple[str, ...], batched: bool) -> list[pb.ServerMessage]:
    """These assignments and acks, in one ServerBatch or one message each."""
    if not batched:
        return [*(pb.ServerMessage(task=gated_assignment(t)) for t in task_ids),
                *(pb.ServerMessage(result_ack=pb.ResultAck(task_id=t, accepted=True)) for t in acks)]
    message = pb.ServerMessage()
    message.batch.tasks.extend(gated_assignment(t) for t in task_ids)
    message.batch.result_acks.extend(pb.ResultAck(task_id=t, accepted=True) for t in acks)
    return [message]


async def wait_until(predicate: Any) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def run_three_gated_tasks(reads_batches: bool) -> tuple[pb.WorkerHello, list[pb.WorkerMessage], int]:
    """Three tasks pushed in one ServerBatch (one by one from a node older than batches), released
    together: the hello, what the worker sent about them, and its results left unacknowledged once
    the node acked all three (in one batch, or one by one)."""
    gate = asyncio.Event()

    @task("gated")
    async def gated(data: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return data

    async def scenario() -> tuple[pb.WorkerHello, list[pb.WorkerMessage], int]:
        async with scripted_node(reads_batches) as (node, endpoint):
            async with Worker(endpoints=[endpoint], handlers=[gated], concurrency=3) as w:
                hello = (await node.next()).hello
                for push in pushed(("t-0", "t-1", "t-2"), (), reads_batches):
                    node.outbox.put_nowait(push)
                await wait_until(lambda: w.in_flight == 3)
                gate.set()
                sent: list[pb.WorkerMessage] = []
                results = 0
                while results < 3 or not any(m.WhichOneof("body") in ("credit", "batch") for m in sent[-1:]):
                    message = await node.next()
                    sent.append(message)
                    results += len(message.batch.results) + message.HasField("result")
                for push in pushed((), ("t-0", "t-1", "t-2"), reads_batches):
                    node.outbox.put_nowait(push)
                await wait_until(lambda: not w._unacked)
                return hello, sent, len(w._unacked)

    return asyncio.run(scenario())


def test_a_worker_batches_its_results_and_credits_once_the_node_said_it_reads_batches() -> None:
    hello, sent, unacked = run_three_gated_tasks(reads_batches=True)
    assert hello.batches
    [message] = sent   # three results and their three credits: one message
    assert sorted((r.task_id, json.loads(r.output_json)["n"]) for r in message.batch.results) == [
        ("t-0", "t-0"), ("t-1", "t-1"), ("t-2", "t-2")]
    assert message.batch.credits == 3
    assert unacked == 0   # the acks of one ServerBatch each reached their result


def test_a_worker_never_sends_a_batch_to_a_node_older_than_batches() -> None:
    hello, sent, _ = run_three_gated_tasks(reads_batches=False)
    assert hello.batches   # asked, but the node never said it reads them
    assert [m.WhichOneof("body") for m in sent] == ["result", "result", "result", "credit"]
    assert sent[-1].credit.count == 3
