"""The web console in a real browser: Debian's chromium driven by Playwright against real nodes.

Each page loads; a workflow started from its definition's page completes before our eyes; a pause,
a resume, a signal and a termination each go through their confirmation page; a task whose type no
worker serves says so; and on a three-node cluster the cluster page of a survivor shows the new
leader after the leader is SIGKILLed by PID, and the old one DOWN. Every page is saved as a
screenshot in the test's tmp dir; only with UPDATE_SCREENSHOTS=1 in the environment are they also copied to the
repository's docs/screenshots/ (the README shows them), so a plain run leaves the checkout alone:
`UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/integration/web/test_console.py` refreshes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.local_cluster import ClusterSettings, LocalCluster, start_node, wait_for_leader
from devtools.procs import ManagedProcess, free_port
from browser import needs_chromium
from helpers import BackgroundWorker
from worker import Worker, WorkflowClient, task

playwright_api = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
SUFFIX = uuid.uuid4().hex[:6]
STEP, NOBODY = f"c_step_{SUFFIX}", f"c_nobody_{SUFFIX}"
DEMO, APPROVAL, STUCK = f"console_demo_{SUFFIX}", f"console_approval_{SUFFIX}", f"console_stuck_{SUFFIX}"

pytestmark = needs_chromium
expect = playwright_api.expect


@dataclass
class ConsoleNode:
    process: ManagedProcess
    endpoint: str
    url: str
    client: WorkflowClient


def step(data: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.05)
    return {"n": (data.get("n") or 0) + 1}


@pytest.fixture(scope="module")
def console_node(tmp_path_factory: pytest.TempPathFactory, etcd: Any, redis_server: Any) -> Iterator[ConsoleNode]:
    port, http_port = free_port(), free_port()
    process = start_node(tmp_path_factory.mktemp("console-node"), node_id="console-1", port=port,
                         redis_url=redis_server.url, etcd_endpoints=etcd.endpoints, cluster=f"console{SUFFIX}",
                         lease_ttl_s=2.0, http_port=http_port)
    client = WorkflowClient([f"127.0.0.1:{port}"])
    background = None
    try:
        wait_for_leader(client, 20.0)
        register(client)
        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"], handlers=[task(STEP)(step)],
                                             concurrency=8))
        yield ConsoleNode(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}", client)
    finally:
        if background is not None:
            background.stop()
        client.close()
        process.stop()


def register(client: WorkflowClient) -> None:
    client.register_task_def({"name": STEP, "retryCount": 0, "responseTimeoutSeconds": 10})
    client.register_task_def({"name": NOBODY})
    client.register_workflow_def({
        "name": DEMO, "description": "every shape the graph draws: a sequence, a fork, a switch and a loop",
        "inputParameters": ["n", "route"],
        "tasks": [
            {"name": STEP, "taskReferenceName": "first", "inputParameters": {"n": "${workflow.input.n}"}},
            {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
                [{"name": STEP, "taskReferenceName": "left", "inputParameters": {"n": "${first.output.n}"}}],
                [{"name": STEP, "taskReferenceName": "right", "inputParameters": {"n": "${first.output.n}"}}]]},
            {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": ["left", "right"]},
            {"name": "route", "taskReferenceName": "route", "type": "SWITCH", "evaluatorType": "value-param",
             "expression": "route", "inputParameters": {"route": "${workflow.input.route}"},
             "decisionCases": {"fast": [{"name": STEP, "taskReferenceName": "express"}]},
             "defaultCase": [{"name": STEP, "taskReferenceName": "standard"}]},
            {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE", "maxIterations": 5,
             "loopCondition": "$.again.output.n < 4",
             "loopOver": [{"name": STEP, "taskReferenceName": "again",
                           "inputParameters": {"n": "${loop.output.iteration}"}}]},
        ],
        "outputParameters": {"n": "${first.output.n}"},
    })
    client.register_workflow_def({
        "name": APPROVAL, "description": "waits for a person, then one step",
        "tasks": [{"name": "approve", "taskReferenceName": "approve", "type": "HUMAN"},
                  {"name": STEP, "taskReferenceName": "after", "inputParameters": {"n": 1}}],
        "outputParameters": {"by": "${approve.output.by}"},
    })
    client.register_workflow_def({"name": STUCK, "tasks": [{"name": NOBODY, "taskReferenceName": "lonely"}]})


def shot(page: Any, tmp_path: Path, name: str) -> None:
    """A screenshot in the test's tmp dir; copied to docs/screenshots/ for the README only when
    UPDATE_SCREENSHOTS=1 asks for it."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))   # the viewport: small PNGs
    assert path.stat().st_size > 0
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)


def confirm(page: Any, op: str, **fields: str) -> None:
    """Click an operation, check its confirmation page, fill it in and confirm."""
    page.locator(f'#operations a[data-op="{op}"]').first.click()
    expect(page.locator("h1")).to_contain_text("?")
    for name, value in fields.items():
        page.fill(f'form.confirm [name="{name}"]', value)
    page.click("#confirm")
    expect(page.locator("#done")).to_be_visible()


