"""Leader election on etcd: etcd's concurrency.Election, written from scratch on one lease per node.

Keys (``P`` is the prefix, default ``/orchestrator``), all attached to the node's lease:

- ``P/members/<node_id>``    json {node_id, address}: every running node, candidate or not.
- ``P/election/<lease hex>`` json {node_id, address, created_at_ms}: one per candidate. The key
  with the lowest create_revision leads, and that revision is the **epoch** (the fencing token:
  a new term always has a new key, so a larger epoch).
- ``P/leader``               json {node_id, address, epoch, elected_at_ms}, written by the
  winner in a transaction guarded by "my election key still has my create_revision" (proclaim).

Safety. A keep-alive proves the lease alive until the moment it was *sent* plus the TTL
(etcd restarts the TTL when it receives it, later). The node therefore trusts its leadership
only until ``sent + ttl - margin`` (the safe deadline) and deposes itself when that passes,
before etcd can expire the lease and elect someone else. A failed keep-alive is retried at once
(on another endpoint if one is down) rather than deposing at the first error: the deadline,
not the error, is what ends a term, so losing one etcd member costs no leadership. A session
whose deadline passed is abandoned (its lease revoked as soon as etcd answers) and the node
campaigns again with a new lease, hence a new, larger epoch.

Threads. ``start()`` runs two daemon threads: the election thread (the state machine: lease,
membership, campaign, watch, lead; it calls ``on_elected`` and ``on_deposed``) and the keep-alive
thread (renews the lease every ttl/3 and records when each successful renewal was sent). The
callbacks run on the election thread and must be quick; an asyncio caller hops to its loop with
``loop.call_soon_threadsafe``. Every etcd request carries a timeout of max(0.5 s, ttl/3).

Steps. ``resign()`` and ``close()`` call ``on_deposed`` first and then revoke the lease, which
deletes all three keys at once, so the next candidate wins in milliseconds instead of a TTL;
after ``resign()`` the node registers again with a new lease and, unless ``rejoin=False``,
campaigns at once at the back of the queue. The leader watches its own election key and deposes itself if it disappears.

Client quirks handled here (pyetcd 0.0.7 against etcd 3.4): LeaseGrant wants an integer TTL,
and etcd rounds it up to ceil(1.5 * election timeout), so 2 s with a 1 s election timeout; a
failed endpoint is shunned for ``Endpoint.time_retry`` seconds (300 by default, and without
failover the client is then unusable that long), so we pass ttl/4; ``transaction`` needs
``failure=[]``, not None; ``min/max_create_revision`` are sent as ``min_mod_revision``, so we
sort the (few) election keys ourselves; a watcher dropped after an error keeps its stream (and
thread) open, so watches live on their own client, rebuilt after each error. Watches can miss
events whatever the client, so a follower also re-reads the queue every ttl/2.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import grpc
import pyetcd

__all__ = ["Election", "ElectionError", "EtcdUnavailableError", "LeaderInfo", "MemberInfo", "State",
           "DEPOSED_LEASE", "DEPOSED_RESIGNED", "DEPOSED_CLOSING", "DEPOSED_KEY_LOST"]

log = logging.getLogger(__name__)

DEPOSED_LEASE = "lease not renewed in time"
DEPOSED_RESIGNED = "resigned"
DEPOSED_CLOSING = "closing"
DEPOSED_KEY_LOST = "election key deleted"


class ElectionError(Exception):
    """Root of this module's errors."""


class EtcdUnavailableError(ElectionError):
    """No etcd endpoint answered a read in time."""


class State(enum.Enum):
    """What the election thread is doing."""

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
    """A running node (registered under ``prefix/members/``)."""

    node_id: str
    address: str


@dataclass(frozen=True)
class _Candidate:
    key: str
    create_revision: int
    node_id: str
    address: str
    created_at_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _candidate(value: bytes, meta: Any) -> _Candidate:
    doc = json.loads(value)
    return _Candidate(meta.key.decode(), meta.create_revision, doc.get("node_id", "?"),
                      doc.get("address", ""), int(doc.get("created_at_ms", 0)))


