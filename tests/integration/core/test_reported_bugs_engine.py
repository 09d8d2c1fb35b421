"""Bugs a new user hit in the engine, each on a real node with a real worker (issue 8).

- a restart or rerun of a workflow with a SUB_WORKFLOW hung for ever (the child id was reused);
- the idempotency key was `workflow:ref`, shared by loop iterations and by a rerun;
- FORK_JOIN_DYNAMIC with task specs failed when the forked type was not named elsewhere;
- search paging used an offset, so a workflow started between two pages repeated an item.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from helpers import BackgroundWorker, register_sequence, unique, wait_for_status
from worker import Worker, context, task


@pytest.fixture
def recorder(node: Any) -> Any:
    """A worker for a fresh task type that records each call's idempotency key and attempt,
    failing the first attempt of any input that asks for it."""
    name = unique("record")
    calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    @task(name)
    def record(data: dict[str, Any]) -> dict[str, Any]:
        info = context()
        with lock:
            calls.append({"key": info.idempotency_key, "attempt": info.attempt, "ref": info.reference_name,
                          "input": data})
        if data.get("flaky") and info.attempt == 0:
            raise RuntimeError("first attempt fails")
        return {"seen": data}

    node.client.register_task_def({"name": name, "retryCount": 2, "retryDelaySeconds": 0})
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[record], concurrency=4))
    yield name, calls
    background.stop()


def test_restart_and_rerun_of_a_workflow_with_a_sub_workflow_run_a_new_child(node: Any, recorder: Any) -> None:
    name, calls = recorder
    child, parent = unique("child"), unique("parent")
    client = node.client
    client.register_workflow_def({"name": child, "tasks": [{"name": name, "taskReferenceName": "inner"}]})
    client.register_workflow_def({"name": parent, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": child}},
        {"name": name, "taskReferenceName": "after"}]})
    first = client.execute_workflow(parent, {}, wait_s=20)
    assert first["status"] == "COMPLETED", first
    first_child = first["tasks"][0]["sub_workflow_id"]

    client.restart_workflow(first["workflow_id"])
    restarted = wait_for_status(client, first["workflow_id"], "COMPLETED", timeout_s=20)
    second_child = restarted["tasks"][0]["sub_workflow_id"]
    assert second_child != first_child
    assert client.get_workflow(second_child)["status"] == "COMPLETED"

    client.rerun_workflow(first["workflow_id"], "sub")
    rerun = wait_for_status(client, first["workflow_id"], "COMPLETED", timeout_s=20)
    third_child = rerun["tasks"][0]["sub_workflow_id"]
    assert third_child not in (first_child, second_child)
    assert client.get_workflow(third_child)["status"] == "COMPLETED"
    assert sum(1 for c in calls if c["ref"] == "inner") == 3   # each child really ran


def test_idempotency_key_is_one_per_execution_and_kept_across_retries(node: Any, recorder: Any) -> None:
    name, calls = recorder
    flow = unique("keys")
    node.client.register_workflow_def({"name": flow, "tasks": [
        {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE", "items": "${workflow.input.items}",
         "loopOver": [{"name": name, "taskReferenceName": "charge",
                       "inputParameters": {"flaky": "${loop.output.item}"}}]}]})
    done = node.client.execute_workflow(flow, {"items": [False, True, False]}, wait_s=20)
    assert done["status"] == "COMPLETED", done
    keys = [c["key"] for c in calls]
    assert len(calls) == 4                                   # iteration 2 failed once and was retried
    assert len(set(keys)) == 3                               # one key per iteration...
    retried = [c["key"] for c in calls if c["input"]["flaky"]]
    assert len(retried) == 2 and retried[0] == retried[1]    # ...kept across the retry of one

    node.client.rerun_workflow(done["workflow_id"], "loop")
    wait_for_status(node.client, done["workflow_id"], "COMPLETED", timeout_s=20)
    rerun_keys = {c["key"] for c in calls[4:]}
    assert rerun_keys and not rerun_keys & set(keys)         # a rerun is a new execution


def test_dynamic_fork_of_task_specs_runs_a_type_the_definition_does_not_name(node: Any, recorder: Any) -> None:
    name, calls = recorder
    flow = unique("dynamic")
    node.client.register_workflow_def({"name": flow, "tasks": [
        {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC",
         "dynamicForkTasksParam": "tasks", "dynamicForkTasksInputParamName": "inputs",
         "inputParameters": {"tasks": "${workflow.input.tasks}", "inputs": "${workflow.input.inputs}"}},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]})
    specs = [{"name": name, "taskReferenceName": f"ship_{i}"} for i in range(3)]
    inputs = {f"ship_{i}": {"n": i} for i in range(3)}
    done = node.client.execute_workflow(flow, {"tasks": specs, "inputs": inputs}, wait_s=20)
    assert done["status"] == "COMPLETED", done
    assert done["tasks"][-1]["output"] == {f"ship_{i}": {"seen": {"n": i}} for i in range(3)}
    assert sorted(c["input"]["n"] for c in calls) == [0, 1, 2]


def test_a_workflow_started_between_two_pages_repeats_nothing_and_skips_nothing(node: Any) -> None:
    flow = unique("paged")
    register_sequence(node.client, flow, [unique("unserved")])   # no worker: every workflow stays RUNNING
    first = [node.client.start_workflow(flow, {"n": i}) for i in range(5)]
    page_one, token = node.client.search_workflows(name=flow, limit=2)
    late = node.client.start_workflow(flow, {"n": 5})             # newest first: would shift an offset by one
    rest: list[dict[str, Any]] = []
    while token:
        page, token = node.client.search_workflows(name=flow, limit=2, page_token=token)
        rest += page
    seen = [w["workflow_id"] for w in page_one + rest]
    assert seen == first[::-1], seen                              # each once, newest first
    assert late not in seen
