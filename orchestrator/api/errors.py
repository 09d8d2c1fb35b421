"""One place that turns the core's errors into gRPC status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from ..core.errors import FailedPrecondition, InvalidArgument, NotFound, OrchestratorError, TooLarge, Unavailable
from ..handlers import internal_error
from ..store import StoreUnavailable

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[OrchestratorError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(exc: OrchestratorError) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]
    return grpc.StatusCode.INTERNAL


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(handler: Handler) -> Handler:
    """Turn OrchestratorError into its gRPC status; anything else is a bug and logged."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except OrchestratorError as exc:
            await context.abort(status_code(exc), str(exc))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"state store unavailable: {exc}")
        except Exception as exc:   # a bug: say so (INTERNAL, not gRPC's UNKNOWN) and keep the trace
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("%s failed (a bug)", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, internal_error(type(exc).__name__))

    return wrapper  # type: ignore[return-value]


