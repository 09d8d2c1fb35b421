"""Waiting for workflows without polling: the store's broadcasts of ended and changed workflows.

One subscription per node serves all the start-and-wait callers: it hears the ends of the
workflows this node said it waits for (`Store.expect_end`), and of no others, so a workflow
nobody waits for costs no message at all. Each watch stream follows its own workflow's changes,
which are published only while it is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from ..store import Store, Topic

SAFETY_RECHECK_S = 1.0   # a missed message (Redis restart) costs at most this much delay


class Notifier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._ended_here: set[str] = set()   # waited-for workflows this node's own write ended
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listener = asyncio.create_task(self.store.listen(Topic.DONE, self._on_done))

    async def stop(self) -> None:
        if self._listener:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    def _on_done(self, workflow_id: str) -> None:
        for event in self._waiters.get(workflow_id, ()):
            event.set()

    def ended_here(self, workflow_id: str) -> None:
        """This node's write just ended the workflow (`Decider`'s applied decision): its waiters
        return at once, without the `done` broadcast's hop and the status read (the store's answer
        to that write is what the read would find)."""
        if workflow_id in self._waiters:
            self._ended_here.add(workflow_id)
            self._on_done(workflow_id)

    @contextlib.contextmanager
    def waiting(self, workflow_id: str) -> Iterator[asyncio.Event]:
        """Hear the end of `workflow_id` from now on: the event is set by its `done` broadcast or by
        this node's own write that ends it (`ended_here`). Registered before the workflow is even
        created (ExecuteWorkflow), no end can come before it, so no status read is needed first."""
        event = asyncio.Event()
        self._waiters[workflow_id].add(event)
        try:
            yield event
        finally:
            self._waiters[workflow_id].discard(event)
            if not self._waiters[workflow_id]:
                del self._waiters[workflow_id]
                self._ended_here.discard(workflow_id)

    async def wait_done(self, workflow_id: str, timeout_s: float, is_done: Callable[[], Awaitable[bool]], *,
                        expected: bool = False) -> None:
        """Return when `is_done()` (an async check of stored state) is true or the timeout passes.
        `expected`: the store already knows this node waits for it (a start made with `expect_end`)."""
        with self.waiting(workflow_id) as event:
            if not expected:   # before the first check: an end after it is then heard
                await self.store.expect_end(workflow_id)
            await self.wait_heard(workflow_id, event, timeout_s, is_done, read_first=True)

    async def wait_heard(self, workflow_id: str, event: asyncio.Event, timeout_s: float,
                         is_done: Callable[[], Awaitable[bool]], *, read_first: bool) -> None:
        """Wait, with the `event` of `waiting(workflow_id)`, until the workflow ended or the timeout
        passes. `read_first`: whether its end may have come before the event was registered (then
        the stored state is read before waiting); else the first wake-up of this node's own end
        needs no read at all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not read_first and await _woken(event, timeout_s) and workflow_id in self._ended_here:
            return
        while True:
            # Cleared before the check, never after it: an end heard while the check reads the
            # store must still wake the wait below (cleared after, it cost a whole
            # SAFETY_RECHECK_S to about 1 call in 100).
            event.clear()
            if workflow_id in self._ended_here or await is_done():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await _woken(event, remaining)

    def changes(self, workflow_id: str) -> AsyncIterator[None]:
        """Yields at once, then after each change of the workflow (or each safety interval)."""
        return self.store.changes(workflow_id, SAFETY_RECHECK_S)


async def _woken(event: asyncio.Event, remaining_s: float) -> bool:
    """Wait for `event` up to the safety recheck (or `remaining_s`); whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), min(remaining_s, SAFETY_RECHECK_S))
    except TimeoutError:
        return False
    return True
