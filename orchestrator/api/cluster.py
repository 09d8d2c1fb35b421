"""ClusterService: the gRPC door to the cluster service (service/cluster.py)."""

from __future__ import annotations

from typing import Any

from orchestrator_api.v1 import orchestrator_pb2 as pb
from orchestrator_api.v1 import orchestrator_pb2_grpc as pb_grpc

from ..service.cluster import Cluster, ClusterView
from .errors import grpc_errors

__all__ = ["ClusterService", "ClusterView"]


class ClusterService(pb_grpc.ClusterServiceServicer):
    def __init__(self, cluster: Cluster[pb.ClusterStatus]) -> None:
        self.cluster = cluster

    @grpc_errors
    async def GetClusterStatus(self, request: pb.GetClusterStatusRequest, context: Any) -> pb.ClusterStatus:
        return await self.cluster.status()

    @grpc_errors
    async def StepDown(self, request: pb.StepDownRequest, context: Any) -> pb.StepDownResponse:
        return pb.StepDownResponse(detail=await self.cluster.step_down())
