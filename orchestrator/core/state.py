"""The in-memory shape of a workflow and its task attempts, as the store reads them.

Each task attempt is split in Redis into three fields so that Lua scripts never
re-encode user data: `t:<id>` (the spec the decider wrote: reference, input, ...),
`s:<id>` (a small state object of scalars that scripts update) and `o:<id>` (the
worker's output, stored verbatim).

A step makes new objects, never changes those of a state another holds (a node's memory of its
workflows, a decision's input). The task objects have `__slots__` (smaller and quicker to make: a
node makes several per step and keeps every task of the workflows it remembers), and the copies a
step makes are written out below rather than left to `dataclasses.replace`, which looks up every
field of the class on each call (issue 21).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .schema import TaskDef, WorkflowDef
from .statuses import TaskStatus, WorkflowStatus


@dataclass(slots=True)
class TaskSpec:
    """What the decider decided about an attempt; written once, never by scripts."""

    task_id: str
    ref: str                  # the taskReferenceName in the definition
    kind: str
    task_type: str            # the task definition name (SIMPLE) or the kind (system tasks)
    attempt: int
    seq: int
    input: dict[str, Any]
    scheduled_at_ms: int
    key: str = ""             # ref plus loop-iteration suffixes ("check__2"): unique per instance
    extra: dict[str, Any] = field(default_factory=dict)  # per-kind facts: child id, retry base, ...

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.ref

    def idempotency_key(self, workflow_id: str) -> str:
        """Stable across the retries of one logical execution of the task, different for every
        other execution (loop iteration, dynamic branch, compensation, restart, rerun)."""
        return f"{workflow_id}/{self.key}/{self.extra.get('execution', self.task_id)}"

    def to_json(self) -> dict[str, Any]:
        doc = {"id": self.task_id, "ref": self.ref, "kind": self.kind, "type": self.task_type,
               "attempt": self.attempt, "seq": self.seq, "input": self.input,
               "scheduled": self.scheduled_at_ms}
        if self.key != self.ref:
            doc["key"] = self.key
        if self.extra:
            doc["extra"] = self.extra
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TaskSpec:
        return cls(doc["id"], doc["ref"], doc["kind"], doc["type"], doc["attempt"], doc["seq"],
                   doc["input"], doc["scheduled"], doc.get("key", ""), doc.get("extra", {}))


@dataclass(slots=True)
class TaskRuntime:
    """The scalar state of an attempt; the Lua scripts read and update it."""

    status: TaskStatus
    task_type: str
    lease_ms: int
    timeout_ms: int = 0
    ready_at_ms: int = 0
    queued: bool = False
    worker_id: str = ""
    started_at_ms: int = 0
    ended_at_ms: int = 0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "type": self.task_type, "lease_ms": self.lease_ms,
                "timeout_ms": self.timeout_ms, "ready_at": self.ready_at_ms, "queued": self.queued,
                "worker": self.worker_id, "started": self.started_at_ms, "ended": self.ended_at_ms,
                "reason": self.reason}

    def ended(self, status: TaskStatus, now_ms: int, reason: str) -> TaskRuntime:
        """This attempt's state once a result ended it (`status`, at `now_ms`, for `reason`)."""
        return TaskRuntime(status, self.task_type, self.lease_ms, self.timeout_ms, self.ready_at_ms, self.queued,
                           self.worker_id, self.started_at_ms, now_ms, reason)

    def taken_by(self, worker_id: str, now_ms: int) -> TaskRuntime:
        """This attempt's state once handed to `worker_id` at `now_ms`, as the store's scripts hand one
        over (`take` in store/redis/scripts.py): in progress, started, no longer queued."""
        return TaskRuntime(TaskStatus.IN_PROGRESS, self.task_type, self.lease_ms, self.timeout_ms,
                           self.ready_at_ms, False, worker_id, now_ms, self.ended_at_ms, self.reason)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TaskRuntime:
        return cls(status=TaskStatus(doc["status"]), task_type=doc["type"], lease_ms=int(doc["lease_ms"]),
                   timeout_ms=int(doc.get("timeout_ms", 0)), ready_at_ms=int(doc.get("ready_at", 0)),
                   queued=bool(doc.get("queued", False)), worker_id=doc.get("worker", "") or "",
                   started_at_ms=int(doc.get("started", 0)), ended_at_ms=int(doc.get("ended", 0)),
                   reason=doc.get("reason", "") or "")


