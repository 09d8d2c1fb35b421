"""The state of one decision: the task instances seen so far, the expression scope, and the
primitives every node kind uses (schedule, complete, fail, retry).

Instances are found by key: the task reference plus one `__<n>` suffix per enclosing
DO_WHILE iteration. Tasks the decision creates are visible at once, so a chain of
system tasks (SET_VARIABLE, INLINE, SWITCH, ...) runs through in a single decision.
"""

from __future__ import annotations

from typing import Any, cast
from collections.abc import Callable, Iterator, Mapping

from .. import state as m
from .. import statuses as st
from ..definitions import TASK_DEF_DEFAULTS, iter_nodes, normalise_dynamic_task
from ..kinds import kind_for
from ..kinds.base import BLOCKED, DONE, Kind, Outcome, failure
from ..namespaces import namespace_of, qualified, queue_of, relative, topic_in
from ..schema import TaskDef, WorkflowDef, WorkflowTask
from ..templates import TASK_ID, resolve
from ..values import seconds_ms
from .decision import Decision, NewWorkflow
from .instances import SEQ, Entry, Instances, Latest, entry_for, instances_of

__all__ = ["ALERT", "BLOCKED", "DONE", "Outcome", "Walk", "failure", "is_worker_kind", "retry_delay_ms"]


ALERT = "alert: "


def is_worker_kind(kind: str) -> bool:
    """Whether tasks of this kind run on workers (SIMPLE, DYNAMIC, the I/O types such as HTTP,
    and types that are not Conductor's but have a task definition named after them)."""
    return kind_for(kind).runs_on_workers


def retry_delay_ms(task_def: TaskDef, failed_attempt: int) -> int:
    """Delay before the retry of attempt number `failed_attempt` (0 = the first run)."""
    base = float(task_def["retryDelaySeconds"])
    logic = task_def["retryLogic"]
    if logic == "LINEAR_BACKOFF":
        delay = base * float(task_def["backoffScaleFactor"]) * (failed_attempt + 1)
    elif logic == "EXPONENTIAL_BACKOFF":
        # operator retries can push the attempt number past 1023, where 2**n no longer fits a float
        delay = base * float(2 ** min(failed_attempt, 64))
    else:
        delay = base
    return seconds_ms(min(delay, float(task_def["maxRetryDelaySeconds"])))


