"""The gRPC services' own handlers, called in-process by the console and the Conductor API.

Both build the request message the API would receive and await the handler, so what they do is
validated, stored and decided exactly as it is through gRPC. The handlers use one thing of
their servicer context, `abort`; here it raises `Refused` with the API's status name and
message, which each caller turns into its own HTTP answer (`http_status`). The node hands its
WorkflowService and MetadataService in; the protocols below are what the callers may use.

The namespace a request acts in (core/namespaces.py) reaches the handlers the same way from
every door: the gRPC interceptor, the console's and the Conductor API's gate set it for the
request (`acting_in`), and the handlers read it (`request_namespace`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol

from orchestrator_api.v1 import orchestrator_pb2 as pb

from .core.namespaces import namespace_of

__all__ = ["HTTP_STATUS", "Context", "MetadataHandlers", "Refused", "WorkflowHandlers", "acting_in",
           "internal_error", "request_namespace", "seen_here", "serving_as", "task_acts_in"]

_NAMESPACE: contextvars.ContextVar[str] = contextvars.ContextVar("namespace", default="")
_SERVING_AS = [""]   # the node this process runs (`orchestrator node` sets it), as its log names it


def serving_as(node_id: str) -> None:
    """Name the node this process runs in the answers to requests it failed to handle."""
    _SERVING_AS[0] = node_id


def internal_error(what: str) -> str:
    """What a caller is told when a request failed inside the node (a bug): that the fault is the
    node's and not the request's, so that nobody edits a good definition over it, and which node's
    log holds the trace, since any node may have answered."""
    node = f"node {_SERVING_AS[0]}" if _SERVING_AS[0] else "the node that answered"
    return (f"internal error ({what}) on {node}: a fault in the orchestrator, not in the request; "
            f"its trace is in the log of {node}")


def request_namespace() -> str:
    """The namespace the request being handled acts in ("" = the default one)."""
    return _NAMESPACE.get()


def seen_here(stored_name: str) -> bool:
    """Whether what is stored under this (qualified) name belongs to the request's namespace."""
    return namespace_of(stored_name) == _NAMESPACE.get()


def task_acts_in(namespace: str) -> None:
    """The rest of the running task (one call's or one request's own) acts in `namespace`."""
    _NAMESPACE.set(namespace)


@contextmanager
def acting_in(namespace: str) -> Iterator[None]:
    """Handle what runs inside as a request of `namespace`."""
    token = _NAMESPACE.set(namespace)
    try:
        yield
    finally:
        _NAMESPACE.reset(token)

HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409,
               "RESOURCE_EXHAUSTED": 413, "UNAVAILABLE": 503, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
               "UNIMPLEMENTED": 501}


class Refused(Exception):
    """The API refused the request; `code` is its gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


class Context:
    """The one thing the handlers use of a gRPC servicer context: `abort`."""

    async def abort(self, code: Any, details: str = "") -> NoReturn:
        raise Refused(getattr(code, "name", str(code)), details)


class WorkflowHandlers(Protocol):
    """The gRPC WorkflowService handlers (`context` needs only `abort`)."""

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
    """The gRPC MetadataService handlers the Conductor API registers definitions through."""

    async def RegisterTaskDef(self, request: pb.RegisterTaskDefRequest, context: Any) -> pb.TaskDef: ...
    async def RegisterWorkflowDef(self, request: pb.RegisterWorkflowDefRequest, context: Any) -> pb.WorkflowDef: ...
    async def ValidateWorkflowDef(self, request: pb.RegisterWorkflowDefRequest,
                                  context: Any) -> pb.ValidateWorkflowDefResponse: ...
