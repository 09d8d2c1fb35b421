"""Moving a cluster's state from the layout before partitions into the partitioned one (issue 23).

Until partitions, a cluster kept everything under `wfo:<cluster>:` on one Redis, with shared
queues, indexes and an `ended` stream for all its workflows (see `keys.py` and `scripts.py` at
efc4a61). The partitioned layout (`keys.py` now) puts each workflow, and every entry that names it,
in its partition, and the rest in the global slot. This module moves one cluster's keys from the
first to the second on the same Redis, with every node of that cluster stopped: RENAME for a key
that moves whole (a workflow's hash, definitions, topic streams with their consumer groups, keys
with a TTL keep it), member by member for a shared sorted set or set, entry by entry (same ids)
for the `ended` stream, and copies of the snapshots, the epoch, the definitions revision and the
limits into the partitions that need them.

It can be run again after an interruption: a key moved already is no longer there to move, a member
or an entry written already is written again to the same effect (or skipped), and the keys that tell
a node the old layout is there (`defs:rev`, `epoch`, `ended`) move last, just before the partition
count, which is set last of all. A `migrating` key in the global slot holds the partition count
chosen from the first run on, so that a run resumed after the last old key moved still finishes.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .keys import DEFAULT_PARTITIONS, Keys, cluster_prefix, partition_of_key

BATCH = 500   # keys, members or entries per pipeline
PROGRESS_EVERY_S = 5.0

# What an old key's name says it is: the name after `wfo:<cluster>:` -> (kind, the Redis type it must have).
# A key whose name fits no kind, or whose type is not the kind's, is left where it is (and listed).
_EXACT: dict[str, tuple[str, str]] = {
    "leases": ("task members", "zset"),
    "decide": ("workflow members", "zset"),
    "ended": ("ended stream", "stream"),
    "epoch": ("epoch", "string"),
    "defs:rev": ("definitions revision", "string"),
    "limits": ("limits", "hash"),
    "defs:task": ("global", "hash"),
    "defs:wfnames": ("global", "set"),
    "evcfg": ("global", "hash"),
    "evage": ("global", "hash"),
    "handlers": ("global", "hash"),
    "evwaits": ("global", "set"),
    "barrier": ("global", "string"),
}
_BY_HEAD: dict[str, tuple[str, str]] = {
    "q": ("task members", "zset"),
    "qd": ("task members", "zset"),
    "idx": ("workflow members", "zset"),
    "inflight": ("workflow members", "set"),
    "snap": ("snapshot", "string"),
    "idem": ("idempotency key", "string"),
    "defs:wf": ("global", "hash"),
    "inprog": ("global", "zset"),
    "rate": ("global", "zset"),
    "ev": ("global", "stream"),
    "topics": ("global", "set"),
    "groups": ("global", "set"),
    "tasklog": ("global", "list"),
    "handled": ("global", "string"),
}
_WORKFLOW = re.compile(r"^wf:\{(?P<id>[^{}]+)\}$")
# The keys whose presence tells a node the old layout is there (RedisStore.prepare): moved last.
MARKERS = ("defs:rev", "epoch", "ended")


def classify(rest: str, redis_type: str) -> str | None:
    """The kind of an old key named `wfo:<cluster>:<rest>` holding a `redis_type`, or None."""
    if _WORKFLOW.match(rest):
        return "workflow" if redis_type == "hash" else None
    found = _EXACT.get(rest)
    if found is None:
        for head, kind in _BY_HEAD.items():
            if rest.startswith(head + ":"):   # the default namespace is '': `inflight:`, `topics:`
                found = kind
                break
    if found is None or found[1] != redis_type:
        return None
    return found[0]


def _glob_escaped(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class MigrationRefused(Exception):
    """The state is not one this command may move (already partitioned, nothing to move, a node runs)."""


@dataclass
class Summary:
    """What a run moved (or, dry, would move): counts per kind, and the keys it left alone."""

    moved: Counter[str] = field(default_factory=Counter)
    unknown: list[str] = field(default_factory=list)
    partitions: int = 0
    resumed: bool = False

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would move" if dry_run else "moved"
        shown = [f"{verb} into {self.partitions} partitions" + (" (resuming an interrupted run)" if self.resumed
                                                                 else "") + ":"]
        shown += [f"  {kind}: {count}" for kind, count in self.moved.items()]
        if self.unknown:
            shown.append(f"left in place, not of the old layout ({len(self.unknown)}): "
                         + ", ".join(sorted(self.unknown)[:20]) + (" ..." if len(self.unknown) > 20 else ""))
        return shown


@dataclass
class _OldKeys:
    """The old layout's keys found by the scan, by kind (their names after the cluster's prefix)."""

    by_kind: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[str]:
        return self.by_kind.get(kind, [])

    def __bool__(self) -> bool:
        return any(self.by_kind.values())


def _batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


class Migration:
    """One run of `orchestrator migrate-state` against one Redis, for one cluster."""

    def __init__(self, client: Any, cluster: str, *, partitions: int = 0, dry_run: bool = False,
                 report: Callable[[str], None] = print) -> None:
        """`partitions`: 0 = as an interrupted run chose, else the default."""
        self._redis = client
        self._cluster = cluster
        self._old = cluster_prefix(cluster)   # the old layout's prefix: `wfo:<cluster>`
        self._asked = partitions
        # ValueError for a name or a count the new layout cannot take
        self.keys = Keys(self._old, partitions or DEFAULT_PARTITIONS)
        self._dry = dry_run
        self._report = report
        self.summary = Summary()
        self._last_progress = time.monotonic()

    @classmethod
    def from_url(cls, url: str, cluster: str, **options: Any) -> Migration:
        return cls(redis.Redis.from_url(url, decode_responses=True), cluster, **options)

    def close(self) -> None:
        self._redis.close()

    @property
    def _migrating(self) -> str:
        """The partition count an unfinished run is moving the state into."""
        return self.keys("migrating")

    # ------------------------------------------------------------- the run

    def run(self) -> Summary:
        self._check_no_node_runs()
        if self._redis.exists(self.keys.partition_count):
            raise MigrationRefused(
                f"cluster '{self._cluster}' is in the partitioned layout already ({self.keys.partition_count} = "
                f"{self._redis.get(self.keys.partition_count)}): nothing to move")
        chosen = self._settle_partitions()
        self.summary.partitions = chosen
        self.keys = Keys(self._old, chosen)
        if self._dry:
            self._report("dry run: reading only, nothing is written")
        old = self._scan()
        self.summary.unknown = old.unknown
        if not old and not self.summary.resumed:
            raise MigrationRefused(f"no state of cluster '{self._cluster}' in the layout from before partitions "
                                   f"(no key {self._old}:...): nothing to move")
        if not self._dry:
            self._redis.set(self._migrating, chosen, nx=True)
        self._snapshots(old)
        self._rename_each(old.of("workflow"), self._workflow_key, "workflow hashes, into their partitions")
        self._rename_each(old.of("idempotency key"), self._idempotency_key,
                          "idempotency keys, into their key's partition")
        self._split(old.of("task members"), "queues and leases", by_task=True)
        self._split(old.of("workflow members"), "indexes, decide and in-flight sets", by_task=False)
        self._copy_to_partitions(old.of("limits"), "limits", "hash")
        self._rename_each(old.of("limits") + old.of("global"), self.keys, "global keys, into the global slot")
        self._delete(old.of("snapshot"))
        # the keys a node recognises the old layout by, last: a node started before this run ends refuses
        self._ended(old.of("ended stream"))
        self._copy_to_partitions(old.of("epoch"), "epoch", "string")
        self._copy_to_partitions(old.of("definitions revision"), "defsrev", "string")
        self._rename_each(old.of("definitions revision"), self.keys, "global keys, into the global slot")
        self._delete(old.of("epoch"))
        if not self._dry:
            self._redis.set(self.keys.partition_count, chosen, nx=True)
            stored = int(self._redis.get(self.keys.partition_count))
            if stored != chosen:   # a node of this version started within the run's last step and set its own
                raise MigrationRefused(
                    f"{self.keys.partition_count} was set to {stored} by someone else (a node started while this "
                    f"ran?) where the state was moved into {chosen} partitions: stop every node, then set it to "
                    f"{chosen} by hand (SET {self.keys.partition_count} {chosen}) and delete {self._migrating}")
            self._redis.delete(self._migrating)
            self._report(f"partition count set: {self.keys.partition_count} = {chosen}")
        return self.summary

    def _check_no_node_runs(self) -> None:
        """A running node of the cluster listens on its channels (old layout or new): refuse then."""
        listening = [*self._redis.pubsub_channels(_glob_escaped(self._old) + ":*"),
                     *self._redis.pubsub_channels(_glob_escaped(self.keys.global_prefix) + ":*")]
        if listening:
            raise MigrationRefused(
                f"a node of cluster '{self._cluster}' seems to run (it listens on {sorted(listening)[0]}): stop every "
                "node of the cluster first; the state may only move while none runs")

    def _settle_partitions(self) -> int:
        """The partition count: the one an interrupted run chose, or the one asked for (or the default)."""
        earlier = self._redis.get(self._migrating)
        if earlier is None:
            return self._asked or DEFAULT_PARTITIONS
        self.summary.resumed = True
        if self._asked and self._asked != int(earlier):
            raise MigrationRefused(f"an interrupted run was moving this state into {earlier} partitions: run again "
                                   f"with --partitions {earlier} (or without --partitions)")
        self._report(f"resuming an interrupted run into {earlier} partitions")
        return int(earlier)

    def _scan(self) -> _OldKeys:
        """Every key of the old layout (SCAN, and TYPE in pipelines), by kind."""
        found = _OldKeys()
        head = self._old + ":"
        names = list(dict.fromkeys(self._redis.scan_iter(match=_glob_escaped(head) + "*", count=1000)))
        for batch in _batches(names):
            with self._redis.pipeline(transaction=False) as pipe:
                for name in batch:
                    pipe.type(name)
                types = pipe.execute()
            for name, redis_type in zip(batch, types):
                kind = classify(name[len(head):], redis_type)
                if kind is None:
                    found.unknown.append(name)
                else:
                    found.by_kind.setdefault(kind, []).append(name)
        self._report(f"found {len(names) - len(found.unknown)} keys of the old layout"
                     + (f" ({len(found.unknown)} others left alone)" if found.unknown else ""))
        return found

    # ------------------------------------------------------------- what moves whole

    def _workflow_key(self, rest: str) -> str:
        match = _WORKFLOW.match(rest)
        assert match is not None
        return self.keys.workflow(match["id"])

    def _idempotency_key(self, rest: str) -> str:
        key = rest[len("idem:"):]
        return self.keys.in_partition(partition_of_key(key, self.keys.partitions), "idem", key)

    def _rename_each(self, names: list[str], new_name: Callable[[str], str], kind: str) -> None:
        """RENAME each key (its TTL, and a stream's consumer groups, go with it); a key an interrupted run
        moved already is gone, so not found here."""
        head = len(self._old) + 1
        moved = 0
        for batch in _batches(names):
            if self._dry:
                moved += len(batch)
                continue
            with self._redis.pipeline(transaction=False) as pipe:
                for name in batch:
                    pipe.rename(name, new_name(name[head:]))
                replies = pipe.execute(raise_on_error=False)
            for reply in replies:
                if not isinstance(reply, Exception):
                    moved += 1
                elif "no such key" not in str(reply).lower():   # one whose TTL ran out since the scan: gone
                    raise reply
            self._progress(f"{kind}: {moved} of {len(names)}")
        self._count(kind, moved)

    def _count(self, kind: str, count: int) -> None:
        """What a step moved, in the summary and as it goes."""
        if count:
            self.summary.moved[kind] += count
            self._report(f"{kind}: {count}")

    def _progress(self, line: str) -> None:
        """A line every few seconds within a long step."""
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._report(f"  ... {line}")

    def _delete(self, names: list[str]) -> None:
        if names and not self._dry:
            for batch in _batches(names):
                self._redis.delete(*batch)

    # ------------------------------------------------------------- what is copied into partitions

    def _snapshots(self, old: _OldKeys) -> None:
        """Each definition snapshot into every partition that has a workflow referring to it (its hash's
        `snap` field), before the workflows move: a run resumed later finds the copies made."""
        wanted: set[tuple[str, int]] = set()
        head = len(self._old) + 1
        for batch in _batches(old.of("workflow")):
            with self._redis.pipeline(transaction=False) as pipe:
                for name in batch:
                    pipe.hget(name, "snap")
                digests = pipe.execute()
            for name, digest in zip(batch, digests):
                match = _WORKFLOW.match(name[head:])
                if digest and match:
                    wanted.add((digest, self.keys.partition_of(match["id"])))
        present = {name[head + len("snap:"):] for name in old.of("snapshot")}
        copies = sorted(pair for pair in wanted if pair[0] in present)
        for batch in _batches(copies):
            with self._redis.pipeline(transaction=False) as pipe:
                for digest, _ in batch:
                    pipe.get(f"{self._old}:snap:{digest}")
                texts = pipe.execute()
            if not self._dry:
                with self._redis.pipeline(transaction=False) as pipe:
                    for (digest, p), text in zip(batch, texts):
                        if text is not None:
                            pipe.set(self.keys.snapshot(p, digest), text, nx=True)
                    pipe.execute()
        self._count(f"snapshot copies, into the partitions of the workflows that run them (of {len(present)} "
                    "snapshots)", len(copies))

    def _copy_to_partitions(self, names: list[str], name_in_partition: str, redis_type: str) -> None:
        """A copy of a global value in every partition (the limits hash, the epoch, the definitions revision)."""
        for name in names:
            value = self._redis.hgetall(name) if redis_type == "hash" else self._redis.get(name)
            if not value or self._dry:
                continue
            with self._redis.pipeline(transaction=False) as pipe:
                for p in self.keys.all_partitions():
                    target = self.keys.in_partition(p, name_in_partition)
                    if redis_type == "hash":
                        pipe.hset(target, mapping=value)
                    else:
                        pipe.set(target, value)
                pipe.execute()
        self._count(f"copies of {name_in_partition}, into every partition", len(names) * self.keys.partitions)

    # ------------------------------------------------------------- what is split member by member

    def _split(self, names: list[str], kind: str, *, by_task: bool) -> None:
        """Each shared sorted set or set cut into its partitions' keys of the same name, member by member
        (`<id>` or `<id>|<task>`) with its score; the old key goes once all are written (a run resumed
        writes them again, to the same effect)."""
        head = len(self._old) + 1
        members = 0
        for done, name in enumerate(names):
            rest = name[head:]
            is_zset = rest.split(":", 1)[0] in ("q", "qd", "leases", "decide", "idx")
            for chunk in self._members(name, is_zset):
                members += len(chunk)
                self._progress(f"members of shared {kind}: {members} ({done} of {len(names)} keys done)")
                if self._dry:
                    continue
                by_partition: dict[int, list[tuple[str, float]]] = {}
                for member, score in chunk:
                    workflow_id = member.split("|", 1)[0] if by_task else member
                    by_partition.setdefault(self.keys.partition_of(workflow_id), []).append((member, score))
                with self._redis.pipeline(transaction=False) as pipe:
                    for p, entries in by_partition.items():
                        target = f"{self.keys.partition(p)}:{rest}"
                        if is_zset:
                            pipe.zadd(target, dict(entries))
                        else:
                            pipe.sadd(target, *(member for member, _ in entries))
                    pipe.execute()
            if not self._dry:
                self._redis.delete(name)
        self._count(f"shared {kind} split into their partitions' keys", len(names))
        self._count(f"members of shared {kind}", members)

    def _members(self, name: str, is_zset: bool) -> Iterator[list[tuple[str, float]]]:
        if is_zset:   # by rank: nothing changes the key while no node runs
            for first in range(0, int(self._redis.zcard(name)), BATCH):
                yield [(member, float(score)) for member, score in
                       self._redis.zrange(name, first, first + BATCH - 1, withscores=True)]
            return
        chunk: list[tuple[str, float]] = []
        for member in self._redis.sscan_iter(name, count=BATCH):
            chunk.append((member, 0.0))
            if len(chunk) >= BATCH:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _ended(self, names: list[str]) -> None:
        """The `ended` stream re-added entry by entry to its workflow's partition's stream, with its own
        id (ids only grow in each partition, as they grew in the whole); an entry a resumed run finds at or
        below a partition's last id was added already."""
        last = {p: self._last_id(p) for p in self.keys.all_partitions()} if names else {}
        entries = 0
        for name in names:
            after = "-"
            while chunk := self._redis.xrange(name, min=after, max="+", count=BATCH):
                after = "(" + chunk[-1][0]   # exclusive: from the next entry on
                entries += len(chunk)
                self._progress(f"ended stream entries: {entries}")
                if self._dry:
                    continue
                with self._redis.pipeline(transaction=False) as pipe:
                    for entry_id, fields in chunk:
                        p = self.keys.partition_of(fields.get("wf", ""))
                        if _stream_id(entry_id) > last[p]:
                            pipe.xadd(self.keys.ended(p), fields, id=entry_id)
                            last[p] = _stream_id(entry_id)
                    pipe.execute()
            if not self._dry:
                self._redis.delete(name)
        self._count("ended stream entries, into their workflow's partition's stream", entries)

    def _last_id(self, p: int) -> tuple[int, int]:
        newest = self._redis.xrevrange(self.keys.ended(p), max="+", min="-", count=1)
        return _stream_id(newest[0][0]) if newest else (0, 0)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def migrate(url: str, cluster: str, *, partitions: int = 0, dry_run: bool = False,
            report: Callable[[str], None] = print) -> Summary:
    """Move cluster `cluster`'s state at `url` into the partitioned layout (see the module's docstring)."""
    started = time.monotonic()
    migration = Migration.from_url(url, cluster, partitions=partitions, dry_run=dry_run, report=report)
    try:
        summary = migration.run()
    finally:
        migration.close()
    for line in summary.lines(dry_run):
        report(line)
    report(f"{'dry run, nothing written' if dry_run else 'done'} in {time.monotonic() - started:.1f} s")
    return summary
