"""A worker's streams to several nodes at once (``Worker(streams=)``), and how its concurrency is
split among them.

Why more than one stream: a node pushes the tasks it decides only to workers connected to it; any
other node's task waits in the task type's queue until a node with a worker hears the `ready`
broadcast and claims it (a pub/sub hop and a claim's round trip). And a node that dies or freezes
takes its workers' streams with it: each reconnects elsewhere and re-sends what it had. With a
stream to several nodes, each of them hands tasks over to the worker in the call that decided
them, and a node that fails takes only its own stream: results and heartbeats go on another at
once.

What it costs, measured side by side on the bench's cluster (three nodes, two worker processes
of 32 slots, three-step no-op workflows; three streams of the split below per worker against one
stream each, 2026-12-07): one at a time, p50 per node started on, [3.72, 3.73, 4.25] ms with one
stream (the third node has no worker) against [3.84, 3.84, 3.89] with three, the same mean (4.01
vs 4.02 ms) and the closed loop's rate no better (231.8 vs 230.6, 213.3 vs 195.4 workflows/s in
two pairs of runs); at 128 in flight 10 to 13 % fewer (912 -> 824, 855 -> 747 workflows/s), the
nodes' CPU per workflow 1.28 -> 1.45 ms in one run each, most of it on the node without a worker
of its own (0.19 -> 0.36), Redis commands per workflow the same: a stream holding one slot
carries its tasks one per message, where the busy stream batches them. An even split of the slots
cost 8 % there (717 -> 658). So one stream stays the default, and more is for failover without a
reconnect.

A *link* is one slot for a stream: it holds an endpoint, keeps a stream open to it (reopening it
after a back-off when it ends) and carries the tasks that node pushes. The worker's `concurrency`
is shared: every slot is either running a task or is a credit granted on one link's stream, never
both, so no node can push more than the worker has room for. A link's *share* is what it runs
plus what it was granted. The first link whose stream is open (the first endpoint's, while it
works) is the *primary* and aims at all of the concurrency but one slot for each other link; the
others aim at one slot each. A freed slot goes back to the link whose task freed it while that
link is under its aim (the node that handed the task over decides its result and can hand the
next step over at once), otherwise to the link furthest under its aim. A stream that ends hands
its room to the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._endpoints import Backoff
from ._stream import TaskStream

__all__ = ["RESERVE", "Link", "aim", "credit_for_freed_slot", "hello_capacity", "next_endpoint", "primary"]


@dataclass(eq=False)
class Link:
    """One slot for a stream to a node."""

    endpoint: str
    backoff: Backoff
    stream: TaskStream | None = None
    granted: int = 0        # credits outstanding on `stream`: granted, no task pushed for them yet
    running: int = 0        # tasks this link's streams pushed that are running now
    connected_once: bool = False
    opened: int = 0         # streams opened so far
    resending: int = 0      # results re-sent behind the hello of `stream`

    @property
    def share(self) -> int:
        return self.granted + self.running

    @property
    def up(self) -> bool:
        """Its stream reached the node and is open: what is sent on it goes now."""
        stream = self.stream
        return stream is not None and stream.established and not stream.ended and not stream.drained

    @property
    def open(self) -> bool:
        """Its stream is being opened or is up: what is sent on it goes once it is up."""
        stream = self.stream
        return stream is not None and not stream.ended and not stream.drained


RESERVE = 1   # the slots each link but the primary aims at


def primary(links: Sequence[Link], opening: Link | None = None) -> Link | None:
    """The first link whose stream is open (being opened or up), `opening` counted as open."""
    return next((link for link in links if link.open or link is opening), None)


def aim(link: Link, links: Sequence[Link], concurrency: int, opening: Link | None = None) -> int:
    """The share `link` aims at: one slot (RESERVE) unless it is the primary, which aims at the
    rest of the concurrency once each other link whose stream is open, or not yet tried, has its
    slot (a link waiting to try again after a failure has none)."""
    if link is not primary(links, opening):
        return RESERVE
    others = sum(1 for other in links if other is not link and (other.open or other.opened == 0))
    return max(RESERVE, concurrency - RESERVE * others)


def hello_capacity(link: Link, links: Sequence[Link], concurrency: int, free: int) -> int:
    """The credits the hello of a stream `link` is opening grants: what the link aims at less
    what it runs, never more than the free slots."""
    return max(0, min(free, aim(link, links, concurrency, opening=link) - link.running))


def credit_for_freed_slot(origin: Link | None, links: Sequence[Link], concurrency: int) -> Link | None:
    """Which link a freed slot is granted on: the link whose task freed it while that link is up
    and under its aim, else the up link furthest under its aim (the first, on a tie); None when
    no stream is up (the next hello counts the slot as free)."""
    if len(links) == 1:   # one stream, the default: the hot path of every task
        return links[0] if links[0].up else None
    up = [link for link in links if link.up]
    if not up:
        return None
    if origin is not None and origin.up and origin.share < aim(origin, links, concurrency):
        return origin
    return max(up, key=lambda link: aim(link, links, concurrency) - link.share)


def next_endpoint(link: Link, endpoints: Sequence[str], links: Sequence[Link]) -> str:
    """Where a link goes after its stream ended: the next endpoint round robin that no other link
    holds; its own again when every other one is held (with a stream per node, each link stays
    with its node and reconnects when it is back)."""
    held = {other.endpoint for other in links if other is not link}
    start = endpoints.index(link.endpoint) if link.endpoint in endpoints else -1
    for step in range(1, len(endpoints) + 1):
        candidate = endpoints[(start + step) % len(endpoints)]
        if candidate not in held:
            return candidate
    return link.endpoint
