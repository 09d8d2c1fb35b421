"""The workflows this node decided last, as its own writes left them: a worker's result for one of
them is decided from memory instead of a reload of the whole workflow (issue 21).

An entry is the state the node's last applied write produced: the pure `apply` of the decision
(core/apply.py, the function the Lua scripts are held to), with the tasks that same write handed
to this node's workers marked as theirs, made as one new state (`apply_handing_over`). It is only
ever a guess: the write it feeds is checked against the workflow's revision in Redis, so an entry
that another node's write made stale costs one conflict and one reload, never a wrong write.
Only workflows whose last write handed a task to this node's workers are kept; whatever went wrong
or is unknown drops the entry; an ended workflow leaves at once; past `capacity`, the least recently
used goes.

Such a write is a decision this node applied, or a claim of this node's dispatcher: a claim answers
with the workflow as it left it (`claimed`), so a task that went through its type's queue has its
result decided without a reload too.
"""

from __future__ import annotations

from collections import OrderedDict

from ..core import state as m
from ..core import statuses as st
from ..core.apply import apply_handing_over
from ..core.decider import Decision
from ..store import ApplyOutcome

# Workflows. Only a workflow whose last write handed a task to this node's workers is kept (its next
# event is most likely that task's result, here): as many as those workers hold tasks, a few hundred.
CAPACITY = 4096


class StateCache:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, m.WorkflowState] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def get(self, workflow_id: str) -> m.WorkflowState | None:
        state = self._states.get(workflow_id)
        if state is None:
            self.misses += 1
            return None
        self.hits += 1
        self._states.move_to_end(workflow_id)
        return state

    def drop(self, workflow_id: str) -> None:
        self._states.pop(workflow_id, None)

    def claimed(self, workflow: m.WorkflowState) -> None:
        """Keep the workflow as a claim that handed one of its tasks to this node's workers left it,
        unless this node already holds it at that revision or a later one (its own write, whose
        answer came first)."""
        if workflow.status in st.TERMINAL_WORKFLOW:
            return
        known = self._states.get(workflow.workflow_id)
        if known is not None and known.revision >= workflow.revision:
            return
        self._keep(workflow)

    def _keep(self, workflow: m.WorkflowState) -> None:
        self._states[workflow.workflow_id] = workflow
        self._states.move_to_end(workflow.workflow_id)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def applied(self, state: m.WorkflowState, decision: Decision, outcome: ApplyOutcome, now_ms: int,
                handed_to: dict[str, str]) -> None:
        """Keep the workflow as the write of `decision` on `state` left it (`outcome` OK); `handed_to`:
        task id -> the worker of this node it was handed to in that write."""
        if not outcome.handed:   # its next event will likely come through another node, or a claim
            self.drop(state.workflow_id)   # (which moves its revision on): not worth the memory
            return
        if (decision.status or state.status) in st.TERMINAL_WORKFLOW:   # what `apply` would leave it
            self.drop(state.workflow_id)
            return
        taken = {task.spec.task_id: handed_to[task.spec.task_id] for task in outcome.handed}
        # a new state (the decision queued what was handed over, so it is not empty): this cache's own
        after = apply_handing_over(state, decision, now_ms, taken)
        after.stored_bytes = state.stored_bytes + outcome.grew_by
        self._keep(after)
