"""Starts and publishes over streams (StartWorkflows, PublishEvents), on real nodes: what the SDK's
client sends every start and publish on (worker/_item_stream.py, orchestrator/api/item_streams.py),
the wire contract, refusals one by one, and a node killed or stopped under it."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from helpers import running_nodes, unique
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import ClientError, WorkflowClient


def _register(client: WorkflowClient) -> str:
    """A workflow whose one task nobody serves: each start creates it and queues that task."""
    name = unique("streamed")
    client.register_task_def({"name": f"{name}_task"})
    client.register_workflow_def({"name": name, "tasks": [{"name": f"{name}_task", "taskReferenceName": "only"}]})
    return name


def _in_threads(count: int, work: Any) -> list[Any]:
    """`work(i)` for i in range(count), from 8 threads at once; what each returned or raised."""
    results: list[Any] = [None] * count

    def run(offset: int) -> None:
        for i in range(offset, count, 8):
            try:
                results[i] = work(i)
            except Exception as exc:   # collected for the test to look at
                results[i] = exc
    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_starts_from_many_threads_go_on_one_stream_and_each_creates_one_workflow(node: Any) -> None:
    name = _register(node.client)
    with WorkflowClient([node.endpoint], streams=True) as client:
        ids = _in_threads(200, lambda i: client.start_workflow(name, {"i": i}, idempotency_key=f"{name}-{i}"))
        assert all(isinstance(one, str) for one in ids), [one for one in ids if not isinstance(one, str)][:3]
        assert len(set(ids)) == 200
        assert client.streamed_starts == 200   # none went as a unary call
        again = client.start_workflow(name, {"i": 7}, idempotency_key=f"{name}-7")
        assert again == ids[7]                 # a key seen before answers the first workflow, on the stream too
        assert client.streamed_starts == 201
    for i in (0, 99, 199):
        workflow = node.client.get_workflow(ids[i])
        assert workflow["name"] == name and workflow["input"] == {"i": i} and workflow["status"] == "RUNNING"


def test_a_start_refused_on_the_stream_fails_alone(node: Any) -> None:
    name = _register(node.client)
    with WorkflowClient([node.endpoint], streams=True) as client:
        results = _in_threads(60, lambda i: client.start_workflow(name if i % 3 else f"{name}_missing", {"i": i}))
        refused = [results[i] for i in range(0, 60, 3)]
        started = [results[i] for i in range(60) if i % 3]
        assert all(isinstance(one, ClientError) and one.code == "NOT_FOUND" and f"{name}_missing" in str(one)
                   for one in refused), refused[:3]
        assert all(isinstance(one, str) for one in started) and len(set(started)) == 40
        assert client.streamed_starts == 40
        with pytest.raises(ClientError) as bad_input:
            client.start_workflow(name, {"big": "x" * (2 * 1024 * 1024)})
        assert bad_input.value.code == "RESOURCE_EXHAUSTED" and "the limit is" in str(bad_input.value)
        assert isinstance(client.start_workflow(name, {"i": "after"}), str)   # the stream goes on
        assert client.streamed_starts == 41


def test_the_stream_answers_each_start_by_its_id_and_ends_once_all_are_answered(node: Any) -> None:
    name = _register(node.client)
    key = uuid.uuid4().hex
    messages = [pb.StartWorkflowsRequest(starts=[
                    pb.StartItem(id=11, start=pb.StartWorkflowRequest(name=name, idempotency_key=key)),
                    pb.StartItem(id=12, start=pb.StartWorkflowRequest(name=""))]),
                pb.StartWorkflowsRequest(starts=[
                    pb.StartItem(id=13, start=pb.StartWorkflowRequest(name=name, idempotency_key=key))])]
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = pb_grpc.WorkflowServiceStub(channel)
        answers = {item.id: item for response in stub.StartWorkflows(iter(messages), timeout=20)
                   for item in response.started}
        assert sorted(answers) == [11, 12, 13]
        assert answers[11].code == 0 and answers[11].workflow_id
        assert answers[12].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "name" in answers[12].message
        assert answers[13].code == 0 and answers[13].workflow_id == answers[11].workflow_id
        assert {answers[11].created, answers[13].created} == {True, False}

        too_many = pb.StartWorkflowsRequest(starts=[pb.StartItem(id=i, start=pb.StartWorkflowRequest(name=""))
                                                    for i in range(1001)])
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.StartWorkflows(iter([too_many]), timeout=20))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1000" in (refused.value.details() or "")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_starts_on_a_stream_to_a_node_killed_under_them_fail_over_and_none_is_lost_or_doubled(
        tmp_path: Path, etcd: Any, redis_server: Any, sig: signal.Signals) -> None:
    """SIGTERM: the node ends its streams before its server's grace (`ItemStreams.close`), so the
    client is on the other node while the stopping one still finishes its own work."""
    cluster = f"t{uuid.uuid4().hex[:8]}"
    with running_nodes(tmp_path, etcd.endpoints, cluster, ["s1", "s2"], redis_server.url) as (endpoints, clients,
                                                                                                processes):
        name = _register(clients[0])
        stop = threading.Event()
        started: dict[str, str] = {}
        failures: list[Exception] = []
        with WorkflowClient(endpoints, timeout_s=20.0, streams=True) as client:
            def keep_starting(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    key = f"{name}-{worker}-{n}"
                    try:
                        started[key] = client.start_workflow(name, {"n": n}, idempotency_key=key)
                    except ClientError as exc:
                        failures.append(exc)
                    n += 1
            threads = [threading.Thread(target=keep_starting, args=(w,)) for w in range(6)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)
            assert client.streamed_starts > 0
            streamed_before = client.streamed_starts
            processes[0].signal(sig)   # the node the client's stream is on (its first endpoint)
            time.sleep(2.0)
            stop.set()
            for thread in threads:
                thread.join(30)
            assert failures == []
            assert client.streamed_starts > streamed_before   # the stream was opened again, on the other node
            if sig == signal.SIGTERM:
                processes[0].wait(10)   # it exits (subprocess.TimeoutExpired if not)
        assert len(set(started.values())) == len(started)
        assert _all_of(clients[1], name) == set(started.values())   # one workflow per key: none lost, none doubled


def test_publishes_from_many_threads_go_on_one_stream_each_once(node: Any) -> None:
    topic = unique("streamed.topic")
    with WorkflowClient([node.endpoint], streams=True) as client:
        ids = _in_threads(120, lambda i: client.publish_event(topic, {"i": i}, key=f"k{i}"))
        assert all(isinstance(one, str) for one in ids), [one for one in ids if not isinstance(one, str)][:3]
        assert client.streamed_publishes == 120
        refused = _in_threads(16, lambda i: client.publish_event(topic if i % 2 else "bad topic!", {"i": i}))
        assert all(isinstance(refused[i], ClientError) and refused[i].code == "INVALID_ARGUMENT"
                   for i in range(0, 16, 2)), refused[:2]
        assert all(isinstance(refused[i], str) for i in range(1, 16, 2))
        assert client.streamed_publishes == 128
    stored = node.client.read_events(topic, limit=1000)
    assert sorted(event["event_id"] for event in stored) == sorted([*ids, *refused[1::2]])
    assert sorted(event["payload"]["i"] for event in stored[:120]) == list(range(120))
    assert {event["key"] for event in stored[:120]} == {f"k{i}" for i in range(120)}


def test_publishes_answer_by_id_on_the_wire(node: Any) -> None:
    topic = unique("wire.topic")
    message = pb.PublishEventsRequest(events=[
        pb.PublishItem(id=5, event=pb.PublishEventRequest(topic=topic, key="a")),
        pb.PublishItem(id=6, event=pb.PublishEventRequest(topic="")),
        pb.PublishItem(id=7, event=pb.PublishEventRequest(topic=topic, key="b"))])
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = pb_grpc.EventServiceStub(channel)
        answers = {item.id: item for response in stub.PublishEvents(iter([message]), timeout=20)
                   for item in response.published}
    assert sorted(answers) == [5, 6, 7]
    assert answers[6].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "topic" in answers[6].message
    stored = node.client.read_events(topic)
    assert {(event["event_id"], event["key"]) for event in stored} == {(answers[5].event_id, "a"),
                                                                       (answers[7].event_id, "b")}


def test_by_default_only_calls_that_overlap_go_on_the_stream(node: Any) -> None:
    name = _register(node.client)
    with WorkflowClient([node.endpoint]) as client:
        for i in range(20):   # one at a time: each a call of its own, answered without a hand-over
            client.start_workflow(name, {"i": i})
            client.publish_event(unique("alone"), {"i": i})
        assert (client.streamed_starts, client.streamed_publishes) == (0, 0)
        started = _in_threads(200, lambda i: client.start_workflow(name, {"i": i}))
        assert all(isinstance(one, str) for one in started) and len(set(started)) == 200
        assert client.streamed_starts > 0   # eight threads at once: some on the stream
    with WorkflowClient([node.endpoint], streams=False) as client:
        _in_threads(40, lambda i: client.start_workflow(name, {"i": i}))
        assert client.streamed_starts == 0


def _all_of(client: WorkflowClient, name: str) -> set[str]:
    """The ids of every workflow named `name`, page by page."""
    ids: set[str] = set()
    token = ""
    while True:
        page, token = client.search_workflows(name=name, limit=100, page_token=token)
        ids.update(workflow["workflow_id"] for workflow in page)
        if not token:
            return ids
