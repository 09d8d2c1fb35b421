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

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core import statuses as st
from ..core.auth import Principal, namespace_for, principal_in
from ..cluster.dispatch import worker_identity
from ..core.clock import now_ms
from ..core.namespaces import SYSTEM_TYPES, namespace_of, qualified, queue_of, relative
from ..core.payloads import checked_output
from ..store import ClaimedTask, ResultOutcome
from ..handlers import Refused, request_namespace, seen_here
from .common import (RestParts, answering_errors, body_bytes, guarded, json_body, number, object_body, plain,
                     refuse, text)
from .shapes import polled_task

MAX_POLL_COUNT = 100
MAX_POLL_WAIT_MS = 30_000
MAX_NAME_LENGTH = 256
MAX_LOG_BYTES = 64 * 1024
MAX_CALLBACK_S = 10 * 365 * 86400
ANY_WORKER = "*"   # an update that names no worker: taken from whoever holds the attempt (Conductor's way)
FINAL = {"COMPLETED": st.TASK_COMPLETED, "FAILED": st.TASK_FAILED,
         "FAILED_WITH_TERMINAL_ERROR": st.FAILED_WITH_TERMINAL_ERROR}


def _name(value: str, what: str) -> str:
    if not value or len(value) > MAX_NAME_LENGTH:
        raise Refused("INVALID_ARGUMENT", f"{what} must have 1 to {MAX_NAME_LENGTH} characters")
    return value


