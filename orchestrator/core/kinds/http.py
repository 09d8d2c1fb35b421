"""HTTP and HTTP_POLL: queued like worker tasks under their own type, and served by every
node's HTTP executor (`orchestrator.cluster.http_tasks`), or by workers of that type when the
nodes run none."""

from __future__ import annotations

from .base import Kind, always
from .checks import keep_sink
from .steps import run_on_worker

HTTP_KINDS = ("HTTP", "HTTP_POLL")

KIND = Kind(names=HTTP_KINDS, role="worker", fields=frozenset({"sink"}), validate=keep_sink, decide=run_on_worker,
            needs_every_task_def=always)   # a task definition of its name is optional
