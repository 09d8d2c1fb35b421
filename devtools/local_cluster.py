"""A whole cluster on one machine, as real processes: etcd, Redis, nodes and workers.

`make cluster`, the failover drill and the integration tests all build their
clusters here, so what the tests kill is exactly what a user runs.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml

from orchestrator.store.redis import RedisStore
from orchestrator.store.redis.keys import cluster_prefix

from .certs import DevCerts
from .redis_cluster import LocalRedisCluster, start_redis_cluster
from .procs import (EtcdCluster, ManagedProcess, ProcessError, RedisServer, SentinelServer, first_then_side_by_side,
                    free_port, lost_its_port, start_etcd_cluster, start_redis, start_sentinel, stop_all, wait_for_port,
                    wait_for_replicas)

LOOPBACK = "127.0.0.1"


MAX_PORT = 65535
CONSOLE_OFFSET = 1000   # a fixed node port's console: gRPC port + 1000, as the node's own default
SENTINEL_OFFSET = 20000  # a fixed Redis port's Sentinels: its port + 20000, + 1, ... (6379 -> 26379, as Redis's own)
MAX_REPLICAS = 5
# `make cluster REPLICAS=N` sets this: it overrides `redis_replicas` of the YAML file
REPLICAS_ENV = "ORCHESTRATOR_REDIS_REPLICAS"
# `make cluster REDIS=cluster` sets this to "cluster": it overrides `redis_cluster_masters` (3 then)
REDIS_KIND_ENV = "ORCHESTRATOR_REDIS"
CLUSTER_MASTERS = 3   # the Redis Cluster `REDIS=cluster` runs: 3 masters, a replica each
SENTINEL_DOWN_AFTER_MS = 1000   # a killed master is noticed within a second, then a replica promoted


@dataclass
class ClusterSettings:
    """What `deploy/local-cluster.yaml` says; every port 0 means "pick a free one"."""

    name: str = "local"
    etcd_members: int = 3
    etcd_election_timeout_ms: int = 1000
    redis_port: int = 0
    redis_appendfsync: str = "everysec"
    # The production shape (deploy/production/): this many replicas of the Redis master, and
    # `sentinels` Sentinels (quorum: a majority) that the nodes find the master through; 0: one Redis.
    redis_replicas: int = 0
    sentinels: int = 3
    # The nodes acknowledge a write once this many replicas hold it (their redis_min_replicas), and
    # every Redis refuses writes with fewer replicas connected (min-replicas-to-write; not a Redis
    # Cluster's masters, one of which is alone after a failover until its old master returns);
    # default: 1 with replicas (a Redis Cluster's included), 0 without.
    redis_min_replicas: int | None = None
    # A Redis Cluster of this many masters (a replica each, devtools/redis_cluster.py) instead of one
    # Redis: the nodes get its servers as --redis-cluster; 0: one Redis. `make cluster REDIS=cluster` sets 3.
    redis_cluster_masters: int = 0
    node_ports: list[int] = field(default_factory=lambda: [0, 0, 0])
    # each node's console and /metrics; default: its gRPC port + 1000 when that port is fixed, else a free one
    console_ports: list[int] = field(default_factory=list)
    lease_ttl_s: float = 2.0
    workers: int = 1
    worker_concurrency: int = 16
    log_level: str = "INFO"
    retention_s: float = 0.0   # 0: the nodes' default (7 days)
    # address ranges the nodes' HTTP tasks may call beyond public addresses (their --http-task-allow-cidrs)
    http_task_allow_cidrs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Refuses (ValueError, one line) a port that is no port, and a console port it would have to
        derive beyond 65535 (a port wraps round to 16 bits when bound: 66051 would be port 515)."""
        for name, ports in (("redis_port", [self.redis_port]), ("node_ports", self.node_ports),
                            ("console_ports", self.console_ports)):
            for port in ports:
                if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
                    raise ValueError(f"{name}: {port!r} is not a port (0 to {MAX_PORT}; 0 picks a free one)")
        if self.console_ports and len(self.console_ports) != len(self.node_ports):
            raise ValueError(f"console_ports: {len(self.console_ports)} ports for {len(self.node_ports)} node_ports")
        if not self.console_ports:
            for port in self.node_ports:
                if port and port + CONSOLE_OFFSET > MAX_PORT:
                    raise ValueError(f"node_ports: {port} leaves no room for its console at gRPC port + "
                                     f"{CONSOLE_OFFSET} ({port + CONSOLE_OFFSET} is above {MAX_PORT}); choose node "
                                     f"ports up to {MAX_PORT - CONSOLE_OFFSET}, give console_ports, or use 0")
        if isinstance(self.redis_replicas, bool) or not isinstance(self.redis_replicas, int) \
                or not 0 <= self.redis_replicas <= MAX_REPLICAS:
            raise ValueError(f"redis_replicas: {self.redis_replicas!r} is not a number of replicas from 0 to "
                             f"{MAX_REPLICAS}")
        if self.redis_replicas and not 1 <= self.sentinels <= 7:
            raise ValueError(f"sentinels: {self.sentinels!r} is not a number of Sentinels from 1 to 7")
        if self.redis_cluster_masters and (self.redis_cluster_masters < CLUSTER_MASTERS or self.redis_replicas):
            raise ValueError(f"redis_cluster_masters: {self.redis_cluster_masters!r} must be 0 (one Redis) or at least "
                             f"{CLUSTER_MASTERS}, and without redis_replicas (each master has a replica of its own)")
        replicas = 1 if self.redis_cluster_masters else self.redis_replicas   # a Redis Cluster: one per master
        if self.redis_min_replicas is None:
            self.redis_min_replicas = min(1, replicas)
        if not 0 <= self.redis_min_replicas <= replicas:
            raise ValueError(f"redis_min_replicas: {self.redis_min_replicas} must be from 0 to the replicas of a "
                             f"master ({replicas}): a write cannot wait for replicas that do not exist")
        fixed = [p for p in [self.redis_port, *self.node_ports, *self.console_ports] if p]
        twice = sorted({p for p in fixed if fixed.count(p) > 1})
        if twice:
            raise ValueError(f"port {', '.join(map(str, twice))} is given twice "
                             "(among redis_port, node_ports and console_ports)")

    @classmethod
    def load(cls, path: str | Path) -> ClusterSettings:
        """The settings of a YAML file; ValueError (one line) for a setting that cannot be used."""
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: not a mapping of settings")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        replicas = os.environ.get(REPLICAS_ENV, "").strip()
        if replicas:
            if not replicas.isdigit():
                raise ValueError(f"{REPLICAS_ENV}={replicas!r} (make cluster REPLICAS=...) is not a number of "
                                 "replicas")
            values["redis_replicas"] = int(replicas)
        kind = os.environ.get(REDIS_KIND_ENV, "").strip()
        if kind not in ("", "one", "cluster"):
            raise ValueError(f"{REDIS_KIND_ENV}={kind!r} (make cluster REDIS=...) is neither 'one' nor 'cluster'")
        if kind:
            values["redis_cluster_masters"] = CLUSTER_MASTERS if kind == "cluster" else 0
        return cls(**values)

    @property
    def min_replicas(self) -> int:
        return self.redis_min_replicas or 0


