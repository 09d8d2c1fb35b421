"""Scenario 6: Redis memory per workflow in flight, and the nodes at that scale.

A cluster of its own (cluster name `bench-scale`, so nothing else is in its Redis)
gets 1,000, then 10,000, then 100,000 `bench_parked` workflows: their single task
type has no worker, so each stays RUNNING with one queued task. Starts go round
robin over the three nodes from many client threads, within a time limit per tier
(if it is reached, the tier reports how many it got to).

A tier counts every parked workflow, the warm-up's included. Memory per workflow =
(used_memory now - used_memory at the baseline - what the throughput runs at
earlier tiers added) / workflows parked since the baseline, read
once the engine has scheduled every parked task (the `decide` set is empty and the
queue holds them all). The baseline is taken after a warm-up of parked starts from
the same number of threads, so that one-off costs (client connections and their
buffers, script cache) are not spread over the first tier. It includes everything
a start writes: the workflow hash (with its definition snapshot), index entries,
the queue entry and the idempotency key. The marginal figure is the same between
two tiers; `used_memory_dataset` (used_memory less Redis's own overhead) is given
too.

At each tier the three_noops closed loop of the throughput scenario runs once
(64 in flight) to see whether the number in flight slows the hot path; node RSS
(VmRSS) is sampled at idle, while starting, and during that run.
"""

from __future__ import annotations

import time
from itertools import islice
from typing import Any, cast

from orchestrator.store.redis.keys import Keys

from ..cluster import BenchCluster, RssSampler
from ..context import Bench
from ..definitions import PARKED, PARKED_TASK, THREE_NOOPS
from ..load import EndedStreamWatcher, closed_loop, open_loop
from ..stats import percentile
from ..targets import check

START_THREADS = 32
FLAT_TOLERANCE = 0.25        # per-workflow memory at the top tier within 25 % of the reference tier's
MIN_MEASURED = 5_000         # workflows since the baseline a reference tier needs to be measurable
RSS_TARGET_MB = 150
SAMPLE_HASHES = 20
WARMUP_PARKED = 500


def run(bench: Bench) -> dict[str, Any]:
    tiers = bench.options.pick([1_000, 10_000, 100_000], [1_000, 5_000])
    tier_limit_s = bench.options.pick(200, 40)
    cluster = BenchCluster(bench.cluster_settings("bench-scale")).start()
    try:
        time.sleep(1.0)
        idle = RssSampler(cluster.node_pids())
        with idle:
            time.sleep(1.0)
        rows: list[dict[str, Any]] = []
        with cluster.starter(PARKED) as park, cluster.starter(THREE_NOOPS) as start, \
                EndedStreamWatcher(cluster.redis_url, cluster.ended_keys) as watcher:
            warm = open_loop(park, rate=1e9, count=WARMUP_PARKED, senders=START_THREADS, time_limit_s=60)
            _wait_settled(cluster, len(warm.ids), 60.0)
            base = _memory(cluster)
            offset = {"used_memory": 0, "used_memory_dataset": 0}
            parked = 0
            previous = (0, base["used_memory"])
            for tier in tiers:
                row: dict[str, Any] = {"target": tier}
                with RssSampler(cluster.node_pids()) as rss_starting:
                    began = time.monotonic()
                    launched = open_loop(park, rate=1e9, count=tier - parked - len(warm.ids), senders=START_THREADS,
                                         time_limit_s=tier_limit_s)
                    parked += len(launched.ids)
                    row["settle_s"] = _wait_settled(cluster, parked, 120.0)
                    row["start_s"] = round(launched.duration_s, 1)
                    row["starts_per_s"] = round(len(launched.ids) / max(launched.duration_s, 1e-9), 1)
                    row["start_errors"] = launched.start_errors
                    row["tier_s"] = round(time.monotonic() - began, 1)
                row["in_flight"] = parked + len(warm.ids)
                memory = _memory(cluster)
                row["used_memory_bytes"] = memory["used_memory"]
                row["bytes_per_workflow"] = round((memory["used_memory"] - base["used_memory"]
                                                   - offset["used_memory"]) / parked)
                row["dataset_bytes_per_workflow"] = round((memory["used_memory_dataset"] - base["used_memory_dataset"]
                                                           - offset["used_memory_dataset"]) / parked)
                net = memory["used_memory"] - offset["used_memory"]
                row["marginal_bytes_per_workflow"] = round((net - previous[1]) / max(parked - previous[0], 1))
                previous = (parked, net)
                row["rss_mb_while_starting"] = rss_starting.max_mb
                with RssSampler(cluster.node_pids()) as rss_load:
                    result = closed_loop(start, watcher, concurrency=64, warmup=100,
                                         count=bench.options.pick(600, 300), time_limit_s=60)
                after = _memory(cluster)
                for key in offset:
                    offset[key] += after[key] - memory[key]
                row["three_noops_per_s"] = round(result.per_s, 1)
                row["three_noops_p99_ms"] = round(percentile(result.latencies_ms, 99), 1)
                row["rss_mb_under_load"] = rss_load.max_mb
                rows.append(row)
                print(f"  scale: {row['in_flight']} in flight ({row['starts_per_s']:.0f} starts/s), "
                      f"{row['bytes_per_workflow']} B/workflow, three_noops {row['three_noops_per_s']} wf/s, "
                      f"node RSS max {max(rss_load.max_mb.values()):.0f} MB", flush=True)
        breakdown = _breakdown(cluster)
    finally:
        cluster.stop()
    # The reference is the first tier with at least MIN_MEASURED workflows since the baseline: over
    # the 1,000 tier's 500, a few hundred KB of Redis's own churn (client buffers, lazy frees) read
    # as +-800 B per workflow, and the same code measured 4,192 and 1,783 B there in two runs.
    reference = next((row for row in rows if row["in_flight"] - WARMUP_PARKED >= MIN_MEASURED), rows[0])
    first, last = reference["bytes_per_workflow"], rows[-1]["bytes_per_workflow"]
    drift = (last - first) / first if first else float("nan")
    peak_rss = max(max(r["rss_mb_under_load"].values()) for r in rows)
    peak_rss_all = max(peak_rss, max(max(r["rss_mb_while_starting"].values()) for r in rows))
    return {"settings": {"tiers": tiers, "tier_time_limit_s": tier_limit_s, "start_threads": START_THREADS,
                         "parked_workflow": PARKED, "warmup_parked": WARMUP_PARKED},
            "idle_rss_mb": idle.max_mb, "baseline_memory": base, "tiers": rows,
            "memory_breakdown_bytes": breakdown,
            "targets": [check(f"memory per workflow, {rows[-1]['in_flight']:,} vs {reference['in_flight']:,} in flight",
                              100 * abs(drift), "<=", 100 * FLAT_TOLERANCE, "% change",
                              f"{first} -> {last} bytes per workflow (dataset: "
                              f"{reference['dataset_bytes_per_workflow']} -> {rows[-1]['dataset_bytes_per_workflow']}; "
                              f"at {rows[0]['in_flight']:,}: "
                              f"{rows[0]['bytes_per_workflow']})"),
                        check("node RSS under load (max over nodes and tiers)", peak_rss, "<=", RSS_TARGET_MB, "MB",
                              f"max while starting too: {peak_rss_all:.0f} MB")]}


