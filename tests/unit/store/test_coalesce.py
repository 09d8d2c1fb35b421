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
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send)
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
        coalesced: Coalesced[list[str]] = Coalesced(Pipelines().send)
        failed = await asyncio.gather(coalesced.call(["a"]), coalesced.call(["down"]), return_exceptions=True)
        return [*failed, await coalesced.call(["b"])]

    first, second, after = asyncio.run(scenario())
    assert isinstance(first, ConnectionError) and isinstance(second, ConnectionError)
    assert after == "B"


def test_a_caller_that_gives_up_leaves_the_others_their_answers() -> None:
    async def scenario() -> str:
        coalesced: Coalesced[list[str]] = Coalesced(Pipelines().send)
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


def _counting_tasks(loop: asyncio.AbstractEventLoop, made: list[str]) -> None:
    """Count the tasks made on `loop` from now on (by the name of their coroutine)."""
    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(getattr(coro, "__qualname__", "?"))
        return asyncio.Task(coro, loop=loop, **kwargs)
    loop.set_task_factory(factory)


def test_a_call_alone_in_its_turn_is_sent_by_its_caller_without_a_task() -> None:
    """One workflow at a time, every call is alone in its turn: it costs no task of its own (before:
    one task per call, and one more loop turn for its reply to reach its caller); so do the calls
    of one caller alone in its turn (a step and the read of its record back)."""
    async def scenario() -> tuple[list[Any], list[str], Pipelines]:
        made: list[str] = []
        _counting_tasks(asyncio.get_running_loop(), made)
        pipelines = Pipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send)
        answers = [await coalesced.call(["a"]), await coalesced.replies([["b"]]), await coalesced.call(["c"]),
                   await coalesced.replies([["d"], ["bad"]])]
        with pytest.raises(ValueError):
            await coalesced.call(["bad"])
        return answers, list(made), pipelines

    answers, made, pipelines = asyncio.run(scenario())
    assert answers[:3] == ["A", ["B"], "C"]
    assert answers[3][0] == "D" and isinstance(answers[3][1], ValueError)
    assert pipelines.sent == [[["a"]], [["b"]], [["c"]], [["d"], ["bad"]], [["bad"]]]
    assert made == []


def test_a_lone_call_still_waits_for_the_calls_of_its_turn() -> None:
    """A call that opens a turn's batch is not sent before the turn's other calls join it, even when
    they are made by tasks that run after it in the same turn; one task sends them all."""
    async def scenario() -> tuple[list[Any], list[str], Pipelines]:
        pipelines = Pipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send)
        first = asyncio.ensure_future(coalesced.call(["a"]))
        later = asyncio.ensure_future(coalesced.replies([["b"], ["c"]]))
        made: list[str] = []
        _counting_tasks(asyncio.get_running_loop(), made)
        return [await first, await later], list(made), pipelines

    answers, made, pipelines = asyncio.run(scenario())
    assert answers == ["A", ["B", "C"]]
    assert pipelines.sent == [[["a"], ["b"], ["c"]]]
    assert made == ["Coalesced._deliver"]


def test_a_lone_call_given_up_before_it_is_sent_sends_nothing() -> None:
    async def scenario() -> Pipelines:
        pipelines = Pipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send)
        gone = asyncio.ensure_future(coalesced.call(["a"]))
        await asyncio.sleep(0)   # it joined its turn and waits for the turn's other calls
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await coalesced.call(["b"]) == "B"
        return pipelines

    assert asyncio.run(scenario()).sent == [[["b"]]]


