"""An in-memory run of the pure decider, for language tests without servers.

It applies each Decision the way the Lua scripts do (tasks, outputs, variables, child
workflows, a child's end completing its parent's task) and plays the workers with a
handler function. Time only moves when nothing else can happen, to the next wake-up.
The real scripts are exercised by the end-to-end tests; this is the decider's bench.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, Callable

from orchestrator import model as m
from orchestrator.definitions import normalise_task_def, normalise_workflow_def
from orchestrator.engine import Decision, decide

START = 1_700_000_000_000
Outcome = tuple[str, Any]            # ("COMPLETED", output) | ("FAILED", reason) | ("FAILED_WITH_TERMINAL_ERROR", reason)
Handler = Callable[[m.TaskState], Outcome]


def task_defs(*names: str, **fields: Any) -> dict[str, dict[str, Any]]:
    return {n: normalise_task_def({"name": n, "retryDelaySeconds": 0, **fields}) for n in names}


def echo(task: m.TaskState) -> Outcome:
    return ("COMPLETED", {"echo": task.spec.input})


class Sim:
    def __init__(self, definition: dict[str, Any], defs: dict[str, dict[str, Any]],
                 workflows: dict[str, dict[str, Any]] | None = None) -> None:
        self.defs = defs
        self.registered = {d["name"]: d for d in (workflows or {}).values()}
        self.definition = normalise_workflow_def(definition, defs, self.registered)
        self.sub_workflows = {key: normalise_workflow_def(d, defs, self.registered)
                              for key, d in (workflows or {}).items()}
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
            workflow_id=workflow_id, name=definition["name"], version=definition["version"], status=m.RUNNING,
            input=workflow_input, correlation_id="corr", created_at_ms=self.now, updated_at_ms=self.now,
            definition=definition, task_defs=snapshot["taskDefs"], sub_workflows=snapshot["subWorkflows"],
            variables=dict(definition.get("variables", {})), parent=parent)
        self.wakes[workflow_id] = self.now

    # ---------------------------------------------------------------- the loop

    def run(self, handler: Handler = echo, max_steps: int = 500) -> m.WorkflowState:
        """Decide and work until the root workflow ends or nothing can move."""
        for _ in range(max_steps):
            if self.workflows["wf"].status in m.TERMINAL_WORKFLOW and not self._due():
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
            if wf.status not in (m.RUNNING, m.COMPENSATING):
                continue
            for task in wf.tasks:
                if task.spec.kind == "SIMPLE" and task.runtime.status == m.SCHEDULED and task.runtime.queued:
                    self.executions.append((wf.workflow_id, task.spec.key, task.spec.attempt))
                    status, value = handler(task)
                    task.runtime = replace(task.runtime, status=status, ended_at_ms=self.now,
                                           started_at_ms=self.now, queued=False,
                                           reason="" if status == m.TASK_COMPLETED else str(value))
                    task.output = value if status == m.TASK_COMPLETED else None
                    self.wakes[wf.workflow_id] = self.now
                    ran = True
        return ran

    def signal(self, key: str, output: dict[str, Any], workflow_id: str = "wf", status: str = m.TASK_COMPLETED) -> None:
        task = self.workflows[workflow_id].latest_attempt(key)
        assert task is not None and task.runtime.status == m.IN_PROGRESS and task.spec.kind in ("WAIT", "HUMAN")
        task.runtime = replace(task.runtime, status=status, ended_at_ms=self.now)
        task.output = output
        self.wakes[workflow_id] = self.now

    def command(self, op: str, workflow_id: str = "wf", status: str | None = None, **fields: Any) -> None:
        """What the OPERATE script does: queue a command (and maybe change the status)."""
        wf = self.workflows[workflow_id]
        wf.commands.append({"op": op, "field": f"c:{len(wf.commands):08d}", **fields})
        if status:
            wf.status = status
        self.wakes[workflow_id] = self.now

    # ---------------------------------------------------------------- applying decisions

    def apply(self, wf: m.WorkflowState, d: Decision) -> None:
        for child in d.start_workflows:
            if child.workflow_id not in self.workflows:
                self._create(child.workflow_id, child.snapshot, child.input, child.parent)
        for child_id, reason in d.terminate_workflows:
            child = self.workflows.get(child_id)
            if child is not None and child.status not in m.TERMINAL_WORKFLOW:
                child.status, child.reason = m.TERMINATED, reason
                self.wakes[child_id] = self.now
        deleted = set(d.delete_tasks)
        wf.tasks = [t for t in wf.tasks if t.task_id not in deleted]
        consumed = set(d.consumed_commands)
        wf.commands = [c for c in wf.commands if c["field"] not in consumed]
        if d.reset_result:
            wf.output, wf.reason = None, ""
        if d.snapshot is not None:
            wf.definition = d.snapshot["workflow"]
        wf.tasks.extend(m.TaskState(t.spec, t.runtime, t.output) for t in d.new_tasks)
        by_id = {t.task_id: t for t in wf.tasks}
        for task_id, runtime in d.changed_runtimes.items():
            by_id[task_id].runtime = runtime
        for task_id, output in d.outputs.items():
            by_id[task_id].output = output
        if d.variables is not None:
            wf.variables = d.variables
        if d.status:
            wf.status = d.status
            if d.output is not None:
                wf.output = d.output
            if d.reason is not None:
                wf.reason = d.reason
            if d.status in m.TERMINAL_WORKFLOW:
                self._finish_parent(wf)
        self.wakes[wf.workflow_id] = d.wake_at_ms

    def _finish_parent(self, child: m.WorkflowState) -> None:
        if not child.parent:
            return
        parent_id, task_id = child.parent.split("|")
        parent = self.workflows[parent_id]
        task = next((t for t in parent.tasks if t.task_id == task_id), None)
        if task is None or task.runtime.status != m.IN_PROGRESS:
            return
        if child.status == m.COMPLETED:
            task.runtime = replace(task.runtime, status=m.TASK_COMPLETED, ended_at_ms=self.now)
            task.output = child.output or {}
        else:
            task.runtime = replace(task.runtime, status=m.TASK_FAILED, ended_at_ms=self.now,
                                   reason=f"sub-workflow {child.workflow_id} ended {child.status}: {child.reason}")
        self.wakes[parent_id] = self.now

    # ---------------------------------------------------------------- reading

    def task(self, key: str, workflow_id: str = "wf") -> m.TaskState:
        task = self.workflows[workflow_id].latest_attempt(key)
        assert task is not None, f"no task {key}"
        return task

    def statuses(self, workflow_id: str = "wf") -> dict[str, str]:
        return {t.spec.key: t.runtime.status for t in sorted(self.workflows[workflow_id].tasks,
                                                             key=lambda t: t.spec.seq)}
