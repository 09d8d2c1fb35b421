"""The node's links to Redis under load and when cut (issue 22, item 8, and the store's timeouts).

- Blocking reads (a subscription's ReceiveEvents waiting up to 30 s, the node's own event
  consumers, WatchWorkflow's subscriptions) have their own bounded pool
  (`redis_blocking_connections`); past it a wait holds no connection at all (it reads without
  blocking when its topic's broadcast says something was published, and once a second), so
  600 waiting subscribers leave every other store call its connections: starts and task
  results answer at once. (Before: the first start waited 7.2 s for a pooled connection; and a
  ReceiveEvents waiting 20 s failed UNAVAILABLE after 10 s, its read cut by redis-py's default
  5 s socket timeout, twice.)
- Per-namespace quotas (workflows in flight, event handlers, topics, subscription groups),
  each refused with RESOURCE_EXHAUSTED naming its setting, writing nothing.
- A node whose link to Redis is black-holed (devtools/netproxy.py) answers UNAVAILABLE within
  its socket timeout (5 s), instead of after the timeouts redis-py happened to default to, each
  timed-out command sent twice (before: GetWorkflow 10 s, StartWorkflow 20 s; with an older
  redis-py or none of its defaults: until TCP gave up, about 15 minutes).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from devtools.local_cluster import start_node, wait_for_leader
from devtools.netproxy import BOTH, NetProxy
from devtools.procs import ManagedProcess, free_port
from helpers import BackgroundWorker, code_of, unique, wait_for_status
from orchestrator.core.definitions import normalise_workflow_def
from orchestrator.core.namespaces import as_stored
from orchestrator.core.schema import Snapshot
from orchestrator.store.protocol import QuotaExceeded, Quotas
from orchestrator.store.redis import RedisStore
from orchestrator_api.structs import to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import ClientError, Worker, WorkflowClient, task


class Node:
    def __init__(self, process: ManagedProcess, endpoint: str) -> None:
        self.process = process
        self.endpoint = endpoint
        self.http = ""
        self.client = WorkflowClient([endpoint])

    def team(self, namespace: str) -> WorkflowClient:
        return WorkflowClient([self.endpoint], namespace=namespace)

    def stop(self) -> None:
        self.client.close()
        self.process.stop()


def node(folder: Path, etcd: Any, redis_url: str, *flags: str, http_port: int = 0) -> Node:
    port = free_port()
    process = start_node(folder, node_id=f"pools-{uuid.uuid4().hex[:6]}", port=port, redis_url=redis_url,
                         etcd_endpoints=etcd.endpoints, cluster=f"pools{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=http_port, extra=list(flags))
    running = Node(process, f"127.0.0.1:{port}")
    running.http = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_leader(running.client, 20.0)
    except BaseException:
        running.stop()
        raise
    return running


# ------------------------------------------------------------------ blocking reads have their own pool

RECEIVERS = 600     # more than the main pool's 512 connections: each used to hold one for its whole wait
BLOCKING = 8


@pytest.fixture
def busy_node(tmp_path: Path, etcd: Any, redis_server: Any) -> Iterator[Node]:
    running = node(tmp_path, etcd, redis_server.url, "--redis-blocking-connections", str(BLOCKING))
    yield running
    running.stop()


async def _receive_all(endpoint: str, topic: str, count: int, wait_ms: int) -> list[tuple[float, Any]]:
    """`count` ReceiveEvents at once (one subscription group, a consumer each), each waiting `wait_ms`;
    (when it answered, its events or its error), in the order they answered."""
    channels = [grpc.aio.insecure_channel(endpoint) for _ in range(8)]
    answers: list[tuple[float, Any]] = []

    async def one(index: int) -> None:
        stub = pb_grpc.EventServiceStub(channels[index % len(channels)])
        request = pb.ReceiveEventsRequest(topic=topic, group="pool", consumer=f"c{index}", wait_ms=wait_ms)
        try:
            reply = await stub.ReceiveEvents(request, timeout=wait_ms / 1000 + 30)
            answers.append((time.monotonic(), list(reply.events)))
        except grpc.aio.AioRpcError as exc:
            answers.append((time.monotonic(), exc.code()))

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for channel in channels:
            await channel.close()
    return answers


def test_waiting_subscribers_leave_ordinary_calls_their_connections(busy_node: Node) -> None:
    client = busy_node.client
    topic, flow, kind = unique("pool_topic"), unique("pool_flow"), unique("pool_task")
    client.register_task_def({"name": kind})
    client.register_workflow_def({"name": flow, "tasks": [{"name": kind, "taskReferenceName": "t"}]})

    @task(kind)
    def work(data: dict[str, Any]) -> dict[str, Any]:
        return {"done": True}

    background = BackgroundWorker(Worker(endpoints=[busy_node.endpoint], handlers=[work]))
    answered: list[list[tuple[float, Any]]] = []
    receiving = threading.Thread(target=lambda: answered.append(asyncio.run(
        _receive_all(busy_node.endpoint, topic, RECEIVERS, 20_000))), daemon=True)
    receiving.start()
    try:
        time.sleep(3.0)   # every subscriber is waiting now (each used to hold a pooled connection)
        starts, completions = [], []
        for n in range(20):
            began = time.monotonic()
            workflow_id = client.start_workflow(flow, {"n": n})
            starts.append(time.monotonic() - began)
            wait_for_status(client, workflow_id, "COMPLETED", timeout_s=10)
            completions.append(time.monotonic() - began)
        began = time.monotonic()   # a watch finds no blocking connection free: it looks every second
        watched = [w["status"] for w in client.watch_workflow(client.start_workflow(flow, {"n": 99}))]
        watched_s = time.monotonic() - began
        published = time.monotonic()
        client.publish_event(topic, {"hello": "waiters"}, key="k1")
        receiving.join(60)
    finally:
        background.stop()
    answers = answered[0]
    print(f"\n{RECEIVERS} waiting ReceiveEvents, {BLOCKING} blocking connections: start max "
          f"{max(starts) * 1000:.0f} ms (median {sorted(starts)[10] * 1000:.0f} ms), start to COMPLETED max "
          f"{max(completions) * 1000:.0f} ms (median {sorted(completions)[10] * 1000:.0f} ms)")
    assert max(starts) < 1.0 and max(completions) < 2.0
    assert watched[-1] == "COMPLETED" and watched_s < 3.0, (watched, watched_s)
    errors = [a for _, a in answers if not isinstance(a, list)]
    assert not errors, f"{len(errors)} subscribers failed: {errors[:3]}"
    delivered = [(at, events) for at, events in answers if events]
    assert len(delivered) == 1 and delivered[0][1][0].key == "k1"   # one group: one consumer gets it
    assert delivered[0][0] - published < 1.5, "the event reached its waiting subscriber late"
    assert len(answers) == RECEIVERS


# ------------------------------------------------------------------ a black-holed link to Redis

READ_TIMEOUT_S = 5.0     # redis_socket_timeout_s's default


@pytest.fixture
def proxied(tmp_path: Path, etcd: Any, redis_server: Any) -> Iterator[tuple[Node, NetProxy]]:
    proxy = NetProxy(redis_server.port).start()
    running = node(tmp_path, etcd, f"redis://{proxy.address}/0")
    try:
        yield running, proxy
    finally:
        running.stop()
        proxy.stop()


def _timed(call: Any) -> tuple[float, grpc.StatusCode]:
    began = time.monotonic()
    try:
        call()
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    return time.monotonic() - began, code


def test_a_node_cut_from_redis_answers_unavailable_within_its_socket_timeout(
        proxied: tuple[Node, NetProxy]) -> None:
    running, proxy = proxied
    flow = unique("cut_flow")
    running.client.register_workflow_def({"name": flow, "tasks": [
        {"name": "v", "taskReferenceName": "v", "type": "SET_VARIABLE", "inputParameters": {"x": 1}}]})
    workflow_id = running.client.start_workflow(flow, {})
    channel = grpc.insecure_channel(running.endpoint)
    workflows = pb_grpc.WorkflowServiceStub(channel)
    try:
        proxy.black_hole(BOTH)
        read = _timed(lambda: workflows.GetWorkflow(pb.GetWorkflowRequest(workflow_id=workflow_id), timeout=120))
        start = _timed(lambda: workflows.StartWorkflow(pb.StartWorkflowRequest(name=flow, input=to_struct({})),
                                                       timeout=120))
        print(f"\nblack-holed: GetWorkflow {read[1].name} after {read[0]:.1f} s, StartWorkflow {start[1].name} "
              f"after {start[0]:.1f} s")
        for elapsed, code in (read, start):
            assert code == grpc.StatusCode.UNAVAILABLE
            assert elapsed < READ_TIMEOUT_S + 2.0
        proxy.release()
        deadline = time.monotonic() + 20
        while True:   # and once the link is back, so is the node
            elapsed, code = _timed(lambda: workflows.GetWorkflow(pb.GetWorkflowRequest(workflow_id=workflow_id),
                                                                 timeout=10))
            if code == grpc.StatusCode.OK:
                break
            assert time.monotonic() < deadline, f"still {code.name} after the link came back"
            time.sleep(0.2)
    finally:
        channel.close()


# ------------------------------------------------------------------ quotas per namespace


@pytest.fixture(scope="module")
def quota_node(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[Node]:
    running = node(tmp_path_factory.mktemp("quotas"), etcd, redis_server.url, "--quota-workflows-in-flight", "2",
                   "--quota-event-handlers", "2", "--quota-topics", "3", "--quota-consumer-groups", "2",
                   http_port=free_port())
    yield running
    running.stop()


def refusal(call: Any) -> str:
    """The message of the RESOURCE_EXHAUSTED `call()` must raise."""
    with pytest.raises(ClientError) as refused:
        call()
    assert refused.value.code == "RESOURCE_EXHAUSTED", refused.value
    return refused.value.message


WAITING = {"name": "held", "tasks": [{"name": "gate", "taskReferenceName": "gate", "type": "HUMAN"}]}


def test_workflows_in_flight_per_namespace(quota_node: Node) -> None:
    team, other = quota_node.team("wq"), quota_node.team("wq-other")
    for client in (team, other):
        client.register_workflow_def(WAITING)
    first, second = (team.start_workflow("held", {}, idempotency_key=f"k{n}") for n in (1, 2))
    message = refusal(lambda: team.start_workflow("held", {}, idempotency_key="k3"))
    assert "quota_workflows_in_flight" in message and "'wq'" in message and "2 workflows in flight" in message
    assert team.start_workflow("held", {}, idempotency_key="k1") == first   # a repeated start is not a new one
    assert len(team.search_workflows(name="held")[0]) == 2                      # the refused start wrote nothing
    with httpx.Client(base_url=f"{quota_node.http}/api", timeout=10.0) as rest:   # Conductor's REST API too
        refused = rest.post("/workflow/held", json={}, headers={"X-Namespace": "wq"})
        assert refused.status_code == 413 and "quota_workflows_in_flight" in refused.json()["message"]
    other.start_workflow("held", {})   # another namespace has its own quota
    other.start_workflow("held", {})
    team.pause_workflow(second)        # paused is still in flight
    assert "quota_workflows_in_flight" in refusal(lambda: team.start_workflow("held", {}))
    team.terminate_workflow(first, reason="make room")
    third = team.start_workflow("held", {}, idempotency_key="k3")   # the refused key was not taken
    assert third not in (first, second) and team.get_workflow(third)["status"] == "RUNNING"


def test_a_handler_start_past_the_quota_waits_and_is_delivered_again(quota_node: Node) -> None:
    team = quota_node.team("hs")
    team.register_workflow_def(WAITING)
    held = [team.start_workflow("held", {}) for _ in range(2)]
    team.register_event_handler({"name": "starter", "event": "hs.go", "redeliverAfterSeconds": 0.5,
                                 "actions": [{"action": "start_workflow", "start_workflow": {"name": "held"}}]})
    team.publish_event("hs.go", {"n": 1})
    time.sleep(2.0)   # refused by the quota: neither started nor dead-lettered
    assert len(team.search_workflows(name="held")[0]) == 2
    assert team.read_events("deadletter") == []
    team.terminate_workflow(held[0], reason="make room")
    deadline = time.monotonic() + 15
    while len(team.search_workflows(name="held")[0]) < 3:   # delivered again, started now
        assert time.monotonic() < deadline, "the handler's start never came"
        time.sleep(0.2)


def test_event_handlers_per_namespace(quota_node: Node) -> None:
    team, other = quota_node.team("hq"), quota_node.team("hq-other")

    def handler(name: str) -> dict[str, Any]:
        return {"name": name, "event": "hq.topic", "actions": [
            {"action": "publish", "publish": {"topic": "hq.out", "payload": {}}}]}

    team.register_event_handler(handler("one"))
    team.register_event_handler(handler("two"))
    message = refusal(lambda: team.register_event_handler(handler("three")))
    assert "quota_event_handlers" in message and "2 event handlers" in message
    assert sorted(h["name"] for h in team.list_event_handlers()) == ["one", "two"]
    team.register_event_handler({**handler("two"), "condition": "$.payload.n > 1"})   # replacing one is no new one
    other.register_event_handler(handler("three"))
    team.remove_event_handler("one")
    team.register_event_handler(handler("three"))


def test_topics_per_namespace(quota_node: Node) -> None:
    team = quota_node.team("tq")
    team.publish_event("t1", {})
    team.configure_topic("t2", max_len=10)
    team.receive_events("t3", "g", consumer="c")
    for refused in (lambda: team.publish_event("t4", {}), lambda: team.configure_topic("t4", max_len=10),
                    lambda: team.receive_events("t4", "g", consumer="c"),
                    lambda: team.register_event_handler({"name": "h", "event": "t4", "actions": [
                        {"action": "publish", "publish": {"topic": "t1", "payload": {}}}]}),
                    lambda: team.register_workflow_def({"name": "waits", "tasks": [
                        {"name": "w", "taskReferenceName": "w", "type": "WAIT", "inputParameters": {"event": "t4"}}]})):
        message = refusal(refused)
        assert "quota_topics" in message and "3 topics" in message and "'tq'" in message
    assert team.get_topic("t4")["length"] == 0 and team.list_event_handlers() == []
    assert code_of(lambda: team.get_workflow_def("waits")) == "NOT_FOUND"
    team.publish_event("t1", {"again": True})   # the topics it has stay usable
    quota_node.team("tq-other").publish_event("t4", {})


def test_subscription_groups_per_namespace(quota_node: Node) -> None:
    team = quota_node.team("gq")
    team.receive_events("orders", "g1", consumer="c")
    team.receive_events("orders", "g2", consumer="c")
    message = refusal(lambda: team.receive_events("orders", "g3", consumer="c"))
    assert "quota_consumer_groups" in message and "2 subscription groups" in message
    team.publish_event("orders", {"n": 1})
    assert [e["payload"] for e in team.receive_events("orders", "g1", consumer="c")] == [{"n": 1}]
    quota_node.team("gq-other").receive_events("orders", "g3", consumer="c")


def test_what_was_made_before_the_quotas_is_counted_and_let_through(redis_server: Any) -> None:
    """Groups and workflows stored before the quotas were counted: a group that exists passes its
    namespace's full quota (and is counted from then on); a workflow without its `ns` field is
    counted in the namespace its name says."""
    async def scenario() -> None:
        store = RedisStore.from_url(redis_server.url, prefix=f"q{uuid.uuid4().hex[:8]}",
                                    quotas=Quotas(consumer_groups=1, workflows_in_flight=5))
        try:
            await store.ensure_group("old:t", "sub:a")
            await store._redis.xgroup_create(store.keys.events("old:t"), "sub:before", id="$")
            await store.ensure_group("old:t", "sub:before")
            with pytest.raises(QuotaExceeded, match="quota_consumer_groups: 1"):
                await store.ensure_group("old:t", "sub:new")
            assert await store._redis.scard(store.keys.namespace_groups("old")) == 2

            definition = as_stored("old", normalise_workflow_def({"name": "w", "tasks": [
                {"name": "h", "taskReferenceName": "h", "type": "HUMAN"}]}, {}))
            snapshot: Snapshot = {"workflow": definition, "taskDefs": {}, "subWorkflows": {}}
            workflow_id, _ = await store.start_workflow(uuid.uuid4().hex, snapshot, {}, "", "", 1)
            flight = store.keys.in_flight(store.keys.partition_of(workflow_id), "old")
            assert await store._redis.sismember(flight, workflow_id)
            await store._redis.hdel(store.keys.workflow(workflow_id), "ns")   # as stored before the quotas
            await store._redis.srem(flight, workflow_id)
            await store.operate(workflow_id, allowed=["RUNNING"], new_status="PAUSED", now_ms=2)
            assert await store._redis.sismember(flight, workflow_id)
            await store.terminate(workflow_id, "done", 3)
            assert not await store._redis.sismember(flight, workflow_id)
        finally:
            await store.close()

    asyncio.run(scenario())
