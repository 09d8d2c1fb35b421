"""Deciding workflows: load, run the pure decider, apply the decision revision-checked.

Every node decides the workflows whose events it stored (a start, a task result, a signal,
an operation, a child's end), at once and without the leader: a decision is applied only if
the workflow's revision is the one it was computed from, so two nodes deciding the same
workflow cannot both win; the loser sees a conflict, reloads and decides again. The leader
uses the same code, fenced by its epoch, for what needs a clock (timers, and the sweep of
events whose node died before deciding them).

A worker's result is decided on the spot (`step`): the node puts it into the workflow as its own
last write left it (`state_cache.py`), or as a load finds it, decides, and sends the result and
the decision in one script; the revision check makes a stale memory cost a conflict, not a wrong
write. A start is decided the same way, before it is sent (`start`): the node decides the workflow as
the start will create it, and the script that creates it applies that decision too.

A failure while deciding, serialising or applying one workflow is that workflow's failure:
it ends FAILED with a reason a person can act on (or, if even that cannot be written, it is
parked and logged), and the others go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core import sandbox
from ..core import state as m
from ..core import statuses as st
from ..core.apply import with_result
from ..core.clock import now_ms
from ..core.decider import Decision, decide, give_up
from ..core.definitions import runs_user_code
from ..core.errors import OrchestratorError
from ..store import (ANY_WORKER, ApplyOutcome, ApplyResult, ClaimedTask, DecisionRefused, FirstDecision, ResultAck,
                     ResultOutcome, Started, Store, WorkerResult)
from . import failpoints
from .logs import log_fields
from .state_cache import StateCache

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 8
MAX_BATCH = 256            # workflows decided together: one load and one apply round trip
PARKED_RETRY_MS = 60_000   # a workflow that cannot even be failed is looked at again after this
GIVE_BACK_FOR_S = 30.0     # how long tasks an unacknowledged write may have handed over are tried to be given back
GIVE_BACK_RETRY_S = 0.5


def new_task_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Round:
    """What one call to `Decider.decide` did."""

    applied: list[tuple[m.WorkflowState, Decision]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)   # still changing after every retry: left due
    failed: list[str] = field(default_factory=list)      # ended FAILED because they could not be decided


class HandOver(Protocol):
    """This node's workers, as far as deciding is concerned (the dispatcher)."""

    def reserve(self, task_type: str) -> str | None:
        """Take one credit of a connected worker serving `task_type`; its id, or None."""

    def deliver(self, worker_id: str, task: ClaimedTask) -> None:
        """Push a task the store leased to `worker_id` (or give it back if that worker left)."""

    def unreserve(self, worker_id: str, count: int) -> None:
        """Return credits reserved but not used."""


ENGINE_FAULT = "the engine could not decide it"
SLOW_DECISION_S = 0.05   # a decision this long (scripts, most likely) is followed by a turn of the event loop
"""How the reason of a workflow the decider raised on begins (the CLI and the console recognise it)."""


class UserCodeByDefinition:
    """Whether deciding a definition may run user code, asked once per definition object rather than
    walking every task of the definition at each decision (a 400-step sequence spent a third of its
    node's time there). Workflows of one snapshot share its parsed definition (codec.parse_snapshot),
    and a definition is never changed once parsed, so its identity names it; each entry holds the
    definition, so that identity cannot be reused while the entry lives."""

    CAPACITY = 256   # as many as the snapshots a node keeps parsed

    def __init__(self) -> None:
        self._known: OrderedDict[int, tuple[Mapping[str, Any], bool]] = OrderedDict()

    def __call__(self, definition: Mapping[str, Any]) -> bool:
        known = self._known.get(id(definition))
        if known is not None and known[0] is definition:
            self._known.move_to_end(id(definition))
            return known[1]
        answer = runs_user_code(definition)
        self._known[id(definition)] = (definition, answer)
        while len(self._known) > self.CAPACITY:
            self._known.popitem(last=False)
        return answer


