"""The gRPC API of one real node (real etcd, real Redis), method by method, errors included."""

from __future__ import annotations

import json
import queue
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from helpers import register_sequence, unique, wait_for_status
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import ClientError, task


def status_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.code


def test_task_definitions_register_get_list(node):
    client = node.client
    name = unique("fetch")
    stored = client.register_task_def({"name": name, "retryCount": 5, "retryLogic": "EXPONENTIAL_BACKOFF"})
    assert stored["definition"]["retryCount"] == 5
    assert stored["definition"]["responseTimeoutSeconds"] == 60  # defaults filled in
    assert client.get_task_def(name)["definition"]["retryLogic"] == "EXPONENTIAL_BACKOFF"
    assert name in [d["name"] for d in client.list_task_defs()]


def test_bad_task_definitions_are_refused_with_the_field_named(node):
    with pytest.raises(ClientError) as err:
        node.client.register_task_def({"name": unique("x"), "retryLogic": "SOMETIMES"})
    assert status_of(err) == "INVALID_ARGUMENT" and "'retryLogic' must be one of" in str(err.value)
    with pytest.raises(ClientError) as err:
        node.client.get_task_def("no_such_task_def")
    assert status_of(err) == "NOT_FOUND" and "no_such_task_def" in str(err.value)


def test_workflow_definitions_versions_yaml_and_validation(node):
    client = node.client
    name, task_name = unique("wf"), unique("t")
    register_sequence(client, name, [task_name])
    second = {"name": name, "version": 2, "tasks": [{"name": task_name, "taskReferenceName": "only"}]}
    client.register_workflow_def(second)
    assert client.get_workflow_def(name)["version"] == 2
    assert client.get_workflow_def(name, 1)["version"] == 1
    assert [d["version"] for d in client.list_workflow_defs(name)] == [1, 2]

    yaml_doc = f"name: {name}_yaml\ntasks:\n  - name: {task_name}\n    taskReferenceName: a\n"
    stub = pb_grpc.MetadataServiceStub(grpc.insecure_channel(node.endpoint))
    registered = stub.RegisterWorkflowDef(pb.RegisterWorkflowDefRequest(source=pb.DefinitionSource(document=yaml_doc)))
    assert registered.name == f"{name}_yaml" and registered.version == 1

    broken = {"name": unique("broken"), "tasks": [
        {"name": task_name, "taskReferenceName": "a", "inputParameters": {"x": "${ghost.output.y}"}},
        {"name": "unregistered", "taskReferenceName": "b"}]}
    valid, errors = client.validate_workflow_def(broken)
    assert not valid
    assert any("task 'a' (tasks[0])" in e and "ghost" in e for e in errors)
    assert any("task 'b' (tasks[1])" in e and "no task definition named 'unregistered'" in e for e in errors)
    with pytest.raises(ClientError) as err:
        client.register_workflow_def(broken)
    assert status_of(err) == "INVALID_ARGUMENT"
    with pytest.raises(ClientError) as err:   # validation and a refused registration wrote nothing
        client.get_workflow_def(broken["name"])
    assert status_of(err) == "NOT_FOUND"


