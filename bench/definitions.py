"""The task and workflow definitions the benchmarks register (besides the demo ones).

`noop` and `three_noops` come from `deploy/demo` (through `orchestrator.drill.register_demo`);
the ones here add a handler that stamps its entry time, a one-step workflow and a task
type that no worker serves, so its workflows stay RUNNING with a queued task.
"""

from __future__ import annotations

from typing import Any

from devtools.drill import register_demo

STAMP_TASK = "bench_stamp"
PARKED_TASK = "bench_parked"

THREE_NOOPS = "three_noops"          # deploy/demo/three_noops.json
THREE_STAMPS = "bench_three_stamps"
ONE_NOOP = "bench_one_noop"
PARKED = "bench_parked"
TIMER_PROBE = "bench_timer_probe"
TIMER_PROBE_WAIT_S = 0.4

TASK_DEFS: list[dict[str, Any]] = [
    {"name": STAMP_TASK, "description": "Returns the time its handler started (dispatch latency)",
     "retryCount": 3, "retryDelaySeconds": 0, "responseTimeoutSeconds": 5},
    {"name": PARKED_TASK, "description": "No worker serves it: its workflows stay in flight (scale)",
     "retryCount": 0, "responseTimeoutSeconds": 60},
]


def _steps(task: str, refs: list[str]) -> list[dict[str, Any]]:
    return [{"name": task, "taskReferenceName": ref, "inputParameters": {"n": "${workflow.input.n}"}}
            for ref in refs]


WORKFLOW_DEFS: list[dict[str, Any]] = [
    {"name": THREE_STAMPS, "description": "Three steps whose handlers stamp their start time",
     "tasks": _steps(STAMP_TASK, ["one", "two", "three"]), "outputParameters": {"n": "${workflow.input.n}"}},
    {"name": ONE_NOOP, "description": "One no-op step (start-to-complete latency)",
     "tasks": _steps("noop", ["one"]), "outputParameters": {"n": "${workflow.input.n}"}},
    {"name": PARKED, "description": "One step of a type no worker serves (memory per workflow in flight)",
     "tasks": _steps(PARKED_TASK, ["parked"]), "outputParameters": {}},
    {"name": TIMER_PROBE, "description": "A WAIT that falls due during a failover: how late do timers fire?",
     "tasks": [{"name": "wait", "taskReferenceName": "wait", "type": "WAIT", "duration": TIMER_PROBE_WAIT_S}]},
]


def register_all(client: Any) -> None:
    """Register the demo definitions and the benchmark's own (idempotent)."""
    register_demo(client)
    for task_def in TASK_DEFS:
        client.register_task_def(task_def)
    for workflow_def in WORKFLOW_DEFS:
        client.register_workflow_def(workflow_def)
