"""Calls made during one turn of the event loop, sent to Redis together.

A node takes many workers' results, claims, heartbeats and starts at once; each is one script
call. Written one by one, each costs a write on the socket and a wake-up for its reply; gathered
per loop turn, one pipeline carries them all and their replies come back together. Each call
still gets its own reply (or its own error): one refused call never fails the others. A broken
connection fails the calls sent on it, as it would have one by one.

One pipeline on its way at a time (group commit, `max_in_flight`): the calls made while one is in
flight wait, and go together in the next as soon as it has answered. Redis runs the commands it is
sent one after another anyway, so a call waits about as long; what changes is that a busy node
sends fewer, larger pipelines: fewer writes, reads and wake-ups on the node and in Redis, and,
with results stored in larger batches, larger batches on the workers' streams too. Side by side at
128 workflows in flight (issue 21; each pair alternating runs, the machine's speed drifting between
pairs): one Redis 860.1 -> 943.3 and 769.9 -> 818.5 workflows/s (nodes' CPU per workflow 1.44 ->
1.26 and 1.58 -> 1.45 ms), a Redis Cluster of 3 masters 641.0 -> 759.7 and 574.3 -> 691.1 (1.77 ->
1.49 and 1.97 -> 1.63 ms); at 8 in flight 509.4 vs 500.8 and one at a time 256.2 vs 258.2, within
the runs' spread. (A pipeline apart for each master of a Redis Cluster was measured too: 676.9 ->
654.8, a turn's calls split apart again.) A pipeline late past `max_hold_s` (a master failing over,
a connection gone quiet) holds the next one back no longer: that one goes beside it, so a call fails
within its own deadline, and the calls for the masters that answer wait at most that much for one
that does not.

The calls of a caller alone in its turn (one workflow at a time: every call of a step waits for
the one before) are sent by that caller: no task is made for them, and their replies reach it as
the pipeline ends, not one loop turn later through futures. As soon as another caller's call joins
the turn, or a pipeline is on its way, a task sends them all, so that no caller's cancellation ever
cuts the pipeline of others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class Coalesced(Generic[Item]):
    """`call(item)`: the reply of one call, sent in the pipeline of this loop turn's calls;
    `replies(items)`: several calls of that pipeline, each reply or error as a value. `send`
    runs one pipeline: items in, replies or per-call errors (as values) out, in order.

    `max_in_flight`: at most that many pipelines on their way at once (0: no bound), each holding
    the next back for at most `max_hold_s`; the calls made meanwhile join the next.

    `settling`: `send` is also given `settle(index, reply)`, with which it may hand some replies
    over before the others are in (a Redis Cluster's masters answer apart: the callers of one
    master's calls need not wait for a master that is failing over); what it settled early, the
    list it returns repeats.

    `unreachable`: the errors that say a call's server was not reached (a connection lost), which
    `replies` raises rather than returns, as when the whole pipeline failed: with several servers
    (a Redis Cluster's masters, one pipeline each) one of them can fail alone."""

    def __init__(self, send: Callable[..., Awaitable[list[Any]]],
                 unreachable: tuple[type[BaseException], ...] = (), *, settling: bool = False,
                 max_in_flight: int = 0, max_hold_s: float = 0.05) -> None:
        self._send = send
        self._settling = settling
        self._unreachable = unreachable
        self._max_in_flight = max_in_flight
        self._max_hold_s = max_hold_s
        self._waiting: list[tuple[Item, asyncio.Future[Any]]] = []
        self._delivery_due = False   # a task will send what is waiting (else its first caller will)
        self._in_flight = 0          # pipelines sent and not answered yet
        self._landed: asyncio.Future[None] | None = None   # set when one of them is answered
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, item: Item) -> Any:
        [answer] = await self._replies([item])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def replies(self, items: Sequence[Item], *, unreachable_raises: bool = True) -> list[Any]:
        """Each item's reply, or its error as a value; a pipeline that failed as a whole raises, and
        so does an `unreachable` error unless `unreachable_raises` is False (a caller that can use
        the replies of the servers that answered)."""
        if not items:
            return []
        replies = await self._replies(items)
        for reply in replies:
            if unreachable_raises and isinstance(reply, self._unreachable):
                raise reply
        return replies

    async def answers(self, items: Sequence[Item]) -> list[Any]:
        """Each item's reply, for a caller that needs every one: the first error is raised."""
        replies = await self.replies(items)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _replies(self, items: Sequence[Item]) -> list[Any]:
        """The replies of one caller's calls (errors as values). A caller whose calls open a turn's
        batch, with no pipeline on its way, waits for the rest of the turn; still alone in it then,
        it sends them itself."""
        if self._waiting or self._delivery_due or self._full():   # the next batch is open: join it
            return list(await asyncio.gather(*[self._join(item) for item in items]))
        loop = asyncio.get_running_loop()
        own = [(item, loop.create_future()) for item in items]
        self._waiting.extend(own)
        try:
            await asyncio.sleep(0)   # resumed after every callback already due: the turn's calls join
        except asyncio.CancelledError:
            if self._alone(own):
                self._waiting = []   # nothing sent, nobody else waits: nothing to do for anyone
            raise
        if not self._alone(own):   # others joined: the task sends them all, these calls too
            return list(await asyncio.gather(*[reply for _, reply in own]))
        self._waiting = []
        self._in_flight += 1
        try:
            return await (self._send(list(items), None) if self._settling else self._send(list(items)))
        finally:
            self._land()

    def _full(self) -> bool:
        return 0 < self._max_in_flight <= self._in_flight

    def _alone(self, own: list[tuple[Item, asyncio.Future[Any]]]) -> bool:
        """Whether the batch waiting is `own` and only it, with no task to send it."""
        return not self._delivery_due and len(self._waiting) == len(own) and self._waiting[0] is own[0]

    def _land(self) -> None:
        """A pipeline was answered (or failed): the next may go."""
        self._in_flight -= 1
        landed, self._landed = self._landed, None
        if landed is not None and not landed.done():
            landed.set_result(None)

    def _join(self, item: Item) -> asyncio.Future[Any]:
        """Wait for `item`'s reply in the open batch, which a task sends from now on."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((item, reply))
        if not self._delivery_due:
            # the task's first step comes after every callback already due, so it takes the calls
            # of this whole turn (those made before it starts join it too), or, with a pipeline on
            # its way, every call made until that one is answered
            self._delivery_due = True
            task = loop.create_task(self._deliver())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return reply

    async def _deliver(self) -> None:
        try:
            await self._free_slot()
        except BaseException:   # cancelled while waiting: nothing of the batch was sent
            batch, self._waiting, self._delivery_due = self._waiting, [], False
            for _, reply in batch:
                reply.cancel()
            raise
        batch, self._waiting, self._delivery_due = self._waiting, [], False
        self._in_flight += 1
        try:
            await self._send_batch(batch)
        finally:
            self._land()

    async def _free_slot(self) -> None:
        """Wait until fewer than `max_in_flight` pipelines are on their way (what comes meanwhile
        joins this batch), but no longer than `max_hold_s`: a pipeline that late (a server not
        answering, a connection gone quiet) holds the next one back no further, so a call still
        fails within its own deadline, not after the one before it too."""
        if not self._full():
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._max_hold_s):
                while self._full():
                    if self._landed is None:
                        self._landed = loop.create_future()
                    await asyncio.shield(self._landed)
        except TimeoutError:
            pass   # this batch goes beside the late one

    async def _send_batch(self, batch: list[tuple[Item, asyncio.Future[Any]]]) -> None:
        """Send one pipeline and settle each of its calls with its reply or the pipeline's error."""
        def settle(index: int, answer: Any) -> None:
            reply = batch[index][1]
            if not reply.done():
                reply.set_result(answer)
        items = [item for item, _ in batch]
        try:
            replies = await (self._send(items, settle) if self._settling else self._send(items))
        except BaseException as exc:   # the pipeline failed as a whole: so does each call in it
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, reply), answer in zip(batch, replies):
            if not reply.done():   # its caller may have given up (cancelled)
                reply.set_result(answer)
