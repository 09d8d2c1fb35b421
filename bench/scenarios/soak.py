"""Scenario 7: a soak. Does Redis stay flat when workflows keep finishing?

A cluster of its own (`bench-soak`) with a short retention runs `three_noops` at half of this
run's peak (or a fixed rate when the throughput scenario did not run) for a long window. Every
5 s it samples Redis `used_memory`; once the first retention period has passed, memory should
stop growing: the slope of a least-squares line through the samples of the second half is the
figure (bytes per minute), next to what it would be if nothing were ever removed. At the end:
every started workflow completed (nothing lost), and every workflow that left Redis is in the
archive.
"""

from __future__ import annotations

import time
from typing import Any

from ..cluster import BenchCluster
from ..context import Bench
from ..definitions import THREE_NOOPS
from ..load import open_loop
from ..targets import check

SAMPLE_EVERY_S = 5.0
DEFAULT_RATE = 100.0


def run(bench: Bench) -> dict[str, Any]:
    retention_s = bench.options.pick(60.0, 10.0)
    window_s = bench.options.pick(600.0, 60.0)
    peak = bench.results.get("throughput", {}).get("summary", {}).get("peak", {}).get("ours")
    rate = round(peak / 2, 1) if peak else DEFAULT_RATE
    cluster = BenchCluster(bench.cluster_settings("bench-soak", retention_s=retention_s)).start()
    try:
        samples: list[tuple[float, int]] = []
        started: list[str] = []
        begin = time.monotonic()
        with cluster.starter(THREE_NOOPS) as start:
            while time.monotonic() - begin < window_s:
                chunk = open_loop(start, rate=rate, count=int(rate * SAMPLE_EVERY_S))
                started += chunk.ids
                samples.append((time.monotonic() - begin, cluster.used_memory()))
                print(f"  soak {samples[-1][0]:5.0f} s: used_memory {samples[-1][1] / 1e6:.1f} MB, "
                      f"{len(started)} started", flush=True)
        audit = _audit(cluster, started)
    finally:
        cluster.stop()
    second_half = [s for s in samples if s[0] >= window_s / 2]
    slope = _slope(second_half) * 60
    growth_if_kept = rate * 3_000 * 60   # ~3 KB per finished workflow, kept for ever
    return {"settings": {"rate_workflows_per_s": rate, "retention_s": retention_s, "window_s": window_s},
            "samples": [{"t_s": round(t, 1), "used_memory": m} for t, m in samples],
            "slope_bytes_per_min": round(slope), "growth_if_nothing_expired_bytes_per_min": growth_if_kept,
            "audit": audit,
            "targets": [check("Redis memory slope in the second half of the soak", abs(slope) / growth_if_kept,
                              "<=", 0.05, "x of keeping everything", f"{slope / 1e6:+.2f} MB/min at {rate:g}/s"),
                        check("workflows lost in the soak", float(audit["not_completed"]), "<=", 0, "")]}


def _slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope in bytes per second."""
    if len(samples) < 2:
        return float("nan")
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (m - mean_m) for t, m in samples) / var if var else float("nan")


def _audit(cluster: BenchCluster, started: list[str]) -> dict[str, Any]:
    """Every started workflow ended COMPLETED: in Redis still, or in the archive."""
    assert cluster.client is not None
    time.sleep(2.0)
    not_completed = 0
    for workflow_id in started[:: max(1, len(started) // 500)]:   # a sample of 500, spread evenly
        try:
            status = cluster.client.get_workflow(workflow_id)["status"]
        except Exception:
            status = "MISSING"
        not_completed += status != "COMPLETED"
    archived = sum(1 for _ in (cluster.base_dir / "archive").rglob("*.jsonl.gz"))
    return {"started": len(started), "checked": len(started[:: max(1, len(started) // 500)]),
            "not_completed": not_completed, "archive_files": archived}
