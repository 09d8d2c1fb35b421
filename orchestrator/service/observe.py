"""Reading the cluster for the console and /metrics: who leads, the queues, this node's workers,
the health of Redis and etcd, and why a task waits. Reads only; every read is bounded in time
and a failed one is told as such in what is read, never raised. The node hands in what is read
(`NodeParts`); the checked use cases over these reads are `service.cluster.NodeOverview`'s."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..cluster.deciding import Decider
from ..cluster.dispatch import Dispatcher
from ..cluster.election import Candidacy, ElectionRecord, GoneMember, LeaderInfo, MemberInfo
from ..cluster.leader_loop import LeaderLoop
from ..core import state as m
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.namespaces import SYSTEM_TYPES, namespace_of, relative
from ..store import Store
from ..store.protocol import QueueStats, StoreHealth
from .counters import NodeCounters

T = TypeVar("T")

READ_TIMEOUT_S = 2.0
STUCK_AFTER_MS = 3000   # queued this long with no claim: no node has a worker with credit for it


@dataclass
class NodeParts:
    """What is read of the node: its parts and their counters, handed over by `orchestrator.node`."""

    node_id: str
    cluster: str
    grpc_address: str
    store: Store
    dispatcher: Dispatcher
    decider: Decider
    started_by_api: Counter[str]                  # Workflows.started: workflows the API created, by name
    tasks_sent: Counter[str]                      # TaskService.sent: tasks written to workers' streams, by type
    task_results: Counter[tuple[str, str]]        # TaskService.results: (task type, outcome)
    counters: NodeCounters
    election: Callable[[], Candidacy | None]
    engine: Callable[[], LeaderLoop | None]
    revoked: Callable[[], int]                    # dead leaders' leases this node revoked (LeaderWatch)


@dataclass
class TypeWorkers:
    """This node's workers for one task type."""

    task_type: str
    workers: int = 0
    credits: int = 0
    held: int = 0


@dataclass
class WorkerRow:
    worker_id: str
    task_types: list[str]
    credits: int
    held: int


@dataclass
class QueueRow:
    task_type: str
    depth: int
    oldest_ms: int | None
    local: TypeWorkers
    problem: str = ""


@dataclass
class ClusterSnapshot:
    now_ms: int
    leader: LeaderInfo | None = None
    members: list[MemberInfo] = field(default_factory=list)
    gone: list[GoneMember] = field(default_factory=list)          # seen before, not registered now
    elections: list[ElectionRecord] = field(default_factory=list)  # recorded by each winner, newest first
    etcd_ok: bool = False
    etcd_ms: float = 0.0
    etcd_error: str = ""
    store: StoreHealth = field(default_factory=lambda: StoreHealth(False, 0.0, error="not asked"))
    queues: list[QueueRow] = field(default_factory=list)
    queues_error: str = ""
    workers: list[WorkerRow] = field(default_factory=list)
    is_leader: bool = False
    state: str = ""
    status: str = ""
    first_decision_ms: int = 0


async def bounded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, READ_TIMEOUT_S)


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READ_TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__


def local_workers(parts: NodeParts, namespace: str | None = None) -> tuple[list[WorkerRow],
                                                                            dict[str, TypeWorkers]]:
    """This node's worker streams (only those of `namespace`, named as it sees them, unless None)
    and, by task type, how many serve it with what credit."""
    rows: list[WorkerRow] = []
    by_type: dict[str, TypeWorkers] = {}
    for session in sorted(parts.dispatcher.sessions, key=lambda s: s.worker_id):
        if session.closed:
            continue
        held = int(getattr(session, "held", 0))
        if namespace is None:
            rows.append(WorkerRow(session.worker_id, sorted(session.task_types), session.credits, held))
        elif namespace_of(session.worker_id) == namespace:
            rows.append(WorkerRow(relative(session.worker_id), sorted(relative(t) for t in session.task_types),
                                  session.credits, held))
        for task_type in session.task_types:
            entry = by_type.setdefault(task_type, TypeWorkers(task_type))
            entry.workers += 1
            entry.credits += max(0, session.credits)
            entry.held += held
    return rows, by_type


def served_here(parts: NodeParts, namespace: str) -> dict[str, int]:
    """How many of this node's worker streams serve each task type of `namespace` (named as it sees them)."""
    served: dict[str, int] = {}
    for session in parts.dispatcher.sessions:
        for task_type in session.task_types:
            if namespace_of(task_type) == namespace:
                served[relative(task_type)] = served.get(relative(task_type), 0) + 1
    return served


