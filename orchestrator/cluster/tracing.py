"""OpenTelemetry traces: one span per workflow run, one per task attempt; workers join them.

Ids are derived, not stored. The trace id is a hash of the workflow's root id (the part before
the first "."; a sub-workflow `<parent>.<ref>.<n>.<x>` and a failure workflow `<id>.failure.<x>`
share their root's trace), a workflow's span id a hash of its id, an attempt's span id a hash of
its task id. So any node can write any span, or hand a worker its parent (the `traceparent` of
the TaskAssignment), without a span's start having been remembered anywhere:

- the **workflow span** (`workflow <name>`, from its creation to its end) is written by the node
  whose decision ends it; a sub-workflow's has its parent's span as parent, a failure workflow's
  the failed workflow's;
- an **attempt span** (`task <type>`, from dispatch to result, child of the workflow span) is
  written by the node that dispatched the attempt, when it next applies a decision of that
  workflow after the attempt ended: at once in the usual case, where the worker's result comes
  to that node and that node decides it. A node that dies first takes its spans with it: traces
  are telemetry, the record is Redis.

Nothing is recorded or exported unless an exporter is configured: OTLP when
OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set (the exporter package is the
optional extra `otlp`), or `trace_file` (JSON lines: development, tests). The `traceparent`
handed to workers is computed either way (a hash); its sampled flag says whether the node records.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ..core import state as m
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.decider import Decision
from ..store import ClaimedTask

log = logging.getLogger(__name__)

MAX_PENDING = 100_000       # attempts dispatched and not yet traced that a node remembers
SERVICE_NAME = "ha-orchestrator"


# ------------------------------------------------------------ ids (pure, no OpenTelemetry)

def _hash(kind: str, text: str, size: int) -> int:
    value = int.from_bytes(hashlib.blake2b(f"{kind}:{text}".encode(), digest_size=size).digest(), "big")
    return value or 1   # an all-zero id is invalid in W3C trace context


def root_workflow_id(workflow_id: str) -> str:
    """The workflow whose trace this one belongs to: sub-workflows and failure workflows carry
    their root's id before the first "."."""
    return workflow_id.split(".", 1)[0]


def trace_id(workflow_id: str) -> int:
    return _hash("trace", root_workflow_id(workflow_id), 16)


def workflow_span_id(workflow_id: str) -> int:
    return _hash("workflow", workflow_id, 8)


def attempt_span_id(workflow_id: str, task_id: str) -> int:
    return _hash("attempt", f"{workflow_id}/{task_id}", 8)


def traceparent(workflow_id: str, task_id: str, sampled: bool = True) -> str:
    """The W3C `traceparent` of an attempt's span, as workers receive it."""
    return (f"00-{trace_id(workflow_id):032x}-{attempt_span_id(workflow_id, task_id):016x}-"
            f"{'01' if sampled else '00'}")


def parent_workflow_id(state: m.WorkflowState) -> str:
    """The workflow whose span is this workflow span's parent ("" for a root)."""
    if state.parent:
        return state.parent.split("|", 1)[0]
    if ".failure." in state.workflow_id:
        return state.workflow_id.rsplit(".failure.", 1)[0]
    return ""


# ------------------------------------------------------------ the node's spans

