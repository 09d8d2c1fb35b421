"""What a new user met on the console (issue 18), in a real browser against real nodes.

- The elections are recorded by each winner as its term begins (etcd), so the cluster page of a
  node started after them lists them all, under a heading that says what they are (it used to
  show only the leaders that page itself had seen, "since <node> started").
- A workflow that FAILED before any task was scheduled says why where its tasks would be (it
  said "no task has been scheduled yet").
- A workflow the engine could not decide is called a server-side error, with the node where it
  happened when the reason names it, and retrying once the fault is fixed as the way on (it sent
  the user to fix a definition that was fine).
- /favicon.ico is an icon the browser decodes (it was a 404).

Debian's chromium is driven by Playwright as in tests/integration/web/test_console.py; no screenshot is written.
"""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.local_cluster import ClusterSettings, LocalCluster, wait_for_leader
from browser import needs_chromium
from helpers import make_undecidable, unique, wait_for_status
from orchestrator.cluster.election import ElectionRecord, read_elections
from orchestrator.cluster.etcd import EtcdClient
from orchestrator.config import NodeConfig
from orchestrator.store.redis.keys import Keys, cluster_prefix
from worker import WorkflowClient

playwright_api = pytest.importorskip("playwright.sync_api")


pytestmark = needs_chromium
expect = playwright_api.expect


def console_of(node: Any) -> str:
    return f"http://{node.http_address}"


# ------------------------------------------------------------ the elections, whenever the page is opened

def terms_in_etcd(endpoints: list[str], cluster: str) -> list[ElectionRecord]:
    """The terms the winners recorded in etcd, newest first: what the console must list. (In a
    thread of its own: Playwright's sync API holds an event loop in this one.)"""
    async def read() -> list[ElectionRecord]:
        client = EtcdClient(endpoints)
        try:
            return await read_elections(client, NodeConfig(cluster=cluster).election_prefix)
        finally:
            await client.close()
    with ThreadPoolExecutor(max_workers=1) as thread:
        return sorted(thread.submit(asyncio.run, read()).result(), key=lambda r: r.epoch, reverse=True)


def test_a_node_started_after_the_elections_lists_them_all(tmp_path: Path, page: Any) -> None:
    settings = ClusterSettings(name=f"elections{uuid.uuid4().hex[:6]}", etcd_members=1, node_ports=[0, 0],
                               lease_ttl_s=2.0, workers=0)
    with LocalCluster(tmp_path / "cluster", settings).start(workers=False) as cluster:
        client = WorkflowClient(cluster.endpoints, timeout_s=10.0)
        try:
            terms = [wait_for_leader(client, 30.0, members=2)]
            for _ in range(2):   # two hand-overs: SIGTERM the leader, bring it back as a follower
                old = terms[-1]["leader_id"]
                cluster.nodes[old].signal(signal.SIGTERM)
                assert cluster.nodes[old].wait(20) == 0
                terms.append(wait_for_leader(client, 20.0, not_id=old))
                cluster.start_node(old)
                wait_for_leader(client, 20.0, members=2)
            # a node that was not there for any of it: its console has never rendered a page
            cluster.start_node("late")
            page.goto(cluster.console_of("late") + "/cluster")
            rows = page.locator("#elections tbody tr")
            # every term etcd recorded, newest first: the three above, and any a loaded machine
            # added (a leader whose lease lapsed under load is replaced, which is a term too)
            assert cluster.etcd is not None
            recorded = terms_in_etcd(cluster.etcd.endpoints, settings.name)
            assert {t["epoch"] for t in terms} <= {r.epoch for r in recorded}, (terms, recorded)
            expect(rows).to_have_count(len(recorded))
            for row, record in zip(rows.all(), recorded):
                expect(row).to_have_attribute("data-epoch", str(record.epoch))
                expect(row).to_contain_text(record.node_id)
            expect(rows.first).to_contain_text("leading")
            heading = page.locator("h2", has=page.locator("small")).filter(has_text="Elections")
            expect(heading).to_contain_text("recorded by its winner")
            expect(page.locator("main")).not_to_contain_text("since late started")
            # and it stays right as the page lives on: the next election appears without a reload
            current = terms[-1]["leader_id"]
            cluster.nodes[current].signal(signal.SIGTERM)
            assert cluster.nodes[current].wait(20) == 0
            expect(rows).to_have_count(len(recorded) + 1, timeout=15_000)
            expect(rows.nth(1)).to_contain_text(current)
        finally:
            client.close()


# ------------------------------------------------------------ a FAILED workflow without tasks

