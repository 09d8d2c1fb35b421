"""What the rest of the node may ask of the state store, and what each call guarantees.

The cluster and API layers talk to this protocol only; `orchestrator.store.redis` is the
one implementation (Lua scripts on Redis), and the only code that knows key names.

Words used below:
- *atomic*: the whole call takes effect or none of it does; no reader sees a half.
- *fenced*: the call carries the caller's epoch and is refused with `StaleEpoch`, changing
  nothing, when a newer leader has raised the stored epoch. Only the leader's engine makes
  fenced calls; events any node may store (starts, results, signals) are not fenced but are
  atomic and idempotent instead.
- *revision-checked*: applied only if the workflow's revision is the one the caller read;
  otherwise it answers CONFLICT and changes nothing.
Every call may raise `StoreUnavailable` while the store cannot be reached; nothing is then
known to be written except where the call is idempotent and can simply be repeated.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ..core.decider import Decision
from ..core.errors import TooLarge
from ..core.events import BusEvent
from ..core.schema import Snapshot, TaskDef, WorkflowDef
from ..core.state import TaskSpec, WorkflowState
from ..core.statuses import TaskStatus, WorkflowStatus


ANY_WORKER = "*"   # a result or release naming no worker: the store reads it as "whoever holds the attempt"


class StoreUnavailable(Exception):
    """The store did not answer (down, restarting, failing over): retry later."""


class QuotaExceeded(TooLarge):
    """A namespace holds all that one of its quotas (`Quotas`) allows: nothing was written, and the
    message names the quota and its setting. RESOURCE_EXHAUSTED."""


@dataclass(frozen=True)
class Quotas:
    """What each namespace may hold at once (the node settings `quota_*`; 0: no limit). Refused
    beyond them, with QuotaExceeded: a start past `workflows_in_flight` (running, paused or
    compensating; sub-workflows a running workflow starts are counted, never refused), a new
    event handler past `event_handlers`, a new topic (published to, configured, subscribed to,
    handled or waited on) past `topics`, a new subscription group past `consumer_groups`."""

    workflows_in_flight: int = 1_000_000
    event_handlers: int = 1_000
    topics: int = 10_000
    consumer_groups: int = 10_000


class Topic(enum.Enum):
    """Broadcasts the transition scripts publish, for the nodes that wait on them. Each is sent
    only where someone listens: `ready` per task type (`Store.subscribe_each`), `done` to the
    nodes that said they wait for that workflow (`Store.expect_end`), a workflow's changes while
    it is watched (`Store.changes`)."""

    READY = "ready"   # a task type has queued work (payload: a task queued, or the type); one channel per type
    TIMER = "timer"   # a workflow set a timer (payload: its time, epoch ms), for the leader's sleep
    DONE = "done"     # a workflow this node expects the end of ended (payload: the workflow id)
    PUBLISHED = "published"   # an event was appended to a topic (payload: the topic), for waiting readers
    # a limited task type's lease ended in a partition (payload: the partition's name), for the leader's
    # clocks, which take it out of the type's count (`Store.release_freed`)
    FREED = "freed"


class Subscription(Protocol):
    """The channels of one topic a node listens to, one per name (`Store.subscribe_each`)."""

    def want(self, names: Collection[str]) -> None:
        """Listen to exactly these names from now on (each as soon as the store confirms it)."""

    async def run(self) -> None:
        """Deliver the messages until cancelled; resubscribe after outages."""


class ActionOutcome(enum.Enum):
    """What one action of an event handler did (`Store.event_action`)."""

    OK = "OK"
    DUPLICATE = "DUPLICATE"   # done before for this event: nothing changed
    UNKNOWN = "UNKNOWN"       # no such workflow or task
    ENDED = "ENDED"           # the workflow already ended
    STALE = "STALE"           # the task already ended


class ApplyResult(enum.Enum):
    OK = "OK"
    CONFLICT = "CONFLICT"   # the workflow changed since it was read: decide again
    GONE = "GONE"           # the workflow no longer exists
    REFUSED = "REFUSED"     # this decision cannot be stored (unserialisable, refused by the script)


@dataclass(frozen=True)
class ClaimedTask:
    workflow_id: str
    spec: TaskSpec
    lease_ms: int
    # the workflow as the claim that handed this task over left it (asked for with `records`): what
    # the claiming node decides the task's result from, without reading the workflow again
    workflow: WorkflowState | None = None


@dataclass(frozen=True)
class ApplyOutcome:
    result: ApplyResult
    error: str = ""          # why, for REFUSED
    handed: list[ClaimedTask] = field(default_factory=list)   # given to the caller's workers at once
    grew_by: int = 0         # at most what the workflow's record grew by (OK): its size as its cache counts it


class ResultOutcome(enum.Enum):
    """What storing a worker's result did."""

    STORED = "OK"
    DUPLICATE = "DUPLICATE"   # the same result was stored before: acknowledged, nothing changed
    STALE = "STALE"           # the attempt is no longer this worker's (expired, released, ended)
    UNKNOWN = "UNKNOWN"       # no such attempt


