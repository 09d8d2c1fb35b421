"""Scenarios 3 and 4: dispatch latency and start-to-complete latency.

Dispatch latency (nothing in the node is instrumented): workflows of three
`bench_stamp` steps, whose handler (in a worker process) returns `time.time()` at
its first statement. Afterwards each workflow is read back with GetWorkflow, and
for every task attempt

    dispatch = handler entry (worker clock) - scheduled_at_ms (the decider's clock
               when it decided to schedule the step, just before the Lua call that
               queues it and publishes `ready`)

It covers the queueing write, the `ready` pub/sub hop, the claim script on some
node, the push over the gRPC stream and the SDK starting the handler; all
processes share one clock. scheduled_at_ms and started_at_ms are whole ms
(truncated), so each figure carries up to 1 ms of rounding (+0.5 ms on average).
It splits into claim (scheduled -> started_at_ms, the claim script's clock) and
push (started -> handler entry). Light load is an open loop at a fixed low rate;
load is an open loop at 80 % of the peak three_noops rate of the throughput
scenario (measured again here if that scenario did not run).

Start-to-complete: a one-step no-op workflow, one at a time. Client-side, from
just before the StartWorkflow call to the first GetWorkflow (polled every 2 ms)
that shows COMPLETED, which includes up to one poll interval; server-side,
ended_at_ms - created_at_ms from the stored workflow.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..context import Bench
from ..definitions import ONE_NOOP, THREE_NOOPS, THREE_STAMPS
from ..load import EndedStreamWatcher, closed_loop, open_loop, wait_all
from ..stats import distribution, median
from ..targets import check

LIGHT_RATE = 20.0          # workflows/s (60 tasks/s)
LOAD_SHARE = 0.8           # of the peak workflow rate
POLL_S = 0.002
TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0
TARGET_LOADED_P99_MS = 20.0       # dispatch p99 at 80 % of peak
TARGET_START_TO_COMPLETE_MS = 3.0  # p50, one-task workflow, client side


def run(bench: Bench) -> dict[str, Any]:
    cluster = bench.cluster()
    peak = _peak(bench)
    loads = {"light": (LIGHT_RATE, bench.options.pick(150, 60)),
             "80% of peak": (round(LOAD_SHARE * peak, 1), bench.options.pick(1000, 250))}
    dispatch: dict[str, Any] = {}
    with cluster.starter(THREE_STAMPS) as start, \
            EndedStreamWatcher(cluster.redis_url, cluster.ended_key) as watcher:
        for name, (rate, count) in loads.items():
            runs = [_dispatch_run(cluster, start, watcher, rate, count) for _ in range(bench.options.runs)]
            for index, one in enumerate(runs):
                print(f"  dispatch {name} ({rate:g} wf/s) run {index + 1}: p50 {one['dispatch_ms']['p50']:.2f} ms, "
                      f"p99 {one['dispatch_ms']['p99']:.2f} ms over {one['dispatch_ms']['n']} tasks", flush=True)
            dispatch[name] = {"rate_workflows_per_s": rate, "workflows_per_run": count, "runs": runs,
                              "median": {part: {q: median(r[part][q] for r in runs) for q in ("p50", "p95", "p99")}
                                         for part in ("dispatch_ms", "claim_ms", "push_ms")}}
    e2e_runs = [_start_to_complete_run(cluster, bench.options.pick(200, 60)) for _ in range(bench.options.runs)]
    e2e_median = {side: {q: median(r[side][q] for r in e2e_runs) for q in ("p50", "p99")}
                  for side in ("client_ms", "server_ms")}
    print(f"  start-to-complete: client p50 {e2e_median['client_ms']['p50']:.1f} ms, "
          f"p99 {e2e_median['client_ms']['p99']:.1f} ms", flush=True)
    light = dispatch["light"]["median"]["dispatch_ms"]
    return {"settings": {"dispatch_workflow": THREE_STAMPS, "loads": loads, "peak_used": peak,
                         "start_to_complete_workflow": ONE_NOOP, "poll_interval_ms": POLL_S * 1000},
            "dispatch": dispatch, "start_to_complete": {"runs": e2e_runs, "median": e2e_median},
            "targets": [check("dispatch p50, light load", light["p50"], "<=", TARGET_P50_MS, "ms"),
                        check("dispatch p99, light load", light["p99"], "<=", TARGET_P99_MS, "ms"),
                        check("dispatch p99 at 80 % of peak", dispatch["80% of peak"]["median"]["dispatch_ms"]["p99"],
                              "<=", TARGET_LOADED_P99_MS, "ms"),
                        check("start-to-complete p50, one-task workflow (client)", e2e_median["client_ms"]["p50"],
                              "<=", TARGET_START_TO_COMPLETE_MS, "ms")]}


def _peak(bench: Bench) -> float:
    """The throughput scenario's peak in this invocation, else a quick closed-loop measurement."""
    known = bench.results.get("throughput", {}).get("summary", {}).get("peak", {}).get("ours")
    if known:
        return float(known)
    cluster = bench.cluster()
    with cluster.starter(THREE_NOOPS) as start, \
            EndedStreamWatcher(cluster.redis_url, cluster.ended_key) as watcher:
        result = closed_loop(start, watcher, concurrency=64, warmup=100, count=bench.options.pick(600, 300),
                             time_limit_s=60)
    print(f"  peak (closed loop, 64 in flight): {result.per_s:.1f} wf/s", flush=True)
    return result.per_s


