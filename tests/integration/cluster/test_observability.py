"""Traces and JSON logs.

Two real nodes write their spans to files (`--trace-file`) and log JSON lines (`--log-format
json`); a real worker, in this process, records its spans with OpenTelemetry's
InMemorySpanExporter. One workflow (a task that fails once, a sub-workflow, a HUMAN gate
signalled through the other node) must come out as one trace: the workflow span, the
sub-workflow's span below it, an attempt span per attempt below each, and each handler's span
(and the handler's own span) below its attempt. The pieces are also tested directly: ids,
the node's span hooks, the worker SDK with and without OpenTelemetry, the log formatter."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port
from helpers import BackgroundWorker, unique
from orchestrator.cluster import tracing
from orchestrator.cluster.logs import ContextFields, JsonFormatter, log_fields
from orchestrator.config import NodeConfig
from orchestrator.core import state as m
from orchestrator.core.decider import Decision
from orchestrator.core.schema import WorkflowDef
from orchestrator.core.statuses import TaskStatus, WorkflowStatus
from orchestrator.store import ClaimedTask
from orchestrator_api.v1 import orchestrator_pb2 as pb
from worker import TaskError, Worker, WorkflowClient, context, task
from worker._execution import execute_assignment

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def worker_spans() -> Iterator[InMemorySpanExporter]:
    """What workers in this process record: the global tracer provider, as an application sets it."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def hex_id(value: int, size: int) -> str:
    return f"{value:0{size}x}"


# ------------------------------------------------------------ one trace across two nodes and a worker

@task("traced_flaky")
def traced_flaky(data: dict[str, Any]) -> dict[str, Any]:
    ctx = context()
    SEEN.append((ctx.task_id, ctx.traceparent))
    with trace.get_tracer("handler code").start_as_current_span("user work"):
        if ctx.attempt == 0:
            raise TaskError("the first try fails")
    return {"attempt": ctx.attempt}


