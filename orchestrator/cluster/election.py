"""Leader election on etcd for asyncio: ``Session`` + ``Election`` (after etcd's
client/v3/concurrency), and ``Candidacy``, the loop a node runs to lead when it can.

Keys (``P`` is the prefix, default ``/orchestrator``), all attached to the node's lease:

- ``P/members/<node_id>``    json {node_id, address}: every running node, candidate or not.
- ``P/election/<lease hex>`` json {node_id, address, created_at_ms}: one per candidate. The key
  with the lowest create_revision leads, and that revision is the **epoch** (the fencing token:
  a new term always has a new key, so a larger epoch).
- ``P/leader``               json {node_id, address, epoch, elected_at_ms}, written by the
  winner in a transaction guarded by "my election key still has my create_revision"
  (proclaim), so a candidate whose key vanished can never proclaim.

Two records outlive the leases (no lease: they are the cluster's memory, not its state):

- ``P/seen/<node_id>``       json {node_id, address, up_since_ms, down_since_ms, detail}: every
  node seen. Written UP with its member key (one transaction); DOWN with when and how it went,
  by the node itself on a graceful stop ("stopped") or else by the leader, which notes every
  member key that goes without one ("its lease ended"). The leader forgets a member gone for
  ``GONE_KEPT_S`` and keeps at most ``GONE_KEPT_MAX`` gone ones; ``Candidacy.forget`` drops one.
- ``P/elections/<epoch>``    json {node_id, address, epoch, elected_at_ms}: every term, written
  by its winner in the proclaim transaction itself (so a term is recorded exactly when it
  begins, whoever watches); the leader keeps the newest ``ELECTIONS_KEPT``.

Safety rules, and why:

- *Safe deadline = keep-alive SEND time + ttl - margin.* etcd restarts a lease's TTL when it
  *receives* a keep-alive, which is after we sent it, so the lease lives at least until
  ``sent + ttl``. Trusting it only until ``sent + ttl - margin`` makes a leader stop before etcd
  can expire its lease and elect someone else; the margin absorbs clock-rate differences and
  the time the node needs to stop its engine. ``leadership_valid()`` compares the clock with
  that deadline on every call, so it turns false even while the event loop was stuck.
- *The deadline, not an error, ends a term.* A failed keep-alive is retried at once on the
  next endpoint (``EtcdClient`` fails over) and then with a short back-off, so losing one etcd
  member costs no leadership.
- *A lost session is never revived.* Once its deadline passed, a session is abandoned (its
  lease revoked as soon as etcd answers) and the node campaigns with a NEW lease, hence a new,
  larger epoch: a late keep-alive answer cannot extend a term that was already given up.
- *Resign and close revoke the lease.* That deletes all our keys at once, so the next
  candidate wins in milliseconds instead of a TTL. ``on_deposed`` runs first, so the engine has
  stopped before anyone else can lead.
- *No herd.* Each candidate watches only the key just ahead of its own; the leader watches its
  own key (deleted: deposed). Watches can miss events (a hung member), so a waiting candidate
  also re-reads the queue every ttl/2.
- *Never an election storm.* When etcd is unreachable the loop backs off from 50 ms, doubling
  up to ttl/2.

Client quirks kept from the thread-based version: leases have whole seconds and etcd rounds a
TTL up to ceil(1.5 * its election timeout) (2 s with a 1 s election timeout); the granted TTL is
logged when it differs. The deadline uses the smaller of the asked and granted TTLs.

Everything here runs on one asyncio event loop; nothing blocks the loop and nothing uses threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

from ..core.clock import now_ms
from .etcd import (CreateRevisionIs, Delete, EtcdClient, EtcdError, EtcdUnavailable, EventKind, Get,
                   KeyValue, Lease, LeaseNotFound, ModRevisionIs, Put)

__all__ = ["Session", "Election", "Candidacy", "State", "LeaderInfo", "MemberInfo", "GoneMember", "Roster",
           "ElectionRecord", "Candidate", "ElectionError", "SessionExpired", "read_leader", "read_members",
           "read_roster", "read_elections", "default_margin", "DEPOSED_LEASE", "DEPOSED_RESIGNED",
           "DEPOSED_CLOSING", "DEPOSED_KEY_LOST", "GONE_STOPPED", "GONE_LEASE_ENDED"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEPOSED_LEASE = "lease not renewed in time"
DEPOSED_RESIGNED = "resigned"
DEPOSED_CLOSING = "closing"
DEPOSED_KEY_LOST = "election key deleted"

_FIRST_BACKOFF = 0.05

GONE_STOPPED = "stopped"
GONE_LEASE_ENDED = "its lease ended: killed, frozen or cut off from etcd"
GONE_KEPT_S = 24 * 3600      # a member gone this long is forgotten
GONE_KEPT_MAX = 100          # at most this many gone members are remembered (the latest losses)
ELECTIONS_KEPT = 50          # terms recorded under elections/ (the newest)
ROSTER_RECHECK_S = 5.0       # the leader re-reads the members at least this often (a watch can miss)


class ElectionError(Exception):
    """Root of this module's own errors (etcd's are ``EtcdError``)."""


class SessionExpired(ElectionError):
    """The session's lease is no longer trusted (deadline passed, lease gone, or closed)."""


class State(enum.Enum):
    """What a ``Candidacy`` is doing; each transition logs one sentence."""

    FOLLOWING = "following"
    CAMPAIGNING = "campaigning"
    LEADING = "leading"
    STEPPING_DOWN = "stepping down"
    ETCD_UNREACHABLE = "etcd unreachable"


@dataclass(frozen=True)
class LeaderInfo:
    """The current leader as etcd sees it; ``epoch`` is its election key's create_revision."""

    node_id: str
    address: str
    epoch: int
    elected_at_ms: int


