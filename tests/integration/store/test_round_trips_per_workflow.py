"""The round trips to Redis a workflow costs when many run at once (issue 21): two real nodes of
one cluster on a Redis of this module's own, 32 three-step workflows in flight. Redis counts the
reads it makes from its clients' sockets (INFO stats `total_reads_processed`): one per command or
pipeline a node writes, whatever that pipeline holds. The script calls and reads of one loop turn
share one pipeline, so under load a workflow costs a few of them, not one per call."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port, start_redis
from helpers import BackgroundWorker
from worker import Worker, WorkflowClient, task

NOOP, THREE_NOOPS = "rt_noop", "rt_three_noops"
IN_FLIGHT, WORKFLOWS = 32, 320
# Measured 3.3 to 3.7 reads per workflow here with the loop turn's pipeline; 7.8 to 8.2 when only
# STEP and COMPLETE_TASK were coalesced (claims, heartbeats, starts, loads one call each).
MAX_READS_PER_WORKFLOW = 5.5


@task(NOOP)
def noop(data: dict[str, Any]) -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster) -> Iterator[tuple[str, list[WorkflowClient]]]:
    folder = tmp_path_factory.mktemp("round_trips")
    server: RedisServer = start_redis(folder / "redis")
    name = f"rt{uuid.uuid4().hex[:8]}"
    processes: list[ManagedProcess] = []
    clients: list[WorkflowClient] = []
    background: BackgroundWorker | None = None
    try:
        endpoints = []
        for node_id in ("plain", "serving"):
            port = free_port()
            processes.append(start_node(Path(folder / node_id), node_id=node_id, port=port, redis_url=server.url,
                                        etcd_endpoints=etcd.endpoints, cluster=name, lease_ttl_s=2.0,
                                        http_port=0, log_level="WARNING"))
            endpoints.append(f"127.0.0.1:{port}")
            clients.append(WorkflowClient([endpoints[-1]]))
        wait_for_leader(clients[0], 20.0)
        clients[0].register_task_def({"name": NOOP, "retryCount": 0})
        clients[0].register_workflow_def({"name": THREE_NOOPS, "tasks": [
            {"name": NOOP, "taskReferenceName": ref} for ref in ("a", "b", "c")]})
        background = BackgroundWorker(Worker(endpoints=[endpoints[1]], handlers=[noop], concurrency=IN_FLIGHT * 2))
        yield server.url, clients
    finally:
        if background is not None:
            background.stop()
        for client in clients:
            client.close()
        for process in processes:
            process.stop()
        server.stop()


def _run(clients: list[WorkflowClient], count: int) -> None:
    """`count` workflows, IN_FLIGHT at a time, started alternately through each node."""
    left = [count]
    lock = threading.Lock()
    failures: list[str] = []

    def starter() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
                client = clients[left[0] % 2]
            status = client.execute_workflow(THREE_NOOPS, {})["status"]
            if status != "COMPLETED":
                failures.append(status)

    threads = [threading.Thread(target=starter) for _ in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []


def test_many_workflows_at_once_cost_a_few_round_trips_each(cluster: tuple[str, list[WorkflowClient]]) -> None:
    url, clients = cluster
    _run(clients, IN_FLIGHT * 2)   # warm: scripts loaded, snapshots cached, workers connected
    with redis.Redis.from_url(url, decode_responses=True) as client:
        before = int(client.info("stats")["total_reads_processed"])
        _run(clients, WORKFLOWS)
        time.sleep(0.2)   # the last acknowledgements and sweeps of the run
        after = int(client.info("stats")["total_reads_processed"])
    reads = (after - before - 1) / WORKFLOWS   # less the INFO of this test's own
    assert reads <= MAX_READS_PER_WORKFLOW, f"{reads:.2f} round trips per workflow"
