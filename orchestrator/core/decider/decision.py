"""What one decision changes: the decider's only output. `orchestrator.core.apply` says what
applying it means; the store does it in one atomic, fenced, revision-checked step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import state as m
from .. import statuses as st
from ..schema import Snapshot


@dataclass
class NewWorkflow:
    """A workflow the decision starts (a sub-workflow or a failure workflow), in the same atomic write."""

    workflow_id: str
    name: str
    version: int
    input: dict[str, Any]
    correlation_id: str
    parent: str                       # "<workflow id>|<task id>", or "" when not a child
    snapshot: Snapshot
    depth: int = 0                    # the starting workflow's depth + 1 (see limits.MAX_SUBWORKFLOW_DEPTH)


@dataclass
class Decision:
    """Transitions to apply atomically. `empty` when there is nothing to write."""

    status: st.WorkflowStatus | None = None   # new workflow status
    output: dict[str, Any] | None = None
    reason: str | None = None
    reset_result: bool = False                # clear output, reason and end time (retry, rerun, restart)
    new_tasks: list[m.TaskState] = field(default_factory=list)
    changed_runtimes: dict[str, m.TaskRuntime] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # outputs of system tasks
    variables: dict[str, Any] | None = None
    snapshot: Snapshot | None = None          # a new definition snapshot (restart with the latest)
    delete_tasks: list[str] = field(default_factory=list)
    consumed_commands: list[str] = field(default_factory=list)
    enqueue: list[tuple[str, str]] = field(default_factory=list)      # (task type, task id)
    dequeue: list[tuple[str, str]] = field(default_factory=list)
    drop_leases: list[tuple[str, str]] = field(default_factory=list)  # (task type, task id)
    start_workflows: list[NewWorkflow] = field(default_factory=list)
    terminate_workflows: list[tuple[str, str]] = field(default_factory=list)  # (workflow id, reason)
    publish: list[tuple[str, str]] = field(default_factory=list)   # (topic, payload json): EVENT tasks
    wake_at_ms: int | None = None             # when to decide again without an event
    log: list[str] = field(default_factory=list)
    # Not a change: what the walk found finished (first key of a task list -> how many of its nodes,
    # from the first), for the next decision of the same run to walk on from there (decider/instances.py).
    finished: dict[str, int] = field(default_factory=dict, compare=False)

    def wake(self, at_ms: int) -> None:
        self.wake_at_ms = at_ms if self.wake_at_ms is None else min(self.wake_at_ms, at_ms)

    @property
    def empty(self) -> bool:
        return not (self.status or self.new_tasks or self.changed_runtimes or self.outputs
                    or self.variables is not None or self.delete_tasks or self.consumed_commands
                    or self.enqueue or self.dequeue or self.drop_leases or self.start_workflows
                    or self.terminate_workflows or self.reset_result or self.snapshot or self.publish)
