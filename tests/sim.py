"""An in-memory run of the pure decider, for language tests without servers.

It applies each Decision with the core's pure `apply` (the semantics the Lua script is held
to by tests/integration/store/test_apply_contract.py), carries out its effects on child and parent workflows,
and plays the workers with a handler function. Time only moves when nothing else can happen, to the next wake-up.
The real scripts are exercised by the end-to-end tests; this is the decider's bench.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, cast
from collections.abc import Callable, Mapping

from orchestrator.core import state as m
from orchestrator.core import statuses as st
from orchestrator.core.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.core.apply import apply, finish_parent_task, new_child
from orchestrator.core.decider import Decision, decide
from orchestrator.core.decider.walk import is_worker_kind
from orchestrator.core.schema import TaskDef

START = 1_700_000_000_000
# ("COMPLETED", output) | ("FAILED", reason) | ("FAILED_WITH_TERMINAL_ERROR", reason)
Outcome = tuple[str, Any]
Handler = Callable[[m.TaskState], Outcome]


def task_defs(*names: str, **fields: Any) -> dict[str, TaskDef]:
    return {n: normalise_task_def({"name": n, "retryDelaySeconds": 0, **fields}) for n in names}


def echo(task: m.TaskState) -> Outcome:
    return ("COMPLETED", {"echo": task.spec.input})


class Sim:
    def __init__(self, definition: Mapping[str, Any], defs: Mapping[str, Mapping[str, Any]],
                 workflows: Mapping[str, Mapping[str, Any]] | None = None, *,
                 normalised_workflows: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """`workflows` ("name:version" -> definition as written) are normalised here;
        `normalised_workflows` (the same, already normalised) are taken as they are."""
        self.defs = defs
        self.registered = {d["name"]: d for d in (workflows or {}).values()}
        self.registered.update({d["name"]: d for d in (normalised_workflows or {}).values()})
        self.definition = normalise_workflow_def(definition, defs, self.registered)
        self.sub_workflows: dict[str, Any] = {key: normalise_workflow_def(d, defs, self.registered)
                              for key, d in (workflows or {}).items()}
        self.sub_workflows.update(normalised_workflows or {})
        self.now = START
        self.workflows: dict[str, m.WorkflowState] = {}
        self.wakes: dict[str, int | None] = {}
        self.ids = (f"t{i}" for i in itertools.count())
        self.executions: list[tuple[str, str, int]] = []   # (workflow id, task key, attempt)
        self.decisions = 0

    def start(self, workflow_input: dict[str, Any] | None = None, workflow_id: str = "wf") -> m.WorkflowState:
        self._create(workflow_id, {"workflow": self.definition, "taskDefs": self.defs,
                                   "subWorkflows": self.sub_workflows}, workflow_input or {}, "")
        return self.workflows[workflow_id]

    def _create(self, workflow_id: str, snapshot: dict[str, Any], workflow_input: dict[str, Any],
                parent: str) -> None:
        definition = snapshot["workflow"]
        self.workflows[workflow_id] = m.WorkflowState(
            workflow_id=workflow_id, name=definition["name"], version=definition["version"], status=st.RUNNING,
            input=workflow_input, correlation_id="corr", created_at_ms=self.now, updated_at_ms=self.now,
            definition=definition, task_defs=snapshot["taskDefs"], sub_workflows=snapshot["subWorkflows"],
            variables=dict(definition.get("variables", {})), parent=parent)
        self.wakes[workflow_id] = self.now

    # ---------------------------------------------------------------- the loop

    def run(self, handler: Handler = echo, max_steps: int = 500, *, every_workflow: bool = False) -> m.WorkflowState:
        """Decide and work until the root workflow ends (with `every_workflow`: until nothing
        can move in any workflow, e.g. a failure workflow) or nothing can move."""
        for _ in range(max_steps):
            if self.workflows["wf"].status in st.TERMINAL_WORKFLOW and not self._due() and not every_workflow:
                break
            if self._due():
                for workflow_id in self._due():
                    self.decide(workflow_id)
                continue
            if self.work(handler):
                continue
            wakes = [w for w in self.wakes.values() if w is not None]
            if not wakes:
                break
            self.now = max(self.now, min(wakes))
        return self.workflows["wf"]

    def _due(self) -> list[str]:
        return [w for w, at in self.wakes.items() if at is not None and at <= self.now]

    def decide(self, workflow_id: str) -> Decision:
        wf = self.workflows[workflow_id]
        decision = decide(wf, self.now, lambda: next(self.ids))
        self.decisions += 1
        self.apply(wf, decision)
        return decision

    def work(self, handler: Handler) -> bool:
        """Every queued worker task runs to its outcome; returns whether any ran."""
        ran = False
        for wf in list(self.workflows.values()):
            if wf.status not in (st.RUNNING, st.COMPENSATING):
                continue
            for task in wf.tasks:
                if is_worker_kind(task.spec.kind) and task.runtime.status == st.SCHEDULED and task.runtime.queued:
                    self.executions.append((wf.workflow_id, task.spec.key, task.spec.attempt))
                    status, value = handler(task)
                    task.runtime = replace(task.runtime, status=cast(st.TaskStatus, status), ended_at_ms=self.now,
                                           started_at_ms=self.now, queued=False,
                                           reason="" if status == st.TASK_COMPLETED else str(value))
                    task.output = value if status == st.TASK_COMPLETED else None
                    self.wakes[wf.workflow_id] = self.now
                    ran = True
        return ran

    def signal(self, key: str, output: dict[str, Any], workflow_id: str = "wf",
               status: str = st.TASK_COMPLETED) -> None:
        task = self.workflows[workflow_id].latest_attempt(key)
        assert task is not None and task.runtime.status == st.IN_PROGRESS and task.spec.kind in ("WAIT", "HUMAN")
        task.runtime = replace(task.runtime, status=cast(st.TaskStatus, status), ended_at_ms=self.now)
        task.output = output
        self.wakes[workflow_id] = self.now

    def command(self, op: str, workflow_id: str = "wf", status: str | None = None, **fields: Any) -> None:
        """What the OPERATE script does: queue a command (and maybe change the status)."""
        wf = self.workflows[workflow_id]
        wf.commands.append({"op": op, "field": f"c:{len(wf.commands):08d}", **fields})
        if status:
            wf.status = cast(st.WorkflowStatus, status)
        self.wakes[workflow_id] = self.now

    # ---------------------------------------------------------------- applying decisions

    def apply(self, wf: m.WorkflowState, d: Decision) -> None:
        """The pure `apply`, then its effects on other workflows as the Lua script has them."""
        new, effects = apply(wf, d, self.now)
        for start in effects.start:
            if start.workflow_id not in self.workflows:
                self.workflows[start.workflow_id] = new_child(start, self.now)
                self.wakes[start.workflow_id] = self.now
        for child_id, reason in effects.terminate:
            self._terminate(child_id, reason)
        self.workflows[wf.workflow_id] = new
        self.wakes[wf.workflow_id] = effects.wake_at_ms
        if effects.ended:
            self._finish_parent(new)

    def _terminate(self, workflow_id: str, reason: str) -> None:
        """What TERMINATE does to another workflow (a child of a parent that ended)."""
        child = self.workflows.get(workflow_id)
        if child is not None and child.status not in st.TERMINAL_WORKFLOW:
            child.status, child.reason, child.ended_at_ms = st.TERMINATED, reason, self.now
            self.wakes[workflow_id] = self.now
            self._finish_parent(child)

    def _finish_parent(self, child: m.WorkflowState) -> None:
        if not child.parent:
            return
        parent_id = child.parent.split("|", 1)[0]
        parent = finish_parent_task(self.workflows[parent_id], child, self.now)
        if parent is not None:
            self.workflows[parent_id] = parent
            self.wakes[parent_id] = self.now

    # ---------------------------------------------------------------- reading

    def task(self, key: str, workflow_id: str = "wf") -> m.TaskState:
        task = self.workflows[workflow_id].latest_attempt(key)
        assert task is not None, f"no task {key}"
        return task

    def output(self, key: str, workflow_id: str = "wf") -> dict[str, Any]:
        """The output of the latest attempt of `key`, which must have one (it ended with an output)."""
        output = self.task(key, workflow_id).output
        assert output is not None, f"task {key} has no output"
        return output

    def statuses(self, workflow_id: str = "wf") -> dict[str, str]:
        return {t.spec.key: t.runtime.status for t in sorted(self.workflows[workflow_id].tasks,
                                                             key=lambda t: t.spec.seq)}
