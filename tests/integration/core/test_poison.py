"""One bad workflow stops nobody: each poison case fails (or is refused) alone while ordinary
workflows on the same node keep completing. A real node, a real worker, real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import BackgroundWorker, unique, wait_for_status
from worker import ClientError, Worker, task


class Bystanders:
    """Ordinary two-step workflows started all along; every one must complete."""

    def __init__(self, node: Any, name: str) -> None:
        self.node, self.name = node, name
        self.started: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.started.append(self.node.client.start_workflow(self.name, {}))
            self._stop.wait(0.05)

    def __enter__(self) -> Bystanders:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while len(self.started) < 10 and time.monotonic() < deadline:   # some overlap the poisoned one
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(10)
        assert len(self.started) >= 10
        for workflow_id in self.started:
            wait_for_status(self.node.client, workflow_id, "COMPLETED", timeout_s=20)


@pytest.fixture(scope="module")
def setup(node: Any) -> Iterator[tuple[Any, str, str]]:
    """(node, a bystander workflow, a task type whose worker returns what it is asked to)."""
    echo, step, bystander = unique("echo"), unique("step"), unique("bystander")
    node.client.register_task_def({"name": echo, "retryCount": 0})
    node.client.register_task_def({"name": step, "retryCount": 0})
    node.client.register_workflow_def({"name": bystander, "tasks": [
        {"name": step, "taskReferenceName": "one"}, {"name": step, "taskReferenceName": "two"}]})

    @task(echo)
    def answer(data: dict[str, Any]) -> Any:
        if data.get("emit") == "surrogate":
            return {"text": chr(0xD800)}   # JSON can escape it; it is not text
        return data.get("answer", {})

    @task(step)
    def ordinary(data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[answer, ordinary], concurrency=8))
    yield node, bystander, echo
    background.stop()


def run_poison(setup: tuple[Any, str, str], definition: Callable[[str], dict[str, Any]],
               workflow_input: dict[str, Any]) -> dict[str, Any]:
    node, bystander, echo = setup
    name = unique("poison")
    node.client.register_workflow_def({"name": name, **definition(echo)})
    with Bystanders(node, bystander):
        poisoned = node.client.start_workflow(name, workflow_input)
        ended = wait_for_status(node.client, poisoned, {"FAILED", "COMPLETED"}, timeout_s=20)
    return ended


def test_a_value_that_refers_to_itself_fails_its_workflow_only(setup: Any) -> None:
    ended = run_poison(setup, lambda echo: {"tasks": [
        {"name": "loop", "taskReferenceName": "loop", "type": "SET_VARIABLE",
         "inputParameters": {"me": "${workflow.variables}"}}]}, {})
    assert ended["status"] == "FAILED"
    assert "could not be stored" in ended["reason"] and "Circular reference" in ended["reason"]


def test_a_worker_output_that_is_not_unicode_fails_that_task(setup: Any) -> None:
    ended = run_poison(setup, lambda echo: {"tasks": [
        {"name": echo, "taskReferenceName": "bad", "inputParameters": {"emit": "surrogate"}},
        {"name": echo, "taskReferenceName": "next", "inputParameters": {"answer": {"got": "${bad.output.text}"}}}]},
        {})
    assert ended["status"] == "FAILED"
    [bad] = [t for t in ended["tasks"] if t["reference_name"] == "bad"]
    assert bad["status"] == "FAILED_WITH_TERMINAL_ERROR" and "not Unicode" in bad["reason"]


def test_a_workflow_input_with_nan_is_refused_and_writes_nothing(setup: Any) -> None:
    """A Struct can carry NaN and infinities; JSON cannot, so the start is refused."""
    node, bystander, _ = setup
    before = len(node.client.search_workflows(name=bystander, limit=1000)[0])
    for bad_input in ({"x": float("nan")}, {"x": [float("inf")]}):
        with pytest.raises(ClientError) as refused:
            node.client.start_workflow(bystander, bad_input)
        assert refused.value.code == "INVALID_ARGUMENT" and "not JSON" in str(refused.value), refused.value
    assert len(node.client.search_workflows(name=bystander, limit=1000)[0]) == before


def test_a_dynamic_fork_wider_than_the_limit_fails_alone_and_quickly(setup: Any) -> None:
    started = time.monotonic()
    ended = run_poison(setup, lambda echo: {"tasks": [
        {"name": "fan", "taskReferenceName": "fan", "type": "FORK_JOIN_DYNAMIC", "forkTaskName": echo,
         "forkTaskInputs": "${workflow.input.items}"},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN"}]},
        {"items": list(range(100_000))})
    assert ended["status"] == "FAILED" and "limit" in ended["reason"], ended["reason"]
    assert time.monotonic() - started < 15


def test_a_sub_workflow_cycle_built_by_re_registering_is_refused(setup: Any) -> None:
    node, _, echo = setup
    a, b, c = unique("cycle_a"), unique("cycle_b"), unique("cycle_c")
    node.client.register_workflow_def({"name": c, "tasks": [{"name": echo, "taskReferenceName": "leaf"}]})
    node.client.register_workflow_def({"name": b, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": c}}]})
    node.client.register_workflow_def({"name": a, "tasks": [
        {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": b}}]})
    with pytest.raises(ClientError) as refused:   # c would now start a, which starts b, which starts c
        node.client.register_workflow_def({"name": c, "version": 2, "tasks": [
            {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW", "subWorkflowParam": {"name": a}}]})
    assert refused.value.code == "INVALID_ARGUMENT"
    assert f"would run itself: {c} -> {a} -> {b} -> {c}" in str(refused.value)
    assert node.client.get_workflow_def(c)["version"] == 1   # refused means nothing written