@dataclass(frozen=True)
class MemberInfo:
    """A running node (registered under ``prefix/members/``); ``since_ms``: when it joined (its
    first registration since its process started; 0 when no record says)."""

    node_id: str
    address: str
    since_ms: int = 0


@dataclass(frozen=True)
class GoneMember:
    """A node seen before and not registered now. ``since_ms``: when it went, as far as the
    cluster knows (0: not noted yet, e.g. while there is no leader); ``detail``: how."""

    node_id: str
    address: str
    since_ms: int
    detail: str


@dataclass(frozen=True)
class Roster:
    """The members registered now, by node_id, and the ones gone, latest loss first."""

    members: list[MemberInfo]
    gone: list[GoneMember]


@dataclass(frozen=True)
class ElectionRecord:
    """One term as its winner recorded it when it began."""

    epoch: int
    node_id: str
    address: str
    elected_at_ms: int


@dataclass(frozen=True)
class Candidate:
    """One election key: who holds it and when it was created (its place in the queue)."""

    key: str
    create_revision: int
    node_id: str
    address: str
    created_at_ms: int


def _now_ms() -> int:
    """On the cluster's clock (core/clock.py), like every other stored time: the leader compares
    a gone member's time with its own to forget it after a day."""
    return now_ms()


def _json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def default_margin(ttl: float) -> float:
    """The safety margin used unless one is given: max(0.25 s, ttl/4)."""
    return max(0.25, ttl / 4)


def _backoff(failures: int, ttl: float) -> float:
    """50 ms doubling per consecutive failure, capped at ttl/2."""
    return float(min(_FIRST_BACKOFF * 2 ** max(0, failures - 1), ttl / 2))


def _keys(prefix: str) -> tuple[str, str, str]:
    """(election prefix, leader key, members prefix) under ``prefix``."""
    root = prefix.rstrip("/")
    return f"{root}/election/", f"{root}/leader", f"{root}/members/"


def _record_keys(prefix: str) -> tuple[str, str]:
    """(seen prefix, elections prefix) under ``prefix``: the records without a lease."""
    root = prefix.rstrip("/")
    return f"{root}/seen/", f"{root}/elections/"


def _seen(node_id: str, address: str, *, up_since_ms: int, down_since_ms: int = 0, detail: str = "") -> bytes:
    return _json(node_id=node_id, address=address, up_since_ms=up_since_ms, down_since_ms=down_since_ms,
                 detail=detail)


# ====================================================================== Session

