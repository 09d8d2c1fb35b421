"""WorkflowService: the gRPC door to the workflows service (service/workflows.py)."""

from __future__ import annotations

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
from .errors import abort, grpc_errors
from .item_streams import ItemStreams


def start_request(request: pb.StartWorkflowRequest) -> StartRequest:
    return StartRequest(name=request.name, version=request.version, input=from_struct(request.input),
                        correlation_id=request.correlation_id, idempotency_key=request.idempotency_key)


class WorkflowService(pb_grpc.WorkflowServiceServicer):
    def __init__(self, workflows: Workflows, streams: ItemStreams) -> None:
        self.workflows = workflows
        self.streams = streams

    @grpc_errors
    async def StartWorkflow(self, request: pb.StartWorkflowRequest, context: Any) -> pb.StartWorkflowResponse:
        started = await self.workflows.start(start_request(request))
        return pb.StartWorkflowResponse(workflow_id=started.workflow_id, created=started.created)

    async def StartWorkflows(self, requests: AsyncIterator[pb.StartWorkflowsRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StartWorkflowsResponse]:
        """Each start of the stream as StartWorkflow, answered by its id as it is done (item_streams.py)."""
        async def start(item: pb.StartItem) -> pb.StartedItem:
            started = await self.workflows.start(start_request(item.start))
            return pb.StartedItem(id=item.id, workflow_id=started.workflow_id, created=started.created)

        async for answers in self.streams.answer_each(
                requests, context, check=self.workflows.open_start_stream, items=lambda message: message.starts,
                do=start,
                failed=lambda item, code, text: pb.StartedItem(id=item.id, code=code.value[0], message=text),
                message=lambda started: pb.StartWorkflowsResponse(started=started), what="StartWorkflows"):
            yield answers

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
