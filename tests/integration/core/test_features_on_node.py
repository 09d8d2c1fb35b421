"""Features the simulator alone exercised (tests/unit/core/test_language.py,
tests/unit/conductor/test_conductor_semantics.py),
run on a real node: one definition per feature, registered and started through gRPC and through
Conductor's REST API, its worker tasks served by one generic worker of the SDK (or, for a task no
worker serves, polled over REST). Each feature asserts what it does (outputs, attempts, times,
the workflows it starts), not only where the workflow ends.

Times are small (1 s timeouts, half-second back-offs): the leader's clocks wake at the earliest
timer they know of, so every wait here is measured against what the definition asks for, with a
lower bound (never early) and a loose upper bound (the machine may be busy)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from helpers import BackgroundWorker, unique
from node_paths import GrpcPath, NodePath, Ran, RestPath
from worker import TaskError, Worker, context, task

SLACK_MS = 2500   # how late a timer may fire on a busy 2-core machine before it counts as wrong

# The task types the generic worker serves, with the task definitions they are registered under.
TASK_DEFS: list[dict[str, Any]] = [
    {"name": "feat_echo", "retryCount": 0, "responseTimeoutSeconds": 10},
    {"name": "feat_backoff", "retryCount": 2, "retryLogic": "EXPONENTIAL_BACKOFF", "retryDelaySeconds": 0.5,
     "responseTimeoutSeconds": 10},
    {"name": "feat_slow", "retryCount": 0, "timeoutSeconds": 1, "responseTimeoutSeconds": 10,
     "timeoutPolicy": "TIME_OUT_WF"},
    {"name": "ACME_TRANSFER", "retryCount": 0},            # a type of our own, its definition named after it
    {"name": "feat_wire", "retryCount": 1, "retryDelaySeconds": 0},   # a Conductor task of type ACME_WIRE
]
SERVED = ["feat_echo", "feat_backoff", "feat_slow", "ACME_TRANSFER", "ACME_WIRE", "KAFKA_PUBLISH"]


@dataclass(frozen=True)
class Call:
    workflow_id: str
    task_type: str
    attempt: int
    input: dict[str, Any]


@dataclass
class Calls:
    """What the generic worker was asked to do."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Call] = field(default_factory=list)

    def add(self, call: Call) -> None:
        with self.lock:
            self.seen.append(call)

    def of(self, workflow_id: str) -> list[Call]:
        with self.lock:
            return [c for c in self.seen if c.workflow_id == workflow_id]


def generic(task_type: str, calls: Calls) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A handler of `task_type` whose input says what to do: `fail_attempts` (fail the attempts
    numbered below it), `sleep_s` (take that long); it answers with what it was given."""

    @task(task_type)
    def handle(data: dict[str, Any]) -> dict[str, Any]:
        ctx = context()
        calls.add(Call(ctx.workflow_id, task_type, ctx.attempt, data))
        if ctx.attempt < int(data.get("fail_attempts") or 0):
            raise TaskError(f"attempt {ctx.attempt} of {task_type} failed on purpose")
        time.sleep(float(data.get("sleep_s") or 0))
        return {"echo": data, "served_as": task_type, "attempt": ctx.attempt}

    return handle


@pytest.fixture(scope="module")
def calls(node: Any) -> Iterator[Calls]:
    for definition in TASK_DEFS:
        node.client.register_task_def(definition)
    recorded = Calls()
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[generic(t, recorded) for t in SERVED],
                                         concurrency=8))
    try:
        yield recorded
    finally:
        background.stop(grace_s=1.0)


@pytest.fixture(scope="module")
def http(node: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=15.0) as client:
        yield client


@dataclass(frozen=True)
class Ctx:
    """What a feature needs: the API it goes through, a REST client (to poll a task no worker
    serves), the worker's record, and fresh names."""

    path: NodePath
    http: httpx.Client
    calls: Calls

    def name(self, base: str) -> str:
        return unique(f"{base}_{self.path.name.replace('-', '_')}")

    def register(self, *definitions: dict[str, Any], task_defs: list[dict[str, Any]] | None = None) -> None:
        self.path.register_task_defs(task_defs or TASK_DEFS)
        for definition in definitions:
            self.path.register(definition)


