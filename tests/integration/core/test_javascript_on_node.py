"""JavaScript where Conductor uses it, run by a real node, registered and started through both of
its APIs (gRPC: ExecuteWorkflow and StartWorkflow; Conductor's REST API).

The simulator (tests/sim.py) runs the decider outside any event loop; a node runs it inside its
asyncio loop, where mini-racer 0.14 refused every time-limited evaluation of a context made there
(fixed in b609275, orchestrator/core/javascript.py). Every test here asserts what the script
computed, read back from the node, so a script the node cannot run fails it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from helpers import BackgroundWorker, send_json, serving, unique
from node_paths import GrpcPath, NodePath, RestPath
from worker import task

PATHS = ["grpc-execute", "grpc-start", "rest"]


@pytest.fixture(scope="module")
def http(node: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=15.0) as client:
        yield client


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, node: Any, http: httpx.Client) -> NodePath:
    if request.param == "rest":
        return RestPath(http)
    return GrpcPath(node.client, execute=request.param == "grpc-execute")


def conductor(name: str, *tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A definition as Conductor exports it (schemaVersion 2: a loop condition is JavaScript)."""
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks), **extra}


def test_inline_javascript_and_graaljs_compute_their_result(path: NodePath) -> None:
    name = unique("js_inline")
    script = ("function summary() { var total = 0; for (var i = 0; i < $.values.length; i++) total += $.values[i];"
              " return {total: total, biggest: Math.max.apply(null, $.values), shout: $.who.toUpperCase(),"
              " engine: $.evaluatorType}; } summary();")
    path.register(conductor(
        name,
        {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": script, "values": "${workflow.input.values}",
            "who": "${workflow.input.who}"}},
        {"name": "graal", "taskReferenceName": "graal", "type": "INLINE", "inputParameters": {
            "evaluatorType": "graaljs", "expression": script, "values": [7, 1], "who": "graal"}},
        {"name": "ours", "taskReferenceName": "ours", "type": "INLINE", "evaluatorType": "javascript",
         "expression": "[$.total * 2, typeof $.missing, JSON.stringify({k: $.total})]",
         "inputParameters": {"total": "${js.output.result.total}"}},
        outputParameters={"js": "${js.output.result}", "graal": "${graal.output.result}",
                          "ours": "${ours.output.result}"}))
    ran = path.run(name, {"values": [3, 9, 4], "who": "ada"})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.output == {"js": {"total": 16, "biggest": 9, "shout": "ADA", "engine": "javascript"},
                          "graal": {"total": 8, "biggest": 7, "shout": "GRAAL", "engine": "graaljs"},
                          "ours": [32, "undefined", '{"k":16}']}
    assert ran.tasks["js"].kind == "INLINE" and ran.tasks["js"].status == "COMPLETED"


def test_a_script_known_only_at_run_time_is_run_by_the_decider(path: NodePath) -> None:
    """A `${...}` script is not compiled at registration: only the node's decider ever runs it."""
    name = unique("js_late")
    path.register(conductor(name, {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript", "expression": "${workflow.input.script}", "x": "${workflow.input.x}"}},
        outputParameters={"result": "${js.output.result}"}))
    ran = path.run(name, {"script": "$.x.map(function (v) { return v * v; })", "x": [2, 3]})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.output == {"result": [4, 9]}


def test_a_script_that_throws_fails_its_task_with_the_error(path: NodePath) -> None:
    name = unique("js_throws")
    path.register(conductor(name, {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript", "expression": "if ($.n > 1) { throw new Error('too many: ' + $.n); } $.n",
        "n": "${workflow.input.n}"}}))
    ran = path.run(name, {"n": 5})
    assert ran.status == "FAILED"
    assert ran.tasks["js"].status == "FAILED_WITH_TERMINAL_ERROR" and "too many: 5" in ran.tasks["js"].reason
    assert path.run(name, {"n": 1}).tasks["js"].output == {"result": 1}


WAIT_UNTIL = "Date.now() < $.until ? Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, $.wait_ms) : 'ran'"
"""Waits (using no CPU) until `$.until` (ms since the epoch), then answers 'ran': how a script looks to
V8's wall-clock limit when a busy machine gives it no CPU."""


def test_a_script_stopped_at_its_limit_with_little_cpu_used_is_run_once_more(path: NodePath) -> None:
    """V8's limit is wall-clock time: on a loaded machine (`make test` on 2 cores) a trivial script was
    stopped at 100 ms and its workflow failed, blamed on the script. Now a sandbox that finds the stopped
    evaluation had under half the limit in CPU time answers so, and the node runs it once more."""
    name = unique("js_starved")
    path.register(conductor(name, {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript", "expression": WAIT_UNTIL, "until": "${workflow.input.until}",
        "wait_ms": 1000}}, outputParameters={"result": "${js.output.result}"}))
    # The first evaluation starts well before `until` (the start decides it) and waits past the 100 ms
    # limit; the second starts after it and answers.
    ran = path.run(name, {"until": time.time() * 1000 + 60})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.output == {"result": "ran"}


