"""The running task's context, reachable from handler code through ``context()``.

It lives in a :class:`contextvars.ContextVar`, set around each handler call;
sync handlers run in a thread with a copy of the caller's context, so
``context()`` works in both kinds of handler.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator_api.v1 import orchestrator_pb2 as pb

from .errors import SDKError

__all__ = ["TaskContext", "context"]

_current: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("orchestrator_task_context")


class _Cancelled:
    """Whether an attempt is void: set once by the worker's loop, read by its handler from any
    thread (one attribute, which needs no lock). A threading.Event did the same at twice the cost
    of the rest of the context, made for every attempt when almost none is ever cancelled."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


@dataclass(frozen=True, eq=False)
class TaskContext:
    """What a handler knows about the task attempt it is running.

    Attributes:
        workflow_id: the workflow the task belongs to.
        task_id: the id of this attempt (a retry gets a new one).
        task_type: the task definition name the handler was registered for.
        reference_name: the task's reference name in the workflow definition.
        attempt: 0 for the first attempt, 1 for the first retry, ...
        idempotency_key: stable across the attempts of one task in one
            workflow; pass it to downstream services to make side effects
            idempotent, since delivery is at-least-once.
        lease_ms: the lease the node granted; the SDK heartbeats well within it.
        worker_id: the id of the worker running the attempt.
        traceparent: the W3C trace context of the attempt's span on the node
            ("00-<trace id>-<span id>-<flags>"; the trace id is the workflow's),
            or "" from a node that sends none. With OpenTelemetry installed the
            handler already runs in a span that is its child; without it, pass
            it on to your own tracing.
    """

    workflow_id: str
    task_id: str
    task_type: str
    reference_name: str = ""
    attempt: int = 0
    idempotency_key: str = ""
    lease_ms: int = 0
    worker_id: str = ""
    traceparent: str = ""
    _cancelled: _Cancelled = field(default_factory=_Cancelled, repr=False)
    _heartbeat_hook: Callable[[], None] | None = field(default=None, repr=False)

    @classmethod
    def from_assignment(
        cls,
        assignment: pb.TaskAssignment,
        *,
        worker_id: str = "",
        heartbeat_hook: Callable[[], None] | None = None,
    ) -> TaskContext:
        """Build the context of the attempt described by ``assignment``."""
        return cls(
            workflow_id=assignment.workflow_id,
            task_id=assignment.task_id,
            task_type=assignment.task_type,
            reference_name=assignment.reference_name,
            attempt=assignment.attempt,
            idempotency_key=assignment.idempotency_key,
            lease_ms=assignment.lease_ms,
            worker_id=worker_id,
            traceparent=assignment.traceparent,
            _heartbeat_hook=heartbeat_hook,
        )

    @property
    def cancelled(self) -> bool:
        """True once the attempt is void: its lease is gone, or the worker is
        shutting down past its grace period. The handler may stop early; its
        result will be refused by the node anyway."""
        return self._cancelled.value

    def heartbeat(self) -> None:
        """Ask for a heartbeat now. Never needed (the SDK heartbeats on its
        own every lease/3) but harmless; safe to call from any thread."""
        if self._heartbeat_hook is not None:
            self._heartbeat_hook()

    def _cancel(self) -> None:
        """Mark the attempt as void (SDK-internal)."""
        self._cancelled.value = True


def context() -> TaskContext:
    """Return the context of the task attempt the calling handler is running.

    Raises:
        SDKError: when called outside a task handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise SDKError("context() is only available inside a task handler") from None


def _enter(ctx: TaskContext) -> contextvars.Token[TaskContext]:
    """Make ``ctx`` the current context (SDK-internal); pair with ``_leave``."""
    return _current.set(ctx)


def _leave(token: contextvars.Token[TaskContext]) -> None:
    _current.reset(token)
