"""WorkflowService: start, read, search and operate workflows."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import grpc

from orchestrator_api.structs import from_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..archive import Archive
from ..cluster.deciding import Decider
from ..cluster.notify import Notifier
from ..core import free_text
from ..core import state as m
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.definitions import iter_nodes
from ..core.schema import WorkflowDef
from ..core.payloads import PayloadLimit, encode
from ..core.errors import FailedPrecondition, InvalidArgument, NotFound, OrchestratorError
from ..core.namespaces import qualified, relative
from ..handlers import request_namespace, seen_here
from ..store import Store, StoreUnavailable
from .auth import guarded
from .errors import grpc_errors, status_code
from .messages import archived_message, fit, shown, workflow_message

MAX_ID_LENGTH = 256
ARCHIVE_CURSOR = "archive:"   # a page token that goes on in the archive
MAX_REASON_LENGTH = 4096
MAX_SEARCH_LIMIT = 1000
MAX_WAIT_S = 300.0
RESTARTABLE = sorted(st.TERMINAL_WORKFLOW)


@guarded("WorkflowService")   # each method refuses whom the table does not let call it, whoever calls
class WorkflowService(pb_grpc.WorkflowServiceServicer):
    """Every change is an event this node decides at once: starts in the background (the
    caller has its id), operations and signals before answering (the answer shows their effect).

    A caller sees only the workflows of its namespace: another namespace's workflow is NOT_FOUND
    by id and absent from searches (core/namespaces.py)."""

    def __init__(self, store: Store, limit: PayloadLimit, notifier: Notifier, decider: Decider,
                 archive: Archive | None = None) -> None:
        self.store = store
        self.limit = limit
        self.notifier = notifier
        self.decider = decider
        self.archive = archive   # where finished workflows go after their retention: still found
        self.started: Counter[str] = Counter()   # workflows this service created, by name (metrics)

    @grpc_errors
    async def StartWorkflow(self, request: pb.StartWorkflowRequest, context: Any) -> pb.StartWorkflowResponse:
        workflow_id, created = await self._start(request)
        return pb.StartWorkflowResponse(workflow_id=workflow_id, created=created)

    async def _start(self, request: pb.StartWorkflowRequest) -> tuple[str, bool]:
        if not request.name:
            raise InvalidArgument("name (the workflow definition to start) is required")
        if request.version < 0:
            raise InvalidArgument("version must be 0 (latest) or a positive version number")
        for field in ("correlation_id", "idempotency_key"):
            if len(getattr(request, field)) > MAX_ID_LENGTH:
                raise InvalidArgument(f"{field} is longer than {MAX_ID_LENGTH} characters")
        workflow_input = from_struct(request.input)
        self.limit.check("workflow input", encode(workflow_input, "workflow input"))
        namespace = request_namespace()
        name = qualified(namespace, request.name)
        # an idempotency key is its namespace's: another team's same key is another start
        idempotency_key = qualified(namespace, request.idempotency_key) if request.idempotency_key else ""
        workflow_id, created = await self.store.start_by_name(
            name, request.version, uuid.uuid4().hex, workflow_input, request.correlation_id, idempotency_key, now_ms())
        if created:
            self.decider.soon([workflow_id])
            self.started[name] += 1
        return workflow_id, created

    @grpc_errors
    async def ExecuteWorkflow(self, request: pb.ExecuteWorkflowRequest, context: Any) -> pb.Workflow:
        wait_s = request.wait_seconds or 30.0
        if not 0 < wait_s <= MAX_WAIT_S:
            raise InvalidArgument(f"wait_seconds must be above 0 and at most {MAX_WAIT_S:g}")
        workflow_id, _ = await self._start(request.start)

        async def ended() -> bool:
            state = await self.store.load(workflow_id)
            return state is not None and state.status in st.TERMINAL_WORKFLOW

        await self.notifier.wait_done(workflow_id, wait_s, ended)
        return workflow_message(await self._load(workflow_id), include_tasks=True)

    @grpc_errors
    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Any) -> pb.Workflow:
        workflow_id = checked_id(request.workflow_id)
        state = await self.store.load(workflow_id)
        if state is not None and seen_here(state.name):
            return workflow_message(state, include_tasks=request.include_tasks)
        record = await self.archive.get(workflow_id) if self.archive is not None and state is None else None
        if record is None or not seen_here(str(record.get("name", ""))):
            raise NotFound(f"no workflow with id '{workflow_id}'")
        return fit([archived_message(record, include_tasks=request.include_tasks)])[0]

    async def WatchWorkflow(self, request: pb.GetWorkflowRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Workflow]:
        try:
            await self._load(request.workflow_id)
        except OrchestratorError as exc:
            await context.abort(status_code(exc), str(exc))
        last_revision = -1
        async for _ in self.notifier.changes(request.workflow_id):
            state = await self._load(request.workflow_id)
            if state.revision != last_revision:
                last_revision = state.revision
                yield workflow_message(state, include_tasks=request.include_tasks)
            if state.status in st.TERMINAL_WORKFLOW:
                return

    @grpc_errors
    async def SearchWorkflows(self, request: pb.SearchWorkflowsRequest,
                              context: Any) -> pb.SearchWorkflowsResponse:
        limit = request.limit or 50
        if not 0 < limit <= MAX_SEARCH_LIMIT:
            raise InvalidArgument(f"limit must be from 1 to {MAX_SEARCH_LIMIT}, got {request.limit}")
        if request.status and request.status not in st.WORKFLOW_STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(st.WORKFLOW_STATUSES)}, got '{request.status}'")
        if request.created_from_ms < 0 or request.created_to_ms < 0 or (
                request.created_to_ms and request.created_from_ms > request.created_to_ms):
            raise InvalidArgument("created_from_ms and created_to_ms must be epoch milliseconds, from <= to")
        try:
            free_text.words(request.text)
        except ValueError as exc:
            raise InvalidArgument(f"text: {exc}") from None
        namespace = request_namespace()
        filters = _Filters(name=qualified(namespace, request.name) if request.name else "", status=request.status,
                           correlation_id=request.correlation_id, created_from_ms=request.created_from_ms,
                           created_to_ms=request.created_to_ms, text=request.text, namespace=namespace)
        token = request.page_token
        try:
            found: list[pb.Workflow] = []
            if not token.startswith(ARCHIVE_CURSOR):   # the store first, newest first; then the archive
                page = await self.store.search(cursor=token, limit=limit, **filters)
                states = await self.store.load_many(page.workflow_ids)
                found = [workflow_message(s, include_tasks=False) for s in states if s]
                token = page.next_cursor or ARCHIVE_CURSOR
            if token.startswith(ARCHIVE_CURSOR) and len(found) < limit and self.archive is not None:
                archived = await self.archive.search(cursor=token[len(ARCHIVE_CURSOR):], limit=limit - len(found),
                                                     **filters)
                seen = {w.workflow_id for w in found}
                found += [archived_message(r, include_tasks=False) for r in archived.workflows
                          if r["workflow_id"] not in seen]
                token = ARCHIVE_CURSOR + archived.next_cursor if archived.next_cursor else ""
            elif token.startswith(ARCHIVE_CURSOR) and self.archive is None:
                token = ""
        except ValueError:
            raise InvalidArgument("page_token is not one this API returned; pass next_page_token as is") from None
        return pb.SearchWorkflowsResponse(workflows=fit(found), next_page_token=token)

    @grpc_errors
    async def TerminateWorkflow(self, request: pb.TerminateWorkflowRequest,
                                context: Any) -> pb.TerminateWorkflowResponse:
        if len(request.reason) > MAX_REASON_LENGTH:
            raise InvalidArgument(f"reason is longer than {MAX_REASON_LENGTH} characters")
        await self._load(request.workflow_id)   # one of the caller's namespace
        await self.store.terminate(checked_id(request.workflow_id), request.reason or "terminated by request", now_ms(),
                                   compensate=request.compensate)
        await self._decide(request.workflow_id)
        state = await self._load(request.workflow_id)
        return pb.TerminateWorkflowResponse(workflow=workflow_message(state, include_tasks=False))

    @grpc_errors
    async def PauseWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return await self._operate(await self._load(request.workflow_id), allowed=[st.RUNNING], new_status=st.PAUSED)

    @grpc_errors
    async def ResumeWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return await self._operate(await self._load(request.workflow_id), allowed=[st.PAUSED], new_status=st.RUNNING)

    @grpc_errors
    async def RetryWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return await self._operate(await self._load(request.workflow_id), allowed=[st.FAILED, st.TIMED_OUT],
                                   new_status=st.RUNNING, command={"op": "retry"})

    @grpc_errors
    async def RestartWorkflow(self, request: pb.RestartWorkflowRequest, context: Any) -> pb.Workflow:
        command: dict[str, Any] = {"op": "restart"}
        state = await self._load(request.workflow_id)
        if state.definition.get("restartable") is False:
            raise FailedPrecondition(f"workflow '{state.workflow_id}' cannot be restarted: its definition "
                                     f"'{relative(state.name)}' says restartable: false")
        if request.use_latest_definition:
            latest = await self.store.get_workflow_def(state.name)
            if latest is None:
                raise FailedPrecondition(f"workflow definition '{relative(state.name)}' is no longer registered")
            command["snapshot"] = await self.store.snapshot(latest)
        return await self._operate(state, allowed=RESTARTABLE, new_status=st.RUNNING, command=command)

    @grpc_errors
    async def RerunWorkflow(self, request: pb.RerunWorkflowRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        key = request.task_reference_name
        if not key or not any(t.spec.key == key for t in state.tasks):
            raise InvalidArgument(f"task_reference_name '{shown(key)}' names no task that ran in workflow "
                                  f"'{state.workflow_id}'; use its reference (with __<n> inside loops)")
        command: dict[str, Any] = {"op": "rerun", "key": key}
        if request.HasField("task_input"):
            command["input"] = from_struct(request.task_input)
            self.limit.check("task input", encode(command["input"], "task input"))
        return await self._operate(state, allowed=[st.RUNNING, st.PAUSED, *RESTARTABLE],
                                   new_status=st.RUNNING, command=command)

    @grpc_errors
    async def SkipTask(self, request: pb.SkipTaskRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        key = request.task_reference_name
        if not key or key.split("__", 1)[0] not in _references(state.definition):
            raise InvalidArgument(f"task_reference_name '{shown(key)}' is not a task of workflow "
                                  f"'{relative(state.name)}'")
        return await self._operate(state, allowed=[st.RUNNING, st.PAUSED],
                                   command={"op": "skip", "key": key})

    @grpc_errors
    async def SignalTask(self, request: pb.SignalTaskRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        task_id = request.task_id
        if not task_id:
            waiting = [t for t in state.tasks if t.spec.ref == request.task_reference_name
                       and t.runtime.status == st.IN_PROGRESS]
            if not request.task_reference_name or not waiting:
                raise FailedPrecondition(f"workflow '{shown(request.workflow_id)}' has no WAIT or HUMAN task "
                                         f"'{request.task_reference_name}' waiting for a signal")
            task_id = waiting[-1].task_id
        output = encode(from_struct(request.output), "signal output")
        self.limit.check("signal output", output)
        status = st.TASK_FAILED if request.failed else st.TASK_COMPLETED
        await self.store.signal_task(request.workflow_id, task_id, status, output, request.reason, now_ms())
        await self._decide(request.workflow_id)
        return workflow_message(await self._load(request.workflow_id), include_tasks=True)

    async def _operate(self, state: m.WorkflowState, **kwargs: Any) -> pb.Workflow:
        """Store an operation on `state`'s workflow, read through `_load` (so the caller's)."""
        workflow_id = state.workflow_id
        await self.store.operate(workflow_id, now_ms=now_ms(), **kwargs)
        await self._decide(workflow_id)
        return workflow_message(await self._load(workflow_id), include_tasks=False)

    async def _decide(self, workflow_id: str) -> None:
        """The operation is stored; deciding it here is only quicker than the leader's sweep."""
        try:
            await self.decider.decide([workflow_id])
        except StoreUnavailable:
            pass

    async def _load(self, workflow_id: str) -> m.WorkflowState:
        """The workflow, if it is one of the caller's namespace; NotFound otherwise."""
        state = await self.store.load(checked_id(workflow_id))
        if state is None or not seen_here(state.name):
            raise NotFound(f"no workflow with id '{workflow_id}'")
        return state


class _Filters(TypedDict):
    name: str
    status: str
    correlation_id: str
    created_from_ms: int
    created_to_ms: int
    text: str
    namespace: str


def checked_id(workflow_id: str) -> str:
    """A workflow id fit to look up (and to echo in an answer)."""
    if not workflow_id:
        raise InvalidArgument("workflow_id is required")
    if len(workflow_id) > MAX_ID_LENGTH:
        raise InvalidArgument(f"workflow_id is {len(workflow_id)} characters long; ids have at most "
                              f"{MAX_ID_LENGTH}")
    return workflow_id


def _references(definition: WorkflowDef) -> set[str]:
    return {t["taskReferenceName"] for t in iter_nodes(definition["tasks"])}
