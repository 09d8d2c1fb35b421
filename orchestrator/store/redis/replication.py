"""Acknowledge only what N Redis replicas hold: one WAIT per round of writes, however many callers.

Redis replicates asynchronously: what the master acknowledged but had not yet sent to a replica
dies with it when that replica is promoted. With `min_replicas` N > 0 the store therefore waits,
before a write it acknowledges leaves the node (a start, a worker's result, a signal, an
operation, a published event, a definition), until N replicas hold it.

`WAIT numreplicas timeout` waits for the replication offset of the *calling connection's* last
write: on a pooled connection that wrote nothing it returns at once and proves nothing. But
replication is one ordered stream: a replica that acknowledged offset X holds everything the
master executed before X, whichever connection wrote it. So a round writes a tiny barrier key
(INCR) and WAITs on the same connection, in one pipeline; when WAIT answers >= N, every write
any connection completed before the INCR was sent is on N replicas.

Rounds are coalesced: a caller whose write has completed joins the round that has not been sent
yet (when a round is in flight, its INCR may have been sent before this caller's write completed,
so the caller waits for the next one); one round then serves every caller that joined it. Under
load that is one WAIT per batch of writes, not per call; with N = 0 there is no barrier at all.

What the barrier does not cover, on purpose: a node's own background writes (decisions, timers,
the reaper, sweeps, claims, heartbeats, event deliveries and acknowledgements) are not waited
for. Losing them in a failover is correct because the promoted replica holds a *prefix* of the
master's history (the stream is ordered): a consistent earlier state, never one with a hole, and
every confirmed event carries what redoes its consequences:
- a decision: the event that caused it (start, result, signal, operation) was stored with a
  reminder in the decide set in the same script, so the leader's sweep decides it again;
- a timer, timeout or lease expiry the leader applied: its entry is still due and fires again;
- a claim or heartbeat: the task is back in its queue (or its lease shorter); the worker's late
  result is refused (UNKNOWN/STALE) and the attempt runs again: at-least-once, as after an
  expired lease;
- an event handler's action and its record: the event's acknowledgement (XACK) comes after them
  in the stream, so it is lost too and the event is delivered again; the record keeps a repeat
  from acting twice. A subscriber's lost acknowledgement redelivers the event (at-least-once);
- the retention sweep: a lost deletion leaves the workflow to be archived again (same record);
- a raised fencing epoch: the stored epoch goes back to an older term; the current leader's
  writes still pass, and an older leader stops itself at its lease deadline (cluster/election).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from ..protocol import StoreUnavailable
from . import lean_pipeline
from .errors import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

ROUND_SLACK_S = 0.25      # on top of WAIT's own timeout, for the round trip of a round that hangs
WARN_EVERY_S = 10.0       # at most one warning this often while rounds fail


class ReplicationBarrier:
    """`await barrier.confirmed()` after a write has completed: returns once `replicas` replicas
    hold it, or raises StoreUnavailable after `timeout_ms` (the write is then stored on the
    master but not acknowledged: a retry with the same idempotency key, task attempt or event
    id changes nothing twice).

    `redis`: a client whose pool is the barrier's own (one connection is enough: rounds run one
    at a time), so a round never waits behind the node's other commands for a connection; the
    barrier keeps the connection between rounds (`lean_pipeline.PoolConnections`).

    A round proves something only about the master it ran on. Two rules keep that the master
    the callers wrote to: `timeout_ms` below Sentinel's down-after-milliseconds, so no caller
    still waits when a replica can be promoted; and, with Sentinel, a round that finds another
    master than the round before (`master_address` of its pool) confirms nothing and calls
    `on_new_master` (the store drops its connections to the old one), as the callers' writes
    may have gone to the master that was replaced."""

    def __init__(self, redis: Any, key: str, replicas: int, timeout_ms: int,
                 on_new_master: Callable[[], Awaitable[None]] | None = None) -> None:
        if replicas < 1:
            raise ValueError("a replication barrier needs at least one replica (0: use none)")
        if timeout_ms < 1:
            raise ValueError("the replica timeout must be at least 1 ms")
        self._redis = redis
        self._connections = lean_pipeline.PoolConnections(redis.connection_pool)
        self.key = key
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.on_new_master = on_new_master
        self._master: Any = None        # the master the last round ran on (Sentinel pools name it)
        # WAIT gives up a little before the caller does, so a caller that sent the round itself hears
        # how many replicas confirmed rather than cutting the round off
        self._wait_ms = max(1, timeout_ms - min(50, timeout_ms // 10))
        self._waiting: list[asyncio.Future[None]] = []   # callers of the next round (not sent yet)
        self._busy = False              # a round is in flight (sent by a caller itself, or by the driver)
        self._driver: asyncio.Task[None] | None = None
        self.rounds = 0                 # rounds sent
        self.refusals = 0               # rounds that did not reach `replicas`
        self._failing = False           # the last round failed: write first, WAIT only if that was taken
        self._warned_at = 0.0

    async def confirmed(self, where: str = "") -> None:
        """Wait until `replicas` replicas hold every write this caller completed before calling
        (`where`, the key prefix written to, matters only to a Redis Cluster: `ShardedBarrier`)."""
        try:
            # the caller's own bound: a round in flight when it joined does not add to it
            async with asyncio.timeout(self.timeout_ms / 1000):
                if not self._busy:   # no round in flight: this caller sends one itself, at once
                    await self._inline()
                else:                # one is: its INCR may predate this caller's write, so the next round
                    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._waiting.append(waiter)
                    await waiter
        except TimeoutError:
            raise StoreUnavailable(self._refusal("")) from None

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        for waiter in self._waiting:
            waiter.cancel()
        self._waiting = []

    async def _inline(self) -> None:
        self._busy = True
        try:
            error = await self._settled_round()
        finally:
            self._busy = False
            if self._waiting:   # callers that joined meanwhile: the next round, driven apart
                self._busy = True
                self._driver = asyncio.get_running_loop().create_task(self._drive())
        if error is not None:
            raise error

    async def _drive(self) -> None:
        """Send rounds while callers wait; each round serves the callers that joined before it was sent."""
        try:
            while self._waiting:
                served, self._waiting = self._waiting, []
                error = await self._settled_round()
                for waiter in served:
                    if waiter.done():   # its caller gave up (timed out, cancelled)
                        continue
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(StoreUnavailable(str(error)))
        finally:
            self._busy = False
            self._driver = None

    async def _settled_round(self) -> StoreUnavailable | None:
        """One round: None when `replicas` replicas confirmed it, else why not (logged now and then)."""
        error: StoreUnavailable | None = None
        try:
            acked = await self._round()
            if acked < self.replicas:
                error = StoreUnavailable(self._refusal(f"{acked} did"))
        except StoreUnavailable as exc:
            error = exc
        if error is not None:
            self._refused(error)
        return error

    async def _round(self) -> int:
        """INCR the barrier key and WAIT for it on the same connection; how many replicas hold it.

        Both in one pipeline (one round trip; were the connection replaced in between, WAIT would
        wait for nothing: a pipeline is sent again whole). After a failed round a lone INCR goes
        first: a master that refuses writes (min-replicas-to-write) then says so at once, instead
        of after the WAIT that the pipeline would still run."""
        self.rounds += 1
        self._failing, failing = True, self._failing   # until this round proves otherwise
        try:
            async with asyncio.timeout(self.timeout_ms / 1000 + ROUND_SLACK_S):
                if failing:
                    await self._pipeline(("INCR", self.key))
                _, acked = await self._pipeline(("INCR", self.key), ("WAIT", self.replicas, self._wait_ms))
            await self._same_master()
            self._failing = int(acked) < self.replicas
            return int(acked)
        except TimeoutError:
            return 0
        except ResponseError as exc:   # NOREPLICAS (min-replicas-to-write), READONLY (demoted master), ...
            why = str(exc).split(" script: ")[0]
            raise StoreUnavailable(self._refusal(f"the master now refuses writes: {why}")) from exc
        except REDIS_UNAVAILABLE as exc:
            why = str(exc) or type(exc).__name__
            raise StoreUnavailable(self._refusal(f"Redis did not answer: {why}")) from exc

    async def _pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The commands' replies, written at once on one connection of the barrier's pool through
        `lean_pipeline` (redis-py's Pipeline cost a round 71 microseconds of CPU, this 38, measured
        alone); an error reply raises, as redis-py's pipeline raised it."""
        return lean_pipeline.raising_errors(
            await lean_pipeline.execute_retrying(self._connections, commands, self._redis.response_callbacks))

    async def _same_master(self) -> None:
        """StoreUnavailable when this round ran on another master than the one before (a failover)."""
        master = getattr(self._redis.connection_pool, "master_address", None)
        before, self._master = self._master, master
        if before is None or master is None or master == before:
            return
        log.warning("the Redis master is now %s (was %s): writes waiting for replicas are refused once, and "
                    "connections to the old master dropped", master, before)
        if self.on_new_master is not None:
            await self.on_new_master()
        raise StoreUnavailable(self._refusal(f"the master changed from {before} to {master}: the write may have "
                                             "gone to the old one"))

    def _refused(self, error: StoreUnavailable) -> None:
        self.refusals += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("writes are not confirmed by %d Redis replica(s) (%s); callers get UNAVAILABLE until "
                        "they are (%d round(s) refused so far)", self.replicas, error, self.refusals)

    def _refusal(self, why: str) -> str:
        many = "replica" if self.replicas == 1 else "replicas"
        return (f"the write is stored on the Redis master but not confirmed by {self.replicas} {many} within "
                f"{self.timeout_ms} ms{f' ({why})' if why else ''}, so it is not acknowledged: it may be lost if "
                "the master fails now. Retry it: a start with the same idempotency key, a task result or a signal "
                "changes nothing twice")