def _decide_with_scripts(state: m.WorkflowState, now: int, new_workflow_id: Callable[[], str]) -> Decision:
    """decide() in a thread of its own, its scripts sharing one budget (core/sandbox.py): the node's
    event loop, which keeps the etcd lease alive, never waits for the sandbox."""
    with sandbox.decision_budget():
        return decide(state, now, new_task_id, new_workflow_id)


class Decider:
    def __init__(self, store: Store, *, hand_over: HandOver | None = None,
                 on_applied: Callable[[m.WorkflowState, Decision], None] | None = None, node_id: str = "") -> None:
        """`hand_over`: this node's workers; a task a decision queues for a type one of them
        serves goes to it in the same atomic step (no broadcast, no separate claim).
        `on_applied` is called for every decision applied."""
        self.store = store
        self.hand_over = hand_over
        self.on_applied = on_applied
        self.node_id = node_id   # named in the reason of a workflow this node gives up on: its log has the trace
        self.decisions = 0   # decisions applied that changed something
        self.conflicts = 0   # decisions not applied because the workflow changed meanwhile (decided again)
        self._pending: dict[str, None] = {}   # workflows with an event to decide, in arrival order
        self.cache = StateCache()   # the workflows as this node's last writes left them (for `step`)
        self._fresh: dict[str, m.WorkflowState] = {}   # created here, not decided yet (`started`)
        self._stepping: set[str] = set()   # workflows with a step under way here
        self._starting = 0                 # starts under way here
        self._draining: asyncio.Task[None] | None = None
        self._giving_back: set[asyncio.Task[None]] = set()   # tasks of unacknowledged writes going back
        self._runs_user_code = UserCodeByDefinition()

    def soon(self, workflow_ids: list[str]) -> None:
        """Decide these workflows in the background (an event's caller need not wait for it).

        Events that arrive while a batch is being decided wait for the next batch, so under
        load one load and one apply round trip serve many workflows. If this node dies first,
        the reminders the events left in the decide set are swept by the leader: nothing is
        lost, it only waits longer."""
        self._pending.update(dict.fromkeys(workflow_ids))
        self._drain_soon()

    async def start(self, begin: Callable[[FirstDecision], Awaitable[Started]]) -> Started:
        """Start a workflow and apply its first decision in the same script: `begin` runs the store's
        start with the `FirstDecision` given, which decides the workflow from the state the start will
        create (off the loop when that runs user code) and reserves this node's workers for the tasks
        it queues. The tasks the script handed over are pushed, and the new state remembered, as after
        a step. A start that was not decided in its script (the decider raised, the store would refuse
        the decision) is decided as after any event: `started`; a repeated one is looked at again."""
        self._starting += 1
        try:
            return await self._start(begin)
        finally:
            self._starting -= 1

    async def _start(self, begin: Callable[[FirstDecision], Awaitable[Started]]) -> Started:
        reserved: dict[str, str] = {}   # every credit reserved, for any try: each is used or returned
        sent: list[tuple[str, str, str]] = []   # workflow, task, worker: what a script may hand over

        async def first(state: m.WorkflowState) -> tuple[Decision, Mapping[str, str]] | None:
            try:
                decision = await self._decision(state, state.created_at_ms)
            except Exception:   # `started` decides it again, and fails it with the reason
                return None
            mine = self._reserve([(state, decision)])
            reserved.update(mine)
            sent.extend((state.workflow_id, task_id, worker_id) for task_id, worker_id in mine.items())
            failpoints.reach(failpoints.START_BEFORE_SCRIPT)
            return decision, mine

        started: Started | None = None
        try:
            started = await begin(first)
            failpoints.reach(failpoints.START_BEFORE_PUSH)
        except OrchestratorError:   # refused (a quota, say): nothing was created nor handed over
            raise
        except Exception:
            if sent:   # its outcome unknown (the store went away): what it may have handed over goes back
                self._give_back_soon(sent)
            raise
        finally:   # whatever happened, every reserved credit is used or returned
            applied = started.applied if started is not None else None
            handed_to = dict(reserved)
            self._deliver_or_return(reserved, [applied] if applied is not None else [])
        assert started is not None
        await self._pushed_first_if_alone(applied)
        if started.state is None:   # a retry: its first try may have been created and then not acknowledged
            self.soon([started.workflow_id])
        elif started.decision is not None and applied is not None and applied.result is ApplyResult.OK:
            self._remember(started.state, started.decision, applied, started.state.created_at_ms, handed_to)
            self._applied(started.state, started.decision, Round())
        else:
            self.started(started.state)
        await failpoints.reach_after_a_while(failpoints.START_BEFORE_REPLY)
        return started

    def claimed(self, tasks: list[ClaimedTask]) -> None:
        """Tasks this node claimed from their queues (its dispatcher for a worker stream, or a
        poller's request), each with its workflow as the claim left it: remembered as after this
        node's own write, so that the task's result is decided without reading the workflow again
        (`step`)."""
        for task in tasks:
            if task.workflow is not None:
                self.cache.claimed(task.workflow)

    def _give_back_soon(self, handed: list[tuple[str, str, str]]) -> None:
        """Put back in their queues the tasks a start, step or decision whose outcome is unknown may
        have handed to this node's workers and that were never pushed (their credits are returned),
        once the store answers again: else each would wait for its lease to run out. A task the
        script did not hand over is no such worker's, and is left alone."""
        task = asyncio.create_task(self._give_back(handed))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def _give_back(self, handed: list[tuple[str, str, str]]) -> None:
        deadline = time.monotonic() + GIVE_BACK_FOR_S
        pending = list(handed)
        while pending:
            workflow_id, task_id, worker_id = pending[0]
            try:
                await self.store.release_task(workflow_id, task_id, worker_id, now_ms())
                pending.pop(0)
            except Exception as exc:
                if time.monotonic() > deadline:   # the lease runs out instead
                    log.warning("could not give back %d task(s) of an unacknowledged write (%s); their leases "
                                "will expire", len(pending), exc)
                    return
                await asyncio.sleep(GIVE_BACK_RETRY_S)

    def started(self, state: m.WorkflowState) -> None:
        """Decide a workflow this node just created, from `state` (as created): no need to read it
        back. If another event changed it first, the decision is a conflict and it is read."""
        self._fresh[state.workflow_id] = state
        self.soon([state.workflow_id])

    def _drain_soon(self) -> None:
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        await asyncio.sleep(0)   # let the events of this turn of the loop join the first batch
        while self._pending:
            batch = list(self._pending)[:MAX_BATCH]
            for workflow_id in batch:
                del self._pending[workflow_id]
            try:
                await self.decide(batch)
            except Exception as exc:   # the store is away, say: the sweep decides them later
                log.warning("deciding %d workflow(s) after their events failed (%s); the leader's sweep will",
                            len(batch), exc)

    async def step(self, result: WorkerResult) -> ResultAck:
        """Store a worker's result and decide its workflow in the same step: one script that stores
        the result and applies the decision made from the workflow with the result in it
        (`Store.step`), the workflow as this node last wrote it (else one load). Where that cannot
        be (the attempt is not this worker's to end, the decision fails or cannot be stored, another
        event came first), the result is stored on its own and the workflow decided as after any
        event: `soon`, where a failure is that workflow's.

        Results that come together for one workflow (the branches of a fork ending) are stored
        one by one and decided together, as other events are: one step at a time per workflow,
        or each would decide the whole workflow again only to find it changed by the others."""
        workflow_id = result.workflow_id
        if workflow_id in self._stepping or workflow_id in self._pending:
            return await self._complete_then_decide(result)
        self._stepping.add(workflow_id)
        try:
            return await self._step(result)
        finally:
            self._stepping.discard(workflow_id)

    async def _step(self, result: WorkerResult) -> ResultAck:
        state = self.cache.get(result.workflow_id) or await self.store.load(result.workflow_id)
        task = _held_attempt(state, result) if state is not None else None
        if state is None or task is None:
            self.cache.drop(result.workflow_id)
            return await self._complete_then_decide(result)
        now = now_ms()
        try:
            decided = with_result(state, result.task_id, result.status, json.loads(result.output_json), result.reason,
                                  now, grows_by=_growth(task, result))
            decision = await self._decision(decided, now)
        except Exception:   # the event path below decides it again and fails it with the reason
            self.cache.drop(result.workflow_id)
            return await self._complete_then_decide(result)
        reserved = self._reserve([(decided, decision)])
        handed_to = dict(reserved)
        applied: list[ApplyOutcome] = []
        try:
            failpoints.reach(failpoints.STEP_BEFORE_SCRIPT)
            stepped = await self.store.step(result, decided, decision, now, hand_over=reserved)
            applied = [stepped.applied] if stepped.applied is not None else []
            failpoints.reach(failpoints.STEP_BEFORE_PUSH)
        except DecisionRefused:   # perhaps only by what this node remembers of the record's size
            self.cache.drop(result.workflow_id)
            return await self._complete_then_decide(result)
        except Exception:
            if reserved:   # its outcome unknown: what it may have handed over goes back
                self._give_back_soon([(result.workflow_id, task_id, worker_id)
                                      for task_id, worker_id in reserved.items()])
            raise
        finally:   # whatever happened, every reserved credit is used or returned
            self._deliver_or_return(reserved, applied)
            if not applied:
                self.cache.drop(result.workflow_id)
        await self._pushed_first_if_alone(applied[0] if applied else None)
        if applied:
            self._remember(decided, decision, applied[0], now, handed_to)
        if applied and applied[0].result is ApplyResult.OK:
            self._applied(decided, decision, Round())
        elif stepped.ack.outcome is ResultOutcome.STORED:   # another event came first: decide what is stored
            self.conflicts += 1
            self.soon([result.workflow_id])
        await failpoints.reach_after_a_while(failpoints.STEP_BEFORE_REPLY)
        return stepped.ack

    def _remember(self, state: m.WorkflowState, decision: Decision, outcome: ApplyOutcome, now: int,
                  handed_to: dict[str, str]) -> None:
        if outcome.result is ApplyResult.OK:
            self.cache.applied(state, decision, outcome, now, handed_to)
        else:
            self.cache.drop(state.workflow_id)

    async def _complete_then_decide(self, result: WorkerResult) -> ResultAck:
        ack = await self.store.complete_task(result.workflow_id, result.task_id, result.worker_id, result.status,
                                             result.output_json, result.reason, now_ms())
        if ack.outcome is ResultOutcome.STORED:
            self.soon([result.workflow_id])
        return ack

    async def _decision(self, state: m.WorkflowState, now: int) -> Decision:
        with log_fields(workflow_id=state.workflow_id):
            # a workflow it starts is created in the same step, so in its partition (store/redis/keys.py)
            workflow_id = state.workflow_id

            def new_workflow_id() -> str:
                return self.store.new_workflow_id_beside(workflow_id)
            if self._runs_user_code(state.definition):   # off the loop: scripts wait for the sandbox
                return await asyncio.to_thread(_decide_with_scripts, state, now, new_workflow_id)
            return decide(state, now, new_task_id, new_workflow_id)

    async def settled(self) -> None:
        """Return once every workflow given to `soon` so far has been decided (or left to the sweep)."""
        while self._draining is not None and not self._draining.done():
            await asyncio.shield(self._draining)

    async def stop(self) -> None:
        for giving_back in list(self._giving_back):
            giving_back.cancel()
        await asyncio.gather(*self._giving_back, return_exceptions=True)
        if self._draining is not None:
            self._draining.cancel()
            await asyncio.gather(self._draining, return_exceptions=True)

    async def decide(self, workflow_ids: list[str], *, epoch: int | None = None) -> Round:
        """Decide each workflow until its decision applies (or it keeps changing: then it stays
        due). `epoch` fences the writes (the leader's); None for an event's decision on any node.
        Raises StaleEpoch (fenced) and StoreUnavailable; never an error of one workflow."""
        result = Round()
        pending = list(dict.fromkeys(workflow_ids))
        for _ in range(CONFLICT_RETRIES):
            if not pending:
                return result
            batch = await self._decisions(pending, epoch, result)
            if not batch:
                return result
            reserved = self._reserve(batch)
            handed_to, now = dict(reserved), now_ms()
            outcomes: list[ApplyOutcome] = []
            try:
                outcomes = await self.store.apply_decisions(epoch, now, batch, hand_over=reserved)
            except Exception:
                if reserved:   # their outcome unknown: what they may have handed over goes back
                    owner = {task_id: state.workflow_id for state, decision in batch
                             for _, task_id in decision.enqueue}
                    self._give_back_soon([(owner[task_id], task_id, worker_id)
                                          for task_id, worker_id in reserved.items()])
                raise
            finally:   # whatever happened, every reserved credit is used or returned
                self._deliver_or_return(reserved, outcomes)
                if not outcomes:   # the writes' outcome is unknown: what this node remembers may be wrong
                    for state, _ in batch:
                        self.cache.drop(state.workflow_id)
            pending = []
            for (state, decision), outcome in zip(batch, outcomes):
                self._remember(state, decision, outcome, now, handed_to)
                if outcome.result is ApplyResult.OK:
                    self._applied(state, decision, result)
                elif outcome.result is ApplyResult.CONFLICT:
                    pending.append(state.workflow_id)
                    self.conflicts += 1
                elif outcome.result is ApplyResult.REFUSED:
                    await self._give_up(state, f"the decision could not be stored: {outcome.error}", epoch, result)
        result.conflicts = pending
        if pending:
            log.info("workflows %s kept changing while being decided; they stay due", pending)
        return result

    def _reserve(self, batch: list[tuple[m.WorkflowState, Decision]]) -> dict[str, str]:
        """A credit of one of this node's workers for each task the decisions queue, where one has."""
        if self.hand_over is None:
            return {}
        reserved: dict[str, str] = {}
        for _, decision in batch:
            for task_type, task_id in decision.enqueue:
                worker_id = self.hand_over.reserve(task_type)
                if worker_id is not None:
                    reserved[task_id] = worker_id
        return reserved

    async def _pushed_first_if_alone(self, outcome: ApplyOutcome | None) -> None:
        """Let the worker streams write the tasks this start or step handed over before it goes on
        (one loop turn), when it is the only one under way on this node: one workflow at a time, the
        next task is what the workflow waits for, and the rest (what this node remembers of the
        workflow, the result's acknowledgement, the start's answer) is not; it waited for all of it,
        about 0.1 ms a step. Under load the streams write what many steps handed over together, as
        before, and no step gives up its turn."""
        if outcome is not None and outcome.handed and len(self._stepping) + self._starting <= 1:
            await asyncio.sleep(0)

    def _deliver_or_return(self, reserved: dict[str, str], outcomes: list[ApplyOutcome]) -> None:
        if self.hand_over is None or not reserved:
            return
        for outcome in outcomes:
            for task in outcome.handed:
                worker_id = reserved.pop(task.spec.task_id)
                self.hand_over.deliver(worker_id, task)
        unused: dict[str, int] = {}
        for worker_id in reserved.values():
            unused[worker_id] = unused.get(worker_id, 0) + 1
        for worker_id, count in unused.items():
            self.hand_over.unreserve(worker_id, count)

    async def _decisions(self, workflow_ids: list[str], epoch: int | None,
                         result: Round) -> list[tuple[m.WorkflowState, Decision]]:
        fresh = {workflow_id: self._fresh.pop(workflow_id) for workflow_id in workflow_ids
                 if workflow_id in self._fresh}
        unknown = [workflow_id for workflow_id in workflow_ids if workflow_id not in fresh]
        loaded = dict(zip(unknown, await self.store.load_many(unknown))) if unknown else {}
        states = [fresh.get(workflow_id) or loaded.get(workflow_id) for workflow_id in workflow_ids]
        now = now_ms()
        batch: list[tuple[m.WorkflowState, Decision]] = []
        for workflow_id, state in zip(workflow_ids, states):
            if state is None:
                await self.store.forget_due(workflow_id, epoch)
                continue
            started = time.monotonic()
            try:
                batch.append((state, await self._decision(state, now)))
            except Exception as exc:
                log.exception("the decider failed on workflow %s", workflow_id, extra={"workflow_id": workflow_id})
                await self._give_up(state, f"{ENGINE_FAULT}: {type(exc).__name__}: {exc}", epoch,
                                    result)
            if time.monotonic() - started > SLOW_DECISION_S:   # a long one: let the rest of the loop run
                await asyncio.sleep(0)
        return batch

    def _applied(self, state: m.WorkflowState, decision: Decision, result: Round) -> None:
        if not decision.empty:
            self.decisions += 1   # changes stored; an empty decision only settled when to look again
        result.applied.append((state, decision))
        if self.on_applied is not None:
            self.on_applied(state, decision)
        if log.isEnabledFor(logging.DEBUG):
            for line in decision.log:
                log.debug("workflow %s: %s", state.workflow_id, line, extra={"workflow_id": state.workflow_id})

    async def _give_up(self, state: m.WorkflowState, why: str, epoch: int | None, result: Round) -> None:
        """End the workflow FAILED with `why` (its failure workflow, if any, starts); if even
        that cannot be stored, park it where an operator sees it in the log."""
        with log_fields(workflow_id=state.workflow_id):
            await self._fail(state, why, epoch, result)

    async def _fail(self, state: m.WorkflowState, why: str, epoch: int | None, result: Round) -> None:
        where = f"node {self.node_id}" if self.node_id else "the node that decided it"
        if why.startswith(ENGINE_FAULT):   # an exception in the decider: the server's fault, not the user's
            advice = (f"the fault is in the orchestrator, not in the workflow's definition or input; the trace is "
                      f"in the log of {where}. Retry the workflow once the fault is fixed")
        else:   # the store refused the decision (a size limit, most often): what the workflow asked for
            advice = f"see the log of {where}; fix its definition or input and start it again (or retry it)"
        reason = f"{why[:2000]}. This workflow was stopped so that it cannot hold up the others; {advice}"
        try:
            decision = give_up(state, now_ms(), new_task_id, reason)
            [outcome] = await self.store.apply_decisions(epoch, now_ms(), [(state, decision)])
        except Exception as exc:
            log.error("workflow %s cannot be decided (%s) nor failed (%s); parked for %d s", state.workflow_id,
                      why, exc, PARKED_RETRY_MS // 1000)
            await self.store.defer(epoch, state.workflow_id, now_ms() + PARKED_RETRY_MS)
            return
        if outcome.result is ApplyResult.OK:
            log.error("workflow %s FAILED: %s", state.workflow_id, why)
            result.failed.append(state.workflow_id)
            self._applied(state, decision, result)
        elif outcome.result is ApplyResult.REFUSED:
            log.error("workflow %s cannot be decided (%s) nor failed (%s); parked for %d s", state.workflow_id,
                      why, outcome.error, PARKED_RETRY_MS // 1000)
            await self.store.defer(epoch, state.workflow_id, now_ms() + PARKED_RETRY_MS)


def _held_attempt(state: m.WorkflowState, result: WorkerResult) -> m.TaskState | None:
    """The attempt the result ends, if it is in progress and held by the result's worker: only then
    can the result be stored (the store checks it again)."""
    task = state.task(result.task_id)
    if task is None or task.runtime.status != st.IN_PROGRESS:
        return None
    return task if result.worker_id in (ANY_WORKER, task.runtime.worker_id) else None


def _growth(task: m.TaskState, result: WorkerResult) -> int:
    """What storing the result adds to the workflow's record (its output and reason; an output kept
    so far is replaced)."""
    kept = len(json.dumps(task.output)) if task.output is not None else 0
    return len(result.output_json) + len(result.reason) - kept
