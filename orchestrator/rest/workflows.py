"""Conductor's workflow routes (`/api/workflow/...`): start, execute, read, search, operate."""

from __future__ import annotations

import ast
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator_api.structs import from_struct, to_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb

from ..core.definitions import MAX_VERSION
from ..service.errors import Refused, refusing
from ..service.metadata import Source
from ..service.workflows import SearchQuery, StartRequest
from ..wire import fit, found_message, search_response, workflow_message
from .common import (RestParts, answering_errors, flag, guarded, json_body, number, object_body, plain, route,
                     text)
from .shapes import workflow_json, workflow_status_json, workflow_summary

MAX_SEARCH_WINDOW = 5000       # start + size of one search
MAX_EXECUTE_WAIT_S = 300
MAX_QUERY_LENGTH = 64 * 1024   # of Conductor's search query (a request line is shorter anyway)
QUERY_FIELDS = {"workflowType": "name", "status": "status", "correlationId": "correlation_id",
                "startTime": "created", "workflowId": "workflow_id"}
OPERATORS = (">=", "<=", "=", ">", "<")   # longest first


def _plain(value: Any, what: str) -> dict[str, Any]:
    """A JSON object of the request, as the API carries it (a protobuf Struct's values)."""
    try:
        return from_struct(to_struct(object_body(value, what)))
    except (TypeError, ValueError) as exc:
        raise Refused("INVALID_ARGUMENT", f"{what}: {exc}") from None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def checked_version(version: Any) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
        raise Refused("INVALID_ARGUMENT", f"version must be a whole number from 0 (the latest) to {MAX_VERSION}")
    return version


def _clauses(query: str) -> list[str]:
    """The query's clauses: what stands between the words AND (any case), each stripped. One pass
    over the words (each found where the last one ended), no regular expression: linear in the
    query's length."""
    clauses, start, end = [], 0, 0
    for word in query.split():
        at = query.find(word, end)
        end = at + len(word)
        if word.upper() == "AND":
            clauses.append(query[start:at].strip())
            start = end
    clauses.append(query[start:].strip())
    return clauses


def _clause(clause: str) -> tuple[str, str, str] | None:
    """(field, operator, value) of one clause, or None; read left to right, once."""
    end, longest = 0, min(len(clause), max(map(len, QUERY_FIELDS)) + 1)
    while end < longest and (clause[end].isalnum() or clause[end] == "_"):
        end += 1
    name, rest = clause[:end], clause[end:].lstrip()
    if name not in QUERY_FIELDS:
        return None
    if rest[:2].upper() == "IN" and rest[2:3] in (" ", "("):
        return name, "IN", rest[2:].strip()
    op = next((o for o in OPERATORS if rest.startswith(o)), "")
    value = rest[len(op):].strip()
    return (name, op, value) if op and value else None


def parse_query(query: str) -> dict[str, list[str]]:
    """Conductor's search query, the part people write: clauses joined by AND, each
    `field = value`, `field IN (v1, v2)` or `startTime > ms` (>=, <, <=). Read in one linear pass
    (a backtracking regular expression took seconds of the event loop over a 16 KiB query of spaces)."""
    found: dict[str, list[str]] = {}
    if len(query) > MAX_QUERY_LENGTH:
        raise Refused("INVALID_ARGUMENT", f"the query has more than {MAX_QUERY_LENGTH} characters")
    if not query.strip():
        return found
    for clause in _clauses(query):
        parsed = _clause(clause)
        if parsed is None:
            raise Refused("INVALID_ARGUMENT", f"query clause {clause[:100]!r} is not one this API reads: use "
                                              f"{', '.join(QUERY_FIELDS)} with =, IN (...), or startTime > / < ms")
        name, op, value = parsed
        if name == "startTime":
            moment = _unquote(value)
            if op not in (">", "<", ">=", "<=") or not moment.isdigit() or len(moment) > 15:
                raise Refused("INVALID_ARGUMENT", "startTime takes >, >=, < or <= and epoch milliseconds")
            inclusive = {">=": -1, "<=": 1}.get(op, 0)   # kept as the strict bound it equals
            found.setdefault("startTime" + op[0], []).append(str(int(moment) + inclusive))
        elif op == "IN":
            if not (value.startswith("(") and value.endswith(")")):
                raise Refused("INVALID_ARGUMENT", f"{name} IN needs a list in parentheses")
            found[name] = [_unquote(v) for v in value[1:-1].split(",") if v.strip()]
        elif op == "=":
            found[name] = [_unquote(value)]
        else:
            raise Refused("INVALID_ARGUMENT", f"{name} takes = or IN")
    return found


