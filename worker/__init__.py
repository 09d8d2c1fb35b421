"""A small, typed SDK for the orchestrator's workers and clients.

Write handlers as plain functions, mark them with ``@task``, and run them
with a :class:`Worker`; start and inspect workflows with
:class:`WorkflowClient`::

    from worker import Worker, task, context, TerminalTaskError

    @task("capture_payment")
    async def charge(data: dict) -> dict:
        key = context().idempotency_key      # stable across retries
        ...
        return {"charged": data["amount"]}

    Worker(endpoints=["127.0.0.1:50051"], handlers=[charge]).run_sync()

Delivery is at-least-once: make handlers idempotent with
``context().idempotency_key``.
"""

from ._client import WorkflowClient
from ._context import TaskContext, context
from ._subscriber import Event, Subscriber, SubscriberStats, Subscription, subscribe
from ._task import TaskDefinition, task
from ._worker import Worker, WorkerStats
from .errors import ClientError, SDKError, TaskError, TerminalTaskError

__all__ = [
    "Worker",
    "WorkerStats",
    "task",
    "TaskDefinition",
    "context",
    "TaskContext",
    "WorkflowClient",
    "SDKError",
    "TaskError",
    "TerminalTaskError",
    "ClientError",
    "subscribe",
    "Subscriber",
    "SubscriberStats",
    "Subscription",
    "Event",
]
