"""Conductor's own Python SDK (conductor-python 2.x), unchanged, against a three-node cluster.

Its TaskHandler runs a user's worker program (tests/conductor_sdk/sdk_worker.py) in its own
processes, polling and updating tasks through our Conductor REST API, while a worker of our SDK
serves another task type of the same workflows over gRPC. Its clients register definitions,
start, read, search and operate workflows. The leader is SIGKILLed in the middle of a run:
the SDK talks to a follower, which serves the whole cluster, and nothing is lost.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conductor.client.configuration.configuration import Configuration
from conductor.client.http.models import SkipTaskRequest, StartWorkflowRequest, TaskDef
from conductor.client.http.models.workflow_def import WorkflowDef
from conductor.client.http.models.workflow_task import WorkflowTask
from conductor.client.orkes_clients import OrkesClients

from devtools.drill import DrillReport, audit, kill_leader
from devtools.local_cluster import ClusterSettings, LocalCluster, wait_for_leader
from devtools.procs import ManagedProcess
from helpers import BackgroundWorker, unique
from worker import Worker, WorkflowClient, task

SDK_WORKER = Path(__file__).resolve().parents[2] / "conductor_sdk" / "sdk_worker.py"


class Setup:
    def __init__(self, cluster: LocalCluster, client: WorkflowClient, prefix: str, follower: str) -> None:
        self.cluster = cluster
        self.client = client          # our gRPC client, for checks and the leader kill
        self.prefix = prefix
        self.follower = follower
        self.url = f"http://127.0.0.1:{cluster.console_ports[follower]}/api"
        self.clients = OrkesClients(configuration=Configuration(server_api_url=self.url))
        self.workflow_name = f"{prefix}_order"


def order_workflow(prefix: str, name: str) -> WorkflowDef:
    """charge (conductor-python) -> pack (our SDK, over gRPC) -> ship (conductor-python)."""
    tasks = [
        WorkflowTask(name=f"{prefix}_charge", task_reference_name="charge", type="SIMPLE",
                     input_parameters={"order": "${workflow.input.order}", "amount": "${workflow.input.amount}"}),
        WorkflowTask(name=f"{prefix}_pack", task_reference_name="pack", type="SIMPLE",
                     input_parameters={"order": "${workflow.input.order}"}),
        WorkflowTask(name=f"{prefix}_ship", task_reference_name="ship", type="SIMPLE",
                     input_parameters={"order": "${workflow.input.order}", "packed": "${pack.output.packed}"}),
    ]
    return WorkflowDef(name=name, version=1, tasks=tasks, schema_version=2, timeout_seconds=0,
                       output_parameters={"charged": "${charge.output.charged}", "shipped": "${ship.output.shipped}",
                                          "by": "${charge.output.by}"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("sdk")
    settings = ClusterSettings(name=unique("sdk"), etcd_members=1, node_ports=[0, 0, 0], lease_ttl_s=2.0,
                               workers=0, log_level="INFO")
    prefix = unique("sdk")
    with LocalCluster(base, settings).start(workers=False) as cluster:
        client = WorkflowClient(cluster.endpoints, timeout_s=15.0)
        leader = wait_for_leader(client, 30.0)["leader_id"]
        follower = next(n for n in cluster.nodes if n != leader)
        running = Setup(cluster, client, prefix, follower)
        metadata = running.clients.get_metadata_client()
        for name in ("charge", "pack", "ship", "echo", "async_double"):
            metadata.register_task_def(TaskDef(name=f"{prefix}_{name}", retry_count=0, response_timeout_seconds=10))
        metadata.register_task_def(TaskDef(name=f"{prefix}_flaky", retry_count=2, retry_logic="FIXED",
                                           retry_delay_seconds=0, response_timeout_seconds=10))
        metadata.register_workflow_def(order_workflow(prefix, running.workflow_name), overwrite=True)

        @task(f"{prefix}_pack")
        def pack(order: str) -> dict[str, Any]:
            return {"packed": True, "by": "our SDK"}

        ours = BackgroundWorker(Worker(endpoints=cluster.endpoints, handlers=[pack], concurrency=8))
        theirs = ManagedProcess("sdk-worker", [sys.executable, str(SDK_WORKER)], base,
                                env={**os.environ, "CONDUCTOR_SERVER_URL": running.url, "SDK_TASK_PREFIX": prefix})
        try:
            yield running
        finally:
            theirs.stop(timeout=10.0)
            ours.stop()
            client.close()


def wait_all(setup: Setup, workflow_ids: list[str], timeout_s: float = 60.0) -> dict[str, Any]:
    """Read through the SDK's own client until every workflow ended; {id: Workflow model}."""
    workflows = setup.clients.get_workflow_client()
    deadline = time.monotonic() + timeout_s
    ended: dict[str, Any] = {}
    while time.monotonic() < deadline and len(ended) < len(workflow_ids):
        for workflow_id in workflow_ids:
            if workflow_id not in ended:
                workflow = workflows.get_workflow(workflow_id, include_tasks=True)
                if workflow.status not in ("RUNNING", "PAUSED"):
                    ended[workflow_id] = workflow
        time.sleep(0.1)
    assert len(ended) == len(workflow_ids), f"{len(workflow_ids) - len(ended)} workflow(s) did not end"
    return ended


