"""Scenario: cluster. The partitioned state on a Redis Cluster of 3 masters vs the single Redis (issue 23).

Two clusters of the same shape side by side on this machine: the shared one (three etcd members,
three nodes, two worker processes, one Redis with AOF everysec) and one of its own whose nodes keep
the state on a Redis Cluster of 3 masters and a replica each (`make cluster REDIS=cluster`'s, every
server with AOF everysec). The same closed loop of `three_noops` as the throughput scenario (its
levels and counts, `throughput.one_run`) plus one in flight, the layouts' runs alternating (single,
cluster, cluster, single, ...) so that a change in background load hits both alike:

- peak: the highest median workflows/s over the levels, as the throughput scenario finds its peak,
  and the two layouts' ratio within each run (their runs of one index ran side by side: when the
  machine's speed drifts between runs, the ratio of the medians can pair different runs);
- one at a time: 1 in flight, workflows/s and start -> completion seen, client side;
- Redis CPU per workflow: each redis-server's CPU over the run / the workflows completed in it, per
  master, the masters summed, the replicas apart (the single Redis has none: on the Redis Cluster a
  master also feeds its replica);
- Redis commands per workflow: INFO commandstats summed over the masters (commands inside scripts
  included), without the bench's own XREADs of the `ended` streams (the engine sends none), which
  are given apart.

From the Redis Cluster's masters' CPU per workflow at its peak level, bench/capacity.py's model:
workflows/s per Redis core and the masters needed for 10k and 100k workflows/s. The figures are
computed in bench/cluster_figures.py.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from devtools.local_cluster import CLUSTER_MASTERS

from ..capacity import CORE_SHARE
from ..cluster import BenchCluster, CpuMeter
from ..cluster_figures import LAYOUTS, idle_of, redis_figures, summarise
from ..context import Bench
from ..definitions import THREE_NOOPS
from ..targets import check
from . import throughput

TARGET_PEAK_RATIO = 0.9       # the Redis Cluster's peak vs the single Redis's, on this machine (issue 23)
IDLE_S = (5.0, 3.0)           # seconds of CPU measured with nothing in flight, per layout and run (full, quick)


def levels(bench: Bench) -> list[int]:
    """The throughput scenario's levels, and 1 in flight (one at a time) if they lack it."""
    return sorted({1, *throughput.levels(bench)})


def run(bench: Bench) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    with ExitStack() as stack:   # unwound in reverse: the watchers, the starters, then bench-rc
        clusters = {"single": bench.cluster()}
        # acknowledged writes are not held for replicas on either side (the single Redis has none): the
        # durability scenario measures what that costs
        clusters["cluster"] = BenchCluster(bench.cluster_settings(
            "bench-rc", redis_cluster_masters=CLUSTER_MASTERS, redis_min_replicas=0)).start()
        stack.callback(clusters["cluster"].stop)
        starters = {name: stack.enter_context(c.starter(THREE_NOOPS)) for name, c in clusters.items()}
        watchers = {name: stack.enter_context(c.ended_watcher()) for name, c in clusters.items()}
        for index in range(bench.options.runs):
            for layout in LAYOUTS if index % 2 == 0 else tuple(reversed(LAYOUTS)):
                idle.append({"system": layout, "run": index + 1,
                             "cpu_percent": idle_share(clusters[layout].pids(), bench.options.pick(*IDLE_S))})
            for position, level in enumerate(levels(bench)):
                order = LAYOUTS if (index + position) % 2 == 0 else tuple(reversed(LAYOUTS))
                for layout in order:
                    c = clusters[layout]
                    row = throughput.one_run(bench, layout, level, index, starters[layout], watchers[layout],
                                             c.pids(), c.command_calls)
                    runs.append(redis_figures(row, idle_of(idle, layout)))
                    print(_line(runs[-1]), flush=True)
    summary = summarise(runs, levels(bench))
    peak, one = summary["peak"], summary["one_at_a_time"]
    return {"settings": {"mode": "closed loop", "levels": levels(bench), "workflow": THREE_NOOPS,
                         "warmup_and_count": {lvl: throughput.counts(bench, lvl) for lvl in levels(bench)},
                         "runs": bench.options.runs,
                         "layouts": {"single": "one redis-server (AOF everysec), no replica",
                                     "cluster": f"Redis Cluster of {CLUSTER_MASTERS} masters and a replica each "
                                                "(AOF everysec), the nodes' redis_cluster seeds"},
                         "shape": "3 etcd members, 3 nodes, 2 worker processes per cluster; starts round robin "
                                  "over the nodes",
                         "idle_s": bench.options.pick(*IDLE_S),
                         "capacity_assumptions": f"a master may use {CORE_SHARE:.0%} of one core; the masters' CPU "
                                                 "per workflow at the Redis Cluster's peak level, less what they use "
                                                 "idle, stays the same at any rate; an even spread over the "
                                                 "partitions"},
            "runs": runs, "idle": idle, "summary": summary,
            "targets": [check(f"Redis Cluster ({CLUSTER_MASTERS} masters) peak vs single Redis, side by side",
                              peak["ratio"], ">=", TARGET_PEAK_RATIO, "x",
                              f"cluster {peak['cluster']} wf/s vs single {peak['single']} wf/s (run by run "
                              f"{', '.join(f'{r:.2f}' for r in peak['ratio_run_by_run'])} x); one at a time "
                              f"{one['cluster']['workflows_per_s']} vs {one['single']['workflows_per_s']} wf/s")]}


def idle_share(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU of each process (% of a core) over `seconds` with nothing in flight: the clocks, Redis's own
    timers, a Redis Cluster's gossip; what a workflow costs is what a run uses beyond it."""
    with CpuMeter(pids) as cpu:
        time.sleep(seconds)
    return cpu.share


def _line(r: dict[str, Any]) -> str:
    return (f"  cluster {r['system']:7} c={r['level']:<3} run {r['run']}: {r['workflows_per_s']:7.1f} wf/s, "
            f"p50 {r['latency_ms']['p50']:.1f} ms, Redis CPU/workflow masters {r['masters_cpu_ms_per_workflow']:.3f} "
            f"ms, replicas {r['replicas_cpu_ms_per_workflow']:.3f} ms, {r['engine_commands_per_workflow']:.1f} "
            f"commands/workflow, machine CPU {r['cpu_percent']['machine']:.0f} % "
            f"(outside {r['cpu_percent']['outside']:.0f} %)")
