"""A workflow's end heard while the waiter is still reading its status must end the wait.

The bench's ExecuteWorkflow timings found about 1 call in 100 taking a second more than the
server's figure: the waiter cleared its event after a check answered "not done", so a `done`
message that arrived during that check was lost, and the wait lasted until the safety recheck."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from orchestrator.cluster import notify
from orchestrator.cluster.notify import Notifier
from orchestrator.store import Store


def test_an_end_heard_during_the_status_read_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "SAFETY_RECHECK_S", 60.0)   # a lost message would now cost a minute
    # `expected=True`: the store already knows this node waits, so wait_done never calls it
    notifier = Notifier(cast(Store, None))
    reads: list[str] = []

    async def is_done() -> bool:
        if not reads:   # the first read: the workflow ends while it is in flight
            reads.append("running")
            await asyncio.sleep(0)
            notifier._on_done("wf-1")
            await asyncio.sleep(0)
            return False
        reads.append("ended")
        return True

    async def scenario() -> None:
        await asyncio.wait_for(notifier.wait_done("wf-1", 120.0, is_done, expected=True), 5.0)

    asyncio.run(scenario())
    assert reads == ["running", "ended"]
    assert not notifier._waiters


def test_a_wait_registered_before_the_start_returns_on_its_own_nodes_end_without_a_read() -> None:
    notifier = Notifier(cast(Store, None))   # the store is not called on this path
    reads: list[str] = []

    async def is_done() -> bool:
        reads.append("read")
        return True

    async def scenario() -> None:
        with notifier.waiting("wf-2") as heard:
            asyncio.get_running_loop().call_soon(notifier.ended_here, "wf-2")
            await asyncio.wait_for(notifier.wait_heard("wf-2", heard, 30.0, is_done, read_first=False), 5.0)

    asyncio.run(scenario())
    assert reads == []
    assert not notifier._waiters and not notifier._ended_here


def test_an_end_broadcast_from_another_node_is_read_once() -> None:
    notifier = Notifier(cast(Store, None))
    reads: list[str] = []

    async def is_done() -> bool:
        reads.append("read")
        return True

    async def scenario() -> None:
        with notifier.waiting("wf-3") as heard:
            asyncio.get_running_loop().call_soon(notifier._on_done, "wf-3")   # the `done` broadcast
            await asyncio.wait_for(notifier.wait_heard("wf-3", heard, 30.0, is_done, read_first=False), 5.0)

    asyncio.run(scenario())
    assert reads == ["read"]