@dataclass(frozen=True)
class ResultAck:
    outcome: ResultOutcome
    detail: str = ""          # for STALE: the attempt's status or who holds it
    task_type: str = ""       # the attempt's task type (for a worker that asks for its next task at once)


FirstDecision = Callable[[WorkflowState], Awaitable[tuple[Decision, Mapping[str, str]] | None]]
"""Decides a workflow about to be created, from `state` (exactly as the start will create it): the
decision and, task id -> worker id, the caller's workers to hand its tasks to; None to start it
undecided (a reminder then has it decided as after any event)."""


class Started(NamedTuple):
    """What a start did: the workflow's id, whether this call created it, and then the workflow as
    created (what a load would return at once), for the node to decide without reading it back.
    `decision` and `applied`: the first decision, when the call that created the workflow applied it
    too (`applied.handed`: the tasks it gave the caller's workers)."""

    workflow_id: str
    created: bool
    state: WorkflowState | None = None
    decision: Decision | None = None
    applied: ApplyOutcome | None = None


@dataclass(frozen=True)
class WorkerResult:
    """A worker's result for one attempt, as the store keeps it."""

    workflow_id: str
    task_id: str
    worker_id: str
    status: TaskStatus
    output_json: str
    reason: str = ""


@dataclass(frozen=True)
class Stepped:
    """What `Store.step` did: the result's outcome, and the decision's when the result was stored
    (CONFLICT: the workflow had moved on; the result is stored and must be decided again)."""

    ack: ResultAck
    applied: ApplyOutcome | None = None


class DecisionRefused(Exception):
    """A decision the store will not take (it cannot be encoded, or it outgrows a limit); nothing was
    sent. The message says why."""


@dataclass(frozen=True)
class Due:
    """What the engine must look at now, and when it next needs to wake up."""

    workflows: list[str]
    expired_leases: list[tuple[str, str]]     # (workflow id, task id)
    next_at_ms: float | None


@dataclass(frozen=True)
class SearchPage:
    workflow_ids: list[str]
    next_cursor: str | None   # opaque; None on the last page


@dataclass(frozen=True)
class TopicInfo:
    max_len: int              # events kept (approximately)
    length: int               # events held now
    max_age_s: int            # events older than this are dropped when the next one is published; 0 = none


@dataclass(frozen=True)
class QueueStats:
    """One task type's ready queue: how many tasks wait and since when (for the console and metrics)."""

    task_type: str
    depth: int
    oldest_ms: int | None     # when the task waiting longest was queued (epoch ms); None when empty


@dataclass(frozen=True)
class StoreHealth:
    """Whether the store answered, how fast, and what it says about itself."""

    ok: bool
    latency_ms: float
    details: dict[str, str] = field(default_factory=dict)   # version, role, memory, persistence
    error: str = ""