def _is_lease_gone(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.NOT_FOUND


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    # ValueError: pyetcd's "Trying to use a failed node" when failover has nowhere to go.
    return (isinstance(exc, (pyetcd.Etcd3Exception, grpc.RpcError))
            or (isinstance(exc, ValueError) and "failed node" in str(exc)))


def _connect(endpoints: list[str], timeout: float, retry_after: float) -> pyetcd.MultiEndpointEtcd3Client:
    eps = []
    for endpoint in endpoints:
        host, _, port = endpoint.split("://")[-1].rpartition(":")
        eps.append(pyetcd.Endpoint(host, int(port), secure=False, time_retry=retry_after))
    return pyetcd.MultiEndpointEtcd3Client(endpoints=eps, timeout=timeout, failover=True)


class Election:
    """One node's candidacy. Construct, ``start()``, and ``close()`` on shutdown."""

    def __init__(self, endpoints: list[str], *, node_id: str, address: str,
                 prefix: str = "/orchestrator", ttl: float = 2.0,
                 on_elected: Callable[[int], None] | None = None,
                 on_deposed: Callable[[str], None] | None = None,
                 safety_margin: float | None = None) -> None:
        """Validate and prepare; nothing is sent to etcd before ``start()`` (or a read).

        ``on_elected(epoch)`` and ``on_deposed(reason)`` are called on the election thread.
        ``safety_margin`` defaults to max(0.25 s, ttl/4).
        """
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if not node_id or "/" in node_id:
            raise ValueError(f"node_id must be non-empty without '/': {node_id!r}")
        if ttl < 1:
            raise ValueError("ttl must be at least 1 s (etcd leases have whole seconds)")
        self.node_id, self.address, self.ttl = node_id, address, float(ttl)
        self._margin = safety_margin if safety_margin is not None else max(0.25, ttl / 4)
        if not 0 < self._margin < ttl - ttl / 3:
            raise ValueError("safety_margin must be positive and leave room for a keep-alive")
        self._endpoints = list(endpoints)
        self._on_elected, self._on_deposed = on_elected, on_deposed
        prefix = prefix.rstrip("/")
        self._election_prefix = f"{prefix}/election/"
        self._member_key = f"{prefix}/members/{node_id}"
        self._members_prefix = f"{prefix}/members/"
        self._leader_key = f"{prefix}/leader"
        self._rpc_timeout = max(0.5, self.ttl / 3)
        self._client = self._new_client()       # election thread only
        self._watch_client = self._new_client() # election thread only; rebuilt after errors
        self._ka_client = self._new_client()    # keep-alive thread only
        self._query_client = self._new_client() # public reads, under _query_lock
        self._query_lock = threading.Lock()

        # Shared with the keep-alive thread and readers, under _lock.
        self._lock = threading.Lock()
        self._lease_id: int | None = None
        self._last_ok_sent = 0.0      # monotonic send time of the last keep-alive that succeeded
        self._next_keepalive = 0.0
        self._lost: str | None = None # why the current lease is no longer trusted
        self._leading = False
        self._epoch = 0

        # Election thread only.
        self._state = State.CAMPAIGNING
        self._sentence = ""
        self._my_key: str | None = None
        self._my_rev = 0
        self._member_lease: int | None = None
        self._stale_leases: list[int] = []
        self._watch_id: int | None = None
        self._watch_key: str | None = None
        self._watch_gen = 0
        self._want_campaign = False
        self._rejoin = True

        self._wake = threading.Event()
        self._ka_wake = threading.Event()
        self._watch_fired = threading.Event()
        self._resign_requested = threading.Event()
        self._resign_done = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the election and keep-alive threads and campaign; returns at once."""
        if self._closing.is_set():
            raise ElectionError("election already closed")
        if self._threads:
            return
        self._want_campaign = True
        self._threads = [threading.Thread(target=self._run, name=f"election-{self.node_id}", daemon=True),
                         threading.Thread(target=self._keepalive_loop,
                                          name=f"election-keepalive-{self.node_id}", daemon=True)]
        for thread in self._threads:
            thread.start()

    def campaign(self) -> None:
        """Become a candidate again (after ``resign``); returns at once.

        The election thread creates ``prefix/election/<lease hex>`` if absent; a new key has a
        higher create_revision than the candidates already waiting, so they win first.
        """
        self._want_campaign = True
        self._wake.set()

    def resign(self, *, rejoin: bool = True, timeout: float | None = None) -> None:
        """Give up leadership (or candidacy): the operator's "step down".

        A leader calls ``on_deposed("resigned")`` first, then revokes its lease, so the next
        candidate takes over in milliseconds; the node then registers again with a new lease.
        With ``rejoin`` (the default) it campaigns again at once: its new key is younger than
        every waiting candidate's, so they win first, and a lone node wins again with a new
        epoch. With ``rejoin=False`` it stays out of the race until ``campaign()``.
        Blocks until done or ``timeout`` (default 2 * ttl); returns at once on the election thread.
        """
        self._rejoin = rejoin
        self._resign_done.clear()
        self._resign_requested.set()
        self._wake.set()
        if threading.current_thread() not in self._threads and self._threads:
            self._resign_done.wait(timeout if timeout is not None else 2 * self.ttl)

    def close(self) -> None:
        """Stop both threads; a leader calls ``on_deposed("closing")`` then revokes its lease.

        This is the graceful SIGTERM path: followers take over in milliseconds, not a TTL.
        Blocks until the threads end (at most a few RPC timeouts). Idempotent.
        """
        self._closing.set()
        self._wake.set()
        self._ka_wake.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        if not self._threads:
            self._shutdown()
        for client in (self._client, self._watch_client, self._ka_client, self._query_client):
            client.close()

    @property
    def is_leader(self) -> bool:
        """True from proclaim until deposition (see ``leadership_valid`` before acting on it)."""
        return self._leading

    @property
    def epoch(self) -> int:
        """The fencing token of the current term; 0 when not leading."""
        with self._lock:
            return self._epoch if self._leading else 0

    @property
    def state(self) -> State:
        """The election thread's current state."""
        return self._state

    @property
    def status(self) -> str:
        """The sentence last logged at a transition, e.g. "acquired leadership, epoch 42"."""
        return self._sentence

    @property
    def deadline(self) -> float:
        """Monotonic time until which the lease is trusted (0.0 without a lease)."""
        with self._lock:
            return self._deadline_locked()

    def leadership_valid(self) -> bool:
        """True only while leading and before the safe deadline; check before every engine write.

        Thread-safe and non-blocking. False at once after a process pause past the deadline,
        even before the election thread has run again.
        """
        with self._lock:
            return self._leading and self._session_ok_locked()

    def leader(self) -> LeaderInfo | None:
        """Read the leader from etcd: the election key with the lowest create_revision.

        Blocks for one etcd round trip; raises EtcdUnavailableError. ``elected_at_ms`` comes
        from ``prefix/leader`` once the winner has proclaimed, else from its key's creation.
        """
        tx = self._query_client.transactions
        election_end = pyetcd.utils.prefix_range_end(self._election_prefix.encode())
        _, (keys, leader) = self._query(lambda c: c.transaction(
            compare=[], success=[tx.get(self._election_prefix, election_end), tx.get(self._leader_key)],
            failure=[]))
        candidates = sorted((_candidate(v, m) for v, m in keys), key=lambda c: c.create_revision)
        if not candidates:
            return None
        first = candidates[0]
        elected_at = first.created_at_ms
        if leader:
            doc = json.loads(leader[0][0])
            if doc.get("epoch") == first.create_revision:
                elected_at = int(doc.get("elected_at_ms", elected_at))
        return LeaderInfo(first.node_id, first.address, first.create_revision, elected_at)

    def members(self) -> list[MemberInfo]:
        """Every registered node, sorted by node_id. Blocks one round trip; EtcdUnavailableError."""
        found = self._query(lambda c: list(c.get_prefix(self._members_prefix)))
        docs = [json.loads(value) for value, _ in found]
        return sorted((MemberInfo(d["node_id"], d.get("address", "")) for d in docs),
                      key=lambda m: m.node_id)

    # ------------------------------------------------------------------ helpers

    def _new_client(self) -> pyetcd.MultiEndpointEtcd3Client:
        return _connect(self._endpoints, self._rpc_timeout, retry_after=self.ttl / 4)

    def _query(self, fn: Callable[[pyetcd.MultiEndpointEtcd3Client], Any]) -> Any:
        """Run a read, trying each endpoint once (pyetcd fails over on the next call)."""
        with self._query_lock:
            for attempt in range(len(self._endpoints) + 1):
                try:
                    return fn(self._query_client)
                except Exception as exc:
                    if not _is_connection_error(exc):
                        raise
                    if attempt == len(self._endpoints):
                        raise EtcdUnavailableError(f"etcd did not answer: {_describe(exc)}") from exc
        raise AssertionError("unreachable")

    def _deadline_locked(self) -> float:
        return self._last_ok_sent + self.ttl - self._margin if self._lease_id is not None else 0.0

    def _session_ok_locked(self) -> bool:
        return self._lease_id is not None and self._lost is None and time.monotonic() < self._deadline_locked()

    def _session_ok(self) -> bool:
        with self._lock:
            return self._session_ok_locked()

    def _lose_session(self, lease_id: int | None, reason: str) -> None:
        """Stop trusting ``lease_id``; the election thread deposes (if leading) and starts over."""
        with self._lock:
            if lease_id is None or lease_id != self._lease_id or self._lost is not None:
                return
            self._lost = reason
        log.info("%s: lease %x abandoned: %s", self.node_id, lease_id, reason)
        self._wake.set()

    def _set_state(self, state: State, sentence: str) -> None:
        if (state, sentence) != (self._state, self._sentence):
            log.info("%s: %s", self.node_id, sentence)
        self._state, self._sentence = state, sentence

    def _call(self, callback: Callable[[Any], None] | None, arg: Any) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:
            log.exception("%s: election callback %r failed", self.node_id, callback)

    def _wait(self, timeout: float) -> None:
        self._wake.wait(max(0.0, timeout))

    # ------------------------------------------------------------------ keep-alive thread

    def _keepalive_loop(self) -> None:
        """Renew the lease every ttl/3; a renewal counts from the moment it was sent."""
        interval, failing = self.ttl / 3, False
        while not self._closing.is_set():
            self._ka_wake.clear()
            with self._lock:
                lease_id = self._lease_id if self._lost is None else None
                due, deadline = self._next_keepalive, self._deadline_locked()
            sent = time.monotonic()
            if lease_id is None or sent < due:
                self._ka_wake.wait(interval if lease_id is None else due - sent)
                continue
            if sent >= deadline:  # e.g. this process was paused: too late to renew
                self._lose_session(lease_id, DEPOSED_LEASE)
                continue
            try:
                responses = list(self._ka_client.refresh_lease(lease_id))
            except Exception as exc:
                (log.debug if failing else log.warning)("%s: keep-alive of lease %x failed: %s",
                                                        self.node_id, lease_id, _describe(exc))
                failing = True
                with self._lock:
                    self._next_keepalive = time.monotonic() + 0.1
                continue
            failing = False
            if not responses or responses[-1].TTL <= 0:
                self._lose_session(lease_id, "lease expired in etcd")
                continue
            with self._lock:
                if lease_id == self._lease_id and sent < self._deadline_locked():
                    self._last_ok_sent = sent
                self._next_keepalive = sent + interval

    # ------------------------------------------------------------------ election thread

    def _run(self) -> None:
        """The state machine: one small step at a time; etcd errors never end the thread.

        After a connection error pyetcd moves to another endpoint on the next call, so the
        first ``len(endpoints)`` failures in a row are retried at once and quietly; then the
        node counts etcd as unreachable and backs off (50 ms doubling up to ttl/2).
        """
        failures = 0
        while not self._closing.is_set():
            try:
                self._step()
                failures = 0
            except Exception as exc:
                failures += 1
                quiet = _is_connection_error(exc) and failures <= len(self._endpoints)
                self._on_error(exc, quiet)
                wait = 0.0 if quiet else min(0.05 * 2 ** (failures - 1), self.ttl / 2)
                if self._leading:
                    wait = min(wait, self.deadline - time.monotonic())
                self._wait(wait)
        self._shutdown()

    def _step(self) -> None:
        self._wake.clear()
        if self._watch_fired.is_set():
            self._unwatch()
        if self._leading:
            self._lead()
        elif self._resign_requested.is_set():
            self._withdraw()
        elif not self._session_ok():
            self._open_session()
        elif self._member_lease != self._lease_id:
            self._register()
        elif not self._want_campaign:
            self._set_state(State.FOLLOWING, "not a candidate (resigned)")
            self._wait(self.ttl / 2)
        else:
            self._campaign_step()

    def _open_session(self) -> None:
        """Abandon any old lease (revoking it when etcd answers), grant a new one."""
        with self._lock:
            old, self._lease_id, self._lost = self._lease_id, None, None
        if old is not None:
            self._stale_leases.append(old)
        self._unwatch()
        self._my_key, self._member_lease = None, None
        self._revoke_stale()
        sent = time.monotonic()
        lease = self._client.lease(math.ceil(self.ttl))
        if lease.ttl != math.ceil(self.ttl):
            log.info("%s: etcd granted a %ss lease for the %ss asked", self.node_id, lease.ttl, self.ttl)
        with self._lock:
            self._lease_id, self._last_ok_sent, self._lost = lease.id, sent, None
            self._next_keepalive = sent + self.ttl / 3
        self._ka_wake.set()
        self._set_state(State.CAMPAIGNING, f"got lease {lease.id:x}")

    def _revoke_stale(self) -> None:
        while self._stale_leases:
            try:
                self._client.revoke_lease(self._stale_leases[0])
            except Exception as exc:
                if not _is_lease_gone(exc):
                    raise
            self._stale_leases.pop(0)

    def _register(self) -> None:
        lease_id = self._lease_id
        doc = json.dumps({"node_id": self.node_id, "address": self.address})
        self._client.put(self._member_key, doc, lease=lease_id)
        self._member_lease = lease_id

    def _campaign_step(self) -> None:
        """Ensure our election key exists; lead if it is the oldest, else watch the one ahead."""
        if self._my_key is None:
            self._create_key()
        ahead, revision = self._predecessor()
        if self._my_key is None:
            return  # our key vanished: create a new one next step
        if ahead is None:
            self._win(revision)
            return
        self._set_state(State.FOLLOWING, f"following: {ahead.node_id} (rev {ahead.create_revision}) is ahead")
        if self._watch_key != ahead.key:
            self._unwatch()
            self._watch(ahead.key, revision + 1)
        self._wait(self.ttl / 2)  # safety net: watches can miss events

    def _create_key(self) -> None:
        self._set_state(State.CAMPAIGNING, "campaigning")
        key = f"{self._election_prefix}{self._lease_id:x}"
        doc = json.dumps({"node_id": self.node_id, "address": self.address, "created_at_ms": _now_ms()})
        tx = self._client.transactions
        _, responses = self._client.transaction(
            compare=[tx.create(key) == 0],
            success=[tx.put(key, doc, lease=self._lease_id), tx.get(key)],
            failure=[tx.get(key)])
        (_, meta), = responses[-1]
        self._my_key, self._my_rev = key, meta.create_revision

    def _predecessor(self) -> tuple[_Candidate | None, int]:
        """The candidate just ahead of us and the read's revision; clears _my_key if ours is gone."""
        response = self._client.get_prefix_response(self._election_prefix, sort_order="ascend",
                                                     sort_target="create")
        queue = [_candidate(kv.value, kv) for kv in response.kvs]
        mine = [i for i, c in enumerate(queue) if c.key == self._my_key and c.create_revision == self._my_rev]
        if not mine:
            self._my_key = None
            return None, response.header.revision
        return (queue[mine[0] - 1] if mine[0] else None), response.header.revision

    def _win(self, revision: int) -> None:
        """Proclaim (guarded by our key's create_revision), then lead and call on_elected."""
        epoch = self._my_rev
        doc = json.dumps({"node_id": self.node_id, "address": self.address, "epoch": epoch,
                          "elected_at_ms": _now_ms()})
        tx = self._client.transactions
        ok, _ = self._client.transaction(
            compare=[tx.create(self._my_key) == epoch],
            success=[tx.put(self._leader_key, doc, lease=self._lease_id)], failure=[])
        if not ok:
            self._my_key = None
            return
        self._unwatch()
        assert self._my_key is not None   # set by _create_key before we could win
        self._watch(self._my_key, revision + 1)  # a deletion of our key deposes us
        with self._lock:
            if not self._session_ok_locked() or self._closing.is_set():
                return  # the deadline passed while we proclaimed: start over
            self._leading, self._epoch = True, epoch
            self._set_state(State.LEADING, f"acquired leadership, epoch {epoch}")
        self._call(self._on_elected, epoch)

    def _lead(self) -> None:
        """While leading: depose on a missed deadline, a resign request or a lost key."""
        if not self._session_ok():
            self._depose(DEPOSED_LEASE)
        elif self._resign_requested.is_set():
            self._depose(DEPOSED_RESIGNED)
            self._withdraw()
        elif self._watch_key is None:  # the watch fired or broke: re-read the queue
            ahead, revision = self._predecessor()
            if self._my_key is None or ahead is not None:
                self._depose(DEPOSED_KEY_LOST)
            else:
                self._watch(self._my_key, revision + 1)
        else:
            self._wait(min(self.deadline - time.monotonic(), self.ttl / 2))

    def _depose(self, reason: str) -> None:
        """Stop leading (exactly once per term) and call on_deposed(reason) before anything else."""
        with self._lock:
            if not self._leading:
                return
            epoch, self._leading, self._epoch = self._epoch, False, 0
            self._set_state(State.STEPPING_DOWN, f"lost leadership of epoch {epoch}: {reason}")
        self._call(self._on_deposed, reason)
        if reason == DEPOSED_LEASE:
            self._lose_session(self._lease_id, reason)
        elif reason == DEPOSED_KEY_LOST:
            self._my_key = None

    def _withdraw(self) -> None:
        """Resign: revoke the lease (deleting our keys); re-register, and campaign if rejoining."""
        try:
            self._want_campaign = self._rejoin
            self._set_state(State.STEPPING_DOWN, "resigning")
            with self._lock:
                old, self._lease_id = self._lease_id, None
            if old is not None:
                self._stale_leases.append(old)
            self._unwatch()
            self._my_key, self._member_lease = None, None
            self._revoke_stale()
        finally:
            self._resign_requested.clear()
            self._resign_done.set()

    def _shutdown(self) -> None:
        """Closing: depose, revoke the lease so followers take over at once."""
        self._depose(DEPOSED_CLOSING)
        self._unwatch()
        with self._lock:
            old, self._lease_id = self._lease_id, None
        if old is not None:
            self._stale_leases.append(old)
        for attempt in range(len(self._endpoints) + 1):
            try:
                self._revoke_stale()
                break
            except Exception as exc:
                if attempt == len(self._endpoints):
                    log.warning("%s: could not revoke lease on close (it expires by itself): %s",
                                self.node_id, _describe(exc))
        self._set_state(State.STEPPING_DOWN, "closed")
        self._resign_done.set()

    def _on_error(self, exc: Exception, quiet: bool) -> None:
        """One place for etcd errors: a leader keeps leading only while its lease is trusted."""
        if _is_lease_gone(exc):
            self._lose_session(self._lease_id, "lease not found in etcd")
        elif not _is_connection_error(exc):
            log.exception("%s: unexpected error in the election thread", self.node_id)
        self._unwatch()
        # pyetcd leaves a dropped watcher's stream (and thread) open: a new client ends them.
        self._watch_client.close()
        self._watch_client = self._new_client()
        what = _describe(exc)
        if self._leading and self._session_ok():
            (log.debug if quiet else log.warning)(
                "%s: etcd request failed while leading (%s); lease trusted until its deadline", self.node_id, what)
            return
        self._depose(DEPOSED_LEASE)
        if not quiet:
            self._set_state(State.ETCD_UNREACHABLE, f"etcd unreachable: {what}")

    # ------------------------------------------------------------------ watches

    def _watch(self, key: str, start_revision: int) -> None:
        """Wake the election thread on any change of ``key`` after ``start_revision``."""
        self._watch_gen += 1
        gen = self._watch_gen

        def fired(_response: object) -> None:  # on pyetcd's watch thread
            if gen == self._watch_gen:
                self._watch_fired.set()
                self._wake.set()

        self._watch_fired.clear()
        self._watch_id = self._watch_client.add_watch_callback(key, fired, start_revision=start_revision)
        self._watch_key = key

    def _unwatch(self) -> None:
        self._watch_gen += 1
        self._watch_fired.clear()
        watch_id, self._watch_id, self._watch_key = self._watch_id, None, None
        if watch_id is not None:
            try:
                self._watch_client.cancel_watch(watch_id)
            except Exception as exc:
                log.debug("%s: cancel watch: %s", self.node_id, exc)
