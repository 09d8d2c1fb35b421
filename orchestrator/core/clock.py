"""The clock of every stored time: one time base for the whole cluster.

A deadline one node writes (a task's lease, a retry's back-off, a WAIT timer, a timeout) is
compared by another node, usually the leader. If each read its own wall clock, a node whose
clock ran 30 s behind would write leases that the leader found expired before they began. So
every node reads the clock of the Redis server that holds the state: `cluster/clock_sync.py`
measures it (Redis `TIME`, the sample with the shortest round trip) and anchors it here to this
process's monotonic clock. Between measurements time advances at the monotonic rate, so a step
of the node's own wall clock (NTP, a VM resumed, `date -s`) moves nothing.

Until the first measurement (and in the pure tests, which never measure) it is the wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class _Anchor:
    reference_ms: float     # the reference clock's reading ...
    monotonic_s: float      # ... at this moment of this process's monotonic clock
    offset_ms: float        # reference minus local wall clock, when measured (for reports only)


_anchor: _Anchor | None = None


def now_ms() -> int:
    """Milliseconds since the epoch on the cluster's clock: what every stored time uses."""
    anchor = _anchor
    if anchor is None:
        return int(time.time() * 1000)
    return int(anchor.reference_ms + (time.monotonic() - anchor.monotonic_s) * 1000)


def anchor_to(reference_ms: float, monotonic_s: float, wall_ms: float) -> None:
    """The reference clock read `reference_ms` at `monotonic_s` (when the wall clock said `wall_ms`)."""
    global _anchor
    _anchor = _Anchor(reference_ms, monotonic_s, reference_ms - wall_ms)


def offset_ms() -> float:
    """How far the reference clock is ahead of this node's wall clock (negative: behind)."""
    return _anchor.offset_ms if _anchor is not None else 0.0


def forget_anchor() -> None:
    """Back to the wall clock (tests)."""
    global _anchor
    _anchor = None
