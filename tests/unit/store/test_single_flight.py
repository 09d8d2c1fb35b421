"""SingleFlight: callers that need the same read at once share one; a caller's cancel stays its own."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.store.redis.single_flight import SingleFlight


def test_concurrent_callers_of_one_key_share_one_read_and_later_ones_read_again() -> None:
    async def scenario() -> None:
        flights: SingleFlight[int] = SingleFlight()
        reads = 0

        async def read() -> int:
            nonlocal reads
            reads += 1
            mine = reads
            await asyncio.sleep(0.01)
            return mine

        answers = await asyncio.gather(*(flights.run("a", read) for _ in range(5)), flights.run("b", read))
        assert answers == [1, 1, 1, 1, 1, 2] and reads == 2 and len(flights) == 0
        assert await flights.run("a", read) == 3

    asyncio.run(scenario())


def test_a_failed_read_fails_every_caller_that_shared_it_and_the_next_caller_reads_again() -> None:
    async def scenario() -> None:
        flights: SingleFlight[int] = SingleFlight()

        async def failing() -> int:
            await asyncio.sleep(0)
            raise ConnectionError("down")

        answers = await asyncio.gather(flights.run("a", failing), flights.run("a", failing), return_exceptions=True)
        assert all(isinstance(answer, ConnectionError) for answer in answers)

        async def working() -> int:
            return 7

        assert await flights.run("a", working) == 7

    asyncio.run(scenario())


def test_a_cancelled_caller_leaves_the_read_to_the_others() -> None:
    async def scenario() -> None:
        flights: SingleFlight[str] = SingleFlight()
        gate = asyncio.Event()

        async def read() -> str:
            await gate.wait()
            return "answer"

        first = asyncio.ensure_future(flights.run("k", read))
        second = asyncio.ensure_future(flights.run("k", read))
        await asyncio.sleep(0)
        first.cancel()
        gate.set()
        assert await second == "answer"
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(scenario())
