"""A workflow as a plain JSON record: what the archive keeps, shaped like the API's Workflow
message (the same field names), so an archived workflow reads like a stored one."""

from __future__ import annotations

from typing import Any

from .state import TaskState, WorkflowState


def workflow_record(state: WorkflowState) -> dict[str, Any]:
    record: dict[str, Any] = {
        "workflow_id": state.workflow_id, "name": state.name, "version": state.version,
        "status": str(state.status), "correlation_id": state.correlation_id, "input": state.input,
        "reason": state.reason, "created_at_ms": state.created_at_ms, "updated_at_ms": state.updated_at_ms,
        "ended_at_ms": state.ended_at_ms, "variables": state.variables,
        "parent_workflow_id": state.parent.split("|", 1)[0], "tasks": [task_record(t) for t in state.tasks]}
    if state.output is not None:
        record["output"] = state.output
    return record


def task_record(task: TaskState) -> dict[str, Any]:
    spec, runtime = task.spec, task.runtime
    record: dict[str, Any] = {
        "task_id": spec.task_id, "reference_name": spec.ref, "task_type": spec.task_type, "kind": spec.kind,
        "status": str(runtime.status), "attempt": spec.attempt, "input": spec.input, "reason": runtime.reason,
        "worker_id": runtime.worker_id, "scheduled_at_ms": spec.scheduled_at_ms,
        "started_at_ms": runtime.started_at_ms, "ended_at_ms": runtime.ended_at_ms, "key": spec.key,
        "sub_workflow_id": spec.extra.get("child", "")}
    if task.output is not None:
        record["output"] = task.output
    return record