@dataclass
class PortPlan:
    """Every port a local cluster listens on, chosen before anything starts (so that all of them
    can be checked first): etcd (client, peer) per member, Redis, each node's gRPC and console."""

    etcd: list[tuple[int, int]]
    redis: int
    nodes: dict[str, int]
    consoles: dict[str, int]
    fixed: set[int] = field(default_factory=set)   # the ones the settings give (not picked here)
    replicas: list[int] = field(default_factory=list)    # Redis replicas
    sentinels: list[int] = field(default_factory=list)

    def roles(self) -> list[tuple[int, str]]:
        """(port, what listens on it), in the order the cluster starts them."""
        rows = []
        for index, (client, peer) in enumerate(self.etcd):
            rows += [(client, f"etcd m{index} client"), (peer, f"etcd m{index} peer")]
        rows.append((self.redis, "Redis master" if self.replicas else "Redis"))
        rows += [(port, f"Redis replica {index + 1}") for index, port in enumerate(self.replicas)]
        rows += [(port, f"Sentinel {index + 1}") for index, port in enumerate(self.sentinels)]
        for node_id, port in self.nodes.items():
            rows += [(port, f"{node_id} gRPC"), (self.consoles[node_id], f"{node_id} console")]
        return rows


def start_node(log_dir: Path, *, node_id: str, port: int, redis_url: str, etcd_endpoints: list[str],
               cluster: str, lease_ttl_s: float, log_level: str = "INFO",
               redis_sentinels: list[str] | None = None, extra: list[str] | None = None,
               http_port: int | None = None, prefix: list[str] | None = None) -> ManagedProcess:
    """Start `orchestrator node` as a child process; returns once its gRPC port is open.
    `extra`: more `orchestrator node` flags (e.g. --retention, --archive-dir). Its console and
    /metrics listen on `http_port` (a free port when None; 0: no console). `prefix`: a command
    the node runs under (e.g. `faketime -f -30s` for a node whose clock is off)."""
    # neither (a Redis Cluster): `extra` has its --redis-cluster
    redis = (["--redis-sentinels", ",".join(redis_sentinels)] if redis_sentinels
             else ["--redis-url", redis_url] if redis_url else [])
    if http_port is None:
        http_port = free_port()
    console = f"{LOOPBACK}:{http_port}" if http_port else ""
    argv = [*(prefix or []), sys.executable, "-m", "orchestrator.cli", "node", "--node-id", node_id,
            "--listen", f"{LOOPBACK}:{port}", "--http-listen", console, *redis,
            "--etcd", ",".join(etcd_endpoints), "--cluster", cluster,
            "--lease-ttl", str(lease_ttl_s), "--log-level", log_level, *(extra or [])]
    process = ManagedProcess(node_id, argv, log_dir)
    try:
        wait_for_port(LOOPBACK, port, 20.0, process)
    except BaseException:
        process.stop()
        raise
    return process