def test_a_settling_send_hands_replies_over_before_the_rest_of_its_pipeline_is_in() -> None:
    """A Redis Cluster's masters answer apart: the callers of the master that answered get their
    replies while a master failing over keeps the others waiting."""
    async def scenario() -> tuple[list[str], list[Any]]:
        slow = asyncio.Event()
        order: list[str] = []

        async def send(batch: list[list[str]], settle: Any) -> list[Any]:
            for i, args in enumerate(batch):
                if args != ["slow"]:
                    settle(i, args[0].upper())
            await slow.wait()
            return [args[0].upper() for args in batch]
        coalesced: Coalesced[list[str]] = Coalesced(send, settling=True)

        async def call(word: str) -> Any:
            answer = await coalesced.call([word])
            order.append(word)
            return answer
        calls = [asyncio.ensure_future(call(word)) for word in ("a", "slow", "b")]
        while len(order) < 2:
            await asyncio.sleep(0)
        slow.set()
        return order, list(await asyncio.gather(*calls))

    order, answers = asyncio.run(scenario())
    assert order == ["a", "b", "slow"] and answers == ["A", "SLOW", "B"]


class HeldPipelines:
    """Pipelines that stay on their way until the test lets them land, one `release` each."""

    def __init__(self) -> None:
        self.sent: list[list[list[str]]] = []
        self.gates: list[asyncio.Event] = []

    async def send(self, batch: list[list[str]], settle: Any = None) -> list[Any]:
        self.sent.append(batch)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return [args[0].upper() for args in batch]

    async def release(self, index: int) -> None:
        self.gates[index].set()
        for _ in range(5):
            await asyncio.sleep(0)


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_calls_made_while_a_pipeline_is_on_its_way_wait_and_go_together_in_the_next() -> None:
    """Group commit (issue 21): one pipeline on its way at a time; the calls of the turns that
    come meanwhile go in one pipeline as soon as it answers, each still with its own reply."""
    async def scenario() -> tuple[list[Any], HeldPipelines]:
        pipelines = HeldPipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send, max_in_flight=1)
        first = asyncio.ensure_future(coalesced.call(["a"]))
        await _turns()
        later = []
        for word in ("b", "c", "d"):   # three turns while "a" is on its way
            later.append(asyncio.ensure_future(coalesced.call([word])))
            await _turns()
        assert pipelines.sent == [[["a"]]]   # nothing more is sent while it flies
        await pipelines.release(0)
        await _turns()
        assert pipelines.sent == [[["a"]], [["b"], ["c"], ["d"]]]
        await pipelines.release(1)
        return [await first, *(await asyncio.gather(*later))], pipelines

    answers, pipelines = asyncio.run(scenario())
    assert answers == ["A", "B", "C", "D"]
    assert len(pipelines.sent) == 2


def test_without_a_bound_each_turn_sends_its_own_pipeline() -> None:
    async def scenario() -> HeldPipelines:
        pipelines = HeldPipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send)
        calls = []
        for word in ("a", "b"):
            calls.append(asyncio.ensure_future(coalesced.call([word])))
            await _turns()
        for index in range(len(pipelines.gates)):
            await pipelines.release(index)
        await asyncio.gather(*calls)
        return pipelines

    assert asyncio.run(scenario()).sent == [[["a"]], [["b"]]]


def test_a_pipeline_that_does_not_answer_holds_the_next_back_no_longer_than_the_hold() -> None:
    """A connection gone quiet must not add its own deadline to the calls made after it: past
    `max_hold_s` they go in a pipeline beside it (and fail, if they do, within their own)."""
    async def scenario() -> tuple[float, list[list[list[str]]]]:
        pipelines = HeldPipelines()
        coalesced: Coalesced[list[str]] = Coalesced(pipelines.send, max_in_flight=1, max_hold_s=0.05)
        stuck = asyncio.ensure_future(coalesced.call(["a"]))
        await _turns()
        loop = asyncio.get_running_loop()
        began = loop.time()
        later = asyncio.ensure_future(coalesced.call(["b"]))
        while len(pipelines.sent) < 2:
            await asyncio.sleep(0.005)
        held = loop.time() - began
        await pipelines.release(1)
        assert await later == "B" and not stuck.done()
        await pipelines.release(0)
        assert await stuck == "A"
        return held, pipelines.sent

    held, sent = asyncio.run(scenario())
    assert 0.04 <= held < 0.5
    assert sent == [[["a"]], [["b"]]]
