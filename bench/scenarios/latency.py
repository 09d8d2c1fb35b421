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
push (started -> handler entry).

Light load is an open loop at a fixed low rate. Load is an open loop at 80 % of the
open loop's own peak: a ramp of short steps of the same workflow (bench/open_peak.py),
starting from a share of the closed loop's peak (the throughput scenario's, measured
again here if it did not run), finds the highest rate whose starts and completions keep
up with the offer. Every measured run is checked the same way; a run that did not hold
its rate is reported as such and left out of the target's figure.

Start-to-complete: a one-step no-op workflow, one at a time, timed around the call a
user who waits for a workflow makes: ExecuteWorkflow (start, and answer when it ended).
Beside it, alternating workflow by workflow, the same figure through StartWorkflow and
GetWorkflow polled every 2 ms (up to one poll interval of it is the poll's), and for
both the server's ended_at_ms - created_at_ms.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..context import Bench
from ..definitions import ONE_NOOP, THREE_NOOPS, THREE_STAMPS
from ..held_figures import held_target, summarise
from ..knee import RateStep
from ..load import EndedStreamWatcher, closed_loop
from ..open_peak import OpenPeak, find_open_peak, held_run
from ..stats import distribution, median
from ..targets import check, not_held

LIGHT_RATE = 20.0          # workflows/s (60 tasks/s)
LOAD_SHARE = 0.8           # of the open loop's peak workflow rate
LIGHT, LOADED = "light", "80% of the open loop's peak"
LOADED_RUN_S = 3.0         # seconds of each loaded run at least (1 s with --quick)
POLL_S = 0.002
EXECUTE_WAIT_S = 10.0
TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0
TARGET_LOADED_P99_MS = 20.0       # dispatch p99 at 80 % of peak
TARGET_START_TO_COMPLETE_MS = 3.0  # p50, one-task workflow, client side
WAYS = {"execute": "ExecuteWorkflow call (start, answered when the workflow ended)",
        "polled": f"StartWorkflow call -> first GetWorkflow showing COMPLETED (polled every {POLL_S * 1000:g} ms)"}


def run(bench: Bench) -> dict[str, Any]:
    cluster = bench.cluster()
    closed_peak = _closed_loop_peak(bench)
    dispatch: dict[str, Any] = {}
    with cluster.starter(THREE_STAMPS) as start, \
            EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher:
        ramp = find_open_peak(start, watcher, closed_peak, bench.options.pick(4.0, 2.0))
        print(f"  open loop's peak: {_peak_text(ramp)} (closed loop's peak {closed_peak:g} wf/s)", flush=True)
        loads = {LIGHT: LIGHT_RATE}
        if ramp.peak_per_s is not None:
            loads[LOADED] = round(LOAD_SHARE * ramp.peak_per_s, 1)
        for name, rate in loads.items():
            # a loaded run lasts a few seconds whatever its rate: its pace is judged over its middle
            # (bench/knee.py), where a pause of 10 ms is 1 % of one second
            count = (bench.options.pick(150, 60) if name == LIGHT
                     else max(bench.options.pick(1000, 250), round(rate * bench.options.pick(LOADED_RUN_S, 1.0))))
            runs = [_dispatch_run(cluster, start, watcher, rate, count) for _ in range(bench.options.runs)]
            for index, one in enumerate(runs):
                print(f"  dispatch {name} ({rate:g} wf/s) run {index + 1}: p50 {one['dispatch_ms']['p50']:.2f} ms, "
                      f"p99 {one['dispatch_ms']['p99']:.2f} ms over {one['dispatch_ms']['n']} tasks; "
                      f"{one['rate']['describe']}", flush=True)
            dispatch[name] = summarise(rate, count, runs)
    e2e_runs = [_start_to_complete_run(cluster, bench.options.pick(200, 60)) for _ in range(bench.options.runs)]
    e2e_median = {way: {side: {q: median(r[way][side][q] for r in e2e_runs) for q in ("p50", "p99")}
                        for side in ("client_ms", "server_ms")} for way in WAYS}
    for way, text in WAYS.items():
        print(f"  start-to-complete, {text}: client p50 {e2e_median[way]['client_ms']['p50']:.2f} ms, "
              f"p99 {e2e_median[way]['client_ms']['p99']:.2f} ms; server p50 "
              f"{e2e_median[way]['server_ms']['p50']:.2f} ms", flush=True)
    return {"settings": {"dispatch_workflow": THREE_STAMPS, "loads": loads, "load_share": LOAD_SHARE,
                         "start_to_complete_workflow": ONE_NOOP, "start_to_complete_calls": WAYS,
                         "poll_interval_ms": POLL_S * 1000},
            "open_loop_peak": ramp.as_dict(), "dispatch": dispatch,
            "start_to_complete": {"runs": e2e_runs, "median": e2e_median},
            "targets": _targets(ramp, dispatch, e2e_median)}


def _targets(ramp: OpenPeak, dispatch: dict[str, Any], e2e: dict[str, Any]) -> list[dict[str, Any]]:
    light, loaded = dispatch[LIGHT], dispatch.get(LOADED)
    rows = [held_target("dispatch p50, light load", light, "p50", TARGET_P50_MS),
            held_target("dispatch p99, light load", light, "p99", TARGET_P99_MS)]
    name = "dispatch p99 at 80 % of the open loop's peak"
    if loaded is None:
        rows.append(not_held(name, "<=", TARGET_LOADED_P99_MS, "ms",
                             f"no ramp step held its rate ({_steps_text(ramp.steps)}): no peak to take 80 % of"))
    else:
        where = (f"{loaded['rate_workflows_per_s']:g} wf/s = 80 % of the open loop's peak {_peak_text(ramp)}; "
                 f"closed loop's peak {ramp.reference_per_s:g} wf/s")
        rows.append(held_target(name, loaded, "p99", TARGET_LOADED_P99_MS, where))
    rows.append(check(f"start-to-complete p50, one-task workflow, client: {WAYS['execute']}",
                      e2e["execute"]["client_ms"]["p50"], "<=", TARGET_START_TO_COMPLETE_MS, "ms",
                      f"server {e2e['execute']['server_ms']['p50']:g} ms; with GetWorkflow polls "
                      f"{e2e['polled']['client_ms']['p50']:g} ms"))
    return rows


def _closed_loop_peak(bench: Bench) -> float:
    """The throughput scenario's peak in this invocation, else a quick closed-loop measurement."""
    known = bench.results.get("throughput", {}).get("summary", {}).get("peak", {}).get("ours")
    if known:
        return float(known)
    cluster = bench.cluster()
    with cluster.starter(THREE_NOOPS) as start, \
            EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher:
        result = closed_loop(start, watcher, concurrency=64, warmup=100, count=bench.options.pick(600, 300),
                             time_limit_s=60)
    print(f"  closed loop's peak (64 in flight): {result.per_s:.1f} wf/s", flush=True)
    return round(result.per_s, 1)


def _peak_text(ramp: OpenPeak) -> str:
    if ramp.peak_per_s is None:
        return "not found"
    return f"{'at least ' if ramp.at_least else ''}{ramp.peak_per_s:g} wf/s"


def _steps_text(steps: list[RateStep]) -> str:
    return "; ".join(step.describe() for step in steps)


def _dispatch_run(cluster: Any, start: Any, watcher: Any, rate: float, count: int) -> dict[str, Any]:
    begun = time.monotonic()
    step, launched, done = held_run(start, watcher, rate, count)
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
            "starts_per_s": round(step.started_per_s, 1),
            "drain_s": round(elapsed - launched.duration_s, 2),
            "achieved_workflows_per_s": round(step.completed_per_s, 1),
            "rate": {**step.as_dict(), "describe": step.describe()},
            "dispatch_ms": distribution(dispatch), "claim_ms": distribution(claim), "push_ms": distribution(push)}


