"""Which partitions may have queued tasks of a type, as one node knows it (issue 23).

A task type has a queue in every partition. A claim must not visit all of them to find work, so
each node keeps, per type it claims, the partitions the `ready` broadcasts named (a message names
the task it queued, `<workflow id>|<task id>`, whose partition follows from the id) and forgets one
when a claim there came back short. Broadcasts are wake-ups, not a ledger (one is lost while the
subscription reconnects, and a message without a task -- a concurrency slot freed, a workflow
resumed -- names no partition): so a type is looked at whole (`RedisStore._scan_ready`, one round
trip over every partition) when it is first claimed, after such a message, after its subscription
is (re)confirmed, and at least every `rescan_s`; and on every claim while the node does not listen
to its broadcasts at all (a store used without a dispatcher: tools, tests).

A partition whose server did not answer a claim (a Redis Cluster master failing over) stays known
but goes to the end of the order for `AVOID_S`, so that the claims of the next moments are served by
the partitions that answer rather than each waiting on the one that does not.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable

RESCAN_S = 1.0
AVOID_S = 0.5


class ReadyPartitions:
    def __init__(self, partition_of: Callable[[str], int], rescan_s: float = RESCAN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._partition_of = partition_of
        self._rescan_s = rescan_s
        self._clock = clock
        self._ready: dict[str, dict[int, int]] = {}   # type -> {partition: the message count when last heard}
        self._scanned_at: dict[str, float] = {}        # type -> when it was last looked at whole
        self._heard = itertools.count(1)
        self._turn: dict[str, int] = {}                # type -> where the next claim starts (fairness)
        self._mark_at_start: dict[str, int] = {}       # type -> the message count when its whole look began
        self._listened: set[str] = set()               # types whose broadcasts this node has subscribed to
        self._avoided: dict[int, float] = {}           # partition -> until when claims ask it last (clock)

    def heard(self, task_type: str, payload: str) -> None:
        """A `ready` message for the type: the partition of the task it names, else all of them."""
        workflow_id, sep, _ = payload.partition("|")
        if not sep:
            self.forget(task_type)
            return
        self._ready.setdefault(task_type, {})[self._partition_of(workflow_id)] = next(self._heard)

    def forget(self, task_type: str) -> None:
        """Know nothing of the type: its next claim looks at every partition."""
        self._scanned_at.pop(task_type, None)

    def listening(self, task_type: str) -> None:
        """The type's broadcasts are heard from now on (its subscription is confirmed)."""
        self._listened.add(task_type)
        self.forget(task_type)

    def candidates(self, task_type: str) -> list[tuple[int, int]] | None:
        """The partitions to claim the type from, (partition, mark) in a rotating order; None when the
        type must be looked at whole first (`scanned`)."""
        at = self._scanned_at.get(task_type)
        if at is None or task_type not in self._listened or self._clock() - at >= self._rescan_s:
            return None
        return self._rotated(task_type)

    def _rotated(self, task_type: str) -> list[tuple[int, int]]:
        known = list(self._ready.get(task_type, {}).items())
        if len(known) > 1:
            turn = self._turn[task_type] = (self._turn.get(task_type, 0) + 1) % len(known)
            known = known[turn:] + known[:turn]
        if self._avoided:
            now = self._clock()
            self._avoided = {p: until for p, until in self._avoided.items() if until > now}
            known.sort(key=lambda item: item[0] in self._avoided)   # stable: the rotation stays otherwise
        return known

    def unreachable(self, partition: int) -> None:
        """A claim found the partition's server unreachable: ask it last for a while (`AVOID_S`)."""
        self._avoided[partition] = self._clock() + AVOID_S

    def scanned(self, task_type: str, partitions: Iterable[int], started_at: float) -> list[tuple[int, int]]:
        """A whole look, begun at `started_at` (the clock), found work in `partitions`: they replace
        what was known, but for partitions heard of since the look began."""
        mark = next(self._heard)
        known = {p: mark for p in partitions}
        for p, heard_at in self._ready.get(task_type, {}).items():
            if heard_at > self._mark_at_start.get(task_type, 0):
                known[p] = heard_at
        self._ready[task_type] = known
        self._scanned_at[task_type] = started_at
        return self._rotated(task_type)

    def looking(self, task_type: str) -> float:
        """A whole look at the type begins now: what is heard from now on is kept by `scanned`."""
        self._mark_at_start[task_type] = next(self._heard)
        return self._clock()

    def drained(self, task_type: str, partition: int, mark: int) -> None:
        """A claim from the partition came back short: it has nothing more for now, unless a message
        came after `mark` (the one the claim was sent with)."""
        known = self._ready.get(task_type)
        if known is not None and known.get(partition) == mark:
            del known[partition]
