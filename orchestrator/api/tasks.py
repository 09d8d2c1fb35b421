"""TaskService: the worker stream (credits in, tasks out, heartbeats and results both ways, pings
answered at once so that a worker notices within seconds when this node stops answering)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..cluster.deciding import Decider
from .auth import current_principal
from ..cluster.dispatch import Dispatcher, WorkerSession, worker_identity
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.namespaces import queue_of
from ..handlers import request_namespace
from ..core.payloads import PayloadLimit, checked_output
from ..store import ResultOutcome, Store, StoreUnavailable

log = logging.getLogger(__name__)

MAX_CREDITS = 256         # tasks one stream may hold unfinished
MAX_TASK_TYPES = 256
MAX_NAME_LENGTH = 256

RESULT_STATUS: dict[int, st.TaskStatus] = {
    pb.TaskResult.COMPLETED: st.TASK_COMPLETED, pb.TaskResult.FAILED: st.TASK_FAILED,
    pb.TaskResult.FAILED_TERMINAL: st.FAILED_WITH_TERMINAL_ERROR}


class TaskService(pb_grpc.TaskServiceServicer):
    """The worker stream: credits in, tasks out, heartbeats and results in both ways."""

    def __init__(self, store: Store, dispatcher: Dispatcher, limit: PayloadLimit, decider: Decider) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limit = limit
        self.decider = decider
        self.sent: Counter[str] = Counter()                 # tasks written to workers' streams, by type (metrics)
        self.results: Counter[tuple[str, str]] = Counter()  # workers' results by (task type, outcome) (metrics)
        self._types: dict[WorkerSession, dict[str, str]] = {}   # per stream: task id -> type, until its result

    async def Connect(self, request_iterator: AsyncIterator[pb.WorkerMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ServerMessage]:
        session = await self._hello(request_iterator, context)
        self.dispatcher.attach(session)
        reader = asyncio.create_task(self._read(request_iterator, session))
        types = self._types[session] = {}
        try:
            while True:
                message = await session.outbox.get()
                if message is None:
                    return
                if message.HasField("task"):
                    types[message.task.task_id] = message.task.task_type
                    self.sent[message.task.task_type] += 1
                yield message
        finally:
            self._types.pop(session, None)
            reader.cancel()
            await self.dispatcher.detach(session)

    async def _hello(self, requests: AsyncIterator[pb.WorkerMessage],
                     context: grpc.aio.ServicerContext) -> WorkerSession:
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream closed before its hello")
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
        hello = first.hello
        if not hello.worker_id or not hello.task_types or hello.capacity < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "hello needs a worker_id, at least one task type and a capacity >= 0")
        principal = current_principal()
        refusal = principal.serve_refusal(list(hello.task_types)) if principal is not None else ""
        if refusal:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        if hello.worker_id == "*":   # the store reads "*" as "whoever holds the attempt"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "worker_id '*' is reserved")
        if (len(hello.worker_id) > MAX_NAME_LENGTH or len(hello.task_types) > MAX_TASK_TYPES
                or any(len(t) > MAX_NAME_LENGTH for t in hello.task_types)):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"hello: worker_id and task types have at most {MAX_NAME_LENGTH} characters, "
                                f"and a stream serves at most {MAX_TASK_TYPES} task types")
        # A stream holds at most MAX_CREDITS tasks it has not finished: a worker that announces a
        # huge capacity and never reads cannot hoard a task type. Task types and the worker's id
        # are its namespace's: it takes that namespace's tasks only. Its leases are held by its
        # identity (its token's name and its worker id, `worker_identity`), and every heartbeat,
        # result and release is checked against it: another token that says hello with this
        # worker's id is not it, the same worker reconnected to another node is.
        namespace = request_namespace()
        return WorkerSession(worker_identity(principal, namespace, hello.worker_id),
                             frozenset(queue_of(namespace, t) for t in hello.task_types),
                             min(hello.capacity, MAX_CREDITS))

    async def _read(self, requests: AsyncIterator[pb.WorkerMessage], session: WorkerSession) -> None:
        """Handle the worker's messages. Results, heartbeats and releases run concurrently
        (each is one atomic script), so a burst of results costs one round trip, not many."""
        in_flight: set[asyncio.Task[None]] = set()

        def spawn(call: Awaitable[Any]) -> None:
            task = asyncio.create_task(self._guarded(call, session))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        try:
            async for message in requests:
                session.heard()
                kind = message.WhichOneof("body")
                if kind == "credit":   # never more than MAX_CREDITS asked for and held together
                    room = MAX_CREDITS - session.credits - session.held
                    self.dispatcher.grant(session, max(0, min(message.credit.count, room)))
                elif kind == "heartbeat":
                    spawn(self._heartbeat(message.heartbeat, session))
                elif kind == "result":
                    spawn(self._result(message.result, session))
                elif kind == "release":
                    spawn(self._release(message.release, session))
                elif kind == "ping":   # at once, without the store: it says this node's loop and stream work
                    session.outbox.put_nowait(pb.ServerMessage(pong=pb.Pong(seq=message.ping.seq)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker stream of %s failed", session.worker_id)
        finally:
            await asyncio.gather(*in_flight, return_exceptions=True)
            # the worker half-closed: it can neither take nor release tasks any more
            await self.dispatcher.release_unsent(session)
            session.outbox.put_nowait(None)

    @staticmethod
    async def _guarded(call: Awaitable[Any], session: WorkerSession) -> None:
        """A failed store call ends the stream: the worker reconnects and re-sends what was not acked."""
        try:
            await call
        except StoreUnavailable as exc:
            log.warning("ending the stream of %s: state store unavailable (%s)", session.worker_id, exc)
            session.outbox.put_nowait(None)
        except Exception:
            log.exception("handling a message of worker %s failed", session.worker_id)
            session.outbox.put_nowait(None)

    async def _release(self, release: pb.Release, session: WorkerSession) -> None:
        self._types.get(session, {}).pop(release.task_id, None)
        if await self.store.release_task(release.workflow_id, release.task_id, session.worker_id, now_ms()):
            session.held = max(0, session.held - 1)

    async def _heartbeat(self, beat: pb.Heartbeat, session: WorkerSession) -> None:
        lease_ms = await self.store.heartbeat(beat.workflow_id, beat.task_id, session.worker_id, now_ms())
        session.outbox.put_nowait(pb.ServerMessage(heartbeat_ack=pb.HeartbeatAck(
            task_id=beat.task_id, alive=lease_ms > 0, lease_ms=lease_ms)))

    async def _result(self, result: pb.TaskResult, session: WorkerSession) -> None:
        status, output_json, reason = self._checked_result(result)
        ack = await self.store.complete_task(result.workflow_id, result.task_id, session.worker_id, status,
                                             output_json, reason, now_ms())
        if ack.outcome is ResultOutcome.STORED:
            self.decider.soon([result.workflow_id])   # the next step, here and now
        if ack.outcome is not ResultOutcome.UNKNOWN:
            session.held = max(0, session.held - 1)
        outcome = status if ack.outcome is ResultOutcome.STORED else ack.outcome.name
        self.results[(self._types.get(session, {}).pop(result.task_id, "unknown"), outcome)] += 1
        accepted = ack.outcome in (ResultOutcome.STORED, ResultOutcome.DUPLICATE)
        detail = {ResultOutcome.STORED: "stored", ResultOutcome.DUPLICATE: "same result already stored",
                  ResultOutcome.UNKNOWN: "no such task attempt"}.get(
            ack.outcome, f"attempt is {ack.detail}: its lease expired or the workflow ended")
        if status != RESULT_STATUS.get(result.status) and accepted:
            detail = f"stored as {status}: {reason}"
        session.outbox.put_nowait(pb.ServerMessage(result_ack=pb.ResultAck(
            task_id=result.task_id, accepted=accepted, detail=detail)))

    def _checked_result(self, result: pb.TaskResult) -> tuple[st.TaskStatus, str, str]:
        """A malformed or oversized output fails the attempt for good, with the reason why."""
        status = RESULT_STATUS.get(result.status)
        if status is None:
            return st.FAILED_WITH_TERMINAL_ERROR, "{}", "worker sent a result without a status"
        text, problem = checked_output(self.limit, result.output_json)
        if text is None:
            return st.FAILED_WITH_TERMINAL_ERROR, "{}", problem
        return status, text, result.reason
