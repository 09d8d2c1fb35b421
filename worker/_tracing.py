"""Optional OpenTelemetry: each handler runs inside a span that is a child of its attempt's span.

The node sends each attempt's W3C trace context (``TaskAssignment.traceparent``: the trace is the
workflow's, the parent the attempt's span). When the ``opentelemetry`` API is installed in the
worker's environment, the handler runs inside a span ``handler <task type>`` (kind CONSUMER)
whose parent that is, made current for the handler's own spans (sync handlers too: they run in
a copy of the caller's context). Its exporter and sampler are the application's: the SDK only
uses the global tracer provider. With none configured, no span is made (it would record nothing
and cost more than the rest of starting a handler): the attempt's trace context is only made
current, so that what the handler passes on (an outgoing request's headers) still carries it.
Without OpenTelemetry nothing here is imported, and ``context().traceparent`` is still there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._context import TaskContext

__all__ = ["handler_span", "end_span"]

_UNLOADED = object()
_otel: Any = _UNLOADED   # (trace module, propagator, context module) once loaded, None when not installed


def _opentelemetry() -> Any:
    global _otel
    if _otel is _UNLOADED:
        try:
            from opentelemetry import context as otel_context
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            _otel = None
        else:
            _otel = (trace, TraceContextTextMapPropagator(), otel_context)
    return _otel


@contextlib.contextmanager
def handler_span(ctx: TaskContext) -> Iterator[Any]:
    """The span the handler runs in (current inside the block), or None: no traceparent came
    with the task, or OpenTelemetry is not installed."""
    otel = _opentelemetry() if ctx.traceparent else None
    if otel is None:
        yield None
        return
    trace, propagator, otel_context = otel
    parent = propagator.extract({"traceparent": ctx.traceparent})
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):   # none configured (yet)
        token = otel_context.attach(parent)
        try:
            yield None
        finally:
            otel_context.detach(token)
        return
    tracer = trace.get_tracer("ha-orchestrator-worker")
    attributes = {"orchestrator.workflow_id": ctx.workflow_id, "orchestrator.task_id": ctx.task_id,
                  "orchestrator.task_type": ctx.task_type, "orchestrator.task_ref": ctx.reference_name,
                  "orchestrator.attempt": ctx.attempt, "orchestrator.worker_id": ctx.worker_id}
    with tracer.start_as_current_span(f"handler {ctx.task_type}", context=parent, kind=trace.SpanKind.CONSUMER,
                                      attributes=attributes, record_exception=False,
                                      set_status_on_exception=False) as span:
        yield span


def end_span(span: Any, status: str, reason: str, error: BaseException | None) -> None:
    """Record the attempt's outcome on its handler span (before it ends)."""
    if span is None:
        return
    trace = _otel[0]
    span.set_attribute("orchestrator.task_status", status)
    if error is not None:
        span.record_exception(error)
    if status != "COMPLETED":
        span.set_status(trace.Status(trace.StatusCode.ERROR, reason[:1000]))
