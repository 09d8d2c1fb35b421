"""The worker SDK's errors: one root, and retry behaviour carried by the type.

A handler signals a retryable failure by raising :class:`TaskError` (or any
other exception) and a failure that must never be retried by raising
:class:`TerminalTaskError`. :class:`ClientError` is what
:class:`worker.WorkflowClient` raises when the cluster refuses a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SDKError", "TaskError", "TerminalTaskError", "ClientError"]


class SDKError(Exception):
    """Root of every error the worker SDK raises or understands."""


class TaskError(SDKError):
    """A task attempt failed; the orchestrator retries it per its task definition.

    Args:
        reason: a human-readable explanation, stored on the task attempt.
        output: an optional JSON object stored as the failed attempt's output
            (for example the upstream error payload), to help debugging.
    """

    def __init__(self, reason: str = "", *, output: Mapping[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.output: dict[str, Any] = dict(output or {})


class TerminalTaskError(TaskError):
    """A task attempt failed in a way no retry can fix (FAILED_TERMINAL).

    The reason is reported exactly as given, without the exception type.
    """


class ClientError(SDKError):
    """A call of the unary API failed.

    Attributes:
        code: the gRPC status code name, for example ``"NOT_FOUND"`` or
            ``"INVALID_ARGUMENT"`` (``"UNAVAILABLE"`` when no endpoint answered).
        message: the server's explanation (the gRPC status details).
        endpoint: the endpoint that produced the error, when known.
    """

    def __init__(self, code: str, message: str, endpoint: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.endpoint = endpoint