def _dispatch_run(cluster: Any, start: Any, watcher: Any, rate: float, count: int) -> dict[str, Any]:
    begun = time.monotonic()
    launched = open_loop(start, rate=rate, count=count, time_limit_s=count / rate + 30)
    done = wait_all(watcher, launched.ids, 60)
    elapsed = time.monotonic() - begun
    with ThreadPoolExecutor(4) as pool:
        workflows = list(pool.map(cluster.client.get_workflow, list(done)))
    dispatch, claim, push = [], [], []
    for workflow in workflows:
        for task in workflow.get("tasks", []):
            entered = (task.get("output") or {}).get("entered_ms")
            if entered is None or not task.get("started_at_ms"):
                continue
            dispatch.append(entered - task["scheduled_at_ms"])
            claim.append(task["started_at_ms"] - task["scheduled_at_ms"])
            push.append(entered - task["started_at_ms"])
    return {"started": len(launched.ids), "completed": len(done), "start_errors": launched.start_errors,
            "max_start_lag_ms": round(launched.max_lag_ms, 1),
            "starts_per_s": round(len(launched.ids) / max(launched.duration_s, 1e-9), 1),
            "drain_s": round(elapsed - launched.duration_s, 2),
            "achieved_workflows_per_s": round(len(done) / elapsed, 1),
            "dispatch_ms": distribution(dispatch), "claim_ms": distribution(claim), "push_ms": distribution(push)}


def _start_to_complete_run(cluster: Any, count: int) -> dict[str, Any]:
    client = cluster.client
    client_ms: list[float] = []
    server_ms: list[float] = []
    warmup = 10
    for n in range(warmup + count):
        began = time.perf_counter()
        workflow_id = client.start_workflow(ONE_NOOP, {"n": n})
        deadline = began + 10.0
        while True:
            workflow = client.get_workflow(workflow_id, include_tasks=False)
            if workflow["status"] != "RUNNING" or time.perf_counter() > deadline:
                break
            time.sleep(POLL_S)
        if n >= warmup and workflow["status"] == "COMPLETED":
            client_ms.append((time.perf_counter() - began) * 1000)
            server_ms.append(workflow["ended_at_ms"] - workflow["created_at_ms"])
    return {"client_ms": distribution(client_ms), "server_ms": distribution(server_ms)}
