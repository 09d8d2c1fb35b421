"""The one small asyncio client of etcd's v3 gRPC API that the orchestrator uses.

Why our own: the project's etcd package (``etcd-sdk-python``, imported as ``pyetcd``) is
synchronous only, and its helpers carry quirks we do not want (a failed endpoint shunned for
minutes, ``min_create_revision`` sent as ``min_mod_revision``, watch threads left open). Its
generated protobuf stubs are fine, so this module drives them over ``grpc.aio`` channels and
offers only what the election needs: lease grant / keep-alive / revoke, range (with prefix and
sort by create revision), put, a transaction guarded by create or mod revisions, and a watch of one
key (or prefix) from a revision. Nothing else in ``orchestrator`` imports pyetcd or its etcd
grpc stubs (the thread-based module this replaces does, until it is deleted).

Endpoints and failover. Every RPC carries a per-attempt timeout. An attempt that fails with
UNAVAILABLE or DEADLINE_EXCEEDED (a member down, hung, or without a raft leader) is retried at
once on the next endpoint; after one attempt on each endpoint the call raises
``EtcdUnavailable``. The endpoint that answered last is tried first next time, and one that
failed is moved past, so a hung member costs one timeout, not one per call.

Retries and idempotence: a retried attempt may repeat a request the first endpoint applied.
That is harmless for everything here (puts and guarded transactions are idempotent, a second
revoke finds no lease) except ``grant``, which can then leave an unused lease behind; such a
lease has no keys and expires after its TTL.

Cancellation: every coroutine here may be cancelled; cancelling it cancels the RPC in flight.
grpc.aio (1.85) can lose a task cancellation that arrives while a stream read is pending: the
task then waits forever (seen in a few percent of cancels). So no RPC here is stopped by
cancelling the task that runs it: each runs in a task of its own (``_guarded``), the caller
waits on a plain asyncio future, and a timeout or a cancelled caller cancels the *call*, which
always ends the pending read. The only background tasks are those and a watch's reader.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable, Sequence

import grpc
import grpc.aio
from pyetcd.etcdrpc import kv_pb2, rpc_pb2, rpc_pb2_grpc

__all__ = ["EtcdClient", "EtcdError", "EtcdUnavailable", "LeaseNotFound", "WatchCanceled",
           "Lease", "KeyValue", "Range", "TxnResult", "Get", "Put", "Delete", "CreateRevisionIs", "ModRevisionIs",
           "EventKind", "WatchEvent", "Watch"]

T = TypeVar("T")

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# A lost connection is retried soon: gRPC's default back-off (1 s growing to 2 min) would keep
# a restarted member unused for minutes.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000)]


class EtcdError(Exception):
    """Root of this module's errors: etcd refused a request or could not be reached."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time (each was tried once)."""


class LeaseNotFound(EtcdError):
    """The lease does not exist (any more): it expired or was revoked."""


class WatchCanceled(EtcdError):
    """etcd ended a watch, e.g. because its start revision was compacted."""


@dataclass(frozen=True)
class Lease:
    """A granted lease: its id and the TTL etcd granted (which may exceed the one asked for)."""

    id: int
    ttl: int


@dataclass(frozen=True)
class KeyValue:
    """One key as stored; ``create_revision`` is the revision of the put that created it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Range:
    """The keys a read found and the store revision the read saw."""

    kvs: list[KeyValue]
    revision: int


@dataclass(frozen=True)
class TxnResult:
    """Whether the comparisons held; per operation run, the keys read ([] for a put or delete)."""

    succeeded: bool
    revision: int
    results: list[list[KeyValue]]


@dataclass(frozen=True)
class Get:
    """Read ``key``, or every key under it when ``prefix``; optionally oldest first."""

    key: str
    prefix: bool = False
    sort_by_create: bool = False
    limit: int = 0


@dataclass(frozen=True)
class Put:
    """Write ``key``, attached to ``lease`` unless it is 0."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    """Delete ``key``."""

    key: str


@dataclass(frozen=True)
class CreateRevisionIs:
    """Comparison: ``key`` was created at ``revision`` (0: the key does not exist)."""

    key: str
    revision: int


@dataclass(frozen=True)
class ModRevisionIs:
    """Comparison: ``key`` was last written at ``revision`` (0: the key does not exist)."""

    key: str
    revision: int


Op = Get | Put | Delete
Compare = CreateRevisionIs | ModRevisionIs


class EventKind(enum.Enum):
    """What happened to a watched key."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class WatchEvent:
    """One change of a watched key, at ``revision``."""

    kind: EventKind
    key: str
    revision: int


