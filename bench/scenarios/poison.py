"""Scenario 6: poison workflows beside ordinary ones. Does one bad workflow slow the others?

On the shared cluster, `three_noops` workflows start at a steady rate (open loop) for two
windows of equal length: a baseline, then one during which poison workflows are started as
well, one of each kind the probes found every half second (a value that refers to itself, a
100,000-wide dynamic fork, an INLINE expression over a 140,000-item input, about the 1 MiB
input limit). The completion rate of the ordinary workflows in each window is counted from the
`ended` stream; the target is that the poisoned window keeps >= 90 % of the baseline. Each
poison workflow must end (FAILED) with a reason.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from worker import ClientError

from ..context import Bench
from ..definitions import THREE_NOOPS
from ..load import open_loop
from ..targets import check

RATE = 50.0                # ordinary workflows/s
KEPT_TARGET = 0.9
POISON_EVERY_S = 0.5

POISONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "bench_poison_self_reference": ({"tasks": [
        {"name": "loop", "taskReferenceName": "loop", "type": "SET_VARIABLE",
         "inputParameters": {"me": "${workflow.variables}"}}]}, {}),
    "bench_poison_wide_fork": ({"tasks": [
        {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC", "forkTaskName": "noop",
         "forkTaskInputs": "${workflow.input.items}"},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]}, {"items": list(range(100_000))}),
    "bench_poison_big_inline": ({"tasks": [
        {"name": "sum", "taskReferenceName": "sum", "type": "INLINE", "expression": "sum($.items) + len(keys($))",
         "inputParameters": {"items": "${workflow.input.items}"}}]}, {"items": list(range(140_000))}),
}


def run(bench: Bench) -> dict[str, Any]:
    cluster = bench.cluster()
    client = cluster.client
    assert client is not None
    for name, (definition, _) in POISONS.items():
        client.register_workflow_def({"name": name, **definition})
    window_s = bench.options.pick(8.0, 4.0)
    count = int(RATE * window_s)
    with cluster.starter(THREE_NOOPS) as start:
        baseline = _window(cluster, start, count, None)
        poisoned: list[str] = []
        poisoned_window = _window(cluster, start, count, poisoned)
    endings = {workflow_id: _ending(client, workflow_id) for workflow_id in poisoned}
    kept = poisoned_window["completed_per_s"] / baseline["completed_per_s"] if baseline["completed_per_s"] else 0.0
    unexplained = [w for w, (status, reason) in endings.items() if status != "FAILED" or not reason]
    print(f"  ordinary workflows: {baseline['completed_per_s']:.1f}/s alone, "
          f"{poisoned_window['completed_per_s']:.1f}/s beside {len(poisoned)} poison workflows ({kept:.2f} x)",
          flush=True)
    return {"settings": {"rate_workflows_per_s": RATE, "window_s": window_s, "poison_every_s": POISON_EVERY_S,
                         "poisons": list(POISONS)},
            "baseline": baseline, "poisoned": poisoned_window, "kept": round(kept, 3),
            "poison_endings": {w: {"status": s, "reason": r[:300]} for w, (s, r) in endings.items()},
            "targets": [check("ordinary completions/s beside poison workflows vs alone", kept, ">=", KEPT_TARGET, "x"),
                        check("poison workflows that did not end FAILED with a reason", float(len(unexplained)),
                              "<=", 0, "")]}


def _window(cluster: Any, start: Any, count: int, poisoned: list[str] | None) -> dict[str, Any]:
    """Start `count` ordinary workflows at RATE (and poison ones beside them); count completions."""
    stop = threading.Event()
    poisoner = threading.Thread(target=_poison, args=(cluster, poisoned, stop), daemon=True) \
        if poisoned is not None else None
    begin_ms = time.time() * 1000
    if poisoner is not None:
        poisoner.start()
    result = open_loop(start, rate=RATE, count=count)
    stop.set()
    if poisoner is not None:
        poisoner.join(30)
    time.sleep(1.0)   # the last ones complete
    started = set(result.ids)
    ends = [at for workflow_id, at in cluster.ended() if workflow_id in started]
    span_s = max((max(ends, default=begin_ms) - begin_ms) / 1000, 0.001)
    return {"started": len(started), "completed": len(ends), "completed_per_s": round(len(ends) / span_s, 1),
            "start_errors": result.start_errors}


def _poison(cluster: Any, poisoned: list[str], stop: threading.Event) -> None:
    with cluster.new_client() as client:
        while not stop.is_set():
            for name, (_, workflow_input) in POISONS.items():
                try:
                    poisoned.append(client.start_workflow(name, workflow_input))
                except ClientError as exc:   # refused at the door counts as contained too, but say so
                    print(f"  poison {name} refused at start: {exc}", flush=True)
            stop.wait(POISON_EVERY_S)


def _ending(client: Any, workflow_id: str) -> tuple[str, str]:
    deadline = time.monotonic() + 30
    workflow: dict[str, Any] = {}
    while time.monotonic() < deadline:
        workflow = client.get_workflow(workflow_id)
        if workflow["status"] not in ("RUNNING", "PAUSED", "COMPENSATING"):
            break
        time.sleep(0.1)
    return workflow.get("status", "?"), workflow.get("reason", "")