def test_a_workflow_that_failed_before_any_task_says_why(node: Any, page: Any) -> None:
    name = unique("selfref")
    node.client.register_workflow_def({"name": name, "tasks": [
        {"name": "loop", "taskReferenceName": "loop", "type": "SET_VARIABLE",
         "inputParameters": {"me": "${workflow.variables}"}}]})
    workflow_id = node.client.start_workflow(name, {})
    failed = wait_for_status(node.client, workflow_id, "FAILED")
    assert not failed.get("tasks"), "this test needs a workflow that failed before any task"
    page.goto(console_of(node) + f"/executions/{workflow_id}")
    expect(page.locator("#wf-status")).to_contain_text("FAILED")
    expect(page.locator("#no-task")).to_contain_text("No task ran: the workflow ended FAILED before its first task")
    expect(page.locator("#no-task")).to_contain_text("Circular reference")   # the reason, where tasks would be
    expect(page.locator("main")).not_to_contain_text("no task has been scheduled yet")
    expect(page.locator("#tasks")).not_to_contain_text("no task yet")


# ------------------------------------------------------------ the engine's fault is the server's

def _undecidable(node: Any, name: str) -> str:
    """A workflow that waits on a HUMAN gate, whose stored definition is then made one the
    decider cannot walk (what a bug in the engine looks like from outside), then signalled."""
    node.client.register_workflow_def({"name": name, "tasks": [
        {"name": "gate", "taskReferenceName": "gate", "type": "HUMAN"},
        {"name": "note", "taskReferenceName": "note", "type": "SET_VARIABLE", "inputParameters": {"seen": True}}]})
    workflow_id = node.client.start_workflow(name, {})
    wait_for_status(node.client, workflow_id, "RUNNING")
    make_undecidable(node.redis_url, node.cluster, workflow_id)
    try:
        node.client.signal_task(workflow_id, "gate", output={"ok": True})
    except Exception:   # the answer may already be the failure; the stored workflow is what counts
        pass
    return workflow_id


def test_a_workflow_the_engine_could_not_decide_is_called_a_server_side_error(node: Any, page: Any) -> None:
    workflow_id = _undecidable(node, unique("undecidable"))
    failed = wait_for_status(node.client, workflow_id, "FAILED")
    assert "the engine could not decide it" in failed["reason"]
    page.goto(console_of(node) + f"/executions/{workflow_id}")
    reason = page.locator("#wf-reason")
    expect(reason).to_contain_text("Server-side error: the orchestrator could not decide this workflow")
    expect(reason).to_contain_text("not in the workflow's definition or input")
    named = re.search(r"log of node ([^\s.;]+)", failed["reason"])   # when the node passes its id to the decider
    expect(reason).to_contain_text(f"It happened on node {named.group(1)}" if named
                                   else "The log of the node that decided it")
    expect(reason).to_contain_text("Once the fault is fixed, retry the workflow")
    expect(page.locator("main")).not_to_contain_text("fix its definition or input")
    expect(page.locator('#operations a[data-op="retry"]')).to_be_visible()   # the way on is right there

    # a reason stored before the engine named its node (it sent the user to fix the definition), and
    # one that names the node: both are called the server's fault, the second with its node
    keys = Keys(cluster_prefix(node.cluster))
    stored = {
        "": "the engine could not decide it: KeyError: 'taskReferenceName'. This workflow was stopped so that "
            "it cannot hold up the others; fix its definition or input and start it again (or retry it)",
        "node-7": "the engine could not decide it: KeyError: 'taskReferenceName'. This workflow was stopped so that "
                  "it cannot hold up the others; the fault is in the orchestrator, not in the workflow's definition "
                  "or input; the trace is in the log of node node-7. Retry the workflow once the fault is fixed"}
    for where, text in stored.items():
        with redis.Redis.from_url(node.redis_url, decode_responses=True) as store:
            store.hset(keys.workflow(workflow_id), "reason", text)
        page.goto(console_of(node) + f"/executions/{workflow_id}")
        expect(reason).to_contain_text("Server-side error")
        expect(reason).to_contain_text(f"It happened on node {where}" if where else "The log of the node that decided")
        expect(reason).to_contain_text("KeyError: 'taskReferenceName'")
        expect(page.locator("main")).not_to_contain_text("fix its definition or input")


# ------------------------------------------------------------ the favicon

def test_the_favicon_is_an_icon(node: Any, page: Any) -> None:
    with urllib.request.urlopen(console_of(node) + "/favicon.ico", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/x-icon"
        assert response.read(4) == b"\x00\x00\x01\x00"   # an ICO's header
    page.goto(console_of(node) + "/cluster")
    expect(page.locator('link[rel="icon"]')).to_have_attribute("href", "/favicon.ico")
    size = page.evaluate("""() => new Promise((done, failed) => {
        const image = new Image();
        image.onload = () => done([image.naturalWidth, image.naturalHeight]);
        image.onerror = () => failed(new Error("the browser could not decode /favicon.ico"));
        image.src = "/favicon.ico?" + Date.now();
    })""")
    assert size == [16, 16]
