"""The API's messages of what the services answer: definitions, workflows and tasks as protobuf.

The gRPC API answers with them; the Conductor API and the console show workflows from them too
(their JSON and pages read the very message gRPC would send), so all three show the same."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from orchestrator_api.structs import to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb

from .core.namespaces import relative
from .core import state as m
from .core.schema import TaskDef, WorkflowDef


# What one answer may carry: below the default 4 MiB gRPC message limit with room to spare.
MESSAGE_BUDGET = 4 * 1024 * 1024 - 128 * 1024
TRUNCATED = "_truncated"


def fit(workflows: list[pb.Workflow], budget: int = MESSAGE_BUDGET) -> list[pb.Workflow]:
    """Keep an answer under `budget` bytes: replace the largest inputs and outputs (of tasks first,
    then of the workflows) by a marker saying how big they were, until it fits."""
    total = sum(w.ByteSize() for w in workflows)
    if total <= budget:
        return workflows
    fields: list[tuple[int, Any, str]] = []
    for workflow in workflows:
        for task in workflow.tasks:
            fields += [(task.input.ByteSize(), task, "input"), (task.output.ByteSize(), task, "output")]
        fields += [(workflow.input.ByteSize(), workflow, "input"), (workflow.output.ByteSize(), workflow, "output"),
                   (workflow.variables.ByteSize(), workflow, "variables")]
    for size, holder, name in sorted(fields, key=lambda f: -f[0]):
        if total <= budget or size < 64:
            break
        marker = to_struct({TRUNCATED: f"{size} bytes not shown: the answer would exceed its size limit; "
                                       "read this workflow alone (GetWorkflow) or its tasks' data from their "
                                       "own systems"})
        getattr(holder, name).CopyFrom(marker)
        total -= size - marker.ByteSize()
    return workflows


def task_def_message(definition: TaskDef) -> pb.TaskDef:
    return pb.TaskDef(name=definition["name"], definition=to_struct(definition))


def workflow_def_message(definition: WorkflowDef) -> pb.WorkflowDef:
    return pb.WorkflowDef(name=definition["name"], version=definition["version"],
                          definition=to_struct(definition))


def workflow_message(state: m.WorkflowState, *, include_tasks: bool) -> pb.Workflow:
    message = pb.Workflow(
        workflow_id=state.workflow_id, name=relative(state.name), version=state.version, status=state.status,
        correlation_id=state.correlation_id, input=to_struct(state.input), reason=state.reason,
        created_at_ms=state.created_at_ms, updated_at_ms=state.updated_at_ms, ended_at_ms=state.ended_at_ms,
        variables=to_struct(state.variables), parent_workflow_id=state.parent.split("|", 1)[0])
    if state.output is not None:
        message.output.CopyFrom(to_struct(state.output))
    if include_tasks:
        message.tasks.extend(task_message(t) for t in state.tasks)
    return fit([message])[0]


def task_message(task: m.TaskState) -> pb.Task:
    spec, runtime = task.spec, task.runtime
    message = pb.Task(
        task_id=spec.task_id, reference_name=spec.ref, task_type=relative(spec.task_type), kind=spec.kind,
        status=runtime.status, attempt=spec.attempt, input=to_struct(spec.input), reason=runtime.reason,
        worker_id=runtime.worker_id, scheduled_at_ms=spec.scheduled_at_ms,
        started_at_ms=runtime.started_at_ms, ended_at_ms=runtime.ended_at_ms, key=spec.key,
        sub_workflow_id=spec.extra.get("child", ""))
    if task.output is not None:
        message.output.CopyFrom(to_struct(task.output))
    return message


def archived_message(record: dict[str, Any], *, include_tasks: bool) -> pb.Workflow:
    """An archived workflow record (`core.records`: the Workflow message's own field names)."""
    fields = dict(record) if include_tasks else {k: v for k, v in record.items() if k != "tasks"}
    fields["name"] = relative(str(fields.get("name", "")))
    if include_tasks and isinstance(fields.get("tasks"), list):
        fields["tasks"] = [{**t, "task_type": relative(str(t.get("task_type", "")))} if isinstance(t, dict) else t
                           for t in fields["tasks"]]
    return json_format.ParseDict(fields, pb.Workflow(), ignore_unknown_fields=True)


def found_message(found: m.WorkflowState | dict[str, Any], *, include_tasks: bool) -> pb.Workflow:
    """A workflow as a service found it: stored (a state) or archived (its record)."""
    if isinstance(found, m.WorkflowState):
        return workflow_message(found, include_tasks=include_tasks)
    return archived_message(found, include_tasks=include_tasks)


def search_response(found: list[m.WorkflowState | dict[str, Any]], next_page_token: str) -> pb.SearchWorkflowsResponse:
    """A page of a search as the gRPC API answers it (workflows without their tasks, fit to a message)."""
    return pb.SearchWorkflowsResponse(workflows=fit([found_message(w, include_tasks=False) for w in found]),
                                      next_page_token=next_page_token)
