"""Pushing ready tasks to the workers connected to this node.

Every node dispatches, leader or not. A worker's stream grants credits; when a
task type becomes ready (a `ready` pub/sub message from the Lua script that
queued it) or a worker grants credit, the node claims tasks atomically from the
type's queue (claim and lease in one script) and pushes them. Several nodes may
race for one queue: the claim script hands each task to exactly one of them.
A one-second sweep catches messages lost while Redis was unreachable; it is a
safety net, not the delivery path.

A graceful stop drains first (`drain`): the node claims nothing more, gives back what it
queued for a stream and never sent, and sends each worker a `Drain` after the tasks already
written; the worker reads up to it, half-closes the stream and connects to another node, whose
heartbeats keep the leases of the tasks it is still running. Why not just end the streams:
a stream cut by the server's shutdown drops the tasks the worker has not read yet (a worker
reads late whenever its handlers hold its event loop), and so does a stream the node ends while
the worker is still writing to it; each such task came back only when its lease expired, as a
second attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field


from orchestrator_api.v1 import orchestrator_pb2 as pb

from ..core import fastjson
from ..core.auth import Principal
from ..core.namespaces import qualified, relative
from ..core.clock import now_ms
from ..store import ClaimedTask, Store, StoreUnavailable, Subscription, Topic
from .tracing import Tracing

log = logging.getLogger(__name__)

MAX_CLAIM = 64
MAX_UNSENT = 64            # messages queued for a stream and not yet taken by its writer
MIN_QUIET_S = 0.5
SWEEP_S = 1.0
DRAIN_S = 2.0              # how long a graceful stop waits for its workers to leave
DRAIN_DETAIL = "this node is stopping: connect to another one"
POLLED_TYPE_S = 30.0       # a type pollers waited on stays subscribed this long after the last one


def worker_identity(principal: Principal | None, namespace: str, worker_id: str) -> str:
    """Who holds the tasks a worker takes, as the store records it with each lease: a heartbeat,
    result or release is accepted only from the same identity (scripts.py `holds`).

    On a node with tokens, the token's name (a JWT's subject) and the worker id the worker chose:
    `billing/worker-1`. Another token naming the same worker id is another identity, so it can
    neither complete, heartbeat nor release that worker's tasks, whichever node or stream it
    uses; the worker itself, reconnecting to any node with its token, is the same identity and
    its re-sent results are accepted (it is not bound to one stream, which a failover breaks).
    The name is escaped (`%`, `/`, `:`) so that no token name and worker id can spell another
    token's identity. Qualified by `namespace` (core/namespaces.py), so a team's worker is never
    another team's. Without tokens there is no identity to bind to: the worker id alone."""
    if principal is None:
        return qualified(namespace, worker_id)
    name = principal.name.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")
    return qualified(namespace, f"{name}/{worker_id}")


@dataclass(eq=False)
class WorkerSession:
    """One connected worker stream. `outbox` feeds the stream's writer."""

    worker_id: str
    task_types: frozenset[str]
    credits: int               # how many more tasks it asked for
    claiming: int = 0          # of those, how many a claim in flight may fill (the others cannot have them)
    turned_away: set[str] = field(default_factory=set)   # types not pumped for it while a claim held its credits
    outbox: asyncio.Queue[pb.ServerMessage | None] = field(default_factory=asyncio.Queue)
    closed: bool = False
    writing: int = 0           # messages its writer took from the outbox to batch and has not written yet
    held: int = 0              # tasks pushed to it that it has not reported on yet
    reporting: set[str] = field(default_factory=set)   # of those, the ones whose results are being stored
    last_heard: float = field(default_factory=time.monotonic)   # its last message of any kind
    quiet_limit_s: float = 0.0  # how long it may be silent while holding tasks (from their leases)
    resends: bool = False       # it sends a result again after a ResultAck `retry` (else its stream is ended)

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def unsent(self) -> int:
        """Messages queued for it and not yet written to its stream."""
        return self.outbox.qsize() + self.writing

    def holding(self, lease_ms: int) -> None:
        """A task with this lease was pushed: the SDK heartbeats every lease/3, so a silence of
        most of a lease while holding it means the worker is gone or stuck."""
        limit = max(MIN_QUIET_S, 0.8 * lease_ms / 1000)
        self.quiet_limit_s = limit if self.held == 0 else min(self.quiet_limit_s, limit)
        self.held += 1

    def ready(self) -> bool:
        """It asked for work, reads what it is sent, and answers for what it holds. A stream whose
        messages pile up unsent, or that holds tasks and went silent, gets nothing more,
        whatever credit it announced: a worker cannot hoard a task type."""
        return self.credits - self.claiming > 0 and self.taking()

    def taking(self) -> bool:
        """`ready`, counting the credits a claim in flight holds as free (see `Dispatcher.reserve`)."""
        if self.credits <= 0 or self.closed or self.unsent() >= MAX_UNSENT:
            return False
        return self.held == 0 or time.monotonic() - self.last_heard < self.quiet_limit_s


