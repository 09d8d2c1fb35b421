"""What /metrics reads of this node, in plain Python types (the console renders it as Prometheus
text): the counters its parts already keep, and the cluster-wide gauges (queues, workflows per
status, the leader) read from Redis and etcd once, when asked. Nothing here counts on the hot path."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..core import clock
from .observe import ClusterSnapshot, NodeParts, bounded, cluster_snapshot


@dataclass
class NodeReading:
    """One scrape's worth: this node's counters since it started, and the cluster as it sees it now."""

    node_id: str
    cluster: str
    grpc_address: str
    snapshot: ClusterSnapshot              # every namespace's queues and workers, with Redis's health
    status_counts: dict[str, int]          # stored workflows by status; {} when Redis did not answer
    elections: int                         # terms this node won
    revocations: int                       # dead leaders' leases this node revoked
    started: Counter[str]                  # workflows this node created (API and decisions), by name
    ended: Counter[tuple[str, str]]        # (workflow name, terminal status)
    dispatched: Counter[str]               # tasks written to workers' streams, by type
    attempts: Counter[tuple[str, str]]     # workers' results received: (task type, outcome)
    leases_expired: int
    decisions: int
    conflicts: int
    clock_offset_ms: float                 # Redis's clock ahead of this node's (negative: behind)


async def read_node(parts: NodeParts) -> NodeReading:
    """Read what needs a round trip (bounded, a failure told in the reading), then the counters."""
    snapshot = await cluster_snapshot(parts, with_health=True)
    try:
        counts = await bounded(parts.store.status_counts())
    except Exception:
        counts = {}
    engine = parts.engine()
    counters = parts.counters
    return NodeReading(
        node_id=parts.node_id, cluster=parts.cluster, grpc_address=parts.grpc_address, snapshot=snapshot,
        status_counts=counts, elections=counters.elections, revocations=parts.revoked(),
        started=parts.started_by_api + counters.started, ended=Counter(counters.ended),
        dispatched=Counter(parts.tasks_sent), attempts=Counter(parts.task_results),
        leases_expired=counters.expired_earlier + (engine.expired if engine is not None else 0),
        decisions=parts.decider.decisions, conflicts=parts.decider.conflicts, clock_offset_ms=clock.offset_ms())
