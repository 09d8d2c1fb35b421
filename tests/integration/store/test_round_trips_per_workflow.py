"""The round trips to Redis a workflow costs when many run at once (issue 21): two real nodes of
one cluster on a Redis of this module's own, 32 three-step workflows in flight. Redis counts the
reads it makes from its clients' sockets (INFO stats `total_reads_processed`): one per command or
pipeline a node writes, whatever that pipeline holds. The script calls and reads of one loop turn
share one pipeline, so under load a workflow costs a few of them, not one per call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devtools.procs import EtcdCluster
from helpers import BackgroundWorker, execute_alternately, two_nodes_on_their_own_redis
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
    with two_nodes_on_their_own_redis(tmp_path_factory.mktemp("round_trips"), etcd.endpoints,
                                      f"rt{uuid.uuid4().hex[:8]}") as (redis_url, endpoints, clients):
        clients[0].register_task_def({"name": NOOP, "retryCount": 0})
        clients[0].register_workflow_def({"name": THREE_NOOPS, "tasks": [
            {"name": NOOP, "taskReferenceName": ref} for ref in ("a", "b", "c")]})
        background = BackgroundWorker(Worker(endpoints=[endpoints[1]], handlers=[noop], concurrency=IN_FLIGHT * 2))
        try:
            yield redis_url, clients
        finally:
            background.stop()


def _run(clients: list[WorkflowClient], count: int) -> None:
    """`count` workflows, IN_FLIGHT at a time, started alternately through each node."""
    execute_alternately(clients, THREE_NOOPS, count, IN_FLIGHT)


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
