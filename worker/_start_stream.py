"""Starts over one ``StartWorkflows`` stream (``WorkflowClient.start_workflow``).

A unary call costs the node about twice what a message on an open stream does (a new HTTP/2
stream, its metadata, a handler task of its own; measured with an echo server on grpc.aio and
uvloop, 2026-12-08: 375 - 398 us of the server's CPU per unary call against 183 - 190 per message
of a bidi stream), and a node's start was more gRPC than start. So a client keeps one stream to its
current node and sends every start on it; the starts its threads make meanwhile go in one message,
and the node answers each as soon as it is done.

What the stream cannot answer is left to the unary call, which knows how to fail over: a start
whose stream broke, timed out or answered UNAVAILABLE is made again as ``StartWorkflow`` with the
same idempotency key (every start of the client has one), so it creates at most one workflow.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import grpc

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

__all__ = ["StartStream", "StreamBroken"]

MAX_STARTS_PER_MESSAGE = 1000   # what a node reads in one message (api/workflows.py)
MESSAGE_BYTES = 1024 * 1024     # a message is closed past this (a node's default limit is 4 MiB)
_END = None


class StreamBroken(Exception):
    """The stream ended before answering: what its starts did is unknown here."""

    def __init__(self, code: grpc.StatusCode | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StartStream:
    """One ``StartWorkflows`` call to ``endpoint``: ``submit`` queues a start and returns the future
    of its answer (a ``StartedItem``, or ``StreamBroken``). A thread of gRPC's writes what is queued,
    as few messages as it finds it in; one of its own reads the answers."""

    def __init__(self, channel: grpc.Channel, endpoint: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.endpoint = endpoint
        self._queue: queue.SimpleQueue[tuple[int, pb.StartWorkflowRequest] | None] = queue.SimpleQueue()
        self._pending: dict[int, Future[pb.StartedItem]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.broken: StreamBroken | None = None
        stub = pb_grpc.WorkflowServiceStub(channel)  # type: ignore[no-untyped-call]
        self._call = stub.StartWorkflows(self._messages(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name=f"start-stream {endpoint}", daemon=True)
        self._reader.start()

    def submit(self, request: pb.StartWorkflowRequest) -> Future[pb.StartedItem]:
        answer: Future[pb.StartedItem] = Future()
        with self._lock:
            if self.broken is not None:
                raise self.broken
            start_id = next(self._ids)
            self._pending[start_id] = answer
        self._queue.put((start_id, request))
        return answer

    def close(self) -> None:
        """End the stream (answers still due are given up on: StreamBroken)."""
        self._queue.put(_END)
        self._call.cancel()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)

    def _messages(self) -> Iterator[pb.StartWorkflowsRequest]:
        while True:
            first = self._queue.get()
            if first is _END:
                return
            starts = [first]
            size = first[1].ByteSize()
            ended = False
            while len(starts) < MAX_STARTS_PER_MESSAGE and size < MESSAGE_BYTES:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is _END:
                    ended = True
                    break
                starts.append(following)
                size += following[1].ByteSize()
            yield pb.StartWorkflowsRequest(starts=[pb.StartItem(id=start_id, start=request)
                                                   for start_id, request in starts])
            if ended:
                return

    def _read(self) -> None:
        broken = StreamBroken(None, f"the node at {self.endpoint} ended the StartWorkflows stream")
        try:
            for response in self._call:
                for item in response.started:
                    with self._lock:
                        answer = self._pending.pop(item.id, None)
                    if answer is not None:
                        answer.set_result(item)
        except grpc.RpcError as err:
            broken = StreamBroken(err.code(), f"{err.code().name}: {err.details() or ''}")
        with self._lock:
            self.broken = broken
            pending, self._pending = self._pending, {}
        self._queue.put(_END)   # the writer stops too
        for answer in pending.values():
            answer.set_exception(broken)
