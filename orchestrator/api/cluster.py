"""ClusterService: who leads, and an operator's step-down."""

from __future__ import annotations

from typing import Any, Protocol

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from .auth import guarded
from .errors import grpc_errors


class ClusterView(Protocol):
    async def cluster_status(self) -> pb.ClusterStatus: ...

    async def step_down(self) -> str: ...


@guarded("ClusterService")   # each method refuses whom the table does not let call it, whoever calls
class ClusterService(pb_grpc.ClusterServiceServicer):
    def __init__(self, view: ClusterView) -> None:
        self.view = view

    @grpc_errors
    async def GetClusterStatus(self, request: pb.GetClusterStatusRequest, context: Any) -> pb.ClusterStatus:
        return await self.view.cluster_status()

    @grpc_errors
    async def StepDown(self, request: pb.StepDownRequest, context: Any) -> pb.StepDownResponse:
        return pb.StepDownResponse(detail=await self.view.step_down())
