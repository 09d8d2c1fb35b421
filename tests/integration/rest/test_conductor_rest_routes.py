"""The Conductor REST routes no other test called, each on a real node: retry and rerun of a
workflow, start by name in the path, execute's answer once the workflow ends (and when the wait
ends first), the single-task poll, and the listing and create-or-update of workflow definitions.
Work is done the way Conductor's SDK workers do it: polled and updated over REST."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import unique


@pytest.fixture(scope="module")
def http(node: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=15.0) as client:
        yield client


def ok(answer: httpx.Response, status: int = 200) -> httpx.Response:
    assert answer.status_code == status, (answer.status_code, answer.text)
    return answer


def two_step_workflow(http: httpx.Client, prefix: str) -> tuple[str, str]:
    """A workflow of two tasks of one new type (no retries): `first` gets the input's n,
    `second` the first's output."""
    name, task_type = unique(prefix), unique(f"{prefix}_t")
    ok(http.post("/metadata/taskdefs", json=[{"name": task_type, "retryCount": 0}]))
    ok(http.post("/metadata/workflow", json={
        "name": name, "version": 1, "schemaVersion": 2,
        "tasks": [{"name": task_type, "taskReferenceName": "first", "type": "SIMPLE",
                   "inputParameters": {"n": "${workflow.input.n}"}},
                  {"name": task_type, "taskReferenceName": "second", "type": "SIMPLE",
                   "inputParameters": {"from_first": "${first.output.v}"}}],
        "outputParameters": {"first": "${first.output.v}", "second": "${second.output.v}"}}))
    return name, task_type


def poll_one(http: httpx.Client, task_type: str, worker: str = "w1") -> dict[str, Any]:
    """GET /tasks/poll/{type} until it hands a task (it does not wait: a started workflow's task is
    queued a moment after the start answers)."""
    deadline = time.monotonic() + 10
    while True:
        answer = http.get(f"/tasks/poll/{task_type}", params={"workerid": worker})
        if answer.status_code == 200:
            polled: dict[str, Any] = answer.json()
            return polled
        assert answer.status_code == 204, answer.text
        assert time.monotonic() < deadline, f"no {task_type} task was handed out"
        time.sleep(0.05)


def report(http: httpx.Client, task: dict[str, Any], status: str = "COMPLETED", **fields: Any) -> None:
    ok(http.post("/tasks", json={"taskId": task["taskId"], "workflowInstanceId": task["workflowInstanceId"],
                                 "workerId": "w1", "status": status, **fields}))


