"""A node SIGKILLed at any point of a step loses nothing (issue 21).

A step is a worker's result decided and applied in one script by the node that got it
(`Decider.step`). Three points, each a failpoint (orchestrator/cluster/failpoints.py) armed in a
node of its own that the worker talks to first; a second node leads and stays:
- before the script: the result is not stored; the worker re-sends it to the other node;
- before the push: the result is stored and the next task handed to the worker's identity, but
  never pushed; its lease expires and the attempt is run again;
- before the reply: the next task is pushed, the result's acknowledgement never sent; the worker
  re-sends the result (a duplicate, acknowledged) and finishes the task it was pushed.
Each time the workflow completes, exactly once, with every step completed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port
from helpers import BackgroundWorker, unique, wait_for_status
from orchestrator.cluster import failpoints
from worker import Worker, WorkflowClient, task

LEASE_S = 2   # responseTimeoutSeconds of the steps: a task handed over but never pushed is run again soon


@pytest.fixture
def steady(tmp_path: Path, etcd: EtcdCluster, redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    """The node that stays (it leads: it starts first), and the cluster's name."""
    cluster, port = unique("kills"), free_port()
    node = start_node(tmp_path / "steady", node_id="steady", port=port, redis_url=redis_server.url,
                      etcd_endpoints=etcd.endpoints, cluster=cluster, lease_ttl_s=2.0)
    try:
        yield f"127.0.0.1:{port}", cluster
    finally:
        node.stop()


