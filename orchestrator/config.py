"""A node's settings, from a YAML file, command-line flags or both (flags win)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .core.http_request import parse_cidrs
from .store.protocol import Quotas
from .store.redis.adapter import RedisLinks
from .store.redis.keys import MAX_PARTITIONS, cluster_prefix

MIB = 1024 * 1024
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_MIN_REPLICAS = 16
MAX_REPLICA_TIMEOUT_MS = 60_000
MAX_QUOTA = 1_000_000_000
# the settings of a node's links to Redis and of its namespaces' quotas: (lowest, highest) of each
STORE_LIMITS: dict[str, tuple[float, float]] = {
    "redis_socket_timeout_s": (0.1, 300.0), "redis_connect_timeout_s": (0.1, 60.0),
    "redis_blocking_connections": (1, 10_000), "quota_workflows_in_flight": (0, MAX_QUOTA),
    "quota_event_handlers": (0, MAX_QUOTA), "quota_topics": (0, MAX_QUOTA), "quota_consumer_groups": (0, MAX_QUOTA)}


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: how flags and environment variables give lists."""
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass
class NodeConfig:
    node_id: str = field(default_factory=socket.gethostname)
    listen: str = "127.0.0.1:50051"          # host:port the gRPC server binds
    advertise: str = ""                       # host:port others reach it at; defaults to `listen`
    redis_url: str = ""                       # default DEFAULT_REDIS_URL, unless Sentinels or a Redis Cluster are given
    redis_sentinels: list[str] = field(default_factory=list)  # host:port of each Sentinel; instead of redis_url
    # host:port of some servers of a Redis Cluster (its seeds: the client finds the others through them);
    # instead of redis_url and redis_sentinels (store/redis/adapter.py, `RedisStore.from_cluster`)
    redis_cluster: list[str] = field(default_factory=list)
    redis_master: str = "mymaster"            # the master name the Sentinels monitor
    # how many partitions the state is cut into (store/redis/keys.py), fixed when a cluster's state is
    # first created; 0: as stored (64 for a new one). A node set to another number than stored refuses to start
    redis_partitions: int = 0
    # nothing is acknowledged (to a client, a worker, a publisher) until this many Redis replicas hold
    # it (WAIT, one round per batch of writes); 0: as soon as the master has it (lost if it dies first)
    redis_min_replicas: int = 0
    # longer than this unconfirmed: the caller gets UNAVAILABLE; keep it below Sentinel's down-after-milliseconds
    redis_replica_timeout_ms: int = 1000
    # how long a Redis command may go unanswered, and a connection take to open, before the caller gets
    # UNAVAILABLE (a cut link is otherwise noticed when TCP gives up, about 15 minutes); a blocking read
    # gets its own wait on top
    redis_socket_timeout_s: float = 5.0
    redis_connect_timeout_s: float = 2.0
    # connections the node's blocking reads (subscriptions' ReceiveEvents, event handlers and WAIT topics,
    # WatchWorkflow) may hold at once, apart from the others; past them a wait holds none and reads again
    # when its topic is published to (a watch: every second)
    redis_blocking_connections: int = 64
    # what each namespace may hold at once (0: no limit); past one: RESOURCE_EXHAUSTED naming it
    quota_workflows_in_flight: int = 1_000_000   # running, paused or compensating; starts are refused
    quota_event_handlers: int = 1_000
    quota_topics: int = 10_000                   # counted from a topic's first use
    quota_consumer_groups: int = 10_000          # subscription groups, counted from their first ReceiveEvents
    etcd_endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    cluster: str = "default"                  # names the election prefix and the Redis key prefix
    lease_ttl_s: float = 2.0                  # etcd raises anything under 1.5 x its election timeout
    # a leader whose clocks cannot complete a pass against Redis within this resigns (its link to Redis
    # may be cut while etcd still renews its lease) and stands again once Redis answers it
    leader_redis_timeout_s: float = 2.0
    max_payload_bytes: int = 1 * MIB          # a workflow input or task output, as JSON
    max_message_bytes: int = 4 * MIB          # any gRPC message
    retention_s: float = 7 * 86400.0          # how long a finished workflow stays in Redis before it is archived
    archive_dir: str = "archive"              # where archived workflows go (every node must see the same place)
    log_level: str = "INFO"
    log_format: str = "text"                  # or "json": one JSON object per line (see cluster/logs.py)
    trace_file: str = ""                      # also write the node's spans to this file, as JSON lines (development)
    # host:port of the web console and /metrics; default: the gRPC port + 1000 on the same host; "" = off
    http_listen: str | None = None
    # HTTP and HTTP_POLL tasks this node calls at once; 0 = none (workers serving "HTTP" run them)
    http_task_concurrency: int = 32
    # address ranges (CIDR) HTTP tasks may call although they are loopback, link-local, private or
    # reserved (by default only public addresses; etcd and Redis never): e.g. [10.0.0.0/8]
    http_task_allow_cidrs: list[str] = field(default_factory=list)
    # tokens and their roles (YAML or JSON, see core/auth.py); "" = no authentication (development)
    tokens_file: str = ""
    # TLS on the gRPC and HTTP ports (cluster/tls.py); with a CA, clients must present certificates it signed
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    allow_plaintext: bool = False             # serve plaintext beyond loopback (only behind something that encrypts)
    # the console's cookies are Secure even when the node serves plain http: a TLS-terminating proxy is in front
    console_secure_cookies: bool = False
    # etcd over TLS: its CA, and this node's client certificate when etcd asks for one (--client-cert-auth)
    etcd_tls_ca_file: str = ""
    etcd_tls_cert_file: str = ""
    etcd_tls_key_file: str = ""
    # Redis as an ACL user, over TLS (rediss:// in redis_url, or the files below); the password from a file
    redis_username: str = ""
    redis_password_file: str = ""
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""

    def __post_init__(self) -> None:
        if not self.advertise:
            self.advertise = self.listen
        for name in ("listen", "advertise", "http_listen"):
            check_port(name, getattr(self, name))
        if self.http_listen is None:
            self.http_listen = console_address(self.listen)
        if isinstance(self.etcd_endpoints, str):
            self.etcd_endpoints = split_list(self.etcd_endpoints)
        if isinstance(self.redis_sentinels, str):
            self.redis_sentinels = split_list(self.redis_sentinels)
        self._check_redis_choice()
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.lease_ttl_s <= 0:
            raise ValueError("lease_ttl_s must be positive")
        if not 0.1 <= self.leader_redis_timeout_s <= 3600:
            raise ValueError("leader_redis_timeout_s must be from 0.1 to 3600 (seconds)")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_ca_file and not self.tls_cert_file:
            raise ValueError("tls_ca_file (client certificates) needs tls_cert_file and tls_key_file")
        if bool(self.etcd_tls_cert_file) != bool(self.etcd_tls_key_file):
            raise ValueError("etcd_tls_cert_file and etcd_tls_key_file go together")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise ValueError("redis_tls_cert_file and redis_tls_key_file go together")
        if not 0 <= self.http_task_concurrency <= 10_000:
            raise ValueError("http_task_concurrency must be from 0 (the node runs no HTTP tasks) to 10000")
        if isinstance(self.http_task_allow_cidrs, str):
            self.http_task_allow_cidrs = split_list(self.http_task_allow_cidrs)
        parse_cidrs(self.http_task_allow_cidrs)   # ValueError names a range that is none
        if not 0 <= self.redis_partitions <= MAX_PARTITIONS:
            raise ValueError(f"redis_partitions must be from 1 to {MAX_PARTITIONS} (0: as stored, 64 for a new "
                             "cluster)")
        if not 0 <= self.redis_min_replicas <= MAX_MIN_REPLICAS:
            raise ValueError(f"redis_min_replicas must be from 0 (the master alone) to {MAX_MIN_REPLICAS}")
        if not 1 <= self.redis_replica_timeout_ms <= MAX_REPLICA_TIMEOUT_MS:
            raise ValueError(f"redis_replica_timeout_ms must be from 1 to {MAX_REPLICA_TIMEOUT_MS}")
        for name, (lowest, highest) in STORE_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not lowest <= value <= highest:
                raise ValueError(f"{name} must be a number from {lowest:g} to {highest:g}, not {value!r}")
        if not isinstance(self.console_secure_cookies, bool):
            raise ValueError("console_secure_cookies must be true or false")
        if self.max_payload_bytes >= self.max_message_bytes:
            raise ValueError("max_payload_bytes must be below max_message_bytes")

    def _check_redis_choice(self) -> None:
        """One way to Redis: a URL, Sentinels, or a Redis Cluster's seeds (ValueError naming both given)."""
        if isinstance(self.redis_cluster, str):
            self.redis_cluster = split_list(self.redis_cluster)
        if self.redis_cluster:
            given = [name for name in ("redis_url", "redis_sentinels") if getattr(self, name)]
            if given:
                raise ValueError(f"redis_cluster and {' and '.join(given)} are both given: a node keeps its state in "
                                 "one Redis (redis_url), one behind Sentinels (redis_sentinels) or a Redis Cluster "
                                 "(redis_cluster, its seed servers); give one of them")
            for seed in self.redis_cluster:
                host, sep, port = str(seed).rpartition(":")
                if not sep or not host or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
                    raise ValueError(f"redis_cluster: {seed!r} is not host:port (a port from 1 to {MAX_PORT})")
        elif self.redis_sentinels and self.redis_url:   # the URL would be ignored: say so rather than guess
            raise ValueError("redis_sentinels and redis_url are both given: a node finds its Redis through the "
                             "Sentinels (redis_sentinels, with redis_master) or at one address (redis_url), not "
                             "both; give one of them")
        elif not self.redis_url:
            self.redis_url = DEFAULT_REDIS_URL

    def redis_links(self) -> RedisLinks:
        """Timeouts of the node's Redis connections and the pool of its blocking reads."""
        return RedisLinks(float(self.redis_socket_timeout_s), float(self.redis_connect_timeout_s),
                          int(self.redis_blocking_connections))

    def quotas(self) -> Quotas:
        """What each namespace may hold at once."""
        return Quotas(int(self.quota_workflows_in_flight), int(self.quota_event_handlers), int(self.quota_topics),
                      int(self.quota_consumer_groups))

    def redis_password(self) -> str | None:
        """The Redis ACL user's password, read from its file (never given on a command line)."""
        if not self.redis_password_file:
            return None
        return Path(self.redis_password_file).read_text().strip()

    @property
    def infrastructure(self) -> list[str]:
        """host:port of the etcd and Redis servers the cluster depends on (HTTP tasks may not call them)."""
        redis = urlsplit(self.redis_url)
        found_through = self.redis_sentinels or self.redis_cluster   # then redis_url is not used
        own = [] if found_through else [f"{redis.hostname or '127.0.0.1'}:{redis.port or 6379}"]
        return [endpoint.split("://")[-1]
                for endpoint in (*self.etcd_endpoints, *self.redis_sentinels, *self.redis_cluster, *own)]

    @property
    def election_prefix(self) -> str:
        return f"/orchestrator/{self.cluster}"

    @property
    def redis_prefix(self) -> str:
        return cluster_prefix(self.cluster)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> NodeConfig:
        values: dict[str, Any] = {}
        if path:
            values = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


MAX_PORT = 65535


def check_port(setting: str, address: str | None) -> None:
    """Refuses (ValueError) a host:port whose port is beyond 65535: bound, it would silently wrap
    round to 16 bits (66051 is port 515, a privileged port no one asked for)."""
    if not address:
        return
    port = address.rpartition(":")[2]
    if port.isdigit() and int(port) > MAX_PORT:
        raise ValueError(f"{setting} {address}: port {int(port)} is beyond {MAX_PORT}, the highest TCP port")


def console_address(grpc_listen: str) -> str:
    """The console's default address: the gRPC port + 1000 on the same host (port 0 stays 0: any free
    port); "" (no console) when `grpc_listen` is not host:port or the port leaves no room."""
    host, sep, port = grpc_listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) + 1000 > MAX_PORT:
        return ""
    return f"{host}:{int(port) + 1000 if int(port) else 0}"
