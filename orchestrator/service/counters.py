"""What the node counts for /metrics that no part counts itself (fed by `orchestrator.node`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..cluster.leader_loop import LeaderLoop
from ..core import state as m
from ..core import statuses as st
from ..core.decider import Decision


@dataclass
class NodeCounters:
    """Workflows started by decisions and ended, terms won, leases expired in earlier terms."""

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
