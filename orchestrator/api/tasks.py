"""TaskService: the worker stream (credits in, tasks out, heartbeats and results both ways, pings
answered at once so that a worker notices within seconds when this node stops answering), over
the tasks service (service/tasks.py).

A worker whose hello asks for batches gets what its stream's writer finds queued at each turn
in one ServerBatch (orchestrator_api/batches.py), the first one empty to say that this node
reads the WorkerBatch it may then send; each item of a batch is handled as if it came alone.

A result the store cannot take now (the part of a Redis Cluster holding its workflow is failing
over, or its slot is moving) is answered with a ResultAck `retry` to a worker that re-sends
(its hello's `resends`), and the stream goes on carrying the worker's other tasks, which the rest of
the store takes as usual; an older worker's stream is ended instead, as before, so that it re-sends
its unacknowledged results on the next one. A heartbeat the store could not take is answered alive
with its lease not extended (`lease_ms` 0; the next beat tries again), and a release is let go (the
task returns when its lease expires)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc

from orchestrator_api.batches import gather_server_messages, server_batch_hello
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..cluster.dispatch import Dispatcher, WorkerSession
from ..core import statuses as st
from ..core.errors import OrchestratorError
from ..service.errors import Refused
from ..service.tasks import MAX_CREDITS, Hello, Result, Tasks
from ..store import ResultOutcome, StoreUnavailable
from .errors import abort

log = logging.getLogger(__name__)

RESULT_STATUS: dict[int, st.TaskStatus] = {
    pb.TaskResult.COMPLETED: st.TASK_COMPLETED, pb.TaskResult.FAILED: st.TASK_FAILED,
    pb.TaskResult.FAILED_TERMINAL: st.FAILED_WITH_TERMINAL_ERROR}


class TaskService(pb_grpc.TaskServiceServicer):
    """The worker stream: credits in, tasks out, heartbeats and results in both ways."""

    def __init__(self, tasks: Tasks, dispatcher: Dispatcher) -> None:
        self.tasks = tasks
        self.dispatcher = dispatcher
        self.sent: Counter[str] = Counter()                 # tasks written to workers' streams, by type (metrics)
        self.results: Counter[tuple[str, str]] = Counter()  # workers' results by (task type, outcome) (metrics)
        self._types: dict[WorkerSession, dict[str, str]] = {}   # per stream: task id -> type, until its result

    async def Connect(self, request_iterator: AsyncIterator[pb.WorkerMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ServerMessage]:
        session, batches, resends = await self._hello(request_iterator, context)
        session.resends = resends
        self.dispatcher.attach(session)
        reader = asyncio.create_task(self._read(request_iterator, session))
        types = self._types[session] = {}
        try:
            if batches:
                yield server_batch_hello()
            while True:
                message = await session.outbox.get()
                if batches and message is not None and session.held - len(session.reporting) > 1:
                    # other tasks of this worker are out: what the next loop turn hands it (a Redis
                    # Cluster's masters answer apart) joins this write instead of one of its own.
                    # Not for a result's acknowledgement alone: one workflow at a time, the task its
                    # step handed over goes at once (`Decider._pushed_first_if_alone`), the ack after
                    await asyncio.sleep(0)
                if not batches:   # an older worker: one message at a time, as queued
                    if message is None:
                        return
                    self._note_sent(message, types)
                    yield message
                    continue
                # everything queued since the last write goes now, in as few messages as it can;
                # counted as unsent until written, so that a stream that stops reading is held
                # to the same bound as before (dispatch.MAX_UNSENT)
                queued: list[pb.ServerMessage] = []
                while message is not None:
                    queued.append(message)
                    self._note_sent(message, types)
                    if session.outbox.empty():
                        break
                    message = session.outbox.get_nowait()
                session.writing = len(queued)
                for out in gather_server_messages(queued):
                    yield out
                session.writing = 0
                if message is None:
                    return
        finally:
            self._types.pop(session, None)
            reader.cancel()
            await self.dispatcher.detach(session)

    def _note_sent(self, message: pb.ServerMessage, types: dict[str, str]) -> None:
        if message.HasField("task"):
            types[message.task.task_id] = message.task.task_type
            self.sent[message.task.task_type] += 1

    async def _hello(self, requests: AsyncIterator[pb.WorkerMessage],
                     context: grpc.aio.ServicerContext) -> tuple[WorkerSession, bool, bool]:
        """The worker's session, and whether its hello asked for batches and said it re-sends."""
        batches = resends = False

        async def read_hello() -> Hello:   # read only once the service let the caller connect
            nonlocal batches, resends
            try:
                first = await requests.__anext__()
            except StopAsyncIteration:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream closed before its hello")
            if first.WhichOneof("body") != "hello":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
            hello = first.hello
            batches, resends = hello.batches, hello.resends
            return Hello(hello.worker_id, list(hello.task_types), hello.capacity)
        try:
            return await self.tasks.connect(read_hello), batches, resends
        except (Refused, OrchestratorError) as exc:
            await abort(context, exc)

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
                if kind == "batch":   # each item as if it came alone, in the contract's order
                    batch = message.batch
                    for result in batch.results:
                        spawn(self._result(result, session, self._reporting(result, session)))
                    for release in batch.releases:
                        spawn(self._release(release, session))
                    for beat in batch.heartbeats:
                        spawn(self._heartbeat(beat, session))
                    if batch.credits:
                        self._grant(session, batch.credits)
                elif kind == "credit":
                    self._grant(session, message.credit.count)
                elif kind == "heartbeat":
                    spawn(self._heartbeat(message.heartbeat, session))
                elif kind == "result":
                    spawn(self._result(message.result, session, self._reporting(message.result, session)))
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

    def _grant(self, session: WorkerSession, count: int) -> None:
        """Credits the worker asked for: never more than MAX_CREDITS asked for and held together
        (a task whose result is being stored is not held any more)."""
        room = MAX_CREDITS - session.credits - session.held + len(session.reporting)
        self.dispatcher.grant(session, max(0, min(count, room)))

    @staticmethod
    async def _guarded(call: Awaitable[Any], session: WorkerSession) -> None:
        """A store call that failed for want of the store ends the stream of a worker that does not
        re-send (`_result` answered the others); the worker reconnects and re-sends what was not
        acked. Any other failure ends it too: the worker starts afresh."""
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
        try:
            released = await self.tasks.release(release.workflow_id, release.task_id, session.worker_id)
        except StoreUnavailable as exc:   # the lease expires, and the task is queued again then
            log.warning("could not take back task %s from %s (%s); its lease will expire", release.task_id,
                        session.worker_id, exc)
            released = True   # the worker holds it no more either way
        if released:
            session.held = max(0, session.held - 1)

    async def _heartbeat(self, beat: pb.Heartbeat, session: WorkerSession) -> None:
        try:
            lease_ms = await self.tasks.heartbeat(beat.workflow_id, beat.task_id, session.worker_id)
        except StoreUnavailable as exc:
            # answered all the same (a worker drops a stream whose heartbeats go unanswered, as from a
            # frozen node): alive, lease not extended this time; the next beat tries again
            log.info("heartbeat of task %s from %s not stored (%s)", beat.task_id, session.worker_id, exc)
            session.outbox.put_nowait(pb.ServerMessage(heartbeat_ack=pb.HeartbeatAck(
                task_id=beat.task_id, alive=True, lease_ms=0)))
            return
        session.outbox.put_nowait(pb.ServerMessage(heartbeat_ack=pb.HeartbeatAck(
            task_id=beat.task_id, alive=lease_ms > 0, lease_ms=lease_ms)))

    def _reporting(self, result: pb.TaskResult, session: WorkerSession) -> bool:
        """Note, as it arrives, a result of a task pushed on this stream: while it is being stored
        the task no longer counts against the stream's room for credits, since the credit its
        result frees comes with it or right after (and must not be refused for want of room)."""
        if result.task_id in session.reporting or result.task_id not in self._types.get(session, {}):
            return False
        session.reporting.add(result.task_id)
        return True

    async def _result(self, result: pb.TaskResult, session: WorkerSession, reporting: bool) -> None:
        asked = RESULT_STATUS.get(result.status)
        if asked is None:   # the attempt fails for good, with the reason why
            stored = Result(result.workflow_id, result.task_id, session.worker_id, st.FAILED_WITH_TERMINAL_ERROR,
                            "{}", "worker sent a result without a status")
        else:
            stored = Result(result.workflow_id, result.task_id, session.worker_id, asked, result.output_json,
                            result.reason)
        try:
            completed = await self.tasks.complete(stored)
        except StoreUnavailable as exc:
            if not session.resends:
                raise   # `_guarded` ends the stream: the worker re-sends the result on its next one
            log.info("result of task %s from %s not stored for now (%s); the worker sends it again",
                     result.task_id, session.worker_id, exc)
            session.outbox.put_nowait(pb.ServerMessage(result_ack=pb.ResultAck(
                task_id=result.task_id, accepted=False, retry=True, detail=f"not stored for now: {exc}")))
            return
        finally:
            if reporting:
                session.reporting.discard(result.task_id)
        ack, status = completed.ack, completed.status
        if ack.outcome is not ResultOutcome.UNKNOWN:
            session.held = max(0, session.held - 1)
        outcome = status if ack.outcome is ResultOutcome.STORED else ack.outcome.name
        self.results[(self._types.get(session, {}).pop(result.task_id, "unknown"), outcome)] += 1
        accepted = ack.outcome in (ResultOutcome.STORED, ResultOutcome.DUPLICATE)
        detail = {ResultOutcome.STORED: "stored", ResultOutcome.DUPLICATE: "same result already stored",
                  ResultOutcome.UNKNOWN: "no such task attempt"}.get(
            ack.outcome, f"attempt is {ack.detail}: its lease expired or the workflow ended")
        if status != asked and accepted:
            detail = f"stored as {status}: {completed.reason}"
        session.outbox.put_nowait(pb.ServerMessage(result_ack=pb.ResultAck(
            task_id=result.task_id, accepted=accepted, detail=detail)))
