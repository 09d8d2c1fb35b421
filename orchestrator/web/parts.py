"""What the console is built from: the node's parts, handed over by `orchestrator.node`.

The web layer sits beside `orchestrator.api` and imports neither it nor the node: the node
passes in the services the gRPC API runs on (the console's operations run through the very same
calls, validation and errors included) and the counters its parts keep.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


from ..cluster.deciding import Decider
from ..cluster.dispatch import Dispatcher
from ..cluster.election import Candidacy
from ..cluster.leader_loop import LeaderLoop
from ..core import state as m
from ..core import statuses as st
from ..core.decider import Decision
from ..service.metadata import Metadata
from ..service.workflows import Workflows
from ..store import Store


@dataclass
class NodeCounters:
    """What the node counts for /metrics that no part counts itself (fed by `Node`)."""

    started: Counter[str] = field(default_factory=Counter)            # by decisions: children, failure workflows
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # (workflow name, terminal status)
    elections: int = 0             # terms this node won
    expired_earlier: int = 0       # leases expired in this node's earlier terms (or clock restarts) as leader
    _epoch: int = 0

    def on_decision(self, state: m.WorkflowState, decision: Decision) -> None:
        for started in decision.start_workflows:
            self.started[started.name] += 1
        if decision.status in st.TERMINAL_WORKFLOW:
            self.ended[(state.name, str(decision.status))] += 1

    def on_elected(self, epoch: int, previous: LeaderLoop | None) -> None:
        """A term starts (or its clocks restart after a crash: the same epoch, not a new term)."""
        if epoch != self._epoch:
            self.elections += 1
            self._epoch = epoch
        if previous is not None:
            self.expired_earlier += previous.expired


@dataclass
class ConsoleParts:
    node_id: str
    cluster: str
    grpc_address: str
    etcd_endpoints: list[str]
    store: Store
    dispatcher: Dispatcher
    decider: Decider
    workflows: Workflows
    metadata: Metadata
    started_by_api: Counter[str]                  # Workflows.started: workflows the API created, by name
    tasks_sent: Counter[str]                      # TaskService.sent: tasks written to workers' streams, by type
    task_results: Counter[tuple[str, str]]        # TaskService.results: (task type, outcome)
    counters: NodeCounters
    election: Callable[[], Candidacy | None]
    engine: Callable[[], LeaderLoop | None]
    revoked: Callable[[], int]                    # dead leaders' leases this node revoked (LeaderWatch)
    console_address: str = ""
