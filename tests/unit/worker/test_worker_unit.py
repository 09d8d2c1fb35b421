"""Unit tests of the worker SDK, without an orchestrator.

The first part calls the pieces directly (decorator, construction, the
outcome mapping, context, payload conversion). The second part runs a real
Worker and WorkflowClient against scripted in-process fake nodes, to check
the wire protocol: hello and credits, results and acks, heartbeats,
failover with re-sent results, and releases on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import (
    ClientError,
    SDKError,
    TaskContext,
    TaskError,
    TerminalTaskError,
    Worker,
    WorkflowClient,
    context,
    task,
)
from worker._codec import from_struct, message_to_dict, to_struct
from worker._execution import execute_assignment
from worker._task import TaskDefinition, definition_of

COMPLETED = pb.TaskResult.COMPLETED
FAILED = pb.TaskResult.FAILED
FAILED_TERMINAL = pb.TaskResult.FAILED_TERMINAL

TIMEOUT_S = 5.0


def assignment(task_type: str = "t", data: dict[str, Any] | None = None, **fields: Any) -> pb.TaskAssignment:
    defaults: dict[str, Any] = {
        "workflow_id": "wf-1",
        "task_id": "task-1",
        "reference_name": "ref_1",
        "attempt": 2,
        "lease_ms": 30_000,
        "idempotency_key": "wf-1/ref_1",
    }
    defaults.update(fields)
    return pb.TaskAssignment(task_type=task_type, input_json=json.dumps(data or {}).encode(), **defaults)


def run_handler(handler: Any, data: dict[str, Any] | None = None, **fields: Any) -> pb.TaskResult:
    return asyncio.run(execute_assignment(assignment(data=data, **fields), handler))


def output(result: pb.TaskResult) -> Any:
    return json.loads(result.output_json)


# ---------------------------------------------------------------- decorator


def test_task_records_metadata_and_returns_the_function_unchanged() -> None:
    def charge(data: dict) -> dict:
        return {"charged": data["amount"]}

    decorated = task("charge_card")(charge)

    assert decorated is charge
    assert definition_of(charge) == TaskDefinition(name="charge_card")
    assert charge({"amount": 3}) == {"charged": 3}  # still a plain function


def test_bare_task_takes_the_function_name() -> None:
    @task
    async def resize(data: dict) -> dict:
        return {}

    assert definition_of(resize) == TaskDefinition(name="resize")


def test_undecorated_function_has_no_definition() -> None:
    assert definition_of(lambda data: data) is None


@pytest.mark.parametrize("name", ["", "  ", " padded", 3])
def test_task_rejects_invalid_names(name: Any) -> None:
    with pytest.raises(ValueError, match="task type"):
        task(name)(lambda data: data)


def test_task_on_a_method_works_through_the_bound_method() -> None:
    class Handlers:
        @task("greet")
        def greet(self, data: dict) -> dict:
            return {"hello": data["name"]}

    bound = Handlers().greet
    assert definition_of(bound) == TaskDefinition(name="greet")
    Worker(endpoints=["127.0.0.1:1"], handlers=[bound])  # signature check sees (data)
    assert output(run_handler(bound, {"name": "ada"})) == {"hello": "ada"}


# ---------------------------------------------------------------- construction


@task("a")
def handler_a(data: dict) -> dict:
    return {}


@task("a")
def handler_a_again(data: dict) -> dict:
    return {}


@task("b")
def handler_two_args(data: dict, extra: int) -> dict:
    return {}


def test_worker_construction_accepts_a_valid_configuration() -> None:
    w = Worker(endpoints=["127.0.0.1:1"], handlers=[handler_a], concurrency=3, worker_id="w-1")
    assert w.worker_id == "w-1"
    assert w.task_types == ["a"]
    assert w.concurrency == 3
    stats = w.stats
    assert (stats.received, stats.completed, stats.failed, stats.released, stats.reconnects) == (0, 0, 0, 0, 0)


def test_worker_generates_a_worker_id() -> None:
    first = Worker(endpoints=["127.0.0.1:1"], handlers=[handler_a])
    second = Worker(endpoints=["127.0.0.1:1"], handlers=[handler_a])
    assert first.worker_id and first.worker_id != second.worker_id


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"endpoints": []}, ValueError, "endpoints must not be empty"),
        ({"endpoints": "127.0.0.1:1"}, TypeError, "not one string"),
        ({"endpoints": ["127.0.0.1:1", ""]}, ValueError, "invalid endpoint"),
        ({"handlers": []}, ValueError, "at least one"),
        ({"handlers": [lambda data: data]}, TypeError, "not decorated with @task"),
        ({"handlers": [handler_a, handler_a_again]}, ValueError, "two handlers for task type 'a'"),
        ({"handlers": [handler_two_args]}, TypeError, "exactly one positional argument"),
        ({"concurrency": 0}, ValueError, "concurrency"),
        ({"concurrency": 2.5}, ValueError, "concurrency"),
        ({"worker_id": " "}, ValueError, "worker_id"),
    ],
)
def test_worker_construction_fails_fast(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    arguments: dict[str, Any] = {"endpoints": ["127.0.0.1:1"], "handlers": [handler_a]}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        Worker(**arguments)


def test_worker_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Worker(["127.0.0.1:1"], [handler_a])  # type: ignore[call-arg]  # positional on purpose


# ---------------------------------------------------------------- outcome mapping


def test_returned_dict_completes_with_that_output() -> None:
    async def handler(data: dict) -> dict:
        return {"doubled": data["n"] * 2, "nested": {"list": [1, "x", None]}}

    result = run_handler(handler, {"n": 21})

    assert result.status == COMPLETED
    assert (result.workflow_id, result.task_id, result.reason) == ("wf-1", "task-1", "")
    assert output(result) == {"doubled": 42, "nested": {"list": [1, "x", None]}}


def test_returned_none_completes_with_an_empty_object() -> None:
    async def handler(data: dict) -> None:
        return None

    result = run_handler(handler)
    assert result.status == COMPLETED
    assert output(result) == {}


def test_task_error_is_a_retryable_failure_with_type_and_message() -> None:
    async def handler(data: dict) -> dict:
        raise TaskError("gateway timeout", output={"upstream": 504})

    result = run_handler(handler)
    assert result.status == FAILED
    assert result.reason == "TaskError: gateway timeout"
    assert output(result) == {"upstream": 504}


def test_terminal_task_error_is_never_retried_and_keeps_its_reason() -> None:
    async def handler(data: dict) -> dict:
        raise TerminalTaskError("card declined")

    result = run_handler(handler)
    assert result.status == FAILED_TERMINAL
    assert result.reason == "card declined"
    assert output(result) == {}


def test_any_other_exception_is_a_retryable_failure() -> None:
    async def handler(data: dict) -> dict:
        raise KeyError("order_id")

    result = run_handler(handler)
    assert result.status == FAILED
    assert result.reason == "KeyError: 'order_id'"


def test_exception_without_message_reports_its_type() -> None:
    def handler(data: dict) -> dict:
        raise RuntimeError

    assert run_handler(handler).reason == "RuntimeError"


@pytest.mark.parametrize("value", [[1, 2], "done", 42, True])
def test_non_dict_return_is_terminal_and_says_why(value: Any) -> None:
    async def handler(data: dict) -> Any:
        return value

    result = run_handler(handler)
    assert result.status == FAILED_TERMINAL
    assert "must return a JSON object" in result.reason
    assert type(value).__name__ in result.reason


@pytest.mark.parametrize("value", [{"when": object()}, {"tags": {1, 2}}, {"ratio": float("nan")}])
def test_output_that_is_not_json_is_terminal(value: dict) -> None:
    async def handler(data: dict) -> dict:
        return value

    result = run_handler(handler)
    assert result.status == FAILED_TERMINAL
    assert "cannot be encoded as JSON" in result.reason


def test_sync_handler_runs_in_a_thread_with_its_context() -> None:
    seen: dict[str, Any] = {}

    def handler(data: dict) -> dict:
        seen["thread"] = threading.get_ident()
        seen["task_id"] = context().task_id
        return {"echo": data}

    result = run_handler(handler, {"k": [1, 2]})

    assert result.status == COMPLETED
    assert output(result) == {"echo": {"k": [1, 2]}}
    assert seen["thread"] != threading.get_ident()
    assert seen["task_id"] == "task-1"


def test_input_that_is_not_a_json_object_is_terminal() -> None:
    bad = pb.TaskAssignment(workflow_id="wf", task_id="t", task_type="t", input_json=b"[1, 2]")
    result = asyncio.run(execute_assignment(bad, lambda data: {}))
    assert result.status == FAILED_TERMINAL
    assert "not a JSON object" in result.reason


def test_empty_input_means_an_empty_object() -> None:
    bare = pb.TaskAssignment(workflow_id="wf", task_id="t", task_type="t")
    result = asyncio.run(execute_assignment(bare, lambda data: {"input": data}))
    assert output(result) == {"input": {}}


def test_missing_handler_is_a_retryable_failure() -> None:
    result = asyncio.run(execute_assignment(assignment("unknown"), None))
    assert result.status == FAILED
    assert "no handler for task type 'unknown'" in result.reason


# ---------------------------------------------------------------- context


def test_context_exposes_the_attempt_inside_an_async_handler() -> None:
    seen: list[TaskContext] = []

    async def handler(data: dict) -> dict:
        seen.append(context())
        return {}

    run_handler(handler, task_id="attempt-7", attempt=3, idempotency_key="key-1")

    ctx = seen[0]
    assert (ctx.workflow_id, ctx.task_id, ctx.task_type, ctx.reference_name) == ("wf-1", "attempt-7", "t", "ref_1")
    assert (ctx.attempt, ctx.idempotency_key, ctx.lease_ms) == (3, "key-1", 30_000)
    assert ctx.cancelled is False
    ctx.heartbeat()  # harmless without a worker


def test_context_outside_a_handler_raises() -> None:
    with pytest.raises(SDKError, match="only available inside a task handler"):
        context()


def test_context_is_reset_after_the_handler() -> None:
    async def scenario() -> None:
        await execute_assignment(assignment(), lambda data: {})
        with pytest.raises(SDKError):
            context()

    asyncio.run(scenario())


def test_cancelled_context_is_visible_to_the_handler() -> None:
    ctx = TaskContext.from_assignment(assignment())
    ctx._cancel()

    def handler(data: dict) -> dict:
        return {"cancelled": context().cancelled}

    result = asyncio.run(execute_assignment(assignment(), handler, context=ctx))
    assert output(result) == {"cancelled": True}


# ---------------------------------------------------------------- payload conversion


def test_struct_round_trip_keeps_ints_and_nesting() -> None:
    value = {
        "count": 3,
        "price": 9.5,
        "negative": -2,
        "flag": True,
        "nothing": None,
        "items": [{"sku": "A", "qty": 2}, [1, 2.25, "x"]],
        "deep": {"deeper": {"n": 10**12}},
    }

    back = from_struct(to_struct(value))

    assert back == value
    assert type(back["count"]) is int and type(back["deep"]["deeper"]["n"]) is int
    assert type(back["items"][0]["qty"]) is int and type(back["items"][1][0]) is int
    assert type(back["price"]) is float and type(back["items"][1][1]) is float
    assert type(back["flag"]) is bool


def test_struct_conversion_refuses_non_dicts() -> None:
    with pytest.raises(TypeError):
        to_struct([1, 2])  # type: ignore[arg-type]  # not a dict, on purpose


def test_message_to_dict_restores_int64_fields_and_struct_ints() -> None:
    workflow = pb.Workflow(
        workflow_id="wf-1",
        status="RUNNING",
        created_at_ms=1_700_000_000_123,
        input=to_struct({"n": 1}),
        tasks=[pb.Task(task_id="t-1", attempt=0, output=to_struct({"ids": [7, 8]}), started_at_ms=5)],
    )

    data = message_to_dict(workflow)

    assert data["created_at_ms"] == 1_700_000_000_123
    assert data["input"] == {"n": 1}
    assert data["ended_at_ms"] == 0 and data["reason"] == ""  # defaults are present
    task0 = data["tasks"][0]
    assert task0["output"] == {"ids": [7, 8]}
    assert task0["started_at_ms"] == 5 and task0["attempt"] == 0


# ---------------------------------------------------------------- fake nodes


class FakeNode(pb_grpc.TaskServiceServicer):
    """A scripted TaskService: records what workers send, pushes what the test queues."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
        self.outbox: asyncio.Queue[pb.ServerMessage | None] = asyncio.Queue()
        self.streams = 0

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[pb.ServerMessage]:
        self.streams += 1
        reader = asyncio.create_task(self._read(request_iterator, self.streams))
        try:
            while (message := await self.outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def _read(self, request_iterator: Any, stream_number: int) -> None:
        async for message in request_iterator:
            await self.inbox.put(message)
        if stream_number == self.streams:
            self.outbox.put_nowait(None)  # the worker half-closed: end the call, as a node does

    def push(self, message: pb.ServerMessage | None) -> None:
        self.outbox.put_nowait(message)

    async def next(self, kind: str | None = None) -> pb.WorkerMessage:
        """The next message from the worker, skipping heartbeats and pings unless asked for
        (this node answers no ping, like a node older than pings)."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), TIMEOUT_S)
            body = message.WhichOneof("body")
            if kind == body or (kind is None and body not in ("heartbeat", "ping")):
                return message
            if kind is not None and body not in ("heartbeat", "ping"):
                raise AssertionError(f"expected {kind}, got {message}")


@contextlib.asynccontextmanager
async def fake_node() -> AsyncIterator[tuple[FakeNode, str, grpc.aio.Server]]:
    node = FakeNode()
    server = grpc.aio.server()
    pb_grpc.add_TaskServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield node, f"127.0.0.1:{port}", server
    finally:
        await server.stop(0)


def dead_endpoint() -> str:
    """An address nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def task_message(task_id: str, task_type: str = "echo", lease_ms: int = 30_000, **data: Any) -> pb.ServerMessage:
    return pb.ServerMessage(task=assignment(task_type, data, task_id=task_id, lease_ms=lease_ms))


def ack(task_id: str, accepted: bool = True) -> pb.ServerMessage:
    return pb.ServerMessage(result_ack=pb.ResultAck(task_id=task_id, accepted=accepted))


async def wait_until(predicate: Any, timeout_s: float = TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@task("echo")
async def echo(data: dict) -> dict:
    return {"echo": data, "attempt": context().attempt}


def test_worker_says_hello_runs_a_task_and_grants_a_credit() -> None:
    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            async with Worker(endpoints=[endpoint], handlers=[echo], concurrency=4, worker_id="w-1") as w:
                hello = (await node.next()).hello
                assert (hello.worker_id, list(hello.task_types), hello.capacity) == ("w-1", ["echo"], 4)
                await wait_until(lambda: w.current_endpoint == endpoint)

                node.push(task_message("t-1", x=1))
                result = (await node.next("result")).result
                assert (result.task_id, result.status) == ("t-1", COMPLETED)
                assert json.loads(result.output_json) == {"echo": {"x": 1}, "attempt": 2}
                assert (await node.next("credit")).credit.count == 1

                node.push(ack("t-1"))
                await wait_until(lambda: not w._unacked)
                assert (w.stats.received, w.stats.completed, w.stats.failed) == (1, 1, 0)

    asyncio.run(scenario())


def test_tasks_ending_in_one_turn_of_the_loop_grant_their_credits_in_one_message() -> None:
    """Three handlers released together: three results, then one credit of 3 (not three of 1)."""
    gate = asyncio.Event()

    @task("gated")
    async def gated(data: dict) -> dict:
        await gate.wait()
        return {}

    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            async with Worker(endpoints=[endpoint], handlers=[gated], concurrency=3) as w:
                await node.next()  # hello
                for n in range(3):
                    node.push(task_message(f"t-{n}", "gated"))
                await wait_until(lambda: w.in_flight == 3)
                gate.set()
                results = {(await node.next("result")).result.task_id for _ in range(3)}
                assert results == {"t-0", "t-1", "t-2"}
                assert (await node.next("credit")).credit.count == 3
                for task_id in results:  # else the worker waits its grace period for them at exit
                    node.push(ack(task_id))
                await wait_until(lambda: w.stats.completed == 3)

    asyncio.run(scenario())


def test_heartbeats_flow_and_a_lost_lease_cancels_the_context() -> None:
    release = asyncio.Event()
    seen: dict[str, bool] = {}

    @task("slow")
    async def slow(data: dict) -> dict:
        await release.wait()
        seen["cancelled"] = context().cancelled
        return {}

    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            async with Worker(endpoints=[endpoint], handlers=[slow], concurrency=1) as w:
                await node.next()  # hello
                node.push(task_message("t-1", "slow", lease_ms=150))
                beat = (await node.next("heartbeat")).heartbeat  # within lease/3 = 50 ms
                assert (beat.workflow_id, beat.task_id) == ("wf-1", "t-1")
                node.push(pb.ServerMessage(heartbeat_ack=pb.HeartbeatAck(task_id="t-1", alive=False)))
                await wait_until(lambda: w.stats.lease_lost == 1)
                release.set()

                result = (await node.next("result")).result
                node.push(ack(result.task_id, accepted=False))
                await wait_until(lambda: w.stats.rejected == 1)
                assert seen["cancelled"] is True

    asyncio.run(scenario())


def test_a_result_answered_retry_is_sent_again_on_the_same_stream() -> None:
    """A node that could not store a result for now (its workflow's part of the store is failing
    over) answers `retry`: the worker keeps it, sends it again after a back-off on the same stream
    (no reconnect), and forgets it once it is acknowledged; another task goes on meanwhile."""
    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            async with Worker(endpoints=[endpoint], handlers=[echo], concurrency=2) as w:
                assert (await node.next()).hello.resends is True
                node.push(task_message("t-1", x=1))
                first = (await node.next("result")).result
                await node.next("credit")
                node.push(pb.ServerMessage(result_ack=pb.ResultAck(task_id="t-1", accepted=False, retry=True,
                                                                   detail="not stored for now")))
                node.push(task_message("t-2", x=2))   # the stream carries other tasks meanwhile
                assert (await node.next("result")).result.task_id == "t-2"
                await node.next("credit")
                node.push(ack("t-2"))
                again = (await node.next("result")).result   # 100 ms after the `retry`
                assert again == first
                node.push(pb.ServerMessage(result_ack=pb.ResultAck(task_id="t-1", accepted=False, retry=True)))
                assert (await node.next("result")).result == first   # 200 ms after the second
                node.push(ack("t-1"))
                await wait_until(lambda: not w._unacked)
                assert (w.stats.retried, w.stats.rejected, w.stats.reconnects, node.streams) == (2, 0, 0, 1)

    asyncio.run(scenario())


def test_failover_resends_unacked_results_and_hellos_with_free_slots() -> None:
    release = asyncio.Event()

    @task("slow")
    async def slow(data: dict) -> dict:
        await release.wait()
        return {"done": True}

    async def scenario() -> None:
        async with fake_node() as (a, endpoint_a, server_a), fake_node() as (b, endpoint_b, _):
            async with Worker(endpoints=[endpoint_a, endpoint_b], handlers=[echo, slow], concurrency=3) as w:
                assert (await a.next()).hello.capacity == 3
                a.push(task_message("t-echo", "echo"))
                a.push(task_message("t-slow", "slow"))
                assert (await a.next("result")).result.task_id == "t-echo"  # left unacknowledged
                await wait_until(lambda: w.in_flight == 1)

                await server_a.stop(0)  # the node dies

                assert (await b.next()).hello.capacity == 2  # t-slow still holds a slot
                assert (await b.next("result")).result.task_id == "t-echo"  # re-sent
                await wait_until(lambda: w.current_endpoint == endpoint_b)
                assert w.stats.reconnects == 1 and w.stats.resent == 1

                release.set()  # the handler survived the failover and reports to b
                result = (await b.next("result")).result
                assert (result.task_id, json.loads(result.output_json)) == ("t-slow", {"done": True})
                b.push(ack("t-echo"))
                b.push(ack("t-slow"))
                await wait_until(lambda: not w._unacked)

    asyncio.run(scenario())


def test_shutdown_releases_late_tasks_and_tasks_past_the_grace_period() -> None:
    started = asyncio.Event()

    @task("stuck")
    async def stuck(data: dict) -> dict:
        started.set()
        await asyncio.sleep(60)
        return {}

    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            w = Worker(endpoints=[endpoint], handlers=[stuck, echo], concurrency=2)
            runner = asyncio.create_task(w.run())
            await node.next()  # hello
            node.push(task_message("t-stuck", "stuck"))
            await started.wait()

            stopping = asyncio.create_task(w.shutdown(grace_s=0.2))
            await wait_until(lambda: w._stopping)
            node.push(task_message("t-late", "echo"))  # arrives after shutdown began
            released = {(await node.next("release")).release.task_id for _ in range(2)}
            assert released == {"t-late", "t-stuck"}

            await asyncio.wait_for(stopping, TIMEOUT_S)
            await asyncio.wait_for(runner, TIMEOUT_S)
            assert w.stats.released == 2 and w.stats.completed == 0

    asyncio.run(scenario())


def test_a_node_that_stops_answering_heartbeats_is_left_before_the_lease_expires() -> None:
    release = asyncio.Event()

    @task("slow")
    async def slow(data: dict) -> dict:
        await release.wait()
        return {}

    async def scenario() -> None:
        async with fake_node() as (a, endpoint_a, _), fake_node() as (b, endpoint_b, _):
            async with Worker(endpoints=[endpoint_a, endpoint_b], handlers=[slow], concurrency=2) as w:
                await a.next()  # hello
                a.push(task_message("t-1", "slow", lease_ms=600))  # heartbeat every 200 ms, never answered
                started = asyncio.get_running_loop().time()

                assert (await b.next()).hello.capacity == 1
                beat = (await b.next("heartbeat")).heartbeat  # sent at once on the new stream
                assert beat.task_id == "t-1"
                assert asyncio.get_running_loop().time() - started < 0.6  # within the lease
                release.set()
                assert (await b.next("result")).result.task_id == "t-1"
                b.push(ack("t-1"))
                await wait_until(lambda: not w._unacked)

    asyncio.run(scenario())


def test_worker_skips_a_dead_endpoint() -> None:
    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            async with Worker(endpoints=[dead_endpoint(), endpoint], handlers=[echo]) as w:
                assert (await node.next()).hello.capacity == 8
                await wait_until(lambda: w.current_endpoint == endpoint)
                assert w.stats.reconnects == 0  # the first stream that worked

    asyncio.run(scenario())


# ---------------------------------------------------------------- a stream to every node


def gated(name: str, output: dict[str, Any]) -> tuple[asyncio.Event, Any]:
    """A handler of task type `name` that returns `output` once the event it comes with is set."""
    release = asyncio.Event()

    @task(name)
    async def handler(data: dict) -> dict:
        await release.wait()
        return dict(output)

    return release, handler


async def credits(node: FakeNode, count: int) -> None:
    """Read credit messages from `node` until they add up to `count` (results may come between)."""
    total = 0
    while total < count:
        message = await node.next()
        if message.WhichOneof("body") == "credit":
            total += message.credit.count
    assert total == count


async def next_but_credits(node: FakeNode, kind: str) -> pb.WorkerMessage:
    """The next message of `kind` from the worker, skipping credits, heartbeats and pings."""
    while True:
        message = await asyncio.wait_for(node.inbox.get(), TIMEOUT_S)
        body = message.WhichOneof("body")
        if body == kind:
            return message
        if body not in ("credit", "heartbeat", "ping"):
            raise AssertionError(f"expected {kind}, got {message}")


def test_the_first_node_gets_all_slots_but_one_for_each_other_and_each_task_reports_where_it_came_from() -> None:
    async def scenario() -> None:
        async with fake_node() as (a, endpoint_a, _), fake_node() as (b, endpoint_b, _):
            async with Worker(endpoints=[endpoint_a, endpoint_b], handlers=[echo], concurrency=5, streams=2) as w:
                assert (await a.next()).hello.capacity == 4
                assert (await b.next()).hello.capacity == 1
                await wait_until(lambda: w.connected_endpoints == [endpoint_a, endpoint_b])
                b.push(task_message("t-b", "echo"))
                assert (await b.next("result")).result.task_id == "t-b"
                assert (await b.next("credit")).credit.count == 1   # its slot goes back to b
                a.push(task_message("t-a", "echo"))
                assert (await a.next("result")).result.task_id == "t-a"
                assert (await a.next("credit")).credit.count == 1
                a.push(ack("t-a"))
                b.push(ack("t-b"))
                await wait_until(lambda: not w._unacked)
                assert (w.stats.completed, w.stats.reconnects, a.streams, b.streams) == (2, 0, 1, 1)
                for node in (a, b):   # nothing else came: no credit beyond the two slots freed
                    while not node.inbox.empty():
                        assert node.inbox.get_nowait().WhichOneof("body") in ("ping", "heartbeat")

    asyncio.run(scenario())


def test_a_slot_freed_on_a_link_at_its_aim_goes_to_the_link_furthest_under_its_own() -> None:
    release, slow = gated("slow", {})

    async def scenario() -> None:
        async with fake_node() as (a, endpoint_a, _), fake_node() as (b, endpoint_b, server_b):
            async with Worker(endpoints=[endpoint_a, endpoint_b], handlers=[echo, slow], concurrency=4,
                              streams=2) as w:
                assert (await a.next()).hello.capacity == 3
                assert (await b.next()).hello.capacity == 1
                await server_b.stop(0)   # b's slot goes to a, the one stream up
                await credits(a, 1)
                for number in range(4):
                    a.push(task_message(f"t-{number}", "slow"))
                await wait_until(lambda: w.in_flight == 4)
                b = FakeNode()   # a fresh node at b's address
                server = grpc.aio.server()
                pb_grpc.add_TaskServiceServicer_to_server(b, server)
                assert server.add_insecure_port(endpoint_b) == int(endpoint_b.rsplit(":", 1)[1])
                await server.start()
                try:
                    assert (await b.next()).hello.capacity == 0   # every slot is running a's tasks
                    await wait_until(lambda: w.connected_endpoints == [endpoint_a, endpoint_b])
                    release.set()
                    # a runs 4, one more than it aims at with b up again: its first freed slot goes
                    # to b (which aims at one), the rest back to a
                    await credits(b, 1)
                    await credits(a, 3)
                    for number in range(4):   # the results went to a, whose tasks they were
                        a.push(ack(f"t-{number}"))
                    await wait_until(lambda: not w._unacked)
                finally:
                    await server.stop(0)

    asyncio.run(scenario())


def test_when_a_stream_breaks_its_results_and_heartbeats_go_on_another_stream_at_once() -> None:
    release, slow = gated("slow", {"done": True})

    async def scenario() -> None:
        async with fake_node() as (a, endpoint_a, server_a), fake_node() as (b, endpoint_b, _):
            async with Worker(endpoints=[endpoint_a, endpoint_b], handlers=[echo, slow], concurrency=4,
                              streams=2) as w:
                await a.next()
                await b.next()   # the hellos
                await wait_until(lambda: w.connected_endpoints == [endpoint_a, endpoint_b])
                a.push(task_message("t-echo", "echo"))
                a.push(task_message("t-slow", "slow"))
                assert (await a.next("result")).result.task_id == "t-echo"  # left unacknowledged
                await wait_until(lambda: w.in_flight == 1)

                await server_a.stop(0)  # a dies: b, up all along, gets what a had

                assert (await next_but_credits(b, "result")).result.task_id == "t-echo"  # re-sent
                assert (await next_but_credits(b, "heartbeat")).heartbeat.task_id == "t-slow"
                assert w.connected_endpoints == [endpoint_b]
                release.set()
                result = (await next_but_credits(b, "result")).result
                assert (result.task_id, json.loads(result.output_json)) == ("t-slow", {"done": True})
                b.push(ack("t-echo"))
                b.push(ack("t-slow"))
                await wait_until(lambda: not w._unacked)
                assert (w.stats.reconnects, w.stats.resent, b.streams) == (0, 1, 1)

    asyncio.run(scenario())


def test_a_draining_node_stream_closes_and_its_task_reports_to_the_other_stream() -> None:
    release, slow = gated("slow", {"done": True})

    async def scenario() -> None:
        async with fake_node() as (a, endpoint_a, server_a), fake_node() as (b, endpoint_b, _):
            async with Worker(endpoints=[endpoint_a, endpoint_b], handlers=[slow], concurrency=4,
                              streams=2) as w:
                await a.next()
                await b.next()   # the hellos
                await wait_until(lambda: w.connected_endpoints == [endpoint_a, endpoint_b])
                a.push(task_message("t-slow", "slow"))
                await wait_until(lambda: w.in_flight == 1)
                a.push(pb.ServerMessage(drain=pb.Drain(detail="stopping")))
                await wait_until(lambda: a.streams == 1 and w.connected_endpoints == [endpoint_b])
                await server_a.stop(0)   # and gone: the link's next stream to it cannot open
                release.set()
                result = (await next_but_credits(b, "result")).result
                assert (result.task_id, json.loads(result.output_json)) == ("t-slow", {"done": True})
                b.push(ack("t-slow"))
                await wait_until(lambda: not w._unacked)
                assert w.stats.completed == 1

    asyncio.run(scenario())


def test_a_dead_endpoints_slots_go_to_the_streams_that_are_up() -> None:
    async def scenario() -> None:
        async with fake_node() as (node, endpoint, _):
            async with Worker(endpoints=[dead_endpoint(), endpoint], handlers=[echo], streams=2) as w:
                assert (await node.next()).hello.capacity == 1   # the dead endpoint's link was the primary
                await credits(node, 7)   # once its stream failed to connect: this one is now
                await wait_until(lambda: w.connected_endpoints == [endpoint])
                assert w.stats.reconnects == 0

    asyncio.run(scenario())


def test_streams_is_checked() -> None:
    bad_values: tuple[Any, ...] = (0, -1, True, 1.5, "2")
    for bad in bad_values:
        with pytest.raises(ValueError, match="streams"):
            Worker(endpoints=["127.0.0.1:1"], handlers=[echo], streams=bad)


def test_the_demo_worker_takes_its_streams_from_the_command_line() -> None:
    from worker import demo

    two = demo.build_worker(demo.parse_args(["--endpoints", "127.0.0.1:1, 127.0.0.1:2", "--streams", "2"]))
    assert [link.endpoint for link in two._links] == ["127.0.0.1:1", "127.0.0.1:2"]
    one = demo.build_worker(demo.parse_args(["--endpoints", "127.0.0.1:1,127.0.0.1:2"]))
    assert [link.endpoint for link in one._links] == ["127.0.0.1:1"]
    with pytest.raises(ValueError, match="streams"):
        demo.build_worker(demo.parse_args(["--endpoints", "127.0.0.1:1", "--streams", "0"]))


# ---------------------------------------------------------------- client


class FakeCluster(pb_grpc.ClusterServiceServicer, pb_grpc.WorkflowServiceServicer):
    def __init__(self) -> None:
        self.starts: list[pb.StartWorkflowRequest] = []

    def GetClusterStatus(self, request: Any, context: Any) -> pb.ClusterStatus:
        return pb.ClusterStatus(node_id="n2", role="LEADER", epoch=7, elected_at_ms=1_700_000_000_000)

    def StartWorkflow(self, request: pb.StartWorkflowRequest, context: Any) -> pb.StartWorkflowResponse:
        self.starts.append(request)
        return pb.StartWorkflowResponse(workflow_id="wf-42", created=True)

    def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Any) -> NoReturn:
        context.abort(grpc.StatusCode.NOT_FOUND, f"no workflow {request.workflow_id}")
        raise AssertionError("abort returned")   # it raises; said for the type checker


@pytest.fixture
def cluster() -> Iterator[tuple[FakeCluster, str]]:
    fake = FakeCluster()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ClusterServiceServicer_to_server(fake, server)
    pb_grpc.add_WorkflowServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(0)


def test_client_fails_over_from_a_dead_endpoint(cluster: tuple[FakeCluster, str]) -> None:
    _, endpoint = cluster
    with WorkflowClient([dead_endpoint(), endpoint], timeout_s=5) as client:
        status = client.cluster_status()
    assert status["node_id"] == "n2" and status["epoch"] == 7 and status["elected_at_ms"] == 1_700_000_000_000
    assert status["members"] == []


def test_client_start_sends_struct_input_and_an_idempotency_key(cluster: tuple[FakeCluster, str]) -> None:
    fake, endpoint = cluster
    with WorkflowClient([endpoint]) as client:
        assert client.start_workflow("order", {"order_id": 5, "items": [1, 2]}) == "wf-42"
        client.start_workflow("order", idempotency_key="mine")
    first, second = fake.starts
    assert from_struct(first.input) == {"order_id": 5, "items": [1, 2]}
    assert len(first.idempotency_key) == 32 and second.idempotency_key == "mine"


def test_client_raises_server_errors_with_their_code(cluster: tuple[FakeCluster, str]) -> None:
    _, endpoint = cluster
    with WorkflowClient([endpoint]) as client, pytest.raises(ClientError) as caught:
        client.get_workflow("nope")
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.message == "no workflow nope"


def test_client_gives_up_after_its_timeout_when_nothing_answers() -> None:
    with WorkflowClient([dead_endpoint(), dead_endpoint()], timeout_s=0.5) as client:
        with pytest.raises(ClientError) as caught:
            client.cluster_status()
    assert caught.value.code == "UNAVAILABLE"
    assert "no endpoint answered" in caught.value.message
