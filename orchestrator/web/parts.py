"""What the console is built from, handed over by `orchestrator.node`.

The web layer sits beside `orchestrator.api` and imports neither it nor the node: the node
passes in the services the gRPC API runs on (the console's operations run through the very same
calls, validation and errors included) and the one that reads the node's own parts for the
cluster page and /metrics (`NodeOverview`); the rest is the node's name and addresses, to show.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..service.cluster import NodeOverview
from ..service.metadata import Metadata
from ..service.workflows import Workflows


@dataclass
class ConsoleParts:
    node_id: str
    cluster: str
    grpc_address: str
    etcd_endpoints: list[str]
    workflows: Workflows
    metadata: Metadata
    overview: NodeOverview
    console_address: str = ""
