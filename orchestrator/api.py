"""The gRPC services: translate requests into store calls and errors into status codes.

No workflow logic lives here. Each handler validates its input first, so a bad
request is refused with a message that says what to fix before anything is written.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar

import grpc

from . import model as m
from .model import now_ms
from .convert import from_struct, to_struct
from .definitions import (iter_tasks, normalise_task_def, normalise_workflow_def, parse_document,
                          referenced_task_names, referenced_workflow_names, validate_workflow_def)
from .dispatch import Dispatcher, WorkerSession
from .errors import REDIS_UNAVAILABLE, FailedPrecondition, InvalidArgument, NotFound, OrchestratorError, TooLarge
from .notify import Notifier
from .store import Store, dumps
from .v1 import orchestrator_pb2 as pb
from .v1 import orchestrator_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256
MAX_SEARCH_LIMIT = 1000
RESULT_STATUS = {pb.TaskResult.COMPLETED: m.TASK_COMPLETED, pb.TaskResult.FAILED: m.TASK_FAILED,
                 pb.TaskResult.FAILED_TERMINAL: m.FAILED_WITH_TERMINAL_ERROR}
MAX_WAIT_S = 300.0
RESTARTABLE = sorted(m.TERMINAL_WORKFLOW)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(handler: Handler) -> Handler:
    """Turn OrchestratorError into its gRPC status; anything else is a bug and logged."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except OrchestratorError as exc:
            await context.abort(exc.code, str(exc))
        except REDIS_UNAVAILABLE as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"state store unavailable: {exc}")

    return wrapper  # type: ignore[return-value]


def source_to_dict(source: pb.DefinitionSource) -> dict[str, Any]:
    kind = source.WhichOneof("source")
    if kind == "definition":
        return from_struct(source.definition)
    if kind == "document":
        return parse_document(source.document)
    raise InvalidArgument("source: give either 'definition' (a JSON object) or 'document' (JSON/YAML text)")


class PayloadLimit:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def check(self, what: str, encoded: str | bytes) -> None:
        if len(encoded) > self.max_bytes:
            raise TooLarge(f"{what} is {len(encoded)} bytes encoded as JSON; the limit is {self.max_bytes} "
                           "bytes: pass a reference (a URL or an object-store key) instead of the data")


