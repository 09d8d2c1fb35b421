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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port
from helpers import BackgroundWorker, index_members, unique, wait_for_status
from orchestrator.cluster import failpoints
from orchestrator.store.redis.keys import Keys, cluster_prefix
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


@dataclass
class Drill:
    client: WorkflowClient   # to the steady node
    node: ManagedProcess     # the doomed node
    doomed: str              # its endpoint
    flow: str                # the workflow to start
    keys: Keys               # the cluster's keys (its audit streams of ended workflows among them)


@contextmanager
def doomed_with_a_worker(refs: tuple[str, ...], point: str, tmp_path: Path, etcd: EtcdCluster,
                         redis_server: RedisServer, steady: tuple[str, str],
                         monkeypatch: pytest.MonkeyPatch) -> Iterator[Drill]:
    """A workflow of one step per ref, and a node armed to die at `point` whose worker talks to it
    first (then to the steady node)."""
    steady_endpoint, cluster = steady
    task_type, flow = unique("kill"), unique("kill_flow")
    with WorkflowClient([steady_endpoint], timeout_s=20.0) as client:
        assert wait_for_leader(client, 20.0)["leader_id"] == "steady"
        client.register_task_def({"name": task_type, "retryCount": 2, "retryDelaySeconds": 0,
                                  "responseTimeoutSeconds": LEASE_S})
        client.register_workflow_def({"name": flow, "tasks": [
            {"name": task_type, "taskReferenceName": ref, "inputParameters": {"ref": ref}} for ref in refs]})
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
            yield Drill(client, node, doomed, flow, Keys(cluster_prefix(cluster)))
        finally:
            worker.stop()
            node.stop()


def completed_after_the_kill(drill: Drill, workflow_id: str, point: str) -> dict[str, Any]:
    """The workflow once it ended, after the doomed node died at `point`; it must have COMPLETED."""
    ended = wait_for_status(drill.client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=40.0)
    deadline = time.monotonic() + 5   # (before the reply, the node dies 0.2 s after its step)
    while drill.node.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert drill.node.returncode == -signal.SIGKILL, f"the node did not die at {point}: {drill.node.returncode}"
    assert ended["status"] == "COMPLETED", ended
    return ended


def ends_recorded(audit: redis.Redis, drill: Drill, workflow_id: str) -> list[str]:
    """The ends of the workflow the audit stream holds (exactly one, COMPLETED, is right)."""
    # decode_responses=True: ids and fields are str (redis-py types them as bytes or str)
    stream = drill.keys.ended(drill.keys.partition_of(workflow_id))
    entries = cast("list[tuple[str, dict[str, str]]]", audit.xrange(stream))
    return [fields["st"] for _, fields in entries if fields["wf"] == workflow_id]


@pytest.mark.parametrize("point", failpoints.POINTS)
def test_a_node_killed_at_any_point_of_a_step_loses_nothing(
        point: str, tmp_path: Path, etcd: EtcdCluster, redis_server: RedisServer, steady: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    with doomed_with_a_worker(("one", "two", "three"), point, tmp_path, etcd, redis_server, steady,
                              monkeypatch) as drill:
        workflow_id = drill.client.start_workflow(drill.flow, {})
        ended = completed_after_the_kill(drill, workflow_id, point)
        attempts = [(t["reference_name"], t["status"]) for t in ended["tasks"]]
        if point == failpoints.STEP_BEFORE_PUSH:   # "two" was handed over, never pushed: its lease ran out
            assert attempts == [("one", "COMPLETED"), ("two", "TIMED_OUT"), ("two", "COMPLETED"),
                                ("three", "COMPLETED")], attempts
        else:   # nothing was handed over unpushed: every step ran once
            assert attempts == [("one", "COMPLETED"), ("two", "COMPLETED"), ("three", "COMPLETED")], attempts
        assert [t["output"] for t in ended["tasks"] if t["status"] == "COMPLETED"] == [
            {"done": ref} for ref in ("one", "two", "three")]
        with redis.Redis(port=redis_server.port, decode_responses=True) as audit:
            assert ends_recorded(audit, drill, workflow_id) == ["COMPLETED"], "the workflow did not end exactly once"


@pytest.mark.parametrize("point", failpoints.START_POINTS)
def test_a_node_killed_at_any_point_of_a_start_loses_nothing(
        point: str, tmp_path: Path, etcd: EtcdCluster, redis_server: RedisServer, steady: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A start is created and decided in one script by the node that got it, its first task handed
    to that node's worker (`Decider.start`). Killed before the script, nothing is written and the
    client's retry (same idempotency key) starts it on the other node; killed before the push, the
    first task's lease runs out and it runs again; killed before the reply, the task was pushed and
    runs once. Each time the client gets one id, and that workflow completes, exactly once."""
    with doomed_with_a_worker(("one", "two"), point, tmp_path, etcd, redis_server, steady, monkeypatch) as drill:
        with WorkflowClient([drill.doomed, steady[0]], timeout_s=20.0) as starter:
            workflow_id = starter.start_workflow(drill.flow, {}, idempotency_key=unique("start"))
        ended = completed_after_the_kill(drill, workflow_id, point)
        attempts = [(t["reference_name"], t["status"]) for t in ended["tasks"]]
        if point == failpoints.START_BEFORE_PUSH:   # "one" was handed over, never pushed: its lease ran out
            assert attempts == [("one", "TIMED_OUT"), ("one", "COMPLETED"), ("two", "COMPLETED")], attempts
        else:
            assert attempts == [("one", "COMPLETED"), ("two", "COMPLETED")], attempts
        with redis.Redis(port=redis_server.port, decode_responses=True) as audit:
            cluster = steady[1]
            started = index_members(audit, Keys(cluster_prefix(cluster)), "name", drill.flow)
            assert started == [workflow_id], "the start was made twice"
            assert ends_recorded(audit, drill, workflow_id) == ["COMPLETED"], "the workflow did not end exactly once"
