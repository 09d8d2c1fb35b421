"""What applying a decision means, as a pure function: the one statement of the semantics.

`apply(state, decision, now_ms)` returns the workflow as it is after the decision and the
effects the decision has beyond it (queues, leases, other workflows, the next wake-up).
The store's `APPLY_DECISION` Lua script does the same in one atomic, fenced and
revision-checked step, and `tests/integration/store/test_apply_contract.py` holds the script to this function
on a real Redis. The in-memory simulator (`tests/sim.py`) runs the decider through it.

Two transitions of other workflows happen in the same step and are stated here as well:
`new_child` (a sub-workflow or failure workflow the decision starts) and `finish_parent_task`
(a child's end completes or fails its parent's SUB_WORKFLOW task).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import statuses as st
from .decider import Decision, NewWorkflow
from .decider.instances import carry, remember_finished
from .state import TaskRuntime, TaskState, WorkflowState


@dataclass(frozen=True)
class Effects:
    """What the decision changes outside its own workflow's record."""

    start: list[NewWorkflow] = field(default_factory=list)
    terminate: list[tuple[str, str]] = field(default_factory=list)   # (workflow id, reason)
    enqueue: list[tuple[str, str]] = field(default_factory=list)     # (task type, task id)
    dequeue: list[tuple[str, str]] = field(default_factory=list)
    drop_leases: list[tuple[str, str]] = field(default_factory=list)
    publish: list[tuple[str, str]] = field(default_factory=list)     # (topic, payload json) appended to the bus
    ended: bool = False             # reached a terminal status: audit entry, parent's task, waiters
    wake_at_ms: int | None = None   # when to decide again without an event (None: only on an event)


def apply(state: WorkflowState, decision: Decision, now_ms: int) -> tuple[WorkflowState, Effects]:
    """The workflow after `decision`, and its effects elsewhere. `state` is not changed.
    An empty decision changes nothing, not even the revision: only when to decide next.

    What the decision leaves alone is shared with `state`, not copied: a step costs what it changes,
    not what the workflow holds (issue 21)."""
    new = _state_after(state, decision, now_ms, {})
    if decision.empty:
        return new, Effects(wake_at_ms=decision.wake_at_ms)
    return new, Effects(start=list(decision.start_workflows), terminate=list(decision.terminate_workflows),
                        enqueue=list(decision.enqueue), dequeue=list(decision.dequeue),
                        drop_leases=list(decision.drop_leases), publish=list(decision.publish),
                        ended=bool(decision.status) and decision.status in st.TERMINAL_WORKFLOW,
                        wake_at_ms=decision.wake_at_ms)


def apply_handing_over(state: WorkflowState, decision: Decision, now_ms: int,
                       handed_to: Mapping[str, str]) -> WorkflowState:
    """The workflow as a write that applied `decision` and handed the tasks in `handed_to` (task id ->
    worker id) to those workers left it: `apply`'s workflow with each of them taken as the store's
    scripts take one (in progress with that worker since `now_ms`, no longer queued), built as one new
    state (not `apply`'s and then a copy of it with the tasks handed over) and without the effects: what
    a node remembers of its own write (cluster/state_cache.py). Only a decision that queues a task
    hands one over, so an empty decision leaves `state` itself, as `apply` does."""
    return _state_after(state, decision, now_ms, handed_to)


def _state_after(state: WorkflowState, decision: Decision, now_ms: int, handed_to: Mapping[str, str]) -> WorkflowState:
    """`apply`'s workflow, with the tasks in `handed_to` taken by their workers (see `apply_handing_over`)."""
    if decision.empty:   # what the walk found finished holds of `state` itself
        remember_finished(state, decision.finished)
        return state
    tasks, kept, changed = _tasks_after(state, decision, handed_to, now_ms)
    new = state.copied()   # every field set below before anyone sees `new`
    new.tasks, new.revision, new.updated_at_ms = tasks, state.revision + 1, now_ms
    if decision.consumed_commands:
        consumed = set(decision.consumed_commands)
        new.commands = [c for c in state.commands if c["field"] not in consumed]
    else:
        new.commands = list(state.commands)
    if kept:   # what the decision left alone stays where it was: the indexes of `state` serve `new`
        state.hand_positions_to(new)
        history_changed = bool(decision.consumed_commands or decision.reset_result or decision.snapshot)
        carry(state, new, changed, None if history_changed else decision.finished)
    if decision.reset_result:
        new.output, new.reason, new.ended_at_ms = None, "", 0
    if decision.variables is not None:
        new.variables = dict(decision.variables)
    if decision.snapshot is not None:
        definition = decision.snapshot["workflow"]
        new.definition, new.version, new.name = definition, definition["version"], definition["name"]
        new.task_defs = decision.snapshot["taskDefs"]
        new.sub_workflows = decision.snapshot.get("subWorkflows", {})
    if decision.status:
        new.status = decision.status
        if decision.output is not None:
            new.output = decision.output
        if decision.reason:
            new.reason = decision.reason
        if decision.status in st.TERMINAL_WORKFLOW:
            new.ended_at_ms = now_ms
    return new