class MetadataService(pb_grpc.MetadataServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @grpc_errors
    async def RegisterTaskDef(self, request: pb.RegisterTaskDefRequest, context: Any) -> pb.TaskDef:
        definition = normalise_task_def(source_to_dict(request.source))
        await self.store.put_task_def(definition)
        return task_def_message(definition)

    @grpc_errors
    async def GetTaskDef(self, request: pb.GetTaskDefRequest, context: Any) -> pb.TaskDef:
        if not request.name:
            raise InvalidArgument("name is required")
        definition = await self.store.get_task_def(request.name)
        if definition is None:
            raise NotFound(f"no task definition named '{request.name}'")
        return task_def_message(definition)

    @grpc_errors
    async def ListTaskDefs(self, request: pb.ListTaskDefsRequest, context: Any) -> pb.ListTaskDefsResponse:
        defs = await self.store.task_defs()
        return pb.ListTaskDefsResponse(task_defs=[task_def_message(defs[n]) for n in sorted(defs)])

    async def _known(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The registered task and workflow definitions that `raw` refers to."""
        names = referenced_workflow_names(raw)
        workflows = {n: d for n in names if (d := await self.store.get_workflow_def(n)) is not None}
        return await self.store.task_defs(referenced_task_names(raw)), workflows

    @grpc_errors
    async def RegisterWorkflowDef(self, request: pb.RegisterWorkflowDefRequest, context: Any) -> pb.WorkflowDef:
        raw = source_to_dict(request.source)
        definition = normalise_workflow_def(raw, *await self._known(raw))
        await self.store.put_workflow_def(definition)
        return workflow_def_message(definition)

    @grpc_errors
    async def ValidateWorkflowDef(self, request: pb.RegisterWorkflowDefRequest,
                                  context: Any) -> pb.ValidateWorkflowDefResponse:
        raw = source_to_dict(request.source)
        definition, problems = validate_workflow_def(raw, *await self._known(raw))
        if problems:
            return pb.ValidateWorkflowDefResponse(valid=False, errors=problems)
        return pb.ValidateWorkflowDefResponse(valid=True, normalised=workflow_def_message(definition))

    @grpc_errors
    async def GetWorkflowDef(self, request: pb.GetWorkflowDefRequest, context: Any) -> pb.WorkflowDef:
        if not request.name:
            raise InvalidArgument("name is required")
        if request.version < 0:
            raise InvalidArgument("version must be 0 (latest) or a positive version number")
        definition = await self.store.get_workflow_def(request.name, request.version)
        if definition is None:
            version = f" version {request.version}" if request.version else ""
            raise NotFound(f"no workflow definition named '{request.name}'{version}")
        return workflow_def_message(definition)

    @grpc_errors
    async def ListWorkflowDefs(self, request: pb.ListWorkflowDefsRequest,
                               context: Any) -> pb.ListWorkflowDefsResponse:
        defs = await self.store.workflow_defs(request.name)
        return pb.ListWorkflowDefsResponse(workflow_defs=[workflow_def_message(d) for d in defs])


class WorkflowService(pb_grpc.WorkflowServiceServicer):
    def __init__(self, store: Store, limit: PayloadLimit, notifier: Notifier) -> None:
        self.store = store
        self.limit = limit
        self.notifier = notifier

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
        self.limit.check("workflow input", dumps(workflow_input))
        return await self.store.start_by_name(request.name, request.version, uuid.uuid4().hex, workflow_input,
                                              request.correlation_id, request.idempotency_key, now_ms())

    @grpc_errors
    async def ExecuteWorkflow(self, request: pb.ExecuteWorkflowRequest, context: Any) -> pb.Workflow:
        wait_s = request.wait_seconds or 30.0
        if not 0 < wait_s <= MAX_WAIT_S:
            raise InvalidArgument(f"wait_seconds must be above 0 and at most {MAX_WAIT_S:g}")
        workflow_id, _ = await self._start(request.start)

        async def ended() -> bool:
            state = await self.store.load(workflow_id)
            return state is not None and state.status in m.TERMINAL_WORKFLOW

        await self.notifier.wait_done(workflow_id, wait_s, ended)
        return workflow_message(await self._load(workflow_id), include_tasks=True)

    @grpc_errors
    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        return workflow_message(state, include_tasks=request.include_tasks)

    async def WatchWorkflow(self, request: pb.GetWorkflowRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Workflow]:
        try:
            await self._load(request.workflow_id)
        except OrchestratorError as exc:
            await context.abort(exc.code, str(exc))
        last_revision = -1
        async for _ in self.notifier.changes(request.workflow_id):
            state = await self._load(request.workflow_id)
            if state.revision != last_revision:
                last_revision = state.revision
                yield workflow_message(state, include_tasks=request.include_tasks)
            if state.status in m.TERMINAL_WORKFLOW:
                return

    @grpc_errors
    async def SearchWorkflows(self, request: pb.SearchWorkflowsRequest,
                              context: Any) -> pb.SearchWorkflowsResponse:
        limit = request.limit or 50
        if not 0 < limit <= MAX_SEARCH_LIMIT:
            raise InvalidArgument(f"limit must be from 1 to {MAX_SEARCH_LIMIT}, got {request.limit}")
        if request.status and request.status not in m.WORKFLOW_STATUSES:
            raise InvalidArgument(f"status must be one of {', '.join(m.WORKFLOW_STATUSES)}, got '{request.status}'")
        try:
            offset = int(request.page_token or 0)
            if offset < 0:
                raise ValueError
        except ValueError:
            raise InvalidArgument("page_token is not one this API returned; pass next_page_token as is") from None
        if request.created_from_ms < 0 or request.created_to_ms < 0 or (
                request.created_to_ms and request.created_from_ms > request.created_to_ms):
            raise InvalidArgument("created_from_ms and created_to_ms must be epoch milliseconds, from <= to")
        ids, next_offset = await self.store.search(name=request.name, status=request.status,
                                                   correlation_id=request.correlation_id, offset=offset,
                                                   limit=limit, created_from_ms=request.created_from_ms,
                                                   created_to_ms=request.created_to_ms)
        states = await self.store.load_many(ids)
        return pb.SearchWorkflowsResponse(
            workflows=[workflow_message(s, include_tasks=False) for s in states if s],
            next_page_token="" if next_offset is None else str(next_offset))

    @grpc_errors
    async def TerminateWorkflow(self, request: pb.TerminateWorkflowRequest,
                                context: Any) -> pb.TerminateWorkflowResponse:
        if not request.workflow_id:
            raise InvalidArgument("workflow_id is required")
        await self.store.terminate(request.workflow_id, request.reason or "terminated by request", now_ms(),
                                   compensate=request.compensate)
        state = await self._load(request.workflow_id)
        return pb.TerminateWorkflowResponse(workflow=workflow_message(state, include_tasks=False))

    @grpc_errors
    async def PauseWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return await self._operate(request.workflow_id, allowed=[m.RUNNING], new_status=m.PAUSED)

    @grpc_errors
    async def ResumeWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return await self._operate(request.workflow_id, allowed=[m.PAUSED], new_status=m.RUNNING)

    @grpc_errors
    async def RetryWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return await self._operate(request.workflow_id, allowed=[m.FAILED, m.TIMED_OUT], new_status=m.RUNNING,
                                   command={"op": "retry"})

    @grpc_errors
    async def RestartWorkflow(self, request: pb.RestartWorkflowRequest, context: Any) -> pb.Workflow:
        command: dict[str, Any] = {"op": "restart"}
        if request.use_latest_definition:
            state = await self._load(request.workflow_id)
            latest = await self.store.get_workflow_def(state.name)
            if latest is None:
                raise FailedPrecondition(f"workflow definition '{state.name}' is no longer registered")
            command["snapshot"] = await self.store.snapshot(latest)
        return await self._operate(request.workflow_id, allowed=RESTARTABLE, new_status=m.RUNNING, command=command)

    @grpc_errors
    async def RerunWorkflow(self, request: pb.RerunWorkflowRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        key = request.task_reference_name
        if not key or not any(t.spec.key == key for t in state.tasks):
            raise InvalidArgument(f"task_reference_name '{key}' names no task that ran in workflow "
                                  f"'{state.workflow_id}'; use its reference (with __<n> inside loops)")
        command: dict[str, Any] = {"op": "rerun", "key": key}
        if request.HasField("task_input"):
            command["input"] = from_struct(request.task_input)
            self.limit.check("task input", dumps(command["input"]))
        return await self._operate(request.workflow_id, allowed=[m.RUNNING, m.PAUSED, *RESTARTABLE],
                                   new_status=m.RUNNING, command=command)

    @grpc_errors
    async def SkipTask(self, request: pb.SkipTaskRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        key = request.task_reference_name
        if not key or key.split("__", 1)[0] not in _references(state.definition):
            raise InvalidArgument(f"task_reference_name '{key}' is not a task of workflow '{state.name}'")
        return await self._operate(request.workflow_id, allowed=[m.RUNNING, m.PAUSED],
                                   command={"op": "skip", "key": key})

    @grpc_errors
    async def SignalTask(self, request: pb.SignalTaskRequest, context: Any) -> pb.Workflow:
        state = await self._load(request.workflow_id)
        task_id = request.task_id
        if not task_id:
            waiting = [t for t in state.tasks if t.spec.ref == request.task_reference_name
                       and t.runtime.status == m.IN_PROGRESS]
            if not request.task_reference_name or not waiting:
                raise FailedPrecondition(f"workflow '{request.workflow_id}' has no WAIT or HUMAN task "
                                         f"'{request.task_reference_name}' waiting for a signal")
            task_id = waiting[-1].task_id
        output = dumps(from_struct(request.output))
        self.limit.check("signal output", output)
        status = m.TASK_FAILED if request.failed else m.TASK_COMPLETED
        await self.store.signal_task(request.workflow_id, task_id, status, output, request.reason, now_ms())
        return workflow_message(await self._load(request.workflow_id), include_tasks=True)

    async def _operate(self, workflow_id: str, **kwargs: Any) -> pb.Workflow:
        if not workflow_id:
            raise InvalidArgument("workflow_id is required")
        await self.store.operate(workflow_id, now_ms=now_ms(), **kwargs)
        return workflow_message(await self._load(workflow_id), include_tasks=False)

    async def _load(self, workflow_id: str) -> m.WorkflowState:
        if not workflow_id:
            raise InvalidArgument("workflow_id is required")
        state = await self.store.load(workflow_id)
        if state is None:
            raise NotFound(f"no workflow with id '{workflow_id}'")
        return state


class TaskService(pb_grpc.TaskServiceServicer):
    """The worker stream: credits in, tasks out, heartbeats and results in both ways."""

    def __init__(self, store: Store, dispatcher: Dispatcher, limit: PayloadLimit) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limit = limit

    async def Connect(self, request_iterator: AsyncIterator[pb.WorkerMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ServerMessage]:
        session = await self._hello(request_iterator, context)
        self.dispatcher.attach(session)
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            while True:
                message = await session.outbox.get()
                if message is None:
                    return
                yield message
        finally:
            reader.cancel()
            await self.dispatcher.detach(session)

    async def _hello(self, requests: AsyncIterator[pb.WorkerMessage],
                     context: grpc.aio.ServicerContext) -> WorkerSession:
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream closed before its hello")
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a hello")
        hello = first.hello
        if not hello.worker_id or not hello.task_types or hello.capacity < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "hello needs a worker_id, at least one task type and a capacity >= 0")
        return WorkerSession(hello.worker_id, frozenset(hello.task_types), hello.capacity)

    async def _read(self, requests: AsyncIterator[pb.WorkerMessage], session: WorkerSession) -> None:
        """Handle the worker's messages. Results, heartbeats and releases run concurrently
        (each is one atomic script), so a burst of results costs one round trip, not many."""
        in_flight: set[asyncio.Task[None]] = set()

        def spawn(call: Awaitable[Any]) -> None:
            task = asyncio.create_task(self._guarded(call, session))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

        try:
            async for message in requests:
                kind = message.WhichOneof("body")
                if kind == "credit":
                    self.dispatcher.grant(session, max(0, message.credit.count))
                elif kind == "heartbeat":
                    spawn(self._heartbeat(message.heartbeat, session))
                elif kind == "result":
                    spawn(self._result(message.result, session))
                elif kind == "release":
                    spawn(self.store.release_task(message.release.workflow_id, message.release.task_id,
                                                  session.worker_id, now_ms()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker stream of %s failed", session.worker_id)
        finally:
            await asyncio.gather(*in_flight, return_exceptions=True)
            # the worker half-closed: it can neither take nor release tasks any more
            await self.dispatcher.release_unsent(session)
            session.outbox.put_nowait(None)

    @staticmethod
    async def _guarded(call: Awaitable[Any], session: WorkerSession) -> None:
        """A failed store call ends the stream: the worker reconnects and re-sends what was not acked."""
        try:
            await call
        except REDIS_UNAVAILABLE as exc:
            log.warning("ending the stream of %s: state store unavailable (%s)", session.worker_id, exc)
            session.outbox.put_nowait(None)
        except Exception:
            log.exception("handling a message of worker %s failed", session.worker_id)
            session.outbox.put_nowait(None)

    async def _heartbeat(self, beat: pb.Heartbeat, session: WorkerSession) -> None:
        lease_ms = await self.store.heartbeat(beat.workflow_id, beat.task_id, session.worker_id, now_ms())
        session.outbox.put_nowait(pb.ServerMessage(heartbeat_ack=pb.HeartbeatAck(
            task_id=beat.task_id, alive=lease_ms > 0, lease_ms=lease_ms)))

    async def _result(self, result: pb.TaskResult, session: WorkerSession) -> None:
        status, output_json, reason = self._checked_result(result)
        outcome = await self.store.complete_task(result.workflow_id, result.task_id, session.worker_id, status,
                                                 output_json, reason, now_ms())
        accepted = outcome in ("OK", "DUPLICATE")
        detail = {"OK": "stored", "DUPLICATE": "same result already stored",
                  "UNKNOWN": "no such task attempt"}.get(outcome, f"attempt is {outcome.partition(':')[2]}: "
                                                                   "its lease expired or the workflow ended")
        if status != RESULT_STATUS.get(result.status) and accepted:
            detail = f"stored as {status}: {reason}"
        session.outbox.put_nowait(pb.ServerMessage(result_ack=pb.ResultAck(
            task_id=result.task_id, accepted=accepted, detail=detail)))

    def _checked_result(self, result: pb.TaskResult) -> tuple[str, str, str]:
        """A malformed or oversized output fails the attempt for good, with the reason why."""
        status = RESULT_STATUS.get(result.status)
        if status is None:
            return m.FAILED_WITH_TERMINAL_ERROR, "{}", "worker sent a result without a status"
        raw = result.output_json or b"{}"
        try:
            self.limit.check("task output", raw)
            output = json.loads(raw)
        except TooLarge as exc:
            return m.FAILED_WITH_TERMINAL_ERROR, "{}", str(exc)
        except ValueError as exc:
            return m.FAILED_WITH_TERMINAL_ERROR, "{}", f"task output is not valid JSON: {exc}"
        if not isinstance(output, dict):
            return m.FAILED_WITH_TERMINAL_ERROR, "{}", "task output must be a JSON object"
        return status, raw.decode(), result.reason


class ClusterView(Protocol):
    def cluster_status(self) -> pb.ClusterStatus: ...

    async def step_down(self) -> str: ...


class ClusterService(pb_grpc.ClusterServiceServicer):
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    @grpc_errors
    async def GetClusterStatus(self, request: pb.GetClusterStatusRequest, context: Any) -> pb.ClusterStatus:
        return await asyncio.to_thread(self.view.cluster_status)

    @grpc_errors
    async def StepDown(self, request: pb.StepDownRequest, context: Any) -> pb.StepDownResponse:
        return pb.StepDownResponse(detail=await self.view.step_down())


def _references(definition: dict[str, Any]) -> set[str]:
    return {t["taskReferenceName"] for t in iter_tasks(definition["tasks"])}


def task_def_message(definition: dict[str, Any]) -> pb.TaskDef:
    return pb.TaskDef(name=definition["name"], definition=to_struct(definition))


def workflow_def_message(definition: dict[str, Any]) -> pb.WorkflowDef:
    return pb.WorkflowDef(name=definition["name"], version=definition["version"],
                          definition=to_struct(definition))


def workflow_message(state: m.WorkflowState, *, include_tasks: bool) -> pb.Workflow:
    message = pb.Workflow(
        workflow_id=state.workflow_id, name=state.name, version=state.version, status=state.status,
        correlation_id=state.correlation_id, input=to_struct(state.input), reason=state.reason,
        created_at_ms=state.created_at_ms, updated_at_ms=state.updated_at_ms, ended_at_ms=state.ended_at_ms,
        variables=to_struct(state.variables), parent_workflow_id=state.parent.split("|", 1)[0])
    if state.output is not None:
        message.output.CopyFrom(to_struct(state.output))
    if include_tasks:
        message.tasks.extend(task_message(t) for t in state.tasks)
    return message


def task_message(task: m.TaskState) -> pb.Task:
    spec, runtime = task.spec, task.runtime
    message = pb.Task(
        task_id=spec.task_id, reference_name=spec.ref, task_type=spec.task_type, kind=spec.kind,
        status=runtime.status, attempt=spec.attempt, input=to_struct(spec.input), reason=runtime.reason,
        worker_id=runtime.worker_id, scheduled_at_ms=spec.scheduled_at_ms,
        started_at_ms=runtime.started_at_ms, ended_at_ms=runtime.ended_at_ms, key=spec.key,
        sub_workflow_id=spec.extra.get("child", ""))
    if task.output is not None:
        message.output.CopyFrom(to_struct(task.output))
    return message