def test_a_script_that_waits_past_its_limit_twice_fails_with_the_reason(path: NodePath) -> None:
    name = unique("js_waits")
    path.register(conductor(name, {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript", "expression": WAIT_UNTIL, "until": "${workflow.input.until}",
        "wait_ms": 10_000}}))
    ran = path.run(name, {"until": time.time() * 1000 + 60_000})
    assert ran.status == "FAILED"
    reason = ran.tasks["js"].reason
    assert ran.tasks["js"].status == "FAILED_WITH_TERMINAL_ERROR"
    assert "longer than the limit of 100 ms" in reason and "twice" in reason and "Atomics.wait" in reason, reason


def test_one_workflow_s_match_is_not_readable_by_the_next(path: NodePath) -> None:
    """V8's legacy RegExp statics outlived an evaluation: a workflow whose script matched a
    regular expression over a card number left it in RegExp.input for the next script on the node."""
    matcher, reader = unique("js_match"), unique("js_read")
    path.register(conductor(matcher, {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript", "expression": "/card=(\\d+)/.exec($.secret)[1].length",
        "secret": "${workflow.input.secret}"}}, outputParameters={"digits": "${js.output.result}"}))
    path.register(conductor(reader, {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
        "evaluatorType": "javascript",
        "expression": "[RegExp.input, RegExp.$1, RegExp.lastMatch, RegExp.rightContext].join('|')"}},
        outputParameters={"seen": "${js.output.result}"}))
    assert path.run(matcher, {"secret": "card=4111111111111111 cvv=123"}).output == {"digits": 16}
    ran = path.run(reader, {})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.output == {"seen": "|||"}


@pytest.mark.parametrize("n,expected", [(8, {"parity": "even", "half": 4}), (7, {"parity": "odd", "half": None})])
def test_lambda_runs_its_script_expression_as_a_function_body(path: NodePath, n: int,
                                                              expected: dict[str, Any]) -> None:
    name = unique("js_lambda")
    path.register(conductor(name, {"name": "l", "taskReferenceName": "l", "type": "LAMBDA", "inputParameters": {
        "n": "${workflow.input.n}",
        "scriptExpression": "if ($.n % 2 == 0) { return {parity: 'even', half: $.n / 2}; } "
                            "return {parity: 'odd', half: null};"}},
        outputParameters={"got": "${l.output.result}"}))
    ran = path.run(name, {"n": n})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.output == {"got": expected} and ran.tasks["l"].output == {"result": expected}


@pytest.mark.parametrize("amount,case,ran_ref", [(250, "big", "note_big"), (40, "small", "note_small"),
                                                 (0, "nothing", "note_default")])
def test_switch_with_javascript_runs_the_case_the_script_names(path: NodePath, amount: int, case: str,
                                                               ran_ref: str) -> None:
    name = unique("js_switch")

    def note(ref: str, text: str) -> dict[str, Any]:
        return {"name": ref, "taskReferenceName": ref, "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": f"'{text} ' + $.amount", "amount": "${workflow.input.amount}"}}

    path.register(conductor(
        name,
        {"name": "route", "taskReferenceName": "route", "type": "SWITCH", "evaluatorType": "javascript",
         "expression": "$.amount <= 0 ? 'nothing' : ($.amount > 100 ? 'big' : 'small')",
         "inputParameters": {"amount": "${workflow.input.amount}"},
         "decisionCases": {"big": [note("note_big", "big")], "small": [note("note_small", "small")]},
         "defaultCase": [note("note_default", "default")]}))
    ran = path.run(name, {"amount": amount})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.tasks["route"].output == {"evaluationResult": [case], "selectedCase": case}
    assert set(ran.tasks) == {"route", ran_ref}
    label = {"big": "big", "small": "small", "nothing": "default"}[case]
    assert ran.tasks[ran_ref].output == {"result": f"{label} {amount}"}


@pytest.mark.parametrize("n,case", [(3, "many"), (1, "one")])
def test_decision_with_a_case_expression(path: NodePath, n: int, case: str) -> None:
    name = unique("js_decision")
    path.register(conductor(
        name,
        {"name": "d", "taskReferenceName": "d", "type": "DECISION",
         "caseExpression": "if ($.n > 1) { 'many' } else { 'one' }", "inputParameters": {"n": "${workflow.input.n}"},
         "decisionCases": {
             "many": [{"name": "m", "taskReferenceName": "m", "type": "SET_VARIABLE",
                       "inputParameters": {"picked": "many"}}],
             "one": [{"name": "o", "taskReferenceName": "o", "type": "SET_VARIABLE",
                      "inputParameters": {"picked": "one"}}]}},
        outputParameters={"picked": "${workflow.variables.picked}"}))
    ran = path.run(name, {"n": n})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.tasks["d"].output == {"caseOutput": [case], "selectedCase": case}
    assert ran.output == {"picked": case} and ran.variables == {"picked": case}


