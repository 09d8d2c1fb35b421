"""An event published through a node's API is handled by that node, read for its consumers in the
call that appends it (cluster/events.py `take`), not by whichever node's blocked read comes first.

Two nodes on a Redis of their own, a worker on the first only, a handler starting a one-task
workflow per event; events published through the first node one at a time. Each is handled there,
so each workflow's task is handed over to the worker in its start: the only PUBLISH per event is
the bus's own `published`, no task is queued with a `ready`. Before, the two nodes' blocked reads
took the events in turn, and the starts on the second node queued their tasks (about half)."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from devtools.procs import EtcdCluster
from helpers import BackgroundWorker, index_members, nodes_on_their_own_redis, publish_calls, unique, wait_ended
from orchestrator.store.redis.keys import Keys, cluster_prefix
from worker import Worker, task

COUNT = 20


@task("takes_step")
def step(data: dict) -> dict:
    return {"n": data.get("n")}


def test_an_event_published_through_a_node_is_handled_by_that_node(tmp_path: Path, etcd: EtcdCluster) -> None:
    cluster = unique("takes")
    keys = Keys(cluster_prefix(cluster))
    with nodes_on_their_own_redis(tmp_path, etcd.endpoints, cluster, ["first", "second"]) as (
            redis_url, endpoints, clients):
        first = clients[0]
        name, topic = unique("takes_wf"), unique("takes.topic")
        first.register_task_def({"name": "takes_step"})
        first.register_workflow_def({"name": name, "tasks": [{
            "name": "takes_step", "taskReferenceName": "only", "inputParameters": {"n": "${workflow.input.n}"}}]})
        first.register_event_handler({"name": unique("takes_handler"), "event": topic, "actions": [{
            "action": "start_workflow", "start_workflow": {
                "name": name, "input": {"n": "${$.payload.n}"}, "correlationId": "${$.eventId}"}}]})
        time.sleep(2.5)   # every node runs a new handler within a second
        background = BackgroundWorker(Worker(endpoints=[endpoints[0]], handlers=[step], concurrency=4))
        try:
            background.attached()
            with redis.Redis.from_url(redis_url, decode_responses=True) as r:
                before = publish_calls(redis_url)
                for n in range(COUNT):
                    event_id = first.publish_event(topic, {"n": n})
                    deadline = time.monotonic() + 20
                    while not (ids := index_members(r, keys, "corr", event_id)) and time.monotonic() < deadline:
                        time.sleep(0.01)
                    assert len(ids) == 1, (event_id, ids)
                    assert wait_ended(first, ids, 20.0)[ids[0]]["status"] == "COMPLETED"
                sent = publish_calls(redis_url) - before
        finally:
            background.stop()
    assert sent == COUNT   # `published` once per event, and no `ready`: every task was handed over

