"""A task a Conductor poller takes over REST costs no reload of its workflow when the poller
reports to the node it polled (issue 21): the poll's claim answers with the workflow as the claim
left it, and the node decides the update from that. One real node with its Conductor API on a
Redis of this module's own, so INFO commandstats counts its work alone; the poller is raw HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, free_port
from redis_mode import start_test_redis
from worker import WorkflowClient

WORKFLOWS = 30
STEPS = 3
# Reads of a workflow's hash (HMGET or HGETALL) per three-step workflow run by the poller: for each
# task, the claim reads it once and the update's step once: 6.0. Before the poll's claim answered
# with the workflow, every update was decided after a reload too: 9.0.
MAX_READS_PER_WORKFLOW = 6.5


@pytest.fixture(scope="module")
def conductor_api(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster) -> Iterator[tuple[str, httpx.Client]]:
    folder = tmp_path_factory.mktemp("rest_reloads")
    server = start_test_redis(folder / "redis")
    port, http_port = free_port(), free_port()
    node = start_node(folder / "node", node_id="rest", port=port, redis_url=server.url,
                      etcd_endpoints=etcd.endpoints, cluster=f"rr{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                      http_port=http_port, log_level="WARNING")
    try:
        with WorkflowClient([f"127.0.0.1:{port}"]) as client:
            wait_for_leader(client, 20.0)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}/api", timeout=15.0) as http:
            yield server.url, http
    finally:
        node.stop()
        server.stop()


def _run_one(http: httpx.Client, name: str, task_type: str) -> str:
    """Start a workflow and work its tasks through poll and update until it ends."""
    started = http.post("/workflow", json={"name": name, "input": {}})
    assert started.status_code == 200, started.text
    workflow_id = started.text
    for _ in range(STEPS):
        polled = http.get(f"/tasks/poll/batch/{task_type}", params={"workerid": "rest-poller", "count": 1,
                                                                    "timeout": 5000})
        assert polled.status_code == 200, polled.text
        [task] = polled.json()
        assert task["workflowInstanceId"] == workflow_id
        updated = http.post("/tasks", json={"taskId": task["taskId"], "workflowInstanceId": workflow_id,
                                            "workerId": "rest-poller", "status": "COMPLETED",
                                            "outputData": {"ok": True}})
        assert updated.status_code == 200, updated.text
    return workflow_id


def _commands(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def test_a_polled_task_is_decided_without_a_reload(conductor_api: tuple[str, httpx.Client]) -> None:
    redis_url, http = conductor_api
    name, task_type = f"rr_{uuid.uuid4().hex[:6]}", f"rr_t_{uuid.uuid4().hex[:6]}"
    assert http.post("/metadata/taskdefs", json=[{"name": task_type, "retryCount": 0,
                                                  "responseTimeoutSeconds": 30}]).status_code == 200
    assert http.post("/metadata/workflow", json={
        "name": name, "version": 1, "schemaVersion": 2,
        "tasks": [{"name": task_type, "taskReferenceName": f"s{i}", "type": "SIMPLE"}
                  for i in range(STEPS)]}).status_code == 200
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        _run_one(http, name, task_type)   # warm: scripts loaded, definitions cached
        before = _commands(client)
        started = [_run_one(http, name, task_type) for _ in range(WORKFLOWS)]
        after = _commands(client)
    ours = {command: (calls - before.get(command, 0)) / WORKFLOWS for command, calls in after.items()
            if command != "info"}
    shown: dict[str, Any] = {command: round(value, 2) for command, value in sorted(ours.items(), key=lambda kv: -kv[1])
                             if value >= 0.01}
    reads = ours.get("hgetall", 0.0) + ours.get("hmget", 0.0)
    assert reads <= MAX_READS_PER_WORKFLOW, f"{reads:.2f} reads of the workflow: {shown}"
    ended = http.get(f"/workflow/{started[-1]}", params={"includeTasks": True}).json()
    assert ended["status"] == "COMPLETED"
    assert [t["referenceTaskName"] for t in ended["tasks"]] == [f"s{i}" for i in range(STEPS)]