@dataclass(slots=True)
class TaskState:
    spec: TaskSpec
    runtime: TaskRuntime
    output: dict[str, Any] | None = None

    @property
    def task_id(self) -> str:
        return self.spec.task_id


@dataclass
class WorkflowState:
    """Everything the decider needs, read in one round trip (HGETALL)."""

    workflow_id: str
    name: str
    version: int
    status: WorkflowStatus
    input: dict[str, Any]
    correlation_id: str
    created_at_ms: int
    updated_at_ms: int
    definition: WorkflowDef
    task_defs: dict[str, TaskDef]
    sub_workflows: dict[str, WorkflowDef] = field(default_factory=dict)  # "name:version" -> definition
    tasks: list[TaskState] = field(default_factory=list)   # in `seq` order (the order they were created in)
    variables: dict[str, Any] = field(default_factory=dict)
    parent: str = ""          # "<parent workflow id>|<its SUB_WORKFLOW task id>" for a child
    depth: int = 0            # workflows above this one: its parent's depth + 1 (sub-workflows, failure workflows)
    stored_bytes: int = 0     # what its record takes in the store, as last read (bounds its growth)
    commands: list[dict[str, Any]] = field(default_factory=list)  # operator requests not yet applied
    output: dict[str, Any] | None = None
    reason: str = ""
    ended_at_ms: int = 0
    revision: int = 0  # bumped by every write; the decider's write is conditional on it
    # Where each attempt is in `tasks`, so that a step finds the attempts it changes without a scan of
    # every task (issue 21). Built when first asked for; not an argument, so `replace` starts afresh.
    _positions: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    # The decider's index of the tasks (core/decider/instances.py), carried from state to state likewise.
    _instances: object | None = field(default=None, init=False, repr=False, compare=False)

    def copied(self) -> WorkflowState:
        """A new state with this one's fields (the same objects, not copies of them) and no index of
        its own yet: the start of the next state, whose changed fields its maker sets before anyone
        else sees it. What `dataclasses.replace(self)` makes, in one copy of the attributes."""
        cls = type(self)
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        new._positions = new._instances = None
        return new

    def position(self, task_id: str) -> int | None:
        """Where attempt `task_id` is in `tasks` (None: it is not there)."""
        positions = self._positions
        if positions is None or len(positions) != len(self.tasks):   # never built, or the list changed
            positions = self._positions = {task.task_id: i for i, task in enumerate(self.tasks)}
        found = positions.get(task_id)
        if found is not None and self.tasks[found].task_id != task_id:   # the list was changed in place
            self._positions = None
            return self.position(task_id)
        return found

    def task(self, task_id: str) -> TaskState | None:
        """Attempt `task_id`, if the workflow has it."""
        found = self.position(task_id)
        return None if found is None else self.tasks[found]

    def hand_positions_to(self, other: WorkflowState) -> None:
        """Give `other`, whose `tasks` hold this workflow's in the same places followed by new ones
        (appended in `other.tasks` already), the positions of this one, without copying them: this
        state finds its own again when next asked (a state derived from another is most often the
        only one used afterwards)."""
        positions, self._positions = self._positions, None
        if positions is None or len(positions) > len(other.tasks):
            return
        for i in range(len(positions), len(other.tasks)):
            positions[other.tasks[i].task_id] = i
        other._positions = positions

    def latest_attempt(self, key: str) -> TaskState | None:
        latest = None
        for task in self.tasks:
            if task.spec.key == key and (latest is None or task.spec.seq > latest.spec.seq):
                latest = task
        return latest
