"""Every Redis key and channel name the adapter uses (the Lua scripts build the same names
from the prefix they are given; see `scripts.COMMON`)."""

from __future__ import annotations

from dataclasses import dataclass


def cluster_prefix(cluster: str) -> str:
    """The prefix of every key of the cluster named `cluster` (one Redis may hold several)."""
    return f"wfo:{cluster}"


@dataclass(frozen=True)
class Keys:
    prefix: str

    def __call__(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def workflow(self, workflow_id: str) -> str:
        """The workflow's hash; its id is a hash tag so one workflow stays on one slot."""
        return f"{self.prefix}:wf:{{{workflow_id}}}"

    @property
    def task_defs(self) -> str:
        return self("defs", "task")

    def workflow_def(self, name: str) -> str:
        return self("defs", "wf", name)

    @property
    def workflow_names(self) -> str:
        return self("defs", "wfnames")

    @property
    def defs_revision(self) -> str:
        return self("defs", "rev")

    @property
    def limits(self) -> str:
        return self("limits")

    def queue(self, task_type: str) -> str:
        return self("q", task_type)

    @property
    def leases(self) -> str:
        return self("leases")

    @property
    def decide(self) -> str:
        return self("decide")

    @property
    def ended(self) -> str:
        return self("ended")

    def events(self, topic: str) -> str:
        """A topic of the event bus: one stream."""
        return self("ev", topic)

    @property
    def topic_settings(self) -> str:
        return self("evcfg")

    @property
    def watched_topics(self) -> str:
        """The topics WAIT tasks wait on (a set)."""
        return self("evwaits")

    @property
    def topic_ages(self) -> str:
        """topic -> the age in seconds past which its events are dropped (retention by age)."""
        return self("evage")

    @property
    def event_handlers(self) -> str:
        return self("handlers")

    def in_flight(self, namespace: str) -> str:
        """The workflows of a namespace that have not ended (a set; its quota counts them)."""
        return self("inflight", namespace)

    def namespace_topics(self, namespace: str) -> str:
        """The topics a namespace has used (a set; its quota counts them)."""
        return self("topics", namespace)

    def namespace_groups(self, namespace: str) -> str:
        """A namespace's subscription groups, '<group> <topic>' (a set; its quota counts them)."""
        return self("groups", namespace)

    def handled(self, handler: str, event_id: str, action: int) -> str:
        return self("handled", handler, f"{event_id}#{action}")

    def task_log(self, task_id: str) -> str:
        """The log lines a worker sent for one task attempt (a capped list with the retention's TTL)."""
        return self("tasklog", task_id)

    def index(self, *parts: str) -> str:
        return self("idx", *parts)

    def channel(self, topic: str) -> str:
        return self(topic)

    def changed_channel(self, workflow_id: str) -> str:
        """A workflow's changes: published only while someone watches it (its `watch` field)."""
        return self("changed", workflow_id)

    def ready_channel(self, task_type: str) -> str:
        """A task type has queued work: heard by the nodes that serve the type."""
        return self("ready", task_type)

    def done_channel(self, listener: str) -> str:
        """The ends of the workflows one node's store waits for (the hash's `waiters`)."""
        return self("done", listener)
