"""A worker with a stream to every node, through three real nodes on a Redis of their own.

With one stream, a workflow started on a node the worker is not connected to queues its first task
and publishes `ready` for a node that has the worker, which claims it; with a stream to every node,
each node hands its tasks over in the call that decided them: nothing is queued, no `ready` is
published. And a node SIGKILLed takes only its own stream: the worker goes on with the others, with
no reconnect, and every workflow completes, the tasks the dead node pushed included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.procs import EtcdCluster, ManagedProcess
from helpers import BackgroundWorker, publish_calls, running_nodes, unique, wait_ended
from redis_mode import start_test_redis
from worker import Worker, WorkflowClient, task

NODES = 3
COUNT = 30   # workflows of the hand-over test, started round robin over the nodes, one at a time


@dataclass
class Three:
    redis_url: str
    endpoints: list[str]
    clients: list[WorkflowClient]
    processes: list[ManagedProcess]


@pytest.fixture
def three(tmp_path: Path, etcd: EtcdCluster) -> Iterator[Three]:
    """Three nodes of a fresh cluster on a Redis of their own (its command counts are theirs)."""
    server = start_test_redis(tmp_path / "redis")
    try:
        with running_nodes(tmp_path, etcd.endpoints, unique("streams"), [f"node{index}" for index in range(NODES)],
                           server.url) as (endpoints, clients, processes):
            yield Three(server.url, endpoints, clients, processes)
    finally:
        server.stop()


calls: dict[str, int] = {}
calls_lock = threading.Lock()


@task("streams_step")
def step(data: dict) -> dict:
    with calls_lock:
        calls[data["tag"]] = calls.get(data["tag"], 0) + 1
    time.sleep(data.get("sleep_s", 0))
    return {"tag": data["tag"]}


def register(client: WorkflowClient) -> str:
    name = unique("streams_wf")
    client.register_task_def({"name": "streams_step", "responseTimeoutSeconds": 10})
    client.register_workflow_def({"name": name, "tasks": [{
        "name": "streams_step", "taskReferenceName": "only",
        "inputParameters": {"tag": "${workflow.input.tag}", "sleep_s": "${workflow.input.sleep_s}"}}]})
    return name


def run_one_at_a_time(three: Three, name: str, tag: str) -> None:
    for number in range(COUNT):
        client = three.clients[number % NODES]
        workflow_id = client.start_workflow(name, {"tag": f"{tag}-{number}", "sleep_s": 0})
        ended = wait_ended(client, [workflow_id], 20.0)
        assert ended[workflow_id]["status"] == "COMPLETED", ended


def test_with_a_stream_to_every_node_each_node_hands_its_tasks_over_and_nothing_is_queued(three: Three) -> None:
    name = register(three.clients[0])

    one = BackgroundWorker(Worker(endpoints=three.endpoints, handlers=[step], concurrency=6))
    try:
        before = publish_calls(three.redis_url)
        run_one_at_a_time(three, name, "one")
        queued_with_one_stream = publish_calls(three.redis_url) - before
    finally:
        one.stop()
    every = BackgroundWorker(Worker(endpoints=three.endpoints, handlers=[step], concurrency=6, streams=NODES))
    try:
        deadline = time.monotonic() + 10
        while every.worker.connected_endpoints != three.endpoints and time.monotonic() < deadline:
            time.sleep(0.05)
        assert every.worker.connected_endpoints == three.endpoints
        before = publish_calls(three.redis_url)
        run_one_at_a_time(three, name, "every")
        queued_with_every_stream = publish_calls(three.redis_url) - before
    finally:
        every.stop()

    # one stream: the starts on the two nodes without it queued their task and said so (2 of 3)
    assert queued_with_one_stream >= COUNT * 2 // 3, queued_with_one_stream
    assert queued_with_every_stream == 0
    assert every.worker.stats.completed == COUNT and every.worker.stats.reconnects == 0
    assert all(calls[f"{tag}-{n}"] == 1 for tag in ("one", "every") for n in range(COUNT))


def test_a_killed_node_takes_only_its_own_stream_and_every_workflow_completes(three: Three) -> None:
    name = register(three.clients[0])
    background = BackgroundWorker(Worker(endpoints=three.endpoints, handlers=[step], concurrency=30,
                                         streams=NODES))
    try:
        deadline = time.monotonic() + 10
        while background.worker.connected_endpoints != three.endpoints and time.monotonic() < deadline:
            time.sleep(0.05)
        doomed, survivors = three.processes[2], three.clients[:2]
        # every node hands tasks over: some of them are running when their node dies
        started = [three.clients[n % NODES].start_workflow(name, {"tag": f"kill-{n}", "sleep_s": 0.5})
                   for n in range(12)]
        time.sleep(0.2)
        doomed.kill()
        started += [survivors[n % 2].start_workflow(name, {"tag": f"after-{n}", "sleep_s": 0})
                    for n in range(12)]
        ended = wait_ended(survivors[0], started, 30.0)
        assert sorted(state["status"] for state in ended.values()) == ["COMPLETED"] * len(started)
        assert background.worker.connected_endpoints == three.endpoints[:2]
        assert background.worker.stats.reconnects == 0, background.worker.stats   # none had to be opened again
        # the dead node's tasks were not run again: their results went to the other nodes, which took them
        assert all(calls[f"{tag}-{n}"] == 1 for tag in ("kill", "after") for n in range(12)), calls
    finally:
        background.stop()


def test_a_frozen_node_takes_only_its_own_stream_and_its_tasks_complete_through_the_others(three: Three) -> None:
    name = register(three.clients[0])
    background = BackgroundWorker(Worker(endpoints=three.endpoints, handlers=[step], concurrency=30,
                                         streams=NODES, node_timeout_s=1.0))
    frozen = three.processes[2]
    try:
        deadline = time.monotonic() + 10
        while background.worker.connected_endpoints != three.endpoints and time.monotonic() < deadline:
            time.sleep(0.05)
        # tasks of every node, running when the third freezes: its own report to the others
        started = [three.clients[n % NODES].start_workflow(name, {"tag": f"freeze-{n}", "sleep_s": 1.5})
                   for n in range(12)]
        time.sleep(0.2)
        frozen.pause()
        try:
            ended = wait_ended(three.clients[0], started, 30.0)
            assert sorted(state["status"] for state in ended.values()) == ["COMPLETED"] * len(started)
            # it left the frozen one: that link's stream went silent and it opened another. The link
            # tries its node again every 50 ms, and a stream opened again may be counted up until it
            # goes silent too (once in six full runs on 2026-12-07 it was, when this was read): the
            # link is seen without a stream between two tries
            [link] = [link for link in background.worker._links if link.endpoint == three.endpoints[2]]

            def left_it() -> bool:
                return link.opened >= 2 and background.worker.connected_endpoints == three.endpoints[:2]
            deadline = time.monotonic() + 5
            while not left_it() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert left_it(), (link.opened, background.worker.connected_endpoints)
        finally:
            frozen.resume()
        # their leases were extended by the other nodes while the third was frozen: none ran twice
        assert all(calls[f"freeze-{n}"] == 1 for n in range(12)), calls
    finally:
        background.stop()
