"""MetadataService: the gRPC door to the definitions service (service/metadata.py)."""

from __future__ import annotations

from typing import Any

from orchestrator_api.structs import from_struct
from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..core.errors import NotFound
from ..service.metadata import Metadata, Source
from ..wire import task_def_message, workflow_def_message
from .errors import grpc_errors


def source(message: pb.DefinitionSource) -> Source:
    kind = message.WhichOneof("source")
    if kind == "definition":
        return Source("definition", definition=from_struct(message.definition))
    if kind == "document":
        return Source("document", document=message.document)
    return Source("")


class MetadataService(pb_grpc.MetadataServiceServicer):
    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    @grpc_errors
    async def RegisterTaskDef(self, request: pb.RegisterTaskDefRequest, context: Any) -> pb.TaskDef:
        return task_def_message(await self.metadata.register_task_def(source(request.source)))

    @grpc_errors
    async def GetTaskDef(self, request: pb.GetTaskDefRequest, context: Any) -> pb.TaskDef:
        definition = await self.metadata.task_def(request.name)
        if definition is None:
            raise NotFound(f"no task definition named '{request.name}'")
        return task_def_message(definition)

    @grpc_errors
    async def ListTaskDefs(self, request: pb.ListTaskDefsRequest, context: Any) -> pb.ListTaskDefsResponse:
        return pb.ListTaskDefsResponse(task_defs=[task_def_message(d) for d in await self.metadata.task_defs()])

    @grpc_errors
    async def RegisterWorkflowDef(self, request: pb.RegisterWorkflowDefRequest, context: Any) -> pb.WorkflowDef:
        return workflow_def_message(await self.metadata.register_workflow_def(source(request.source)))

    @grpc_errors
    async def ValidateWorkflowDef(self, request: pb.RegisterWorkflowDefRequest,
                                  context: Any) -> pb.ValidateWorkflowDefResponse:
        checked = await self.metadata.validate_workflow_def(source(request.source))
        if checked.definition is None:
            return pb.ValidateWorkflowDefResponse(valid=False, errors=checked.problems, warnings=checked.warnings)
        return pb.ValidateWorkflowDefResponse(valid=True, normalised=workflow_def_message(checked.definition),
                                              warnings=checked.warnings)

    @grpc_errors
    async def GetWorkflowDef(self, request: pb.GetWorkflowDefRequest, context: Any) -> pb.WorkflowDef:
        definition = await self.metadata.workflow_def(request.name, request.version)
        if definition is None:
            version = f" version {request.version}" if request.version else ""
            raise NotFound(f"no workflow definition named '{request.name}'{version}")
        return workflow_def_message(definition)

    @grpc_errors
    async def ListWorkflowDefs(self, request: pb.ListWorkflowDefsRequest,
                               context: Any) -> pb.ListWorkflowDefsResponse:
        return pb.ListWorkflowDefsResponse(workflow_defs=[workflow_def_message(d)
                                                          for d in await self.metadata.workflow_defs(request.name)])
