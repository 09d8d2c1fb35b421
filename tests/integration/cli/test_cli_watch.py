"""`orchestrator workflow watch` and `WorkflowClient.watch_workflow`, against real nodes:
only changes are printed, Ctrl-C ends it quietly, and a killed node does not end the watch."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.local_cluster import start_node, wait_for_leader
from devtools.procs import EtcdCluster, ManagedProcess, RedisServer, free_port
from helpers import unique
from worker import WorkflowClient

TTL_S = 2.0


class CliWatch:
    """`orchestrator workflow watch` as a child process; a thread collects its stdout lines."""

    def __init__(self, endpoints: list[str], workflow_id: str) -> None:
        argv = [sys.executable, "-m", "orchestrator.cli", "--endpoints", ",".join(endpoints),
                "workflow", "watch", workflow_id]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, fragment: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(fragment in line for line in self.lines):
            assert time.monotonic() < deadline, f"no line with {fragment!r}: {self.lines}"
            assert self.process.poll() is None, self.finish()
            time.sleep(0.05)

    def finish(self, timeout_s: float = 30.0) -> tuple[int, list[str], str]:
        """Wait for the exit (killing it by PID after `timeout_s`): (exit code, stdout lines, stderr)."""
        try:
            code = self.process.wait(timeout_s)
        finally:
            self.stop()
        self._reader.join(5)
        assert self.process.stderr is not None
        return code, self.lines, self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> CliWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ClientWatch:
    """`WorkflowClient.watch_workflow` in a thread, collecting every state it yields."""

    def __init__(self, endpoints: list[str], workflow_id: str) -> None:
        self.client = WorkflowClient(endpoints)
        self.states: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(workflow_id,), daemon=True)
        self._thread.start()

    def _run(self, workflow_id: str) -> None:
        try:
            for state in self.client.watch_workflow(workflow_id, include_tasks=True):
                self.states.append(state)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(check(state) for state in self.states):
            assert self.error is None and time.monotonic() < deadline, (self.error, self.states)
            time.sleep(0.05)

    def finish(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        self._thread.join(timeout_s)
        self.client.close()
        assert not self._thread.is_alive(), "the watch did not end"
        assert self.error is None, repr(self.error)
        return self.states


def gate_definition(name: str) -> dict[str, Any]:
    """Two HUMAN tasks in a row: the workflow waits until they are signalled (or skipped)."""
    return {"name": name, "tasks": [{"name": "approve", "taskReferenceName": "approve", "type": "HUMAN"},
                                    {"name": "confirm", "taskReferenceName": "confirm", "type": "HUMAN"}],
            "outputParameters": {"by": "${approve.output.by}"}}


def start_gate(client: WorkflowClient) -> str:
    """Start a gate workflow and return its id once it waits on `approve`."""
    name = unique("gate")
    client.register_workflow_def(gate_definition(name))
    workflow_id = client.start_workflow(name)
    deadline = time.monotonic() + 10
    while not any(t["key"] == "approve" and t["status"] == "IN_PROGRESS"
                  for t in client.get_workflow(workflow_id)["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return workflow_id


def repeated(lines: list[str]) -> list[str]:
    """Lines that say the same (time stamp aside) as the line before them."""
    said = [line.split(" ", 1)[1] for line in lines]
    return [line for before, line in itertools.pairwise(said) if before == line]


def test_watch_prints_a_line_only_when_something_changed(node):
    workflow_id = start_gate(node.client)
    with CliWatch([node.endpoint], workflow_id) as watch:
        watch.wait_for("approve=IN_PROGRESS")
        node.client.pause_workflow(workflow_id)
        time.sleep(0.3)
        node.client.skip_task(workflow_id, "confirm")
        time.sleep(0.3)
        node.client.resume_workflow(workflow_id)
        time.sleep(0.3)
        node.client.signal_task(workflow_id, "approve", output={"by": "ann"})
        code, lines, stderr = watch.finish()
    assert code == 0, stderr
    assert lines[-1].split(" ", 1)[1] == "COMPLETED: approve=COMPLETED, confirm=SKIPPED", lines
    assert any(" PAUSED:" in line for line in lines), lines
    assert repeated(lines) == [], lines


def test_watch_interrupted_exits_130_without_a_traceback(node):
    workflow_id = start_gate(node.client)
    with CliWatch([node.endpoint], workflow_id) as watch:
        watch.wait_for("approve=IN_PROGRESS")
        watch.process.send_signal(signal.SIGINT)
        code, lines, stderr = watch.finish(timeout_s=10)
    assert code == 130, (code, stderr)
    assert stderr == "", stderr
    assert len(lines) == 1, lines


@pytest.fixture
def two_nodes(tmp_path: Path, etcd: EtcdCluster,
              redis_server: RedisServer) -> Iterator[list[tuple[ManagedProcess, str]]]:
    """Nodes A (the leader: started first) and B of a fresh cluster on one etcd and Redis."""
    cluster = f"w{uuid.uuid4().hex[:8]}"
    started: list[tuple[ManagedProcess, str]] = []
    try:
        for node_id in ("a", "b"):
            port = free_port()
            process = start_node(tmp_path / node_id, node_id=node_id, port=port, redis_url=redis_server.url,
                                 etcd_endpoints=etcd.endpoints, cluster=cluster, lease_ttl_s=TTL_S)
            started.append((process, f"127.0.0.1:{port}"))
            with WorkflowClient([started[-1][1]]) as client:
                assert wait_for_leader(client, 20.0)["leader_id"] == "a"
        yield started
    finally:
        for process, _ in started:
            process.stop()


def test_watch_goes_on_through_the_next_node_when_its_node_is_killed(two_nodes):
    (node_a, a), (_, b) = two_nodes
    with WorkflowClient([b]) as via_b:
        workflow_id = start_gate(via_b)
        via_b.skip_task(workflow_id, "confirm")
        states = ClientWatch([a, b], workflow_id)
        try:
            with CliWatch([a, b], workflow_id) as watch:
                watch.wait_for("approve=IN_PROGRESS, confirm=SKIPPED")
                states.wait_for(lambda s: [t["status"] for t in s["tasks"]] == ["IN_PROGRESS", "SKIPPED"])
                node_a.kill()
                node_a.wait(10)
                via_b.signal_task(workflow_id, "approve", output={"by": "bea"})
                code, lines, stderr = watch.finish(timeout_s=40)
            assert code == 0, (lines, stderr)
            assert lines[-1].split(" ", 1)[1] == "COMPLETED: approve=COMPLETED, confirm=SKIPPED", lines
            assert repeated(lines) == [], lines
            seen = states.finish(timeout_s=40)
        finally:
            states.client.close()
    assert seen[-1]["status"] == "COMPLETED" and seen[-1]["output"] == {"by": "bea"}, seen[-1]
    assert all(before != after for before, after in itertools.pairwise(seen)), f"a state was yielded twice: {seen}"
