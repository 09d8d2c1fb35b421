"""The capacity model of the partitioned state (bench/capacity.py) and the cluster scenario's figures
and report built on it, from figures of the size the bench records (issue 23 quotes 0.67 ms of one
Redis core per three-step workflow)."""

from __future__ import annotations

import pytest

from bench.capacity import Capacity, cores_for
from bench.cluster_figures import redis_figures, summarise
from bench.report import markdown


def test_per_core_and_per_master() -> None:
    model = Capacity(0.67)
    assert model.per_core == pytest.approx(1492.5, abs=0.1)
    assert model.per_master == pytest.approx(1044.8, abs=0.1)   # 70 % of a core


def test_masters_count_whole_partitions_on_the_busiest_master() -> None:
    model = Capacity(0.67)
    # evenly: 10,000 / 1,044.8 = 9.6 -> 10 masters; but 64 partitions on 10 masters put 7 on the
    # busiest (7/64 of 10,000 = 1,094 wf/s, over 1,044.8), and on 11 at most 6 (937.5 wf/s)
    assert model.masters_even(10_000) == 10
    assert model.masters(10_000) == 11


def test_a_rate_beyond_one_partition_per_master_needs_more_partitions() -> None:
    model = Capacity(0.67)
    assert model.masters_even(100_000) == 96
    assert model.masters(100_000) is None     # 64 masters of one partition each: 1,562 wf/s each
    assert model.partitions_needed(100_000) == 96
    assert Capacity(0.67, partitions=96).masters(100_000) == 96
    assert model.ceiling == pytest.approx(64 * 1044.8, abs=10)   # 64 masters of one partition each


def test_an_exact_fit_is_a_fit() -> None:
    model = Capacity(1.0, core_share=0.5)     # 500 wf/s per master
    assert model.masters(2_000) == 4          # 16 of 64 partitions each: exactly 500 wf/s
    assert model.masters(2_001) == 5
    table = model.table((2_000,))
    assert table["workflows_per_s_per_core"] == 1000
    assert table["rates"] == [{"workflows_per_s": 2000, "masters_even_spread": 4, "masters": 4,
                               "partitions_needed": None}]


def test_nothing_measured_is_refused() -> None:
    with pytest.raises(ValueError):
        Capacity(0.0)
    with pytest.raises(ValueError):
        Capacity(float("nan"))
    assert cores_for(10_000, 3.0) == pytest.approx(30.0)


def run_row(layout: str, level: int, wf_per_s: float, redis_shares: dict[str, float]) -> dict[str, object]:
    """A row as throughput.one_run returns it: 2 s of CPU window, 400 workflows completed in it."""
    return {"system": layout, "level": level, "run": 1, "workflows_per_s": wf_per_s,
            "latency_ms": {"p50": 5.0, "p99": 9.0}, "cpu_ms_per_workflow": 4.0, "cpu_window_s": 2.0,
            "total_completed": 400,
            "cpu_percent": {"node-1": 40.0, "bench-worker-1": 10.0, "etcd-a": 2.0, "bench-client": 30.0,
                            "machine": 150.0, "outside": 5.0, **redis_shares},
            "redis_commands_per_workflow": {"evalsha": 4.0, "hset": 20.0, "xread": 1.5}}


def test_redis_figures_per_master_and_replicas_apart() -> None:
    idle = {"redis-master-1": 1.0, "redis-master-2": 1.0, "redis-master-3": 1.0, "redis-replica-1": 0.5}
    row = redis_figures(run_row("cluster", 64, 200.0, {"redis-master-1": 10.0, "redis-master-2": 8.0,
                                                       "redis-master-3": 6.0, "redis-replica-1": 2.0}), idle)
    # 10 % of a core over 2 s = 200 ms, over 400 workflows = 0.5 ms each
    assert row["redis_cpu_ms_per_workflow"]["redis-master-1"] == 0.5
    assert row["masters_cpu_ms_per_workflow"] == pytest.approx(1.2)
    assert row["masters_marginal_cpu_ms_per_workflow"] == pytest.approx(1.05)   # 3 x 1 % idle: 0.05 ms each
    assert row["replicas_cpu_ms_per_workflow"] == pytest.approx(0.1)
    assert row["replicas_marginal_cpu_ms_per_workflow"] == pytest.approx(0.075)
    assert row["nodes_and_workers_cpu_ms_per_workflow"] == pytest.approx(2.5)
    assert row["engine_commands_per_workflow"] == 24.0      # the bench's XREADs apart
    assert row["watcher_commands_per_workflow"] == 1.5


