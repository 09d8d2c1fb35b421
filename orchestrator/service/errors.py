"""What a service call's failure is called, whichever door it came through.

The services raise the core's errors (core/errors.py), `Refused` (a caller the table does not let
do it), or StoreUnavailable. Each has one status name, gRPC's canonical ones (`status_name`); the
gRPC API turns a name into its status code (api/errors.py), the HTTP doors into an HTTP status
(`Refused.http_status`). `refused` is a failure in those words, as the HTTP doors show it; a
failure that is none of these is a bug, logged with its trace and told as such (`internal_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from ..core.errors import FailedPrecondition, InvalidArgument, NotFound, OrchestratorError, TooLarge, Unavailable
from ..store import StoreUnavailable

__all__ = ["HTTP_STATUS", "Refused", "internal_error", "refused", "refusing", "serving_as", "status_name"]

log = logging.getLogger(__name__)

STATUS_NAMES: dict[type[OrchestratorError], str] = {
    InvalidArgument: "INVALID_ARGUMENT", NotFound: "NOT_FOUND", FailedPrecondition: "FAILED_PRECONDITION",
    TooLarge: "RESOURCE_EXHAUSTED", Unavailable: "UNAVAILABLE"}
# The HTTP doors' mapping (the console's and the Conductor API's): a status name to an HTTP status.
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409,
               "RESOURCE_EXHAUSTED": 413, "UNAVAILABLE": 503, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
               "UNIMPLEMENTED": 501}


class Refused(Exception):
    """A request refused; `code` is its status name (gRPC's canonical one)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def status_name(exc: OrchestratorError) -> str:
    """The status name of a core error (INTERNAL for one no table names)."""
    for kind in type(exc).__mro__:
        if kind in STATUS_NAMES:
            return STATUS_NAMES[kind]
    return "INTERNAL"


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


def refused(exc: Exception, what: str = "") -> Refused:
    """`exc`, raised by a service call (`what` names it in the log), as the refusal it means."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, OrchestratorError):
        return Refused(status_name(exc), str(exc))
    if isinstance(exc, StoreUnavailable):
        return Refused("UNAVAILABLE", f"state store unavailable: {exc}")
    log.error("%s failed (a bug)", what or "a service call", exc_info=exc)
    return Refused("INTERNAL", internal_error(type(exc).__name__))


T = TypeVar("T")


async def refusing(call: Awaitable[T]) -> T:
    """The answer of a service call, or what it failed with as `Refused` (`refused`)."""
    try:
        return await call
    except Refused:
        raise
    except Exception as exc:
        raise refused(exc, getattr(call, "__qualname__", "")) from exc
