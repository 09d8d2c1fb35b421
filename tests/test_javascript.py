"""JavaScript evaluated from where the node evaluates it: inside a running asyncio loop.

mini-racer 0.14 binds a context to the loop running where it is made, and then refuses a time
limit there (AssertionError); the simulator runs outside any loop and never saw it."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.core import javascript


def test_scripts_run_inside_a_running_event_loop_with_their_time_limit() -> None:
    async def inside_the_loop() -> tuple[object, str, object]:
        first = javascript.evaluate("$.a + 1", {"a": 1})
        with pytest.raises(javascript.JavaScriptError) as stopped:
            javascript.evaluate("while (true) {}", {}, timeout_ms=50)
        after = javascript.evaluate("[$.a, typeof globalThis.x]", {"a": 2})
        return first, str(stopped.value), after

    first, stopped, after = asyncio.run(inside_the_loop())
    assert first == 2
    assert "longer than the limit of 50 ms" in stopped
    assert after == [2, "undefined"]
    assert javascript.check_syntax("return (") is not None


def test_a_context_first_made_inside_a_loop_also_serves_code_outside_any_loop() -> None:
    javascript._ENGINE.forget()   # the next evaluation makes a new context, from inside the loop
    assert asyncio.run(_evaluate_in_loop("$.n * 3", {"n": 4})) == 12
    assert javascript.evaluate("$.n * 3", {"n": 5}) == 15


async def _evaluate_in_loop(source: str, bindings: dict[str, object]) -> object:
    return javascript.evaluate(source, bindings)
