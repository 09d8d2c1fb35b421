"""`orchestrator migrate-state` (issue 23): a state written by the code from before partitions
(efc4a61, run from a copy of that commit's `orchestrator` package with this venv), moved by the
command, then served by a node of this version.

The old node runs against a plain Redis of its own (the old layout only ever ran on one Redis):
definitions (a task type with a concurrency limit, a sub-workflow, a WAIT task, an event handler
and its topic), workflows in several states (one finished, one waiting on a queued task with an
idempotency key, one WAITing, a parent whose child runs, two started by the handler, and one whose
limited task is leased to a worker that vanished). The tests of this module run in order on that
one state: a new node refuses it, a dry run writes nothing, a move interrupted halfway (a node
still refuses) then resumed, a second run refused, then a new node serves every workflow as it was.

The old code is taken with `git archive` (not `git worktree add`: nothing is written to the
repository's own metadata, so parallel test runs cannot leave a stale worktree behind)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, ProcessError, RedisServer, free_port, start_redis
from helpers import BackgroundWorker, wait_for_status
from orchestrator.store.redis.adapter import RedisStore
from orchestrator.store.redis.keys import Keys, cluster_prefix
from orchestrator.store.redis.migrate import Migration
from worker import Worker, WorkflowClient, task

REPO = Path(__file__).resolve().parents[3]
BEFORE_PARTITIONS = "efc4a61"   # the last commit of the layout before partitions
TOPIC = "mg.orders"


@dataclass
class OldState:
    """The Redis holding a state the old code wrote, and what the test started in it."""

    redis: RedisServer
    cluster: str
    folder: Path
    ids: dict[str, str] = field(default_factory=dict)
    migrate_output: str = ""

    @property
    def keys(self) -> Keys:
        return Keys(cluster_prefix(self.cluster))

    def client(self) -> Any:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)


def old_code(folder: Path) -> Path:
    """The `orchestrator` package of the commit before partitions, extracted into `folder` (the
    worker SDK and the API stubs have not changed since, so this venv's serve it)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_PARTITIONS, "orchestrator"],
                             capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True, timeout=60)
    return folder


@dataclass
class OldNode:
    process: ManagedProcess
    client: WorkflowClient
    endpoint: str
    console: str   # its Conductor REST API


def start_old_node(folder: Path, code: Path, etcd: EtcdCluster, server: RedisServer, cluster: str) -> OldNode:
    port, http_port = free_port(), free_port()
    # PYTHONSAFEPATH: `python -m` does not put the working directory (this checkout) before PYTHONPATH
    process = start_node(folder, node_id="old", port=port, redis_url=server.url, etcd_endpoints=etcd.endpoints,
                         cluster=cluster, lease_ttl_s=2.0, http_port=http_port,
                         prefix=["env", f"PYTHONPATH={code}", "PYTHONSAFEPATH=1"])
    endpoint = f"127.0.0.1:{port}"
    client = WorkflowClient([endpoint])
    wait_for_leader(client, 20.0)
    return OldNode(process, client, endpoint, f"http://127.0.0.1:{http_port}")


