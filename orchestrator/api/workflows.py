"""WorkflowService: the gRPC door to the workflows service (service/workflows.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from orchestrator_api.structs import from_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..core.errors import OrchestratorError
from ..service.errors import Refused
from ..service.workflows import SearchQuery, Signal, StartRequest, Workflows
from ..wire import archived_message, fit, search_response, workflow_message
from .errors import abort, grpc_errors, status_of

MAX_STARTS_PER_MESSAGE = 1000
"""A StartWorkflows message with more starts is refused (INVALID_ARGUMENT), the stream with it."""
MAX_STARTS_IN_FLIGHT = 256
"""Starts of one stream being worked on at once: past them the stream is not read until one is
answered (gRPC's flow control then holds the caller back), so one caller cannot make a node hold
an unbounded number of starts."""


def start_request(request: pb.StartWorkflowRequest) -> StartRequest:
    return StartRequest(name=request.name, version=request.version, input=from_struct(request.input),
                        correlation_id=request.correlation_id, idempotency_key=request.idempotency_key)


class WorkflowService(pb_grpc.WorkflowServiceServicer):
    def __init__(self, workflows: Workflows) -> None:
        self.workflows = workflows
        self._start_readers: set[asyncio.Task[Any]] = set()   # of the StartWorkflows streams open now
        self._closing = False

    def close_start_streams(self) -> None:
        """The node is stopping: each StartWorkflows stream reads no more, answers what it read and
        ends UNAVAILABLE, so that its caller starts again on another node at once instead of waiting
        out the server's grace; a stream opened after this ends so at once."""
        self._closing = True
        for reader in self._start_readers:
            reader.cancel()

    @grpc_errors
    async def StartWorkflow(self, request: pb.StartWorkflowRequest, context: Any) -> pb.StartWorkflowResponse:
        started = await self.workflows.start(start_request(request))
        return pb.StartWorkflowResponse(workflow_id=started.workflow_id, created=started.created)

    async def StartWorkflows(self, requests: AsyncIterator[pb.StartWorkflowsRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StartWorkflowsResponse]:
        """Each start of the stream as StartWorkflow, answered as it is done: what was answered while
        a message was being written goes in the next one. The stream ends once the caller ended its
        side and every start on it was answered."""
        try:
            self.workflows.open_start_stream()
        except Refused as exc:
            await abort(context, exc)
        answers: asyncio.Queue[pb.StartedItem | None] = asyncio.Queue()
        room = asyncio.Semaphore(MAX_STARTS_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        async def start(item: pb.StartItem) -> None:
            try:
                started = await self.workflows.start(start_request(item.start))
                answers.put_nowait(pb.StartedItem(id=item.id, workflow_id=started.workflow_id,
                                                  created=started.created))
            except Exception as exc:
                code, message = status_of(exc, "StartWorkflows")
                answers.put_nowait(pb.StartedItem(id=item.id, code=code.value[0], message=message))
            finally:
                room.release()

        async def read() -> tuple[grpc.StatusCode, str] | None:
            """Start what the stream brings until it ends (None), or why it is ended here."""
            ended: tuple[grpc.StatusCode, str] | None = None
            try:
                if self._closing:
                    raise asyncio.CancelledError
                async for message in requests:
                    if len(message.starts) > MAX_STARTS_PER_MESSAGE:
                        ended = (grpc.StatusCode.INVALID_ARGUMENT,
                                 f"a StartWorkflows message holds at most {MAX_STARTS_PER_MESSAGE} starts")
                        break
                    for item in message.starts:
                        await room.acquire()
                        task = asyncio.create_task(start(item))
                        running.add(task)
                        task.add_done_callback(running.discard)
            except asyncio.CancelledError:   # close_start_streams: what was read is still answered
                ended = (grpc.StatusCode.UNAVAILABLE, "this node is stopping: start again on another one")
            try:
                await asyncio.gather(*running)
            finally:
                answers.put_nowait(None)
            return ended

        reader = asyncio.create_task(read())
        self._start_readers.add(reader)
        try:
            while True:
                batch = [await answers.get()]
                while not answers.empty():
                    batch.append(answers.get_nowait())
                answered = [item for item in batch if item is not None]
                if answered:
                    yield pb.StartWorkflowsResponse(started=answered)
                if len(answered) < len(batch):   # the reader ended
                    ended = await reader
                    if ended is not None:
                        await context.abort(*ended)
                    return
        finally:
            self._start_readers.discard(reader)
            for task in (reader, *running):
                task.cancel()

    @grpc_errors
    async def ExecuteWorkflow(self, request: pb.ExecuteWorkflowRequest, context: Any) -> pb.Workflow:
        state = await self.workflows.execute(start_request(request.start), request.wait_seconds)
        return workflow_message(state, include_tasks=True)

    @grpc_errors
    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Any) -> pb.Workflow:
        found = await self.workflows.get(request.workflow_id)
        if isinstance(found, dict):
            return fit([archived_message(found, include_tasks=request.include_tasks)])[0]
        return workflow_message(found, include_tasks=request.include_tasks)

    async def WatchWorkflow(self, request: pb.GetWorkflowRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Workflow]:
        try:
            changes = await self.workflows.watch(request.workflow_id)
        except (Refused, OrchestratorError) as exc:
            await abort(context, exc)
        async for state in changes:
            yield workflow_message(state, include_tasks=request.include_tasks)

    @grpc_errors
    async def SearchWorkflows(self, request: pb.SearchWorkflowsRequest,
                              context: Any) -> pb.SearchWorkflowsResponse:
        page = await self.workflows.search(SearchQuery(
            name=request.name, status=request.status, correlation_id=request.correlation_id,
            created_from_ms=request.created_from_ms, created_to_ms=request.created_to_ms, text=request.text,
            limit=request.limit, page_token=request.page_token))
        return search_response(page.workflows, page.next_page_token)

    @grpc_errors
    async def TerminateWorkflow(self, request: pb.TerminateWorkflowRequest,
                                context: Any) -> pb.TerminateWorkflowResponse:
        state = await self.workflows.terminate(request.workflow_id, request.reason, compensate=request.compensate)
        return pb.TerminateWorkflowResponse(workflow=workflow_message(state, include_tasks=False))

    @grpc_errors
    async def PauseWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return workflow_message(await self.workflows.pause(request.workflow_id), include_tasks=False)

    @grpc_errors
    async def ResumeWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return workflow_message(await self.workflows.resume(request.workflow_id), include_tasks=False)

    @grpc_errors
    async def RetryWorkflow(self, request: pb.WorkflowRequest, context: Any) -> pb.Workflow:
        return workflow_message(await self.workflows.retry(request.workflow_id), include_tasks=False)

    @grpc_errors
    async def RestartWorkflow(self, request: pb.RestartWorkflowRequest, context: Any) -> pb.Workflow:
        state = await self.workflows.restart(request.workflow_id,
                                             use_latest_definition=request.use_latest_definition)
        return workflow_message(state, include_tasks=False)

    @grpc_errors
    async def RerunWorkflow(self, request: pb.RerunWorkflowRequest, context: Any) -> pb.Workflow:
        task_input = from_struct(request.task_input) if request.HasField("task_input") else None
        state = await self.workflows.rerun(request.workflow_id, request.task_reference_name, task_input)
        return workflow_message(state, include_tasks=False)

    @grpc_errors
    async def SkipTask(self, request: pb.SkipTaskRequest, context: Any) -> pb.Workflow:
        state = await self.workflows.skip(request.workflow_id, request.task_reference_name)
        return workflow_message(state, include_tasks=False)

    @grpc_errors
    async def SignalTask(self, request: pb.SignalTaskRequest, context: Any) -> pb.Workflow:
        state = await self.workflows.signal(Signal(
            workflow_id=request.workflow_id, task_reference_name=request.task_reference_name,
            task_id=request.task_id, output=from_struct(request.output), failed=request.failed,
            reason=request.reason))
        return workflow_message(state, include_tasks=True)