def test_malformed_yaml_document_is_invalid_argument(node):
    stub = pb_grpc.MetadataServiceStub(grpc.insecure_channel(node.endpoint))
    with pytest.raises(grpc.RpcError) as err:
        stub.RegisterWorkflowDef(pb.RegisterWorkflowDefRequest(source=pb.DefinitionSource(document="{a: [")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "neither valid JSON nor valid YAML" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.RegisterWorkflowDef(pb.RegisterWorkflowDefRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_start_errors_change_nothing(node):
    client = node.client
    with pytest.raises(ClientError) as err:
        client.start_workflow("never_registered", {})
    assert status_of(err) == "NOT_FOUND" and "register it first" in str(err.value)

    name, task_name = unique("wf"), unique("t")
    register_sequence(client, name, [task_name])
    with pytest.raises(ClientError) as err:
        client.start_workflow(name, {"blob": "x" * (1024 * 1024 + 10)})
    assert status_of(err) == "RESOURCE_EXHAUSTED" and "limit is 1048576 bytes" in str(err.value)
    with pytest.raises(ClientError) as err:   # beyond the gRPC message limit itself
        client.start_workflow(name, {"blob": "x" * (5 * 1024 * 1024)})
    assert status_of(err) == "RESOURCE_EXHAUSTED"
    found, _ = client.search_workflows(name=name)
    assert found == []


def test_idempotent_start_returns_the_first_workflow(node):
    client = node.client
    name, task_name = unique("wf"), unique("t")
    register_sequence(client, name, [task_name])
    first = client.start_workflow(name, {"n": 1}, idempotency_key="order-42")
    again = client.start_workflow(name, {"n": 1}, idempotency_key="order-42")
    assert first == again
    assert len(client.search_workflows(name=name)[0]) == 1


def test_three_step_workflow_runs_end_to_end_with_a_worker(node, run_worker):
    client = node.client
    name = unique("order")
    types = [unique("fetch"), unique("charge"), unique("receipt")]
    for t in types:
        client.register_task_def({"name": t, "retryCount": 0})
    client.register_workflow_def({
        "name": name,
        "tasks": [
            {"name": types[0], "taskReferenceName": "order", "inputParameters": {"id": "${workflow.input.id}"}},
            {"name": types[1], "taskReferenceName": "payment",
             "inputParameters": {"amount": "${order.output.amount}", "items": "${order.output.items}"}},
            {"name": types[2], "taskReferenceName": "receipt",
             "inputParameters": {"text": "paid ${payment.output.charged} for order ${workflow.input.id}"}},
        ],
        "outputParameters": {"charged": "${payment.output.charged}", "text": "${receipt.output.text}"},
    })

    @task(types[0])
    def fetch(data: dict) -> dict:
        return {"amount": 40, "items": ["a", "b"], "id": data["id"]}

    @task(types[1])
    async def charge(data: dict) -> dict:
        return {"charged": data["amount"] * len(data["items"])}

    @task(types[2])
    def receipt(data: dict) -> dict:
        return {"text": data["text"]}

    run_worker([node.endpoint], [fetch, charge, receipt])
    workflow_id = client.start_workflow(name, {"id": 7}, correlation_id="customer-1")
    done = wait_for_status(client, workflow_id, "COMPLETED")
    assert done["output"] == {"charged": 80, "text": "paid 80 for order 7"}
    assert [t["reference_name"] for t in done["tasks"]] == ["order", "payment", "receipt"]
    assert all(t["status"] == "COMPLETED" and t.get("attempt", 0) == 0 for t in done["tasks"])
    assert done["tasks"][1]["input"] == {"amount": 40, "items": ["a", "b"]}


def newest_first(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Search order: creation time, newest first; workflows started in the same millisecond (a fast
    node starts several in one) in descending id order, as the index keeps them, not start order."""
    return sorted(found, key=lambda w: (w["created_at_ms"], w["workflow_id"]), reverse=True)


def test_search_filters_and_pages(node, run_worker):
    client = node.client
    name, task_name = unique("wf"), unique("t")
    register_sequence(client, name, [task_name])
    ids = [client.start_workflow(name, {"n": i}, correlation_id="batch-a" if i < 3 else "batch-b")
           for i in range(5)]
    page, token = client.search_workflows(name=name, limit=2)
    assert len(page) == 2 and token
    rest, token2 = client.search_workflows(name=name, limit=10, page_token=token)
    assert token2 == "" or token2 is None
    assert {w["workflow_id"] for w in page + rest} == set(ids)
    assert page + rest == newest_first(page + rest)
    batch_a, _ = client.search_workflows(correlation_id="batch-a")
    assert {w["workflow_id"] for w in batch_a} == set(ids[:3])
    running, _ = client.search_workflows(name=name, status="RUNNING")
    assert len(running) == 5
    with pytest.raises(ClientError) as err:
        client.search_workflows(status="SLEEPING")
    assert status_of(err) == "INVALID_ARGUMENT"
    with pytest.raises(ClientError) as err:
        client.search_workflows(page_token="not-a-token")
    assert status_of(err) == "INVALID_ARGUMENT"


def test_a_workflow_started_between_two_pages_repeats_nothing_and_skips_nothing(node: Any) -> None:
    """Search paging used an offset, so a workflow started between two pages repeated an item (issue 8)."""
    flow = unique("paged")
    register_sequence(node.client, flow, [unique("unserved")])   # no worker: every workflow stays RUNNING
    first = [node.client.start_workflow(flow, {"n": i}) for i in range(5)]
    page_one, token = node.client.search_workflows(name=flow, limit=2)
    late = node.client.start_workflow(flow, {"n": 5})             # newest first: would shift an offset by one
    rest: list[dict[str, Any]] = []
    while token:
        page, token = node.client.search_workflows(name=flow, limit=2, page_token=token)
        rest += page
    found = page_one + rest
    seen = [w["workflow_id"] for w in found]
    assert sorted(seen) == sorted(first), seen                    # each once
    assert found == newest_first(found), found
    assert late not in seen


def test_terminate_cancels_queued_task_and_refuses_twice(node, run_worker):
    client = node.client
    name, task_name = unique("wf"), unique("t")
    register_sequence(client, name, [task_name])
    workflow_id = client.start_workflow(name, {"n": 1})
    deadline = time.monotonic() + 10
    while not client.get_workflow(workflow_id)["tasks"]:   # no worker yet: the task waits in its queue
        assert time.monotonic() < deadline
        time.sleep(0.02)
    terminated = client.terminate_workflow(workflow_id, "customer cancelled")
    assert terminated["status"] == "TERMINATED" and terminated["reason"] == "customer cancelled"
    with pytest.raises(ClientError) as err:
        client.terminate_workflow(workflow_id)
    assert status_of(err) == "FAILED_PRECONDITION" and "already ended as TERMINATED" in str(err.value)
    with pytest.raises(ClientError) as err:
        client.terminate_workflow("no-such-workflow")
    assert status_of(err) == "NOT_FOUND"

    ran = []

    @task(task_name)
    def handler(data: dict) -> dict:
        ran.append(data)
        return {}

    run_worker([node.endpoint], [handler])
    cancelled = wait_for_status(client, workflow_id, "TERMINATED")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cancelled["tasks"][0]["status"] != "CANCELED":
        time.sleep(0.05)
        cancelled = client.get_workflow(workflow_id)
    assert cancelled["tasks"][0]["status"] == "CANCELED"
    # a workflow started now queues its task behind the cancelled one: once the worker has run it,
    # it had its chance at the cancelled task, and never got it
    later = client.start_workflow(name, {"n": 2})
    wait_for_status(client, later, "COMPLETED")
    assert ran == [{"n": 2}]


def test_get_unknown_workflow_is_not_found(node):
    with pytest.raises(ClientError) as err:
        node.client.get_workflow("does-not-exist")
    assert status_of(err) == "NOT_FOUND" and "does-not-exist" in str(err.value)


def test_cluster_status_of_a_single_node(node):
    status = node.client.cluster_status()
    assert status["role"] == "LEADER" and status["leader_id"] == "solo"
    assert int(status["epoch"]) > 0
    assert [m["node_id"] for m in status["members"]] == ["solo"]


def test_health_and_reflection_are_on(node):
    channel = grpc.insecure_channel(node.endpoint)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(
        service="orchestrator.v1.WorkflowService")).status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"orchestrator.v1.WorkflowService", "orchestrator.v1.TaskService", "orchestrator.v1.MetadataService",
            "orchestrator.v1.ClusterService", "grpc.health.v1.Health"} <= services


def test_worker_stream_requires_hello(node):
    stub = pb_grpc.TaskServiceStub(grpc.insecure_channel(node.endpoint))
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Connect(iter([pb.WorkerMessage(credit=pb.Credit(count=1))])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "hello" in err.value.details()


def test_malformed_task_output_fails_the_task_terminally(node):
    """A raw stream sends output that is not a JSON object: the attempt fails with a clear reason."""
    client = node.client
    name, task_name = unique("wf"), unique("t")
    register_sequence(client, name, [task_name], retryCount=3)
    workflow_id = client.start_workflow(name, {"n": 1})
    stub = pb_grpc.TaskServiceStub(grpc.insecure_channel(node.endpoint))
    requests: list[pb.WorkerMessage] = [pb.WorkerMessage(hello=pb.WorkerHello(
        worker_id="raw", task_types=[task_name], capacity=1))]
    outbox: queue.Queue = queue.Queue()
    outbox.put(requests[0])
    responses = stub.Connect(iter(outbox.get, None))
    assignment = next(responses).task
    assert json.loads(assignment.input_json) == {"n": 1}
    outbox.put(pb.WorkerMessage(result=pb.TaskResult(
        workflow_id=assignment.workflow_id, task_id=assignment.task_id,
        status=pb.TaskResult.COMPLETED, output_json=b"[1, 2]")))
    ack = next(responses).result_ack
    assert ack.accepted and "must be a JSON object" in ack.detail
    outbox.put(None)
    failed = wait_for_status(client, workflow_id, "FAILED")
    assert failed["tasks"][0]["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert "must be a JSON object" in failed["reason"]