class Tracing:
    """The spans of one node. Without exporters every hook is a no-op (and cheap)."""

    def __init__(self, node_id: str = "", cluster: str = "", exporters: Sequence[SpanExporter] = ()) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.enabled = bool(exporters)
        self._pending: OrderedDict[str, tuple[str, str]] = OrderedDict()   # task id -> (workflow id, worker id)
        self._by_workflow: dict[str, set[str]] = {}
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._ids = ChosenIds()
        if exporters:
            self._start(list(exporters))

    @classmethod
    def from_settings(cls, node_id: str, cluster: str, trace_file: str = "") -> Tracing:
        """Exporters from the node's settings and the standard OTEL_* environment."""
        exporters: list[SpanExporter] = []
        if trace_file:
            exporters.append(JsonLinesExporter(trace_file))
        otlp = _otlp_exporter()
        if otlp is not None:
            exporters.append(otlp)
        return cls(node_id, cluster, exporters)

    def _start(self, exporters: list[SpanExporter]) -> None:
        attributes: dict[str, str] = {"service.instance.id": self.node_id, "orchestrator.cluster": self.cluster}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = SERVICE_NAME
        provider = TracerProvider(resource=Resource.create(attributes), id_generator=self._ids)
        for exporter in exporters:   # a file is written at once (development); OTLP in batches, off the loop
            simple = isinstance(exporter, JsonLinesExporter | InMemorySpanExporter)
            provider.add_span_processor(SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("orchestrator.node")

    def shutdown(self) -> None:
        """Flush and stop the exporters (node stop)."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None

    # ------------------------------------------------------------ hooks

    def dispatched(self, task: ClaimedTask, worker_id: str) -> str:
        """A task is pushed to `worker_id`: remember it (its span is written when it ended), and
        return the traceparent the worker gets."""
        if self.enabled:
            task_id = task.spec.task_id
            self._pending[task_id] = (task.workflow_id, worker_id)
            self._by_workflow.setdefault(task.workflow_id, set()).add(task_id)
            while len(self._pending) > MAX_PENDING:
                old_id, (old_workflow, _) = self._pending.popitem(last=False)
                self._forget(old_workflow, old_id)
        return traceparent(task.workflow_id, task.spec.task_id, self.enabled)

    def on_decision(self, state: m.WorkflowState, decision: Decision) -> None:
        """A decision of this workflow was applied: write the spans of the attempts this node
        dispatched that have ended, and the workflow's span if the decision ends it."""
        if not self.enabled:
            return
        try:
            if state.workflow_id in self._by_workflow:
                self._attempts(state, decision)
            if decision.status in st.TERMINAL_WORKFLOW:
                self._workflow(state, decision)
        except Exception:   # telemetry never stops a decision
            log.exception("could not write the spans of workflow %s", state.workflow_id,
                          extra={"workflow_id": state.workflow_id})

    def _forget(self, workflow_id: str, task_id: str) -> None:
        ids = self._by_workflow.get(workflow_id)
        if ids is not None:
            ids.discard(task_id)
            if not ids:
                del self._by_workflow[workflow_id]

    def _attempts(self, state: m.WorkflowState, decision: Decision) -> None:
        mine = self._by_workflow.get(state.workflow_id, set())
        for task in state.tasks:
            if task.task_id not in mine:
                continue
            runtime = decision.changed_runtimes.get(task.task_id, task.runtime)
            if runtime.status in st.ACTIVE_TASK and decision.status not in st.TERMINAL_WORKFLOW:
                continue
            _, worker_id = self._pending.pop(task.task_id, ("", ""))
            self._forget(state.workflow_id, task.task_id)
            if runtime.worker_id and runtime.worker_id != worker_id:
                continue   # given back, then dispatched again elsewhere: that dispatch's span
            self._attempt_span(state, task, runtime)
        for task_id in list(self._by_workflow.get(state.workflow_id, ())):
            if decision.status in st.TERMINAL_WORKFLOW or task_id in decision.delete_tasks:
                self._pending.pop(task_id, None)   # never to be seen again (deleted, or the run ended)
                self._forget(state.workflow_id, task_id)

    def _attempt_span(self, state: m.WorkflowState, task: m.TaskState, runtime: m.TaskRuntime) -> None:
        spec = task.spec
        start = runtime.started_at_ms or spec.scheduled_at_ms
        end = max(runtime.ended_at_ms or now_ms(), start)   # still running when its workflow ended: until now
        attributes = {"orchestrator.workflow_id": state.workflow_id, "orchestrator.workflow_name": state.name,
                      "orchestrator.task_id": spec.task_id, "orchestrator.task_ref": spec.key,
                      "orchestrator.task_type": spec.task_type, "orchestrator.attempt": spec.attempt,
                      "orchestrator.worker_id": runtime.worker_id, "orchestrator.task_status": str(runtime.status)}
        failed = runtime.status not in st.DONE_TASK
        self._emit(f"task {spec.task_type}", state.workflow_id, attempt_span_id(state.workflow_id, spec.task_id),
                   workflow_span_id(state.workflow_id), start, end, attributes,
                   (runtime.reason or str(runtime.status)) if failed else None, kind=SpanKind.PRODUCER)

    def _workflow(self, state: m.WorkflowState, decision: Decision) -> None:
        status = str(decision.status)
        parent = parent_workflow_id(state)
        attributes = {"orchestrator.workflow_id": state.workflow_id, "orchestrator.workflow_name": state.name,
                      "orchestrator.workflow_version": state.version, "orchestrator.workflow_status": status,
                      "orchestrator.correlation_id": state.correlation_id}
        reason = decision.reason or state.reason
        self._emit(f"workflow {state.name}", state.workflow_id, workflow_span_id(state.workflow_id),
                   workflow_span_id(parent) if parent else None, state.created_at_ms,
                   max(now_ms(), state.created_at_ms), attributes,
                   (reason or status) if status != st.COMPLETED else None, kind=SpanKind.INTERNAL)

    def _emit(self, name: str, workflow_id: str, span_id: int, parent_span_id: int | None, start_ms: int,
              end_ms: int, attributes: dict[str, Any], error: str | None, *, kind: SpanKind) -> None:
        assert self._tracer is not None
        trace_of = trace_id(workflow_id)
        context = Context()   # no ambient span: the parent is exactly the one named
        if parent_span_id is not None:
            parent = SpanContext(trace_of, parent_span_id, is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        with self._ids.lock:
            self._ids.trace_id, self._ids.span_id = trace_of, span_id
            span = self._tracer.start_span(name, context=context, kind=kind, attributes=attributes,
                                           start_time=start_ms * 1_000_000)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error[:1000]))
        span.end(end_time=end_ms * 1_000_000)


