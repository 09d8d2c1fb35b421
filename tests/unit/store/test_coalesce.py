"""Script calls of one event-loop turn go to Redis in one pipeline, each with its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.store.redis.coalesce import Coalesced


class Pipelines:
    """What the coalescer sends: the argument lists of each pipeline; the answer to ["x"] is "X",
    to ["bad"] an error of that call only, and a pipeline holding ["down"] fails as a whole."""

    def __init__(self) -> None:
        self.sent: list[list[list[str]]] = []

    async def send(self, batch: list[list[str]]) -> list[Any]:
        self.sent.append(batch)
        await asyncio.sleep(0)
        if ["down"] in batch:
            raise ConnectionError("the connection broke")
        return [ValueError("refused") if args == ["bad"] else args[0].upper() for args in batch]


def test_the_calls_of_one_turn_share_a_pipeline_and_each_gets_its_own_answer() -> None:
    async def scenario() -> tuple[list[Any], Pipelines]:
        pipelines = Pipelines()
        coalesced = Coalesced(pipelines.send)
        answers = await asyncio.gather(*(coalesced.call([word]) for word in ("a", "bad", "c")),
                                       return_exceptions=True)
        answers.append(await coalesced.call(["later"]))   # a turn of its own
        return answers, pipelines

    answers, pipelines = asyncio.run(scenario())
    assert answers[0] == "A" and answers[2] == "C" and answers[3] == "LATER"
    assert isinstance(answers[1], ValueError)   # one refused call fails alone
    assert pipelines.sent == [[["a"], ["bad"], ["c"]], [["later"]]]


def test_a_failed_pipeline_fails_each_of_its_calls_and_the_next_turn_is_new() -> None:
    async def scenario() -> list[Any]:
        coalesced = Coalesced(Pipelines().send)
        failed = await asyncio.gather(coalesced.call(["a"]), coalesced.call(["down"]), return_exceptions=True)
        return [*failed, await coalesced.call(["b"])]

    first, second, after = asyncio.run(scenario())
    assert isinstance(first, ConnectionError) and isinstance(second, ConnectionError)
    assert after == "B"


def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    async def scenario() -> str:
        coalesced = Coalesced(Pipelines().send)
        gone = asyncio.ensure_future(coalesced.call(["a"]))
        kept = asyncio.ensure_future(coalesced.call(["b"]))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return str(await kept)

    assert asyncio.run(scenario()) == "B"


def test_several_calls_of_one_caller_join_the_turn_and_get_each_reply_as_a_value() -> None:
    async def scenario() -> tuple[list[Any], Any, Pipelines]:
        pipelines = Pipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send)
        many, one = await asyncio.gather(coalesced.replies([["a"], ["bad"]]), coalesced.call(["c"]))
        return many, one, pipelines

    many, one, pipelines = asyncio.run(scenario())
    assert many[0] == "A" and isinstance(many[1], ValueError) and one == "C"
    assert pipelines.sent == [[["a"], ["bad"], ["c"]]]


def test_several_calls_in_a_failed_pipeline_raise_its_error() -> None:
    async def scenario() -> None:
        coalesced: Coalesced[list[str]] = Coalesced(Pipelines().send)
        with pytest.raises(ConnectionError):
            await coalesced.replies([["a"], ["down"]])
        assert await coalesced.replies([]) == []

    asyncio.run(scenario())
