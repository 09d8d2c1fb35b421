"""The cluster scenario's figures (bench/scenarios/cluster.py), apart from running it so that they can
be checked on recorded rows: Redis CPU and commands per workflow from a run of `throughput.one_run`,
the medians per layout and level, the peaks, and the capacity model (bench/capacity.py) they feed."""

from __future__ import annotations

from typing import Any

from .capacity import RATES, Capacity, cores_for
from .stats import median

LAYOUTS = ("single", "cluster")
WATCHER_COMMANDS = ("xread",)  # the bench's own reads of the `ended` streams (the engine sends none)


def idle_of(idle: list[dict[str, Any]], layout: str) -> dict[str, float]:
    """Per process, the median of a layout's idle readings so far."""
    mine = [reading["cpu_percent"] for reading in idle if reading["system"] == layout]
    return {name: median((reading.get(name, float("nan")) for reading in mine), 3) for name in mine[-1]}


def redis_figures(row: dict[str, Any], idle: dict[str, float]) -> dict[str, Any]:
    """A run of `throughput.one_run` with the Redis figures per workflow added (see bench/scenarios/cluster.py);
    `marginal`: less what the process uses idle (`idle`, % of a core), the cost a higher rate adds."""
    share: dict[str, float] = row["cpu_percent"]
    done, window_s = max(int(row["total_completed"]), 1), float(row["cpu_window_s"])

    def ms(name: str, less: float = 0.0) -> float:
        return (share.get(name, float("nan")) - less) / 100 * window_s * 1000 / done

    def marginal(name: str) -> float:
        return ms(name, idle.get(name, float("nan")))

    redis_names = sorted(name for name in share if name.startswith("redis"))
    masters = [name for name in redis_names if not name.startswith("redis-replica")]
    replicas = [name for name in redis_names if name.startswith("redis-replica")]
    beside = [name for name in share if name.startswith(("node-", "bench-worker-"))]
    commands = row["redis_commands_per_workflow"]
    return {**row,
            "redis_cpu_ms_per_workflow": {name: round(ms(name), 3) for name in redis_names},
            "masters_cpu_ms_per_workflow": round(sum(ms(name) for name in masters), 3),
            "masters_marginal_cpu_ms_per_workflow": round(sum(marginal(name) for name in masters), 3),
            "replicas_cpu_ms_per_workflow": round(sum(ms(name) for name in replicas), 3),
            "replicas_marginal_cpu_ms_per_workflow": round(sum(marginal(name) for name in replicas), 3),
            "idle_redis_cpu_percent": {name: idle.get(name, float("nan")) for name in redis_names},
            "nodes_and_workers_cpu_ms_per_workflow": round(sum(ms(name) for name in beside), 3),
            "engine_commands_per_workflow": round(sum(v for k, v in commands.items()
                                                      if k not in WATCHER_COMMANDS), 2),
            "watcher_commands_per_workflow": round(sum(commands.get(k, 0.0) for k in WATCHER_COMMANDS), 2)}


