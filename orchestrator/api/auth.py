"""Tokens on the gRPC API: an interceptor that checks every call before its handler runs.

The token travels as `authorization: Bearer <token>` metadata (the SDK's `token=`; grpcurl
`-H 'authorization: Bearer ...'`). The role each method needs is the table in
`orchestrator.service.access` (`METHOD_ROLES`, and `CLUSTER_WIDE` for what a token confined to a
namespace may not call), method by method; a method missing from it is refused to everyone but
admins, so a new RPC is closed until someone decides who may call it. Health checks and reflection
stay open: they reveal no data. The principal is handed on (`current_principal()`) to the service
the handler calls, which checks what only it can see (a worker's task types are in its hello).

The interceptor refuses before the request message is even read. The services check again
themselves (`service.access.allowed`, the first statement of each call): the console and the
Conductor API call them too, without this interceptor, and no door is trusted to have checked.

The same interceptor settles the namespace a call acts in (metadata `namespace`, limited by a
confined token: `core.auth.namespace_for`) and hands it on (`service.access.acting_in`), with the
caller (`service.access.calling_as`). Without a tokens file it does only that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ..core.auth import Principal, Tokens, namespace_for
from ..service.access import (CLUSTER_WIDE, METHOD_ROLES, acting_in, calling_as, current_principal, rule_of,
                              task_acts_in, task_calls_as)

__all__ = ["CLUSTER_WIDE", "METHOD_ROLES", "OPEN_SERVICES", "TokenInterceptor", "current_principal", "needed_role"]

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")


def needed_role(method: str) -> str | None:
    """The role `/package.Service/Method` needs; None for the open services; admin for the rest."""
    service, _, name = method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return None
    return rule_of(f"{service.rsplit('.', 1)[-1]}/{name}").role


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
        principal = None
        if self.tokens is not None:
            principal = self.tokens.find(bearer(str(metadata.get("authorization", ""))))
            if principal is None:
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                                "a token is required: send `authorization: Bearer <token>`")
            name = details.method.rsplit("/", 1)[-1]
            if not principal.may(role):
                return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                                f"{principal.name} ({', '.join(sorted(principal.roles))}) may not call "
                                f"{name}: it needs the {role} role")
            service = details.method.lstrip("/").partition("/")[0].rsplit(".", 1)[-1]
            if principal.namespace is not None and f"{service}/{name}" in CLUSTER_WIDE:
                return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                                f"{name} acts on the whole cluster, every namespace at once; {principal.name} is "
                                f"confined to namespace '{principal.namespace or '(default)'}' and may not")
        try:
            namespace = namespace_for(principal, asked)
        except ValueError as exc:
            return _refusal(handler, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PermissionError as exc:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return _as(handler, principal, namespace, self.tokens is not None)


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


def _as(handler: Any, principal: Principal | None, namespace: str, tokens: bool) -> Any:
    """The same handler, run with `principal` as the caller (on a node with `tokens` or not), in `namespace`."""
    def behavior(inner: Behavior, streams: bool) -> Behavior:
        async def answer(request: Any, context: Any) -> Any:
            with acting_in(namespace), calling_as(principal, tokens=tokens):
                return await inner(request, context)

        async def answers(request: Any, context: Any) -> AsyncIterator[Any]:
            task_calls_as(principal, tokens=tokens)   # a stream's handler runs in a task of its own
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