def queue_problem(row: QueueRow, node_id: str, now: int) -> str:
    """Why tasks of this type wait, when they do; "" when nothing looks wrong."""
    if row.depth == 0:
        return ""
    waited = now - row.oldest_ms if row.oldest_ms else 0
    if row.local.workers == 0:
        text = f"no worker connected for type {row.task_type} on {node_id}"
        if waited >= STUCK_AFTER_MS:
            text += (f"; the oldest task has waited {seconds(waited)}, so no node has a worker with free "
                     "credit for it either (a node claims at once when one has)")
        return text
    if row.local.credits == 0:
        return (f"{row.local.workers} worker(s) for {row.task_type} are connected to {node_id} but busy "
                "(no credit left)")
    if waited >= STUCK_AFTER_MS:
        return ("workers with credit are connected, yet tasks wait: the type's concurrency or rate limit, "
                "or paused workflows (their tasks keep their place in the queue)")
    return ""


def _shown(task_type: str, namespace: str | None) -> bool:
    return namespace is None or task_type in SYSTEM_TYPES or namespace_of(task_type) == namespace


async def cluster_snapshot(parts: NodeParts, *, with_health: bool = True,
                           namespace: str | None = None) -> ClusterSnapshot:
    """The cluster as this node sees it; its queues and workers only those of `namespace` (and the
    system types every namespace shares), unless None: all of them."""
    snap = ClusterSnapshot(now_ms=now_ms())
    election = parts.election()
    if election is not None:
        snap.is_leader, snap.state, snap.status = election.is_leader, election.state.value, election.status
        started = time.perf_counter()
        try:
            snap.leader, roster, snap.elections = await bounded(asyncio.gather(
                election.leader(), election.roster(), election.elections()))
            snap.members, snap.gone = roster.members, roster.gone
            snap.etcd_ok = True
        except Exception as exc:
            snap.etcd_error = describe(exc)
        snap.etcd_ms = (time.perf_counter() - started) * 1000
    engine = parts.engine()
    if engine is not None and snap.is_leader:
        snap.first_decision_ms = engine.first_decision_ms or 0
    snap.workers, by_type = local_workers(parts, namespace)
    if with_health:
        try:
            snap.store = await bounded(parts.store.health())
        except Exception as exc:
            snap.store = StoreHealth(False, READ_TIMEOUT_S * 1000, error=describe(exc))
    try:
        defs = await bounded(parts.store.task_defs())
        stats: list[QueueStats] = await bounded(parts.store.queue_stats(set(defs) | set(by_type)))
    except Exception as exc:
        snap.queues_error = describe(exc)
        stats = []
    for stat in stats:
        if not _shown(stat.task_type, namespace):
            continue
        name = stat.task_type if namespace is None else relative(stat.task_type)
        row = QueueRow(name, stat.depth, stat.oldest_ms, by_type.get(stat.task_type, TypeWorkers(name)))
        row.problem = queue_problem(row, parts.node_id, snap.now_ms)
        snap.queues.append(row)
    return snap


@dataclass
class Waiting:
    """Why one SCHEDULED task of an execution has not started."""

    task_key: str
    task_type: str
    depth: int | None
    waited_ms: int
    reasons: list[str]


async def why_waiting(parts: NodeParts, state: m.WorkflowState) -> list[Waiting]:
    """For each task waiting for a worker: its queue, this node's workers for it, and why."""
    scheduled = [t for t in state.tasks if t.runtime.status == st.SCHEDULED and t.spec.kind == "SIMPLE"]
    if not scheduled:
        return []
    now = now_ms()
    _, by_type = local_workers(parts)
    types = {t.runtime.task_type for t in scheduled}
    try:
        stats = {q.task_type: q for q in await bounded(parts.store.queue_stats(types))}
    except Exception:
        stats = {}
    found = []
    for task in scheduled:
        runtime, task_type = task.runtime, task.runtime.task_type
        stat = stats.get(task_type)
        local = by_type.get(task_type, TypeWorkers(task_type))
        waited = now - task.spec.scheduled_at_ms
        reasons = []
        if state.status == st.PAUSED:
            reasons.append("the workflow is paused: its queued tasks keep their place until it resumes")
        if not runtime.queued and runtime.ready_at_ms > now:
            reasons.append(f"not queued yet: it becomes ready in {seconds(runtime.ready_at_ms - now)} "
                           "(a start delay or a retry back-off)")
        elif local.workers == 0:
            reasons.append(f"no worker connected for type {task_type} on {parts.node_id}")
            if waited >= STUCK_AFTER_MS:
                reasons.append("it has waited too long for any node to have one with free credit: start a worker "
                               f"that serves '{task_type}'")
        elif local.credits == 0:
            reasons.append(f"{local.workers} worker(s) for {task_type} are connected here, all busy (no credit)")
        limits = state.task_defs.get(relative(task_type))   # the snapshot names them as the definition does
        if limits and (limits["concurrentExecLimit"] or limits["rateLimitPerFrequency"]):
            reasons.append(f"limits of {task_type}: at most {limits['concurrentExecLimit'] or 'any'} in progress, "
                           f"{limits['rateLimitPerFrequency'] or 'any'} started per "
                           f"{limits['rateLimitFrequencyInSeconds']:g} s")
        found.append(Waiting(task.spec.key, task_type, stat.depth if stat else None, waited, reasons))
    return found


def seconds(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"
