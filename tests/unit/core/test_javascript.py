"""JavaScript evaluated from where the node evaluates it: inside a running asyncio loop.

mini-racer 0.14 binds a context to the loop running where it is made, and then refuses a time
limit there (AssertionError); the simulator runs outside any loop and never saw it. Scripts now
run in sandbox processes (orchestrator/core/sandbox.py, tests/unit/core/test_sandbox.py), where no loop
runs; these tests keep the node's view: called from inside a loop, and from outside one."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from orchestrator.core import javascript, sandbox


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


def test_a_sandbox_first_started_inside_a_loop_also_serves_code_outside_any_loop() -> None:
    sandbox.shutdown()   # the next evaluation starts the sandbox processes, from inside the loop
    assert asyncio.run(_evaluate_in_loop("$.n * 3", {"n": 4})) == 12
    assert javascript.evaluate("$.n * 3", {"n": 5}) == 15


async def _evaluate_in_loop(source: str, bindings: dict[str, object]) -> object:
    return javascript.evaluate(source, bindings)


SECRET = {"secret": "card=4111111111111111 cvv=123"}

# What one evaluation could leave for the next in a shared context, and how the next would read it.
CARRIERS = {
    "RegExp statics": ("/card=(\\d+) cvv=(\\d+)/.exec($.secret); 1",
                       "[RegExp.input, RegExp.$1, RegExp.$2, RegExp.lastMatch, RegExp.lastParen, RegExp.leftContext,"
                       " RegExp.rightContext, RegExp['$_'], RegExp['$&'], RegExp['$+'], RegExp['$`'], RegExp[\"$'\"]]"
                       ".filter(s => s.includes('4111') || s.includes('123')).length"),
    "a global by assignment": ("leaked = $.secret; 1", "typeof leaked === 'undefined' ? 0 : 1"),
    "a global property": ("globalThis.leaked2 = $.secret; 1", "'leaked2' in globalThis ? 1 : 0"),
    "Object.prototype": ("try { Object.prototype.leaked3 = $.secret } catch (e) {} 1", "({}).leaked3 ? 1 : 0"),
    "Array.prototype": ("try { Array.prototype.push = () => $.secret } catch (e) {} 1",
                        "[].push(1) === 1 ? 0 : 1"),
    "Error.stackTraceLimit": ("try { Error.stackTraceLimit = 4111 } catch (e) {} 1",
                              "Error.stackTraceLimit === 4111 ? 1 : 0"),
    "a String.prototype method": ("try { String.prototype.trim = function () { return $.secret } } catch (e) {} 1",
                                  "' a '.trim() === 'a' ? 0 : 1"),
    "JSON": ("try { JSON.stringify = () => $.secret } catch (e) {} 1", "JSON.stringify(1) === '1' ? 0 : 1"),
}


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
def test_nothing_of_one_evaluation_survives_into_the_next(carrier: str) -> None:
    """The leak the security review found: evaluation 1 matched a regular expression over a
    secret, evaluation 2 with no input read it back through RegExp.input. Every carrier known
    is tried, in the loop, as the node runs scripts."""
    write, read = CARRIERS[carrier]

    async def two_evaluations() -> object:
        javascript.evaluate(write, SECRET)
        return javascript.evaluate(read, {})

    sandbox.configure(processes=1)   # both in the same process, hence the same V8 context
    try:
        assert asyncio.run(two_evaluations()) == 0
        assert len(sandbox.processes()) == 1
    finally:
        sandbox.configure(processes=sandbox.DEFAULT_PROCESSES)


def test_the_node_s_process_never_runs_a_script() -> None:
    """Every evaluation is answered by a sandbox process: this process makes no V8 context."""
    javascript.evaluate("1", {})
    javascript.check_syntax("1 +")
    assert javascript._ENGINE.context is None
    assert sandbox.processes()


def test_a_context_used_up_in_a_process_of_its_own_is_replaced_without_a_crash() -> None:
    """Outside a sandbox (the bench's in-process figure), the context that served REUSE_LIMIT
    evaluations is replaced in place. The old one was closed seconds later, after the new one was
    made, and mini-racer dies (SIGSEGV) making a context while another lives: the bench crashed."""
    script = ("from orchestrator.core import javascript\n"
              "for n in range(javascript.REUSE_LIMIT + 5):\n"
              "    assert javascript._evaluate_here('$.n * 2', '{\"n\": %d}' % n, 1000) == str(2 * n)\n"
              "print('replaced')")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip() == "replaced", (ran.returncode, ran.stderr[-2000:])


def test_the_bench_s_measurement_of_fresh_contexts_runs_in_a_process_of_its_own() -> None:
    """`_measure` (the bench's sandbox scenario) makes fresh contexts in its process: it crashed
    (SIGSEGV) while its shared context still lived."""
    script = "from orchestrator.core import javascript\nprint(sorted(javascript._measure(rounds=8)))"
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, (ran.returncode, ran.stderr[-2000:])
    assert "fresh_locked_context_ms" in ran.stdout
