"""At-least-once delivery with a real node and real workers: retries, leases, heartbeats."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import grpc

from helpers import register_sequence, unique, wait_for_status
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc
from worker import TerminalTaskError, context, task


def test_failed_attempts_are_retried_until_success_after_their_back_off(node, run_worker):
    """EXPONENTIAL_BACKOFF with retryDelaySeconds 0.5: attempt 1 waits 0.5 s after attempt 0
    failed, attempt 2 waits 1 s after attempt 1 failed; the worker cannot get a retry earlier
    and gets it promptly once it is due (the node wakes up for it)."""
    client = node.client
    name, task_name = unique("wf"), unique("flaky")
    register_sequence(client, name, [task_name], retryCount=3, retryDelaySeconds=0.5,
                      retryLogic="EXPONENTIAL_BACKOFF")
    attempts: list[int] = []

    @task(task_name)
    def flaky(data: dict) -> dict:
        attempts.append(context().attempt)
        if len(attempts) < 3:
            raise RuntimeError(f"transient failure {len(attempts)}")
        return {"ok": True}

    run_worker([node.endpoint], [flaky])
    workflow_id = client.start_workflow(name, {"n": 1})
    done = wait_for_status(client, workflow_id, "COMPLETED")
    assert attempts == [0, 1, 2]
    tasks = done["tasks"]
    statuses = [(t.get("attempt", 0), t["status"]) for t in tasks]
    assert statuses == [(0, "FAILED"), (1, "FAILED"), (2, "COMPLETED")]
    assert "RuntimeError: transient failure 1" in tasks[0]["reason"]
    # the back-off: from the end of a failed attempt to the start of its retry, 0.5 s then 1 s
    # (never less; a little more for the worker to be handed the task on a loaded machine)
    gaps_ms = [int(tasks[i + 1]["started_at_ms"]) - int(tasks[i]["ended_at_ms"]) for i in (0, 1)]
    for gap_ms, back_off_ms in zip(gaps_ms, (500, 1000), strict=True):
        assert back_off_ms <= gap_ms <= back_off_ms + 400, f"gaps {gaps_ms} ms, back-offs 500 and 1000 ms"


def test_idempotency_key_is_one_per_execution_and_kept_across_retries(node: Any, recorder: Any) -> None:
    """The idempotency key was `workflow:ref`, shared by loop iterations and by a rerun (issue 8)."""
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


def test_terminal_failure_is_not_retried(node, run_worker):
    client = node.client
    name, task_name = unique("wf"), unique("bad")
    register_sequence(client, name, [task_name], retryCount=5, retryDelaySeconds=0)
    calls: list[str] = []

    @task(task_name)
    def refuse(data: dict) -> dict:
        calls.append(context().task_id)
        raise TerminalTaskError("card permanently declined")

    run_worker([node.endpoint], [refuse])
    workflow_id = client.start_workflow(name, {"n": 1})
    failed = wait_for_status(client, workflow_id, "FAILED")
    assert len(calls) == 1 and len(failed["tasks"]) == 1
    assert "card permanently declined" in failed["reason"]


def test_retries_exhausted_fail_the_workflow(node, run_worker):
    client = node.client
    name, task_name = unique("wf"), unique("broken")
    register_sequence(client, name, [task_name], retryCount=1, retryDelaySeconds=0)

    @task(task_name)
    def broken(data: dict) -> dict:
        raise ValueError("always")

    run_worker([node.endpoint], [broken])
    failed = wait_for_status(client, client.start_workflow(name, {"n": 1}), "FAILED")
    assert [t["status"] for t in failed["tasks"]] == ["FAILED", "FAILED"]
    assert "after 2 attempt(s)" in failed["reason"]


def test_silent_worker_loses_its_lease_and_the_task_is_redispatched(node, run_worker):
    """A worker that takes a task and goes silent (no heartbeat, no result) loses it to another."""
    client = node.client
    name, task_name = unique("wf"), unique("leased")
    register_sequence(client, name, [task_name], retryCount=2, retryDelaySeconds=0, responseTimeoutSeconds=1)
    workflow_id = client.start_workflow(name, {"n": 5})

    outbox: queue.Queue = queue.Queue()
    outbox.put(pb.WorkerMessage(hello=pb.WorkerHello(worker_id="silent", task_types=[task_name], capacity=1)))
    channel = grpc.insecure_channel(node.endpoint)
    responses = pb_grpc.TaskServiceStub(channel).Connect(iter(outbox.get, None))
    first = next(responses).task
    assert first.workflow_id == workflow_id and first.lease_ms == 1000

    @task(task_name)
    def healthy(data: dict) -> dict:
        return {"attempt": context().attempt, "key": context().idempotency_key}

    run_worker([node.endpoint], [healthy])
    done = wait_for_status(client, workflow_id, "COMPLETED", timeout_s=15)
    first_attempt, second_attempt = done["tasks"]
    assert first_attempt["status"] == "TIMED_OUT" and "lease expired" in first_attempt["reason"]
    assert first_attempt["worker_id"] == "silent"
    assert second_attempt["output"]["attempt"] == 1
    assert second_attempt["output"]["key"] == first.idempotency_key   # a retry keeps the execution's key
    assert first.idempotency_key.startswith(f"{workflow_id}/step0/")

    # the silent worker's late result is refused and changes nothing
    outbox.put(pb.WorkerMessage(result=pb.TaskResult(
        workflow_id=workflow_id, task_id=first.task_id, status=pb.TaskResult.COMPLETED, output_json=b"{}")))
    ack = next(responses).result_ack
    assert not ack.accepted and "TIMED_OUT" in ack.detail
    assert client.get_workflow(workflow_id)["tasks"] == done["tasks"]
    outbox.put(None)
    channel.close()


def test_heartbeats_keep_a_long_task_alive(node, run_worker):
    client = node.client
    name, task_name = unique("wf"), unique("slow")
    register_sequence(client, name, [task_name], retryCount=0, responseTimeoutSeconds=0.5)
    started = threading.Event()

    @task(task_name)
    def slow(data: dict) -> dict:
        started.set()
        time.sleep(2.0)   # four lease lengths: only heartbeats keep it
        return {"slept": 2.0}

    run_worker([node.endpoint], [slow])
    done = wait_for_status(client, client.start_workflow(name, {"n": 1}), {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and len(done["tasks"]) == 1


def test_graceful_worker_shutdown_hands_tasks_back_without_a_failed_attempt(node, run_worker):
    client = node.client
    name, task_name = unique("wf"), unique("handback")
    register_sequence(client, name, [task_name], retryCount=0)
    release = threading.Event()

    @task(task_name)
    def stuck(data: dict) -> dict:
        release.wait(10)
        return {"who": "first"}

    first = run_worker([node.endpoint], [stuck], concurrency=1)
    workflow_id = client.start_workflow(name, {"n": 1})
    deadline = time.monotonic() + 10
    while first.worker.stats.received == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.stop(grace_s=0.3)   # the handler cannot finish in time: the task is released
    release.set()

    @task(task_name)
    def fine(data: dict) -> dict:
        return {"who": "second"}

    run_worker([node.endpoint], [fine])
    done = wait_for_status(client, workflow_id, "COMPLETED")
    assert done["output"]["step0"] == {"who": "second"}
    assert len(done["tasks"]) == 1 and done["tasks"][0].get("attempt", 0) == 0  # not counted as a failure
