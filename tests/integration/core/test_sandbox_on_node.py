"""User code (JavaScript and jq) on a real node (issue 22, item 2): each hostile program fails its
own task with the reason while ordinary workflows go on and the node answers throughout; the
scripts of one decision share one budget. The sandbox itself: tests/unit/core/test_sandbox.py."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import BackgroundWorker, unique, wait_for_status
from hostile_scripts import HOSTILE_JQ, HUNDRED
from worker import Worker, task


class Bystanders:
    """Ordinary two-step workflows started all along; every one must complete, and a probe
    measures how long the node takes to answer a read meanwhile."""

    def __init__(self, node: Any, name: str) -> None:
        self.node, self.name = node, name
        self.started: list[str] = []
        self.slowest_read_s = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._start, daemon=True),
                         threading.Thread(target=self._probe, daemon=True)]

    def _start(self) -> None:
        while not self._stop.is_set():
            self.started.append(self.node.client.start_workflow(self.name, {}))
            self._stop.wait(0.05)

    def _probe(self) -> None:
        while not self._stop.is_set():
            if self.started:
                began = time.monotonic()
                self.node.client.get_workflow(self.started[-1], include_tasks=False)
                self.slowest_read_s = max(self.slowest_read_s, time.monotonic() - began)
            self._stop.wait(0.02)

    def __enter__(self) -> Bystanders:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while len(self.started) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        assert len(self.started) >= 10
        for workflow_id in self.started:
            wait_for_status(self.node.client, workflow_id, "COMPLETED", timeout_s=20)


@pytest.fixture(scope="module")
def setup(node: Any) -> Iterator[tuple[Any, str]]:
    step, bystander = unique("step"), unique("bystander")
    node.client.register_task_def({"name": step, "retryCount": 0})
    node.client.register_workflow_def({"name": bystander, "tasks": [
        {"name": step, "taskReferenceName": "one"}, {"name": step, "taskReferenceName": "two"}]})

    @task(step)
    def ordinary(data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[ordinary], concurrency=8))
    yield node, bystander
    background.stop()


def _jq_by_template(name: str) -> dict[str, Any]:
    """A definition whose program is the starter's: `queryExpression` is a template."""
    return {"name": name, "schemaVersion": 2, "tasks": [
        {"name": "jq", "taskReferenceName": "jq", "type": "JSON_JQ_TRANSFORM", "inputParameters": {
            "a": "${workflow.input.a}", "queryExpression": "${workflow.input.q}"}},
        {"name": "after", "taskReferenceName": "after", "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": "'never reached'"}}]}


def _javascript(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "schemaVersion": 2, "tasks": [
        {"name": "js", "taskReferenceName": "js", "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": script}}]}


NODE_CASES: dict[str, tuple[Callable[[str], dict[str, Any]], dict[str, Any], str, str]] = {
    "jq for hours": (_jq_by_template, {"a": HUNDRED, "q": HOSTILE_JQ["five nested loops over 100 items (1e10 "
                                                                     "steps: hours)"][0]},
                     "jq", "ran longer than the limit of 1000 ms"),
    "jq for 1 GB": (_jq_by_template, {"a": [], "q": HOSTILE_JQ["1 GB of text"][0]}, "jq", "cannot allocate memory"),
    "jq for a 3M array": (_jq_by_template, {"a": [], "q": HOSTILE_JQ["a 3M array from nothing"][0]}, "jq",
                          "more than 10000 values"),
    "javascript forever": (lambda name: _javascript(name, "while (true) {}"), {}, "js",
                           "ran longer than the limit of 100 ms"),
    "javascript's memory": (lambda name: _javascript(name, "var a = []; while (true) a.push(new Array(1e5).fill(1));"),
                            {}, "js", "used more memory than the limit of 64 MiB|ran longer than the limit of 100 ms"),
}


