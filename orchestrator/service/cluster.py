"""Who leads, and an operator's step-down.

What the cluster is made of (the election, etcd) is the node's: it hands itself in as the
`ClusterView`, whose status is in its own shape (`Status`: the gRPC API's message, which the node
builds from what etcd says)."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from .access import allowed

Status = TypeVar("Status")
Status_co = TypeVar("Status_co", covariant=True)

class ClusterView(Protocol[Status_co]):
    async def cluster_status(self) -> Status_co: ...

    async def step_down(self) -> str: ...


class Cluster(Generic[Status]):
    def __init__(self, view: ClusterView[Status]) -> None:
        self.view = view

    async def status(self) -> Status:
        """Who leads and who is there, as etcd says now."""
        allowed("ClusterService/GetClusterStatus")
        return await self.view.cluster_status()

    async def step_down(self) -> str:
        """This node hands its leadership over (FailedPrecondition when it does not lead); what it did."""
        allowed("ClusterService/StepDown")
        return await self.view.step_down()
