"""Running one task assignment: from TaskAssignment to TaskResult.

This is the whole outcome mapping, free of any networking, so it is tested
directly:

* a returned dict (None means ``{}``) -> COMPLETED with that output;
* ``TerminalTaskError(reason)`` -> FAILED_TERMINAL with ``reason`` as given;
* any other exception, ``TaskError`` included -> FAILED (retryable) with
  reason ``"ExcType: message"``;
* a returned non-dict, output that is not encodable as JSON, or input that
  is not a JSON object -> FAILED_TERMINAL: retrying cannot fix a programming
  error, and the reason says what to fix.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from orchestrator_api.v1 import orchestrator_pb2 as pb

from ._codec import PayloadError, decode_object, encode_object
from ._context import TaskContext, _enter, _leave
from ._task import Handler, runs_inline
from ._tracing import end_span, handler_span
from .errors import TaskError, TerminalTaskError

__all__ = ["execute_assignment", "describe_exception"]

log = logging.getLogger("worker.execution")

COMPLETED = pb.TaskResult.COMPLETED
FAILED = pb.TaskResult.FAILED
FAILED_TERMINAL = pb.TaskResult.FAILED_TERMINAL

# Reasons are stored on task records; keep a runaway message from bloating them.
_MAX_REASON_CHARS = 4000
_EMPTY_OBJECT = b"{}"


@dataclass(frozen=True)
class _Outcome:
    status: pb.TaskResult.Status
    output_json: bytes = _EMPTY_OBJECT
    reason: str = ""
    error: BaseException | None = None   # what the handler raised (recorded on its span)


async def execute_assignment(
    assignment: pb.TaskAssignment,
    handler: Handler | None,
    *,
    context: TaskContext | None = None,
    executor: Executor | None = None,
) -> pb.TaskResult:
    """Run ``handler`` on the assignment's input and return the result to report.

    Handler failures never escape: they become the result. Only cancellation
    of the calling asyncio task propagates (the worker abandoned the attempt).

    Args:
        assignment: the task pushed by the node.
        handler: the handler for its task type; None when the worker has none
            (reported as a retryable FAILED, so another worker may take it).
        context: the context handlers see through ``context()``; built from
            the assignment when omitted.
        executor: where sync handlers run; the loop's default executor if None.
            A sync handler marked ``@task(..., inline=True)`` runs in the loop itself.
    """
    ctx = context if context is not None else TaskContext.from_assignment(assignment)
    with handler_span(ctx) as span:   # a span only with a traceparent and OpenTelemetry installed
        outcome = await _outcome(assignment, handler, ctx, executor)
        if span is not None:
            end_span(span, pb.TaskResult.Status.Name(outcome.status), outcome.reason, outcome.error)
    return pb.TaskResult(
        workflow_id=assignment.workflow_id,
        task_id=assignment.task_id,
        status=outcome.status,
        output_json=outcome.output_json,
        reason=outcome.reason[:_MAX_REASON_CHARS],
    )


async def _outcome(
    assignment: pb.TaskAssignment, handler: Handler | None, ctx: TaskContext, executor: Executor | None
) -> _Outcome:
    if handler is None:
        return _Outcome(FAILED, reason=f"this worker has no handler for task type {assignment.task_type!r}")
    try:
        data = decode_object(assignment.input_json)
    except PayloadError as err:
        return _Outcome(FAILED_TERMINAL, reason=f"task input is not a JSON object: {err}")
    try:
        value = await _call_handler(handler, data, ctx, executor)
    except TerminalTaskError as err:
        return _failure(FAILED_TERMINAL, err.reason, err.output, err)
    except TaskError as err:
        return _failure(FAILED, describe_exception(err), err.output, err)
    except asyncio.CancelledError as err:
        if _being_cancelled():
            raise
        return _failure(FAILED, describe_exception(err), error=err)
    except Exception as err:
        log.warning("task %s (%s) raised", assignment.task_id, assignment.task_type, exc_info=True)
        return _failure(FAILED, describe_exception(err), error=err)
    return _completion(value)


async def _call_handler(handler: Handler, data: dict[str, Any], ctx: TaskContext, executor: Executor | None) -> Any:
    token = _enter(ctx)
    try:
        if inspect.iscoroutinefunction(handler):
            result = await handler(data)
        elif runs_inline(handler):   # no thread hand-off either way: the loop waits for it
            result = handler(data)
        else:
            run_in_context = functools.partial(contextvars.copy_context().run, handler, data)
            result = await asyncio.get_running_loop().run_in_executor(executor, run_in_context)
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            result = await result
        return result
    finally:
        _leave(token)


def _completion(value: Any) -> _Outcome:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return _Outcome(
            FAILED_TERMINAL,
            reason=f"the handler must return a JSON object (a dict) or None, but it returned {type(value).__name__}",
        )
    try:
        return _Outcome(COMPLETED, output_json=encode_object(value))
    except PayloadError as err:
        return _Outcome(FAILED_TERMINAL, reason=f"the handler's output cannot be encoded as JSON: {err}")


def _failure(status: pb.TaskResult.Status, reason: str, output: dict[str, Any] | None = None,
             error: BaseException | None = None) -> _Outcome:
    if not output:
        return _Outcome(status, reason=reason, error=error)
    try:
        return _Outcome(status, output_json=encode_object(output), reason=reason, error=error)
    except PayloadError as err:
        return _Outcome(status, reason=f"{reason} (error output dropped: not encodable as JSON: {err})", error=error)


def describe_exception(err: BaseException) -> str:
    """Render an exception as ``"ExcType: message"`` (just the type if no message)."""
    message = str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _being_cancelled() -> bool:
    """True when the current asyncio task itself was cancelled, as opposed
    to a handler letting some inner CancelledError escape."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
