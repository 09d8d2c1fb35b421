"""Scenario: Conductor's own Python SDK (conductor-python) through our Conductor REST API.

The official SDK's TaskHandler (bench/conductor_worker.py, unchanged SDK, one worker program
per node, each pointed at that node's HTTP port) serves task type `bench_sdk`; the workflow
`bench_conductor_five` runs five such tasks in sequence.

- Throughput: closed loop of workflows in flight; tasks/s = 5 x completed workflows/s. The SDK
  polls `/tasks/poll/batch` and reports with `/tasks/update-v2`, whose answer is its next task.
- Dispatch: open loop at a light rate; for every task, dispatch = the handler's first statement
  (`time.time()`) - scheduled_at_ms (the decider's clock when it queued the task), as in the
  latency scenario. Measured twice: with the SDK's default poll interval (100 ms: an idle
  worker sleeps up to that long between polls) and with `poll_interval_millis=1` (it then
  sits in our long poll, which answers when the task is queued).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devtools.procs import ManagedProcess

from ..context import Bench
from ..load import EndedStreamWatcher, closed_loop, open_loop, wait_all
from ..stats import distribution, median
from ..targets import check

WORKFLOW = "bench_conductor_five"
TASK_TYPE = "bench_sdk"
STEPS = 5
WORKER = Path(__file__).resolve().parent.parent / "conductor_worker.py"
TARGET_TASKS_PER_S = 500.0
TARGET_DISPATCH_P50_MS = 5.0
LIGHT_RATE = 10.0            # workflows/s: 50 tasks/s


def _register(client: Any) -> None:
    client.register_task_def({"name": TASK_TYPE, "retryCount": 3, "retryDelaySeconds": 0,
                              "responseTimeoutSeconds": 30})
    client.register_workflow_def({
        "name": WORKFLOW, "description": "Five tasks served by conductor-python's TaskHandler over REST",
        "tasks": [{"name": TASK_TYPE, "taskReferenceName": f"s{i}", "inputParameters": {"n": "${workflow.input.n}"}}
                  for i in range(STEPS)],
        "outputParameters": {"n": "${workflow.input.n}"}})


class SdkWorkers:
    """One conductor-python worker program per node, stopped by PID."""

    def __init__(self, bench: Bench, poll_ms: int, threads: int) -> None:
        cluster = bench.cluster()
        ports = cluster.local.console_ports
        self.processes = [ManagedProcess(
            f"conductor-sdk-{node}-{poll_ms}ms", [sys.executable, str(WORKER)], cluster.base_dir / "logs",
            env={**os.environ, "CONDUCTOR_SERVER_URL": f"http://127.0.0.1:{ports[node]}/api",
                 "BENCH_POLL_MS": str(poll_ms), "BENCH_THREADS": str(threads)})
            for node in sorted(ports)]
        time.sleep(3.0)   # the SDK spawns its worker processes

    def __enter__(self) -> SdkWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        for process in self.processes:
            process.stop(timeout=10.0)


def run(bench: Bench) -> dict[str, Any]:
    cluster = bench.cluster()
    _register(cluster.client)
    runs = bench.options.runs
    results: dict[str, Any] = {"settings": {"workflow": WORKFLOW, "steps": STEPS, "sdk_processes_per_node": 1}}
    with cluster.starter(WORKFLOW) as start, EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher:
        with SdkWorkers(bench, poll_ms=100, threads=16):
            throughput = []
            for index in range(runs):
                one = closed_loop(start, watcher, concurrency=64, warmup=50, count=bench.options.pick(1500, 400),
                                  time_limit_s=120)
                throughput.append({"workflows_per_s": round(one.per_s, 1), "tasks_per_s": round(one.per_s * STEPS, 1)})
                print(f"  conductor-python throughput run {index + 1}: {one.per_s * STEPS:.0f} tasks/s "
                      f"({one.per_s:.1f} workflows/s, 64 in flight)", flush=True)
            default_poll = [_dispatch_run(cluster, start, watcher, bench.options.pick(150, 50)) for _ in range(runs)]
        with SdkWorkers(bench, poll_ms=1, threads=16):
            short_poll = [_dispatch_run(cluster, start, watcher, bench.options.pick(150, 50)) for _ in range(runs)]
    tasks_per_s = median(r["tasks_per_s"] for r in throughput)
    polls = (("sdk default poll_interval 100 ms", default_poll), ("poll_interval_millis=1", short_poll))
    medians: dict[str, dict[str, float]] = {
        name: {q: median(r["dispatch_ms"][q] for r in rs) for q in ("p50", "p99")} for name, rs in polls}
    dispatch = {name: {"runs": rs, "median": medians[name]} for name, rs in polls}
    for name, figures in medians.items():
        print(f"  conductor-python dispatch, {name}: p50 {figures['p50']:.2f} ms, "
              f"p99 {figures['p99']:.2f} ms", flush=True)
    results.update({"throughput": {"runs": throughput, "median_tasks_per_s": tasks_per_s}, "dispatch": dispatch,
                    "targets": [
                        check("conductor-python tasks/s through REST", tasks_per_s, ">=", TARGET_TASKS_PER_S,
                              "tasks/s"),
                        check("conductor-python dispatch p50 (poll_interval_millis=1)",
                              medians["poll_interval_millis=1"]["p50"], "<=", TARGET_DISPATCH_P50_MS, "ms"),
                        check("conductor-python dispatch p50 (SDK default poll interval)",
                              medians["sdk default poll_interval 100 ms"]["p50"], "<=",
                              TARGET_DISPATCH_P50_MS, "ms")]})
    return results


def _dispatch_run(cluster: Any, start: Any, watcher: Any, count: int) -> dict[str, Any]:
    launched = open_loop(start, rate=LIGHT_RATE, count=count, time_limit_s=count / LIGHT_RATE + 30)
    done = wait_all(watcher, launched.ids, 60)
    with ThreadPoolExecutor(4) as pool:
        workflows = list(pool.map(cluster.client.get_workflow, list(done)))
    dispatch = [task["output"]["entered_ms"] - task["scheduled_at_ms"] for workflow in workflows
                for task in workflow.get("tasks", []) if (task.get("output") or {}).get("entered_ms")]
    return {"started": len(launched.ids), "completed": len(done), "dispatch_ms": distribution(dispatch)}
