"""One ``TaskService.Connect`` call: an outbox drained by a writer, a reader
that hands each server message to a callback, a watchdog that pings the
node, and one reason why it ended.

The writer sends what it finds queued when it gets its turn (everything
queued during the loop turn that woke it, or while its previous write was in
flight) in as few messages as the node reads (``orchestrator_api.batches``):
one WorkerBatch once the node has sent a ServerBatch on this stream, which
only a node that reads them does; single messages until then. What a caller
hands to ``send_now`` while the writer waits with nothing queued and nothing
in flight is written by the caller's own task at once instead: the writer's
wake-up (a turn of the event loop on the way of each result at light load)
is saved, and nothing could have shared that write anyway.

A stream never reconnects by itself; the Worker opens a new one. Anything
sent on a stream that has ended is dropped: the Worker keeps what must
survive (unacknowledged results) and re-sends it on the next stream.

A frozen node (SIGSTOP, a long GC or VM pause, a stalled disk) or a cut
network ends nothing TCP can see: the socket stays open and writes are
buffered. So the stream pings the node about every second (``Ping``, which
a node answers at once with a ``Pong``) and ends itself when nothing at all
has come from the node for ``node_timeout_s``. The deadline holds only for
a node known to answer pings (it answered one on this stream, or on an
earlier stream to the same endpoint): a node that predates ``Ping`` ignores
it and is never left for that. Time this process's own event loop spent
blocked is not held against the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import grpc
import grpc.aio

from orchestrator_api.batches import WorkerItem, gather_worker_messages
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

__all__ = ["TaskStream"]

log = logging.getLogger("worker.stream")

# After a graceful close (done_writing), how long the node has to end the call.
_CLOSE_TIMEOUT_S = 2.0
# Pings go out this often (or every third of the deadline, if shorter).
_PING_INTERVAL_S = 1.0
# The watchdog woke this much later than it asked: this process's loop was blocked,
# and what the node sent meanwhile may still be unread. The silence counts afresh.
_LOOP_STALL_S = 0.5


class TaskStream:
    """A worker's stream to one node.

    Args:
        endpoint: the node's "host:port", for logs.
        channel: an open channel to that node.
        first: messages to send before anything else (hello, then re-sent results).
            Items as for ``send``.
        on_message: called for every message the node sends, in order.
        on_established: called once, when the first message (the hello) is written.
        node_timeout_s: end the stream when the node sends nothing for this long
            (None: never); only once the node is known to answer pings.
        answers_pings: the node at this endpoint answered pings before, so the
            deadline holds from the start of this stream.
    """

    def __init__(
        self,
        endpoint: str,
        channel: grpc.aio.Channel,
        first: Iterable[WorkerItem],
        *,
        on_message: Callable[[TaskStream, pb.ServerMessage], None],
        on_established: Callable[[TaskStream], None],
        metadata: tuple[tuple[str, str], ...] = (),
        node_timeout_s: float | None = None,
        answers_pings: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._metadata = metadata
        self._channel = channel
        self._on_message = on_message
        self._on_established = on_established
        self._outbox: asyncio.Queue[WorkerItem | None] = asyncio.Queue()
        for message in first:
            self._outbox.put_nowait(message)
        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        self._reason: str | None = None
        self._accepting = True
        self.established_at: float | None = None
        self._established = asyncio.Event()
        self.messages_received = 0  # pongs aside
        self.pongs = 0
        self.drained = False  # the node asked us to leave (it is stopping)
        self.node_reads_batches = False  # the node sent a ServerBatch: it reads WorkerBatch too
        self.went_silent = False  # ended because the node sent nothing for node_timeout_s
        self._node_timeout_s = node_timeout_s
        self._answers_pings = answers_pings
        self._heard_at = 0.0  # loop time of the node's last message (of any kind)
        self._silence_from = 0.0  # the silence is counted from here at the earliest
        self._call: grpc.aio.StreamStreamCall | None = None
        self._writer_waiting = False  # the writer waits for something to be queued
        self._direct: asyncio.Future[None] | None = None  # a send_now write in flight

    @property
    def established(self) -> bool:
        """True once the hello reached the transport (the node is reachable)."""
        return self.established_at is not None

    @property
    def answers_pings(self) -> bool:
        """True once the node showed that it answers pings (on this stream or before)."""
        return self._answers_pings or self.pongs > 0

    @property
    def ended(self) -> bool:
        """True once the stream has ended, for whatever reason."""
        return self._ended.is_set()

    def send(self, item: WorkerItem) -> None:
        """Queue a message, or an item that may share a batch (a result, release,
        heartbeat or credit, whose counts add up); never blocks. Dropped once the
        stream is closing."""
        if self._accepting:
            self._outbox.put_nowait(item)

    async def send_now(self, items: Sequence[WorkerItem]) -> None:
        """Send ``items`` as ``send`` would, but write them from the calling task at once when the
        writer waits with nothing queued and nothing in flight (the stream is up and open): one
        turn of the event loop sooner, without waking the writer. Otherwise they are queued."""
        call = self._call
        if not self._accepting:
            return
        if (call is None or self.established_at is None or not self._writer_waiting or self._direct is not None
                or not self._outbox.empty()):
            for item in items:
                self._outbox.put_nowait(item)
            return
        done = self._direct = self._loop.create_future()
        try:
            await self._write(call, items)
        finally:
            self._direct = None
            if not done.done():
                done.set_result(None)

    def close(self) -> None:
        """End the stream gracefully: write what is queued, then half-close and
        let the node end the call (bounded by a short timeout)."""
        if self._accepting:
            self._accepting = False
            self._outbox.put_nowait(None)
            self._loop.call_later(_CLOSE_TIMEOUT_S, self.abort, "the node did not end the stream after close")

    def abort(self, reason: str) -> None:
        """End the stream now; ``run()`` returns ``reason``."""
        self._end(reason)

    def healthy(self, min_age_s: float) -> bool:
        """Whether this stream worked: the node sent something, or the stream
        stayed up for ``min_age_s``. A node that accepts the hello and drops
        the stream at once must not reset the reconnect back-off."""
        if self.established_at is None:
            return False
        return self.messages_received > 0 or self._loop.time() - self.established_at >= min_age_s

    async def run(self, connect_timeout_s: float) -> str:
        """Run the stream until it ends; return why it ended (a log sentence)."""
        call = self._call = pb_grpc.TaskServiceStub(self._channel).Connect(  # type: ignore[no-untyped-call]
            metadata=self._metadata or None)
        workers = [
            asyncio.create_task(self._write_loop(call)),
            asyncio.create_task(self._read_loop(call)),
            asyncio.create_task(self._connect_watchdog(connect_timeout_s)),
        ]
        if self._node_timeout_s is not None:
            workers.append(asyncio.create_task(self._silence_watchdog(self._node_timeout_s)))
        try:
            await self._ended.wait()
        finally:
            self._accepting = False
            call.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        assert self._reason is not None
        return self._reason

    def _end(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
            self._accepting = False
            self._ended.set()

    async def _write_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        with self._ending_on_failure():
            while True:
                self._writer_waiting = True
                try:
                    item = await self._outbox.get()
                finally:
                    self._writer_waiting = False
                if self._direct is not None:   # a send_now is writing what was queued before this
                    await asyncio.shield(self._direct)
                queued: list[WorkerItem] = []
                while item is not None:
                    queued.append(item)
                    if self._outbox.empty():
                        break
                    item = self._outbox.get_nowait()
                if not await self._write(call, queued):
                    return
                if item is None:
                    await call.done_writing()
                    return  # the reader sees the node end the call

    async def _write(self, call: grpc.aio.StreamStreamCall, items: Sequence[WorkerItem]) -> bool:
        """Write ``items`` in as few messages as the node reads; False once the stream ended."""
        with self._ending_on_failure():
            for message in gather_worker_messages(items, self.node_reads_batches):
                await call.write(message)
                if self.established_at is None:
                    self.established_at = self._loop.time()
                    self._established.set()
                    self._on_established(self)
            return True
        return False

    @contextlib.contextmanager
    def _ending_on_failure(self) -> Iterator[None]:
        """A write that fails ends the stream with the reason (a cancellation is passed on)."""
        try:
            yield
        except grpc.aio.AioRpcError as err:
            self._end(_describe_rpc_error(err))
        except asyncio.CancelledError:
            self._end("the stream was cancelled")
            raise
        except Exception as err:
            self._end(f"writing failed: {err!r}")

    async def _read_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    self._end("the node ended the stream")
                    return
                self._heard_at = self._loop.time()
                body = message.WhichOneof("body")
                if body == "pong":
                    self.pongs += 1  # it says the node is there, and nothing else
                    continue
                if body == "batch":
                    self.node_reads_batches = True
                    batch = message.batch
                    if not (batch.tasks or batch.result_acks or batch.heartbeat_acks):
                        continue  # the node's first message: it reads batches, and nothing else
                self.messages_received += 1
                self._dispatch(message)
        except grpc.aio.AioRpcError as err:
            self._end(_describe_rpc_error(err))
        except asyncio.CancelledError:
            self._end("the stream was cancelled")
            raise

    def _dispatch(self, message: pb.ServerMessage) -> None:
        try:
            self._on_message(self, message)
        except Exception:  # a bug in the worker must not look like a network failure
            log.exception("bug: handling a server message from %s failed: %s", self.endpoint, message)

    async def _silence_watchdog(self, timeout_s: float) -> None:
        """Ping the node every interval; end the stream once a node known to answer pings has
        sent nothing at all for ``timeout_s`` (counted from when the stream was up)."""
        await self._established.wait()
        interval = min(_PING_INTERVAL_S, timeout_s / 3)
        seq = 0
        now = self._loop.time()
        self._silence_from = now
        next_ping = now
        while self._accepting:   # once closing (a Drain), the close has its own bound
            if now >= next_ping:
                seq += 1
                self.send(pb.WorkerMessage(ping=pb.Ping(seq=seq)))
                next_ping = now + interval
            wake = next_ping
            if self.answers_pings:
                silent_s = now - max(self._heard_at, self._silence_from)
                if silent_s >= timeout_s:
                    self.went_silent = True
                    self._end(f"the node sent nothing for {silent_s:.1f} s, pings unanswered "
                              f"(frozen or unreachable; the deadline is {timeout_s:g} s)")
                    return
                wake = min(wake, now + timeout_s - silent_s)
            await asyncio.sleep(max(0.0, wake - now))
            now = self._loop.time()
            if now - wake > _LOOP_STALL_S:
                self._silence_from = now  # our loop was held, not the node: count afresh

    async def _connect_watchdog(self, timeout_s: float) -> None:
        # A frozen node completes TCP handshakes but never answers HTTP/2:
        # without this, the hello would wait for gRPC's 20 s connect deadline.
        await asyncio.sleep(timeout_s)
        if not self.established:
            self._end(f"no connection within {timeout_s:g} s")


def _describe_rpc_error(err: grpc.aio.AioRpcError) -> str:
    return f"{err.code().name}: {err.details()}"