def test_pages_load_and_a_workflow_started_from_its_definition_completes(console_node: ConsoleNode, page: Any,
                                                                         tmp_path: Path) -> None:
    page.goto(console_node.url + "/definitions")
    expect(page.locator(f'#workflow-defs tr[data-name="{DEMO}"]')).to_be_visible()
    expect(page.locator(f'#task-defs tr[data-name="{STEP}"] td').last).to_have_text("1")   # one worker here
    shot(page, tmp_path, "definitions")

    page.click(f'#workflow-defs a[href="/definitions/{DEMO}"]')
    expect(page.locator("svg.graph g.node[data-ref]")).to_have_count(10)   # its 10 tasks, nested ones included
    assert json.loads(page.inner_text("#definition-json"))["name"] == DEMO
    page.fill("#start-input", json.dumps({"n": 1, "route": "fast"}))
    page.fill("#start-correlation", f"order-{SUFFIX}")
    shot(page, tmp_path, "definition")
    page.click("#start-button")

    page.wait_for_url(re.compile(r".*/executions/[0-9a-f]{32}\?done=started$"))
    expect(page.locator("#done")).to_contain_text("started")
    expect(page.locator("#wf-status")).to_contain_text("COMPLETED", timeout=20_000)   # live, without a reload
    workflow_id = page.url.rsplit("/", 1)[1].split("?")[0]
    stored = console_node.client.get_workflow(workflow_id)
    assert stored["status"] == "COMPLETED" and stored["correlation_id"] == f"order-{SUFFIX}"
    graph = page.locator("svg.graph")
    for ref in ("first", "left", "right", "join", "express", "again"):
        expect(graph.locator(f'g.node[data-ref="{ref}"]')).to_have_attribute("data-status", "COMPLETED")
    expect(graph.locator('g.node[data-ref="standard"]')).to_have_attribute("data-status", "")   # the branch not taken
    assert page.locator("#timeline .g-row").count() == len(stored["tasks"])
    expect(page.locator('#tasks tr[data-key="again__3"]')).to_be_visible()   # the loop ran three times
    shot(page, tmp_path, "execution")

    page.goto(console_node.url + f"/executions?name={DEMO}&correlation_id=order-{SUFFIX}")
    expect(page.locator(f'#results a[href="/executions/{workflow_id}"]')).to_be_visible()
    expect(page.locator("#status-counts a.st-COMPLETED b")).to_have_text("1")

    page.goto(console_node.url + "/cluster")
    expect(page.locator("#leader-id")).to_have_text("console-1")
    expect(page.locator('#members tr[data-node="console-1"]')).to_contain_text("LEADER")
    expect(page.locator("#workers")).to_contain_text(STEP)
    expect(page.locator("#redis-health")).to_contain_text("up")
    expect(page.locator("#etcd-health")).to_contain_text("up")
    shot(page, tmp_path, "cluster")


def test_paging_through_executions_with_the_cursor(console_node: ConsoleNode, page: Any) -> None:
    started = [console_node.client.start_workflow(STUCK, {}) for _ in range(3)]
    page.goto(console_node.url + f"/executions?name={STUCK}&status=RUNNING&limit=2")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        seen += [link.inner_text() for link in page.locator("#results a.mono").all()]
        if page.locator("#next-page").count() == 0:
            break
        page.click("#next-page")
    assert sorted(seen) == sorted(started) and pages == 2   # newest first, two per page, nothing twice
    expect(page.locator("#status-counts a.st-RUNNING b")).to_have_text("3")
    for workflow_id in started:
        console_node.client.terminate_workflow(workflow_id, "paging test done")


def test_pause_resume_and_signal_each_after_a_confirmation(console_node: ConsoleNode, page: Any,
                                                         tmp_path: Path) -> None:
    workflow_id = console_node.client.start_workflow(APPROVAL, {})
    page.goto(console_node.url + f"/executions/{workflow_id}")
    expect(page.locator('#operations a[data-op="signal"]')).to_be_visible()   # the HUMAN task waits

    page.locator('#operations a[data-op="pause"]').click()
    expect(page.locator("h1")).to_have_text("Pause?")
    shot(page, tmp_path, "confirm")
    page.click("#confirm")
    expect(page.locator("#done")).to_have_text("Workflow paused.")
    expect(page.locator("#wf-status")).to_contain_text("PAUSED")
    assert console_node.client.get_workflow(workflow_id)["status"] == "PAUSED"

    confirm(page, "resume")
    expect(page.locator("#wf-status")).to_contain_text("RUNNING")

    confirm(page, "signal", output=json.dumps({"by": "ann"}))
    expect(page.locator("#wf-status")).to_contain_text("COMPLETED", timeout=20_000)
    assert console_node.client.get_workflow(workflow_id)["output"] == {"by": "ann"}

    # A refusal is shown on the confirmation page, as the API words it: a COMPLETED workflow cannot be paused.
    page.goto(console_node.url + f"/executions/{workflow_id}/confirm/pause")
    page.click("#confirm")
    expect(page.locator("#op-error")).to_contain_text("is COMPLETED; this operation needs one of RUNNING")