def _prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.lease)


def _range_request(op: Get) -> Any:
    key = op.key.encode()
    request = rpc_pb2.RangeRequest(key=key, limit=op.limit)
    if op.prefix:
        request.range_end = _prefix_end(key)
    if op.sort_by_create:
        request.sort_target = rpc_pb2.RangeRequest.CREATE
        request.sort_order = rpc_pb2.RangeRequest.ASCEND
    return request


def _request_op(op: Op) -> Any:
    if isinstance(op, Get):
        return rpc_pb2.RequestOp(request_range=_range_request(op))
    if isinstance(op, Put):
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=op.key.encode(), value=op.value,
                                                                lease=op.lease))
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=op.key.encode()))


def _compare(cmp: Compare) -> Any:
    if isinstance(cmp, ModRevisionIs):
        return rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.MOD,
                               key=cmp.key.encode(), mod_revision=cmp.revision)
    return rpc_pb2.Compare(result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.CREATE,
                           key=cmp.key.encode(), create_revision=cmp.revision)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done-callback: mark an abandoned task's outcome as seen (no "never retrieved" warning)."""
    if not task.cancelled():
        task.exception()


async def _guarded(call: Any, work: Awaitable[T], timeout: float | None) -> T:
    """Await ``work`` (an RPC on ``call``) in its own task; see the module docstring.

    Blocks until ``work`` ends or ``timeout`` passes (then TimeoutError). If the timeout passes
    or the caller is cancelled, both ``call`` and the task are cancelled and nobody waits for
    them: cancelling the call ends a pending read (where a task cancel can be lost), cancelling
    the task ends a wait inside grpc that the call's end does not wake (a write waiting for the
    stream to open).
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            call.cancel()
            task.cancel()
    if not done:
        raise TimeoutError(f"no answer within {timeout}s")
    return task.result()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _translate(exc: grpc.aio.AioRpcError) -> EtcdError:
    """Map a non-retryable gRPC error to this module's errors."""
    if exc.code() == grpc.StatusCode.NOT_FOUND and "lease" in (exc.details() or ""):
        return LeaseNotFound(_describe(exc))
    return EtcdError(_describe(exc))


@dataclass
class _Stubs:
    channel: Any
    kv: Any
    lease: Any
    watch: Any


class _Retry(Exception):
    """Raised inside an attempt to move on to the next endpoint (like UNAVAILABLE)."""