def _start_to_complete_run(cluster: Any, count: int) -> dict[str, Any]:
    """One workflow at a time, the two ways taking turns (which goes first alternates too)."""
    client = cluster.client
    times: dict[str, dict[str, list[float]]] = {way: {"client_ms": [], "server_ms": []} for way in WAYS}
    warmup = 10
    for n in range(warmup + count):
        for way in (("execute", "polled") if n % 2 == 0 else ("polled", "execute")):
            began = time.perf_counter()
            workflow = _executed(client, n) if way == "execute" else _polled(client, n, began)
            took_ms = (time.perf_counter() - began) * 1000
            if n >= warmup and workflow["status"] == "COMPLETED":
                times[way]["client_ms"].append(took_ms)
                times[way]["server_ms"].append(workflow["ended_at_ms"] - workflow["created_at_ms"])
    return {way: {side: distribution(values) for side, values in sides.items()} for way, sides in times.items()}


def _executed(client: Any, n: int) -> dict[str, Any]:
    workflow: dict[str, Any] = client.execute_workflow(ONE_NOOP, {"n": n}, wait_s=EXECUTE_WAIT_S)
    return workflow


def _polled(client: Any, n: int, began: float) -> dict[str, Any]:
    workflow_id = client.start_workflow(ONE_NOOP, {"n": n})
    deadline = began + EXECUTE_WAIT_S
    while True:
        workflow: dict[str, Any] = client.get_workflow(workflow_id, include_tasks=False)
        if workflow["status"] != "RUNNING" or time.perf_counter() > deadline:
            return workflow
        time.sleep(POLL_S)
