"""The CLI for people and the operations by search: tables and a tree of attempts, human times,
`--json` for scripts, watch (JSON lines, and redrawn in place on a terminal), `--all` with its
confirmation. Run as a user runs it (a subprocess; a pseudo terminal where a terminal matters)
against a real node and worker. The shell completion scripts and the pure parts:
tests/unit/cli/test_completion.py and tests/unit/cli/test_views.py."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import BackgroundWorker, unique, wait_for_status
from worker import TaskError, TerminalTaskError, Worker, context, task

ANSI = "\x1b["


@task("flaky_once")
def flaky_once(data: dict[str, Any]) -> dict[str, Any]:
    if context().attempt == 0:
        raise TaskError("the first try always fails")
    return {"tries": context().attempt + 1}


@task("refuse")
def refuse(data: dict[str, Any]) -> dict[str, Any]:
    raise TerminalTaskError("no, never")


def cli(node: Any, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI with no terminal: stdin, stdout and stderr are not one."""
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--endpoints", node.endpoint, *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "200"})
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(node: Any, *args: str) -> Any:
    return json.loads(cli(node, *args, "--json").stdout)


def on_terminal(node: Any, *args: str, answer: str = "", timeout_s: float = 60.0) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo terminal; type `answer` at its first
    question. Returns (exit code, everything it wrote)."""
    main, child_end = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--endpoints", node.endpoint, *args],
                               stdin=child_end, stdout=child_end, stderr=child_end, start_new_session=True,
                               env={**os.environ, "COLUMNS": "160"})
    os.close(child_end)
    written, answered, deadline = b"", False, time.monotonic() + timeout_s
    try:
        while True:
            assert time.monotonic() < deadline, written.decode(errors="replace")
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:   # EIO: the CLI ended and the terminal is closed
                    chunk = b""
                if not chunk:
                    break
                written += chunk
            if answer and not answered and b"workflows?" in written:
                os.write(main, answer.encode() + b"\n")
                answered = True
        return process.wait(timeout_s), written.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(main)


@pytest.fixture(scope="module")
def served(node: Any) -> Iterator[Any]:
    client = node.client
    client.register_task_def({"name": "flaky_once", "retryCount": 2, "retryDelaySeconds": 0})
    client.register_task_def({"name": "refuse", "retryCount": 0})
    client.register_workflow_def({"name": "twice", "tasks": [{"name": "flaky_once", "taskReferenceName": "again"}]})
    client.register_workflow_def({"name": "refused", "tasks": [{"name": "refuse", "taskReferenceName": "no"}]})
    background = BackgroundWorker(Worker(endpoints=[node.endpoint], handlers=[flaky_once, refuse]))
    yield node
    background.stop()


def gated(node: Any, name: str, count: int) -> list[str]:
    """`count` workflows of a new definition `name` that wait on a HUMAN task."""
    node.client.register_workflow_def({"name": name, "tasks": [{"name": "gate", "taskReferenceName": "gate",
                                                                "type": "HUMAN"}]})
    started = [node.client.start_workflow(name) for _ in range(count)]
    deadline = time.monotonic() + 10
    for workflow_id in started:   # each waits on its gate
        while not any(t["status"] == "IN_PROGRESS" for t in node.client.get_workflow(workflow_id)["tasks"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return started


# ------------------------------------------------------------ output for people and for scripts

def test_json_off_a_terminal_by_default_and_with_json_anywhere(served):
    workflow_id = cli_json(served, "workflow", "start", "twice", "--wait", "20")["workflow_id"]
    plain = json.loads(cli(served, "workflow", "get", workflow_id).stdout)
    after = json.loads(cli(served, "workflow", "get", workflow_id, "--json").stdout)
    before = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--json", "--endpoints", served.endpoint,
                             "workflow", "get", workflow_id], capture_output=True, text=True, timeout=60)
    assert plain == after == json.loads(before.stdout)
    assert plain["status"] == "COMPLETED" and [t["attempt"] for t in plain["tasks"]] == [0, 1]


def test_get_draws_the_tasks_as_a_tree_with_their_attempts(served):
    workflow_id = cli_json(served, "workflow", "start", "twice", "--wait", "20")["workflow_id"]
    shown = cli(served, "workflow", "get", workflow_id, "--table").stdout
    assert ANSI not in shown, "no colour codes when stdout is not a terminal"
    assert f"twice v1  COMPLETED  {workflow_id}" in shown, shown
    assert ("ago)" in shown or "(just now)" in shown) and "took" in shown, shown
    lines = shown.splitlines()
    task_line = next(line for line in lines if "again" in line)
    assert "flaky_once" in task_line and "COMPLETED" in task_line and "2 attempts" in task_line, shown
    first = next(line for line in lines if "#0" in line)
    assert "FAILED" in first and "TaskError: the first try always fails" in first and "on " in first, shown
    assert any("#1" in line and "COMPLETED" in line for line in lines), shown
    assert lines.index(first) > lines.index(task_line), "the attempts are drawn below their task"


def test_search_takes_lower_case_statuses_and_times_ago(served):
    finished = cli_json(served, "workflow", "start", "refused", "--wait", "20")
    assert finished["status"] == "FAILED"
    found = cli_json(served, "workflow", "search", "--name", "refused", "--status", "failed", "--since", "1h")
    assert finished["workflow_id"] in [w["workflow_id"] for w in found["workflows"]]
    assert set(found) == {"workflows", "next_page_token"}
    assert set(found["workflows"][0]) == {"workflow_id", "name", "status", "correlation_id"}   # as it always was
    assert cli_json(served, "workflow", "search", "--name", "refused", "--until", "1h")["workflows"] == []
    table = cli(served, "workflow", "search", "--name", "refused", "--status", "FAILED", "--table").stdout
    row = next(line for line in table.splitlines() if finished["workflow_id"] in line)
    assert "refused v1" in row and "FAILED" in row and ("ago" in row or "just now" in row), table
    for bad, fragment in ((("--status", "sleeping"), "not a workflow status"),
                          (("--since", "yesterday"), "neither a time ago"),
                          (("--since", "1h", "--from-ms", "5"), "not both")):
        refused = cli(served, "workflow", "search", *bad, ok=False)
        assert refused.returncode == 2 and fragment in refused.stderr, refused.stderr
    later = cli(served, "workflow", "search", "--since", "1h", "--until", "2h", ok=False)
    assert later.returncode == 2 and "--since is after --until" in later.stderr, later.stderr


def test_cluster_status_as_a_table(served):
    shown = cli(served, "cluster", "status", "--table").stdout
    assert "leader" in shown and "solo at" in shown and "epoch" in shown and "leading for" in shown, shown
    member = next(line.split() for line in shown.splitlines() if line.split()[:1] == ["solo"])
    assert member[1:4] == [served.endpoint, "LEADER", "UP"], shown   # NODE ADDRESS ROLE STATE SINCE
    assert cli_json(served, "cluster", "status")["role"] == "LEADER"


def test_definitions_as_tables(served):
    listed = cli(served, "taskdef", "list", "--table").stdout
    row = next(line for line in listed.splitlines() if line.strip().startswith("flaky_once"))
    assert "2 × fixed" in row, listed
    assert "twice" in cli(served, "workflowdef", "list", "--table").stdout
    assert "flaky_once" in cli(served, "taskdef", "get", "flaky_once", "--table").stdout


# ------------------------------------------------------------ watch

def test_watch_with_json_prints_each_change_as_a_json_line(served):
    [workflow_id] = gated(served, unique("watched"), 1)
    watch = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "--endpoints", served.endpoint, "workflow",
                              "watch", workflow_id, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        time.sleep(0.5)
        served.client.signal_task(workflow_id, "gate", output={"by": "ann"})
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
    assert watch.returncode == 0, err
    states = [json.loads(line) for line in out.splitlines()]
    assert states[-1]["status"] == "COMPLETED" and states[-1]["tasks"][0]["output"] == {"by": "ann"}, states
    assert all(state["workflow_id"] == workflow_id for state in states)


def test_watch_on_a_terminal_redraws_in_place(served):
    [workflow_id] = gated(served, unique("live"), 1)
    served.client.signal_task(workflow_id, "gate", output={"by": "bo"})
    wait_for_status(served.client, workflow_id, "COMPLETED")
    code, written = on_terminal(served, "workflow", "watch", workflow_id)
    assert code == 0, written
    assert "\x1b[?25l" in written, "a live display (the cursor hidden while it redraws)"
    assert "COMPLETED" in written and "gate" in written and workflow_id in written, written


# ------------------------------------------------------------ operations on every match

def test_terminate_all_by_search(served):
    name = unique("bulk")
    started = set(gated(served, name, 3))
    asked = cli(served, "workflow", "terminate", "--all", "--name", name, ok=False)
    assert asked.returncode == 1 and "3 workflows match; add --yes" in asked.stderr, asked.stderr
    listed = cli_json(served, "workflow", "terminate", "--all", "--name", name, "--dry-run")
    assert listed["matched"] == 3 and set(listed["workflows"]) == started
    assert {w["status"] for w in cli_json(served, "workflow", "search", "--name", name)["workflows"]} == {"RUNNING"}
    done = cli_json(served, "workflow", "terminate", "--all", "--name", name, "--status", "running", "--yes",
                    "--reason", "bulk test")
    assert done["matched"] == 3 and set(done["done"]) == started and done["failed"] == {}, done
    for workflow_id in started:
        workflow = served.client.get_workflow(workflow_id)
        assert workflow["status"] == "TERMINATED" and workflow["reason"] == "bulk test", workflow
    again = cli(served, "workflow", "terminate", "--all", "--name", name, "--yes", "--table")
    assert again.returncode == 0 and "no workflow matches" in again.stderr, again.stderr


def test_retry_all_reports_each_refusal_and_exits_1(served):
    name = unique("redo")
    terminated = gated(served, name, 2)
    for workflow_id in terminated:
        served.client.terminate_workflow(workflow_id, "to retry")
    refused = cli(served, "workflow", "retry", "--all", "--name", name, "--status", "terminated", "--yes", "--json",
                  ok=False)
    summary = json.loads(refused.stdout)
    assert refused.returncode == 1 and summary["matched"] == 2 and summary["done"] == [], refused
    assert set(summary["failed"]) == set(terminated)
    assert all("FAILED_PRECONDITION" in why for why in summary["failed"].values()), summary
    assert "2 of 2 workflows could not be retried" in refused.stderr
    failed = [cli_json(served, "workflow", "start", "refused", "--wait", "20")["workflow_id"] for _ in range(2)]
    # every failed `refused` of the last hour: these two and any an earlier test of this module left
    matching = cli_json(served, "workflow", "retry", "--all", "--name", "refused", "--since", "1h", "--dry-run")
    assert set(failed) <= set(matching["workflows"]) and matching["matched"] == len(matching["workflows"])
    retried = cli(served, "workflow", "retry", "--all", "--name", "refused", "--since", "1h", "--yes", "--table")
    count = matching["matched"]
    assert retried.stdout.strip() == f"retried {count} of {count} workflows", retried.stdout
    for workflow_id in failed:   # retried, and failed again: the handler always refuses
        deadline = time.monotonic() + 20
        while len((workflow := served.client.get_workflow(workflow_id))["tasks"]) < 2 or \
                workflow["status"] != "FAILED":
            assert time.monotonic() < deadline, workflow
            time.sleep(0.05)
        assert [(t["attempt"], t["status"]) for t in workflow["tasks"]] == \
            [(0, "FAILED_WITH_TERMINAL_ERROR"), (1, "FAILED_WITH_TERMINAL_ERROR")], workflow


def test_operations_by_search_refuse_ambiguous_usage(served):
    for args, fragment in ((("--all",), "--all needs a filter"),
                           (("some-id", "--all", "--name", "x"), "not both"),
                           ((), "give the id of the workflow"),
                           (("some-id", "--status", "running"), "--status goes with --all")):
        done = cli(served, "workflow", "terminate", *args, ok=False)
        assert done.returncode == 2 and fragment in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_all_asks_on_a_terminal_and_does_nothing_unless_told_yes(served):
    name = unique("ask")
    started = gated(served, name, 2)
    code, written = on_terminal(served, "workflow", "pause", "--all", "--name", name, answer="n")
    assert code == 1 and "Pause these 2 workflows?" in written and "not confirmed" in written, written
    assert all(served.client.get_workflow(w)["status"] == "RUNNING" for w in started)
    code, written = on_terminal(served, "workflow", "pause", "--all", "--name", name, answer="y")
    assert code == 0 and "paused 2 of 2 workflows" in written, written
    assert all(served.client.get_workflow(w)["status"] == "PAUSED" for w in started)
    assert cli_json(served, "workflow", "resume", "--all", "--name", name, "--yes")["matched"] == 2
    assert all(served.client.get_workflow(w)["status"] == "RUNNING" for w in started)