def test_the_summary_feeds_the_model_and_the_report_renders_it() -> None:
    levels = [1, 8, 64]   # a quick run's
    idle = {"redis": 4.0, "redis-master-1": 2.0, "redis-master-2": 2.0, "redis-master-3": 2.0,
            "redis-replica-1": 0.0}
    runs = [redis_figures(run_row(layout, level, rate, shares), idle)
            for level in levels
            for layout, rate, shares in (("single", 100.0 * level ** 0.5, {"redis": 20.0}),
                                         ("cluster", 95.0 * level ** 0.5, {"redis-master-1": 8.0,
                                                                           "redis-master-2": 8.0,
                                                                           "redis-master-3": 8.0,
                                                                           "redis-replica-1": 1.0}))]
    summary = summarise(runs, levels)
    assert summary["peak"]["levels"] == {"single": 64, "cluster": 64}
    assert summary["peak"]["ratio"] == 0.95
    assert summary["peak"]["ratio_run_by_run"] == [0.95]
    capacity = summary["capacity"]
    assert capacity["masters_cpu_ms_per_workflow_with_idle"] == 1.2
    assert capacity["redis_cpu_ms_per_workflow"] == 0.9      # 3 x (8 - 2) % of a core over 2 s, 400 workflows
    assert capacity["workflows_per_s_per_core"] == 1111
    assert capacity["single_redis_cpu_ms_per_workflow"] == 0.8
    result = {"settings": {"levels": levels, "mode": "closed loop", "workflow": "three_noops", "idle_s": 3,
                           "layouts": {"single": "one Redis", "cluster": "3 masters"}, "shape": "3 nodes",
                           "capacity_assumptions": "70 % of a core"},
              "summary": summary, "targets": []}
    text = markdown({"meta": {"mode": "quick-partial", "started_at": "now", "duration_s": 1.0,
                              "machine": {"cores": 2, "cpu_model": "x", "memory_gib": 1, "kernel": "k",
                                          "load_average_at_start": 0},
                              "versions": {k: "v" for k in ("python", "redis_server", "etcd", "grpcio", "redis_py",
                                                            "protobuf", "celery", "kombu", "py_spy")},
                              "source": {"commit": "c", "orchestrator_or_worker_modified": False},
                              "options": {}, "scenarios": ["cluster"]},
                     "scenarios": {"cluster": result}})
    assert "## Cluster: the state on a Redis Cluster vs one Redis" in text
    assert "### Capacity: a model, not a measurement" in text
    assert "0.950 x (run by run: 0.950)" in text
    assert "| 10,000 | 13 | 16 |" in text   # 778 wf/s a master; 5 of 64 partitions are 781 wf/s, 4 are 625


def test_the_peak_is_also_compared_within_each_run() -> None:
    """Runs of different speeds: the medians (cluster 81 of run 2, single 90) give 0.9 x, while two of the
    three side-by-side pairs measured 0.8 x."""
    idle = {"redis": 0.0, "redis-master-1": 0.0}
    rates = {1: (72.0, 90.0), 2: (81.0, 90.0), 3: (96.0, 120.0)}   # run: (cluster, single)
    runs = []
    for index, (cluster_rate, single_rate) in rates.items():
        for layout, rate, shares in (("cluster", cluster_rate, {"redis-master-1": 8.0}),
                                     ("single", single_rate, {"redis": 8.0})):
            runs.append(redis_figures({**run_row(layout, 1, rate, shares), "run": index}, idle))
    peak = summarise(runs, [1])["peak"]
    assert peak["ratio"] == 0.9
    assert peak["ratio_run_by_run"] == [0.8, 0.9, 0.8]