def summarise(runs: list[dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    """Medians per layout and level, the peaks, one at a time, and the capacity model."""
    def of(layout: str, level: int, figure: str, sub: str = "") -> float:
        return median((r[figure][sub] if sub else r[figure] for r in runs if r["system"] == layout
                       and r["level"] == level), 3)

    by_level: dict[str, dict[int, dict[str, Any]]] = {layout: {level: {
        "workflows_per_s": of(layout, level, "workflows_per_s"),
        "latency_p50_ms": of(layout, level, "latency_ms", "p50"),
        "latency_p99_ms": of(layout, level, "latency_ms", "p99"),
        "masters_cpu_ms_per_workflow": of(layout, level, "masters_cpu_ms_per_workflow"),
        "masters_marginal_cpu_ms_per_workflow": of(layout, level, "masters_marginal_cpu_ms_per_workflow"),
        "replicas_cpu_ms_per_workflow": of(layout, level, "replicas_cpu_ms_per_workflow"),
        "replicas_marginal_cpu_ms_per_workflow": of(layout, level, "replicas_marginal_cpu_ms_per_workflow"),
        "nodes_and_workers_cpu_ms_per_workflow": of(layout, level, "nodes_and_workers_cpu_ms_per_workflow"),
        "cpu_ms_per_workflow": of(layout, level, "cpu_ms_per_workflow"),
        "engine_commands_per_workflow": of(layout, level, "engine_commands_per_workflow"),
        "watcher_commands_per_workflow": of(layout, level, "watcher_commands_per_workflow"),
        "redis_cpu_ms_per_workflow": {name: of(layout, level, "redis_cpu_ms_per_workflow", name)
                                      for name in _redis_names(runs, layout, level)},
        "outside_cpu_percent": of(layout, level, "cpu_percent", "outside")}
        for level in levels} for layout in LAYOUTS}
    peak_level = {layout: max(levels, key=lambda lvl: _or_zero(by_level[layout][lvl]["workflows_per_s"]))
                  for layout in LAYOUTS}
    peak = {layout: by_level[layout][peak_level[layout]]["workflows_per_s"] for layout in LAYOUTS}
    one = {layout: {key: by_level[layout][1][key] for key in ("workflows_per_s", "latency_p50_ms", "latency_p99_ms")}
           for layout in LAYOUTS}
    return {"by_level": by_level,
            "peak": {**peak, "levels": peak_level, "ratio": _ratio(peak["cluster"], peak["single"]),
                     "ratio_run_by_run": run_by_run(runs, peak_level)},
            "one_at_a_time": {**one, "ratio": _ratio(one["cluster"]["workflows_per_s"],
                                                     one["single"]["workflows_per_s"])},
            "capacity": capacity(by_level["cluster"][peak_level["cluster"]], by_level["single"][peak_level["single"]])}


def run_by_run(runs: list[dict[str, Any]], levels: dict[str, int]) -> list[float]:
    """The peak's ratio within each run (the two layouts' runs of one index ran side by side, alternating),
    in run order. A ratio of medians can pair medians of different runs; when the machine's speed drifts
    between runs, these show what the pairs measured."""
    def rate(layout: str, index: int) -> float:
        found = [r["workflows_per_s"] for r in runs if r["system"] == layout and r["level"] == levels[layout]
                 and r["run"] == index]
        return found[0] if found else float("nan")
    indexes = sorted({r["run"] for r in runs})
    return [_ratio(rate("cluster", index), rate("single", index)) for index in indexes]


def capacity(cluster: dict[str, Any], single: dict[str, Any]) -> dict[str, Any]:
    """The model (bench/capacity.py) from the Redis Cluster's figures at its peak, and the single Redis's
    ceiling beside it; {"error": ...} when nothing was measured."""
    ms = cluster["masters_marginal_cpu_ms_per_workflow"]
    if ms != ms or ms <= 0:
        return {"error": "no Redis CPU per workflow measured on the Redis Cluster"}
    model = Capacity(ms)
    beside = cluster["nodes_and_workers_cpu_ms_per_workflow"]
    single_ms = single["masters_marginal_cpu_ms_per_workflow"]
    return {**model.table(),
            "masters_cpu_ms_per_workflow_with_idle": cluster["masters_cpu_ms_per_workflow"],
            "replicas_cpu_ms_per_workflow": cluster["replicas_marginal_cpu_ms_per_workflow"],
            "single_redis_cpu_ms_per_workflow": single_ms,
            "single_redis_workflows_per_s_per_core": round(1000 / single_ms) if single_ms == single_ms and single_ms
            else None,
            "nodes_and_workers_cpu_ms_per_workflow": beside,
            "nodes_and_workers_cores": {str(rate): round(cores_for(rate, beside), 1) for rate in RATES}}


def _redis_names(runs: list[dict[str, Any]], layout: str, level: int) -> list[str]:
    return sorted({name for r in runs if r["system"] == layout and r["level"] == level
                   for name in r["redis_cpu_ms_per_workflow"]})


def _or_zero(value: float) -> float:
    return value if value == value else 0.0


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b and b == b and a == a else float("nan")