@pytest.mark.parametrize("case", list(NODE_CASES))
def test_a_hostile_script_fails_its_task_alone_and_the_node_keeps_serving(setup: tuple[Any, str],
                                                                          case: str) -> None:
    node, bystander = setup
    definition, workflow_input, ref, reason = NODE_CASES[case]
    name = unique("hostile")
    node.client.register_workflow_def(definition(name))
    with Bystanders(node, bystander) as bystanders:
        time.sleep(0.3)   # some started before, some after
        started = time.monotonic()
        hostile = node.client.start_workflow(name, workflow_input)
        ended = wait_for_status(node.client, hostile, {"FAILED", "COMPLETED"}, timeout_s=30)
        took = time.monotonic() - started
    assert ended["status"] == "FAILED", ended
    [failed] = [t for t in ended["tasks"] if t["reference_name"] == ref]
    assert failed["status"] == "FAILED_WITH_TERMINAL_ERROR" and re.search(reason, failed["reason"]), failed["reason"]
    assert took < 10, took
    # The node answered all along: its event loop waited for one evaluation at most (its limit + grace,
    # and a replacement's start), never for the program to finish.
    assert bystanders.slowest_read_s < 4.0, bystanders.slowest_read_s


def test_the_scripts_of_one_decision_share_one_budget(setup: tuple[Any, str]) -> None:
    """Five hostile jq programs in one fork are decided in one pass: each alone is bounded, but
    together they held the node's loop 5 x 1.3 s, past its etcd lease (four cost a TTL-2s leader
    its lease). Such a decision now runs in a thread, and its scripts share one budget: the first
    ones are stopped at their limit, the rest fail at once, each saying why; the node answers
    throughout and keeps leading."""
    node, bystander = setup
    name = unique("fork_of_hostile")
    branch = lambda i: [{"name": "jq", "taskReferenceName": f"jq{i}", "type": "JSON_JQ_TRANSFORM",  # noqa: E731
                         "inputParameters": {"a": "${workflow.input.a}", "queryExpression": "${workflow.input.q}"}}]
    node.client.register_workflow_def({"name": name, "schemaVersion": 2, "tasks": [
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [branch(i) for i in range(5)]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": [f"jq{i}" for i in range(5)]}]})
    epoch = node.client.cluster_status()["epoch"]
    with Bystanders(node, bystander) as bystanders:
        time.sleep(0.3)
        hostile = node.client.start_workflow(name, {"a": HUNDRED, "q": HOSTILE_JQ[
            "five nested loops over 100 items (1e10 steps: hours)"][0]})
        ended = wait_for_status(node.client, hostile, {"FAILED", "COMPLETED"}, timeout_s=30)
    reasons = sorted(t["reason"] for t in ended["tasks"] if t["reference_name"].startswith("jq"))
    assert ended["status"] == "FAILED" and len(reasons) == 5, ended
    stopped_at_limit = sum("ran longer than the limit of 1000 ms" in r for r in reasons)
    stopped_by_budget = sum("DECISION_BUDGET_MS" in r for r in reasons)
    assert stopped_at_limit >= 1 and stopped_by_budget >= 1 and stopped_at_limit + stopped_by_budget == 5, reasons
    assert bystanders.slowest_read_s < 2.5, bystanders.slowest_read_s
    assert node.client.cluster_status()["epoch"] == epoch   # no election: the leader kept its lease


def test_javascript_past_a_sandbox_context_s_reuse_limit_fails_no_task(setup: tuple[Any, str]) -> None:
    """More evaluations than one sandbox process's context serves (javascript.REUSE_LIMIT): the
    process ends at the limit and another serves on. It used to make a second context in the same
    process while the first lived, which mini-racer does not survive: the process died
    mid-evaluation and that task failed for good, "most likely it used more memory than the limit"."""
    node, _ = setup
    name = unique("many_scripts")
    node.client.register_workflow_def({"name": name, "schemaVersion": 2, "tasks": [
        {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE", "evaluatorType": "graaljs",
         "inputParameters": {"n": "${workflow.input.n}", "keepLastN": 2},
         "loopCondition": "$.loop['iteration'] < $.n",
         "loopOver": [{"name": "add", "taskReferenceName": "add", "type": "INLINE", "inputParameters": {
             "evaluatorType": "graaljs", "i": "${loop.output.iteration}", "expression": "$.i + 1"}}]}]})
    # two evaluations an iteration, one workflow after another: the pool's last-used process takes
    # them, and the node's two processes together serve more than twice the limit
    iterations, rounds = 1_000, 11
    for _ in range(rounds):
        workflow_id = node.client.start_workflow(name, {"n": iterations})
        ended = wait_for_status(node.client, workflow_id, {"COMPLETED", "FAILED"}, timeout_s=60)
        assert ended["status"] == "COMPLETED", ended["reason"]
