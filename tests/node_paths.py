"""The two ways a user reaches a real node, behind one interface, for tests that must hold on both:
our gRPC API (worker.WorkflowClient) and Conductor's REST API (`/api` on the node's HTTP port).

A test registers, starts, signals and reads a workflow through a `NodePath`; what it reads back
is a `Ran` (the workflow) with its task attempts as `Attempt`s, the same fields whichever API
answered, so one assertion checks both APIs. Nothing here is simulated: every call is a request to
the node under test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from worker import WorkflowClient

TERMINAL = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "TERMINATED", "COMPENSATED", "COMPENSATION_FAILED"})


@dataclass(frozen=True)
class Attempt:
    """One task attempt, as either API shows it."""

    task_id: str
    key: str                # the reference, plus "__<n>" inside loops
    kind: str               # SIMPLE, INLINE, SUB_WORKFLOW, ... (the task type for worker tasks over REST)
    task_type: str
    status: str
    attempt: int
    input: dict[str, Any]
    output: dict[str, Any]
    reason: str
    scheduled_at_ms: int
    started_at_ms: int
    ended_at_ms: int
    sub_workflow_id: str


@dataclass(frozen=True)
class Ran:
    """A workflow as read back: its exact status (COMPENSATION_FAILED, not Conductor's FAILED)."""

    workflow_id: str
    name: str
    version: int
    status: str
    reason: str
    input: dict[str, Any]
    output: dict[str, Any]
    variables: dict[str, Any]
    attempts: list[Attempt]
    created_at_ms: int
    ended_at_ms: int
    parent_workflow_id: str

    @property
    def tasks(self) -> dict[str, Attempt]:
        """The latest attempt of each task key."""
        latest: dict[str, Attempt] = {}
        for attempt in self.attempts:
            if attempt.key not in latest or attempt.attempt >= latest[attempt.key].attempt:
                latest[attempt.key] = attempt
        return latest

    def of(self, key: str) -> list[Attempt]:
        """Every attempt of one task key, oldest first."""
        return sorted((a for a in self.attempts if a.key == key), key=lambda a: a.attempt)


class NodePath:
    """Register, start, signal and read through one of the node's APIs."""

    name = ""

    def register_task_defs(self, definitions: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def register(self, definition: dict[str, Any]) -> None:
        raise NotImplementedError

    def start(self, name: str, workflow_input: dict[str, Any], version: int = 0) -> str:
        raise NotImplementedError

    def get(self, workflow_id: str) -> Ran:
        raise NotImplementedError

    def signal(self, workflow_id: str, ref: str, output: dict[str, Any], *, failed: bool = False) -> None:
        raise NotImplementedError

    def find(self, name: str) -> list[str]:
        """The ids of the workflows of definition `name`, newest first (through the API's search)."""
        raise NotImplementedError

    def wait_for_one(self, name: str, timeout_s: float = 20.0) -> str:
        """The id of the only workflow of definition `name`, once it exists."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.find(name)
            if found:
                assert len(found) == 1, f"{self.name}: {len(found)} workflows of {name}: {found}"
                return found[0]
            assert time.monotonic() < deadline, f"{self.name}: no workflow of {name} started"
            time.sleep(0.05)

    def run(self, name: str, workflow_input: dict[str, Any], timeout_s: float = 20.0) -> Ran:
        """Start and wait for the workflow's end."""
        return self.wait(self.start(name, workflow_input), TERMINAL, timeout_s)

    def wait(self, workflow_id: str, statuses: frozenset[str] | set[str] | str, timeout_s: float = 20.0) -> Ran:
        """Poll until the workflow is in one of `statuses` (fails at the deadline, showing it)."""
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout_s
        while True:
            ran = self.get(workflow_id)
            if ran.status in wanted:
                return ran
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: workflow {workflow_id} is {ran.status}, not {sorted(wanted)}: "
                                     f"{ran.reason!r}, tasks {[(a.key, a.status) for a in ran.attempts]}")
            time.sleep(0.05)

    def wait_for_task(self, workflow_id: str, key: str, status: str, timeout_s: float = 20.0) -> Ran:
        """Poll until the task `key`'s latest attempt has `status`."""
        deadline = time.monotonic() + timeout_s
        while True:
            ran = self.get(workflow_id)
            task = ran.tasks.get(key)
            if task is not None and task.status == status:
                return ran
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: task {key} of {workflow_id} is "
                                     f"{task.status if task else 'absent'}, not {status}")
            time.sleep(0.05)