@pytest.fixture
def measure_worker(node: Any, run_worker: Callable[..., BackgroundWorker]) -> str:
    """A worker of the SDK serving a task type of this test's own: it measures `i` (x 10)."""
    task_type = unique("js_measure")

    @task(task_type)
    def measure(data: dict[str, Any]) -> dict[str, Any]:
        return {"reading": data["i"] * 10, "i": data["i"]}

    node.client.register_task_def({"name": task_type, "retryCount": 0})
    run_worker([node.endpoint], [measure])
    return task_type


@pytest.mark.parametrize("evaluator", [None, "javascript"])
def test_do_while_with_a_conductor_javascript_loop_condition(path: NodePath, measure_worker: str,
                                                             evaluator: str | None) -> None:
    """Conductor's `$` in a loop condition: the loop's inputs, its own output under its reference
    and each inner task's latest output under the task's reference."""
    name = unique("js_loop")
    loop: dict[str, Any] = {
        "name": "loop", "taskReferenceName": "loop_ref", "type": "DO_WHILE",
        "inputParameters": {"max": "${workflow.input.max}"},
        "loopCondition": "if ($.loop_ref['iteration'] < $.max && $.step.reading < 100) { true; } else { false; }",
        "loopOver": [{"name": measure_worker, "taskReferenceName": "step", "type": "SIMPLE",
                      "inputParameters": {"i": "${loop_ref.output.iteration}"}}]}
    if evaluator:
        loop["evaluatorType"] = evaluator
    path.register(conductor(name, loop, outputParameters={"loop": "${loop_ref.output}"}))

    ran = path.run(name, {"max": 3})
    assert ran.status == "COMPLETED", ran.reason
    assert [k for k in ran.tasks if k.startswith("step")] == ["step__1", "step__2", "step__3"]
    assert [ran.tasks[f"step__{i}"].output["reading"] for i in (1, 2, 3)] == [10, 20, 30]
    loop_output = ran.output["loop"]
    assert loop_output["iteration"] == 3
    assert loop_output["2"] == {"step": {"reading": 20, "i": 2}}   # Conductor's shape: each iteration by number

    stopped = path.run(name, {"max": 50})   # the inner output stops it: reading 100 at iteration 10
    assert stopped.status == "COMPLETED", stopped.reason
    assert stopped.output["loop"]["iteration"] == 10 and "step__11" not in stopped.tasks


class JobServer(ThreadingHTTPServer):
    """A job that is RUNNING for its first two polls and DONE from the third, per job id."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), JobHandler)
        self.polls: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class JobHandler(BaseHTTPRequestHandler):
    server: JobServer

    def do_GET(self) -> None:
        job = self.path.rsplit("/", 1)[-1]
        with self.server.lock:
            polls = self.server.polls[job] = self.server.polls.get(job, 0) + 1
        send_json(self, {"job": job, "state": "DONE" if polls >= 3 else "RUNNING", "polls": polls,
                         "items": [polls, polls * 2]})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def job_server() -> Iterator[JobServer]:
    with serving(JobServer()) as server:
        yield server


def test_http_poll_until_its_javascript_termination_condition_holds(path: NodePath, job_server: JobServer) -> None:
    name, job = unique("js_http_poll"), unique("job")
    path.register(conductor(
        name,
        {"name": "poll", "taskReferenceName": "poll", "type": "HTTP_POLL", "inputParameters": {"http_request": {
            "uri": f"{job_server.url}/jobs/${{workflow.input.job}}", "method": "GET", "pollingInterval": 0,
            "pollingStrategy": "FIXED", "maxPollCount": 10,
            "terminationCondition": "(function () { var b = $.output.response.body; "
                                    "return b.state === 'DONE' && b.items.reduce(function (a, x) { return a + x; }, 0)"
                                    " === 3 * b.polls; })();"}}},
        {"name": "sum", "taskReferenceName": "sum", "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": "$.body.items[1] - $.body.items[0]",
            "body": "${poll.output.response.body}"}},
        outputParameters={"body": "${poll.output.response.body}", "diff": "${sum.output.result}"}))
    ran = path.run(name, {"job": job})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.output == {"body": {"job": job, "state": "DONE", "polls": 3, "items": [3, 6]}, "diff": 3}
    assert ran.tasks["poll"].output["pollCount"] == 3 and job_server.polls[job] == 3
