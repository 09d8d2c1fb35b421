"""A graceful stop (SIGTERM) of the node a worker is connected to costs no task attempt.

Two nodes on real processes; a worker process talks to node A first. Node A is sent SIGTERM
while the worker is mid-task, holding more tasks pushed to it; the worker moves to node B. Every
task must complete with exactly one attempt: no lease may expire on the way.

What used to go wrong: the node's gRPC server cut the worker's stream at the end of its grace
period, and the tasks the node had written to the stream that the worker had not read yet were
dropped with it. Each came back only when its lease expired, as a second attempt ("lease
expired ..."). A worker reads late whenever its handlers hold its event loop (blocking or
CPU-bound code in an ``async def``, which is how this test's worker is slow); with handlers that
await, the window is a few milliseconds, which is why `make drill` saw it only now and then.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.procs import ManagedProcess
from devtools.drill import TERMINAL
from devtools.local_cluster import ClusterSettings, LocalCluster, wait_for_leader
from helpers import unique
from worker import WorkflowClient

TTL_S = 2.0
HANDLER_S = 0.2
WORKFLOWS = 20

# A worker whose handlers hold its event loop while they work (time.sleep in an async handler):
# tasks the node pushes meanwhile wait, unread, in the stream.
WORKER = f"""
import logging, sys, time
from worker import Worker, task

@task("noop")
async def slow(data):
    time.sleep({HANDLER_S})
    return {{}}

logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
Worker(endpoints=sys.argv[1].split(","), handlers=[slow], concurrency=4, worker_id="slow-worker").run_sync()
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(name=unique("graceful"), etcd_members=1, node_ports=[0, 0], lease_ttl_s=TTL_S,
                               workers=0, log_level="INFO")
    with LocalCluster(tmp_path, settings).start(workers=False) as running:
        yield running


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[WorkflowClient]:
    client = WorkflowClient(cluster.endpoints, timeout_s=15.0)
    wait_for_leader(client, 30.0, members=2)
    try:
        yield client
    finally:
        client.close()


def _register(client: WorkflowClient, name: str) -> None:
    # a short lease, so that a lease left to expire would show within the test: the worker
    # heartbeats every lease/3, and the node it moves to must extend what node A leased
    client.register_task_def({"name": "noop", "retryCount": 3, "retryDelaySeconds": 0,
                              "responseTimeoutSeconds": 3})
    client.register_workflow_def({"name": name, "tasks": [
        {"name": "noop", "taskReferenceName": "one", "inputParameters": {}},
        {"name": "noop", "taskReferenceName": "two", "inputParameters": {}}]})


def _settle(client: WorkflowClient, started: list[str], timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(started) and time.monotonic() < deadline:
        for workflow_id in started:
            if workflow_id not in done:
                workflow = client.get_workflow(workflow_id)
                if workflow.get("status") in TERMINAL:
                    done[workflow_id] = workflow
        time.sleep(0.2)
    assert len(done) == len(started), f"{len(started) - len(done)} workflow(s) never ended"
    return done


def _repeated(workflows: dict[str, dict[str, Any]]) -> list[str]:
    """Every attempt that was followed by another one of the same task, with its reason."""
    repeats = []
    for workflow_id, workflow in workflows.items():
        by_ref: dict[str, list[dict[str, Any]]] = {}
        for task in workflow.get("tasks", []):
            by_ref.setdefault(task["reference_name"], []).append(task)
        for ref, attempts in by_ref.items():
            repeats += [f"{workflow_id}/{ref}: {a.get('status')} {a.get('reason', '')}" for a in attempts[:-1]]
    return repeats


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_sigterm_of_the_workers_node_costs_no_attempt(cluster: LocalCluster, client: WorkflowClient,
                                                      role: str) -> None:
    name = unique("graceful")
    _register(client, name)
    leader = wait_for_leader(client)["leader_id"]
    node_a = leader if role == "leader" else next(n for n in cluster.nodes if n != leader)
    node_b = next(n for n in cluster.nodes if n != node_a)
    script = cluster.base_dir / "slow_worker.py"
    script.write_text(WORKER)
    worker = ManagedProcess("slow-worker", [sys.executable, str(script),
                                            f"{cluster.endpoint_of(node_a)},{cluster.endpoint_of(node_b)}"],
                            cluster.base_dir / "logs")
    cluster.workers.append(worker)
    started = [client.start_workflow(name, {"n": n}) for n in range(WORKFLOWS)]
    time.sleep(1.0)     # the worker is mid-task, and tasks pushed to it wait for its loop
    cluster.nodes[node_a].signal(signal.SIGTERM)
    assert cluster.nodes[node_a].wait(20) == 0
    workflows = _settle(client, started)
    assert all(w["status"] == "COMPLETED" for w in workflows.values()), \
        {k: (w["status"], w.get("reason_for_incompletion")) for k, w in workflows.items()}
    repeats = _repeated(workflows)
    assert repeats == [], f"{len(repeats)} attempt(s) repeated after the graceful stop: {repeats[:5]}"
    worker_log = worker.log_path.read_text()
    assert f"connected to {cluster.endpoint_of(node_b)}" in worker_log, worker_log[-3000:]
    assert "refused as stale" not in worker_log, worker_log[-3000:]
