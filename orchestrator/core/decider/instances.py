"""A workflow's task instances as a decision reads them, kept beside its state from one step to the
next (issue 21): the latest attempt of every key, what `${...}` expressions see of each, and how far
each task list is known to be finished. A decision then reads what it needs of them instead of
copying and exposing every task the workflow ever ran, and walks on from where the last one stopped.

The index is built once from a state's tasks (when a state is read from the store, say) and then
carried: `apply`, `apply_handing_over` and `with_result` hand it to the state they make, told which
attempts changed; the state they were given builds its own again if it is ever decided. The store's
codec keeps one beside its last read of a long workflow and gives each read a copy (codec.FieldMemo).

The states' tasks are never changed in place by the product (a decision changes its own copies);
the tests' simulator does change an active attempt in place (its workers), so a decision checks
that the entry of each active attempt still shows the attempt's output, and makes it again if not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from .. import state as m
from .. import statuses as st
from ..kinds import kind_for
from ..namespaces import relative

SEQ = attrgetter("spec.seq")


def _iteration(task: m.TaskState) -> int:
    if kind_for(task.spec.kind).loops:   # `${loop['iteration']}` reads the loop's current iteration
        return int((task.output or {}).get("iteration", 0))
    tail = task.spec.key.rsplit("__", 1)[1] if "__" in task.spec.key else "0"
    return int(tail) if tail.isdigit() else 0


_TASK_FIELDS: dict[str, Callable[[m.TaskState, Entry], Any]] = {
    "taskId": lambda t, e: t.spec.task_id,
    "status": lambda t, e: str(t.runtime.status),
    "referenceTaskName": lambda t, e: t.spec.key,
    "retryCount": lambda t, e: t.spec.attempt,
    "taskType": lambda t, e: relative(t.spec.task_type),
    "taskDefName": lambda t, e: relative(t.spec.task_type),
    "scheduledTime": lambda t, e: t.spec.scheduled_at_ms,
    "startTime": lambda t, e: t.runtime.started_at_ms,
    "endTime": lambda t, e: t.runtime.ended_at_ms,
    "updateTime": lambda t, e: max(t.runtime.ended_at_ms, t.runtime.started_at_ms, t.spec.scheduled_at_ms),
    "reasonForIncompletion": lambda t, e: t.runtime.reason,
    "workerId": lambda t, e: t.runtime.worker_id or None,
    "iteration": lambda t, e: _iteration(t),
    "seq": lambda t, e: t.spec.seq,
    "callbackAfterSeconds": lambda t, e: 0,
    "pollCount": lambda t, e: 1 if t.runtime.started_at_ms else 0,
    "workflowInstanceId": lambda t, e: e.workflow_id,
    "correlationId": lambda t, e: e.correlation_id,
}


class Entry(dict[str, Any]):
    """What `${<ref>.…}` sees of an instance: its input and output, and (computed when read, so
    always current) the other fields of a task Conductor's expressions can read: `${ref.status}`,
    `${ref.endTime}`, `${loop['iteration']}`, ... Only input and output are listed as keys.
    It names its workflow by id, not by state: an entry outlives the state it was made for."""

    __slots__ = ("correlation_id", "read", "task", "workflow_id")
    task: m.TaskState
    read: dict[str, Any] | None   # the task's output when the entry was made
    workflow_id: str
    correlation_id: str

    def __init__(self, task: m.TaskState, workflow_id: str, correlation_id: str) -> None:
        # set key by key: about half the time of dict's __init__ through super() (one per new task, twice)
        output = task.output
        self["input"] = task.spec.input
        self["output"] = output or {}
        self.task, self.read, self.workflow_id, self.correlation_id = task, output, workflow_id, correlation_id

    def __missing__(self, key: str) -> Any:
        field = _TASK_FIELDS.get(key)
        if field is None:
            raise KeyError(key)
        return field(self.task, self)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in _TASK_FIELDS

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def entry_for(task: m.TaskState, wf: m.WorkflowState) -> Entry:
    return Entry(task, wf.workflow_id, wf.correlation_id)


class Instances:
    """The index of one state's tasks (see the module's docstring).

    - `latest`: key -> the latest attempt (the state's own objects: read, never changed);
    - `entries`: reference or key -> what expressions see of the instance (a reference answers for
      its instance of highest `seq`); `live`: the keys whose latest attempt is still active, whose
      entries each decision checks (an active attempt may end outside decisions; in the tests'
      simulator, by changing the task in place);
    - `next_seq`: the `seq` of the next task;
    - `finished`: first key of a task list (its first node's key) -> how many of its nodes, from the
      first, a decision found finished (simple nodes whose instance ended done): a later decision
      of the same run starts walking that list after them. Set by decisions (`Decision.finished`)."""

    __slots__ = ("count", "entries", "finished", "latest", "live", "next_seq", "tasks")

    def __init__(self, wf: m.WorkflowState) -> None:
        self.tasks, self.count = wf.tasks, len(wf.tasks)
        ordered = wf.tasks if _in_seq_order(wf.tasks) else sorted(wf.tasks, key=SEQ)
        self.latest: dict[str, m.TaskState] = {task.spec.key: task for task in ordered}
        self.entries: dict[str, Entry] = {}
        self.live: set[str] = set()
        for task in ordered:
            if self.latest[task.spec.key] is task:
                self._expose(task, wf)
        self.next_seq = ordered[-1].spec.seq + 1 if ordered else 0
        self.finished: dict[str, int] = {}

    def describes(self, wf: m.WorkflowState) -> bool:
        """Whether this is the index of `wf`'s tasks as they are (their list was not replaced or grown)."""
        return self.tasks is wf.tasks and self.count == len(wf.tasks)

    def _expose(self, task: m.TaskState, wf: m.WorkflowState) -> None:
        """Index `task`, the latest attempt of its key: its entry (under its key, and under its
        reference unless an instance of that reference has a higher `seq`), live while active."""
        key, ref = task.spec.key, task.spec.ref
        if task.runtime.status in st.ACTIVE_TASK:
            self.live.add(key)
        else:
            self.live.discard(key)
        entry = entry_for(task, wf)
        self.entries[key] = entry
        shown = self.entries.get(ref)
        if shown is None or shown.task.spec.seq <= task.spec.seq:
            self.entries[ref] = entry

    def carry(self, new: m.WorkflowState, changed: list[m.TaskState], finished: dict[str, int] | None) -> None:
        """Make this the index of `new`, whose tasks are those this indexes with the attempts in
        `changed` put in (replaced, or added after the others); `finished`: what the decision that
        made `new` found finished (None: forget what was known, the history changed)."""
        self.update(changed, new)
        if finished is None:
            self.finished.clear()
        else:
            self.finished.update(finished)
        self.serve(new)

    def update(self, changed: list[m.TaskState], wf: m.WorkflowState) -> None:
        """Index the attempts in `changed`, put into the tasks (replacing an attempt, or added)."""
        for task in changed:
            latest = self.latest.get(task.spec.key)
            if latest is None or latest.spec.seq <= task.spec.seq:
                self.latest[task.spec.key] = task
                self._expose(task, wf)
            self.next_seq = max(self.next_seq, task.spec.seq + 1)

    def serve(self, wf: m.WorkflowState) -> None:
        """Be the index of `wf` (whose tasks are the ones indexed)."""
        self.tasks, self.count = wf.tasks, len(wf.tasks)
        wf._instances = self

    def copy(self) -> Instances:
        """Another index of the same tasks, to be changed apart from this one (copied in C); what is
        known finished stays shared: it holds of every later state of the run, and what one learns
        serves the other (an operator's command clears it for both)."""
        twin = Instances.__new__(Instances)
        twin.tasks, twin.count, twin.next_seq = self.tasks, self.count, self.next_seq
        twin.latest, twin.entries, twin.live = dict(self.latest), dict(self.entries), set(self.live)
        twin.finished = self.finished
        return twin


def _in_seq_order(tasks: list[m.TaskState]) -> bool:
    return all(tasks[i - 1].spec.seq < tasks[i].spec.seq for i in range(1, len(tasks)))


def carry(old: m.WorkflowState, new: m.WorkflowState, changed: list[m.TaskState],
          finished: dict[str, int] | None) -> None:
    """Hand `old`'s index, if it has one, on to `new` (see `Instances.carry`): `old` builds its own
    again if it is ever decided (a state derived from another is most often the only one used next)."""
    index, old._instances = old._instances, None
    if isinstance(index, Instances) and index.describes(old):
        index.carry(new, changed, finished)


def remember_finished(wf: m.WorkflowState, finished: dict[str, int]) -> None:
    """Note in `wf`'s index what a decision of `wf` that changed nothing found finished."""
    index = wf._instances
    if finished and isinstance(index, Instances) and index.describes(wf):
        index.finished.update(finished)


def instances_of(wf: m.WorkflowState) -> Instances:
    """`wf`'s index: the one carried to it, else built now (and kept)."""
    found = wf._instances
    if isinstance(found, Instances) and found.describes(wf):
        return found
    built = Instances(wf)
    wf._instances = built
    return built


class Latest:
    """key -> the latest instance, as one decision sees it. An instance that ended done is the
    state's own object (nothing a decision does changes one: `Walk.change` refuses); any other is
    copied from the state when the decision first asks for it (the decision changes its copies,
    never the state's tasks). Reading them all (`seen`) copies none."""

    __slots__ = ("_own", "_shared")

    def __init__(self, shared: dict[str, m.TaskState]) -> None:
        self._shared = shared
        self._own: dict[str, m.TaskState] = {}

    def get(self, key: str, default: m.TaskState | None = None) -> m.TaskState | None:
        own = self._own.get(key)
        if own is not None:
            return own
        shared = self._shared.get(key)
        if shared is None:
            return default
        if shared.runtime.status in st.DONE_TASK:
            return shared
        copy = m.TaskState(shared.spec, shared.runtime, shared.output)
        self._own[key] = copy
        return copy

    def __getitem__(self, key: str) -> m.TaskState:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __setitem__(self, key: str, task: m.TaskState) -> None:
        self._own[key] = task

    def __contains__(self, key: object) -> bool:
        return key in self._own or key in self._shared

    def seen(self) -> Iterator[m.TaskState]:
        """Every latest instance, to read only: the decision's own where it has one, else the
        state's (not copied: a decision that ends a workflow reads them all, several times)."""
        own = self._own
        yield from own.values()
        for key, task in self._shared.items():
            if key not in own:
                yield task

    def is_the_states(self, task: m.TaskState) -> bool:
        """Whether `task` is the state's object, not the decision's (which it must not change)."""
        return self._shared.get(task.spec.key) is task