class ShardedBarrier:
    """The barrier on a Redis Cluster: each master replicates its own writes, so a write is confirmed
    by a round on the master that took it, the one serving its partition (`where`, a key prefix):
    one `ReplicationBarrier` per master, on a connection of its own to it, with a barrier key of a
    slot that master serves. A failover gives the partition another master, hence another barrier;
    a round that meets MOVED (its key's slot was moved to another master by a reshard) is refused,
    and the master's next caller gets a barrier on a key of its own partition.

    As with Sentinel, `timeout_ms` must stay below the cluster's `cluster-node-timeout`, so that no
    caller still waits for a master's replicas when one of them can be promoted."""

    def __init__(self, master_of: Callable[[str], str], connect: Callable[[str], Any], replicas: int,
                 timeout_ms: int) -> None:
        self._master_of = master_of   # key -> "host:port" of the master serving it ('' if none does)
        self._connect = connect        # "host:port" -> a client of that one server (one connection)
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._barriers: dict[str, tuple[ReplicationBarrier, Any]] = {}
        self._retired: list[tuple[ReplicationBarrier, Any]] = []

    @property
    def rounds(self) -> int:
        return sum(barrier.rounds for barrier, _ in self._barriers.values())

    @property
    def refusals(self) -> int:
        return sum(barrier.refusals for barrier, _ in self._barriers.values())

    async def confirmed(self, where: str = "") -> None:
        master = self._master_of(where)
        if not master:
            raise StoreUnavailable(f"no Redis Cluster master serves {where} now (a failover is under way); the "
                                   "write may be stored but is not acknowledged: retry it")
        found = self._barriers.get(master)
        if found is None:
            client = self._connect(master)
            found = self._barriers[master] = (
                ReplicationBarrier(client, f"{where}:barrier", self.replicas, self.timeout_ms), client)
        try:
            await found[0].confirmed()
        except StoreUnavailable as exc:
            if "MOVED" in str(exc) and self._barriers.get(master) is found:
                self._retired.append(self._barriers.pop(master))   # closed with the store
            raise

    async def close(self) -> None:
        for barrier, client in [*self._barriers.values(), *self._retired]:
            await barrier.close()
            await client.aclose()
        self._barriers, self._retired = {}, []