def _memory(cluster: BenchCluster) -> dict[str, int]:
    info = cluster.redis.info("memory")
    return {"used_memory": int(info["used_memory"]), "used_memory_dataset": int(info["used_memory_dataset"])}


def _wait_settled(cluster: BenchCluster, expected: int, timeout_s: float) -> float:
    """Seconds until the engine has queued every parked task (bounded by `timeout_s`)."""
    began = time.monotonic()
    keys = Keys(cluster.prefix)
    while time.monotonic() - began < timeout_s:
        with cluster.redis.pipeline(transaction=False) as pipe:
            for p in keys.all_partitions():
                pipe.zcard(keys.decide(p))
                pipe.zcard(keys.queue(p, PARKED_TASK))
            counts = [int(n) for n in pipe.execute()]
        if sum(counts[0::2]) == 0 and sum(counts[1::2]) >= expected:
            break
        time.sleep(0.2)
    return round(time.monotonic() - began, 2)


def _breakdown(cluster: BenchCluster) -> dict[str, Any]:
    """Where a parked workflow's bytes are: MEMORY USAGE of a few workflow hashes and idempotency keys."""
    r, keys = cluster.redis, Keys(cluster.prefix)
    # partition 0's: a sample like any; members, no scores, decoded (the client has decode_responses=True)
    ids = cast("list[str]", r.zrange(keys.queue(0, PARKED_TASK), 0, SAMPLE_HASHES - 1))
    hashes = [r.memory_usage(keys.workflow(member.split("|")[0])) or 0 for member in ids]
    idem_keys = list(islice(r.scan_iter(match=f"{keys.global_prefix[:-1]}:p*}}:idem:*", count=1000), SAMPLE_HASHES))
    idem = [r.memory_usage(k) or 0 for k in idem_keys]
    sample = r.hgetall(keys.workflow(ids[0].split("|")[0])) if ids else {}
    return {"workflow_hash_avg": round(sum(hashes) / len(hashes)) if hashes else None,
            "idempotency_key_avg": round(sum(idem) / len(idem)) if idem else None,
            "hash_field_bytes": {field: len(value) for field, value in sample.items()}}
