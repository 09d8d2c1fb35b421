"""Every Redis key and channel name the adapter uses (the Lua scripts build the same names
from the prefixes they are given; see `scripts.COMMON`).

The state is cut into a fixed number of partitions (issue 23), so that it can live on a Redis
Cluster, where one script may touch the keys of one hash slot only:

- A workflow belongs to partition crc32(its root id) mod N, where the root is the id up to its
  first '.': a sub-workflow's id begins with its parent's (`<parent>.<task>.<attempt>.<hex>`), so
  a family stays in one partition and a decision changes parent and children in one script. An id
  that must land in a given partition (a start with an idempotency key, a workflow a decision
  starts) is drawn there (`draw_id`).
- Every key of partition p carries the hash tag `{<cluster>:p<p>}` (`wfo:{default:p7}:...`): the workflow hashes, the
  ready queues per task type, the leases, the decide set, the indexes, the `ended` stream, the
  workflows in flight, the definition snapshots, a copy of the fencing epoch, the idempotency
  keys (a start's key is in partition crc32(key) mod N, and so is the workflow it starts).
- Everything else (definitions, the event bus, the limits, the partition count) carries the tag
  `{<cluster>}` (`wfo:{default}:...`): one slot, never touched by a script together with partition keys.

A single Redis holds the same keys (every slot on one server); N is stored when a cluster's
state is first created and a node configured otherwise refuses to start (`RedisStore.prepare`).
Channel names are not keys (a Redis Cluster delivers a PUBLISH to every node): they keep the
global prefix.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass

DEFAULT_PARTITIONS = 64
MAX_PARTITIONS = 4096


def cluster_prefix(cluster: str) -> str:
    """The prefix of every key of the cluster named `cluster` (one Redis may hold several)."""
    return f"wfo:{cluster}"


def root_of(workflow_id: str) -> str:
    """The id a workflow's partition is computed from: its id up to the first '.'."""
    cut = workflow_id.find(".")
    return workflow_id if cut < 0 else workflow_id[:cut]


def partition_of(workflow_id: str, partitions: int) -> int:
    """The partition of a workflow (of its whole family: see the module's docstring)."""
    return zlib.crc32(root_of(workflow_id).encode()) % partitions


def partition_of_key(idempotency_key: str, partitions: int) -> int:
    """The partition an idempotency key and the workflow it starts live in."""
    return zlib.crc32(idempotency_key.encode()) % partitions


_SUFFIXES = [b"%04x" % n for n in range(1 << 16)]


def draw_id(partition: int, partitions: int) -> str:
    """A new random workflow id (32 hex digits, as uuid4().hex) in `partition`: 28 random digits and
    the first 4-digit suffix that lands there (about `partitions` crc32 steps of 4 bytes)."""
    while True:
        base = uuid.uuid4().hex[:28]
        head = zlib.crc32(base.encode())
        for suffix in _SUFFIXES:
            if zlib.crc32(suffix, head) % partitions == partition:
                return base + suffix.decode()


@dataclass(frozen=True)
class Keys:
    prefix: str
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"the key prefix {self.prefix!r} may not hold '{{' or '}}' (they mark hash tags)")
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be from 1 to {MAX_PARTITIONS}, not {self.partitions}")

    # ------------------------------------------------------------- the global slot

    def _tagged(self, tag_suffix: str) -> str:
        """The prefix with its cluster name as a hash tag (`wfo:{default}`, `wfo:{default:p7}`): keys
        still begin with `wfo:`, which ACL patterns and scans of an operator's name."""
        head, sep, name = self.prefix.partition(":")
        if not sep:
            return f"{{{self.prefix}{tag_suffix}}}"
        return f"{head}:{{{name}{tag_suffix}}}"

    @property
    def global_prefix(self) -> str:
        """The prefix of the keys outside the partitions (one hash slot)."""
        return self._tagged("")

    def __call__(self, *parts: str) -> str:
        """A key of the global slot."""
        return ":".join((self.global_prefix, *parts))

    @property
    def partition_count(self) -> str:
        """The number of partitions this cluster's state was created with (SET NX)."""
        return self("partitions")

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

    def namespace_topics(self, namespace: str) -> str:
        """The topics a namespace has used (a set; its quota counts them)."""
        return self("topics", namespace)

    def namespace_groups(self, namespace: str) -> str:
        """A namespace's subscription groups, '<group> <topic>' (a set; its quota counts them)."""
        return self("groups", namespace)

    def task_log(self, task_id: str) -> str:
        """The log lines a worker sent for one task attempt (a capped list with the retention's TTL)."""
        return self("tasklog", task_id)

    # ------------------------------------------------------------- the partitions

    def partition(self, p: int) -> str:
        """Partition p's prefix, its hash tag: also the KEYS[1] of every script run in it."""
        return self._tagged(f":p{p}")

    def partition_of(self, workflow_id: str) -> int:
        return partition_of(workflow_id, self.partitions)

    def all_partitions(self) -> range:
        return range(self.partitions)

    def workflow(self, workflow_id: str) -> str:
        """The workflow's hash."""
        return f"{self.partition(self.partition_of(workflow_id))}:wf:{workflow_id}"

    def in_partition(self, p: int, *parts: str) -> str:
        return ":".join((self.partition(p), *parts))

    def queue(self, p: int, task_type: str) -> str:
        return self.in_partition(p, "q", task_type)

    def leases(self, p: int) -> str:
        return self.in_partition(p, "leases")

    def decide(self, p: int) -> str:
        return self.in_partition(p, "decide")

    def ended(self, p: int) -> str:
        return self.in_partition(p, "ended")

    def epoch(self, p: int) -> str:
        return self.in_partition(p, "epoch")

    def index(self, p: int, *parts: str) -> str:
        return self.in_partition(p, "idx", *parts)

    def in_flight(self, p: int, namespace: str) -> str:
        """The workflows of a namespace in partition p that have not ended (a set; its quota counts
        them over every partition)."""
        return self.in_partition(p, "inflight", namespace)

    def snapshot(self, p: int, digest: str) -> str:
        return self.in_partition(p, "snap", digest)

    # ------------------------------------------------------------- channels (not keys)

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
