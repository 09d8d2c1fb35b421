"""What is left of calling the gRPC handlers in-process: the Conductor API still registers and
validates definitions through the gRPC MetadataService's handlers (`MetadataHandlers`) with a
context whose `abort` raises `Refused` (`Context`). Everything else runs through the services
(orchestrator/service). `serving_as` is re-exported for `orchestrator node` (cli.py), which
names its node through it."""

from __future__ import annotations

from typing import Any, NoReturn, Protocol

from orchestrator_api.v1 import orchestrator_pb2 as pb

from .service.errors import Refused, serving_as

__all__ = ["Context", "MetadataHandlers", "serving_as"]


class Context:
    """The one thing the handlers use of a gRPC servicer context: `abort`."""

    async def abort(self, code: Any, details: str = "") -> NoReturn:
        raise Refused(getattr(code, "name", str(code)), details)


class MetadataHandlers(Protocol):
    """The gRPC MetadataService handlers the Conductor API registers definitions through."""

    async def RegisterTaskDef(self, request: pb.RegisterTaskDefRequest, context: Any) -> pb.TaskDef: ...
    async def RegisterWorkflowDef(self, request: pb.RegisterWorkflowDefRequest, context: Any) -> pb.WorkflowDef: ...
    async def ValidateWorkflowDef(self, request: pb.RegisterWorkflowDefRequest,
                                  context: Any) -> pb.ValidateWorkflowDefResponse: ...
