"""Scenario: the event bus end to end (choreography beside orchestration).

Handlers (Conductor's shape) start a workflow per event; every node consumes through one
consumer group.

- Handled per second: events appended straight to the topic's stream in one pipelined burst
  (the bench's own Redis connection writes them as PublishEvent would, so the publishers'
  speed is not what is measured), handled by a handler that starts `bench_parked` (one task
  nobody serves: the workflow is created and its task queued, then nothing more runs); the
  rate is events / (last workflow created - first event appended), read from the name index.
- Latency: events published through the API at a light rate to a handler that starts a
  one-step `bench_stamp` workflow with the event id as its correlation id; publish -> the
  handler of its first task running = the task's `entered_ms` - the event id's time.
- CPU per workflow: the same number of one-step no-op workflows, at the same rate, started once
  by StartWorkflow and once by events through a handler, each round robin over the nodes (a node
  handles the events published to it), each run to completion (the events' run
  until as many workflows ended as events were published: which workflows the events started is
  read after the window, being the bench's work, not the bus's); CPU of the nodes, workers, Redis
  and etcd per workflow, side by side. The difference is what the bus adds.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.store.redis.keys import Keys
from worker import WorkflowClient

from ..cluster import CpuMeter
from ..context import Bench
from ..definitions import ONE_NOOP, PARKED, STAMP_TASK
from ..load import EndedStreamWatcher, open_loop, wait_all
from ..stats import distribution, median
from ..targets import check

ONE_STAMP = "bench_one_stamp"
TARGET_HANDLED_PER_S = 1000.0
TARGET_P50_MS = 5.0
TARGET_CPU_OVERHEAD = 0.10
LIGHT_RATE = 20.0
CPU_RATE = 60.0


def _handler(name: str, topic: str, workflow: str) -> dict[str, Any]:
    return {"name": name, "event": topic, "actions": [{"action": "start_workflow", "start_workflow": {
        "name": workflow, "input": {"n": "${$.payload.n}"}, "correlationId": "${$.eventId}"}}]}


def _setup(client: WorkflowClient, run: str) -> dict[str, str]:
    client.register_workflow_def({"name": ONE_STAMP, "description": "One step that stamps its start time",
                                  "tasks": [{"name": STAMP_TASK, "taskReferenceName": "one",
                                             "inputParameters": {"n": "${workflow.input.n}"}}]})
    topics = {kind: f"bench.{kind}.{run}" for kind in ("parked", "stamp", "noop")}
    for kind, workflow in (("parked", PARKED), ("stamp", ONE_STAMP), ("noop", ONE_NOOP)):
        client.register_event_handler(_handler(f"bench_{kind}_{run}", topics[kind], workflow))
    time.sleep(2.5)   # every node picks up new handlers within a second
    return topics


def _workflow_ids(bench: Bench, event_ids: list[str], timeout_s: float) -> list[str]:
    """The workflows the events started (correlation id = event id), as they appear: the correlation
    index of every partition (a workflow started by an event is in any of them)."""
    redis = bench.cluster().redis
    keys = Keys(bench.cluster().prefix)
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(event_ids) and time.monotonic() < deadline:
        missing = [e for e in event_ids if e not in found]
        with redis.pipeline(transaction=False) as pipe:
            for event_id in missing:
                for p in keys.all_partitions():
                    pipe.zrange(keys.index(p, "corr", event_id), 0, 0)
            replies = pipe.execute()
        per = keys.partitions
        for i, event_id in enumerate(missing):
            ids = [one for ids in replies[i * per:(i + 1) * per] for one in ids]
            if ids:
                found[event_id] = ids[0]
        time.sleep(0.05)
    return [found[e] for e in event_ids if e in found]


def _named(redis: Any, keys: Keys, name: str) -> int:
    """How many workflows of this name the name index holds, over every partition."""
    with redis.pipeline(transaction=False) as pipe:
        for p in keys.all_partitions():
            pipe.zcard(keys.index(p, "name", name))
        return sum(pipe.execute())


def _handled_rate(bench: Bench, topic: str, count: int) -> dict[str, Any]:
    cluster = bench.cluster()
    redis, keys = cluster.redis, Keys(cluster.prefix)
    before = _named(redis, keys, PARKED)
    stream = keys.events(topic)
    began = time.time()
    with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(stream, {"p": f'{{"n":{n}}}', "k": "", "at": int(time.time() * 1000)})
        pipe.execute()
    appended = time.time()
    deadline = time.monotonic() + 120
    while _named(redis, keys, PARKED) - before < count and time.monotonic() < deadline:
        time.sleep(0.02)
    created = _named(redis, keys, PARKED) - before
    took = time.time() - began
    return {"events": count, "workflows_created": created, "append_s": round(appended - began, 3),
            "seconds": round(took, 3), "handled_per_s": round(created / took, 1)}


def _latency(bench: Bench, topic: str, count: int) -> dict[str, Any]:
    cluster = bench.cluster()
    client = cluster.client
    assert client is not None
    event_ids: list[str] = []
    with EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher:   # before: it sees new ends only
        for n in range(count):
            event_ids.append(client.publish_event(topic, {"n": n}))
            time.sleep(1 / LIGHT_RATE)
        ids = _workflow_ids(bench, event_ids, 60)
        wait_all(watcher, ids, 60)
    with ThreadPoolExecutor(4) as pool:
        workflows = list(pool.map(client.get_workflow, ids))
    latency = []
    for workflow in workflows:
        published_ms = int(str(workflow.get("correlation_id", "0-0")).split("-")[0])
        for task in workflow.get("tasks", []):
            entered = (task.get("output") or {}).get("entered_ms")
            if entered:
                latency.append(entered - published_ms)
    return {"events": count, "workflows": len(ids), "publish_to_first_task_ms": distribution(latency)}


def _cpu_per_workflow(bench: Bench, topic: str, count: int) -> dict[str, Any]:
    """One-step no-op workflows at CPU_RATE/s: started by the API, then by events."""
    cluster = bench.cluster()
    results: dict[str, Any] = {}
    with EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher, cluster.starter(ONE_NOOP) as start:
        with CpuMeter(cluster.pids()) as meter:
            launched = open_loop(start, rate=CPU_RATE, count=count, time_limit_s=count / CPU_RATE + 30)
            done = wait_all(watcher, launched.ids, 60)
        results["api"] = {"workflows": len(done), "cpu_ms_per_workflow": round(meter.cpu_ms() / max(1, len(done)), 3),
                          "shares": meter.share}
        # through the same clients, round robin over the nodes as the starts: a node handles what is
        # published to it
        event_ids: list[str] = []
        lock = threading.Lock()

        def publish(n: int) -> str:
            event_id = start.clients[n % len(start.clients)].publish_event(topic, {"n": n})
            with lock:
                event_ids.append(event_id)
            return event_id

        ended_before = watcher.recorded
        with CpuMeter(cluster.pids()) as meter:
            open_loop(publish, rate=CPU_RATE, count=count, time_limit_s=count / CPU_RATE + 30)
            watcher.wait_recorded(ended_before + count, 60)
        # which workflows the events started (and that each ended) is read after the window: that
        # lookup, one ZRANGE per event and partition (57,600 for 900 events), is the bench's work
        ids = _workflow_ids(bench, event_ids, 60)
        done = wait_all(watcher, ids, 60)
        results["events"] = {"workflows": len(done),
                             "cpu_ms_per_workflow": round(meter.cpu_ms() / max(1, len(done)), 3),
                             "shares": meter.share}
    results["overhead"] = round(results["events"]["cpu_ms_per_workflow"] / results["api"]["cpu_ms_per_workflow"]
                                - 1, 3)
    return results


def run(bench: Bench) -> dict[str, Any]:
    cluster = bench.cluster()
    assert cluster.client is not None
    topics = _setup(cluster.client, uuid.uuid4().hex[:6])
    runs = bench.options.runs
    handled = [_handled_rate(bench, topics["parked"], bench.options.pick(3000, 1000)) for _ in range(runs)]
    for one in handled:
        print(f"  events handled: {one['handled_per_s']:.0f}/s ({one['workflows_created']} workflows from "
              f"{one['events']} events in {one['seconds']} s)", flush=True)
    latency = [_latency(bench, topics["stamp"], bench.options.pick(150, 50)) for _ in range(runs)]
    for one in latency:
        d = one["publish_to_first_task_ms"]
        print(f"  publish -> first task running: p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms", flush=True)
    cpu = [_cpu_per_workflow(bench, topics["noop"], bench.options.pick(900, 300)) for _ in range(runs)]
    for one in cpu:
        print(f"  CPU per workflow: API {one['api']['cpu_ms_per_workflow']:.2f} ms, events "
              f"{one['events']['cpu_ms_per_workflow']:.2f} ms (+{100 * one['overhead']:.0f} %)", flush=True)
    handled_per_s = median(r["handled_per_s"] for r in handled)
    p50 = median(r["publish_to_first_task_ms"]["p50"] for r in latency)
    p99 = median(r["publish_to_first_task_ms"]["p99"] for r in latency)
    overhead = median(r["overhead"] for r in cpu)
    return {"settings": {"light_rate": LIGHT_RATE, "cpu_rate": CPU_RATE},
            "handled": {"runs": handled, "median_per_s": handled_per_s},
            "latency": {"runs": latency, "median_p50_ms": p50, "median_p99_ms": p99},
            "cpu": {"runs": cpu, "median_overhead": overhead},
            "targets": [check("events handled per second", handled_per_s, ">=", TARGET_HANDLED_PER_S, "events/s"),
                        check("publish -> first task running, p50", p50, "<=", TARGET_P50_MS, "ms"),
                        check("CPU the bus adds per workflow", 100 * overhead, "<=", 100 * TARGET_CPU_OVERHEAD, "%")]}
