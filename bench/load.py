"""Load generators and the completion watchers they rely on.

Completions are observed *outside* the system under test, from what it writes to
Redis anyway, so that waiting for a result costs the servers nothing (no polling):

- ours: the `ended` stream, which the engine appends to in the same Lua call that
  ends a workflow (`XREAD BLOCK`; one stream per partition);
- Celery: the result backend, which PUBLISHes every stored result on the channel
  `celery-task-meta-<task id>` (`PSUBSCRIBE`).

`closed_loop` keeps N workflows in flight (each client thread starts one and waits
for it) and measures the steady state: the completions after a fixed warm-up;
`open_loop` starts workflows at a fixed rate whatever the completions do, and
`rate_step` says afterwards whether it held that rate (bench/knee.py).
"""

from __future__ import annotations

import functools
import itertools
import json
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
import redis
from redis.cluster import ClusterNode, RedisCluster

from .knee import RateStep, pace

_MAX_UNCLAIMED = 200_000  # completions nobody waits for (yet) that we remember

# A stream's entries as redis-py returns them with decode_responses: (entry id, fields).
StreamEntries = list[tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class Completion:
    status: str
    at_ms: float          # the system's own end time (ms since the epoch)
    observed: float       # time.monotonic() when the watcher saw it


class CompletionWatcher:
    """A thread that learns of finished workflows; `wait(id)` blocks until one is seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, Completion] = OrderedDict()
        self._waiting: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self.recorded = 0   # completions seen since it started, waited for or not

    def __enter__(self) -> CompletionWatcher:
        self._prepare()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def wait(self, item_id: str, timeout_s: float) -> Completion | None:
        with self._lock:
            done = self._seen.pop(item_id, None)
            if done is not None:
                return done
            event = self._waiting[item_id] = threading.Event()
        event.wait(timeout_s)
        with self._lock:
            self._waiting.pop(item_id, None)
            return self._seen.pop(item_id, None)

    def wait_recorded(self, total: int, timeout_s: float) -> bool:
        """Block until `recorded` reaches `total` (True) or `timeout_s` passed (False): for a caller
        that knows how many workflows end, not their ids."""
        deadline = time.monotonic() + timeout_s
        while self.recorded < total:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _record(self, item_id: str, completion: Completion) -> None:
        with self._lock:
            self.recorded += 1
            self._seen[item_id] = completion
            if len(self._seen) > _MAX_UNCLAIMED:
                self._seen.popitem(last=False)
            event = self._waiting.get(item_id)
        if event is not None:
            event.set()

    def _record_ended(self, entries: StreamEntries, observed: float) -> str:
        """The entries of an `ended` stream (non-empty) recorded as seen at `observed`; the last one's id."""
        for _, fields in entries:
            self._record(fields["wf"], Completion(fields["st"], float(fields["at"]), observed))
        return str(entries[-1][0])

    def _prepare(self) -> None:
        """Runs before the thread starts (subscribe here, so nothing is missed)."""

    def _run(self) -> None:
        raise NotImplementedError


def _ended_batches(read: Callable[[], Any]) -> list[tuple[str, StreamEntries]]:
    """What one blocking XREAD of `ended` streams returned, (stream, entries) each; nothing after a
    connection error, after a short pause (the next read goes on from the same ids)."""
    try:
        return cast(list[tuple[str, StreamEntries]] | None, read()) or []
    except redis.ConnectionError:
        time.sleep(0.1)
        return []


class EndedStreamWatcher(CompletionWatcher):
    """Reads our `ended` audit streams (one per partition) from their current ends on."""

    def __init__(self, redis_url: str, stream_keys: Sequence[str]) -> None:
        super().__init__()
        self._client = redis.Redis.from_url(redis_url, decode_responses=True)
        self._last = dict.fromkeys(stream_keys, "0-0")

    def _prepare(self) -> None:
        with self._client.pipeline(transaction=False) as pipe:
            for key in self._last:
                pipe.xrevrange(key, count=1)
            newest = cast(list[StreamEntries], pipe.execute())
        for key, entries in zip(list(self._last), newest):
            self._last[key] = entries[0][0] if entries else "0-0"

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batches = _ended_batches(functools.partial(self._client.xread, dict[Any, Any](self._last),
                                                           count=5000, block=200))
                observed = time.monotonic()
                for key, entries in batches:
                    self._last[key] = self._record_ended(entries, observed)
        finally:
            self._client.close()


def cluster_nodes(seeds: Sequence[str]) -> list[ClusterNode]:
    """redis-py's startup nodes for a Redis Cluster's seeds (host:port)."""
    return [ClusterNode(host, int(port))  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            for host, port in (seed.rsplit(":", 1) for seed in seeds)]


class ClusterEndedWatcher(CompletionWatcher):
    """The same streams on a Redis Cluster, where one XREAD may not name keys of two slots (each
    partition's stream has its own): a blocked XREAD per stream, each on a connection of its own to
    the master of its slot, all in this one thread (`selectors`, replies parsed by hiredis). A
    blocked read costs its master nothing until an entry comes; a master answers about one XREAD
    per workflow. Through redis-py's cluster client, a thread per stream, the watcher took about
    0.2 ms of CPU per workflow more than the single Redis's: CPU the machine's nodes then lacked,
    which the `cluster` scenario counted against the Redis Cluster. This costs a parsed reply and a
    command written per completion. The slots' map is read once and a lost connection ends the
    watcher: the scenario moves no slot and kills no server."""

    BLOCK_MS = 1000   # an idle read times out and is sent again

    def __init__(self, seeds: Sequence[str], stream_keys: Sequence[str]) -> None:
        super().__init__()
        self._seeds = list(seeds)
        self._last = dict.fromkeys(stream_keys, "0-0")
        self._servers: dict[str, tuple[str, int]] = {}

    def _prepare(self) -> None:
        client = RedisCluster(startup_nodes=cluster_nodes(self._seeds), decode_responses=True)
        try:
            for key in self._last:
                newest = cast(StreamEntries, client.xrevrange(key, count=1))
                self._last[key] = newest[0][0] if newest else "0-0"
                node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]  # untyped in redis-py
                self._servers[key] = (node.host, int(node.port))
        finally:
            client.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        sockets: list[socket.socket] = []
        try:
            for key, server in self._servers.items():
                link = socket.create_connection(server)
                sockets.append(link)
                selector.register(link, selectors.EVENT_READ, (key, hiredis.Reader(encoding="utf-8")))
                self._read_next(link, key)
            while not self._stop.is_set():
                for ready, _ in selector.select(timeout=0.2):
                    key, reader = ready.data
                    self._take(cast(socket.socket, ready.fileobj), key, reader)
        finally:
            selector.close()
            for link in sockets:
                link.close()

    def _read_next(self, link: socket.socket, key: str) -> None:
        command: Any = ("XREAD", "COUNT", 5000, "BLOCK", self.BLOCK_MS, "STREAMS", key, self._last[key])
        link.sendall(hiredis.pack_command(command))   # (its stub types a tuple of one item only)

    def _take(self, link: socket.socket, key: str, reader: hiredis.Reader) -> None:
        data = link.recv(1 << 16)
        if not data:
            raise ConnectionError(f"the Redis Cluster master of {key} closed the watcher's connection")
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, Exception):
                raise reply
            if reply:   # nil: the read timed out with nothing new
                observed = time.monotonic()
                for _, entries in reply:
                    self._last[key] = self._record_ended(
                        [(entry_id, dict(zip(flat[::2], flat[1::2]))) for entry_id, flat in entries], observed)
            self._read_next(link, key)


