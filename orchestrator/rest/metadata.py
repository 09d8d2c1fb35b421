"""Conductor's metadata routes: task and workflow definitions (`/api/metadata/...`)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator_api.v1 import orchestrator_pb2 as pb

from ..core.definitions import MAX_VERSION, check_task_def
from ..core.namespaces import as_seen, own, qualified
from ..handlers import Context, Refused, request_namespace
from .common import RestParts, answering_errors, guarded, json_body, number, refuse
from .shapes import task_def_json, workflow_def_json

MAX_DEFINITION_BYTES = 4 * 1024 * 1024
MAX_DEFINITIONS_PER_CALL = 1000


def _source(definition: Any) -> pb.DefinitionSource:
    return pb.DefinitionSource(document=json.dumps(definition))


def _listed(body: Any, what: str) -> list[Any]:
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > MAX_DEFINITIONS_PER_CALL:
        raise Refused("INVALID_ARGUMENT", f"give from 1 to {MAX_DEFINITIONS_PER_CALL} {what}s")
    return items


def _name_of(definition: Any) -> str:
    name = definition.get("name") if isinstance(definition, dict) else None
    return repr(name[:256]) if isinstance(name, str) else "no name"


def _none_registered(problems: list[str]) -> str:
    text = " | ".join(problems)
    return "nothing was registered: " + (text if len(text) <= 4000 else text[:3997] + "...")


def routes(parts: RestParts) -> list[Route]:
    context = Context()

    async def workflow_def_problems(items: list[Any]) -> list[str]:
        problems = []
        for index, definition in enumerate(items):
            checked = await parts.metadata.ValidateWorkflowDef(
                pb.RegisterWorkflowDefRequest(source=_source(definition)), context)
            if not checked.valid:
                problems.append(f"definition {index} ({_name_of(definition)}): {'; '.join(checked.errors)}")
        return problems

    async def register_workflow_defs(body: Any) -> None:
        """All or nothing: every definition of a list is checked before the first is stored."""
        items = _listed(body, "workflow definition")
        if len(items) > 1 and (problems := await workflow_def_problems(items)):
            raise Refused("INVALID_ARGUMENT", _none_registered(problems))
        for definition in items:
            await parts.metadata.RegisterWorkflowDef(pb.RegisterWorkflowDefRequest(source=_source(definition)),
                                                     context)

    @guarded("MetadataService/RegisterWorkflowDef")
    @answering_errors
    async def create_workflow_def(request: Request) -> Response:
        """POST one definition (Conductor's create)."""
        await register_workflow_defs(await json_body(request, MAX_DEFINITION_BYTES, "a workflow definition"))
        return Response(status_code=200)

    @guarded("MetadataService/RegisterWorkflowDef")
    @answering_errors
    async def update_workflow_defs(request: Request) -> Response:
        """PUT a list of definitions (Conductor's create-or-update)."""
        await register_workflow_defs(await json_body(request, MAX_DEFINITION_BYTES, "a list of workflow definitions"))
        return Response(status_code=200)

    @guarded("MetadataService/GetWorkflowDef")
    @answering_errors
    async def get_workflow_def(request: Request) -> Response:
        name = request.path_params["name"]
        version = number(request, "version", 0, 0, MAX_VERSION)
        definition = await parts.store.get_workflow_def(qualified(request_namespace(), name), version)
        if definition is None:
            which = f"version {version} of " if version else ""
            return refuse(404, f"no {which}workflow definition named '{name[:256]}'")
        return JSONResponse(workflow_def_json(as_seen(definition)))

    @guarded("MetadataService/ListWorkflowDefs")
    @answering_errors
    async def list_workflow_defs(request: Request) -> Response:
        return JSONResponse([workflow_def_json(d) for d in own(request_namespace(), await parts.store.workflow_defs())])

    @guarded("MetadataService/RegisterTaskDef")
    @answering_errors
    async def register_task_defs(request: Request) -> Response:
        body = await json_body(request, MAX_DEFINITION_BYTES, "a task definition or a list of them")
        items = _listed(body, "task definition")
        problems = [f"definition {index} ({_name_of(item)}): {'; '.join(check_task_def(item)[1])}"
                    for index, item in enumerate(items) if isinstance(item, dict) and check_task_def(item)[1]]
        if len(items) > 1 and problems:
            raise Refused("INVALID_ARGUMENT", _none_registered(problems))
        for definition in items:
            await parts.metadata.RegisterTaskDef(pb.RegisterTaskDefRequest(source=_source(definition)), context)
        return Response(status_code=200)

    @guarded("MetadataService/GetTaskDef")
    @answering_errors
    async def get_task_def(request: Request) -> Response:
        name = request.path_params["name"]
        definition = await parts.store.get_task_def(qualified(request_namespace(), name))
        if definition is None:
            return refuse(404, f"no task definition named '{name[:256]}'")
        return JSONResponse(task_def_json(as_seen(definition)))

    @guarded("MetadataService/ListTaskDefs")
    @answering_errors
    async def list_task_defs(request: Request) -> Response:
        defs = await parts.store.task_defs()
        return JSONResponse([task_def_json(d) for d in own(request_namespace(), (defs[n] for n in sorted(defs)))])

    def not_kept(changes: str) -> Any:   # a removal changes definitions: it needs what registering needs
        @guarded(changes)
        async def not_kept(request: Request) -> Response:
            return refuse(405, "definitions are never removed here: running and archived workflows keep the version "
                               "they started with; register a new version instead")
        return not_kept

    return [
        Route("/metadata/workflow", create_workflow_def, methods=["POST"]),
        Route("/metadata/workflow", update_workflow_defs, methods=["PUT"]),
        Route("/metadata/workflow", list_workflow_defs, methods=["GET"]),
        Route("/metadata/workflow/{name}", get_workflow_def, methods=["GET"]),
        Route("/metadata/workflow/{name}/{version}", not_kept("MetadataService/RegisterWorkflowDef"),
              methods=["DELETE"]),
        Route("/metadata/taskdefs", register_task_defs, methods=["POST", "PUT"]),
        Route("/metadata/taskdefs", list_task_defs, methods=["GET"]),
        Route("/metadata/taskdefs/{name}", get_task_def, methods=["GET"]),
        Route("/metadata/taskdefs/{name}", not_kept("MetadataService/RegisterTaskDef"), methods=["DELETE"]),
    ]