def conductor(name: str, *tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks), **extra}


def echo(ref: str, task_type: str = "feat_echo", **fields: Any) -> dict[str, Any]:
    return {"name": task_type, "taskReferenceName": ref, "type": "SIMPLE", **fields}


FEATURES: dict[str, Callable[[Ctx], None]] = {}


def feature(check: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    FEATURES[check.__name__] = check
    return check


# ---------------------------------------------------------------- system tasks

@feature
def json_jq_transform(ctx: Ctx) -> None:
    name = ctx.name("jq")
    ctx.register(conductor(
        name,
        {"name": "jq", "taskReferenceName": "jq", "type": "JSON_JQ_TRANSFORM", "inputParameters": {
            "people": "${workflow.input.people}",
            "queryExpression": "[.people[] | select(.age >= 18) | .name | ascii_upcase]"}},
        echo("use", inputParameters={"names": "${jq.output.result}"})))
    ran = ctx.path.run(name, {"people": [{"name": "ada", "age": 36}, {"name": "kid", "age": 9},
                                         {"name": "bob", "age": 18}]})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.tasks["jq"].output == {"result": ["ADA", "BOB"], "resultList": [["ADA", "BOB"]]}
    assert [c.input for c in ctx.calls.of(ran.workflow_id)] == [{"names": ["ADA", "BOB"]}]


@feature
def exclusive_join(ctx: Ctx) -> None:
    name = ctx.name("xjoin")
    ctx.register(conductor(
        name,
        {"name": "pick", "taskReferenceName": "pick", "type": "SWITCH", "evaluatorType": "value-param",
         "expression": "c", "inputParameters": {"c": "${workflow.input.c}"},
         "decisionCases": {"x": [echo("x", inputParameters={"v": "from x"})],
                           "y": [echo("y", inputParameters={"v": "from y"})]},
         "defaultCase": [echo("z", inputParameters={"v": "from z"})]},
        {"name": "j", "taskReferenceName": "j", "type": "EXCLUSIVE_JOIN", "joinOn": ["x", "y"],
         "defaultExclusiveJoinTask": ["z"]},
        echo("after", inputParameters={"joined": "${j.output.echo.v}"})))
    for choice, branch in (("y", "y"), ("neither", "z")):
        ran = ctx.path.run(name, {"c": choice})
        assert ran.status == "COMPLETED", ran.reason
        assert set(ran.tasks) == {"pick", branch, "j", "after"}
        assert ran.tasks["j"].output == ran.tasks[branch].output and ran.tasks["j"].output["echo"] == {
            "v": f"from {branch}"}
        assert ran.tasks["after"].input == {"joined": f"from {branch}"}


# ---------------------------------------------------------------- timeouts, retries and delays

@feature
def workflow_timeout(ctx: Ctx) -> None:
    name = ctx.name("wf_timeout")
    ctx.register({"name": name, "timeoutSeconds": 1, "timeoutPolicy": "TIME_OUT_WF",
                  "tasks": [{"name": "hold", "taskReferenceName": "hold", "type": "WAIT"}]})
    ran = ctx.path.run(name, {})
    assert ran.status == "TIMED_OUT" and ran.reason == "workflow exceeded timeoutSeconds (1 s)"
    assert ran.tasks["hold"].status == "CANCELED"
    assert 1000 <= ran.ended_at_ms - ran.created_at_ms < 1000 + SLACK_MS


@feature
def task_total_timeout(ctx: Ctx) -> None:
    """timeoutSeconds 1 with a 10 s lease: the worker heartbeats, and still the attempt ends at 1 s."""
    name = ctx.name("task_timeout")
    ctx.register({"name": name, "tasks": [echo("slow", "feat_slow", inputParameters={"sleep_s": 3})]})
    ran = ctx.path.run(name, {})
    slow = ran.tasks["slow"]
    assert ran.status == "TIMED_OUT" and ran.reason == "task 'slow' attempt exceeded timeoutSeconds (1 s)"
    assert slow.status == "TIMED_OUT" and slow.started_at_ms > 0
    assert 1000 <= slow.ended_at_ms - slow.started_at_ms < 1000 + SLACK_MS
    assert [c.task_type for c in ctx.calls.of(ran.workflow_id)] == ["feat_slow"]


@feature
def poll_timeout(ctx: Ctx) -> None:
    """pollTimeoutSeconds 1: the first attempt, which nobody polls, times out and is retried; the
    retry is polled over REST and completed."""
    name, task_type = ctx.name("poll_timeout"), unique("feat_unserved")
    ctx.register({"name": name, "tasks": [echo("wait_for_me", task_type, inputParameters={"k": 1})]},
                 task_defs=[{"name": task_type, "retryCount": 1, "retryDelaySeconds": 0, "pollTimeoutSeconds": 1}])
    workflow_id = ctx.path.start(name, {})
    deadline = time.monotonic() + 10
    while len(ctx.path.get(workflow_id).of("wait_for_me")) < 2:
        assert time.monotonic() < deadline, "the first attempt never timed out"
        time.sleep(0.05)
    polled = ctx.http.get(f"/tasks/poll/batch/{task_type}", params={"workerid": "late", "timeout": 5000}).json()
    assert [(t["workflowInstanceId"], t["retryCount"]) for t in polled] == [(workflow_id, 1)]
    done = ctx.http.post("/tasks", json={"taskId": polled[0]["taskId"], "workflowInstanceId": workflow_id,
                                         "workerId": "late", "status": "COMPLETED", "outputData": {"late": True}})
    assert done.status_code == 200, done.text
    ran = ctx.path.wait(workflow_id, "COMPLETED")
    first, second = ran.of("wait_for_me")
    assert first.status == "TIMED_OUT" and first.started_at_ms == 0
    assert first.reason == "no worker took the task within pollTimeoutSeconds (1 s)"
    assert 1000 <= first.ended_at_ms - first.scheduled_at_ms < 1000 + SLACK_MS
    assert second.status == "COMPLETED" and second.output == {"late": True}


@feature
def retry_backoff(ctx: Ctx) -> None:
    """EXPONENTIAL_BACKOFF from 0.5 s: the retries start 0.5 s and 1 s after the failures."""
    name = ctx.name("backoff")
    ctx.register({"name": name, "tasks": [echo("flaky", "feat_backoff", inputParameters={"fail_attempts": 2})]})
    ran = ctx.path.run(name, {})
    assert ran.status == "COMPLETED", ran.reason
    attempts = ran.of("flaky")
    assert [(a.attempt, a.status) for a in attempts] == [(0, "FAILED"), (1, "FAILED"), (2, "COMPLETED")]
    assert "attempt 1 of feat_backoff failed on purpose" in attempts[1].reason
    for failed, retry, delay_ms in ((attempts[0], attempts[1], 500), (attempts[1], attempts[2], 1000)):
        assert delay_ms <= retry.started_at_ms - failed.ended_at_ms < delay_ms + SLACK_MS, (failed, retry)
    assert [c.attempt for c in ctx.calls.of(ran.workflow_id)] == [0, 1, 2]


@feature
def optional_task(ctx: Ctx) -> None:
    name = ctx.name("optional")
    ctx.register(conductor(name, echo("opt", optional=True, retryCount=0, inputParameters={"fail_attempts": 9}),
                           echo("next", inputParameters={"before": "${opt.status}"})))
    ran = ctx.path.run(name, {})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.tasks["opt"].status == "COMPLETED_WITH_ERRORS" and "failed on purpose" in ran.tasks["opt"].reason
    assert ran.tasks["next"].status == "COMPLETED"
    assert ran.tasks["next"].input == {"before": "COMPLETED_WITH_ERRORS"}


@feature
def start_delay(ctx: Ctx) -> None:
    name = ctx.name("start_delay")
    ctx.register({"name": name, "tasks": [echo("first"), echo("late", startDelay=1)]})
    ran = ctx.path.run(name, {})
    assert ran.status == "COMPLETED", ran.reason
    first, late = ran.tasks["first"], ran.tasks["late"]
    assert 1000 <= late.started_at_ms - first.ended_at_ms < 1000 + SLACK_MS


@feature
def wait_until(ctx: Ctx) -> None:
    name = ctx.name("wait_until")
    ctx.register({"name": name, "tasks": [{"name": "pause", "taskReferenceName": "pause", "type": "WAIT",
                                           "until": "${workflow.input.at}"}, echo("after")]})
    at = int(time.time() * 1000) + 1200
    ran = ctx.path.run(name, {"at": at})
    assert ran.status == "COMPLETED", ran.reason
    assert at <= ran.tasks["pause"].ended_at_ms < at + SLACK_MS
    assert ran.tasks["after"].started_at_ms >= at


@feature
def wait_signalled_failed(ctx: Ctx) -> None:
    name = ctx.name("wait_failed")
    ctx.register({"name": name, "tasks": [{"name": "hold", "taskReferenceName": "hold", "type": "WAIT"},
                                          echo("after")]})
    workflow_id = ctx.path.start(name, {})
    ctx.path.wait_for_task(workflow_id, "hold", "IN_PROGRESS")
    ctx.path.signal(workflow_id, "hold", {"why": "refused"}, failed=True)
    ran = ctx.path.wait(workflow_id, "FAILED")
    assert ran.tasks["hold"].status == "FAILED" and "task 'hold' FAILED" in ran.reason
    assert "after" not in ran.tasks and ctx.calls.of(workflow_id) == []


# ---------------------------------------------------------------- sagas, children and failure workflows

@feature
def compensation_failed(ctx: Ctx) -> None:
    """The charge fails; undoing the booking fails too: COMPENSATION_FAILED (shown to Conductor's
    clients as FAILED), and the failure workflow starts with that status."""
    name, notify = ctx.name("saga"), ctx.name("saga_notify")
    ctx.register(
        {"name": notify, "tasks": [echo("alert", inputParameters={"status": "${workflow.input.status}",
                                                                  "of": "${workflow.input.workflowId}"})]},
        {"name": name, "failureWorkflow": notify, "tasks": [
            echo("book", inputParameters={"id": "${workflow.input.booking}"},
                 compensation={"name": "feat_echo", "inputParameters": {"booking": "${book.output.echo.id}",
                                                                        "fail_attempts": 9}}),
            echo("charge", inputParameters={"fail_attempts": 9})]})
    ran = ctx.path.run(name, {"booking": "B-7"})
    assert ran.status == "COMPENSATION_FAILED" and "compensation of 'book'" in ran.reason, ran.reason
    shown = ctx.http.get(f"/workflow/{ran.workflow_id}").json()
    assert (shown["status"], shown["orchestratorStatus"]) == ("FAILED", "COMPENSATION_FAILED")
    assert ran.tasks["charge"].status == "FAILED"
    undo = ran.tasks["book__compensation"]
    assert undo.status == "FAILED" and undo.input == {"booking": "B-7", "fail_attempts": 9}
    alert = ctx.path.wait(ctx.path.wait_for_one(notify), "COMPLETED")
    assert alert.workflow_id.startswith(f"{ran.workflow_id}.failure.")
    assert alert.tasks["alert"].input == {"status": "COMPENSATION_FAILED", "of": ran.workflow_id}


@feature
def failed_child_fails_parent(ctx: Ctx) -> None:
    child, parent = ctx.name("child"), ctx.name("parent")
    ctx.register({"name": child, "tasks": [echo("inner", inputParameters={"fail_attempts": 9})]},
                 {"name": parent, "tasks": [{"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                                             "subWorkflowParam": {"name": child}}, echo("after")]})
    ran = ctx.path.run(parent, {})
    sub = ran.tasks["sub"]
    assert ran.status == "FAILED" and sub.status == "FAILED" and "after" not in ran.tasks
    assert "sub-workflow" in ran.reason, ran.reason
    kid = ctx.path.get(sub.sub_workflow_id)
    assert kid.status == "FAILED" and kid.name == child and kid.parent_workflow_id == ran.workflow_id
    assert kid.tasks["inner"].status == "FAILED" and "failed on purpose" in kid.tasks["inner"].reason


@feature
def terminate_and_wait_read_input_parameters(ctx: Ctx) -> None:
    """Conductor writes a WAIT's duration and a TERMINATE's status, reason and output in inputParameters."""
    name = ctx.name("terminate")
    ctx.register(conductor(
        name,
        {"name": "pause", "taskReferenceName": "pause", "type": "WAIT", "inputParameters": {"duration": "1s"}},
        {"name": "end", "taskReferenceName": "end", "type": "TERMINATE", "inputParameters": {
            "terminationStatus": "${workflow.input.status}", "terminationReason": "stopped for ${workflow.input.who}",
            "workflowOutput": {"who": "${workflow.input.who}", "paused": "${pause.status}"}}},
        echo("never")))
    ran = ctx.path.run(name, {"status": "TERMINATED", "who": "ann"})
    assert ran.status == "TERMINATED" and ran.reason == "stopped for ann"
    assert ran.output == {"who": "ann", "paused": "COMPLETED"} and "never" not in ran.tasks
    pause = ran.tasks["pause"]
    assert 1000 <= pause.ended_at_ms - pause.scheduled_at_ms < 1000 + SLACK_MS


@feature
def dynamic_fork_of_sub_workflows(ctx: Ctx) -> None:
    leaf, name = ctx.name("leaf"), ctx.name("fan_out")
    ctx.register(
        {"name": leaf, "version": 1, "tasks": [echo("fetch", inputParameters={"url": "${workflow.input.url}"})],
         "outputParameters": {"fetched": "${fetch.output.echo.url}"}},
        conductor(name,
                  {"name": "f", "taskReferenceName": "f", "type": "FORK_JOIN_DYNAMIC",
                   "dynamicForkTasksParam": "dynamicTasks", "dynamicForkTasksInputParamName": "dynamicTasksInput",
                   "inputParameters": {"forkTaskWorkflow": leaf, "forkTaskWorkflowVersion": "1",
                                       "forkTaskInputs": "${workflow.input.items}"}},
                  {"name": "j", "taskReferenceName": "j", "type": "JOIN"}))
    ran = ctx.path.run(name, {"items": [{"url": "a"}, {"url": "b"}, {"url": "c"}]})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.tasks["j"].output == {"_f_0": {"fetched": "a"}, "_f_1": {"fetched": "b"}, "_f_2": {"fetched": "c"}}
    for index, url in enumerate("abc"):
        branch = ran.tasks[f"_f_{index}"]
        assert branch.kind == "SUB_WORKFLOW" and branch.status == "COMPLETED"
        kid = ctx.path.get(branch.sub_workflow_id)
        assert kid.name == leaf and kid.input == {"url": url, "__index": index}
        assert kid.parent_workflow_id == ran.workflow_id and kid.output == {"fetched": url}


@feature
def sub_workflow_version_and_failure_workflow_from_expressions(ctx: Ctx) -> None:
    child, cleanup, name = ctx.name("versioned"), ctx.name("cleanup"), ctx.name("by_expression")
    ctx.register(
        {"name": child, "version": 1, "tasks": [echo("in")], "outputParameters": {"v": 1}},
        {"name": child, "version": 2, "tasks": [echo("in")], "outputParameters": {"v": 2}},
        {"name": cleanup, "tasks": [echo("undo", inputParameters={
            "failed": "${workflow.input.failedWorkflow.workflowId}", "status": "${workflow.input.failureStatus}",
            "tasks": "${workflow.input.failedTasks}"})]},
        conductor(name,
                  {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                   "subWorkflowParam": {"name": "${workflow.input.child}", "version": "${workflow.input.v}"}},
                  echo("after", inputParameters={"got": "${sub.output.v}", "fail_attempts": 9}),
                  failureWorkflow="${workflow.input.onFailure}"))
    ran = ctx.path.run(name, {"child": child, "v": 1, "onFailure": cleanup})
    assert ran.status == "FAILED" and ran.tasks["sub"].output == {"v": 1}   # version 1, not the latest (2)
    assert ctx.path.get(ran.tasks["sub"].sub_workflow_id).version == 1
    assert ran.tasks["after"].input == {"got": 1, "fail_attempts": 9}
    undo = ctx.path.wait(ctx.path.wait_for_one(cleanup), "COMPLETED")
    assert undo.tasks["undo"].input == {"failed": ran.workflow_id, "status": "FAILED", "tasks": ["after"]}


# ---------------------------------------------------------------- task types served by workers

@feature
def delegated_type_served_by_a_worker(ctx: Ctx) -> None:
    name = ctx.name("kafka")
    ctx.register(conductor(name, {"name": "publish", "taskReferenceName": "publish", "type": "KAFKA_PUBLISH",
                                  "inputParameters": {"kafka_request": {"topic": "orders",
                                                                        "value": "${workflow.input.order}"}}}))
    ran = ctx.path.run(name, {"order": {"id": 12}})
    assert ran.status == "COMPLETED", ran.reason
    publish = ran.tasks["publish"]
    assert publish.kind == "KAFKA_PUBLISH" and publish.output["served_as"] == "KAFKA_PUBLISH"
    assert [(c.task_type, c.input) for c in ctx.calls.of(ran.workflow_id)] == [
        ("KAFKA_PUBLISH", {"kafka_request": {"topic": "orders", "value": {"id": 12}}})]


@feature
def custom_types_served_by_workers(ctx: Ctx) -> None:
    """ACME_TRANSFER has a task definition of its name; ACME_WIRE, in a Conductor definition,
    runs under its task's definition (feat_wire: one retry), as Conductor runs user-defined tasks."""
    name = ctx.name("custom")
    ctx.register(conductor(
        name,
        {"name": "move", "taskReferenceName": "move", "type": "ACME_TRANSFER", "inputParameters": {"amount": 5}},
        {"name": "feat_wire", "taskReferenceName": "wire", "type": "ACME_WIRE",
         "inputParameters": {"to": "${move.output.echo.amount}", "fail_attempts": 1}}))
    ran = ctx.path.run(name, {})
    assert ran.status == "COMPLETED", ran.reason
    assert ran.tasks["move"].output["served_as"] == "ACME_TRANSFER"
    assert [(a.status, a.output.get("served_as")) for a in ran.of("wire")] == [("FAILED", None),
                                                                             ("COMPLETED", "ACME_WIRE")]
    assert [(c.task_type, c.attempt) for c in ctx.calls.of(ran.workflow_id)] == [
        ("ACME_TRANSFER", 0), ("ACME_WIRE", 0), ("ACME_WIRE", 1)]


@pytest.mark.parametrize("api", ["grpc", "rest"])
@pytest.mark.parametrize("check", list(FEATURES.values()), ids=list(FEATURES))
def test_feature_on_a_node(check: Callable[[Ctx], None], api: str, node: Any, http: httpx.Client,
                           calls: Calls) -> None:
    path: NodePath = RestPath(http) if api == "rest" else GrpcPath(node.client, execute=True)
    check(Ctx(path, http, calls))


def test_both_apis_read_a_workflow_back_alike(node: Any, http: httpx.Client, calls: Calls) -> None:
    """The two APIs show one workflow alike (what lets one assertion serve both above)."""
    name = unique("same")
    node.client.register_workflow_def({"name": name, "tasks": [echo("a", inputParameters={"x": 1})]})
    grpc, rest = GrpcPath(node.client, execute=True), RestPath(http)
    ran: Ran = grpc.run(name, {"x": 1})
    assert ran == rest.get(ran.workflow_id)