class Store(Protocol):
    # ------------------------------------------------------------- definitions (any node)

    async def put_task_def(self, definition: TaskDef) -> None:
        """Store a task definition and the limits the claim enforces for its type. Atomic."""

    async def get_task_def(self, name: str) -> TaskDef | None: ...

    async def task_defs(self, names: Iterable[str] | None = None) -> dict[str, TaskDef]:
        """The named task definitions that exist (all of them when `names` is None)."""

    async def put_workflow_def(self, definition: WorkflowDef) -> None:
        """Store one version of a workflow definition; running workflows keep their snapshot. Atomic."""

    async def get_workflow_def(self, name: str, version: int = 0) -> WorkflowDef | None:
        """One version (0 = the latest), or None."""

    async def workflow_defs(self, name: str = "") -> list[WorkflowDef]:
        """Every version of `name`, or the latest version of every name."""

    async def snapshot(self, definition: WorkflowDef) -> Snapshot:
        """The definition with every task and workflow definition it can reach, frozen for one run."""

    # ------------------------------------------------------------- workflows (any node)

    async def prepare(self, partitions: int = 0) -> None:
        """Settle the layout of the state with the one stored (before the node serves anything);
        `partitions`: how many the state is cut into, 0 = as stored (or the default for a new one)."""

    def new_workflow_id(self, idempotency_key: str = "") -> str:
        """A new workflow id, for a start with this idempotency key (one the store can keep beside it)."""

    def new_workflow_id_beside(self, workflow_id: str) -> str:
        """A new workflow id for a workflow a decision of `workflow_id` starts (changed in one step with it)."""

    async def start_by_name(self, name: str, version: int, workflow_id: str, workflow_input: dict[str, Any],
                            correlation_id: str, idempotency_key: str, now_ms: int, *,
                            expect_end: bool = False, decide: FirstDecision | None = None) -> Started:
        """Create a workflow from the latest snapshot of `name`; with `expect_end`, one this node
        waits for (as `expect_end` says, in the same step: only for a workflow this call creates).
        With `decide`, the workflow's first decision is made from the state the start will create
        and applied in the same atomic step when this call creates it (at revision 1, leaving no
        decide reminder): `decide` may be called once per try (a definition registered meanwhile).
        A decision `apply_decisions` would refuse is not sent: the workflow is created undecided.

        Atomic and idempotent per idempotency key: a repeated key returns the first id.
        QuotaExceeded: its namespace has as many workflows in flight as its quota allows."""

    async def load(self, workflow_id: str) -> WorkflowState | None: ...

    async def load_many(self, workflow_ids: list[str]) -> list[WorkflowState | None]: ...

    async def status(self, workflow_id: str) -> WorkflowStatus | None:
        """The workflow's status alone (None: no such workflow): what a waiter for its end needs,
        without reading every task of a large workflow."""

    async def terminate(self, workflow_id: str, reason: str, now_ms: int, compensate: bool = False) -> None:
        """End a running workflow (or start undoing it). Atomic; NotFound / FailedPrecondition."""

    async def operate(self, workflow_id: str, *, allowed: Iterable[str], new_status: str = "",
                      command: dict[str, Any] | None = None, now_ms: int) -> None:
        """Change status and/or queue a command for the decider, if the status is allowed. Atomic."""

    async def signal_task(self, workflow_id: str, task_id: str, status: TaskStatus, output_json: str,
                          reason: str, now_ms: int) -> None:
        """Complete a waiting WAIT or HUMAN task. Atomic; refused once the task or workflow ended."""

    async def search(self, *, name: str, status: str, correlation_id: str, cursor: str, limit: int,
                     created_from_ms: int = 0, created_to_ms: int = 0, text: str = "",
                     namespace: str = "") -> SearchPage:
        """Workflow ids of `namespace`, newest first; the cursor is stable when workflows start
        meanwhile. `name` is qualified (as stored). `text`: free-text words (`core.free_text`);
        such a page may be short, with a cursor."""

    # ------------------------------------------------------------- tasks (any node)

    async def claim(self, task_type: str, count: int, worker_id: str, now_ms: int, *,
                    records: bool = False) -> list[ClaimedTask]:
        """Hand up to `count` queued tasks to a worker with a lease, within the type's limits;
        `records`: each with its workflow as the claim left it (`ClaimedTask.workflow`).

        Atomic: each task goes to exactly one caller, however many nodes claim at once."""

    async def heartbeat(self, workflow_id: str, task_id: str, worker_id: str, now_ms: int) -> int:
        """Extend the lease of an attempt this worker holds; the lease in ms, 0 if it is gone."""

    async def complete_task(self, workflow_id: str, task_id: str, worker_id: str, status: TaskStatus,
                            output_json: str, reason: str, now_ms: int) -> ResultAck:
        """Store a worker's result for one attempt. Atomic and idempotent (see ResultOutcome)."""

    async def step(self, result: WorkerResult, decided: WorkflowState, decision: Decision, now_ms: int, *,
                   hand_over: Mapping[str, str] | None = None) -> Stepped:
        """Store a worker's result and apply the decision computed from the workflow with that result in
        it (`decided`: the workflow as `complete_task` would leave it, revision included), in one atomic
        step. The decision applies only if nothing else changed the workflow since it was read
        (otherwise: applied CONFLICT, and the result is stored exactly as by `complete_task`). Raises
        DecisionRefused, sending nothing, for a decision `apply_decisions` would refuse."""

    async def release_task(self, workflow_id: str, task_id: str, worker_id: str, now_ms: int, *,
                           delay_ms: int = 0, output_json: str = "") -> bool:
        """Put an attempt this worker holds back in its queue without counting a failure, to be
        claimed again after `delay_ms`, keeping `output_json` as its output so far when given. Atomic."""

    async def add_task_logs(self, task_id: str, lines: list[tuple[int, str]]) -> None:
        """Append (epoch ms, text) log lines of a task attempt; the newest few hundred are kept."""

    async def task_logs(self, task_id: str) -> list[tuple[int, str]]:
        """The log lines kept for a task attempt, oldest first."""

    # ------------------------------------------------------------- engine (leader only, fenced)

    async def release_freed(self, partitions: Collection[str] | None = None, now_ms: int = 0) -> int:
        """Take the attempts of limited task types whose leases ended out of their types' counts, for
        the named partitions (as Topic.FREED names them; None: every one, and with `now_ms` the
        counted attempts that lost their lease without saying so); how many were counted."""

    async def relay_events(self, partitions: Collection[str] | None = None) -> int:
        """Publish the events EVENT tasks' decisions left in the named partitions' outboxes (None:
        every one), each once; how many were published now."""

    async def raise_epoch(self, epoch: int) -> None:
        """Raise the stored epoch to `epoch`; StaleEpoch if a newer one is stored already."""

    async def due(self, now_ms: int, limit: int) -> Due:
        """Workflows due for a decision and leases past their deadline (a read)."""

    async def expire_lease(self, epoch: int, workflow_id: str, task_id: str, now_ms: int) -> bool:
        """Time out an attempt whose lease passed; False if it was renewed or ended. Fenced, atomic."""

    async def apply_decisions(self, epoch: int | None, now_ms: int, decisions: list[tuple[WorkflowState, Decision]],
                              *, hand_over: Mapping[str, str] | None = None) -> list[ApplyOutcome]:
        """Apply each decision to its workflow, each atomic and revision-checked, and fenced when
        `epoch` is given (the leader's engine; an event's decision on any node passes None).
        A decision that cannot be stored is REFUSED alone, with the reason; the others apply.
        `hand_over` (task id -> worker id): tasks the decisions queue that go straight to that
        worker of the caller's, leased in the same atomic step, when their type's limits allow
        (`ApplyOutcome.handed`); every other queued task is broadcast to all nodes as usual."""

    async def ended_before(self, cutoff_ms: int, limit: int) -> list[tuple[str, str]]:
        """The oldest entries of the audit stream of terminal transitions that happened before
        `cutoff_ms`: (entry id, workflow id), oldest first. A read."""

    async def forget_ended(self, epoch: int, entries: list[tuple[str, str]], cutoff_ms: int) -> int:
        """Delete the workflows of these entries that are still finished, and ended before the
        cutoff, with their index entries; drop the entries. Fenced, atomic; returns how many
        workflows went (the caller archived them first)."""

    async def defer(self, epoch: int | None, workflow_id: str, at_ms: int) -> None:
        """Decide `workflow_id` again at `at_ms`. Fenced when `epoch` is given."""

    async def forget_due(self, workflow_id: str, epoch: int | None) -> None:
        """Drop a workflow that no longer exists from the decide set. Fenced when `epoch` is given."""

    # ------------------------------------------------------------- broadcasts and audit

    async def listen(self, topic: Topic, on_message: Callable[[str], None],
                     on_subscribed: Callable[[], None] | None = None) -> None:
        """Call `on_message(payload)` for each broadcast on `topic` until cancelled.

        Resubscribes after outages; `on_subscribed` runs after each (re)subscription so the
        caller can catch up on what it may have missed meanwhile. DONE carries only the ends of
        the workflows this node said it waits for (`expect_end`); READY is per task type
        (`subscribe_each`)."""

    def subscribe_each(self, topic: Topic, on_message: Callable[[str, str], None],
                       on_subscribed: Callable[[str], None]) -> Subscription:
        """The broadcasts of `topic` (READY) for the names (task types) the node wants, each on its
        own channel, so a node hears nothing of the types it does not serve. `on_message(name,
        payload)` for each: READY's payload names one task the broadcasting write queued
        (`workflow id|task id`), or is the type itself when it names none. `on_subscribed(name)`
        runs once each subscription is confirmed: what was published before is caught up then."""

    async def expect_end(self, workflow_id: str) -> bool:
        """This node waits for the workflow's end: the DONE broadcast of its end comes to this node
        (and to no node that did not ask). Call it before checking whether it ended already.
        False when there is no such workflow."""

    async def ended_state(self, workflow_id: str) -> WorkflowState | None:
        """The workflow as this node's own step that ended it left it, read in that step's round
        trip, when this node waits for it (`expect_end`, or a start with `expect_end`): for the
        caller that waits, once. None otherwise (then load it)."""

    def changes(self, workflow_id: str, recheck_s: float) -> AsyncIterator[None]:
        """Yield at once, then after each change of the workflow (bursts collapsed), or every
        `recheck_s` seconds as a safety net. While it runs, the workflow is marked watched (and the
        mark renewed), since its changes are broadcast only while someone watches it. Its
        subscription holds one of the connections for blocking reads; when none is free it holds
        none and yields every `recheck_s` only."""

    async def ended_counts(self, workflow_ids: Iterable[str] | None = None) -> Counter[str]:
        """How often each workflow reached a terminal status, from the audit stream."""

    async def ended_entries(self) -> list[tuple[str, int]]:
        """(workflow id, end time in ms) of every terminal transition in the audit stream."""

    # ------------------------------------------------------------- the event bus (any node)
    # A topic is a Redis stream kept to its retention (approximately, MAXLEN ~). A handler is
    # consumed through one consumer group named after it, shared by every node: each event goes to
    # one node; what a node received and did not acknowledge is taken over by another after the
    # handler's `redeliverAfterSeconds`, and after `maxDeliveries` goes to the dead-letter topic.

    async def publish_event(self, topic: str, payload_json: str, key: str, now_ms: int,
                            take: Sequence[str] = (), consumer: str = "",
                            on_taken: Callable[[list[tuple[str, BusEvent]]], None] | None = None) -> str:
        """Append an event to `topic` (trimmed to its retention); its id. Atomic. QuotaExceeded: a new
        topic past its namespace's quota. For each consumer group in `take`, the event delivered to
        `consumer` in it, if any (the group's oldest undelivered: this one unless the group was
        behind), as `receive_events` would have, goes to `on_taken` as soon as the append is done,
        before the answer waits for replicas (`redis_min_replicas`): delivered to `consumer`, those
        events are its to handle whether or not the publish is acknowledged."""

    async def read_events(self, topic: str, after: str, limit: int) -> list[BusEvent]:
        """Events of `topic` after the id `after` ('' = the oldest kept), oldest first. A read."""

    async def configure_topic(self, topic: str, max_len: int, max_age_s: int = 0) -> TopicInfo:
        """Set the retention of `topic` (0 = the default length; 0 = no age limit) and trim it.
        QuotaExceeded: a new topic past its namespace's quota."""

    async def topic_info(self, topic: str) -> TopicInfo: ...

    async def watch_topics(self, topics: Iterable[str]) -> None:
        """Topics that WAIT tasks wait on: each gets the consumer group `wait:<topic>` (from now
        on) and every node consumes it (`cluster.events`). Idempotent. QuotaExceeded: a new topic
        past its namespace's quota (the topics before it may be watched already)."""

    async def watched_topics(self) -> list[str]: ...

    async def ensure_group(self, topic: str, group: str) -> None:
        """Create the consumer group `group` on `topic` at its end, unless it exists (a subscription).
        QuotaExceeded: a new group (or topic) past its namespace's quota."""

    async def put_event_handler(self, handler: dict[str, Any]) -> None:
        """Store a normalised handler and create its consumer group (at the topic's end). Atomic.
        QuotaExceeded: a new handler, or a new topic, past its namespace's quota."""

    async def event_handlers(self) -> list[dict[str, Any]]:
        """Every stored handler, by name."""

    async def remove_event_handler(self, name: str) -> bool:
        """Remove a handler and its consumer group; False if there was none. Atomic."""

    async def receive_events(self, handler: str, topic: str, consumer: str, count: int,
                             block_ms: int, ack: Sequence[str] = ()) -> list[BusEvent]:
        """New events for the handler's group, delivered to `consumer` (waits up to `block_ms`).
        A wait holds one of the store's few connections for blocking reads while one is free;
        past them it holds none, and reads again when the topic's broadcast says something was
        published (and at least every second): the other calls never wait behind waiting reads.
        `ack`: events of the group acknowledged first, in the same round trip (a consumer's last
        batch); an error leaves unknown whether they were (acknowledging again does no harm)."""

    async def claim_events(self, handler: str, topic: str, consumer: str, idle_ms: int, count: int,
                           max_deliveries: int, cursor: str, now_ms: int) -> tuple[str, list[BusEvent]]:
        """Take over events not acknowledged for `idle_ms`; those delivered `max_deliveries` times
        go to the dead-letter topic (acknowledged, with the reason) instead. (next cursor, events)."""

    async def ack_events(self, handler: str, topic: str, event_ids: list[str]) -> None: ...

    async def dead_letter(self, handler: str, event: BusEvent, reason: str, now_ms: int) -> bool:
        """Put the event on the dead-letter topic with `reason` and acknowledge it, in one step;
        False (nothing done) when it was acknowledged already."""

    async def event_action(self, handler: str, event_id: str, action: int, kind: str, now_ms: int, *,
                           workflow_id: str = "", task_id: str = "", status: str = "", reason: str = "",
                           topic: str = "", key: str = "", data_json: str = "{}") -> tuple[ActionOutcome, str]:
        """One action of a handler (`complete`, `fail`, `terminate`, `publish`) and the record that
        it was done for this event, in one atomic step: a repeat is DUPLICATE and changes nothing."""

    # ------------------------------------------------------------- reads for the console and metrics

    async def queue_stats(self, task_types: Iterable[str] | None = None) -> list[QueueStats]:
        """Depth and oldest entry of each type's ready queue, sorted by type (every registered task
        definition's when `task_types` is None). A read; includes the tasks of paused workflows."""

    async def status_counts(self, *, name: str = "", correlation_id: str = "", created_from_ms: int = 0,
                            created_to_ms: int = 0, namespace: str = "") -> dict[str, int]:
        """How many stored workflows have each status (every status, zeros included). A read.
        The creation-time range applies only without `name`, `correlation_id` and `namespace`;
        `namespace` "" counts every namespace's workflows."""

    async def health(self) -> StoreHealth:
        """Ask the store how it is (one round trip); never raises: `ok` is False with the error."""

    async def server_time_ms(self) -> float:
        """The store server's own clock, in milliseconds since the epoch: the cluster's time base
        (core/clock.py). Raises StoreUnavailable."""

    async def close(self) -> None: ...