class ChosenIds(IdGenerator):
    """Returns the ids set on it just before a span starts (the SDK draws a span's ids from its
    generator; this one is told them). Set and used under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trace_id: int | None = None
        self.span_id: int | None = None
        self._random = RandomIdGenerator()

    def generate_trace_id(self) -> int:
        chosen, self.trace_id = self.trace_id, None
        return chosen if chosen is not None else self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        chosen, self.span_id = self.span_id, None
        return chosen if chosen is not None else self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return False   # hashes of ids, not the random trace ids of W3C trace context level 2


OTLP_MODULES = {"grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter"}


def _otlp_exporter() -> SpanExporter | None:
    """The OTLP exporter when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, over the protocol
    OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL names: grpc (the default) or http/protobuf. The exporter
    reads the rest of its settings (headers, certificates, timeout) from the OTEL_* environment."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc")
    module_name = OTLP_MODULES.get(protocol)
    if module_name is None:
        log.warning("OTLP protocol %r is not supported (grpc or http/protobuf); no traces are exported over OTLP",
                    protocol)
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but %s is not installed (pip install "
                    "'ha-orchestrator[otlp]'); no traces are exported over OTLP", package)
        return None
    exporter: SpanExporter = module.OTLPSpanExporter()
    return exporter


class JsonLinesExporter(SpanExporter):
    """Writes each span as one JSON object per line to a file (appended): `trace_file`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(span_record(span), separators=(",", ":")) + "\n" for span in spans]
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.writelines(lines)
        except OSError as exc:
            log.warning("could not write spans to %s: %s", self.path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True



def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A span as the trace file holds it: ids in hex, times in ns since the epoch."""
    context = span.get_span_context()
    assert context is not None
    return {"name": span.name, "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}",
            "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
            "kind": span.kind.name, "start_time_unix_nano": span.start_time, "end_time_unix_nano": span.end_time,
            "status": span.status.status_code.name, "status_description": span.status.description or "",
            "attributes": dict(span.attributes or {}),
            "resource": {k: v for k, v in span.resource.attributes.items() if isinstance(v, (str, int, float, bool))}}
