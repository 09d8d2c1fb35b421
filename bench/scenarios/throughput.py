"""Scenario 1 + 2: three no-op steps, ours vs a Celery chain, side by side.

Besides the rates, each run reports the CPU time the system's own processes used
per workflow (ours: nodes, workers, Redis, etcd; Celery: its worker's processes and
its Redis), from /proc/<pid>/stat; the load generator's is reported apart. On a
machine shared with other work that figure stays put while the rates move, and
2 cores / CPU per workflow is the rate a dedicated machine would allow.

Closed loop: N client threads each start a workflow (or send a chain) and wait until
it has completed, then start the next, so N workflows are in flight. Raising N until
the rate stops growing shows saturation without overloading either system with a
backlog that an open loop at a too-high rate would pile up. Both systems run at the
same time on the same machine, and their runs alternate (ours, Celery, Celery, ours,
...) so that a change in background load hits both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from .. import celery_app
from ..cluster import CpuMeter, RssSampler, command_calls, command_delta
from ..context import Bench
from ..definitions import THREE_NOOPS
from ..load import CeleryResultWatcher, EndedStreamWatcher, closed_loop
from ..stats import distribution, median
from ..targets import check

STEPS = 3
TARGET_PEAK_RATIO = 3.0       # peak three-step throughput vs Celery's peak
TARGET_ONE_AT_A_TIME = 1.0    # one workflow in flight at a time vs one chain at a time
TARGET_CPU_SHARE = 0.5        # our CPU per workflow / Celery's per chain, at the top level


def levels(bench: Bench) -> list[int]:
    return bench.options.pick([1, 8, 32, 128], [8, 64])


def counts(bench: Bench, level: int) -> tuple[int, int]:
    """(warm-up, measured) workflows for one run at one concurrency level."""
    if level == 1:
        return bench.options.pick((20, 200), (10, 100))
    return bench.options.pick((100, 600), (50, 300))


def run(bench: Bench) -> dict[str, Any]:
    cluster, celery = bench.cluster(), bench.celery()
    runs: list[dict[str, Any]] = []
    with cluster.starter(THREE_NOOPS) as ours_start, \
            EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as ours_watch, \
            CeleryResultWatcher(celery.url) as celery_watch, RssSampler(cluster.node_pids()) as rss, \
            redis.Redis.from_url(celery.url) as celery_redis:
        systems = {"ours": (ours_start, ours_watch, cluster.pids, cluster.command_calls),
                   "celery": (celery_app.chain_of_three, celery_watch, celery.pids,
                              lambda: command_calls(celery_redis))}
        for index in range(bench.options.runs):
            for position, level in enumerate(levels(bench)):
                order = ["ours", "celery"] if (index + position) % 2 == 0 else ["celery", "ours"]
                for system in order:
                    start, watcher, pids, calls = systems[system]
                    runs.append(one_run(bench, system, level, index, start, watcher, pids(), calls))
                    print(_line(runs[-1]), flush=True)
    summary = summarise(bench, runs)
    cpu = summary["cpu_at_top_level"]
    top = max(levels(bench))
    return {"settings": {"mode": "closed loop", "levels": levels(bench),
                         "warmup_and_count": {lvl: counts(bench, lvl) for lvl in levels(bench)},
                         "runs": bench.options.runs, "workflow": THREE_NOOPS,
                         "ours_workers": f"{bench.options.workers} processes x concurrency "
                                         f"{bench.options.worker_concurrency}",
                         "celery_workers": f"celery worker --pool prefork -c {bench.options.workers}, "
                                           "acks_late, Redis broker + result backend (AOF everysec)",
                         "starts": "round robin over the three nodes"},
            "runs": runs, "summary": summary, "node_rss_mb_max": rss.max_mb,
            "cpu_percent_by_process_at_top_level": {
                system: next(r["cpu_percent"] for r in runs if r["system"] == system and r["level"] == top)
                for system in ("ours", "celery")},
            "targets": [check("closed-loop peak throughput vs Celery chain (peak / peak)", summary["peak"]["ratio"],
                              ">=", TARGET_PEAK_RATIO, "x",
                              f"ours {summary['peak']['ours']} wf/s vs Celery {summary['peak']['celery']} chains/s"),
                        *_one_at_a_time(summary),
                        check(f"CPU per workflow at {cpu['level']} in flight (ours / Celery)",
                              1 / cpu["ratio"] if cpu["ratio"] else float("nan"), "<=", TARGET_CPU_SHARE, "x",
                              f"ours {cpu['ours_ms_per_workflow']} ms vs Celery {cpu['celery_ms_per_chain']} ms "
                              "of CPU per workflow")]}


def _one_at_a_time(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One workflow in flight at a time vs one chain at a time (only when level 1 was run)."""
    one = summary["by_level"]["ours"].get(1), summary["by_level"]["celery"].get(1)
    if one[0] is None or one[1] is None:
        return []
    ours, celery = one[0]["workflows_per_s"], one[1]["workflows_per_s"]
    return [check("one three-step workflow at a time vs one chain at a time", ours / celery if celery else
                  float("nan"), ">=", TARGET_ONE_AT_A_TIME, "x", f"ours {ours} wf/s vs Celery {celery} chains/s")]


