"""The console's writes (and its reads of workflows as the API shows them): calls of the workflows
service (service/workflows.py), as the gRPC API makes them.

So a start, a pause or a signal from the console is validated, stored and decided exactly as it
is from the CLI or grpcurl. Whatever a call fails with comes back as `Refused` with the API's
status and message (`service.errors.refusing`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from orchestrator_api.structs import from_struct, to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb

from ..core.definitions import MAX_VERSION
from ..core.payloads import whole_numbers
from ..service.errors import Refused, refusing
from ..service.workflows import SearchQuery, Signal, StartRequest, Workflows
from ..wire import fit, found_message, search_response

def parse_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object typed into a form; Refused(INVALID_ARGUMENT) with the parser's words otherwise."""
    text = text.strip() or "{}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise Refused("INVALID_ARGUMENT", f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Refused("INVALID_ARGUMENT", f"{what} must be a JSON object ({{...}}), not {type(value).__name__}")
    return value


def _struct(value: dict[str, Any], what: str) -> dict[str, Any]:
    """`value` as the API carries it (a protobuf Struct's values)."""
    try:
        return from_struct(to_struct(value))
    except (TypeError, ValueError) as exc:
        raise Refused("INVALID_ARGUMENT", f"{what}: {exc}") from None


@dataclass(frozen=True)
class Operation:
    name: str
    label: str
    explain: str
    method: str            # the gRPC method it stands for, whose rule its form follows
    danger: bool = False


OPERATIONS = {op.name: op for op in (
    Operation("pause", "Pause", "No new task starts until it is resumed; tasks already running finish.",
              "WorkflowService/PauseWorkflow"),
    Operation("resume", "Resume", "Queued tasks are offered to workers again at once.",
              "WorkflowService/ResumeWorkflow"),
    Operation("terminate", "Terminate", "Ends the workflow TERMINATED now; running tasks are cancelled "
                                        "(their results will be refused).", "WorkflowService/TerminateWorkflow",
              danger=True),
    Operation("compensate", "Terminate and compensate", "Undoes the completed steps that name a compensation, "
                                                         "newest first, then ends COMPENSATED.",
              "WorkflowService/TerminateWorkflow", danger=True),
    Operation("retry", "Retry", "Runs the failed tasks again (and what follows), keeping what completed.",
              "WorkflowService/RetryWorkflow"),
    Operation("restart", "Restart", "Runs the whole workflow again from its first task, with the same input.",
              "WorkflowService/RestartWorkflow"),
    Operation("signal", "Signal", "Completes the waiting WAIT or HUMAN task with the output given.",
              "WorkflowService/SignalTask"),
)}


async def run(workflows: Workflows, op: str, workflow_id: str, form: dict[str, str]) -> str:
    """Run operation `op` on `workflow_id`; returns what happened, in words. Raises Refused."""
    if op == "pause":
        await refusing(workflows.pause(workflow_id))
        return "paused"
    if op == "resume":
        await refusing(workflows.resume(workflow_id))
        return "resumed"
    if op in ("terminate", "compensate"):
        reason = form.get("reason", "").strip() or "terminated from the console"
        await refusing(workflows.terminate(workflow_id, reason, compensate=op == "compensate"))
        return "terminated" if op == "terminate" else "compensating"
    if op == "retry":
        await refusing(workflows.retry(workflow_id))
        return "retried"
    if op == "restart":
        await refusing(workflows.restart(workflow_id, use_latest_definition=form.get("latest") == "1"))
        return "restarted"
    if op == "signal":
        output = _struct(parse_object(form.get("output", ""), "output"), "output")
        await refusing(workflows.signal(Signal(
            workflow_id=workflow_id, task_reference_name=form.get("task", ""), task_id=form.get("task_id", ""),
            failed=form.get("failed") == "1", output=output, reason=form.get("reason", ""))))
        return f"signalled {form.get('task', '')}".strip()
    raise Refused("NOT_FOUND", f"no operation '{op}'")


async def start(workflows: Workflows, form: dict[str, str]) -> tuple[str, bool]:
    """Start a workflow from the definition page's form: (workflow id, created)."""
    workflow_input = _struct(parse_object(form.get("input", ""), "input"), "input")
    version = form.get("version", "0").strip() or "0"
    if not version.isdigit() or int(version) > MAX_VERSION:
        raise Refused("INVALID_ARGUMENT", f"version must be a number from 0 (the latest) to {MAX_VERSION}")
    started = await refusing(workflows.start(StartRequest(
        name=form.get("name", ""), version=int(version), input=workflow_input,
        correlation_id=form.get("correlation_id", "").strip(), idempotency_key=form.get("idempotency_key", ""))))
    return started.workflow_id, started.created


async def archived(workflows: Workflows, workflow_id: str) -> dict[str, Any] | None:
    """A workflow that left Redis after its retention, read back from the archive (the service's
    `get` falls back to it), as plain data for the page; None when it is not archived either."""
    try:
        found = await refusing(workflows.get(workflow_id))
    except Refused:
        return None
    message = fit([found_message(found, include_tasks=True)])[0]
    shown: dict[str, Any] = whole_numbers(json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
    for record in (shown, *shown.get("tasks", [])):   # int64 comes as text in JSON mapping
        record.update({k: int(v) for k, v in record.items() if k.endswith("_ms")})
    return shown


async def search(workflows: Workflows, *, name: str, status: str, correlation_id: str, cursor: str,
                 limit: int, created_from_ms: int, created_to_ms: int, text: str = "") -> pb.SearchWorkflowsResponse:
    """A page of the search, as the gRPC API answers it."""
    page = await refusing(workflows.search(SearchQuery(
        name=name, status=status, correlation_id=correlation_id, page_token=cursor, limit=limit,
        created_from_ms=created_from_ms, created_to_ms=created_to_ms, text=text)))
    return search_response(page.workflows, page.next_page_token)
