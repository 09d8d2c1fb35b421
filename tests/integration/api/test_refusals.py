"""Bounded sizes and honest refusals (issue 12): each case is refused with its status and writes
nothing, or fails only the task it concerns; answers never outgrow a message. Real node, real
workers, raw gRPC where the SDK would refuse first."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from assertions import scrape, series
from helpers import BackgroundWorker, unique, wait_for_status
from orchestrator_api.structs import to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import ClientError, Worker, task


@pytest.fixture(scope="module")
def flow(node: Any) -> Any:
    """A one-task workflow whose worker answers whatever `answer` the input names."""
    task_name, name = unique("answer"), unique("answering")
    node.client.register_task_def({"name": task_name, "retryCount": 0})
    node.client.register_workflow_def({"name": name, "tasks": [
        {"name": task_name, "taskReferenceName": "ask", "inputParameters": {"answer": "${workflow.input.answer}"}}]})
    answers = {"deep": _nested(600), "huge_int": {"n": 10**400}, "fine": {"ok": True}}

    @task(task_name)
    def answer(data: dict[str, Any]) -> Any:
        return answers[data["answer"]]

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[answer], concurrency=4))
    yield node, name
    background.stop()


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return {"a": value}


def _stub(node: Any) -> Any:
    return pb_grpc.WorkflowServiceStub(grpc.insecure_channel(node.endpoint, options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", 64 * 1024 * 1024)]))


def test_the_payload_limit_counts_bytes_not_characters(flow: Any) -> None:
    node, name = flow
    euros = "€" * 400_000          # 400,000 characters, 1.2 MB of UTF-8
    with pytest.raises(ClientError) as refused:
        node.client.start_workflow(name, {"answer": "fine", "text": euros})
    assert refused.value.code == "RESOURCE_EXHAUSTED" and "1200" in str(refused.value)


def test_a_huge_id_is_refused_without_being_echoed(flow: Any) -> None:
    node, _ = flow
    stub = _stub(node)
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetWorkflow(pb.GetWorkflowRequest(workflow_id="x" * 1_000_000))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(refused.value.details()) < 300


def test_integers_beyond_2_53_and_bad_page_tokens_are_refused(flow: Any) -> None:
    node, name = flow
    with pytest.raises(ClientError) as refused:
        node.client.start_workflow(name, {"answer": "fine", "id": 2**60})
    assert refused.value.code == "INVALID_ARGUMENT" and "2^53" in str(refused.value)
    with pytest.raises(ClientError) as token:
        node.client.search_workflows(name=name, page_token="123456789012345678901")
    assert token.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("answer,why", [("deep", "nested deeper than 30"), ("huge_int", "beyond 2^53")])
def test_a_worker_output_the_api_could_not_carry_fails_its_task_and_the_workflow_stays_readable(
        flow: Any, answer: str, why: str) -> None:
    node, name = flow
    done = node.client.execute_workflow(name, {"answer": answer}, wait_s=20)
    assert done["status"] == "FAILED"
    [ask] = done["tasks"]
    assert ask["status"] == "FAILED_WITH_TERMINAL_ERROR" and why in ask["reason"]
    assert node.client.get_workflow(done["workflow_id"])["status"] == "FAILED"   # readable


def test_a_signal_after_terminate_is_refused_and_stored_nowhere(node: Any) -> None:
    name = unique("waits")
    node.client.register_workflow_def({"name": name, "tasks": [
        {"name": "wait", "taskReferenceName": "wait", "type": "WAIT"}]})
    workflow_id = node.client.start_workflow(name, {})
    deadline = time.monotonic() + 10
    while not node.client.get_workflow(workflow_id)["tasks"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node.client.terminate_workflow(workflow_id, "enough")
    with pytest.raises(ClientError) as refused:
        node.client.signal_task(workflow_id, "wait", output={"late": True})
    assert refused.value.code == "FAILED_PRECONDITION"
    [wait] = node.client.get_workflow(workflow_id)["tasks"]
    assert wait["status"] == "CANCELED" and not wait.get("output", {}).get("late")


def test_answers_never_outgrow_a_message(flow: Any) -> None:
    """Five workflows with 0.9 MB inputs each: a search answer would be 4.5 MB; it is cut to
    fit, the biggest fields replaced by a marker saying what was left out."""
    node, name = flow
    big = "x" * 900_000
    started = [node.client.start_workflow(name, {"answer": "fine", "blob": big}) for _ in range(5)]
    for workflow_id in started:
        wait_for_status(node.client, workflow_id, "COMPLETED")
    found, _ = node.client.search_workflows(name=name, limit=20)
    ours = [w for w in found if w["workflow_id"] in started]
    assert len(ours) == 5
    cut = [w for w in ours if "_truncated" in w["input"]]
    assert cut and "bytes not shown" in cut[0]["input"]["_truncated"]
    assert node.client.get_workflow(started[0])["input"]["blob"] == big   # alone it fits


def test_a_worker_that_never_reads_cannot_hoard_a_task_type(node: Any) -> None:
    """A stream announcing a capacity of 2^31-1 that never reads its messages gets only what its
    stream can buffer; the leases of those expire and a healthy worker finishes everything."""
    task_name, name = unique("hoarded"), unique("hoarding")
    node.client.register_task_def({"name": task_name, "retryCount": 3, "retryDelaySeconds": 0,
                                   "responseTimeoutSeconds": 1})
    node.client.register_workflow_def({"name": name, "tasks": [{"name": task_name, "taskReferenceName": "t"}]})
    channel = grpc.insecure_channel(node.endpoint)
    hello = pb.WorkerMessage(hello=pb.WorkerHello(worker_id="hoarder", task_types=[task_name], capacity=2**31 - 1))

    def hoarder_requests() -> Any:
        yield hello
        time.sleep(3600)

    stream = pb_grpc.TaskServiceStub(channel).Connect(hoarder_requests())   # never iterated: never reads
    url = f"http://{node.http_address}"

    def workers_connected() -> float:
        return scrape(url).get(("orchestrator_workers_connected", frozenset({("task_type", task_name)})), 0.0)

    deadline = time.monotonic() + 10
    while workers_connected() < 1:   # the hoarder is in place before any task is queued
        assert time.monotonic() < deadline, "the hoarding stream never connected"
        time.sleep(0.05)

    @task(task_name)
    def healthy(data: dict[str, Any]) -> dict[str, Any]:
        return {"by": "healthy"}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[healthy], concurrency=8))
    try:
        deadline = time.monotonic() + 10
        while workers_connected() < 2:
            assert time.monotonic() < deadline, "the healthy worker never connected"
            time.sleep(0.05)
        assert series(scrape(url), "orchestrator_worker_credits", task_type=task_name) == 256 + 8   # 256 at most
        started = [node.client.start_workflow(name, {}) for _ in range(40)]
        done = [wait_for_status(node.client, workflow_id, "COMPLETED", timeout_s=30) for workflow_id in started]
    finally:
        background.stop()
        stream.cancel()
        channel.close()
    attempts = [t for workflow in done for t in workflow["tasks"]]
    hoarded = [t for t in attempts if t["worker_id"] == "hoarder"]
    # the hoarder was sent tasks (it was in play), not all of them, and lost each to its lease
    assert 0 < len(hoarded) < 40 and {t["status"] for t in hoarded} == {"TIMED_OUT"}, hoarded
    assert all(workflow["tasks"][-1]["worker_id"] != "hoarder" for workflow in done)


def test_json_and_yaml_tricks_are_invalid_arguments_that_write_nothing(node: Any) -> None:
    stub = pb_grpc.MetadataServiceStub(grpc.insecure_channel(node.endpoint))
    name = unique("tricky")
    documents = [
        f"name: {name}\ntasks:\n  - {{name: x, taskReferenceName: a, type: NOOP, inputParameters: {{1: a}}}}\n",
        f"name: {name}\ncreated: 2024-01-01\ntasks: [{{name: x, taskReferenceName: a, type: NOOP}}]\n",
        f"name: {name}\nblob: !!binary aGVsbG8=\ntasks: [{{name: x, taskReferenceName: a, type: NOOP}}]\n",
        json.dumps({"name": name, "tasks": [{"name": "x", "taskReferenceName": "a", "type": "NOOP",
                                             "inputParameters": _nested(200)}]}),
        '{"name": "' + name + '", "tasks": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps({"name": [name], "tasks": [{"name": "x", "taskReferenceName": "a", "type": "NOOP"}]}),
    ]
    for document in documents:
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterWorkflowDef(pb.RegisterWorkflowDefRequest(source=pb.DefinitionSource(document=document)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (document[:80], refused.value.details())
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetWorkflowDef(pb.GetWorkflowDefRequest(name=name))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND   # refused means nothing written
    structured = to_struct({"name": name, "tasks": [{"name": "x", "taskReferenceName": "a", "type": "NOOP"}],
                            "timeoutSeconds": float("inf")})
    with pytest.raises(grpc.RpcError) as infinite:
        stub.RegisterWorkflowDef(pb.RegisterWorkflowDefRequest(source=pb.DefinitionSource(definition=structured)))
    assert infinite.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_resolved_input_over_the_limit_fails_its_workflow_with_the_reason(node: Any) -> None:
    """Five outputs of 0.9 MB each are fine; a task whose input maps all five (4.5 MB) is not."""
    task_name, name = unique("blob"), unique("gather")
    node.client.register_task_def({"name": task_name, "retryCount": 0})
    steps = [{"name": task_name, "taskReferenceName": f"s{i}"} for i in range(5)]
    node.client.register_workflow_def({"name": name, "tasks": [*steps, {
        "name": task_name, "taskReferenceName": "all",
        "inputParameters": {f"s{i}": f"${{s{i}.output.blob}}" for i in range(5)}}]})

    @task(task_name)
    def blob(data: dict[str, Any]) -> dict[str, Any]:
        return {"blob": "y" * 900_000}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[blob], concurrency=2))
    try:
        done = node.client.execute_workflow(name, {}, wait_s=30)
    finally:
        background.stop()
    assert done["status"] == "FAILED"
    assert "the input of a task would be" in done["reason"] and "over the limit" in done["reason"]
    assert [t["reference_name"] for t in done["tasks"]] == [f"s{i}" for i in range(5)]   # "all" never stored


def test_a_definition_snapshot_is_stored_once_for_all_its_workflows(node: Any) -> None:
    import asyncio

    from orchestrator.store.redis import RedisStore

    name = unique("shared")
    node.client.register_workflow_def({"name": name, "description": "d" * 50_000, "tasks": [
        {"name": "wait", "taskReferenceName": "wait", "type": "WAIT"}]})
    started = [node.client.start_workflow(name, {}) for _ in range(20)]

    async def sizes() -> tuple[set[str], list[int]]:
        store = RedisStore.from_url(node.redis_url, f"wfo:{node.cluster}")
        try:
            digests = {await store._redis.hget(store.keys.workflow(w), "snap") for w in started}
            usage = [await store._redis.memory_usage(store.keys.workflow(w)) for w in started]
            return digests, usage
        finally:
            await store.close()

    digests, usage = asyncio.run(sizes())
    assert len(digests) == 1            # one snapshot, referred to by all twenty
    assert max(usage) < 10_000          # not 50 KB of description each
    for workflow_id in started:
        node.client.terminate_workflow(workflow_id, "done")