def start(setup: Setup, order: str, amount: float = 12.5) -> str:
    return str(setup.clients.get_workflow_client().start_workflow(StartWorkflowRequest(
        name=setup.workflow_name, version=1, input={"order": order, "amount": amount}, correlation_id=order)))


def test_sdk_workers_and_ours_complete_workflows_the_sdk_started_across_a_leader_sigkill(setup: Setup) -> None:
    before = [start(setup, f"a{i}") for i in range(20)]
    wait_all(setup, before[:5])
    kill_leader(setup.cluster, setup.client, signal.SIGKILL, restart=False)
    after = [start(setup, f"b{i}") for i in range(20)]
    ended = wait_all(setup, before + after)
    for workflow_id, workflow in ended.items():
        assert workflow.status == "COMPLETED", (workflow_id, workflow.reason_for_incompletion)
        order = workflow.input["order"]
        assert workflow.output == {"charged": 12.5, "shipped": order, "by": "conductor-python"}
        by_ref = {t.reference_task_name: t for t in workflow.tasks}
        assert by_ref["pack"].output_data == {"packed": True, "by": "our SDK"}
        assert by_ref["charge"].worker_id and by_ref["charge"].status == "COMPLETED"
    report = DrillReport(signal="SIGKILL")
    audit(setup.cluster, setup.client, report, before + after)   # the audit stream: each ended exactly once
    assert report.lost == [] and report.completed_twice == [] and report.completed == 40, report.summary()


def test_the_sdks_async_workers_run_too(setup: Setup) -> None:
    name = unique("sdk_async_wf")
    setup.clients.get_metadata_client().register_workflow_def(WorkflowDef(
        name=name, version=1, schema_version=2, tasks=[WorkflowTask(
            name=f"{setup.prefix}_async_double", task_reference_name="double", type="SIMPLE",
            input_parameters={"n": "${workflow.input.n}"})],
        output_parameters={"doubled": "${double.output.doubled}"}), overwrite=True)
    workflows = setup.clients.get_workflow_client()
    ids = [str(workflows.start_workflow(StartWorkflowRequest(name=name, version=1, input={"n": n})))
           for n in range(5)]
    ended = wait_all(setup, ids)
    assert sorted(w.output["doubled"] for w in ended.values()) == [0, 2, 4, 6, 8]


def test_task_logs_sent_with_results_are_kept(setup: Setup) -> None:
    workflow_id = start(setup, "logged")
    workflow = wait_all(setup, [workflow_id])[workflow_id]
    charge = next(t for t in workflow.tasks if t.reference_task_name == "charge")
    logs = setup.clients.get_task_client().get_task_logs(charge.task_id)
    assert [log.log for log in logs] == ["charging 12.5 for logged"]


