"""The CLI for people, its pure parts: times as people write and read them, and the view of one
workflow with its attempts, sub-workflows and reasons."""

from __future__ import annotations

import time

import pytest
from rich.console import Console

from orchestrator.cli.inputs import when_ms
from orchestrator.cli.views.format import ago, duration
from orchestrator.cli.views.workflow import workflow_view


def test_times_for_people():
    now = 1_700_000_000_000
    assert when_ms("", now) == 0
    assert when_ms("90", now) == now - 90_000
    assert when_ms("10m", now) == now - 600_000
    assert when_ms("2h30m", now) == now - 9_000_000
    assert when_ms("7d", now) == now - 7 * 86_400_000
    assert when_ms("2024-05-01T10:00:00+00:00") == 1_714_557_600_000
    with pytest.raises(ValueError, match="neither a time ago"):
        when_ms("soon")
    assert [ago(now - ms, now) for ms in (0, 400, 3_000, 300_000, 7_200_000, 3 * 86_400_000)] == [
        "just now", "just now", "3 s ago", "5 min ago", "2 h ago", "3 d ago"]
    assert ago(0, now) == "-" and ago(now + 5_000, now) == "in 5 s"
    assert [duration(ms) for ms in (850, 1_240, 42_000, 185_000, 7_380_000, 93_600_000, 3_600_000)] == [
        "850 ms", "1.2 s", "42 s", "3 min 5 s", "2 h 3 min", "1 d 2 h", "1 h"]


def test_a_workflow_view_shows_attempts_sub_workflows_and_reasons():
    now = int(time.time() * 1000)
    workflow = {
        "workflow_id": "w1", "name": "trip", "version": 2, "status": "RUNNING", "correlation_id": "order-7",
        "created_at_ms": now - 65_000, "input": {"to": "Nice"},
        "tasks": [
            {"key": "pay", "reference_name": "pay", "task_type": "charge", "kind": "SIMPLE", "status": "FAILED",
             "attempt": 0, "scheduled_at_ms": now - 60_000, "started_at_ms": now - 60_000,
             "ended_at_ms": now - 59_500, "worker_id": "w-a", "reason": "TaskError: declined"},
            {"key": "pay", "reference_name": "pay", "task_type": "charge", "kind": "SIMPLE", "status": "IN_PROGRESS",
             "attempt": 1, "scheduled_at_ms": now - 50_000, "started_at_ms": now - 4_000, "worker_id": "w-b"},
            {"key": "book", "reference_name": "book", "task_type": "SUB_WORKFLOW", "kind": "SUB_WORKFLOW",
             "status": "SCHEDULED", "attempt": 0, "scheduled_at_ms": now - 1_000, "sub_workflow_id": "w1.book.0"}]}
    console = Console(width=160, record=True, color_system=None)
    console.print(workflow_view(workflow))
    text = console.export_text()
    assert "trip v2  RUNNING  w1" in text and "order-7" in text and "running for" in text, text
    assert "(1 min ago)" in text and "2 tasks, 3 attempts" in text and '{"to": "Nice"}' in text, text
    pay = next(line for line in text.splitlines() if "pay" in line and "attempts" in line)
    assert "charge" in pay and "IN_PROGRESS" in pay and "2 attempts" in pay, text
    assert any("#0 FAILED" in line and "500 ms" in line and "on w-a" in line and "declined" in line
               for line in text.splitlines()), text
    assert any("#1 IN_PROGRESS" in line and "running 4.0 s" in line for line in text.splitlines()), text
    assert any("book" in line and "waiting" in line and "→ w1.book.0" in line for line in text.splitlines()), text