class Watch:
    """An open watch: iterate it for events; ``cancel()`` or leaving ``async with`` ends it.

    Iteration blocks until etcd reports a change; it never ends by itself. It raises
    ``EtcdUnavailable`` when the stream breaks (the member died) and ``WatchCanceled`` when etcd
    ends the watch; a hung member is *not* detected here, so a caller that must not wait forever
    bounds its wait with a timeout. Cancelling a task that waits for the next event is safe (it
    waits on a queue, filled by a reader task of the watch's own); ``cancel()`` ends the stream.
    """

    def __init__(self, call: Any, pending: Sequence[WatchEvent] = ()) -> None:
        self._call = call
        self._queue: asyncio.Queue[WatchEvent | EtcdError] = asyncio.Queue()
        for event in pending:
            self._queue.put_nowait(event)
        self._reader = asyncio.ensure_future(self._read_all())
        self._reader.add_done_callback(_retrieve)

    async def _read_all(self) -> None:
        """Move events from the stream to the queue, then one error that ends the watch."""
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    raise EtcdUnavailable("watch stream ended")
                if response.canceled:
                    raise WatchCanceled(f"watch canceled by etcd: {response.cancel_reason or 'compacted'}"
                                        f" (compact revision {response.compact_revision})")
                for event in _events(response):
                    self._queue.put_nowait(event)
        except grpc.aio.AioRpcError as exc:
            self._queue.put_nowait(EtcdUnavailable(f"watch broke: {_describe(exc)}"))
        except EtcdError as exc:
            self._queue.put_nowait(exc)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        item = await self._queue.get()
        if isinstance(item, EtcdError):
            self._queue.put_nowait(item)  # every later call raises it too
            raise item
        return item

    def cancel(self) -> None:
        """End the watch and its stream; returns at once. Idempotent."""
        self._call.cancel()
        self._reader.cancel()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


def _events(response: Any) -> list[WatchEvent]:
    kinds = {kv_pb2.Event.PUT: EventKind.PUT, kv_pb2.Event.DELETE: EventKind.DELETE}
    return [WatchEvent(kinds[event.type], event.kv.key.decode(), event.kv.mod_revision)
            for event in response.events]


