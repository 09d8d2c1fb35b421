"""Tasks: what workers do (say hello, take tasks, heartbeat, give back, report results, log) and
what an operator does to one task by its reference.

Whichever door a worker comes through (the gRPC stream, Conductor's polls), a result is stored and
its workflow decided soon the same way (`complete`): an output that cannot be kept fails the
attempt for good, with the reason why. A worker's tasks are its namespace's (core/namespaces.py);
so are a task's logs, kept under the caller's namespace so that another team that learns a task id
can neither read nor add to them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..cluster.deciding import Decider
from ..cluster.dispatch import Dispatcher, WorkerSession, worker_identity
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.errors import FailedPrecondition, InvalidArgument, NotFound
from ..core.namespaces import SYSTEM_TYPES, namespace_of, qualified, queue_of, relative
from ..core.payloads import PayloadLimit, checked_output
from ..store import ANY_WORKER, ClaimedTask, ResultAck, ResultOutcome, Store, WorkerResult
from .access import allowed, current_principal, request_namespace, seen_here
from .errors import Refused

MAX_CREDITS = 256         # tasks one stream may hold unfinished
MAX_TASK_TYPES = 256
MAX_NAME_LENGTH = 256
SIGNALLED_KINDS = ("WAIT", "HUMAN")


@dataclass(frozen=True)
class Hello:
    """What a worker says first on its stream."""

    worker_id: str
    task_types: list[str]
    capacity: int


@dataclass(frozen=True)
class Result:
    """A worker's result of one attempt (`output_json`: its output as JSON, text or UTF-8 bytes)."""

    workflow_id: str
    task_id: str
    worker_id: str
    status: st.TaskStatus
    output_json: str | bytes
    reason: str = ""


@dataclass(frozen=True)
class Completed:
    """What storing a result did, and what was stored: the status and reason differ from the
    worker's when its output could not be kept."""

    ack: ResultAck
    status: st.TaskStatus
    reason: str


