"""A workflow an event handler starts is created and decided in one script, as an API start is
(issue 21): before, the start script created it and a second script applied its first decision.
One real node with a worker, on a Redis of this module's own, so INFO commandstats counts its work
alone; each event starts a one-task workflow that the worker completes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, free_port
from helpers import BackgroundWorker
from redis_mode import start_test_redis
from worker import Worker, WorkflowClient, task

EVENTS = 40
TASK_TYPE = "es_noop"
# Scripts per event-started one-task workflow: the start with its first decision (the task handed to
# the node's worker in it), the worker's result with the end, and the event's own bookkeeping.
# Measured 3.1; 4.1 when the first decision was a script of its own.
MAX_SCRIPTS_PER_WORKFLOW = 3.5


@task(TASK_TYPE)
def noop(data: dict[str, Any]) -> dict[str, Any]:
    return {"seen": data.get("order")}


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster) -> Iterator[tuple[str, WorkflowClient]]:
    folder = tmp_path_factory.mktemp("event_starts")
    server = start_test_redis(folder / "redis")
    port = free_port()
    node = start_node(folder / "node", node_id="events", port=port, redis_url=server.url,
                      etcd_endpoints=etcd.endpoints, cluster=f"es{uuid.uuid4().hex[:8]}", lease_ttl_s=2.0,
                      http_port=0, log_level="WARNING")
    client = WorkflowClient([f"127.0.0.1:{port}"])
    background = None
    try:
        wait_for_leader(client, 20.0)
        background = BackgroundWorker(Worker(endpoints=[f"127.0.0.1:{port}"], handlers=[noop], concurrency=8))
        yield server.url, client
    finally:
        if background is not None:
            background.stop()
        client.close()
        node.stop()
        server.stop()


def _commands(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def _completed(client: WorkflowClient, name: str) -> int:
    found, _ = client.search_workflows(name=name, status="COMPLETED", limit=1000)
    return len(found)


def test_an_event_started_workflow_is_decided_in_its_start_script(one_node: tuple[str, WorkflowClient]) -> None:
    redis_url, client = one_node
    name, topic = f"es_{uuid.uuid4().hex[:6]}", f"es.{uuid.uuid4().hex[:6]}"
    client.register_task_def({"name": TASK_TYPE, "retryCount": 0})
    client.register_workflow_def({"name": name, "tasks": [
        {"name": TASK_TYPE, "taskReferenceName": "only", "inputParameters": {"order": "${workflow.input.order}"}}]})
    client.register_event_handler({"name": f"starter_{name}", "event": topic, "actions": [
        {"action": "start_workflow", "start_workflow": {"name": name, "input": {"order": "${$.payload.order}"}}}]})

    def publish_and_wait(count: int, done_before: int) -> None:
        for order in range(count):   # one at a time: each event's work counted alone
            client.publish_event(topic, {"order": order})
            deadline = time.monotonic() + 20
            while _completed(client, name) < done_before + order + 1:
                assert time.monotonic() < deadline, f"the workflow of event {order} did not complete"
                time.sleep(0.01)

    with redis.Redis.from_url(redis_url, decode_responses=True) as counting:
        publish_and_wait(2, 0)   # warm: the handler's group read, scripts loaded, definitions cached
        before = _commands(counting)
        publish_and_wait(EVENTS, 2)
        after = _commands(counting)
    scripts = (after.get("evalsha", 0) - before.get("evalsha", 0)) / EVENTS
    assert scripts <= MAX_SCRIPTS_PER_WORKFLOW, f"{scripts:.2f} scripts per event-started workflow"
    assert _completed(client, name) == EVENTS + 2