def workflow(http: httpx.Client, workflow_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = ok(http.get(f"/workflow/{workflow_id}")).json()
    return shown


def wait_status(http: httpx.Client, workflow_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        shown = workflow(http, workflow_id)
        if shown["orchestratorStatus"] == status:
            return shown
        assert time.monotonic() < deadline, f"{workflow_id} is {shown['orchestratorStatus']}, not {status}"
        time.sleep(0.05)


def attempts(shown: dict[str, Any], ref: str) -> list[tuple[int, str]]:
    return [(t["retryCount"], t["status"]) for t in shown["tasks"] if t["referenceTaskName"] == ref]


def test_the_single_task_poll_hands_one_task_or_answers_204(http: httpx.Client) -> None:
    name, task_type = two_step_workflow(http, "poll_one")
    assert ok(http.get(f"/tasks/poll/{task_type}", params={"workerid": "w1"}), 204).content == b""
    workflow_id = ok(http.post("/workflow", json={"name": name, "input": {"n": 4}})).text
    task = poll_one(http, task_type)
    assert (task["workflowInstanceId"], task["referenceTaskName"], task["status"]) == (workflow_id, "first",
                                                                                       "IN_PROGRESS")
    assert task["inputData"] == {"n": 4} and task["workerId"] == "w1" and task["taskDefName"] == task_type
    assert http.get(f"/tasks/poll/{task_type}", params={"workerid": "w2"}).status_code == 204   # taken once
    shown = workflow(http, workflow_id)
    assert [(t["referenceTaskName"], t["status"], t["workerId"]) for t in shown["tasks"]] == [
        ("first", "IN_PROGRESS", "w1")]
    report(http, task, outputData={"v": 40})
    second = poll_one(http, task_type)
    assert second["referenceTaskName"] == "second" and second["inputData"] == {"from_first": 40}
    report(http, second, outputData={"v": 41})
    assert wait_status(http, workflow_id, "COMPLETED")["output"] == {"first": 40, "second": 41}


def test_retry_runs_a_failed_workflow_on_from_its_failed_task(http: httpx.Client) -> None:
    name, task_type = two_step_workflow(http, "retry")
    workflow_id = ok(http.post("/workflow", json={"name": name, "input": {"n": 1}})).text
    report(http, poll_one(http, task_type), outputData={"v": 10})
    report(http, poll_one(http, task_type), "FAILED", reasonForIncompletion="the printer jammed")
    failed = wait_status(http, workflow_id, "FAILED")
    assert "the printer jammed" in failed["reasonForIncompletion"] and failed["failedReferenceTaskNames"] == ["second"]

    assert ok(http.post(f"/workflow/{workflow_id}/retry"), 204).content == b""
    again = poll_one(http, task_type)
    assert (again["referenceTaskName"], again["retryCount"], again["inputData"]) == ("second", 1, {"from_first": 10})
    report(http, again, outputData={"v": 11})
    done = wait_status(http, workflow_id, "COMPLETED")
    assert done["output"] == {"first": 10, "second": 11} and done["reasonForIncompletion"] is None
    assert attempts(done, "first") == [(0, "COMPLETED")]   # the completed task is not run again
    assert attempts(done, "second") == [(0, "FAILED"), (1, "COMPLETED")]


def test_rerun_from_a_task_with_new_input_and_without_a_task_from_the_start(http: httpx.Client) -> None:
    name, task_type = two_step_workflow(http, "rerun")
    workflow_id = ok(http.post("/workflow", json={"name": name, "input": {"n": 1}})).text
    first = poll_one(http, task_type)
    report(http, first, outputData={"v": 10})
    report(http, poll_one(http, task_type), outputData={"v": 20})
    done = wait_status(http, workflow_id, "COMPLETED")
    second_id = next(t["taskId"] for t in done["tasks"] if t["referenceTaskName"] == "second")

    answer = ok(http.post(f"/workflow/{workflow_id}/rerun",
                          json={"reRunFromTaskId": second_id, "taskInput": {"from_first": 99}}))
    assert answer.text == workflow_id
    rerun = poll_one(http, task_type)
    assert rerun["referenceTaskName"] == "second" and rerun["inputData"] == {"from_first": 99}
    assert rerun["taskId"] != second_id
    report(http, rerun, outputData={"v": 21})
    assert wait_status(http, workflow_id, "COMPLETED")["output"] == {"first": 10, "second": 21}

    assert ok(http.post(f"/workflow/{workflow_id}/rerun", json={})).text == workflow_id   # no task: all of it
    restarted = poll_one(http, task_type)
    assert restarted["referenceTaskName"] == "first" and restarted["taskId"] != first["taskId"]
    assert restarted["inputData"] == {"n": 1}
    report(http, restarted, outputData={"v": 30})
    report(http, poll_one(http, task_type), outputData={"v": 31})
    assert wait_status(http, workflow_id, "COMPLETED")["output"] == {"first": 30, "second": 31}

    refused = http.post(f"/workflow/{workflow_id}/rerun", json={"reRunFromTaskId": "no-such-task"})
    assert refused.status_code == 400 and "is no task of workflow" in refused.json()["message"]


def inline_workflow(http: httpx.Client, name: str, version: int, factor: int) -> None:
    ok(http.post("/metadata/workflow", json={
        "name": name, "version": version, "schemaVersion": 2,
        "tasks": [{"name": "calc", "taskReferenceName": "calc", "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": f"$.n * {factor}", "n": "${workflow.input.n}"}}],
        "outputParameters": {"product": "${calc.output.result}", "version": version}}))


def test_start_by_name_in_the_path(http: httpx.Client) -> None:
    name = unique("by_name")
    inline_workflow(http, name, 1, 10)
    inline_workflow(http, name, 2, 100)
    latest = ok(http.post(f"/workflow/{name}", json={"n": 3})).text
    older = ok(http.post(f"/workflow/{name}", params={"version": 1, "correlationId": "order-7"}, json={"n": 3})).text
    assert latest != older
    shown = wait_status(http, latest, "COMPLETED")
    assert (shown["workflowVersion"], shown["input"], shown["output"]) == (2, {"n": 3}, {"product": 300, "version": 2})
    shown = wait_status(http, older, "COMPLETED")
    assert (shown["workflowVersion"], shown["correlationId"]) == (1, "order-7")
    assert shown["output"] == {"product": 30, "version": 1}
    empty = ok(http.post(f"/workflow/{name}", params={"version": 1})).text   # no body: an empty input
    shown = wait_status(http, empty, "COMPLETED")
    assert shown["input"] == {} and shown["output"] == {"product": 0, "version": 1}   # null * 10 in JavaScript


def test_execute_answers_with_the_ended_workflow_or_the_running_one_when_the_wait_ends_first(
        http: httpx.Client) -> None:
    name = unique("execute")
    inline_workflow(http, name, 1, 10)
    inline_workflow(http, name, 2, 100)
    request_id = unique("req")
    done = ok(http.post(f"/workflow/execute/{name}/1", params={"requestId": request_id, "waitForSeconds": 10},
                        json={"input": {"n": 4}, "correlationId": "c-exec"})).json()
    assert (done["status"], done["workflowVersion"], done["correlationId"]) == ("COMPLETED", 1, "c-exec")
    assert done["output"] == {"product": 40, "version": 1} and done["requestId"] == request_id
    assert [(t["referenceTaskName"], t["status"], t["outputData"]) for t in done["tasks"]] == [
        ("calc", "COMPLETED", {"result": 40})]
    again = ok(http.post(f"/workflow/execute/{name}/1", params={"requestId": request_id},
                         json={"input": {"n": 5}})).json()
    assert again["workflowId"] == done["workflowId"] and again["output"]["product"] == 40   # the same request
    latest = ok(http.post(f"/workflow/execute/{name}/0", json={"input": {"n": 4}})).json()
    assert latest["output"] == {"product": 400, "version": 2}

    waiting, task_type = two_step_workflow(http, "execute_wait")
    began = time.monotonic()
    running = ok(http.post(f"/workflow/execute/{waiting}/1", params={"waitForSeconds": 1},
                           json={"input": {"n": 1}})).json()
    assert 1.0 <= time.monotonic() - began < 5.0
    assert running["status"] == "RUNNING" and [t["status"] for t in running["tasks"]] == ["SCHEDULED"]
    task = poll_one(http, task_type)
    assert task["workflowInstanceId"] == running["workflowId"]


def test_workflow_definitions_are_listed_and_created_or_updated_by_put(http: httpx.Client) -> None:
    first, second = unique("put_a"), unique("put_b")

    def definition(name: str, version: int, description: str) -> dict[str, Any]:
        return {"name": name, "version": version, "schemaVersion": 2, "description": description,
                "tasks": [{"name": "n", "taskReferenceName": "n", "type": "NOOP"}]}

    assert ok(http.put("/metadata/workflow", json=[definition(first, 1, "a one"),
                                                   definition(second, 1, "b one")])).content == b""

    def listed() -> dict[str, tuple[int, str]]:
        return {d["name"]: (d["version"], d["description"]) for d in ok(http.get("/metadata/workflow")).json()
                if d["name"] in (first, second)}

    assert listed() == {first: (1, "a one"), second: (1, "b one")}
    ok(http.put("/metadata/workflow", json=[definition(first, 2, "a two"), definition(second, 1, "b changed")]))
    assert listed() == {first: (2, "a two"), second: (1, "b changed")}   # the latest of each; 1 replaced
    assert ok(http.get(f"/metadata/workflow/{first}", params={"version": 1})).json()["description"] == "a one"
    shown = ok(http.get(f"/metadata/workflow/{second}")).json()
    assert shown["tasks"][0]["type"] == "NOOP" and shown["schemaVersion"] == 2



def test_a_put_with_an_invalid_definition_writes_none_of_them(http: httpx.Client) -> None:
    fine = unique("put_fine")
    refused = http.put("/metadata/workflow", json=[
        {"name": fine, "version": 1, "schemaVersion": 2, "tasks": [{"name": "n", "taskReferenceName": "n",
                                                                     "type": "NOOP"}]},
        {"name": unique("put_broken"), "tasks": []}])
    assert refused.status_code == 400 and "tasks" in refused.json()["message"]
    assert http.get(f"/metadata/workflow/{fine}").status_code == 404
    assert "nothing was registered" in refused.json()["message"]


def test_a_task_definition_list_with_an_invalid_one_writes_none_of_them(http: httpx.Client) -> None:
    fine = unique("put_task_fine")
    refused = http.post("/metadata/taskdefs", json=[{"name": fine}, {"name": unique("bad"), "retryCount": -4}])
    assert refused.status_code == 400 and "nothing was registered" in refused.json()["message"]
    assert "retryCount" in refused.json()["message"]
    assert http.get(f"/metadata/taskdefs/{fine}").status_code == 404