class Session:
    """A lease with its keep-alive and a ``done`` signal (etcd's ``concurrency.Session``).

    ``open()`` grants the lease and starts a background task that renews it every ttl/3,
    recording the *send* time of each renewal that succeeded. ``deadline`` is then
    ``last successful send + ttl - margin``: see the module docstring for why. ``done`` is set
    (and never cleared) once the lease is no longer trusted: the deadline passed, etcd said the
    lease is gone, or ``abandon``/``close`` was called. ``reason`` says which.
    Use ``async with Session(client, ttl=2) as session:`` or ``open()``/``close()``.
    """

    def __init__(self, client: EtcdClient, *, ttl: float = 2.0, margin: float | None = None) -> None:
        """Validate only; nothing is sent before ``open()``. ``margin`` defaults to max(0.25, ttl/4)."""
        if ttl < 1:
            raise ValueError("ttl must be at least 1 s (etcd leases have whole seconds)")
        margin = default_margin(ttl) if margin is None else margin
        if not 0 < margin < ttl - ttl / 3:
            raise ValueError("margin must be positive and leave room for a keep-alive (< 2/3 ttl)")
        self.client, self.ttl, self.margin = client, float(ttl), float(margin)
        self.done = asyncio.Event()
        self.reason: str | None = None
        self._lease: Lease | None = None
        self._last_ok_sent = 0.0
        self._keeper: asyncio.Task[None] | None = None
        self._warned = False

    @property
    def lease_id(self) -> int:
        """The lease's id; raises ElectionError before ``open()``."""
        if self._lease is None:
            raise ElectionError("session not open")
        return self._lease.id

    @property
    def deadline(self) -> float:
        """Monotonic time until which the lease is trusted (0.0 before ``open()``)."""
        if self._lease is None:
            return 0.0
        return self._last_ok_sent + min(self.ttl, float(self._lease.ttl)) - self.margin

    def valid(self) -> bool:
        """True while the lease is trusted: open, not done, before the deadline. Non-blocking."""
        return self._lease is not None and not self.done.is_set() and time.monotonic() < self.deadline

    async def open(self) -> Session:
        """Grant the lease (one round trip, with failover) and start the keep-alives.

        Raises EtcdError if etcd does not answer. Cancelling it may leave an unused lease
        behind, which expires after its TTL. A session opens once.
        """
        if self._lease is not None or self.done.is_set():
            raise ElectionError("a session opens only once")
        asked = math.ceil(self.ttl)
        sent = time.monotonic()
        lease = await self.client.grant(asked)
        if lease.ttl != asked:
            log.info("etcd granted a %ss lease for the %ss asked (it rounds up to 1.5 election timeouts)",
                     lease.ttl, asked)
        self._lease, self._last_ok_sent = lease, sent
        self._keeper = asyncio.create_task(self._keep_alive(), name=f"keep-alive {lease.id:x}")
        return self

    def abandon(self, reason: str) -> None:
        """Stop trusting the lease now: set ``done`` and stop the keep-alives. Returns at once.

        The lease itself stays in etcd until ``close()`` revokes it or it expires. Idempotent.
        """
        if self.done.is_set():
            return
        self.reason = reason
        self.done.set()
        if self._keeper is not None and self._keeper is not asyncio.current_task():
            self._keeper.cancel()
        if self._lease is not None and reason != "closed":
            log.info("lease %x abandoned: %s", self._lease.id, reason)

    async def close(self) -> bool:
        """Abandon the session, then revoke its lease so its keys vanish at once.

        Blocks for one revoke (with failover). Returns True if the lease is gone (revoked now or
        before), False if etcd did not answer: the lease then expires by itself within its TTL.
        Never raises an etcd error. Idempotent.
        """
        self.abandon("closed")
        if self._keeper is not None:
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._lease is None:
            return True
        try:
            await self.client.revoke(self._lease.id)
        except EtcdError as exc:
            log.warning("could not revoke lease %x (it expires by itself): %s", self._lease.id, exc)
            return False
        return True

    async def until_done(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``; if the session ends first, cancel it and raise SessionExpired.

        Blocks as long as ``work`` does. Cancelling the caller cancels ``work``.
        """
        if self.done.is_set():
            work.close()
            raise SessionExpired(self.reason or "session ended")
        task = asyncio.ensure_future(work)
        ender = asyncio.ensure_future(self.done.wait())
        try:
            await asyncio.wait({task, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ender.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise SessionExpired(self.reason or "session ended")
        return task.result()

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _keep_alive(self) -> None:
        """Renew every ttl/3 until abandoned; abandon the session at its deadline.

        Each renewal is bounded by the deadline (a hung etcd cannot hold it past it). A failed
        renewal (every endpoint tried) is retried after 50 ms, doubling up to ttl/6.
        """
        interval, retry = self.ttl / 3, _FIRST_BACKOFF
        due = self._last_ok_sent + interval
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                self.abandon(DEPOSED_LEASE)
                return
            if now < due:
                await asyncio.sleep(min(due, self.deadline) - now)
                continue
            if await self._renew_once(now):
                due, retry = now + interval, _FIRST_BACKOFF
            elif not self.done.is_set():
                due, retry = time.monotonic() + retry, min(2 * retry, interval / 2)
            else:
                return

    async def _renew_once(self, sent: float) -> bool:
        """Send one keep-alive; on success move the deadline to ``sent`` + ttl - margin."""
        try:
            await asyncio.wait_for(self.client.keep_alive(self.lease_id), self.deadline - sent)
        except LeaseNotFound:
            self.abandon("lease not found in etcd")
            return False
        except (EtcdError, TimeoutError) as exc:
            (log.debug if self._warned else log.warning)("keep-alive of lease %x failed: %s",
                                                         self.lease_id, str(exc) or "timed out")
            self._warned = True
            return False
        self._warned = False
        if sent < self.deadline and not self.done.is_set():  # never revive a lost session
            self._last_ok_sent = max(self._last_ok_sent, sent)
        return True


# ====================================================================== reads

async def read_leader(client: EtcdClient, prefix: str) -> LeaderInfo | None:
    """The leader under ``prefix``: the election key with the lowest create_revision, or None.

    Blocks one round trip (one transaction, so a consistent view); raises EtcdError.
    ``elected_at_ms`` comes from ``prefix/leader`` once the winner proclaimed, else from its
    key's creation.
    """
    info, _ = await _read_leader(client, prefix)
    return info


async def _read_leader(client: EtcdClient, prefix: str) -> tuple[LeaderInfo | None, int]:
    election_prefix, leader_key, _ = _keys(prefix)
    result = await client.txn([], [Get(election_prefix, prefix=True, sort_by_create=True),
                                   Get(leader_key)])
    keys, proclaimed = result.results
    candidates = [c for kv in keys if (c := _genuine(kv)) is not None]
    if not candidates:
        return None, result.revision
    head = candidates[0]
    elected_at = head.created_at_ms
    if proclaimed:
        doc = json.loads(proclaimed[0].value)
        if doc.get("epoch") == head.create_revision:
            elected_at = int(doc.get("elected_at_ms", elected_at))
    return LeaderInfo(head.node_id, head.address, head.create_revision, elected_at), result.revision


async def read_members(client: EtcdClient, prefix: str) -> list[MemberInfo]:
    """Every registered node under ``prefix``, sorted by node_id. Blocks one round trip; EtcdError."""
    return (await read_roster(client, prefix)).members


async def read_roster(client: EtcdClient, prefix: str) -> Roster:
    """The registered nodes and the ones seen before and gone (see the module docstring), in one
    consistent read. Blocks one round trip; raises EtcdError."""
    live, seen, _ = await _read_roster(client, prefix)
    members, gone = [], []
    for node_id in sorted(set(live) | set(seen)):
        record = seen.get(node_id, (None, {}))[1]
        if node_id in live:
            members.append(MemberInfo(node_id, live[node_id]["address"], int(record.get("up_since_ms", 0))))
        else:
            gone.append(GoneMember(node_id, record["address"], int(record.get("down_since_ms", 0)),
                                   str(record.get("detail", ""))))
    gone.sort(key=lambda g: g.since_ms or _now_ms(), reverse=True)   # not noted yet: just now
    return Roster(members, gone)


async def _read_roster(client: EtcdClient, prefix: str) -> tuple[dict[str, dict[str, Any]],
                                                                  dict[str, tuple[KeyValue, dict[str, Any]]], int]:
    """({node_id: member document} of the registered nodes, {node_id: (key, record)} of the seen
    ones, the revision read)."""
    _, _, members_prefix = _keys(prefix)
    seen_prefix, _ = _record_keys(prefix)
    result = await client.txn([], [Get(members_prefix, prefix=True), Get(seen_prefix, prefix=True)])
    member_kvs, seen_kvs = result.results
    live = {}
    for kv in member_kvs:   # like candidates: only keys a live node's lease holds, in our format
        doc = _document(kv.value) if kv.lease else None
        if doc is not None and kv.key == f"{members_prefix}{doc['node_id']}":
            live[doc["node_id"]] = doc
    seen = {}
    for kv in seen_kvs:     # and only records in our format, under their node's own name
        doc = _document(kv.value)
        if doc is not None and kv.key == f"{seen_prefix}{doc['node_id']}" and _times_ok(doc):
            seen[doc["node_id"]] = (kv, doc)
    return live, seen, result.revision


def _times_ok(doc: dict[str, Any]) -> bool:
    return all(isinstance(doc.get(name, 0), int) and doc.get(name, 0) >= 0
               for name in ("up_since_ms", "down_since_ms")) and isinstance(doc.get("detail", ""), str)


async def read_elections(client: EtcdClient, prefix: str) -> list[ElectionRecord]:
    """The terms recorded by their winners, newest first (at most ``ELECTIONS_KEPT``, a few more
    until the leader prunes). Blocks one round trip; raises EtcdError."""
    _, elections_prefix = _record_keys(prefix)
    found = await client.get(Get(elections_prefix, prefix=True))
    records = []
    for kv in found.kvs:
        doc = _document(kv.value)
        epoch = doc.get("epoch") if doc is not None else None
        if (doc is not None and isinstance(epoch, int) and kv.key == f"{elections_prefix}{epoch:020d}"
                and isinstance(doc.get("elected_at_ms"), int)):
            records.append(ElectionRecord(epoch, doc["node_id"], doc["address"], doc["elected_at_ms"]))
    return sorted(records, key=lambda r: r.epoch, reverse=True)


def _candidate(key: str, create_revision: int, value: bytes) -> Candidate:
    doc = json.loads(value)
    return Candidate(key, create_revision, doc.get("node_id", "?"), doc.get("address", ""),
                     int(doc.get("created_at_ms", 0)))


def _document(value: bytes) -> dict[str, Any] | None:
    """A node's own JSON (node_id and address as text, a node id without '/'), or None."""
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    if (not isinstance(doc, dict) or not isinstance(doc.get("node_id"), str) or not doc["node_id"]
            or "/" in doc["node_id"] or not isinstance(doc.get("address", ""), str)):
        return None
    doc.setdefault("address", "")
    return doc


def _genuine(kv: KeyValue) -> Candidate | None:
    """A candidate key as nodes write it: `<prefix>/election/<lease hex>`, held by that very lease
    (so it disappears with its node), with a node's JSON. Anything else under the prefix (a key
    planted by hand, without a lease, say) is ignored: it must not lead, nor block the queue."""
    if not kv.lease or kv.key.rsplit("/", 1)[-1] != f"{kv.lease:x}" or _document(kv.value) is None:
        return None
    try:
        return _candidate(kv.key, kv.create_revision, kv.value)
    except (ValueError, TypeError):
        return None


# ====================================================================== Election

class Election:
    """Campaign under ``prefix`` with one session's lease (etcd's ``concurrency.Election``).

    ``campaign()`` blocks until elected; ``resign()`` withdraws; ``leader()`` reads;
    ``observe()`` follows the leader; ``wait_key_lost()`` blocks a leader until its key goes.
    One Election per session; it is not safe to run two of its methods concurrently.
    """

    def __init__(self, session: Session, prefix: str, *, node_id: str, address: str) -> None:
        """Prepare; nothing is sent to etcd before ``campaign()`` or a read."""
        self.session, self.prefix = session, prefix
        self.node_id, self.address = node_id, address
        self._election_prefix, self._leader_key, _ = _keys(prefix)
        self._client = session.client
        self._key: str | None = None
        self._rev = 0
        self._proclaimed = False
        self.predecessor: Candidate | None = None  # the candidate we wait for, while we wait

    @property
    def key(self) -> str | None:
        """Our election key, while we hold one."""
        return self._key

    @property
    def epoch(self) -> int:
        """Our key's create_revision (the epoch if we lead); 0 without a key."""
        return self._rev if self._key is not None else 0

    async def campaign(self, *, on_wait: Callable[[Candidate], None] | None = None) -> int:
        """Block until our key is the oldest candidate, proclaim, and return the epoch.

        Creates ``election/<lease hex>`` if absent (a new key queues behind every waiting one),
        then waits on the key just ahead of ours (a watch, plus a re-read every ttl/2) and calls
        ``on_wait(candidate)`` on the first wait of each call and whenever that one changes.
        Raises SessionExpired if the session ends first and EtcdError when etcd fails (our key
        stays: calling again resumes in place). Cancelled, it deletes our key (best effort, one
        RPC timeout at most) so that an abandoned candidate is not elected unawares, as etcd does.
        """
        self.predecessor = None
        try:
            return await self.session.until_done(self._campaign(on_wait))
        except asyncio.CancelledError:
            with contextlib.suppress(EtcdError, TimeoutError):
                await asyncio.wait_for(self.resign(), self._client.timeout)
            raise

    async def resign(self) -> None:
        """Withdraw: delete our key (and ``leader`` if we proclaimed), guarded by our key's
        create_revision so a newer term is never touched. Blocks one round trip; EtcdError."""
        if self._key is None:
            return
        ops = [Delete(self._key)] + ([Delete(self._leader_key)] if self._proclaimed else [])
        await self._client.txn([CreateRevisionIs(self._key, self._rev)], ops)
        self._forget()

    async def leader(self) -> LeaderInfo | None:
        """See ``read_leader``."""
        return await read_leader(self._client, self.prefix)

    async def observe(self) -> AsyncIterator[LeaderInfo | None]:
        """Yield the leader now and again after every change of term (None: no candidate).

        Blocks between changes (a watch on the election prefix, plus a re-read every ttl/2);
        raises EtcdError; stop it by cancelling or leaving the ``async for``.
        """
        last: tuple[str, int] | None = None
        first = True
        while True:
            info, revision = await _read_leader(self._client, self.prefix)
            term = (info.node_id, info.epoch) if info else None
            if first or term != last:
                first, last = False, term
                yield info
            await self._wait_for_change(self._election_prefix, revision, prefix=True)

    async def wait_key_lost(self) -> None:
        """Block while our key exists at our revision; return once it is deleted or replaced.

        For a leader: its term ends when its key goes. Blocks until then (one read, then a
        watch); raises EtcdError when etcd fails. It does not watch the session: race it with
        ``session.until_done``.
        """
        if self._key is None:
            return
        found = await self._client.get(Get(self._key))
        if not found.kvs or found.kvs[0].create_revision != self._rev:
            self._forget()
            return
        async with await self._client.watch(self._key, start_revision=found.revision + 1) as watch:
            async for event in watch:
                if event.kind is EventKind.DELETE:
                    self._forget()
                    return

    # ---------------------------------------------------------------- steps

    async def _campaign(self, on_wait: Callable[[Candidate], None] | None) -> int:
        while True:
            if self._key is None:
                await self._create_key()
            queue, revision = await self._queue()
            mine = [i for i, c in enumerate(queue) if (c.key, c.create_revision) == (self._key, self._rev)]
            if not mine:
                self._forget()  # our key vanished (e.g. deleted by hand): queue again
                continue
            if mine[0] == 0:
                if await self._proclaim():
                    self.predecessor = None
                    return self._rev
                self._forget()
                continue
            ahead = queue[mine[0] - 1]
            if ahead != self.predecessor:
                self.predecessor = ahead
                if on_wait is not None:
                    on_wait(ahead)
            await self._wait_for_change(ahead.key, revision)

    async def _create_key(self) -> None:
        """Create our key only if absent (a retried create finds it and adopts it)."""
        key = f"{self._election_prefix}{self.session.lease_id:x}"
        doc = _json(node_id=self.node_id, address=self.address, created_at_ms=_now_ms())
        result = await self._client.txn([CreateRevisionIs(key, 0)],
                                        [Put(key, doc, self.session.lease_id), Get(key)], [Get(key)])
        self._key, self._rev, self._proclaimed = key, result.results[-1][0].create_revision, False

    async def _queue(self) -> tuple[list[Candidate], int]:
        """Every candidate, oldest first, and the revision of the read."""
        found = await self._client.get(Get(self._election_prefix, prefix=True, sort_by_create=True))
        return [c for kv in found.kvs if (c := _genuine(kv)) is not None], found.revision

    async def _proclaim(self) -> bool:
        """Write ``leader``, and record the term under ``elections/`` (without a lease: it stays),
        only if our key still has our create_revision (else: False)."""
        doc = _json(node_id=self.node_id, address=self.address, epoch=self._rev, elected_at_ms=_now_ms())
        record = f"{_record_keys(self.prefix)[1]}{self._rev:020d}"
        result = await self._client.txn([CreateRevisionIs(self._key or "", self._rev)],
                                        [Put(self._leader_key, doc, self.session.lease_id), Put(record, doc)])
        self._proclaimed = result.succeeded
        return result.succeeded

    async def _wait_for_change(self, key: str, revision: int, *, prefix: bool = False) -> None:
        """Block until ``key`` changes after ``revision``, or for ttl/2 at most (the safety net:
        a watch on a hung member never fires)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.session.ttl / 2):
                async with await self._client.watch(key, start_revision=revision + 1, prefix=prefix) as watch:
                    await anext(watch)

    def _forget(self) -> None:
        self._key, self._rev, self._proclaimed, self.predecessor = None, 0, False, None


# ====================================================================== Candidacy

ElectedCallback = Callable[[int], Awaitable[None] | None]
DeposedCallback = Callable[[str], Awaitable[None] | None]


class Candidacy:
    """One node's membership and candidacy, kept up by a background task: the node's driver.

    The loop: open a session (a new lease), register ``members/<node_id>``, campaign, lead until
    the term ends, and start over with a new session (hence a larger epoch) after a lost one;
    back off (50 ms doubling up to ttl/2) while etcd is unreachable.

    ``on_elected(epoch)`` runs when a term starts, ``on_deposed(reason)`` when it ends (one of
    the ``DEPOSED_*`` reasons), each exactly once per term and in that order. They may be plain
    functions or coroutine functions, run on the loop's task: keep them quick (start or cancel
    the engine's task; do not run it), and never await ``resign()`` or ``close()`` in them (those
    wait for the callback: schedule them as a task instead). Before every write that needs
    leadership, check ``leadership_valid()``; ``epoch`` is the fencing token.

    Lifecycle: ``start()`` (or ``async with``), ``resign()``, ``campaign()``, ``close()``.
    """

    def __init__(self, client: EtcdClient, *, node_id: str, address: str, prefix: str = "/orchestrator",
                 ttl: float = 2.0, on_elected: ElectedCallback | None = None,
                 on_deposed: DeposedCallback | None = None, safety_margin: float | None = None) -> None:
        """Validate and prepare; nothing is sent to etcd before ``start()`` or a read.

        The caller owns ``client`` (and closes it after ``close()``). ``safety_margin`` defaults
        to max(0.25 s, ttl/4) and must stay below 2/3 of the TTL.
        """
        if not node_id or "/" in node_id:
            raise ValueError(f"node_id must be non-empty without '/': {node_id!r}")
        Session(client, ttl=ttl, margin=safety_margin)  # validates ttl and margin
        self.node_id, self.address, self.prefix, self.ttl = node_id, address, prefix, float(ttl)
        self._client, self._margin = client, safety_margin
        self._on_elected, self._on_deposed = on_elected, on_deposed
        self._member_key = f"{_keys(prefix)[2]}{node_id}"
        self._seen_key = f"{_record_keys(prefix)[0]}{node_id}"
        self._joined_ms = 0                  # the first registration of this process
        self._recorder: asyncio.Task[None] | None = None   # the leader's note of members gone
        self._session: Session | None = None
        self._election: Election | None = None
        self._member_lease: int | None = None
        self._stale: list[int] = []          # leases to revoke: abandoned while etcd was away
        self._leading, self._epoch = False, 0
        self._want_campaign = True
        self._campaign_requested = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._callback: asyncio.Task[None] | None = None
        self._control = asyncio.Lock()
        self._closing: asyncio.Task[None] | None = None
        self._state, self._status = State.CAMPAIGNING, ""

    # ---------------------------------------------------------------- public

    def start(self) -> None:
        """Start the loop as a task of the running event loop; returns at once. Idempotent."""
        if self._closing is not None:
            raise ElectionError("candidacy already closed")
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"candidacy {self.node_id}")

    def campaign(self) -> None:
        """Stand again after ``resign(rejoin=False)``; returns at once (the loop campaigns)."""
        self._want_campaign = True
        self._campaign_requested.set()

    async def resign(self, *, rejoin: bool = True) -> None:
        """Give up leadership or candidacy (the operator's "step down").

        A leader calls ``on_deposed("resigned")`` first; then the lease is revoked, so the next
        candidate takes over in milliseconds, and the node registers again with a new lease.
        With ``rejoin`` (default) it campaigns again at once, behind every waiting candidate (a
        lone node wins again, with a new epoch); with ``rejoin=False`` it stays out of the race
        until ``campaign()``. Blocks until the revoke answered (one round trip; if etcd does not
        answer, the old lease expires by itself). Cancelling the caller does not interrupt it,
        so it is safe to call from a task that ``on_deposed`` cancels.
        """
        await asyncio.shield(asyncio.ensure_future(self._resign(rejoin)))

    async def close(self) -> None:
        """Graceful stop (the SIGTERM path): stop the loop, depose (``on_deposed("closing")``),
        then revoke the lease so a follower takes over in milliseconds, not a TTL.

        Blocks until done: one round trip, or about one RPC timeout per endpoint when etcd does
        not answer. Idempotent; cancelling the caller does not interrupt it.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def __aenter__(self) -> Candidacy:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_leader(self) -> bool:
        """True from proclaim until deposition (check ``leadership_valid()`` before acting)."""
        return self._leading

    @property
    def epoch(self) -> int:
        """The fencing token of the current term; 0 when not leading."""
        return self._epoch if self._leading else 0

    @property
    def state(self) -> State:
        """What the loop is doing now."""
        return self._state

    @property
    def status(self) -> str:
        """The sentence logged at the last transition, e.g. "acquired leadership, epoch 42"."""
        return self._status

    @property
    def deadline(self) -> float:
        """Monotonic time until which the current lease is trusted (0.0 without one)."""
        return self._session.deadline if self._session is not None else 0.0

    @property
    def predecessor(self) -> Candidate | None:
        """The candidate this node waits for while following (it watches only that key)."""
        return self._election.predecessor if self._election is not None else None

    def leadership_valid(self) -> bool:
        """True only while leading and before the safe deadline: check before every engine write.

        Non-blocking. False at once when the deadline passed, even if the loop has not run since
        (a paused process, a blocked event loop).
        """
        return self._leading and self._session is not None and self._session.valid()

    async def leader(self) -> LeaderInfo | None:
        """Read the leader from etcd (see ``read_leader``). Blocks one round trip; EtcdError."""
        return await read_leader(self._client, self.prefix)

    async def members(self) -> list[MemberInfo]:
        """Every registered node, sorted by node_id. Blocks one round trip; EtcdError."""
        return await read_members(self._client, self.prefix)

    async def roster(self) -> Roster:
        """The registered nodes and those seen and gone (see ``read_roster``). One round trip; EtcdError."""
        return await read_roster(self._client, self.prefix)

    async def elections(self) -> list[ElectionRecord]:
        """The terms recorded by their winners, newest first. One round trip; EtcdError."""
        return await read_elections(self._client, self.prefix)

    async def forget(self, node_id: str) -> bool:
        """Drop the record of a gone member (an operator removed it for good): True if there was
        one. Refused (ElectionError) while the node is registered: it would only be written again.
        One round trip; EtcdError."""
        members_prefix, (seen_prefix, _) = _keys(self.prefix)[2], _record_keys(self.prefix)
        seen_key = f"{seen_prefix}{node_id}"
        result = await self._client.txn([CreateRevisionIs(f"{members_prefix}{node_id}", 0)],
                                        [Get(seen_key), Delete(seen_key)])
        if not result.succeeded:
            raise ElectionError(f"node {node_id} is registered now: only a member that is gone can be forgotten")
        if result.results[0]:
            log.info("%s: forgot member %s", self.node_id, node_id)
        return bool(result.results[0])

    # ---------------------------------------------------------------- the loop

    async def _run(self) -> None:
        """One session after another until cancelled (by ``resign`` or ``close``)."""
        failures = 0
        while True:
            try:
                session = await self._new_session()
            except EtcdError as exc:
                failures += 1
                self._etcd_failed(exc, failures)
                await asyncio.sleep(_backoff(failures, self.ttl))
                continue
            except Exception:
                failures += 1
                log.exception("%s: unexpected error opening a session (a bug)", self.node_id)
                await asyncio.sleep(_backoff(failures, self.ttl))
                continue
            failures = 0
            await self._serve(session)

    async def _new_session(self) -> Session:
        """Revoke leases abandoned earlier (so our own old key does not hold up the queue), then
        grant a new lease. Raises EtcdError."""
        while self._stale:
            await self._client.revoke(self._stale[0])
            self._stale.pop(0)
        session = await Session(self._client, ttl=self.ttl, margin=self._margin).open()
        self._session, self._member_lease = session, None
        self._election = Election(session, self.prefix, node_id=self.node_id, address=self.address)
        self._set_state(State.CAMPAIGNING, f"got lease {session.lease_id:x}")
        return session

    async def _serve(self, session: Session) -> None:
        """Run steps on one session until it ends; then depose and retire it.

        An etcd error while the lease is trusted is retried with back-off, keeping our place in
        the queue and our term: the deadline, not an error, ends a term.
        """
        failures = 0
        while not session.done.is_set():
            try:
                await self._step(session)
                failures = 0
            except SessionExpired:
                break
            except LeaseNotFound:
                session.abandon("lease not found in etcd")
            except EtcdError as exc:
                failures += 1
                self._etcd_failed(exc, failures)
                await self._pause(session, _backoff(failures, self.ttl))
            except Exception:
                failures += 1
                log.exception("%s: unexpected error in the election loop (a bug)", self.node_id)
                await self._pause(session, _backoff(failures, self.ttl))
        await self._depose(DEPOSED_LEASE, detail=session.reason)
        await self._retire(session)

    async def _step(self, session: Session) -> None:
        """One small step, chosen from what we know now."""
        election = self._election
        assert election is not None
        if self._member_lease != session.lease_id:
            await self._register(session)
        elif self._leading:
            await self._lead(session, election)
        elif not self._want_campaign:
            await self._stand_by(session)
        else:
            self._set_state(State.CAMPAIGNING, "campaigning")
            epoch = await election.campaign(on_wait=self._following)
            await self._become_leader(session, epoch)

    async def _register(self, session: Session) -> None:
        """Put ``members/<node_id>`` on this lease (gone with it) and, in the same transaction,
        ``seen/<node_id>`` UP (it stays: the cluster remembers the node once its lease is gone)."""
        self._joined_ms = self._joined_ms or _now_ms()
        doc = _json(node_id=self.node_id, address=self.address)
        await self._client.txn([], [Put(self._member_key, doc, session.lease_id),
                                    Put(self._seen_key, _seen(self.node_id, self.address,
                                                              up_since_ms=self._joined_ms))])
        self._member_lease = session.lease_id

    async def _stand_by(self, session: Session) -> None:
        """Not a candidate (resigned without rejoin): wait for ``campaign()`` or the session's end."""
        self._set_state(State.FOLLOWING, "not a candidate (resigned)")
        self._campaign_requested.clear()
        await session.until_done(self._campaign_requested.wait())

    def _following(self, ahead: Candidate) -> None:
        self._set_state(State.FOLLOWING, f"following: {ahead.node_id} (rev {ahead.create_revision}) is ahead")

    async def _become_leader(self, session: Session, epoch: int) -> None:
        """Start the term, unless the deadline passed while we proclaimed."""
        if not session.valid():
            session.abandon(DEPOSED_LEASE)
            return
        self._leading, self._epoch = True, epoch
        self._set_state(State.LEADING, f"acquired leadership, epoch {epoch}")
        self._recorder = asyncio.create_task(self._record_roster(), name=f"roster {self.node_id}")
        await self._call(self._on_elected, epoch)

    async def _lead(self, session: Session, election: Election) -> None:
        """Block until the term ends: the session's end (deadline) or our key deleted."""
        await session.until_done(election.wait_key_lost())
        if not session.valid():  # the lease expired: our keys went with it
            session.abandon(DEPOSED_LEASE)
            return
        await self._depose(DEPOSED_KEY_LOST)

    async def _depose(self, reason: str, *, detail: str | None = None) -> None:
        """End the term (at most once) and call ``on_deposed(reason)`` before anything else."""
        if not self._leading:
            return
        epoch, self._leading, self._epoch = self._epoch, False, 0
        why = reason if detail in (None, reason, "closed") else f"{reason} ({detail})"
        self._set_state(State.STEPPING_DOWN, f"lost leadership of epoch {epoch}: {why}")
        await self._call(self._on_deposed, reason)
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.cancel()
            await asyncio.gather(recorder, return_exceptions=True)

    async def _retire(self, session: Session) -> None:
        """Forget the session and revoke its lease; if etcd does not answer, revoke it later."""
        if self._session is session:
            self._session, self._election, self._member_lease = None, None, None
        self._stale.append(session.lease_id)
        if await session.close():
            self._stale.remove(session.lease_id)

    async def _pause(self, session: Session, delay: float) -> None:
        """Sleep ``delay``, waking early if the session ends."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.done.wait(), delay)

    def _etcd_failed(self, exc: EtcdError, failures: int) -> None:
        """One place for etcd errors: a leader keeps leading while its lease is trusted.

        The first failure of a streak is a warning; the rest, retried with back-off, are debug.
        """
        loud = log.warning if failures == 1 else log.debug
        if self.leadership_valid():
            loud("%s: etcd request failed while leading (%s); lease trusted until its deadline",
                 self.node_id, exc)
        elif not isinstance(exc, EtcdUnavailable):
            loud("%s: etcd request failed: %s", self.node_id, exc)
        elif self._state is State.ETCD_UNREACHABLE:
            log.debug("%s: etcd still unreachable: %s", self.node_id, exc)
        else:
            self._set_state(State.ETCD_UNREACHABLE, f"etcd unreachable: {exc}")

    # ---------------------------------------------------------------- control

    async def _resign(self, rejoin: bool) -> None:
        """Stop the loop, depose, revoke the lease, and start the loop again (a new lease)."""
        async with self._control:
            if self._closing is not None:
                return
            try:
                await self._stop_runner()
                self._set_state(State.STEPPING_DOWN, "resigning")
                await self._depose(DEPOSED_RESIGNED)
                if self._session is not None:
                    await self._retire(self._session)
                self._want_campaign = rejoin
            finally:
                if self._closing is None:
                    self.start()

    async def _close(self) -> None:
        """Stop the loop, depose, revoke the lease and any stale ones, then note in ``seen/`` that
        this node stopped (after the revoke: the next leader is not kept waiting for it); the loop
        stays stopped."""
        async with self._control:
            await self._stop_runner()
            await self._depose(DEPOSED_CLOSING)
            if self._session is not None:
                await self._retire(self._session)
            with contextlib.suppress(EtcdError):
                while self._stale:
                    await self._client.revoke(self._stale.pop(0))
            if self._joined_ms:
                try:
                    stopped = _seen(self.node_id, self.address, up_since_ms=self._joined_ms,
                                    down_since_ms=_now_ms(), detail=GONE_STOPPED)
                    await self._client.put(self._seen_key, stopped)
                except EtcdError as exc:   # the leader notes it instead, as a lease that ended
                    log.info("%s: could not note the stop in etcd: %s", self.node_id, exc)
            self._set_state(State.STEPPING_DOWN, "closed")

    # ---------------------------------------------------------------- the leader's records

    async def _record_roster(self) -> None:
        """While leading: note when each member goes (its member key vanished without a graceful
        stop), forget members gone too long or too many, and prune the recorded elections. Runs
        until the term ends (cancelled by ``_depose``); an etcd error is retried with back-off."""
        failures, pruned = 0, False
        while True:
            try:
                revision = await self._note_roster()
                if not pruned:
                    await self._prune_elections()
                    pruned = True
                failures = 0
                await self._members_changed(revision)
            except EtcdError as exc:
                failures += 1
                (log.warning if failures == 1 else log.debug)("%s: noting the members failed: %s", self.node_id, exc)
                await asyncio.sleep(_backoff(failures, self.ttl))
            except Exception:
                failures += 1
                log.exception("%s: unexpected error noting the members (a bug)", self.node_id)
                await asyncio.sleep(_backoff(failures, self.ttl))

    async def _note_roster(self) -> int:
        """One pass: returns the revision read. Every write is guarded by the record's mod
        revision, so a node registering (or noting its own stop) meanwhile always wins."""
        live, seen, revision = await _read_roster(self._client, self.prefix)
        now = _now_ms()
        gone: list[tuple[int, KeyValue]] = []
        for node_id, (kv, doc) in seen.items():
            if node_id in live:
                continue
            since = int(doc.get("down_since_ms", 0))
            if not since:
                noted = _seen(node_id, doc["address"], up_since_ms=int(doc.get("up_since_ms", 0)),
                              down_since_ms=now, detail=GONE_LEASE_ENDED)
                done = await self._client.txn([ModRevisionIs(kv.key, kv.mod_revision)], [Put(kv.key, noted)])
                if done.succeeded:
                    log.warning("%s: member %s (%s) is gone: %s", self.node_id, node_id, doc["address"],
                                GONE_LEASE_ENDED)
                continue
            gone.append((since, kv))
        gone.sort(key=lambda item: item[0], reverse=True)
        old = [kv for index, (since, kv) in enumerate(gone)
               if now - since > GONE_KEPT_S * 1000 or index >= GONE_KEPT_MAX]
        for kv in old:
            await self._client.txn([ModRevisionIs(kv.key, kv.mod_revision)], [Delete(kv.key)])
        if old:
            log.info("%s: forgot %d member(s) gone for long", self.node_id, len(old))
        return revision

    async def _prune_elections(self) -> None:
        """Keep the newest ``ELECTIONS_KEPT`` records (keys sort by epoch: zero-padded)."""
        _, elections_prefix = _record_keys(self.prefix)
        found = await self._client.get(Get(elections_prefix, prefix=True))
        keys = sorted(kv.key for kv in found.kvs)
        for start in range(0, max(0, len(keys) - ELECTIONS_KEPT), 64):   # small transactions
            await self._client.txn([], [Delete(key) for key in keys[start:min(start + 64, len(keys) - ELECTIONS_KEPT)]])

    async def _members_changed(self, revision: int) -> None:
        """Block until a member key changes after ``revision``, or ``ROSTER_RECHECK_S`` at most."""
        members_prefix = _keys(self.prefix)[2]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ROSTER_RECHECK_S):
                async with await self._client.watch(members_prefix, start_revision=revision + 1,
                                                    prefix=True) as watch:
                    await anext(watch)

    async def _stop_runner(self) -> None:
        """Cancel the loop and wait for it, and for a callback it was running (which goes on:
        ``on_elected`` always finishes before ``on_deposed`` starts)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if self._callback is not None:
            await asyncio.gather(self._callback, return_exceptions=True)

    async def _call(self, callback: Callable[[T], Awaitable[None] | None] | None, arg: T) -> None:
        """Run a user callback in its own task, shielded: cancelling the loop does not cut it short."""
        if callback is None:
            return
        self._callback = asyncio.ensure_future(self._invoke(callback, arg))
        await asyncio.shield(self._callback)

    async def _invoke(self, callback: Callable[[T], Awaitable[None] | None], arg: T) -> None:
        try:
            result = callback(arg)
            if result is not None:
                await result
        except Exception:
            log.exception("%s: election callback %r failed", self.node_id, callback)

    def _set_state(self, state: State, sentence: str) -> None:
        """Record the state; log the sentence when something changed (Patroni style)."""
        if (state, sentence) != (self._state, self._status):
            log.info("%s: %s", self.node_id, sentence)
        self._state, self._status = state, sentence
