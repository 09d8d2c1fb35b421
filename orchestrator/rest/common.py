"""What every route of the Conductor REST API shares: the node's parts it runs on, reading
query strings and bodies the way Conductor's clients write them, and errors as JSON.

The routes call the gRPC services' own handlers in-process (the way the console does), so a
request is validated, stored and decided exactly as it would be through gRPC; a refusal comes
back with the API's status mapped to HTTP and Conductor's error body (`status`, `message`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestrator_api.v1 import orchestrator_pb2 as pb

from ..cluster.deciding import Decider
from ..cluster.dispatch import Dispatcher
from ..core.auth import Tokens
from ..core.payloads import PayloadLimit
from ..store import Store, StoreUnavailable

log = logging.getLogger(__name__)

HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409,
               "RESOURCE_EXHAUSTED": 413, "UNAVAILABLE": 503, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
               "UNIMPLEMENTED": 501}
ABSENT = ("", "None", "null")   # conductor-python writes a missing query value as "None" on POST, "" on GET


class WorkflowHandlers(Protocol):
    """The gRPC WorkflowService handlers these routes call (`context` needs only `abort`)."""

    async def StartWorkflow(self, request: pb.StartWorkflowRequest, context: Any) -> pb.StartWorkflowResponse: ...
    async def ExecuteWorkflow(self, request: pb.ExecuteWorkflowRequest, context: Any) -> pb.Workflow: ...
    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Any) -> pb.Workflow: ...
    async def SearchWorkflows(self, request: pb.SearchWorkflowsRequest,
                              context: Any) -> pb.SearchWorkflowsResponse: ...
    async def TerminateWorkflow(self, request: pb.TerminateWorkflowRequest,
                                context: Any) -> pb.TerminateWorkflowResponse: ...
    async def PauseWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow: ...
    async def ResumeWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow: ...
    async def RetryWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow: ...
    async def RestartWorkflow(self, request: pb.RestartWorkflowRequest, context: Any) -> pb.Workflow: ...
    async def RerunWorkflow(self, request: pb.RerunWorkflowRequest, context: Any) -> pb.Workflow: ...
    async def SkipTask(self, request: pb.SkipTaskRequest, context: Any) -> pb.Workflow: ...
    async def SignalTask(self, request: pb.SignalTaskRequest, context: Any) -> pb.Workflow: ...


class MetadataHandlers(Protocol):
    async def RegisterTaskDef(self, request: pb.RegisterTaskDefRequest, context: Any) -> pb.TaskDef: ...
    async def RegisterWorkflowDef(self, request: pb.RegisterWorkflowDefRequest, context: Any) -> pb.WorkflowDef: ...


@dataclass
class RestParts:
    """The node's parts the REST API runs on (handed over by `orchestrator.node`)."""

    store: Store
    dispatcher: Dispatcher
    decider: Decider
    workflows: WorkflowHandlers
    metadata: MetadataHandlers
    limit: PayloadLimit
    tokens: Tokens | None = None      # None: the node runs without authentication


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Context:
    """The one thing the gRPC handlers use of their context: `abort`."""

    async def abort(self, code: Any, details: str = "") -> NoReturn:
        raise Refused(code.name if isinstance(code, grpc.StatusCode) else str(code), details)


def refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "message": message, "retryable": status >= 500}, status_code=status)


Route = Callable[[Request], Awaitable[Response]]


def answering_errors(route: Route) -> Route:
    """Refusals and an unreachable store as Conductor's error bodies; never a stack trace."""
    async def wrapped(request: Request) -> Response:
        try:
            return await route(request)
        except Refused as exc:
            return refuse(HTTP_STATUS.get(exc.code, 500), exc.message)
        except StoreUnavailable as exc:
            return refuse(503, f"the state store is unavailable ({exc}); retry")
        except Exception:   # a bug: logged with its trace, answered in Conductor's shape, nothing else hurt
            log.exception("%s %s failed", request.method, request.url.path)
            return refuse(500, "the node failed to handle this request; the failure is logged on the node")
    wrapped.__name__ = route.__name__
    return wrapped


def flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name, "")
    if value in ABSENT:
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise Refused("INVALID_ARGUMENT", f"query parameter {name} must be true or false, got {value[:40]!r}")


def text(request: Request, name: str, default: str = "") -> str:
    value = request.query_params.get(name, "")
    return default if value in ABSENT else value


def number(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = text(request, name)
    if not value:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise Refused("INVALID_ARGUMENT",
                      f"query parameter {name} must be a whole number, got {value[:40]!r}") from None
    if not low <= parsed <= high:
        raise Refused("INVALID_ARGUMENT", f"query parameter {name} must be from {low} to {high}, got {parsed}")
    return parsed


async def body_bytes(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) past `max_bytes` without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise Refused("RESOURCE_EXHAUSTED", f"the request body is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Refused("RESOURCE_EXHAUSTED", f"the request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, max_bytes: int, what: str, *, empty: Any = None) -> Any:
    raw = await body_bytes(request, max_bytes)
    if not raw.strip():
        if empty is None:
            raise Refused("INVALID_ARGUMENT", f"the request body must be {what}")
        return empty
    try:
        return json.loads(raw)
    except RecursionError:
        raise Refused("INVALID_ARGUMENT", "the request body is nested too deeply") from None
    except ValueError as exc:
        raise Refused("INVALID_ARGUMENT", f"the request body is not valid JSON ({exc}); it must be {what}") from None


def object_body(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refused("INVALID_ARGUMENT", f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def plain(value: str) -> Response:
    return Response(value, media_type="text/plain")
