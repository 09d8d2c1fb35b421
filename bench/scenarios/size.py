"""Scenario size: does a step cost more the larger its workflow is? (issue 21)

One workflow at a time through ExecuteWorkflow (a start, then a wait for its end), on the shared
cluster, for three shapes at a small and a large size:
- `sequence`: N no-op steps one after another (10 and 400);
- `loop`: a DO_WHILE over an input list of N items, one no-op step per iteration (10 and 400);
- `fork`: a FORK_JOIN_DYNAMIC of N no-op branches, then its JOIN (100 and 1,000).
After one warm-up workflow of each shape at its small size, for each: wall time per step (the
median of runs; a step is a task of the shape, the fork's branches) and the CPU of the system's
processes (nodes, workers, Redis, etcd) per step. A cost that does not grow with the workflow's
size keeps the large/small ratio near 1; the issue's targets are <= 1.2 x for the sequence and the
loop, <= 1.5 x per branch for the fork.
"""

from __future__ import annotations

import time
from typing import Any

from worker import WorkflowClient

from ..cluster import CpuMeter
from ..context import Bench
from ..stats import median
from ..targets import check

NOOP = "noop"   # deploy/demo: served by the bench's workers, returns at once
SEQUENCE, LOOP, FORK = "bench_size_sequence_{n}", "bench_size_loop", "bench_size_fork"
WAIT_S = 300.0


def _sequence(n: int) -> dict[str, Any]:
    return {"name": SEQUENCE.format(n=n), "description": f"{n} no-op steps in a row (cost per step vs size)",
            "tasks": [{"name": NOOP, "taskReferenceName": f"s{i}"} for i in range(n)]}


LOOP_DEF: dict[str, Any] = {
    "name": LOOP, "description": "A DO_WHILE over the input's items, a no-op step each (cost per step vs size)",
    "tasks": [{"name": "each", "taskReferenceName": "each", "type": "DO_WHILE", "items": "${workflow.input.items}",
               "loopOver": [{"name": NOOP, "taskReferenceName": "step"}]}]}
FORK_DEF: dict[str, Any] = {
    "name": FORK, "description": "A dynamic fork of one no-op branch per input item (cost per branch vs width)",
    "tasks": [{"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC", "forkTaskName": NOOP,
               "forkTaskInputs": "${workflow.input.items}"},
              {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]}

# shape -> (small, large, target ratio of the large one's cost per step to the small one's)
SHAPES: dict[str, tuple[int, int, float]] = {"sequence": (10, 400, 1.2), "loop": (10, 400, 1.2),
                                             "fork": (100, 1000, 1.5)}


def run(bench: Bench) -> dict[str, Any]:
    cluster = bench.cluster()
    runs = bench.options.runs
    figures: dict[str, dict[str, Any]] = {}
    with cluster.new_client() as client:
        for n in SHAPES["sequence"][:2]:
            client.register_workflow_def(_sequence(n))
        client.register_workflow_def(LOOP_DEF)
        client.register_workflow_def(FORK_DEF)
        for shape, (small, _, _) in SHAPES.items():   # warm-up: connections, caches, the first decisions
            _one(client, cluster.pids(), shape, small)
        for shape, (small, large, _) in SHAPES.items():
            for n in (small, large):
                sizes = [_one(client, cluster.pids(), shape, n) for _ in range(runs)]
                figures[f"{shape}_{n}"] = {
                    "steps": n, "runs": sizes,
                    "ms_per_step": median(r["ms_per_step"] for r in sizes),
                    "cpu_ms_per_step": median(r["cpu_ms_per_step"] for r in sizes)}
                one = figures[f"{shape}_{n}"]
                each = ", ".join(f"{r['ms_per_step']:.2f}" for r in sizes)
                print(f"  size {shape} {n}: {one['ms_per_step']:.2f} ms per step, {one['cpu_ms_per_step']:.2f} ms "
                      f"of CPU per step (runs: {each})", flush=True)
    targets = []
    for shape, (small, large, limit) in SHAPES.items():
        ratio = figures[f"{shape}_{large}"]["ms_per_step"] / figures[f"{shape}_{small}"]["ms_per_step"]
        figures[f"{shape}_ratio"] = round(ratio, 2)
        targets.append(check(f"{shape}: time per step at {large} vs at {small}", ratio, "<=", limit, "x",
                             f"{figures[f'{shape}_{large}']['ms_per_step']:.2f} vs "
                             f"{figures[f'{shape}_{small}']['ms_per_step']:.2f} ms per step"))
    return {**figures, "targets": targets}


def _one(client: WorkflowClient, pids: dict[str, int], shape: str, n: int) -> dict[str, float]:
    """One workflow of `shape` and size `n`, run to its end: time and CPU per step."""
    shapes: dict[str, tuple[str, dict[str, Any]]] = {"sequence": (SEQUENCE.format(n=n), {}),
                                                     "loop": (LOOP, {"items": list(range(n))}),
                                                     "fork": (FORK, {"items": [{"i": i} for i in range(n)]})}
    name, workflow_input = shapes[shape]
    with CpuMeter(pids) as meter:
        started = time.perf_counter()
        ended = client.execute_workflow(name, workflow_input, wait_s=WAIT_S)
        elapsed_ms = (time.perf_counter() - started) * 1000
    if ended["status"] != "COMPLETED":
        raise RuntimeError(f"{name} ({n} steps) ended {ended['status']}: {ended.get('reason', '')}")
    return {"ms_per_step": round(elapsed_ms / n, 3), "cpu_ms_per_step": round(meter.cpu_ms() / n, 3)}
