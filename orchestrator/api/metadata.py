"""MetadataService: task and workflow definitions.

Definitions are stored under their qualified names (core/namespaces.py) and shown relative:
the caller of a namespace registers, reads and lists only its own."""

from __future__ import annotations

from typing import Any

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..core.definitions import (check_workflow_def, normalise_task_def, normalise_workflow_def,
                                referenced_task_names, waited_topics, workflows_to_fetch)
from ..core.errors import InvalidArgument, NotFound
from ..core.namespaces import as_seen, as_stored, own, qualified, relative, topic_in
from ..service.access import request_namespace
from ..store import Store
from .auth import guarded
from .errors import grpc_errors
from ..wire import source_to_dict, task_def_message, workflow_def_message


MAX_REACHABLE_WORKFLOWS = 1000   # what one registration may look up: bounds its work


@guarded("MetadataService")   # each method refuses whom the table does not let call it, whoever calls
class MetadataService(pb_grpc.MetadataServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @grpc_errors
    async def RegisterTaskDef(self, request: pb.RegisterTaskDefRequest, context: Any) -> pb.TaskDef:
        definition = normalise_task_def(source_to_dict(request.source))
        await self.store.put_task_def(as_stored(request_namespace(), definition))
        return task_def_message(definition)

    @grpc_errors
    async def GetTaskDef(self, request: pb.GetTaskDefRequest, context: Any) -> pb.TaskDef:
        if not request.name:
            raise InvalidArgument("name is required")
        definition = await self.store.get_task_def(qualified(request_namespace(), request.name))
        if definition is None:
            raise NotFound(f"no task definition named '{request.name}'")
        return task_def_message(as_seen(definition))

    @grpc_errors
    async def ListTaskDefs(self, request: pb.ListTaskDefsRequest, context: Any) -> pb.ListTaskDefsResponse:
        defs = await self.store.task_defs()
        return pb.ListTaskDefsResponse(task_defs=[task_def_message(d) for d in own(
            request_namespace(), (defs[n] for n in sorted(defs)))])

    async def _known(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The registered task definitions `raw` names, and every registered workflow definition
        it can reach (sub-workflows and failure workflows, transitively), so that a cycle back
        to `raw` through already registered definitions is a registration error."""
        namespace = request_namespace()
        workflows: dict[str, Any] = {}
        while wanted := workflows_to_fetch(raw, workflows):
            for name in sorted(wanted)[:MAX_REACHABLE_WORKFLOWS]:
                stored = await self.store.get_workflow_def(qualified(namespace, name))
                workflows[name] = as_seen(stored) if stored is not None else None
            if len(workflows) >= MAX_REACHABLE_WORKFLOWS:
                raise InvalidArgument(f"the definition reaches more than {MAX_REACHABLE_WORKFLOWS} workflow "
                                      "definitions through sub-workflows and failure workflows")
        found = {name: d for name, d in workflows.items() if d is not None}
        task_defs = await self.store.task_defs(qualified(namespace, n) for n in referenced_task_names(raw))
        return {relative(n): as_seen(d) for n, d in task_defs.items()}, found

    @grpc_errors
    async def RegisterWorkflowDef(self, request: pb.RegisterWorkflowDefRequest, context: Any) -> pb.WorkflowDef:
        raw = source_to_dict(request.source)
        definition = normalise_workflow_def(raw, *await self._known(raw))
        namespace = request_namespace()
        # first: no event is missed once it is stored
        await self.store.watch_topics(topic_in(namespace, t) for t in waited_topics(definition))
        await self.store.put_workflow_def(as_stored(namespace, definition))
        return workflow_def_message(definition)

    @grpc_errors
    async def ValidateWorkflowDef(self, request: pb.RegisterWorkflowDefRequest,
                                  context: Any) -> pb.ValidateWorkflowDefResponse:
        raw = source_to_dict(request.source)
        definition, problems, warnings = check_workflow_def(raw, *await self._known(raw))
        if problems:
            return pb.ValidateWorkflowDefResponse(valid=False, errors=problems, warnings=warnings)
        return pb.ValidateWorkflowDefResponse(valid=True, normalised=workflow_def_message(definition),
                                              warnings=warnings)

    @grpc_errors
    async def GetWorkflowDef(self, request: pb.GetWorkflowDefRequest, context: Any) -> pb.WorkflowDef:
        if not request.name:
            raise InvalidArgument("name is required")
        if request.version < 0:
            raise InvalidArgument("version must be 0 (latest) or a positive version number")
        definition = await self.store.get_workflow_def(qualified(request_namespace(), request.name), request.version)
        if definition is None:
            version = f" version {request.version}" if request.version else ""
            raise NotFound(f"no workflow definition named '{request.name}'{version}")
        return workflow_def_message(as_seen(definition))

    @grpc_errors
    async def ListWorkflowDefs(self, request: pb.ListWorkflowDefsRequest,
                               context: Any) -> pb.ListWorkflowDefsResponse:
        namespace = request_namespace()
        defs = await self.store.workflow_defs(qualified(namespace, request.name) if request.name else "")
        return pb.ListWorkflowDefsResponse(workflow_defs=[workflow_def_message(d) for d in own(namespace, defs)])
