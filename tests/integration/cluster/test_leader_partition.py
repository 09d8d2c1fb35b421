"""A leader cut off from Redis, but not from etcd, hands its clocks over (issue 19).

Three nodes, each reaching Redis through its own TCP proxy (devtools/netproxy.py); the leader's link
goes silent for CUT_S in both directions while its etcd lease is kept alive: a one-sided partition
(a firewall rule, a broken route, a NIC queue). Redis commands on it neither fail nor answer, as on
a black-holed link; when the link comes back, what was sent arrives, as TCP's retransmissions would
deliver it. Meanwhile workflows worker task -> WAIT 1 s -> worker task are started at a steady rate
on the two other nodes, whose worker runs the tasks.

Before the bound (`leader_redis_timeout_s`), the cut leader kept leading for the whole cut: no
WAIT timer fired anywhere and the WAITs due in the cut lasted until it ended. Now the leader
resigns once a clock pass cannot complete within the bound, the next node's clocks run, and no
WAIT is late by more than TTL + 2 s; the cut node stands for election again once Redis answers it.
Nothing is lost or done twice.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools.drill import SteadyLoad
from devtools.local_cluster import start_node, wait_for_leader
from devtools.netproxy import NetProxy
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port
from helpers import BackgroundWorker, wait_for_status
from redis_mode import start_test_redis
from worker import Worker, WorkflowClient, task

TTL_S = 2.0
CUT_S = 8.0
LOAD_PER_S = 10.0
WAIT_MS = 1000
LATE_MS = int(TTL_S * 1000) + 2000
NODES = ("node-1", "node-2", "node-3")


@task("partition_step")
def partition_step(data: dict[str, Any]) -> dict[str, Any]:
    return {"n": data.get("n")}


@dataclass
class Cluster:
    redis: RedisServer
    proxies: dict[str, NetProxy] = field(default_factory=dict)
    nodes: dict[str, ManagedProcess] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def cluster(tmp_path: Path, etcd: EtcdCluster) -> Iterator[Cluster]:
    running = Cluster(start_test_redis(tmp_path / "redis"))
    name = f"cut{uuid.uuid4().hex[:8]}"
    try:
        for node_id in NODES:
            proxy = running.proxies[node_id] = NetProxy(running.redis.port).start()
            port = free_port()
            running.nodes[node_id] = start_node(
                tmp_path / "logs", node_id=node_id, port=port, redis_url=f"redis://{proxy.address}/0",
                etcd_endpoints=etcd.endpoints, cluster=name, lease_ttl_s=TTL_S, http_port=0)
            running.endpoints[node_id] = f"127.0.0.1:{port}"
            if node_id == NODES[0]:   # it leads: the others queue behind it
                with WorkflowClient([running.endpoints[node_id]]) as first:
                    assert wait_for_leader(first, 20.0)["leader_id"] == node_id
        yield running
    finally:
        for proxy in running.proxies.values():
            proxy.release()
        for process in running.nodes.values():
            process.stop()
        for proxy in running.proxies.values():
            proxy.stop()
        running.redis.stop()


def _register(client: WorkflowClient) -> str:
    name = f"cut_{uuid.uuid4().hex[:6]}"
    client.register_task_def({"name": "partition_step", "retryCount": 2, "responseTimeoutSeconds": 10})
    client.register_workflow_def({"name": name, "tasks": [
        {"name": "partition_step", "taskReferenceName": "first", "inputParameters": {"n": "${workflow.input.n}"}},
        {"name": "pause", "taskReferenceName": "pause", "type": "WAIT",
         "inputParameters": {"duration": f"{WAIT_MS // 1000} seconds"}},
        {"name": "partition_step", "taskReferenceName": "second", "inputParameters": {"n": "${first.output.n}"}},
    ]})
    return name


def test_a_leader_cut_off_from_redis_hands_its_clocks_over(cluster: Cluster) -> None:
    cut, healthy = NODES[0], [cluster.endpoints[n] for n in NODES[1:]]
    client = WorkflowClient(healthy, timeout_s=10.0)
    background = BackgroundWorker(Worker(endpoints=healthy, handlers=[partition_step], concurrency=16))
    try:
        wait_for_leader(client, 20.0, members=3)
        name = _register(client)
        with SteadyLoad(client, name, LOAD_PER_S) as load:
            time.sleep(2.0)
            cut_at = time.monotonic()
            cluster.proxies[cut].hold()   # both ways: silence, no error
            try:
                new_leader = wait_for_leader(client, CUT_S, not_id=cut)["leader_id"]
            except TimeoutError:
                new_leader = None
            took_over_s = time.monotonic() - cut_at
            time.sleep(max(0.0, CUT_S - took_over_s))
            cluster.proxies[cut].release()
            time.sleep(1.0)
        finished = [wait_for_status(client, workflow_id, {"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"},
                                    timeout_s=60.0) for workflow_id in load.started]
    finally:
        background.stop()
        client.close()
    assert len(finished) >= LOAD_PER_S * (CUT_S + 2.0) * 0.8, len(finished)
    problems = [f"{w['workflow_id']}: {w['status']} {w.get('reason', '')}" for w in finished
                if w["status"] != "COMPLETED"]
    assert problems == []
    waits, repeated = [], []
    for workflow in finished:
        pause = next(t for t in workflow["tasks"] if t["reference_name"] == "pause")
        waits.append(pause["ended_at_ms"] - pause["started_at_ms"])
        repeated += [t["task_id"] for t in workflow["tasks"] if t.get("attempt", 0) > 0]
    late = sorted(w - WAIT_MS for w in waits)
    print(f"\nnew leader {new_leader} {took_over_s:.1f} s after the cut; {len(waits)} WAITs, late by median "
          f"{statistics.median(late)} ms, max {late[-1]} ms; {sum(x > LATE_MS for x in late)} over {LATE_MS} ms")
    assert new_leader is not None, f"{cut} kept leading for the whole cut ({CUT_S} s)"
    assert min(waits) >= WAIT_MS
    assert late[-1] <= LATE_MS, f"a WAIT of {WAIT_MS} ms lasted {late[-1] + WAIT_MS} ms (cut {CUT_S} s)"
    assert repeated == []   # nothing ran twice
    log = cluster.nodes[cut].log_path.read_text()
    assert "resigning so that a node that reaches Redis leads" in log, log[-3000:]
    deadline = time.monotonic() + 10.0   # and it stands again once Redis answers it
    while "standing for election again" not in log and time.monotonic() < deadline:
        time.sleep(0.2)
        log = cluster.nodes[cut].log_path.read_text()
    assert "Redis answers this node again" in log and "standing for election again" in log, log[-3000:]