def start_node_on_free_ports(log_dir: Path, *, pick_port: Callable[[], int] = free_port, attempts: int = 3,
                             **options: Any) -> tuple[ManagedProcess, int, int]:
    """`start_node` on a gRPC port and a console port free when picked (`pick_port`, twice per try);
    when another process takes one of them before the node binds it (`lost_its_port`: nothing holds
    a free port until then), again on two new ones. Returns the process, its gRPC port and its
    console port."""
    for attempt in range(1, attempts + 1):
        port, http_port = pick_port(), pick_port()
        try:
            return start_node(log_dir, port=port, http_port=http_port, **options), port, http_port
        except ProcessError as exc:
            if attempt == attempts or not lost_its_port(str(exc)):
                raise
    raise AssertionError("unreachable")


def start_worker(log_dir: Path, *, name: str, endpoints: list[str], module: str = "worker.demo",
                 concurrency: int = 16, extra: list[str] | None = None) -> ManagedProcess:
    argv = [sys.executable, "-m", module, "--endpoints", ",".join(endpoints),
            "--concurrency", str(concurrency), *(extra or [])]
    return ManagedProcess(name, argv, log_dir)


class LocalCluster:
    """etcd (N members), Redis with AOF, M orchestrator nodes and demo workers, on loopback."""

    def __init__(self, base_dir: Path, settings: ClusterSettings, *, fresh_election: bool = False,
                 certs: DevCerts | None = None, announce: bool = True) -> None:
        """`fresh_election`: etcd starts empty although Redis may keep data of an earlier run,
        so the fencing epoch stored in Redis is forgotten before any node starts. `certs`: the
        nodes serve mutual TLS with them (clients need `certs.client_env()`). `announce`: with
        replicas, print where they and the Sentinels are and how to kill the master."""
        self.certs = certs
        self.announce = announce
        self.base_dir = Path(base_dir)
        self.settings = settings
        self.fresh_election = fresh_election
        self.etcd: EtcdCluster | None = None
        self.redis: RedisServer | None = None           # the master (the one Redis without replicas)
        self.redis_cluster: LocalRedisCluster | None = None   # instead of it (`redis_cluster_masters`)
        self.replicas: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []
        self.nodes: dict[str, ManagedProcess] = {}
        self.node_ports: dict[str, int] = {}
        self.console_ports: dict[str, int] = {}
        self.workers: list[ManagedProcess] = []
        self.ports: PortPlan | None = None

    @property
    def endpoints(self) -> list[str]:
        return [f"{LOOPBACK}:{port}" for port in self.node_ports.values()]

    def plan(self) -> PortPlan:
        """Choose every port now (free ones where the settings say 0); `start` then uses them."""
        s = self.settings
        picked: set[int] = set()

        def pick() -> int:
            port = free_port()
            while port in picked:
                port = free_port()
            picked.add(port)
            return port

        fixed = {p for p in [s.redis_port, *s.node_ports, *s.console_ports] if p}
        picked |= fixed
        nodes = {f"node-{i + 1}": port or pick() for i, port in enumerate(s.node_ports)}
        consoles = {}
        for index, (node_id, port) in enumerate(nodes.items()):
            if s.console_ports:
                consoles[node_id] = s.console_ports[index]
            else:
                consoles[node_id] = port + CONSOLE_OFFSET if s.node_ports[index] else pick()
                if s.node_ports[index]:
                    fixed.add(consoles[node_id])
        def near_redis(offset: int) -> int:   # beside a fixed Redis port when there is room, else a free one
            port = s.redis_port + offset if s.redis_port else 0
            if port and port <= MAX_PORT and port not in picked:
                picked.add(port)
                fixed.add(port)
                return port
            return pick()

        replicas = [near_redis(1 + index) for index in range(s.redis_replicas)]
        sentinels = [near_redis(SENTINEL_OFFSET + index) for index in range(s.sentinels if s.redis_replicas else 0)]
        self.ports = PortPlan(etcd=[(pick(), pick()) for _ in range(s.etcd_members)], redis=s.redis_port or pick(),
                              nodes=nodes, consoles=consoles, fixed=fixed, replicas=replicas, sentinels=sentinels)
        return self.ports

    def start(self, *, workers: bool = True) -> LocalCluster:
        s = self.settings
        plan = self.ports or self.plan()
        try:
            self.etcd = start_etcd_cluster(self.base_dir / "etcd", s.etcd_members, s.etcd_election_timeout_ms,
                                           ports=plan.etcd)
            options = self._redis_options()
            if s.redis_cluster_masters:
                # a new Redis Cluster each run (its servers refuse to join one when they hold a node file)
                shutil.rmtree(self.base_dir / "redis-cluster", ignore_errors=True)
                self.redis_cluster = start_redis_cluster(self.base_dir / "redis-cluster", s.redis_cluster_masters)
                if self.announce:
                    print(f"Redis Cluster of {s.redis_cluster_masters} masters and as many replicas on "
                          f"{', '.join(self.redis_cluster.seeds)}", flush=True)
            elif s.redis_port:
                self.redis = start_redis(self.base_dir / "redis", s.redis_port,
                                         appendonly=True, appendfsync=s.redis_appendfsync, options=options)
            else:
                self.redis = start_redis(self.base_dir / "redis", appendonly=True, appendfsync=s.redis_appendfsync,
                                         first_port=plan.redis, options=options)
            if s.redis_replicas:
                self._start_replicas(plan, options)
                if self.announce:
                    print(self.describe_redis(), flush=True)
            if self.fresh_election and self.redis is not None:   # a new Redis Cluster holds nothing yet
                asyncio.run(_forget_epoch(self.redis.url, cluster_prefix(s.name)))
            for node_id, port in plan.nodes.items():
                self.node_ports[node_id] = port
                self.console_ports[node_id] = plan.consoles[node_id]
            first_then_side_by_side([functools.partial(self.start_node, node_id, may_move=port not in plan.fixed)
                                     for node_id, port in plan.nodes.items()])
            if workers:
                for index in range(s.workers):
                    self.workers.append(start_worker(self.base_dir / "logs", name=f"worker-{index + 1}",
                                                     endpoints=self.endpoints,
                                                     concurrency=s.worker_concurrency))
        except BaseException:
            self.stop()
            raise
        return self

    def _redis_options(self) -> list[str]:
        """What every Redis of the cluster runs with, master and replicas alike (as deploy/production/)."""
        if not self.settings.redis_replicas:
            return []
        return ["--min-replicas-to-write", str(self.settings.min_replicas), "--min-replicas-max-lag", "10",
                "--repl-diskless-sync-delay", "0"]   # a new replica syncs at once (default: after 5 s)

    def _start_replicas(self, plan: PortPlan, options: list[str]) -> None:
        """The replicas (each beside the master, caught up before anything writes), then the Sentinels."""
        assert self.redis is not None
        s = self.settings
        for index, port in enumerate(plan.replicas):
            folder = self.base_dir / f"redis-replica-{index + 1}"
            self.replicas.append(start_redis(folder, port, appendonly=True, appendfsync=s.redis_appendfsync,
                                             replica_of=self.redis.port, options=options) if port in plan.fixed
                                 else start_redis(folder, appendonly=True, appendfsync=s.redis_appendfsync,
                                                  replica_of=self.redis.port, options=options, first_port=port))
        wait_for_replicas(self.redis.port, s.redis_replicas)
        for port in plan.sentinels:
            self.sentinels.append(start_sentinel(self.base_dir / "sentinels", self.redis.port, master_name=s.name,
                                                 down_after_ms=SENTINEL_DOWN_AFTER_MS, port=port,
                                                 quorum=len(plan.sentinels) // 2 + 1))

    def redis_flags(self) -> list[str]:
        """The `orchestrator node` flags that say how to reach Redis (beside --redis-url / --redis-sentinels)."""
        if self.redis_cluster is not None:
            return ["--redis-cluster", ",".join(self.redis_cluster.seeds),
                    "--redis-min-replicas", str(self.settings.min_replicas)]
        if not self.settings.redis_replicas:
            return []
        return ["--redis-master", self.settings.name, "--redis-min-replicas", str(self.settings.min_replicas)]

    def describe_redis(self) -> str:
        """Where the master, its replicas and the Sentinels are, and how to try a failover (replicas only)."""
        if self.redis is None or not self.replicas:
            return ""
        s = self.settings
        replicas = ", ".join(f"{r.port} (pid {r.process.pid})" for r in self.replicas)
        return (f"Redis master on port {self.redis.port} (pid {self.redis.process.pid}), replica(s) on {replicas}; "
                f"Sentinels on {', '.join(str(x.port) for x in self.sentinels)} (master name '{s.name}', quorum "
                f"{len(self.sentinels) // 2 + 1}). The nodes follow the master through them and acknowledge a write "
                f"once {s.min_replicas} replica(s) hold it. Try `kill -9 {self.redis.process.pid}`: a Sentinel "
                f"promotes a replica in about {SENTINEL_DOWN_AFTER_MS / 1000 + 1:g} s"
                + (", and with no replica left behind it writes are refused (UNAVAILABLE) until one is back; "
                   "start the old master again with\n  " + " ".join(map(shlex.quote, self.redis.process.argv))
                   + "\nand a Sentinel turns it into the new master's replica"
                   if s.redis_replicas <= s.min_replicas else ""))

    def start_node(self, node_id: str, port: int | None = None, *, may_move: bool | None = None) -> ManagedProcess:
        """Start (or restart) one node; a restarted node keeps its id, ports and command line (its
        earlier process, if it still runs, is stopped first). A new node without a `port` gets free
        ones. `may_move`: when its port was picked here and another process takes it before the node
        binds it, the node is started again on other free ports (twice at most); by default only a
        node that never ran and was given no port may move."""
        assert self.etcd is not None and (self.redis is not None or self.redis_cluster is not None)
        earlier = self.nodes.get(node_id)
        if earlier is not None:
            earlier.stop()   # reaps an exited one, closes its log
        if may_move is None:
            may_move = port is None and node_id not in self.node_ports
        if port:
            self.node_ports[node_id] = port
        planned = iter([self.node_ports.get(node_id, 0), self.console_ports.get(node_id, 0)])
        self.nodes[node_id], self.node_ports[node_id], self.console_ports[node_id] = start_node_on_free_ports(
            self.base_dir / "logs", pick_port=lambda: next(planned, 0) or free_port(), attempts=3 if may_move else 1,
            node_id=node_id, redis_url=self.redis.url if self.redis is not None else "",
            etcd_endpoints=self.etcd.endpoints, cluster=self.settings.name,
            redis_sentinels=[x.address for x in self.sentinels] or None,
            lease_ttl_s=self.settings.lease_ttl_s, log_level=self.settings.log_level,
            extra=[*(self.certs.node_flags() if self.certs is not None else []), *self.redis_flags(),
                   "--archive-dir", str(self.base_dir / "archive"),
                   *(["--retention", str(self.settings.retention_s)] if self.settings.retention_s else []),
                   *(["--http-task-allow-cidrs", ",".join(self.settings.http_task_allow_cidrs)]
                     if self.settings.http_task_allow_cidrs else [])])
        return self.nodes[node_id]

    def endpoint_of(self, node_id: str) -> str:
        return f"{LOOPBACK}:{self.node_ports[node_id]}"

    def console_of(self, node_id: str) -> str:
        """The node's web console (and /metrics) as a URL (https when the nodes serve TLS)."""
        scheme = "https" if self.certs is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.console_ports[node_id]}"

    def stop(self) -> None:
        """Stop everything this cluster started, workers first, by PID."""
        stop_all(self.workers)
        stop_all(self.nodes.values())
        stop_all(x.process for x in self.sentinels)   # before the master goes: no failover on the way out
        stop_all(r.process for r in self.replicas)
        if self.redis is not None and getattr(self.redis, "process", None) is not None:
            self.redis.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        if self.etcd is not None:
            self.etcd.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def _forget_epoch(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix)
    try:
        await store.forget_epoch()
    finally:
        await store.close()


def wait_for_leader(client: Any, timeout_s: float = 15.0, not_id: str = "", members: int = 0) -> dict[str, Any]:
    """Poll cluster status until some node (other than `not_id`) leads and, if `members` is
    given, that many nodes have registered (a node registers a moment after its port opens)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = client.cluster_status()
            if (last.get("leader_id") and last["leader_id"] != not_id
                    and len(last.get("members", [])) >= members):
                return dict(last)
        except Exception as exc:  # a node may be down while we ask
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"no leader within {timeout_s} s (last answer: {last})")
