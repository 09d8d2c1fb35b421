"""Members that were seen and are gone stay in view, DOWN with since when and how, on real processes.

A three-node cluster (one etcd, one Redis). A follower is SIGKILLed, another one SIGTERMed, the
leader SIGKILLed: each shows as DOWN in the gRPC ClusterStatus (`gone`), in `orchestrator cluster
status` and in the console's Members table, with when it went and how ("stopped" for a graceful
stop, "its lease ended" otherwise); a node that comes back is UP again. The record is bounded: a
member gone for more than a day is dropped by the leader, and an operator can forget one from the
console (not a member that is up).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.local_cluster import ClusterSettings, LocalCluster, wait_for_leader
from helpers import unique
from orchestrator.cluster.etcd import EtcdClient, Get
from worker import WorkflowClient

TTL_S = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(name=unique("members"), etcd_members=1, node_ports=[0, 0, 0], lease_ttl_s=TTL_S,
                               workers=0, log_level="INFO")
    with LocalCluster(tmp_path, settings).start(workers=False) as running:
        yield running


def status_from(cluster: LocalCluster, node_id: str) -> dict[str, Any]:
    client = WorkflowClient([cluster.endpoint_of(node_id)], timeout_s=5.0)
    try:
        return client.cluster_status()
    finally:
        client.close()


def eventually(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what} (last: {last})")


def gone_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["node_id"]: m for m in status.get("gone") or []}


def noted_gone(cluster: LocalCluster, observer: str, node_id: str) -> dict[str, Any]:
    """`node_id` as `observer` lists it among the gone, once its loss is noted: a member whose key
    just went is listed at once, with since_ms 0 and no detail, until the leader's next pass (or
    its own goodbye) writes when and how."""
    def noted() -> dict[str, Any] | None:
        went = gone_of(status_from(cluster, observer)).get(node_id)
        return went if went is not None and went["since_ms"] else None
    found: dict[str, Any] = eventually(noted, what=f"{node_id} DOWN, noted")
    return found


def up_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["node_id"]: m for m in status.get("members") or []}


def cli_status(cluster: LocalCluster, node_id: str, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", cluster.endpoint_of(node_id),
                           *flags, "cluster", "status"], capture_output=True, text=True, timeout=30,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def console_rows(cluster: LocalCluster, node_id: str) -> dict[str, str]:
    """The console's Members table: node id -> the row's class and text."""
    html = urllib.request.urlopen(cluster.console_of(node_id) + "/cluster", timeout=10).read().decode()
    table = html.split('<table id="members">', 1)[1].split("</table>", 1)[0]
    rows = {}
    for node, klass, body in re.findall(r'<tr data-node="([^"]+)" class="(\w+)">(.*?)</tr>', table, re.S):
        rows[node] = klass + " " + re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()
    return rows


def test_killed_and_stopped_members_show_down_and_come_back_up(cluster: LocalCluster) -> None:
    client = WorkflowClient(cluster.endpoints, timeout_s=10.0)
    try:
        first = wait_for_leader(client, 30.0, members=3)
    finally:
        client.close()
    leader = first["leader_id"]
    killed, stopped = sorted(n for n in cluster.nodes if n != leader)
    status = status_from(cluster, leader)
    assert set(up_of(status)) == set(cluster.nodes) and not gone_of(status)
    assert all(m["state"] == "UP" and m["since_ms"] > 0 for m in status["members"]), status["members"]

    killed_at = time.time() * 1000
    cluster.nodes[killed].kill()   # SIGKILL: no goodbye, its lease ends
    went = noted_gone(cluster, leader, killed)
    assert went["state"] == "DOWN" and went["role"] == "DOWN"
    assert went["address"] == cluster.endpoint_of(killed)
    assert "lease ended" in went["detail"], went
    assert killed_at - 100 <= went["since_ms"] <= killed_at + (TTL_S + 3) * 1000, (went, killed_at)

    stopped_at = time.time() * 1000
    cluster.nodes[stopped].signal(signal.SIGTERM)
    assert cluster.nodes[stopped].wait(20) == 0
    went = noted_gone(cluster, leader, stopped)
    assert went["detail"] == "stopped" and stopped_at - 100 <= went["since_ms"] <= time.time() * 1000, went
    status = status_from(cluster, leader)
    assert list(up_of(status)) == [leader]
    assert [m["node_id"] for m in status["gone"]] == [stopped, killed]   # the latest loss first

    # the CLI: one row per member, the gone ones DOWN with when and how
    text = cli_status(cluster, leader, "--table")
    rows = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in cluster.nodes}
    assert "UP" in rows[leader] and "LEADER" in rows[leader], text
    assert "DOWN" in rows[killed] and "lease ended" in rows[killed], text
    assert "DOWN" in rows[stopped] and "stopped" in rows[stopped], text
    as_json = json.loads(cli_status(cluster, leader, "--json"))
    assert {m["node_id"] for m in as_json["gone"]} == {killed, stopped}

    # the console's Members table (the page a browser gets, and its live part)
    rows = console_rows(cluster, leader)
    assert rows[leader].startswith("up ") and "LEADER" in rows[leader], rows
    assert rows[killed].startswith("down ") and "DOWN" in rows[killed] and "lease ended" in rows[killed], rows
    assert rows[stopped].startswith("down ") and "stopped" in rows[stopped], rows

    # a node that comes back is UP again
    cluster.start_node(killed)
    back = eventually(lambda: up_of(status_from(cluster, leader)).get(killed), what=f"{killed} UP again")
    assert back["state"] == "UP"
    assert killed not in gone_of(status_from(cluster, leader))
    assert console_rows(cluster, leader)[killed].startswith("up ")

    # the leader itself: the next leader notes that it went
    leader_killed_at = time.time() * 1000
    cluster.nodes[leader].kill()
    went = noted_gone(cluster, killed, leader)
    assert "lease ended" in went["detail"] and went["since_ms"] >= leader_killed_at - 100, went
    assert status_from(cluster, killed)["leader_id"] == killed


def put_seen(cluster: LocalCluster, node_id: str, down_ago_s: float) -> None:
    """A record of a member gone `down_ago_s` ago, as the nodes write them."""
    assert cluster.etcd is not None
    endpoints = cluster.etcd.endpoints
    now = int(time.time() * 1000)
    record = {"node_id": node_id, "address": "127.0.0.1:1", "up_since_ms": now - int(down_ago_s * 1000) - 60_000,
              "down_since_ms": now - int(down_ago_s * 1000), "detail": "stopped"}

    async def put() -> None:
        async with EtcdClient(endpoints) as etcd:
            await etcd.put(f"/orchestrator/{cluster.settings.name}/seen/{node_id}", json.dumps(record).encode())
    asyncio.run(put())


def seen_keys(cluster: LocalCluster) -> set[str]:
    assert cluster.etcd is not None
    endpoints = cluster.etcd.endpoints

    async def read() -> set[str]:
        async with EtcdClient(endpoints) as etcd:
            found = await etcd.get(Get(f"/orchestrator/{cluster.settings.name}/seen/", prefix=True))
            return {kv.key.rsplit("/", 1)[1] for kv in found.kvs}
    return asyncio.run(read())


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# a browser's: a console form is good for the session (cookie) it was shown to
BROWSER = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)


def post_form(url: str, fields: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    try:
        with BROWSER.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_gone_members_are_forgotten_after_a_day_or_by_an_operator(cluster: LocalCluster) -> None:
    client = WorkflowClient(cluster.endpoints, timeout_s=10.0)
    try:
        leader = wait_for_leader(client, 30.0, members=3)["leader_id"]
    finally:
        client.close()
    put_seen(cluster, "long-gone", down_ago_s=25 * 3600)
    put_seen(cluster, "gone-an-hour", down_ago_s=3600)
    # the leader drops a member gone for more than a day (it re-reads the members every few seconds)
    eventually(lambda: "long-gone" not in seen_keys(cluster), timeout_s=15.0, what="long-gone dropped")
    gone = gone_of(status_from(cluster, leader))
    assert "long-gone" not in gone and "gone-an-hour" in gone, gone

    # an operator forgets one from the console (a form of the console's own page)
    html = BROWSER.open(cluster.console_of(leader) + "/cluster", timeout=10).read().decode()
    assert 'action="/cluster/members/gone-an-hour/forget"' in html
    csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    code, _ = post_form(cluster.console_of(leader) + "/cluster/members/gone-an-hour/forget", {"csrf": csrf})
    assert code == 303
    assert "gone-an-hour" not in gone_of(status_from(cluster, leader))
    code, body = post_form(cluster.console_of(leader) + f"/cluster/members/{leader}/forget", {"csrf": csrf})
    assert code == 409 and "registered now" in body   # a member that is up is not forgotten
    code, _ = post_form(cluster.console_of(leader) + "/cluster/members/x/forget", {"csrf": "forged"})
    assert code == 403
    assert leader in up_of(status_from(cluster, leader))
