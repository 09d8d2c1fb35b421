"""User code (JavaScript and jq) runs in sandbox processes, never in the node's (issue 22, item 2).

Before: jq ran in the node's process holding the GIL with no time limit, so a registered
definition, or a `${...}` query a starter chose, froze the node for hours (its leader lost its
lease; the next leader decided the same workflow and froze too). Now each evaluation is a
request to a pool of sandbox processes (orchestrator/core/sandbox.py) with a wall-clock limit,
CPU and memory rlimits and a bounded answer; an overrun kills the process, a crash ends it, and
either way only that evaluation fails, with the reason, and the pool starts a replacement.

Here the engines run directly, as the simulator and the decider call them; the hostile programs
on a real node while ordinary workflows go on: tests/integration/core/test_sandbox_on_node.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostile_scripts import HOSTILE_JQ, HUNDRED
from orchestrator.core import javascript, jqtransform, sandbox


def _gone(pid: int) -> bool:
    """The process has ended and been reaped (or ended, if another parent must reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _own_children() -> set[int]:
    """This process's child processes that are still there (zombies included)."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                children.add(int(entry))
    return children


@pytest.fixture(autouse=True)
def warm_pool() -> Iterator[None]:
    """Each test starts from a pool whose processes are ready (a cold start is not what is timed)."""
    sandbox.configure(processes=sandbox.DEFAULT_PROCESSES)
    _warm()
    yield
    sandbox.configure(processes=sandbox.DEFAULT_PROCESSES)


def _warm() -> None:
    threads = [threading.Thread(target=javascript.evaluate, args=("1", {})) for _ in range(sandbox.DEFAULT_PROCESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ---------------------------------------------------------------- the engines, as the decider calls them

@pytest.mark.parametrize("case", sorted(HOSTILE_JQ))
def test_each_hostile_jq_program_fails_alone_quickly_with_its_reason(case: str) -> None:
    query, reason = HOSTILE_JQ[case]
    started = time.monotonic()
    with pytest.raises(jqtransform.JqError, match=reason):
        jqtransform.transform({"a": HUNDRED, "queryExpression": query})
    took = time.monotonic() - started
    # the limit + sandbox.GRACE_MS, and a replacement's start-up on a busy 2-core machine at most
    assert took < 1.3 + 3.0, took
    assert jqtransform.transform({"a": [1, 2], "queryExpression": ".a | add"}) == {"result": 3, "resultList": [3]}


def test_javascript_that_runs_too_long_is_stopped_at_the_limit() -> None:
    """V8 stops a script at its limit (in C++ built-ins too: a 16M-element join, a catastrophic
    regular expression); its process answers, is replaced, and the next script is served. The
    join builds a 64 MB string: on a fast machine it reaches the heap limit before the time limit."""
    for script, limit in (("while (true) {}", "ran longer than the limit of 100 ms"),
                          ("new Array(1 << 24).fill(1.5).join(',').length",
                           "ran longer than the limit of 100 ms|used more memory than the limit of 64 MiB"),
                          ("/(x+x+)+y/.test('x'.repeat(30))", "ran longer than the limit of 100 ms")):
        started = time.monotonic()
        with pytest.raises(javascript.JavaScriptError, match=limit):
            javascript.evaluate(script, {})
        assert time.monotonic() - started < 0.1 + sandbox.GRACE_MS / 1000 + 3.0
    assert javascript.evaluate("$.n * 2", {"n": 21}) == 42


def test_a_process_that_does_not_answer_by_the_deadline_is_killed_and_reaped() -> None:
    """What V8 cannot stop (and every jq overrun): the node does not wait beyond the limit +
    sandbox.GRACE_MS. A stopped process stands in for one stuck in a built-in."""
    sandbox.configure(processes=1)
    sandbox.shutdown()
    assert javascript.evaluate("1", {}) == 1
    [pid] = sandbox.processes()
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(javascript.JavaScriptError, match=r"ran longer than the limit of 100 ms .* and was stopped"):
        javascript.evaluate("2", {})
    assert 0.1 + sandbox.GRACE_MS / 1000 <= time.monotonic() - started < 0.1 + sandbox.GRACE_MS / 1000 + 0.5
    assert _gone(pid) and pid not in _own_children()   # killed and reaped: no zombie left behind
    assert javascript.evaluate("$.n * 2", {"n": 21}) == 42
    assert sandbox.processes() != [pid]


def test_a_process_that_dies_during_an_evaluation_fails_only_that_evaluation() -> None:
    """What the kernel's OOM killer, a V8 abort or a segfault would do: that evaluation fails with
    how the process ended, the pool starts another, and the next evaluation is served."""
    sandbox.configure(processes=1)
    sandbox.shutdown()
    assert javascript.evaluate("1", {}) == 1
    [pid] = sandbox.processes()
    failed: list[BaseException] = []

    def long_jq() -> None:
        try:
            jqtransform.transform({"a": HUNDRED, "queryExpression": HOSTILE_JQ["four nested loops (1e8 steps: "
                                                                               "minutes)"][0]})
        except jqtransform.JqError as exc:
            failed.append(exc)

    thread = threading.Thread(target=long_jq)
    thread.start()
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    assert len(failed) == 1 and "ended the process that ran it (signal SIGKILL)" in str(failed[0]), failed
    assert _gone(pid)
    assert jqtransform.transform({"x": 1, "queryExpression": ".x"})["result"] == 1
    assert sandbox.processes() != [pid]


def test_a_process_killed_while_idle_is_replaced_without_failing_anything() -> None:
    for pid in sandbox.processes():
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert javascript.evaluate("'still' + ' here'", {}) == "still here"
    assert jqtransform.transform({"x": 2, "queryExpression": ".x * 2"})["result"] == 4


def test_a_process_whose_javascript_context_is_used_up_is_replaced_and_fails_nothing() -> None:
    # After javascript.REUSE_LIMIT evaluations the context is replaced. A sandbox process made the
    # new one while the old one lived, which mini-racer does not survive: the process died
    # (SIGSEGV) in the middle of the next evaluation, which failed, blamed on its script.
    sandbox.configure(processes=1)
    first = sandbox.processes()
    for n in range(javascript.REUSE_LIMIT + 5):
        assert javascript.evaluate("$.n + 1", {"n": n}) == n + 1
    assert sandbox.processes() and sandbox.processes() != first


def test_a_hostile_evaluation_does_not_hold_up_another_thread_s() -> None:
    """HTTP_POLL's condition is evaluated off the event loop, the decider's scripts on it: one
    evaluation's overrun costs only its own caller."""
    done: dict[str, float] = {}

    def hostile() -> None:
        with pytest.raises(jqtransform.JqError):
            jqtransform.transform({"a": HUNDRED, "queryExpression": HOSTILE_JQ["four nested loops (1e8 steps: "
                                                                               "minutes)"][0]})
        done["hostile"] = time.monotonic()

    started = time.monotonic()
    thread = threading.Thread(target=hostile)
    thread.start()
    time.sleep(0.1)
    assert javascript.evaluate("[1, 2, 3].map(x => x * 2)", {}) == [2, 4, 6]
    done["ordinary"] = time.monotonic()
    thread.join(10)
    assert done["ordinary"] - started < 1.0 < done["hostile"] - started, done


def test_a_sandbox_process_has_limits_and_nothing_of_the_node_s_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "s3cret-value")
    sandbox.shutdown()
    _warm()   # every process has started (its limits are set before it says it is ready)
    for pid in sandbox.processes():
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"s3cret-value" not in environment and b"SANDBOX_TEST_SECRET" not in environment
        limits = {line[:26].strip(): line[26:].split() for line in Path(f"/proc/{pid}/limits").read_text().splitlines()}
        assert limits["Max data size"][0] != "unlimited"
        assert int(limits["Max data size"][0]) < 4 * 1024 ** 3   # the engines' footprint + MEMORY_BYTES
        assert limits["Max cpu time"][0] != "unlimited"
        assert limits["Max core file size"][0] == "0"
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
    # The registration check refuses $ENV; even past it, the sandbox has nothing of the node's to show.
    shown = sandbox.run("jq", {"query": "$ENV | keys", "input": "{}"}, 1000)
    assert shown["result"] and "SANDBOX_TEST_SECRET" not in shown["result"]


