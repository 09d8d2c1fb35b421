"""Unary calls carried many to a stream (StartWorkflows, PublishEvents): each item of a message is
done as its unary call would do it and answered on its own, by the caller's id, as soon as it is
done; the answers done while a message was being written go together in the next one.

Why: a unary call costs the node about twice what a message on an open stream does (a new HTTP/2
stream, its metadata, a handler task of its own; an echo server on grpc.aio and uvloop, 2026-12-08:
375 - 398 us of the server's CPU per unary call against 183 - 190 per message of a bidi stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from ..service.errors import Refused
from .errors import abort, status_of

MAX_ITEMS_PER_MESSAGE = 1000
"""A message with more items is refused (INVALID_ARGUMENT), the stream with it."""
MAX_ITEMS_IN_FLIGHT = 256
"""Items of one stream being done at once: past them the stream is not read until one is answered
(gRPC's flow control then holds the caller back), so one caller cannot make a node hold an
unbounded number of them."""

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class ItemStreams:
    """The item streams open on a node, to end them all when it stops."""

    def __init__(self) -> None:
        self._readers: set[asyncio.Task[Any]] = set()
        self.closing = False

    def close(self) -> None:
        """The node is stopping: each stream reads no more, answers what it read and ends UNAVAILABLE,
        so that its caller goes on with another node at once instead of waiting out the server's
        grace; a stream opened after this ends so at once."""
        self.closing = True
        for reader in self._readers:
            reader.cancel()

    async def answer_each(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, *,
                          check: Callable[[], None], items: Callable[[Any], Sequence[Item]],
                          do: Callable[[Item], Awaitable[Answer]],
                          failed: Callable[[Item, grpc.StatusCode, str], Answer],
                          message: Callable[[list[Answer]], Any], what: str) -> AsyncIterator[Any]:
        """The answers to the items of `requests` (`items` of each message), each `do(item)`, or
        `failed(item, code, text)` with the status its error means; `message` makes a message of
        answers. `check`: the service's own check of the stream (it raises Refused), before anything
        is read. Ends once the caller ended its side and every item on it was answered."""
        try:
            check()
        except Refused as exc:
            await abort(context, exc)
        answers: asyncio.Queue[Answer | None] = asyncio.Queue()
        room = asyncio.Semaphore(MAX_ITEMS_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def one(item: Item) -> None:
            try:
                answers.put_nowait(await do(item))
            except Exception as exc:
                code, text = status_of(exc, what)
                answers.put_nowait(failed(item, code, text))
            finally:
                room.release()

        async def read() -> tuple[grpc.StatusCode, str] | None:
            """Do what the stream brings until it ends (None), or why it is ended here."""
            ended: tuple[grpc.StatusCode, str] | None = None
            try:
                if self.closing:
                    raise asyncio.CancelledError
                async for request in requests:
                    batch = items(request)
                    if len(batch) > MAX_ITEMS_PER_MESSAGE:
                        ended = (grpc.StatusCode.INVALID_ARGUMENT,
                                 f"a {what} message holds at most {MAX_ITEMS_PER_MESSAGE} items")
                        break
                    for item in batch:
                        await room.acquire()
                        task = asyncio.create_task(one(item))
                        running.add(task)
                        task.add_done_callback(running.discard)
            except asyncio.CancelledError:   # close(): what was read is still answered
                ended = (grpc.StatusCode.UNAVAILABLE, "this node is stopping: go on with another one")
            try:
                await asyncio.gather(*running)
            finally:
                answers.put_nowait(None)
            return ended

        reader = asyncio.create_task(read())
        self._readers.add(reader)
        try:
            while True:
                batch = [await answers.get()]
                while not answers.empty():
                    batch.append(answers.get_nowait())
                answered = [answer for answer in batch if answer is not None]
                if answered:
                    yield message(answered)
                if len(answered) < len(batch):   # the reader ended
                    ended = await reader
                    if ended is not None:
                        await context.abort(*ended)
                    return
        finally:
            self._readers.discard(reader)
            for task in (reader, *running):
                task.cancel()
