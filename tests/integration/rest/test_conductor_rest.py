"""Conductor's REST API route by route, spoken as raw HTTP to one real node (the SDK's own run
is tests/integration/conductor/test_conductor_sdk.py): long polls, update-v2's next task, IN_PROGRESS callbacks and
lease extension, task logs, idempotent starts, inline definitions, search queries, refusals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import unique, wait_for_status


@pytest.fixture(scope="module")
def http(node: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{node.http_address}/api", timeout=15.0) as client:
        yield client


def one_task_workflow(http: httpx.Client, prefix: str, **task_def: Any) -> tuple[str, str]:
    name, task_type = unique(prefix), unique(f"{prefix}_t")
    assert http.post("/metadata/taskdefs", json=[{"name": task_type, "retryCount": 0,
                                                  "responseTimeoutSeconds": 30, **task_def}]).status_code == 200
    assert http.post("/metadata/workflow", json={
        "name": name, "version": 1, "schemaVersion": 2,
        "tasks": [{"name": task_type, "taskReferenceName": "work", "type": "SIMPLE",
                   "inputParameters": {"n": "${workflow.input.n}"}}]}).status_code == 200
    return name, task_type


def start(http: httpx.Client, name: str, n: Any = 1, **extra: Any) -> str:
    answer = http.post("/workflow", json={"name": name, "input": {"n": n}, **extra})
    assert answer.status_code == 200, answer.text
    return answer.text


def poll(http: httpx.Client, task_type: str, count: int = 1, timeout_ms: int = 5000, worker: str = "w1") -> list[Any]:
    """Up to `count` tasks, waiting up to `timeout_ms` for the first (a start is decided just after
    it answers, so its first task is queued a moment later)."""
    answer = http.get(f"/tasks/poll/batch/{task_type}", params={"workerid": worker, "count": count,
                                                                "timeout": timeout_ms})
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def wait_queued(http: httpx.Client, task_type: str, count: int) -> None:
    deadline = time.monotonic() + 10   # a start answers at once; its first task is queued right after
    while http.get("/tasks/queue/sizes", params={"taskType": task_type}).json() != {task_type: count}:
        assert time.monotonic() < deadline, f"{count} queued tasks never showed"
        time.sleep(0.05)


def poll_all(http: httpx.Client, task_type: str, count: int) -> list[Any]:
    """Exactly `count` tasks, polled until they are all there."""
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        got += poll(http, task_type, count=count - len(got))
    assert len(got) == count, got
    return got


def result(task: dict[str, Any], status: str = "COMPLETED", **extra: Any) -> dict[str, Any]:
    return {"taskId": task["taskId"], "workflowInstanceId": task["workflowInstanceId"], "workerId": "w1",
            "status": status, **extra}


def test_a_waiting_batch_poll_gets_a_task_queued_meanwhile_at_once(http: httpx.Client, node: Any) -> None:
    name, task_type = one_task_workflow(http, "longpoll")
    got: dict[str, Any] = {}

    def waiting_poll() -> None:
        got["tasks"] = poll(http, task_type, timeout_ms=10_000)
        got["answered_at"] = time.monotonic()   # taken in the poller: the join below does not count

    poller = threading.Thread(target=waiting_poll)
    poller.start()
    time.sleep(0.5)   # the poll is waiting on the empty queue by now
    started_at = time.monotonic()
    workflow_id = start(http, name, n=5)
    poller.join(15)
    assert not poller.is_alive() and [t["workflowInstanceId"] for t in got["tasks"]] == [workflow_id]
    task = got["tasks"][0]
    assert task["status"] == "IN_PROGRESS" and task["inputData"] == {"n": 5} and task["taskDefName"] == task_type
    assert task["responseTimeoutSeconds"] == 30
    # answered once the task was queued, not at the end of its 10 s timeout
    assert got["answered_at"] - started_at < 2.5, f"answered {got['answered_at'] - started_at:.1f} s after the start"
    assert http.post("/tasks", json=result(task, outputData={"done": True})).text == task["taskId"]
    assert wait_for_status(node.client, workflow_id, "COMPLETED")["output"] == {"done": True}


def test_update_v2_answers_with_the_workers_next_task(http: httpx.Client, node: Any) -> None:
    name, task_type = one_task_workflow(http, "v2")
    first, second = start(http, name, 1), start(http, name, 2)
    wait_queued(http, task_type, 2)
    task = poll(http, task_type)[0]
    following = http.post("/tasks/update-v2", json=result(task, outputData={"n": task["inputData"]["n"]}))
    assert following.status_code == 200
    nxt = following.json()
    assert {task["workflowInstanceId"], nxt["workflowInstanceId"]} == {first, second}
    last = http.post("/tasks/update-v2", json=result(nxt, outputData={"n": nxt["inputData"]["n"]}))
    assert last.status_code == 204
    for workflow_id, n in ((first, 1), (second, 2)):
        assert wait_for_status(node.client, workflow_id, "COMPLETED")["output"] == {"n": n}


def test_update_v2_answers_with_the_next_step_its_result_just_queued(http: httpx.Client, node: Any) -> None:
    """The result's own workflow's next step, queued by the step that stored the result: the node
    claims it without waiting for that step's `ready` broadcast (it went to a partition the worker's
    batch poll had just found empty, and the answer came back 204, the task to the next poll)."""
    name, task_type = unique("v2next"), unique("v2next_t")
    assert http.post("/metadata/taskdefs", json=[{"name": task_type, "retryCount": 0,
                                                  "responseTimeoutSeconds": 30}]).status_code == 200
    assert http.post("/metadata/workflow", json={
        "name": name, "version": 1, "schemaVersion": 2,
        "tasks": [{"name": task_type, "taskReferenceName": ref, "type": "SIMPLE"} for ref in ("one", "two")]
    }).status_code == 200
    workflow_id = start(http, name)
    [task] = poll(http, task_type, count=5)   # asked for more than there are: the partition read as empty
    following = http.post("/tasks/update-v2", json=result(task))
    assert following.status_code == 200, "answered with no task: the next step waited for another poll"
    nxt = following.json()
    assert nxt["workflowInstanceId"] == workflow_id and nxt["referenceTaskName"] == "two"
    assert http.post("/tasks/update-v2", json=result(nxt)).status_code == 204
    assert wait_for_status(node.client, workflow_id, "COMPLETED")["status"] == "COMPLETED"


def test_in_progress_with_a_callback_comes_back_later_with_its_output_so_far(http: httpx.Client, node: Any) -> None:
    name, task_type = one_task_workflow(http, "callback")
    workflow_id = start(http, name)
    task = poll(http, task_type)[0]
    assert http.post("/tasks", json=result(task, "IN_PROGRESS", callbackAfterSeconds=1,
                                           outputData={"step": 1})).status_code == 200
    assert poll(http, task_type, timeout_ms=0) == []   # not before its callback time
    time.sleep(1.2)
    again = poll(http, task_type, timeout_ms=2000)
    assert [t["taskId"] for t in again] == [task["taskId"]]
    workflow = http.get(f"/workflow/{workflow_id}").json()
    assert workflow["tasks"][0]["outputData"] == {"step": 1}
    assert http.post("/tasks", json=result(again[0], extendLease=True, status="IN_PROGRESS")).status_code == 200
    assert http.post("/tasks", json=result(again[0], outputData={"step": 2})).status_code == 200
    assert wait_for_status(node.client, workflow_id, "COMPLETED")["output"] == {"step": 2}


def test_updates_by_reference_and_without_a_worker_id(http: httpx.Client, node: Any) -> None:
    name, task_type = one_task_workflow(http, "byref")
    by_ref, anonymous = start(http, name), start(http, name)
    polled = {t["workflowInstanceId"]: t for t in poll_all(http, task_type, 2)}
    answer = http.post(f"/tasks/{by_ref}/work/COMPLETED", json={"via": "reference"})
    assert answer.status_code == 200 and answer.text == polled[by_ref]["taskId"]
    unnamed = result(polled[anonymous], outputData={"via": "no worker id"})
    del unnamed["workerId"]
    assert http.post("/tasks", json=unnamed).status_code == 200
    assert wait_for_status(node.client, by_ref, "COMPLETED")["output"] == {"via": "reference"}
    assert wait_for_status(node.client, anonymous, "COMPLETED")["output"] == {"via": "no worker id"}


def test_task_logs_and_queue_sizes(http: httpx.Client) -> None:
    name, task_type = one_task_workflow(http, "logs")
    start(http, name)
    start(http, name)
    wait_queued(http, task_type, 2)
    task = poll(http, task_type)[0]
    assert http.post(f"/tasks/{task['taskId']}/log", content=b'said \\"hi\\"\\nthen left',
                     headers={"Content-Type": "application/json"}).status_code == 200
    http.post("/tasks", json=result(task, logs=[{"log": "from the result", "createdTime": 1_700_000_000}]))
    logs = http.get(f"/tasks/{task['taskId']}/log").json()
    assert [entry["log"] for entry in logs] == ['said "hi"\nthen left', "from the result"]
    assert logs[1]["createdTime"] == 1_700_000_000_000   # seconds, as the SDK sends tracebacks, read as such


def test_starts_idempotency_strategies_and_inline_definitions(http: httpx.Client, node: Any) -> None:
    name, _ = one_task_workflow(http, "idem")
    key = unique("key")
    first = start(http, name, idempotencyKey=key)
    refused = http.post("/workflow", json={"name": name, "idempotencyKey": key})
    assert refused.status_code == 409 and first in refused.json()["message"]
    assert start(http, name, idempotencyKey=key, idempotencyStrategy="RETURN_EXISTING") == first

    inline = unique("inline")
    workflow_id = start(http, inline, workflowDef={
        "name": inline, "version": 3, "schemaVersion": 2,
        "tasks": [{"name": "set", "taskReferenceName": "set", "type": "SET_VARIABLE",
                   "inputParameters": {"seen": "${workflow.input.n}"}}],
        "outputParameters": {"seen": "${workflow.variables.seen}"}})
    assert wait_for_status(node.client, workflow_id, "COMPLETED")["output"] == {"seen": 1}
    assert http.get(f"/metadata/workflow/{inline}").json()["version"] == 3


def test_search_queries(http: httpx.Client, node: Any) -> None:
    name, task_type = one_task_workflow(http, "search")
    before = int(time.time() * 1000) - 1
    done, waiting = start(http, name, correlationId="c-done"), start(http, name, correlationId="c-wait")
    task = next(t for t in poll_all(http, task_type, 2) if t["workflowInstanceId"] == done)
    http.post("/tasks", json=result(task))
    wait_for_status(node.client, done, "COMPLETED")

    def ids(**params: Any) -> list[str]:
        answer = http.get("/workflow/search", params=params)
        assert answer.status_code == 200, answer.text
        return [s["workflowId"] for s in answer.json()["results"]]

    assert ids(query=f"workflowType = '{name}'") == [waiting, done]
    assert ids(query=f"workflowType = '{name}' AND status IN (COMPLETED, FAILED)") == [done]
    assert ids(query=f"workflowType = {name} AND startTime > {before}", size=1) == [waiting]
    assert ids(query=f"workflowType = {name}", start=1) == [done]
    assert ids(query=f"correlationId = 'c-wait' AND workflowType = '{name}'") == [waiting]
    summary = http.get("/workflow/search", params={"query": f"workflowId = '{done}'"}).json()
    assert summary["totalHits"] == 1 and summary["results"][0]["status"] == "COMPLETED"
    assert summary["results"][0]["input"] == '{"n":1}'


@pytest.mark.parametrize("method,path,kwargs,status,words", [
    ("post", "/tasks", {"json": {"taskId": "t", "workflowInstanceId": "w", "status": "DONE"}}, 400, "status must"),
    ("post", "/tasks", {"json": {"status": "COMPLETED"}}, 400, "taskId and workflowInstanceId are required"),
    ("post", "/tasks", {"json": ["not", "an", "object"]}, 400, "must be a JSON object"),
    ("post", "/tasks", {"content": b"x" * (2 * 1024 * 1024)}, 413, "limit"),
    ("get", "/tasks/poll/batch/any", {"params": {"workerid": "*"}}, 400, "reserved"),
    ("get", "/tasks/poll/batch/any", {"params": {"count": 1000}}, 400, "count must be from 1 to 100"),
    ("get", "/tasks/poll/batch/any", {"params": {"timeout": "soon"}}, 400, "whole number"),
    ("post", "/workflow", {"json": {"name": "x", "input": [1]}}, 400, "input must be a JSON object"),
    ("post", "/workflow", {"content": b"{"}, 400, "not valid JSON"),
    ("post", "/workflow", {"json": {"name": "x", "version": 2**40}}, 400, "version must be a whole number"),
    ("post", "/workflow/execute/x/99999999999", {"json": {}}, 400, "version must be a whole number"),
    ("get", "/workflow/search", {"params": {"query": "owner = 'me'"}}, 400, "not one this API reads"),
    ("get", "/workflow/search", {"params": {"start": 4999, "size": 10}}, 400, "start + size"),
    ("get", "/workflow/" + "x" * 300, {}, 400, "ids have at most"),
    ("post", "/metadata/workflow", {"json": {"name": "bad name!", "tasks": []}}, 400, "name"),
    ("delete", "/metadata/taskdefs/anything", {}, 405, "never removed"),
])
def test_refusals_name_the_problem_and_write_nothing(http: httpx.Client, method: str, path: str,
                                                     kwargs: dict[str, Any], status: int, words: str) -> None:
    answer = getattr(http, method)(path, **kwargs)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"]
    assert http.get("/metadata/workflow/bad name!").status_code == 404