def test_every_sandbox_process_ends_with_shutdown_and_none_outlives_its_node() -> None:
    """No process is left behind: shutdown ends (and reaps) them all; a node that dies without
    shutting down (SIGKILL, os._exit) closes their pipe, and they end by themselves."""
    pids = sandbox.processes()
    assert pids
    sandbox.shutdown()
    assert all(_gone(pid) for pid in pids)
    assert not set(pids) & _own_children()

    script = ("import os, signal\n"
              "from orchestrator.core import javascript, sandbox\n"
              "assert javascript.evaluate('1 + 1', {}) == 2\n"
              "print(' '.join(map(str, sandbox.processes())), flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    node = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[3])
    orphans = [int(pid) for pid in node.stdout.split()]
    assert orphans, node.stderr
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in orphans)


def test_results_and_errors_come_back_as_in_process() -> None:
    assert javascript.evaluate("({a: $.x, b: [undefined, NaN, 'é', new Date(0)]})", {"x": None}) == \
        {"a": None, "b": [None, None, "é", "1970-01-01T00:00:00.000Z"]}
    assert javascript.evaluate("undefined", {}) is None
    with pytest.raises(javascript.JavaScriptError, match="TypeError"):
        javascript.evaluate("null.x", {})
    assert javascript.check_syntax("return (") is not None and javascript.check_syntax("return 1") is None
    assert jqtransform.transform({"s": "\u00e9\U0001f600", "queryExpression": ".s, (.s | length)"}) == \
        {"result": "\u00e9\U0001f600", "resultList": ["\u00e9\U0001f600", 2]}
    problem = jqtransform.check_query("{ a: ")
    assert problem is not None and problem.startswith("'queryExpression' does not compile")
    assert jqtransform.check_query(".a") is None