def _tasks_after(state: WorkflowState, decision: Decision, handed_to: Mapping[str, str],
                 now_ms: int) -> tuple[list[TaskState], bool, list[TaskState]]:
    """The tasks once the decision is applied (and the tasks in `handed_to` taken by their workers at
    `now_ms`), in `seq` order; whether those `state` had kept their places (new ones after them); and
    the attempts the decision put in (new or changed).

    Each attempt the decision puts in is one new TaskState, made when it is first put in; what else
    the decision says of it (its runtime, its output, a hand-over) is written into that same object,
    which nothing else holds yet."""
    if decision.delete_tasks:   # an operator's rerun or restart: rebuilt, in seq order
        deleted = set(decision.delete_tasks)
        tasks = [t for t in state.tasks if t.task_id not in deleted]
        kept = False
    else:
        tasks = state.tasks.copy()
        kept = True
    # where an attempt is: those of `state` where `state` has them (while the list kept their places),
    # the others (all of them after a delete) as they are put in
    in_place = kept
    where: dict[str, int] = {} if in_place else {t.task_id: i for i, t in enumerate(tasks)}

    def position(task_id: str) -> int | None:
        found = where.get(task_id)
        if found is None and in_place:
            found = state.position(task_id)
        return found

    changed: dict[int, None] = {}   # positions, in the order they changed: theirs are new objects
    for task in decision.new_tasks:
        found = position(task.task_id)
        if found is None:
            tasks.append(TaskState(task.spec, task.runtime, None))
            found = where[task.task_id] = len(tasks) - 1
        else:   # not what the decider does (a new task has a new id), but it would be a new attempt
            tasks[found] = TaskState(task.spec, task.runtime, None)
            kept = False
        changed[found] = None

    def own(found: int) -> TaskState:
        """The attempt at `found` as a new object of this step's (made on its first change), which
        nothing else holds: what the decision says of it is written into it."""
        if found not in changed:
            task = tasks[found]
            tasks[found] = TaskState(task.spec, task.runtime, task.output)
            changed[found] = None
        return tasks[found]

    for task_id, runtime in decision.changed_runtimes.items():
        found = position(task_id)
        if found is not None:
            own(found).runtime = runtime
    for task_id, output in decision.outputs.items():
        found = position(task_id)
        if found is not None:
            own(found).output = output
    for task_id, worker_id in handed_to.items():
        found = position(task_id)
        if found is not None:   # a new runtime: the decision keeps its own
            own(found).runtime = tasks[found].runtime.taken_by(worker_id, now_ms)
    # `tasks` are in seq order, and a decision's new tasks come after the others: only where that was
    # not so is the order checked (and restored) across the whole list
    first = max(1, len(state.tasks)) if kept else 1
    put_in = [tasks[i] for i in changed]
    if any(tasks[i - 1].spec.seq > tasks[i].spec.seq for i in range(first, len(tasks))):
        tasks.sort(key=_seq)
        kept = False
    return tasks, kept, put_in


def _seq(task: TaskState) -> int:
    return task.spec.seq


def with_result(state: WorkflowState, task_id: str, status: st.TaskStatus, output: dict[str, Any] | None,
                reason: str, now_ms: int, *, grows_by: int = 0) -> WorkflowState:
    """The workflow once a result (a worker's, or a signal's) for attempt `task_id` is stored: the
    attempt ends with `status`, `reason` and `output`, and the revision moves on. What the store's
    `finish_task` does; `grows_by` is what the record grows by (its size bounds later decisions).
    `state` is not changed."""
    tasks = state.tasks.copy()
    found = state.position(task_id)
    if found is not None:
        task = tasks[found]
        tasks[found] = TaskState(task.spec, task.runtime.ended(status, now_ms, reason), output)
    new = state.copied()
    new.tasks, new.revision, new.updated_at_ms = tasks, state.revision + 1, now_ms
    new.stored_bytes = state.stored_bytes + grows_by
    state.hand_positions_to(new)
    carry(state, new, [tasks[found]] if found is not None else [], {})
    return new


def new_child(start: NewWorkflow, now_ms: int) -> WorkflowState:
    """A workflow a decision starts (unless one with its id exists: ids are deterministic)."""
    definition = start.snapshot["workflow"]
    return WorkflowState(
        workflow_id=start.workflow_id, name=start.name, version=start.version, status=st.RUNNING,
        input=start.input, correlation_id=start.correlation_id, created_at_ms=now_ms, updated_at_ms=now_ms,
        definition=definition, task_defs=start.snapshot["taskDefs"],
        sub_workflows=start.snapshot.get("subWorkflows", {}), variables=dict(definition.get("variables", {})),
        parent=start.parent, depth=start.depth, revision=1)


def finish_parent_task(parent: WorkflowState, child: WorkflowState, now_ms: int) -> WorkflowState | None:
    """The parent after its child ended: the SUB_WORKFLOW task completes with the child's
    output, or fails naming the child's status and reason. None when nothing changes (the
    task is gone or no longer in progress, e.g. the parent was terminated first)."""
    task_id = child.parent.split("|", 1)[1] if "|" in child.parent else ""
    task = next((t for t in parent.tasks if t.task_id == task_id), None)
    if task is None or task.runtime.status != st.IN_PROGRESS:
        return None
    runtime: TaskRuntime
    if child.status == st.COMPLETED:
        runtime = task.runtime.ended(st.TASK_COMPLETED, now_ms, task.runtime.reason)
        output: dict[str, Any] | None = child.output or {}
    else:
        runtime = task.runtime.ended(st.TASK_FAILED, now_ms,
                                     f"sub-workflow {child.workflow_id} ended {child.status}: {child.reason}")
        output = task.output
    new = parent.copied()
    new.tasks = [TaskState(t.spec, runtime, output) if t.task_id == task_id else t for t in parent.tasks]
    new.revision, new.updated_at_ms = parent.revision + 1, now_ms
    return new