class CeleryResultWatcher(CompletionWatcher):
    """Listens to the Redis result backend's per-task PUBLISH."""

    PATTERN = "celery-task-meta-*"

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self._client = redis.Redis.from_url(redis_url, decode_responses=True)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    def _prepare(self) -> None:
        self._pubsub.psubscribe(self.PATTERN)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                message = self._pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                observed = time.monotonic()
                meta = json.loads(message["data"])
                if meta.get("status") not in ("SUCCESS", "FAILURE"):
                    continue
                task_id = message["channel"].removeprefix("celery-task-meta-")
                self._record(task_id, Completion(meta["status"], time.time() * 1000, observed))
        finally:
            self._pubsub.close()
            self._client.close()


Starter = Callable[[int], str]


@dataclass
class LoadResult:
    """One measured run."""

    concurrency: int
    completed: int = 0               # completions inside the measured window
    total_completed: int = 0         # all completions, warm-up and drain included
    window_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)   # start call -> completion seen
    not_completed: int = 0           # ended in another status than COMPLETED/SUCCESS
    start_errors: int = 0
    timeouts: int = 0

    @property
    def per_s(self) -> float:
        return self.completed / self.window_s if self.window_s > 0 else 0.0


def closed_loop(start: Starter, watcher: CompletionWatcher, *, concurrency: int, warmup: int, count: int,
                time_limit_s: float, wait_timeout_s: float = 30.0) -> LoadResult:
    """`concurrency` threads each start a workflow and wait for it, again and again.

    The window opens at the `warmup`-th completion and closes at the
    `warmup + count`-th; the threads keep the pipeline full until then, so the
    window never sees the ramp-up or the drain. Bounded by `time_limit_s`.
    """
    result = LoadResult(concurrency)
    lock = threading.Lock()
    stop = threading.Event()
    numbers = itertools.count()
    marks: dict[str, float] = {}
    completed = 0
    deadline = time.monotonic() + time_limit_s

    def client() -> None:
        nonlocal completed
        while not stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                item_id = start(next(numbers))
            except Exception:  # a refused start is counted, not fatal
                with lock:
                    result.start_errors += 1
                time.sleep(0.05)
                continue
            done = watcher.wait(item_id, wait_timeout_s)
            with lock:
                if done is None:
                    result.timeouts += 1
                    continue
                completed += 1
                result.total_completed += 1
                if completed == warmup:
                    marks["open"] = done.observed
                elif warmup < completed <= warmup + count:
                    result.latencies_ms.append((done.observed - began) * 1000)
                    result.not_completed += done.status not in ("COMPLETED", "SUCCESS")
                    if completed == warmup + count:
                        marks["close"] = done.observed
                        stop.set()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    if warmup == 0:
        marks["open"] = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + wait_timeout_s)
    stop.set()
    result.completed = len(result.latencies_ms)
    if "open" in marks:
        result.window_s = marks.get("close", time.monotonic()) - marks["open"]
    return result