class GrpcPath(NodePath):
    """Our gRPC API. With `execute`, `run` is one ExecuteWorkflow call (start and wait on the
    node); without, StartWorkflow then GetWorkflow until the end."""

    def __init__(self, client: WorkflowClient, *, execute: bool) -> None:
        self.client = client
        self.execute = execute
        self.name = "grpc-execute" if execute else "grpc-start"

    def register_task_defs(self, definitions: list[dict[str, Any]]) -> None:
        for definition in definitions:
            self.client.register_task_def(definition)

    def register(self, definition: dict[str, Any]) -> None:
        self.client.register_workflow_def(definition)

    def start(self, name: str, workflow_input: dict[str, Any], version: int = 0) -> str:
        return self.client.start_workflow(name, workflow_input, version=version)

    def get(self, workflow_id: str) -> Ran:
        return grpc_ran(self.client.get_workflow(workflow_id))

    def signal(self, workflow_id: str, ref: str, output: dict[str, Any], *, failed: bool = False) -> None:
        self.client.signal_task(workflow_id, ref, output=output, failed=failed,
                                reason="signalled as failed" if failed else "")

    def find(self, name: str) -> list[str]:
        found, _ = self.client.search_workflows(name=name)
        return [w["workflow_id"] for w in found]

    def run(self, name: str, workflow_input: dict[str, Any], timeout_s: float = 20.0) -> Ran:
        if not self.execute:
            return super().run(name, workflow_input, timeout_s)
        ran = grpc_ran(self.client.execute_workflow(name, workflow_input, wait_s=timeout_s))
        assert ran.status in TERMINAL, f"ExecuteWorkflow came back {ran.status} after {timeout_s} s"
        return ran


def grpc_ran(workflow: dict[str, Any]) -> Ran:
    return Ran(
        workflow_id=workflow["workflow_id"], name=workflow["name"], version=int(workflow["version"]),
        status=workflow["status"], reason=workflow["reason"], input=workflow.get("input") or {},
        output=workflow.get("output") or {}, variables=workflow.get("variables") or {},
        created_at_ms=int(workflow["created_at_ms"]), ended_at_ms=int(workflow["ended_at_ms"]),
        parent_workflow_id=workflow["parent_workflow_id"],
        attempts=[Attempt(task_id=t["task_id"], key=t["key"] or t["reference_name"], kind=t["kind"],
                          task_type=t["task_type"], status=t["status"], attempt=int(t["attempt"]),
                          input=t.get("input") or {}, output=t.get("output") or {}, reason=t["reason"],
                          scheduled_at_ms=int(t["scheduled_at_ms"]), started_at_ms=int(t["started_at_ms"]),
                          ended_at_ms=int(t["ended_at_ms"]), sub_workflow_id=t["sub_workflow_id"])
                  for t in workflow["tasks"]])


class RestPath(NodePath):
    """Conductor's REST API: POST /metadata/taskdefs and /metadata/workflow, POST /workflow,
    GET /workflow/{id}, and a waiting task completed by POST /tasks/{id}/{ref}/{status}."""

    name = "rest"

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def register_task_defs(self, definitions: list[dict[str, Any]]) -> None:
        answer = self.http.post("/metadata/taskdefs", json=definitions)
        assert answer.status_code == 200, answer.text

    def register(self, definition: dict[str, Any]) -> None:
        answer = self.http.post("/metadata/workflow", json=definition)
        assert answer.status_code == 200, answer.text

    def start(self, name: str, workflow_input: dict[str, Any], version: int = 0) -> str:
        body: dict[str, Any] = {"name": name, "input": workflow_input}
        if version:
            body["version"] = version
        answer = self.http.post("/workflow", json=body)
        assert answer.status_code == 200, answer.text
        return answer.text

    def get(self, workflow_id: str) -> Ran:
        answer = self.http.get(f"/workflow/{workflow_id}")
        assert answer.status_code == 200, answer.text
        return rest_ran(answer.json())

    def signal(self, workflow_id: str, ref: str, output: dict[str, Any], *, failed: bool = False) -> None:
        answer = self.http.post(f"/tasks/{workflow_id}/{ref}/{'FAILED' if failed else 'COMPLETED'}", json=output)
        assert answer.status_code == 200, answer.text

    def find(self, name: str) -> list[str]:
        answer = self.http.get("/workflow/search", params={"query": f"workflowType = '{name}'"})
        assert answer.status_code == 200, answer.text
        return [summary["workflowId"] for summary in answer.json()["results"]]


def rest_ran(workflow: dict[str, Any]) -> Ran:
    return Ran(
        workflow_id=workflow["workflowId"], name=workflow["workflowName"], version=workflow["workflowVersion"],
        status=workflow["orchestratorStatus"], reason=workflow["reasonForIncompletion"] or "",
        input=workflow["input"], output=workflow["output"], variables=workflow["variables"],
        created_at_ms=workflow["createTime"], ended_at_ms=workflow["endTime"],
        parent_workflow_id=workflow["parentWorkflowId"] or "",
        attempts=[Attempt(task_id=t["taskId"], key=t["referenceTaskName"], kind=t["workflowTask"]["type"],
                          task_type=t["taskDefName"], status=t["status"], attempt=t["retryCount"],
                          input=t["inputData"], output=t["outputData"], reason=t["reasonForIncompletion"] or "",
                          scheduled_at_ms=t["scheduledTime"], started_at_ms=t["startTime"],
                          ended_at_ms=t["endTime"], sub_workflow_id=t.get("subWorkflowId") or "")
                  for t in workflow["tasks"]])
