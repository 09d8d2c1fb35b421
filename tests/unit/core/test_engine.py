"""The decider, alone: no Redis, no etcd, no network."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.core.apply import apply as core_apply
from orchestrator.core.decider import decide, retry_delay_ms

NOW = 1_700_000_000_000


def task_defs(**overrides):
    return {name: normalise_task_def({"name": name, **overrides}) for name in ("fetch", "charge")}


def make_workflow(defs=None, **task_overrides) -> m.WorkflowState:
    defs = defs or task_defs(**task_overrides)
    definition = normalise_workflow_def({
        "name": "order", "tasks": [
            {"name": "fetch", "taskReferenceName": "fetch_ref", "inputParameters": {"id": "${workflow.input.id}"}},
            {"name": "charge", "taskReferenceName": "charge_ref",
             "inputParameters": {"amount": "${fetch_ref.output.amount}",
                                 "note": "order ${workflow.input.id} for ${fetch_ref.output.amount}"}},
        ],
        "outputParameters": {"paid": "${charge_ref.output.paid}", "wf": "${workflow.workflowId}"},
    }, defs)
    return m.WorkflowState(workflow_id="wf1", name="order", version=1, status=st.RUNNING, input={"id": 7},
                           correlation_id="c", created_at_ms=NOW, updated_at_ms=NOW, definition=definition,
                           task_defs=defs)


def ids():
    counter = itertools.count()
    return lambda: f"t{next(counter)}"


def apply(wf: m.WorkflowState, decision) -> None:
    """The core's pure apply, written back into `wf` so that a test can keep its reference."""
    new, _ = core_apply(wf, decision, NOW)
    wf.__dict__.update(new.__dict__)


def finish(wf: m.WorkflowState, task_id: str, status: st.TaskStatus, output=None, reason="", at=NOW) -> None:
    task = next(t for t in wf.tasks if t.task_id == task_id)
    task.runtime.status = status
    task.runtime.ended_at_ms = at
    task.runtime.reason = reason
    task.output = output


def start_task(wf: m.WorkflowState, task_id: str, at=NOW) -> None:
    task = next(t for t in wf.tasks if t.task_id == task_id)
    task.runtime.status = st.IN_PROGRESS
    task.runtime.started_at_ms = at
    task.runtime.queued = False


def test_new_workflow_schedules_first_task_with_resolved_input():
    wf = make_workflow()
    decision = decide(wf, NOW, ids())
    assert [t.spec.ref for t in decision.new_tasks] == ["fetch_ref"]
    assert decision.new_tasks[0].spec.input == {"id": 7}
    assert decision.enqueue == [("fetch", "t0")]
    assert decision.status is None


def test_sequence_runs_to_completion_with_output_template():
    wf, new_id = make_workflow(), ids()
    apply(wf, decide(wf, NOW, new_id))
    start_task(wf, "t0")
    assert decide(wf, NOW, new_id).empty  # in progress, nothing to do
    finish(wf, "t0", st.TASK_COMPLETED, {"amount": 12.5})
    second = decide(wf, NOW, new_id)
    assert second.new_tasks[0].spec.input == {"amount": 12.5, "note": "order 7 for 12.5"}
    apply(wf, second)
    start_task(wf, "t1")
    finish(wf, "t1", st.TASK_COMPLETED, {"paid": True})
    last = decide(wf, NOW, new_id)
    assert last.status == st.COMPLETED
    assert last.output == {"paid": True, "wf": "wf1"}


def test_failed_task_is_retried_after_fixed_delay_then_enqueued():
    wf, new_id = make_workflow(retryCount=2, retryDelaySeconds=5), ids()
    apply(wf, decide(wf, NOW, new_id))
    start_task(wf, "t0")
    finish(wf, "t0", st.TASK_FAILED, reason="boom")
    retry = decide(wf, NOW, new_id)
    assert retry.new_tasks[0].spec.attempt == 1
    assert retry.enqueue == []                      # not before its back-off
    assert retry.wake_at_ms == NOW + 5000
    apply(wf, retry)
    assert decide(wf, NOW + 4999, new_id).enqueue == []
    due = decide(wf, NOW + 5000, new_id)
    assert due.enqueue == [("fetch", "t1")]
    assert due.changed_runtimes["t1"].queued


def test_retries_exhausted_fails_workflow_with_reason():
    wf, new_id = make_workflow(retryCount=1, retryDelaySeconds=0), ids()
    apply(wf, decide(wf, NOW, new_id))
    for attempt_id in ("t0", "t1"):
        start_task(wf, attempt_id)
        finish(wf, attempt_id, st.TASK_FAILED, reason="card declined")
        apply(wf, decide(wf, NOW, new_id))
    assert wf.status == st.FAILED
    assert "after 2 attempt(s): card declined" in wf.reason


def test_terminal_error_is_never_retried():
    wf, new_id = make_workflow(retryCount=5), ids()
    apply(wf, decide(wf, NOW, new_id))
    start_task(wf, "t0")
    finish(wf, "t0", st.FAILED_WITH_TERMINAL_ERROR, reason="invalid card")
    decision = decide(wf, NOW, new_id)
    assert decision.status == st.FAILED and not decision.new_tasks


def test_lease_timeout_counts_as_a_retryable_failure():
    wf, new_id = make_workflow(retryCount=1, retryDelaySeconds=0), ids()
    apply(wf, decide(wf, NOW, new_id))
    start_task(wf, "t0")
    finish(wf, "t0", st.TASK_TIMED_OUT, reason="lease expired")
    decision = decide(wf, NOW, new_id)
    assert decision.new_tasks[0].spec.attempt == 1 and decision.enqueue == [("fetch", "t1")]


def test_total_timeout_times_out_an_attempt_that_keeps_heartbeating():
    wf, new_id = make_workflow(timeoutSeconds=30), ids()
    apply(wf, decide(wf, NOW, new_id))
    start_task(wf, "t0", at=NOW)
    early = decide(wf, NOW + 1000, new_id)
    assert early.wake_at_ms == NOW + 30_000 and not early.changed_runtimes
    late = decide(wf, NOW + 30_000, new_id)
    assert late.changed_runtimes["t0"].status == st.TASK_TIMED_OUT
    assert late.drop_leases == [("fetch", "t0")]


def test_terminated_workflow_cancels_active_tasks():
    wf, new_id = make_workflow(), ids()
    apply(wf, decide(wf, NOW, new_id))
    wf.status = st.TERMINATED
    decision = decide(wf, NOW, new_id)
    assert decision.changed_runtimes["t0"].status == st.CANCELED
    assert decision.dequeue == [("fetch", "t0")]
    assert not decision.new_tasks


@pytest.mark.parametrize("logic,attempt,expected", [
    ("FIXED", 0, 2000), ("FIXED", 4, 2000),
    ("LINEAR_BACKOFF", 0, 6000), ("LINEAR_BACKOFF", 2, 18000),
    ("EXPONENTIAL_BACKOFF", 0, 2000), ("EXPONENTIAL_BACKOFF", 3, 16000),
    ("EXPONENTIAL_BACKOFF", 10, 60000),  # capped by maxRetryDelaySeconds
])
def test_retry_delays(logic, attempt, expected):
    task_def = normalise_task_def({"name": "x", "retryLogic": logic, "retryDelaySeconds": 2,
                                   "backoffScaleFactor": 3, "maxRetryDelaySeconds": 60})
    assert retry_delay_ms(task_def, attempt) == expected