@dataclass
class OpenLoopResult:
    ids: list[str]
    rate: float
    start_errors: int
    max_lag_ms: float       # how late the latest start call began versus its schedule
    duration_s: float       # the first start due -> the last start call returned
    first_due: float        # time.monotonic() when the first start was due
    returned: list[float] = field(default_factory=list)   # time.monotonic() as each start call returned


def open_loop(start: Starter, *, rate: float, count: int, senders: int = 16,
              time_limit_s: float = 120.0) -> OpenLoopResult:
    """Start `count` workflows at `rate` per second (start i is due at i / rate)."""
    lock = threading.Lock()
    tickets = itertools.count()
    ids: list[str] = []
    returned: list[float] = []
    errors = 0
    max_lag = 0.0
    t0 = time.monotonic() + 0.05
    deadline = t0 + time_limit_s

    def sender() -> None:
        nonlocal errors, max_lag
        while True:
            n = next(tickets)
            if n >= count:
                return
            due = t0 + n / rate
            if due > deadline or time.monotonic() > deadline:
                return
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            lag = time.monotonic() - due
            try:
                item_id = start(n)
            except Exception:
                with lock:
                    errors += 1
                continue
            done = time.monotonic()
            with lock:
                ids.append(item_id)
                returned.append(done)
                max_lag = max(max_lag, lag)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(time_limit_s + 30)
    return OpenLoopResult(ids, rate, errors, max_lag * 1000, time.monotonic() - t0, t0, returned)


def rate_step(launched: OpenLoopResult, done: dict[str, Completion]) -> RateStep:
    """How an open loop went against its offered rate: the pace of its starts (as their calls
    returned) and of the completions of them (by the system's own end times)."""
    return RateStep(offered_per_s=launched.rate, started=len(launched.ids), started_per_s=pace(launched.returned),
                    completed=len(done), completed_per_s=pace([c.at_ms / 1000 for c in done.values()]))


def wait_all(watcher: CompletionWatcher, ids: list[str], timeout_s: float) -> dict[str, Completion]:
    """Wait for every id (in turn, within one overall deadline); the ones seen."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, Completion] = {}
    for item_id in ids:
        done = watcher.wait(item_id, max(0.0, deadline - time.monotonic()))
        if done is not None:
            found[item_id] = done
    return found
