"""Tokens on the gRPC API: an interceptor that checks every call before its handler runs.

The token travels as `authorization: Bearer <token>` metadata (the SDK's `token=`; grpcurl
`-H 'authorization: Bearer ...'`). The role each method needs is listed here, method by method;
a method missing from the list is refused to everyone but admins, so a new RPC is closed until
someone decides who may call it. Health checks and reflection stay open: they reveal no data.
The principal is handed to the handler (`current_principal()`), which checks what only it can
see (a worker's task types are in its hello).

The same interceptor settles the namespace a call acts in (metadata `namespace`, limited by a
confined token: `core.auth.namespace_for`) and hands it on (`handlers.acting_in`). Without a
tokens file it does only that, and a call that names no namespace passes untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..core.auth import Principal, Tokens, namespace_for
from ..handlers import acting_in, task_acts_in

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)

_READ, _OPERATE, _WORK, _ADMIN = "reader", "operator", "worker", "admin"
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
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")


def current_principal() -> Principal | None:
    """Who makes the call being handled (None on a node without tokens)."""
    return _PRINCIPAL.get()


def needed_role(method: str) -> str | None:
    """The role `/package.Service/Method` needs; None for the open services; admin for the rest."""
    service, _, name = method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return None
    return METHOD_ROLES.get(service.rsplit(".", 1)[-1], {}).get(name, _ADMIN)


def bearer(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else value.strip()


class TokenInterceptor(grpc.aio.ServerInterceptor):   # type: ignore[misc]
    """`tokens` None: a node without authentication (only the namespace is settled)."""

    def __init__(self, tokens: Tokens | None) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        role = needed_role(details.method)
        if handler is None or role is None:
            return handler
        metadata = dict(details.invocation_metadata or ())
        asked = str(metadata.get("namespace", ""))
        if self.tokens is None:
            if not asked:
                return handler
            principal = None
        else:
            principal = self.tokens.find(bearer(str(metadata.get("authorization", ""))))
            if principal is None:
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                                "a token is required: send `authorization: Bearer <token>`")
            if not principal.may(role):
                return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                                f"{principal.name} ({', '.join(sorted(principal.roles))}) may not call "
                                f"{details.method.rsplit('/', 1)[-1]}: it needs the {role} role")
        try:
            namespace = namespace_for(principal, asked)
        except ValueError as exc:
            return _refusal(handler, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PermissionError as exc:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return _as(handler, principal, namespace)


# The four shapes of a method handler: its attribute, its constructor, whether it streams answers.
_SHAPES = (("unary_unary", grpc.unary_unary_rpc_method_handler, False),
           ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
           ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
           ("stream_stream", grpc.stream_stream_rpc_method_handler, True))
Behavior = Callable[..., Any]


def _reshaped(handler: Any, behavior: Callable[[Behavior, bool], Behavior]) -> Any:
    """A handler of the same shape and serializers whose behavior is `behavior(inner, streams)`."""
    for attribute, make, streams in _SHAPES:
        inner = getattr(handler, attribute)
        if inner:
            return make(behavior(inner, streams), handler.request_deserializer, handler.response_serializer)
    raise ValueError(f"a method handler of no known shape: {handler!r}")   # fails closed: the call errs


def _as(handler: Any, principal: Principal | None, namespace: str) -> Any:
    """The same handler, run with `principal` as the current one, in `namespace`."""
    def behavior(inner: Behavior, streams: bool) -> Behavior:
        async def answer(request: Any, context: Any) -> Any:
            _PRINCIPAL.set(principal)
            with acting_in(namespace):
                return await inner(request, context)

        async def answers(request: Any, context: Any) -> AsyncIterator[Any]:
            _PRINCIPAL.set(principal)   # a stream's handler runs in a task of its own
            task_acts_in(namespace)
            async for item in inner(request, context):
                yield item
        return answers if streams else answer
    return _reshaped(handler, behavior)


def _refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same shape that refuses before reading anything."""
    def behavior(inner: Behavior, streams: bool) -> Behavior:
        async def refuse(request: Any, context: Any) -> Any:
            await context.abort(code, message)

        async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await context.abort(code, message)
            yield None   # never reached: abort raises
        return refuse_stream if streams else refuse
    return _reshaped(handler, behavior)