class Tasks:
    def __init__(self, store: Store, dispatcher: Dispatcher, limit: PayloadLimit, decider: Decider) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limit = limit
        self.decider = decider

    async def connect(self, read_hello: Callable[[], Awaitable[Hello]]) -> WorkerSession:
        """A worker's stream: the session of the hello `read_hello` reads (after the check: nothing
        is read from a caller who may not connect). Refused when the hello is malformed or names
        task types the caller's token may not serve."""
        allowed("TaskService/Connect")
        hello = await read_hello()
        if not hello.worker_id or not hello.task_types or hello.capacity < 0:
            raise InvalidArgument("hello needs a worker_id, at least one task type and a capacity >= 0")
        principal = current_principal()
        refusal = principal.serve_refusal(list(hello.task_types)) if principal is not None else ""
        if refusal:
            raise Refused("PERMISSION_DENIED", refusal)
        if hello.worker_id == ANY_WORKER:
            raise InvalidArgument("worker_id '*' is reserved")
        if (len(hello.worker_id) > MAX_NAME_LENGTH or len(hello.task_types) > MAX_TASK_TYPES
                or any(len(t) > MAX_NAME_LENGTH for t in hello.task_types)):
            raise InvalidArgument(f"hello: worker_id and task types have at most {MAX_NAME_LENGTH} characters, "
                                  f"and a stream serves at most {MAX_TASK_TYPES} task types")
        # A stream holds at most MAX_CREDITS tasks it has not finished: a worker that announces a
        # huge capacity and never reads cannot hoard a task type. Task types and the worker's id
        # are its namespace's: it takes that namespace's tasks only. Its leases are held by its
        # identity (its token's name and its worker id, `worker_identity`), and every heartbeat,
        # result and release is checked against it: another token that says hello with this
        # worker's id is not it, the same worker reconnected to another node is.
        namespace = request_namespace()
        return WorkerSession(worker_identity(principal, namespace, hello.worker_id),
                             frozenset(queue_of(namespace, t) for t in hello.task_types),
                             min(hello.capacity, MAX_CREDITS))

    async def poll(self, queue: str, count: int, worker_id: str, wait_ms: int = 0) -> list[ClaimedTask]:
        """Up to `count` tasks of `queue` for `worker_id`, claimed and leased; waiting up to `wait_ms`
        for the queue's next `ready` broadcast when none is there (a task queued meanwhile comes at
        once, not at the next poll)."""
        allowed("TaskService/Connect")
        if not wait_ms:
            return await self._claim(queue, count, worker_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        while True:
            with self.dispatcher.ready_signal(queue) as ready:
                claimed = await self._claim(queue, count, worker_id)
                remaining = deadline - loop.time()
                if claimed or remaining <= 0:
                    return claimed
                try:
                    await asyncio.wait_for(ready.wait(), remaining)
                except TimeoutError:
                    return await self._claim(queue, count, worker_id)

    async def _claim(self, queue: str, count: int, worker_id: str) -> list[ClaimedTask]:
        """A poller's claim, answered with each task's workflow as the claim left it: a poller
        usually reports to the node it polled, which then decides the result without reading the
        workflow again (as for the tasks a worker stream is pushed, `Decider.claimed`)."""
        claimed = await self.store.claim(queue, count, worker_id, now_ms(), records=True)
        self.decider.claimed(claimed)
        return claimed

    async def complete(self, result: Result) -> Completed:
        """Store a worker's result and decide its workflow, in one step where it can be (`Decider.step`)."""
        allowed("TaskService/Connect")
        status, reason = result.status, result.reason
        output_json, problem = checked_output(self.limit, result.output_json)
        if output_json is None:   # an output that cannot be kept fails the attempt for good
            status, output_json, reason = st.FAILED_WITH_TERMINAL_ERROR, "{}", problem
        ack = await self.decider.step(WorkerResult(result.workflow_id, result.task_id, result.worker_id, status,
                                                   output_json, reason))
        return Completed(ack, status, reason)

    async def heartbeat(self, workflow_id: str, task_id: str, worker_id: str) -> int:
        """Renew the lease `worker_id` holds on the task: its new length in ms (0: it holds none)."""
        allowed("TaskService/Connect")
        return await self.store.heartbeat(workflow_id, task_id, worker_id, now_ms())

    async def release(self, workflow_id: str, task_id: str, worker_id: str, *, delay_ms: int = 0,
                      output: Any = None) -> bool:
        """Give the task back to its queue (after `delay_ms`, keeping `output` so far when given);
        False when `worker_id` does not hold it."""
        allowed("TaskService/Connect")
        if output is None:
            return await self.store.release_task(workflow_id, task_id, worker_id, now_ms())
        output_json, problem = checked_output(self.limit, json.dumps(output, ensure_ascii=False))
        if output_json is None:
            raise InvalidArgument(problem)
        return await self.store.release_task(workflow_id, task_id, worker_id, now_ms(), delay_ms=delay_ms,
                                             output_json=output_json)

    async def complete_by_reference(self, workflow_id: str, ref: str, status: st.TaskStatus,
                                    output: dict[str, Any]) -> str:
        """Complete the latest instance of task `ref` (a reference or a key) whoever holds it; a WAIT
        or HUMAN task is signalled. Its task id."""
        allowed("WorkflowService/SignalTask")
        state = await self.store.load(workflow_id)
        if state is None or not seen_here(state.name):
            raise NotFound(f"no workflow with id '{workflow_id[:256]}'")
        matching = [t for t in state.tasks if ref in (t.spec.key, t.spec.ref)]
        if not matching:
            raise NotFound(f"workflow {workflow_id} has no task '{ref[:256]}'")
        task = matching[-1]
        output_json, problem = checked_output(self.limit, json.dumps(output, ensure_ascii=False))
        if output_json is None:
            raise InvalidArgument(problem)
        if task.spec.kind in SIGNALLED_KINDS:
            await self.store.signal_task(workflow_id, task.task_id, status, output_json, "", now_ms())
        else:
            ack = await self.store.complete_task(workflow_id, task.task_id, ANY_WORKER, status, output_json, "",
                                                 now_ms())
            if ack.outcome is not ResultOutcome.STORED and ack.outcome is not ResultOutcome.DUPLICATE:
                raise FailedPrecondition(f"task '{ref[:256]}' is {task.runtime.status}, not in progress")
        self.decider.soon([workflow_id])
        return task.task_id

    async def add_logs(self, task_id: str, lines: list[tuple[int, str]]) -> None:
        """Add (epoch ms, text) lines to a task's logs."""
        allowed("TaskService/Connect")
        await self.store.add_task_logs(qualified(request_namespace(), task_id), lines)

    async def logs(self, task_id: str) -> list[tuple[int, str]]:
        """A task's logs, (epoch ms, text) oldest first."""
        allowed("WorkflowService/GetWorkflow")
        return list(await self.store.task_logs(qualified(request_namespace(), task_id)))

    async def queue_depths(self, task_types: list[str]) -> dict[str, int]:
        """How many tasks wait in each queue of the caller's namespace (and the system's), by type
        as the caller names it; `task_types` empty: every queue."""
        allowed("ClusterService/GetClusterStatus")
        namespace = request_namespace()
        stats = await self.store.queue_stats([queue_of(namespace, t) for t in task_types] or None)
        return {relative(s.task_type): s.depth for s in stats if namespace_of(s.task_type) == namespace
                or s.task_type in SYSTEM_TYPES}
