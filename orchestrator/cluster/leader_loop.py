"""What only the leader runs: the clocks.

Events are decided by the node that stored them (`deciding`); the leader keeps what needs a
clock: timers the decider set (retry back-off, WAIT, task and workflow timeouts, start
delays), the lease reaper, and the sweep of events whose node died before deciding them
(they fall due a grace period after the event). It sleeps until the earliest time it knows
of, learns of earlier timers set by other nodes from a broadcast, and never sleeps longer
than MAX_IDLE_S, which bounds how late an orphaned event is swept.

Every write it makes carries the epoch; a refused write (`StaleEpoch`) or a lapsed local
leadership deadline ends the loop at once (`LeadershipLost`). So does a state store that does not
let it complete a pass within `store_timeout_s` (`StoreUnresponsive`): errors are retried with a
back-off until then, and a call that hangs (a link to Redis that black-holes: no error, no answer)
is cut off at that bound. The node then resigns, so that the next node's clocks run if it reaches
Redis, and stands again only once Redis answers it (node.py). When Redis is down for everyone
each node resigns once and none stands again until Redis is back: no election storm. On a Redis
Cluster a pass passes over the partitions of a master that does not answer (failing over) and
fails only when none answers: one master's failover is not a reason to resign.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..core.clock import now_ms
from ..core.errors import StaleEpoch
from ..store import Store, StoreUnavailable, Topic
from .deciding import Decider
from .retention import Retention

log = logging.getLogger(__name__)
T = TypeVar("T")

RETENTION_EVERY_S = 1.0    # how often the retention sweep looks at the head of the audit stream
MAX_IDLE_S = 0.25         # the longest sleep: bounds the sweep's delay and covers a lost broadcast
STORE_RETRY_MIN_S = 0.1
STORE_RETRY_MAX_S = 2.0
STORE_TIMEOUT_S = 2.0     # default bound on a pass (or a stretch of failing ones) before the leader resigns
# every partition's freed attempts are released, and its outbox's events relayed, at least this often
FREED_SWEEP_S = 2.0


class LeadershipLost(Exception):
    """The loop stopped because this node may no longer act as leader."""


class StoreUnresponsive(Exception):
    """The loop stopped because the state store did not let it complete a pass within its bound:
    another node may reach it (this one's link may be cut), so this one should not keep the clocks."""


class LeaderLoop:
    def __init__(self, store: Store, decider: Decider, epoch: int, still_leader: Callable[[], bool], *,
                 batch: int = 256, retention: Retention | None = None,
                 store_timeout_s: float = STORE_TIMEOUT_S) -> None:
        self.store = store
        self.store_timeout_s = store_timeout_s
        self.decider = decider
        self.retention = retention
        self.epoch = epoch
        self.still_leader = still_leader
        self.batch = batch
        self.first_decision_ms: int | None = None
        self.decisions = 0
        self.expired = 0   # leases this term timed out
        self._wake = asyncio.Event()
        self._next_at_ms: float | None = None
        self._due_workflows: list[str] = []   # found due by the last pass, decided after it
        self._freed: set[str] = set()        # partitions told to have freed attempts of limited types
        self._freed_swept_at = 0.0

    async def run(self) -> None:
        """Run until leadership is lost (raises LeadershipLost) or the task is cancelled."""
        await self._until_store_answers(self._take_office)
        log.info("clocks started with epoch %d", self.epoch)
        listener = asyncio.create_task(self.store.listen(Topic.TIMER, self._on_timer, self._wake.set))
        freed_listener = asyncio.create_task(self.store.listen(Topic.FREED, self._on_freed))
        retaining = asyncio.create_task(self._retain()) if self.retention is not None else None
        try:
            while True:
                self._check_leadership()
                self._wake.clear()   # before reading: a timer set during the pass triggers another one
                busy = await self._until_store_answers(self._run_once)
                busy = await self._decide_due() or busy
                if not busy:
                    await self._sleep_until_due()
        finally:
            # Cancelled and not waited for: a subscription's close can wait up to a second on a link
            # that went silent, and the node must resign at once.
            for task in (listener, freed_listener, retaining):
                if task is not None:
                    task.cancel()
                    task.add_done_callback(_retrieve)

    async def _take_office(self) -> bool:
        self._check_leadership()
        await self._fenced(self.store.raise_epoch(self.epoch))
        return True

    async def _until_store_answers(self, step: Callable[[], Awaitable[bool]]) -> bool:
        """Run `step`; while the store fails, retry with a back-off (still checking leadership).
        Raises StoreUnresponsive once `store_timeout_s` passed since the step was first tried
        without it completing: a call still waiting then is cut off (a silent link never errs)."""
        pause = STORE_RETRY_MIN_S
        give_up_at = time.monotonic() + self.store_timeout_s
        while True:
            try:
                async with asyncio.timeout(max(0.0, give_up_at - time.monotonic())):
                    return await step()
            except TimeoutError:
                raise StoreUnresponsive(f"the state store did not answer within {self.store_timeout_s:g} s") from None
            except StoreUnavailable as exc:
                if time.monotonic() + pause >= give_up_at:
                    raise StoreUnresponsive(f"the state store kept failing for {self.store_timeout_s:g} s "
                                            f"({exc})") from exc
                log.warning("clocks: state store unavailable (%s); retrying in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, STORE_RETRY_MAX_S)
                self._check_leadership()

    async def _run_once(self) -> bool:
        """One pass over what is due; returns whether more may be due at once (a full batch)."""
        await self._release_freed()
        due = await self.store.due(now_ms(), self.batch)
        self._next_at_ms = due.next_at_ms
        for workflow_id, task_id in due.expired_leases:
            self._check_leadership()
            try:
                expired = await self._fenced(self.store.expire_lease(self.epoch, workflow_id, task_id, now_ms()))
            except StoreUnavailable as exc:   # its partition's server failed since `due`: next pass
                log.warning("clocks: lease of task %s not expired for now (%s)", task_id, exc)
                continue
            if expired:
                log.info("lease of task %s in workflow %s expired; it will be retried", task_id, workflow_id)
                self.expired += 1
        self._due_workflows = due.workflows
        return (len(due.workflows) >= self.batch or len(due.expired_leases) >= self.batch
                or bool(due.expired_leases))

    async def _decide_due(self) -> bool:
        """Decide what the pass found due. Outside the pass's bound on the store: a decision may
        rightly take seconds (scripts in the sandbox, core/sandbox.py), which says nothing about
        Redis; a Redis that stops answering meanwhile fails it within its socket timeout, and the
        next pass's bound then resigns the leadership."""
        workflows, self._due_workflows = self._due_workflows, []
        if workflows:
            self._check_leadership()
            try:
                done = await self._fenced(self.decider.decide(workflows, epoch=self.epoch))
            except StoreUnavailable as exc:   # they stay due in the store: the next pass finds them
                log.warning("clocks: state store unavailable while deciding (%s)", exc)
                return True
            for _, decision in done.applied:
                self.decisions += 1
                if decision.wake_at_ms is not None:
                    self._next_at_ms = min(self._next_at_ms or decision.wake_at_ms, decision.wake_at_ms)
        if self.first_decision_ms is None:   # the first full pass: every overdue timer is handled
            self.first_decision_ms = now_ms()
            log.info("clocks running as leader (epoch %d)", self.epoch)
        return False

    async def _retain(self) -> None:
        """Archive and forget finished workflows past their retention, a batch at a time, in the
        background of the clocks (a stale epoch ends only this; the loop notices on its own)."""
        assert self.retention is not None
        while True:
            try:
                busy = self.still_leader() and await self.retention.sweep(self.epoch, now_ms())
            except (StoreUnavailable, StaleEpoch, OSError) as exc:
                log.warning("retention sweep: %s; trying again shortly", exc)
                busy = False
            await asyncio.sleep(0 if busy else RETENTION_EVERY_S)

    async def _release_freed(self) -> None:
        """The ended attempts of limited task types taken out of their types' counts: of the partitions
        that said so, and every FREED_SWEEP_S of all of them. Unfenced: a release made twice is one."""
        try:
            if time.monotonic() - self._freed_swept_at >= FREED_SWEEP_S:
                self._freed.clear()
                self._freed_swept_at = time.monotonic()
                await self.store.release_freed(None, now_ms())
                await self.store.relay_events(None)   # what a deciding node left: it died, or Redis failed it
            elif self._freed:
                partitions, self._freed = self._freed, set()
                await self.store.release_freed(partitions)
        except StoreUnavailable as exc:
            # the global slot's master failing over (Redis Cluster): the next sweep, FREED_SWEEP_S on,
            # takes what is left; Redis down for everyone fails the pass's `due` all the same
            log.warning("clocks: freed attempts and outboxes wait for the next sweep (%s)", exc)

    def _on_freed(self, partition: str) -> None:
        self._freed.add(partition)
        self._wake.set()

    def _on_timer(self, at: str) -> None:
        try:
            at_ms = float(at)
        except ValueError:
            return
        if self._next_at_ms is None or at_ms < self._next_at_ms:
            self._next_at_ms = at_ms
            self._wake.set()

    async def _sleep_until_due(self) -> None:
        timeout = MAX_IDLE_S
        if self._next_at_ms is not None:
            timeout = min(timeout, max(0.0, (self._next_at_ms - now_ms()) / 1000))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

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


def _retrieve(task: asyncio.Task[None]) -> None:
    """A background task of the clocks ended after they stopped: its error matters no more."""
    if not task.cancelled():
        task.exception()
