"""One place that turns what a service call failed with into a gRPC status: a core error or a
refusal by its status name (service/errors.py), an unreachable store as UNAVAILABLE, anything
else as the bug it is (INTERNAL, logged with its trace)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from ..core.errors import OrchestratorError
from ..service.errors import Refused, internal_error, status_name
from ..store import StoreUnavailable

log = logging.getLogger(__name__)


def status_code(exc: OrchestratorError) -> grpc.StatusCode:
    return code_named(status_name(exc))


def code_named(name: str) -> grpc.StatusCode:
    """The gRPC status code of a status name (INTERNAL for a name gRPC does not have)."""
    code = getattr(grpc.StatusCode, name, None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INTERNAL


async def abort(context: Any, exc: OrchestratorError | Refused) -> NoReturn:
    """End the call with the status `exc` (a core error or a refusal) means."""
    if isinstance(exc, Refused):
        await context.abort(code_named(exc.code), exc.message)
    else:
        await context.abort(status_code(exc), str(exc))
    raise AssertionError("abort returned")   # it raises; said for the type checker


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def status_of(exc: Exception, what: str) -> tuple[grpc.StatusCode, str]:
    """The status a call that failed with `exc` ends with: a refusal and OrchestratorError by their
    status, an unreachable store as UNAVAILABLE; anything else is a bug in `what`, logged with its
    trace (INTERNAL, not gRPC's UNKNOWN). Call it inside the `except` that caught `exc`."""
    if isinstance(exc, Refused):
        return code_named(exc.code), exc.message
    if isinstance(exc, OrchestratorError):
        return status_code(exc), str(exc)
    if isinstance(exc, StoreUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"state store unavailable: {exc}"
    log.exception("%s failed (a bug)", what)
    return grpc.StatusCode.INTERNAL, internal_error(type(exc).__name__)


def grpc_errors(handler: Handler) -> Handler:
    """End a call that failed with the status its error means (`status_of`)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_of(exc, handler.__name__)
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