def test_a_failing_sdk_worker_fails_the_task_and_the_task_definition_retries_it(setup: Setup) -> None:
    name = unique("sdk_flaky_wf")
    setup.clients.get_metadata_client().register_workflow_def(WorkflowDef(
        name=name, version=1, schema_version=2, tasks=[WorkflowTask(
            name=f"{setup.prefix}_flaky", task_reference_name="flaky", type="SIMPLE",
            input_parameters={"order": "x"})]), overwrite=True)
    workflow_id = setup.clients.get_workflow_client().start_workflow(StartWorkflowRequest(name=name, version=1))
    workflow = wait_all(setup, [str(workflow_id)])[str(workflow_id)]
    assert workflow.status == "COMPLETED"
    attempts = [t for t in workflow.tasks if t.reference_task_name == "flaky"]
    assert [t.status for t in attempts] == ["FAILED", "COMPLETED"]
    assert attempts[0].reason_for_incompletion == "first attempts always fail"


def test_sdk_client_operations(setup: Setup) -> None:
    workflows = setup.clients.get_workflow_client()
    metadata = setup.clients.get_metadata_client()
    name = unique("sdk_wait")
    metadata.register_workflow_def(WorkflowDef(name=name, version=1, schema_version=2, tasks=[
        WorkflowTask(name="hold", task_reference_name="hold", type="WAIT"),
        WorkflowTask(name=f"{setup.prefix}_echo", task_reference_name="echo", type="SIMPLE",
                     input_parameters={"n": "${workflow.input.n}"})]), overwrite=True)
    assert metadata.get_workflow_def(name).tasks[0].type == "WAIT"
    assert metadata.get_task_def(f"{setup.prefix}_flaky").retry_count == 2

    workflow_id = str(workflows.start_workflow(StartWorkflowRequest(name=name, version=1, input={"n": 7},
                                                                    correlation_id="corr-ops")))
    workflows.pause_workflow(workflow_id)
    assert workflows.get_workflow_status(workflow_id, include_output=True, include_variables=False).status == "PAUSED"
    workflows.resume_workflow(workflow_id)
    assert workflows.get_workflow(workflow_id, include_tasks=False).status == "RUNNING"
    workflows.skip_task_from_workflow(workflow_id, "hold", SkipTaskRequest())   # the WAIT is skipped, echo runs
    ended = wait_all(setup, [workflow_id])[workflow_id]
    assert ended.status == "COMPLETED"
    assert next(t for t in ended.tasks if t.reference_task_name == "echo").output_data == {"n": 7}

    workflows.restart_workflow(workflow_id)
    assert workflows.get_workflow(workflow_id, include_tasks=False).status == "RUNNING"
    workflows.terminate_workflow(workflow_id, reason="enough")
    terminated = workflows.get_workflow(workflow_id, include_tasks=False)
    assert terminated.status == "TERMINATED" and terminated.reason_for_incompletion == "enough"

    found = workflows.search(start=0, size=10, free_text="*", query=f"workflowType = '{name}'")
    assert [s.workflow_id for s in found.results] == [workflow_id]
    assert found.results[0].status == "TERMINATED"
    by_text = workflows.search(start=0, size=10, free_text="corr-ops", query=f"workflowType IN ({name})")
    assert [s.workflow_id for s in by_text.results] == [workflow_id]


def test_refusals_come_back_as_conductor_error_bodies(setup: Setup) -> None:
    with httpx.Client(base_url=setup.url, timeout=10.0) as http:
        missing = http.get("/workflow/no-such-workflow")
        assert missing.status_code == 404 and "no workflow with id" in missing.json()["message"]
        bad = http.post("/workflow", json={"name": "no_such_definition"})
        assert bad.status_code in (400, 404) and bad.json()["message"]
        junk = http.post("/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
        assert junk.status_code == 400 and "not valid JSON" in junk.json()["message"]
        stale = http.post("/tasks", json={"taskId": "t-none", "workflowInstanceId": "w-none", "status": "COMPLETED",
                                          "workerId": "x", "outputData": {}})
        assert stale.status_code == 404
        authed = http.get("/metadata/taskdefs", headers={"X-Authorization": "any-token"})
        assert authed.status_code == 200   # the header is accepted; the security issue will check it
        assert http.post("/token", json={"keyId": "k", "keySecret": "s"}).status_code == 404   # open mode
