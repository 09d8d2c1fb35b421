"""Conductor's metadata routes: task and workflow definitions (`/api/metadata/...`)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.definitions import MAX_VERSION, check_task_def
from ..service.errors import Refused, refusing
from ..service.metadata import Source
from .common import Handler, RestParts, answering_errors, guarded, json_body, number, refuse, route
from .shapes import task_def_json, workflow_def_json

MAX_DEFINITION_BYTES = 4 * 1024 * 1024
MAX_DEFINITIONS_PER_CALL = 1000


def _source(definition: Any) -> Source:
    """A definition of the body as the API reads one (JSON text, so parsed as the API parses it)."""
    return Source("document", document=json.dumps(definition))


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


async def _workflow_def_problems(parts: RestParts, items: list[Any]) -> list[str]:
    problems = []
    for index, definition in enumerate(items):
        checked = await refusing(parts.metadata.validate_workflow_def(_source(definition)))
        if checked.problems:
            problems.append(f"definition {index} ({_name_of(definition)}): {'; '.join(checked.problems)}")
    return problems


async def _register_workflow_defs(parts: RestParts, body: Any) -> None:
    """All or nothing: every definition of a list is checked before the first is stored."""
    items = _listed(body, "workflow definition")
    if len(items) > 1 and (problems := await _workflow_def_problems(parts, items)):
        raise Refused("INVALID_ARGUMENT", _none_registered(problems))
    for definition in items:
        await refusing(parts.metadata.register_workflow_def(_source(definition)))


@guarded("MetadataService/RegisterWorkflowDef")
@answering_errors
async def create_workflow_def(parts: RestParts, request: Request) -> Response:
    """POST one definition (Conductor's create)."""
    await _register_workflow_defs(parts, await json_body(request, MAX_DEFINITION_BYTES, "a workflow definition"))
    return Response(status_code=200)


@guarded("MetadataService/RegisterWorkflowDef")
@answering_errors
async def update_workflow_defs(parts: RestParts, request: Request) -> Response:
    """PUT a list of definitions (Conductor's create-or-update)."""
    await _register_workflow_defs(parts, await json_body(request, MAX_DEFINITION_BYTES,
                                                         "a list of workflow definitions"))
    return Response(status_code=200)


@guarded("MetadataService/GetWorkflowDef")
@answering_errors
async def get_workflow_def(parts: RestParts, request: Request) -> Response:
    name = request.path_params["name"]
    version = number(request, "version", 0, 0, MAX_VERSION)
    definition = await parts.metadata.workflow_def(name, version)
    if definition is None:
        which = f"version {version} of " if version else ""
        return refuse(404, f"no {which}workflow definition named '{name[:256]}'")
    return JSONResponse(workflow_def_json(definition))


@guarded("MetadataService/ListWorkflowDefs")
@answering_errors
async def list_workflow_defs(parts: RestParts, request: Request) -> Response:
    return JSONResponse([workflow_def_json(d) for d in await parts.metadata.workflow_defs()])


@guarded("MetadataService/RegisterTaskDef")
@answering_errors
async def register_task_defs(parts: RestParts, request: Request) -> Response:
    body = await json_body(request, MAX_DEFINITION_BYTES, "a task definition or a list of them")
    items = _listed(body, "task definition")
    problems = [f"definition {index} ({_name_of(item)}): {'; '.join(check_task_def(item)[1])}"
                for index, item in enumerate(items) if isinstance(item, dict) and check_task_def(item)[1]]
    if len(items) > 1 and problems:
        raise Refused("INVALID_ARGUMENT", _none_registered(problems))
    for definition in items:
        await refusing(parts.metadata.register_task_def(_source(definition)))
    return Response(status_code=200)


@guarded("MetadataService/GetTaskDef")
@answering_errors
async def get_task_def(parts: RestParts, request: Request) -> Response:
    name = request.path_params["name"]
    definition = await parts.metadata.task_def(name)
    if definition is None:
        return refuse(404, f"no task definition named '{name[:256]}'")
    return JSONResponse(task_def_json(definition))


@guarded("MetadataService/ListTaskDefs")
@answering_errors
async def list_task_defs(parts: RestParts, request: Request) -> Response:
    return JSONResponse([task_def_json(d) for d in await parts.metadata.task_defs()])


def _not_kept(changes: str) -> Handler:
    """A removal: refused, as definitions are never removed; it changes definitions, so it needs
    what registering needs (`changes`, the gRPC method)."""
    @guarded(changes)
    async def not_kept(parts: RestParts, request: Request) -> Response:
        return refuse(405, "definitions are never removed here: running and archived workflows keep the version "
                           "they started with; register a new version instead")
    return not_kept


def routes(parts: RestParts) -> list[Route]:
    return [route(parts, path, handler, methods) for path, handler, methods in (
        ("/metadata/workflow", create_workflow_def, ["POST"]),
        ("/metadata/workflow", update_workflow_defs, ["PUT"]),
        ("/metadata/workflow", list_workflow_defs, ["GET"]),
        ("/metadata/workflow/{name}", get_workflow_def, ["GET"]),
        ("/metadata/workflow/{name}/{version}", _not_kept("MetadataService/RegisterWorkflowDef"), ["DELETE"]),
        ("/metadata/taskdefs", register_task_defs, ["POST", "PUT"]),
        ("/metadata/taskdefs", list_task_defs, ["GET"]),
        ("/metadata/taskdefs/{name}", get_task_def, ["GET"]),
        ("/metadata/taskdefs/{name}", _not_kept("MetadataService/RegisterTaskDef"), ["DELETE"]),
    )]
