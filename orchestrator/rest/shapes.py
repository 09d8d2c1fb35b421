"""Our workflows and tasks in the JSON shapes of Conductor's REST API (its SDKs' models).

Conductor's clients validate a few fields against fixed lists and drop a whole answer when one
value is outside them (conductor-python's models raise in their setters), so statuses that
Conductor has no name for are shown as the nearest one it has, and the exact one travels beside
it in a field of our own (`orchestratorStatus`), which those clients ignore.

Numbers: Conductor's models type their counts and durations as integers (`timeoutSeconds` is a
long), and its SDKs and tools print or compare them as such. We keep definitions' durations as
floats (a retry delay may be 0.5 s) and carry workflows and tasks in protobuf Structs, whose
numbers are doubles; so every whole number is shown as an integer here (`0`, not `0.0`), the
way the gRPC client restores them, and only a true fraction stays a float.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf import json_format

from orchestrator_api.v1 import orchestrator_pb2 as pb

from ..core.namespaces import relative
from ..core.payloads import whole_numbers
from ..core.schema import TaskDef, WorkflowDef
from ..store import ClaimedTask

# Our workflow statuses Conductor lacks, as Conductor's clients can read them.
CONDUCTOR_WORKFLOW_STATUS = {"COMPENSATING": "RUNNING", "COMPENSATED": "TERMINATED",
                             "COMPENSATION_FAILED": "FAILED"}
TERMINAL = ("COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED", "COMPENSATED", "COMPENSATION_FAILED")
TASK_DEF_ENUMS = {"timeoutPolicy": ("RETRY", "TIME_OUT_WF", "ALERT_ONLY"),
                  "retryLogic": ("FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF")}


def _dict(message: Any) -> dict[str, Any]:
    return whole_numbers(json_format.MessageToDict(message, preserving_proto_field_name=True))  # type: ignore[no-any-return]


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def workflow_status(status: str) -> str:
    return CONDUCTOR_WORKFLOW_STATUS.get(status, status)


def task_json(task: pb.Task, workflow: pb.Workflow, seq: int) -> dict[str, Any]:
    task_type = task.task_type or task.kind
    shown: dict[str, Any] = {
        "taskId": task.task_id, "taskType": task_type, "taskDefName": task.task_type or task.reference_name,
        "referenceTaskName": task.key or task.reference_name, "status": task.status,
        "inputData": _dict(task.input), "outputData": _dict(task.output), "retryCount": task.attempt,
        "seq": seq, "pollCount": 1 if task.started_at_ms else 0, "workerId": task.worker_id or None,
        "reasonForIncompletion": task.reason or None, "scheduledTime": task.scheduled_at_ms,
        "startTime": task.started_at_ms, "endTime": task.ended_at_ms, "updateTime": task.ended_at_ms or
        task.started_at_ms or task.scheduled_at_ms, "workflowInstanceId": workflow.workflow_id,
        "workflowType": workflow.name, "correlationId": workflow.correlation_id or None,
        "callbackAfterSeconds": 0, "workflowTask": {"name": task.task_type or task.reference_name,
                                                    "taskReferenceName": task.reference_name, "type": task.kind}}
    if task.sub_workflow_id:
        shown["subWorkflowId"] = task.sub_workflow_id
    return shown


def workflow_json(workflow: pb.Workflow, *, include_tasks: bool = True) -> dict[str, Any]:
    tasks = [task_json(t, workflow, i + 1) for i, t in enumerate(workflow.tasks)] if include_tasks else []
    failed = sorted({t.key or t.reference_name for t in workflow.tasks
                     if t.status in ("FAILED", "FAILED_WITH_TERMINAL_ERROR", "TIMED_OUT")})
    return {
        "workflowId": workflow.workflow_id, "workflowName": workflow.name, "workflowType": workflow.name,
        "workflowVersion": workflow.version, "version": workflow.version,
        "status": workflow_status(workflow.status), "orchestratorStatus": workflow.status,
        "correlationId": workflow.correlation_id or None, "input": _dict(workflow.input),
        "output": _dict(workflow.output), "variables": _dict(workflow.variables),
        "reasonForIncompletion": workflow.reason or None, "createTime": workflow.created_at_ms,
        "startTime": workflow.created_at_ms, "updateTime": workflow.updated_at_ms, "endTime": workflow.ended_at_ms,
        "parentWorkflowId": workflow.parent_workflow_id or None, "priority": 0, "tasks": tasks,
        "failedReferenceTaskNames": failed, "failedTaskNames": failed}


def workflow_status_json(workflow: pb.Workflow, *, output: bool, variables: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {"workflowId": workflow.workflow_id, "correlationId": workflow.correlation_id or None,
                             "status": workflow_status(workflow.status)}
    if output:
        shown["output"] = _dict(workflow.output)
    if variables:
        shown["variables"] = _dict(workflow.variables)
    return shown


def workflow_summary(workflow: pb.Workflow) -> dict[str, Any]:
    """Conductor's WorkflowSummary: times as ISO text, input and output as JSON text."""
    ended = workflow.ended_at_ms if workflow.status in TERMINAL else 0
    return {
        "workflowType": workflow.name, "version": workflow.version, "workflowId": workflow.workflow_id,
        "correlationId": workflow.correlation_id or None, "startTime": _iso(workflow.created_at_ms),
        "updateTime": _iso(workflow.updated_at_ms), "endTime": _iso(ended),
        "status": workflow_status(workflow.status), "orchestratorStatus": workflow.status,
        "input": json.dumps(_dict(workflow.input), separators=(",", ":")),
        "output": json.dumps(_dict(workflow.output), separators=(",", ":")),
        "reasonForIncompletion": workflow.reason or None,
        "executionTime": max(0, ended - workflow.created_at_ms) if ended else 0, "priority": 0}


def polled_task(task: ClaimedTask, worker_id: str, now_ms: int) -> dict[str, Any]:
    """A task handed to a polling worker: IN_PROGRESS, with its input and its lease."""
    spec = task.spec
    return {
        "taskId": spec.task_id, "workflowInstanceId": task.workflow_id, "taskType": relative(spec.task_type),
        "taskDefName": relative(spec.task_type), "referenceTaskName": spec.key, "status": "IN_PROGRESS",
        "inputData": spec.input, "retryCount": spec.attempt, "seq": 0, "pollCount": 1,
        "scheduledTime": spec.scheduled_at_ms, "startTime": now_ms, "updateTime": now_ms,
        "workerId": worker_id, "responseTimeoutSeconds": max(1, task.lease_ms // 1000),
        "callbackAfterSeconds": 0, "outputData": {},
        "workflowTask": {"name": relative(spec.task_type), "taskReferenceName": spec.ref, "type": spec.kind}}


def task_def_json(definition: TaskDef) -> dict[str, Any]:
    shown: dict[str, Any] = whole_numbers(dict(definition))
    for name, allowed in TASK_DEF_ENUMS.items():
        if shown.get(name) not in allowed:
            shown.pop(name, None)
    return shown


def workflow_def_json(definition: WorkflowDef) -> dict[str, Any]:
    shown: dict[str, Any] = whole_numbers(dict(definition))
    if shown.get("timeoutPolicy") not in ("TIME_OUT_WF", "ALERT_ONLY"):
        shown.pop("timeoutPolicy", None)
    return shown
