"""The state store on Redis: the one implementation of `orchestrator.store.Store`.

Every change goes through one Lua script of `scripts` (one atomic step each); plain
commands are used only to read and to store definitions. Any node may start,
terminate, claim, heartbeat, report results and apply the decisions of the events it stored
(`apply_decisions` and `defer` without an epoch, guarded by the workflow's revision); the
leader's clocks call them fenced by its epoch, and only they call `expire_lease`,
`forget_ended` and `raise_epoch`.
Redis errors leave this module as `StoreUnavailable` only.

Every script call and the hot reads (a workflow's record, its status) made during one turn of
the event loop go to Redis in one pipeline (`coalesce.py`, `_pipelined`), each with its own reply
or error, as if sent alone: one write on the socket and one wake-up for the turn's replies. Those
pipelines have a pool of their own whose connections arm no timeout per write and per reply:
each pipeline has one deadline, `socket_timeout_s`, for its connection, its write and its replies
(`_execute`), which costs one timer where redis-py armed one per reply, one for the pool and one
more timer and task (`asyncio.wait_for`) for the write.

Links to Redis (`RedisLinks`): every command has `socket_timeout_s` to answer and a connection
`connect_timeout_s` to open, so a node cut from Redis answers UNAVAILABLE within them; blocking
reads have a small pool of their own, and past it wait without a connection (`receive_events`).
Quotas per namespace (`Quotas`) are counted and refused in the scripts (scripts.py).

With `min_replicas` N > 0, every write a caller is told about (marked `_acknowledged` below:
starts, results, signals, operations, published events, definitions) returns only once N
replicas hold it, through one `ReplicationBarrier` round shared by every write completed
meanwhile (`replication.py`, which also says why the node's own writes need no wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ClusterError, NoScriptError, ResponseError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...core import free_text
from ...core.namespaces import namespace_of, qualified, relative, topic_in
from ...core import state as m
from ...core.decider import Decision
from ...core.definitions import (needs_every_task_def, needs_every_workflow_def, referenced_task_names,
                                 snapshot_workflow_refs)
from ...core.schema import Snapshot, TaskDef, WorkflowDef
from ...core.errors import FailedPrecondition, NotFound, StaleEpoch
from ...core.statuses import TERMINAL_WORKFLOW, WORKFLOW_STATUSES, TaskStatus, WorkflowStatus
from ...core.events import DEAD_LETTER_TOPIC, BusEvent
from ..protocol import (ActionOutcome, ApplyOutcome, ApplyResult, ClaimedTask, DecisionRefused, Due, QueueStats,
                        FirstDecision, QuotaExceeded, Quotas, ResultAck, ResultOutcome, SearchPage, Started, Stepped,
                        StoreHealth, StoreUnavailable, Topic, TopicInfo, WorkerResult)
from . import lean_pipeline, pubsub, scripts
from .coalesce import Coalesced
from .codec import decision_parts, dumps, encoded_decision, parse_workflow, snapshot_digest, snapshot_ref
from .ended_scan import oldest_ended
from .errors import REDIS_UNAVAILABLE, refusal_text, refuses_writes
from .keys import Keys, draw_id, partition_of_key
from .ready_partitions import ReadyPartitions
from .replication import ReplicationBarrier, ShardedBarrier
from .single_flight import SingleFlight

T = TypeVar("T")
log = logging.getLogger(__name__)
CoroutineMethod = TypeVar("CoroutineMethod", bound=Callable[..., Awaitable[Any]])

IDEMPOTENCY_TTL_S = 7 * 86400
DEFAULT_TOPIC_MAX_LEN = 100_000   # events a topic keeps unless configured (scripts.COMMON says the same)
# Connections one node keeps to Redis for its commands. redis-py 8 caps a pool at 100 and then
# fails commands ("Too many connections"); a busy node (concurrent starts and results) can want
# more, so the pool is larger and a command waits for a free connection (up to POOL_WAIT_S)
# instead of failing. Blocking reads never take these (`RedisLinks.blocking_connections`). The
# loop turns' pipelines have a pool of the same size of their own, whose wait for a connection
# counts in each pipeline's one deadline (`RedisStore._execute`).
MAX_CONNECTIONS = 512
POOL_WAIT_S = 5.0
MAX_BLOCK_MS = 60_000        # the longest blocking read the store makes (the API asks for at most 30 s)
RECHECK_S = 1.0              # a wait without a blocking connection reads again at least this often
SENTINEL_TIMEOUT_S = 1.0     # a Sentinel's answer (one that does not answer: the next is asked)
WAIT_GROUP_PREFIX = "wait:"   # the consumer group of a topic WAIT tasks wait on
MAX_TASK_LOGS = 200          # log lines kept per task (the newest)
MAX_LOG_CHARS = 4096         # characters kept of one log line
SNAPSHOT_CACHE = 256        # snapshot texts this node keeps (each shared by many workflows)
REPLICA_TIMEOUT_MS = 1000   # how long an acknowledged write waits for `min_replicas` replicas by default
WATCH_TTL_MS = 15_000       # a watch's `changed` messages are published this long after its last renewal
WATCH_RENEW_S = 5.0         # how often a watch renews it (well inside the TTL)
AWAITED = 4096              # workflows this node said it waits for, remembered (the most recent)
ENDED_ROWS = 256            # records read back by the steps that ended them, until their waiter takes them
# only records this small are read back (a waiter that went away leaves its row: 256 of them hold at most
# 64 MiB); a larger one is loaded by its waiter, as before
ENDED_ROW_MAX_BYTES = 256 * 1024
# A namespace's workflows in flight, for its quota, are counted over every partition (one round trip);
# a count is reused for a second while the namespace is far from its quota (`_in_flight_elsewhere`).
IN_FLIGHT_FRESH_S = 1.0
IN_FLIGHT_MARGIN = 1000
IN_FLIGHT_NAMESPACES = 1024   # namespaces whose counts are remembered
LIMITED_KNOWN_S = 10.0        # a type found to have limits is claimed through its limiter this long
OUTBOX_BATCH = 256            # events relayed per partition per call
UNLEASED_AFTER_MS = 5_000     # a counted attempt without a lease this long after its claim is taken out
UNLEASED_BATCH = 1_000        # counted attempts of one type looked at per sweep
# A Redis Cluster client tries a command again after a connection error, a CLUSTERDOWN or an uncovered
# slot, on a refreshed map of the slots: once, at once. More tries with pauses would hold up the whole
# loop turn's replies (every master's) while one master is down; callers retry what is safe to retry.
CLUSTER_RETRIES = 1
MASTER_DOWN_S = 0.2   # a Redis Cluster master that did not answer is not sent calls for this long
NEW_IDS_AVOID_S = 5.0   # and new workflow ids avoid its partitions this long, unless it answers again
# A loop turn's replies from a Redis Cluster's masters are handed over together when they all come
# within this time (the callers then resume in one turn, and what they send next, to Redis and to
# the workers, goes in one batch); a master slower than that no longer holds up the others' callers.
SETTLE_TOGETHER_S = 0.005


def _unavailable_as_store_error(method: CoroutineMethod) -> CoroutineMethod:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except REDIS_UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        except (ResponseError, ClusterError) as exc:
            if refuses_writes(exc):   # too few replicas, a demoted master, a moving slot: nothing was written
                raise StoreUnavailable(refusal_text(exc)) from exc
            raise
    return wrapper  # type: ignore[return-value]


def _acknowledged(method: CoroutineMethod) -> CoroutineMethod:
    """A write whose answer a caller is given: with `min_replicas`, the answer waits until that
    many replicas hold what the call wrote or read (a refusal such as "already completed" too,
    as it may describe a write not yet replicated). Raises StoreUnavailable when they do not
    confirm in time: the write is then stored on the master, not acknowledged."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def wrapper(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        barrier = self.replication
        if barrier is None:
            return await method(self, *args, **kwargs)
        where = self._written_at(signature.bind(self, *args, **kwargs).arguments)
        try:
            answer = await method(self, *args, **kwargs)
        except (NotFound, FailedPrecondition):
            await barrier.confirmed(where)
            raise
        await barrier.confirmed(where)
        return answer
    return wrapper  # type: ignore[return-value]


Settle = Callable[[int, Any], None]   # hands one call's reply over early (Coalesced's `settling`)


class Call(NamedTuple):
    """One command of a loop turn's pipeline: a script call (`script` its Lua source, `args` its
    arguments, `at` its KEYS[1]: the prefix of the partition it works in, or the global one) or,
    with `script` empty, a plain read (`args` the command and its arguments)."""
    script: str
    args: Sequence[Any]
    at: str = ""


class _CachedSnapshot:
    """A snapshot as this node last read it, with the definitions revision it was read at."""

    def __init__(self, revision: int, snapshot: Snapshot) -> None:
        self.revision = revision
        self.snapshot = snapshot
        self.text = dumps(snapshot)
        self.digest = snapshot_digest(self.text)
        self.stored: set[int] = set()   # the partitions known to hold it: starts there send only its digest
        self.variables = dumps(snapshot["workflow"].get("variables", {}))


