"""The decider: a pure function from a workflow's stored state to the next transitions.

`decide(workflow, now_ms, new_id)` reads nothing and writes nothing. Every node decides the
workflows whose events it stored (`orchestrator.cluster.deciding`): it loads the workflow from
Redis, calls `decide`, and applies the returned `Decision` in one Lua call that succeeds only
if the workflow's revision is still the one it read (the leader, which also decides what
needs a clock, fences its calls with its epoch too). Keeping it pure is what lets every rule
be tested without servers.

Order of one decision: apply operator commands (retry, rerun, skip, restart); then,
by status: a finished workflow cancels what is still active; a PAUSED one waits; a
COMPENSATING one runs its compensations; a RUNNING one is walked from its first task, each
task advanced by its kind's step (`orchestrator.core.kinds`, run by `Walk.run`).
"""

from __future__ import annotations

import json
from typing import Any
from collections.abc import Callable

from .. import state as m
from .. import statuses as st
from ..limits import MAX_SUBWORKFLOW_DEPTH
from ..namespaces import relative
from .compensation import compensate, has_compensations
from .decision import Decision, NewWorkflow
from .operations import apply_commands
from ..values import seconds_ms
from .instances import SEQ
from .walk import Outcome, Walk, retry_delay_ms

__all__ = ["Decision", "NewWorkflow", "decide", "give_up", "retry_delay_ms"]

FAILURE_WORKFLOW_STATUSES = frozenset({st.FAILED, st.TIMED_OUT, st.COMPENSATION_FAILED})


def decide(wf: m.WorkflowState, now_ms: int, new_id: Callable[[], str],
           new_workflow_id: Callable[[], str] | None = None) -> Decision:
    """`new_id`: a new task id; `new_workflow_id`: the id of a workflow the decision starts that is not
    this one's child (START_WORKFLOW), which the store must be able to create in the same step
    (by default `new_id`)."""
    decision = Decision()
    walk = Walk(wf, now_ms, new_id, decision, new_workflow_id)
    apply_commands(walk)
    if wf.status in st.TERMINAL_WORKFLOW:
        cancel_active(walk, f"workflow is {wf.status}")
    elif wf.status == st.COMPENSATING:
        _compensate(walk)
    elif wf.status == st.RUNNING:
        _run(walk)
    return decision


def give_up(wf: m.WorkflowState, now_ms: int, new_id: Callable[[], str], reason: str) -> Decision:
    """The decision for a workflow the engine cannot decide (or whose decision cannot be stored):
    it ends FAILED with `reason`, its active tasks cancelled, its failure workflow started.
    Touches neither the definition's tasks nor any user data, so it can be stored when the
    ordinary decision could not."""
    decision = Decision()
    if wf.status in st.TERMINAL_WORKFLOW:
        return decision
    walk = Walk(wf, now_ms, new_id, decision)
    decision.consumed_commands = [c["field"] for c in wf.commands]
    finish(walk, st.FAILED, None, reason)
    return decision


def _run(walk: Walk) -> None:
    if _timed_out(walk):
        return
    outcome = walk.run(walk.definition["tasks"], "")
    if outcome.kind == "FAILED":
        _fail(walk, outcome)
    elif outcome.kind == "TERMINATE":
        finish(walk, outcome.status, outcome.output or {}, outcome.reason)
    elif outcome.done and not walk.active():
        finish(walk, st.COMPLETED, _workflow_output(walk), "")


def _workflow_output(walk: Walk) -> dict[str, Any]:
    """The `outputParameters` template resolved; without one, as in Conductor, the output of
    the last task that ran."""
    template = walk.definition["outputParameters"]
    if template:
        output: dict[str, Any] = walk.resolve(template)
        return output
    last = max(walk.latest.seen(), key=SEQ, default=None)
    return dict(last.output or {}) if last is not None else {}


def _timed_out(walk: Walk) -> bool:
    limit_ms = seconds_ms(walk.definition.get("timeoutSeconds") or 0)
    if not limit_ms:
        return False
    limit = limit_ms / 1000
    deadline = walk.wf.created_at_ms + limit_ms
    if walk.now < deadline:
        walk.decision.wake(deadline)
        return False
    if walk.definition["timeoutPolicy"] == "ALERT_ONLY":
        walk.decision.log.append(f"ALERT: workflow exceeded timeoutSeconds ({limit:g} s)")
        return False
    finish(walk, st.TIMED_OUT, None, f"workflow exceeded timeoutSeconds ({limit:g} s)")
    return True


def _fail(walk: Walk, outcome: Outcome) -> None:
    if outcome.status == st.FAILED and has_compensations(walk):
        walk.decision.status = st.COMPENSATING
        walk.decision.reason = outcome.reason
        walk.decision.log.append(f"compensating after: {outcome.reason}")
        _compensate(walk)
        return
    finish(walk, outcome.status, None, outcome.reason)