def _max_body(parts: RestParts) -> int:
    return parts.limit.max_bytes + 64 * 1024


async def _start(parts: RestParts, name: str, version: int, workflow_input: Any, correlation_id: str,
                 key: str) -> tuple[str, bool]:
    started = await refusing(parts.workflows.start(StartRequest(
        name=name, version=version, input=_plain(workflow_input or {}, "input"), correlation_id=correlation_id,
        idempotency_key=key)))
    return started.workflow_id, started.created


async def _register_inline(parts: RestParts, definition: Any, name: str) -> int:
    """A start that carries its definition (conductor-python's ConductorWorkflow does):
    registered as that version first, since every run here keeps a registered snapshot."""
    definition = object_body(definition, "workflowDef")
    if definition.get("name", name) != name:
        raise Refused("INVALID_ARGUMENT", "workflowDef.name must be the name being started")
    registered = await refusing(parts.metadata.register_workflow_def(
        Source("document", document=json.dumps({**definition, "name": name}))))
    return int(registered["version"])


async def _start_request(parts: RestParts, body: dict[str, Any]) -> tuple[str, bool]:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise Refused("INVALID_ARGUMENT", "name (the workflow definition to start) is required")
    version = checked_version(body.get("version") or 0)
    if body.get("workflowDef"):
        version = await _register_inline(parts, body["workflowDef"], name)
    key = body.get("idempotencyKey") or ""
    workflow_id, created = await _start(parts, name, version, body.get("input"),
                                        str(body.get("correlationId") or ""), str(key))
    if not created and key and str(body.get("idempotencyStrategy") or "FAIL").upper() == "FAIL":
        raise Refused("ALREADY_EXISTS", f"idempotency key '{str(key)[:256]}' already started workflow "
                                        f"{workflow_id} (idempotencyStrategy RETURN_EXISTING returns its id)")
    return workflow_id, created


@guarded("WorkflowService/StartWorkflow")
@answering_errors
async def start_workflow(parts: RestParts, request: Request) -> Response:
    body = object_body(await json_body(request, _max_body(parts), "a StartWorkflowRequest"), "StartWorkflowRequest")
    workflow_id, _ = await _start_request(parts, body)
    return plain(workflow_id)


@guarded("WorkflowService/StartWorkflow")
@answering_errors
async def start_by_name(parts: RestParts, request: Request) -> Response:
    workflow_input = await json_body(request, _max_body(parts), "the workflow input", empty={})
    workflow_id, _ = await _start(parts, request.path_params["name"], number(request, "version", 0, 0, MAX_VERSION),
                                  workflow_input, text(request, "correlationId"), "")
    return plain(workflow_id)


@guarded("WorkflowService/ExecuteWorkflow")
@answering_errors
async def execute(parts: RestParts, request: Request) -> Response:
    body = object_body(await json_body(request, _max_body(parts), "a StartWorkflowRequest", empty={}),
                       "StartWorkflowRequest")
    name = request.path_params["name"]
    version = checked_version(request.path_params["version"])
    if body.get("workflowDef"):
        version = await _register_inline(parts, body["workflowDef"], name)
    wait_s = number(request, "waitForSeconds", 10, 1, MAX_EXECUTE_WAIT_S)
    state = await refusing(parts.workflows.execute(StartRequest(
        name=name, version=version, input=_plain(body.get("input") or {}, "input"),
        correlation_id=str(body.get("correlationId") or ""), idempotency_key=text(request, "requestId")), wait_s))
    shown = workflow_json(workflow_message(state, include_tasks=True))
    shown["requestId"] = text(request, "requestId")
    return JSONResponse(shown)


