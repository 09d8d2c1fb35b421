"""/metrics: a Prometheus registry per node, rendering what the service layer read of it.

Nothing here counts on the hot path: a scrape asks `NodeOverview.metrics` (service/metrics.py)
for the parts' own counters (the decider's decisions and conflicts, the task service's results,
...) and, for the cluster-wide gauges (queues, workflows per status, the leader), one read of
Redis and etcd, and renders that reading.

Counters (`_total`) are this node's since it started: sum them over the nodes. Gauges marked
cluster-wide say the same on every node: take `max` over the nodes, not `sum`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..service.metrics import NodeReading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> help; the Grafana dashboard (deploy/grafana-dashboard.json) uses exactly these names.
METRICS = {
    "orchestrator_node_info": "This node: its id, cluster and gRPC address (always 1)",
    "orchestrator_is_leader": "1 while this node leads (runs the clocks), else 0",
    "orchestrator_leader_epoch": "The current leader's epoch (fencing token) as etcd says; 0 when unknown",
    "orchestrator_leader_term_seconds": "How long the current leader has led",
    "orchestrator_leader_elections": "Terms this node won (a failover shows as an increase on the new leader)",
    "orchestrator_leader_revocations": "Leases of dead leaders this node revoked (fast SIGKILL failover)",
    "orchestrator_workflows_started": "Workflows this node created: API starts, sub-workflows, failure workflows",
    "orchestrator_workflows_ended": "Workflows that ended by a decision of this node, by terminal status",
    "orchestrator_workflows": "Stored workflows by status (cluster-wide)",
    "orchestrator_tasks_dispatched": "Tasks this node wrote to its workers' streams, by type",
    "orchestrator_task_attempts": "Workers' results received by this node, by task type and outcome "
                                  "(the stored status, or DUPLICATE, STALE, UNKNOWN when refused)",
    "orchestrator_task_leases_expired": "Task attempts whose lease expired, timed out by this node as leader",
    "orchestrator_queue_depth": "Tasks waiting in the ready queue of each type (cluster-wide)",
    "orchestrator_queue_oldest_seconds": "Age of the task waiting longest in each queue (cluster-wide)",
    "orchestrator_workers_connected": "Workers connected to this node, by task type they serve",
    "orchestrator_worker_credits": "Free credits of the workers connected to this node, by task type",
    "orchestrator_decisions": "Decisions this node applied that changed a workflow (events and clocks)",
    "orchestrator_decision_conflicts": "Decisions this node computed on a workflow that changed meanwhile "
                                       "(decided again)",
    "orchestrator_store_up": "1 when Redis answered this scrape's ping",
    "orchestrator_etcd_up": "1 when etcd answered this scrape's read",
    "orchestrator_clock_offset_seconds": "How far Redis's clock, which every node works on, is ahead of this "
                                         "node's own wall clock (negative: behind); large means broken NTP",
}


class _NodeCollector(Collector):
    def __init__(self) -> None:
        self.reading: NodeReading | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        reading = self.reading
        if reading is None:
            return
        snap = reading.snapshot
        info = GaugeMetricFamily("orchestrator_node_info", METRICS["orchestrator_node_info"],
                                 labels=["node_id", "cluster", "grpc_address"])
        info.add_metric([reading.node_id, reading.cluster, reading.grpc_address], 1)
        yield info
        yield GaugeMetricFamily("orchestrator_is_leader", METRICS["orchestrator_is_leader"],
                                value=1 if snap.is_leader else 0)
        yield GaugeMetricFamily("orchestrator_leader_epoch", METRICS["orchestrator_leader_epoch"],
                                value=snap.leader.epoch if snap.leader else 0)
        term = max(0.0, (snap.now_ms - snap.leader.elected_at_ms) / 1000) if snap.leader else 0.0
        yield GaugeMetricFamily("orchestrator_leader_term_seconds", METRICS["orchestrator_leader_term_seconds"],
                                value=term)
        yield CounterMetricFamily("orchestrator_leader_elections", METRICS["orchestrator_leader_elections"],
                                  value=reading.elections)
        yield CounterMetricFamily("orchestrator_leader_revocations", METRICS["orchestrator_leader_revocations"],
                                  value=reading.revocations)

        started = CounterMetricFamily("orchestrator_workflows_started", METRICS["orchestrator_workflows_started"],
                                      labels=["workflow"])
        for name, count in sorted(reading.started.items()):
            started.add_metric([name], count)
        yield started
        ended = CounterMetricFamily("orchestrator_workflows_ended", METRICS["orchestrator_workflows_ended"],
                                    labels=["workflow", "status"])
        for (name, status), count in sorted(reading.ended.items()):
            ended.add_metric([name, status], count)
        yield ended
        if reading.status_counts:
            stored = GaugeMetricFamily("orchestrator_workflows", METRICS["orchestrator_workflows"],
                                       labels=["status"])
            for status, count in sorted(reading.status_counts.items()):
                stored.add_metric([status], count)
            yield stored

        dispatched = CounterMetricFamily("orchestrator_tasks_dispatched", METRICS["orchestrator_tasks_dispatched"],
                                         labels=["task_type"])
        for task_type, count in sorted(reading.dispatched.items()):
            dispatched.add_metric([task_type], count)
        yield dispatched
        attempts = CounterMetricFamily("orchestrator_task_attempts", METRICS["orchestrator_task_attempts"],
                                       labels=["task_type", "outcome"])
        for (task_type, outcome), count in sorted(reading.attempts.items()):
            attempts.add_metric([task_type, outcome], count)
        yield attempts
        yield CounterMetricFamily("orchestrator_task_leases_expired", METRICS["orchestrator_task_leases_expired"],
                                  value=reading.leases_expired)

        if not snap.queues_error:
            depth = GaugeMetricFamily("orchestrator_queue_depth", METRICS["orchestrator_queue_depth"],
                                      labels=["task_type"])
            oldest = GaugeMetricFamily("orchestrator_queue_oldest_seconds",
                                       METRICS["orchestrator_queue_oldest_seconds"], labels=["task_type"])
            for row in snap.queues:
                depth.add_metric([row.task_type], row.depth)
                age = (snap.now_ms - row.oldest_ms) / 1000 if row.oldest_ms else 0.0
                oldest.add_metric([row.task_type], max(0.0, age))
            yield depth
            yield oldest
        connected = GaugeMetricFamily("orchestrator_workers_connected", METRICS["orchestrator_workers_connected"],
                                      labels=["task_type"])
        credits = GaugeMetricFamily("orchestrator_worker_credits", METRICS["orchestrator_worker_credits"],
                                    labels=["task_type"])
        per_type: dict[str, list[int]] = {}
        for worker in snap.workers:
            for task_type in worker.task_types:
                entry = per_type.setdefault(task_type, [0, 0])
                entry[0] += 1
                entry[1] += max(0, worker.credits)
        for task_type, (count, free) in sorted(per_type.items()):
            connected.add_metric([task_type], count)
            credits.add_metric([task_type], free)
        yield connected
        yield credits

        yield CounterMetricFamily("orchestrator_decisions", METRICS["orchestrator_decisions"],
                                  value=reading.decisions)
        yield CounterMetricFamily("orchestrator_decision_conflicts", METRICS["orchestrator_decision_conflicts"],
                                  value=reading.conflicts)
        yield GaugeMetricFamily("orchestrator_store_up", METRICS["orchestrator_store_up"],
                                value=1 if snap.store.ok else 0)
        yield GaugeMetricFamily("orchestrator_etcd_up", METRICS["orchestrator_etcd_up"], value=1 if snap.etcd_ok else 0)
        yield GaugeMetricFamily("orchestrator_clock_offset_seconds", METRICS["orchestrator_clock_offset_seconds"],
                                value=reading.clock_offset_ms / 1000)


class NodeMetrics:
    """The node's registry: its own collector and the process' (CPU, memory, open files)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _NodeCollector()
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)
        self._lock = asyncio.Lock()

    async def render(self, read: Callable[[], Awaitable[NodeReading]]) -> bytes:
        """Read (`read`: a service call, which checks its caller), then render; one scrape at a time."""
        async with self._lock:
            self._collector.reading = await read()
            return generate_latest(self.registry)
