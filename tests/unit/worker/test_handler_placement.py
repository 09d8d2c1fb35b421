"""Where a handler runs: an async one and an `inline=True` sync one in the event loop, any other
sync one in the worker's thread pool; and what a handler sees of its trace without a tracer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from opentelemetry import trace

from orchestrator_api.v1 import orchestrator_pb2 as pb
from worker import TaskDefinition, context, task
from worker._execution import execute_assignment
from worker._task import definition_of

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def run(handler: Any, traceparent: str = "") -> pb.TaskResult:
    assignment = pb.TaskAssignment(workflow_id="wf-1", task_id="task-1", task_type="t", input_json=b'{"n": 1}',
                                   lease_ms=30_000, traceparent=traceparent)
    return asyncio.run(execute_assignment(assignment, handler))


def test_an_inline_sync_handler_runs_on_the_loop_thread_with_its_context() -> None:
    seen: dict[str, Any] = {}

    @task("placed", inline=True)
    def handler(data: dict[str, Any]) -> dict[str, Any]:
        seen["thread"] = threading.get_ident()
        seen["task_id"] = context().task_id
        return {"n": data["n"]}

    result = run(handler)

    assert result.status == pb.TaskResult.COMPLETED and json.loads(result.output_json) == {"n": 1}
    assert seen == {"thread": threading.get_ident(), "task_id": "task-1"}
    assert definition_of(handler) == TaskDefinition(name="placed", inline=True)


def test_a_sync_handler_runs_in_a_pool_thread_by_default() -> None:
    seen: dict[str, int] = {}

    @task("pooled")
    def handler(data: dict[str, Any]) -> dict[str, Any]:
        seen["thread"] = threading.get_ident()
        return {}

    assert run(handler).status == pb.TaskResult.COMPLETED
    assert seen["thread"] != threading.get_ident()
    assert definition_of(handler) == TaskDefinition(name="pooled", inline=False)


def test_inline_is_refused_for_an_async_handler_and_must_be_a_bool() -> None:
    async def already_in_the_loop(data: dict[str, Any]) -> dict[str, Any]:
        return {}

    with pytest.raises(TypeError, match="already runs in the event loop"):
        task("async_inline", inline=True)(already_in_the_loop)
    with pytest.raises(TypeError, match="inline must be True or False"):
        task("odd_inline", inline=1)(lambda data: data)   # type: ignore[call-overload]


@pytest.mark.parametrize("inline", [True, False])
def test_without_a_tracer_provider_a_handler_still_runs_in_its_attempts_trace(inline: bool) -> None:
    """No span is made when no tracer provider is configured, but what the handler passes on
    carries the attempt's trace context as before."""
    seen: dict[str, int] = {}

    @task("traced", inline=inline)
    def handler(data: dict[str, Any]) -> dict[str, Any]:
        seen["trace_id"] = trace.get_current_span().get_span_context().trace_id
        return {}

    assert run(handler, TRACEPARENT).status == pb.TaskResult.COMPLETED
    assert seen["trace_id"] == int(TRACEPARENT.split("-")[1], 16)
    assert trace.get_current_span().get_span_context().trace_id == 0   # nothing left current after it