def doomed_node(tmp_path: Path, etcd: EtcdCluster, redis_server: RedisServer, cluster: str, point: str,
                monkeypatch: pytest.MonkeyPatch) -> tuple[ManagedProcess, str]:
    port = free_port()
    with monkeypatch.context() as env:
        env.setenv("ORCHESTRATOR_FAILPOINTS", point)
        node = start_node(tmp_path / "doomed", node_id="doomed", port=port, redis_url=redis_server.url,
                          etcd_endpoints=etcd.endpoints, cluster=cluster, lease_ttl_s=2.0)
    return node, f"127.0.0.1:{port}"


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_a_node_killed_at_any_point_of_a_step_loses_nothing(
        point: str, tmp_path: Path, etcd: EtcdCluster, redis_server: RedisServer, steady: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    steady_endpoint, cluster = steady
    task_type, flow = unique("step_kill"), unique("step_kill_flow")
    with WorkflowClient([steady_endpoint], timeout_s=20.0) as client:
        assert wait_for_leader(client, 20.0)["leader_id"] == "steady"
        client.register_task_def({"name": task_type, "retryCount": 2, "retryDelaySeconds": 0,
                                  "responseTimeoutSeconds": LEASE_S})
        client.register_workflow_def({"name": flow, "tasks": [
            {"name": task_type, "taskReferenceName": ref, "inputParameters": {"ref": ref}}
            for ref in ("one", "two", "three")]})
        node, doomed = doomed_node(tmp_path, etcd, redis_server, cluster, point, monkeypatch)

        @task(task_type)
        def work(data: dict[str, str]) -> dict[str, str]:
            return {"done": data["ref"]}

        worker = BackgroundWorker(Worker(endpoints=[doomed, steady_endpoint], handlers=[work], concurrency=4))
        try:
            deadline = time.monotonic() + 10
            while worker.worker.current_endpoint != doomed:   # the worker talks to the doomed node first
                assert time.monotonic() < deadline, "the worker never connected to the doomed node"
                time.sleep(0.05)
            workflow_id = client.start_workflow(flow, {})
            ended = wait_for_status(client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=40.0)
            deadline = time.monotonic() + 5   # (before the reply, the node dies 0.2 s after its step)
            while node.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert node.returncode == -signal.SIGKILL, f"the node did not die at {point}: {node.returncode}"
            assert ended["status"] == "COMPLETED", ended
            attempts = [(t["reference_name"], t["status"]) for t in ended["tasks"]]
            if point == failpoints.STEP_BEFORE_PUSH:   # "two" was handed over, never pushed: its lease ran out
                assert attempts == [("one", "COMPLETED"), ("two", "TIMED_OUT"), ("two", "COMPLETED"),
                                    ("three", "COMPLETED")], attempts
            else:   # nothing was handed over unpushed: every step ran once
                assert attempts == [("one", "COMPLETED"), ("two", "COMPLETED"), ("three", "COMPLETED")], attempts
            assert [t["output"] for t in ended["tasks"] if t["status"] == "COMPLETED"] == [
                {"done": ref} for ref in ("one", "two", "three")]
            audit = redis.Redis(port=redis_server.port, decode_responses=True)
            # decode_responses=True: ids and fields are str (redis-py types them as bytes or str)
            entries = cast("list[tuple[str, dict[str, str]]]", audit.xrange(f"wfo:{cluster}:ended"))
            audit.close()
            assert [fields["st"] for _, fields in entries if fields["wf"] == workflow_id] == ["COMPLETED"], \
                "the workflow did not end exactly once"
        finally:
            worker.stop()
            node.stop()


@pytest.mark.parametrize("point", failpoints.START_POINTS)
def test_a_node_killed_at_any_point_of_a_start_loses_nothing(
        point: str, tmp_path: Path, etcd: EtcdCluster, redis_server: RedisServer, steady: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A start is created and decided in one script by the node that got it, its first task handed
    to that node's worker (`Decider.start`). Killed before the script, nothing is written and the
    client's retry (same idempotency key) starts it on the other node; killed before the push, the
    first task's lease runs out and it runs again; killed before the reply, the task was pushed and
    runs once. Each time the client gets one id, and that workflow completes, exactly once."""
    steady_endpoint, cluster = steady
    task_type, flow = unique("start_kill"), unique("start_kill_flow")
    with WorkflowClient([steady_endpoint], timeout_s=20.0) as client:
        assert wait_for_leader(client, 20.0)["leader_id"] == "steady"
        client.register_task_def({"name": task_type, "retryCount": 2, "retryDelaySeconds": 0,
                                  "responseTimeoutSeconds": LEASE_S})
        client.register_workflow_def({"name": flow, "tasks": [
            {"name": task_type, "taskReferenceName": ref, "inputParameters": {"ref": ref}} for ref in ("one", "two")]})
        node, doomed = doomed_node(tmp_path, etcd, redis_server, cluster, point, monkeypatch)

        @task(task_type)
        def work(data: dict[str, str]) -> dict[str, str]:
            return {"done": data["ref"]}

        worker = BackgroundWorker(Worker(endpoints=[doomed, steady_endpoint], handlers=[work], concurrency=4))
        try:
            deadline = time.monotonic() + 10
            while worker.worker.current_endpoint != doomed:   # the worker talks to the doomed node first
                assert time.monotonic() < deadline, "the worker never connected to the doomed node"
                time.sleep(0.05)
            with WorkflowClient([doomed, steady_endpoint], timeout_s=20.0) as starter:
                workflow_id = starter.start_workflow(flow, {}, idempotency_key=unique("start"))
            ended = wait_for_status(client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=40.0)
            deadline = time.monotonic() + 5
            while node.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert node.returncode == -signal.SIGKILL, f"the node did not die at {point}: {node.returncode}"
            assert ended["status"] == "COMPLETED", ended
            attempts = [(t["reference_name"], t["status"]) for t in ended["tasks"]]
            if point == failpoints.START_BEFORE_PUSH:   # "one" was handed over, never pushed: its lease ran out
                assert attempts == [("one", "TIMED_OUT"), ("one", "COMPLETED"), ("two", "COMPLETED")], attempts
            else:
                assert attempts == [("one", "COMPLETED"), ("two", "COMPLETED")], attempts
            audit = redis.Redis(port=redis_server.port, decode_responses=True)
            entries = cast("list[tuple[str, dict[str, str]]]", audit.xrange(f"wfo:{cluster}:ended"))
            started = cast("list[str]", audit.zrange(f"wfo:{cluster}:idx:name:{flow}", 0, -1))
            audit.close()
            assert started == [workflow_id], "the start was made twice"
            assert [fields["st"] for _, fields in entries if fields["wf"] == workflow_id] == ["COMPLETED"], \
                "the workflow did not end exactly once"
        finally:
            worker.stop()
            node.stop()
