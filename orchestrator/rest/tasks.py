"""Conductor's task routes (`/api/tasks/...`): what its SDK workers poll and report to.

A poll claims from the same queue the gRPC workers are pushed from (claim and lease in one
atomic step, so each task goes to exactly one worker of either kind). A batch poll that finds
nothing waits for the type's next `ready` broadcast, up to its `timeout`, so a task queued
while a worker waits reaches it in about a millisecond instead of at its next poll.
`update-v2` stores the result and answers with the worker's next task of the same type, so
a busy SDK worker makes one request per task.

IN_PROGRESS updates mean what they mean in Conductor: with `extendLease` the worker is still
at it (its lease is renewed); otherwise the task goes back to the queue, to be polled again
after `callbackAfterSeconds`, keeping the output so far.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core import statuses as st
from ..core.auth import Principal, namespace_for, principal_in
from ..cluster.dispatch import worker_identity
from ..core.clock import now_ms
from ..core.namespaces import queue_of, relative
from ..store import ANY_WORKER, ResultOutcome
from ..service.access import request_namespace
from ..service.errors import Refused
from ..service.tasks import Result
from .common import (RestParts, answering_errors, body_bytes, guarded, json_body, number, object_body, plain,
                     refuse, route, text)
from .shapes import polled_task

MAX_POLL_COUNT = 100
MAX_POLL_WAIT_MS = 30_000
MAX_NAME_LENGTH = 256
MAX_LOG_BYTES = 64 * 1024
MAX_CALLBACK_S = 10 * 365 * 86400
FINAL = {"COMPLETED": st.TASK_COMPLETED, "FAILED": st.TASK_FAILED,
         "FAILED_WITH_TERMINAL_ERROR": st.FAILED_WITH_TERMINAL_ERROR}


def _name(value: str, what: str) -> str:
    if not value or len(value) > MAX_NAME_LENGTH:
        raise Refused("INVALID_ARGUMENT", f"{what} must have 1 to {MAX_NAME_LENGTH} characters")
    return value


def _max_body(parts: RestParts) -> int:
    return parts.limit.max_bytes + 64 * 1024


def _poll_namespace(request: Request) -> str:
    """The namespace a poll serves: Conductor's `domain` (a worker configured with a task
    domain polls that namespace's tasks) or, without one, the request's."""
    domain = text(request, "domain")
    if not domain:
        return request_namespace()
    try:
        namespace = namespace_for(principal_in(request.scope), domain)
    except ValueError as exc:
        raise Refused("INVALID_ARGUMENT", f"domain: {exc}") from None
    except PermissionError as exc:
        raise Refused("PERMISSION_DENIED", str(exc)) from None
    if request_namespace() not in ("", namespace):
        raise Refused("INVALID_ARGUMENT", f"domain '{domain}' and X-Namespace '{request_namespace()}' differ")
    return namespace


def _served_queue(parts: RestParts, request: Request, task_type: str) -> str:
    """The queue a poll of `task_type` takes from (core/namespaces.py); refused when the token
    may not serve it."""
    principal = principal_in(request.scope)
    if parts.tokens is not None:
        refusal = principal.serve_refusal([task_type]) if principal is not None else "a token is required"
        if refusal:
            raise Refused("PERMISSION_DENIED", refusal)
    return queue_of(_poll_namespace(request), task_type)


def _worker_of(request: Request) -> str:
    worker_id = text(request, "workerid") or (request.client.host if request.client else "")
    if worker_id == ANY_WORKER:
        raise Refused("INVALID_ARGUMENT", f"workerid '{ANY_WORKER}' is reserved")
    return _name(worker_id, "workerid")


def _claimant(parts: RestParts, principal: Principal | None, worker_id: str) -> str:
    """The worker id a poll claims under and an update must match: with tokens, qualified by the
    token's name (and its namespace, as token names may repeat across teams), so a token
    reports only what it polled, whatever `workerId` it sends."""
    if parts.tokens is None or principal is None:
        return worker_id
    return worker_identity(principal, principal.namespace or "", worker_id)


@guarded("TaskService/Connect")
@answering_errors
async def batch_poll(parts: RestParts, request: Request) -> Response:
    task_type = _served_queue(parts, request, _name(request.path_params["task_type"], "the task type"))
    worker_id = _worker_of(request)
    count = number(request, "count", 1, 1, MAX_POLL_COUNT)
    wait_ms = number(request, "timeout", 100, 0, MAX_POLL_WAIT_MS)
    claimed = await parts.tasks.poll(task_type, count, _claimant(parts, principal_in(request.scope), worker_id),
                                     wait_ms)
    now = now_ms()
    return JSONResponse([polled_task(t, worker_id, now) for t in claimed])


@guarded("TaskService/Connect")
@answering_errors
async def poll(parts: RestParts, request: Request) -> Response:
    task_type = _served_queue(parts, request, _name(request.path_params["task_type"], "the task type"))
    worker_id = _worker_of(request)
    claimed = await parts.tasks.poll(task_type, 1, _claimant(parts, principal_in(request.scope), worker_id))
    if not claimed:
        return Response(status_code=204)
    return JSONResponse(polled_task(claimed[0], worker_id, now_ms()))


async def _update(parts: RestParts, result: dict[str, Any], principal: Principal | None) -> tuple[str, str, str]:
    """Store a TaskResult; (task id, outcome word, task type). Refused when it cannot apply."""
    task_id, workflow_id = result.get("taskId"), result.get("workflowInstanceId")
    if not isinstance(task_id, str) or not isinstance(workflow_id, str):
        raise Refused("INVALID_ARGUMENT", "taskId and workflowInstanceId are required")
    _name(task_id, "taskId")
    _name(workflow_id, "workflowInstanceId")
    named = result.get("workerId")
    if named is not None and (not isinstance(named, str) or len(named) > MAX_NAME_LENGTH):
        raise Refused("INVALID_ARGUMENT", f"workerId must be text of at most {MAX_NAME_LENGTH} characters")
    worker_id = _claimant(parts, principal, named) if named else ANY_WORKER
    if worker_id == ANY_WORKER and parts.tokens is not None:
        raise Refused("INVALID_ARGUMENT", "workerId is required: with tokens, a worker reports only the tasks "
                                          "it polled itself")
    status = result.get("status")
    if status != "IN_PROGRESS" and status not in FINAL:
        raise Refused("INVALID_ARGUMENT", f"status must be one of IN_PROGRESS, {', '.join(FINAL)}; got "
                                          f"{str(status)[:40]!r}")
    await _keep_logs(parts, task_id, result.get("logs"))
    output = result.get("outputData") or {}
    if status == "IN_PROGRESS":
        return task_id, await _in_progress(parts, workflow_id, task_id, worker_id, result, output), ""
    completed = await parts.tasks.complete(Result(
        workflow_id, task_id, worker_id, FINAL[status], json.dumps(output, ensure_ascii=False),
        str(result.get("reasonForIncompletion") or "")[:4096]))
    ack = completed.ack
    if ack.outcome is ResultOutcome.UNKNOWN:
        raise Refused("NOT_FOUND", f"workflow {workflow_id} has no task {task_id}")
    if ack.outcome is ResultOutcome.STALE:
        raise Refused("FAILED_PRECONDITION", f"task {task_id} is {ack.detail}: its lease expired, it was "
                                             "given to another worker, or its workflow ended")
    return task_id, ack.outcome.name, ack.task_type


async def _in_progress(parts: RestParts, workflow_id: str, task_id: str, worker_id: str, result: dict[str, Any],
                       output: Any) -> str:
    if result.get("extendLease"):
        if await parts.tasks.heartbeat(workflow_id, task_id, worker_id) == 0:
            raise Refused("FAILED_PRECONDITION", f"task {task_id} is not held by worker {worker_id}")
        return "EXTENDED"
    callback_s = result.get("callbackAfterSeconds") or 0
    if (isinstance(callback_s, bool) or not isinstance(callback_s, int | float)
            or not 0 <= callback_s <= MAX_CALLBACK_S):
        raise Refused("INVALID_ARGUMENT", "callbackAfterSeconds must be seconds from 0 to ten years")
    if not await parts.tasks.release(workflow_id, task_id, worker_id, delay_ms=int(callback_s * 1000),
                                     output=output):
        raise Refused("FAILED_PRECONDITION", f"task {task_id} is not in progress with worker {worker_id}")
    return "REQUEUED"


async def _keep_logs(parts: RestParts, task_id: str, logs: Any) -> None:
    if not logs:
        return
    if not isinstance(logs, list):
        raise Refused("INVALID_ARGUMENT", "logs must be a list of {log, createdTime}")
    now = now_ms()
    lines = []
    for entry in logs[:100]:
        if isinstance(entry, dict) and isinstance(entry.get("log"), str):
            created = entry.get("createdTime")
            at = int(created) if isinstance(created, int | float) and created > 0 else now
            lines.append((at * 1000 if at < 10**11 else at, entry["log"]))   # seconds or ms, as SDKs send
    if lines:
        await parts.tasks.add_logs(task_id, lines)


@guarded("TaskService/Connect")
@answering_errors
async def update_task(parts: RestParts, request: Request) -> Response:
    result = object_body(await json_body(request, _max_body(parts), "a TaskResult"), "TaskResult")
    task_id, _, _ = await _update(parts, result, principal_in(request.scope))
    return plain(task_id)


@guarded("TaskService/Connect")
@answering_errors
async def update_task_v2(parts: RestParts, request: Request) -> Response:
    """Store the result, then hand the same worker its next task of that type, if one waits."""
    result = object_body(await json_body(request, _max_body(parts), "a TaskResult"), "TaskResult")
    principal = principal_in(request.scope)
    _, outcome, task_type = await _update(parts, result, principal)
    worker_id = result.get("workerId")
    if outcome not in ("STORED", "DUPLICATE") or not task_type or not isinstance(worker_id, str) or not worker_id:
        return Response(status_code=204)
    if parts.tokens is not None and (principal is None or not principal.may_serve([relative(task_type)])):
        return Response(status_code=204)
    claimed = await parts.tasks.poll(task_type, 1, _claimant(parts, principal, worker_id))
    if not claimed:
        return Response(status_code=204)
    return JSONResponse(polled_task(claimed[0], worker_id, now_ms()))


@guarded("WorkflowService/SignalTask")
@answering_errors
async def update_by_reference(parts: RestParts, request: Request) -> Response:
    """POST /tasks/{workflowId}/{taskRefName}/{status}: complete the task's latest instance,
    whoever holds it (a WAIT or HUMAN task is signalled)."""
    workflow_id, ref, status = (request.path_params[k] for k in ("workflow_id", "ref", "status"))
    if status not in FINAL:
        raise Refused("INVALID_ARGUMENT", f"status must be one of {', '.join(FINAL)}")
    output = object_body(await json_body(request, _max_body(parts), "the task output", empty={}), "the task output")
    task_id = await parts.tasks.complete_by_reference(_name(workflow_id, "workflowId"), ref, FINAL[status], output)
    return plain(task_id)


@guarded("TaskService/Connect")
@answering_errors
async def add_log(parts: RestParts, request: Request) -> Response:
    task_id = _name(request.path_params["task_id"], "taskId")
    raw = (await body_bytes(request, MAX_LOG_BYTES)).decode("utf-8", errors="replace")
    try:   # conductor-python sends the text JSON-escaped without its quotes; others send a JSON string
        message = json.loads(raw if raw.startswith('"') else '"' + raw + '"')
    except ValueError:
        message = raw
    await parts.tasks.add_logs(task_id, [(now_ms(), str(message))])
    return Response(status_code=200)


@guarded("WorkflowService/GetWorkflow")
@answering_errors
async def get_logs(parts: RestParts, request: Request) -> Response:
    task_id = _name(request.path_params["task_id"], "taskId")
    return JSONResponse([{"log": line, "taskId": task_id, "createdTime": at}
                         for at, line in await parts.tasks.logs(task_id)])


@guarded("ClusterService/GetClusterStatus")
@answering_errors
async def queue_sizes(parts: RestParts, request: Request) -> Response:
    types = [_name(t, "taskType") for t in request.query_params.getlist("taskType")][:1000]
    return JSONResponse(await parts.tasks.queue_depths(types))


@guarded("WorkflowService/GetWorkflow")
async def no_lookup_by_id(parts: RestParts, request: Request) -> Response:
    return refuse(501, "tasks are looked up through their workflow here: GET /api/workflow/{workflowId} lists "
                       "every task with its taskId")


def routes(parts: RestParts) -> list[Route]:
    return [route(parts, path, handler, [method]) for method, path, handler in (
        ("GET", "/tasks/poll/batch/{task_type}", batch_poll),
        ("GET", "/tasks/poll/{task_type}", poll),
        ("POST", "/tasks", update_task),
        ("POST", "/tasks/update-v2", update_task_v2),
        ("GET", "/tasks/queue/sizes", queue_sizes),
        ("POST", "/tasks/{task_id}/log", add_log),
        ("GET", "/tasks/{task_id}/log", get_logs),
        ("GET", "/tasks/{task_id}", no_lookup_by_id),
        ("POST", "/tasks/{workflow_id}/{ref}/{status}", update_by_reference),
    )]
