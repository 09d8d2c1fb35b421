"""Conductor's REST API as its SDKs read it (issue 18): integer fields of its models come back as
integers on every route (the definitions used to come back as `"timeoutSeconds": 0.0`), and an
error body says whether a retry can help (`retryable`) and, for a fault of the node, which node
(its trace is in that node's log). One real node over raw HTTP; a second one on a Redis of its
own, stopped under it, for the answer when the store is gone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import unique, wait_for_status
from orchestrator.store.redis.keys import Keys, cluster_prefix
from redis_mode import start_test_redis
from worker import ClientError, WorkflowClient


@pytest.fixture(scope="module")
def http(node: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=15.0) as client:
        yield client


def integral_floats(value: Any, path: str = "") -> list[str]:
    """Where a JSON answer holds a whole number written as a float (`0.0`)."""
    if isinstance(value, float) and value.is_integer():
        return [f"{path or '.'} = {value!r}"]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in integral_floats(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in integral_floats(item, f"{path}[{i}]")]
    return []


def read(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    value = answer.json()
    assert integral_floats(value) == [], (answer.request.url, integral_floats(value))
    return value


def test_integer_fields_are_integers_on_every_route(http: httpx.Client, node: Any) -> None:
    name, task_type = unique("typed"), unique("typed_t")
    assert http.post("/metadata/taskdefs", json=[{"name": task_type, "retryCount": 2, "retryDelaySeconds": 3,
                                                  "responseTimeoutSeconds": 30, "timeoutSeconds": 0,
                                                  "concurrentExecLimit": 5}]).status_code == 200
    assert http.post("/metadata/workflow", json={
        "name": name, "version": 1, "schemaVersion": 2, "timeoutSeconds": 0,
        "tasks": [{"name": task_type, "taskReferenceName": "work", "type": "SIMPLE",
                   "inputParameters": {"n": "${workflow.input.n}"}},
                  {"name": "pause", "taskReferenceName": "pause", "type": "WAIT",
                   "inputParameters": {"duration": "1 s"}}]}).status_code == 200

    definition = read(http.get(f"/metadata/workflow/{name}"))
    assert definition["timeoutSeconds"] == 0 and type(definition["timeoutSeconds"]) is int, definition
    assert type(definition["version"]) is int and type(definition["schemaVersion"]) is int
    task_def = read(http.get(f"/metadata/taskdefs/{task_type}"))
    for field, value in (("retryCount", 2), ("retryDelaySeconds", 3), ("responseTimeoutSeconds", 30),
                         ("timeoutSeconds", 0), ("concurrentExecLimit", 5)):
        assert task_def[field] == value and type(task_def[field]) is int, (field, task_def)
    read(http.get("/metadata/workflow"))
    read(http.get("/metadata/taskdefs"))

    started = http.post("/workflow", json={"name": name, "input": {"n": 7}})
    assert started.status_code == 200, started.text
    workflow_id = started.text
    [task] = read(http.get(f"/tasks/poll/batch/{task_type}", params={"workerid": "w1", "timeout": 5000}))
    assert type(task["responseTimeoutSeconds"]) is int and type(task["retryCount"]) is int, task
    assert task["inputData"] == {"n": 7} and type(task["inputData"]["n"]) is int, task
    assert http.post("/tasks", json={"taskId": task["taskId"], "workflowInstanceId": workflow_id, "workerId": "w1",
                                     "status": "COMPLETED", "outputData": {"count": 3}}).status_code == 200
    wait_for_status(node.client, workflow_id, "COMPLETED")
    workflow = read(http.get(f"/workflow/{workflow_id}"))
    assert type(workflow["workflowVersion"]) is int and workflow["tasks"][0]["outputData"] == {"count": 3}
    read(http.get(f"/workflow/{workflow_id}/status", params={"includeOutput": "true", "includeVariables": "true"}))
    read(http.get("/workflow/search", params={"query": f"workflowType = {name}"}))


# ------------------------------------------------------------ errors: retryable, and which node


def test_refusals_no_retry_can_fix_are_not_retryable(http: httpx.Client) -> None:
    for method, path, status in (("GET", "/workflow/no-such-workflow", 404),
                                 ("GET", "/tasks/some-task-id", 501),
                                 ("GET", "/metadata/workflow/x?version=minus-one", 400),
                                 ("DELETE", "/metadata/taskdefs/x", 405)):
        answer = http.request(method, path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["retryable"] is False, (path, answer.json())


def poison(node: Any) -> str:
    """A workflow whose stored hash no node can read: every read of it fails inside the node."""
    workflow_id = uuid.uuid4().hex
    with redis.Redis.from_url(node.redis_url) as store:
        store.hset(Keys(cluster_prefix(node.cluster)).workflow(workflow_id), mapping={"m": "{not json"})
    return workflow_id


def test_an_internal_error_names_the_node_and_is_not_retryable(http: httpx.Client, node: Any) -> None:
    workflow_id = poison(node)
    answer = http.get(f"/workflow/{workflow_id}")
    assert answer.status_code == 500, answer.text
    body = answer.json()
    assert body["retryable"] is False, body
    assert "node solo" in body["message"] and "not in the request" in body["message"], body
    with pytest.raises(ClientError) as raised:
        node.client.get_workflow(workflow_id)
    assert raised.value.code == "INTERNAL" and "node solo" in raised.value.message, raised.value


def test_an_unreachable_store_is_retryable(tmp_path: Path, etcd: Any) -> None:
    own_redis = start_test_redis(tmp_path / "redis")
    port, http_port = free_port(), free_port()
    process = start_node(tmp_path, node_id="storeless", port=port, redis_url=own_redis.url,
                         etcd_endpoints=etcd.endpoints, cluster=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                         http_port=http_port)
    try:
        with WorkflowClient([f"127.0.0.1:{port}"]) as client:
            wait_for_leader(client, 20.0)
        own_redis.stop()
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}/api", timeout=30.0) as http:
            answer = http.get("/metadata/taskdefs")
        assert answer.status_code == 503, answer.text
        assert answer.json()["retryable"] is True, answer.json()
        assert json.loads(answer.text)["status"] == 503
    finally:
        process.stop()
        own_redis.stop()
