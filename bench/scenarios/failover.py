"""Scenario 5: the leader killed (SIGKILL) and stopped (SIGTERM) under steady load.

A cluster of its own (cluster name `bench-failover`) runs three_noops workflows
started at a fixed rate (`orchestrator.drill.SteadyLoad`). Each time, the leader is
signalled and `orchestrator.drill.kill_leader` returns the time from the signal to
the new leader's first decision (`first_decision_at_ms` in its cluster status); the
old leader is then restarted and the load settles before the next one.

The dip: every ended workflow is in the `ended` stream with its end time (the same
value as the workflow's ended_at_ms, written in the same Lua call). Completions
are counted per 250 ms bucket around each signal; since only the leader's decisions
complete workflows, completions stop until the new leader decides, then catch up.
`longest_gap_ms` is the longest time without any completion from 1 s before to 5 s
after the signal, from the exact end times.
The signal time is taken just before kill_leader (one status call earlier: a few ms).
Finally `orchestrator.drill.audit` checks that no acknowledged workflow was lost.
"""

from __future__ import annotations

import signal
import time
from itertools import pairwise
from typing import Any

from devtools.drill import DrillReport, SteadyLoad, audit, kill_leader

from ..cluster import BenchCluster
from ..context import Bench
from ..definitions import THREE_NOOPS
from ..stats import distribution, median, percentile
from ..targets import check

RATE = 50.0                   # workflows/s started
BUCKET_MS = 250
WINDOW_MS = (-2000, 5000)     # buckets kept around each signal
SETTLE_S = 2.5                # after the restart, before the next signal
SIGTERM_TARGET_MS = 300


def run(bench: Bench) -> dict[str, Any]:
    kills = bench.options.pick(10, 2)
    terms = bench.options.pick(10, 2)
    cluster = BenchCluster(bench.cluster_settings("bench-failover")).start()
    try:
        ttl_ms = cluster.settings.lease_ttl_s * 1000
        assert cluster.client is not None
        events: list[dict[str, Any]] = []
        with SteadyLoad(cluster.client, THREE_NOOPS, RATE) as load:
            time.sleep(SETTLE_S)
            for sig, times in ((signal.SIGKILL, kills), (signal.SIGTERM, terms)):
                for index in range(times):
                    events.append(_signal_leader(cluster, sig))
                    print(f"  {sig.name} #{index + 1}: first decision after {events[-1]['failover_ms']:.0f} ms",
                          flush=True)
                    time.sleep(SETTLE_S)
        report = DrillReport(signal="SIGKILL+SIGTERM")
        audit(cluster.local, cluster.client, report, load.started)
        ends = _end_times(cluster)
    finally:
        cluster.stop()
    for event in events:
        event.update(_dip(ends, event["signalled_at_ms"]))
    by_signal = {name: _summary([e for e in events if e["signal"] == name]) for name in ("SIGKILL", "SIGTERM")}
    kill_p99 = by_signal["SIGKILL"]["failover_ms"]["p99"]
    term_p99 = by_signal["SIGTERM"]["failover_ms"]["p99"]
    return {"settings": {"rate_workflows_per_s": RATE, "lease_ttl_s": ttl_ms / 1000, "sigkills": kills,
                         "sigterms": terms, "bucket_ms": BUCKET_MS, "settle_s": SETTLE_S},
            "events": events, "by_signal": by_signal,
            "audit": {"started": report.started, "start_errors": load.errors, "completed": report.completed,
                      "failed": report.failed, "lost": len(report.lost),
                      "completed_twice": len(report.completed_twice),
                      "repeated_attempts": report.repeated_attempts, "repeat_reasons": report.repeat_reasons},
            "targets": [check("SIGKILL failover p99", kill_p99, "<=", ttl_ms + 500, "ms", "TTL + 0.5 s"),
                        check("SIGTERM hand-over p99", term_p99, "<=", SIGTERM_TARGET_MS, "ms"),
                        check("workflows lost in the failover drill", float(len(report.lost)), "<=", 0, "")]}


def _signal_leader(cluster: BenchCluster, sig: signal.Signals) -> dict[str, Any]:
    signalled_at_ms = time.time() * 1000
    failover_ms = kill_leader(cluster.local, cluster.client, sig)
    return {"signal": sig.name, "signalled_at_ms": signalled_at_ms, "failover_ms": round(failover_ms, 1)}


def _end_times(cluster: BenchCluster) -> list[float]:
    """End times (ms) of every workflow in the cluster's `ended` stream."""
    key = cluster.ended_key
    times: list[float] = []
    last = "-"
    while True:
        entries = cluster.redis.xrange(key, min=last, max="+", count=10_000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return times
        times += [float(fields["at"]) for _, fields in entries]
        last = entries[-1][0]


def _dip(ends: list[float], at_ms: float) -> dict[str, Any]:
    """Completions/s per bucket around one signal, and what the dip cost."""
    low, high = WINDOW_MS
    buckets = [0] * ((high - low) // BUCKET_MS)
    for end in ends:
        offset = end - at_ms - low
        if 0 <= offset < high - low:
            buckets[int(offset // BUCKET_MS)] += 1
    rates = [count * 1000 / BUCKET_MS for count in buckets]
    before = rates[: -low // BUCKET_MS]
    after = rates[-low // BUCKET_MS:]
    baseline = sum(before) / len(before)
    near = sorted(end for end in ends if at_ms - 1000 <= end <= at_ms + high)
    gaps = [b - a for a, b in pairwise(near)]
    return {"per_s_by_bucket": rates, "baseline_per_s": round(baseline, 1),
            "min_per_s_after": min(after), "empty_buckets_after": sum(1 for r in after if r == 0),
            "longest_gap_ms": max(gaps, default=float("nan"))}


def _summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    if not events:
        return {"failover_ms": {"p50": float("nan"), "p99": float("nan")}}
    failovers = [e["failover_ms"] for e in events]
    width = len(events[0]["per_s_by_bucket"])
    mean_profile = [round(sum(e["per_s_by_bucket"][i] for e in events) / len(events), 1) for i in range(width)]
    return {"count": len(events), "failover_ms": {**distribution(failovers, 1),
                                                  "p99": round(percentile(failovers, 99), 1)},
            "baseline_per_s": median(e["baseline_per_s"] for e in events),
            "longest_gap_ms": distribution([e["longest_gap_ms"] for e in events], 1),
            "empty_buckets_median": median(e["empty_buckets_after"] for e in events),
            "mean_per_s_by_bucket": mean_profile, "bucket_starts_ms": list(range(*WINDOW_MS, BUCKET_MS))}