class Dispatcher:
    def __init__(self, store: Store, tracing: Tracing | None = None) -> None:
        self.store = store
        self.tracing = tracing or Tracing()   # traceparents for workers; spans when enabled
        self.sessions: set[WorkerSession] = set()
        self._pumping: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        # task type -> the tasks named by the `ready`s heard while its pump's claim is on its way
        self._heard_in_claim: dict[str, set[str]] = {}
        self._round_robin = itertools.count()
        self._background: list[asyncio.Task[None]] = []
        self._by_worker: dict[str, WorkerSession] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, tuple[asyncio.Event, int]] = {}   # task type -> (its next `ready`, pollers)
        # `ready` comes per task type, for the types of the attached workers and recent pollers only
        self._ready: Subscription | None = None   # from `start` on
        self._polled: dict[str, float] = {}   # task type -> when a poller last waited on it (monotonic)
        self.pushed = 0
        self.draining = False      # a graceful stop began: nothing more is claimed or handed over
        # told of the tasks this node's claims pushed, each with its workflow as the claim left it
        # (the decider, which then decides their results without a reload); None: claims ask for no record
        self.on_claimed: Callable[[list[ClaimedTask]], None] | None = None

    async def start(self) -> None:
        self._ready = self.store.subscribe_each(Topic.READY, self.on_ready, self.on_ready)
        self._want_ready()
        self._background = [asyncio.create_task(self._ready.run()),
                            asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in [*self._background, *self._pumping.values()]:
            task.cancel()
        await asyncio.gather(*self._background, *self._pumping.values(), return_exceptions=True)
        await asyncio.gather(*self._releases, return_exceptions=True)

    async def drain(self, local: Collection[WorkerSession] = (), timeout_s: float = DRAIN_S) -> None:
        """The first step of a graceful stop (see the module's docstring): claim nothing more, give
        back every task queued for a session and not sent, and ask each worker stream (all but the
        `local` sessions, this node's own executors) to leave. Blocks until those streams ended,
        or `timeout_s`: a worker that ignored the request (an older SDK) then has its stream
        ended by the node, and anything still unsent goes back to its queue too. Idempotent."""
        self.draining = True
        pumps = [task for task in self._pumping.values() if not task.done()]
        if pumps:   # a claim in flight lands in a closed session, which gives it back
            await asyncio.wait(pumps, timeout=timeout_s)
        streams = [s for s in self.sessions if s not in local]
        released = 0
        for session in list(self.sessions):
            released += await self._give_back(session)
        for session in streams:   # after every task already written to it
            session.outbox.put_nowait(pb.ServerMessage(drain=pb.Drain(detail=DRAIN_DETAIL)))
        deadline = time.monotonic() + timeout_s
        while any(s in self.sessions for s in streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stayed = [s for s in streams if s in self.sessions]
        for session in stayed:
            released += await self._give_back(session)
            session.outbox.put_nowait(None)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        log.info("dispatch drained: %d worker stream(s) asked to move to another node (%d stayed and were "
                 "ended), %d unsent task(s) given back", len(streams), len(stayed), released)

    async def _give_back(self, session: WorkerSession) -> int:
        try:
            return await self.release_unsent(session)
        except StoreUnavailable as exc:   # their leases expire and the reaper re-queues them
            log.warning("could not give back the unsent tasks of %s (%s)", session.worker_id, exc)
            return 0

    def attach(self, session: WorkerSession) -> None:
        self.sessions.add(session)
        self._want_ready()
        if self.draining:   # this node is stopping: the worker goes to another one at once
            session.closed = True
            session.outbox.put_nowait(pb.ServerMessage(drain=pb.Drain(detail=DRAIN_DETAIL)))
            log.info("worker %s connected while this node stops: asked to go to another one", session.worker_id)
            return
        log.info("worker %s connected for %s with %d credits",
                 session.worker_id, ", ".join(sorted(session.task_types)), session.credits)
        self._pump_types(session.task_types)

    async def detach(self, session: WorkerSession) -> None:
        """Forget a closed stream and hand back what it never got to send."""
        self.sessions.discard(session)
        self._want_ready()
        if self._by_worker.get(session.worker_id) is session:
            del self._by_worker[session.worker_id]
        released = await self.release_unsent(session)
        log.info("worker %s disconnected (%d unsent task(s) released)", session.worker_id, released)

    async def release_unsent(self, session: WorkerSession) -> int:
        """The stream can take no more tasks: the ones still queued for it go back to their
        queues now (instead of waiting for their leases); other messages (acks) stay queued. A
        release refused is raised once every task was tried."""
        session.closed = True
        pending = []
        while not session.outbox.empty():
            pending.append(session.outbox.get_nowait())
        released = 0
        refused: StoreUnavailable | None = None
        for message in pending:
            if message is not None and message.HasField("task"):
                try:   # each on its own: one refused (its lease expires instead) leaves the others to go back
                    await self.store.release_task(message.task.workflow_id, message.task.task_id,
                                                  session.worker_id, now_ms())
                    released += 1
                except StoreUnavailable as exc:
                    refused = refused or exc
            else:
                session.outbox.put_nowait(message)
        if refused is not None:
            raise refused
        return released

    def grant(self, session: WorkerSession, count: int) -> None:
        """More credit from the worker: its types are pumped only if it had none left, since then
        the `ready`s heard meanwhile were not. Credit a claim in flight holds is not none left:
        that claim's pump goes on with the new credit if it filled what it asked for, and the
        queue was empty when it ran if not (a later `ready`, or a type turned away meanwhile, is
        pumped on its own). Pumped again here, that claim found nothing: 0.19 claims per
        three-step workflow that found nothing, at 16 in flight on one serving node (issue 21)."""
        starved = session.credits <= 0
        session.credits += count
        if starved:
            self._pump_types(session.task_types)

    # ------------------------------------------------------------- hand-over from this node's decisions

    def reserve(self, task_type: str) -> str | None:
        """Take one credit of a connected worker serving `task_type` (round robin); its id.

        A credit a claim in flight holds may be taken: a claim asks for every free credit of its
        worker, up to MAX_CLAIM, and almost always finds fewer tasks queued, so holding them all
        for its round trip sent to the queue (a `ready`, a claim, about ten Redis commands) most of
        the tasks decided here meanwhile, at any load (issue 21). A claim that comes back with
        more tasks than its worker still has credit for gives the excess back (`_pump_once`)."""
        if self.draining:
            return None
        candidates = [s for s in self.sessions if task_type in s.task_types and s.ready()]
        if not candidates:
            candidates = [s for s in self.sessions if task_type in s.task_types and s.taking()]
        if not candidates:
            return None
        session = candidates[next(self._round_robin) % len(candidates)]
        session.credits -= 1
        self._by_worker[session.worker_id] = session
        return session.worker_id

    def deliver(self, worker_id: str, task: ClaimedTask) -> None:
        """Push a task the store leased to `worker_id`; if its stream is gone, give the task back."""
        session = self._by_worker.get(worker_id)
        if session is None or session.closed or session not in self.sessions:
            self._background_release(task, worker_id)
            return
        session.outbox.put_nowait(assignment(task, self.tracing.dispatched(task, worker_id)))
        session.holding(task.lease_ms)
        self.pushed += 1

    def unreserve(self, worker_id: str, count: int) -> None:
        session = self._by_worker.get(worker_id)
        if session is not None and session in self.sessions:
            self.grant(session, count)

    def _background_release(self, task: ClaimedTask, worker_id: str) -> None:
        async def release() -> None:
            try:
                await self.store.release_task(task.workflow_id, task.spec.task_id, worker_id, now_ms())
            except StoreUnavailable as exc:   # its lease expires and the reaper re-queues it
                log.warning("could not give back task %s (%s); its lease will expire", task.spec.task_id, exc,
                            extra={"workflow_id": task.workflow_id, "task_id": task.spec.task_id})
        release_task = asyncio.create_task(release())
        self._releases.add(release_task)
        release_task.add_done_callback(self._releases.discard)

    @contextlib.contextmanager
    def ready_signal(self, task_type: str) -> Iterator[asyncio.Event]:
        """An event set by the next `ready` broadcast for `task_type`, for a poller that claims
        and, finding nothing, waits on it: taken before the claim, so nothing queued in between
        is missed. Entries live only while someone waits (pollers choose the type names)."""
        event, count = self._waiting.get(task_type) or (asyncio.Event(), 0)
        self._waiting[task_type] = (event, count + 1)
        first = task_type not in self._polled
        self._polled[task_type] = time.monotonic()
        if first:   # once subscribed, `on_ready` wakes the pollers to claim again
            self._want_ready()
        try:
            yield event
        finally:
            current = self._waiting.get(task_type)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._waiting[task_type]
                else:
                    self._waiting[task_type] = (current[0], current[1] - 1)

    def on_ready(self, task_type: str, payload: str = "") -> None:
        """A `ready` for `task_type` (`payload`: a task it queued, or the type; see Topic.READY), or
        its subscription confirmed (what came before it is claimed now)."""
        waiting = self._waiting.pop(task_type, None)
        if waiting is not None:   # its pollers claim again; a later one registers a new event
            waiting[0].set()
        heard = self._heard_in_claim.get(task_type)
        if heard is not None and payload and payload != task_type:   # that claim tells whether it took it
            heard.add(payload)
        elif any(task_type in s.task_types and s.credits > 0 for s in self.sessions):
            self._pump_types({task_type})

    def _pump_types(self, task_types: set[str] | frozenset[str]) -> None:
        for task_type in task_types:
            running = self._pumping.get(task_type)
            if running and not running.done():
                self._again.add(task_type)  # it will run once more after the current pass
                continue
            self._pumping[task_type] = asyncio.create_task(self._pump(task_type))

    async def _pump(self, task_type: str) -> None:
        """Claim and push until no worker has credit or the queue is empty."""
        try:
            while True:
                self._again.discard(task_type)
                while await self._pump_once(task_type):
                    pass
                if task_type not in self._again:
                    return
        except StoreUnavailable as exc:
            log.warning("dispatch of %s paused: state store unavailable (%s)", task_type, exc)

    async def _pump_once(self, task_type: str) -> bool:
        if self.draining:
            return False
        candidates = [s for s in self.sessions if task_type in s.task_types and s.ready()]
        if not candidates:
            for s in self.sessions:   # its turn comes when that claim returns the credits it did not fill
                if task_type in s.task_types and s.claiming and s.credits > 0:
                    s.turned_away.add(task_type)
            return False
        session = candidates[next(self._round_robin) % len(candidates)]
        count = min(session.credits - session.claiming, MAX_CLAIM, MAX_UNSENT - session.unsent())
        # The claim holds its credits for its round trip: the pump of another of the worker's task
        # types meanwhile must not spend them too, or the worker is pushed more than it asked for.
        # A hand-over from this node's decisions may (`reserve`): the claim then gives back what
        # its worker has no credit left for.
        session.claiming += count
        claimed: list[ClaimedTask] = []
        heard = self._heard_in_claim[task_type] = set()
        try:
            claimed = await self.store.claim(task_type, count, session.worker_id, now_ms(),
                                             records=self.on_claimed is not None)
        finally:
            session.claiming -= count
            del self._heard_in_claim[task_type]
        if heard - {f"{task.workflow_id}|{task.spec.task_id}" for task in claimed}:
            self._again.add(task_type)   # a task queued meanwhile and not taken: after this pass, one more
        if session.turned_away and len(claimed) < count:
            waiting, session.turned_away = session.turned_away, set()
            self._pump_types(waiting)
        if not claimed:
            return False
        if session.closed:   # its stream ended meanwhile: every task goes back
            pushed, excess = [], claimed
        else:   # hand-overs may have taken credits this claim held (`reserve`): what is left goes back
            room = max(0, session.credits)
            pushed, excess = claimed[:room], claimed[room:]
        for task in pushed:
            session.outbox.put_nowait(assignment(task, self.tracing.dispatched(task, session.worker_id)))
            session.holding(task.lease_ms)
        session.credits -= len(pushed)
        self.pushed += len(pushed)
        if self.on_claimed is not None and pushed:
            self.on_claimed(pushed)
        for task in excess:   # after the pushes, each on its own: one refused leaves the others to go back
            self._background_release(task, session.worker_id)
        # fewer than asked: the queue is empty (or at its limits)
        return session.closed or (len(claimed) == count and not excess)

    def _want_ready(self) -> None:
        """Hear `ready` for the types of the attached workers and of the pollers of late, no others."""
        if self._ready is not None:
            self._ready.want({t for s in self.sessions for t in s.task_types} | self._polled.keys())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            quiet = time.monotonic() - POLLED_TYPE_S
            for task_type in [t for t, at in self._polled.items() if at < quiet and t not in self._waiting]:
                del self._polled[task_type]
            self._want_ready()
            waiting = {t for s in self.sessions if s.credits > 0 for t in s.task_types}
            self._pump_types(waiting)


def assignment(task: ClaimedTask, traceparent: str = "") -> pb.ServerMessage:
    """The message that pushes `task` to a worker; `traceparent`: its attempt's span (see tracing)."""
    spec = task.spec
    return pb.ServerMessage(task=pb.TaskAssignment(
        workflow_id=task.workflow_id, task_id=spec.task_id, task_type=relative(spec.task_type),
        reference_name=spec.ref, attempt=spec.attempt,
        input_json=fastjson.dumps_bytes(spec.input),
        lease_ms=task.lease_ms, idempotency_key=spec.idempotency_key(task.workflow_id),
        traceparent=traceparent))
