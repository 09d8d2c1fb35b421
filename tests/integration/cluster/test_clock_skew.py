"""One node's clock far off the others' (Debian's faketime on that node's process) stops nobody.

Deadlines one node writes are compared by another (the leader's reaper, its timers), so every
node works on Redis's clock (core/clock.py, cluster/clock_sync.py). Before that, a follower 30 s
behind failed every task it leased ("lease expired: no heartbeat or result within 5000 ms" for
300 ms tasks). Each case: two nodes, one skewed, the worker on the skewed one, workflows
worker task -> WAIT 1 s -> worker task started on the other: all complete, each task in one
attempt, and the WAIT lasts its second (never early, at most TTL + 2 s late)."""

from __future__ import annotations


import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.faketime import remove_leftovers, shifted, sweep_leftovers
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port
from helpers import BackgroundWorker, wait_for_status
from worker import Worker, WorkflowClient, task

TTL_S = 2.0
WORKFLOWS = 10
WAIT_MS = 1000
LATE_MS = int(TTL_S * 1000) + 2000




@task("skew_step")
def skew_step(data: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.3)
    return {"n": data.get("n")}


@dataclass
class Skewed:
    endpoint: str        # the skewed node's gRPC address
    plain: str           # the other node's
    metrics_url: str     # the skewed node's /metrics
    skew_s: float        # how far its clock is off (negative: behind)


def _node(tmp: Path, name: str, etcd: EtcdCluster, redis_server: RedisServer, cluster: str,
          skew: str | None) -> tuple[ManagedProcess, str, str]:
    port, http_port = free_port(), free_port()
    process = start_node(tmp / name, node_id=name, port=port, redis_url=redis_server.url,
                         etcd_endpoints=etcd.endpoints, cluster=cluster, lease_ttl_s=TTL_S, http_port=http_port,
                         prefix=shifted(skew) if skew else None)
    return process, f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}/metrics"


@pytest.fixture
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path, etcd: EtcdCluster,
              redis_server: RedisServer) -> Iterator[Skewed]:
    """`request.param` = (skew, whether the skewed node leads)."""
    skew, skewed_leads = request.param
    cluster = f"skew{uuid.uuid4().hex[:8]}"
    started: list[ManagedProcess] = []
    sweep_leftovers()
    try:
        order = [("skewed", skew), ("plain", None)] if skewed_leads else [("plain", None), ("skewed", skew)]
        endpoints: dict[str, str] = {}
        metrics: dict[str, str] = {}
        for name, node_skew in order:
            process, endpoints[name], metrics[name] = _node(tmp_path, name, etcd, redis_server, cluster, node_skew)
            started.append(process)
            if not endpoints.keys() - {name}:   # the first one: let it lead before the second starts
                with WorkflowClient([endpoints[name]]) as first:
                    assert wait_for_leader(first, 20.0)["leader_id"] == name
        yield Skewed(endpoints["skewed"], endpoints["plain"], metrics["skewed"], float(skew.rstrip("s")))
    finally:
        for process in started:
            process.stop()
            remove_leftovers(process.pid)


@pytest.mark.parametrize("two_nodes", [("-30s", False), ("+30s", False), ("-30s", True), ("-6s", False)],
                         ids=["follower-30s-behind", "follower-30s-ahead", "leader-30s-behind",
                              "follower-6s-behind"], indirect=True)
def test_a_skewed_node_fails_nothing_and_timers_keep_their_time(two_nodes: Skewed) -> None:
    skewed, plain = two_nodes.endpoint, two_nodes.plain
    name = f"skew_{uuid.uuid4().hex[:6]}"
    with WorkflowClient([plain]) as client:
        client.register_task_def({"name": "skew_step", "retryCount": 2, "responseTimeoutSeconds": 5})
        client.register_workflow_def({"name": name, "tasks": [
            {"name": "skew_step", "taskReferenceName": "first", "inputParameters": {"n": "${workflow.input.n}"}},
            {"name": "pause", "taskReferenceName": "pause", "type": "WAIT",
             "inputParameters": {"duration": f"{WAIT_MS // 1000} seconds"}},
            {"name": "skew_step", "taskReferenceName": "second", "inputParameters": {"n": "${first.output.n}"}},
        ]})
        background = BackgroundWorker(Worker(endpoints=[skewed], handlers=[skew_step], concurrency=16))
        try:
            ids = [client.start_workflow(name, {"n": i}) for i in range(WORKFLOWS)]
            finished = [wait_for_status(client, workflow_id, {"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"},
                                        timeout_s=60.0) for workflow_id in ids]
        finally:
            background.stop()
    problems = [f"{w['workflow_id']}: {w['status']} {w.get('reason', '')}" for w in finished
                if w["status"] != "COMPLETED"]
    assert problems == []
    for workflow in finished:
        tasks = workflow["tasks"]
        steps = [t for t in tasks if t["task_type"] == "skew_step"]
        assert [(t["reference_name"], t["attempt"], t["status"]) for t in steps] == [
            ("first", 0, "COMPLETED"), ("second", 0, "COMPLETED")], steps
        pause = next(t for t in tasks if t["reference_name"] == "pause")
        waited = pause["ended_at_ms"] - pause["started_at_ms"]
        assert WAIT_MS <= waited <= WAIT_MS + LATE_MS, f"the WAIT of {workflow['workflow_id']} lasted {waited} ms"

    # the node knows how far off it is: Redis's clock is ahead of it by minus its skew
    families = text_string_to_metric_families(httpx.get(two_nodes.metrics_url, timeout=10).text)
    [offset] = [sample.value for family in families if family.name == "orchestrator_clock_offset_seconds"
                for sample in family.samples]
    assert abs(offset + two_nodes.skew_s) < 1.0, offset