def routes(parts: RestParts) -> list[Route]:
    store = parts.store

    async def claim(task_type: str, count: int, worker_id: str, wait_ms: int) -> list[ClaimedTask]:
        deadline = asyncio.get_running_loop().time() + wait_ms / 1000
        while True:
            with parts.dispatcher.ready_signal(task_type) as ready:
                claimed = await store.claim(task_type, count, worker_id, now_ms())
                remaining = deadline - asyncio.get_running_loop().time()
                if claimed or remaining <= 0:
                    return claimed
                try:
                    await asyncio.wait_for(ready.wait(), remaining)
                except TimeoutError:
                    return await store.claim(task_type, count, worker_id, now_ms())

    def poll_namespace(request: Request) -> str:
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

    def served_queue(request: Request, task_type: str) -> str:
        """The queue a poll of `task_type` takes from (core/namespaces.py); refused when the token
        may not serve it."""
        principal = principal_in(request.scope)
        if parts.tokens is not None:
            refusal = principal.serve_refusal([task_type]) if principal is not None else "a token is required"
            if refusal:
                raise Refused("PERMISSION_DENIED", refusal)
        return queue_of(poll_namespace(request), task_type)

    def logs_of(task_id: str) -> str:
        """Where a task's logs are kept: under the request's namespace, so that another team who
        learns a task id can neither read its logs nor add to them."""
        return qualified(request_namespace(), task_id)

    def worker_of(request: Request) -> str:
        worker_id = text(request, "workerid") or (request.client.host if request.client else "")
        if worker_id == ANY_WORKER:
            raise Refused("INVALID_ARGUMENT", f"workerid '{ANY_WORKER}' is reserved")
        return _name(worker_id, "workerid")

    @guarded("TaskService/Connect")
    @answering_errors
    async def batch_poll(request: Request) -> Response:
        task_type = served_queue(request, _name(request.path_params["task_type"], "the task type"))
        worker_id = worker_of(request)
        count = number(request, "count", 1, 1, MAX_POLL_COUNT)
        wait_ms = number(request, "timeout", 100, 0, MAX_POLL_WAIT_MS)
        claimed = await claim(task_type, count, claimant(principal_in(request.scope), worker_id), wait_ms)
        now = now_ms()
        return JSONResponse([polled_task(t, worker_id, now) for t in claimed])

    @guarded("TaskService/Connect")
    @answering_errors
    async def poll(request: Request) -> Response:
        task_type = served_queue(request, _name(request.path_params["task_type"], "the task type"))
        worker_id = worker_of(request)
        claimed = await store.claim(task_type, 1, claimant(principal_in(request.scope), worker_id), now_ms())
        if not claimed:
            return Response(status_code=204)
        return JSONResponse(polled_task(claimed[0], worker_id, now_ms()))

    def claimant(principal: Principal | None, worker_id: str) -> str:
        """The worker id a poll claims under and an update must match: with tokens, qualified by the
        token's name (and its namespace, as token names may repeat across teams), so a token
        reports only what it polled, whatever `workerId` it sends."""
        if parts.tokens is None or principal is None:
            return worker_id
        return worker_identity(principal, principal.namespace or "", worker_id)

    async def update(result: dict[str, Any], principal: Principal | None) -> tuple[str, str, str]:
        """Store a TaskResult; (task id, outcome word, task type). Refused when it cannot apply."""
        task_id, workflow_id = result.get("taskId"), result.get("workflowInstanceId")
        if not isinstance(task_id, str) or not isinstance(workflow_id, str):
            raise Refused("INVALID_ARGUMENT", "taskId and workflowInstanceId are required")
        _name(task_id, "taskId")
        _name(workflow_id, "workflowInstanceId")
        named = result.get("workerId")
        if named is not None and (not isinstance(named, str) or len(named) > MAX_NAME_LENGTH):
            raise Refused("INVALID_ARGUMENT", f"workerId must be text of at most {MAX_NAME_LENGTH} characters")
        worker_id = claimant(principal, named) if named else ANY_WORKER
        if worker_id == ANY_WORKER and parts.tokens is not None:
            raise Refused("INVALID_ARGUMENT", "workerId is required: with tokens, a worker reports only the tasks "
                                              "it polled itself")
        status = result.get("status")
        if status != "IN_PROGRESS" and status not in FINAL:
            raise Refused("INVALID_ARGUMENT", f"status must be one of IN_PROGRESS, {', '.join(FINAL)}; got "
                                              f"{str(status)[:40]!r}")
        await keep_logs(task_id, result.get("logs"))
        output = result.get("outputData") or {}
        if status == "IN_PROGRESS":
            return task_id, await in_progress(workflow_id, task_id, worker_id, result, output), ""
        final = FINAL[status]
        reason = str(result.get("reasonForIncompletion") or "")[:4096]
        output_text, problem = checked_output(parts.limit, json.dumps(output, ensure_ascii=False))
        if output_text is None:   # an output that cannot be kept fails the attempt for good, as over gRPC
            final, output_text, reason = st.FAILED_WITH_TERMINAL_ERROR, "{}", problem
        ack = await store.complete_task(workflow_id, task_id, worker_id, final, output_text, reason, now_ms())
        if ack.outcome is ResultOutcome.UNKNOWN:
            raise Refused("NOT_FOUND", f"workflow {workflow_id} has no task {task_id}")
        if ack.outcome is ResultOutcome.STALE:
            raise Refused("FAILED_PRECONDITION", f"task {task_id} is {ack.detail}: its lease expired, it was "
                                                 "given to another worker, or its workflow ended")
        if ack.outcome is ResultOutcome.STORED:
            parts.decider.soon([workflow_id])
        return task_id, ack.outcome.name, ack.task_type

    async def in_progress(workflow_id: str, task_id: str, worker_id: str, result: dict[str, Any],
                          output: Any) -> str:
        if result.get("extendLease"):
            if await store.heartbeat(workflow_id, task_id, worker_id, now_ms()) == 0:
                raise Refused("FAILED_PRECONDITION", f"task {task_id} is not held by worker {worker_id}")
            return "EXTENDED"
        callback_s = result.get("callbackAfterSeconds") or 0
        if (isinstance(callback_s, bool) or not isinstance(callback_s, int | float)
                or not 0 <= callback_s <= MAX_CALLBACK_S):
            raise Refused("INVALID_ARGUMENT", "callbackAfterSeconds must be seconds from 0 to ten years")
        output_text, problem = checked_output(parts.limit, json.dumps(output, ensure_ascii=False))
        if output_text is None:
            raise Refused("INVALID_ARGUMENT", problem)
        if not await store.release_task(workflow_id, task_id, worker_id, now_ms(), delay_ms=int(callback_s * 1000),
                                        output_json=output_text):
            raise Refused("FAILED_PRECONDITION", f"task {task_id} is not in progress with worker {worker_id}")
        return "REQUEUED"

    async def keep_logs(task_id: str, logs: Any) -> None:
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
            await store.add_task_logs(logs_of(task_id), lines)

    @guarded("TaskService/Connect")
    @answering_errors
    async def update_task(request: Request) -> Response:
        result = object_body(await json_body(request, parts.limit.max_bytes + 64 * 1024, "a TaskResult"),
                             "TaskResult")
        task_id, _, _ = await update(result, principal_in(request.scope))
        return plain(task_id)

    @guarded("TaskService/Connect")
    @answering_errors
    async def update_task_v2(request: Request) -> Response:
        """Store the result, then hand the same worker its next task of that type, if one waits."""
        result = object_body(await json_body(request, parts.limit.max_bytes + 64 * 1024, "a TaskResult"),
                             "TaskResult")
        principal = principal_in(request.scope)
        _, outcome, task_type = await update(result, principal)
        worker_id = result.get("workerId")
        if outcome not in ("STORED", "DUPLICATE") or not task_type or not isinstance(worker_id, str) or not worker_id:
            return Response(status_code=204)
        if parts.tokens is not None and (principal is None or not principal.may_serve([relative(task_type)])):
            return Response(status_code=204)
        claimed = await store.claim(task_type, 1, claimant(principal, worker_id), now_ms())
        if not claimed:
            return Response(status_code=204)
        return JSONResponse(polled_task(claimed[0], worker_id, now_ms()))

    @guarded("WorkflowService/SignalTask")
    @answering_errors
    async def update_by_reference(request: Request) -> Response:
        """POST /tasks/{workflowId}/{taskRefName}/{status}: complete the task's latest instance,
        whoever holds it (a WAIT or HUMAN task is signalled)."""
        workflow_id, ref, status = (request.path_params[k] for k in ("workflow_id", "ref", "status"))
        if status not in FINAL:
            raise Refused("INVALID_ARGUMENT", f"status must be one of {', '.join(FINAL)}")
        output = object_body(await json_body(request, parts.limit.max_bytes + 64 * 1024, "the task output",
                                             empty={}), "the task output")
        state = await store.load(_name(workflow_id, "workflowId"))
        if state is None or not seen_here(state.name):
            raise Refused("NOT_FOUND", f"no workflow with id '{workflow_id[:256]}'")
        matching = [t for t in state.tasks if ref in (t.spec.key, t.spec.ref)]
        if not matching:
            raise Refused("NOT_FOUND", f"workflow {workflow_id} has no task '{ref[:256]}'")
        task = matching[-1]
        output_text, problem = checked_output(parts.limit, json.dumps(output, ensure_ascii=False))
        if output_text is None:
            raise Refused("INVALID_ARGUMENT", problem)
        if task.spec.kind in ("WAIT", "HUMAN"):
            await store.signal_task(workflow_id, task.task_id, FINAL[status], output_text, "", now_ms())
        else:
            ack = await store.complete_task(workflow_id, task.task_id, ANY_WORKER, FINAL[status], output_text, "",
                                            now_ms())
            if ack.outcome is not ResultOutcome.STORED and ack.outcome is not ResultOutcome.DUPLICATE:
                raise Refused("FAILED_PRECONDITION", f"task '{ref[:256]}' is {task.runtime.status}, not in progress")
        parts.decider.soon([workflow_id])
        return plain(task.task_id)

    @guarded("TaskService/Connect")
    @answering_errors
    async def add_log(request: Request) -> Response:
        task_id = _name(request.path_params["task_id"], "taskId")
        raw = (await body_bytes(request, MAX_LOG_BYTES)).decode("utf-8", errors="replace")
        try:   # conductor-python sends the text JSON-escaped without its quotes; others send a JSON string
            message = json.loads(raw if raw.startswith('"') else '"' + raw + '"')
        except ValueError:
            message = raw
        await store.add_task_logs(logs_of(task_id), [(now_ms(), str(message))])
        return Response(status_code=200)

    @guarded("WorkflowService/GetWorkflow")
    @answering_errors
    async def get_logs(request: Request) -> Response:
        task_id = _name(request.path_params["task_id"], "taskId")
        return JSONResponse([{"log": line, "taskId": task_id, "createdTime": at}
                             for at, line in await store.task_logs(logs_of(task_id))])

    @guarded("ClusterService/GetClusterStatus")
    @answering_errors
    async def queue_sizes(request: Request) -> Response:
        namespace = request_namespace()
        types = [queue_of(namespace, _name(t, "taskType")) for t in request.query_params.getlist("taskType")][:1000]
        stats = await store.queue_stats(types or None)
        return JSONResponse({relative(s.task_type): s.depth for s in stats if namespace_of(s.task_type) == namespace
                             or s.task_type in SYSTEM_TYPES})

    @guarded("WorkflowService/GetWorkflow")
    async def no_lookup_by_id(request: Request) -> Response:
        return refuse(501, "tasks are looked up through their workflow here: GET /api/workflow/{workflowId} lists "
                           "every task with its taskId")

    return [
        Route("/tasks/poll/batch/{task_type}", batch_poll, methods=["GET"]),
        Route("/tasks/poll/{task_type}", poll, methods=["GET"]),
        Route("/tasks", update_task, methods=["POST"]),
        Route("/tasks/update-v2", update_task_v2, methods=["POST"]),
        Route("/tasks/queue/sizes", queue_sizes, methods=["GET"]),
        Route("/tasks/{task_id}/log", add_log, methods=["POST"]),
        Route("/tasks/{task_id}/log", get_logs, methods=["GET"]),
        Route("/tasks/{task_id}", no_lookup_by_id, methods=["GET"]),
        Route("/tasks/{workflow_id}/{ref}/{status}", update_by_reference, methods=["POST"]),
    ]