class Walk:
    # set by `_index`, from the index of the workflow's tasks
    index: Instances
    latest: Latest
    next_seq: int
    scope: dict[str, Any]

    def __init__(self, wf: m.WorkflowState, now_ms: int, new_id: Callable[[], str], decision: Decision,
                 new_workflow_id: Callable[[], str] | None = None) -> None:
        self.wf = wf
        self.namespace = namespace_of(wf.name)   # names in the definition are relative to it
        self.now = now_ms
        self.new_id = new_id
        self.new_workflow_id = new_workflow_id or new_id   # see decide()
        self.decision = decision
        self.definition = wf.definition
        self.task_defs = dict(wf.task_defs)
        self.sub_workflows = dict(wf.sub_workflows)
        self.variables = dict(wf.variables)
        self.fork_done: dict[str, bool] = {}
        self.input_overrides: dict[str, dict[str, Any]] = {}
        self.input_extras: dict[str, dict[str, Any]] = {}   # data laid over the resolved input (dynamic forks)
        self.retrying: set[str] = set()        # keys whose failed instance gets a fresh attempt
        self.finished: dict[str, int] = {}   # what earlier decisions of this run found finished (`run`)
        self._index(instances_of(wf))
        if not wf.commands:   # an operator's command may change what ran: walk it all
            self.finished = self.index.finished

    # ---------------------------------------------------------------- instances and scope

    def reset(self, tasks: list[m.TaskState]) -> None:
        """Walk `tasks` as the workflow's (an operator's rerun or restart forgets the others)."""
        self.finished = {}
        remaining = self.wf.copied()
        remaining.tasks = tasks
        self._index(Instances(remaining))

    def _index(self, index: Instances) -> None:
        """See the instances through `index` (`Latest`: each not done is copied when first asked for); what
        expressions see of them is the index's (an active one's made again if its output changed)."""
        self.index = index
        self.latest = Latest(index.latest)
        self.next_seq = index.next_seq
        wf = self.wf
        workflow_input = wf.input
        defaults = self.definition.get("inputTemplate")
        if defaults:   # Conductor's inputTemplate: default values of the input
            workflow_input = {**defaults, **wf.input}
        parent_id, _, parent_task = wf.parent.partition("|")
        self.scope = dict(index.entries)
        self.scope["workflow"] = {
            "input": workflow_input, "variables": self.variables, "workflowId": wf.workflow_id,
            "correlationId": wf.correlation_id, "output": {}, "status": str(wf.status),
            "workflowType": relative(wf.name),
            "version": wf.version, "createTime": wf.created_at_ms, "updateTime": wf.updated_at_ms,
            "parentWorkflowId": parent_id or None, "parentWorkflowTaskId": parent_task or None,
            "reasonForIncompletion": wf.reason, "schemaVersion": 2, "taskToDomain": {}}
        for key in index.live:
            entry = index.entries.get(key)
            if entry is not None and entry.read is not entry.task.output:   # its output was set since
                fresh = entry_for(entry.task, wf)
                for name in (key, entry.task.spec.ref):
                    if self.scope.get(name) is entry:
                        self.scope[name] = fresh

    def _shown_as_changed(self, task: m.TaskState) -> None:
        """Expressions see `task`, this decision's copy of an instance it just changed, where they
        saw the state's (`${ref.status}` shows what the decision did)."""
        for name in (task.spec.key, task.spec.ref):
            shown = self.scope.get(name)
            if isinstance(shown, Entry) and shown.task is not task and shown.task.task_id == task.task_id:
                self.scope[name] = entry_for(task, self.wf)

    def _expose(self, task: m.TaskState) -> None:
        entry = entry_for(task, self.wf)
        self.scope[task.spec.ref] = entry      # the latest iteration answers to the bare reference
        self.scope[task.spec.key] = entry

    def instances(self) -> list[m.TaskState]:
        """The latest instance of every key, in `seq` order, to read only (`active` gives the
        decision's own copies of the active ones, which it may change)."""
        return sorted(self.latest.seen(), key=SEQ)

    def active(self) -> list[m.TaskState]:
        """The active instances, in `seq` order: the decision's own (copied when first asked for)."""
        latest = self.latest
        return [latest[t.spec.key] for t in self.instances() if t.runtime.status in st.ACTIVE_TASK]

    def resolve(self, template: Any) -> Any:
        return resolve(template, self.scope)

    def set_variables(self, updates: dict[str, Any]) -> None:
        self.variables.update(updates)
        self.scope["workflow"]["variables"] = self.variables
        self.decision.variables = dict(self.variables)

    # ---------------------------------------------------------------- running nodes (the kinds' decide steps)

    def run(self, nodes: list[WorkflowTask], suffix: str) -> Outcome:
        """Advance nodes in order, each by its kind's step; stop at the first that is not DONE.

        Nodes an earlier decision of this run found finished (simple ones whose instance ended done:
        their step would find nothing to do) are not walked again: the walk starts after them, so a
        step of a long sequence does not cost more than one of a short one (issue 21)."""
        if not nodes:
            return DONE
        first = f"{nodes[0]['taskReferenceName']}{suffix}"
        start = min(self.finished.get(first, 0), len(nodes))
        finished = start   # nodes known finished, from the first
        previous: WorkflowTask | None = nodes[start - 1] if start else None
        outcome = DONE
        for position in range(start, len(nodes)):
            node = nodes[position]
            kind = kind_for(node["type"])
            outcome = kind.decide(self, node, suffix, previous)
            if not outcome.done:
                break
            if finished == position and self._finished(kind, node, suffix):
                finished += 1
            previous = node
        if finished > start:
            self.decision.finished[first] = finished
        return outcome

    def _finished(self, kind: Kind, node: WorkflowTask, suffix: str) -> bool:
        """Whether a node (of `kind`) its step found DONE has nothing left for any later decision: a
        node holding no others whose instance ended done (only an operator's command changes that)."""
        if kind.role == "container" or kind.children:
            return False
        task = self.latest.get(f"{node['taskReferenceName']}{suffix}")
        return task is not None and task.runtime.status in st.DONE_TASK

    def nodes(self, tasks: list[WorkflowTask]) -> Iterator[WorkflowTask]:
        """Every node of a task list, nested ones included, depth first."""
        return iter_nodes(tasks)

    def dynamic_task(self, spec: Any) -> tuple[dict[str, Any], list[str]]:
        """A task given as data at run time (a dynamic fork's branch), checked and normalised as a
        task of a Conductor definition against this run's snapshot: (task, problems)."""
        workflow_names = {key.rsplit(":", 1)[0] for key in self.sub_workflows}
        return normalise_dynamic_task(spec, self.task_defs, workflow_names, set(self.scope))

    def new_workflow(self, workflow_id: str, definition: WorkflowDef, input: dict[str, Any], *,
                     correlation_id: str, parent: str) -> NewWorkflow:
        """A workflow this one starts (a child, a started or a failure workflow), one level deeper,
        with this run's snapshot of definitions."""
        return NewWorkflow(
            workflow_id=workflow_id, name=qualified(self.namespace, definition["name"]),
            version=definition["version"], input=input, correlation_id=correlation_id, parent=parent,
            snapshot={"workflow": definition, "taskDefs": self.task_defs, "subWorkflows": self.sub_workflows},
            depth=self.wf.depth + 1)

    def topic_in(self, topic: str) -> str:
        """An event topic of this workflow's namespace, as the store knows it."""
        return topic_in(self.namespace, topic)

    # ---------------------------------------------------------------- creating and changing instances

    def add(self, node: WorkflowTask, key: str, *, status: st.TaskStatus, task_type: str = "", attempt: int = 0,
            input: dict[str, Any] | None = None, output: dict[str, Any] | None = None,
            ready_at_ms: int | None = None, reason: str = "", extra: dict[str, Any] | None = None,
            lease_ms: int = 0, timeout_ms: int = 0, task_id: str = "") -> m.TaskState:
        """Create an instance of `node` under `key` and make it visible to the rest of the walk."""
        kind = node["type"]
        task_id = task_id or self.new_id()
        spec = m.TaskSpec(task_id=task_id, ref=node["taskReferenceName"], kind=kind,
                          task_type=task_type or kind, attempt=attempt, seq=self.next_seq,
                          input=self.input_for(node, key, task_id) if input is None else input,
                          scheduled_at_ms=self.now, key=key, extra=extra or {})
        self.next_seq += 1
        started = self.now if status == st.IN_PROGRESS else 0
        ended = self.now if status not in st.ACTIVE_TASK else 0
        runtime = m.TaskRuntime(status=status, task_type=spec.task_type, lease_ms=lease_ms, timeout_ms=timeout_ms,
                                ready_at_ms=ready_at_ms or self.now, started_at_ms=started, ended_at_ms=ended,
                                reason=reason)
        task = m.TaskState(spec, runtime, output)
        if status == st.SCHEDULED:
            self._enqueue_or_wait(task)
        if output is not None:
            self.decision.outputs[task_id] = output
        self.decision.new_tasks.append(task)
        self.latest[key] = task
        self._expose(task)
        return task

    def input_for(self, node: WorkflowTask, key: str, task_id: str = "") -> dict[str, Any]:
        """The input of a new instance: its inputParameters resolved (over the task definition's
        inputTemplate, for a worker task), `${CPEWF_TASK_ID}` being `task_id`."""
        if key in self.input_overrides:
            return self.input_overrides.pop(key)
        template: Any = node["inputParameters"]
        if is_worker_kind(node["type"]):   # read only: not copied
            task_def: Mapping[str, Any] = node.get("taskDefinition") or self.task_defs.get(node["name"]) or {}
            defaults = task_def.get("inputTemplate")
            if defaults:
                template = {**defaults, **template}
        self.scope[TASK_ID] = task_id or None
        try:
            resolved: dict[str, Any] = self.resolve(template)
        finally:
            self.scope.pop(TASK_ID, None)
        extra = self.input_extras.pop(key, None)
        return {**resolved, **extra} if extra else resolved

    def task_def(self, node: WorkflowTask, name: str) -> TaskDef:
        """The task definition an instance of `node` runs under: the one embedded in the task
        (Conductor's `taskDefinition`), else the registered one named `name` (the task type),
        else the one named after the task (an HTTP task named 'charge' runs under 'charge', as
        in Conductor), else the defaults."""
        embedded = node.get("taskDefinition")
        if embedded:
            return embedded
        registered = self.task_defs.get(relative(name)) or self.task_defs.get(node["name"])
        if registered is not None:
            return registered
        return cast(TaskDef, {**TASK_DEF_DEFAULTS, "name": name})

    def find_workflow(self, name: str, version: int) -> WorkflowDef | None:
        """The definition `name` (version 0 = the latest) in this run's snapshot."""
        found = self.sub_workflows.get(f"{name}:{version}")
        if found is not None:
            return found
        candidates = [d for key, d in self.sub_workflows.items() if key.rsplit(":", 1)[0] == name]
        if version:
            return next((d for d in candidates if d.get("version") == version), None)
        return max(candidates, key=lambda d: int(d.get("version", 0)), default=None)

    def change(self, task: m.TaskState, *, status: str | None = None, reason: str | None = None,
               ended_at_ms: int | None = None, queued: bool | None = None) -> None:
        """Change an instance's runtime state in this decision (the fields given; a status that
        ends the instance ends it now unless `ended_at_ms` says when). The runtime is made anew,
        field by field (`dataclasses.replace` would look up every field of the class on each call)."""
        self._check_changeable(task)
        old = task.runtime
        if status is None:
            status = old.status
        elif ended_at_ms is None and status not in st.ACTIVE_TASK:
            ended_at_ms = self.now
        task.runtime = m.TaskRuntime(
            cast(st.TaskStatus, status), old.task_type, old.lease_ms, old.timeout_ms, old.ready_at_ms,
            old.queued if queued is None else queued, old.worker_id, old.started_at_ms,
            old.ended_at_ms if ended_at_ms is None else ended_at_ms, old.reason if reason is None else reason)
        self._shown_as_changed(task)
        new = next((t for t in self.decision.new_tasks if t.task_id == task.task_id), None)
        if new is not None:
            new.runtime = task.runtime
        else:
            self.decision.changed_runtimes[task.task_id] = task.runtime

    def set_output(self, task: m.TaskState, output: dict[str, Any]) -> None:
        self._check_changeable(task)
        task.output = output
        self.decision.outputs[task.task_id] = output
        self._expose(task)

    def complete(self, task: m.TaskState, output: dict[str, Any] | None = None) -> None:
        if output is not None:
            self.set_output(task, output)
        self.change(task, status=st.TASK_COMPLETED)

    def _check_changeable(self, task: m.TaskState) -> None:
        """Refuse to change the state's object (an instance that ended done is read from the state
        as it is, `Latest`): the state is its holders' (a node's memory, the decision's input)."""
        if self.latest.is_the_states(task):
            raise RuntimeError(f"a decision may not change '{task.spec.key}' ({task.runtime.status}): "
                               "an instance that ended done")

    def _enqueue_or_wait(self, task: m.TaskState) -> None:
        if task.runtime.ready_at_ms <= self.now:
            task.runtime.queued = True
            self.decision.enqueue.append((task.spec.task_type, task.spec.task_id))
        else:
            self.decision.wake(task.runtime.ready_at_ms)

    def enqueue_when_ready(self, task: m.TaskState) -> None:
        """A delayed task (startDelay, retry back-off) becomes visible to workers when due."""
        if task.runtime.queued:
            return
        if task.runtime.ready_at_ms > self.now:
            self.decision.wake(task.runtime.ready_at_ms)
            return
        self.change(task, queued=True)
        self.decision.enqueue.append((task.spec.task_type, task.task_id))

    def stop(self, task: m.TaskState, status: str, reason: str) -> None:
        """End an active instance: take it off its queue or lease, end a child workflow."""
        runtime = task.runtime
        if is_worker_kind(task.spec.kind):
            if runtime.status == st.SCHEDULED and runtime.queued:
                self.decision.dequeue.append((task.spec.task_type, task.task_id))
            elif runtime.status == st.IN_PROGRESS:
                self.decision.drop_leases.append((task.spec.task_type, task.task_id))
        child = task.spec.extra.get("child")
        if child and runtime.status == st.IN_PROGRESS:
            self.decision.terminate_workflows.append((child, f"parent workflow: {reason}"))
        self.change(task, status=status, reason=reason)

    # ---------------------------------------------------------------- worker tasks

    def queue_of(self, task_name: str) -> str:
        """The task type workers serve `task_name` of this workflow as (core/namespaces.py)."""
        return queue_of(self.namespace, task_name)

    def schedule_worker_task(self, node: WorkflowTask, key: str, task_name: str, *, attempt: int,
                             delay_ms: int = 0, extra: dict[str, Any] | None = None,
                             input: dict[str, Any] | None = None) -> m.TaskState:
        task_def = self.task_def(node, task_name)
        task_id = self.new_id()
        extra = dict(extra or {})
        # One idempotency key per logical execution: a retry inherits it (it copies `extra`); a
        # new iteration, branch, compensation, restart or rerun is a new task, so a new key.
        extra.setdefault("execution", task_id)
        task = self.add(node, key, status=st.SCHEDULED, task_type=self.queue_of(task_name), attempt=attempt,
                        input=input,
                        ready_at_ms=self.now + delay_ms, extra=extra, task_id=task_id,
                        lease_ms=seconds_ms(task_def["responseTimeoutSeconds"]),
                        timeout_ms=seconds_ms(task_def["timeoutSeconds"]))
        deadline = self._poll_deadline_ms(task, task_def)
        if deadline is not None:   # nothing else would decide the workflow again if no worker takes it
            self.decision.wake(deadline)
        return task

    def follow_worker_task(self, node: WorkflowTask, task: m.TaskState, task_name: str) -> Outcome:
        """Advance one worker-run instance: wait, time out, retry or give up."""
        status = task.runtime.status
        if status in st.DONE_TASK:
            return DONE
        if status == st.SCHEDULED:
            if self._poll_timed_out(node, task, task_name):
                return BLOCKED
            self.enqueue_when_ready(task)
            return BLOCKED
        if status == st.IN_PROGRESS:
            return self._check_task_timeout(node, task, task_name)
        if (status in st.RETRYABLE_TASK and self.retries_left(node, task, task_name)) or task.spec.key in self.retrying:
            self.retry(node, task, task_name)
            return BLOCKED
        return self.unsuccessful(node, task)

    def _poll_timed_out(self, node: WorkflowTask, task: m.TaskState, task_name: str) -> bool:
        """Conductor's `pollTimeoutSeconds`: an attempt queued this long without a worker taking
        it times out (and is retried under the task's policy)."""
        deadline = self._poll_deadline_ms(task, self.task_def(node, task_name))
        if deadline is None:
            return False
        if self.now < deadline:
            self.decision.wake(deadline)
            return False
        limit_ms = deadline - task.runtime.ready_at_ms
        self.stop(task, st.TASK_TIMED_OUT, f"no worker took the task within pollTimeoutSeconds "
                                           f"({limit_ms / 1000:g} s)")
        self.decision.wake(self.now)   # decide the retry at once
        return True

    def _poll_deadline_ms(self, task: m.TaskState, task_def: TaskDef) -> int | None:
        """When a queued attempt times out for want of a worker (None: no `pollTimeoutSeconds`, or
        the attempt is not yet offered to workers, e.g. during its startDelay or retry back-off)."""
        limit_ms = seconds_ms(task_def.get("pollTimeoutSeconds") or 0)
        if not limit_ms or task.runtime.ready_at_ms > self.now:
            return None
        return task.runtime.ready_at_ms + limit_ms

    def retries_left(self, node: WorkflowTask, task: m.TaskState, task_name: str) -> bool:
        allowed = int(node.get("retryCount", self.task_def(node, task_name)["retryCount"]))
        return task.spec.attempt - int(task.spec.extra.get("retryBase", 0)) < allowed

    def retry(self, node: WorkflowTask, task: m.TaskState, task_name: str) -> None:
        extra = dict(task.spec.extra)
        delay = retry_delay_ms(self.task_def(node, task_name), task.spec.attempt)
        if task.spec.key in self.retrying:          # an operator's retry: a fresh budget, no back-off
            self.retrying.discard(task.spec.key)
            extra["retryBase"] = task.spec.attempt + 1
            delay = 0
        self.schedule_worker_task(node, task.spec.key, task_name, attempt=task.spec.attempt + 1, delay_ms=delay,
                                  extra=extra, input=task.spec.input)
        self.decision.log.append(f"retrying '{task.spec.key}' (attempt {task.spec.attempt + 1})")

    def _check_task_timeout(self, node: WorkflowTask, task: m.TaskState, task_name: str) -> Outcome:
        """`timeoutSeconds` bounds one attempt from its start, heartbeats or not (the task definition,
        for its policy, is looked up only once the attempt is late)."""
        if not task.runtime.timeout_ms or task.runtime.reason.startswith(ALERT):
            return BLOCKED
        deadline = task.runtime.started_at_ms + task.runtime.timeout_ms
        if self.now < deadline:
            self.decision.wake(deadline)
            return BLOCKED
        policy = self.task_def(node, task_name)["timeoutPolicy"]
        reason = f"attempt exceeded timeoutSeconds ({task.runtime.timeout_ms / 1000:g} s)"
        if policy == "ALERT_ONLY":
            self.decision.log.append(f"ALERT: task '{task.spec.key}' {reason}")
            self.change(task, reason=f"{ALERT}{reason}")   # alerted once; the attempt runs on
            return BLOCKED
        self.stop(task, st.TASK_TIMED_OUT, reason)
        if policy == "TIME_OUT_WF":
            return failure(f"task '{task.spec.key}' {reason}", st.TIMED_OUT)
        self.decision.wake(self.now)   # decide the retry at once
        return BLOCKED

    def unsuccessful(self, node: WorkflowTask, task: m.TaskState) -> Outcome:
        """A failed instance that will not be retried: optional ones let the flow go on."""
        if node.get("optional"):
            self.change(task, status=st.COMPLETED_WITH_ERRORS)
            return DONE
        return failure(f"task '{task.spec.key}' {task.runtime.status} after {task.spec.attempt + 1} "
                       f"attempt(s): {task.runtime.reason}")
