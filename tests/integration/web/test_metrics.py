"""/metrics on a real node: scraped before, during and after a run, the numbers move as they should."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from assertions import Samples, absent, moved, scrape, series
from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import ManagedProcess, ProcessError, free_port
from helpers import BackgroundWorker, wait_for_status
from orchestrator.config import NodeConfig
from orchestrator.web.metrics import METRICS
from worker import Worker, WorkflowClient, task

ROOT = Path(__file__).resolve().parents[3]
SUFFIX = uuid.uuid4().hex[:6]
OK_TYPE, FAIL_TYPE, IDLE_TYPE = f"m_ok_{SUFFIX}", f"m_fail_{SUFFIX}", f"m_idle_{SUFFIX}"
OK_FLOW, FAIL_FLOW, IDLE_FLOW = f"metrics_ok_{SUFFIX}", f"metrics_fail_{SUFFIX}", f"metrics_idle_{SUFFIX}"

@dataclass
class MetricsNode:
    process: ManagedProcess
    url: str
    client: WorkflowClient

    def text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode())

    def scrape(self) -> Samples:
        return scrape(self.url)


def connected(samples: Samples, task_type: str) -> float:
    """Workers connected for `task_type`: no series while there is none."""
    return samples.get(("orchestrator_workers_connected", frozenset({("task_type", task_type)})), 0.0)


def ok(data: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.15)
    return {"n": data.get("n")}


def fail(data: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("this step always fails")


@pytest.fixture(scope="module")
def metrics_node(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[MetricsNode]:
    port, http_port = free_port(), free_port()
    process = start_node(tmp_path_factory.mktemp("metrics-node"), node_id="metrics-1", port=port,
                         redis_url=redis_server.url, etcd_endpoints=etcd.endpoints, cluster=f"metrics{SUFFIX}",
                         lease_ttl_s=2.0, http_port=http_port)
    client = WorkflowClient([f"127.0.0.1:{port}"])
    background = None
    try:
        wait_for_leader(client, 20.0)
        client.register_task_def({"name": OK_TYPE, "retryCount": 0})
        client.register_task_def({"name": FAIL_TYPE, "retryCount": 1, "retryDelaySeconds": 0})
        client.register_task_def({"name": IDLE_TYPE})
        for flow, task_type in ((OK_FLOW, OK_TYPE), (FAIL_FLOW, FAIL_TYPE), (IDLE_FLOW, IDLE_TYPE)):
            client.register_workflow_def({"name": flow, "tasks": [
                {"name": task_type, "taskReferenceName": "a", "inputParameters": {"n": "${workflow.input.n}"}},
                {"name": task_type, "taskReferenceName": "b", "inputParameters": {"n": "${a.output.n}"}}]})
        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"],
                                             handlers=[task(OK_TYPE)(ok), task(FAIL_TYPE)(fail)], concurrency=16))
        yield MetricsNode(process, f"http://127.0.0.1:{http_port}", client)
    finally:
        if background is not None:
            background.stop()
        client.close()
        process.stop()


def test_counters_move_with_a_run(metrics_node: MetricsNode) -> None:
    """Every series read here must exist (a missing one is not a zero), and each counter moves by
    exactly what the run did: one node, so no decision conflicts with another."""
    node = metrics_node
    deadline = time.monotonic() + 10
    while connected(before := node.scrape(), OK_TYPE) < 1:
        assert time.monotonic() < deadline, "the worker never connected"
        time.sleep(0.05)
    assert series(before, "orchestrator_workers_connected", task_type=OK_TYPE) == 1
    assert series(before, "orchestrator_is_leader") == 1
    assert series(before, "orchestrator_leader_epoch") > 0
    assert series(before, "orchestrator_leader_elections_total") == 1
    assert series(before, "orchestrator_worker_credits", task_type=OK_TYPE) == 16
    assert series(before, "orchestrator_store_up") == 1 and series(before, "orchestrator_etcd_up") == 1
    info = [dict(labels) for (name, labels), v in before.items() if name == "orchestrator_node_info" and v == 1]
    assert [(i["node_id"], i["cluster"]) for i in info] == [("metrics-1", f"metrics{SUFFIX}")]

    ok_ids = [node.client.start_workflow(OK_FLOW, {"n": i}) for i in range(5)]
    fail_ids = [node.client.start_workflow(FAIL_FLOW, {"n": i}) for i in range(2)]

    during = node.scrape()   # every start is counted at once; the slow steps are still running
    assert moved(before, during, "orchestrator_workflows_started_total", workflow=OK_FLOW) == 5
    assert moved(before, during, "orchestrator_workflows_started_total", workflow=FAIL_FLOW) == 2
    ended_ok = ("orchestrator_workflows_ended_total", frozenset({("workflow", OK_FLOW), ("status", "COMPLETED")}))
    assert during.get(ended_ok, 0.0) < 5   # no series until the first one ends
    assert series(during, "orchestrator_workflows", status="RUNNING") >= 1
    statuses = {dict(labels)["status"] for name, labels in during if name == "orchestrator_workflows"}
    assert {"RUNNING", "COMPLETED", "FAILED"} <= statuses   # every status, zeros included
    assert sum(moved(before, during, "orchestrator_workflows", status=s) for s in statuses) == 7

    for workflow_id in ok_ids:
        wait_for_status(node.client, workflow_id, "COMPLETED")
    for workflow_id in fail_ids:
        wait_for_status(node.client, workflow_id, "FAILED")
    after = node.scrape()

    def grew(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert grew("orchestrator_workflows_ended_total", workflow=OK_FLOW, status="COMPLETED") == 5
    assert grew("orchestrator_workflows_ended_total", workflow=FAIL_FLOW, status="FAILED") == 2
    assert grew("orchestrator_task_attempts_total", task_type=OK_TYPE, outcome="COMPLETED") == 10   # two steps each
    assert grew("orchestrator_task_attempts_total", task_type=FAIL_TYPE, outcome="FAILED") == 4   # a, retried once
    assert grew("orchestrator_tasks_dispatched_total", task_type=OK_TYPE) == 10
    assert grew("orchestrator_tasks_dispatched_total", task_type=FAIL_TYPE) == 4
    # three decisions that change each workflow: OK: queue a, queue b, complete; FAIL: queue a,
    # queue its retry, fail; none conflicts (nothing else decides these workflows meanwhile)
    assert grew("orchestrator_decisions_total") == 5 * 3 + 2 * 3
    assert grew("orchestrator_decision_conflicts_total") == 0
    # cluster-wide, from the status index: the seven moved from RUNNING to their end
    assert grew("orchestrator_workflows", status="COMPLETED") == 5
    assert grew("orchestrator_workflows", status="FAILED") == 2
    assert grew("orchestrator_workflows", status="RUNNING") == 0
    assert series(after, "orchestrator_queue_depth", task_type=OK_TYPE) == 0
    assert series(after, "orchestrator_queue_depth", task_type=FAIL_TYPE) == 0
    assert series(after, "orchestrator_worker_credits", task_type=OK_TYPE) == 16   # every credit back
    assert grew("orchestrator_leader_elections_total") == 0
    assert series(after, "orchestrator_leader_term_seconds") > series(before, "orchestrator_leader_term_seconds")
    assert series(after, "process_resident_memory_bytes") > 0


def test_the_queue_of_a_type_no_worker_serves_grows_and_empties(metrics_node: MetricsNode) -> None:
    node = metrics_node
    assert series(node.scrape(), "orchestrator_queue_depth", task_type=IDLE_TYPE) == 0   # registered: shown, empty
    idle = [node.client.start_workflow(IDLE_FLOW, {"n": i}) for i in range(3)]
    deadline = time.monotonic() + 10
    while series(samples := node.scrape(), "orchestrator_queue_depth", task_type=IDLE_TYPE) < 3:
        assert time.monotonic() < deadline, "the tasks were never queued"
        time.sleep(0.05)
    time.sleep(0.3)
    samples = node.scrape()
    assert series(samples, "orchestrator_queue_depth", task_type=IDLE_TYPE) == 3
    assert series(samples, "orchestrator_queue_oldest_seconds", task_type=IDLE_TYPE) >= 0.3
    absent(samples, "orchestrator_workers_connected", task_type=IDLE_TYPE)   # no worker serves it
    for workflow_id in idle:
        node.client.terminate_workflow(workflow_id, "metrics test done")
    deadline = time.monotonic() + 10
    while series(samples := node.scrape(), "orchestrator_queue_depth", task_type=IDLE_TYPE) > 0:
        assert time.monotonic() < deadline, "terminated workflows left their tasks queued"
        time.sleep(0.05)
    assert series(samples, "orchestrator_queue_oldest_seconds", task_type=IDLE_TYPE) == 0


def test_the_grafana_dashboard_uses_exactly_these_metric_names(metrics_node: MetricsNode) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {re.sub(r"_total$", "", name) for expr in exprs for name in re.findall(r"\borchestrator_\w+", expr)}
    assert used == set(METRICS)
    served = {family.name for family in text_string_to_metric_families(metrics_node.text())}
    assert {name for name in served if name.startswith("orchestrator_")} == set(METRICS)


def test_the_console_address_defaults_to_the_grpc_port_plus_1000() -> None:
    assert NodeConfig(listen="127.0.0.1:50051").http_listen == "127.0.0.1:51051"
    assert NodeConfig(listen="0.0.0.0:50051", http_listen="").http_listen == ""   # no console
    assert NodeConfig(listen="127.0.0.1:50051", http_listen="127.0.0.1:9000").http_listen == "127.0.0.1:9000"
    assert NodeConfig(listen="127.0.0.1:65000").http_listen == ""   # no room above: set it, or none


def test_a_taken_console_port_stops_the_node_with_a_clear_error(tmp_path: Path, etcd: Any, redis_server: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        http_port = taken.getsockname()[1]
        with pytest.raises(ProcessError, match="exited with status 2") as refused:
            start_node(tmp_path, node_id="taken", port=free_port(), redis_url=redis_server.url,
                       etcd_endpoints=etcd.endpoints, cluster=f"taken{SUFFIX}", lease_ttl_s=2.0, http_port=http_port)
    log = str(refused.value)
    assert f"cannot serve the console on 127.0.0.1:{http_port}: Address already in use" in log
    assert "--http-listen" in log and "Traceback" not in log