class EtcdClient:
    """An asyncio etcd v3 client over several endpoints ("host:port" or "http://host:port").

    Channels are opened lazily, on the running event loop of the first call: build the client
    anywhere, use it from one event loop only, and ``await close()`` at the end.
    ``attempts`` counts RPC attempts (one per endpoint tried), for tests and metrics.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 0.5,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        """Validate only; nothing is connected before the first call. `credentials`: TLS to etcd
        (its CA, and this node's client certificate when etcd asks for one)."""
        self.credentials = credentials
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoints = [endpoint.split("://")[-1] for endpoint in endpoints]
        self.timeout = timeout
        self.attempts = 0
        self._stubs: dict[int, _Stubs] = {}
        self._current = 0

    # ---------------------------------------------------------------- plumbing

    def _stub(self, index: int) -> _Stubs:
        if index not in self._stubs:
            channel = (grpc.aio.secure_channel(self.endpoints[index], self.credentials, options=_CHANNEL_OPTIONS)
                       if self.credentials is not None
                       else grpc.aio.insecure_channel(self.endpoints[index], options=_CHANNEL_OPTIONS))
            self._stubs[index] = _Stubs(channel, rpc_pb2_grpc.KVStub(channel),
                                        rpc_pb2_grpc.LeaseStub(channel), rpc_pb2_grpc.WatchStub(channel))
        return self._stubs[index]

    async def _call(self, attempt: Callable[[_Stubs], Awaitable[T]]) -> T:
        """Run ``attempt`` on each endpoint in turn until one answers; see the module docstring."""
        failures: list[str] = []
        for _ in range(len(self.endpoints)):
            index = self._current
            self.attempts += 1
            try:
                result = await attempt(self._stub(index))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE:
                    raise _translate(exc) from exc
                failures.append(f"{self.endpoints[index]}: {_describe(exc)}")
            except (_Retry, TimeoutError) as exc:
                failures.append(f"{self.endpoints[index]}: {_describe(exc)}")
            else:
                return result
            self._current = (index + 1) % len(self.endpoints)
        raise EtcdUnavailable("; ".join(failures))

    async def _unary(self, service: str, method: str, request: Any) -> Any:
        async def attempt(stubs: _Stubs) -> Any:
            call = getattr(getattr(stubs, service), method)(request, timeout=self.timeout)
            return await _guarded(call, call, None)  # the call's own deadline bounds it
        return await self._call(attempt)

    # ---------------------------------------------------------------- leases

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease of ``ttl`` whole seconds (etcd may round it up). Blocks one round trip."""
        response = await self._unary("lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise EtcdError(f"lease grant refused: {response.error}")
        return Lease(response.ID, response.TTL)

    async def keep_alive(self, lease_id: int) -> int:
        """Renew the lease once and return the TTL etcd restarted it with.

        One short LeaseKeepAlive stream per renewal (write one request, read one answer), so a
        renewal fails over like any unary call. Raises ``LeaseNotFound`` if the lease is gone.
        """
        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        async def attempt(stubs: _Stubs) -> int:
            call = stubs.lease.LeaseKeepAlive(timeout=self.timeout)
            try:
                response = await _guarded(call, self._exchange(call, request), None)
            finally:
                call.cancel()
            if response is grpc.aio.EOF:
                raise _Retry("keep-alive stream ended without an answer")
            return int(response.TTL)

        ttl = await self._call(attempt)
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease_id:x} not found")
        return ttl

    async def revoke(self, lease_id: int) -> bool:
        """Revoke the lease, deleting every key attached to it. Blocks one round trip.

        Returns False if the lease was already gone (expired, or revoked by an earlier attempt).
        """
        try:
            await self._unary("lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        except LeaseNotFound:
            return False
        return True

    # ---------------------------------------------------------------- keys

    async def get(self, op: Get) -> Range:
        """Linearizable read of one key or a prefix. Blocks one round trip."""
        response = await self._unary("kv", "Range", _range_request(op))
        return Range([_kv(kv) for kv in response.kvs], response.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write ``key`` (attached to ``lease`` unless 0); returns the new store revision.

        Raises ``LeaseNotFound`` if the lease is gone. Blocks one round trip.
        """
        request = rpc_pb2.PutRequest(key=key.encode(), value=value, lease=lease)
        return int((await self._unary("kv", "Put", request)).header.revision)

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op],
                  failure: Sequence[Op] = ()) -> TxnResult:
        """Atomically: if every comparison holds run ``success``, else ``failure``.

        Blocks one round trip. Raises ``LeaseNotFound`` if a put names a lease that is gone.
        """
        request = rpc_pb2.TxnRequest(compare=[_compare(c) for c in compare],
                                     success=[_request_op(op) for op in success],
                                     failure=[_request_op(op) for op in failure])
        response = await self._unary("kv", "Txn", request)
        results = [[_kv(kv) for kv in r.response_range.kvs] if r.HasField("response_range") else []
                   for r in response.responses]
        return TxnResult(bool(response.succeeded), response.header.revision, results)

    # ---------------------------------------------------------------- watches

    async def watch(self, key: str, *, start_revision: int, prefix: bool = False) -> Watch:
        """Watch ``key`` (or every key under it) for changes from ``start_revision`` on.

        Blocks until etcd confirms the watch (one round trip, with failover); events from
        ``start_revision`` on are then delivered even if they happened before this call.
        The caller must end the returned watch (``cancel()`` or ``async with``).
        """
        create = rpc_pb2.WatchCreateRequest(key=key.encode(), start_revision=start_revision)
        if prefix:
            create.range_end = _prefix_end(key.encode())
        request = rpc_pb2.WatchRequest(create_request=create)

        async def attempt(stubs: _Stubs) -> Watch:
            call = stubs.watch.Watch()  # no deadline: the stream lives as long as the watch
            try:
                response = await _guarded(call, self._exchange(call, request), self.timeout)
                if response is grpc.aio.EOF:
                    raise _Retry("watch stream ended before the watch was created")
                if not response.created:
                    raise EtcdError("etcd did not confirm the watch")
            except BaseException:
                call.cancel()
                raise
            return Watch(call, _events(response))

        return await self._call(attempt)

    @staticmethod
    async def _exchange(call: Any, request: Any) -> Any:
        """Write one request on a stream and read one answer (or EOF)."""
        await call.write(request)
        return await call.read()

    # ---------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Close every channel (RPCs in flight fail with CANCELLED). The client stays usable:
        a later call opens new channels."""
        stubs, self._stubs = list(self._stubs.values()), {}
        for stub in stubs:
            await stub.channel.close()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
