"""One ``TaskService.Connect`` call: an outbox drained by a writer, a reader
that hands each server message to a callback, and one reason why it ended.

A stream never reconnects by itself; the Worker opens a new one. Anything
sent on a stream that has ended is dropped: the Worker keeps what must
survive (unacknowledged results) and re-sends it on the next stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import grpc
import grpc.aio

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

__all__ = ["TaskStream"]

log = logging.getLogger("worker.stream")

# After a graceful close (done_writing), how long the node has to end the call.
_CLOSE_TIMEOUT_S = 2.0


class TaskStream:
    """A worker's stream to one node.

    Args:
        endpoint: the node's "host:port", for logs.
        channel: an open channel to that node.
        first: messages to send before anything else (hello, then re-sent results).
        on_message: called for every message the node sends, in order.
        on_established: called once, when the first message (the hello) is written.
    """

    def __init__(
        self,
        endpoint: str,
        channel: grpc.aio.Channel,
        first: Iterable[pb.WorkerMessage],
        *,
        on_message: Callable[[TaskStream, pb.ServerMessage], None],
        on_established: Callable[[TaskStream], None],
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.endpoint = endpoint
        self._metadata = metadata
        self._channel = channel
        self._on_message = on_message
        self._on_established = on_established
        self._outbox: asyncio.Queue[pb.WorkerMessage | None] = asyncio.Queue()
        for message in first:
            self._outbox.put_nowait(message)
        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        self._reason: str | None = None
        self._accepting = True
        self.established_at: float | None = None
        self.messages_received = 0
        self.drained = False  # the node asked us to leave (it is stopping)

    @property
    def established(self) -> bool:
        """True once the hello reached the transport (the node is reachable)."""
        return self.established_at is not None

    @property
    def ended(self) -> bool:
        """True once the stream has ended, for whatever reason."""
        return self._ended.is_set()

    def send(self, message: pb.WorkerMessage) -> None:
        """Queue a message; never blocks. Dropped once the stream is closing."""
        if self._accepting:
            self._outbox.put_nowait(message)

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
        call = pb_grpc.TaskServiceStub(self._channel).Connect(  # type: ignore[no-untyped-call]
            metadata=self._metadata or None)
        workers = [
            asyncio.create_task(self._write_loop(call)),
            asyncio.create_task(self._read_loop(call)),
            asyncio.create_task(self._connect_watchdog(connect_timeout_s)),
        ]
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
        try:
            while True:
                message = await self._outbox.get()
                if message is None:
                    await call.done_writing()
                    return  # the reader sees the node end the call
                await call.write(message)
                if self.established_at is None:
                    self.established_at = self._loop.time()
                    self._on_established(self)
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

    async def _connect_watchdog(self, timeout_s: float) -> None:
        # A frozen node completes TCP handshakes but never answers HTTP/2:
        # without this, the hello would wait for gRPC's 20 s connect deadline.
        await asyncio.sleep(timeout_s)
        if not self.established:
            self._end(f"no connection within {timeout_s:g} s")


def _describe_rpc_error(err: grpc.aio.AioRpcError) -> str:
    return f"{err.code().name}: {err.details()}"
