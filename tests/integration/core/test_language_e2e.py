"""The example definitions in examples/, and every operation, on a real node with a real worker."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from helpers import EXAMPLES, load_example_handlers, unique, wait_for_status
from orchestrator.core.definitions import parse_document
from worker import ClientError


@pytest.fixture(scope="module")
def examples(node):
    """Every example registered once; every definition file must register cleanly."""
    for task_def in json.loads((EXAMPLES / "task_defs.json").read_text()):
        node.client.register_task_def(task_def)
    order = ["trip_saga", "order_routing", "parallel_quotes", "ship_each", "retry_until", "approval"]
    files = {p.stem: p for p in EXAMPLES.glob("*.yaml")}
    assert set(files) == set(order), "every example file is exercised here"
    for name in order:
        node.client.register_workflow_def(parse_document(files[name].read_text()))
    return node


@pytest.fixture(scope="module")
def example_worker(examples):
    from helpers import BackgroundWorker
    from worker import Worker

    background = BackgroundWorker(Worker(endpoints=[examples.endpoint], handlers=load_example_handlers(),
                                         concurrency=8))
    yield background
    background.stop()


def run(node, name, workflow_input, status="COMPLETED"):
    workflow = node.client.execute_workflow(name, workflow_input, wait_s=20)
    assert workflow["status"] == status, workflow
    return workflow


def test_saga_cancels_the_bookings_when_the_charge_fails(examples, example_worker):
    ok = run(examples, "trip_saga", {"traveller": "ada", "to": "Lisbon", "amount": 300})
    assert ok["output"]["payment"].startswith("PAY-")

    undone = run(examples, "trip_saga", {"traveller": "bob", "to": "Oslo", "amount": 5000}, "COMPENSATED")
    tasks = {t["key"]: t for t in undone["tasks"]}
    assert "card declined" in undone["reason"]
    assert tasks["payment"]["status"] == "FAILED_WITH_TERMINAL_ERROR"
    assert tasks["hotel__compensation"]["output"] == {"cancelled": tasks["hotel"]["output"]["booking"]}
    assert tasks["flight__compensation"]["output"] == {"cancelled": tasks["flight"]["output"]["booking"]}
    order = sorted(undone["tasks"], key=lambda t: int(t.get("scheduled_at_ms", 0)))
    assert [t["key"] for t in order][-2:] == ["hotel__compensation", "flight__compensation"]


@pytest.mark.parametrize("price,qty,route,shipped", [(10, 3, "auto", True), (600, 2, "review", None),
                                                     (0, 5, "empty", False)])
def test_switch_inline_set_variable_and_terminate(examples, example_worker, price, qty, route, shipped):
    done = run(examples, "order_routing", {"price": price, "qty": qty, "item": "lamp"})
    if route == "empty":
        assert done["output"] == {"shipped": False} and done["reason"] == "nothing to ship"
        return
    assert done["output"]["total"] == price * qty and done["output"]["currency"] == "EUR"
    assert done["output"]["route"] == route
    assert ("ship_it" in {t["key"] for t in done["tasks"]}) == bool(shipped)


def test_fork_join_prices_in_parallel(examples, example_worker):
    done = run(examples, "parallel_quotes", {"item": "desk"})
    prices = [t["output"]["price"] for t in done["tasks"] if t["reference_name"].startswith("supplier")]
    assert len(prices) == 2 and done["output"]["best"] == min(prices)
    assert {t["key"]: t["status"] for t in done["tasks"]}["audit"] == "COMPLETED"   # the NOOP


def test_dynamic_fork_and_loop_over_items(examples, example_worker):
    items = [{"item": "A"}, {"item": "B"}, {"item": "C"}]
    done = run(examples, "ship_each", {"items": items})
    assert set(done["output"]["shipped"]) == {"ship_all_0", "ship_all_1", "ship_all_2"}
    assert done["output"]["iterations"] == 3
    texts = [t["output"]["sent"] for t in done["tasks"] if t["reference_name"] == "tell"]
    assert texts == ["shipped A", "shipped B", "shipped C"]


def test_dynamic_fork_of_task_specs_runs_a_type_the_definition_does_not_name(node: Any, recorder: Any) -> None:
    """FORK_JOIN_DYNAMIC with task specs failed when the forked type was not named elsewhere (issue 8)."""
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


def test_do_while_until_under_budget(examples, example_worker):
    done = run(examples, "retry_until", {"item": "chair", "budget": 90})
    assert done["output"]["price"] <= 90 and done["output"]["rounds"] >= 1


def test_wait_human_signal_and_sub_workflow(examples, example_worker):
    client = examples.client
    workflow_id = client.start_workflow("approval", {"traveller": "cy", "to": "Rome"})
    deadline = time.monotonic() + 10
    while True:   # the WAIT passes by itself; then the HUMAN task waits for us
        tasks = {t["key"]: t for t in client.get_workflow(workflow_id)["tasks"]}
        if tasks.get("approve", {}).get("status") == "IN_PROGRESS":
            break
        assert time.monotonic() < deadline, tasks
        time.sleep(0.05)
    assert tasks["cool_off"]["status"] == "COMPLETED"
    client.signal_task(workflow_id, "approve", output={"by": "manager", "approved_amount": 250})
    done = wait_for_status(client, workflow_id, "COMPLETED")
    assert done["output"]["approved_by"] == "manager"
    child_id = {t["key"]: t for t in done["tasks"]}["book"]["sub_workflow_id"]
    child = client.get_workflow(child_id)
    assert child["status"] == "COMPLETED" and child["parent_workflow_id"] == workflow_id
    assert done["output"]["trip"] == child["output"]
    with pytest.raises(ClientError) as err:
        client.signal_task(workflow_id, "approve", output={})
    assert err.value.code == "FAILED_PRECONDITION"


def test_pause_resume_and_skip(examples, example_worker):
    client = examples.client
    workflow_id = client.start_workflow("approval", {"traveller": "di", "to": "Paris"})
    paused = client.pause_workflow(workflow_id)
    assert paused["status"] == "PAUSED"
    with pytest.raises(ClientError) as err:
        client.pause_workflow(workflow_id)
    assert err.value.code == "FAILED_PRECONDITION" and "PAUSED" in str(err.value)
    client.skip_task(workflow_id, "approve")    # nobody will approve: skip it
    assert client.resume_workflow(workflow_id)["status"] == "RUNNING"
    done = wait_for_status(examples.client, workflow_id, {"COMPLETED", "COMPENSATED"})
    statuses = {t["key"]: t["status"] for t in done["tasks"]}
    assert statuses["approve"] == "SKIPPED"
    with pytest.raises(ClientError) as err:
        client.skip_task(workflow_id, "no_such_task")
    assert err.value.code == "INVALID_ARGUMENT"


def test_terminate_with_compensation(examples, example_worker):
    """The trip saga with a payment step no worker serves: terminate it while it waits, compensating."""
    client = examples.client
    saga = parse_document((EXAMPLES / "trip_saga.yaml").read_text())
    saga["name"] = unique("trip_manual")
    unserved = unique("charge_by_hand")
    client.register_task_def({"name": unserved})
    saga["tasks"][2]["name"] = unserved
    client.register_workflow_def(saga)
    workflow_id = client.start_workflow(saga["name"], {"traveller": "ed", "to": "Rome", "amount": 10})
    deadline = time.monotonic() + 10
    while not any(t["key"] == "payment" for t in client.get_workflow(workflow_id)["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.terminate_workflow(workflow_id, "customer changed plans", compensate=True)["status"] \
        == "COMPENSATING"
    done = wait_for_status(client, workflow_id, "COMPENSATED")
    statuses = {t["key"]: t["status"] for t in done["tasks"]}
    assert statuses["payment"] == "CANCELED"
    assert statuses["hotel__compensation"] == statuses["flight__compensation"] == "COMPLETED"
    assert done["reason"] == "customer changed plans"


def test_retry_rerun_and_restart(examples, example_worker):
    client = examples.client
    failed = run(examples, "order_routing", {"price": 1, "qty": 1}, "COMPLETED")
    workflow_id = failed["workflow_id"]
    with pytest.raises(ClientError) as err:
        client.retry_workflow(workflow_id)      # only FAILED or TIMED_OUT workflows retry
    assert err.value.code == "FAILED_PRECONDITION"
    rerun = client.rerun_workflow(workflow_id, "total", task_input={"price": 3, "qty": 7})
    assert rerun["status"] == "RUNNING"
    again = wait_for_status(client, workflow_id, "COMPLETED")
    assert again["output"]["total"] == 21
    restarted = client.restart_workflow(workflow_id)
    assert restarted["status"] == "RUNNING"
    final = wait_for_status(client, workflow_id, "COMPLETED")
    assert final["output"]["total"] == 1


def test_restart_and_rerun_of_a_workflow_with_a_sub_workflow_run_a_new_child(node: Any, recorder: Any) -> None:
    """A restart or rerun of a workflow with a SUB_WORKFLOW hung for ever: the child id was reused
    (issue 8)."""
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


def test_retry_a_failed_workflow(examples, example_worker):
    client = examples.client
    name, flaky = unique("flaky_wf"), unique("flaky")
    client.register_task_def({"name": flaky, "retryCount": 0})
    client.register_workflow_def({"name": name, "tasks": [{"name": flaky, "taskReferenceName": "step"}]})
    from helpers import BackgroundWorker
    from worker import Worker, task

    calls = []

    @task(flaky)
    def sometimes(data):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return {"calls": len(calls)}

    background = BackgroundWorker(Worker(endpoints=[examples.endpoint], handlers=[sometimes]))
    try:
        workflow_id = client.start_workflow(name, {})
        wait_for_status(client, workflow_id, "FAILED")
        assert client.retry_workflow(workflow_id)["status"] == "RUNNING"
        done = wait_for_status(client, workflow_id, "COMPLETED")
        assert [t["status"] for t in done["tasks"]] == ["FAILED", "COMPLETED"] and done.get("reason", "") == ""
    finally:
        background.stop()


def test_watch_streams_changes_until_the_end(examples, example_worker):
    """The watch sees the workflow running, then each change, then its end. The workflow waits for
    a signal that is sent only once the watch has seen it waiting (a quick workflow could end
    before the watch began, and then the watch rightly shows its end alone)."""
    client = examples.client
    workflow_id = client.start_workflow("approval", {"traveller": "gus", "to": "Oslo"})
    seen: list[dict] = []

    def follow() -> None:
        seen.extend(client.watch_workflow(workflow_id, include_tasks=True))

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 10
    while not any(t["key"] == "approve" and t["status"] == "IN_PROGRESS" for w in list(seen) for t in w["tasks"]):
        assert time.monotonic() < deadline, [w["status"] for w in seen]
        time.sleep(0.05)
    client.signal_task(workflow_id, "approve", output={"by": "watcher", "approved_amount": 10})
    watcher.join(20)
    assert not watcher.is_alive(), "the watch did not end with the workflow"
    statuses = [w["status"] for w in seen]
    assert statuses[0] == "RUNNING" and statuses[-1] == "COMPLETED", statuses
    assert len(statuses) >= 3   # waiting for the signal, at least one change after it, the end


def test_execute_returns_running_when_the_deadline_passes(examples, example_worker):
    workflow = examples.client.execute_workflow("approval", {"traveller": "fay", "to": "Bern"}, wait_s=0.5)
    assert workflow["status"] == "RUNNING"
    examples.client.terminate_workflow(workflow["workflow_id"], "test over")


def test_search_by_time_range(examples, example_worker):
    client = examples.client
    before = int(time.time() * 1000)
    workflow_id = client.start_workflow("parallel_quotes", {"item": "rug"})
    after = int(time.time() * 1000)
    found, _ = client.search_workflows(name="parallel_quotes", created_from_ms=before, created_to_ms=after)
    assert [w["workflow_id"] for w in found] == [workflow_id]
    none, _ = client.search_workflows(name="parallel_quotes", created_from_ms=after + 1)
    assert none == []


def test_concurrency_limit_holds_excess_tasks_back(examples):
    """A type limited to 2 at once: with a slow handler never more than 2 run, and none is dropped."""
    from helpers import BackgroundWorker
    from worker import Worker, task

    client = examples.client
    limited, name = unique("limited"), unique("fan_out")
    client.register_task_def({"name": limited, "concurrentExecLimit": 2, "retryCount": 0})
    client.register_workflow_def({"name": name, "tasks": [
        {"type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "each", "forkTaskName": limited,
         "forkTaskInputs": "${workflow.input.items}"},
        {"type": "JOIN", "taskReferenceName": "all"}]})
    running, peak, lock = [0], [0], threading.Lock()

    @task(limited)
    def slow(data):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return {"done": data["n"]}

    background = BackgroundWorker(Worker(endpoints=[examples.endpoint], handlers=[slow], concurrency=8))
    try:
        done = client.execute_workflow(name, {"items": [{"n": i} for i in range(6)]}, wait_s=30)
        assert done["status"] == "COMPLETED" and len(done["tasks"]) == 8
        assert peak[0] == 2
    finally:
        background.stop()


def test_rate_limit_spreads_starts_over_time_and_drops_nothing(examples):
    from helpers import BackgroundWorker
    from worker import Worker, task

    client = examples.client
    limited, name = unique("rated"), unique("rated_fan_out")
    client.register_task_def({"name": limited, "rateLimitPerFrequency": 2, "rateLimitFrequencyInSeconds": 1,
                              "retryCount": 0})
    client.register_workflow_def({"name": name, "tasks": [
        {"type": "FORK_JOIN_DYNAMIC", "taskReferenceName": "each", "forkTaskName": limited,
         "forkTaskInputs": "${workflow.input.items}"},
        {"type": "JOIN", "taskReferenceName": "all"}]})
    started: list[float] = []

    @task(limited)
    def record(data):
        started.append(time.time())
        return {}

    background = BackgroundWorker(Worker(endpoints=[examples.endpoint], handlers=[record], concurrency=8))
    try:
        done = client.execute_workflow(name, {"items": [{"n": i} for i in range(5)]}, wait_s=30)
        assert done["status"] == "COMPLETED" and len(started) == 5
        # the claim script's own clock: never a third claim within one 1 s window
        claims = sorted(t["started_at_ms"] for t in done["tasks"] if t["task_type"] == limited)
        assert len(claims) == 5
        for i in range(len(claims) - 2):
            assert claims[i + 2] - claims[i] >= 1000, claims
    finally:
        background.stop()


def test_failure_workflow_is_started_with_the_details(examples, example_worker):
    client = examples.client
    handler_name, failing_name, broken = unique("on_failure"), unique("fragile"), unique("broken")
    client.register_task_def({"name": broken, "retryCount": 0})
    client.register_workflow_def({"name": handler_name, "tasks": [
        {"name": "notify", "taskReferenceName": "tell",
         "inputParameters": {"text": "workflow ${workflow.input.workflowId} failed: ${workflow.input.reason}"}}]})
    client.register_workflow_def({"name": failing_name, "failureWorkflow": handler_name,
                                  "tasks": [{"name": broken, "taskReferenceName": "step"}]})
    from helpers import BackgroundWorker
    from worker import TerminalTaskError, Worker, task

    @task(broken)
    def fail(data):
        raise TerminalTaskError("disk full")

    background = BackgroundWorker(Worker(endpoints=[examples.endpoint], handlers=[fail]))
    try:
        failed = client.execute_workflow(failing_name, {"k": 1}, wait_s=20)
        assert failed["status"] == "FAILED"
        deadline = time.monotonic() + 20
        while not (handlers := client.search_workflows(name=handler_name)[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        [started] = handlers
        assert started["workflow_id"].startswith(f"{failed['workflow_id']}.failure.")
        handler = wait_for_status(client, started["workflow_id"], "COMPLETED")
        assert handler["input"]["workflowId"] == failed["workflow_id"] and handler["input"]["input"] == {"k": 1}
        assert "disk full" in handler["tasks"][0]["output"]["sent"]
    finally:
        background.stop()


def test_restart_with_the_latest_definition(examples, example_worker):
    client = examples.client
    name = unique("evolving")
    client.register_workflow_def({"name": name, "tasks": [{"name": "notify", "taskReferenceName": "first"}]})
    done = run(examples, name, {})
    client.register_workflow_def({"name": name, "version": 2, "tasks": [
        {"name": "notify", "taskReferenceName": "first"}, {"name": "notify", "taskReferenceName": "second"}]})
    client.restart_workflow(done["workflow_id"])            # same definition: still one step
    again = wait_for_status(client, done["workflow_id"], "COMPLETED")
    assert [t["key"] for t in again["tasks"]] == ["first"] and again["version"] == 1
    client.restart_workflow(done["workflow_id"], use_latest_definition=True)
    latest = wait_for_status(client, done["workflow_id"], "COMPLETED")
    assert [t["key"] for t in latest["tasks"]] == ["first", "second"] and latest["version"] == 2


def test_a_paused_workflow_keeps_its_queued_task_until_resumed(examples):
    from helpers import BackgroundWorker, register_sequence
    from worker import Worker, task

    client = examples.client
    name, task_type = unique("pausable"), unique("held")
    register_sequence(client, name, [task_type], retryCount=0)
    workflow_id = client.start_workflow(name, {"n": 1})
    deadline = time.monotonic() + 10
    while not client.get_workflow(workflow_id)["tasks"]:   # queued, no worker yet
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.pause_workflow(workflow_id)
    ran = []

    @task(task_type)
    def held(data):
        ran.append(data)
        return {"ran": True}

    background = BackgroundWorker(Worker(endpoints=[examples.endpoint], handlers=[held]))
    try:
        # a workflow started now queues its task behind the paused one's: once the worker has run
        # it, the claim went past the paused task, which kept its place
        later = client.start_workflow(name, {"n": 2})
        assert wait_for_status(client, later, "COMPLETED")["output"]["step0"] == {"ran": True}
        assert ran == [{"n": 2}] and client.get_workflow(workflow_id)["tasks"][0]["status"] == "SCHEDULED"
        client.resume_workflow(workflow_id)
        assert wait_for_status(client, workflow_id, "COMPLETED")["output"]["step0"] == {"ran": True}
        assert ran == [{"n": 2}, {"n": 1}]
    finally:
        background.stop()
