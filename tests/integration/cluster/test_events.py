"""The event bus and event handlers (choreography), on real Redis, etcd and node processes.

Idempotency is audited by counting: every event of a start_workflow handler must have
started exactly one workflow, through the start script's idempotency key
`event:<handler>:<event id>`, whatever was redelivered or whichever node died.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import redis

from devtools.local_cluster import ClusterSettings, LocalCluster, wait_for_leader
from orchestrator.cluster.deciding import Decider
from orchestrator.cluster.events import EventConsumers
from orchestrator.core.events import BusEvent, normalise_handler
from helpers import idempotency_keys, index_members, started_by_key
from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import Keys, cluster_prefix
from orchestrator_api.structs import from_struct, to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import WorkflowClient

WAITER = {"name": "waiter", "version": 1, "tasks": [
    {"name": "w", "taskReferenceName": "w", "type": "WAIT"},
    {"name": "announce", "taskReferenceName": "announce", "type": "EVENT", "sink": "conductor:order.done",
     "inputParameters": {"order": "${workflow.input.order}", "paid": "${w.output.paid}"}}]}
INGEST = {"name": "ingest", "version": 1, "tasks": [{"name": "n", "taskReferenceName": "n", "type": "NOOP"}]}
# A stream's entries as a client with decode_responses=True reads them (redis' types also allow bytes and None).
DecodedEntries = list[tuple[str, dict[str, str]]]


class Bus:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.channels = [grpc.insecure_channel(e) for e in endpoints]
        self.stubs = [pb_grpc.EventServiceStub(c) for c in self.channels]

    def call(self, method: str, request: Any, timeout: float = 5.0) -> Any:
        """Try each node in turn while a node is down (UNAVAILABLE)."""
        last: grpc.RpcError | None = None
        for _ in range(40):
            for stub in self.stubs:
                try:
                    return getattr(stub, method)(request, timeout=timeout)
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    last = exc
            time.sleep(0.1)
        assert last is not None
        raise last

    def publish(self, topic: str, payload: dict[str, Any], key: str = "") -> str:
        return str(self.call("PublishEvent", pb.PublishEventRequest(topic=topic, payload=to_struct(payload),
                                                                    key=key)).event_id)

    def register(self, handler: dict[str, Any]) -> dict[str, Any]:
        answer = self.call("RegisterEventHandler", pb.RegisterEventHandlerRequest(definition=to_struct(handler)))
        return from_struct(answer.definition)

    def read(self, topic: str) -> list[dict[str, Any]]:
        answer = self.call("ReadEvents", pb.ReadEventsRequest(topic=topic, limit=1000))
        return [{"id": e.event_id, "key": e.key, "payload": from_struct(e.payload)} for e in answer.events]

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def wait_until(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@pytest.fixture(scope="module")
def bus(node: Any) -> Iterator[Bus]:
    node.client.register_workflow_def(WAITER)
    node.client.register_workflow_def(INGEST)
    bus = Bus([node.endpoint])
    try:
        yield bus
    finally:
        bus.close()


@pytest.fixture(scope="module")
def raw(node: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(node.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def by_correlation(raw: redis.Redis, cluster: str, correlation: str) -> list[str]:
    # decode_responses=True: the members come back as str (redis' types also allow bytes)
    return index_members(raw, Keys(cluster_prefix(cluster)), "corr", correlation)


def test_handlers_start_complete_fail_and_terminate_workflows(node: Any, bus: Bus, raw: redis.Redis) -> None:
    bus.register({"name": "on_order", "event": "orders", "actions": [
        {"action": "start_workflow", "start_workflow": {"name": "waiter", "input": {"order": "${$.payload.order}"},
                                                        "correlationId": "${$.payload.order}"}}]})
    bus.register({"name": "big_orders", "event": "conductor:orders", "condition": "$.payload.amount > 100",
                  "actions": [{"action": "publish", "publish": {"topic": "orders.big", "key": "${$.key}",
                                                                "payload": {"order": "${$.payload.order}"}}}]})
    bus.register({"name": "on_paid", "event": "paid", "actions": [
        {"action": "complete_task", "complete_task": {"workflowId": "${$.payload.workflowId}", "taskRefName": "w",
                                                      "output": {"paid": True}}}]})
    bus.register({"name": "on_declined", "event": "declined", "actions": [
        {"action": "fail_task", "fail_task": {"workflowId": "${$.payload.workflowId}", "taskRefName": "w",
                                              "reason": "card declined"}}]})
    bus.register({"name": "on_cancelled", "event": "cancelled", "actions": [
        {"action": "terminate_workflow", "terminate_workflow": {"workflowId": "${$.payload.workflowId}",
                                                                "terminationReason": "customer cancelled"}}]})
    # no pause: registering a handler makes its consumer group, so events published before a node
    # picks the handler up (within a second) wait in the group for it
    run = uuid.uuid4().hex[:6]
    orders = {f"{run}-A": 50, f"{run}-B": 500, f"{run}-C": 20}
    for order, amount in orders.items():
        bus.publish("orders", {"order": order, "amount": amount}, key=order)
    ids = {order: wait_until(partial(by_correlation, raw, node.cluster, order), what=f"start of {order}")[0]
           for order in orders}
    bus.publish("paid", {"workflowId": ids[f"{run}-A"]})
    bus.publish("declined", {"workflowId": ids[f"{run}-B"]})
    bus.publish("cancelled", {"workflowId": ids[f"{run}-C"]})
    client = node.client

    def status(order: str) -> str:
        return str(client.get_workflow(ids[order], include_tasks=False)["status"])
    wait_until(lambda: status(f"{run}-A") == "COMPLETED", what="A completed")
    wait_until(lambda: status(f"{run}-B") == "FAILED", what="B failed")
    wait_until(lambda: status(f"{run}-C") == "TERMINATED", what="C terminated")
    assert "card declined" in client.get_workflow(ids[f"{run}-B"], include_tasks=False)["reason"]
    # the EVENT task published in the decision that completed it, once
    done = [e["payload"] for e in bus.read("order.done") if e["payload"].get("order", "").startswith(run)]
    assert done == [{"order": f"{run}-A", "paid": True}]
    # the condition let only the big order through, with the key carried over
    big = [e for e in bus.read("orders.big") if e["payload"]["order"].startswith(run)]
    assert [(e["payload"]["order"], e["key"]) for e in big] == [(f"{run}-B", f"{run}-B")]


def test_a_redelivered_event_changes_nothing(node: Any, raw: redis.Redis) -> None:
    """The same event handled twice (a node acted, then died before acknowledging): one workflow
    started, one task completed, one termination; the repeats are duplicates."""

    async def scenario() -> None:
        store = RedisStore.from_url(node.redis_url, prefix=f"wfo:{node.cluster}")
        decider = Decider(store)   # no workers here: a started workflow's tasks are queued
        consumers = EventConsumers(store, "test", on_workflows=lambda ids: None, start_decided=decider.start,
                                   max_payload_bytes=1 << 20)
        try:
            start = normalise_handler({"name": "replay_start", "event": "replay", "actions": [
                {"action": "start_workflow", "start_workflow": {"name": "waiter", "input": {"order": "r"}}}]})
            event = BusEvent(f"{int(time.time() * 1000)}-7", "replay", '{"x":1}', "", 0)
            keys = Keys(cluster_prefix(node.cluster))
            before = len(index_members(raw, keys, "name", "waiter"))
            for _ in range(3):
                assert await consumers._handle(start, event) is True
            assert len(index_members(raw, keys, "name", "waiter")) == before + 1
            assert consumers.duplicates == 2
            workflow_id = started_by_key(raw, keys, f"event:replay_start:{event.event_id}")
            assert workflow_id
            assert isinstance(workflow_id, str)   # decode_responses=True
            deadline = time.monotonic() + 20   # decided in its start script: its WAIT task goes in progress
            while True:
                state = await store.load(workflow_id)
                if state is not None and any(t.spec.ref == "w" and t.runtime.status == "IN_PROGRESS"
                                             for t in state.tasks):
                    break
                assert time.monotonic() < deadline, f"the started workflow was never decided: {state}"
                await asyncio.sleep(0.05)
            finish = normalise_handler({"name": "replay_done", "event": "replay", "actions": [
                {"action": "complete_task", "complete_task": {"workflowId": workflow_id, "taskRefName": "w"}},
                {"action": "publish", "publish": {"topic": "replayed", "payload": {"n": 1}}}]})
            for _ in range(3):
                assert await consumers._handle(finish, event) is True
            assert consumers.duplicates == 6 and consumers.dead_lettered == 0
            assert raw.xlen(keys.events("replayed")) == 1
        finally:
            await consumers.stop()
            await decider.stop()
            await store.close()

    asyncio.run(scenario())


def test_unacknowledged_events_are_redelivered_then_dead_lettered(node: Any, bus: Bus, raw: redis.Redis) -> None:
    keys = Keys(cluster_prefix(node.cluster))
    stream = keys.events("ghosts")
    redeliver = {"name": "ghost_start", "event": "ghosts", "active": False, "redeliverAfterSeconds": 0.3,
                 "maxDeliveries": 3, "actions": [{"action": "start_workflow", "start_workflow": {
                     "name": "ingest", "input": {"n": "${$.payload.n}"}, "correlationId": "ghost-${$.key}"}}]}
    deadline = {**redeliver, "name": "ghost_dead", "maxDeliveries": 1}
    bus.register(redeliver)
    bus.register(deadline)
    sent = [bus.publish("ghosts", {"n": n}) for n in range(5)]
    # a consumer that dies: it receives every event for both handlers and never acknowledges
    for group in ("ghost_start", "ghost_dead"):
        got = raw.xreadgroup(group, "dead-node", {stream: ">"}, count=100)
        assert isinstance(got, list)   # RESP2's reply: [[stream, entries]]
        assert [entry_id for entry_id, _ in got[0][1]] == sent
    bus.register({**redeliver, "active": True})
    bus.register({**deadline, "active": True})
    started = wait_until(lambda: len(idempotency_keys(raw, keys, "event:ghost_start:*")) == 5
                         and raw.xpending(stream, "ghost_start")["pending"] == 0, what="redelivery")
    assert started
    letters = wait_until(lambda: [e for e in bus.read("deadletter") if e["payload"]["handler"] == "ghost_dead"]
                         if raw.xpending(stream, "ghost_dead")["pending"] == 0 else None, what="dead letters")
    assert sorted(e["payload"]["eventId"] for e in letters) == sent
    assert all("not acknowledged after 1 deliveries" in e["payload"]["reason"] for e in letters)
    assert sorted(e["payload"]["payload"]["n"] for e in letters) == [0, 1, 2, 3, 4]


def test_bad_input_is_refused_and_a_failing_action_is_dead_lettered_alone(node: Any, bus: Bus,
                                                                          raw: redis.Redis) -> None:
    def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        return caught.value.code()

    good = {"name": "h", "event": "t", "actions": [{"action": "publish", "publish": {"topic": "u"}}]}
    assert code_of(lambda: bus.register({**good, "condition": "$.payload.x >"})) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: bus.register({**good, "event": "no spaces"})) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: bus.register({**good, "actions": [{"action": "launch"}]})) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: bus.register({**good, "actions": [{"action": "publish", "publish": {
        "topic": "u", "payload": "${len(}"}}]})) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: bus.publish("bad/topic", {})) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: bus.publish("big", {"blob": "x" * (1024 * 1024 + 1)})) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    # a topic nobody publishes to yet is allowed: it exists from its first event or handler
    assert bus.register({**good, "name": "early", "event": "not.yet"})["event"] == "not.yet"
    names = [h.name for h in bus.call("ListEventHandlers", pb.ListEventHandlersRequest(topic="not.yet")).handlers]
    assert names == ["early"]
    assert bus.call("RemoveEventHandler", pb.RemoveEventHandlerRequest(name="early")).removed
    # retention per topic
    info = bus.call("ConfigureTopic", pb.ConfigureTopicRequest(topic="short", max_len=10))
    assert info.max_len == 10
    for n in range(300):
        bus.publish("short", {"n": n})
    assert 10 <= bus.call("GetTopic", pb.GetTopicRequest(topic="short")).length < 300
    assert bus.call("GetTopic", pb.GetTopicRequest(topic="other")).max_len == 100_000
    # one handler's action fails (its workflow is not registered): dead-lettered with the reason;
    # the other handler of the same topic is unaffected
    bus.register({"name": "broken", "event": "mixed", "actions": [
        {"action": "start_workflow", "start_workflow": {"name": "nope"}}]})
    bus.register({"name": "fine", "event": "mixed", "actions": [
        {"action": "start_workflow", "start_workflow": {"name": "ingest", "correlationId": "${$.payload.tag}"}}]})
    tag = f"mixed-{uuid.uuid4().hex[:6]}"
    event_id = bus.publish("mixed", {"tag": tag})
    wait_until(lambda: by_correlation(raw, node.cluster, tag), what="the good handler's start")
    letter = wait_until(lambda: [e["payload"] for e in bus.read("deadletter") if e["payload"]["eventId"] == event_id],
                        what="the dead letter")[0]
    assert letter["handler"] == "broken" and "nope" in letter["reason"] and letter["payload"] == {"tag": tag}


# ---------------------------------------------------------------- failover during a burst

@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(name="events", etcd_members=1, node_ports=[0, 0, 0], lease_ttl_s=2.0, workers=0,
                               log_level="INFO")
    with LocalCluster(tmp_path, settings).start(workers=False) as running:
        yield running


def test_sigkill_of_leader_and_follower_during_a_burst_starts_each_workflow_once(cluster: LocalCluster) -> None:
    client = WorkflowClient(cluster.endpoints, timeout_s=15.0)
    bus = Bus(cluster.endpoints)
    assert cluster.redis is not None
    raw = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    prefix = "wfo:events"
    try:
        wait_for_leader(client, 30.0)
        client.register_workflow_def(INGEST)
        bus.register({"name": "ingest_all", "event": "burst", "redeliverAfterSeconds": 1, "maxDeliveries": 20,
                      "actions": [{"action": "start_workflow", "start_workflow": {
                          "name": "ingest", "input": {"n": "${$.payload.n}"}}}]})
        total = 2000   # published at once: the handler's group exists from its registration
        published: list[str] = []
        failed: list[int] = []

        def publish_all() -> None:
            for n in range(total):
                try:
                    published.append(bus.publish("burst", {"n": n}))
                except grpc.RpcError:
                    failed.append(n)

        publisher = threading.Thread(target=publish_all)
        started = time.monotonic()
        publisher.start()
        wait_until(lambda: len(published) >= 500, 30.0, "500 published")
        leader = wait_for_leader(client)["leader_id"]
        cluster.nodes[leader].signal(signal.SIGKILL)
        wait_until(lambda: len(published) >= 1200, 30.0, "1200 published")
        follower = next(n for n, p in cluster.nodes.items() if n != leader and p.alive()
                        and n != wait_for_leader(client, not_id=leader)["leader_id"])
        cluster.nodes[follower].signal(signal.SIGKILL)
        publisher.join(60)
        stream = Keys(prefix).events("burst")

        def settled() -> bool:
            groups = {g["name"]: g for g in raw.xinfo_groups(stream)}
            group = groups["ingest_all"]
            return bool(group["pending"] == 0 and group["last-delivered-id"]
                        == cast(DecodedEntries, raw.xrevrange(stream, count=1))[0][0])
        wait_until(settled, 40.0, "every event handled")
        elapsed = time.monotonic() - started
        events = [entry_id for entry_id, _ in cast(DecodedEntries, raw.xrange(stream))]
        # Publishing is at-least-once: a publish whose answer was lost with its node is sent again,
        # so the topic may hold a few more events than were acknowledged, never fewer.
        assert failed == [] and len(published) == total and set(published) <= set(events)
        assert total <= len(events) <= total + 5
        # every event started exactly one workflow: one idempotency key per event, one workflow per key
        layout = Keys(prefix)
        keys = [started_by_key(raw, layout, f"event:ingest_all:{event_id}") for event_id in events]
        assert all(keys), f"{sum(1 for k in keys if not k)} events started no workflow"
        assert len(set(keys)) == len(events)
        assert len(index_members(raw, layout, "name", "ingest")) == len(events)
        print(f"\n2000 events, 2 nodes SIGKILLed: all handled in {elapsed:.1f} s")
    finally:
        raw.close()
        bus.close()
        client.close()