def poll_and_vanish(console: str, task_type: str) -> None:
    """Claim one task over Conductor's REST poll and never answer: its lease (and its type's count of
    tasks in progress) stays in Redis until the reaper times it out."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{console}/api/tasks/poll/{task_type}?workerid=vanished", timeout=10) as reply:
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"no {task_type} task to poll")


def migrate_state(state: OldState, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "migrate-state", "--redis-url", state.redis.url,
                           "--cluster", state.cluster, *flags], capture_output=True, text=True, timeout=120)


@task("mg_quick")
def quick(data: dict[str, Any]) -> dict[str, Any]:
    return {"done": data.get("n", 0)}


@task("mg_limited")
def limited(data: dict[str, Any]) -> dict[str, Any]:
    return {"limited": True}


@task("mg_held")
def held(data: dict[str, Any]) -> dict[str, Any]:
    return {"held": "at last"}


@task("mg_child_task")
def child_task(data: dict[str, Any]) -> dict[str, Any]:
    return {"child": "done"}


def register(client: WorkflowClient) -> None:
    client.register_task_def({"name": "mg_quick"})
    client.register_task_def({"name": "mg_limited", "concurrentExecLimit": 2})
    client.register_task_def({"name": "mg_child_task"})
    client.register_task_def({"name": "mg_held", "concurrentExecLimit": 1, "responseTimeoutSeconds": 5})
    client.register_workflow_def({"name": "mg_simple", "tasks": [
        {"name": "mg_quick", "taskReferenceName": "quick", "inputParameters": {"n": "${workflow.input.n}"}}],
        "outputParameters": {"quick": "${quick.output}"}})
    client.register_workflow_def({"name": "mg_queued", "tasks": [
        {"name": "mg_limited", "taskReferenceName": "limited"}]})
    client.register_workflow_def({"name": "mg_held_flow", "tasks": [
        {"name": "mg_held", "taskReferenceName": "held"}]})
    client.register_workflow_def({"name": "mg_wait", "tasks": [
        {"name": "hold", "taskReferenceName": "hold", "type": "WAIT"}]})
    client.register_workflow_def({"name": "mg_child", "tasks": [
        {"name": "mg_child_task", "taskReferenceName": "work"}]})
    client.register_workflow_def({"name": "mg_parent", "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": "mg_child"}}]})
    client.register_event_handler({"name": "mg_on_order", "event": TOPIC, "actions": [
        {"action": "start_workflow", "start_workflow": {"name": "mg_wait", "correlationId": "${$.payload.order}"}}]})


def found_by_correlation(client: WorkflowClient, name: str, correlation_id: str, count: int) -> list[str]:
    deadline = time.monotonic() + 20
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found, _ = client.search_workflows(name=name, correlation_id=correlation_id, limit=10)
        if len(found) >= count:
            break
        time.sleep(0.1)
    return [w["workflow_id"] for w in found]


@pytest.fixture(scope="module")
def old_state(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster) -> Iterator[OldState]:
    folder = tmp_path_factory.mktemp("migrate")
    code = old_code(folder / "before-partitions")
    server = start_redis(folder / "redis")   # plain: the old layout's scripts span slots
    state = OldState(server, f"mg{uuid.uuid4().hex[:8]}", folder)
    try:
        old = start_old_node(folder / "old-node", code, etcd, server, state.cluster)
        process, client = old.process, old.client
        try:
            register(client)
            ids = state.ids
            quick_worker = BackgroundWorker(Worker(endpoints=[old.endpoint], handlers=[quick]))
            try:
                ids["finished"] = client.start_workflow("mg_simple", {"n": 7}, correlation_id="mg-finished")
                wait_for_status(client, ids["finished"], "COMPLETED")
            finally:
                quick_worker.stop()
            ids["queued"] = client.start_workflow("mg_queued", {}, correlation_id="mg-queued",
                                                  idempotency_key="mg-key-1")
            ids["waiting"] = client.start_workflow("mg_wait", {}, correlation_id="mg-waiting")
            ids["parent"] = client.start_workflow("mg_parent", {}, correlation_id="mg-parent")
            for order in ("o-1", "o-2"):
                client.publish_event(TOPIC, {"order": order})
            for order in ("o-1", "o-2"):
                started = found_by_correlation(client, "mg_wait", order, 1)
                assert len(started) == 1, f"the old handler did not start a workflow for {order}"
                ids[order] = started[0]
            wait_for_status(client, ids["waiting"], "RUNNING")
            parent = wait_for_status(client, ids["parent"], "RUNNING")
            ids["child"] = next(t["output"]["subWorkflowId"] for t in parent["tasks"] if t["reference_name"] == "sub")
            # last: a limited type's task leased to a worker that vanishes (its lease runs out after the move)
            ids["held"] = client.start_workflow("mg_held_flow", {})
            poll_and_vanish(old.console, "mg_held")
            # while the old node runs the command refuses (it listens on the cluster's channels)
            refused = migrate_state(state)
            assert refused.returncode == 1 and "seems to run" in refused.stderr, refused
        finally:
            client.close()
            process.stop()
        yield state
    finally:
        server.stop()


def whole_state(state: OldState) -> dict[str, tuple[str, Any, bool]]:
    """Every key of the Redis: its type, its value and whether it has a TTL."""
    readers = {"string": "get", "hash": "hgetall", "set": "smembers", "list": "lrange", "zset": "zrange",
               "stream": "xrange"}
    with state.client() as r:
        found: dict[str, tuple[str, Any, bool]] = {}
        for key in r.scan_iter(count=1000):
            kind = r.type(key)
            extra = {"list": (0, -1), "zset": (0, -1, False, True)}.get(kind, ())
            if kind == "zset":
                value: Any = r.zrange(key, 0, -1, withscores=True)
            else:
                value = getattr(r, readers[kind])(key, *extra)
            found[key] = (kind, value, r.ttl(key) > 0)
        return found


def test_a_node_of_this_version_refuses_the_old_layout(old_state: OldState, etcd: EtcdCluster) -> None:
    with pytest.raises(ProcessError, match="layout from before partitions"):
        process = start_node(old_state.folder / "refused", node_id="refused", port=free_port(),
                             redis_url=old_state.redis.url, etcd_endpoints=etcd.endpoints,
                             cluster=old_state.cluster, lease_ttl_s=2.0, http_port=0)
        process.stop()


def test_a_dry_run_writes_nothing(old_state: OldState) -> None:
    before = whole_state(old_state)
    done = migrate_state(old_state, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would move into 64 partitions" in done.stdout, done.stdout
    assert "workflow hashes, into their partitions: 8" in done.stdout, done.stdout
    assert whole_state(old_state) == before


class Interrupted(Exception):
    pass


def interrupt_after(phase: str) -> Any:
    """A progress report that stops the run once `phase` is reported done (as a killed run stops)."""
    def report(line: str) -> None:
        if line.startswith(phase):
            raise Interrupted(line)
    return report


def test_an_interrupted_move_is_resumed_and_a_second_run_refused(old_state: OldState, etcd: EtcdCluster) -> None:
    migration = Migration.from_url(old_state.redis.url, old_state.cluster, partitions=16,
                                   report=interrupt_after("members of shared indexes"))
    try:
        with pytest.raises(Interrupted):
            migration.run()
    finally:
        migration.close()
    # half moved: the keys a node knows the old layout by are still there, so a node still refuses
    with old_state.client() as r:
        assert r.exists(f"wfo:{old_state.cluster}:defs:rev") and not r.exists(old_state.keys.partition_count)
        assert not list(r.scan_iter(match=f"wfo:{old_state.cluster}:wf:*"))
    with pytest.raises(ProcessError, match="layout from before partitions"):
        start_node(old_state.folder / "refused-half", node_id="refused-half", port=free_port(),
                   redis_url=old_state.redis.url, etcd_endpoints=etcd.endpoints, cluster=old_state.cluster,
                   lease_ttl_s=2.0, http_port=0).stop()
    done = migrate_state(old_state)   # no --partitions: the interrupted run's 16
    assert done.returncode == 0, done.stderr
    assert "resuming an interrupted run into 16 partitions" in done.stdout, done.stdout
    assert "ended stream entries, into their workflow's partition's stream: 1" in done.stdout, done.stdout
    assert "workflow hashes" not in done.stdout, done.stdout   # moved by the interrupted run
    with old_state.client() as r:
        assert r.get(old_state.keys.partition_count) == "16"
        left = list(r.scan_iter(match=f"wfo:{old_state.cluster}:*"))
        assert left == [], f"keys of the old layout left: {left}"
        # the vanished worker's attempt is still counted against its type's limit, now in the global slot
        assert r.zcard(f"{old_state.keys.global_prefix}:inprog:mg_held") == 1
    again = migrate_state(old_state)
    assert again.returncode == 1 and "partitioned layout already" in again.stderr, again


def test_a_node_serves_the_moved_state(old_state: OldState, etcd: EtcdCluster) -> None:
    ids = old_state.ids
    port = free_port()
    process = start_node(old_state.folder / "new-node", node_id="new", port=port, redis_url=old_state.redis.url,
                         etcd_endpoints=etcd.endpoints, cluster=old_state.cluster, lease_ttl_s=2.0, http_port=0)
    client = WorkflowClient([f"127.0.0.1:{port}"])
    worker: BackgroundWorker | None = None
    try:
        wait_for_leader(client, 20.0)
        # every workflow found, with its tasks, as the old node left it
        finished = client.get_workflow(ids["finished"])
        assert finished["status"] == "COMPLETED" and finished["output"] == {"quick": {"done": 7}}
        assert [t["status"] for t in finished["tasks"]] == ["COMPLETED"]
        assert [t["status"] for t in client.get_workflow(ids["queued"])["tasks"]] == ["SCHEDULED"]
        assert [t["status"] for t in client.get_workflow(ids["waiting"])["tasks"]] == ["IN_PROGRESS"]
        assert client.get_workflow(ids["child"])["status"] == "RUNNING"
        # search by name, status and correlation id
        for name, key in (("mg_queued", "queued"), ("mg_parent", "parent"), ("mg_child", "child")):
            assert [w["workflow_id"] for w in client.search_workflows(name=name)[0]] == [ids[key]]
        assert found_by_correlation(client, "mg_simple", "mg-finished", 1) == [ids["finished"]]
        completed = {w["workflow_id"] for w in client.search_workflows(status="COMPLETED", limit=50)[0]}
        assert completed == {ids["finished"]}
        running = {w["workflow_id"] for w in client.search_workflows(status="RUNNING", limit=50)[0]}
        assert running == {ids[k] for k in ("queued", "waiting", "parent", "child", "o-1", "o-2", "held")}
        # a repeated start with the old idempotency key answers the old workflow
        assert client.start_workflow("mg_queued", {}, idempotency_key="mg-key-1") == ids["queued"]
        # the finished workflow is in `ended`, where retention reads it
        assert ids["finished"] in {wid for _, wid in asyncio.run(_ended_before(old_state))}
        # the WAIT task is signalled; the queued tasks (a limited type's, a child's) are claimed and complete
        client.signal_task(ids["waiting"], "hold", output={"ok": True})
        wait_for_status(client, ids["waiting"], "COMPLETED")
        worker = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"], handlers=[limited, child_task, held]))
        wait_for_status(client, ids["queued"], "COMPLETED")
        # the vanished worker's lease runs out; its retry is let in by the type's limit of 1, and completes
        held_flow = wait_for_status(client, ids["held"], "COMPLETED", timeout_s=30)
        assert [t["status"] for t in held_flow["tasks"]] == ["TIMED_OUT", "COMPLETED"]
        assert wait_for_status(client, ids["parent"], "COMPLETED")["output"] == {"child": "done"}
        # the topic still holds its events, and its handler's group reads on from where it was
        assert [e["payload"] for e in client.read_events(TOPIC)] == [{"order": "o-1"}, {"order": "o-2"}]
        client.publish_event(TOPIC, {"order": "o-3"})
        assert len(found_by_correlation(client, "mg_wait", "o-3", 1)) == 1
        time.sleep(1.0)   # an old event handled again would start a second workflow by now
        for order in ("o-1", "o-2"):
            assert found_by_correlation(client, "mg_wait", order, 1) == [ids[order]]
    finally:
        if worker is not None:
            worker.stop()
        client.close()
        process.stop()


async def _ended_before(state: OldState) -> list[tuple[str, str]]:
    store = RedisStore.from_url(state.redis.url, cluster_prefix(state.cluster))
    try:
        await store.prepare()
        return await store.ended_before(int(time.time() * 1000) + 60_000, 100)
    finally:
        await store.close()