def test_a_task_no_worker_serves_is_explained_and_can_be_terminated(console_node: ConsoleNode, page: Any,
                                                                  tmp_path: Path) -> None:
    workflow_id = console_node.client.start_workflow(STUCK, {})
    page.goto(console_node.url + f"/executions/{workflow_id}")
    why = page.locator('#waiting .why[data-task="lonely"]')
    expect(why).to_contain_text(f"no worker connected for type {NOBODY}")
    expect(why).to_contain_text(f"queue {NOBODY} holds")
    expect(page.locator('svg.graph g.node[data-ref="lonely"]')).to_have_attribute("data-status", "SCHEDULED")
    shot(page, tmp_path, "stuck")

    page.goto(console_node.url + "/cluster")
    row = page.locator(f'#queues tr[data-type="{NOBODY}"]')
    expect(row).to_have_class("stuck")
    expect(row).to_contain_text(f"no worker connected for type {NOBODY}")
    expect(page.locator(f'#queues tr[data-type="{STEP}"]')).not_to_have_class("stuck")

    page.goto(console_node.url + f"/executions/{workflow_id}")
    confirm(page, "terminate", reason="nobody serves it")
    expect(page.locator("#wf-status")).to_contain_text("TERMINATED")
    expect(page.locator("#wf-reason")).to_contain_text("nobody serves it")
    expect(page.locator("#waiting")).to_have_count(0)

    page.goto(console_node.url + "/executions")   # everything this module ran, newest first
    expect(page.locator("#status-counts a.st-TERMINATED b")).not_to_have_text("0")
    shot(page, tmp_path, "executions")


def test_a_form_from_elsewhere_is_refused(console_node: ConsoleNode, page: Any) -> None:
    workflow_id = console_node.client.start_workflow(STUCK, {})
    response = page.request.post(console_node.url + f"/executions/{workflow_id}/terminate",
                                 form={"csrf": "forged", "reason": "cross-site"})
    assert response.status == 403
    assert console_node.client.get_workflow(workflow_id)["status"] == "RUNNING"
    console_node.client.terminate_workflow(workflow_id, "done")


def test_a_version_past_int32_in_the_start_form_is_refused_not_a_crash(console_node: ConsoleNode, page: Any) -> None:
    html = page.request.get(console_node.url + f"/definitions/{STUCK}").text()
    csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    response = page.request.post(console_node.url + f"/definitions/{STUCK}/start",
                                 form={"csrf": csrf, "name": STUCK, "version": "99999999999", "input": "{}"})
    assert response.status == 400 and "version must be a number" in response.text()


def test_the_cluster_page_of_a_survivor_shows_the_new_leader_after_a_sigkill(tmp_path: Path, page: Any) -> None:
    settings = ClusterSettings(name=f"consolefo{SUFFIX}", etcd_members=1, node_ports=[0, 0, 0], lease_ttl_s=2.0,
                               workers=0)
    with LocalCluster(tmp_path / "cluster", settings).start(workers=False) as cluster:
        client = WorkflowClient(cluster.endpoints)
        try:
            old = wait_for_leader(client, 30.0, members=3)
            watcher = next(node_id for node_id in cluster.nodes if node_id != old["leader_id"])
            page.goto(cluster.console_of(watcher) + "/cluster")
            expect(page.locator("#leader-id")).to_have_text(old["leader_id"])
            expect(page.locator("#members tbody tr")).to_have_count(3)
            expect(page.locator("#leader-epoch")).to_have_text(str(old["epoch"]))

            cluster.nodes[old["leader_id"]].signal(signal.SIGKILL)   # by PID
            expect(page.locator("#leader-id")).not_to_have_text(old["leader_id"], timeout=15_000)
            expect(page.locator("#members tbody tr.up")).to_have_count(2, timeout=15_000)
            expect(page.locator(f'#members tr.down[data-node="{old["leader_id"]}"]')).to_contain_text("DOWN")
            new = wait_for_leader(client, 15.0, not_id=old["leader_id"])
            expect(page.locator("#leader-id")).to_have_text(new["leader_id"])
            assert int(page.inner_text("#leader-epoch")) > old["epoch"]
            history = page.locator("#elections tbody tr")
            expect(history).to_have_count(2)
            expect(history.first).to_contain_text(new["leader_id"])
            expect(history.last).to_contain_text(old["leader_id"])
            shot(page, tmp_path, "failover")
        finally:
            client.close()