async def _load(parts: RestParts, workflow_id: str, include_tasks: bool) -> pb.Workflow:
    found = await refusing(parts.workflows.get(workflow_id))
    return fit([found_message(found, include_tasks=include_tasks)])[0]


@guarded("WorkflowService/GetWorkflow")
@answering_errors
async def get_workflow(parts: RestParts, request: Request) -> Response:
    include_tasks = flag(request, "includeTasks", True)
    return JSONResponse(workflow_json(await _load(parts, request.path_params["workflow_id"], include_tasks),
                                      include_tasks=include_tasks))


@guarded("WorkflowService/GetWorkflow")
@answering_errors
async def get_status(parts: RestParts, request: Request) -> Response:
    workflow = await _load(parts, request.path_params["workflow_id"], False)
    return JSONResponse(workflow_status_json(workflow, output=flag(request, "includeOutput", False),
                                             variables=flag(request, "includeVariables", False)))


@guarded("WorkflowService/SearchWorkflows")
@answering_errors
async def search(parts: RestParts, request: Request) -> Response:
    start_at = number(request, "start", 0, 0, MAX_SEARCH_WINDOW)
    size = number(request, "size", 100, 1, 1000)
    if start_at + size > MAX_SEARCH_WINDOW:
        raise Refused("INVALID_ARGUMENT", f"start + size may be at most {MAX_SEARCH_WINDOW}; narrow the query")
    free_text = text(request, "freeText", "*").strip()
    found = await _search(parts, parse_query(text(request, "query")), "" if free_text == "*" else free_text,
                          start_at + size + 1)
    page = found[start_at:start_at + size]
    total = len(found) if len(found) <= start_at + size else start_at + size + 1
    return JSONResponse({"totalHits": total, "results": [workflow_summary(w) for w in page]})


async def _search(parts: RestParts, query: dict[str, list[str]], free_text: str, wanted: int) -> list[pb.Workflow]:
    if "workflowId" in query:
        found = []
        for workflow_id in query["workflowId"][:wanted]:
            try:
                found.append(await _load(parts, workflow_id, False))
            except Refused:
                pass
        return found
    created_from = max((int(v) + 1 for v in query.get("startTime>", [])), default=0)
    created_to = min((int(v) - 1 for v in query.get("startTime<", [])), default=0)
    combos = [(n, s, c) for n in query.get("workflowType", [""]) for s in query.get("status", [""])
              for c in query.get("correlationId", [""])]
    if len(combos) > 50:
        raise Refused("INVALID_ARGUMENT", "the query's IN lists make more than 50 combinations; narrow it")
    merged: dict[str, pb.Workflow] = {}
    for name, status, correlation_id in combos:   # each newest first; merged below
        token, got = "", 0
        while got < wanted:
            page = await refusing(parts.workflows.search(SearchQuery(
                name=name, status=status, correlation_id=correlation_id, limit=min(wanted - got, 1000),
                page_token=token, created_from_ms=created_from, created_to_ms=created_to, text=free_text)))
            for workflow in search_response(page.workflows, "").workflows:
                merged.setdefault(workflow.workflow_id, workflow)
            got += len(page.workflows)
            token = page.next_page_token
            if not token:
                break
    return sorted(merged.values(), key=lambda w: (-w.created_at_ms, w.workflow_id))[:wanted]


