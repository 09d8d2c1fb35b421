"""Retention: finished workflows leave Redis after their retention, archived first, and are still
found by GetWorkflow and search. A real node (the leader runs the sweep), real Redis, a real
archive directory."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import free_port
from helpers import BackgroundWorker, wait_for_status
from helpers_layouts import StoreLayout
from orchestrator.store.redis.keys import cluster_prefix
from worker import Worker, WorkflowClient, task

RETENTION_S = 1.0


def test_finished_workflows_are_archived_then_forgotten_and_still_found(tmp_path: Path, etcd: Any,
                                                                          layout: StoreLayout) -> None:
    cluster, port, http_port = f"r{uuid.uuid4().hex[:8]}", free_port(), free_port()
    archive = tmp_path / "archive"
    on_layout = layout.node_options()
    process = start_node(tmp_path, node_id="keeper", port=port, redis_url=on_layout["redis_url"],
                         etcd_endpoints=etcd.endpoints, cluster=cluster, lease_ttl_s=2.0, http_port=http_port,
                         extra=[*on_layout["extra"], "--retention", str(RETENTION_S), "--archive-dir", str(archive)])
    client = WorkflowClient([f"127.0.0.1:{port}"])
    try:
        wait_for_leader(client, 20.0)
        client.register_task_def({"name": "kept"})
        client.register_workflow_def({"name": "kept_flow", "tasks": [{"name": "kept", "taskReferenceName": "k",
                                                                "inputParameters": {"n": "${workflow.input.n}"}}]})

        @task("kept")
        def kept(data: dict[str, Any]) -> dict[str, Any]:
            return {"seen": data}

        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"], handlers=[kept]))
        try:
            done = [client.start_workflow("kept_flow", {"n": i}, correlation_id="batch-1") for i in range(30)]
            for workflow_id in done:
                wait_for_status(client, workflow_id, "COMPLETED")
        finally:
            background.stop()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and asyncio.run(_stored(layout, cluster, done)):
            time.sleep(0.2)
        assert asyncio.run(_stored(layout, cluster, done)) == 0, "still in Redis after retention"
        assert list(archive.rglob("*.jsonl.gz")), "nothing archived"
        # still found: one by one, and by search (paging across the archive)
        again = client.get_workflow(done[0])
        assert again["status"] == "COMPLETED" and again["input"] == {"n": 0}
        assert again["tasks"][0]["output"] == {"seen": {"n": 0}}
        found: list[str] = []
        token = ""
        while True:
            page, token = client.search_workflows(correlation_id="batch-1", limit=7, page_token=token)
            found += [w["workflow_id"] for w in page]
            if not token:
                break
        assert sorted(found) == sorted(done)
        # the console opens it too, from the archive
        page_html = httpx.get(f"http://127.0.0.1:{http_port}/executions/{done[3]}", timeout=10).text
        assert 'id="archived"' in page_html and "kept_flow" in page_html and "&#34;n&#34;: 3\n" in page_html
        assert "COMPLETED" in page_html and "<td>k</td>" in page_html
        # free text reaches into the archive too (as stored: compact JSON)
        page, _ = client.search_workflows(text='{"n":17}', limit=50)
        assert [w["workflow_id"] for w in page] == [done[17]]
        # the audit stream and the indexes were trimmed with them
        assert asyncio.run(_leftovers(layout, cluster)) == (0, 0)
    finally:
        client.close()
        process.stop()


async def _stored(layout: StoreLayout, cluster: str, ids: list[str]) -> int:
    store = layout.store(cluster_prefix(cluster))
    try:
        return int(sum([await store._redis.exists(store.keys.workflow(i)) for i in ids]))
    finally:
        await store.close()


async def _leftovers(layout: StoreLayout, cluster: str) -> tuple[int, int]:
    store = layout.store(cluster_prefix(cluster))
    try:
        async with store._redis.pipeline(transaction=False) as pipe:
            for p in store.keys.all_partitions():
                pipe.xlen(store.keys.ended(p))
                pipe.zcard(store.keys.index(p, "corr", "batch-1"))
            counts = [int(n) for n in await pipe.execute()]
        return sum(counts[0::2]), sum(counts[1::2])
    finally:
        await store.close()


def test_the_directory_archive_finds_one_record_by_reading_one_member(tmp_path: Path) -> None:
    """Many batches in one hour's file: a lookup reads only the batch (gzip member) that holds it."""
    from orchestrator.archive import DirectoryArchive

    archive = DirectoryArchive(tmp_path, writer="node-1")
    ended = 1_800_000_000_000
    batches = [[{"workflow_id": f"wf-{b}-{i}", "name": "n", "status": "COMPLETED", "correlation_id": "",
                 "created_at_ms": ended, "ended_at_ms": ended, "input": {"blob": "x" * 200}}
                for i in range(1000)] for b in range(20)]

    async def scenario() -> None:
        for batch in batches:
            await archive.put(batch)
        assert len(list(tmp_path.rglob("*.jsonl.gz"))) == 1
        started = time.monotonic()
        for b in range(0, 20, 2):
            found = await archive.get(f"wf-{b}-{b * 37}")
            assert found is not None and found["workflow_id"] == f"wf-{b}-{b * 37}"
        assert time.monotonic() - started < 1.0
        assert await archive.get("wf-absent") is None
        page = await archive.search(name="n", status="", correlation_id="", created_from_ms=0, created_to_ms=0,
                                    cursor="", limit=5)
        assert [w["workflow_id"] for w in page.workflows] == [f"wf-19-{i}" for i in range(999, 994, -1)]

    asyncio.run(scenario())