def _compensate(walk: Walk) -> None:
    for task in walk.active():
        if not task.spec.extra.get("compensates"):   # the forward flow stops; only undoing goes on
            walk.stop(task, st.CANCELED, "compensating")
    outcome = compensate(walk)
    if outcome.kind == "FAILED":
        finish(walk, st.COMPENSATION_FAILED, None, outcome.reason)
    elif outcome.done:
        reason = walk.decision.reason or walk.wf.reason
        finish(walk, st.COMPENSATED, None, reason)


def finish(walk: Walk, status: str, output: dict[str, Any] | None, reason: str) -> None:
    """End the workflow: cancel what is active, start its failure workflow if it has one."""
    walk.decision.status = st.WorkflowStatus(status)
    walk.decision.output = output
    walk.decision.reason = reason
    cancel_active(walk, f"workflow {status}")
    walk.decision.log.append(f"workflow {status}" + (f": {reason}" if reason else ""))
    failure_workflow = walk.definition.get("failureWorkflow")
    if failure_workflow and status in FAILURE_WORKFLOW_STATUSES:
        _start_failure_workflow(walk, failure_workflow, status, reason)


def cancel_active(walk: Walk, reason: str) -> None:
    for task in walk.active():
        walk.stop(task, st.CANCELED, reason)


def _failure_workflow_name(walk: Walk, name: str) -> Any:
    """A failure workflow's name: as written, or read from the input (Conductor's
    `$workflow.input.name`, or a `${...}` expression)."""
    if name.startswith("$workflow.input."):
        return walk.wf.input.get(name[len("$workflow.input."):])
    if name.startswith("${"):
        return walk.resolve(name)
    return name


MAX_FAILED_WORKFLOW_CHARS = 256 * 1024
"""How much of the failed workflow's task outputs its failure workflow gets in `failedWorkflow`."""


def _start_failure_workflow(walk: Walk, written: str, status: str, reason: str) -> None:
    wf = walk.wf
    name = _failure_workflow_name(walk, written)
    if not isinstance(name, str) or not name:
        walk.decision.log.append(f"failure workflow not started: '{written}' resolved to {name!r}")
        return
    version = walk.definition.get("failureWorkflowVersion") or 0
    definition = walk.find_workflow(name, int(version))
    if definition is None or wf.depth >= MAX_SUBWORKFLOW_DEPTH:
        why = (f"this workflow is already {wf.depth} workflows deep, the limit is {MAX_SUBWORKFLOW_DEPTH}"
               if definition is not None else "it is not in this run's snapshot of definitions")
        walk.decision.reason = f"{reason} (failure workflow '{name}' not started: {why})"
        walk.decision.log.append(f"failure workflow '{name}' not started: {why}")
        return
    instances = walk.instances()
    failed_tasks = [t.spec.key for t in instances if t.runtime.status in st.UNSUCCESSFUL_TASK]
    failed = next((t for t in reversed(instances) if t.runtime.status in st.UNSUCCESSFUL_TASK), None)
    walk.decision.start_workflows.append(walk.new_workflow(   # one per ending: a retried run may fail again
        f"{wf.workflow_id}.failure.{walk.new_id()[:12]}", definition,
        {"workflowId": wf.workflow_id, "workflowName": relative(wf.name), "status": status, "reason": reason,
         "input": wf.input, "failedTasks": failed_tasks,
         # Conductor's names for the same facts, and the failed execution itself
         "failureStatus": status, "failureTaskId": failed.task_id if failed is not None else None,
         "failedWorkflow": _failed_workflow(walk, status, reason, instances)},
        correlation_id=wf.correlation_id, parent=""))


def _failed_workflow(walk: Walk, status: str, reason: str, instances: list[Any]) -> dict[str, Any]:
    """The failed execution as Conductor hands it to a failure workflow (`failedWorkflow`): its
    id, name, input, status, reason and tasks; task outputs only while they fit in
    MAX_FAILED_WORKFLOW_CHARS."""
    wf = walk.wf
    tasks = [{"taskId": t.task_id, "referenceTaskName": t.spec.key, "taskType": relative(t.spec.task_type),
              "status": str(t.runtime.status), "reasonForIncompletion": t.runtime.reason,
              "retryCount": t.spec.attempt, "outputData": t.output or {}} for t in instances]
    name = relative(wf.name)
    failed = {"workflowId": wf.workflow_id, "workflowName": name, "workflowType": name, "version": wf.version,
              "input": wf.input, "status": status, "reasonForIncompletion": reason,
              "correlationId": wf.correlation_id, "tasks": tasks}
    if _size(failed) > MAX_FAILED_WORKFLOW_CHARS:
        failed["tasks"] = [{k: v for k, v in task.items() if k != "outputData"} for task in tasks]
    if _size(failed) > MAX_FAILED_WORKFLOW_CHARS:   # the input is also in the failure workflow's `input`
        failed["input"] = {}
    return failed


def _size(value: Any) -> int:
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError):
        return MAX_FAILED_WORKFLOW_CHARS + 1
