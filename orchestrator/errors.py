"""Errors with a meaning for API callers: each maps to one gRPC status code."""

from __future__ import annotations

import grpc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class OrchestratorError(Exception):
    """Root of the errors that the API turns into a gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(OrchestratorError):
    """The request or a definition is malformed; the message says what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class NotFound(OrchestratorError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(OrchestratorError):
    """The request is well-formed but the target's state does not allow it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class TooLarge(OrchestratorError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StaleEpoch(Exception):
    """Redis refused an engine write: a newer leader has raised the epoch.

    Not an API error: the engine that sees it must stop at once."""



# What a call to Redis raises while Redis is down or restarting: retry later.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