@guarded("WorkflowService/TerminateWorkflow")
@answering_errors
async def terminate(parts: RestParts, request: Request) -> Response:
    await refusing(parts.workflows.terminate(request.path_params["workflow_id"],
                                             text(request, "reason") or "terminated through the Conductor API"))
    return Response(status_code=200)


@guarded("WorkflowService/PauseWorkflow")
@answering_errors
async def pause(parts: RestParts, request: Request) -> Response:
    await refusing(parts.workflows.pause(request.path_params["workflow_id"]))
    return Response(status_code=204)


@guarded("WorkflowService/ResumeWorkflow")
@answering_errors
async def resume(parts: RestParts, request: Request) -> Response:
    await refusing(parts.workflows.resume(request.path_params["workflow_id"]))
    return Response(status_code=204)


@guarded("WorkflowService/RetryWorkflow")
@answering_errors
async def retry(parts: RestParts, request: Request) -> Response:
    await refusing(parts.workflows.retry(request.path_params["workflow_id"]))
    return Response(status_code=204)


@guarded("WorkflowService/RestartWorkflow")
@answering_errors
async def restart(parts: RestParts, request: Request) -> Response:
    await refusing(parts.workflows.restart(request.path_params["workflow_id"],
                                           use_latest_definition=flag(request, "useLatestDefinitions", False)))
    return Response(status_code=204)


@guarded("WorkflowService/RerunWorkflow")
@answering_errors
async def rerun(parts: RestParts, request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    body = object_body(await json_body(request, _max_body(parts), "a RerunWorkflowRequest", empty={}),
                       "RerunWorkflowRequest")
    task_id = body.get("reRunFromTaskId") or ""
    if not task_id:   # Conductor reruns the whole workflow when no task is named
        await refusing(parts.workflows.restart(workflow_id))
        return plain(workflow_id)
    workflow = await _load(parts, workflow_id, True)
    keys = [t.key or t.reference_name for t in workflow.tasks if t.task_id == task_id]
    if not keys:
        raise Refused("INVALID_ARGUMENT", f"reRunFromTaskId '{str(task_id)[:256]}' is no task of workflow "
                                          f"{workflow_id}")
    task_input = _plain(body["taskInput"], "taskInput") if body.get("taskInput") else None
    await refusing(parts.workflows.rerun(workflow_id, keys[0], task_input))
    return plain(workflow_id)


@guarded("WorkflowService/SkipTask")
@answering_errors
async def skip(parts: RestParts, request: Request) -> Response:
    raw = text(request, "skipTaskRequest")
    if raw:   # conductor-python sends a Python dict's repr here; anything else that parses is read too
        try:
            ast.literal_eval(raw) if raw.lstrip().startswith("{'") else json.loads(raw)
        except (ValueError, SyntaxError):
            raise Refused("INVALID_ARGUMENT", "skipTaskRequest is not an object") from None
    await refusing(parts.workflows.skip(request.path_params["workflow_id"], request.path_params["ref"]))
    return Response(status_code=204)


def routes(parts: RestParts) -> list[Route]:
    return [route(parts, path, handler, [method]) for method, path, handler in (
        ("POST", "/workflow", start_workflow),
        ("GET", "/workflow/search", search),
        ("POST", "/workflow/execute/{name}/{version:int}", execute),
        ("GET", "/workflow/{workflow_id}", get_workflow),
        ("DELETE", "/workflow/{workflow_id}", terminate),
        ("GET", "/workflow/{workflow_id}/status", get_status),
        ("PUT", "/workflow/{workflow_id}/pause", pause),
        ("PUT", "/workflow/{workflow_id}/resume", resume),
        ("POST", "/workflow/{workflow_id}/retry", retry),
        ("POST", "/workflow/{workflow_id}/restart", restart),
        ("POST", "/workflow/{workflow_id}/rerun", rerun),
        ("PUT", "/workflow/{workflow_id}/skiptask/{ref}", skip),
        ("POST", "/workflow/{name}", start_by_name),
    )]
