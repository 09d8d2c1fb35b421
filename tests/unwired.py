"""A node's services and gRPC servicers over nothing at all (no store, no cluster): what the
in-process walks of who may call what (tests/unit/api/test_roles_in_process.py,
tests/unit/service/test_service_checks.py) call. A call the checks let through fails on its first
use of the missing parts."""

from __future__ import annotations

import inspect
from typing import Any

from orchestrator import api, service
from orchestrator.core.payloads import PayloadLimit
from orchestrator.service.errors import Refused
from orchestrator_api.v1 import orchestrator_pb2 as pb

LIMIT = PayloadLimit(1024 * 1024)


class AbortingContext:
    """What a servicer uses of its gRPC context: `abort`, which raises `Refused` here."""

    async def abort(self, code: Any, details: str = "") -> None:
        raise Refused(getattr(code, "name", str(code)), details)


def services() -> dict[str, Any]:
    return {"workflows": service.Workflows(None, LIMIT, None, None),  # type: ignore[arg-type]
            "tasks": service.Tasks(None, None, LIMIT, None),  # type: ignore[arg-type]
            "metadata": service.Metadata(None),  # type: ignore[arg-type]
            "events": service.Events(None, LIMIT),  # type: ignore[arg-type]
            "cluster": service.Cluster(None)}  # type: ignore[arg-type]


def servicers() -> dict[str, Any]:
    """The gRPC servicers by service name, over `services()`."""
    over = services()
    return {"WorkflowService": api.WorkflowService(over["workflows"], api.ItemStreams()),
            "TaskService": api.TaskService(over["tasks"], None),  # type: ignore[arg-type]
            "MetadataService": api.MetadataService(over["metadata"]),
            "EventService": api.EventService(over["events"], api.ItemStreams()),
            "ClusterService": api.ClusterService(over["cluster"])}


async def refusal_of(servicer: Any, method: Any) -> str:
    """The status `method` of `servicer` refuses an empty request with ("" when it ran and answered);
    any other error of the call is raised."""
    request_type = getattr(pb, method.input_type.name)
    call = getattr(servicer, method.name)
    try:
        if method.client_streaming:
            async def requests() -> Any:
                yield request_type()
            answer = call(requests(), AbortingContext())
        else:
            answer = call(request_type(), AbortingContext())
        if inspect.isasyncgen(answer):
            async for _ in answer:
                break
        else:
            await answer
    except Refused as refused:
        return refused.code
    return ""
