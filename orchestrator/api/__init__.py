"""The gRPC API: one module per service, translating requests into store calls and core
errors into status codes. No workflow logic lives here; each handler validates its input
first, so a bad request is refused with a message that says what to fix before anything
is written."""

from .auth import TokenInterceptor
from .cluster import ClusterService, ClusterView
from .events import EventService
from .item_streams import ItemStreams
from ..core.payloads import PayloadLimit
from .metadata import MetadataService
from .tasks import TaskService
from .workflows import WorkflowService

__all__ = ["ClusterService", "ClusterView", "EventService", "ItemStreams", "MetadataService", "PayloadLimit",
           "TaskService", "TokenInterceptor", "WorkflowService"]
