"""The gRPC services' own handlers, called in-process by the console and the Conductor API.

Both build the request message the API would receive and await the handler, so what they do is
validated, stored and decided exactly as it is through gRPC. The handlers use one thing of
their servicer context, `abort`; here it raises `Refused` with the API's status name and
message, which each caller turns into its own HTTP answer (`http_status`). The node hands its
WorkflowService and MetadataService in; the protocols below are what the callers may use.

The namespace a request acts in (core/namespaces.py) reaches the handlers the same way from
every door: the gRPC interceptor, the console's and the Conductor API's gate set it for the
request (`acting_in`), and the handlers read it (`request_namespace`).

So does who calls (`calling_as`), and the handlers themselves refuse what the caller may not do
(`refusal`), by the one table of who may call what: `METHOD_ROLES` (the role each gRPC method
needs; a method not listed needs admin) and `CLUSTER_WIDE` (methods that act on every namespace
at once, which a token confined to one may not call, whatever its role). The doors check first
where they can (the interceptor before a message is read, the HTTP routes before a body is),
but no door is trusted to: a handler called with no caller at all refuses too. The HTTP routes
that read the store without a handler follow the rule of the gRPC method they stand for (`Rule`).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from orchestrator_api.v1 import orchestrator_pb2 as pb

from .core.auth import Principal
from .core.namespaces import namespace_of

__all__ = ["CLUSTER_WIDE", "HTTP_STATUS", "METHOD_ROLES", "OPEN", "Context", "MetadataHandlers", "Refused", "Rule",
           "WorkflowHandlers", "acting_in", "authorize", "calling_as", "current_principal", "internal_error",
           "refusal", "request_namespace", "rule_marked", "rule_of", "seen_here", "serving_as", "task_acts_in",
           "task_calls_as", "with_rule"]

_READ, _OPERATE, _WORK, _ADMIN = "reader", "operator", "worker", "admin"
# Who may call what: the role each gRPC method needs (core/auth.py says what each role is). A method
# missing here needs admin, so a new RPC is closed until someone decides who may call it.
METHOD_ROLES: dict[str, dict[str, str]] = {
    "MetadataService": {"RegisterTaskDef": _ADMIN, "RegisterWorkflowDef": _ADMIN, "GetTaskDef": _READ,
                        "ListTaskDefs": _READ, "ValidateWorkflowDef": _READ, "GetWorkflowDef": _READ,
                        "ListWorkflowDefs": _READ},
    "WorkflowService": {"StartWorkflow": _OPERATE, "ExecuteWorkflow": _OPERATE, "GetWorkflow": _READ,
                        "WatchWorkflow": _READ, "SearchWorkflows": _READ, "TerminateWorkflow": _OPERATE,
                        "PauseWorkflow": _OPERATE, "ResumeWorkflow": _OPERATE, "RetryWorkflow": _OPERATE,
                        "RestartWorkflow": _OPERATE, "RerunWorkflow": _OPERATE, "SkipTask": _OPERATE,
                        "SignalTask": _OPERATE},
    "TaskService": {"Connect": _WORK},
    "ClusterService": {"GetClusterStatus": _READ, "StepDown": _ADMIN},
    "EventService": {"PublishEvent": _OPERATE, "ReadEvents": _READ, "ConfigureTopic": _ADMIN, "GetTopic": _READ,
                     "RegisterEventHandler": _ADMIN, "ListEventHandlers": _READ, "RemoveEventHandler": _ADMIN,
                     "ReceiveEvents": _WORK, "AckEvents": _WORK},
}
# What acts on the whole cluster, every namespace at once: moving the leadership fails every team's
# work over. A token confined to a namespace is its team's, admin or not, and may not.
CLUSTER_WIDE = frozenset({"ClusterService/StepDown"})


@dataclass(frozen=True)
class Rule:
    """What a use case needs: a role (None: open to anyone) and, when `cluster_wide`, a token
    confined to no namespace. `what` names it in refusals."""

    role: str | None
    what: str
    cluster_wide: bool = False


OPEN = Rule(None, "open")


def rule_of(method: str) -> Rule:
    """The rule of gRPC method "Service/Method" (a method not in the table: admin)."""
    service, _, name = method.partition("/")
    return Rule(METHOD_ROLES.get(service, {}).get(name, _ADMIN), name or method, method in CLUSTER_WIDE)


@dataclass(frozen=True)
class _Caller:
    principal: Principal | None
    tokens: bool   # False: the node runs without tokens, and anyone may do anything


_CALLER: contextvars.ContextVar[_Caller | None] = contextvars.ContextVar("caller", default=None)


@contextmanager
def calling_as(principal: Principal | None, *, tokens: bool) -> Iterator[None]:
    """Handle what runs inside as a request of `principal` (None: nobody known) on a node that
    requires tokens (`tokens`) or not. Every door says so before it calls a handler."""
    token = _CALLER.set(_Caller(principal, tokens))
    try:
        yield
    finally:
        _CALLER.reset(token)


def task_calls_as(principal: Principal | None, *, tokens: bool) -> None:
    """The rest of the running task (a stream's own) is a request of `principal`."""
    _CALLER.set(_Caller(principal, tokens))


def current_principal() -> Principal | None:
    """Who makes the request being handled (None on a node without tokens, or nobody known)."""
    caller = _CALLER.get()
    return caller.principal if caller is not None else None


def refusal(rule: Rule) -> Refused | None:
    """Why the request being handled may not do what `rule` guards; None when it may."""
    if rule.role is None:
        return None
    caller = _CALLER.get()
    if caller is None:   # a path into the handlers that did not say who calls: refused, not trusted
        return Refused("UNAUTHENTICATED", f"{rule.what}: no caller was named for this request (an internal "
                                          "path that skipped authentication)")
    if not caller.tokens:
        return None
    principal = caller.principal
    if principal is None:
        return Refused("UNAUTHENTICATED", "a token is required: send `authorization: Bearer <token>` "
                                          "(or X-Authorization on HTTP)")
    if not principal.may(rule.role):
        return Refused("PERMISSION_DENIED", f"{principal.name} ({', '.join(sorted(principal.roles))}) may not "
                                            f"call {rule.what}: it needs the {rule.role} role")
    if principal.namespace is not None:
        if rule.cluster_wide:
            return Refused("PERMISSION_DENIED", f"{rule.what} acts on the whole cluster, every namespace at once; "
                                                f"{principal.name} is confined to namespace "
                                                f"'{principal.namespace or '(default)'}' and may not")
        if _NAMESPACE.get() != principal.namespace:
            return Refused("PERMISSION_DENIED", f"{principal.name} may act only in namespace "
                                                f"'{principal.namespace or '(default)'}', not in "
                                                f"'{_NAMESPACE.get() or '(default)'}'")
    return None


def authorize(rule: Rule) -> None:
    """Raise Refused unless the request being handled may do what `rule` guards."""
    refused = refusal(rule)
    if refused is not None:
        raise refused


def with_rule(endpoint: Any, rule: Rule) -> Any:
    """Mark an HTTP route's endpoint with the rule it checks (the app refuses to be built with a
    route that carries none: `rule_marked`)."""
    endpoint._rule = rule
    return endpoint


def rule_marked(endpoint: Any) -> Rule | None:
    """The rule an endpoint was marked with (`with_rule`); None for one that checks nothing."""
    rule = getattr(endpoint, "_rule", None)
    return rule if isinstance(rule, Rule) else None

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


async def bounded_body(declared_length: str, stream: AsyncIterable[bytes], max_bytes: int, what: str) -> bytes:
    """An HTTP body (REST and console alike), refused (RESOURCE_EXHAUSTED) past `max_bytes`, declared
    or not: a chunked body is read only that far, never whole."""
    if declared_length.isdigit() and int(declared_length) > max_bytes:
        raise Refused("RESOURCE_EXHAUSTED", f"{what} is {declared_length} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            raise Refused("RESOURCE_EXHAUSTED", f"{what} exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