@dataclass(frozen=True)
class RedisLinks:
    """How long a node waits for Redis, and how many connections its waiting reads may hold.

    Every command has `socket_timeout_s` to be answered and a new connection `connect_timeout_s`
    to open, so a node whose link to Redis is cut (a black hole, which TCP reports only after
    about 15 minutes) answers UNAVAILABLE within them. A command that timed out is not sent
    again (it may have been applied: the caller hears UNAVAILABLE and retries what is safe to
    retry); one whose connection broke is, once, on a new connection.

    Blocking reads (a subscription's ReceiveEvents, the node's own event consumers, a
    WatchWorkflow's subscription) hold a connection for their whole wait, so they get a pool of
    their own: at most `blocking_connections` at once, each with its own wait plus
    `socket_timeout_s` to be answered. Past that a wait is not refused: it holds no connection
    at all and reads without blocking whenever the topic's broadcast says something was
    published (a watch: every second), so a client sees what it asked for, a little later at
    worst, and the node's other calls never queue behind waiting readers."""

    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    blocking_connections: int = 64

    def options(self, socket_timeout_s: float | None = None, *, bounded_by_caller: bool = False) -> dict[str, Any]:
        """A connection's timeouts and retry (see above), for a pool. `bounded_by_caller`: no
        timeout per write and per reply, for the pool of the loop turns' pipelines, each of which
        `RedisStore._execute` bounds by one deadline of `socket_timeout_s` (connect still has its own)."""
        return {"socket_timeout": None if bounded_by_caller else socket_timeout_s or self.socket_timeout_s,
                "socket_connect_timeout": self.connect_timeout_s, "socket_keepalive": True,
                "health_check_interval": 5,
                "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))}

    @property
    def blocking_timeout_s(self) -> float:
        """The socket timeout of the pool for blocking reads: the longest wait and then some (each
        read is also bounded by its own wait plus `socket_timeout_s`)."""
        return MAX_BLOCK_MS / 1000 + self.socket_timeout_s


class _WaitingReads:
    """The connections blocking reads hold now, and how many waits found none free."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.without_connection = 0   # waits that found every blocking connection taken (for metrics)

    def take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give(self) -> None:
        self.in_use = max(0, self.in_use - 1)


@dataclass(frozen=True)
class RedisAccess:
    """How a node proves itself to Redis: an ACL user and password, and TLS (the CA that signed
    Redis's certificate; this node's certificate when Redis asks for one)."""

    username: str | None = None
    password: str | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.ca_file or self.cert_file)

    def connection_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.tls:
            options.update(ssl=True, ssl_ca_certs=self.ca_file or None, ssl_certfile=self.cert_file or None,
                           ssl_keyfile=self.key_file or None, ssl_cert_reqs="required")
        return options

    def url_options(self, url: str) -> dict[str, Any]:
        """For a pool built from a URL: TLS is the URL's scheme (rediss://), so `ssl` is left out."""
        options = self.connection_options()
        options.pop("ssl", None)
        if self.tls and not url.startswith("rediss://"):
            raise ValueError("Redis TLS files are given but redis_url is not rediss://")
        return options


class RedisStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str = "wfo",
                 idempotency_ttl_s: int = IDEMPOTENCY_TTL_S, *, max_value_bytes: int = 1024 * 1024,
                 max_workflow_bytes: int = 16 * 1024 * 1024, min_replicas: int = 0,
                 replica_timeout_ms: int = REPLICA_TIMEOUT_MS, barrier_client: aioredis.Redis | None = None,
                 blocking_client: aioredis.Redis | RedisCluster | None = None, links: RedisLinks | None = None,
                 quotas: Quotas | None = None, pipeline_client: aioredis.Redis | RedisCluster | None = None,
                 connect_master: Callable[[str], aioredis.Redis] | None = None) -> None:
        """`max_value_bytes`: the largest input, output or variables a decision may store (what the
        API accepts from a client or a worker, so a resolved task input cannot outgrow it);
        `max_workflow_bytes`: the largest a workflow's record may grow to; `min_replicas`: the
        replicas that must hold an acknowledged write before its answer (0: the master alone),
        within `replica_timeout_ms` (else StoreUnavailable), asked on `barrier_client` (a client
        of the same Redis with a pool of its own; by default `client`), or on a Redis Cluster on a
        client of the master that took the write (`connect_master`, by its "host:port"); `blocking_client`: the
        client of the pool for blocking reads (by default `client`), at most
        `links.blocking_connections` of them at once; `quotas`: what each namespace may hold;
        `pipeline_client`: the client of the loop turns' pipelines (by default `client`), whose
        connections may arm no timeouts of their own (`RedisLinks.options(bounded_by_caller=True)`):
        each pipeline is bounded by `links.socket_timeout_s` as a whole."""
        # Any: redis-py annotates every reply as bytes | str whatever `decode_responses` says;
        # this client decodes, and the parsing below checks shapes where they matter.
        self._redis: Any = client
        self._pipelines: Any = pipeline_client or client
        self._on_cluster = isinstance(client, RedisCluster)   # `from_cluster`: its pipelines go per master
        # on one Redis every loop turn's pipeline takes its connection from this one pool
        pipelines = pipeline_client or client
        self._kept: dict[int, lean_pipeline.PoolConnections] = {}   # by id of a pool this store owns
        self._pipeline_pool = None if isinstance(pipelines, RedisCluster) else self._connections_of(pipelines)
        self._down: dict[str, float] = {}   # on a Redis Cluster: master -> when it last did not answer (monotonic)
        self.keys = Keys(prefix)
        self._global = self.keys.global_prefix
        # what every script is told besides its own arguments: where the global slot is, and whether to
        # fence a moving slot (only a Redis Cluster moves slots: on one Redis the fence is a command for nothing)
        self._common: dict[str, Any] = {"g": self._global, **({"f": 1} if self._on_cluster else {})}
        self._ready = ReadyPartitions(self._partition_of)
        self._scans: SingleFlight[list[tuple[int, int]]] = SingleFlight()   # by task type: its whole look under way
        self._in_flight: dict[str, tuple[float, list[int]]] = {}   # namespace -> (read at, count per partition)
        self._in_flight_reads: SingleFlight[list[int]] = SingleFlight()   # by namespace: its count being read
        self._limited: dict[str, float] = {}   # task type -> when a claim last found it has limits
        self.idempotency_ttl_s = idempotency_ttl_s
        self.max_value_bytes = max_value_bytes
        self.max_workflow_bytes = max_workflow_bytes
        self._shas: dict[str, str] = {}   # Lua source -> its SHA1 (what EVALSHA names it by)
        # every script call and hot read of one loop turn (results, claims, heartbeats, starts,
        # loads come in bursts) goes to Redis in one pipeline, each with its own reply; one such
        # pipeline (to each master it reaches) is on its way at a time, what comes meanwhile goes
        # in the next (coalesce.py says what that bought and how a late master is kept apart)
        self._calls: Coalesced[Call] = Coalesced(self._pipelined, REDIS_UNAVAILABLE, settling=True,
                                                 max_in_flight=1)
        self._snapshots: dict[tuple[str, int], _CachedSnapshot] = {}
        self._snapshot_texts: OrderedDict[str, str] = OrderedDict()   # digest -> text, most recent last
        self._barrier_client: Any = barrier_client
        self._blocking: Any = blocking_client or client
        self.links = links or RedisLinks()
        self.waiting_reads = _WaitingReads(self.links.blocking_connections)
        self.quotas = quotas or Quotas()
        self._published: dict[str, tuple[asyncio.Event, int]] = {}   # topic -> (its next broadcast, waiters)
        # this store's own `done` channel: the ends of the workflows it said it waits for (`expect_end`)
        self.listener_id = uuid.uuid4().hex[:16]
        # the workflows this node waits for (`expect_end`, a start that expects its end), and the
        # records of those this node's own step ended, read in that step's round trip (`ended_state`)
        self._awaited: OrderedDict[str, None] = OrderedDict()
        self._ended_rows: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._published_listener: asyncio.Task[None] | None = None
        self.replication: ReplicationBarrier | ShardedBarrier | None = None
        if min_replicas > 0 and self._on_cluster:
            self.replication = ShardedBarrier(self._master_of, connect_master or _unconnectable, min_replicas,
                                              replica_timeout_ms)
        elif min_replicas > 0:
            self.replication = ReplicationBarrier(barrier_client or client, self.keys("barrier"), min_replicas,
                                                  replica_timeout_ms, on_new_master=self._drop_connections)

    @classmethod
    def from_url(cls, url: str, prefix: str = "wfo", *, max_value_bytes: int = 1024 * 1024,
                 idempotency_ttl_s: int = IDEMPOTENCY_TTL_S, access: RedisAccess | None = None,
                 min_replicas: int = 0, replica_timeout_ms: int = REPLICA_TIMEOUT_MS,
                 links: RedisLinks | None = None, quotas: Quotas | None = None) -> RedisStore:
        links = links or RedisLinks()
        secured = access.url_options(url) if access else {}

        def client(connections: int, socket_timeout_s: float | None = None, *,
                   bounded_by_caller: bool = False) -> aioredis.Redis:
            # the pipelines' wait for a free connection is within their own deadline (`_execute`)
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=connections, timeout=None if bounded_by_caller else POOL_WAIT_S,
                decode_responses=True, **links.options(socket_timeout_s, bounded_by_caller=bounded_by_caller),
                **secured)
            return aioredis.Redis(connection_pool=pool)
        # blocking reads: their own pool, unbounded by redis-py; `waiting_reads` bounds what it holds
        blocking = aioredis.Redis(connection_pool=aioredis.ConnectionPool.from_url(
            url, decode_responses=True, **links.options(links.blocking_timeout_s), **secured))
        # the barrier's WAIT may take its whole timeout: its socket must wait longer than that
        barrier = (client(1, max(links.socket_timeout_s, replica_timeout_ms / 1000 + 1)) if min_replicas > 0
                   else None)
        return cls(client(MAX_CONNECTIONS), prefix, idempotency_ttl_s, max_value_bytes=max_value_bytes,
                   min_replicas=min_replicas, replica_timeout_ms=replica_timeout_ms, barrier_client=barrier,
                   blocking_client=blocking, links=links, quotas=quotas,
                   pipeline_client=client(MAX_CONNECTIONS, bounded_by_caller=True))

    @classmethod
    def from_sentinels(cls, sentinels: list[str], master: str, prefix: str = "wfo", db: int = 0,
                       *, max_value_bytes: int = 1024 * 1024, idempotency_ttl_s: int = IDEMPOTENCY_TTL_S,
                       access: RedisAccess | None = None, min_replicas: int = 0,
                       replica_timeout_ms: int = REPLICA_TIMEOUT_MS, links: RedisLinks | None = None,
                       quotas: Quotas | None = None) -> RedisStore:
        """Follow the master that Sentinel names; after a failover, reconnect to the new one.
        `access` (the ACL user and TLS) applies to the Sentinels and to the master alike."""
        links = links or RedisLinks()
        addresses = [(host, int(port)) for host, port in (s.rsplit(":", 1) for s in sentinels)]
        options = access.connection_options() if access else {}
        sentinel = Sentinel(addresses, sentinel_kwargs={**options, "socket_timeout": SENTINEL_TIMEOUT_S,
                                                        "socket_connect_timeout": links.connect_timeout_s},
                            **options)

        def client(connections: int, socket_timeout_s: float | None = None, *,
                   bounded_by_caller: bool = False) -> aioredis.Redis:
            found: aioredis.Redis = sentinel.master_for(
                master, decode_responses=True, db=db, max_connections=connections,
                **links.options(socket_timeout_s, bounded_by_caller=bounded_by_caller))
            return found
        # the barrier's WAIT may take its whole timeout: its socket must wait longer than that
        barrier = (client(1, max(links.socket_timeout_s, replica_timeout_ms / 1000 + 1)) if min_replicas > 0
                   else None)
        return cls(client(MAX_CONNECTIONS), prefix, idempotency_ttl_s, max_value_bytes=max_value_bytes,
                   min_replicas=min_replicas, replica_timeout_ms=replica_timeout_ms, barrier_client=barrier,
                   blocking_client=client(2**31, links.blocking_timeout_s), links=links, quotas=quotas,
                   pipeline_client=client(MAX_CONNECTIONS, bounded_by_caller=True))

    @classmethod
    def from_cluster(cls, seeds: list[str], prefix: str = "wfo", *, max_value_bytes: int = 1024 * 1024,
                     idempotency_ttl_s: int = IDEMPOTENCY_TTL_S, access: RedisAccess | None = None,
                     min_replicas: int = 0, replica_timeout_ms: int = REPLICA_TIMEOUT_MS,
                     links: RedisLinks | None = None, quotas: Quotas | None = None) -> RedisStore:
        """The state on a Redis Cluster found through `seeds` (host:port of some of its servers).

        redis-py's cluster client routes each command and each EVALSHA by its (first) key, follows
        MOVED and ASK, and after a connection error reads the map of slots again (a failover: the
        promoted replica). Every script touches one slot (scripts.py), and the few MULTI blocks keep
        to the global slot, which its transactional pipeline allows. A plain command that times out
        may be sent again by it (the single-Redis clients resend only after a broken connection);
        what the node sends by plain commands is reads and definitions, safe to repeat.

        With `min_replicas`, an acknowledged write waits for a round of WAIT on the master that took it
        (replication.ShardedBarrier), on a connection of its own to that master."""
        links = links or RedisLinks()
        secured = access.connection_options() if access else {}
        nodes = [ClusterNode(host, int(port)) for host, port in (seed.rsplit(":", 1) for seed in seeds)]

        def client(connections: int, socket_timeout_s: float | None = None, *,
                   bounded_by_caller: bool = False) -> RedisCluster:
            options = links.options(socket_timeout_s, bounded_by_caller=bounded_by_caller)
            options["retry"] = Retry(NoBackoff(), CLUSTER_RETRIES)
            # `require_full_coverage=False`: while a dead master's slots wait for its replica, the
            # other masters' partitions go on; `connections` is per server
            return RedisCluster(startup_nodes=nodes, decode_responses=True, max_connections=connections,
                                require_full_coverage=False, **options, **secured)
        def connect_master(address: str) -> aioredis.Redis:
            # the barrier's WAIT may take its whole timeout: its socket must wait longer than that
            host, port = address.rsplit(":", 1)
            return aioredis.Redis(host=host, port=int(port), decode_responses=True, max_connections=1,
                                  **links.options(max(links.socket_timeout_s, replica_timeout_ms / 1000 + 1)),
                                  **secured)
        return cls(client(MAX_CONNECTIONS), prefix, idempotency_ttl_s, max_value_bytes=max_value_bytes,
                   blocking_client=client(2**31, links.blocking_timeout_s), links=links, quotas=quotas,
                   pipeline_client=client(MAX_CONNECTIONS, bounded_by_caller=True), min_replicas=min_replicas,
                   replica_timeout_ms=replica_timeout_ms, connect_master=connect_master)

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    async def _drop_connections(self) -> None:
        """After a failover: every connection is made again, to the master Sentinel names now."""
        for client in dict.fromkeys((self._redis, self._pipelines, self._blocking)):
            if isinstance(client, RedisCluster):   # a pool per server (the cluster finds masters itself)
                await asyncio.gather(*(node.disconnect() for node in client.get_nodes()))
            else:
                await client.connection_pool.disconnect()

    async def close(self) -> None:
        if self._published_listener is not None:
            self._published_listener.cancel()
            await asyncio.gather(self._published_listener, return_exceptions=True)
        if self.replication is not None:
            await self.replication.close()
        if self._barrier_client is not None:
            await self._barrier_client.aclose()
        if self._blocking is not self._redis:
            await self._blocking.aclose()
        if self._pipelines is not self._redis:
            await self._pipelines.aclose()
        await self._redis.aclose()

    def _refusal(self, reply: str, namespace: str) -> QuotaExceeded:
        """The QuotaExceeded a script's 'TOPICS <n>' (GROUPS, HANDLERS, WORKFLOWS) stands for."""
        what, _, count = reply.partition(" ")
        setting, noun, limit, then = {
            "WORKFLOWS": ("quota_workflows_in_flight", "workflows in flight (running, paused or compensating)",
                          self.quotas.workflows_in_flight, "start it once some have ended"),
            "HANDLERS": ("quota_event_handlers", "event handlers", self.quotas.event_handlers,
                         "remove one first"),
            "TOPICS": ("quota_topics", "topics", self.quotas.topics,
                       "a topic counts from its first use (published to, configured, subscribed to, handled or "
                       "waited on): use one of them"),
            "GROUPS": ("quota_consumer_groups", "subscription groups", self.quotas.consumer_groups,
                       "a group counts from its first ReceiveEvents: use one of them"),
        }[what]
        return QuotaExceeded(f"namespace '{namespace or '(default)'}' has {count} {noun}, all its quota allows "
                             f"({setting}: {limit}); nothing was written: {then}, or raise the quota")

    async def _run(self, source: str, named: dict[str, Any], *blobs: str, at: str) -> Any:
        """Run a script in the partition (or the global slot) whose prefix is `at`, with named
        scalar arguments (ARGV[1]) and pre-encoded blobs after them, in the pipeline of this loop
        turn's calls; raises its own error as if sent alone."""
        return await self._calls.call(Call(source, self._arguments(named, *blobs), at))

    def _arguments(self, named: dict[str, Any], *blobs: str) -> list[str]:
        return [dumps({**self._common, **named}), *blobs]

    def _partition_of(self, workflow_id: str) -> int:
        return self.keys.partition_of(workflow_id)

    def _written_at(self, arguments: dict[str, Any]) -> str:
        """Where an acknowledged call writes (`_acknowledged`): its workflow's partition (a call naming
        a `workflow_id`, or a worker's `result`), else the global slot."""
        workflow_id = arguments.get("workflow_id") or getattr(arguments.get("result"), "workflow_id", "")
        return self._at(workflow_id) if workflow_id else self._global

    def _at(self, workflow_id: str) -> str:
        """The prefix of the partition a workflow lives in (the KEYS[1] of its scripts)."""
        return self.keys.partition(self.keys.partition_of(workflow_id))

    def new_workflow_id(self, idempotency_key: str = "") -> str:
        """A new workflow id; for a start with an idempotency key, one in the key's partition. Without
        one, on a Redis Cluster one of whose masters did not answer of late (`_on_master`), an id in
        a partition another master serves: a new workflow need not wait for a failover to end."""
        if idempotency_key:
            return draw_id(partition_of_key(idempotency_key, self.keys.partitions), self.keys.partitions)
        workflow_id = uuid.uuid4().hex
        if self._down and self._master_down(self._at(workflow_id)):
            up = [p for p in self.keys.all_partitions() if not self._master_down(self.keys.partition(p))]
            if up:
                return draw_id(random.choice(up), self.keys.partitions)
        return workflow_id

    def _master_down(self, key: str) -> bool:
        """Whether the master serving `key` failed a call within NEW_IDS_AVOID_S, none answered since."""
        down_at = self._down.get(self._master_of(key))
        return down_at is not None and time.monotonic() - down_at < NEW_IDS_AVOID_S

    def new_workflow_id_beside(self, workflow_id: str) -> str:
        """A new workflow id in the partition of `workflow_id` (a workflow its decision starts)."""
        return draw_id(self.keys.partition_of(workflow_id), self.keys.partitions)

    @_unavailable_as_store_error
    async def prepare(self, partitions: int = 0) -> None:
        """Settle the number of partitions with the one stored (set now, if this is the first node of
        the cluster's state). `partitions`: the node's setting (0: adopt the stored number, else the
        default); a number that differs from the stored one is refused, as is a state kept in the
        layout from before partitions (`migrate.py` moves it)."""
        wanted = partitions or self.keys.partitions
        Keys(self.prefix, wanted)   # checks the range before anything is written
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.partition_count, wanted, nx=True)
            pipe.get(self.keys.partition_count)
            for old_key in ("defs:rev", "epoch", "ended"):   # one EXISTS each: keys of no common slot
                pipe.exists(f"{self.prefix}:{old_key}")
            created, stored, *old_keys = await pipe.execute()
        unpartitioned = any(old_keys)
        stored_count = int(stored)
        if created and unpartitioned:
            await self._redis.delete(self.keys.partition_count)
        if unpartitioned:
            raise FailedPrecondition(
                f"Redis holds the state of cluster prefix '{self.prefix}' in the layout from before partitions "
                "(keys without hash tags), which this version does not read: stop every node of this cluster and "
                "move it with `orchestrator migrate-state --redis-url <url> --cluster <name>` (README, 'Moving a "
                "state from before partitions'); or run the version that wrote it")
        if partitions and stored_count != partitions:
            raise FailedPrecondition(
                f"redis_partitions is {partitions} but this cluster's state was created with {stored_count} "
                "partitions, which cannot change; leave redis_partitions out (or set it to "
                f"{stored_count})")
        if stored_count != self.keys.partitions:
            self.keys = Keys(self.prefix, stored_count)

    # ------------------------------------------------------------- definitions

    @_unavailable_as_store_error
    @_acknowledged
    async def put_task_def(self, definition: TaskDef) -> None:
        name = definition["name"]
        concurrency, rate = definition["concurrentExecLimit"], definition["rateLimitPerFrequency"]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.task_defs, name, dumps(definition))
            if concurrency or rate:
                period_ms = int(definition["rateLimitFrequencyInSeconds"] * 1000)
                pipe.hset(self.keys.limits, name, f"{concurrency}|{rate}|{period_ms}")
            else:
                pipe.hdel(self.keys.limits, name)
            if not concurrency:   # only a concurrency limit counts the tasks in progress (scripts.drop_lease)
                pipe.delete(self.keys("inprog", name))
            pipe.incr(self.keys.defs_revision)
            revision = (await pipe.execute())[-1]
        # each partition's copy of the limits: its scripts read them there (scripts.limits_of)
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in self.keys.all_partitions():
                if concurrency or rate:
                    pipe.hset(self.keys.in_partition(p, "limits"), name, f"{concurrency}|{rate}|{period_ms}")
                else:
                    pipe.hdel(self.keys.in_partition(p, "limits"), name)
            await pipe.execute()
        await self._raise_copies(int(revision))

    @_unavailable_as_store_error
    async def get_task_def(self, name: str) -> TaskDef | None:
        raw = await self._redis.hget(self.keys.task_defs, name)
        return json.loads(raw) if raw else None

    @_unavailable_as_store_error
    async def task_defs(self, names: Iterable[str] | None = None) -> dict[str, TaskDef]:
        key = self.keys.task_defs
        if names is None:
            return {k: json.loads(v) for k, v in (await self._redis.hgetall(key)).items()}
        wanted = sorted(set(names))
        if not wanted:
            return {}
        values = await self._redis.hmget(key, wanted)
        return {n: json.loads(v) for n, v in zip(wanted, values) if v}

    @_unavailable_as_store_error
    @_acknowledged
    async def put_workflow_def(self, definition: WorkflowDef) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.workflow_def(definition["name"]), str(definition["version"]), dumps(definition))
            pipe.sadd(self.keys.workflow_names, definition["name"])
            pipe.incr(self.keys.defs_revision)
            revision = (await pipe.execute())[-1]
        await self._raise_copies(int(revision))

    async def _raise_copies(self, revision: int) -> None:
        """Each partition's copy of the definitions revision, which its starts check in their own
        slot (scripts.START_WORKFLOW), raised to `revision`: a start there from an older snapshot
        is refused from now on (one racing this call is as if it came just before it)."""
        await self._calls.answers([Call(scripts.RAISE_COPY, [str(revision)], self.keys.in_partition(p, "defsrev"))
                                   for p in self.keys.all_partitions()])

    @_unavailable_as_store_error
    async def get_workflow_def(self, name: str, version: int = 0) -> WorkflowDef | None:
        key = self.keys.workflow_def(name)
        if version:
            raw = await self._redis.hget(key, str(version))
            return json.loads(raw) if raw else None
        versions = await self._redis.hkeys(key)
        if not versions:
            return None
        raw = await self._redis.hget(key, max(versions, key=int))
        return json.loads(raw) if raw else None

    @_unavailable_as_store_error
    async def workflow_defs(self, name: str = "") -> list[WorkflowDef]:
        if name:
            versions = await self._redis.hgetall(self.keys.workflow_def(name))
            return [json.loads(versions[v]) for v in sorted(versions, key=int)]
        names = sorted(await self._redis.smembers(self.keys.workflow_names))
        found = [await self.get_workflow_def(n) for n in names]
        return [d for d in found if d]

    # ------------------------------------------------------------- workflows

    @_unavailable_as_store_error
    async def snapshot(self, definition: WorkflowDef) -> Snapshot:
        """Sub-workflows and the failure workflow are resolved now ("name:version", version 0 =
        the latest at start), so a run never changes because a definition was re-registered.
        A definition that picks task types at run time (a dynamic fork of task specs) gets
        every registered task definition, since any of them may be named; one that names a
        workflow (or its version) to start only at run time (`${...}`) gets every version of
        every registered workflow definition.

        Only definitions of `definition`'s own namespace are looked up, and the snapshot keys
        them by the names the definition uses (relative, see core/namespaces.py)."""
        namespace = namespace_of(definition["name"])
        workflows: dict[str, WorkflowDef] = {}
        task_names = set(referenced_task_names(definition))
        every_task_def = needs_every_task_def(definition)
        pending = [definition]
        if needs_every_workflow_def(definition):
            for latest in await self.workflow_defs():
                if namespace_of(latest["name"]) != namespace:
                    continue
                workflows.setdefault(f"{relative(latest['name'])}:0", latest)
                for found in await self.workflow_defs(latest["name"]):   # a version may be an expression too
                    workflows.setdefault(f"{relative(found['name'])}:{found['version']}", found)
                    task_names |= referenced_task_names(found)
                    every_task_def = every_task_def or needs_every_task_def(found)
        while pending:
            current = pending.pop()
            for node_ref, version in snapshot_workflow_refs(current):
                key = f"{node_ref}:{version}"
                if key in workflows:
                    continue
                needed = await self.get_workflow_def(qualified(namespace, node_ref), version)
                if needed is None:
                    raise FailedPrecondition(f"workflow '{relative(current['name'])}' needs workflow definition "
                                             f"'{node_ref}' (version {version or 'latest'}), which is not registered")
                workflows[key] = needed
                task_names |= referenced_task_names(needed)
                every_task_def = every_task_def or needs_every_task_def(needed)
                pending.append(needed)
        stored_defs = await self.task_defs(None if every_task_def else (qualified(namespace, n) for n in task_names))
        task_defs = {relative(n): d for n, d in stored_defs.items() if namespace_of(n) == namespace}
        missing = task_names - set(task_defs)
        if missing:
            raise FailedPrecondition(f"task definition(s) {', '.join(sorted(missing))} used by "
                                     f"'{relative(definition['name'])}' are no longer registered")
        return {"workflow": definition, "taskDefs": task_defs, "subWorkflows": workflows}

    @_unavailable_as_store_error
    @_acknowledged
    async def start_workflow(self, workflow_id: str, snapshot: Snapshot, workflow_input: dict[str, Any],
                             correlation_id: str, idempotency_key: str, now_ms: int) -> tuple[str, bool]:
        """Start from a snapshot as given (no check that it is still the latest)."""
        outcome = await self._start_from(_CachedSnapshot(-1, snapshot), workflow_id, workflow_input, correlation_id,
                                         idempotency_key, now_ms)
        assert outcome is not None
        return outcome.workflow_id, outcome.created

    @_unavailable_as_store_error
    @_acknowledged
    async def start_by_name(self, name: str, version: int, workflow_id: str, workflow_input: dict[str, Any],
                            correlation_id: str, idempotency_key: str, now_ms: int, *,
                            expect_end: bool = False, decide: FirstDecision | None = None) -> Started:
        """Start the definition `name` (version 0 = latest) from this node's snapshot cache;
        `expect_end`: a workflow this call creates is one this node waits for (see `expect_end`);
        `decide`: its first decision goes in the same script (see the protocol).

        Every registration bumps the definitions revision; the start script refuses a
        snapshot taken at an older revision, and the cache is refilled. So a start costs one
        round trip, and never runs a definition older than the latest registration."""
        for _ in range(3):
            cached = self._snapshots.get((name, version)) or await self._fill_snapshot(name, version)
            outcome = await self._start_from(cached, workflow_id, workflow_input, correlation_id,
                                             idempotency_key, now_ms, expect_end, decide)
            if outcome is not None:
                return outcome
            self._snapshots.clear()
        raise FailedPrecondition("definitions keep changing during this start; try again")

    async def _fill_snapshot(self, name: str, version: int) -> _CachedSnapshot:
        revision = int(await self._redis.get(self.keys.defs_revision) or 0)   # before reading: see above
        definition = await self.get_workflow_def(name, version)
        if definition is None:
            which = f" version {version}" if version else ""
            raise NotFound(f"no workflow definition named '{name}'{which}; register it first")
        cached = self._snapshots[(name, version)] = _CachedSnapshot(revision, await self.snapshot(definition))
        return cached

    async def _start_from(self, cached: _CachedSnapshot, workflow_id: str, workflow_input: dict[str, Any],
                          correlation_id: str, idempotency_key: str, now_ms: int,
                          expect_end: bool = False, decide: FirstDecision | None = None) -> Started | None:
        definition = cached.snapshot["workflow"]
        meta = {"name": definition["name"], "version": definition["version"], "input": workflow_input,
                "correlationId": correlation_id}
        meta_text = dumps(meta)
        state = self._created(cached, workflow_id, meta_text, now_ms, expect_end)
        decision, envelope, handed_to = None, "", None
        first = await decide(state) if decide is not None else None
        if first is not None:
            decision, handed_to = first
            prepared = self._prepared(None, state, decision, now_ms, handed_to)
            if isinstance(prepared, list):
                envelope = prepared[1]
            else:   # refused (too large, say): created undecided, the event path decides (and fails) it
                decision = None
        partition = self.keys.partition_of(workflow_id)
        if idempotency_key and partition_of_key(idempotency_key, self.keys.partitions) != partition:
            raise ValueError(f"workflow id '{workflow_id}' is not in the partition of its idempotency key: "
                             "take the id from new_workflow_id(key)")
        at = self.keys.partition(partition)
        named = {"id": workflow_id, "idem": idempotency_key, "now": now_ms, "name": definition["name"],
                 "corr": correlation_id, "idem_ttl": self.idempotency_ttl_s, "defs_rev": cached.revision,
                 "snap": cached.digest, "quota": self.quotas.workflows_in_flight,
                 "waiter": self.listener_id if expect_end else ""}
        if self.quotas.workflows_in_flight > 0:
            named["elsewhere"] = await self._in_flight_elsewhere(namespace_of(definition["name"]), partition)
        answer = await self._run(scripts.START_WORKFLOW, named, meta_text,
                                 "" if partition in cached.stored else cached.text, cached.variables, envelope, at=at)
        if answer[0] == "NO_SNAPSHOT":   # Redis lost it (a restart without AOF): send it again
            answer = await self._run(scripts.START_WORKFLOW, named, meta_text, cached.text, cached.variables,
                                     envelope, at=at)
        outcome, started_id = str(answer[0]), str(answer[1])
        if outcome == "STALE_SNAPSHOT":
            return None
        if outcome == "QUOTA":
            raise self._refusal(f"WORKFLOWS {answer[2]}", namespace_of(definition["name"]))
        cached.stored.add(partition)
        if outcome != "CREATED":
            return Started(started_id, False)
        if expect_end:
            _remember(self._awaited, started_id, None, AWAITED)
        if decision is None or len(answer) < 3:
            return Started(started_id, True, state)
        handed = [ClaimedTask(started_id, m.TaskSpec.from_json(json.loads(answer[i + 1])), int(answer[i + 2]))
                  for i in range(3, len(answer), 3)]
        applied = ApplyOutcome(ApplyResult(str(answer[2])), handed=handed, grew_by=len(envelope))
        self._note_queued(started_id, decision, applied)
        if applied.result is ApplyResult.OK and decision.publish:
            await self._relay_after([(started_id, decision)])
        return Started(started_id, True, state, decision, applied)

    async def _in_flight_elsewhere(self, namespace: str, partition: int) -> int:
        """A namespace's workflows in flight in every partition but `partition` (which the start
        script counts itself), for its quota. Read afresh (one round trip) when the count last read
        is over IN_FLIGHT_FRESH_S old or within a tenth of the quota (at least IN_FLIGHT_MARGIN) of
        it: exact then but for the starts racing this one; far below the quota, a start pays nothing."""
        quota = self.quotas.workflows_in_flight
        known = self._in_flight.get(namespace)
        if known is not None:
            read_at, counts = known
            elsewhere = sum(counts) - counts[partition]
            if (time.monotonic() - read_at < IN_FLIGHT_FRESH_S
                    and elsewhere + counts[partition] + max(IN_FLIGHT_MARGIN, quota // 10) < quota):
                return elsewhere
        counts = await self._in_flight_reads.run(namespace, lambda: self._read_in_flight(namespace))
        return sum(counts) - counts[partition]

    async def _read_in_flight(self, namespace: str) -> list[int]:
        """A namespace's workflows in flight per partition, read in one round trip (the starts that
        find the count out of date at once share one read: `_in_flight_reads`)."""
        read_at = time.monotonic()
        replies = await self._each_partition([[("SCARD", self.keys.in_flight(p, namespace))]
                                              for p in self.keys.all_partitions()])
        # a partition whose server does not answer counts what it held when last read (its starts fail)
        known = self._in_flight.get(namespace)
        before = known[1] if known is not None else [0] * len(replies)
        counts = [int(reply[0]) if reply is not None else before[p] for p, reply in enumerate(replies)]
        self._in_flight[namespace] = (read_at, counts)
        if len(self._in_flight) > IN_FLIGHT_NAMESPACES:
            self._in_flight.pop(next(iter(self._in_flight)))
        return counts

    def _created(self, cached: _CachedSnapshot, workflow_id: str, meta_text: str, now_ms: int,
                 expect_end: bool) -> m.WorkflowState:
        """The workflow START_WORKFLOW creates, as a load would read it (what the node decides first)."""
        name = cached.snapshot["workflow"]["name"]
        row = {"m": meta_text, "snap": cached.digest, "created": str(now_ms), "upd": str(now_ms), "rev": "1",
               "vars": cached.variables, "ns": namespace_of(name), "st": "RUNNING", "due": "1"}
        if expect_end:
            row["waiters"] = self.listener_id
        state = parse_workflow(workflow_id, row, {cached.digest: cached.text})
        assert state is not None
        return state

    @_unavailable_as_store_error
    async def load(self, workflow_id: str) -> m.WorkflowState | None:
        return (await self.load_many([workflow_id]))[0]

    @_unavailable_as_store_error
    async def status(self, workflow_id: str) -> WorkflowStatus | None:
        found = await self._calls.call(Call("", ("HGET", self.keys.workflow(workflow_id), "st")))
        return WorkflowStatus(found) if found is not None else None

    @_unavailable_as_store_error
    async def load_many(self, workflow_ids: list[str]) -> list[m.WorkflowState | None]:
        rows = await self._calls.answers([Call("", ("HGETALL", self.keys.workflow(i))) for i in workflow_ids])
        texts = await self._snapshot_texts_for(workflow_ids, rows)
        return [parse_workflow(i, row, texts) for i, row in zip(workflow_ids, rows)]

    async def _snapshot_texts_for(self, workflow_ids: list[str], rows: list[dict[str, str]]) -> dict[str, str]:
        """The snapshot texts the rows refer to: from this node's cache, the rest in one round trip
        (each from the partition of a workflow that refers to it)."""
        wanted: dict[str, str] = {}   # digest -> a workflow id that refers to it
        for workflow_id, row in zip(workflow_ids, rows):
            digest = snapshot_ref(row)
            if digest is not None and digest not in self._snapshot_texts:
                wanted.setdefault(digest, workflow_id)
        found: dict[str, str] = {}
        for row in rows:
            digest = snapshot_ref(row)
            if digest is not None and digest in self._snapshot_texts:
                found[digest] = self._snapshot_texts[digest]
        missing = sorted(wanted)
        if missing:
            texts = await self._calls.answers([
                Call("", ("GET", self.keys.snapshot(self.keys.partition_of(wanted[d]), d))) for d in missing])
            for digest, text in zip(missing, texts):
                if text is not None:
                    found[digest] = text
                    self._snapshot_texts[digest] = text
        for digest in found:
            self._snapshot_texts.move_to_end(digest)
        while len(self._snapshot_texts) > SNAPSHOT_CACHE:
            self._snapshot_texts.popitem(last=False)
        return found

    @_unavailable_as_store_error
    @_acknowledged
    async def terminate(self, workflow_id: str, reason: str, now_ms: int, compensate: bool = False) -> None:
        answer = json.loads(await self._run(
            scripts.TERMINATE, {"id": workflow_id, "reason": reason, "now": now_ms, "compensate": compensate},
            at=self._at(workflow_id)))
        if answer["outcome"] == "UNKNOWN":
            raise NotFound(f"no workflow with id '{workflow_id}'")
        if answer["outcome"] == "ENDED":
            raise FailedPrecondition(f"workflow '{workflow_id}' already ended as {answer['detail']}; "
                                     "only a running, paused or compensating workflow can be terminated")

    @_unavailable_as_store_error
    @_acknowledged
    async def operate(self, workflow_id: str, *, allowed: Iterable[str], new_status: str = "",
                      command: dict[str, Any] | None = None, now_ms: int) -> None:
        allowed = list(allowed)
        answer = json.loads(await self._run(
            scripts.OPERATE, {"id": workflow_id, "allowed": allowed, "new_status": new_status, "now": now_ms},
            dumps(command) if command else "", at=self._at(workflow_id)))
        if answer["outcome"] == "UNKNOWN":
            raise NotFound(f"no workflow with id '{workflow_id}'")
        if answer["outcome"] == "STATE":
            raise FailedPrecondition(f"workflow '{workflow_id}' is {answer['detail']}; this operation "
                                     f"needs one of {', '.join(allowed)}")

    @_unavailable_as_store_error
    @_acknowledged
    async def signal_task(self, workflow_id: str, task_id: str, status: TaskStatus, output_json: str,
                          reason: str, now_ms: int) -> None:
        answer = json.loads(await self._run(
            scripts.SIGNAL_TASK, {"id": workflow_id, "task": task_id, "status": status, "reason": reason,
                                  "now": now_ms}, output_json, at=self._at(workflow_id)))
        outcome, detail = answer["outcome"], answer["detail"]
        if outcome == "UNKNOWN":
            raise NotFound(f"workflow '{workflow_id}' has no task '{task_id}'")
        if outcome == "KIND":
            raise FailedPrecondition(f"task '{task_id}' is a {detail} task; only WAIT and HUMAN tasks take signals")
        if outcome == "ENDED":
            raise FailedPrecondition(f"workflow '{workflow_id}' already ended as {detail}; the signal was not "
                                     "stored")
        if outcome == "STALE":
            raise FailedPrecondition(f"task '{task_id}' is already {detail}")

    @_unavailable_as_store_error
    async def search(self, *, name: str, status: str, correlation_id: str, cursor: str, limit: int,
                     created_from_ms: int = 0, created_to_ms: int = 0, text: str = "",
                     namespace: str = "") -> SearchPage:
        """Workflow ids of `namespace`, newest first, matching every filter given (`name`
        qualified, as stored).

        Every index is scored by creation time, so the time range narrows the scan itself.
        The cursor is the (creation time, id) of the last id read: the next page starts
        strictly after it in the index order (time descending, then id descending), so
        workflows started meanwhile (newer, so before it) never shift a page. A page reads at
        most `free_text.MAX_SCANNED` workflows (past the first chunk) and may then answer short,
        with a cursor that goes on from there: a free-text query, or a filter its index does not
        answer exactly (the default namespace reads the index of all namespaces), costs one
        bounded scan per page."""
        query_words = free_text.words(text)
        index = self._search_index(name, status, correlation_id, namespace)
        indexes = [self.keys.index(p, *index) for p in self.keys.all_partitions()]
        after = _parse_cursor(cursor)
        top: float | str = created_to_ms or "+inf"
        if after is not None:
            top = min(after[0], created_to_ms) if created_to_ms else after[0]
        bottom: float | str = created_from_ms or "-inf"
        found: list[tuple[str, float]] = []
        chunk = max(limit * 2, 100)
        merged = _MergedIndex(self._redis, indexes, top, bottom, max(16, 2 * chunk // len(indexes)))
        scanned = 0
        last: tuple[str, float] | None = None
        exhausted = False
        while len(found) < limit:
            if scanned >= free_text.MAX_SCANNED and last is not None:
                return SearchPage([i for i, _ in found], f"{int(last[1])}:{last[0]}")
            taken = await merged.take(chunk)
            if not taken:
                exhausted = True
                break
            rows = [(i, s) for i, s in taken if after is None or s < after[0] or (s == after[0] and i < after[1])]
            matched, read = await self._matching(rows, name, status, correlation_id, namespace, query_words,
                                                 limit - len(found))
            found += matched
            scanned += read
            if read:
                last = rows[read - 1]
            if len(taken) < chunk:   # a short read: the range is exhausted
                exhausted = True
                break
        if not found or (exhausted and len(found) < limit):
            return SearchPage([i for i, _ in found], None)
        last_id, last_score = found[-1]
        more = await self._any_before(indexes, last_score, last_id, bottom)
        return SearchPage([i for i, _ in found], f"{int(last_score)}:{last_id}" if more else None)

    @staticmethod
    def _search_index(name: str, status: str, correlation_id: str, namespace: str) -> tuple[str, ...]:
        """The index a search reads (its name within each partition)."""
        if correlation_id:
            return ("corr", correlation_id)
        if name:
            return ("name", name)
        if namespace:   # the default namespace has none: its workflows are in "all" since before namespaces
            return ("ns", namespace)
        if status:
            return ("st", status)
        return ("all",)

    async def _matching(self, rows: list[tuple[str, float]], name: str, status: str, correlation_id: str,
                        namespace: str, query_words: list[str], wanted: int) -> tuple[list[tuple[str, float]], int]:
        """The rows that match, up to `wanted`, and how many rows were read to find them."""
        fields = ("st", "m", "out", "vars", "reason") if query_words else ("st", "m")
        async with self._redis.pipeline(transaction=False) as pipe:
            for workflow_id, _ in rows:
                pipe.hmget(self.keys.workflow(workflow_id), *fields)
            stored = await pipe.execute()
        found = []
        for read, ((workflow_id, score), values) in enumerate(zip(rows, stored), start=1):
            st, meta_raw = values[0], values[1]
            if st is None:
                continue
            meta = json.loads(meta_raw)
            if ((not status or st == status) and (not name or meta["name"] == name)
                    and namespace_of(meta["name"]) == namespace
                    and (not correlation_id or meta["correlationId"] == correlation_id)
                    and free_text.matches(query_words, workflow_id, *(v or "" for v in values[1:]))):
                found.append((workflow_id, score))
                if len(found) == wanted:
                    return found, read
        return found, len(rows)

    async def _any_before(self, indexes: list[str], score: float, workflow_id: str, bottom: float | str) -> bool:
        """Whether the index (in any partition) holds anything after (score, id) in the search order."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcount(index, bottom, f"({score}")
                pipe.zrangebyscore(index, score, score)
            replies = await pipe.execute()
        return any(replies[0::2]) or any(member < workflow_id for same in replies[1::2] for member in same)

    # ------------------------------------------------------------- tasks (any node)

    @_unavailable_as_store_error
    async def claim(self, task_type: str, count: int, worker_id: str, now_ms: int, *,
                    records: bool = False) -> list[ClaimedTask]:
        """Up to `count` tasks of the type, from the partitions known to have some (`ready_partitions`):
        the count is shared out among (at most `count` of) them, one CLAIM each in one round trip, and
        what they lacked is asked of the partitions not asked yet and of those that gave all they
        were asked for."""
        limited_at = self._limited.get(task_type)
        if limited_at is not None and time.monotonic() - limited_at < LIMITED_KNOWN_S:
            return await self._claim_limited(task_type, count, worker_id, now_ms, records)
        try:
            return await self._claim(task_type, count, worker_id, now_ms, records)
        except _Limited:
            self._limited[task_type] = time.monotonic()
            return await self._claim_limited(task_type, count, worker_id, now_ms, records)

    async def _claim_limited(self, task_type: str, count: int, worker_id: str, now_ms: int,
                             records: bool) -> list[ClaimedTask]:
        """A claim of a type with limits: its room reserved in the global slot, that many claimed in the
        partitions, then the reservation settled into the type's counts (scripts.LIMIT_ACQUIRE)."""
        token = uuid.uuid4().hex[:16]
        granted = int(await self._run(scripts.LIMIT_ACQUIRE, {"type": task_type, "count": count, "now": now_ms,
                                                              "token": token}, at=self._global))
        if granted <= 0:
            return []
        claimed: list[ClaimedTask] = []
        try:
            claimed = await self._claim(task_type, granted, worker_id, now_ms, records, granted=True)
        finally:   # a claim that failed settles nothing taken: the reservation is given back now
            await self._run(scripts.LIMIT_SETTLE, {
                "type": task_type, "token": token, "granted": granted, "now": now_ms,
                "members": [f"{task.workflow_id}|{task.spec.task_id}" for task in claimed]}, at=self._global)
        return claimed

    async def _claim(self, task_type: str, count: int, worker_id: str, now_ms: int, records: bool,
                     granted: bool = False) -> list[ClaimedTask]:
        pending = self._ready.candidates(task_type)
        if pending is None:
            pending = await self._shared_scan(task_type, now_ms)
        claimed: list[ClaimedTask] = []
        unreachable: BaseException | None = None   # a partition not answered or refused (see below)
        answered = False
        while pending and len(claimed) < count:
            wanted = count - len(claimed)
            candidates, pending = pending[:wanted], pending[wanted:]
            asks = [(p, mark, wanted // len(candidates) + (1 if i < wanted % len(candidates) else 0))
                    for i, (p, mark) in enumerate(candidates)]
            replies = await self._calls.replies([
                Call(scripts.CLAIM, self._arguments({"type": task_type, "count": n, "now": now_ms,
                                                     "worker": worker_id, "records": records, "granted": granted}),
                     self.keys.partition(p)) for p, _, n in asks], unreachable_raises=False)
            full: list[tuple[int, int]] = []
            limited = False
            for (p, mark, n), reply in zip(asks, replies):
                # On a Redis Cluster a master down fails its partitions' CLAIMs alone, and so does a slot
                # moving to another master (refused before any write): what the others gave is this
                # claim's (else their tasks would wait for their leases to expire, and the type's dispatch
                # would pause until the failover or the move ends); none given: unavailable.
                if isinstance(reply, REDIS_UNAVAILABLE) or refuses_writes(reply):
                    unreachable = reply
                    self._ready.unreachable(p)   # asked last for a while; the claim goes on with the others
                    continue
                if isinstance(reply, Exception):
                    raise reply
                answered = True
                if reply == "LIMITED":   # nothing was taken there: claimed again through the limiter
                    limited = True
                    continue
                flat, workflows = (reply[0], await self._claimed_workflows(reply[1])) if records else (reply, {})
                for i in range(0, len(flat), 4):
                    spec = m.TaskSpec.from_json(json.loads(flat[i + 2]))
                    claimed.append(ClaimedTask(flat[i], spec, int(flat[i + 3]), workflows.get(flat[i])))
                if len(flat) // 4 < n:
                    self._ready.drained(task_type, p, mark)
                else:
                    full.append((p, mark))
            if limited:
                if not claimed:
                    raise _Limited()
                break   # what the other partitions gave is this claim's; the limiter is asked next time
            pending = full + pending
        if unreachable is not None and not answered:
            raise unreachable
        return claimed

    @_unavailable_as_store_error
    async def release_freed(self, partitions: Collection[str] | None = None, now_ms: int = 0) -> int:
        """The freed attempts of the named partitions (their prefixes; None: all) taken out of their
        types' counts: read, released in the global slot, then forgotten (a release made twice takes
        nothing out twice). With every partition and `now_ms`, also the counted attempts that hold no
        lease any more (`_unleased`)."""
        prefixes = self._prefixes(partitions)
        replies = await self._each_partition([[("SMEMBERS", f"{prefix}:freed")] for prefix in prefixes])
        found = {prefix: sorted(reply[0]) for prefix, reply in zip(prefixes, replies) if reply is not None and reply[0]}
        freed = [member for members in found.values() for member in members]
        if partitions is None and now_ms:
            freed += await self._unleased(now_ms)
        if not freed:
            return 0
        released = int(await self._run(scripts.LIMIT_RELEASE, {"freed": freed}, at=self._global))
        if found:
            await self._each_partition([[("SREM", f"{prefix}:freed", *members)] for prefix, members in found.items()])
        return released

    @_unavailable_as_store_error
    async def relay_events(self, partitions: Collection[str] | None = None) -> int:
        """The events EVENT tasks left in the outboxes of the named partitions (their prefixes; None:
        all) published to their topics, in order, each once (scripts.RELAY_EVENTS), then removed."""
        prefixes = self._prefixes(partitions)
        replies = await self._each_partition([[("XRANGE", f"{prefix}:outbox", "-", "+", "COUNT", OUTBOX_BATCH)]
                                              for prefix in prefixes])
        found = {prefix: reply[0] for prefix, reply in zip(prefixes, replies) if reply is not None and reply[0]}
        items, payloads = [], []
        for prefix, entries in found.items():
            for entry_id, fields in entries:
                items.append({"k": f"{prefix}/{entry_id}", "t": fields["t"], "at": int(fields["at"])})
                payloads.append(fields["p"])
        if not items:
            return 0
        published = int(await self._run(scripts.RELAY_EVENTS, {"items": items}, *payloads, at=self._global))
        await self._each_partition([[("XDEL", f"{prefix}:outbox", *(entry_id for entry_id, _ in entries))]
                                    for prefix, entries in found.items()])
        return published

    def _prefixes(self, partitions: Collection[str] | None) -> list[str]:
        """The partitions named (by their prefixes, as Topic.FREED names them), or all of them."""
        if partitions is not None:
            return list(partitions)
        return [self.keys.partition(p) for p in self.keys.all_partitions()]

    async def _unleased(self, now_ms: int) -> list[str]:
        """Attempts counted in progress for a concurrency limit, for over UNLEASED_AFTER_MS, whose
        partition holds no lease for them (type|id|task): what a release that came before its
        claim's settle left (the attempt ended in between), or a claimer that died between the two.
        Read every FREED_SWEEP_S by the leader's clocks, so a count never keeps a lost slot."""
        try:
            limits = await self._redis.hgetall(self.keys.limits)
        except REDIS_UNAVAILABLE:   # the global slot's master is failing over: nothing to take out now
            return []
        limited = sorted(name for name, stored in limits.items() if not stored.startswith("0|"))
        if not limited:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_type in limited:
                pipe.zrangebyscore(self.keys("inprog", task_type), "-inf", now_ms - UNLEASED_AFTER_MS,
                                   start=0, num=UNLEASED_BATCH)
            counted = await pipe.execute()
        candidates = [(task_type, member) for task_type, members in zip(limited, counted) for member in members]
        if not candidates:
            return []
        leases = await self._each_partition([[
            ("ZSCORE", self.keys.leases(self.keys.partition_of(member.split("|", 1)[0])), member)]
            for _, member in candidates])
        # a partition that did not answer may hold the lease: its attempts are looked at next time
        return [f"{task_type}|{member}" for (task_type, member), lease in zip(candidates, leases)
                if lease is not None and lease[0] is None]

    async def _relay_after(self, decided: Iterable[tuple[str, Decision]]) -> None:
        """After decisions were applied: the events of their EVENT tasks relayed now (a failure leaves
        them to the leader's sweep; the decisions stand)."""
        partitions = {self._at(workflow_id) for workflow_id, decision in decided if decision.publish}
        if not partitions:
            return
        try:
            await self.relay_events(partitions)
        except (StoreUnavailable, ResponseError) as exc:
            log.warning("the events of %d decision(s) wait for the leader's relay (%s)", len(partitions), exc)

    async def _shared_scan(self, task_type: str, now_ms: int) -> list[tuple[int, int]]:
        """`_scan_ready`, one at a time per type: the claims that find a type's look due while one is
        under way (a REST poller's threads, each claiming at once) wait for it instead of each reading
        every partition again; the broadcasts heard meanwhile are kept by it (`ReadyPartitions.scanned`)."""
        return list(await self._scans.run(task_type, lambda: self._scan_ready(task_type, now_ms)))

    async def _scan_ready(self, task_type: str, now_ms: int) -> list[tuple[int, int]]:
        """Every partition looked at for queued tasks of the type (or tasks called back by now), in
        one round trip. A partition whose server does not answer counts as having some, asked last
        (`ReadyPartitions.unreachable`): its tasks are claimed as soon as it answers again."""
        started = self._ready.looking(task_type)
        partitions = list(self.keys.all_partitions())
        counts = await self._each_partition([[
            ("ZCARD", self.keys.queue(p, task_type)),
            ("ZCOUNT", self.keys.in_partition(p, "qd", task_type), "-inf", now_ms)] for p in partitions])
        found = []
        for p, replies in zip(partitions, counts):
            if replies is None:
                self._ready.unreachable(p)
            if replies is None or int(replies[0]) or int(replies[1]):
                found.append(p)
        return self._ready.scanned(task_type, found, started)

    async def _each_partition(self, commands: list[list[tuple[Any, ...]]]) -> list[list[Any] | None]:
        """The replies of each partition's commands (a list of commands per partition), in one round
        trip; None for a partition whose server did not answer (a Redis Cluster master failing over) or
        refused it for now (its slot moving to another master), so that the sweeps over every partition
        go on with the others. Raises when none answered (Redis down, or this node cut off from it),
        and on any other error."""
        calls: list[Call] = []
        spans: list[tuple[int, int]] = []
        for own in commands:
            spans.append((len(calls), len(calls) + len(own)))
            calls += [Call("", command) for command in own]
        replies = await self._calls.replies(calls, unreachable_raises=False)
        found: list[list[Any] | None] = []
        unreachable: BaseException | None = None
        for start, end in spans:
            mine = replies[start:end]
            failed = next((reply for reply in mine
                           if isinstance(reply, REDIS_UNAVAILABLE) or refuses_writes(reply)), None)
            if failed is not None:
                unreachable = failed
                found.append(None)
                continue
            for reply in mine:
                if isinstance(reply, Exception):
                    raise reply
            found.append(mine)
        if unreachable is not None and all(mine is None for mine in found):
            raise unreachable
        return found

    async def _claimed_workflows(self, records: list[Any]) -> dict[str, m.WorkflowState]:
        """The workflows a claim answered with ({id, {field, value, ...}, ...}), parsed as a load parses
        them; one that cannot be parsed is left out (its result reloads it, as before)."""
        rows = {records[i]: dict(zip(records[i + 1][::2], records[i + 1][1::2])) for i in range(0, len(records), 2)}
        try:
            texts = await self._snapshot_texts_for(list(rows), list(rows.values()))
        except Exception as exc:   # the tasks are claimed all the same: their results reload the workflows
            log.warning("the definitions of %d claimed workflow(s) could not be read (%s)", len(rows), exc)
            return {}
        workflows = {}
        for workflow_id, row in rows.items():
            try:
                workflow = parse_workflow(workflow_id, row, texts)
            except Exception:   # a corrupt record is reported by the load its result makes
                log.warning("the record of workflow %s, claimed from, could not be read", workflow_id,
                            exc_info=True, extra={"workflow_id": workflow_id})
                continue
            if workflow is not None:
                workflows[workflow_id] = workflow
        return workflows

    @_unavailable_as_store_error
    async def heartbeat(self, workflow_id: str, task_id: str, worker_id: str, now_ms: int) -> int:
        return int(await self._run(scripts.HEARTBEAT, {"id": workflow_id, "task": task_id, "now": now_ms,
                                                       "worker": worker_id}, at=self._at(workflow_id)))

    @_unavailable_as_store_error
    @_acknowledged
    async def complete_task(self, workflow_id: str, task_id: str, worker_id: str, status: TaskStatus,
                            output_json: str, reason: str, now_ms: int) -> ResultAck:
        answer = json.loads(await self._run(scripts.COMPLETE_TASK, {
            "id": workflow_id, "task": task_id, "status": status, "reason": reason, "now": now_ms,
            "worker": worker_id}, output_json, at=self._at(workflow_id)))
        return ResultAck(ResultOutcome(answer["outcome"]), answer["detail"], answer.get("type", ""))

    @_unavailable_as_store_error
    @_acknowledged
    async def release_task(self, workflow_id: str, task_id: str, worker_id: str, now_ms: int, *,
                           delay_ms: int = 0, output_json: str = "") -> bool:
        return bool(await self._run(scripts.RELEASE_TASK, {"id": workflow_id, "task": task_id, "now": now_ms,
                                                           "worker": worker_id, "at": now_ms + max(0, delay_ms)},
                                    output_json, at=self._at(workflow_id)))

    @_unavailable_as_store_error
    @_acknowledged
    async def add_task_logs(self, task_id: str, lines: list[tuple[int, str]]) -> None:
        key = self.keys.task_log(task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(json.dumps({"at": at, "log": text[:MAX_LOG_CHARS]}) for at, text in lines))
            pipe.ltrim(key, -MAX_TASK_LOGS, -1)
            pipe.expire(key, self.idempotency_ttl_s)
            await pipe.execute()

    @_unavailable_as_store_error
    async def task_logs(self, task_id: str) -> list[tuple[int, str]]:
        rows = await self._redis.lrange(self.keys.task_log(task_id), 0, -1)
        return [(int(entry["at"]), str(entry["log"])) for entry in map(json.loads, rows)]

    # ------------------------------------------------------------- engine (leader only, fenced)

    @_unavailable_as_store_error
    async def raise_epoch(self, epoch: int) -> None:
        # a copy per partition, which the fenced scripts there compare with (keys.py)
        replies = await self._calls.answers([Call(scripts.RAISE_EPOCH, self._arguments({"epoch": epoch}),
                                                  self.keys.partition(p)) for p in self.keys.all_partitions()])
        stored = max(int(reply) for reply in replies)
        if stored > epoch:
            raise StaleEpoch(f"the state store was last written by the leader of term {stored}, newer than this "
                             f"node's term {epoch}")

    @_unavailable_as_store_error
    async def forget_epoch(self) -> None:
        """Forget the stored fencing epoch: only while no node of this cluster runs, after etcd
        was replaced by an empty one (its revisions, hence new epochs, start again at 1)."""
        await self._redis.delete(*(self.keys.epoch(p) for p in self.keys.all_partitions()))

    @_unavailable_as_store_error
    async def due(self, now_ms: int, limit: int) -> Due:
        """What is due in every partition, at most `limit` of each kind; a partition whose server does
        not answer is passed over (`_each_partition`). The leader asks several times a second, and
        mostly nothing is due: so the first round trip reads only the earliest reminder and the earliest
        lease of each partition (2 cheap commands a partition, not 4), and a second one, made only
        when some are due, reads those partitions' due entries and the first ones after them."""
        partitions = list(self.keys.all_partitions())
        firsts = await self._each_partition([[("ZRANGE", self.keys.decide(p), 0, 0, "WITHSCORES"),
                                              ("ZRANGE", self.keys.leases(p), 0, 0, "WITHSCORES")]
                                             for p in partitions])
        nexts: list[float] = []
        due_sets: list[tuple[str, list[str]]] = []   # (a set with entries due, where they go)
        workflows: list[str] = []
        leases_due: list[str] = []
        for p, found in zip(partitions, firsts):
            for key, first, found_due in zip((self.keys.decide(p), self.keys.leases(p)), found or (),
                                             (workflows, leases_due)):
                if first and float(first[0][1]) <= now_ms:
                    due_sets.append((key, found_due))
                elif first:
                    nexts.append(float(first[0][1]))
        if due_sets:
            replies = await self._each_partition([[
                ("ZRANGEBYSCORE", key, "-inf", now_ms, "LIMIT", 0, limit),
                # the first entry still in the future: when to look again if nothing wakes us
                ("ZRANGEBYSCORE", key, f"({now_ms}", "+inf", "LIMIT", 0, 1, "WITHSCORES")] for key, _ in due_sets])
            for (_, found_due), found in zip(due_sets, replies):
                if found is not None:
                    entries, after = found
                    found_due.extend(entries)
                    nexts += [float(after[0][1])] if after else []
        expired = [(member.split("|", 1)[0], member.split("|", 1)[1]) for member in leases_due[:limit]]
        return Due(workflows[:limit], expired, min(nexts) if nexts else None)

    @_unavailable_as_store_error
    async def expire_lease(self, epoch: int, workflow_id: str, task_id: str, now_ms: int) -> bool:
        result = str(await self._run(scripts.EXPIRE_LEASE, {"epoch": epoch, "id": workflow_id, "task": task_id,
                                                            "now": now_ms}, at=self._at(workflow_id)))
        if result == "STALE_EPOCH":
            raise StaleEpoch("lease expiry refused: a newer leader holds the epoch")
        return result == "EXPIRED"

    @_unavailable_as_store_error
    async def ended_before(self, cutoff_ms: int, limit: int) -> list[tuple[str, str]]:
        """The oldest `limit` ends before the cutoff, over every partition's `ended` stream
        (`ended_scan`: a few entries of each at a time)."""
        return await oldest_ended(self._ended_pages, [self.keys.ended(p) for p in self.keys.all_partitions()],
                                  cutoff_ms, limit)

    async def _ended_pages(self, reads: list[tuple[str, str, int]]) -> list[list[tuple[str, dict[str, str]]]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, first, count in reads:
                pipe.xrange(key, min=first, max="+", count=count)
            return list(await pipe.execute())

    @_unavailable_as_store_error
    async def forget_ended(self, epoch: int, entries: list[tuple[str, str]], cutoff_ms: int) -> int:
        """FORGET_ENDED in each partition the entries are of, in one round trip."""
        by_partition: dict[int, list[list[str]]] = {}
        for entry_id, workflow_id in entries:
            by_partition.setdefault(self.keys.partition_of(workflow_id), []).append([entry_id, workflow_id])
        replies = await self._calls.answers([
            Call(scripts.FORGET_ENDED, self._arguments({"epoch": epoch, "cutoff": cutoff_ms, "entries": found}),
                 self.keys.partition(p)) for p, found in by_partition.items()])
        if "STALE_EPOCH" in replies:
            raise StaleEpoch("retention refused: a newer leader holds the epoch")
        return sum(int(reply) for reply in replies)

    @_unavailable_as_store_error
    async def defer(self, epoch: int | None, workflow_id: str, at_ms: int) -> None:
        await self._decide_set(epoch, {"id": workflow_id, "at": at_ms})

    @_unavailable_as_store_error
    async def forget_due(self, workflow_id: str, epoch: int | None) -> None:
        await self._decide_set(epoch, {"id": workflow_id})

    async def _decide_set(self, epoch: int | None, named: dict[str, Any]) -> None:
        if epoch is not None:
            named["epoch"] = epoch
        if str(await self._run(scripts.DEFER, named, at=self._at(named["id"]))) == "STALE_EPOCH":
            raise StaleEpoch("decide-set write refused: a newer leader holds the epoch")

    @_unavailable_as_store_error
    async def apply_decisions(self, epoch: int | None, now_ms: int,
                              decisions: list[tuple[m.WorkflowState, Decision]],
                              *, hand_over: Mapping[str, str] | None = None) -> list[ApplyOutcome]:
        # Each decision is encoded on its own: one that cannot be (a value that refers to itself,
        # text that is not Unicode) is refused alone, before anything is sent.
        prepared = [self._prepared(epoch, workflow, decision, now_ms, hand_over) for workflow, decision in decisions]
        replies = iter(await self._apply_all([(self._at(workflow.workflow_id), p)
                                              for (workflow, _), p in zip(decisions, prepared) if isinstance(p, list)]))
        outcomes = []
        for (workflow, _), item in zip(decisions, prepared):
            reply = next(replies) if isinstance(item, list) else None
            if isinstance(item, str):
                outcomes.append(ApplyOutcome(ApplyResult.REFUSED, item))
            elif isinstance(reply, Exception):
                outcomes.append(ApplyOutcome(ApplyResult.REFUSED, f"the store refused it: {reply}"))
            elif reply == "STALE_EPOCH":
                raise StaleEpoch("decision refused: a newer leader holds the epoch")
            elif isinstance(reply, list):   # ['OK', task id, spec json, lease ms, ...]: handed over
                handed = [ClaimedTask(workflow.workflow_id, m.TaskSpec.from_json(json.loads(reply[i + 1])),
                                      int(reply[i + 2])) for i in range(1, len(reply), 3)]
                outcomes.append(ApplyOutcome(ApplyResult(str(reply[0])), handed=handed, grew_by=len(item[1])))
            else:
                outcomes.append(ApplyOutcome(ApplyResult(str(reply)), grew_by=len(item[1])))
        for (workflow, decision), outcome in zip(decisions, outcomes):
            self._note_queued(workflow.workflow_id, decision, outcome)
        await self._relay_after((workflow.workflow_id, decision) for (workflow, decision), outcome
                                in zip(decisions, outcomes) if outcome.result is ApplyResult.OK)
        return outcomes

    def _note_queued(self, workflow_id: str, decision: Decision, applied: ApplyOutcome) -> None:
        """The tasks an applied decision queued (not those it handed over), known at once to this
        node's claims as its `ready` broadcasts will make them known: a claim made right after the
        step that queued them (a REST worker's `update-v2`, whose answer is its next task) finds them
        without waiting for the broadcast to come back."""
        if applied.result is not ApplyResult.OK or not decision.enqueue:
            return
        handed = {task.spec.task_id for task in applied.handed}
        for task_type, task_id in decision.enqueue:
            if task_id not in handed:
                self._ready.heard(task_type, f"{workflow_id}|{task_id}")

    def _prepared(self, epoch: int | None, workflow: m.WorkflowState, decision: Decision, now_ms: int,
                  hand_over: Mapping[str, str] | None) -> list[str] | str:
        """APPLY_DECISION's arguments, or why the decision cannot be stored (nothing is sent then)."""
        try:
            named, envelope = decision_parts(self._common, epoch, workflow, decision, now_ms, hand_over)
            refused = self._within_limits(workflow, envelope)
            if refused:
                return refused
            args = encoded_decision(named, envelope)
            for arg in args:
                arg.encode("utf-8")   # what the Redis client will do; lone surrogates fail here
            return args
        except (ValueError, TypeError, RecursionError) as exc:
            return f"{type(exc).__name__}: {exc}"

    @_unavailable_as_store_error
    @_acknowledged
    async def step(self, result: WorkerResult, decided: m.WorkflowState, decision: Decision, now_ms: int, *,
                   hand_over: Mapping[str, str] | None = None) -> Stepped:
        prepared = self._prepared(None, decided, decision, now_ms, hand_over)
        if isinstance(prepared, str):
            raise DecisionRefused(prepared)
        call = Call(scripts.STEP, self._arguments({
            "id": result.workflow_id, "task": result.task_id, "status": result.status, "reason": result.reason,
            "now": now_ms, "worker": result.worker_id, "rev": decided.revision - 1},
            result.output_json, prepared[1]), self._at(result.workflow_id))
        ended: Any = None
        if (decision.status in TERMINAL_WORKFLOW and result.workflow_id in self._awaited
                and decided.stored_bytes <= ENDED_ROW_MAX_BYTES):
            # a caller here waits for this end (ExecuteWorkflow): the record as this step leaves it is
            # read in the same pipeline, so that its answer needs no round trip of its own
            read_back = Call("", ("HGETALL", self.keys.workflow(result.workflow_id)))
            reply, ended = await self._calls.replies([call, read_back])
            if isinstance(reply, Exception):
                raise reply
        else:
            reply = await self._calls.call(call)
        outcome, detail, task_type = (str(part) for part in [*reply[:3], ""][:3])
        ack = ResultAck(ResultOutcome(outcome), detail, task_type)
        if ack.outcome is not ResultOutcome.STORED:
            return Stepped(ack)
        handed = [ClaimedTask(result.workflow_id, m.TaskSpec.from_json(json.loads(reply[i + 1])), int(reply[i + 2]))
                  for i in range(4, len(reply), 3)]
        applied = ApplyOutcome(ApplyResult(str(reply[3])), handed=handed, grew_by=len(prepared[1]))
        self._note_queued(result.workflow_id, decision, applied)
        if applied.result is ApplyResult.OK and isinstance(ended, dict) and ended:
            self._awaited.pop(result.workflow_id, None)
            _remember(self._ended_rows, result.workflow_id, ended, ENDED_ROWS)
        if applied.result is ApplyResult.OK and decision.publish:
            await self._relay_after([(result.workflow_id, decision)])
        return Stepped(ack, applied)

    def _within_limits(self, workflow: m.WorkflowState, envelope: dict[str, Any]) -> str:
        """'' when the decision may be stored, else why not: a value over max_value_bytes (a task
        input resolved from large outputs, say), or a record that would outgrow max_workflow_bytes.
        Sizes are of the JSON texts in `envelope` (`codec.decision_parts`), in characters."""
        fields = envelope.get("fields", [])
        for name, value in zip(fields[::2], fields[1::2]):
            if name.startswith(("t:", "o:", "vars")) and len(value) > self.max_value_bytes:
                what = {"t": "the input of a task", "o": "the output of a task", "v": "the variables"}[name[0]]
                return (f"{what} would be {len(value)} bytes, over the limit of {self.max_value_bytes}; pass "
                        "references to large data rather than the data")
        for topic, payload in envelope.get("publish", []):
            if len(payload) > self.max_value_bytes:
                return (f"the event for topic '{topic}' would be {len(payload)} bytes, over the limit of "
                        f"{self.max_value_bytes}; pass references to large data rather than the data")
        grows = sum(len(value) for value in fields[1::2]) + len(envelope.get("out") or "")
        if workflow.stored_bytes + grows > self.max_workflow_bytes:
            return (f"the workflow's record would grow to {workflow.stored_bytes + grows} bytes, over the limit of "
                    f"{self.max_workflow_bytes}; pass references to large data rather than the data")
        return ""

    async def _apply_all(self, argument_lists: list[tuple[str, list[str]]]) -> list[Any]:
        """APPLY_DECISION for each (its partition, its arguments), in this loop turn's pipeline; each
        reply is a string or that command's error."""
        replies = await self._calls.replies([Call(scripts.APPLY_DECISION, args, at) for at, args in argument_lists])
        for reply in replies:
            if isinstance(reply, REDIS_UNAVAILABLE):
                raise reply
            if refuses_writes(reply):   # not this decision's fault: nothing applied, decide again later
                raise StoreUnavailable(refusal_text(reply))
        return replies

    async def _pipelined(self, calls: list[Call], settle: Settle | None = None) -> list[Any]:
        """The calls in one pipeline (scripts by EVALSHA); each reply is the call's answer or its
        error, and a read placed after a script sees what that script wrote (a step reads its
        record back so). After a Redis restart or a SCRIPT FLUSH the script cache is empty: the
        scripts missing are loaded and their calls run again, in one more pipeline (safe: a
        NOSCRIPT call ran nothing), with every plain read that came after the first of them (a
        read is safe to repeat, and it ran before the script it follows)."""
        replies = await self._execute(calls, settle=settle)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            missing = [i for i in range(missing[0], len(calls))
                       if isinstance(replies[i], NoScriptError) or not calls[i].script]
            again = await self._execute([calls[i] for i in missing],
                                        load=dict.fromkeys(calls[i].script for i in missing if calls[i].script))
            for i, reply in zip(missing, again):
                replies[i] = reply
        return replies

    async def _execute(self, calls: list[Call], load: Iterable[str] = (), settle: Settle | None = None) -> list[Any]:
        """One pipeline: SCRIPT LOAD of each of `load` first, then the calls; their replies.

        One deadline for all of it (a free connection, the write, every reply, and the one retry on
        a new connection after a broken one): a Redis that does not answer fails the pipeline with
        a TimeoutError within `socket_timeout_s`. Cut short, redis-py drops the connection, so no
        late reply is read by the next pipeline on it; a timed-out pipeline is not sent again.

        On a Redis Cluster, one pipeline per master, side by side, each with that deadline: redis-py's
        cluster pipeline fails as a whole when one server does not answer, and a dead master must
        fail only the calls of its own partitions (the others are applied and answered as usual).
        `settle` (Coalesced's): when not every master answered within SETTLE_TOGETHER_S, each
        master's replies are handed over as they come from then on, unless one of them is NOSCRIPT
        (`_pipelined` runs those again, with the reads after them)."""
        if not self._on_cluster:
            return await self._execute_on(calls, load)
        load = tuple(load)
        try:   # on every master (a call redirected by ASK or MOVED runs on another), once for all groups
            for source in load:
                await self._pipelines.script_load(source)
            load = ()
        except REDIS_UNAVAILABLE:   # one is down: each group's master is given them apart (`_execute_on`)
            pass
        groups: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            groups.setdefault(self._master_of(call.at if call.script else str(call.args[1])), []).append(i)
        if len(groups) == 1:
            [(master, _)] = groups.items()
            return await self._on_master(master, calls, load)
        sent = [asyncio.ensure_future(self._on_master(master, [calls[i] for i in group], load))
                for master, group in groups.items()]
        if settle is not None:
            await self._settle_apart_if_late(sent, list(groups.values()), settle)
        answers = await asyncio.gather(*sent, return_exceptions=True)
        replies: list[Any] = [None] * len(calls)
        for group, answer in zip(groups.values(), answers):
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer   # cancelled: the caller goes, not one master's calls
            for j, i in enumerate(group):
                replies[i] = answer if isinstance(answer, Exception) else answer[j]
        return replies

    @staticmethod
    async def _settle_apart_if_late(sent: Sequence[asyncio.Future[list[Any]]], groups: list[list[int]],
                                    settle: Settle) -> None:
        """Wait up to SETTLE_TOGETHER_S for every master's pipeline; past it, settle each one's replies
        as it ends (those ended already at once). Cancelled, it cancels the pipelines."""
        try:
            _, late = await asyncio.wait(sent, timeout=SETTLE_TOGETHER_S)
        except BaseException:
            for future in sent:
                future.cancel()
            raise
        if not late:
            return

        def settle_group(group: list[int], future: asyncio.Future[list[Any]]) -> None:
            if future.cancelled() or future.exception() is not None:
                return   # `_on_master` answers a master's failure as values: this is a bug's error, left to the caller
            answer = future.result()
            if not any(isinstance(reply, NoScriptError) for reply in answer):
                for i, reply in zip(group, answer):
                    settle(i, reply)
        for group, future in zip(groups, sent):
            if future.done():
                settle_group(group, future)
            else:
                future.add_done_callback(functools.partial(settle_group, group))

    async def _on_master(self, master: str, calls: list[Call], load: tuple[str, ...] = ()) -> list[Any]:
        """`_execute_on` for the calls of one master of a Redis Cluster: a master that does not answer
        fails its calls (as values). One that failed so less than MASTER_DOWN_S ago fails them at once,
        unsent: a call to a dead master costs redis-py a refused connection and a refresh of its map of
        the slots (tens of ms), which every call in the same loop turn would wait for, and a failover
        takes seconds. Its replica, once promoted, has another name, and the map's refresh finds it."""
        down_at = self._down.get(master)
        if down_at is not None and time.monotonic() - down_at < MASTER_DOWN_S:
            error = RedisConnectionError(f"the Redis Cluster master {master or '(none)'} serving these keys did not "
                                         f"answer {(time.monotonic() - down_at) * 1000:.0f} ms ago")
            return [error] * len(calls)
        try:
            replies = await self._execute_on(calls, load, master)
        except REDIS_UNAVAILABLE as exc:
            self._down[master] = time.monotonic()
            return [exc] * len(calls)
        self._down.pop(master, None)
        return replies

    def _master_of(self, key: str) -> str:
        """The name of the master serving `key` as this node's map of the slots says ('' before the
        map is read; a stale map costs a MOVED that redis-py follows)."""
        try:
            node = self._pipelines.get_node_from_key(key)
        except SlotNotCoveredError:
            return ""
        return str(node.name) if node is not None else ""

    async def _execute_on(self, calls: list[Call], load: Iterable[str] = (), master: str = "") -> list[Any]:
        """`_execute` on one Redis (or one master of a Redis Cluster, by its name)."""
        deadline = asyncio.timeout(self.links.socket_timeout_s)
        try:
            async with deadline:
                if not load:
                    replies = await self._lean(calls, master)
                    if replies is not None:
                        return replies
                if self._on_cluster and load:   # its pipelines refuse SCRIPT LOAD: sent to this master alone
                    node = self._pipelines.get_node(node_name=master) if master else None
                    for source in load:
                        await self._pipelines.execute_command("SCRIPT LOAD", source, target_nodes=node or
                                                              self._pipelines.get_primaries())
                    load = ()
                # EVALSHA itself: a Script object in a pipeline makes redis-py ask SCRIPT EXISTS every time.
                async with self._pipelines.pipeline(transaction=False) as pipe:
                    loads = 0
                    for source in load:
                        pipe.script_load(source)
                        loads += 1
                    for script, args, at in calls:
                        if script:
                            pipe.evalsha(self._sha(script), 1, at, *args)
                        else:
                            pipe.execute_command(*args)
                    return list(await pipe.execute(raise_on_error=False))[loads:]
        except TimeoutError:
            if not deadline.expired():
                raise
            raise RedisTimeoutError(f"Redis did not answer a pipeline of {len(calls)} call(s) within "
                                    f"{self.links.socket_timeout_s:g} s") from None

    async def _lean(self, calls: list[Call], master: str) -> list[Any] | None:
        """The calls' replies through `lean_pipeline` (see there), or None for redis-py's pipeline
        to send them: on a Redis Cluster, a master this node's map of the slots does not know or
        that could not be reached (redis-py's cluster client finds its replica once promoted). A
        call the master redirected (its slot moved or moving) ran nothing: it is sent again the
        same way, through redis-py, which follows the redirection."""
        commands = [("EVALSHA", self._sha(script), 1, at, *args) if script else tuple(args)
                    for script, args, at in calls]
        callbacks = self._pipelines.response_callbacks
        pool = self._pipeline_pool
        if pool is not None:
            return await lean_pipeline.execute_retrying(pool, commands, callbacks)
        node = self._pipelines.get_node(node_name=master) if master else None
        if node is None:
            return None
        try:
            replies = await lean_pipeline.execute(lean_pipeline.NodeConnections(node), commands, callbacks)
        except RedisConnectionError:
            return None
        redirected = [i for i, reply in enumerate(replies) if isinstance(reply, lean_pipeline.REDIRECTED)]
        if redirected:
            again = await self._execute_on([calls[i] for i in redirected], (), "")
            for i, reply in zip(redirected, again):
                replies[i] = reply
        return replies

    def _connections_of(self, client: aioredis.Redis) -> lean_pipeline.PoolConnections:
        """The lean pipelines' connections of one of this store's clients of a single Redis (one
        PoolConnections per pool, so that the connections it keeps serve every caller)."""
        pool = client.connection_pool
        kept = self._kept.get(id(pool))
        if kept is None:
            kept = self._kept[id(pool)] = lean_pipeline.PoolConnections(pool)
        return kept

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode("utf-8")).hexdigest()
        return sha

    # ------------------------------------------------------------- broadcasts and audit

    async def listen(self, topic: Topic, on_message: Callable[[str], None],
                     on_subscribed: Callable[[], None] | None = None) -> None:
        if topic is Topic.READY:
            raise ValueError("`ready` is one channel per task type: use subscribe_each")
        channel = (self.keys.done_channel(self.listener_id) if topic is Topic.DONE
                   else self.keys.channel(topic.value))
        await pubsub.listen(self._redis, channel, on_message, on_subscribed)

    def subscribe_each(self, topic: Topic, on_message: Callable[[str, str], None],
                       on_subscribed: Callable[[str], None]) -> pubsub.ChannelSet:
        if topic is not Topic.READY:
            raise ValueError(f"{topic.value} is one channel, not one per name: use listen")
        ready = self._ready

        def heard(task_type: str, payload: str) -> None:
            ready.heard(task_type, payload)   # before the dispatcher claims on it
            on_message(task_type, payload)

        def subscribed(task_type: str) -> None:
            ready.listening(task_type)   # what was published before: its next claim looks everywhere
            on_subscribed(task_type)
        return pubsub.ChannelSet(self._redis, self.keys.ready_channel, heard, subscribed)

    @_unavailable_as_store_error
    async def expect_end(self, workflow_id: str) -> bool:
        _remember(self._awaited, workflow_id, None, AWAITED)
        return bool(await self._run(scripts.EXPECT_END, {"id": workflow_id, "listener": self.listener_id},
                                    at=self._at(workflow_id)))

    @_unavailable_as_store_error
    async def ended_state(self, workflow_id: str) -> m.WorkflowState | None:
        self._awaited.pop(workflow_id, None)   # its waiter is done waiting: no step reads it back now
        ended = self._ended_rows.pop(workflow_id, None)
        if ended is None:
            return None
        texts = await self._snapshot_texts_for([workflow_id], [ended])
        return parse_workflow(workflow_id, ended, texts)

    async def changes(self, workflow_id: str, recheck_s: float) -> AsyncIterator[None]:
        while not self.waiting_reads.take():   # no blocking connection free: look every recheck_s
            self.waiting_reads.without_connection += 1
            yield None
            await asyncio.sleep(recheck_s)
        loop = asyncio.get_running_loop()
        renew_at = 0.0
        try:
            # subscribed first, then the watch registered (the scripts publish `changed` only while it
            # holds), then the caller reads: a change either comes after the registration, and is
            # heard, or before it, and is read
            async for _ in pubsub.changes(self._blocking, self.keys.changed_channel(workflow_id), recheck_s,
                                          subscribe_timeout_s=self.links.socket_timeout_s):
                if loop.time() >= renew_at:
                    await self._run(scripts.WATCH, {"id": workflow_id, "ttl": WATCH_TTL_MS}, at=self._at(workflow_id))
                    renew_at = loop.time() + WATCH_RENEW_S
                yield None
        except REDIS_UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        finally:
            self.waiting_reads.give()

    @_unavailable_as_store_error
    async def ended_counts(self, workflow_ids: Iterable[str] | None = None) -> Counter[str]:
        wanted = set(workflow_ids) if workflow_ids is not None else None
        return Counter(workflow_id for workflow_id, _ in await self.ended_entries()
                       if wanted is None or workflow_id in wanted)

    @_unavailable_as_store_error
    async def ended_entries(self) -> list[tuple[str, int]]:
        """(workflow id, end time in ms) of every terminal transition, oldest first."""
        found: list[tuple[int, str, str]] = []
        for p in self.keys.all_partitions():
            last = "-"
            while True:
                entries = await self._redis.xrange(self.keys.ended(p), min=last, max="+", count=10_000)
                if last != "-":
                    entries = entries[1:]
                if not entries:
                    break
                found += [(int(fields["at"]), entry_id, fields["wf"]) for entry_id, fields in entries]
                last = entries[-1][0]
        return [(workflow_id, at) for at, _, workflow_id in sorted(found)]

    # ------------------------------------------------------------- the event bus

    @_unavailable_as_store_error
    @_acknowledged
    async def publish_event(self, topic: str, payload_json: str, key: str, now_ms: int,
                            take: Sequence[str] = (), consumer: str = "",
                            on_taken: Callable[[list[tuple[str, BusEvent]]], None] | None = None) -> str:
        reply = await self._run(scripts.PUBLISH_EVENT, {"topic": topic, "key": key, "now": now_ms,
                                                        "topics": self.quotas.topics, "take": list(take),
                                                        "consumer": consumer}, payload_json, at=self._global)
        if not isinstance(reply, list):
            raise self._refusal(str(reply), namespace_of(topic))
        if on_taken is not None and len(reply) > 1:   # before `_acknowledged` waits for replicas, which may refuse
            on_taken([(str(group), self._bus_event(topic, str(entry_id), dict(zip(fields[::2], fields[1::2]))))
                      for group, entry_id, fields in reply[1:]])
        return str(reply[0])

    async def _use_topic(self, topic: str, wait_group: str = "") -> None:
        """Count a topic in its namespace's quota (QuotaExceeded past it); with `wait_group`, watch it."""
        reply = str(await self._run(scripts.USE_TOPIC, {"topic": topic, "topics": self.quotas.topics,
                                                        "group": wait_group}, at=self._global))
        if reply != "OK":
            raise self._refusal(reply, namespace_of(topic))

    @staticmethod
    def _bus_event(topic: str, entry_id: str, fields: dict[str, str], deliveries: int = 1) -> BusEvent:
        return BusEvent(entry_id, topic, fields.get("p", "{}"), fields.get("k", ""), int(fields.get("at", 0) or 0),
                        deliveries)

    @_unavailable_as_store_error
    async def read_events(self, topic: str, after: str, limit: int) -> list[BusEvent]:
        entries = await self._redis.xrange(self.keys.events(topic), min=f"({after}" if after else "-", max="+",
                                           count=limit)
        return [self._bus_event(topic, entry_id, fields) for entry_id, fields in entries]

    @_unavailable_as_store_error
    @_acknowledged
    async def configure_topic(self, topic: str, max_len: int, max_age_s: int = 0) -> TopicInfo:
        await self._use_topic(topic)
        async with self._redis.pipeline(transaction=True) as pipe:
            if max_len:
                pipe.hset(self.keys.topic_settings, topic, max_len)
            else:
                pipe.hdel(self.keys.topic_settings, topic)
            if max_age_s:
                pipe.hset(self.keys.topic_ages, topic, max_age_s)
            else:
                pipe.hdel(self.keys.topic_ages, topic)
            await pipe.execute()
        stream = self.keys.events(topic)
        await self._redis.xtrim(stream, maxlen=max_len or DEFAULT_TOPIC_MAX_LEN, approximate=True)
        if max_age_s:
            await self._redis.xtrim(stream, minid=max(0, int(time.time() * 1000) - max_age_s * 1000),
                                    approximate=False)
        return await self.topic_info(topic)

    @_unavailable_as_store_error
    async def topic_info(self, topic: str) -> TopicInfo:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.topic_settings, topic)
            pipe.xlen(self.keys.events(topic))
            pipe.hget(self.keys.topic_ages, topic)
            max_len, length, max_age = await pipe.execute()
        return TopicInfo(int(max_len or DEFAULT_TOPIC_MAX_LEN), int(length), int(max_age or 0))

    @_unavailable_as_store_error
    @_acknowledged
    async def watch_topics(self, topics: Iterable[str]) -> None:
        for topic in sorted(set(topics)):
            await self._use_topic(topic, WAIT_GROUP_PREFIX + topic)

    @_unavailable_as_store_error
    async def watched_topics(self) -> list[str]:
        return sorted(await self._redis.smembers(self.keys.watched_topics))

    @_unavailable_as_store_error
    async def ensure_group(self, topic: str, group: str) -> None:
        reply = str(await self._run(scripts.ENSURE_GROUP, {"topic": topic, "group": group,
                                                           "groups": self.quotas.consumer_groups,
                                                           "topics": self.quotas.topics}, at=self._global))
        if reply != "OK":
            raise self._refusal(reply, namespace_of(topic))

    @_unavailable_as_store_error
    @_acknowledged
    async def put_event_handler(self, handler: dict[str, Any]) -> None:
        reply = str(await self._run(scripts.PUT_HANDLER, {"name": handler["name"], "topic": handler["event"],
                                                          "quota": self.quotas.event_handlers,
                                                          "topics": self.quotas.topics}, dumps(handler),
                                    at=self._global))
        if reply != "OK":
            raise self._refusal(reply, namespace_of(handler["name"]))

    @_unavailable_as_store_error
    async def event_handlers(self) -> list[dict[str, Any]]:
        stored = await self._redis.hgetall(self.keys.event_handlers)
        return [json.loads(stored[name]) for name in sorted(stored)]

    @_unavailable_as_store_error
    @_acknowledged
    async def remove_event_handler(self, name: str) -> bool:
        return bool(await self._run(scripts.REMOVE_HANDLER, {"name": name}, at=self._global))

    @_unavailable_as_store_error
    async def receive_events(self, handler: str, topic: str, consumer: str, count: int,
                             block_ms: int, ack: Sequence[str] = ()) -> list[BusEvent]:
        """A blocking read while a connection of the pool for blocking reads is free; else reads
        without blocking, again on each broadcast of the topic (and every RECHECK_S), until
        something is found or `block_ms` passed (see `RedisLinks`). `ack` goes with the first read,
        in its pipeline (XACK, then XREADGROUP: the wait begins after the acknowledgement)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(0, block_ms), MAX_BLOCK_MS) / 1000
        waited = False
        while True:
            remaining_ms = int((deadline - loop.time()) * 1000)
            if remaining_ms > 0 and self.waiting_reads.take():
                try:
                    async with asyncio.timeout(remaining_ms / 1000 + self.links.socket_timeout_s):
                        return await self._read_group(self._blocking, handler, topic, consumer, count, remaining_ms,
                                                      ack)
                except TimeoutError:
                    raise StoreUnavailable(f"Redis did not answer a read blocking {remaining_ms} ms within "
                                           f"{self.links.socket_timeout_s:g} s more") from None
                finally:
                    self.waiting_reads.give()
            if remaining_ms > 0 and not waited:
                self.waiting_reads.without_connection += 1
                waited = True
            with self._published_signal(topic) as published:   # taken before the read: nothing is missed
                found = await self._read_group(self._redis, handler, topic, consumer, count, None, ack)
                ack = ()
                if found or remaining_ms <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(published.wait(), min(remaining_ms / 1000, RECHECK_S))

    @contextlib.contextmanager
    def _published_signal(self, topic: str) -> Iterator[asyncio.Event]:
        """An event set by the next `published` broadcast of `topic` (one subscription per node,
        made at the first wait without a connection); entries live while someone waits."""
        if self._published_listener is None or self._published_listener.done():
            self._published_listener = asyncio.create_task(self.listen(Topic.PUBLISHED, self._on_published,
                                                                       self._wake_every_reader))
        event, count = self._published.get(topic) or (asyncio.Event(), 0)
        self._published[topic] = (event, count + 1)
        try:
            yield event
        finally:
            current = self._published.get(topic)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._published[topic]
                else:
                    self._published[topic] = (event, current[1] - 1)

    def _wake_every_reader(self) -> None:
        """(Re)subscribed: whatever was published meanwhile was not broadcast to us; read again."""
        for topic in list(self._published):
            self._on_published(topic)

    def _on_published(self, topic: str) -> None:
        waiting = self._published.pop(topic, None)
        if waiting is not None:   # its readers read again; a later one registers a new event
            waiting[0].set()

    async def _read_group(self, client: Any, handler: str, topic: str, consumer: str, count: int,
                          block_ms: int | None, ack: Sequence[str] = ()) -> list[BusEvent]:
        """XREADGROUP on `client`, blocking `block_ms` (None: not at all), after XACK of `ack` in
        the same pipeline (both keys are the stream's: one slot on a Redis Cluster)."""
        stream = self.keys.events(topic)
        try:
            if not self._on_cluster:
                reply = await self._read_group_lean(client, handler, stream, consumer, count, block_ms, ack)
            elif ack:
                pipe = client.pipeline(transaction=False)
                pipe.xack(stream, handler, *ack)
                pipe.xreadgroup(handler, consumer, {stream: ">"}, count=count, block=block_ms)
                _, reply = await pipe.execute()
            else:
                reply = await client.xreadgroup(handler, consumer, {stream: ">"}, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the group is gone (Redis lost it, or the handler was just removed): recreate it if the handler exists
            waited = handler.startswith(WAIT_GROUP_PREFIX) and await self._redis.sismember(
                self.keys.watched_topics, topic)
            if waited or await self._redis.hexists(self.keys.event_handlers, handler):
                try:
                    await self._redis.xgroup_create(stream, handler, id="$", mkstream=True)
                except ResponseError:
                    pass
            return []
        found: list[BusEvent] = []
        for _, entries in reply or []:
            found += [self._bus_event(topic, entry_id, fields) for entry_id, fields in entries if fields]
        return found

    async def _read_group_lean(self, client: Any, handler: str, stream: str, consumer: str, count: int,
                               block_ms: int | None, ack: Sequence[str]) -> Any:
        """`_read_group`'s XACK and XREADGROUP on one Redis, through `lean_pipeline` on a connection of
        `client`'s pool: an event consumer reads once per batch it handles, and redis-py's Pipeline was
        about 5 % of the nodes' CPU at 300 events/s (py-spy). Raises an error reply (NOGROUP)."""
        read = ["XREADGROUP", "GROUP", handler, consumer, "COUNT", count]
        if block_ms is not None:
            read += ["BLOCK", block_ms]
        commands = [*([("XACK", stream, handler, *ack)] if ack else []), (*read, "STREAMS", stream, ">")]
        replies = await lean_pipeline.execute_retrying(   # XACK may be sent twice: it is idempotent
            self._connections_of(client), commands, client.response_callbacks)
        return lean_pipeline.raising_errors(replies)[-1]

    @_unavailable_as_store_error
    async def claim_events(self, handler: str, topic: str, consumer: str, idle_ms: int, count: int,
                           max_deliveries: int, cursor: str, now_ms: int) -> tuple[str, list[BusEvent]]:
        reply = await self._run(scripts.CLAIM_EVENTS, {
            "topic": topic, "handler": handler, "consumer": consumer, "idle": idle_ms, "count": count,
            "max": max_deliveries, "cursor": cursor or "0-0", "dead": _dead_letters_of(topic), "now": now_ms,
            "shown_topic": relative(topic)}, at=self._global)
        events = [BusEvent(str(e[0]), topic, str(e[1]), str(e[2]), int(e[3]), int(e[4])) for e in reply[1:]]
        return str(reply[0]), events

    @_unavailable_as_store_error
    async def ack_events(self, handler: str, topic: str, event_ids: list[str]) -> None:
        if event_ids:
            await self._redis.xack(self.keys.events(topic), handler, *event_ids)

    @_unavailable_as_store_error
    async def dead_letter(self, handler: str, event: BusEvent, reason: str, now_ms: int) -> bool:
        letter = (f'{{"handler":{dumps(handler)},"topic":{dumps(relative(event.topic))},'
                  f'"eventId":{dumps(event.event_id)},"key":{dumps(event.key)},"deliveries":{event.deliveries},"reason":{dumps(reason)},'
                  f'"payload":{event.payload_json}}}')
        return bool(await self._run(scripts.DEAD_LETTER, {
            "topic": event.topic, "handler": handler, "event": event.event_id, "key": event.key,
            "dead": _dead_letters_of(event.topic), "now": now_ms}, letter, at=self._global))

    @_unavailable_as_store_error
    async def event_action(self, handler: str, event_id: str, action: int, kind: str, now_ms: int, *,
                           workflow_id: str = "", task_id: str = "", status: str = "", reason: str = "",
                           topic: str = "", key: str = "", data_json: str = "{}") -> tuple[ActionOutcome, str]:
        answer = json.loads(await self._run(scripts.EVENT_ACTION, {
            "handler": handler, "event": event_id, "action": action, "kind": kind, "ttl": self.idempotency_ttl_s,
            "now": now_ms, "id": workflow_id, "task": task_id, "status": status, "reason": reason, "topic": topic,
            "key": key}, data_json, at=self._global if kind == "publish" else self._at(workflow_id)))
        return ActionOutcome(answer["outcome"]), str(answer["detail"])

    # ------------------------------------------------------------- reads for the console and metrics

    @_unavailable_as_store_error
    async def queue_stats(self, task_types: Iterable[str] | None = None) -> list[QueueStats]:
        if task_types is None:
            task_types = await self._redis.hkeys(self.keys.task_defs)
        types = sorted(set(task_types))
        partitions = self.keys.all_partitions()
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_type in types:
                for p in partitions:
                    pipe.zcard(self.keys.queue(p, task_type))
                    pipe.zrange(self.keys.queue(p, task_type), 0, 0, withscores=True)
            replies = iter(await pipe.execute())
        stats = []
        for task_type in types:
            depth, oldest = 0, None
            for _ in partitions:
                found, first = next(replies), next(replies)
                depth += int(found)
                if first and (oldest is None or int(first[0][1]) < oldest):
                    oldest = int(first[0][1])
            stats.append(QueueStats(task_type, depth, oldest))
        return stats

    @_unavailable_as_store_error
    async def status_counts(self, *, name: str = "", correlation_id: str = "", created_from_ms: int = 0,
                            created_to_ms: int = 0, namespace: str = "") -> dict[str, int]:
        narrower = (("corr", correlation_id) if correlation_id else ("name", name) if name
                    else ("ns", namespace) if namespace else ())
        async with self._redis.pipeline(transaction=False) as pipe:   # every partition's, summed
            for p in self.keys.all_partitions():
                for status in WORKFLOW_STATUSES:
                    if narrower:
                        pipe.zintercard(2, [self.keys.index(p, "st", status), self.keys.index(p, *narrower)])
                    else:
                        pipe.zcount(self.keys.index(p, "st", status), created_from_ms or "-inf",
                                    created_to_ms or "+inf")
            counts = await pipe.execute()
        totals: dict[str, int] = dict.fromkeys(WORKFLOW_STATUSES, 0)
        for i, count in enumerate(counts):
            totals[WORKFLOW_STATUSES[i % len(WORKFLOW_STATUSES)]] += int(count)
        return totals

    @_unavailable_as_store_error
    async def server_time_ms(self) -> float:
        seconds, microseconds = await self._redis.time()
        return int(seconds) * 1000 + int(microseconds) / 1000

    async def health(self) -> StoreHealth:
        started = time.perf_counter()
        try:
            await self._redis.ping()
            latency_ms = (time.perf_counter() - started) * 1000
            info = await self._redis.info()
            if self._on_cluster:   # INFO is one server's (any); the cluster's own state says whether it serves
                info.update(await self._redis.cluster_info())
                if info.get("cluster_state") != "ok":
                    raise ConnectionError(f"the Redis Cluster's state is {info.get('cluster_state')!r}, "
                                          f"{info.get('cluster_slots_ok')} of 16384 slots served")
        except Exception as exc:   # down, loading, failing over: whatever it is, it is the answer
            return StoreHealth(False, (time.perf_counter() - started) * 1000, error=str(exc) or type(exc).__name__)
        wanted = ("redis_version", "role", "connected_slaves", "used_memory_human", "aof_enabled",
                  "aof_last_write_status", "uptime_in_seconds", "connected_clients", "cluster_state",
                  "cluster_size", "cluster_known_nodes")
        return StoreHealth(True, latency_ms, {key: str(info[key]) for key in wanted if key in info})


class _MergedIndex:
    """One search index kept per partition, read as if it were one: in search order (creation time,
    then id, both descending, as ZREVRANGEBYSCORE orders each), `per_partition` rows of a partition
    fetched at a time, every partition that ran out fetched again in one round trip."""

    def __init__(self, client: Any, indexes: list[str], top: float | str, bottom: float | str,
                 per_partition: int) -> None:
        self._client = client
        self._top, self._bottom, self._per_partition = top, bottom, per_partition
        self._heads: dict[str, list[tuple[str, float]]] = {index: [] for index in indexes}   # reversed: pop() is next
        self._offsets = dict.fromkeys(indexes, 0)
        self._live = set(indexes)   # partitions that may hold more than their head

    async def take(self, count: int) -> list[tuple[str, float]]:
        rows: list[tuple[str, float]] = []
        while len(rows) < count:
            await self._fill()
            heads = [(head[-1][1], head[-1][0], index) for index, head in self._heads.items() if head]
            if not heads:
                break
            _, _, index = max(heads)
            rows.append(self._heads[index].pop())
        return rows

    async def _fill(self) -> None:
        empty = [index for index in self._live if not self._heads[index]]
        if not empty:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for index in empty:
                pipe.zrevrangebyscore(index, self._top, self._bottom, start=self._offsets[index],
                                      num=self._per_partition, withscores=True)
            replies = await pipe.execute()
        for index, rows in zip(empty, replies):
            self._offsets[index] += len(rows)
            if len(rows) < self._per_partition:
                self._live.discard(index)
            self._heads[index] = [(member, float(score)) for member, score in reversed(rows)]


class _Limited(Exception):
    """A claim found a type with limits without a grant (scripts.CLAIM answered 'LIMITED')."""


def _unconnectable(address: str) -> aioredis.Redis:
    raise ValueError(f"this store was not given a way to connect to the Redis Cluster master {address}")


def _remember(memory: OrderedDict[str, T], key: str, value: T, capacity: int) -> None:
    """Keep `key` as the most recent of `memory`, which holds the `capacity` most recent only."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > capacity:
        memory.popitem(last=False)


def _parse_cursor(cursor: str) -> tuple[float, str] | None:
    """'' (the first page) or '<creation ms>:<workflow id>'; anything else is a caller's error."""
    if not cursor:
        return None
    score, sep, workflow_id = cursor.partition(":")
    if not sep or not workflow_id or not score.isdigit() or len(score) > 15:
        raise ValueError("not a page token this API returned")
    return float(score), workflow_id


def _dead_letters_of(topic: str) -> str:
    """The dead-letter topic of `topic`'s namespace: one team's failures stay its own."""
    return topic_in(namespace_of(topic), DEAD_LETTER_TOPIC)
