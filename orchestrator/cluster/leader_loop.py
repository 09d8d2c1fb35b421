"""The engine loop that only the leader runs: decider, timers and lease reaper.

It wakes on a Redis pub/sub message when an event makes a workflow due (a
start, a task result, a termination) and otherwise sleeps until the earliest
timer or lease deadline, so there is no poll interval on the hot path. Every
write it makes carries the epoch; a refused write (`StaleEpoch`) or a lapsed
local leadership deadline ends the loop at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..core import state as m
from ..core.clock import now_ms
from ..core.decider import Decision, decide
from ..core.errors import StaleEpoch
from ..store import ApplyResult, Store, StoreUnavailable, Topic

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_IDLE_S = 1.0          # upper bound on a sleep: a safety net for a missed wake-up message
CONFLICT_RETRIES = 5
POISONED_RETRY_MS = 30_000


class LeadershipLost(Exception):
    """The loop stopped because this node may no longer act as leader."""


class LeaderLoop:
    def __init__(self, store: Store, epoch: int, still_leader: Callable[[], bool], *,
                 batch: int = 256) -> None:
        self.store = store
        self.epoch = epoch
        self.still_leader = still_leader
        self.batch = batch
        self.first_decision_ms: int | None = None
        self.decisions = 0
        self._wake = asyncio.Event()
        self._next_at_ms: float | None = None

    async def run(self) -> None:
        """Run until leadership is lost (raises LeadershipLost) or the task is cancelled."""
        self._check_leadership()
        await self._fenced(self.store.raise_epoch(self.epoch))
        log.info("engine started with epoch %d", self.epoch)
        listener = asyncio.create_task(self._listen_for_wake_ups())
        try:
            while True:
                self._check_leadership()
                self._wake.clear()   # before reading: an event during the pass triggers another one
                try:
                    busy = await self._run_once()
                except StoreUnavailable as exc:
                    log.warning("engine: state store unavailable (%s); retrying", exc)
                    await asyncio.sleep(0.2)
                    continue
                if not busy:
                    await self._sleep_until_due()   # returns at once if an event came in meanwhile
        finally:
            listener.cancel()

    async def _run_once(self) -> bool:
        """One pass over what is due; returns whether more may be due at once (a full batch).

        Otherwise the loop sleeps until the next timer it knows of (those it read, and the
        wake-ups its own decisions set) or until an event's wake-up message."""
        due = await self.store.due(now_ms(), self.batch)
        self._next_at_ms = due.next_at_ms
        for workflow_id, task_id in due.expired_leases:
            self._check_leadership()
            expired = await self._fenced(self.store.expire_lease(self.epoch, workflow_id, task_id, now_ms()))
            if expired:
                log.info("lease of task %s in workflow %s expired; it will be retried", task_id, workflow_id)
        if due.workflows:
            await self._decide(due.workflows)
        return len(due.workflows) >= self.batch or len(due.expired_leases) >= self.batch

    async def _decide(self, workflow_ids: list[str]) -> None:
        pending = list(workflow_ids)
        for _ in range(CONFLICT_RETRIES):
            self._check_leadership()
            states = await self.store.load_many(pending)
            now = now_ms()
            batch: list[tuple[m.WorkflowState, Decision]] = []
            for workflow_id, state in zip(pending, states):
                if state is None:
                    await self._fenced(self.store.defer(self.epoch, workflow_id, now))   # forgets it: gone
                    continue
                try:
                    batch.append((state, decide(state, now, new_task_id)))
                except Exception:
                    # A bug must not take the engine down with it (and then the next leader):
                    # this workflow waits, the others go on.
                    log.exception("deciding workflow %s failed (a bug); retrying it in %d s",
                                  workflow_id, POISONED_RETRY_MS // 1000)
                    await self._fenced(self.store.defer(self.epoch, workflow_id, now + POISONED_RETRY_MS))
            if not batch:
                return
            results = await self._fenced(self.store.apply_decisions(self.epoch, now, batch))
            self._note_applied(batch, results)
            pending = [state.workflow_id for (state, _), r in zip(batch, results) if r is ApplyResult.CONFLICT]
            if not pending:
                return
        log.warning("workflows %s kept changing under the decider; they stay due", pending)
        self._next_at_ms = now_ms()

    def _note_applied(self, batch: list[tuple[m.WorkflowState, Decision]], results: list[ApplyResult]) -> None:
        for (state, decision), result in zip(batch, results):
            if result is not ApplyResult.OK:
                continue
            self.decisions += 1
            if decision.wake_at_ms is not None:
                self._next_at_ms = min(self._next_at_ms or decision.wake_at_ms, decision.wake_at_ms)
            if self.first_decision_ms is None:
                self.first_decision_ms = now_ms()
                log.info("first decision as leader (epoch %d)", self.epoch)
            for line in decision.log:
                log.debug("workflow %s: %s", state.workflow_id, line)

    async def _sleep_until_due(self) -> None:
        timeout = MAX_IDLE_S
        if self._next_at_ms is not None:
            timeout = min(timeout, max(0.0, (self._next_at_ms - now_ms()) / 1000))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _listen_for_wake_ups(self) -> None:
        def wake(_: str = "") -> None:   # after a (re)subscription: anything published meanwhile
            self._wake.set()
        await self.store.listen(Topic.WAKE, wake, wake)

    def _check_leadership(self) -> None:
        if not self.still_leader():
            raise LeadershipLost("leadership deadline passed or lost")

    async def _fenced(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except StaleEpoch as exc:
            raise LeadershipLost(
                f"{exc}, so this node's writes are refused and it steps down without changing anything. "
                "This is expected right after another node took over. If it repeats on every node, "
                "etcd was probably replaced by an empty one while Redis kept its data (the README's "
                "'Replacing etcd' says what to do)") from exc


def new_task_id() -> str:
    return uuid.uuid4().hex
