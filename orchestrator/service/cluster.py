"""Who leads, an operator's step-down, and what the console shows and changes of the cluster.

What the cluster is made of (the election, etcd) is the node's: it hands itself in as the
`ClusterView`, whose status is in its own shape (`Status`: the gRPC API's message, which the node
builds from what etcd says), and its parts as `NodeParts` for the console's overview, /metrics and
forgetting a gone member (`NodeOverview`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Generic, Protocol, TypeVar

from ..cluster.election import ElectionError
from ..cluster.etcd import EtcdError
from ..core import state as m
from ..core.errors import FailedPrecondition, Unavailable
from . import access
from .access import Rule, allowed, request_namespace, rule_of
from .errors import Refused
from .metrics import NodeReading, read_node
from .observe import ClusterSnapshot, NodeParts, Waiting, bounded, cluster_snapshot, served_here, why_waiting

Status = TypeVar("Status")
Status_co = TypeVar("Status_co", covariant=True)

# The rules of the use cases that no gRPC method stands for. /metrics names every namespace's task
# types; forgetting a member changes everyone's membership, as stepping the leader down moves everyone's.
METRICS = Rule("reader", "/metrics (every namespace's task types)", cluster_wide=True)
FORGET = replace(rule_of("ClusterService/StepDown"), what="forgetting a cluster member")


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


class NodeOverview:
    """The cluster as this node sees it (the console's cluster page, why a task waits, which task
    types its workers serve, /metrics), and an operator's forgetting of a gone member. Reads never
    fail: what did not answer is told in what is read."""

    def __init__(self, parts: NodeParts) -> None:
        self.parts = parts

    async def cluster(self) -> ClusterSnapshot:
        """Who leads, the members, Redis's and etcd's health, and the queues and workers of the
        caller's namespace (every namespace's, for the default one)."""
        allowed("ClusterService/GetClusterStatus")
        return await cluster_snapshot(self.parts, namespace=request_namespace() or None)

    async def waiting(self, state: m.WorkflowState) -> list[Waiting]:
        """Why each task of `state` that waits for a worker has not started (a workflow the caller read)."""
        allowed("WorkflowService/GetWorkflow")
        return await why_waiting(self.parts, state)

    def served(self) -> dict[str, int]:
        """How many of this node's workers serve each task type of the caller's namespace (the
        definitions page shows it beside the definitions it lists)."""
        allowed("MetadataService/ListWorkflowDefs")
        return served_here(self.parts, request_namespace())

    async def metrics(self) -> NodeReading:
        """This node's counters and the cluster-wide gauges, every namespace's."""
        access.authorize(METRICS)
        return await read_node(self.parts)

    async def forget_member(self, node_id: str) -> None:
        """Drop a gone member from the members (an operator removed the node for good): Refused
        before this node joined the election, FailedPrecondition while the member is registered,
        Unavailable when etcd did not answer (nothing changed)."""
        access.authorize(FORGET)
        election = self.parts.election()
        if election is None:
            raise Refused("UNAVAILABLE", "this node has not joined the election yet")
        try:
            await bounded(election.forget(node_id))
        except ElectionError as exc:
            raise FailedPrecondition(str(exc)) from exc
        except (EtcdError, TimeoutError) as exc:
            raise Unavailable(f"etcd did not answer ({exc}); nothing was changed.") from exc
