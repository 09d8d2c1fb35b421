"""Errors with a meaning for callers; the API layer maps each to one gRPC status code.

Pure: nothing here knows of gRPC or Redis, so the core can raise them without either."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of the errors the API turns into a status (anything else is a bug: INTERNAL)."""


class InvalidArgument(OrchestratorError):
    """The request or a definition is malformed; the message says what to fix."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class NotFound(OrchestratorError):
    """An id or a name that names nothing stored."""


class FailedPrecondition(OrchestratorError):
    """The request is well-formed but the target's state does not allow it."""


class Unavailable(OrchestratorError):
    """A service the node needs (etcd, the state store) did not answer: try again shortly."""


class TooLarge(OrchestratorError):
    """A payload or a message over its byte limit."""


class StaleEpoch(Exception):
    """The store refused a fenced write: a newer leader has raised the epoch.

    Not an API error: the engine that sees it must stop at once."""
