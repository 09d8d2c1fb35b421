"""The use cases, once, for every door: plain Python with typed inputs and outputs (no protobuf, no
gRPC, no HTTP). The gRPC API (orchestrator/api), the Conductor REST API (orchestrator/rest) and the
console (orchestrator/web) are adapters over them: each translates its request into a service
call and the answer (or the error: service/errors.py) back into its own terms.

Each service call checks, as its first statement, that the caller may (service/access.py: the one
table of which use case needs which role, and the caller's namespace), so no door can forget it.
"""

from .access import Rule
from .cluster import Cluster, ClusterView, NodeOverview
from .counters import NodeCounters
from .errors import Refused
from .events import Events
from .metadata import Metadata
from .observe import NodeParts
from .tasks import Tasks
from .workflows import Workflows

__all__ = ["Cluster", "ClusterView", "Events", "Metadata", "NodeCounters", "NodeOverview", "NodeParts", "Refused",
           "Rule", "Tasks", "Workflows"]