def one_run(bench: Bench, system: str, level: int, index: int, start: Any, watcher: Any,
            pids: dict[str, int], calls: Callable[[], dict[str, int]]) -> dict[str, Any]:
    """One closed-loop run of `level` in flight; `calls` reads the Redis command counts (INFO commandstats,
    summed over the servers that serve slots). `cpu_percent` is per process, over `cpu_window_s`, which
    saw `total_completed` workflows (warm-up included)."""
    warmup, count = counts(bench, level)
    before = calls()
    with CpuMeter(pids) as cpu:
        result = closed_loop(start, watcher, concurrency=level, warmup=warmup, count=count,
                             time_limit_s=bench.options.pick(90, 45))
    commands = command_delta(before, calls(), result.total_completed)
    return {"system": system, "level": level, "run": index + 1, "completed": result.completed,
            "window_s": round(result.window_s, 3), "workflows_per_s": round(result.per_s, 1),
            "tasks_per_s": round(result.per_s * STEPS, 1), "latency_ms": distribution(result.latencies_ms),
            "not_completed": result.not_completed, "start_errors": result.start_errors,
            "timeouts": result.timeouts, "cpu_percent": cpu.share, "cpu_window_s": round(cpu.elapsed_s, 3),
            "total_completed": result.total_completed,
            "cpu_ms_per_workflow": round(cpu.cpu_ms() / max(result.total_completed, 1), 2),
            "client_cpu_ms_per_workflow": round(cpu.share["bench-client"] / 100 * cpu.elapsed_s * 1000
                                                / max(result.total_completed, 1), 2),
            "redis_commands_per_workflow": commands}


def summarise(bench: Bench, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_level: dict[str, dict[int, dict[str, float]]] = {"ours": {}, "celery": {}}
    for system in by_level:
        for level in levels(bench):
            mine = [r for r in runs if r["system"] == system and r["level"] == level]
            by_level[system][level] = {
                "workflows_per_s": median(r["workflows_per_s"] for r in mine),
                "tasks_per_s": median(r["tasks_per_s"] for r in mine),
                "latency_p50_ms": median(r["latency_ms"]["p50"] for r in mine),
                "latency_p99_ms": median(r["latency_ms"]["p99"] for r in mine),
                "cpu_ms_per_workflow": median(r["cpu_ms_per_workflow"] for r in mine),
                "client_cpu_ms_per_workflow": median(r["client_cpu_ms_per_workflow"] for r in mine),
                "machine_cpu_percent": median(r["cpu_percent"]["machine"] for r in mine),
                "outside_cpu_percent": median(r["cpu_percent"]["outside"] for r in mine)}
    ratio_by_level = {lvl: _ratio(by_level["ours"][lvl]["workflows_per_s"], by_level["celery"][lvl]["workflows_per_s"])
                      for lvl in levels(bench)}
    peak_ours = max(v["workflows_per_s"] for v in by_level["ours"].values())
    peak_celery = max(v["workflows_per_s"] for v in by_level["celery"].values())
    top = max(levels(bench))
    cpu_ours, cpu_celery = by_level["ours"][top]["cpu_ms_per_workflow"], by_level["celery"][top]["cpu_ms_per_workflow"]
    return {"by_level": by_level, "ratio_by_level": ratio_by_level,
            "peak": {"ours": peak_ours, "celery": peak_celery, "ratio": _ratio(peak_ours, peak_celery)},
            "redis_commands_per_workflow_at_top_level": {
                system: next(r["redis_commands_per_workflow"] for r in runs
                             if r["system"] == system and r["level"] == top) for system in ("ours", "celery")},
            "cpu_at_top_level": {"level": top, "ours_ms_per_workflow": cpu_ours, "celery_ms_per_chain": cpu_celery,
                                 "ratio": _ratio(cpu_celery, cpu_ours)}}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def _line(r: dict[str, Any]) -> str:
    return (f"  throughput {r['system']:6} c={r['level']:<3} run {r['run']}: {r['workflows_per_s']:7.1f} wf/s "
            f"({r['tasks_per_s']:.0f} tasks/s), p50 {r['latency_ms']['p50']:.0f} ms, "
            f"p99 {r['latency_ms']['p99']:.0f} ms, machine CPU {r['cpu_percent']['machine']:.0f} % "
            f"(outside {r['cpu_percent']['outside']:.0f} %)")
