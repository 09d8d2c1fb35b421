"""Failover drill: steady load on a local cluster while its leader is killed again and again.

The verdict comes from stored state, not from the drill's own bookkeeping:
- lost: a start that was acknowledged but whose workflow is missing or not finished;
- completed twice: the `ended` audit stream (written in the same Lua call as the
  status change) holds the workflow more than once;
- executed more than once: a step with more than one attempt, with the reason
  the earlier attempt ended (lease expired with a dead node, and so on).
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.definitions import parse_document
from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import cluster_prefix

from .local_cluster import LocalCluster, wait_for_leader

DEMO_DIR = Path(__file__).resolve().parent.parent / "deploy" / "demo"
TERMINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED"}


@dataclass
class DrillReport:
    signal: str
    failover_ms: list[float] = field(default_factory=list)
    started: int = 0
    start_errors: int = 0
    completed: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)
    completed_twice: list[str] = field(default_factory=list)
    repeated_attempts: int = 0
    repeat_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.completed_twice and not self.failed

    def summary(self) -> str:
        lines = [f"drill with {self.signal} of the leader, {len(self.failover_ms)} time(s)"]
        if self.failover_ms:
            lines.append("  failover (kill -> first decision of the new leader), ms: "
                         + ", ".join(f"{v:.0f}" for v in self.failover_ms))
            lines.append(f"  median {statistics.median(self.failover_ms):.0f} ms, "
                         f"max {max(self.failover_ms):.0f} ms")
        lines += [f"  workflows started (acknowledged): {self.started} (start calls that failed: "
                  f"{self.start_errors})",
                  f"  completed: {self.completed}, failed: {self.failed}",
                  f"  lost: {len(self.lost)}", f"  completed twice: {len(self.completed_twice)}",
                  f"  task attempts executed more than once: {self.repeated_attempts}"]
        for reason, count in sorted(self.repeat_reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {count} x {reason}")
        lines.append("  verdict: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


class SteadyLoad:
    """Starts workflows at a fixed rate from a thread; keeps the ids the API acknowledged."""

    def __init__(self, client: Any, workflow: str, rate_per_s: float) -> None:
        self.client = client
        self.workflow = workflow
        self.interval = 1.0 / rate_per_s
        self.started: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from worker import ClientError

        next_at = time.monotonic()
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                # The idempotency key makes the client's own failover retries safe.
                self.started.append(self.client.start_workflow(
                    self.workflow, {"n": n}, idempotency_key=f"drill-{uuid.uuid4().hex}"))
            except ClientError:
                self.errors += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def register_demo(client: Any) -> None:
    for task_def in json.loads((DEMO_DIR / "task_defs.json").read_text()):
        client.register_task_def(task_def)
    for path in ("three_noops.json", "order_fulfilment.yaml"):
        client.register_workflow_def(parse_document((DEMO_DIR / path).read_text()))


def kill_leader(cluster: LocalCluster, client: Any, sig: signal.Signals, restart: bool = True) -> float:
    """Signal the leader's process; returns ms from the signal to the new leader's first decision."""
    leader = wait_for_leader(client)["leader_id"]
    process = cluster.nodes[leader]
    killed_at_ms = time.time() * 1000
    process.signal(sig)
    process.wait(10)
    first_decision_ms = wait_for_first_decision(cluster, not_id=leader)
    if restart:
        cluster.start_node(leader)
    return first_decision_ms - killed_at_ms


def wait_for_first_decision(cluster: LocalCluster, not_id: str, timeout_s: float = 20.0) -> float:
    """Ask each other node (one client each, kept for the whole wait) until one leads and has decided."""
    from worker import WorkflowClient

    clients = {n: WorkflowClient([cluster.endpoint_of(n)], timeout_s=1.0) for n in cluster.nodes if n != not_id}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node_id, client in clients.items():
                if not cluster.nodes[node_id].alive():
                    continue
                try:
                    status = client.cluster_status()
                except Exception:
                    continue
                first = int(status.get("first_decision_at_ms", 0))
                if status.get("role") == "LEADER" and first:
                    return float(first)
            time.sleep(0.02)
    finally:
        for client in clients.values():
            client.close()
    raise TimeoutError(f"no new leader made a decision within {timeout_s} s")


def audit(cluster: LocalCluster, client: Any, report: DrillReport, started: list[str],
          settle_timeout_s: float = 60.0) -> None:
    """Wait for every acknowledged workflow to finish, then fill in the verdict."""
    deadline = time.monotonic() + settle_timeout_s
    pending = set(started)
    states: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for workflow_id in list(pending):
            try:
                workflow = client.get_workflow(workflow_id)
            except Exception:
                continue
            if workflow.get("status") in TERMINAL:
                states[workflow_id] = workflow
                pending.discard(workflow_id)
        if pending:
            time.sleep(0.2)
    report.started = len(started)
    report.lost = sorted(pending)
    report.completed = sum(1 for w in states.values() if w["status"] == "COMPLETED")
    report.failed = sum(1 for w in states.values() if w["status"] != "COMPLETED")
    ended = ended_counts(cluster)
    report.completed_twice = sorted(w for w in started if ended.get(w, 0) > 1)
    reasons: Counter[str] = Counter()
    for workflow in states.values():
        by_ref: dict[str, list[dict[str, Any]]] = {}
        for task in workflow.get("tasks", []):
            by_ref.setdefault(task["reference_name"], []).append(task)
        for attempts in by_ref.values():
            for earlier in attempts[:-1]:
                reasons[_reason_kind(earlier.get("reason", ""))] += 1
    report.repeated_attempts = sum(reasons.values())
    report.repeat_reasons = dict(reasons)


def _reason_kind(reason: str) -> str:
    """Group reasons without their ids and numbers."""
    if reason.startswith("lease expired"):
        return "lease expired (the worker's node died or the worker went silent)"
    return reason.split(":")[0] or "unknown"


def ended_counts(cluster: LocalCluster) -> Counter[str]:
    """How often each workflow ended, from the store's audit stream."""
    assert cluster.redis is not None
    redis_url = cluster.redis.url

    async def read() -> Counter[str]:
        store = RedisStore.from_url(redis_url, cluster_prefix(cluster.settings.name))
        try:
            return await store.ended_counts()
        finally:
            await store.close()
    return asyncio.run(read())


def run_drill(cluster: LocalCluster, *, kills: int, sig: signal.Signals = signal.SIGKILL,
              rate_per_s: float = 20.0, pause_s: float = 2.0, workflow: str = "three_noops") -> DrillReport:
    """Kill (or stop) the leader `kills` times under load and audit the outcome."""
    from worker import WorkflowClient

    client = WorkflowClient(cluster.endpoints, timeout_s=15.0)
    try:
        wait_for_leader(client, 30.0)
        register_demo(client)
        report = DrillReport(signal=sig.name)
        with SteadyLoad(client, workflow, rate_per_s) as load:
            time.sleep(pause_s)
            for index in range(kills):
                report.failover_ms.append(kill_leader(cluster, client, sig))
                print(f"  {sig.name} #{index + 1}: new leader's first decision after "
                      f"{report.failover_ms[-1]:.0f} ms", flush=True)
                time.sleep(pause_s)
        report.start_errors = load.errors
        audit(cluster, client, report, load.started)
        return report
    finally:
        client.close()


def write_report(reports: list[DrillReport], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in reports], indent=2))
