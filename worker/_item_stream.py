"""Unary calls carried many to one stream (``StartWorkflows``, ``PublishEvents``; see
``WorkflowClient.start_workflow`` and ``publish_event``).

A unary call costs the node about twice what a message on an open stream does (a new HTTP/2
stream, its metadata, a handler task of its own; measured with an echo server on grpc.aio and
uvloop, 2026-12-08: 375 - 398 us of the server's CPU per unary call against 183 - 190 per message
of a bidi stream), and a node's start was more gRPC than start. So a client keeps one stream of each
kind to its current node and sends every such call on it; the calls its threads make meanwhile go
in one message, and the node answers each as soon as it is done.

What the stream cannot answer is left to the unary call, which knows how to fail over (the client
says when that is safe: every start carries an idempotency key; a publish is made again only when
it may not have reached the node, as the unary call would be).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import grpc
from google.protobuf.message import Message

__all__ = ["ItemStream", "StreamBroken"]

MAX_ITEMS_PER_MESSAGE = 1000    # what a node reads in one message (orchestrator/api/item_streams.py)
MESSAGE_BYTES = 1024 * 1024     # a message is closed past this (a node's default limit is 4 MiB)
_END = None


class StreamBroken(Exception):
    """The stream ended before answering: what its items did is unknown here."""

    def __init__(self, code: grpc.StatusCode | None, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class ItemStream:
    """One stream of calls (`method`, e.g. "/orchestrator.v1.WorkflowService/StartWorkflows") to
    ``endpoint``: ``submit`` queues a request and returns the future of its answer (an item with
    `id`, `code` and `message`, or ``StreamBroken``). A thread of gRPC's writes what is queued, as
    few messages as it finds it in (`message(pairs of id and request)`); one of its own reads the
    answers (`answers(response)`)."""

    def __init__(self, channel: grpc.Channel, endpoint: str, metadata: tuple[tuple[str, str], ...], method: str,
                 message: Callable[[list[tuple[int, Any]]], Message], response_type: type[Message],
                 answers: Callable[[Any], Iterable[Any]]) -> None:
        self.endpoint = endpoint
        self._message = message
        self._answers = answers
        self._queue: queue.SimpleQueue[tuple[int, Message] | None] = queue.SimpleQueue()
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.broken: StreamBroken | None = None
        call = channel.stream_stream(method, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=response_type.FromString)
        self._call = call(self._messages(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name=f"stream {method} {endpoint}", daemon=True)
        self._reader.start()

    def submit(self, request: Message) -> Future[Any]:
        answer: Future[Any] = Future()
        with self._lock:
            if self.broken is not None:
                raise self.broken
            item_id = next(self._ids)
            self._pending[item_id] = answer
        self._queue.put((item_id, request))
        return answer

    def close(self) -> None:
        """End the stream (answers still due are given up on: StreamBroken)."""
        self._queue.put(_END)
        self._call.cancel()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)

    def _messages(self) -> Iterator[Message]:
        while True:
            first = self._queue.get()
            if first is _END:
                return
            items = [first]
            size = first[1].ByteSize()
            ended = False
            while len(items) < MAX_ITEMS_PER_MESSAGE and size < MESSAGE_BYTES:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is _END:
                    ended = True
                    break
                items.append(following)
                size += following[1].ByteSize()
            yield self._message(items)
            if ended:
                return

    def _read(self) -> None:
        broken = StreamBroken(None, f"the node at {self.endpoint} ended the stream")
        try:
            for response in self._call:
                for item in self._answers(response):
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
