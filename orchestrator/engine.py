"""The decider: a pure function from a workflow's stored state to the next transitions.

`decide(workflow, now_ms, new_id)` reads nothing and writes nothing; the leader's
engine loop (`orchestrator.leader_loop`) feeds it what it read from Redis and
applies the returned `Decision` in one fenced, conditional Lua call. Keeping it
pure is what lets every rule below be tested without servers.

The definition is walked in order: the first step whose latest attempt is not
COMPLETED is where the workflow stands. New step kinds plug in at `_advance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import model as m
from .expressions import resolve


@dataclass
class Decision:
    """Transitions to apply atomically. Empty when there is nothing to do."""

    status: str | None = None                 # new workflow status
    output: dict[str, Any] | None = None
    reason: str | None = None
    new_tasks: list[m.TaskState] = field(default_factory=list)
    changed_runtimes: dict[str, m.TaskRuntime] = field(default_factory=dict)
    enqueue: list[tuple[str, str]] = field(default_factory=list)     # (task type, task id)
    dequeue: list[tuple[str, str]] = field(default_factory=list)
    drop_leases: list[str] = field(default_factory=list)
    wake_at_ms: int | None = None             # when to decide again without an event
    log: list[str] = field(default_factory=list)

    def wake(self, at_ms: int) -> None:
        self.wake_at_ms = at_ms if self.wake_at_ms is None else min(self.wake_at_ms, at_ms)

    @property
    def empty(self) -> bool:
        return (self.status is None and not self.new_tasks and not self.changed_runtimes
                and not self.enqueue and not self.dequeue and not self.drop_leases)


def retry_delay_ms(task_def: dict[str, Any], failed_attempt: int) -> int:
    """Delay before the retry of attempt number `failed_attempt` (0 = the first run)."""
    base = float(task_def["retryDelaySeconds"])
    logic = task_def["retryLogic"]
    if logic == "LINEAR_BACKOFF":
        delay = base * float(task_def["backoffScaleFactor"]) * (failed_attempt + 1)
    elif logic == "EXPONENTIAL_BACKOFF":
        delay = base * (2 ** failed_attempt)
    else:
        delay = base
    return int(min(delay, float(task_def["maxRetryDelaySeconds"])) * 1000)


def decide(wf: m.WorkflowState, now_ms: int, new_id: Callable[[], str]) -> Decision:
    decision = Decision()
    if wf.status in m.TERMINAL_WORKFLOW:
        _cancel_active(wf, now_ms, decision, f"workflow is {wf.status}")
        return decision
    _advance(wf, now_ms, new_id, decision)
    return decision


def _advance(wf: m.WorkflowState, now_ms: int, new_id: Callable[[], str], decision: Decision) -> None:
    for index, step in enumerate(wf.definition["tasks"]):
        latest = wf.latest_attempt(step["taskReferenceName"])
        if latest is None:
            decision.new_tasks.append(_schedule(wf, step, 0, now_ms, now_ms, new_id, decision))
            return
        status = latest.runtime.status
        if status == m.TASK_COMPLETED:
            continue
        if status == m.SCHEDULED:
            _enqueue_when_ready(latest, now_ms, decision)
        elif status == m.IN_PROGRESS:
            _check_total_timeout(latest, now_ms, decision)
        elif status in m.RETRYABLE_TASK:
            _retry_or_fail(wf, step, latest, now_ms, new_id, decision)
        else:  # FAILED_WITH_TERMINAL_ERROR or CANCELED
            _fail(wf, decision, f"task '{latest.spec.ref}' ended {status}: {latest.runtime.reason}")
        return
    _complete(wf, decision)


def _schedule(wf: m.WorkflowState, step: dict[str, Any], attempt: int, now_ms: int, ready_at_ms: int,
              new_id: Callable[[], str], decision: Decision) -> m.TaskState:
    task_def = wf.task_defs[step["name"]]
    task_id = new_id()
    spec = m.TaskSpec(task_id=task_id, ref=step["taskReferenceName"], kind=step["type"],
                      task_type=step["name"], attempt=attempt, seq=wf.next_seq() + len(decision.new_tasks),
                      input=resolve(step["inputParameters"], _scope(wf)), scheduled_at_ms=now_ms)
    runtime = m.TaskRuntime(status=m.SCHEDULED, task_type=step["name"],
                            lease_ms=int(task_def["responseTimeoutSeconds"] * 1000),
                            timeout_ms=int(task_def["timeoutSeconds"] * 1000), ready_at_ms=ready_at_ms)
    if ready_at_ms <= now_ms:
        runtime.queued = True
        decision.enqueue.append((spec.task_type, task_id))
    else:
        decision.wake(ready_at_ms)
    decision.log.append(f"scheduled '{spec.ref}' attempt {attempt}")
    return m.TaskState(spec, runtime)


def _enqueue_when_ready(task: m.TaskState, now_ms: int, decision: Decision) -> None:
    """A delayed retry becomes visible to workers once its back-off has passed."""
    if task.runtime.queued:
        return
    if task.runtime.ready_at_ms > now_ms:
        decision.wake(task.runtime.ready_at_ms)
        return
    runtime = _copy(task.runtime, queued=True)
    decision.changed_runtimes[task.task_id] = runtime
    decision.enqueue.append((task.spec.task_type, task.task_id))


def _check_total_timeout(task: m.TaskState, now_ms: int, decision: Decision) -> None:
    """`timeoutSeconds` bounds one attempt from its start, heartbeats or not."""
    if not task.runtime.timeout_ms:
        return
    deadline = task.runtime.started_at_ms + task.runtime.timeout_ms
    if now_ms < deadline:
        decision.wake(deadline)
        return
    decision.changed_runtimes[task.task_id] = _copy(
        task.runtime, status=m.TASK_TIMED_OUT, ended_at_ms=now_ms,
        reason=f"attempt exceeded timeoutSeconds ({task.runtime.timeout_ms / 1000:g} s)")
    decision.drop_leases.append(task.task_id)
    decision.wake(now_ms)  # decide the retry at once


def _retry_or_fail(wf: m.WorkflowState, step: dict[str, Any], latest: m.TaskState, now_ms: int,
                   new_id: Callable[[], str], decision: Decision) -> None:
    task_def = wf.task_defs[step["name"]]
    if latest.spec.attempt >= task_def["retryCount"]:
        _fail(wf, decision, f"task '{latest.spec.ref}' {latest.runtime.status} after "
                            f"{latest.spec.attempt + 1} attempt(s): {latest.runtime.reason}")
        return
    ready_at = now_ms + retry_delay_ms(task_def, latest.spec.attempt)
    decision.new_tasks.append(_schedule(wf, step, latest.spec.attempt + 1, now_ms, ready_at, new_id, decision))


def _complete(wf: m.WorkflowState, decision: Decision) -> None:
    decision.status = m.COMPLETED
    decision.output = resolve(wf.definition["outputParameters"], _scope(wf))
    decision.log.append("workflow completed")


def _fail(wf: m.WorkflowState, decision: Decision, reason: str) -> None:
    decision.status = m.FAILED
    decision.reason = reason
    decision.log.append(f"workflow failed: {reason}")


def _cancel_active(wf: m.WorkflowState, now_ms: int, decision: Decision, reason: str) -> None:
    for task in wf.tasks:
        if task.runtime.status not in m.ACTIVE_TASK:
            continue
        if task.runtime.status == m.SCHEDULED and task.runtime.queued:
            decision.dequeue.append((task.spec.task_type, task.task_id))
        if task.runtime.status == m.IN_PROGRESS:
            decision.drop_leases.append(task.task_id)
        decision.changed_runtimes[task.task_id] = _copy(task.runtime, status=m.CANCELED,
                                                        ended_at_ms=now_ms, reason=reason)


def _scope(wf: m.WorkflowState) -> dict[str, Any]:
    scope: dict[str, Any] = {"workflow": {"input": wf.input, "variables": {},
                                          "workflowId": wf.workflow_id,
                                          "correlationId": wf.correlation_id}}
    for task in sorted(wf.tasks, key=lambda t: t.spec.seq):
        scope[task.spec.ref] = {"input": task.spec.input, "output": task.output or {}}
    return scope


def _copy(runtime: m.TaskRuntime, **changes: Any) -> m.TaskRuntime:
    return m.TaskRuntime(**{**runtime.__dict__, **changes})