SEEN: list[tuple[str, str]] = []


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster,
              redis_server: RedisServer) -> Iterator[dict[str, tuple[ManagedProcess, str, Path]]]:
    """Nodes a (the leader) and b of a fresh cluster, logging JSON at DEBUG, writing spans to files."""
    base = tmp_path_factory.mktemp("observed")
    cluster = f"o{uuid.uuid4().hex[:8]}"
    nodes: dict[str, tuple[ManagedProcess, str, Path]] = {}
    try:
        for node_id in ("a", "b"):
            port, spans = free_port(), base / f"spans-{node_id}.jsonl"
            process = start_node(base / node_id, node_id=node_id, port=port, redis_url=redis_server.url,
                                 etcd_endpoints=etcd.endpoints, cluster=cluster, lease_ttl_s=2.0, log_level="DEBUG",
                                 extra=["--log-format", "json", "--trace-file", str(spans)])
            nodes[node_id] = (process, f"127.0.0.1:{port}", spans)
            with WorkflowClient([nodes[node_id][1]]) as client:
                assert wait_for_leader(client, 20.0)["leader_id"] == "a"
        yield nodes
    finally:
        for process, _, _ in nodes.values():
            process.stop()


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_spans(path: Path, name: str, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [s for s in read_spans(path) if s["name"] == name]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_workflow_is_one_trace_across_nodes_and_workers(two_nodes, worker_spans):
    (_, a, spans_a), (_, b, spans_b) = two_nodes["a"], two_nodes["b"]
    parent, child = unique("traced"), unique("traced_child")
    SEEN.clear()
    with WorkflowClient([a]) as via_a:
        via_a.register_task_def({"name": "traced_flaky", "retryCount": 2, "retryDelaySeconds": 0})
        via_a.register_workflow_def({"name": child, "tasks": [{"name": "traced_flaky", "taskReferenceName": "inner"}]})
        via_a.register_workflow_def({"name": parent, "tasks": [
            {"name": "traced_flaky", "taskReferenceName": "first"},
            {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": child}},
            {"name": "gate", "taskReferenceName": "gate", "type": "HUMAN"}]})
        background = BackgroundWorker(Worker(endpoints=[b], handlers=[traced_flaky]))   # on node b only
        try:
            workflow_id = via_a.start_workflow(parent)
            deadline = time.monotonic() + 20
            while not any(t["key"] == "gate" and t["status"] == "IN_PROGRESS"
                          for t in via_a.get_workflow(workflow_id)["tasks"]):
                assert time.monotonic() < deadline, via_a.get_workflow(workflow_id)
                time.sleep(0.05)
            via_a.signal_task(workflow_id, "gate", output={"ok": True})   # node a decides the end
            done = via_a.get_workflow(workflow_id)
            deadline = time.monotonic() + 10
            while done["status"] != "COMPLETED":
                assert time.monotonic() < deadline, done
                time.sleep(0.05)
                done = via_a.get_workflow(workflow_id)
        finally:
            background.stop()
    child_id = next(t["sub_workflow_id"] for t in done["tasks"] if t["key"] == "sub")
    trace_hex = hex_id(tracing.trace_id(workflow_id), 32)
    assert tracing.trace_id(child_id) == tracing.trace_id(workflow_id), "a sub-workflow is in its root's trace"

    [workflow_span] = wait_for_spans(spans_a, f"workflow {parent}", 1)   # written by the node that ended it
    assert workflow_span["trace_id"] == trace_hex and workflow_span["parent_span_id"] == ""
    assert workflow_span["span_id"] == hex_id(tracing.workflow_span_id(workflow_id), 16)
    assert workflow_span["status"] == "UNSET" and workflow_span["resource"]["service.instance.id"] == "a"
    assert workflow_span["attributes"]["orchestrator.workflow_status"] == "COMPLETED"
    assert workflow_span["start_time_unix_nano"] == done["created_at_ms"] * 1_000_000
    assert workflow_span["end_time_unix_nano"] >= done["ended_at_ms"] * 1_000_000 - 5_000_000

    [child_span] = wait_for_spans(spans_b, f"workflow {child}", 1)
    assert child_span["trace_id"] == trace_hex and child_span["parent_span_id"] == workflow_span["span_id"]

    attempts = wait_for_spans(spans_b, "task traced_flaky", 4)   # written by the node that dispatched them
    assert len(attempts) == 4 and not wait_for_spans(spans_a, "task traced_flaky", 1, timeout_s=0)
    by_workflow: dict[str, list[dict[str, Any]]] = {span["attributes"]["orchestrator.workflow_id"]: []
                                                    for span in attempts}
    for span in attempts:
        assert span["trace_id"] == trace_hex and span["kind"] == "PRODUCER"
        assert span["start_time_unix_nano"] <= span["end_time_unix_nano"]
        by_workflow[span["attributes"]["orchestrator.workflow_id"]].append(span)
    assert set(by_workflow) == {workflow_id, child_id}
    for owner, owner_span in ((workflow_id, workflow_span), (child_id, child_span)):
        first, second = sorted(by_workflow[owner], key=lambda s: s["attributes"]["orchestrator.attempt"])
        assert first["parent_span_id"] == second["parent_span_id"] == owner_span["span_id"]
        assert first["status"] == "ERROR" and "the first try fails" in first["status_description"], first
        assert second["status"] == "UNSET" and second["attributes"]["orchestrator.task_status"] == "COMPLETED"
        for span in (first, second):
            task_id = span["attributes"]["orchestrator.task_id"]
            assert span["span_id"] == hex_id(tracing.attempt_span_id(owner, task_id), 16)

    # the worker: each handler ran in a span below its attempt's, and the handler's own span below that
    attempt_ids = {span["span_id"] for span in attempts}
    assert sorted(SEEN) == sorted((span["attributes"]["orchestrator.task_id"],
                                   f"00-{trace_hex}-{span['span_id']}-01") for span in attempts)
    recorded: tuple[ReadableSpan, ...] = worker_spans.get_finished_spans()
    handlers = [span for span in recorded if span.name == "handler traced_flaky"
                and span.context.trace_id == tracing.trace_id(workflow_id)]
    assert len(handlers) == 4
    assert {hex_id(span.parent.span_id, 16) for span in handlers if span.parent} == attempt_ids
    assert sorted(span.status.status_code.name for span in handlers) == ["ERROR", "ERROR", "UNSET", "UNSET"]
    assert all(span.kind == trace.SpanKind.CONSUMER for span in handlers)
    handler_ids = {span.context.span_id for span in handlers}
    users = [span for span in recorded if span.name == "user work"
             and span.context.trace_id == tracing.trace_id(workflow_id)]
    assert len(users) == 4 and {span.parent.span_id for span in users if span.parent} == handler_ids


def test_nodes_log_json_lines_with_what_they_know(two_nodes):
    """Every line of each node's log is a JSON object; the leader's clocks carry their epoch, the
    lines about a workflow its id."""
    (node_a, a, _), (node_b, _, _) = two_nodes["a"], two_nodes["b"]
    name = unique("logged")
    with WorkflowClient([a]) as via_a:
        via_a.register_workflow_def({"name": name, "tasks": [{"name": "g", "taskReferenceName": "g", "type": "HUMAN"}]})
        workflow_id = via_a.start_workflow(name)
        deadline = time.monotonic() + 10
        while not via_a.get_workflow(workflow_id)["tasks"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        via_a.signal_task(workflow_id, "g")
    deadline = time.monotonic() + 10
    while f"workflow {workflow_id}: workflow COMPLETED" not in node_a.log_path.read_text():
        assert time.monotonic() < deadline, "node a did not log the end of the workflow it decided"
        time.sleep(0.05)
    for process, node_id in ((node_a, "a"), (node_b, "b")):
        lines = [json.loads(line) for line in process.log_path.read_text().splitlines() if line.strip()]
        assert lines and all({"time", "level", "logger", "message", "node"} <= set(line) for line in lines)
        assert {line["node"] for line in lines} == {node_id}
        assert all(line["time"].endswith("Z") and "T" in line["time"] for line in lines)
    a_lines = [json.loads(line) for line in node_a.log_path.read_text().splitlines() if line.strip()]
    assert any(line.get("epoch") and "leads with epoch" in line["message"] for line in a_lines), a_lines[:20]
    assert any(line.get("epoch") and line["logger"] == "orchestrator.cluster.leader_loop" for line in a_lines)
    [ended] = [line for line in a_lines if line["message"] == f"workflow {workflow_id}: workflow COMPLETED"]
    assert ended["workflow_id"] == workflow_id and ended["level"] == "DEBUG", ended


def test_sigusr1_logs_what_each_task_of_the_node_awaits(two_nodes):
    """A node that seems stuck says, on SIGUSR1, what every one of its tasks is waiting on (a hang
    logs nothing else); the node carries on."""
    process, address, _ = two_nodes["b"]
    os.kill(process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while True:
        dumps = [json.loads(line)["message"] for line in process.log_path.read_text().splitlines()
                 if "SIGUSR1" in line]
        if dumps:
            break
        assert time.monotonic() < deadline, "no task dump in the log after SIGUSR1"
        time.sleep(0.05)
    assert dumps[0].startswith("SIGUSR1: the node's tasks and what each awaits")
    assert "task " in dumps[0] and "orchestrator/" in dumps[0] and " in " in dumps[0], dumps[0][:500]
    with WorkflowClient([address]) as client:
        assert wait_for_leader(client, 5.0)["leader_id"] == "a"   # still answering


# ------------------------------------------------------------ the pieces

def test_ids_are_derived_from_the_workflow_and_task_ids():
    root = uuid.uuid4().hex
    assert tracing.trace_id(root) == tracing.trace_id(f"{root}.sub.0.abc") == tracing.trace_id(f"{root}.failure.x")
    assert tracing.trace_id(root) != tracing.trace_id(uuid.uuid4().hex)
    assert tracing.workflow_span_id(root) != tracing.workflow_span_id(f"{root}.sub.0.abc")
    parent = tracing.traceparent(root, "t1")
    assert parent == f"00-{tracing.trace_id(root):032x}-{tracing.attempt_span_id(root, 't1'):016x}-01"
    assert tracing.traceparent(root, "t1", sampled=False).endswith("-00")
    assert len(parent) == 55 and parent == tracing.traceparent(root, "t1")   # the same on every node


def spec_state(workflow_id: str, *tasks: m.TaskState, parent: str = "") -> m.WorkflowState:
    return m.WorkflowState(workflow_id=workflow_id, name="wf", version=1, status=WorkflowStatus.RUNNING, input={},
                           correlation_id="", created_at_ms=1_000, updated_at_ms=1_000,
                           definition=cast(WorkflowDef, {}),   # the spans read no definition
                           task_defs={}, tasks=list(tasks), parent=parent)


def attempt(task_id: str, status: TaskStatus, worker: str = "w1", reason: str = "") -> m.TaskState:
    spec = m.TaskSpec(task_id=task_id, ref="step", kind="SIMPLE", task_type="step", attempt=0, seq=1, input={},
                      scheduled_at_ms=1_100)
    runtime = m.TaskRuntime(status=status, task_type="step", lease_ms=1_000, worker_id=worker, started_at_ms=1_200,
                            ended_at_ms=0 if status == TaskStatus.IN_PROGRESS else 1_500, reason=reason)
    return m.TaskState(spec=spec, runtime=runtime)


def test_the_node_writes_an_attempt_span_once_when_it_ended_and_the_workflow_span_at_the_end():
    exporter = InMemorySpanExporter()
    traced = tracing.Tracing("n1", "c", [exporter])
    try:
        running, failed = attempt("t1", TaskStatus.IN_PROGRESS), attempt("t2", TaskStatus.FAILED, reason="boom")
        elsewhere = attempt("t3", TaskStatus.COMPLETED, worker="w9")   # given back, then run by another worker
        for one in (running, failed, elsewhere):
            parent = traced.dispatched(ClaimedTask("wf1", one.spec, 1_000), "w1")
            assert parent == tracing.traceparent("wf1", one.task_id)
        traced.on_decision(spec_state("wf1", running, failed, elsewhere), Decision())
        assert [s.name for s in exporter.get_finished_spans()] == ["task step"]   # t2 only
        [span] = exporter.get_finished_spans()
        assert span.context.span_id == tracing.attempt_span_id("wf1", "t2")
        assert span.parent is not None and span.parent.span_id == tracing.workflow_span_id("wf1")
        assert span.status.description == "boom" and (span.start_time, span.end_time) == (1_200_000_000, 1_500_000_000)
        traced.on_decision(spec_state("wf1", running, failed, elsewhere), Decision())   # nothing new
        assert len(exporter.get_finished_spans()) == 1
        finished = attempt("t1", TaskStatus.COMPLETED)
        traced.on_decision(spec_state("wf1", finished, failed), Decision(status=WorkflowStatus.COMPLETED))
        names = [s.name for s in exporter.get_finished_spans()]
        assert names == ["task step", "task step", "workflow wf"], names
        workflow = exporter.get_finished_spans()[-1]
        assert workflow.context.span_id == tracing.workflow_span_id("wf1") and workflow.parent is None
        assert workflow.context.trace_id == tracing.trace_id("wf1") and workflow.start_time == 1_000_000_000
        traced.on_decision(spec_state("wf1.failure.abc", parent=""), Decision(status=WorkflowStatus.FAILED,
                                                                             reason="it failed"))
        failure = exporter.get_finished_spans()[-1]
        assert failure.parent is not None and failure.parent.span_id == tracing.workflow_span_id("wf1")
        assert failure.status.status_code.name == "ERROR" and failure.status.description == "it failed"
    finally:
        traced.shutdown()


def test_without_exporters_the_node_records_nothing_but_hands_out_traceparents():
    quiet = tracing.Tracing()
    one = attempt("t1", TaskStatus.COMPLETED)
    assert quiet.dispatched(ClaimedTask("wf1", one.spec, 1_000), "w1") == tracing.traceparent("wf1", "t1", False)
    quiet.on_decision(spec_state("wf1", one), Decision(status=WorkflowStatus.COMPLETED))   # no error, no span


def test_a_worker_handler_runs_in_a_child_span_of_its_attempt(worker_spans):
    parent = tracing.traceparent("wf-unit", "task-unit")

    def failing(data: dict[str, Any]) -> dict[str, Any]:
        assert context().traceparent == parent
        assert trace.get_current_span().get_span_context().trace_id == tracing.trace_id("wf-unit")
        raise ValueError("bad input")

    assignment = pb.TaskAssignment(workflow_id="wf-unit", task_id="task-unit", task_type="unit", attempt=1,
                                   input_json=b"{}", traceparent=parent)
    result = asyncio.run(execute_assignment(assignment, failing))
    assert result.status == pb.TaskResult.FAILED
    [span] = [s for s in worker_spans.get_finished_spans() if s.name == "handler unit"]
    assert span.parent is not None and span.parent.span_id == tracing.attempt_span_id("wf-unit", "task-unit")
    assert span.status.status_code.name == "ERROR" and "ValueError: bad input" in (span.status.description or "")
    assert [event.name for event in span.events] == ["exception"]
    assert span.attributes is not None and span.attributes["orchestrator.attempt"] == 1


def test_the_worker_sdk_works_without_opentelemetry():
    script = """
import asyncio, sys
class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError("not installed")
sys.meta_path.insert(0, NoOpenTelemetry())
from orchestrator_api.v1 import orchestrator_pb2 as pb
from worker import context
from worker._execution import execute_assignment
seen = []
def handler(data):
    seen.append(context().traceparent)
    return {"ok": 1}
parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
assignment = pb.TaskAssignment(workflow_id="w", task_id="t", task_type="t", input_json=b"{}", traceparent=parent)
result = asyncio.run(execute_assignment(assignment, handler))
assert result.status == pb.TaskResult.COMPLETED, result
assert seen == [parent], seen
assert not [name for name in sys.modules if name.startswith("opentelemetry")]
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_json_log_lines_carry_the_context():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFields())
    handler.setFormatter(JsonFormatter("n7"))
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("plain")
        with log_fields(epoch=4):
            with log_fields(workflow_id="wf-1"):
                logger.info("deciding %s", "wf-1")
                logger.info("explicit", extra={"workflow_id": "wf-2", "task_id": "t-9"})
            try:
                raise RuntimeError("oops")
            except RuntimeError:
                logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    plain, deciding, explicit, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(plain) == {"time", "level", "logger", "message", "node"} and plain["node"] == "n7"
    assert plain["level"] == "INFO" and plain["logger"] == "test.observability" and plain["time"].endswith("Z")
    assert (deciding["message"], deciding["workflow_id"], deciding["epoch"]) == ("deciding wf-1", "wf-1", 4)
    assert (explicit["workflow_id"], explicit["task_id"], explicit["epoch"]) == ("wf-2", "t-9", 4)
    assert "workflow_id" not in failed and failed["epoch"] == 4 and "RuntimeError: oops" in failed["exception"]


def test_log_format_is_a_node_setting():
    assert NodeConfig(log_format="json").log_format == "json"
    assert NodeConfig.load(ROOT / "deploy" / "node.yaml").log_format == "text"
    with pytest.raises(ValueError, match="log_format"):
        NodeConfig(log_format="xml")


def test_otlp_export_only_when_configured(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.Tracing.from_settings("n1", "c").enabled is False
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with caplog.at_level(logging.WARNING, logger="orchestrator.cluster.tracing"):
        assert tracing.Tracing.from_settings("n1", "c").enabled is False
    assert "'http/json' is not supported" in caplog.text
