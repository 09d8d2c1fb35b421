"""The Worker: streams to one or more nodes, handlers run concurrently, failover.

How the pieces fit (each step is one small method below):

* ``run()`` runs one loop per *link* (``_links.py``; ``streams``, one by
  default): open a stream to the link's endpoint, run it until it
  ends, reopen it after a back-off (50 ms doubling to 2 s, reset after a
  stream that worked), on the next endpoint no other link holds (its own
  again when they all are), until ``shutdown()`` closes them.
* Credits keep ``tasks in flight + credits outstanding == concurrency`` over
  all the streams: a hello grants the link's part of the free slots, every
  freed slot grants one more credit, on the stream of the link whose task
  freed it unless that link holds its part already (``_links.py``), or
  shows up in the next hello when no stream is up.
* Results go back on the stream of the link that pushed the task (its node
  decides the next step from what it holds) while it is up, else on another.
  They are kept until a node acknowledges them and re-sent on another stream
  (or the next one) if theirs breaks first (the node treats a duplicate as
  idempotent). A result the node could not store for now (the part of its
  state store that holds the workflow is failing over) is acked with
  ``retry``: it is sent again on the same stream after a back-off (100 ms
  doubling to 2 s), and the stream goes on carrying the other tasks.
* What one turn of the event loop has to say (results, credits, heartbeats)
  goes in one message when the node reads batches, and what the node has
  gathered comes in one (``_stream.py``); items are handled one by one.
* Each task in flight heartbeats every lease/3, on the stream its result
  would take. A heartbeat left unanswered for a whole interval means the
  node is stuck (frozen, partitioned): the stream is dropped so that another
  node extends the lease before it expires.
* A node that stops gracefully sends a ``Drain`` after the last task it
  pushed: the worker half-closes that stream and its link moves on, while
  its tasks in flight heartbeat and its results are re-sent on another
  stream (at once when one is up).
* A node that stops answering without closing anything (frozen: SIGSTOP, a
  long GC or VM pause, a stalled disk; or a cut network) is noticed by the
  stream's pings: nothing at all from it for ``node_timeout_s`` (3 s) and
  the worker drops that stream and its channel, and its link moves on as
  above. What the frozen node had leased and never delivered comes back
  when its leases expire; when it wakes, its stream is gone, so nothing it
  still held is run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from ._event_loop import loop_factory
from orchestrator_api.batches import WorkerItem
from orchestrator_api.v1 import orchestrator_pb2 as pb

from ._client import auth_metadata, channel_credentials
from ._context import TaskContext
from ._endpoints import CHANNEL_OPTIONS, Backoff, validate_endpoints
from ._execution import execute_assignment
from ._links import Link, credit_for_freed_slot, hello_capacity, next_endpoint
from ._stream import TaskStream
from ._task import Handler, build_registry

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("worker")

_BACKOFF_INITIAL_S = 0.05
_BACKOFF_MAX_S = 2.0
_RETRY_FIRST_S = 0.1  # a result the node answered `retry` goes again after this, doubling
_RETRY_MAX_S = 2.0
_CONNECT_TIMEOUT_S = 3.0
# How long a node known to answer pings may send nothing before it is left (Worker(node_timeout_s=)).
_NODE_TIMEOUT_S = 3.0
# A stream that lived this long (or delivered a message) counts as a success.
_HEALTHY_STREAM_S = 1.0
# Used when a node grants no lease (lease_ms <= 0).
_DEFAULT_LEASE_MS = 30_000
_MIN_HEARTBEAT_INTERVAL_S = 0.02
# Shutdown gives unacknowledged results at least this long to be acknowledged.
_MIN_ACK_FLUSH_S = 1.0
# What a freed slot sends: the stream's writer adds queued credits up (never changed).
_ONE_CREDIT = pb.Credit(count=1)


@dataclass
class WorkerStats:
    """Counters for tests, benchmarks and logs.

    Attributes:
        received: tasks pushed by nodes.
        completed: attempts that ended COMPLETED.
        failed: attempts that ended FAILED or FAILED_TERMINAL.
        released: tasks handed back unfinished (shutdown).
        reconnects: streams established after the first one.
        rejected: results a node refused as stale (lease lost, workflow ended).
        lease_lost: heartbeats answered "not alive".
        resent: results re-sent on a new stream before their ack arrived.
        retried: results sent again after the node answered ``retry``.
    """

    received: int = 0
    completed: int = 0
    failed: int = 0
    released: int = 0
    reconnects: int = 0
    rejected: int = 0
    lease_lost: int = 0
    resent: int = 0
    retried: int = 0


@dataclass(eq=False)
class _InFlight:
    """A task attempt this worker is running."""

    assignment: pb.TaskAssignment
    context: TaskContext
    lease_ms: int
    runner: asyncio.Task[None] | None = None
    # When it heartbeats next: a timer of the event loop, not a task of its own (a task costs a
    # coroutine, a future and a timeout for every attempt; most attempts end before their first beat).
    next_beat: asyncio.TimerHandle | None = None
    beating: bool = True   # False once the lease is gone or the attempt ended
    link: Link | None = None   # the link whose stream pushed it
    # The stream the last heartbeat went to, and since when it is unanswered.
    heartbeat_stream: TaskStream | None = None
    unanswered_since: float | None = None
    last_heartbeat_at: float = 0.0

    @property
    def task_id(self) -> str:
        return self.assignment.task_id

    def heartbeat_interval_s(self) -> float:
        lease_ms = self.lease_ms if self.lease_ms > 0 else _DEFAULT_LEASE_MS
        return max(lease_ms / 3000.0, _MIN_HEARTBEAT_INTERVAL_S)

    def stop(self) -> None:
        """Cancel the handler (if still running) and the heartbeats."""
        self.stop_beating()
        if self.runner is not None and self.runner is not asyncio.current_task():
            self.runner.cancel()

    def stop_beating(self) -> None:
        self.beating = False
        if self.next_beat is not None:
            self.next_beat.cancel()
            self.next_beat = None


class Worker:
    """Runs ``@task`` handlers for tasks pushed by the orchestrator's nodes.

    Args:
        endpoints: the nodes' "host:port" addresses. The worker holds a
            stream to ``streams`` of them at once, starting with the first;
            a stream that breaks is reopened on the next endpoint round robin
            that it holds no stream to (the same one when it holds a stream
            to every other).
        streams: how many nodes to hold a stream to at once (default 1; at
            most one per endpoint and ``concurrency``). With more, each of
            those nodes hands tasks over to this worker in the call that
            decided them instead of queueing them for a node that has a
            worker, and a node that fails takes only its own stream with it:
            the results and heartbeats it carried go on another stream at
            once, with no reconnect. The first stream carries the load; each
            other holds one slot (``_links.py`` says why, with what it costs).
        handlers: functions decorated with ``@task``, one per task type.
        concurrency: how many handlers may run at once (>= 1); sync handlers
            run in a thread pool of this size (those marked
            ``@task(..., inline=True)`` in the event loop, see ``task``).
        worker_id: unique per process; generated from host, pid and a random
            suffix when omitted.
        token: its bearer token (default: ORCHESTRATOR_TOKEN); ``tls_*`` as
            for ``WorkflowClient``.
        namespace: the namespace whose tasks it serves (default:
            ORCHESTRATOR_NAMESPACE, else its token's, else the default one).
        node_timeout_s: how long its node may send nothing at all (the
            worker pings it every second, or every third of this if shorter,
            and a node answers at once) before the worker takes it for frozen
            or unreachable and moves to the next endpoint, where it re-sends
            its unacknowledged results and heartbeats its tasks in flight
            (default 3 s; None: never, which leaves it to gRPC's keepalive).
            Only a node that has answered a ping is held to it: an older
            node, which does not answer pings, is never left for that.

    Raises:
        TypeError, ValueError: at once, for an invalid configuration.

    Lifecycle: ``await run()`` until ``await shutdown()``; or
    ``async with Worker(...) as w:`` (runs in the background, shuts down on
    exit); or ``run_sync()`` in a script (SIGINT/SIGTERM shut down gracefully).

    A handler still running when the grace period ends is released and its
    context marked cancelled; an async one is cancelled too, but a thread
    cannot be, so a sync handler that never checks ``context().cancelled``
    keeps the process alive until it returns.
    """

    def __init__(
        self,
        *,
        endpoints: Sequence[str],
        handlers: Sequence[Callable[..., Any]],
        concurrency: int = 8,
        worker_id: str | None = None,
        token: str | None = None,
        namespace: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        node_timeout_s: float | None = _NODE_TIMEOUT_S,
        streams: int = 1,
    ) -> None:
        self._endpoints = validate_endpoints(endpoints)
        # its token (a worker role, for these task types) and the namespace whose tasks it serves
        self._metadata = auth_metadata(token, namespace)
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        self._handlers: dict[str, Handler] = build_registry(handlers)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id.strip()):
            raise ValueError(f"worker_id must be a non-empty string, got {worker_id!r}")
        if node_timeout_s is not None and (isinstance(node_timeout_s, bool)
                                           or not isinstance(node_timeout_s, int | float) or not node_timeout_s > 0):
            raise ValueError(f"node_timeout_s must be a number of seconds > 0, or None, got {node_timeout_s!r}")
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise ValueError(f"streams must be an integer >= 1, got {streams!r}")
        self._node_timeout_s = None if node_timeout_s is None else float(node_timeout_s)
        count = min(len(self._endpoints), concurrency, streams)
        self._links = [Link(endpoint, Backoff(_BACKOFF_INITIAL_S, _BACKOFF_MAX_S))
                       for endpoint in self._endpoints[:count]]
        self._answering: set[str] = set()  # endpoints whose node answered a ping
        self._closing_channels: set[asyncio.Task[None]] = set()
        self._concurrency = concurrency
        self._worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stats = WorkerStats()
        self._inflight: dict[str, _InFlight] = {}
        self._unacked: dict[str, pb.TaskResult] = {}
        self._sent_on: dict[str, TaskStream] = {}   # task id -> the stream its unacked result went on
        self._retries: dict[str, int] = {}  # task id -> times the node answered its result with `retry`
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._stopping = False  # shutdown began: no credits, new tasks are released
        self._closing: asyncio.Event | None = None  # set: end the stream and run()
        self._run_done: asyncio.Event | None = None
        self._acked: asyncio.Event | None = None
        self._shutdown_job: asyncio.Task[None] | None = None
        self._background_run: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ public API

    @property
    def worker_id(self) -> str:
        """This worker's id, sent in the hello."""
        return self._worker_id

    @property
    def task_types(self) -> list[str]:
        """The task types this worker serves."""
        return list(self._handlers)

    @property
    def concurrency(self) -> int:
        """How many handlers may run at once."""
        return self._concurrency

    @property
    def stats(self) -> WorkerStats:
        """Live counters (the object is updated in place)."""
        return self._stats

    @property
    def current_endpoint(self) -> str | None:
        """The endpoint of the first stream that is up, or None while disconnected."""
        connected = self.connected_endpoints
        return connected[0] if connected else None

    @property
    def connected_endpoints(self) -> list[str]:
        """The endpoints of the streams that are up, in the order of the links."""
        return [link.endpoint for link in self._links if link.up]

    @property
    def in_flight(self) -> int:
        """How many handlers are running now."""
        return len(self._inflight)

    async def run(self) -> None:
        """Connect and run tasks until ``shutdown()`` completes.

        Blocks for the worker's whole life; cancelling it stops the worker
        at once (handlers are cancelled, nothing is released).

        Raises:
            RuntimeError: if the worker was already started or shut down.
        """
        self._start()
        try:
            await self._connection_loop()
        finally:
            await self._teardown()

    def run_sync(self, *, grace_s: float = 10.0) -> None:
        """Run the worker in a new event loop until SIGINT or SIGTERM, which
        start a graceful ``shutdown(grace_s)``; a second signal stops at once."""
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._run_until_signalled(grace_s))

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop taking tasks, let the ones in flight finish within ``grace_s``
        seconds, release the rest, wait for results to be acknowledged, then
        close the stream. Idempotent; returns once ``run()`` has ended."""
        if self._shutdown_job is None:
            self._shutdown_job = asyncio.create_task(self._shut_down(grace_s))
        await asyncio.shield(self._shutdown_job)

    async def __aenter__(self) -> Worker:
        self._background_run = asyncio.create_task(self.run())
        await asyncio.sleep(0)  # let run() start, so that errors surface early
        if self._background_run.done():
            self._background_run.result()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
        if self._background_run is not None:
            await self._background_run

    # ------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        if self._started or self._stopping:
            raise RuntimeError("a Worker runs once: create a new one")
        self._started = True
        self._closing = asyncio.Event()
        self._run_done = asyncio.Event()
        self._acked = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="task-handler")
        log.info("worker %s starting: task types %s, concurrency %d",
                 self._worker_id, self.task_types, self._concurrency)

    async def _teardown(self) -> None:
        assert self._run_done is not None
        try:
            for flight in list(self._inflight.values()):
                flight.context._cancel()
                flight.stop()
            self._inflight.clear()
            for link in self._links:
                if link.stream is not None:
                    link.stream.abort("the worker stopped")
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            for channel in self._channels.values():
                await channel.close()
            if self._closing_channels:
                await asyncio.wait(self._closing_channels, timeout=1.0)
        finally:
            self._run_done.set()
        if self._unacked:
            log.warning("%d results were never acknowledged; their leases will expire", len(self._unacked))
        log.info("worker %s stopped: %s", self._worker_id, self._stats)

    async def _shut_down(self, grace_s: float) -> None:
        self._stopping = True
        if not self._started or (self._run_done is not None and self._run_done.is_set()):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        log.info("worker %s shutting down: %d tasks in flight, grace %g s",
                 self._worker_id, len(self._inflight), grace_s)
        await self._wait_for_handlers(deadline - loop.time())
        self._release_in_flight()
        await self._wait_for_acks(max(deadline - loop.time(), _MIN_ACK_FLUSH_S))
        self._close()
        assert self._run_done is not None
        await self._run_done.wait()

    async def _wait_for_handlers(self, timeout_s: float) -> None:
        runners = [flight.runner for flight in self._inflight.values() if flight.runner is not None]
        if runners and timeout_s > 0:
            await asyncio.wait(runners, timeout=timeout_s)

    def _release_in_flight(self) -> None:
        for flight in list(self._inflight.values()):
            log.info("grace period over: releasing task %s (%s)", flight.task_id, flight.assignment.task_type)
            del self._inflight[flight.task_id]
            flight.context._cancel()
            flight.stop()
            if flight.link is not None:
                flight.link.running -= 1
            self._release(flight.assignment, flight.link)

    async def _wait_for_acks(self, timeout_s: float) -> None:
        assert self._acked is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._unacked and loop.time() < deadline:
            self._acked.clear()
            try:
                await asyncio.wait_for(self._acked.wait(), deadline - loop.time())
            except TimeoutError:
                break

    def _close(self) -> None:
        assert self._closing is not None
        self._closing.set()
        for link in self._links:
            if link.stream is not None:
                link.stream.close()

    async def _run_until_signalled(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum, grace_s)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                log.debug("cannot handle signal %s here", signum)
        await self.run()

    def _on_signal(self, signum: int, grace_s: float) -> None:
        name = signal.Signals(signum).name
        if self._shutdown_job is None:
            log.info("%s received: shutting down gracefully (grace %g s)", name, grace_s)
            self._shutdown_job = asyncio.create_task(self._shut_down(grace_s))
        else:
            log.warning("%s received again: releasing the tasks in flight now", name)
            self._release_in_flight()

    # ------------------------------------------------------------ connection

    async def _connection_loop(self) -> None:
        await asyncio.gather(*(self._link_loop(link) for link in self._links))

    async def _link_loop(self, link: Link) -> None:
        """Keep a stream open on `link` until the worker closes."""
        assert self._closing is not None
        while not self._closing.is_set():
            stream = self._open_stream(link)
            reason = await stream.run(_CONNECT_TIMEOUT_S)
            self._stream_ended(link, stream)
            if self._closing.is_set():
                log.info("stream to %s closed: %s", stream.endpoint, reason)
                break
            if stream.healthy(_HEALTHY_STREAM_S):
                link.backoff.reset()
            delay = link.backoff.next()
            link.endpoint = next_endpoint(link, self._endpoints, self._links)
            if stream.drained:
                log.info("left %s (%s); trying %s in %.0f ms", stream.endpoint, reason, link.endpoint, delay * 1000)
            elif stream.went_silent:
                log.warning("left %s: %s; trying %s in %.0f ms", stream.endpoint, reason, link.endpoint, delay * 1000)
            elif stream.established:
                log.warning("stream to %s broke (%s); trying %s in %.0f ms",
                            stream.endpoint, reason, link.endpoint, delay * 1000)
            else:
                log.info("cannot connect to %s (%s); trying %s in %.0f ms",
                         stream.endpoint, reason, link.endpoint, delay * 1000)
            await self._pause(delay)

    def _free_slots(self) -> int:
        """Slots neither running a task nor granted as a credit on a stream."""
        return self._concurrency - len(self._inflight) - sum(link.granted for link in self._links)

    def _open_stream(self, link: Link) -> TaskStream:
        """Create the link's stream in one step with its hello, which grants the link's share of
        the free slots (see ``_links.py``). Results whose stream ended before a node acknowledged
        them are re-sent behind it, and the tasks whose heartbeats have no stream beat at once
        (their leases may be close to expiry)."""
        endpoint = link.endpoint
        capacity = 0 if self._stopping else hello_capacity(link, self._links, self._concurrency, self._free_slots())
        hello = pb.WorkerMessage(hello=pb.WorkerHello(worker_id=self._worker_id, task_types=self.task_types,
                                                      capacity=capacity, batches=True,
                                                      resends=True))
        orphans = [result for task_id, result in self._unacked.items() if _gone(self._sent_on.get(task_id))]
        stream = TaskStream(
            endpoint,
            self._channel(endpoint),
            [hello, *orphans],
            on_message=functools.partial(self._on_server_message, link),
            on_established=functools.partial(self._on_established, link),
            metadata=self._metadata,
            node_timeout_s=self._node_timeout_s,
            answers_pings=endpoint in self._answering,
        )
        link.stream, link.granted, link.resending = stream, capacity, len(orphans)
        link.opened += 1
        for result in orphans:
            self._sent_on[result.task_id] = stream
        loop = asyncio.get_running_loop()
        for flight in self._inflight.values():
            if flight.link is link or _gone(flight.heartbeat_stream):
                loop.call_soon(self._beat_now, flight)
        log.debug("connecting to %s (capacity %d, %d results to re-send)", endpoint, capacity, len(orphans))
        return stream

    def _stream_ended(self, link: Link, stream: TaskStream) -> None:
        """The link's stream ended: its credits are void, and what it carried moves to a stream
        that is up, if any (the link's next stream otherwise): the results it did not get
        acknowledged (with any other result left without a stream), the heartbeats of the tasks
        that beat on it, and its free room."""
        link.stream, link.granted = None, 0
        self._remember_pings(stream)
        if self._closing is not None and self._closing.is_set():
            return
        other = self._route(None)
        if other is not None and other.established:   # else they go behind the next hello
            self._send_orphans(other)
        loop = asyncio.get_running_loop()
        for flight in self._inflight.values():
            if flight.heartbeat_stream is stream:
                loop.call_soon(self._beat_now, flight)
        self._grant_free_slots()

    def _grant_free_slots(self) -> None:
        """Grant every free slot to a stream that is up (see ``credit_for_freed_slot``)."""
        if self._stopping:
            return
        while self._free_slots() > 0:
            target = credit_for_freed_slot(None, self._links, self._concurrency)
            if target is None:
                return
            self._grant_credit(target)

    def _route(self, link: Link | None) -> TaskStream | None:
        """The stream for a result, heartbeat or release of a task `link` pushed: the link's own
        while it is up, else the first stream that is up, else one still being opened (what is
        sent on it goes behind its hello)."""
        if link is not None and link.up:
            return link.stream
        for other in self._links:
            if other.up:
                return other.stream
        if link is not None and link.open:
            return link.stream
        for other in self._links:
            if other.open:
                return other.stream
        return None

    def _remember_pings(self, stream: TaskStream) -> None:
        """Whether the node at this endpoint answers pings, for the next stream to it. A node that
        went silent is reached again on a new channel: its connection may hold a frozen peer. One
        that went silent without ever answering on this stream may have been replaced by an older
        node at the same address: it is held to the deadline again only once it answers."""
        if stream.pongs:
            self._answering.add(stream.endpoint)
        if stream.went_silent:
            if not stream.pongs:
                self._answering.discard(stream.endpoint)
            self._drop_channel(stream.endpoint)

    def _drop_channel(self, endpoint: str) -> None:
        channel = self._channels.pop(endpoint, None)
        if channel is not None:
            closing = asyncio.create_task(channel.close())
            self._closing_channels.add(closing)
            closing.add_done_callback(self._closing_channels.discard)

    def _on_established(self, link: Link, stream: TaskStream) -> None:
        """A stream is up: results that lost theirs meanwhile go on it, and the slots freed while
        no stream was up are granted."""
        if link.connected_once:
            self._stats.reconnects += 1
        link.connected_once = True
        self._stats.resent += link.resending
        log.info("connected to %s as %s", stream.endpoint, self._worker_id)
        self._send_orphans(stream)
        self._grant_free_slots()

    def _send_orphans(self, stream: TaskStream) -> None:
        """The unacknowledged results whose stream ended (or that found none) go on `stream`."""
        for task_id, result in self._unacked.items():
            if _gone(self._sent_on.get(task_id)):
                self._sent_on[task_id] = stream
                stream.send(result)
                self._stats.resent += 1

    async def _pause(self, delay_s: float) -> None:
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), delay_s)
        except TimeoutError:
            pass

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = (grpc.aio.secure_channel(endpoint, self._credentials, options=list(CHANNEL_OPTIONS))
                       if self._credentials is not None
                       else grpc.aio.insecure_channel(endpoint, options=list(CHANNEL_OPTIONS)))
            self._channels[endpoint] = channel
        return channel

    # ------------------------------------------------------------ server messages

    def _on_server_message(self, link: Link, stream: TaskStream, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "task":
            self._on_task(link, stream, message.task)
        elif kind == "result_ack":
            self._on_result_ack(message.result_ack)
        elif kind == "heartbeat_ack":
            self._on_heartbeat_ack(stream, message.heartbeat_ack)
        elif kind == "batch":
            self._on_batch(link, stream, message.batch)
        elif kind == "drain":
            self._on_drain(stream, message.drain)
        else:
            log.debug("ignoring an unknown message from %s: %s", stream.endpoint, message)

    def _on_batch(self, link: Link, stream: TaskStream, batch: pb.ServerBatch) -> None:
        """Each item as if it came alone: a bug handling one does not lose the others."""
        for ack in batch.result_acks:
            _guarded(stream, self._on_result_ack, ack)
        for beat_ack in batch.heartbeat_acks:
            _guarded(stream, functools.partial(self._on_heartbeat_ack, stream), beat_ack)
        for assignment in batch.tasks:
            _guarded(stream, functools.partial(self._on_task, link, stream), assignment)

    def _on_drain(self, stream: TaskStream, drain: pb.Drain) -> None:
        """The node is stopping and sent every task it had for us before this: close the stream
        (its queued results go first) and move on. Results that finish meanwhile go on another
        stream (kept, and re-sent on the next one, if none is up), and so do the heartbeats of
        the tasks in flight, so their leases never lapse. Writing on after this would make the
        node's end of the call fail the reads still to come, and lose the tasks in them."""
        log.info("node %s is stopping (%s); moving to another node", stream.endpoint, drain.detail or "drain")
        stream.drained = True
        stream.close()

    def _on_task(self, link: Link, stream: TaskStream, assignment: pb.TaskAssignment) -> None:
        self._stats.received += 1
        if link.stream is stream and link.granted > 0:
            link.granted -= 1   # the credit it was pushed for
        if self._stopping:
            self._release(assignment, link)
        elif assignment.task_id in self._inflight:
            log.warning("task %s pushed again while running; returning its credit", assignment.task_id)
            self._grant_credit(link)
        elif len(self._inflight) >= self._concurrency:
            log.warning("task %s pushed beyond capacity %d; releasing it", assignment.task_id, self._concurrency)
            self._release(assignment, link)
        else:
            self._start_task(assignment, link)

    def _on_result_ack(self, ack: pb.ResultAck) -> None:
        if ack.retry:
            self._retry_later(ack)
            return
        self._retries.pop(ack.task_id, None)
        self._sent_on.pop(ack.task_id, None)
        if self._unacked.pop(ack.task_id, None) is None:
            return  # a duplicate ack, after a re-send
        if not ack.accepted:
            self._stats.rejected += 1
            log.info("result of task %s refused as stale: %s", ack.task_id, ack.detail or "no detail")
        assert self._acked is not None
        self._acked.set()

    def _retry_later(self, ack: pb.ResultAck) -> None:
        """The node stored nothing for now: the result goes again on the same stream after a
        back-off, unless it ended (and the result went on another) or an ack came meanwhile."""
        result = self._unacked.get(ack.task_id)
        if result is None:
            return
        tries = self._retries[ack.task_id] = self._retries.get(ack.task_id, 0) + 1
        delay_s = min(_RETRY_MAX_S, _RETRY_FIRST_S * 2 ** (tries - 1))
        log.info("result of task %s not stored for now (%s); sending it again in %.0f ms",
                 ack.task_id, ack.detail or "no detail", delay_s * 1000)
        stream = self._sent_on.get(ack.task_id)

        def again() -> None:
            if (self._unacked.get(ack.task_id) is result and stream is not None and not stream.ended
                    and self._sent_on.get(ack.task_id) is stream):
                self._stats.retried += 1
                stream.send(result)
        asyncio.get_running_loop().call_later(delay_s, again)

    def _on_heartbeat_ack(self, stream: TaskStream, ack: pb.HeartbeatAck) -> None:
        flight = self._inflight.get(ack.task_id)
        if flight is None:
            return
        if flight.heartbeat_stream is stream:
            flight.unanswered_since = None
        if ack.lease_ms > 0:
            flight.lease_ms = ack.lease_ms
        if not ack.alive:
            self._on_lease_lost(flight)

    def _on_lease_lost(self, flight: _InFlight) -> None:
        self._stats.lease_lost += 1
        log.info("lease of task %s is gone; its handler keeps running, its result will be refused", flight.task_id)
        flight.context._cancel()
        flight.stop_beating()

    # ------------------------------------------------------------ tasks

    def _start_task(self, assignment: pb.TaskAssignment, link: Link) -> None:
        loop = asyncio.get_running_loop()

        def request_heartbeat() -> None:  # called by TaskContext.heartbeat(), from any thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: the worker stopped
                loop.call_soon_threadsafe(self._beat_now, flight)

        ctx = TaskContext.from_assignment(assignment, worker_id=self._worker_id, heartbeat_hook=request_heartbeat)
        flight = _InFlight(assignment=assignment, context=ctx, lease_ms=assignment.lease_ms, link=link)
        self._inflight[flight.task_id] = flight
        link.running += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("task %s (%s, attempt %d) of workflow %s started",
                      flight.task_id, assignment.task_type, assignment.attempt, assignment.workflow_id)
        flight.runner = asyncio.create_task(self._run_task(flight), name=f"task-{flight.task_id}")
        self._schedule_beat(flight)

    async def _run_task(self, flight: _InFlight) -> None:
        handler = self._handlers.get(flight.assignment.task_type)
        result = await execute_assignment(flight.assignment, handler, context=flight.context, executor=self._executor)
        if not self._finish(flight, result):
            return
        stream = self._route(flight.link)
        credit_on = None if self._stopping else credit_for_freed_slot(flight.link, self._links, self._concurrency)
        if credit_on is not None:
            credit_on.granted += 1
        if stream is None:   # kept in _unacked: the next hello re-sends it and counts the slot as free
            return
        self._sent_on[result.task_id] = stream
        outgoing: list[WorkerItem] = [result]
        if credit_on is not None and credit_on.stream is stream:
            outgoing.append(_ONE_CREDIT)
        elif credit_on is not None and credit_on.stream is not None:
            credit_on.stream.send(_ONE_CREDIT)
        if self._inflight:   # another handler may end in this turn too: one message for both
            for item in outgoing:
                stream.send(item)
        else:   # none can: no reason to wait for the writer's turn (_stream.py)
            await stream.send_now(outgoing)

    def _finish(self, flight: _InFlight, result: pb.TaskResult) -> bool:
        """Account for the attempt's end and keep its result until a node acknowledges it; False
        if it was released meanwhile (shutdown past its grace period): nothing to send."""
        if self._inflight.pop(flight.task_id, None) is None:
            return False
        if flight.link is not None:
            flight.link.running -= 1
        flight.stop()
        if result.status == pb.TaskResult.COMPLETED:
            self._stats.completed += 1
        else:
            self._stats.failed += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("task %s (%s) %s%s", flight.task_id, flight.assignment.task_type,
                      pb.TaskResult.Status.Name(result.status), f": {result.reason}" if result.reason else "")
        self._unacked[result.task_id] = result
        return True

    def _grant_credit(self, link: Link) -> None:
        """One credit more on the link's stream. The stream's writer adds up the credits it finds
        queued, behind the results queued with them: a burst of finished tasks costs the node one
        read (one batch, or its results and one credit), not two per task. A link without a
        stream grants nothing: its next hello counts the free room anew."""
        if link.stream is not None:
            link.granted += 1
            link.stream.send(_ONE_CREDIT)

    def _release(self, assignment: pb.TaskAssignment, link: Link | None) -> None:
        self._stats.released += 1
        stream = self._route(link)
        if stream is not None:
            stream.send(pb.Release(workflow_id=assignment.workflow_id, task_id=assignment.task_id))

    # ------------------------------------------------------------ heartbeats

    def _schedule_beat(self, flight: _InFlight) -> None:
        """The flight's next heartbeat, one interval from now."""
        if flight.next_beat is not None:
            flight.next_beat.cancel()
        flight.next_beat = asyncio.get_running_loop().call_later(flight.heartbeat_interval_s(), self._beat_now,
                                                                  flight)

    def _beat_now(self, flight: _InFlight) -> None:
        """Heartbeat the flight (its interval came, a new stream opened, or the handler asked),
        then again one interval later, for as long as it runs and holds its lease."""
        if not flight.beating or self._inflight.get(flight.task_id) is not flight:
            return
        self._heartbeat(flight)
        if flight.beating:   # the heartbeat may have found the stream silent and aborted it
            self._schedule_beat(flight)

    def _heartbeat(self, flight: _InFlight) -> None:
        stream = self._route(flight.link)
        if stream is None or stream.ended:
            return
        now = asyncio.get_running_loop().time()
        interval = flight.heartbeat_interval_s()
        silent_s = _silence(stream, flight, now)
        if flight.heartbeat_stream is not stream:
            flight.heartbeat_stream, flight.unanswered_since = stream, None
        elif silent_s >= 0.9 * interval:
            # The node let a whole interval pass without answering: at this pace
            # the lease expires before it is extended. Fail over while it can be.
            stream.abort(f"heartbeat of task {flight.task_id} unanswered for {silent_s:.2f} s")
            return
        elif now - flight.last_heartbeat_at < interval / 4:
            return  # an explicit heartbeat() right after another: once is enough
        if flight.unanswered_since is None:
            flight.unanswered_since = now
        flight.last_heartbeat_at = now
        stream.send(pb.Heartbeat(workflow_id=flight.assignment.workflow_id, task_id=flight.task_id))


def _guarded(stream: TaskStream, handle: Callable[[Any], None], item: Any) -> None:
    try:
        handle(item)
    except Exception:  # a bug in the worker must not look like a network failure
        log.exception("bug: handling an item of a batch from %s failed: %s", stream.endpoint, item)


def _silence(stream: TaskStream, flight: _InFlight, now: float) -> float:
    """How long the node has left the flight's oldest heartbeat unanswered,
    counted from when the stream was up (connecting has its own timeout)."""
    if flight.heartbeat_stream is not stream or flight.unanswered_since is None or stream.established_at is None:
        return 0.0
    return now - max(flight.unanswered_since, stream.established_at)


def _gone(stream: TaskStream | None) -> bool:
    """No stream, or one that ended: what was sent on it needs another."""
    return stream is None or stream.ended
