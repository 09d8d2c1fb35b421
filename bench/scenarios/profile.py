"""Scenario 7: where a node's CPU goes on the hot path.

py-spy samples the leader (the engine: decider, timers, reaper; it also serves
starts and the workers attached to it) and a follower that has a worker attached
(starts, claims and results) for a fixed time while the closed loop of the
throughput scenario runs at a fixed concurrency. Only samples that hold the GIL
are counted (`--gil`): that is the Python work; time in C with the GIL released
(gRPC's core, socket I/O) is not in the percentages. The run is separate from
the throughput figures, which are measured without a profiler attached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..context import Bench
from ..definitions import THREE_NOOPS
from ..load import EndedStreamWatcher, closed_loop
from ..profiling import Recording, py_spy_binary, summarise

CONCURRENCY = 64
TOP = 40


def run(bench: Bench) -> dict[str, Any]:
    if py_spy_binary() is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')", "targets": []}
    cluster = bench.cluster()
    duration_s = bench.options.pick(10, 5)
    leader = cluster.leader_id()
    with_worker = [f"node-{i % len(cluster.local.nodes) + 1}" for i in range(bench.options.workers)]
    follower = next((n for n in with_worker if n != leader), None)
    targets = {"leader": leader, **({"follower": follower} if follower else {})}
    out_dir: Path = bench.results_dir
    pids = cluster.node_pids()
    with cluster.starter(THREE_NOOPS) as start, \
            EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher:
        closed_loop(start, watcher, concurrency=CONCURRENCY, warmup=0, count=200, time_limit_s=30)
        recordings = {role: Recording(pids[node], out_dir / f"profile-{role}.raw.tmp", duration_s, gil_only=True)
                      for role, node in targets.items()}
        load = closed_loop(start, watcher, concurrency=CONCURRENCY, warmup=0, count=100_000,
                           time_limit_s=duration_s + 1)
        errors = {role: rec.finish() for role, rec in recordings.items()}
    found: dict[str, Any] = {"duration_s": duration_s, "concurrency": CONCURRENCY,
                             "workflows_per_s_while_profiling": round(load.per_s, 1), "profiles": {}}
    for role, node in targets.items():
        raw = out_dir / f"profile-{role}.raw.tmp"
        summary = summarise(raw)
        text_path = out_dir / f"profile-{role}.txt"
        text_path.write_text(summary.render(
            f"py-spy --gil --function, {role} ({node}), {duration_s} s of three_noops at concurrency {CONCURRENCY}",
            TOP))
        raw.unlink(missing_ok=True)
        found["profiles"][role] = {"node": node, "samples": summary.samples, "file": text_path.name,
                                   "py_spy_stderr": errors[role][-500:],
                                   "top_self": [[name, round(pct, 1)] for name, pct in summary.top("self", 15)],
                                   "top_total": [[name, round(pct, 1)] for name, pct in summary.top("total", 25)]}
        print(f"  profile of the {role} ({node}): {summary.samples} samples -> {text_path}", flush=True)
    found["targets"] = []
    return found
